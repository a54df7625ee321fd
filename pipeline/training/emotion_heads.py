"""The emotion heads' fitting: speaker baselines and normalisation, class-balanced multinomial logistic
regression, and out-of-fold (leave-one-speaker-out / cross-gender) logits of one head."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import scipy.optimize

from ..emotion import CLASSES
from .emotion_data import CONDITIONS, TRAIN_CONDITIONS, Corpus

MIN_BASELINE_CLIPS = 3


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
