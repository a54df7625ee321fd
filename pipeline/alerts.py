"""Alert policies with hysteresis: one loud second never pages a supervisor.

States: quiet -> pending (level >= raise_level, waiting min_sustain_s) -> raised -> clearing (level <
clear_level, waiting clear_after_s) -> quiet (cooldown_s before a new episode may raise).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from .events import AlertEvent

KIND_ACTION = {"caller_agitation": "supervisor_takeover", "agent_strain": "recovery_break"}


# Alert ids are derived, not random: the same call analysed twice gives byte-identical results, a
# re-analysed call's alerts replace their rows instead of adding new ones, and a webhook receiver that
# deduplicates on Idempotency-Key sees one alert once. Unique because call ids are (reuse is refused or
# disambiguated) and a policy raises at most one alert of a kind at one tick.
_ALERT_NAMESPACE = uuid.UUID("5f0c1a52-3b5e-4f0e-9a4e-63616c6c7075")


def alert_id(call_id: str | None, kind: str, raised_at_s: float) -> str:
    """The id of the ``kind`` alert of call ``call_id`` raised at ``raised_at_s`` (32 hex digits)."""
    return uuid.uuid5(_ALERT_NAMESPACE, f"{call_id}\x1f{kind}\x1f{raised_at_s:.3f}").hex


@dataclass(frozen=True)
class PolicyOptions:
    raise_level: float = 0.9
    clear_level: float = 0.3
    min_sustain_s: float = 0.0
    clear_after_s: float = 8.0
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clear_level <= self.raise_level <= 1.0:
            raise ValueError("alerts need 0 <= clear_level <= raise_level <= 1 (hysteresis)")
        if min(self.min_sustain_s, self.clear_after_s, self.cooldown_s) < 0:
            raise ValueError("alert times must be >= 0")


@dataclass(frozen=True)
class AlertOptions:
    """[alerts] options: one policy per alert kind."""

    caller_agitation: PolicyOptions = PolicyOptions()
    agent_strain: PolicyOptions = PolicyOptions(0.6, 0.4, 0.0, 0.0, 1800.0)


@dataclass
class AlertPolicy:
    """Per call (agitation) or per agent shift (strain) hysteresis state. Feed it levels in time order."""

    kind: str
    options: PolicyOptions
    call_id: str
    agent_id: str | None
    _pending_since: float | None = None
    _below_since: float | None = None
    _active: AlertEvent | None = None
    _quiet_until: float = float("-inf")
    _peak: float = 0.0
    _reasons: tuple[str, ...] = ()

    @property
    def active(self) -> AlertEvent | None:
        return self._active

    def resume(self, event: AlertEvent) -> None:
        """Go on with an episode raised before this policy existed (an agent's recovery break still
        outstanding from an earlier call): it is cleared, never raised again, by the levels that follow."""
        self._active = event
        self._pending_since = event.onset_s

    def update(self, t_s: float, level: float, reasons: tuple[str, ...] = ()) -> list[AlertEvent]:
        o = self.options
        events: list[AlertEvent] = []
        if self._active is None:
            if level >= o.raise_level and t_s >= self._quiet_until:
                if self._pending_since is None:
                    self._pending_since = t_s
                    self._peak = level
                self._peak = max(self._peak, level)
                if reasons:
                    self._reasons = reasons
                if t_s - self._pending_since >= o.min_sustain_s:
                    self._active = AlertEvent(
                        id=alert_id(self.call_id, self.kind, t_s), kind=self.kind, action=KIND_ACTION[self.kind], state="raised",
                        call_id=self.call_id, agent_id=self.agent_id, onset_s=self._pending_since,
                        raised_at_s=t_s, cleared_at_s=None, level=self._peak, reasons=self._reasons)
                    events.append(self._active)
                    self._below_since = None
            else:
                self._pending_since = None
            return events
        # raised: track the peak, wait for a sustained fall below clear_level
        if level >= o.clear_level:
            self._below_since = None
            if level > self._active.level:
                self._active = _replace(self._active, level=level)
            return events
        if self._below_since is None:
            self._below_since = t_s
        if t_s - self._below_since >= o.clear_after_s:
            events.append(self._clear(t_s))
        return events

    def _clear(self, t_s: float) -> AlertEvent:
        cleared = _replace(self._active, state="cleared", cleared_at_s=t_s)
        self._active = None
        self._pending_since = None
        self._below_since = None
        self._quiet_until = t_s + self.options.cooldown_s
        return cleared

    def close(self, t_s: float) -> list[AlertEvent]:
        """End of call: an alert still raised is cleared at the call's end."""
        return [self._clear(t_s)] if self._active is not None else []


def _replace(event: AlertEvent, **changes) -> AlertEvent:
    import dataclasses

    return dataclasses.replace(event, **changes)
