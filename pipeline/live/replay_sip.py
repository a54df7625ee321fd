"""``callpulse replay --format sip|siprec``: a SIP user agent client that places one call (plain, or a
SIPREC recording session with both parties as labelled streams) and sends its G.711 RTP.

:class:`SipDialogClient` does INVITE / 200 OK / ACK ... BYE over UDP with RFC 3261 retransmission and
says where each offered stream's RTP must go; :func:`replay_sip` sends the call's audio there, paced
(UDP bursts overflow socket buffers and would be measured as loss).
"""
from __future__ import annotations

import asyncio
import secrets
import socket
import time

from ..errors import AudioFormatError, TapProtocolError
from .replay_call import CallRefusedError, Pacer, ReplayCall, frames
from .taps import siprec
from .taps.rtp import ENCODERS, build_rtp
from .taps.sip import SipMessage, parse_sdp, parse_sip


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
        for i, a, b in frames(caller.size, 160):
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
