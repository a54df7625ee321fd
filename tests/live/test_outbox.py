"""The durable alert outbox: alerts are recorded before anyone hears of them, webhooks carry the alert
id as Idempotency-Key, a dead receiver delays delivery (with backoff) and a restart loses nothing."""
from __future__ import annotations

import asyncio
import random
import sqlite3

import pytest
from pipeline.live.options import LiveOptions
from pipeline.live.outbox import AlertLog, backoff_s
from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_fakes import TOKEN, FakeStore, live_options, loud_call, run_live
from live_harness import WebhookReceiver, free_port, until


def options_for(url: str, **changes) -> LiveOptions:
    return live_options(webhook_urls=(url,), webhook_backoff_initial_s=0.2, webhook_backoff_max_s=0.5, **changes)


async def one_alerting_call(r, call_id: str) -> dict:
    agent, caller = loud_call(5.0)
    await replay(ReplayCall(call_id, "a17", agent, caller, 8000), fmt="audio-fork",
                 to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=0)
    return await wait_for_result(r.bound.http, call_id, token=TOKEN, timeout_s=15)


def test_a_receiver_down_for_a_while_gets_every_alert_once_it_is_back():
    port = free_port()
    receiver = WebhookReceiver(port, fail_first=2)

    async def scenario(r):
        await one_alerting_call(r, "w1")
        await one_alerting_call(r, "w2")
        await asyncio.sleep(0.6)  # nobody listening: connection refused, retried with backoff
        assert r.service.alerts.outbox_counts()["pending"] == 2
        await receiver.start()  # back, but answers 503 twice before it accepts
        try:
            await until(lambda: r.service.alerts.outbox_counts()["pending"] == 0, timeout_s=15)
        finally:
            await receiver.stop()
        return r.service.alerts.outbox_counts(), r.service.sender.failures

    counts, failures = run_live(scenario, options=options_for(f"http://127.0.0.1:{port}/hook"))
    assert counts == {"pending": 0, "delivered": 2}
    assert failures >= 4
    assert sorted(receiver.accepted) == ["w1-a1", "w2-a1"]
    assert {body["call_id"] for body in receiver.accepted.values()} == {"w1", "w2"}
    assert all(key == body["id"] for key, body in receiver.requests)


def test_undelivered_alerts_survive_a_restart_and_are_delivered_by_the_next_process(tmp_path):
    port = free_port()
    db = str(tmp_path / "live.sqlite")
    receiver = WebhookReceiver(port)

    async def first(r):
        await one_alerting_call(r, "r1")
        await asyncio.sleep(0.3)
        return r.service.alerts.outbox_counts()

    async def second(r):
        await receiver.start()
        try:
            await until(lambda: r.service.alerts.outbox_counts()["pending"] == 0, timeout_s=15)
        finally:
            await receiver.stop()
        return r.service.alerts.list()

    url = f"http://127.0.0.1:{port}/hook"
    assert run_live(first, options=options_for(url), store=FakeStore(db)) == {"pending": 1, "delivered": 0}
    alerts = run_live(second, options=options_for(url), store=FakeStore(db))
    assert list(receiver.accepted) == ["r1-a1"] and len(receiver.requests) == 1
    assert [a["call_id"] for a in alerts] == ["r1"], "the alert log is restored too"


def test_alert_log_records_each_alert_state_once_and_queues_one_delivery_per_url():
    log = AlertLog(sqlite3.connect(":memory:"), LiveOptions(webhook_urls=("http://a", "http://b"),
                                                            webhook_states=("raised", "cleared")))
    alert = {"id": "x1", "state": "raised", "call_id": "c", "agent_id": None, "level": 0.7}
    first = log.record(alert)
    assert first["seq"] == 1 and log.record(alert) is None, "a replayed event is not recorded twice"
    log.record({**alert, "state": "cleared"})
    due = log.due(now=1e12)
    assert sorted((d.url, d.key) for d in due) == [("http://a", "x1"), ("http://a", "x1.cleared"),
                                                   ("http://b", "x1"), ("http://b", "x1.cleared")]
    log.mark_failed(due[0].id, error="HTTP 503", retry_at=1e12 + 10)
    assert len(log.due(now=1e12)) == 3
    assert log.ack("x1", by="sup")["acked_by"] == "sup" and log.ack("nope", by="sup") is None


@pytest.mark.parametrize("attempts", [1, 2, 5, 30])
def test_backoff_grows_exponentially_and_is_capped(attempts):
    opts = LiveOptions(webhook_backoff_initial_s=1.0, webhook_backoff_max_s=60.0)
    value = backoff_s(opts, attempts, rng=random.Random(attempts))
    expected = min(2 ** (attempts - 1), 60.0)
    assert 0.9 * expected <= value <= 1.1 * expected
