"""Training and speaker-independent evaluation of the acoustic emotion head (``scripts/train_emotion.py``).

Data: EmoDB (10 speakers, German, acted, CC0), the four classes the product uses. Each clip is scored in
three conditions: as recorded (16 kHz), as telephone audio (8 kHz, G.711 mu-law coded and decoded), and
as telephone audio through a handset the model never saw (per-speaker gain and spectral tilt). The
heads train on the first two.

Two logistic heads share the prosody feature vector (``pipeline.prosody``):

* ``global``: features standardised with the training population's statistics; used until a speaker
  baseline is ready, and the judge of what "looks calm". The absolute level (``energy_db``) is left out
  because telephone gain varies from call to call.
* ``relative``: features minus the speaker's baseline, divided by the pooled within-speaker spread.
  A baseline is the mean of the speaker's *calm-looking* speech, exactly as the live engine forms it
  (``EmotionBaseline`` updated when ``EmotionModel.looks_calm``); in evaluation, the held-out speaker's
  baseline is their other clips that the global head calls calm (their audio only, never their labels).

Every choice is made by speaker-independent cross-validation: leave-one-speaker-out (LOSO) and
cross-gender (train on the women, test on the men, and back: a stand-in for unseen speakers). The head
is multinomial logistic regression (numpy + scipy L-BFGS from zeros: deterministic, no random draws)
with class-balanced weights, so the model cannot score well by collapsing onto one class; its
probabilities are calibrated by temperature scaling on out-of-fold logits.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import time
import zlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import safetensors.numpy
import scipy.optimize
import scipy.signal
import soundfile as sf

from ..audio import decode_mulaw, encode_mulaw, resample
from ..emotion import CLASSES, HIGH_AROUSAL, MODEL_FILE, META_FILE, Head
from ..errors import ModelUnavailableError
from ..prosody import ProsodyExtractor, ProsodyOptions

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


@dataclass(frozen=True)
class TrainOptions:
    """Choices of one training run (the script's flags)."""

    data_dir: Path
    out_dir: Path
    cache_dir: Path
    feature_set: str = "auto"           # "auto" = the LOSO winner, or one of FEATURE_SETS
    l2: float = -1.0                    # < 0: chosen by LOSO among L2_GRID
    pack_s: float = 0.0                 # turn heads: clips per Whisper window (0 = each alone)


L2_GRID = (1.0, 3.0, 10.0, 30.0)
MIN_BASELINE_CLIPS = 3
# The engine scores the last 2 s of each speaker every second.
LIVE_WINDOW_S = 2.0
LIVE_HOP_S = 1.0
# Bump when the layout of the cached feature files changes.
_CACHE_FORMAT = 2
# How the training speakers' baselines are formed for the relative head (compared under LOSO).
BASELINE_KINDS = ("calm-labels", "calm-predicted")


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
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["emotion"] in _EMODB_KEEP]
    rows.sort(key=lambda r: r["file"])
    return rows


def telephone_version(y: np.ndarray, *, sr: int) -> np.ndarray:
    """What a G.711 line delivers: resampled to 8 kHz, mu-law coded and decoded, float32 [n8]."""
    y8 = resample(y.astype(np.float32), orig_sr=sr, target_sr=8000)
    pcm = np.clip(np.round(y8 * 32767.0), -32768, 32767).astype(np.int16)
    return decode_mulaw(encode_mulaw(pcm)).astype(np.float32) / 32768.0


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


# ---------------------------------------------------------------------------- normalisation
def speaker_means(x: np.ndarray, speakers: np.ndarray, *, leave_self_out: bool) -> np.ndarray:
    """Each row's speaker baseline mean [n, d]: the mean of the speaker's other rows (nan-aware)."""
    out = np.empty_like(x)
    for s in np.unique(speakers):
        idx = np.flatnonzero(speakers == s)
        block = x[idx]
        finite = np.isfinite(block)
        total = np.where(finite, block, 0.0).sum(axis=0)
        count = finite.sum(axis=0)
        if leave_self_out:
            tot = total[None, :] - np.where(finite, block, 0.0)
            cnt = count[None, :] - finite
        else:
            tot = np.broadcast_to(total, block.shape)
            cnt = np.broadcast_to(count, block.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return out


def pooled_within_std(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Spread of each feature around its speaker's mean, pooled over speakers [d]."""
    dev = x - speaker_means(x, speakers, leave_self_out=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a never-defined feature gets spread 1
        sd = np.sqrt(np.nanmean(dev ** 2, axis=0))
    return np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0)


def _nan_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a never-defined feature gets mean 0, spread 1
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0)
    return np.where(np.isfinite(mean), mean, 0.0), np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0)


# ---------------------------------------------------------------------------- logistic regression
def fit_logistic(z: np.ndarray, y: np.ndarray, *, l2: float, n_classes: int,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression. z [n, d] (no nan), y [n] -> W [d, k], b [k].

    ``sample_weight`` [n] replaces the class balance (e.g. to balance classes within each corpus);
    it is normalised to sum 1, as the class-balanced weights are.
    """
    n, d = z.shape
    if sample_weight is None:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        w_class = np.where(counts > 0, n / (n_classes * np.maximum(counts, 1)), 0.0)
        sw = w_class[y] / n
    else:
        sw = np.asarray(sample_weight, dtype=np.float64)
        sw = sw / sw.sum()
    onehot = np.eye(n_classes)[y]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes:]
        logits = z @ W + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.sum(sw * np.sum(onehot * logp, axis=1)) + 0.5 * l2 / n * np.sum(W * W)
        g = (np.exp(logp) - onehot) * sw[:, None]
        gW = z.T @ g + l2 / n * W
        gb = g.sum(axis=0)
        return loss, np.concatenate([gW.ravel(), gb])

    theta0 = np.zeros(d * n_classes + n_classes)
    res = scipy.optimize.minimize(loss_grad, theta0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": 2000, "gtol": 1e-8})
    W = res.x[: d * n_classes].reshape(d, n_classes)
    return W, res.x[d * n_classes:]


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of held-out logits."""
    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(y)), y]))

    res = scipy.optimize.minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(math.exp(res.x))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------- metrics
def uar(y_true: np.ndarray, y_pred: np.ndarray, labels: Iterable[int]) -> float:
    recalls = [np.mean(y_pred[y_true == c] == c) for c in labels if np.any(y_true == c)]
    return float(np.mean(recalls)) if recalls else math.nan


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, *, n_bins: int = 10) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)


def scores_summary(probs: np.ndarray, y: np.ndarray, speakers: np.ndarray) -> dict:
    """Every figure the card reports, for one set of out-of-fold probabilities."""
    k = len(CLASSES)
    pred = probs.argmax(axis=1)
    ang, neu = CLASSES.index("angry"), CLASSES.index("neutral")
    an = np.isin(y, [ang, neu])
    an_pred = np.where(probs[an, ang] >= probs[an, neu], ang, neu)
    high = np.array([CLASSES.index(c) for c in HIGH_AROUSAL])
    y_high = np.isin(y, high).astype(int)
    p_high = (probs[:, high].sum(axis=1) >= 0.5).astype(int)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    return {
        "uar_4class": uar(y, pred, range(k)),
        "uar_angry_vs_neutral": uar(y[an], an_pred, [ang, neu]),
        "uar_high_vs_low_arousal": uar(y_high, p_high, [0, 1]),
        "accuracy": float(np.mean(pred == y)),
        "ece": expected_calibration_error(probs, y),
        "recall_per_class": {c: float(np.mean(pred[y == i] == i)) for i, c in enumerate(CLASSES)},
        "uar_per_speaker": {
            str(s): uar(y[speakers == s], pred[speakers == s], range(k)) for s in np.unique(speakers)
        },
        "predicted_share": {c: float(np.mean(pred == i)) for i, c in enumerate(CLASSES)},
        "confusion": confusion.tolist(),
    }


# ---------------------------------------------------------------------------- LOSO
@dataclass(frozen=True)
class Design:
    """Inputs of one head for every (rate, clip): z-scored features and the fitted normaliser."""

    names: tuple[str, ...]
    normalisation: str      # "global" | "speaker"


@dataclass(frozen=True)
class HeadSpec:
    """Which features a head sees relative to the speaker's baseline (``rel``) and as they are (``abs``)."""

    rel: tuple[str, ...]
    abs: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple("rel:" + n for n in self.rel) + tuple("abs:" + n for n in self.abs)


def _columns(corpus: Corpus, names: Sequence[str]) -> dict[str, np.ndarray]:
    idx = [corpus.names.index(n) for n in names]
    return {c: corpus.vectors[c][:, idx] for c in CONDITIONS}


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    z = (x - mean) / scale
    return np.clip(np.where(np.isfinite(z), z, 0.0), -clip, clip)


@dataclass(frozen=True)
class _Normaliser:
    mean: np.ndarray
    scale: np.ndarray


def _fit_normaliser(spec: HeadSpec, x_rel: Mapping[str, np.ndarray], x_abs: Mapping[str, np.ndarray],
                    speakers: np.ndarray, rows: np.ndarray) -> _Normaliser:
    """Relative part: mean 0, pooled within-speaker spread; absolute part: population mean and spread."""
    spk = np.concatenate([speakers[rows]] * len(TRAIN_CONDITIONS))
    means, scales = [], []
    if spec.rel:
        stacked = np.vstack([x_rel[c][rows] for c in TRAIN_CONDITIONS])
        means.append(np.zeros(len(spec.rel)))
        scales.append(pooled_within_std(stacked, spk))
    if spec.abs:
        m, sd = _nan_mean_std(np.vstack([x_abs[c][rows] for c in TRAIN_CONDITIONS]))
        means.append(m)
        scales.append(sd)
    return _Normaliser(np.concatenate(means), np.concatenate(scales))


def _inputs(spec: HeadSpec, x_rel, x_abs, base, cond: str, rows: np.ndarray) -> np.ndarray:
    parts = []
    if spec.rel:
        parts.append(x_rel[cond][rows] - base[cond][rows])
    if spec.abs:
        parts.append(x_abs[cond][rows])
    return np.hstack(parts)


def loso(
    corpus: Corpus, spec: HeadSpec, *, l2: float, clip: float,
    train_calm: Mapping[str, np.ndarray] | None = None, test_calm: Mapping[str, np.ndarray] | None = None,
    by: str = "speaker", test_corpus: Corpus | None = None,
) -> dict[str, np.ndarray]:
    """Out-of-fold logits per condition [n_test, k]: one model per held-out speaker (``by="gender"``:
    per held-out gender, the cross-gender transfer check), trained on the TRAIN_CONDITIONS versions of
    the other speakers' rows of ``corpus`` and applied to the held-out rows of ``test_corpus``
    (default: ``corpus`` itself; e.g. clips for training, live-sized windows for testing).

    The relative features of a row are centred on its speaker's baseline: the mean of the speaker's
    rows from other recordings in the same condition, or only of those flagged calm (condition ->
    bool [n]) in ``train_calm`` (training rows) and ``test_calm`` (test rows). A baseline only mixes
    rows of one speaker, so it is computed for the whole corpus up front without leaking across folds.
    """
    test_corpus = corpus if test_corpus is None else test_corpus
    y = corpus.labels
    folds = corpus.speakers if by == "speaker" else corpus.genders
    test_folds = test_corpus.speakers if by == "speaker" else test_corpus.genders
    x_rel, x_abs = _columns(corpus, spec.rel), _columns(corpus, spec.abs)
    t_rel, t_abs = _columns(test_corpus, spec.rel), _columns(test_corpus, spec.abs)
    base_train = {c: baseline_means(x_rel[c], corpus.speakers, None if train_calm is None else train_calm[c],
                                    groups=corpus.clip_ids) for c in CONDITIONS} if spec.rel else {}
    base_test = {c: baseline_means(t_rel[c], test_corpus.speakers, None if test_calm is None else test_calm[c],
                                   groups=test_corpus.clip_ids) for c in CONDITIONS} if spec.rel else {}
    out = {c: np.zeros((len(test_corpus.labels), len(CLASSES))) for c in CONDITIONS}
    for s in np.unique(folds):
        train, test = folds != s, test_folds == s
        norm = _fit_normaliser(spec, x_rel, x_abs, corpus.speakers, train)
        z = np.vstack([_standardise(_inputs(spec, x_rel, x_abs, base_train, c, train), norm.mean, norm.scale, clip)
                       for c in TRAIN_CONDITIONS])
        W, b = fit_logistic(z, np.concatenate([y[train]] * len(TRAIN_CONDITIONS)), l2=l2, n_classes=len(CLASSES))
        for c in CONDITIONS:
            out[c][test] = _standardise(_inputs(spec, t_rel, t_abs, base_test, c, test),
                                        norm.mean, norm.scale, clip) @ W + b
    return out


def baseline_means(x: np.ndarray, speakers: np.ndarray, calm: np.ndarray | None, *,
                   groups: np.ndarray | None = None) -> np.ndarray:
    """Baseline of each row [n, d]: nan-aware mean of the speaker's rows from OTHER recordings
    (``groups``, default: other rows) that are ``calm`` (None = all of them).

    A speaker with fewer than MIN_BASELINE_CLIPS such rows falls back to all their rows from other
    recordings, as a live baseline would eventually learn from whatever speech there is.
    """
    groups = np.arange(len(x)) if groups is None else groups
    if calm is None and len(np.unique(groups)) == len(groups):
        return speaker_means(x, speakers, leave_self_out=True)
    calm = np.ones(len(x), dtype=bool) if calm is None else calm
    out = np.empty_like(x)
    for s in np.unique(speakers):
        idx = np.flatnonzero(speakers == s)
        for g in np.unique(groups[idx]):
            rows = idx[groups[idx] == g]
            others = idx[groups[idx] != g]
            pool = others[calm[others]]
            if len(np.unique(groups[pool])) < MIN_BASELINE_CLIPS:
                pool = others
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # an all-nan column stays nan, by design
                out[rows] = np.nanmean(x[pool], axis=0)
    return out


def loso_temperature(logits: np.ndarray, y: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Probabilities where each speaker's temperature was fitted on the other speakers' logits."""
    probs = np.zeros_like(logits)
    for s in np.unique(speakers):
        m = speakers == s
        t = fit_temperature(logits[~m], y[~m])
        probs[m] = softmax(logits[m] / t)
    return probs


# ---------------------------------------------------------------------------- the whole run
_HEADLINE = ("uar_4class", "uar_angry_vs_neutral", "uar_high_vs_low_arousal", "ece")


def candidate_specs(all_names: Sequence[str], feature_set: str) -> dict[str, HeadSpec]:
    """The relative heads compared: baseline-relative features alone, or with the gain-independent
    prosodic functionals as they are (absolute pitch level, spectral balance, rate...)."""
    rel = feature_names(all_names, feature_set, head="relative")
    return {
        "relative": HeadSpec(rel=rel, abs=()),
        "relative+absolute-prosody": HeadSpec(rel=rel, abs=feature_names(all_names, PROSODY_SET, head="global")),
    }


def evaluate_candidate(
    corpus: Corpus, spec: HeadSpec, *, key: str, l2: float, clip: float,
    calm_sets: Mapping[str, Mapping[str, Mapping[str, np.ndarray] | None]] | None = None,
    calm_kind: str | None = None, test_all: bool = False, comparison: dict | None = None, progress=print,
) -> tuple[float, dict, dict]:
    """LOSO and cross-gender figures of one candidate head.

    ``calm_sets[protocol][kind]`` gives the calm flags that form baselines ("calm-predicted" for the
    held-out speakers; ``calm_kind`` for the training ones; ``test_all`` = the held-out speaker's
    baseline from all their other clips). Returns (score, figures per condition, logits per protocol);
    the score is the mean of the LOSO and cross-gender 4-class UARs, each in its worst condition, so
    selection favours what transfers.
    """
    y, spk = corpus.labels, corpus.speakers
    out = {}
    for protocol, by in (("loso", "speaker"), ("cross_gender", "gender")):
        calm = {}
        if calm_kind is not None:
            calm["train_calm"] = calm_sets[protocol][calm_kind]
            calm["test_calm"] = None if test_all else calm_sets[protocol]["calm-predicted"]
        logits = loso(corpus, spec, l2=l2, clip=clip, by=by, **calm)
        probs = {c: loso_temperature(logits[c], y, spk) for c in CONDITIONS}
        out[protocol] = ({c: scores_summary(probs[c], y, spk) for c in CONDITIONS}, logits)
    res, logits = out["loso"]
    res_x = out["cross_gender"][0]
    if comparison is not None:
        comparison[key] = {c: {**{m: res[c][m] for m in _HEADLINE},
                               "cross_gender_uar_4class": res_x[c]["uar_4class"]} for c in CONDITIONS}
    progress(f"  {key:66s} " + "  ".join(f"{res[c]['uar_4class']:.3f}" for c in CONDITIONS)
             + "   " + "  ".join(f"{res_x[c]['uar_4class']:.3f}" for c in CONDITIONS))
    score = 0.5 * (min(res[c]["uar_4class"] for c in CONDITIONS)
                   + min(res_x[c]["uar_4class"] for c in CONDITIONS))
    res = {c: {**res[c], "cross_gender": {m: res_x[c][m] for m in _HEADLINE}} for c in CONDITIONS}
    return score, res, {"loso": logits, "cross_gender": out["cross_gender"][1]}


def calm_flags(corpus: Corpus, global_logits: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """protocol -> {"all": None, "calm-labels": flags, "calm-predicted": flags} (condition -> bool [n]):
    calm-labels = neutral or sad (training speakers only); calm-predicted = the global head's
    out-of-fold arousal below 0.5 (the live rule, no labels)."""
    y, spk = corpus.labels, corpus.speakers
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    calm_label = {c: ~np.isin(y, high) for c in CONDITIONS}
    out = {}
    for protocol, lg in global_logits.items():
        pred = {c: loso_temperature(lg[c], y, spk)[:, high].sum(axis=1) < 0.5 for c in CONDITIONS}
        out[protocol] = {"all": None, "calm-labels": calm_label, "calm-predicted": pred}
    return out


def evaluate_and_train(options: TrainOptions, *, prosody: ProsodyOptions | None = None,
                       clip: float = 5.0, transcriber=None, turn_training=None, progress=print) -> dict:
    """Compare feature sets, heads and baselines under LOSO, train the chosen heads, write the model.

    Every choice (feature set, head inputs, L2, how training baselines are formed) maximises the mean
    of two speaker-independent 4-class UARs, each in the worst of the three conditions: LOSO, and
    cross-gender (train on the 5 women, test on the 5 men, and back: a harder shift of speakers, a
    stand-in for the unseen speakers and languages of real calls).

    With a ``transcriber`` (the ASR's Whisper model), the per-turn heads over prosody + pooled encoder
    output are compared and trained too (``pipeline.training.emotion_turn``).
    """
    prosody = prosody or ProsodyOptions()
    t_start = time.perf_counter()
    corpus = load_corpus(options.data_dir, prosody=prosody, cache_dir=options.cache_dir)
    y, spk = corpus.labels, corpus.speakers
    progress(f"EmoDB: {len(y)} clips, {len(np.unique(spk))} speakers, features extracted in "
             f"{corpus.extract_s:.1f} s ({len(CONDITIONS)} conditions); LOSO UAR (4 classes):")
    l2_grid = L2_GRID if options.l2 < 0 else (options.l2,)
    sets = FEATURE_SETS if options.feature_set == "auto" else (options.feature_set,)
    comparison: dict[str, dict] = {}

    def run(key: str, spec: HeadSpec, l2: float, calm_kind: str | None = None,
            test_all: bool = False) -> tuple[float, dict, dict]:
        return evaluate_candidate(corpus, spec, key=key, l2=l2, clip=clip, calm_sets=calm_sets,
                                  calm_kind=calm_kind, test_all=test_all, comparison=comparison,
                                  progress=progress)

    calm_sets: dict[str, dict] = {}
    progress("  " + " " * 66 + " LOSO: " + "  ".join(CONDITIONS) + "   cross-gender: same")
    # 1. The global head (no baseline): used until a baseline is ready, and it decides what looks calm.
    best_g = None
    for fs in sets:
        spec = HeadSpec(rel=(), abs=feature_names(corpus.names, fs, head="global"))
        for l2 in l2_grid:
            score, res, logits = run(f"global | {fs} | no baseline | l2={l2:g}", spec, l2)
            if best_g is None or score > best_g[0] + 1e-9:
                best_g = (score, fs, l2, spec, res, logits)
    _, fs_g, l2_g, spec_g, res_g, logits_all_g = best_g
    logits_g = logits_all_g["loso"]
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    calm_sets.update(calm_flags(corpus, logits_all_g))
    calm_pred = calm_sets["loso"]["calm-predicted"]
    calm_kinds = calm_sets["loso"]

    # 2. The baseline head. Live, a baseline learns only from calm-looking speech, so the held-out
    #    speaker's baseline is the mean of their clips the global head calls calm (never their labels).
    best_r = None
    for fs in sets:
        for head_name, spec in candidate_specs(corpus.names, fs).items():
            for kind in BASELINE_KINDS:
                for l2 in l2_grid:
                    key = f"{head_name} | {fs} | train baseline {kind} | l2={l2:g}"
                    score, res, logits = run(key, spec, l2, calm_kind=kind)
                    if best_r is None or score > best_r[0] + 1e-9:
                        best_r = (score, f"{head_name} | {fs}", l2, kind, spec, res, logits)
    _, choice_r, l2_r, kind_r, spec_r, res_r, logits_all_r = best_r
    logits_r = logits_all_r["loso"]
    # The same head when the baseline is every other clip of the speaker, calm or not.
    _, res_r_all, _ = run(f"{choice_r} | train baseline {kind_r} | l2={l2_r:g} | TEST baseline all clips",
                          spec_r, l2_r, calm_kind=kind_r, test_all=True)

    def raw_ece(logits: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {c: expected_calibration_error(softmax(logits[c]), y) for c in CONDITIONS}

    details = {
        "global": {"choice": f"global | {fs_g}", "l2": l2_g, **res_g, "uncalibrated_ece": raw_ece(logits_g)},
        "relative": {"choice": choice_r, "l2": l2_r, "train_baseline": kind_r, **res_r,
                     "uncalibrated_ece": raw_ece(logits_r)},
        "relative_all_clips_baseline": res_r_all,
        "calm_looking_share": {c: float(calm_pred[c].mean()) for c in CONDITIONS},
    }

    # What the live engine sees: 2 s windows every second (a clip shorter than 2 s is one window),
    # scored by the clip-trained heads; the held-out speaker's baseline is their calm-looking windows
    # from other clips.
    windows = load_corpus(options.data_dir, prosody=prosody, cache_dir=options.cache_dir,
                          window_s=LIVE_WINDOW_S, hop_s=LIVE_HOP_S)
    yw = windows.labels
    lg_w = loso(corpus, spec_g, l2=l2_g, clip=clip, test_corpus=windows)
    pg_w = {c: loso_temperature(lg_w[c], yw, windows.speakers) for c in CONDITIONS}
    calm_w = {c: pg_w[c][:, high].sum(axis=1) < 0.5 for c in CONDITIONS}
    lr_w = loso(corpus, spec_r, l2=l2_r, clip=clip, train_calm=calm_kinds[kind_r], test_calm=calm_w,
                test_corpus=windows)
    details["windows"] = {
        "window_s": LIVE_WINDOW_S, "hop_s": LIVE_HOP_S, "rows": int(len(yw)),
        "global": {c: scores_summary(pg_w[c], yw, windows.speakers) for c in CONDITIONS},
        "relative": {c: scores_summary(loso_temperature(lr_w[c], yw, windows.speakers), yw, windows.speakers)
                     for c in CONDITIONS},
    }
    win = details["windows"]
    progress(f"live-sized windows ({len(yw)} x {LIVE_WINDOW_S:g} s), 4-class UAR: global "
             + "  ".join(f"{win['global'][c]['uar_4class']:.3f}" for c in CONDITIONS)
             + "   relative " + "  ".join(f"{win['relative'][c]['uar_4class']:.3f}" for c in CONDITIONS))

    # 3. Final heads: every speaker, both training conditions; temperature from the LOSO logits.
    heads = {
        "global": _final_head(corpus, spec_g, l2_g, None, clip, logits_g),
        "relative": _final_head(corpus, spec_r, l2_r, calm_kinds[kind_r], clip, logits_r),
    }
    turn = None
    encode_s_per_s = None
    if transcriber is not None:
        # injected (pipeline.training.emotion_turn.train_turn_heads), so the two modules import one way only
        if turn_training is None:
            raise ValueError("a transcriber needs turn_training=emotion_turn_training.train_turn_heads")
        turn_heads, turn, encode_s_per_s = turn_training(options, corpus, transcriber, clip=clip, progress=progress)
        heads.update(turn_heads)
    train_s = time.perf_counter() - t_start
    meta = write_model(options.out_dir, heads=heads, prosody=prosody, details=details,
                       comparison=comparison, corpus=corpus, turn=turn)
    # Timings vary from run to run, so they are reported, not written into the model files.
    return {**meta, "train_s": train_s, "feature_extraction_s": corpus.extract_s, "encode_s_per_s": encode_s_per_s}


def _final_head(corpus: Corpus, spec: HeadSpec, l2: float, calm: Mapping[str, np.ndarray] | None,
                clip: float, loso_logits: Mapping[str, np.ndarray]) -> Head:
    spk, y = corpus.speakers, corpus.labels
    x_rel, x_abs = _columns(corpus, spec.rel), _columns(corpus, spec.abs)
    base = {c: baseline_means(x_rel[c], spk, None if calm is None else calm[c], groups=corpus.clip_ids)
            for c in CONDITIONS} if spec.rel else {}
    rows = np.ones(len(y), dtype=bool)
    norm = _fit_normaliser(spec, x_rel, x_abs, spk, rows)
    z = np.vstack([_standardise(_inputs(spec, x_rel, x_abs, base, c, rows), norm.mean, norm.scale, clip)
                   for c in TRAIN_CONDITIONS])
    y_train = np.concatenate([y] * len(TRAIN_CONDITIONS))
    W, b = fit_logistic(z, y_train, l2=l2, n_classes=len(CLASSES))
    temperature = fit_temperature(np.vstack([loso_logits[c] for c in TRAIN_CONDITIONS]), y_train)
    return Head(names=spec.names, mean=norm.mean, scale=norm.scale, weights=W, bias=b,
                temperature=temperature, clip=clip)


def write_model(out_dir: Path, *, heads: Mapping[str, Head], prosody: ProsodyOptions, details: dict,
                comparison: dict, corpus: Corpus, turn: Mapping | None = None) -> dict:
    """Write the weights (safetensors) and model.json; both depend only on the data and the code.

    ``turn``: encoder_id, encoding_dim, prior_turns, prior_var and details of the turn heads (in ``heads``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for head_name, head in heads.items():
        for field, value in head.to_arrays().items():
            arrays[f"{head_name}.{field}"] = value
    if turn is not None:
        arrays["turn.prior_var"] = np.ascontiguousarray(turn["prior_var"], dtype=np.float64)
    # safetensors: no pickle, and byte-identical output for identical arrays (a zip would stamp times).
    safetensors.numpy.save_file(arrays, str(out_dir / MODEL_FILE))
    digest = hashlib.sha256((out_dir / MODEL_FILE).read_bytes()).hexdigest()
    meta = {
        "id": f"emodb-{'turn' if turn is not None else 'prosody'}-lr-{digest[:8]}",
        "classes": list(CLASSES),
        "high_arousal": list(HIGH_AROUSAL),
        "heads": {name: list(head.names) for name, head in heads.items()},
        "prosody_options": dataclasses.asdict(prosody),
        "vector_names": list(corpus.names),
        "weights_sha256": digest,
        "trained_on": {"corpus": "EmoDB (CC0-1.0)", "clips": len(corpus.files),
                       "speakers": sorted(set(corpus.speakers.tolist())),
                       "conditions": list(TRAIN_CONDITIONS)},
        "loso": _round(details),
        "comparison": _round(comparison),
    }
    if turn is not None:
        meta["turn"] = {"encoder_id": turn["encoder_id"], "encoding_dim": turn["encoding_dim"],
                        "training_pack_s": turn["training_pack_s"],
                        "prior_turns": turn["prior_turns"], **turn["details"]}
    with open(out_dir / META_FILE, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return meta


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- cost
def cost_per_audio_second(model, y: np.ndarray, *, sr: int, window_s: float = LIVE_WINDOW_S,
                          hop_s: float = LIVE_HOP_S, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of CPU per second of one speaker's audio, the way the engine runs the stage.

    Parameters
    ----------
    model : EmotionModel
    y : np.ndarray [shape=(n,)], one speaker's audio at ``sr`` Hz
    window_s, hop_s : the live pattern (the last ``window_s`` every ``hop_s``)

    Returns
    -------
    dict: ``live_ms_per_s`` (windows: extraction + prediction), ``extract_ms_per_window``,
    ``predict_ms_per_window``, ``turn_ms_per_s`` (one pass over the whole signal).
    """
    win, hop = int(window_s * sr), int(hop_s * sr)
    starts = list(range(0, max(1, len(y) - win + 1), hop))
    baseline = model.new_baseline()
    best_extract = best_predict = best_turn = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        vecs = [model.extractor.vector(y[s:s + win], sr=sr)[1] for s in starts]
        t1 = time.perf_counter()
        for v in vecs:
            model.predict(v, baseline=baseline)
            baseline.update(v, calm=model.looks_calm(v))
        t2 = time.perf_counter()
        model.predict_audio(y, sr=sr)
        t3 = time.perf_counter()
        best_extract, best_predict = min(best_extract, t1 - t0), min(best_predict, t2 - t1)
        best_turn = min(best_turn, t3 - t2)
    audio_s = len(starts) * hop_s
    return {
        "live_ms_per_s": 1000.0 * (best_extract + best_predict) / audio_s,
        "extract_ms_per_window": 1000.0 * best_extract / len(starts),
        "predict_ms_per_window": 1000.0 * best_predict / len(starts),
        "turn_ms_per_s": 1000.0 * best_turn / (len(y) / sr),
    }
