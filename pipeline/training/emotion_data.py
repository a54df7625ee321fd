"""Training data of the acoustic emotion heads: EmoDB clips in every condition (as recorded, G.711
telephone, an unseen handset), cut into live-sized windows, prosody vectors cached on disk.

Part of the recipe in ``pipeline.training.emotion`` (imports run one way: recipe -> heads, calibration
-> data).
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy.signal
import soundfile as sf

from ..audio import decode_mulaw, encode_mulaw, resample
from ..emotion import CLASSES
from ..errors import ModelUnavailableError
from ..manifest import read_manifest as read_csv_manifest
from ..prosody import ProsodyExtractor, ProsodyOptions
# The one G.711 line simulation (evaluation calls use it too): 8 kHz, mu-law coded and decoded.
from ..evaluate.telephone import telephone_version  # noqa: F401 (re-exported for the recipes)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each clip is scored in three conditions. The model trains on the first two; the third is a transfer
# check: the telephone version through a different "handset" (a per-speaker gain and spectral tilt the
# model never saw), standing in for the unseen channels of real calls.
TRAIN_CONDITIONS = ("16k", "8k-mulaw")
CONDITIONS = TRAIN_CONDITIONS + ("8k-mulaw-other-handset",)

# EmoDB's seven emotions; the four the product uses are kept, the rest are not part of the task.
_EMODB_KEEP = set(CLASSES)

# Feature sets compared under LOSO. "prosody" = the eGeMAPS-like scalar functionals; "+mfcc" adds
# band-limited MFCC means and spreads (spectral envelope; more speaker- and language-specific).
PROSODY_SET = "prosody"
PROSODY_MFCC_SET = "prosody+mfcc"
FEATURE_SETS = (PROSODY_SET, PROSODY_MFCC_SET)
# Left out of the global head: depends on microphone and line gain, not on the speaker's state.
GAIN_DEPENDENT = ("energy_db",)


# Bump when the layout of the cached feature files changes.
_CACHE_FORMAT = 2
# The engine scores the last [emotion] window_s (default 2 s) of each speaker every second.
LIVE_WINDOW_S = 2.0
LIVE_HOP_S = 1.0


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Corpus:
    """Feature vectors of every clip at each rate, with labels and speakers."""

    files: tuple[str, ...]
    speakers: np.ndarray        # [n] str
    genders: np.ndarray         # [n] str ("female" | "male")
    clip_ids: np.ndarray        # [n] int: which recording a row comes from (windows share their clip's)
    labels: np.ndarray          # [n] int index into CLASSES
    vectors: Mapping[str, np.ndarray]   # rate -> [n, d]
    names: tuple[str, ...]
    extract_s: float


def data_dir_default() -> Path:
    env = os.environ.get("CALLPULSE_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def read_manifest(emodb_dir: Path) -> list[dict[str, str]]:
    path = emodb_dir / "manifest.csv"
    if not path.is_file():
        raise ModelUnavailableError(
            f"EmoDB manifest {path} not found: point CALLPULSE_DATA (or --data) at the shared data folder "
            "that holds emodb/manifest.csv"
        )
    rows = [dict(r.fields) for r in read_csv_manifest(path, required=("file", "speaker", "emotion"), audio=False,
                                                      error=ModelUnavailableError)
            if r.get("emotion") in _EMODB_KEEP]
    rows.sort(key=lambda r: r["file"])
    return rows


def other_handset(y: np.ndarray, *, sr: int, speaker: str) -> np.ndarray:
    """The clip as another handset and line would colour it: a gain of -12..+6 dB and a first-order
    spectral tilt, drawn once per speaker (a call's channel is fixed), deterministic. Shape [n]."""
    rng = np.random.default_rng(zlib.crc32(speaker.encode()))
    gain = 10.0 ** (rng.uniform(-12.0, 6.0) / 20.0)
    a = rng.uniform(-0.6, 0.6)   # zero: > 0 tilts towards highs (thin handset), < 0 towards lows
    out = scipy.signal.lfilter([1.0, -a], [1.0], y.astype(np.float64)) * gain / (1.0 + abs(a))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _cache_key(rows: Sequence[Mapping[str, str]], prosody: ProsodyOptions) -> str:
    # Key on what the vectors depend on: the extractor's code and options, the codec, the clip list.
    h = hashlib.sha256(f"cache-format-{_CACHE_FORMAT}".encode())
    h.update(Path(__file__).resolve().parents[1].joinpath("prosody.py").read_bytes())
    for fn in (encode_mulaw, decode_mulaw, resample, telephone_version, other_handset):
        h.update(inspect.getsource(fn).encode())
    h.update(repr(dataclasses.asdict(prosody)).encode())
    for r in rows:
        h.update(f"{r['file']},{r['speaker']},{r['emotion']};".encode())
    return h.hexdigest()[:16]


def _windows(n: int, *, sr: int, window_s: float | None, hop_s: float) -> list[tuple[int, int]]:
    """Sample ranges to analyse: the whole clip, or windows of window_s every hop_s (a clip shorter
    than one window is one window), as the live engine analyses the last seconds every second."""
    if window_s is None:
        return [(0, n)]
    win, hop = int(round(window_s * sr)), int(round(hop_s * sr))
    if n <= win:
        return [(0, n)]
    starts = list(range(0, n - win + 1, hop))
    return [(s, s + win) for s in starts]


def load_corpus(data_dir: Path, *, prosody: ProsodyOptions, cache_dir: Path | None,
                window_s: float | None = None, hop_s: float = 1.0) -> Corpus:
    """Extract (or load from the cache) the feature vectors of EmoDB in every condition: one row per
    clip, or with ``window_s`` one row per window of a clip."""
    emodb = data_dir / "emodb"
    rows = read_manifest(emodb)
    extractor = ProsodyExtractor(prosody)
    key = _cache_key(rows, prosody) + ("" if window_s is None else f"-win{window_s:g}-{hop_s:g}")
    cache = cache_dir / f"emodb-features-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            vectors = {rate: z[rate] for rate in CONDITIONS}
            clip_ids = z["clip_ids"]
            extract_s = float(z["extract_s"])
        logger.info("loaded cached features %s", cache)
    else:
        t0 = time.perf_counter()
        vecs: dict[str, list[np.ndarray]] = {rate: [] for rate in CONDITIONS}
        ids: list[int] = []
        audio_s = 0.0
        for i, r in enumerate(rows):
            y, sr = sf.read(emodb / r["file"], dtype="float32", always_2d=False)
            audio_s += len(y) / sr
            versions = {
                "16k": (y, sr),
                "8k-mulaw": (telephone_version(y, sr=sr), 8000),
                "8k-mulaw-other-handset": (telephone_version(other_handset(y, sr=sr, speaker=r["speaker"]),
                                                             sr=sr), 8000),
            }
            n_windows = None
            for cond, (audio, rate) in versions.items():
                spans = _windows(len(audio), sr=rate, window_s=window_s, hop_s=hop_s)
                # Window counts must agree across rates; resampling can shift a length by a sample.
                spans = spans[:n_windows] if n_windows is not None else spans
                n_windows = len(spans)
                vecs[cond].extend(extractor.vector(audio[a:b], sr=rate)[1] for a, b in spans)
            ids.extend([i] * n_windows)
        vectors = {rate: np.vstack(v) for rate, v in vecs.items()}
        clip_ids = np.array(ids)
        extract_s = time.perf_counter() - t0
        logger.info("extracted %d rows from %d clips (%.0f s of audio) x %d conditions in %.1f s",
                    len(clip_ids), len(rows), audio_s, len(CONDITIONS), extract_s)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, extract_s=extract_s, clip_ids=clip_ids, **vectors)
    return Corpus(
        files=tuple(rows[i]["file"] for i in clip_ids),
        speakers=np.array([rows[i]["speaker"] for i in clip_ids]),
        genders=np.array([rows[i]["gender"] for i in clip_ids]),
        clip_ids=clip_ids,
        labels=np.array([CLASSES.index(rows[i]["emotion"]) for i in clip_ids]),
        vectors=vectors,
        names=extractor.vector_names,
        extract_s=extract_s,
    )


def feature_names(all_names: Sequence[str], feature_set: str, *, head: str) -> tuple[str, ...]:
    if feature_set == PROSODY_SET:
        names = [n for n in all_names if not n.startswith("mfcc")]
    elif feature_set == PROSODY_MFCC_SET:
        names = list(all_names)
    else:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {FEATURE_SETS}")
    if head == "global":
        names = [n for n in names if n not in GAIN_DEPENDENT]
    return tuple(names)
