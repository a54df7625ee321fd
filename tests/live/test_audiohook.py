"""The Genesys AudioHook tap speaks the published protocol (version 2) to a client written here from the
spec, independently of pipeline/live/taps/audiohook.py: open/opened, ping/pong, paused/resumed,
discarded, close/closed, PCMU and L16 audio with external = caller and internal = agent; and every kind
of malformed message is dropped and counted while the call goes on. The service runs on loopback with
the scripted fake engine (tests/live/live_fakes.py)."""
from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import numpy as np
import pytest

from pipeline.errors import TapProtocolError
from pipeline.live.replay import wait_for_result
from pipeline.live.taps.audiohook import parse_duration_s

from live_fakes import TOKEN, loud_call, run_live

RATE = 8000
FRAME = 160  # 20 ms, what Genesys sends


# --- G.711 mu-law, from ITU-T G.711 (not the project's codec) -------------------------------------

def ulaw_encode(pcm: np.ndarray) -> bytes:
    out = bytearray()
    for x in pcm.astype(np.int32):
        sign = 0x80 if x < 0 else 0
        mag = min(abs(int(x)), 32635) + 0x84
        exp = max(0, min(7, mag.bit_length() - 8))
        mant = (mag >> (exp + 3)) & 0x0F
        out.append(~(sign | (exp << 4) | mant) & 0xFF)
    return bytes(out)


def ulaw_decode(data: bytes) -> np.ndarray:
    out = []
    for b in data:
        b = ~b & 0xFF
        sign, exp, mant = b & 0x80, (b >> 4) & 0x07, b & 0x0F
        mag = ((mant << 3) + 0x84) << exp
        out.append(-(mag - 0x84) if sign else mag - 0x84)
    return np.array(out, dtype=np.int16)


class AudioHookClient:
    """What Genesys Cloud does on an AudioHook Monitor session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str | None = None) -> None:
        self.ws = ws
        self.id = session_id or str(uuid.uuid4())
        self.seq = 0
        self.position_s = 0.0
        self.last_server_seq = 0

    def message(self, kind: str, params: dict | None = None, *, seq: int | None = None, **over) -> str:
        if seq is None:
            self.seq += 1
            seq = self.seq
        body = {"version": "2", "id": self.id, "type": kind, "seq": seq, "serverseq": self.last_server_seq,
                "position": f"PT{self.position_s:.2f}S", "parameters": params or {}}
        body.update(over)
        return json.dumps(body)

    async def send(self, kind: str, params: dict | None = None, **over) -> None:
        await self.ws.send_str(self.message(kind, params, **over))

    async def receive(self, timeout_s: float = 5.0) -> dict:
        msg = await self.ws.receive(timeout=timeout_s)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        body = json.loads(msg.data)
        assert body["seq"] == self.last_server_seq + 1, "server messages count from 1 without gaps"
        self.last_server_seq = body["seq"]
        return body

    async def open(self, *, media: list[dict], conversation_id: str | None = None, custom: dict | None = None) -> dict:
        await self.send("open", {
            "organizationId": str(uuid.uuid4()), "conversationId": conversation_id or str(uuid.uuid4()),
            "participant": {"id": str(uuid.uuid4()), "ani": "+15551234567", "aniName": "Caller", "dnis": "+15557654321"},
            "media": media, "language": "en-US", "customConfig": custom or {},
        })
        return await self.receive()

    async def audio(self, payload: bytes, seconds: float) -> None:
        await self.ws.send_bytes(payload)
        self.position_s += seconds


def interleave(*channels: np.ndarray) -> np.ndarray:
    return np.stack(channels, axis=1).reshape(-1)


async def connect(http: aiohttp.ClientSession, base_ws: str, **headers) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(f"{base_ws}/tap/audiohook", headers=headers or {"X-API-KEY": TOKEN})


PCMU_STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": RATE}


def test_a_whole_session_with_every_message_type_and_malformed_ones():
    agent, caller = loud_call(6.0)  # caller loud from 2 s: the fake engine raises a takeover
    first, second = slice(0, 3 * RATE), slice(3 * RATE, 6 * RATE)

    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession() as http:
            ws = await connect(http, b.ws)
            hook = AudioHookClient(ws)
            opened = await hook.open(media=[{"type": "audio", "format": "opus", "channels": ["external"], "rate": 48000},
                                            PCMU_STEREO],
                                     custom={"agentId": "a17", "callId": "hook-1"})
            await hook.send("ping", {"rtt": "PT0.05S"})
            pong = await hook.receive()

            async def send_audio(part: slice) -> None:
                for i in range(part.start, part.stop, FRAME):
                    await hook.audio(ulaw_encode(interleave(caller[i:i + FRAME], agent[i:i + FRAME])), FRAME / RATE)

            await send_audio(first)
            # malformed, each dropped and counted: the session goes on
            nxt = hook.seq + 1  # what a valid next message would carry; none of these uses it up
            await ws.send_str("{ this is not json")
            await ws.send_str(hook.message("ping", seq=nxt, version="1"))           # wrong version
            await ws.send_str(hook.message("ping", seq=hook.seq))                   # repeated seq
            await ws.send_str(hook.message("dance", seq=nxt))                       # unknown type
            await ws.send_str(hook.message("ping", seq=nxt, id=str(uuid.uuid4())))  # another session
            await ws.send_str(hook.message("ping", seq=nxt, parameters=["x"]))      # parameters not an object
            await ws.send_bytes(b"\x7f" * 3)                                        # not whole stereo samples
            await hook.send("ping")
            pong2 = await hook.receive()
            await hook.send("paused", {"reason": "Hold"})
            await ws.send_bytes(ulaw_encode(interleave(caller[:FRAME], agent[:FRAME])))  # audio while paused
            await hook.send("resumed")
            await hook.send("discarded", {"start": f"PT{hook.position_s:.2f}S", "discarded": "PT0.5S"})
            await send_audio(second)
            await hook.send("close", {"reason": "end"})
            closed = await hook.receive()
            end = await ws.receive(timeout=5)
            result = await wait_for_result(b.http, "hook-1", token=TOKEN, timeout_s=20)
        return opened, pong, pong2, closed, end, result, r.engine.sessions["hook-1"], hook

    opened, pong, pong2, closed, end, result, session, hook = run_live(scenario)
    assert opened["type"] == "opened" and opened["id"] == hook.id and opened["clientseq"] == 1
    assert opened["parameters"]["media"] == [PCMU_STEREO], "the first supported offer is chosen"
    assert pong["type"] == "pong" and pong["clientseq"] == 2
    assert pong2["type"] == "pong" and pong2["clientseq"] == 3
    assert closed["type"] == "closed" and closed["clientseq"] == hook.seq
    assert end.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert result["state"] == "ended" and result["end_reason"].startswith("close")
    assert result["agent_id"] == "a17" and result["source"] == "tap:audiohook"
    assert result["malformed_frames"] == 8, "7 malformed messages/frames + audio while paused"
    assert result["result"]["duration_s"] == pytest.approx(6.5, abs=0.05), "6 s of audio + a 0.5 s discarded gap"
    assert result["result"]["alerts"] and result["result"]["alerts"][0]["action"] == "supervisor_takeover"
    # external went to the caller channel, in place: the first 3 s, 0.5 s of silence, the next 3 s
    heard = np.concatenate(session.caller)
    sent = ulaw_decode(ulaw_encode(caller)).astype(np.float32) / 32768
    np.testing.assert_allclose(heard[:3 * RATE], sent[first], atol=1e-4)
    assert np.abs(heard[3 * RATE:int(3.5 * RATE)]).max() == 0
    np.testing.assert_allclose(heard[int(3.5 * RATE):int(6.5 * RATE)], sent[second], atol=1e-4)


def test_l16_with_only_the_external_channel_is_the_caller():
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(2 * RATE) / RATE) * 32767).astype("<i2")

    async def scenario(r):
        async with aiohttp.ClientSession() as http:
            ws = await connect(http, r.bound.ws, Authorization=f"Bearer {TOKEN}")
            hook = AudioHookClient(ws)
            opened = await hook.open(media=[{"type": "audio", "format": "L16", "channels": ["external"], "rate": RATE}],
                                     custom={"callId": "hook-l16"})
            for i in range(0, tone.size, FRAME):
                await hook.audio(tone[i:i + FRAME].tobytes(), FRAME / RATE)
            await hook.send("close", {"reason": "end"})
            await hook.receive()
            result = await wait_for_result(r.bound.http, "hook-l16", token=TOKEN, timeout_s=20)
        return opened, result, r.engine.sessions["hook-l16"]

    opened, result, session = run_live(scenario)
    assert opened["parameters"]["media"][0]["format"] == "L16"
    assert result["result"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    heard = np.concatenate(session.caller)
    np.testing.assert_allclose(heard[:tone.size], tone.astype(np.float32) / 32768, atol=1e-4)


def test_the_connection_probe_is_answered_without_opening_a_call():
    async def scenario(r):
        async with aiohttp.ClientSession() as http:
            ws = await connect(http, r.bound.ws)
            hook = AudioHookClient(ws)
            opened = await hook.open(media=[], conversation_id="00000000-0000-0000-0000-000000000000")
            await hook.send("close", {"reason": "end"})
            closed = await hook.receive()
        return opened, closed, dict(r.engine.sessions)

    opened, closed, sessions = run_live(scenario)
    assert opened["type"] == "opened" and opened["parameters"]["media"] == []
    assert closed["type"] == "closed" and sessions == {}


def test_unsupported_media_is_answered_with_disconnect():
    async def scenario(r):
        async with aiohttp.ClientSession() as http:
            ws = await connect(http, r.bound.ws)
            reply = await AudioHookClient(ws).open(media=[{"type": "audio", "format": "opus", "channels": ["external"],
                                                           "rate": 48000}])
        return reply, dict(r.engine.sessions)

    reply, sessions = run_live(scenario)
    assert reply["type"] == "disconnect" and reply["parameters"]["reason"] == "error"
    assert "PCMU" in reply["parameters"]["info"] and sessions == {}


def test_anything_before_open_is_dropped_and_counted_then_open_works():
    async def scenario(r):
        async with aiohttp.ClientSession() as http:
            ws = await connect(http, r.bound.ws)
            hook = AudioHookClient(ws)
            await ws.send_bytes(b"\xff" * 320)                   # audio before open
            await ws.send_str(hook.message("ping", seq=1))      # ping before open
            await asyncio.sleep(0.2)
            outside = r.service.malformed_outside_calls
            opened = await hook.open(media=[PCMU_STEREO], custom={"callId": "late-open"})
            await hook.send("close")
            await hook.receive()
        return outside, opened

    outside, opened = run_live(scenario)
    assert outside == 2
    assert opened["type"] == "opened" and opened["clientseq"] == 1


def test_a_wrong_or_missing_key_is_refused():
    async def scenario(r):
        statuses = []
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"X-API-KEY": "wrong-key-0123456789"}):
                try:
                    await http.ws_connect(f"{r.bound.ws}/tap/audiohook", headers=headers)
                    statuses.append(101)
                except aiohttp.WSServerHandshakeError as exc:
                    statuses.append(exc.status)
        return statuses

    assert run_live(scenario) == [401, 401]


@pytest.mark.parametrize("text,seconds", [("PT0S", 0.0), ("PT1.5S", 1.5), ("PT2M3.25S", 123.25), ("PT1H", 3600.0)])
def test_durations_are_read_as_iso_8601(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["1.5", "PT", "P1D", "PTxS", None, 3])
def test_bad_durations_are_malformed(bad):
    with pytest.raises(TapProtocolError):
        parse_duration_s(bad)


def test_the_replay_client_streams_a_call_that_the_tap_takes():
    from pipeline.live.replay import ReplayCall, replay

    agent, caller = loud_call(4.0)

    async def scenario(r):
        call_id = await replay(ReplayCall("replayed", "a9", agent, caller, RATE), fmt="audiohook",
                               to=f"{r.bound.ws}/tap/audiohook", token=TOKEN, speed=0)
        return await wait_for_result(r.bound.http, call_id, token=TOKEN, timeout_s=20)

    result = run_live(scenario)
    assert result["source"] == "tap:audiohook" and result["agent_id"] == "a9"
    assert result["result"]["duration_s"] == pytest.approx(4.0, abs=0.05)
    assert result["malformed_frames"] == 0
