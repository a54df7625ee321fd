"""``callpulse replay``: stream a recorded stereo call into a tap, as a softphone or PBX would.

Formats: ``audio-fork`` (FreeSWITCH mod_audio_fork, stereo L16), ``twilio`` (Media Streams, two mu-law
tracks), ``audiosocket`` (two AudioSocket TCP connections with one UUID), ``sip`` (a plain SIP call whose
one RTP stream is the caller's channel) and ``siprec`` (a SIPREC recording session with both parties as
labelled streams). Packets are 20 ms; ``realtime`` paces them on an absolute schedule (no drift), else
they go as fast as the peer takes them (UDP formats are still paced at ``max_speed`` times real time,
because a UDP burst overflows socket buffers and would be measured as loss).

Layout: this module holds the WebSocket and TCP formats and :func:`replay`, which picks one; the call,
the pacing and the refusal error are in :mod:`.replay_call`, the SIP client in :mod:`.replay_sip`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from urllib.parse import urlencode, urlparse, urlunparse, parse_qsl

import aiohttp
import numpy as np

from ..errors import AudioFormatError, TapProtocolError
# Re-exported: the CLI, the scripts and the live tests import the call and its errors from here.
from .replay_call import PACKET_S, CallRefusedError, Pacer, ReplayCall, frames  # noqa: F401
from .replay_sip import SipDialogClient, replay_sip  # noqa: F401
from .taps import audiosocket as asock
from .taps import twilio
from .taps.audio_fork import SUBPROTOCOL, metadata_message

log = logging.getLogger("pipeline.live.replay")

FORMATS = ("audio-fork", "twilio", "audiosocket", "sip", "siprec", "audiohook")


class _ServerSide:
    """What the service sent back on a WebSocket tap: read in its own task (the only reader)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.errors: list[str] = []
        self.call_id: str | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type") == "error":
                self.errors.append(str(data.get("error", "refused")))
            elif isinstance(data, dict) and data.get("type") == "callpulse.call" and isinstance(data.get("call_id"), str):
                self.call_id = data["call_id"]  # the service gave the call another id (ours was taken)

    async def finish(self, what: str) -> None:
        """Close our side, wait for the reader, and raise if the service refused or cut the call."""
        if not self.ws.closed:
            # close() drops whatever is still unread: give frames already on the way (a refusal, the
            # id the service gave the call) a moment to arrive first
            await asyncio.sleep(0.2)
        await self.ws.close()
        try:
            await asyncio.wait_for(self.task, timeout=10.0)
        except (asyncio.TimeoutError, aiohttp.ClientError):
            pass
        code = self.ws.close_code
        if self.errors or code not in (None, 1000, 1001):
            reason = "; ".join(self.errors) or "no reason given"
            raise CallRefusedError(f"{what}: the service closed the call (WebSocket close {code}: {reason})")


def _with_token(url: str, token: str | None, **params: str) -> str:
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    if token:
        query["token"] = token
    return urlunparse(parts._replace(query=urlencode(query)))


async def replay_audio_fork(call: ReplayCall, url: str, *, token: str | None, speed: float) -> str:
    sr = call.sample_rate_hz
    if sr not in (8000, 16000):
        raise AudioFormatError(f"audio-fork carries 8 or 16 kHz, not {sr} Hz")
    step = int(sr * PACKET_S)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # The fork's arguments (mix, rate) travel in the URL, as the metadata does not hold them.
    target = _with_token(url, None, mix="stereo", rate=f"{sr // 1000}k")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(target, protocols=(SUBPROTOCOL,), headers=headers) as ws:
            server = _ServerSide(ws)
            await ws.send_str(metadata_message(call_id=call.call_id, agent_id=call.agent_id, mix="stereo",
                                               rate_hz=sr))
            pacer = Pacer(speed)
            # mod_audio_fork stereo: the leg's caller first, the callee (the agent) second.
            for i, a, b in frames(call.caller.size, step):
                await pacer.wait(i)
                if ws.closed:
                    break
                frame = np.stack([call.caller[a:b], call.agent[a:b]], axis=1).astype("<i2").tobytes()
                try:
                    await ws.send_bytes(frame)
                except (ConnectionResetError, aiohttp.ClientError):
                    break
            await server.finish(f"audio-fork call {call.call_id}")
            return server.call_id or call.call_id


async def replay_twilio(call: ReplayCall, url: str, *, token: str | None, speed: float) -> None:
    """Raises CallRefusedError when the service refuses or cuts the stream."""
    agent, caller = call.at_rate(twilio.SAMPLE_RATE_HZ)
    sid = "MZ" + secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"callId": call.call_id}
    if call.agent_id:
        params["agentId"] = call.agent_id
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=headers) as ws:
            server = _ServerSide(ws)
            await ws.send_str(twilio.connected_message())
            await ws.send_str(twilio.start_message(stream_sid=sid, call_sid=call.call_id,
                                                   tracks=["inbound", "outbound"], params=params))
            pacer = Pacer(speed)
            seq = 2
            try:
                for i, a, b in frames(caller.size, 160):
                    await pacer.wait(i)
                    if ws.closed:
                        break
                    for track, pcm in (("inbound", caller), ("outbound", agent)):
                        await ws.send_str(twilio.media_message(stream_sid=sid, seq=seq, track=track, chunk=i + 1,
                                                               timestamp_ms=i * 20, pcm=pcm[a:b]))
                        seq += 1
                if not ws.closed:
                    await ws.send_str(twilio.stop_message(stream_sid=sid, call_sid=call.call_id, seq=seq))
            except (ConnectionResetError, aiohttp.ClientError):
                pass
            await server.finish(f"Twilio call {call.call_id}")


def audiosocket_uuid(call_id: str) -> str:
    """AudioSocket carries only a UUID, which becomes the service's call id: derived from ours."""
    try:
        return str(uuid.UUID(call_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, call_id))


async def replay_audiosocket(call: ReplayCall, host: str, port: int, *, speed: float) -> None:
    sr = call.sample_rate_hz if call.sample_rate_hz in (8000, 16000) else 8000
    agent, caller = call.at_rate(sr)
    call_uuid = audiosocket_uuid(call.call_id)
    # One direction per connection; the service takes connections of one UUID in live.audiosocket_roles order.
    conns = []
    hung_up: list[str] = []
    ending = False  # our own hangup sent: the service closing after it is the normal end

    async def listen(reader: asyncio.StreamReader, k: int) -> None:
        # the service sends nothing on a call it takes; a hangup message or EOF means it refused or cut it
        parser = asock.AudioSocketParser(max_payload_bytes=65535)
        while True:
            data = await reader.read(4096)
            if not data:
                if not ending:
                    hung_up.append(f"connection {k + 1} closed by the service")
                return
            if any(m.kind == asock.KIND_HANGUP for m in parser.feed(data)):
                if not ending:
                    hung_up.append(f"connection {k + 1}: the service hung up")
                return

    listeners = []
    for k in range(2):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(asock.encode_uuid(call_uuid))
        conns.append(writer)
        listeners.append(asyncio.get_running_loop().create_task(listen(reader, k)))
    step = int(sr * PACKET_S)
    pacer = Pacer(speed)
    try:
        for i, a, b in frames(caller.size, step):
            await pacer.wait(i)
            if hung_up:
                break
            if any(w.is_closing() for w in conns):
                hung_up.append("connection lost")
                break
            conns[0].write(asock.encode_audio(caller[a:b], rate_hz=sr))
            conns[1].write(asock.encode_audio(agent[a:b], rate_hz=sr))
            if i % 25 == 0:
                await asyncio.gather(*(w.drain() for w in conns))
        await asyncio.sleep(0.2)  # a refusal already on the way is read before we end
        ending = True
        for writer in conns:
            if not hung_up:
                writer.write(asock.encode(asock.KIND_HANGUP))
                await writer.drain()
    except ConnectionError as exc:
        hung_up.append(f"connection lost ({exc})")
    finally:
        for writer in conns:
            writer.close()
        await asyncio.sleep(0)
        for task in listeners:
            task.cancel()
    if hung_up:
        raise CallRefusedError(f"AudioSocket call {call_uuid}: {hung_up[0]}")


async def replay(call: ReplayCall, *, fmt: str, to: str, token: str | None, speed: float) -> str:
    """Stream ``call`` to a tap; returns the call id the service knows the call by."""
    if fmt == "audio-fork":
        return await replay_audio_fork(call, to, token=token, speed=speed)
    elif fmt == "twilio":
        await replay_twilio(call, to, token=token, speed=speed)
    elif fmt == "audiosocket":
        parts = urlparse(to if "://" in to else f"tcp://{to}")
        await replay_audiosocket(call, parts.hostname or "127.0.0.1", parts.port or 9092, speed=speed)
        return audiosocket_uuid(call.call_id)
    elif fmt in ("sip", "siprec"):
        await replay_sip(call, to, recording=fmt == "siprec", speed=speed)
    elif fmt == "audiohook":
        return await replay_audiohook(call, to, token=token, speed=speed)
    else:
        raise AudioFormatError(f"unknown replay format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return call.call_id


async def wait_for_result(api: str, call_id: str, *, token: str | None, timeout_s: float) -> dict:
    """Poll ``GET /api/calls/<id>`` until the call has ended (bounded), and return its JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(headers=headers) as http:
        while time.monotonic() < deadline:
            async with http.get(f"{api.rstrip('/')}/api/calls/{call_id}") as resp:
                if resp.status == 200:
                    body = await resp.json()
                    if body.get("state") == "ended":
                        return body
            await asyncio.sleep(0.25)
    raise TapProtocolError(f"call {call_id} did not end within {timeout_s:.0f} s at {api}")


async def feed_events(url: str, *, token: str | None, timeout_s: float | None = None):
    """The supervisor feed (``GET /api/feed``, server-sent events) as ``(event, data)`` pairs as they come.

    Raises TapProtocolError when the server refuses the feed (wrong token, wrong URL).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise TapProtocolError(f"feed {url} answered HTTP {resp.status}: check the URL and the token")
            kind = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    yield kind, json.loads(line[6:])


__all__ = ["FORMATS", "CallRefusedError", "ReplayCall", "feed_events", "replay", "wait_for_result"]


# --- the client side (``callpulse replay --format audiohook``: what Genesys Cloud sends) -----------

async def replay_audiohook(call: "ReplayCall", url: str, *, token: str | None, speed: float,
                           media_format: str = "PCMU") -> str:
    """Stream a ``ReplayCall`` as an AudioHook session (open, audio as external/internal, close).
    Returns the call id the service opened. Raises TapProtocolError when the server does not open."""
    from ..audio import encode_mulaw
    from .taps.audiohook import RATES, VERSION, format_duration, new_session_id

    agent, caller = call.at_rate(RATES[0])
    headers = {"X-API-KEY": token} if token else {}
    session = new_session_id()
    seq = 0

    def message(kind: str, parameters: dict, position_s: float) -> str:
        nonlocal seq
        seq += 1
        return json.dumps({"version": VERSION, "id": session, "type": kind, "seq": seq, "serverseq": 0,
                           "position": format_duration(position_s), "parameters": parameters})

    custom = {"callId": call.call_id, **({"agentId": call.agent_id} if call.agent_id else {})}
    media = {"type": "audio", "format": media_format, "channels": ["external", "internal"], "rate": RATES[0]}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_str(message("open", {
                "organizationId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()),
                "participant": {"id": str(uuid.uuid4()), "ani": "", "aniName": "", "dnis": ""},
                "media": [media], "language": "en-US", "customConfig": custom}, 0.0))
            reply = await ws.receive(timeout=10.0)
            body = json.loads(reply.data) if reply.type == aiohttp.WSMsgType.TEXT else {}
            if body.get("type") != "opened":
                raise TapProtocolError(f"AudioHook server answered {str(body.get('type') or reply.type)!r}, not "
                                       f"'opened': {str(body.get('parameters'))[:200]}")
            pacer = Pacer(speed)
            step = RATES[0] // 50  # 20 ms
            for i, start in enumerate(range(0, caller.size, step)):
                await pacer.wait(i)
                if ws.closed:
                    break
                both = np.stack([caller[start:start + step], agent[start:start + step]], axis=1).reshape(-1)
                frame = encode_mulaw(both) if media_format == "PCMU" else both.astype("<i2").tobytes()
                await ws.send_bytes(frame)
            if not ws.closed:
                await ws.send_str(message("close", {"reason": "end"}, caller.size / RATES[0]))
                try:
                    await ws.receive(timeout=10.0)  # closed
                except asyncio.TimeoutError:
                    pass
            await ws.close()
    return call.call_id
