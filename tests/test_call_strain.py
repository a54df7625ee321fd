"""The recovery break goes through the [alerts.agent_strain] policy: its three timing options work."""
from __future__ import annotations

from pipeline.alerts import PolicyOptions
from pipeline.call_strain import StrainAlerts


def _run(levels, options, *, recommended=False):
    """Strain ``levels`` at ticks 1, 2, ... of one call, then hang-up at the last level's tick."""
    alerts = StrainAlerts(options, call_id="c1", agent_id="a1", recommended=recommended)
    for t, level in enumerate(levels[:-1], start=1):
        alerts.update(float(t), level, ("talk time",))
    return alerts.at_end(float(len(levels)), levels[-1], ("talk time",))


def test_a_break_is_recommended_at_hang_up_once_strain_reached_the_raise_level():
    event, outstanding = _run([0.2, 0.5, 0.7, 0.7], PolicyOptions(0.6, 0.4, 0.0, 0.0, 1800.0))
    assert event is not None and outstanding
    assert event.action == "recovery_break" and event.raised_at_s == 4.0  # at the call's end, never mid-call
    assert event.onset_s == 3.0 and event.level == 0.7


def test_min_sustain_s_needs_strain_held_at_the_raise_level_that_long():
    short = [0.2, 0.7, 0.7, 0.7]  # 2 s above the raise level (ticks 2..4)
    assert _run(short, PolicyOptions(0.6, 0.4, min_sustain_s=2.0, clear_after_s=0.0, cooldown_s=0.0))[0] is not None
    assert _run(short, PolicyOptions(0.6, 0.4, min_sustain_s=5.0, clear_after_s=0.0, cooldown_s=0.0)) == (None, False)


def test_an_outstanding_recommendation_is_not_repeated_and_clears_only_after_clear_after_s():
    opts = PolicyOptions(0.6, 0.4, min_sustain_s=0.0, clear_after_s=3.0, cooldown_s=0.0)
    assert _run([0.7, 0.8, 0.9], opts, recommended=True) == (None, True)
    # below the clear level for 2 s: still outstanding; for 3 s: withdrawn
    assert _run([0.7, 0.3, 0.3, 0.3], opts, recommended=True) == (None, True)
    assert _run([0.7, 0.3, 0.3, 0.3, 0.3], opts, recommended=True) == (None, False)


def test_cooldown_s_keeps_a_withdrawn_recommendation_from_coming_straight_back():
    levels = [0.3, 0.3, 0.7, 0.7]  # withdrawn at tick 1 (after a break), strained again by tick 3
    event, outstanding = _run(levels, PolicyOptions(0.6, 0.4, 0.0, 0.0, cooldown_s=0.0), recommended=True)
    assert event is not None and outstanding
    assert _run(levels, PolicyOptions(0.6, 0.4, 0.0, 0.0, cooldown_s=60.0), recommended=True) == (None, False)
