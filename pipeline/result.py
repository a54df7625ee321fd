"""What a call becomes: the frozen :class:`CallResult` and its JSON (schema ``callpulse.call/1``)."""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from . import __version__
from .events import AlertEvent, StageError
from .channel import TalkStats
from .transcript import Segment, Transcript

log = logging.getLogger("pipeline.engine")

SCHEMA = "callpulse.call/1"


@dataclass(frozen=True)
class CallResult:
    """One call's result as far as it has got. ``to_json()`` is the stored and written form."""

    call_id: str
    source: str
    duration_s: float
    sample_rate_hz: int
    channels: Any                       # "mixed" or {"agent": 0|1, "caller": 1|0}
    languages: tuple[str, ...]
    agent_id: str | None
    started_at: str | None
    segments: tuple[Mapping, ...]
    timeline: tuple[Mapping, ...]       # per second: caller_agitation, agent_strain
    prosody_timeline: tuple[Mapping, ...]  # per second and speaker over the last [emotion] window_s of their speech
    alerts: tuple[AlertEvent, ...]      # latest state of each alert, in raise order
    summary: Mapping[str, Any]

    @classmethod
    def assemble(cls, info: Any, *, duration_s: float, transcript: Transcript, timeline: Sequence[Mapping],
                 prosody_timeline: Sequence[Mapping], talk: TalkStats, calllog: "CallLog", strain_end: float,
                 speech_s: Mapping[str, float], config: Any, emotion_source: str,
                 asr_model: str | None) -> "CallResult":
        """The result of call ``info`` (a CallInfo) from its session's parts."""
        alerts = calllog.sorted_alerts()
        summary = summarise(duration_s=duration_s, segments=transcript.segments, timeline=timeline, alerts=alerts,
                            talk_s=speech_s, overtalk_s=talk.overtalk_s, long_silences=talk.long_silences,
                            raise_level=config.alerts.caller_agitation.raise_level, strain_end=strain_end,
                            emotion_source=emotion_source, asr_model=asr_model, errors=calllog.errors)
        channels = "mixed" if info.n_channels == 1 else {"agent": info.agent_channel, "caller": 1 - info.agent_channel}
        return cls(info.call_id, info.source, duration_s, info.sample_rate_hz, channels, tuple(transcript.languages),
                   info.agent_id, info.started_at, tuple(transcript.as_json()), tuple(timeline),
                   tuple(prosody_timeline), alerts, summary)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA, "call_id": self.call_id, "source": self.source,
            "duration_s": round(self.duration_s, 3), "sample_rate_hz": self.sample_rate_hz,
            "channels": self.channels, "languages": list(self.languages), "agent_id": self.agent_id,
            "started_at": self.started_at, "segments": [dict(s) for s in self.segments],
            "timeline": [dict(p) for p in self.timeline],
            # z = against the speaker's own baseline
            "prosody_timeline": [dict(p) for p in self.prosody_timeline],
            "alerts": [{k: v for k, v in a.as_json().items() if k not in ("state", "call_id", "agent_id")}
                       for a in self.alerts],
            "summary": dict(self.summary),
        }


def summarise(*, duration_s: float, segments: Sequence[Segment], timeline: Sequence[Mapping],
              alerts: Sequence[AlertEvent], talk_s: Mapping[str, float], overtalk_s: float, long_silences: int,
              raise_level: float, strain_end: float, emotion_source: str, asr_model: str | None,
              errors: Sequence[StageError]) -> dict:
    """The result's ``summary``: call-level figures a supervisor or a report reads first."""
    levels = [p["caller_agitation"] for p in timeline]
    caller = [s for s in segments if s.speaker in ("caller", "mixed") and s.sentiment is not None]
    talk = {k: round(v, 1) for k, v in talk_s.items()}
    total = sum(talk.values()) or 1.0
    return {
        "peak_agitation": round(max(levels), 3) if levels else 0.0,
        "mean_agitation": round(float(np.mean(levels)), 3) if levels else 0.0,
        "agitation_raise_level": raise_level,
        "agent_strain_end": round(strain_end, 3),
        "n_segments": len(segments),
        "talk_s": talk,
        "talk_share": {k: round(v / total, 3) for k, v in talk.items()},
        "overtalk_s": overtalk_s,
        "long_silences": long_silences,
        "caller_sentiment_score": call_score(caller, duration_s),
        "n_supervisor_takeover": sum(1 for a in alerts if a.kind == "caller_agitation"),
        "n_recovery_break": sum(1 for a in alerts if a.kind == "agent_strain"),
        "emotion_source": emotion_source,
        "asr_model": asr_model,
        "stage_errors": [dataclasses.asdict(e) for e in errors],
        "callpulse_version": __version__,
    }


def call_score(segments: Sequence[Segment], duration_s: float) -> int | None:
    """Caller sentiment as -100..+100, weighted towards the end of the call (how the call left them)."""
    if not segments:
        return None
    weights = [1.0 + 2.0 * (s.end_s / max(duration_s, 1e-6)) for s in segments]
    value = sum(w * s.sentiment for w, s in zip(weights, segments)) / sum(weights)
    return int(round(100 * value))


class CallLog:
    """One call's alerts (latest state of each), stage errors and CPU seconds per stage."""

    def __init__(self, call_id: str, stages: Sequence[str]) -> None:
        self.call_id = call_id
        self.alerts: dict[str, AlertEvent] = {}
        self.errors: list[StageError] = []
        self.stage_s: dict[str, float] = dict.fromkeys(stages, 0.0)

    def record(self, ev: AlertEvent) -> AlertEvent:
        self.alerts[ev.id] = ev
        log.info("call %s: %s %s at %.1f s (level %.2f)", self.call_id, ev.kind, ev.state,
                 ev.raised_at_s if ev.state == "raised" else ev.cleared_at_s, ev.level,
                 extra={"call_id": self.call_id})
        return ev

    def stage_error(self, stage: str, t_s: float, exc: BaseException) -> StageError:
        log.error("call %s: %s failed at %.1f s: %s", self.call_id, stage, t_s, exc,
                  extra={"call_id": self.call_id}, exc_info=log.isEnabledFor(logging.DEBUG))
        error = StageError(stage, t_s, str(exc))
        self.errors.append(error)
        return error

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_s[stage] += time.perf_counter() - t0

    def sorted_alerts(self) -> tuple[AlertEvent, ...]:
        return tuple(sorted(self.alerts.values(), key=lambda a: a.raised_at_s))
