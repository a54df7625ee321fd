"""Two `callpulse serve` workers on one real PostgreSQL: one floor.

An agent's two calls, one on each worker, add up to one strain; an alert raised on worker 1 reaches
worker 2's feed and alert log; worker 1 killed (SIGKILL) while the webhook receiver is down leaves its
alerts to worker 2, which delivers each exactly once when the receiver is back, and closes the call
that died with worker 1 as interrupted. Real processes, real HTTP, the real database
(tests/pg_support.py starts it); the workers run in file order on one pair of processes."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_harness import WebhookReceiver, collect_feed, free_port, until
from live_support import ESCALATING, REPO

pytestmark = pytest.mark.slow
TOKEN = "multiworker-token-0123456789"


class Worker:
    """One `callpulse serve` process; its output goes to a file (a pipe nobody reads would fill)."""

    def __init__(self, name: str, config: Path, port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        env = {**os.environ, "CALLPULSE_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "serve", "--config", str(config), "--port", str(port),
                 "--sip-port", "-1", "--audiosocket-port", "-1"], cwd=REPO, env=env, stdout=out,
                stderr=subprocess.STDOUT)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_started(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "/api/health" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"worker {self.name} did not start:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


async def get(url: str):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.get(url) as resp:
            assert resp.status == 200, f"{url}: HTTP {resp.status}"
            return await resp.json()


def call(call_id: str, agent_id: str) -> ReplayCall:
    return ReplayCall.from_file(str(ESCALATING), agent_channel=0, call_id=call_id, agent_id=agent_id)


async def one_call(worker: Worker, call_id: str, agent_id: str, *, speed: float = 0) -> dict:
    """Stream a call (``speed`` x real time; 0 = as fast as the worker takes it) and wait for its result."""
    await replay(call(call_id, agent_id), fmt="audio-fork", to=f"{worker.ws}/tap/audio-fork", token=TOKEN,
                 speed=speed)
    return await wait_for_result(worker.http, call_id, token=TOKEN, timeout_s=180)


async def live_on(worker: Worker, *, without: str, timeout_s: float = 10.0) -> set[str]:
    """The call ids ``worker`` lists as live, once ``without`` is not among them (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = {c["call_id"] for c in (await get(f"{worker.http}/api/calls"))["live"]}
        if without not in live or time.monotonic() > deadline:
            return live
        await asyncio.sleep(0.25)


def board_row(board: list[dict], agent_id: str) -> dict:
    return next(a for a in board if a["agent_id"] == agent_id)


@pytest.fixture(scope="module")
def floor(postgres_server, tmp_path_factory):
    if not ESCALATING.exists():
        pytest.skip(f"{ESCALATING} is missing")
    url = postgres_server.new_database("floor")
    base = tmp_path_factory.mktemp("floor")
    receiver = WebhookReceiver(free_port())
    workers = []
    for name in ("w1", "w2"):
        config = base / f"{name}.toml"
        # ASR off (the shipped emotion model, fusion and timing raise the acoustic alert): this is about the floor
        config.write_text(
            f'[asr]\nenabled = false\n[live]\ndatabase = "{url}"\nworker_id = "{name}"\n'
            f'webhook_urls = ["{receiver.url}"]\nwebhook_timeout_s = 1.0\nwebhook_lease_s = 3.0\n'
            'webhook_backoff_initial_s = 0.2\nwebhook_backoff_max_s = 1.0\ncheckpoint_interval_s = 1.0\n'
            'worker_heartbeat_s = 0.5\nworker_dead_after_s = 3.0\n')
        workers.append(Worker(name, config, free_port(), base / f"{name}.log"))
    try:
        for w in workers:
            w.wait_started()
        yield {"w1": workers[0], "w2": workers[1], "receiver": receiver}
    finally:
        for w in workers:
            w.stop()


def test_an_agents_calls_on_two_workers_add_up_to_one_strain(floor):
    w1, w2 = floor["w1"], floor["w2"]

    async def scenario():
        await one_call(w1, "floor-1", "a17")
        after_one = board_row(await get(f"{w1.http}/api/agents"), "a17")
        await one_call(w2, "floor-2", "a17")
        after_two = board_row(await get(f"{w2.http}/api/agents"), "a17")
        await one_call(w1, "floor-2b", "a17")  # back on worker 1, which saw the agent after one call
        return after_one, after_two, await get(f"{w2.http}/api/agents"), await get(f"{w1.http}/api/agents")

    after_one, after_two, board2, board1 = asyncio.run(scenario())
    assert after_one["calls_since_break"] == 1 and after_one["hostile_s"] > 0
    assert after_two["calls_since_break"] == 2, "worker 2 started from worker 1's call, not from zero"
    assert after_two["hostile_s"] > after_one["hostile_s"] * 1.5, "both calls' hostile exposure counts"
    on_w1 = board_row(board1, "a17")
    assert on_w1["calls_since_break"] == 3, "worker 1 read the agent through, not from what it saw before"
    assert on_w1["hostile_s"] > after_two["hostile_s"]
    assert board_row(board2, "a17") == on_w1, "both workers show the same strain board"


def test_an_alert_raised_on_worker_1_appears_on_worker_2s_feed(floor):
    w1, w2 = floor["w1"], floor["w2"]

    def seen(events) -> bool:  # the alert and worker 1's live call, in whichever order they come
        return (any(kind == "alert" and data.get("call_id") == "floor-3" for kind, data in events)
                and any(kind == "call" and data.get("call_id") == "floor-3" and data.get("worker") == "w1"
                        for kind, data in events))

    async def scenario():
        feed = asyncio.create_task(collect_feed(f"{w2.http}/api/feed", TOKEN, until=seen, timeout_s=120))
        await asyncio.sleep(0.5)  # subscribed before the call starts
        # 8x real time: the call stays live for several heartbeats (a call over within one heartbeat may
        # never be listed on another worker; its alert always is)
        done = await one_call(w1, "floor-3", "a18", speed=8)
        events = await feed
        return done, events, await get(f"{w2.http}/api/alerts"), await live_on(w2, without="floor-3")

    done, events, alerts, calls = asyncio.run(scenario())
    raised = done["result"]["alerts"]
    assert raised, "the escalating call raised an alert on worker 1"
    on_feed = [d for k, d in events if k == "alert" and d.get("call_id") == "floor-3"]
    assert on_feed and on_feed[0]["id"] == raised[0]["id"] and on_feed[0]["seq"] > 0
    assert [d for k, d in events if k == "call" and d.get("call_id") == "floor-3" and d.get("worker") == "w1"], \
        "worker 1's live call was on worker 2's feed while it ran"
    assert raised[0]["id"] in {a["id"] for a in alerts}, "worker 2's alert log holds worker 1's alert"
    assert len({(a["id"], a["state"]) for a in alerts}) == len(alerts), "each alert event is in the log once"
    assert "floor-3" not in calls, "an ended call leaves the other worker's live list within heartbeats"


def test_a_killed_workers_alert_is_delivered_once_by_the_other_and_its_call_closed(floor):
    w1, w2, receiver = floor["w1"], floor["w2"], floor["receiver"]

    async def scenario():
        await one_call(w1, "floor-4", "a19")  # raised on worker 1; the receiver is down
        streaming = asyncio.create_task(replay(call("floor-5", "a19"), fmt="audio-fork",
                                               to=f"{w1.ws}/tap/audio-fork", token=TOKEN, speed=1.0))
        await asyncio.sleep(3.0)  # some checkpoints of floor-5 are saved
        health = await get(f"{w1.http}/api/health")
        w1.kill()
        try:
            await asyncio.wait_for(streaming, 10)
        except Exception:  # noqa: BLE001 - the tap sees its connection die: that is the point
            pass
        listed = await get(f"{w2.http}/api/alerts")
        await asyncio.sleep(1.5)  # worker 2 keeps failing against the dead receiver meanwhile
        pending = (await get(f"{w2.http}/api/health"))["outbox"]["pending"]
        await receiver.start()
        try:
            raised = {a["id"] for a in listed if a["state"] == "raised"}
            await until(lambda: raised <= set(receiver.accepted), timeout_s=60, what="every alert delivered")
            await asyncio.sleep(2.0)  # a duplicate, from anyone, would arrive now
            cut = await wait_for_result(w2.http, "floor-5", token=TOKEN, timeout_s=60)
            return (health, pending, listed, await get(f"{w2.http}/api/health"), cut,
                    await get(f"{w2.http}/api/agents"), await live_on(w2, without="floor-5"))
        finally:
            await receiver.stop()

    health, pending, listed, after, cut, board, calls = asyncio.run(scenario())
    assert health["live_calls"] == 1 and pending >= 1, "worker 1 died with undelivered alerts and a live call"
    raised = {a["id"] for a in listed if a["state"] == "raised"}
    assert [a for a in listed if a["call_id"] == "floor-4" and a["state"] == "raised"], \
        "worker 1's alert of floor-4 is in the shared log"
    keys = [key for key, _ in receiver.requests]
    assert sorted(set(keys)) == sorted(raised) and len(keys) == len(set(keys)), \
        f"each alert POSTed exactly once after the receiver came back: {keys}"
    assert after["outbox"]["pending"] == 0
    assert cut["result"]["interrupted"] is True and cut["result"]["agent_id"] == "a19", \
        "worker 2 closed the call that died with worker 1"
    assert board_row(board, "a19")["calls_since_break"] == 2, "the interrupted call counts on the shift"
    assert "floor-5" not in calls, "the dead worker's call left the live list"
