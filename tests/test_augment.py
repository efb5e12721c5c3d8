"""ser_hf.augment: seeded waveform transforms (audiomentations) and SpecAugment masks."""

from __future__ import annotations

import random

import datasets
import numpy as np
import pytest
import torch

from ser_hf.augment import (
    augment_dataset,
    build_spec_augment,
    build_waveform_augment,
    spec_augment,
    spec_augment_masks,
)

SR = 16000


def tone(n: int = 16000, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)])


ALL = {"noise": {"p": 1.0}, "shift": {"p": 1.0}, "pitch_shift": {"p": 1.0}, "time_stretch": {"p": 1.0}}


def test_waveform_augment_is_seeded_and_changes_the_signal():
    y = tone()
    a, b = build_waveform_augment(ALL, seed=3), build_waveform_augment(ALL, seed=3)
    first = a(y, SR)
    np.testing.assert_array_equal(first, b(y, SR))  # same seed, same stream
    assert first.shape == y.shape and first.dtype == np.float32
    assert np.abs(first - y).mean() > 0.05
    assert not np.array_equal(a(y, SR), first)  # the stream moves on
    assert not np.array_equal(build_waveform_augment(ALL, seed=4)(y, SR), first)
    # keyed calls depend on (seed, key) only, not on earlier calls
    np.testing.assert_array_equal(a(y, SR, key=(1, 7)), build_waveform_augment(ALL, seed=3)(y, SR, key=(1, 7)))
    assert not np.array_equal(a(y, SR, key=(1, 7)), a(y, SR, key=(1, 8)))


def test_global_random_state_is_left_alone():
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.rand())
    random.seed(11)
    np.random.seed(11)
    build_waveform_augment(ALL, seed=0)(tone(), SR)
    assert (random.random(), np.random.rand()) == expected


def test_noise_hits_the_requested_snr():
    y = tone()
    aug = build_waveform_augment({"noise": {"p": 1.0, "min_snr_db": 20, "max_snr_db": 20}}, seed=0)
    noise = aug(y, SR) - y
    snr = 10 * np.log10(np.mean(y**2) / np.mean(noise**2))
    assert snr == pytest.approx(20, abs=0.5)


def test_shift_pitch_and_stretch_do_what_they_say():
    y = tone()
    shift = build_waveform_augment({"shift": {"p": 1.0, "min_shift": 0.25, "max_shift": 0.25, "fade_duration": 0}},
                                   seed=0)
    np.testing.assert_array_equal(shift(y, SR), np.roll(y, 4000))
    up = build_waveform_augment({"pitch_shift": {"p": 1.0, "min_semitones": 2, "max_semitones": 2}}, seed=0)
    assert peak_hz(up(y, SR)) == pytest.approx(440 * 2 ** (2 / 12), abs=5)
    stretch = build_waveform_augment({"time_stretch": {"p": 1.0, "min_rate": 1.25, "max_rate": 1.25}}, seed=0)
    out = stretch(y, SR)
    assert out.shape == y.shape  # length kept: the faster clip is zero-padded at the end
    assert np.abs(out[-2000:]).max() < 1e-3 < np.abs(out[:8000]).max()
    off = build_waveform_augment({"noise": {"p": 0.0}}, seed=0)
    np.testing.assert_array_equal(off(y, SR), y)


def test_config_errors_name_the_key():
    assert build_waveform_augment(None, 0) is None
    assert build_waveform_augment({"noise": None, "spec_augment": {"time_masks": 1}}, 0) is None
    with pytest.raises(ValueError, match="reverb"):
        build_waveform_augment({"reverb": {"p": 1}}, 0)
    with pytest.raises(ValueError, match=r"augment.noise: unknown key\(s\) \['snr'\]"):
        build_waveform_augment({"noise": {"snr": 10}}, 0)
    with pytest.raises(ValueError, match="unknown key 'augment.spec_augment.masks'"):
        build_spec_augment({"spec_augment": {"masks": 2}}, 0)
    with pytest.raises(ValueError, match="time_width"):
        build_spec_augment({"spec_augment": {"time_width": -1}}, 0)


def test_spec_augment_zeroes_whole_rows_and_columns_per_item():
    b, c, f, t = 8, 3, 20, 50
    x = torch.ones(b, c, f, t)
    out = spec_augment(x, 2, 6, 1, 4, generator=torch.Generator().manual_seed(0))
    tmask, fmask = spec_augment_masks(b, t, f, 2, 6, 1, 4, generator=torch.Generator().manual_seed(0))
    zero = out == 0
    for i in range(b):
        nt, nf = int(tmask[i].sum()), int(fmask[i].sum())
        assert nt <= 2 * 6 and nf <= 4
        # zeroed bins = masked columns + masked rows - their crossings, in every channel alike
        assert int(zero[i].sum()) == c * (nt * f + nf * t - nt * nf)
        assert torch.equal(zero[i, :, :, tmask[i]], torch.ones(c, f, nt, dtype=torch.bool))
        assert torch.equal(zero[i, :, fmask[i], :], torch.ones(c, nf, t, dtype=torch.bool))
        assert torch.equal(zero[i, 0], zero[i, 2])  # masks shared across channels
    assert not torch.equal(tmask[0], tmask[1])  # each item gets its own masks
    assert torch.equal(x, torch.ones(b, c, f, t))  # input untouched
    again = spec_augment(x, 2, 6, 1, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_spec_augment_single_mask_is_one_contiguous_span_and_sequence_layout():
    x = torch.ones(64, 30, 10)  # (B, T, D) for sequence models
    out = spec_augment(x, 1, 5, 0, 0, generator=torch.Generator().manual_seed(1), time_axis=1, freq_axis=2)
    widths = []
    for item in out:
        cols = torch.nonzero((item == 0).all(dim=1)).flatten()
        assert int((item == 0).sum()) == len(cols) * 10  # whole frames only
        if len(cols):
            assert int(cols[-1] - cols[0]) + 1 == len(cols)  # contiguous
        widths.append(len(cols))
    assert max(widths) <= 5 and len(set(widths)) > 2  # width ~ U{0..5}
    with pytest.raises(ValueError, match="different non-batch axes"):
        spec_augment(x, 1, 5, 1, 2, time_axis=0)


def test_spec_augment_object_uses_its_own_generator():
    cfg = {"spec_augment": {"time_masks": 2, "time_width": 4, "freq_masks": 2, "freq_width": 3}}
    a, b = build_spec_augment(cfg, seed=5), build_spec_augment(cfg, seed=5)
    x = torch.randn(4, 1, 16, 40)
    torch.manual_seed(0)
    first = a(x)
    torch.manual_seed(123)  # the global torch RNG does not matter
    assert torch.equal(first, b(x))
    assert not torch.equal(a(x), first)


def test_augment_dataset_adds_seeded_copies():
    y = tone(4000)
    ds = datasets.Dataset.from_dict({
        "audio": [{"array": y * (i + 1), "sampling_rate": SR, "path": f"c{i}.wav"} for i in range(3)],
        "speaker_id": ["a", "b", "c"], "label": [0, 1, 2]})
    cfg = {"noise": {"p": 1.0}, "copies": 2}
    datasets.disable_progress_bars()
    out = augment_dataset(ds, cfg, seed=0).with_format("numpy")
    assert len(out) == 9 and out["label"][:].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert out["augmented"][:].tolist() == [False, True, True] * 3
    arrays = [r["audio"]["array"] for r in out]
    np.testing.assert_array_equal(arrays[3], y * 2)  # originals untouched
    assert not np.array_equal(arrays[4], arrays[5])  # copies differ from each other
    again = augment_dataset(ds, cfg, seed=0).with_format("numpy")
    np.testing.assert_array_equal(again[8]["audio"]["array"], arrays[8])
    assert augment_dataset(ds, {"noise": None}, seed=0) is ds
