"""Batching audio for transformers: random training crops, evaluation chunks, padding and attention masks,
length-grouped batches, and DataLoader worker seeding (used by the training loop too)."""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from transformers import Wav2Vec2FeatureExtractor
from transformers.trainer_pt_utils import get_length_grouped_indices

__all__ = ["AudioCollator", "ClipDataset", "LengthGroupedBatchSampler", "audio_lengths", "chunk_bounds",
           "chunk_clip", "featurize", "is_waveform_extractor", "length_sorted_batches", "make_audio_loader",
           "padding_fraction", "seed_worker", "uses_attention_mask"]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker, numpy/random are seeded from it
    (recipe from the PyTorch reproducibility notes), so worker-side augmentation is reproducible."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def chunk_bounds(num_samples: int, sampling_rate: int, chunk_s: float, overlap_s: float = 0.0) -> list[tuple[int, int]]:
    """(start, stop) sample bounds of :func:`chunk_clip`'s chunks."""
    if chunk_s <= 0 or not 0 <= overlap_s < chunk_s:
        raise ValueError(f"need chunk_s > 0 and 0 <= overlap_s < chunk_s, got chunk_s={chunk_s}, overlap_s={overlap_s}")
    size = int(round(chunk_s * sampling_rate))
    if num_samples <= size:
        return [(0, num_samples)]
    hop = max(1, size - int(round(overlap_s * sampling_rate)))
    starts = list(range(0, num_samples - size + 1, hop))
    if starts[-1] + size < num_samples:
        starts.append(num_samples - size)
    return [(s, s + size) for s in starts]


def chunk_clip(array: np.ndarray, sampling_rate: int, chunk_s: float, overlap_s: float = 0.0) -> list[np.ndarray]:
    """Split a long clip into ``chunk_s`` windows overlapping by ``overlap_s``, for evaluation/inference
    (the caller averages the chunks' logits). The last window is aligned to the clip's end, so every
    chunk has the full length (equal lengths batch without padding) and the tail is covered. A clip no
    longer than ``chunk_s`` comes back whole. Views, not copies."""
    return [array[a:b] for a, b in chunk_bounds(len(array), sampling_rate, chunk_s, overlap_s)]


def uses_attention_mask(feature_extractor) -> bool:
    """Whether the checkpoint expects an attention mask (wav2vec2-base: no; large-lv60, HuBERT-large, WavLM: yes)."""
    return bool(getattr(feature_extractor, "return_attention_mask", False))


def is_waveform_extractor(feature_extractor) -> bool:
    """Whether the extractor takes raw waveforms (wav2vec2 family), not spectrogram frames."""
    return isinstance(feature_extractor, Wav2Vec2FeatureExtractor)


def featurize(feature_extractor, arrays: Sequence[np.ndarray], sampling_rate: int) -> dict[str, torch.Tensor]:
    """Model inputs for a batch of mono clips at the extractor's rate.

    Waveform models (wav2vec2 family): per-clip zero-mean/unit-variance normalisation over the real
    samples, zero padding to the longest clip, and an ``attention_mask`` only when the checkpoint uses
    one. (Calling the extractor with ``padding=True`` but no mask, as its defaults do for wav2vec2-base,
    would normalise over the padding too; asking for the mask and dropping it afterwards avoids that.)
    Spectrogram models (Whisper: ``input_features``; AST: ``input_values`` of frames): the extractor's
    own fixed-length padding/truncation, mask only when the checkpoint uses one.
    """
    expected = feature_extractor.sampling_rate
    if sampling_rate != expected:
        raise ValueError(f"audio at {sampling_rate} Hz but the model expects {expected} Hz; load the corpus "
                         f"with data.sampling_rate={expected}")
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    if is_waveform_extractor(feature_extractor):
        out = feature_extractor(arrays, sampling_rate=expected, padding="longest", return_attention_mask=True,
                                return_tensors="pt")
    else:
        out = feature_extractor(arrays, sampling_rate=expected, return_tensors="pt")
    batch = dict(out)
    if not uses_attention_mask(feature_extractor):
        batch.pop("attention_mask", None)
    return batch


def _crop_key(row: dict, position: int) -> Any:
    for key in ("clip_id", "file"):
        if key in row and row[key] is not None:
            return row[key]
    audio = row.get("audio") or {}
    if audio.get("path"):
        return audio["path"]
    raise KeyError(f"batch row {position} has no 'clip_id', 'file' or audio 'path' to seed its random crop; "
                   f"keys: {sorted(row)}")


class AudioCollator:
    """Collate decoded rows (``audio`` = {"array", "sampling_rate"}, ``label``, ``clip_id``) into model inputs.

    - ``train=True``: one random ``max_duration_s`` crop per clip (shorter clips whole). The crop start
      depends only on (seed, epoch, clip id), not on batch order or DataLoader workers, so runs and
      resumed runs see the same crops. Call :meth:`set_epoch` before each epoch; :class:`ClipDataset`
      forwards the Trainer's ``dataset.set_epoch`` here. Workers pick the epoch up because they are
      re-created every epoch (``persistent_workers=False``, the default).
    - ``train=False``: whole clips (split long clips beforehand with ``ClipDataset(chunk_s=...)``, so each
      chunk is a row and the row count stays what the evaluation loop expects).

    Batches: ``input_values`` (waveforms, AST frames) or ``input_features`` (Whisper), ``attention_mask``
    only for checkpoints that use it (see :func:`featurize`), ``labels`` (int64) when rows have a label,
    ``clip_id`` (int64) when rows have one, ``targets`` (float32, rows x targets) of a dimensional run: the
    ``targets`` columns standardised with ``target_scale`` (a :class:`~ser_hf.tasks.TargetScale`).
    """

    def __init__(self, feature_extractor, max_duration_s: float | None = None, train: bool = False, seed: int = 0,
                 *, label_column: str = "label", targets: Sequence[str] = (), target_scale=None):
        if train and not max_duration_s:
            raise ValueError("AudioCollator(train=True) needs max_duration_s (the random crop length)")
        if max_duration_s is not None and max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0, got {max_duration_s}")
        self.feature_extractor = feature_extractor
        self.max_duration_s = max_duration_s
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.label_column = label_column
        self.targets = tuple(targets)
        self.target_scale = target_scale

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def crop(self, array: np.ndarray, sampling_rate: int, key: Any) -> np.ndarray:
        """This epoch's crop of one clip (the clip itself when it is short enough)."""
        size = int(round(self.max_duration_s * sampling_rate))
        if len(array) <= size:
            return array
        rng = np.random.default_rng((self.seed, self.epoch, zlib.crc32(str(key).encode("utf-8"))))
        start = int(rng.integers(0, len(array) - size + 1))
        return array[start:start + size]

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        if not rows:
            raise ValueError("AudioCollator got an empty batch")
        arrays, labels, clip_ids = [], [], []
        sr = None
        for i, row in enumerate(rows):
            audio = row.get("audio")
            if not isinstance(audio, dict) or "array" not in audio:
                raise KeyError(f"batch row {i} has no decoded 'audio' {{'array', 'sampling_rate'}}; load the corpus "
                               f"with ser_hf.data.load_corpus (it decodes) before batching")
            array = np.asarray(audio["array"], dtype=np.float32)
            rate = int(audio["sampling_rate"])
            if sr is not None and rate != sr:
                raise ValueError(f"mixed sampling rates in one batch ({sr} and {rate} Hz)")
            sr = rate
            if self.train:
                array = self.crop(array, rate, _crop_key(row, i))
            arrays.append(array)
            if row.get(self.label_column) is not None:
                labels.append(int(row[self.label_column]))
            if row.get("clip_id") is not None:
                clip_ids.append(int(row["clip_id"]))
        batch = featurize(self.feature_extractor, arrays, sr)
        if labels:
            if len(labels) != len(rows):
                raise ValueError(f"some rows of the batch lack '{self.label_column}'")
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if clip_ids:
            if len(clip_ids) != len(rows):
                raise ValueError("some rows of the batch lack 'clip_id'")
            batch["clip_id"] = torch.tensor(clip_ids, dtype=torch.long)
        if self.targets:
            values = np.array([[float(row[t]) for t in self.targets] for row in rows], dtype=np.float64)
            if self.target_scale is not None:
                values = self.target_scale.standardise(values)
            batch["targets"] = torch.tensor(values, dtype=torch.float32)
        return batch


class ClipDataset(torch.utils.data.Dataset):
    """A decoded corpus split as a torch dataset of clips, or of overlapping chunks of long clips.

    Each item is the source row plus ``clip_id`` = the row's index in ``ds`` (chunks of one clip share it,
    so the evaluation loop averages their logits per clip, and ``ds.select(clip_ids)`` finds the clips).
    With ``chunk_s``, clips longer than that become several items (:func:`chunk_clip`); the item list is
    computed from Arrow lengths, without reading audio. ``lengths`` (samples per item) feeds
    :class:`LengthGroupedBatchSampler`. ``set_epoch`` (called by the Trainer on the dataset) is forwarded
    to every object in ``epoch_aware`` (the collator's crops, the sampler's order).
    """

    def __init__(self, ds, *, chunk_s: float | None = None, overlap_s: float = 0.0,
                 epoch_aware: Sequence[Any] = (), column: str = "audio"):
        self.column = column
        self.chunk_s = chunk_s
        self.overlap_s = overlap_s
        self.epoch_aware = list(epoch_aware)
        # numpy format: the audio array arrives as an ndarray, not a Python list of floats
        self.ds = ds.with_format("numpy")
        clip_lengths = audio_lengths(ds, column).tolist()
        items: list[tuple[int, int, int]] = []  # (row, start, stop)
        if chunk_s is None:
            items = [(row, 0, n) for row, n in enumerate(clip_lengths)]
        elif len(ds):
            sr = int(self.ds[0][column]["sampling_rate"])
            for row, n in enumerate(clip_lengths):
                items.extend((row, a, b) for a, b in chunk_bounds(n, sr, chunk_s, overlap_s))
        self.items = items
        self.lengths = [stop - start for _, start, stop in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        row, start, stop = self.items[index]
        item = dict(self.ds[row])
        audio = dict(item[self.column])
        audio["array"] = np.asarray(audio["array"], dtype=np.float32)[start:stop]
        item[self.column] = audio
        item["clip_id"] = row
        return item

    def set_epoch(self, epoch: int) -> None:
        for obj in self.epoch_aware:
            obj.set_epoch(epoch)


def audio_lengths(ds, column: str = "audio") -> np.ndarray:
    """Samples per clip of a decoded dataset, read from Arrow list lengths (no audio copied to Python)."""
    if column not in ds.column_names:
        raise KeyError(f"dataset has no {column!r} column (columns: {ds.column_names})")
    out = []
    for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=4096):
        audio = table.column(column).combine_chunks()
        out.append(pc.list_value_length(audio.field("array")).to_numpy(zero_copy_only=False))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of similar-length clips, to waste little compute on padding (pass as ``batch_sampler=``).

    Training order comes from transformers' ``get_length_grouped_indices`` (random mega-batches, sorted
    inside, longest batch first so an out-of-memory error shows at once). We wrap it rather than use
    ``transformers.trainer_pt_utils.LengthGroupedSampler`` as is because that class yields single indices
    (DataLoader must then also get batch_size) and draws its order from a generator whose state runs on
    across epochs, so epoch k's order cannot be rebuilt on resume; here the order is a function of
    (seed, epoch), set with :meth:`set_epoch`. Evaluation (``shuffle=False``): sorted longest first.
    For training pass the cropped lengths (``np.minimum(lengths, max_duration_s * sr)``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], i))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, exact_lengths: bool = False) -> list[list[int]]:
    """Indices in batches of similar length, longest first (for inference, where order is free).

    ``exact_lengths``: only inputs of identical length share a batch. Needed for checkpoints without
    attention masks (wav2vec2-base): zero padding changes their outputs (group norm over time,
    attention over padded frames), so a clip's prediction would depend on its batch neighbours.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (
            not exact_lengths or lengths[batches[-1][0]] == lengths[i]
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padding_fraction(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> float:
    """Share of padded samples over all batches (0 = no waste); for logging the sampler's effect."""
    lengths = np.asarray(lengths)
    padded = real = 0
    for b in batches:
        ls = lengths[list(b)]
        padded += int(ls.max()) * len(ls)
        real += int(ls.sum())
    return 0.0 if padded == 0 else 1.0 - real / padded


def make_audio_loader(ds, feature_extractor, *, train: bool, batch_size: int, max_duration_s: float | None = None,
                      seed: int = 0, eval_chunk_s: float | None = None, eval_overlap_s: float = 0.0,
                      num_workers: int = 0, targets: Sequence[str] = (),
                      target_scale=None) -> torch.utils.data.DataLoader:
    """A DataLoader wired the way the Trainer expects for audio transformers.

    Training: random ``max_duration_s`` crops, length-grouped shuffled batches, both re-drawn from
    (seed, epoch) when the Trainer calls ``dataset.set_epoch``. Evaluation: clips (or ``eval_chunk_s``
    chunks with ``eval_overlap_s`` overlap, sharing their clip's ``clip_id``) in length order, longest first.
    """
    collator = AudioCollator(feature_extractor, max_duration_s, train=train, seed=seed, targets=targets,
                             target_scale=target_scale)
    if train:
        dataset = ClipDataset(ds)
        sr = int(feature_extractor.sampling_rate)
        lengths = np.minimum(dataset.lengths, int(round(max_duration_s * sr))).tolist()
        sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=seed)
        dataset.epoch_aware = [collator, sampler]
    else:
        dataset = ClipDataset(ds, chunk_s=eval_chunk_s, overlap_s=eval_overlap_s)
        sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, shuffle=False)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )


