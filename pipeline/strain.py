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

    Shared (several live workers on one database): given ``update`` (an atomic read-modify-write of one
    agent's row, ``store.update_shift``), nothing is trusted from memory. A call's start reads the agent
    through; its end adds what *this call* changed (final minus the state it started from) to whatever
    the database holds by then, so another worker's call or a break recorded meanwhile is kept, not
    overwritten. Without concurrent writers the result is exactly the final state, as unshared.
    """

    def __init__(self, options: StrainOptions, *, load: Callable[[str], Mapping | None] | None = None,
                 save: Callable[[str, Mapping], None] | None = None,
                 update: Callable[[str, Callable[[Mapping | None], Mapping]], Mapping] | None = None,
                 load_all: Callable[[], Mapping[str, Mapping]] | None = None) -> None:
        self.options = options
        self._load = load
        self._save = save
        self._update = update
        self._load_all = load_all
        self._states: dict[str, ShiftState] = {}
        self._bases: dict[str, list[ShiftState]] = {}  # shared: each live call's starting state
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        return self._update is not None

    def get(self, agent_id: str) -> ShiftState:
        with self._lock:
            if self.shared:
                self._states.pop(agent_id, None)  # read through: another worker may have changed it
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

    def _change(self, agent_id: str, change: Callable[[ShiftState], ShiftState]) -> ShiftState:
        """Shared: one locked read-modify-write of the agent's row; the result is cached for the board."""
        def on_row(data: Mapping | None) -> Mapping:
            return change(ShiftState.from_json(data) if data else ShiftState(agent_id)).as_json()

        state = ShiftState.from_json(self._update(agent_id, on_row))
        self._states[agent_id] = state
        return state

    def _rested(self, state: ShiftState, started_at: datetime | None) -> ShiftState:
        last = _parse(state.last_call_end)
        if started_at is not None and last is not None:
            idle_min = (started_at - last).total_seconds() / 60
            if idle_min >= self.options.idle_break_min:
                log.info("agent %s idle %.0f min before this call: counted as a break", state.agent_id, idle_min)
                return apply_rest(self.options, state, idle_min)
        return state

    def state_at_call_start(self, agent_id: str, started_at: datetime | None) -> ShiftState:
        """The state an agent brings into a new call: idle time since the last call counts as rest."""
        with self._lock:
            if self.shared:
                state = self._change(agent_id, lambda current: self._rested(current, started_at))
                self._bases.setdefault(agent_id, []).append(state)
                return state
            state = self._get(agent_id)
            rested = self._rested(state, started_at)
            if rested is not state:
                self._put(rested)
            return rested

    def record_call(self, state: ShiftState) -> None:
        with self._lock:
            if not self.shared:
                self._put(state)
                return
            base = self._take_base(state)
            self._change(state.agent_id, lambda current: merge_call(current, base, state))

    def _take_base(self, final: ShiftState) -> ShiftState | None:
        # A call adds exactly one to total_calls: that tells which live call of this agent ended.
        bases = self._bases.get(final.agent_id, [])
        for i, base in enumerate(bases):
            if base.total_calls == final.total_calls - 1:
                return bases.pop(i)
        return None  # a call this process did not start (recovered from another's checkpoint)

    def record_break(self, agent_id: str, *, start: bool, at: datetime) -> ShiftState:
        """A break reported by the workforce system or the dashboard (start, then end)."""
        def change(state: ShiftState) -> ShiftState:
            if start:
                return replace(state, break_started=at.isoformat())
            began = _parse(state.break_started) or at
            minutes = max(0.0, (at - began).total_seconds() / 60)
            return replace(apply_rest(self.options, state, minutes), break_started=None,
                           last_call_end=at.isoformat())

        with self._lock:
            if self.shared:
                return self._change(agent_id, change)
            state = change(self._get(agent_id))
            self._put(state)
            return state

    def board(self) -> list[dict]:
        """The strain board: every known agent, most strained first."""
        with self._lock:
            if self._load_all is not None:
                # shared: the board shows every worker's agents as the database has them now
                self._states.update({a: ShiftState.from_json(d) for a, d in self._load_all().items() if d})
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


def merge_call(current: ShiftState, base: ShiftState | None, final: ShiftState) -> ShiftState:
    """The agent's state after a call that started from ``base`` and ended at ``final``, applied to
    ``current`` (what the shared database holds now). Exposure adds what this call added; the slow
    averages move by this call's change; a break or another call recorded meanwhile is kept."""
    if current == base or current == ShiftState(final.agent_id):
        return final  # nobody else wrote: exactly the unshared result
    if base is None:
        # No starting state known (a call recovered from a dead worker's checkpoint): the final state
        # is only taken when it is newer than what is stored.
        if current.total_calls < final.total_calls:
            return final
        log.warning("agent %s: a recovered call's shift is older than the stored one; kept the stored one",
                    final.agent_id)
        return current

    def delta(name: str) -> float:
        return getattr(final, name) - getattr(base, name)

    ends = [t for t in (current.last_call_end, final.last_call_end) if t]
    recommended = final.recommended if final.recommended != base.recommended else current.recommended
    return replace(
        current,
        hostile_s=max(0.0, current.hostile_s + delta("hostile_s")),
        talk_s=max(0.0, current.talk_s + delta("talk_s")),
        calls=max(0, current.calls + int(delta("calls"))),
        total_calls=current.total_calls + int(delta("total_calls")),
        voice_drift=min(1.0, max(0.0, current.voice_drift + delta("voice_drift"))),
        agent_negative=min(1.0, max(0.0, current.agent_negative + delta("agent_negative"))),
        last_call_end=max(ends, key=lambda t: _parse(t)) if ends else None,
        recommended=recommended,
    )
