"""Live transcripts with the real ASR (tiny.en, the embedded English model): final turns reach the live
feed and the call's transcript tail while the call is still streaming (interim previews are marked)."""
from __future__ import annotations

import asyncio

import pytest

from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_support import ESCALATING
from live_fakes import TOKEN, FakeStore, run_live
from live_harness import collect_feed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asr_engine():
    try:
        from pipeline.config import load_config
        from pipeline.engine import Engine
        return Engine.load(load_config(overrides={"asr": {"enabled": True, "model": "tiny.en", "language": "en"}}))
    except ImportError as exc:
        pytest.skip(f"the engine cannot be imported here: {exc}")


def test_final_transcripts_reach_the_feed_during_the_call(asr_engine):
    if not ESCALATING.exists():
        pytest.skip(f"{ESCALATING} is missing")
    full = ReplayCall.from_file(str(ESCALATING), agent_channel=0, call_id="asr-1", agent_id="a17")
    n = 25 * full.sample_rate_hz
    call = ReplayCall("asr-1", "a17", full.agent[:n], full.caller[:n], full.sample_rate_hz)

    async def scenario(r):
        feed = asyncio.create_task(collect_feed(
            f"{r.bound.http}/api/feed", TOKEN, timeout_s=90,
            until=lambda evs: any(k == "call" and e["call_id"] == "asr-1" and e["state"] == "ended" for k, e in evs)))
        await asyncio.sleep(0.2)
        await replay(call, fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=4.0)
        result = await wait_for_result(r.bound.http, "asr-1", token=TOKEN, timeout_s=90)
        return await feed, result

    events, result = run_live(scenario, engine=asr_engine, store=FakeStore(), timeout_s=150)
    tails = [e["tail"] for k, e in events if k == "transcript" and e["call_id"] == "asr-1"]
    assert tails, "transcripts were published on the live feed"
    text = " ".join(line["text"] for line in tails[-1]).lower()
    assert "card" in text or "calling" in text, text
    assert {line["speaker"] for line in tails[-1]} <= {"agent", "caller"}
    assert result["transcript_tail"] and result["result"]["segments"]


def test_windows_of_concurrent_calls_share_batched_model_calls_and_each_call_gets_its_own_text(asr_engine):
    """Three calls streamed at once (twice real time, so their windows fall due together) through a real
    server: the shared ASR batches windows of several calls into one model call (live.asr_batch = 4, forced:
    auto takes one at a time on CPU), and every call's transcript is its own call's speech."""
    if not ESCALATING.exists():
        pytest.skip(f"{ESCALATING} is missing")
    from live_fakes import live_options

    full = ReplayCall.from_file(str(ESCALATING), agent_channel=0, call_id="x", agent_id="a17")
    n = 20 * full.sample_rate_hz
    silent = full.agent[:n] * 0
    # call 0 carries only the caller's speech, call 1 only the agent's, call 2 both: each transcript must
    # hold its own call's words and only them
    calls = [ReplayCall("mix-0", "a1", silent, full.caller[:n], full.sample_rate_hz),
             ReplayCall("mix-1", "a2", full.agent[:n], silent, full.sample_rate_hz),
             ReplayCall("mix-2", "a3", full.agent[:n], full.caller[:n], full.sample_rate_hz)]

    async def scenario(r):
        await asyncio.gather(*(replay(c, fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=2.0)
                               for c in calls))
        results = [await wait_for_result(r.bound.http, c.call_id, token=TOKEN, timeout_s=120) for c in calls]
        return results, r.service.calls.asr_pool.counters

    results, counters = run_live(scenario, engine=asr_engine, store=FakeStore(), timeout_s=200,
                                 options=live_options(asr_batch=4, asr_batch_per_call=2))
    assert counters.largest_batch >= 2, "windows of several calls were transcribed in one batched call"
    speakers = [{s["speaker"] for s in res["result"]["segments"] if s.get("text")} for res in results]
    assert speakers[0] <= {"caller"} and speakers[1] <= {"agent"} and speakers[2] == {"agent", "caller"}
    assert speakers[0] and speakers[1]
