"""The acoustic emotion of one speaker in one call, window after window.

An :class:`EmotionStream` owns the speaker's three baselines (prosody z-scores, the emotion model's
per-speaker baseline, the turn heads' baseline), so a speaker is judged against their own normal voice
and no state is shared between calls or speakers. Each window gives a frozen :class:`AcousticReading`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .emotion import EmotionScores
from .events import Speaker
from .fusion import AcousticCue
from .prosody import ProsodyExtractor, ProsodyOptions
from .speaker_baseline import SpeakerBaseline

MIN_WINDOW_S = 0.25  # shorter audio gives no reading: prosody needs a few pitch periods and syllables


@dataclass(frozen=True)
class AcousticReading:
    """Prosody and acoustic emotion of one window of one speaker's speech."""

    label: str
    scores: Mapping[str, float]
    arousal: float
    valence: float
    source: str
    baseline_ready: bool            # the speaker's baseline has seen enough calm speech to be trusted
    prosody: Mapping[str, Any]      # ProsodyFeatures.as_dict(): f0_median_st, energy_db, ...
    z: Mapping[str, float]          # against the speaker's own baseline, rounded to 2 decimals
    vector: np.ndarray              # the emotion feature vector (kept for the turn heads, not written out)
    voice_drift: float | None = None  # agent only, once their baseline is ready: flattening + slowing

    @property
    def prosody_z(self) -> float:
        """One number for "louder, higher, faster than usual" (what the fusion's acoustic cue uses)."""
        z = self.z
        return 0.5 * z.get("energy_db", 0.0) + 0.3 * z.get("f0_median_st", 0.0) + 0.2 * z.get("speaking_rate_syl_s", 0.0)

    def cue(self, t_s: float) -> AcousticCue:
        """This (caller's) reading as the fusion's acoustic evidence at tick ``t_s``."""
        return AcousticCue(t_s, self.arousal, self.scores.get("angry", 0.0), self.source, self.baseline_ready,
                           self.prosody_z, self.scores.get("happy", 0.0))

    def timeline_row(self, t_s: float, speaker: Speaker) -> dict:
        """This reading as one row of the result's ``prosody_timeline``."""
        keys = ("f0_median_st", "f0_range_st", "energy_db", "speaking_rate_syl_s", "pause_ratio", "jitter",
                "shimmer", "hnr_db")
        return {"t_s": round(t_s, 2), "speaker": speaker, **{k: self.prosody.get(k) for k in keys},
                "z": dict(self.z), "arousal": round(self.arousal, 3), "emotion": self.label}

    def emotion_json(self) -> dict:
        return {"label": self.label, "scores": {k: round(v, 3) for k, v in self.scores.items()},
                "source": self.source}


def rules_emotion(z: Mapping[str, float]) -> EmotionScores:
    """Acoustic arousal from prosody alone, against the speaker's own baseline (fallback when no model)."""
    score = 0.5 * z.get("energy_db", 0.0) + 0.3 * z.get("f0_median_st", 0.0) + \
        0.2 * z.get("speaking_rate_syl_s", 0.0)
    arousal = 1.0 / (1.0 + math.exp(-(score - 1.0)))
    anger = max(0.0, arousal - 0.5) * 2 * 0.8
    rest = 1.0 - anger
    scores = {"angry": anger, "happy": rest * 0.2, "neutral": rest * 0.6, "sad": rest * 0.2}
    label = max(scores, key=scores.get)
    return EmotionScores(label, scores, arousal, -anger, "prosody-rules")


class EmotionStream:
    """One speaker's emotion across a call. ``model`` is the shared EmotionModel or None (rules)."""

    def __init__(self, speaker: Speaker, *, extractor: ProsodyExtractor, model: Any | None,
                 prosody: ProsodyOptions, sr_hz: int, warmup_s: float, turn_heads: bool) -> None:
        self.speaker = speaker
        self._extractor = extractor
        self._model = model
        self._sr = sr_hz
        self._warmup_s = warmup_s
        self._prosody_baseline = SpeakerBaseline(prosody)
        self._emotion_baseline = model.new_baseline() if model is not None else None
        self._turn_baseline = model.new_turn_baseline() if model is not None and turn_heads else None

    def read(self, y: np.ndarray, *, speech_s: float, learn: bool, caller_calm: bool) -> AcousticReading | None:
        """The reading of window ``y`` (prosody rate), or None when it is too short. ``learn``: the
        window may teach the baselines (1 Hz windows do; whole turns do not). ``speech_s``: the
        speaker's speech so far; ``caller_calm``: the call's agitation is below its clear level."""
        if y.size < int(MIN_WINDOW_S * self._sr):
            return None
        feats, vec = self._extractor.vector(y, sr=self._sr)
        z = self._prosody_baseline.zscores(feats)
        emo = self._model.predict(vec, baseline=self._emotion_baseline) if self._model is not None else rules_emotion(z)
        drift = None
        if learn:
            # A speaker's first seconds define their normal voice; later only calm-looking speech
            # (and never while the caller is agitated) may move the baseline.
            looks_calm = self._model.looks_calm(vec) if self._model is not None else emo.arousal < 0.6
            calm = speech_s <= self._warmup_s or (looks_calm and emo.label != "angry" and caller_calm)
            self._prosody_baseline.update(feats, calm=calm)
            if self._emotion_baseline is not None:
                self._emotion_baseline.update(vec, calm=calm)
            if self.speaker == "agent" and self._prosody_baseline.ready:
                # flattening (narrow F0 range) and slowing against the agent's own calm speech
                drift = max(0.0, -z.get("f0_range_st", 0.0)) / 4 + max(0.0, -z.get("speaking_rate_syl_s", 0.0)) / 4
        # trusted only after the warm-up: a baseline from one or two windows is mostly noise
        baseline = self._prosody_baseline if self._emotion_baseline is None else self._emotion_baseline
        ready = speech_s > self._warmup_s and bool(baseline.ready)
        return AcousticReading(emo.label, dict(emo.scores), float(emo.arousal), float(emo.valence), emo.source,
                               ready, feats.as_dict(), {k: round(v, 2) for k, v in z.items()}, vec, drift)

    def rescore_turn(self, vector: np.ndarray, encoding: np.ndarray) -> EmotionScores:
        """A transcribed turn scored by the turn heads: its prosody vector plus the pooled encoder
        output of the window the ASR ran anyway, against the speaker's earlier calm-looking turns."""
        model = self._model
        x = model.turn_vector(vector, encoding)
        scores = model.predict_turn(x, baseline=self._turn_baseline)
        # only calm-looking turns teach the speaker's baseline, as in training
        self._turn_baseline.update(x, calm=model.turn_looks_calm(x))
        return scores
