"""Takeover detectors over the per-second fused agitation evidence (``[fusion] detector``).

``"level"`` (default): the agitation level is the evidence smoothed by the rise/fall time constants, and
the takeover policy raises when it stays at ``raise_level`` for ``min_sustain_s``. Its latency is the
2 s analysis window filling, the smoother catching up and the sustain, one after the other.

``"cusum"``: a one-sided CUSUM (Page 1954) on the unsmoothed evidence ``e`` in [0, 1] of each second:
``S = min(h, max(0, S + e - drift))``. Seconds above ``drift`` accumulate, seconds below it pay back, so a
run of strong evidence crosses the threshold ``h`` sooner than a smoothed level that must also stay up
for a sustain, while one loud second (at most ``1 - drift``) never does when ``h > 1 - drift``. The
level reported is ``S / h``: 1 = the evidence so far is enough for a takeover, and the policy raises
there (``raise_level = 1``, ``min_sustain_s = 0``); S is capped at h so a long angry stretch is
forgotten within ``h / drift`` seconds of calm, as the clearing hysteresis expects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

DETECTORS = ("level", "cusum")


class Detector(Protocol):
    """Per-call state: one update per second with that second's fused evidence; returns the level."""

    def update(self, evidence: float) -> float: ...


@dataclass
class LevelDetector:
    """The asymmetric exponential smoother: rises with ``rise_tau_s``, falls with ``fall_tau_s``."""

    rise_tau_s: float
    fall_tau_s: float
    level: float = 0.0

    def update(self, evidence: float) -> float:
        tau = self.rise_tau_s if evidence > self.level else self.fall_tau_s
        self.level += (evidence - self.level) * (1.0 - math.exp(-1.0 / tau))
        return self.level


@dataclass
class CusumDetector:
    """One-sided CUSUM of (evidence - drift), capped at the threshold; level = S / threshold."""

    drift: float
    threshold: float
    statistic: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.drift < 1.0:
            raise ValueError("fusion.cusum_drift must be within 0..1 (both excluded)")
        if self.threshold <= 0.0:
            raise ValueError("fusion.cusum_threshold must be positive")

    def update(self, evidence: float) -> float:
        e = min(1.0, max(0.0, evidence))
        self.statistic = min(self.threshold, max(0.0, self.statistic + e - self.drift))
        return self.statistic / self.threshold


def make_detector(kind: str, *, rise_tau_s: float, fall_tau_s: float, cusum_drift: float,
                  cusum_threshold: float, level: float = 0.0) -> LevelDetector | CusumDetector:
    """The detector ``kind`` (one of :data:`DETECTORS`) with its parameters, fresh for one call."""
    if kind == "level":
        return LevelDetector(rise_tau_s, fall_tau_s, level)
    if kind == "cusum":
        return CusumDetector(cusum_drift, cusum_threshold, min(1.0, max(0.0, level)) * cusum_threshold)
    raise ValueError(f"fusion.detector must be one of {DETECTORS}, got {kind!r}")
