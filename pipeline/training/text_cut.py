"""The decision cut of the trained text scorer: the P(negative) above which a turn is labelled negative,
chosen per language from out-of-domain probabilities (``pipeline/training/text.py`` for the shipped cut
and the nested figures, ``pipeline/evaluate/text_folds.py`` for each fold of ``evaluate text``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CutRule:
    """How the decision threshold on calibrated P(negative) is chosen from the units that choose.

    Start at the equal-prior cut the models are calibrated for and lower it (in steps of 0.01, not below
    ``lowest``) only as far as needed for the *mean* negative recall over those units to reach
    ``recall_target``; a language whose models already reach it keeps the equal-prior cut."""

    equal_prior_cut: float = 0.52
    recall_target: float = 0.80
    lowest: float = 0.30

    def choose(self, ps: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> float:
        cut = self.equal_prior_cut
        while cut > self.lowest + 1e-9:
            recalls = [float((p > cut)[y].mean()) for p, y in zip(ps, ys) if y.any()]
            if not recalls or float(np.mean(recalls)) >= self.recall_target:
                break
            cut = round(cut - 0.01, 2)
        return cut

    def to_json(self) -> dict:
        return {"equal_prior_cut": self.equal_prior_cut, "recall_target": self.recall_target, "lowest": self.lowest}
