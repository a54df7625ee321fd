"""The live service end to end on loopback, with the scripted fake engine: every tap format delivers a
call, alerts reach the live feed first and durably, the API answers, bad input never hurts other calls."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import aiohttp
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.live.replay import ReplayCall, audiosocket_uuid, feed_events, replay, wait_for_result
from pipeline.live.security import resolve_token
from pipeline.live.taps import audiosocket as asock
from pipeline.live.taps.audio_fork import SUBPROTOCOL

from live_fakes import TOKEN, live_options, loud_call, run_live

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample_call(call_id: str, seconds: float = 6.0) -> ReplayCall:
    agent, caller = loud_call(seconds)
    return ReplayCall(call_id, "a17", agent, caller, 8000)


async def read_feed(url: str, *, until, timeout_s: float = 20.0) -> list[tuple[str, dict]]:
    """Read SSE events from the feed until ``until(events)`` is true (bounded)."""
    events: list[tuple[str, dict]] = []
    async with contextlib.aclosing(feed_events(url, token=TOKEN, timeout_s=timeout_s)) as feed:
        async for kind, data in feed:
            events.append((kind, data))
            if until(events):
                break
    return events


def has_alert(call_id: str):
    return lambda evs: any(k == "alert" and e["call_id"] == call_id for k, e in evs)


@pytest.mark.parametrize("fmt", ["audio-fork", "twilio", "audiosocket", "sip", "siprec"])
def test_each_tap_format_yields_the_call_result_and_a_takeover_alert_on_the_feed(fmt):
    async def scenario(r):
        b = r.bound
        to = {"audio-fork": f"{b.ws}/tap/audio-fork", "twilio": f"{b.ws}/tap/twilio",
              "audiosocket": f"{b.host}:{b.audiosocket_port}", "sip": f"sip:analyze@{b.host}:{b.sip_port}",
              "siprec": f"sip:analyze@{b.host}:{b.sip_port}"}[fmt]
        call = sample_call(f"call-{fmt}")
        expect_id = audiosocket_uuid(call.call_id) if fmt == "audiosocket" else call.call_id
        feed = asyncio.create_task(read_feed(f"{b.http}/api/feed", until=has_alert(expect_id)))
        await asyncio.sleep(0.2)
        call_id = await replay(call, fmt=fmt, to=to, token=TOKEN, speed=0 if fmt not in ("sip", "siprec") else 10.0)
        result = await wait_for_result(b.http, call_id, token=TOKEN, timeout_s=20)
        events = await feed
        return result, events, r.engine.sessions[call_id], r.store.calls.get(call_id)

    result, events, session, saved = run_live(scenario)
    alert = next(e for k, e in events if k == "alert")
    assert alert["action"] == "supervisor_takeover" and alert["state"] == "raised"
    assert alert["agent_id"] == ("a17" if fmt != "audiosocket" else None)
    assert alert["id"] and alert["seq"] >= 1
    assert result["state"] == "ended" and saved is not None
    assert abs(result["result"]["duration_s"] - 6.0) < 0.1, "every second of audio reaches the engine once"
    assert alert["onset_s"] == pytest.approx(2.0, abs=1.01)
    assert all(name.startswith("callpulse-feed") for name in session.threads), "inference runs off the loop"


def test_api_lists_alerts_with_paging_and_acknowledges_them():
    async def scenario(r):
        b = r.bound
        for i in range(2):
            await replay(sample_call(f"c{i}", 5), fmt="audio-fork", to=f"{b.ws}/tap/audio-fork", token=TOKEN, speed=0)
            await wait_for_result(b.http, f"c{i}", token=TOKEN, timeout_s=10)
        async with aiohttp.ClientSession(headers=AUTH) as http:
            alerts = await (await http.get(f"{b.http}/api/alerts")).json()
            later = await (await http.get(f"{b.http}/api/alerts?since={alerts[0]['seq']}")).json()
            ack = await http.post(f"{b.http}/api/alerts/{alerts[0]['id']}/ack", json={"by": "sup1", "action": "takeover"})
            missing = await http.post(f"{b.http}/api/alerts/nope/ack", json={})
            after = await (await http.get(f"{b.http}/api/alerts")).json()
            calls = await (await http.get(f"{b.http}/api/calls")).json()
            health = await (await http.get(f"{b.http}/api/health")).json()
            bad = await http.get(f"{b.http}/api/alerts?since=x")
        return alerts, later, ack.status, missing.status, after, calls, health, bad.status

    alerts, later, ack, missing, after, calls, health, bad = run_live(scenario)
    assert [a["call_id"] for a in alerts] == ["c0", "c1"] and alerts[0]["seq"] < alerts[1]["seq"]
    assert [a["call_id"] for a in later] == ["c1"]
    assert (ack, missing, bad) == (200, 404, 400)
    assert after[0]["acked_by"] == "sup1:takeover" and after[1]["acked_at"] is None
    assert {c["call_id"] for c in calls["recent"]} == {"c0", "c1"} and calls["live"] == []
    assert health["status"] == "ok" and health["live_calls"] == 0


def test_agents_break_is_recorded_and_shown_on_the_board():
    async def scenario(r):
        async with aiohttp.ClientSession(headers=AUTH) as http:
            start = await http.post(f"{r.bound.http}/api/agents/a17/break", json={"action": "start"})
            board = await (await http.get(f"{r.bound.http}/api/agents")).json()
            wrong = await http.post(f"{r.bound.http}/api/agents/a17/break", json={"action": "nap"})
        return start.status, board, wrong.status

    start, board, wrong = run_live(scenario)
    assert start == 200 and wrong == 400
    assert board[0]["agent_id"] == "a17" and board[0]["on_break"] is True


def test_every_endpoint_needs_the_token_and_insecure_is_loopback_only():
    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession() as http:
            statuses = [(await http.get(f"{b.http}{p}")).status for p in ("/", "/api/health", "/api/alerts", "/api/calls")]
            by_query = (await http.get(f"{b.http}/api/health?token={TOKEN}")).status
            wrong = (await http.get(f"{b.http}/api/health", headers={"Authorization": "Bearer nope"})).status
            static = (await http.get(f"{b.http}/static/app.js")).status
            try:
                await http.ws_connect(f"{b.ws}/tap/audio-fork", protocols=(SUBPROTOCOL,))
                ws_status = 101
            except aiohttp.WSServerHandshakeError as exc:
                ws_status = exc.status
        return statuses, by_query, wrong, static, ws_status

    statuses, by_query, wrong, static, ws_status = run_live(scenario)
    assert statuses == [401] * 4 and wrong == 401 and ws_status == 401
    assert by_query == 200 and static == 200
    with pytest.raises(ConfigError, match="--insecure"):
        resolve_token(live_options(token=""), insecure=False)
    with pytest.raises(ConfigError, match="loopback"):
        resolve_token(live_options(token="", host="0.0.0.0"), insecure=True)
    assert resolve_token(live_options(token=""), insecure=True) is None


def test_a_flood_of_malformed_frames_is_dropped_and_counted_while_another_call_goes_on():
    async def scenario(r):
        b = r.bound
        good = asyncio.create_task(replay(sample_call("good", 5), fmt="twilio", to=f"{b.ws}/tap/twilio",
                                          token=TOKEN, speed=5.0))
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.ws_connect(f"{b.ws}/tap/audio-fork?mix=stereo", protocols=(SUBPROTOCOL,)) as ws:
                await ws.send_str(json.dumps({"callId": "flood"}))
                rng = np.random.default_rng(0)
                for i in range(3000):
                    await ws.send_bytes(rng.bytes(int(rng.integers(1, 400)) * 2 + 1))  # odd: never valid L16
                await ws.send_bytes(b"\0" * (4 * 320))  # one valid 40 ms frame still counts
            async with http.ws_connect(f"{b.ws}/tap/twilio") as ws:
                for _ in range(500):
                    await ws.send_str("{not json")
                await ws.send_bytes(b"\x00\x01")
        reader, writer = await asyncio.open_connection(b.host, b.audiosocket_port)
        writer.write(asock.encode_uuid(str(uuid.uuid4())) + bytes(rng.bytes(5000)))
        await writer.drain()
        writer.close()
        await good
        good_result = await wait_for_result(b.http, "good", token=TOKEN, timeout_s=15)
        flood = await wait_for_result(b.http, "flood", token=TOKEN, timeout_s=15)
        async with aiohttp.ClientSession(headers=AUTH) as http:
            health = await (await http.get(f"{b.http}/api/health")).json()
        return good_result, flood, health

    good, flood, health = run_live(scenario)
    assert good["result"]["alerts"], "the well-formed call still raised its alert"
    assert flood["malformed_frames"] == 3000 and flood["result"]["duration_s"] == pytest.approx(0.04)
    assert health["status"] == "ok" and health["malformed_outside_calls"] >= 500


def test_client_disconnect_mid_call_finalises_the_call_with_everything_received():
    async def scenario(r):
        b = r.bound
        agent, caller = loud_call(4.0)
        async with aiohttp.ClientSession(headers=AUTH) as http:
            ws = await http.ws_connect(f"{b.ws}/tap/audio-fork?mix=stereo", protocols=(SUBPROTOCOL,))
            await ws.send_str(json.dumps({"callId": "cut", "agentId": "a9"}))
            frame = np.stack([caller, agent], axis=1).astype("<i2").tobytes()
            for i in range(0, len(frame), 640 * 2):
                await ws.send_bytes(frame[i:i + 640 * 2])
            await asyncio.sleep(0.2)
            # Drop the TCP connection without a WebSocket close handshake.
            ws._response.connection.transport.abort()
        return await wait_for_result(b.http, "cut", token=TOKEN, timeout_s=15)

    result = run_live(scenario)
    assert result["end_reason"].startswith(("disconnect", "websocket error")), result["end_reason"]
    assert result["result"]["duration_s"] == pytest.approx(4.0, abs=0.02)
    assert result["result"]["alerts"]


def test_a_second_live_call_with_the_same_id_is_refused_and_the_first_is_unharmed():
    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession(headers=AUTH) as http:
            first = await http.ws_connect(f"{b.ws}/tap/audio-fork", protocols=(SUBPROTOCOL,))
            await first.send_str('{"callId": "dup"}')
            await first.send_bytes(b"\0" * 320)
            second = await http.ws_connect(f"{b.ws}/tap/audio-fork", protocols=(SUBPROTOCOL,))
            await second.send_str('{"callId": "dup"}')
            reply = await asyncio.wait_for(second.receive(), 5)
            await first.send_bytes(b"\0" * 320)
            await first.close()
        result = await wait_for_result(b.http, "dup", token=TOKEN, timeout_s=10)
        return reply, result

    reply, result = run_live(scenario)
    assert "already live" in reply.data
    assert result["result"]["duration_s"] == pytest.approx(0.04)


def test_sip_and_audiosocket_taps_outside_the_allow_list_are_refused():
    from pipeline.errors import TapProtocolError
    from pipeline.live.ingest import allowed

    assert allowed("10.1.2.3", ("10.0.0.0/8",)) and allowed("::1", ("::1",))
    assert not allowed("127.0.0.1", ("10.0.0.0/8",)) and not allowed("not-an-ip", ("0.0.0.0/0",))

    async def scenario(r):
        b = r.bound
        with pytest.raises(TapProtocolError, match="403"):
            await replay(sample_call("nope", 1), fmt="sip", to=f"sip:analyze@{b.host}:{b.sip_port}", token=None,
                         speed=50.0)
        reader, writer = await asyncio.open_connection(b.host, b.audiosocket_port)
        writer.write(asock.encode_uuid(str(uuid.uuid4())) + asock.encode_audio(np.zeros(160, np.int16)))
        await writer.drain()
        try:
            closed = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            closed = b""  # closed with our bytes unread: the kernel answers with a reset
        return closed, dict(r.service.calls.live), [c.call_id for c in r.service.calls.recent]

    closed, live, recent = run_live(scenario, options=live_options(sip_allow=("10.0.0.0/8",),
                                                                   audiosocket_allow=("10.0.0.0/8",)))
    assert closed == b"" and live == {} and recent == []


def test_an_audio_fork_hears_its_own_alerts_as_json_text_frames():
    async def scenario(r):
        agent, caller = loud_call(5.0)
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.ws_connect(f"{r.bound.ws}/tap/audio-fork?mix=stereo", protocols=(SUBPROTOCOL,)) as ws:
                await ws.send_str(json.dumps({"callId": "talkback"}))
                frame = np.stack([caller, agent], axis=1).astype("<i2").tobytes()
                for i in range(0, len(frame), 1280):
                    await ws.send_bytes(frame[i:i + 1280])
                message = await asyncio.wait_for(ws.receive(), 10)
        return json.loads(message.data)

    message = run_live(scenario)
    assert message["type"] == "callpulse.alert" and message["data"]["call_id"] == "talkback"
    assert message["data"]["action"] == "supervisor_takeover"


def test_a_database_error_delays_recording_an_alert_but_the_feed_hears_it_at_once():
    import sqlite3

    async def scenario(r):
        real_record, failures = r.service.alerts.record, []

        def flaky(alert):
            if len(failures) < 2:
                failures.append(alert["id"])
                raise sqlite3.OperationalError("database is locked")
            return real_record(alert)

        r.service.alerts.record = flaky
        feed = asyncio.create_task(read_feed(f"{r.bound.http}/api/feed",
                                             until=lambda evs: sum(k == "alert" for k, _ in evs) >= 2))
        await asyncio.sleep(0.2)
        await replay(sample_call("dbfail", 5), fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=0)
        events = await feed
        async with aiohttp.ClientSession(headers=AUTH) as http:
            for _ in range(100):
                listed = await (await http.get(f"{r.bound.http}/api/alerts")).json()
                if listed:
                    break
                await asyncio.sleep(0.1)
        return failures, events, listed

    failures, events, listed = run_live(scenario)
    alerts = [e for k, e in events if k == "alert"]
    assert failures == ["dbfail-a1", "dbfail-a1"]
    assert alerts[0]["id"] == "dbfail-a1" and alerts[0]["seq"] is None, "heard before it was recorded"
    assert alerts[1]["seq"] == 1 and [a["id"] for a in listed] == ["dbfail-a1"]


def test_an_engine_that_raises_ends_the_call_with_its_result_so_far_and_other_calls_go_on():
    async def scenario(r):
        original = r.engine.open_call

        def open_call(info):
            session = original(info)
            if info.call_id == "boom":
                def feed(block, _feed=session.feed):
                    if session.samples >= 8000:
                        raise RuntimeError("kernel exploded")
                    return _feed(block)
                session.feed = feed
            return session

        r.engine.open_call = open_call
        await asyncio.gather(
            replay(sample_call("boom", 4), fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=4),
            replay(sample_call("fine", 4), fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=4))
        return (await wait_for_result(r.bound.http, "boom", token=TOKEN, timeout_s=10),
                await wait_for_result(r.bound.http, "fine", token=TOKEN, timeout_s=10))

    boom, fine = run_live(scenario)
    assert boom["errors"][0]["message"] == "kernel exploded" and boom["result"]["duration_s"] >= 1.0
    assert fine["errors"] == [] and fine["result"]["duration_s"] == pytest.approx(4.0)


def test_an_ended_call_is_saved_to_the_store_and_as_a_json_file(tmp_path):
    async def scenario(r):
        await replay(sample_call("saved-1", 3), fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN,
                     speed=0)
        await wait_for_result(r.bound.http, "saved-1", token=TOKEN, timeout_s=10)
        for _ in range(50):
            if (tmp_path / "saved-1.json").exists():
                break
            await asyncio.sleep(0.1)
        return r.store.calls.get("saved-1")

    stored = run_live(scenario, options=live_options(results_dir=str(tmp_path)))
    on_disk = json.loads((tmp_path / "saved-1.json").read_text())
    assert stored == on_disk and on_disk["duration_s"] == pytest.approx(3.0)
    assert not list(tmp_path.glob("*.tmp"))
