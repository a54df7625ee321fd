"""A speaker's running prosody baseline: what is ordinary for this caller or this agent, learnt from their
calm speech, so that features can be read as z-scores ("louder than usual for this speaker").

Per-call (or per-shift) state: one ``SpeakerBaseline`` per speaker, never shared. Its options are the
baseline fields of :class:`pipeline.prosody.ProsodyOptions` (``baseline_memory_s``,
``baseline_min_speech_s``, ``zscore_clip``); its input is :class:`pipeline.prosody.ProsodyFeatures`.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .prosody import ProsodyFeatures, ProsodyOptions

# Smallest spread a baseline may claim for each feature: a few seconds of calm speech can be nearly
# constant, and dividing by that near-zero spread would turn ordinary variation into huge z-scores.
# Values are about a just-noticeable difference in each unit.
_MIN_SPREAD: Mapping[str, float] = {
    "f0_median_st": 1.0,
    "f0_range_st": 1.0,
    "energy_db": 2.0,
    "loudness_range_db": 2.0,
    "speaking_rate_syl_s": 0.5,
    "pause_ratio": 0.05,
    "jitter": 0.005,
    "shimmer": 0.02,
    "hnr_db": 1.0,
    "spectral_slope_db_khz": 0.5,
    "alpha_ratio_db": 1.0,
}


class SpeakerBaseline:
    """One speaker's running prosody baseline (per call, or per agent shift). Holds no shared state.

    Learns slowly, and only from speech the caller of :meth:`update` judged calm: an exponentially
    weighted mean and variance whose memory is ``baseline_memory_s`` seconds of analysed audio.
    """

    FEATURES: tuple[str, ...] = tuple(_MIN_SPREAD)

    def __init__(self, options: ProsodyOptions):
        self.options = options
        self._seconds = 0.0
        self._weight = {k: 0.0 for k in self.FEATURES}
        self._mean = {k: 0.0 for k in self.FEATURES}
        self._var = {k: 0.0 for k in self.FEATURES}

    @property
    def ready(self) -> bool:
        return self._seconds >= self.options.baseline_min_speech_s and self._seconds > 0.0

    @property
    def speech_s(self) -> float:
        """Seconds of calm speech learnt so far."""
        return self._seconds

    def update(self, features: ProsodyFeatures, *, calm: bool) -> None:
        """Fold one window's features into the baseline if ``calm``; other speech is ignored."""
        if not calm or features.speech_s <= 0.0:
            return
        dt = features.speech_s
        self._seconds += dt
        for k in self.FEATURES:
            x = float(getattr(features, k))
            if not math.isfinite(x):
                continue
            # Plain average while young, then an exponential memory of baseline_memory_s seconds.
            self._weight[k] = min(self._weight[k] + dt, self.options.baseline_memory_s)
            alpha = dt / self._weight[k]
            delta = x - self._mean[k]
            self._mean[k] += alpha * delta
            self._var[k] = (1.0 - alpha) * (self._var[k] + alpha * delta * delta)

    def zscores(self, features: ProsodyFeatures) -> dict[str, float]:
        """Each baseline feature as a z-score against this speaker (0.0 until ready or when undefined)."""
        out: dict[str, float] = {}
        clip = self.options.zscore_clip
        for k in self.FEATURES:
            x = float(getattr(features, k))
            if not self.ready or self._weight[k] <= 0.0 or not math.isfinite(x):
                out[k] = 0.0
                continue
            spread = max(math.sqrt(self._var[k]), _MIN_SPREAD[k])
            out[k] = float(np.clip((x - self._mean[k]) / spread, -clip, clip))
        return out

    def means(self) -> dict[str, float | None]:
        """The baseline's current means (None for features not seen yet)."""
        return {k: (self._mean[k] if self._weight[k] > 0 else None) for k in self.FEATURES}
