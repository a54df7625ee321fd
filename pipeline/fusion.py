"""Fusion of acoustic, prosodic and lexical evidence into a per-second caller-agitation level.

Evidence combines by noisy-OR (each cue alone can reach at most its weight, several agreeing cues push
the level up), then an asymmetric exponential smoother rises fast and falls slowly. Combining acoustic
with lexical cues is what cut anger-detection error by a third in call-centre data (Lee & Narayanan 2005).

The acoustic evidence is, by default (``[fusion] model = "learned"``), one probability from a logistic
model over the caller's per-second cues (P(angry), arousal, P(happy), speaker-relative prosody, whether
the baseline is ready, over-talk), fitted on evaluation calls of several corpora with signs constrained
where they should be (anger and raised prosody never lower it, happiness never raises it): see
``pipeline.training.fusion`` and ``models/fusion/README.md``. ``model = "rules"`` is the hand-set
noisy-OR of ``weight_arousal``, ``weight_anger``, ``weight_prosody`` and ``happy_discount``. Text and
turn-head cues join by noisy-OR in both. How the fused evidence becomes the level the takeover policy
reads is ``[fusion] detector`` (``pipeline.detector``: the smoothed level, or a CUSUM on the evidence).
"""
from __future__ import annotations

import contextvars
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .detector import DETECTORS, Detector, make_detector
from .errors import ModelUnavailableError
from .resources import models_root

FUSION_FILE = "fusion.json"
MODES = ("learned", "rules")
# What is recorded every second (see acoustic_features) ...
FEATURES = ("present", "anger", "arousal", "happy", "prosody_z", "baseline_ready", "anger_ready", "overtalk")
# ... and the learned model's inputs: those, plus P(angry) and arousal above the caller's own first
# readings in this call (CueBaseline), which removes what a corpus, a language or a line does to every
# reading of a call alike.
MODEL_FEATURES = FEATURES + ("anger_excess", "arousal_excess")
CUE_BASELINE_READINGS = 8
# Set by evaluation and fusion training only (pipeline.training.fusion): every step appends its inputs, so
# fusion and alert timing can be refitted offline without re-running the engine.
CUE_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar("callpulse_cue_recorder", default=None)


@dataclass(frozen=True)
class FusionOptions:
    """[fusion] options."""

    # "learned": the fitted logistic model in model_dir; "rules": the hand-set weights below.
    model: str = "learned"
    # "" = <repo>/models/fusion, or $CALLPULSE_MODELS/fusion when that variable is set.
    model_dir: str = ""
    weight_arousal: float = 0.5
    weight_anger: float = 0.5
    weight_negative_text: float = 0.30
    weight_flags: float = 0.35
    weight_overtalk: float = 0.10
    weight_prosody: float = 0.35
    prosody_z_floor: float = 1.0
    prosody_z_span: float = 2.0
    happy_discount: float = 0.7
    rise_tau_s: float = 0.5
    fall_tau_s: float = 6.0
    text_memory_s: float = 20.0
    acoustic_hold_s: float = 12.0
    arousal_floor: float = 0.35
    baseline_warmup_s: float = 6.0
    pre_baseline_weight: float = 0.4
    # A transcribed caller turn's P(angry) from the turn heads (prosody + the ASR's encoder output);
    # it arrives with the transcript and fades like text cues. 0 by default: trained on EmoDB only, they
    # did not transfer to other corpora (issue 9: 4-class 0.40-0.57, ECE 0.43), and the multi-corpus
    # default model has none.
    weight_turn_anger: float = 0.0
    # Only the confidence above this counts: an uncertain turn (p 0.3) is not evidence of anger.
    turn_anger_floor: float = 0.5
    # How the per-second evidence becomes the level the takeover policy reads (pipeline/detector.py):
    # "level" = smoothed by rise_tau_s / fall_tau_s; "cusum" = S = min(h, max(0, S + evidence - drift)),
    # level S / h (then [alerts.caller_agitation] raise_level = 1, min_sustain_s = 0).
    detector: str = "level"
    cusum_drift: float = 0.5
    cusum_threshold: float = 1.0

    def __post_init__(self) -> None:
        if self.model not in MODES:
            raise ValueError(f"fusion.model must be one of {MODES}, got {self.model!r}")
        for name in ("weight_arousal", "weight_anger", "weight_negative_text", "weight_flags",
                     "weight_overtalk", "weight_prosody", "weight_turn_anger"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fusion.{name} must be within 0..1")
        if not 0.0 <= self.turn_anger_floor < 1.0:
            raise ValueError("fusion.turn_anger_floor must be within 0..1 (1 excluded)")
        if self.rise_tau_s <= 0 or self.fall_tau_s <= 0:
            raise ValueError("fusion time constants must be positive")
        if self.detector not in DETECTORS:
            raise ValueError(f"fusion.detector must be one of {DETECTORS}, got {self.detector!r}")
        if not 0.0 < self.cusum_drift < 1.0:
            raise ValueError("fusion.cusum_drift must be within 0..1 (both excluded)")
        if self.cusum_threshold <= 0:
            raise ValueError("fusion.cusum_threshold must be positive")


@dataclass(frozen=True)
class AcousticCue:
    """The caller's voice over the last window: what the emotion model (or prosody rules) said."""

    t_s: float
    arousal: float       # 0..1
    anger: float         # P(angry)
    source: str
    baseline_ready: bool = True
    prosody_z: float = 0.0   # louder / higher / faster than the caller's own calm baseline, in sd
    happy: float = 0.0       # P(happy): arousal that is joy, not agitation


@dataclass(frozen=True)
class TextCue:
    """A finished caller turn's words: sentiment and flags, usable from ``t_s`` (when it was transcribed)."""

    t_s: float
    sentiment: float
    flags: tuple[str, ...]
    excerpt: str


@dataclass(frozen=True)
class TurnCue:
    """A transcribed caller turn's voice by the turn heads, usable from ``t_s`` (when it was transcribed)."""

    t_s: float
    anger: float         # P(angry)
    source: str


def default_fusion_dir() -> Path:
    return models_root() / "fusion"


@dataclass(frozen=True)
class LearnedFusion:
    """A logistic model over :data:`FEATURES`: P(agitated) = sigmoid(bias + weights . features)."""

    weights: tuple[float, ...]
    bias: float
    model_id: str
    details: dict = field(default_factory=dict, compare=False, hash=False)

    def probability(self, features: tuple[float, ...]) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def to_json(self) -> dict:
        return {"id": self.model_id, "features": list(MODEL_FEATURES), "weights": list(self.weights), "bias": self.bias,
                **self.details}


@functools.lru_cache(maxsize=8)
def load_learned(model_dir: str) -> LearnedFusion:
    """The fitted fusion in ``model_dir`` ("" = the shipped one); cached per folder."""
    from .emotion import resolve_model_dir

    path = (resolve_model_dir(model_dir) if model_dir else default_fusion_dir()) / FUSION_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if tuple(meta["features"]) != MODEL_FEATURES:
            raise ValueError(f"its features {meta['features']} are not {list(MODEL_FEATURES)}")
        details = {k: v for k, v in meta.items() if k not in ("id", "features", "weights", "bias")}
        return LearnedFusion(tuple(float(w) for w in meta["weights"]), float(meta["bias"]), str(meta["id"]), details)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelUnavailableError(
            f"fusion model {path} is missing or unreadable ({exc}); rebuild it with `python scripts/train_fusion.py` "
            "(or `callpulse train fusion`), or set [fusion] model = \"rules\"") from exc


def acoustic_features(cue: AcousticCue | None, *, overtalk: bool) -> tuple[float, ...]:
    """The learned model's inputs (FEATURES) from the caller's current reading (None = none held)."""
    if cue is None:
        return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, float(overtalk))
    ready = 1.0 if cue.baseline_ready else 0.0
    z = max(-3.0, min(3.0, cue.prosody_z)) / 3.0
    return (1.0, cue.anger, cue.arousal, cue.happy, z, ready, cue.anger * ready, float(overtalk))


class CueBaseline:
    """The caller's typical P(angry) and arousal in this call: the mean over their first
    ``CUE_BASELINE_READINGS`` seconds with a reading. Shared by the tracker and offline fitting."""

    def __init__(self, readings: int = CUE_BASELINE_READINGS):
        self.readings = readings
        self._n = 0
        self._anger = 0.0
        self._arousal = 0.0

    def model_features(self, raw: tuple[float, ...]) -> tuple[float, ...]:
        """MODEL_FEATURES from one second's FEATURES (updates the baseline first while it is forming)."""
        present, anger, arousal = raw[0], raw[1], raw[2]
        if present <= 0:
            return tuple(raw) + (0.0, 0.0)
        if self._n < self.readings:
            self._n += 1
            self._anger += (anger - self._anger) / self._n
            self._arousal += (arousal - self._arousal) / self._n
        return tuple(raw) + (max(0.0, anger - self._anger), max(0.0, arousal - self._arousal))


@dataclass
class AgitationTracker:
    """Per-call fusion state."""

    options: FusionOptions
    level: float = 0.0
    _acoustic: AcousticCue | None = None
    _texts: list[TextCue] = field(default_factory=list)
    _turns: list[TurnCue] = field(default_factory=list)
    _learned: LearnedFusion | None = None
    _cue_baseline: CueBaseline = field(default_factory=CueBaseline)
    _detector: Detector | None = None

    def __post_init__(self) -> None:
        o = self.options
        if o.model == "learned":
            self._learned = load_learned(o.model_dir)
        self._detector = make_detector(o.detector, rise_tau_s=o.rise_tau_s, fall_tau_s=o.fall_tau_s,
                                       cusum_drift=o.cusum_drift, cusum_threshold=o.cusum_threshold, level=self.level)

    def add_acoustic(self, cue: AcousticCue) -> None:
        self._acoustic = cue

    def add_text(self, cue: TextCue) -> None:
        self._texts.append(cue)

    def add_turn(self, cue: TurnCue) -> None:
        self._turns.append(cue)

    def step(self, t_s: float, *, overtalk: bool) -> tuple[float, tuple[str, ...]]:
        """Advance one second to ``t_s``; returns (level, reasons, strongest first)."""
        o = self.options
        terms: list[tuple[float, str]] = []
        cue = self._acoustic
        fresh = cue if cue is not None and t_s - cue.t_s <= o.acoustic_hold_s else None
        features = None
        if self._learned is not None:
            features = acoustic_features(fresh, overtalk=overtalk)
            p = self._learned.probability(self._cue_baseline.model_features(features))
            if fresh is not None:
                terms.append((p, f"agitated voice p={p:.2f}: angry {fresh.anger:.2f}, arousal {fresh.arousal:.2f}, "
                                 f"happy {fresh.happy:.2f}, {fresh.prosody_z:+.1f} sd ({fresh.source})"))
            elif overtalk:
                terms.append((p, "over-talk"))
        elif fresh is not None:
            # arousal below the floor is ordinary speech; only the excess counts
            arousal = max(0.0, (cue.arousal - o.arousal_floor) / (1.0 - o.arousal_floor))
            # Before the caller's own baseline exists an absolute reading is weaker evidence: voices differ.
            k = 1.0 if cue.baseline_ready else o.pre_baseline_weight
            # A lively, happy caller is aroused too but needs no supervisor: arousal and raised prosody
            # count only in the share the model does not hear as happy.
            not_happy = 1.0 - o.happy_discount * min(1.0, max(0.0, cue.happy))
            terms.append((k * o.weight_arousal * arousal * not_happy,
                          f"high vocal arousal {cue.arousal:.2f} ({cue.source})"))
            terms.append((k * o.weight_anger * cue.anger, f"angry voice p={cue.anger:.2f} ({cue.source})"))
            # Speaker-relative prosody (Van Puyvelde 2018: F0 and energy track arousal within a speaker),
            # independent of the emotion model's calibration.
            excess = (cue.prosody_z - o.prosody_z_floor) / o.prosody_z_span
            terms.append((o.weight_prosody * min(1.0, max(0.0, excess)) * not_happy,
                          f"voice {cue.prosody_z:+.1f} sd louder/higher/faster than own baseline"))
        self._texts = [c for c in self._texts if t_s - c.t_s <= o.text_memory_s]
        for c in self._texts:
            decay = math.exp(-(t_s - c.t_s) / o.text_memory_s)
            if c.sentiment < 0:
                terms.append((o.weight_negative_text * -c.sentiment * decay,
                              f"negative words {c.sentiment:+.2f}: \"{c.excerpt}\""))
            for flag in c.flags:
                terms.append((o.weight_flags * decay, f"{flag.replace('_', ' ')}: \"{c.excerpt}\""))
        self._turns = [c for c in self._turns if t_s - c.t_s <= o.text_memory_s]
        for c in self._turns:
            if c.t_s > t_s:       # not transcribed yet at this tick
                continue
            decay = math.exp(-(t_s - c.t_s) / o.text_memory_s)
            excess = max(0.0, (c.anger - o.turn_anger_floor) / (1.0 - o.turn_anger_floor))
            terms.append((o.weight_turn_anger * excess * decay, f"angry voice in turn p={c.anger:.2f} ({c.source})"))
        if overtalk and self._learned is None:
            terms.append((o.weight_overtalk, "over-talk"))
        keep = 1.0
        for value, _ in terms:
            keep *= 1.0 - min(1.0, max(0.0, value))
        raw = 1.0 - keep
        recorder = CUE_RECORDER.get()
        if recorder is not None:
            n_acoustic = 1 if features is not None and (fresh is not None or overtalk) else 0
            other = 1.0
            for value, _ in terms[n_acoustic:]:
                other *= 1.0 - min(1.0, max(0.0, value))
            recorder.append((t_s, acoustic_features(fresh, overtalk=overtalk), 1.0 - other))
        self.level = self._detector.update(raw)
        reasons = tuple(name for value, name in sorted(terms, key=lambda vn: -vn[0]) if value >= 0.05)[:4]
        return self.level, reasons
