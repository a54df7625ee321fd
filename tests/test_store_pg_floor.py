"""Several live workers on one PostgreSQL, at the store level: each webhook delivery is claimed by one
worker at a time (FOR UPDATE SKIP LOCKED, with a lease that lapses when a worker dies), an agent's shift
is one row every worker reads through and updates atomically, and a dead worker's checkpoints are
adopted by exactly one other. Runs against the suite's real server (tests/pg_support.py)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.errors import ConfigError
from pipeline.live.feed import FeedHub
from pipeline.live.floor import Floor, open_alert_log
from pipeline.live.options import LiveOptions
from pipeline.live.outbox_pg import PgAlertLog
from pipeline.outputs.store import Store
from pipeline.outputs.store_pg import PgStore
from pipeline.strain import ShiftState, StrainOptions, merge_call

from example_result import escalating_result

HOOK = "http://receiver.invalid/hook"


def options(**changes) -> LiveOptions:
    base = dict(webhook_urls=(HOOK,), webhook_timeout_s=0.2, webhook_lease_s=0.6, worker_heartbeat_s=0.2,
                worker_dead_after_s=0.6)
    return LiveOptions(**{**base, **changes})


def alert(n: int) -> dict:
    return {"id": f"c{n}-a1", "state": "raised", "call_id": f"c{n}", "agent_id": "a17", "level": 0.8}


@pytest.fixture
def pg_url(postgres_server) -> str:
    return postgres_server.new_database("floor")


@pytest.fixture
def two_workers(pg_url):
    stores = [PgStore.open(pg_url), PgStore.open(pg_url)]
    try:
        yield [PgAlertLog(s, options(), worker_id=f"w{i + 1}") for i, s in enumerate(stores)]
    finally:
        for s in stores:
            s.close()


def test_the_backend_follows_the_store(pg_url, tmp_path):
    with PgStore.open(pg_url) as pg, Store.open(tmp_path / "live.sqlite") as lite:
        assert isinstance(open_alert_log(pg, options(), worker_id="w1"), PgAlertLog)
        assert not isinstance(open_alert_log(lite, options(), worker_id="w1"), PgAlertLog)


def test_a_claimed_delivery_is_invisible_to_the_other_worker_until_released(two_workers):
    w1, w2 = two_workers
    w1.record(alert(1))
    claimed = w1.due(now=time.time())
    assert [d.key for d in claimed] == ["c1-a1"]
    assert w2.due(now=time.time()) == [] and w1.due(now=time.time()) == [], "claimed: nobody else sends it"
    w1.mark_failed(claimed[0].id, error="HTTP 503", retry_at=time.time())
    retry = w2.due(now=time.time())
    assert [(d.key, d.attempts) for d in retry] == [("c1-a1", 1)], "a released retry goes to whoever is up"
    w2.mark_delivered(retry[0].id)
    assert w1.due(now=time.time()) == [] and w2.due(now=time.time()) == []
    assert w1.outbox_counts() == {"pending": 0, "delivered": 1}


def test_a_dead_workers_claim_lapses_and_another_worker_sends_it(two_workers):
    w1, w2 = two_workers
    w1.record(alert(1))
    assert len(w1.due(now=time.time())) == 1  # ... and w1 dies here, holding the claim
    assert w2.due(now=time.time()) == []
    time.sleep(w2.options.webhook_lease_s + 0.2)
    taken = w2.due(now=time.time())
    assert [d.key for d in taken] == ["c1-a1"]
    w2.mark_delivered(taken[0].id)
    assert w2.outbox_counts() == {"pending": 0, "delivered": 1}


def test_two_workers_claiming_at_once_split_the_outbox_without_overlap(two_workers):
    for n in range(40):
        two_workers[0].record(alert(n))
    claims: dict[str, list[str]] = {"w1": [], "w2": []}
    barrier = threading.Barrier(2)

    def drain(log: PgAlertLog) -> None:
        barrier.wait()
        while True:
            batch = log.due(now=time.time(), limit=3)
            if not batch:
                return
            claims[log.worker_id] += [d.key for d in batch]
            for d in batch:
                log.mark_delivered(d.id)

    threads = [threading.Thread(target=drain, args=(w,)) for w in two_workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claims["w1"] + claims["w2"]) == sorted(f"c{n}-a1" for n in range(40))
    assert not set(claims["w1"]) & set(claims["w2"]), "a delivery claimed by both workers would be sent twice"
    assert two_workers[0].outbox_counts() == {"pending": 0, "delivered": 40}


def test_alerts_and_acks_are_one_log_for_every_worker(two_workers):
    w1, w2 = two_workers
    first = w1.record(alert(1))
    assert w2.record(alert(1)) is None, "the same alert event from a second worker is not recorded twice"
    assert [a["id"] for a in w2.list()] == ["c1-a1"] and w2.last_seq() == first["seq"]
    assert w2.ack("c1-a1", by="sup:ack")["acked_by"] == "sup:ack"
    assert w1.list()[0]["acked_by"] == "sup:ack"
    assert w1.open_alert_ids() == ["c1-a1"] and w2.close_interrupted("c1") == 1 and w1.open_alert_ids() == []


def _call(book, agent: str, *, hostile_s: float, started: datetime):
    """What the engine does with a shift book for one call: start, then record start + this call."""
    base = book.state_at_call_start(agent, started)
    return base, ShiftState(**{**base.as_json(), "hostile_s": base.hostile_s + hostile_s,
                               "talk_s": base.talk_s + 60.0, "calls": base.calls + 1,
                               "total_calls": base.total_calls + 1,
                               "last_call_end": (started + timedelta(minutes=1)).isoformat()})


def test_an_agents_calls_on_two_workers_add_up_even_when_they_end_together(pg_url):
    with PgStore.open(pg_url) as s1, PgStore.open(pg_url) as s2:
        b1, b2 = s1.shift_book(StrainOptions()), s2.shift_book(StrainOptions())
        assert b1.shared and b2.shared
        t0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
        _, end1 = _call(b1, "a17", hostile_s=30.0, started=t0)
        b1.record_call(end1)
        base2, end2 = _call(b2, "a17", hostile_s=20.0, started=t0 + timedelta(minutes=2))
        assert base2.calls == 1 and base2.hostile_s == 30.0, "worker 2 reads worker 1's call through"
        b2.record_call(end2)
        # Two calls of one agent live at once, one on each worker (a transfer): both end, both count.
        _, end3 = _call(b1, "a17", hostile_s=5.0, started=t0 + timedelta(minutes=4))
        _, end4 = _call(b2, "a17", hostile_s=7.0, started=t0 + timedelta(minutes=4))
        b2.record_call(end4)
        b1.record_call(end3)
        final = ShiftState.from_json(s1.load_shift("a17"))
        assert (final.calls, final.total_calls, final.hostile_s) == (4, 4, 62.0)
        assert [r["calls_since_break"] for r in b2.board()] == [4] == [r["calls_since_break"] for r in b1.board()]
        b2.record_break("a17", start=True, at=t0 + timedelta(minutes=10))
        assert b1.get("a17").break_started is not None, "a break taken on one worker's dashboard shows on all"


def test_merging_a_call_keeps_what_another_worker_wrote_meanwhile():
    base = ShiftState("a17", hostile_s=10.0, calls=1, total_calls=1)
    final = ShiftState("a17", hostile_s=25.0, calls=2, total_calls=2, last_call_end="2026-12-01T09:05:00+00:00")
    assert merge_call(base, base, final) == final, "nobody else wrote: exactly the unshared result"
    other = ShiftState("a17", hostile_s=18.0, calls=2, total_calls=2, last_call_end="2026-12-01T09:06:00+00:00",
                       break_started="2026-12-01T09:07:00+00:00")
    merged = merge_call(other, base, final)
    assert (merged.hostile_s, merged.calls, merged.total_calls) == (33.0, 3, 3)
    assert merged.last_call_end == other.last_call_end and merged.break_started == other.break_started


def test_sqlite_keeps_the_in_memory_shift_book_and_updates_atomically(tmp_path):
    with Store.open(tmp_path / "live.sqlite") as s:
        assert not s.shift_book(StrainOptions()).shared
        assert s.update_shift("a1", lambda cur: {"agent_id": "a1", "calls": (cur or {}).get("calls", 0) + 1})["calls"] == 1
        assert s.update_shift("a1", lambda cur: {**cur, "calls": cur["calls"] + 1})["calls"] == 2
        with pytest.raises(ZeroDivisionError):
            s.update_shift("a1", lambda cur: {"calls": 1 / 0})
        assert s.load_shift("a1")["calls"] == 2, "a failed change writes nothing"


def test_a_dead_workers_checkpoints_are_adopted_by_one_other_worker(pg_url):
    opts = options()
    stores = [PgStore.open(pg_url) for _ in range(3)]
    try:
        def floor(i: int) -> Floor:
            return _floor(stores[i], opts, f"w{i + 1}")

        f1 = floor(0)
        f1.join()
        stores[0].save_checkpoint("cut-1", escalating_result("cut-1"), shift={"agent_id": "a17", "calls": 1})
        f2, f3 = floor(1), floor(2)
        assert f2.join() == [] and f3.join() == [], "a live worker's calls are its own"
        assert [c["call_id"] for c in stores[1].list_checkpoints()] == []
        time.sleep(opts.worker_dead_after_s + 0.3)  # w1 stops heartbeating: it died
        adopted = {"w2": [], "w3": []}
        barrier = threading.Barrier(2)

        def take(f: Floor) -> None:
            barrier.wait()
            adopted[f.worker_id] = f._adopt_orphans()

        threads = [threading.Thread(target=take, args=(f,)) for f in (f2, f3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(adopted["w2"] + adopted["w3"]) == ["cut-1"]
        owner = stores[1] if adopted["w2"] else stores[2]
        assert [c["call_id"] for c in owner.list_checkpoints()] == ["cut-1"]
    finally:
        for s in stores:
            s.close()


def test_a_worker_feeds_the_other_workers_alerts_and_calls_once_and_not_what_was_there_before(pg_url):
    opts = options()
    stores = [PgStore.open(pg_url), PgStore.open(pg_url)]
    try:
        logs = [PgAlertLog(s, opts, worker_id=f"w{i + 1}") for i, s in enumerate(stores)]
        hub = FeedHub(max_updates=8)
        sub = hub.subscribe()
        floors = [Floor(s, log, opts, worker_id=log.worker_id, hub=FeedHub(max_updates=8) if i == 0 else hub,
                        local_calls=list, board=list, on_orphans=lambda ids: None)
                  for i, (s, log) in enumerate(zip(stores, logs))]
        logs[0].record(alert(0))  # before worker 2 joined: history, not news
        for f in floors:
            f.join()
        floors[1]._publish(floors[1]._beat([]))
        assert sub.next_batch() == []
        logs[0].record(alert(1))
        floors[0]._beat([{"call_id": "c9", "agent_id": "a17", "state": "live"}])
        for _ in range(2):  # the look-back reads it again: the hub sends it once
            floors[1]._publish(floors[1]._beat([]))
        batch = sub.next_batch()
        assert [(k, d.get("call_id"), d.get("worker")) for k, d in batch] == [("alert", "c1", None), ("call", "c9", "w1")]
        floors[0]._beat([])  # the call ended on worker 1
        floors[1]._publish(floors[1]._beat([]))
        assert [(k, d["call_id"], d["state"]) for k, d in sub.next_batch() if k == "call"] == [("call", "c9", "ended")]
    finally:
        for s in stores:
            s.close()


def _floor(store, opts, worker_id: str) -> Floor:
    return Floor(store, PgAlertLog(store, opts, worker_id=worker_id), opts, worker_id=worker_id,
                 hub=FeedHub(max_updates=8), local_calls=list, board=list, on_orphans=lambda ids: None)


def test_a_second_worker_under_a_running_workers_id_is_refused(pg_url):
    opts = options()
    stores = [PgStore.open(pg_url), PgStore.open(pg_url)]
    running = _floor(stores[0], opts, "w1")
    running.join()
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(opts.worker_heartbeat_s):
            running._beat([])

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        with pytest.raises(ConfigError, match="worker_id"):
            _floor(stores[1], opts, "w1").join()
        assert _floor(stores[1], opts, "w2").join() == [], "another id joins the same floor"
    finally:
        stop.set()
        beating.join(timeout=10)
        for s in stores:
            s.close()


def test_a_worker_restarted_before_its_old_row_expires_takes_its_id_back(pg_url):
    opts = options()
    stores = [PgStore.open(pg_url), PgStore.open(pg_url)]
    try:
        _floor(stores[0], opts, "w1").join()  # its previous life: joined, then died without leaving
        stores[0].close()
        assert _floor(stores[1], opts, "w1").join() == []
    finally:
        stores[1].close()
