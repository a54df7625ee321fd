"""Events that flow out of a call session: small frozen dataclasses, times in seconds from the call's
first audio sample (``*_s``), levels in [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

Speaker = Literal["agent", "caller", "mixed"]


@dataclass(frozen=True)
class SpeechTurn:
    """A stretch of one party's speech found by VAD endpointing."""

    speaker: Speaker
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str
    probability: float


@dataclass(frozen=True)
class TranscriptEvent:
    """Text of one turn. ``final`` is False for interim (live) hypotheses, which never feed sentiment."""

    speaker: Speaker
    start_s: float
    end_s: float
    text: str
    language: str
    final: bool
    words: tuple[Word, ...] = ()
    sentiment: float = 0.0
    flags: tuple[str, ...] = ()
    # the turn's acoustic emotion (label, scores, source) when known: the turn heads' once transcribed
    emotion: Mapping | None = None


@dataclass(frozen=True)
class LevelUpdate:
    """One second of the fused levels (what the timeline and the dashboard plot)."""

    t_s: float
    caller_agitation: float
    agent_strain: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertEvent:
    """An alert raised or cleared. ``state`` is "raised" or "cleared"; both carry the same id."""

    id: str
    kind: Literal["caller_agitation", "agent_strain"]
    action: Literal["supervisor_takeover", "recovery_break"]
    state: Literal["raised", "cleared"]
    call_id: str
    agent_id: str | None
    onset_s: float
    raised_at_s: float
    cleared_at_s: float | None
    level: float
    reasons: tuple[str, ...]

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "action": self.action,
            "state": self.state,
            "call_id": self.call_id,
            "agent_id": self.agent_id,
            "onset_s": round(self.onset_s, 2),
            "raised_at_s": round(self.raised_at_s, 2),
            "cleared_at_s": None if self.cleared_at_s is None else round(self.cleared_at_s, 2),
            "level": round(self.level, 3),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class StageError:
    """A stage failed on part of a call; the call goes on (never a silent neutral score)."""

    stage: str
    t_s: float
    message: str


@dataclass(frozen=True)
class CallEnded:
    """The call is finished; ``result`` is the per-call JSON (schema callpulse.call/1)."""

    call_id: str
    result: Mapping = field(repr=False)


# What ``CallSession.feed`` / ``finish`` / ``apply_asr`` return: a list of these, in call-time order.
SessionEvent = TranscriptEvent | LevelUpdate | AlertEvent | StageError | CallEnded
