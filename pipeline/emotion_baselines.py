"""Per-speaker calm baselines for the emotion heads: what is ordinary for this caller or this agent.

:class:`EmotionBaseline` keeps a running mean of the per-second feature vector, :class:`TurnBaseline` a
running mean and spread of the turn vector (prosody + pooled encoder output); both learn only from calm
speech, one per speaker per call (or shift), never shared. :func:`shrunk_mean_std` is also what training
uses, so live and training standardise alike.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class BaselineOptions(Protocol):
    """The two ``[emotion]`` options a baseline reads (:class:`pipeline.emotion.EmotionOptions` has them)."""

    baseline_min_updates: int
    baseline_memory_updates: int


def _calm_finite(vector: np.ndarray, *, calm: bool, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(vector, finite mask) when a baseline should learn from it: calm speech with a finite value."""
    if not calm:
        return None
    x = np.asarray(vector, dtype=np.float64)
    if x.shape != shape:
        raise ValueError(f"baseline expects vectors of shape {shape}, got {x.shape}")
    finite = np.isfinite(x)
    return (x, finite) if finite.any() else None


class EmotionBaseline:
    """One speaker's running baseline of the emotion feature vector (per call or per shift).

    A nan-aware running mean learnt only from calm speech: a plain average over the first updates, then
    an exponential memory of ``baseline_memory_updates``.
    """

    def __init__(self, n_features: int, options: BaselineOptions):
        self.options = options
        self._mean = np.zeros(n_features)
        self._count = np.zeros(n_features)
        self._updates = 0

    @property
    def ready(self) -> bool:
        return self._updates >= self.options.baseline_min_updates

    @property
    def n_updates(self) -> int:
        return self._updates

    @property
    def mean(self) -> np.ndarray:
        """Current baseline [d]; nan for features never observed."""
        return np.where(self._count > 0, self._mean, np.nan)

    def update(self, vector: np.ndarray, *, calm: bool) -> None:
        """Learn from one window/turn's vector if it is calm speech; anything else is ignored."""
        learnt = _calm_finite(vector, calm=calm, shape=self._mean.shape)
        if learnt is None:
            return
        x, finite = learnt
        self._updates += 1
        self._count[finite] = np.minimum(self._count[finite] + 1, self.options.baseline_memory_updates)
        self._mean[finite] += (x[finite] - self._mean[finite]) / self._count[finite]


class TurnBaseline:
    """One speaker's running mean and spread of the turn vector (prosody + pooled encoder output).

    Learns only from calm-looking turns (``EmotionModel.turn_looks_calm``), as the ``turn_speaker`` head
    was trained; predict a turn *before* adding it. The spread is shrunk towards the training
    population's within-speaker spread by ``prior_turns`` pseudo-turns, so a baseline of a few turns does
    not divide by a spread of almost nothing.
    """

    def __init__(self, prior_var: np.ndarray, *, min_turns: int, prior_turns: float):
        self._prior_var = np.asarray(prior_var, dtype=np.float64)
        self._sum = np.zeros_like(self._prior_var)
        self._sumsq = np.zeros_like(self._prior_var)
        self._count = np.zeros_like(self._prior_var)
        self._turns = 0
        self.min_turns = min_turns
        self.prior_turns = prior_turns

    @property
    def ready(self) -> bool:
        return self._turns >= self.min_turns

    @property
    def n_turns(self) -> int:
        return self._turns

    def update(self, vector: np.ndarray, *, calm: bool) -> None:
        """Learn from one turn's vector if it is calm speech; anything else is ignored."""
        learnt = _calm_finite(vector, calm=calm, shape=self._sum.shape)
        if learnt is None:
            return
        x, finite = learnt
        self._turns += 1
        self._sum[finite] += x[finite]
        self._sumsq[finite] += x[finite] ** 2
        self._count[finite] += 1

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [d], spread [d]); nan where a feature was never observed."""
        return shrunk_mean_std(self._sum, self._sumsq, self._count, self._prior_var, self.prior_turns)


def shrunk_mean_std(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray, prior_var: np.ndarray,
                    prior_turns: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread from running sums, the variance shrunk towards ``prior_var`` by ``prior_turns``
    pseudo-observations. Shared by the live baseline and training, so both standardise alike."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = np.where(count > 0, np.maximum(total_sq / np.maximum(count, 1) - mean ** 2, 0.0), 0.0)
    var = (count * var + prior_turns * prior_var) / (count + prior_turns)
    return mean, np.sqrt(np.maximum(var, 1e-12))
