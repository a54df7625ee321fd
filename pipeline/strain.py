"""Agent strain across a shift.

Fatigue is only weakly visible in the voice; what is reliably measurable is exposure (domain.md): hostile
caller seconds, unbroken talk time, calls without a break, plus the agent's own voice drifting from their
shift baseline and their own negative words. Each term saturates; they combine by noisy-OR so any one of
them alone can only reach its weight. Breaks (reported, or inferred from idle time between calls) decay
every accumulator exponentially.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Mapping

log = logging.getLogger("pipeline.strain")


@dataclass(frozen=True)
class StrainOptions:
    """[strain] options."""

    hostile_level: float = 0.5
    hostile_saturation_s: float = 600.0
    weight_hostile: float = 0.4
    talk_saturation_min: float = 90.0
    weight_talk: float = 0.25
    calls_saturation: int = 25
    weight_calls: float = 0.15
    weight_voice_drift: float = 0.1
    weight_agent_negative: float = 0.1
    break_recovery_tau_min: float = 10.0
    idle_break_min: float = 10.0

    def __post_init__(self) -> None:
        for name in ("weight_hostile", "weight_talk", "weight_calls", "weight_voice_drift",
                     "weight_agent_negative"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"strain.{name} must be within 0..1")
        if self.break_recovery_tau_min <= 0:
            raise ValueError("strain.break_recovery_tau_min must be positive")


@dataclass(frozen=True)
class ShiftState:
    """One agent's accumulated exposure since their last break (JSON-able via ``as_json``)."""

    agent_id: str
    hostile_s: float = 0.0
    talk_s: float = 0.0
    calls: int = 0
    voice_drift: float = 0.0        # 0..1, EMA over calls
    agent_negative: float = 0.0     # 0..1, EMA over calls
    last_call_end: str | None = None  # ISO time
    break_started: str | None = None
    recommended: bool = False       # a recovery_break is outstanding (not repeated until a break)
    total_calls: int = 0

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "ShiftState":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def strain_level(options: StrainOptions, *, hostile_s: float, talk_s: float, calls: int,
                 voice_drift: float, agent_negative: float) -> tuple[float, tuple[str, ...]]:
    """Noisy-OR of the saturating terms; returns (level 0..1, reasons for the largest terms)."""
    o = options
    terms = {
        "hostile caller exposure %.0f s" % hostile_s: o.weight_hostile * min(1.0, hostile_s / o.hostile_saturation_s),
        "talk time %.0f min since break" % (talk_s / 60): o.weight_talk * min(1.0, talk_s / 60 / o.talk_saturation_min),
        "%d calls since break" % calls: o.weight_calls * min(1.0, calls / o.calls_saturation),
        "voice drift %.2f from shift baseline" % voice_drift: o.weight_voice_drift * min(1.0, max(0.0, voice_drift)),
        "agent negative words %.2f" % agent_negative: o.weight_agent_negative * min(1.0, max(0.0, agent_negative)),
    }
    keep = 1.0
    for value in terms.values():
        keep *= 1.0 - value
    reasons = tuple(name for name, v in sorted(terms.items(), key=lambda kv: -kv[1]) if v >= 0.05)[:3]
    return 1.0 - keep, reasons


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    dt = datetime.fromisoformat(ts)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def apply_rest(options: StrainOptions, state: ShiftState, minutes: float) -> ShiftState:
    """Decay every accumulator for ``minutes`` of rest."""
    if minutes <= 0:
        return state
    k = math.exp(-minutes / options.break_recovery_tau_min)
    calls = int(round(state.calls * k))
    return replace(state, hostile_s=state.hostile_s * k, talk_s=state.talk_s * k, calls=calls,
                   voice_drift=state.voice_drift * k, agent_negative=state.agent_negative * k,
                   recommended=state.recommended and k > 0.5)


class ShiftBook:
    """Every agent's shift state, in memory and (optionally) persisted through a store.

    Thread-safe: live calls of different agents end concurrently. ``load``/``save`` are callables so
    the store stays optional (batch without a database still tracks a shift within one run).
    """

    def __init__(self, options: StrainOptions, *, load: Callable[[str], Mapping | None] | None = None,
                 save: Callable[[str, Mapping], None] | None = None) -> None:
        self.options = options
        self._load = load
        self._save = save
        self._states: dict[str, ShiftState] = {}
        self._lock = threading.Lock()

    def get(self, agent_id: str) -> ShiftState:
        with self._lock:
            return self._get(agent_id)

    def _get(self, agent_id: str) -> ShiftState:
        state = self._states.get(agent_id)
        if state is None:
            data = self._load(agent_id) if self._load else None
            state = ShiftState.from_json(data) if data else ShiftState(agent_id)
            self._states[agent_id] = state
        return state

    def _put(self, state: ShiftState) -> None:
        self._states[state.agent_id] = state
        if self._save:
            self._save(state.agent_id, state.as_json())

    def state_at_call_start(self, agent_id: str, started_at: datetime | None) -> ShiftState:
        """The state an agent brings into a new call: idle time since the last call counts as rest."""
        with self._lock:
            state = self._get(agent_id)
            last = _parse(state.last_call_end)
            if started_at is not None and last is not None:
                idle_min = (started_at - last).total_seconds() / 60
                if idle_min >= self.options.idle_break_min:
                    log.info("agent %s idle %.0f min before this call: counted as a break", agent_id, idle_min)
                    state = apply_rest(self.options, state, idle_min)
                    self._put(state)
            return state

    def record_call(self, state: ShiftState) -> None:
        with self._lock:
            self._put(state)

    def record_break(self, agent_id: str, *, start: bool, at: datetime) -> ShiftState:
        """A break reported by the workforce system or the dashboard (start, then end)."""
        with self._lock:
            state = self._get(agent_id)
            if start:
                state = replace(state, break_started=at.isoformat())
            else:
                began = _parse(state.break_started) or at
                minutes = max(0.0, (at - began).total_seconds() / 60)
                state = replace(apply_rest(self.options, state, minutes), break_started=None,
                                last_call_end=at.isoformat())
            self._put(state)
            return state

    def board(self) -> list[dict]:
        """The strain board: every known agent, most strained first."""
        with self._lock:
            rows = []
            for state in self._states.values():
                level, reasons = strain_level(self.options, hostile_s=state.hostile_s, talk_s=state.talk_s,
                                              calls=state.calls, voice_drift=state.voice_drift,
                                              agent_negative=state.agent_negative)
                rows.append({"agent_id": state.agent_id, "strain": round(level, 3), "reasons": list(reasons),
                             "calls_since_break": state.calls, "talk_min": round(state.talk_s / 60, 1),
                             "hostile_s": round(state.hostile_s, 1), "on_break": state.break_started is not None,
                             "break_recommended": state.recommended, "last_call_end": state.last_call_end})
            return sorted(rows, key=lambda r: -r["strain"])
