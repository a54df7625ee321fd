"""Agent strain across a shift: exposure accumulates, breaks and idle time recover it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pipeline.strain import ShiftBook, ShiftState, StrainOptions, apply_rest, strain_level

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)


def _level(o, **kw):
    base = dict(hostile_s=0.0, talk_s=0.0, calls=0, voice_drift=0.0, agent_negative=0.0)
    base.update(kw)
    return strain_level(o, **base)[0]


def test_a_fresh_agent_has_no_strain():
    assert _level(StrainOptions()) == 0.0


def test_hostile_exposure_and_talk_time_raise_strain_and_each_term_saturates():
    o = StrainOptions()
    assert _level(o, hostile_s=300) > _level(o, hostile_s=60) > 0
    assert _level(o, hostile_s=10_000) == _level(o, hostile_s=o.hostile_saturation_s)
    assert _level(o, hostile_s=600, talk_s=5400) > _level(o, hostile_s=600)


def test_no_single_term_alone_exceeds_its_weight():
    o = StrainOptions()
    assert _level(o, calls=1000) <= o.weight_calls + 1e-9


def test_a_break_lowers_strain():
    o = StrainOptions()
    tired = ShiftState("a1", hostile_s=600, talk_s=5400, calls=20)
    rested = apply_rest(o, tired, minutes=15)
    before = _level(o, hostile_s=tired.hostile_s, talk_s=tired.talk_s, calls=tired.calls)
    after = _level(o, hostile_s=rested.hostile_s, talk_s=rested.talk_s, calls=rested.calls)
    assert after < before * 0.5


def test_reported_break_start_and_end_recover_the_agent_and_persist():
    saved = {}
    book = ShiftBook(StrainOptions(), load=saved.get, save=saved.__setitem__)
    book.record_call(ShiftState("a1", hostile_s=600, talk_s=3600, calls=12))
    book.record_break("a1", start=True, at=T0)
    state = book.record_break("a1", start=False, at=T0 + timedelta(minutes=20))
    assert state.hostile_s < 600 * 0.2 and state.break_started is None
    assert saved["a1"]["hostile_s"] == state.hostile_s


def test_idle_time_between_calls_counts_as_a_break():
    book = ShiftBook(StrainOptions(idle_break_min=10))
    book.record_call(ShiftState("a1", hostile_s=600, calls=5, last_call_end=T0.isoformat()))
    soon = book.state_at_call_start("a1", T0 + timedelta(minutes=2))
    assert soon.hostile_s == 600
    later = book.state_at_call_start("a1", T0 + timedelta(minutes=40))
    assert later.hostile_s < 100


def test_shift_state_survives_a_restart_through_the_store_callbacks():
    saved = {}
    ShiftBook(StrainOptions(), load=saved.get, save=saved.__setitem__).record_call(
        ShiftState("a7", hostile_s=42.0, calls=3))
    restarted = ShiftBook(StrainOptions(), load=saved.get, save=saved.__setitem__)
    assert restarted.get("a7").hostile_s == 42.0 and restarted.get("a7").calls == 3


def test_board_lists_most_strained_agents_first():
    book = ShiftBook(StrainOptions())
    book.record_call(ShiftState("calm", calls=1))
    book.record_call(ShiftState("tired", hostile_s=600, talk_s=5400, calls=20))
    board = book.board()
    assert [r["agent_id"] for r in board] == ["tired", "calm"]
    assert board[0]["reasons"]
