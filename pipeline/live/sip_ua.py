"""A small receive-only SIP user agent over UDP: answers plain calls and SIPREC recording sessions.

INVITE -> 100 Trying, 200 OK with an SDP answer (``recvonly``, PCMU or PCMA, one RTP port per offered
``m=audio``); ACK; BYE or CANCEL -> 200 OK and the call is finalised. Retransmitted INVITEs get the same
answer; a re-INVITE inside the dialog keeps the same ports. RTP from each stream goes through its own
jitter buffer and onto the call clock at the offset where that stream's first packet arrived. Taps are
authorised by source address (``live.sip_allow``); everyone else gets 403. A call whose RTP stops for
``live.rtp_idle_timeout_s`` without a BYE is finalised as "rtp timeout"; one whose RTP never starts is
hung up ``live.idle_timeout_s`` after the answer (an INVITE alone must not hold a call slot).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from ..errors import TapProtocolError
from .calls import CallRejected, LiveCall
from .ports import TapHost
from .ingest import allowed
from .taps import CallMeta, RoleAudio, safe_id
from .taps import siprec
from .taps.rtp import CLOCK_RATE_HZ, JitterBuffer, parse_rtp
from .taps.sip import SipMessage, build_sdp, choose_codec, parse_sdp, parse_sip, response_to, uri_user


log = logging.getLogger("pipeline.live.sip_ua")

BYE_GRACE_S = 0.3


@dataclass
class RtpStream:
    role: str
    payload_type: int
    label: str | None
    jitter: JitterBuffer
    transport: asyncio.DatagramTransport | None = None
    port: int = 0
    base: int | None = None  # call-clock sample of this stream's first packet
    malformed: int = 0


@dataclass
class Dialog:
    call_id: str
    to_tag: str
    invite_cseq: int
    answer: bytes
    streams: list[RtpStream]
    call: LiveCall | None = None
    first_rtp: float | None = None
    last_rtp: float = field(default_factory=time.monotonic)
    ended: bool = False


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, ua: "SipUserAgent", dialog: Dialog, stream: RtpStream) -> None:
        self.ua, self.dialog, self.stream = ua, dialog, stream

    def datagram_received(self, data: bytes, addr) -> None:
        self.ua.on_rtp(self.dialog, self.stream, data, addr)


class SipUserAgent(asyncio.DatagramProtocol):
    def __init__(self, service: TapHost) -> None:
        self.service = service
        self.options = service.options
        self.transport: asyncio.DatagramTransport | None = None
        self.dialogs: dict[str, Dialog] = {}
        self.malformed = 0
        self._reaper: asyncio.Task | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._reaper = loop.create_task(self._reap_idle())
        return self.transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for dialog in list(self.dialogs.values()):
            self._hangup(dialog, "service stopping")
        if self.transport:
            self.transport.close()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for dialog in list(self.dialogs.values()):
                if (not dialog.ended and dialog.answer and dialog.first_rtp is None
                        and now - dialog.last_rtp > self.options.idle_timeout_s):
                    self.service.idle_timeouts += 1
                    log.warning("SIP call %s: no RTP %.0f s after the answer (live.idle_timeout_s); hanging up",
                                dialog.call_id, now - dialog.last_rtp, extra={"call_id": dialog.call_id})
                    self._hangup(dialog, "no rtp")
                elif not dialog.ended and now - dialog.last_rtp > self.options.rtp_idle_timeout_s:
                    log.warning("SIP call %s: no RTP for %.0f s and no BYE; finalising it", dialog.call_id,
                                now - dialog.last_rtp, extra={"call_id": dialog.call_id})
                    self._hangup(dialog, "rtp timeout")

    # --- SIP -----------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr) -> None:
        if data.strip() == b"":
            return  # CRLF keep-alive
        try:
            msg = parse_sip(data)
        except TapProtocolError as exc:
            self.malformed += 1
            if self.malformed <= 3 or self.malformed % 1000 == 0:
                log.warning("dropped a malformed SIP datagram from %s (%d so far): %s", addr, self.malformed, exc)
            return
        if msg.method is None:
            return  # responses: we never send requests that need them
        if not allowed(addr[0], self.options.sip_allow):
            log.warning("SIP %s from %s refused: not in live.sip_allow", msg.method, addr)
            self._send(response_to(msg, 403), addr)
            return
        try:
            if msg.method == "INVITE":
                self._on_invite(msg, addr)
            elif msg.method == "ACK":
                pass
            elif msg.method in ("BYE", "CANCEL"):
                dialog = self.dialogs.get(msg.get("call-id") or "")
                self._send(response_to(msg, 200 if dialog else 481), addr)
                if dialog and not dialog.ended:
                    # RTP sent just before the BYE may still sit in our sockets (another path, another
                    # queue): read it for a moment before the streams close.
                    asyncio.get_running_loop().call_later(BYE_GRACE_S, self._hangup, dialog, msg.method.lower())
            elif msg.method == "OPTIONS":
                self._send(response_to(msg, 200, extra=[("allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]), addr)
            else:
                self._send(response_to(msg, 405, extra=[("allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]), addr)
        except TapProtocolError as exc:
            self.malformed += 1
            log.warning("SIP %s from %s rejected: %s", msg.method, addr, exc)
            self._send(response_to(msg, 400, extra=[("warning", f'399 callpulse "{str(exc)[:100]}"')]), addr)

    def _send(self, msg: SipMessage, addr) -> None:
        if self.transport is not None:
            self.transport.sendto(msg.to_bytes(), addr)

    def _on_invite(self, msg: SipMessage, addr) -> None:
        call_id = msg.call_id
        cseq, _ = msg.cseq
        dialog = self.dialogs.get(call_id)
        if dialog is not None:
            if not dialog.answer:
                self._send(response_to(msg, 100), addr)  # still opening its RTP ports
                return
            # A retransmission or a re-INVITE: same answer, same ports.
            self._send(response_to(msg, 200, to_tag=dialog.to_tag, extra=self._contact(),
                                   body=dialog.answer, content_type="application/sdp"), addr)
            return
        self._send(response_to(msg, 100), addr)
        ctype = (msg.get("content-type") or "").lower()
        agent_id = None
        for header in self.options.sip_agent_headers:
            # "From" means the user part of the From URI (a softphone registered per agent: sip:a17@pbx).
            agent_id = uri_user(msg.get("from") or "") if header.lower() == "from" else msg.get(header)
            if agent_id:
                break
        recording = "siprec" in (msg.get("require") or "").lower() or ctype.startswith("multipart/")
        if recording:
            parts = siprec.split_multipart(msg.get("content-type") or "", msg.body)
            if "application/sdp" not in parts:
                raise TapProtocolError("SIPREC INVITE without an application/sdp part")
            sdp = parse_sdp(parts["application/sdp"])
            roles: dict[str, str] = {}
            if "application/rs-metadata+xml" in parts:
                meta = siprec.parse_metadata(parts["application/rs-metadata+xml"])
                roles, meta_agent = siprec.roles_by_label(meta, agent_pattern=self.options.siprec_agent_pattern)
                agent_id = agent_id or meta_agent
            audio = [m for m in sdp.media if m.port]
            defaults = ["caller", "agent"]
            wanted = [roles.get(m.label or "", defaults[i] if i < 2 else None) for i, m in enumerate(audio)]
        else:
            if ctype and not ctype.startswith("application/sdp"):
                self._send(response_to(msg, 415), addr)
                return
            sdp = parse_sdp(msg.body)
            audio = [m for m in sdp.media if m.port]
            single = self.options.sip_single_stream_role
            wanted = [single] + [None] * (len(audio) - 1)
        layout = "mixed" if wanted and wanted[0] == "mixed" else "stereo"
        streams: list[RtpStream] = []
        answer_media = []
        depth = max(0, self.options.jitter_buffer_ms // 20)
        taken: set[str] = set()
        for media in sdp.media:
            role = wanted[audio.index(media)] if media in audio else None
            pt = choose_codec(media) if media.port else None
            if role is None or pt is None or role in taken:
                answer_media.append((0, None, media.label, "inactive"))
                continue
            taken.add(role)
            streams.append(RtpStream(role=role, payload_type=pt, label=media.label,
                                     jitter=JitterBuffer(depth_packets=depth,
                                                         max_gap_samples=int(self.options.rtp_max_gap_s * CLOCK_RATE_HZ))))
            answer_media.append((None, pt, media.label, "recvonly"))
        if not streams:
            self._send(response_to(msg, 488, extra=[("warning", '399 callpulse "offer PCMU or PCMA at 8000 Hz"')]),
                       addr)
            return
        try:
            meta = CallMeta(call_id=safe_id(call_id), sample_rate_hz=CLOCK_RATE_HZ, layout=layout,
                            agent_id=safe_id(agent_id) if agent_id else None,
                            source="tap:siprec" if recording else "tap:sip",
                            extra={"from": uri_user(msg.get("from") or "") or ""}, peer=addr[0])
            call = self.service.calls.open(meta)
        except CallRejected as exc:
            log.warning("SIP call %s refused: %s", call_id, exc)
            self._send(response_to(msg, 486, extra=[("warning", f'399 callpulse "{str(exc)[:100]}"')]), addr)
            return
        dialog = Dialog(call_id=call_id, to_tag=secrets.token_hex(6), invite_cseq=cseq, answer=b"",
                        streams=streams, call=call)
        self.dialogs[call_id] = dialog
        asyncio.get_running_loop().create_task(self._answer(msg, addr, dialog, answer_media))

    async def _answer(self, msg: SipMessage, addr, dialog: Dialog, answer_media: list) -> None:
        loop = asyncio.get_running_loop()
        host = self.transport.get_extra_info("sockname")[0]
        it = iter(dialog.streams)
        media = []
        for port, pt, label, direction in answer_media:
            if pt is None:
                media.append((0, None, label, direction))
                continue
            stream = next(it)
            stream.transport, _ = await loop.create_datagram_endpoint(
                lambda s=stream: _RtpProtocol(self, dialog, s), local_addr=(host, 0))
            stream.port = stream.transport.get_extra_info("sockname")[1]
            media.append((stream.port, pt, label, direction))
        dialog.answer = build_sdp(address=host, session_id=int(time.time()), media=media)
        dialog.last_rtp = time.monotonic()
        if dialog.ended:
            self._close_streams(dialog)
            return
        self._send(response_to(msg, 200, to_tag=dialog.to_tag, extra=self._contact(), body=dialog.answer,
                               content_type="application/sdp"), addr)
        log.info("SIP call %s answered: %s", dialog.call_id,
                 ", ".join(f"{s.role}@{s.port}/PT{s.payload_type}" for s in dialog.streams),
                 extra={"call_id": dialog.call_id})

    def _contact(self) -> list[tuple[str, str]]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return [("contact", f"<sip:callpulse@{host}:{port}>"), ("allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]

    # --- RTP -----------------------------------------------------------------------------------

    def on_rtp(self, dialog: Dialog, stream: RtpStream, data: bytes, addr) -> None:
        if dialog.ended or dialog.call is None:
            return
        if not allowed(addr[0], self.options.sip_allow):
            return
        try:
            packet = parse_rtp(data)
        except TapProtocolError as exc:
            dialog.call.note_malformed(exc)
            return
        now = time.monotonic()
        dialog.last_rtp = now
        if dialog.first_rtp is None:
            dialog.first_rtp = now
        if stream.base is None:
            # Streams start at different moments; place each where it began on the call clock.
            stream.base = int(round((now - dialog.first_rtp) * CLOCK_RATE_HZ))
        self._deliver(dialog, stream, stream.jitter.push(packet))

    def _deliver(self, dialog: Dialog, stream: RtpStream, chunks) -> None:
        if not chunks or dialog.call is None:
            return
        base = stream.base or 0
        self.service.calls.push(dialog.call, [RoleAudio(stream.role, pcm, base + pos) for pos, pcm in chunks])

    def _hangup(self, dialog: Dialog, reason: str) -> None:
        if dialog.ended:
            return
        dialog.ended = True
        for stream in dialog.streams:
            self._deliver(dialog, stream, stream.jitter.flush())
        self._close_streams(dialog)
        if dialog.call is not None:
            stats = [s.jitter.stats for s in dialog.streams]
            log.info("SIP call %s ended (%s): %s", dialog.call_id, reason, stats, extra={"call_id": dialog.call_id})
            self.service.calls.end(dialog.call, reason=reason)
        # Keep the dialog a little so a retransmitted BYE still gets its 200 OK.
        asyncio.get_running_loop().call_later(32.0, self.dialogs.pop, dialog.call_id, None)

    def _close_streams(self, dialog: Dialog) -> None:
        for stream in dialog.streams:
            if stream.transport is not None:
                stream.transport.close()

