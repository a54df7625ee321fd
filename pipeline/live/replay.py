"""``callpulse replay``: stream a recorded stereo call into a tap, as a softphone or PBX would.

Formats: ``audio-fork`` (FreeSWITCH mod_audio_fork, stereo L16), ``twilio`` (Media Streams, two mu-law
tracks), ``audiosocket`` (two AudioSocket TCP connections with one UUID), ``sip`` (a plain SIP call whose
one RTP stream is the caller's channel) and ``siprec`` (a SIPREC recording session with both parties as
labelled streams). Packets are 20 ms; ``realtime`` paces them on an absolute schedule (no drift), else
they go as fast as the peer takes them (UDP formats are still paced at ``max_speed`` times real time,
because a UDP burst overflows socket buffers and would be measured as loss).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse, urlunparse, parse_qsl

import aiohttp
import numpy as np

from ..audio import float_to_int16, load_audio, resample
from ..errors import AudioFormatError, TapProtocolError
from .taps import audiosocket as asock
from .taps import siprec, twilio
from .taps.audio_fork import SUBPROTOCOL, metadata_message
from .taps.rtp import ENCODERS, build_rtp
from .taps.sip import SipMessage, parse_sdp, parse_sip

log = logging.getLogger("pipeline.live.replay")

FORMATS = ("audio-fork", "twilio", "audiosocket", "sip", "siprec", "audiohook")
PACKET_S = 0.02


class CallRefusedError(TapProtocolError):
    """The service refused or cut the call (WebSocket close 1013/1008, an error frame, an AudioSocket
    hangup, a SIP 4xx/5xx): ``callpulse replay`` exits non-zero so a script can tell."""


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


@dataclass(frozen=True)
class ReplayCall:
    """A call to replay: int16 [agent, caller] at ``sample_rate_hz``."""

    call_id: str
    agent_id: str | None
    agent: np.ndarray
    caller: np.ndarray
    sample_rate_hz: int

    @classmethod
    def from_file(cls, path: str, *, agent_channel: int, call_id: str | None, agent_id: str | None) -> "ReplayCall":
        audio = load_audio(path)
        if audio.n_channels != 2:
            raise AudioFormatError(f"{path} has {audio.n_channels} channel(s); replay needs a stereo call "
                                   "(agent and caller on separate channels)")
        samples = float_to_int16(audio.samples)
        return cls(call_id or f"replay-{uuid.uuid4().hex[:10]}", agent_id, samples[agent_channel],
                   samples[1 - agent_channel], audio.sample_rate_hz)

    def at_rate(self, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Both parties at ``rate`` (explicit resampling: taps like Twilio are 8 kHz only)."""
        if rate == self.sample_rate_hz:
            return self.agent, self.caller
        both = resample(np.stack([self.agent, self.caller]).astype(np.float32) / 32768.0,
                        orig_sr=self.sample_rate_hz, target_sr=rate)
        return float_to_int16(both[0]), float_to_int16(both[1])


class Pacer:
    """Absolute-schedule pacing: packet i leaves at start + i * 20 ms / speed (speed 0 = no pacing)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0 = time.monotonic()

    async def wait(self, i: int) -> None:
        if self.speed <= 0:
            if i % 50 == 0:
                await asyncio.sleep(0)
            return
        delay = self.t0 + i * PACKET_S / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _with_token(url: str, token: str | None, **params: str) -> str:
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    if token:
        query["token"] = token
    return urlunparse(parts._replace(query=urlencode(query)))


def _frames(n: int, step: int):
    for i, start in enumerate(range(0, n, step)):
        yield i, start, min(start + step, n)


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
            for i, a, b in _frames(call.caller.size, step):
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
                for i, a, b in _frames(caller.size, 160):
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
        for i, a, b in _frames(caller.size, step):
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


class _SipClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            msg = parse_sip(data)
        except TapProtocolError:
            return
        if msg.status is not None:
            self.responses.put_nowait(msg)


def _parse_sip_uri(uri: str) -> tuple[str, str, int]:
    if not uri.startswith("sip:"):
        raise AudioFormatError(f"SIP target {uri!r} must look like sip:analyze@127.0.0.1:5070")
    user_host = uri[4:]
    user, _, hostport = user_host.rpartition("@")
    host, _, port = hostport.partition(":")
    return user or "analyze", host, int(port or 5060)


class SipDialogClient:
    """One outgoing SIP call (plain, or SIPREC with ``recording``) offering ``sendonly`` G.711 streams.

    ``open()`` does INVITE / 200 OK / ACK and returns where each offered stream's RTP must go
    (``(address, port, payload type)``, None for a refused stream); whoever holds the dialog sends the
    audio (``replay_sip`` does, a test can hand the target to ffmpeg); ``close()`` sends BYE.
    """

    def __init__(self, uri: str, *, call_id: str, agent_id: str | None, recording: bool,
                 timeout_s: float = 10.0) -> None:
        self.user, self.host, self.port = _parse_sip_uri(uri)
        self.call_id, self.agent_id, self.recording, self.timeout_s = call_id, agent_id, recording, timeout_s
        self.family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.rtp_sockets = [socket.socket(self.family, socket.SOCK_DGRAM) for _ in range(2 if recording else 1)]
        for sock in self.rtp_sockets:
            sock.bind((self.host, 0))
        self.tag = secrets.token_hex(4)
        self.transport = None
        self.proto: _SipClient | None = None
        self.to_header = ""

    def _branch(self) -> str:
        return "z9hG4bK" + secrets.token_hex(8)

    def _headers(self, cseq: str, to: str) -> list[tuple[str, str]]:
        local_port = self.transport.get_extra_info("sockname")[1]
        return [("via", f"SIP/2.0/UDP {self.host}:{local_port};branch={self._branch()};rport"),
                ("max-forwards", "70"), ("from", f"<sip:replay@{self.host}>;tag={self.tag}"), ("to", to),
                ("call-id", self.call_id), ("cseq", cseq)]

    def _offer(self) -> tuple[bytes, list[tuple[str, str]]]:
        host = self.host
        sdp_lines = ["v=0", f"o=replay 1 1 IN IP4 {host}", "s=callpulse replay", f"c=IN IP4 {host}", "t=0 0"]
        for i, sock in enumerate(self.rtp_sockets):
            sdp_lines += [f"m=audio {sock.getsockname()[1]} RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000",
                          "a=rtpmap:8 PCMA/8000", "a=ptime:20", "a=sendonly"]
            if self.recording:
                sdp_lines.append(f"a=label:{i + 1}")
        sdp = ("\r\n".join(sdp_lines) + "\r\n").encode()
        if not self.recording:
            return sdp, [("content-type", "application/sdp")]
        boundary = "callpulse-" + secrets.token_hex(6)
        meta = siprec.build_metadata(session_id=secrets.token_hex(8), caller_aor=f"sip:caller@{host}",
                                     agent_aor=f"sip:agent-{self.agent_id or 'unknown'}@{host}",
                                     caller_label="1", agent_label="2")
        body = (f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode() + sdp +
                f"\r\n--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n"
                f"Content-Disposition: recording-session\r\n\r\n".encode() + meta + f"\r\n--{boundary}--\r\n".encode())
        return body, [("require", "siprec"), ("content-type", f"multipart/mixed;boundary={boundary}")]

    async def open(self) -> list[tuple[str, int, int] | None]:
        loop = asyncio.get_running_loop()
        self.transport, self.proto = await loop.create_datagram_endpoint(
            _SipClient, local_addr=(self.host, 0), family=self.family)
        local_port = self.transport.get_extra_info("sockname")[1]
        body, extra = self._offer()
        headers = self._headers("1 INVITE", f"<sip:{self.user}@{self.host}>")
        headers.append(("contact", f"<sip:replay@{self.host}:{local_port}>"))
        if self.agent_id:
            headers.append(("x-agent-id", self.agent_id))
        headers += extra
        target = f"sip:{self.user}@{self.host}:{self.port}"
        answer = await _transact(self.transport, self.proto, SipMessage("INVITE", target, None, None, headers, body),
                                 (self.host, self.port), timeout_s=self.timeout_s)
        if answer.status != 200:
            raise CallRefusedError(f"the SIP peer answered {answer.status} {answer.reason}: "
                                   f"{answer.get('warning') or ''}")
        self.to_header = answer.get("to") or ""
        self.transport.sendto(SipMessage("ACK", target, None, None, self._headers("1 ACK", self.to_header)).to_bytes(),
                              (self.host, self.port))
        media = parse_sdp(answer.body).media[:len(self.rtp_sockets)]
        return [None if m.port == 0 or not m.payload_types else (m.address or self.host, m.port, m.payload_types[0])
                for m in media]

    async def close(self) -> None:
        try:
            if self.transport is not None and self.to_header:
                target = f"sip:{self.user}@{self.host}:{self.port}"
                await _transact(self.transport, self.proto,
                                SipMessage("BYE", target, None, None, self._headers("2 BYE", self.to_header)),
                                (self.host, self.port), timeout_s=self.timeout_s)
        finally:
            if self.transport is not None:
                self.transport.close()
            for sock in self.rtp_sockets:
                sock.close()


async def replay_sip(call: ReplayCall, uri: str, *, recording: bool, speed: float, timeout_s: float = 10.0) -> None:
    agent, caller = call.at_rate(8000)
    # The service takes the Call-ID as the call id. A plain call carries the caller; SIPREC both parties.
    dialog = SipDialogClient(uri, call_id=call.call_id, agent_id=call.agent_id, recording=recording,
                             timeout_s=timeout_s)
    try:
        targets = await dialog.open()
        streams = [caller, agent][:len(targets)]
        ssrcs = [secrets.randbits(32) for _ in targets]
        seq0 = [secrets.randbits(16) for _ in targets]
        ts0 = [secrets.randbits(32) for _ in targets]
        pacer = Pacer(speed if speed > 0 else 20.0)
        for i, a, b in _frames(caller.size, 160):
            await pacer.wait(i)
            for k, target in enumerate(targets):
                if target is None:
                    continue
                addr, rport, pt = target
                packet = build_rtp(payload_type=pt, sequence=seq0[k] + i, timestamp=ts0[k] + 160 * i,
                                   ssrc=ssrcs[k], payload=ENCODERS[pt](streams[k][a:b]), marker=i == 0)
                dialog.rtp_sockets[k].sendto(packet, (addr, rport))
    finally:
        await dialog.close()


async def _transact(transport, proto: _SipClient, request: SipMessage, addr, *, timeout_s: float) -> SipMessage:
    """Send a request, retransmitting on UDP (RFC 3261 timer A), until a final response."""
    data = request.to_bytes()
    deadline = time.monotonic() + timeout_s
    interval = 0.5
    transport.sendto(data, addr)
    next_send = time.monotonic() + interval
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise TapProtocolError(f"no final answer to SIP {request.method} from {addr[0]}:{addr[1]} "
                                   f"within {timeout_s:.0f} s (is callpulse serve running with SIP on that port?)")
        try:
            msg = await asyncio.wait_for(proto.responses.get(), timeout=min(next_send, deadline) - now)
        except asyncio.TimeoutError:
            transport.sendto(data, addr)
            interval = min(interval * 2, 4.0)
            next_send = time.monotonic() + interval
            continue
        if msg.status >= 200 and msg.cseq[1] == request.method:
            return msg


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
