"""Hostile and faulty input on the live service (issue 13), with the scripted fake engine: call slots
cannot be held without audio, a nested JSON message is one dropped frame, bad requests are 4xx, a page
in the supervisor's browser cannot reach the API, a crash leaves every call recorded, webhooks are
signed, and the replay client says when its call was refused."""
from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from pipeline.live.outbox import AlertLog
from pipeline.live.replay import CallRefusedError, ReplayCall, SipDialogClient, replay, wait_for_result
from pipeline.live.security import (
    BoundedJsonError,
    parse_json,
    sign_webhook,
    verify_webhook,
)
from pipeline.live.taps import audiosocket as asock
from pipeline.live.taps import twilio
from pipeline.outputs.store import Store

from live_fakes import TOKEN, FakeEngine, live_options, loud_call, run_live
from live_harness import WebhookReceiver, free_port, until
from live_support import REPO

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample_call(call_id: str, seconds: float = 4.0) -> ReplayCall:
    agent, caller = loud_call(seconds)
    return ReplayCall(call_id, "a17", agent, caller, 8000)


async def audiosocket_conn(host: str, port: int, call_uuid: str, *, frames: int = 1):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(asock.encode_uuid(call_uuid))
    for _ in range(frames):
        writer.write(asock.encode_audio(np.zeros(160, np.int16)))
    await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True when the service hangs up (AudioSocket hangup message or EOF) within ``timeout_s``."""
    parser = asock.AudioSocketParser(max_payload_bytes=65535)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                data = await reader.read(4096)
                if not data or any(m.kind == asock.KIND_HANGUP for m in parser.feed(data)):
                    return True
    except TimeoutError:
        return False


# --- 2. call slots: quotas and idle timeouts -----------------------------------------------------------


def test_audiosocket_connections_that_send_no_audio_are_closed_and_free_their_slots():
    async def scenario(r):
        b = r.bound
        held = [await audiosocket_conn(b.host, b.audiosocket_port, str(uuid.uuid4())) for _ in range(3)]
        await until(lambda: len(r.service.calls.live) == 3, timeout_s=5, what="three idle calls open")
        t0 = time.monotonic()
        closed = await asyncio.gather(*(closed_by_server(rd, 5.0) for rd, _ in held))
        took = time.monotonic() - t0
        await until(lambda: not r.service.calls.live, timeout_s=5, what="idle calls ended")
        # a real call gets a slot afterwards
        await replay(sample_call("after-idle"), fmt="twilio", to=f"{b.ws}/tap/twilio", token=TOKEN, speed=0)
        result = await wait_for_result(b.http, "after-idle", token=TOKEN, timeout_s=10)
        for _, w in held:
            w.close()
        return closed, took, result, [c.end_reason for c in r.service.calls.recent], r.service.idle_timeouts

    closed, took, result, reasons, idle = run_live(scenario, options=live_options(idle_timeout_s=0.6, max_calls=3))
    assert all(closed) and took < 4.0
    assert reasons.count("idle timeout") == 3 and idle == 3
    assert result["state"] == "ended"


def test_one_tap_cannot_take_every_call_slot():
    async def scenario(r):
        b = r.bound
        held = [await audiosocket_conn(b.host, b.audiosocket_port, str(uuid.uuid4())) for _ in range(2)]
        await until(lambda: len(r.service.calls.live) == 2, timeout_s=5, what="two calls open")
        third_reader, third = await audiosocket_conn(b.host, b.audiosocket_port, str(uuid.uuid4()))
        refused = await closed_by_server(third_reader, 3.0)
        # another tap still has room: max_calls is 4, the AudioSocket quota 2
        await replay(sample_call("other-tap"), fmt="audio-fork", to=f"{b.ws}/tap/audio-fork", token=TOKEN, speed=0)
        result = await wait_for_result(b.http, "other-tap", token=TOKEN, timeout_s=10)
        for _, w in held + [(third_reader, third)]:
            w.close()
        return refused, result, dict(r.service.calls.refused)

    refused, result, counts = run_live(scenario, options=live_options(max_calls=4, max_calls_per_tap=2))
    assert refused and counts == {"max_calls_per_tap": 1}
    assert result["state"] == "ended"


def test_one_source_address_cannot_take_every_call_slot():
    async def scenario(r):
        b = r.bound
        held = [await audiosocket_conn(b.host, b.audiosocket_port, str(uuid.uuid4())) for _ in range(2)]
        await until(lambda: len(r.service.calls.live) == 2, timeout_s=5, what="two calls open")
        with pytest.raises(CallRefusedError, match="1013"):
            await replay(sample_call("third"), fmt="twilio", to=f"{b.ws}/tap/twilio", token=TOKEN, speed=0)
        for _, w in held:
            w.close()
        return dict(r.service.calls.refused)

    assert run_live(scenario, options=live_options(max_calls=8, max_calls_per_source=2)) == {"max_calls_per_source": 1}


def test_a_sip_invite_whose_rtp_never_starts_is_hung_up():
    async def scenario(r):
        b = r.bound
        dialog = SipDialogClient(f"sip:analyze@{b.host}:{b.sip_port}", call_id="silent-invite", agent_id="a1",
                                 recording=False)
        await dialog.open()
        await until(lambda: "silent-invite" in r.service.calls.live, timeout_s=5, what="call open")
        await until(lambda: "silent-invite" not in r.service.calls.live, timeout_s=6, what="call hung up")
        dialog.to_header = ""  # the service ended the dialog; no BYE to send
        await dialog.close()
        return next(c.end_reason for c in r.service.calls.recent if c.call_id == "silent-invite")

    assert run_live(scenario, options=live_options(idle_timeout_s=1.5)) == "no rtp"


# --- 3. bounded JSON ---------------------------------------------------------------------------------


def test_bounded_json_refuses_deep_nesting_before_parsing():
    deep = "[" * 1100 + "]" * 1100
    with pytest.raises(BoundedJsonError, match="deeper"):
        parse_json(deep, max_bytes=65536, max_depth=16)
    with pytest.raises(BoundedJsonError, match="exceeds"):
        parse_json("[" + "1," * 5000 + "1]", max_bytes=1000)
    assert parse_json('{"a": "[[[[[[[[[[[[[[[[[[[[[[[["}', max_bytes=1000, max_depth=2) == {"a": "[" * 24}


def test_a_nested_json_message_is_a_dropped_frame_and_the_twilio_call_goes_on():
    async def scenario(r):
        b = r.bound
        agent, caller = loud_call(3.0)
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.ws_connect(f"{b.ws}/tap/twilio") as ws:
                await ws.send_str(twilio.start_message(stream_sid="MZ1", call_sid="nested", tracks=["inbound", "outbound"],
                                                       params={"callId": "nested"}))
                await ws.send_str("[" * 1100 + "]" * 1100)
                await ws.send_str('{"event": ' + "{" * 1100 + "}" * 1100 + "}")
                for i in range(150):
                    for track, pcm in (("inbound", caller), ("outbound", agent)):
                        await ws.send_str(twilio.media_message(stream_sid="MZ1", seq=i, track=track, chunk=i,
                                                               timestamp_ms=i * 20, pcm=pcm[i * 160:(i + 1) * 160]))
                await ws.send_str(twilio.stop_message(stream_sid="MZ1", call_sid="nested", seq=999))
        result = await wait_for_result(b.http, "nested", token=TOKEN, timeout_s=10)
        return result

    result = run_live(scenario)
    assert result["malformed_frames"] == 2 and result["end_reason"] == "stop"
    assert result["result"]["duration_s"] == pytest.approx(3.0, abs=0.05)


# --- 4. strict request parsing: 4xx, never 500 ------------------------------------------------------------


def test_hostile_requests_are_answered_4xx_never_500():
    async def scenario(r):
        b = r.bound
        nested = "[" * 30000 + "]" * 30000
        async with aiohttp.ClientSession(headers=AUTH) as http:
            out = {}
            async with http.get(f"{b.http}/static/app.js%00.txt") as resp:
                out["nul"] = resp.status
            async with http.get(f"{b.http}/static/..%2Fserver.py") as resp:
                out["dots"] = resp.status
            async with http.post(f"{b.http}/api/agents/a1/break", data=nested,
                                 headers={"Content-Type": "application/json"}) as resp:
                out["nested body"] = resp.status
            async with http.post(f"{b.http}/api/agents/a1/break", data='{"action": ' + "[" * 100 + "]" * 100 + "}",
                                 headers={"Content-Type": "application/json"}) as resp:
                out["deep body"] = resp.status
            for q in ("since=99999999999999999999999", "since=-1", "limit=0", "since=1e3", "since=%00"):
                async with http.get(f"{b.http}/api/alerts?{q}") as resp:
                    out[q] = resp.status
            async with http.get(f"{b.http}/api/alerts?since=0&limit=5") as resp:
                out["good"] = resp.status
        return out

    out = run_live(scenario)
    assert out.pop("good") == 200
    assert out["nul"] == 404 and out["dots"] == 404
    assert out["nested body"] in (400, 413) and out["deep body"] == 400
    assert all(400 <= status < 500 for status in out.values()), out


# --- 5. Host and Origin, JSON-only mutations ------------------------------------------------------------


def test_insecure_loopback_refuses_foreign_hosts_origins_and_non_json_posts():
    async def scenario(r):
        b = r.bound
        url = f"{b.http}/api/agents/a1/break"
        body = json.dumps({"action": "start"})
        async with aiohttp.ClientSession() as http:
            async def status(method, path, **kw):
                async with http.request(method, path, **kw) as resp:
                    return resp.status
            return {
                "rebound host": await status("GET", f"{b.http}/api/calls", headers={"Host": "evil.example"}),
                "rebound host post": await status("POST", url, data=body, headers={
                    "Host": "evil.example:8080", "Content-Type": "application/json"}),
                "cross-site origin": await status("POST", url, data=body, headers={
                    "Origin": "http://evil.example", "Content-Type": "application/json"}),
                "null origin": await status("GET", f"{b.http}/api/calls", headers={"Origin": "null"}),
                "fetch metadata": await status("GET", f"{b.http}/api/calls", headers={"Sec-Fetch-Site": "cross-site"}),
                "text/plain post": await status("POST", url, data=body, headers={"Content-Type": "text/plain"}),
                "form post": await status("POST", url, data="action=start",
                                          headers={"Content-Type": "application/x-www-form-urlencoded"}),
                "preflight": await status("OPTIONS", url, headers={"Origin": f"http://{b.host}:{b.http_port}"}),
                "same origin json": await status("POST", url, data=body, headers={
                    "Origin": f"http://localhost:{b.http_port}", "Content-Type": "application/json"}),
                "plain get": await status("GET", f"{b.http}/api/calls"),
                "localhost": await status("GET", f"{b.http}/api/calls", headers={"Host": f"localhost:{b.http_port}"}),
            }, dict(r.service.http_refused), r.engine.shifts.get("a1").break_started

    out, refused, break_started = _run_insecure(scenario)
    assert out["rebound host"] == 421 and out["rebound host post"] == 421
    assert out["cross-site origin"] == 403 and out["null origin"] == 403 and out["fetch metadata"] == 403
    assert out["text/plain post"] == 415 and out["form post"] == 415
    assert out["preflight"] in (403, 405)
    assert out["same origin json"] == 200 and out["plain get"] == 200 and out["localhost"] == 200
    assert refused["host"] == 2 and refused["content type"] == 2
    assert break_started is not None, "the one legitimate POST took effect"


def _run_insecure(scenario):
    """run_live, but with no token at all (``--insecure`` on loopback)."""
    from pipeline.live.server import LiveService

    from live_fakes import FakeStore, Running, fake_call_info

    async def main():
        eng, st = FakeEngine(), FakeStore()
        service = LiveService(engine=eng, store=st, options=live_options(token=""), insecure=True,
                              call_info=fake_call_info)
        bound = await service.start()
        try:
            return await asyncio.wait_for(scenario(Running(service, bound, eng, st, "")), timeout=30)
        finally:
            await service.stop(drain_s=5.0)

    return asyncio.run(main())


# --- 6. crashes: checkpoints, interrupted calls and alerts, call-id reuse ------------------------------------


def test_a_live_call_is_checkpointed_while_it_runs_and_the_checkpoint_goes_when_it_ends(tmp_path):
    store = Store.open(tmp_path / "live.sqlite")

    async def scenario(r):
        b = r.bound
        streaming = asyncio.create_task(replay(sample_call("cp-1", 6.0), fmt="twilio", to=f"{b.ws}/tap/twilio",
                                               token=TOKEN, speed=2.0))
        await until(lambda: any(cp["result"].get("duration_s", 0) >= 2.0 for cp in store.list_checkpoints()),
                    timeout_s=10, what="a checkpoint with audio in it")
        during = store.list_checkpoints()
        await streaming
        await wait_for_result(b.http, "cp-1", token=TOKEN, timeout_s=10)
        return during, store.list_checkpoints(), store.get_call("cp-1")

    try:
        during, after, stored = run_live(scenario, store=store, options=live_options(checkpoint_interval_s=0.3))
    finally:
        store.close()
    assert [cp["call_id"] for cp in during] == ["cp-1"]
    assert after == [] and stored["duration_s"] == pytest.approx(6.0, abs=0.05)


def test_after_a_crash_open_calls_are_stored_as_interrupted_with_their_alerts_closed_and_strain_counted(tmp_path):
    path = tmp_path / "live.sqlite"
    # What a process killed mid-call leaves behind: a checkpoint and a raised alert, never cleared.
    with Store.open(path) as store:
        options = live_options()
        AlertLog(store.connection, options, lock=store.lock).record(
            {"id": "al-1", "state": "raised", "call_id": "crashed", "agent_id": "a9", "kind": "caller_agitation",
             "action": "supervisor_takeover", "level": 0.9, "reasons": ["loud voice"]})
        store.save_checkpoint("crashed", {"call_id": "crashed", "agent_id": "a9", "source": "tap:twilio",
                                          "duration_s": 42.0, "alerts": [{"id": "al-1", "kind": "caller_agitation"}]},
                              shift={"agent_id": "a9", "hostile_s": 30.0, "talk_s": 42.0, "calls": 1, "total_calls": 1})
    store = Store.open(path)

    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession(headers=AUTH) as http:
            alerts = await (await http.get(f"{b.http}/api/alerts")).json()
            health = await (await http.get(f"{b.http}/api/health")).json()
            call = await (await http.get(f"{b.http}/api/calls/crashed")).json()
        return alerts, health, call, r.engine.shifts.get("a9"), store.list_checkpoints()

    try:
        alerts, health, call, shift, left = run_live(scenario, store=store)
    finally:
        store.close()
    assert call["result"]["interrupted"] is True and call["result"]["duration_s"] == 42.0
    assert [(a["id"], a["state"]) for a in alerts] == [("al-1", "raised"), ("al-1", "interrupted")]
    assert health["interrupted_on_start"] == ["crashed"] and left == []
    assert shift.hostile_s == 30.0 and shift.calls == 1, "the interrupted call's strain counts"


def test_a_reused_call_id_never_overwrites_the_stored_call(tmp_path):
    store = Store.open(tmp_path / "live.sqlite")
    store.save_call({"call_id": "dup", "duration_s": 99.0, "alerts": []})

    async def scenario(r):
        b = r.bound
        await replay(sample_call("dup", 3.0), fmt="twilio", to=f"{b.ws}/tap/twilio", token=TOKEN, speed=0)
        await until(lambda: store.get_call("dup~2") is not None, timeout_s=10, what="second call stored")
        fork_id = await replay(sample_call("dup", 3.0), fmt="audio-fork", to=f"{b.ws}/tap/audio-fork", token=TOKEN,
                               speed=0)
        await wait_for_result(b.http, fork_id, token=TOKEN, timeout_s=10)
        return store.get_call("dup"), store.get_call("dup~2"), fork_id

    try:
        first, second, fork_id = run_live(scenario, store=store)
    finally:
        store.close()
    assert first["duration_s"] == 99.0, "the stored call is untouched"
    assert second["duration_s"] == pytest.approx(3.0, abs=0.05) and second["tap_call_id"] == "dup"
    assert fork_id == "dup~3", "the audio-fork tap is told the id its call got"


# --- 7. signed webhooks ---------------------------------------------------------------------------------


def test_signature_verification_refuses_tampering_wrong_secrets_and_old_timestamps():
    body = b'{"id": "a1"}'
    header = sign_webhook("s3cret", body, timestamp=1_700_000_000)
    assert verify_webhook("s3cret", header, body, now=1_700_000_010)
    assert not verify_webhook("s3cret", header, body + b" ", now=1_700_000_010)
    assert not verify_webhook("other", header, body, now=1_700_000_010)
    assert not verify_webhook("s3cret", header, body, now=1_700_000_000 + 301)
    assert not verify_webhook("s3cret", None, body) and not verify_webhook("s3cret", "t=x,v1=00", body)


def test_webhooks_carry_a_signature_the_receiver_can_verify(monkeypatch):
    secret = "hook-secret-0123456789"
    port = free_port()
    seen: list[tuple[str, bytes]] = []

    class SigningReceiver(WebhookReceiver):
        async def handle(self, request):
            seen.append((request.headers.get("X-Callpulse-Signature", ""), await request.read()))
            return await super().handle(request)

    receiver = SigningReceiver(port)
    monkeypatch.setenv("CALLPULSE_WEBHOOK_SECRET", secret)

    async def scenario(r):
        await receiver.start()
        try:
            await replay(sample_call("signed", 5.0), fmt="twilio", to=f"{r.bound.ws}/tap/twilio", token=TOKEN, speed=0)
            await until(lambda: receiver.accepted, timeout_s=10, what="webhook delivered")
        finally:
            await receiver.stop()

    run_live(scenario, options=live_options(webhook_urls=(receiver.url,), webhook_backoff_initial_s=0.2))
    header, body = seen[0]
    assert header.startswith("t=") and ",v1=" in header
    assert verify_webhook(secret, header, body)
    assert json.loads(body)["call_id"] == "signed"


# --- 8. replay's exit status --------------------------------------------------------------------------------


def test_replay_exits_non_zero_when_the_service_refuses_its_call(tmp_path):
    agent, caller = loud_call(2.0)
    wav = tmp_path / "call.wav"
    sf.write(wav, np.stack([agent, caller], axis=1), 8000, subtype="PCM_16")

    async def scenario(r):
        b = r.bound
        blocker = await audiosocket_conn(b.host, b.audiosocket_port, str(uuid.uuid4()))  # takes the only slot
        await until(lambda: len(r.service.calls.live) == 1, timeout_s=5, what="slot taken")
        codes = {}
        for fmt, to in (("audio-fork", f"{b.ws}/tap/audio-fork"), ("twilio", f"{b.ws}/tap/twilio"),
                        ("audiosocket", f"{b.host}:{b.audiosocket_port}"), ("sip", f"sip:analyze@{b.host}:{b.sip_port}")):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline.cli", "replay", str(wav), "--format", fmt, "--to", to,
                "--token", TOKEN, "--call-id", f"refused-{fmt}", cwd=REPO,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            codes[fmt] = (proc.returncode, err.decode())
        blocker[1].close()
        await until(lambda: not r.service.calls.live, timeout_s=5, what="slot free")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli", "replay", str(wav), "--format", "twilio", "--to",
            f"{b.ws}/tap/twilio", "--token", TOKEN, "--call-id", "taken", cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(proc.communicate(), timeout=60)
        codes["taken"] = (proc.returncode, "")
        return codes

    # the blocker sends one frame only: a long idle timeout keeps it holding the slot while four
    # replay processes start one after the other
    codes = run_live(scenario, options=live_options(max_calls=1, idle_timeout_s=300), timeout_s=240)
    assert codes.pop("taken")[0] == 0
    for fmt, (code, err) in codes.items():
        assert code == 3, (fmt, err)
        assert "call refused" in err, (fmt, err)
