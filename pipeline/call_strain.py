"""One call's contribution to its agent's strain, and the recovery break raised through ``AlertPolicy``.

:class:`CallStrain` owns what the call adds to the agent's shift (hostile caller seconds, agent talk
time, the agent's voice drift and negative words), the strain level per second and, at hang-up, the
shift with the call folded in. :class:`StrainAlerts` runs the ``[alerts.agent_strain]`` hysteresis on the
per-second strain level of the call: ``min_sustain_s`` is how long strain must stay at ``raise_level``
before a break is recommended, ``clear_after_s`` how long below ``clear_level`` before an outstanding
recommendation is withdrawn, ``cooldown_s`` how long after that before a new one. A recommendation is
only ever emitted when the call ends (never mid-call); the shift's ``recommended`` flag carries an
outstanding one into the agent's next call.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np

from .alerts import AlertPolicy, PolicyOptions, alert_id
from .events import AlertEvent
from .strain import ShiftBook, ShiftState, StrainOptions, strain_level


class StrainAlerts:
    """The agent_strain policy over one call's strain levels (call time)."""

    def __init__(self, options: PolicyOptions, *, call_id: str, agent_id: str | None, recommended: bool) -> None:
        self._call_id = call_id
        self._policy = AlertPolicy("agent_strain", options, call_id, agent_id)
        self._resumed: AlertEvent | None = None
        if recommended:
            self._resumed = AlertEvent(id="", kind="agent_strain", action="recovery_break", state="raised",
                                       call_id=call_id, agent_id=agent_id, onset_s=0.0, raised_at_s=0.0,
                                       cleared_at_s=None, level=options.raise_level, reasons=())
            self._policy.resume(self._resumed)

    def update(self, t_s: float, level: float, reasons: tuple[str, ...] = ()) -> None:
        # the policy's own raised/cleared events are held: a break is recommended when the call ends
        self._policy.update(t_s, level, reasons)

    def at_end(self, end_s: float, level: float, reasons: tuple[str, ...]) -> tuple[AlertEvent | None, bool]:
        """(the recovery_break raised at hang-up or None, whether a recommendation is outstanding)."""
        self._policy.update(end_s, level, reasons)
        active = self._policy.active
        if active is None:
            return None, False
        if self._resumed is not None and active.id == self._resumed.id:
            return None, True  # the earlier call's recommendation still stands: not repeated
        event = dataclasses.replace(active, id=alert_id(self._call_id, "agent_strain", end_s), raised_at_s=end_s,
                                    level=level, reasons=reasons)
        return event, True


class CallStrain:
    """Per call: the agent's exposure so far, strain per second, the shift at hang-up."""

    def __init__(self, options: StrainOptions, policy: PolicyOptions, shifts: ShiftBook, *, call_id: str,
                 agent_id: str | None, started_at: datetime | None, measurable: bool) -> None:
        self._options = options
        self._shifts = shifts
        self._started = started_at
        self._measurable = measurable  # stereo: a mixed recording has no agent voice to measure
        self.shift: ShiftState | None = shifts.state_at_call_start(agent_id, started_at) if agent_id else None
        self._alerts = StrainAlerts(policy, call_id=call_id, agent_id=agent_id,
                                    recommended=bool(self.shift and self.shift.recommended))
        self.hostile_s = 0.0
        self.agent_talk_s = 0.0
        self._drift: list[float] = []
        self._sentiments: list[float] = []
        self.level = 0.0

    def add_talk(self, agent_speech_s: float) -> None:
        self.agent_talk_s += agent_speech_s

    def add_drift(self, drift: float) -> None:
        self._drift.append(drift)

    def add_agent_sentiment(self, sentiment: float) -> None:
        self._sentiments.append(sentiment)

    def tick(self, t_s: float, caller_agitation: float) -> float:
        """One second: hostile exposure counted, the strain level now (0 for a mixed recording)."""
        if caller_agitation >= self._options.hostile_level:
            self.hostile_s += 1.0
        if not self._measurable:
            self.level = 0.0
            return self.level
        self.level, reasons = strain_level(self._options, **self._terms())
        if self.shift is not None:
            self._alerts.update(t_s, self.level, reasons)
        return self.level

    def shift_so_far(self, now_s: float) -> dict | None:
        """The agent's shift as if this call ended at ``now_s`` (JSON), or None without an agent."""
        if self.shift is None or not self._measurable:
            return None
        return self._shift_after(now_s)[0].as_json()

    def end(self, end_s: float) -> list[AlertEvent]:
        """Fold this call into the agent's shift; recommend a break when the call ends, never mid-call."""
        if self.shift is None or not self._measurable:
            return []
        shift, level, reasons = self._shift_after(end_s)
        event, recommended = self._alerts.at_end(end_s, level, reasons)
        self._shifts.record_call(dataclasses.replace(shift, recommended=recommended))
        return [event] if event is not None else []

    def _means(self) -> tuple[float, float]:
        """This call's agent voice drift and negative-word level so far (0 when none measured)."""
        drift = float(np.mean(self._drift)) if self._drift else 0.0
        negative = float(np.mean([max(0.0, -s) for s in self._sentiments])) if self._sentiments else 0.0
        return drift, negative

    def _terms(self) -> dict:
        shift = self.shift or ShiftState("")
        drift, negative = self._means()
        return dict(hostile_s=shift.hostile_s + self.hostile_s, talk_s=shift.talk_s + self.agent_talk_s,
                    calls=shift.calls + 1, voice_drift=max(shift.voice_drift, drift),
                    agent_negative=max(shift.agent_negative, negative))

    def _shift_after(self, end_s: float) -> tuple[ShiftState, float, tuple[str, ...]]:
        terms = self._terms()
        level, reasons = strain_level(self._options, **terms)
        drift, negative = self._means()
        s = self.shift
        end = (datetime.fromtimestamp(self._started.timestamp() + end_s, timezone.utc).isoformat()
               if self._started else s.last_call_end)
        shift = dataclasses.replace(
            s, hostile_s=terms["hostile_s"], talk_s=terms["talk_s"], calls=terms["calls"],
            # the shift's voice and words move slowly: one call is 30% of the new value
            voice_drift=0.7 * s.voice_drift + 0.3 * drift, agent_negative=0.7 * s.agent_negative + 0.3 * negative,
            last_call_end=end, total_calls=s.total_calls + 1)
        return shift, level, reasons
