"""Calibration and the figures of the emotion heads: temperature scaling on out-of-fold logits, UAR,
expected calibration error, the card's summary of one set of probabilities."""
from __future__ import annotations

import math

import numpy as np
import scipy.optimize

from ..emotion import CLASSES, HIGH_AROUSAL
# UAR and ECE are defined once, with the evaluation metrics (the card and `callpulse evaluate` agree).
from ..evaluate.metrics import top_label_ece as expected_calibration_error, uar  # noqa: F401


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


def loso_temperature(logits: np.ndarray, y: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Probabilities where each speaker's temperature was fitted on the other speakers' logits."""
    probs = np.zeros_like(logits)
    for s in np.unique(speakers):
        m = speakers == s
        t = fit_temperature(logits[~m], y[~m])
        probs[m] = softmax(logits[m] / t)
    return probs
