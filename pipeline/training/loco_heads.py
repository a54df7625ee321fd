"""The per-second emotion heads of the cross-corpus recipe: the recipe's choices (:class:`Recipe`), the
class balance across corpora, the global and speaker-relative heads, their speaker-held-out calibration,
and their logits on held-out clips and live-sized windows. Selection and figures: ``training.loco``.
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..emotion import CLASSES, HIGH_AROUSAL, Head
from .corpora import RATES, Features
from .emotion_calibration import fit_temperature, softmax
from .emotion_data import PROSODY_MFCC_SET, PROSODY_SET, feature_names
from .emotion_heads import _standardise as _z, baseline_means, fit_logistic, pooled_within_std

CALM_AROUSAL_MAX = 0.5
_HIGH = np.array([CLASSES.index(c) for c in HIGH_AROUSAL])
_ANG, _HAP, _NEU, _SAD = (CLASSES.index(c) for c in ("angry", "happy", "neutral", "sad"))


@dataclass(frozen=True)
class Recipe:
    """Every modelling choice of the per-second heads (compared under LOCO)."""

    feature_set: str = PROSODY_SET        # prosody | prosody+mfcc
    balance: str = "corpus-class"         # class | corpus-class (each corpus's classes weigh alike)
    l2_global: float = 10.0
    l2_relative: float = 10.0
    relative_inputs: str = "relative"     # relative | relative+absolute-prosody
    train_baseline: str = "calm-labels"   # calm-labels (training speakers' neutral/sad clips) | all
    clip: float = 5.0

    def describe(self) -> str:
        return (f"{self.feature_set} | balance {self.balance} | global l2={self.l2_global:g} | "
                f"{self.relative_inputs} l2={self.l2_relative:g} baseline {self.train_baseline}")


GLOBAL_GRID = {"feature_set": (PROSODY_SET, PROSODY_MFCC_SET), "balance": ("class", "corpus-class"),
               "l2_global": (3.0, 30.0)}
RELATIVE_GRID = {"relative_inputs": ("relative", "relative+absolute-prosody"),
                 "train_baseline": ("calm-labels", "all"), "l2_relative": (3.0, 30.0)}


def _grid(base: Recipe, grid: Mapping[str, Sequence]) -> list[Recipe]:
    out = [base]
    for key, values in grid.items():
        out = [dataclasses.replace(r, **{key: v}) for r in out for v in values]
    return out


# ---------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class Heads:
    """The two per-second heads as the engine loads them (``pipeline.emotion.Head``)."""

    global_: Head
    relative: Head


def _global_names(names: Sequence[str], recipe: Recipe) -> tuple[str, ...]:
    return feature_names(names, recipe.feature_set, head="global")


def _relative_parts(names: Sequence[str], recipe: Recipe) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rel = feature_names(names, recipe.feature_set, head="relative")
    ab = feature_names(names, PROSODY_SET, head="global") if recipe.relative_inputs != "relative" else ()
    return rel, ab


def _cols(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    return np.array([list(names).index(n) for n in wanted], dtype=np.int64)


def _weights(y: np.ndarray, corpora: np.ndarray, balance: str) -> np.ndarray:
    """Class balance overall, or within each corpus with every corpus weighing alike."""
    w = np.zeros(len(y))
    groups = np.zeros(len(y), dtype=int) if balance == "class" else np.unique(corpora, return_inverse=True)[1]
    for g in np.unique(groups):
        m = groups == g
        classes = np.unique(y[m])
        for c in classes:
            mc = m & (y == c)
            w[mc] = 1.0 / (mc.sum() * len(classes))
    return w / w.mean()


def _nan_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    return np.where(np.isfinite(mean), mean, 0.0), np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0)


def _calm_labels(y: np.ndarray) -> np.ndarray:
    return ~np.isin(y, _HIGH)


def _train_global(F: Features, train: np.ndarray, recipe: Recipe) -> Head:
    names = _global_names(F.names, recipe)
    idx = _cols(F.names, names)
    y, corp = F.labels[train], F.corpora[train]
    x = np.vstack([F.clips[r][train][:, idx] for r in RATES])
    mean, scale = _nan_mean_std(x)
    z = _z(x, mean, scale, recipe.clip)
    yy = np.concatenate([y] * len(RATES))
    w = np.concatenate([_weights(y, corp, recipe.balance)] * len(RATES))
    W, b = fit_logistic(z, yy, l2=recipe.l2_global, n_classes=len(CLASSES), sample_weight=w)
    return Head(names=tuple("abs:" + n for n in names), mean=mean, scale=scale, weights=W, bias=b,
                temperature=1.0, clip=recipe.clip)


def _relative_inputs(F: Features, rows: np.ndarray, recipe: Recipe | Head, calm: Mapping[str, np.ndarray] | None,
                     *, windows: bool) -> dict[str, np.ndarray]:
    """rate -> [n_rows, d] relative head inputs (rel features minus baseline, then abs features) of the
    clips (or windows) ``rows``; a row's baseline is its speaker's rows of other clips flagged ``calm``.
    ``recipe`` may be a trained relative Head: its input names say which features."""
    if isinstance(recipe, Head):
        rel = tuple(n[4:] for n in recipe.names if n.startswith("rel:"))
        ab = tuple(n[4:] for n in recipe.names if n.startswith("abs:"))
    else:
        rel, ab = _relative_parts(F.names, recipe)
    ri, ai = _cols(F.names, rel), _cols(F.names, ab)
    if windows:
        clip_of = F.window_clip
        in_rows = rows[clip_of]
        spk = F.speakers[clip_of][in_rows]
        groups = clip_of[in_rows]
        source = F.windows
    else:
        in_rows = rows
        spk = F.speakers[rows]
        groups = np.flatnonzero(rows)
        source = F.clips
    out = {}
    for r in RATES:
        x = source[r][in_rows]
        base = baseline_means(x[:, ri], spk, None if calm is None else calm[r], groups=groups)
        out[r] = np.hstack([x[:, ri] - base, x[:, ai]]) if len(ai) else x[:, ri] - base
    return out


def _train_relative(F: Features, train: np.ndarray, recipe: Recipe) -> Head:
    rel, ab = _relative_parts(F.names, recipe)
    y, corp = F.labels[train], F.corpora[train]
    calm = None
    if recipe.train_baseline == "calm-labels":
        flags = _calm_labels(y)
        calm = {r: flags for r in RATES}
    x = _relative_inputs(F, train, recipe, calm, windows=False)
    stacked = np.vstack([x[r] for r in RATES])
    spk = np.concatenate([F.speakers[train]] * len(RATES))
    raw = np.vstack([F.clips[r][train][:, _cols(F.names, rel)] for r in RATES])
    mean_parts = [np.zeros(len(rel))]
    scale_parts = [pooled_within_std(raw, spk)]
    if ab:
        m, sd = _nan_mean_std(stacked[:, len(rel):])
        mean_parts.append(m)
        scale_parts.append(sd)
    mean, scale = np.concatenate(mean_parts), np.concatenate(scale_parts)
    z = _z(stacked, mean, scale, recipe.clip)
    yy = np.concatenate([y] * len(RATES))
    w = np.concatenate([_weights(y, corp, recipe.balance)] * len(RATES))
    W, b = fit_logistic(z, yy, l2=recipe.l2_relative, n_classes=len(CLASSES), sample_weight=w)
    names = tuple("rel:" + n for n in rel) + tuple("abs:" + n for n in ab)
    return Head(names=names, mean=mean, scale=scale, weights=W, bias=b, temperature=1.0, clip=recipe.clip)


def _logits(head: Head, x: np.ndarray) -> np.ndarray:
    return _z(x, head.mean, head.scale, head.clip) @ head.weights + head.bias


def apply_heads(F: Features, heads: Heads, test: np.ndarray, recipe: Recipe | None = None) -> dict:
    """Logits of the held-out clips ``test`` [n_clips] bool: ``{"clip"|"win": {rate: {"global", "relative"}}}``.

    The relative head's baseline for a held-out speaker is their other clips' (windows') mean over those
    the global head (with its temperature) calls calm: audio only, as live.
    """
    gi = _cols(F.names, [n[4:] for n in heads.global_.names])
    out: dict = {}
    for kind in ("clip", "win"):
        windows = kind == "win"
        rows = test[F.window_clip] if windows else test
        src = F.windows if windows else F.clips
        g = {r: _logits(heads.global_, src[r][rows][:, gi]) for r in RATES}
        calm_rows = {r: softmax(g[r] / heads.global_.temperature)[:, _HIGH].sum(axis=1) < CALM_AROUSAL_MAX
                     for r in RATES}
        x = _relative_inputs(F, test, heads.relative, calm_rows, windows=windows)
        out[kind] = {r: {"global": g[r], "relative": _logits(heads.relative, x[r])} for r in RATES}
    return out


def _groups(F: Features, train: np.ndarray) -> list[np.ndarray]:
    """Inner folds of the training clips: one per corpus, or (one corpus) up to 5 groups of speakers."""
    corp = F.corpora
    names = sorted(set(corp[train]))
    if len(names) >= 2:
        return [train & (corp == c) for c in names]
    spk = F.speakers
    speakers = sorted(set(spk[train]))
    k = min(5, len(speakers))
    fold_of = {s: i % k for i, s in enumerate(sorted(speakers, key=lambda s: zlib.crc32(s.encode())))}
    fid = np.array([fold_of.get(s, -1) for s in spk])
    return [train & (fid == i) for i in range(k)]


def _speaker_groups(F: Features, train: np.ndarray, k: int = 5) -> list[np.ndarray]:
    """Up to k groups of the training speakers, each holding speakers of every training corpus."""
    spk = F.speakers
    speakers = sorted(set(spk[train]), key=lambda s: zlib.crc32(s.encode()))
    k = min(k, len(speakers))
    fold_of = {s: i % k for i, s in enumerate(speakers)}
    fid = np.array([fold_of.get(s, -1) for s in spk])
    return [train & (fid == i) for i in range(k)]


def fit_heads(F: Features, train: np.ndarray, recipe: Recipe, *, calibrate: bool = True) -> Heads:
    """Train both heads on the clips ``train``; temperatures from out-of-fold logits of held-out
    *speakers* of the training corpora.

    Not of held-out corpora: trained on one corpus, another corpus is often at chance or inverted
    (Korean), so the likelihood-optimal temperature there is unbounded and the heads came out flat
    (P(angry) 0.24-0.25 on every window of a call): nothing for fusion or the calm judgement to use. A
    speaker-held-out temperature keeps the heads' ranking usable; ECE on unseen corpora is then worse,
    and the card reports it.
    """
    g, r = _train_global(F, train, recipe), _train_relative(F, train, recipe)
    if not calibrate:
        return Heads(g, r)
    y = F.labels
    oof_g, oof_r, ys = [], [], []
    for held in _speaker_groups(F, train):
        inner = fit_heads(F, train & ~held, recipe, calibrate=False)
        lg = apply_heads(F, inner, held, recipe)["clip"]
        for rate in RATES:
            oof_g.append(lg[rate]["global"])
            oof_r.append(lg[rate]["relative"])
            ys.append(y[held])
    yy = np.concatenate(ys)
    tg, tr = fit_temperature(np.vstack(oof_g), yy), fit_temperature(np.vstack(oof_r), yy)
    return Heads(dataclasses.replace(g, temperature=tg), dataclasses.replace(r, temperature=tr))
