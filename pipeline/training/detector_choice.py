"""Choosing the takeover detector (``[fusion] detector``, ``pipeline.detector``) on evaluation calls.

The CUSUM's drift and threshold are chosen by the rule the smoothed level's timing is
(:func:`pipeline.training.fusion.select_timing`): the most recall with at most ``MAX_FALSE`` false
takeovers per calm call (lively-calm included) and at most ``MAX_EARLY`` of escalating calls alerted before
their onset, then the shortest median latency; :func:`loco_detectors` compares both detectors under
leave-one-corpus-out (fusion weights and detector parameters fitted without the corpus scored), and
:func:`side_by_side` scores fixed timings on the same calls.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from ..fusion import LearnedFusion
from .fusion import (CallCues, Timing, budget_key, cusum_timing, loco_folds,
                     detector_levels, fit_fusion, latency_parts, replay_evidence, score, select_timing)

log = logging.getLogger(__name__)

# detector = "cusum": drift (evidence a second must exceed to count) and threshold h (accumulated excess).
DRIFT_GRID = tuple(round(x, 3) for x in np.arange(0.30, 0.951, 0.05))
THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


def select_cusum(calls: Sequence[CallCues], model: LearnedFusion, *, progress: Callable[[str], None] = log.info
                 ) -> tuple[Timing, dict]:
    """The CUSUM drift and threshold chosen by the same rule as :func:`select_timing` (most recall within
    the false/early budgets, then the lowest median latency), re-scored by the real policy."""
    raws = {id(c): replay_evidence(c, model) for c in calls}
    best = None
    for drift in DRIFT_GRID:
        for h in THRESHOLD_GRID:
            timing = cusum_timing(drift, h)
            levels = {k: detector_levels(r, timing) for k, r in raws.items()}
            key, _ = budget_key(calls, levels, 1.0, 0)
            if best is None or key > best[0]:
                best = (key, timing)
    timing = best[1]
    figures = score(calls, model, timing)
    progress(f"  {timing.describe()}: recall {figures['recall']:.2f}, false/calm call "
             f"{figures['false_per_calm_call']:.3f}, early {figures['early_share']:.2f}, "
             f"median latency {figures['latency_median_s']:.1f} s")
    return timing, figures


def loco_detectors(calls_by_fold: Mapping[str, Sequence[CallCues]], *, corpora: Sequence[str],
                   progress: Callable[[str], None] = log.info) -> dict:
    """Both detectors under leave-one-corpus-out: for each held-out corpus C, the fusion weights and each
    detector's parameters are fitted on the other corpora's calls only and scored on C's calls.
    Returns {C: {detector: {"timing", "figures": {"all", variants...}}}}."""
    out = {}
    for held, train, test in loco_folds(calls_by_fold, corpora):
        model = fit_fusion(train)
        out[held] = {}
        for name, select in (("level", select_timing), ("cusum", select_cusum)):
            progress(f"detector LOCO: {held} held out, {name} chosen on {sorted({c.corpus for c in train})}")
            timing, _ = select(train, model, progress=progress)
            figures = {"all": {**score(test, model, timing), "latency_parts": latency_parts(test, model, timing)}}
            for variant in sorted({c.variant for c in test}):
                figures[variant] = score([c for c in test if c.variant == variant], model, timing)
            out[held][name] = {"timing": dataclasses.asdict(timing), "figures": figures}
    return out


def side_by_side(calls: Sequence[CallCues], model: LearnedFusion, timings: Mapping[str, Timing]) -> dict:
    """{name: {"timing", "figures": {"all", per corpus...}}} of fixed timings on the same calls."""
    out = {}
    for name, timing in timings.items():
        figures = {"all": {**score(calls, model, timing), "latency_parts": latency_parts(calls, model, timing)}}
        for corpus in sorted({c.corpus for c in calls}):
            sub = [c for c in calls if c.corpus == corpus]
            figures[corpus] = {**score(sub, model, timing), "latency_parts": latency_parts(sub, model, timing)}
        out[name] = {"timing": dataclasses.asdict(timing), "figures": figures}
    return out
