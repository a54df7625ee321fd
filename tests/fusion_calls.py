"""Synthetic per-second fusion cues for the fitting tests (``tests/test_fusion.py``,
``tests/test_train_fusion_recording.py``): escalating calls (anger and raised prosody from the onset),
calm calls and lively-calm ones (happy, aroused)."""
from __future__ import annotations

import numpy as np

from pipeline.training import fusion as FT


def synthetic_calls(corpus: str, seed: int, *, n: int, scale: float = 1.0, z_after: float = 0.6,
                    arousal_lift: float = 0.1, fusion_id: str = "") -> list[FT.CallCues]:
    """``n`` calls of each kind; ``scale`` the escalating callers' anger, ``z_after`` their prosody after the
    onset (sd above their baseline), ``arousal_lift`` how much arousal exceeds max(anger, happy)."""
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(n):
        for kind in ("escalating", "calm", "lively-calm"):
            t = np.arange(1.0, 61.0)
            onset = 25.0 if kind == "escalating" else None
            after = (t >= 26.0) if onset else np.zeros(len(t), bool)
            anger = np.clip(np.where(after, 0.7, 0.1) * scale + rng.normal(0, 0.08, len(t)), 0, 1)
            happy = np.clip(np.where(kind == "lively-calm", 0.6, 0.1) + rng.normal(0, 0.05, len(t)), 0, 1)
            arousal = np.clip(np.maximum(anger, happy) + arousal_lift, 0, 1)
            z = np.clip(np.where(after, z_after, 0.0) + rng.normal(0, 0.1, len(t)), -1, 1)
            ready = (t > 6).astype(float)
            x = np.column_stack([np.ones(len(t)), anger, arousal, happy, z, ready, anger * ready, np.zeros(len(t))])
            calls.append(FT.CallCues(f"{corpus}/{kind}-{i}", corpus, "wideband", kind, onset, 61.0, t, x,
                                     np.zeros(len(t)), fusion_id))
    return calls
