"""Alert policies: hysteresis, minimum sustained time, cooldown."""
from __future__ import annotations

from pipeline.alerts import AlertPolicy, PolicyOptions


def _run(levels, options=PolicyOptions(raise_level=0.5, clear_level=0.3, min_sustain_s=2, clear_after_s=3,
                                       cooldown_s=10)):
    policy = AlertPolicy("caller_agitation", options, "c1", "a1")
    events = []
    for t, level in enumerate(levels, start=1):
        events.extend(policy.update(float(t), level, ("why",)))
    return policy, events


def test_one_loud_second_never_raises_an_alert():
    _, events = _run([0.1, 0.9, 0.1, 0.1, 0.1])
    assert events == []


def test_sustained_agitation_raises_once_after_the_minimum_time():
    _, events = _run([0.1, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8])
    assert [e.state for e in events] == ["raised"]
    alert = events[0]
    assert alert.onset_s == 2.0 and alert.raised_at_s == 4.0
    assert alert.action == "supervisor_takeover" and alert.reasons == ("why",)


def test_alert_clears_only_after_level_stays_below_the_clear_level():
    # dips to 0.4 (between clear and raise levels) do not clear it: that is the hysteresis
    _, events = _run([0.6, 0.6, 0.6, 0.4, 0.4, 0.2, 0.2, 0.2, 0.2])
    states = [(e.state, e.raised_at_s, e.cleared_at_s) for e in events]
    assert states == [("raised", 3.0, None), ("cleared", 3.0, 9.0)]
    assert events[0].id == events[1].id


def test_no_new_alert_during_cooldown_after_clearing():
    levels = [0.6] * 3 + [0.1] * 4 + [0.9] * 5 + [0.1] * 5 + [0.9] * 4
    _, events = _run(levels)
    raised = [e for e in events if e.state == "raised"]
    assert len(raised) == 2
    assert raised[1].raised_at_s >= events[1].cleared_at_s + 10


def test_open_alert_is_cleared_at_the_end_of_the_call():
    policy, events = _run([0.9] * 5)
    closing = policy.close(5.5)
    assert [e.state for e in closing] == ["cleared"] and closing[0].cleared_at_s == 5.5


def test_peak_level_is_reported():
    _, events = _run([0.6, 0.6, 0.95, 0.7])
    assert events[0].level == 0.95


def test_alert_ids_are_derived_from_call_kind_and_time_so_a_rerun_gives_the_same_ids():
    from pipeline.alerts import alert_id

    assert alert_id("c1", "caller_agitation", 38.0) == alert_id("c1", "caller_agitation", 38.0)
    assert len({alert_id("c1", "caller_agitation", 38.0), alert_id("c2", "caller_agitation", 38.0),
                alert_id("c1", "agent_strain", 38.0), alert_id("c1", "caller_agitation", 39.0)}) == 4
