"""Tap endpoints: WebSocket handlers (audio-fork, Twilio) and the AudioSocket TCP listener.

Each connection owns its parser state; a malformed frame is dropped and counted on the call (or on the
service before the call exists) and the connection goes on. A frame above the hard WebSocket limit
(four times ``live.max_frame_bytes``) closes only that connection, whose call is finalised normally.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import time

from aiohttp import WSMsgType, web

from ..errors import TapProtocolError
from .calls import CallRejected, LiveCall
from .ports import TapHost
from .taps import CallMeta, RoleAudio
from .taps import audiosocket as asock
from .taps.audio_fork import SUBPROTOCOL, AudioForkStream
from .taps.twilio import TwilioEnd, TwilioStream


log = logging.getLogger("pipeline.live.ingest")

SERVICE_KEY: web.AppKey = web.AppKey("callpulse_live_service", object)


def allowed(address: str | None, allow: tuple[str, ...]) -> bool:
    """Source-address allow-list (addresses or CIDR networks) for taps that cannot carry a token."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


async def _websocket(service: TapHost, request: web.Request, *, protocols: tuple[str, ...]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=4 * service.options.max_frame_bytes,
                               heartbeat=30.0)
    await ws.prepare(request)
    return ws


class _IdleClock:
    """When a tap connection last carried audio; it is closed once ``live.idle_timeout_s`` passes
    without any (a connection that only holds a call slot, or sends only junk, is no call)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last_audio = time.monotonic()

    def audio(self) -> None:
        self.last_audio = time.monotonic()

    def left_s(self) -> float:
        return self.timeout_s - (time.monotonic() - self.last_audio)


async def _messages(service: TapHost, ws: web.WebSocketResponse, idle: _IdleClock):
    """The connection's messages until it closes or stays without audio for ``idle_timeout_s``."""
    while True:
        left = idle.left_s()
        if left <= 0:
            raise _IdleTimeout
        try:
            msg = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            raise _IdleTimeout from None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        yield msg


async def _close_idle(service: TapHost, ws: web.WebSocketResponse, what: str, peer: str | None) -> str:
    service.idle_timeouts += 1
    log.warning("%s connection from %s closed: no audio for %.0f s (live.idle_timeout_s)", what, peer,
                service.options.idle_timeout_s)
    await ws.close(code=1008, message=b"idle timeout: no audio")
    return "idle timeout"


async def audio_fork_handler(request: web.Request) -> web.WebSocketResponse:
    service: TapHost = request.app[SERVICE_KEY]
    ws = await _websocket(service, request, protocols=(SUBPROTOCOL,))
    stream = AudioForkStream(service.options, dict(request.query))
    call: LiveCall | None = None
    reason = "closed"
    idle = _IdleClock(service.options.idle_timeout_s)
    try:
        try:
            async for msg in _messages(service, ws, idle):
                try:
                    if msg.type == WSMsgType.TEXT:
                        meta = stream.on_text(msg.data)
                        if meta is not None and call is None:
                            call = service.calls.open(dataclasses.replace(meta, peer=request.remote or ""))
                            call.notify = _sender(ws)
                            if call.tap_call_id:
                                call.notify({"type": "callpulse.call", "call_id": call.call_id,
                                             "tap_call_id": call.tap_call_id})
                    elif msg.type == WSMsgType.BINARY:
                        if call is None and stream.meta is not None:
                            continue  # the call was refused; nothing to feed
                        audio = stream.on_binary(msg.data)
                        idle.audio()
                        service.calls.push(call, audio)
                        await service.calls.wait_for_room(call)
                    elif msg.type == WSMsgType.ERROR:
                        reason = f"websocket error: {ws.exception()}"
                        break
                except CallRejected as exc:
                    log.warning("audio-fork call refused: %s", exc)
                    await ws.send_json({"type": "error", "error": str(exc)})
                    await ws.close(code=1013, message=b"call refused")
                    break
                except TapProtocolError as exc:
                    _malformed(service, call, exc)
        except _IdleTimeout:
            reason = await _close_idle(service, ws, "audio-fork", request.remote)
        if reason == "closed" and ws.close_code not in (None, 1000, 1001):
            reason = f"disconnect ({ws.close_code})"
    except (ConnectionResetError, asyncio.CancelledError):
        reason = "disconnect"
        raise
    finally:
        if call is not None:
            service.calls.end(call, reason=reason)
    return ws


async def twilio_handler(request: web.Request) -> web.WebSocketResponse:
    service: TapHost = request.app[SERVICE_KEY]
    ws = await _websocket(service, request, protocols=())
    stream = TwilioStream(service.options)
    call: LiveCall | None = None
    reason = "disconnect"
    idle = _IdleClock(service.options.idle_timeout_s)
    try:
        async for msg in _messages(service, ws, idle):
            if msg.type == WSMsgType.BINARY:
                _malformed(service, call, TapProtocolError("Twilio Media Streams sends text frames only"))
                continue
            if msg.type != WSMsgType.TEXT:
                break
            try:
                out = stream.on_text(msg.data)
                if isinstance(out, CallMeta):
                    call = service.calls.open(dataclasses.replace(out, peer=request.remote or ""))
                elif isinstance(out, list) and call is not None:
                    idle.audio()
                    service.calls.push(call, out)
                    await service.calls.wait_for_room(call)
                elif isinstance(out, TwilioEnd):
                    reason = "stop"
                    break
            except CallRejected as exc:
                log.warning("Twilio stream refused: %s", exc)
                await ws.close(code=1013, message=b"call refused")
                break
            except TapProtocolError as exc:
                _malformed(service, call, exc)
    except _IdleTimeout:
        reason = await _close_idle(service, ws, "Twilio", request.remote)
    finally:
        if call is not None:
            service.calls.end(call, reason=reason)
    return ws


class _IdleTimeout(Exception):
    pass


def _sender(ws: web.WebSocketResponse):
    """Send JSON text frames back down a fork (mod_audio_fork passes them to FreeSWITCH as events).
    Fire-and-forget: a slow or closed fork must never hold up the alert path."""
    def send(message: dict) -> None:
        if not ws.closed:
            task = asyncio.get_running_loop().create_task(ws.send_str(json.dumps(message, ensure_ascii=False)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return send


def _malformed(service: TapHost, call: LiveCall | None, exc: Exception) -> None:
    if call is not None:
        call.note_malformed(exc)
    else:
        service.malformed_outside_calls += 1
        if service.malformed_outside_calls <= 3 or service.malformed_outside_calls % 1000 == 0:
            log.warning("dropped a malformed tap frame before any call (%d so far): %s",
                        service.malformed_outside_calls, exc)


class AudioSocketServer:
    """Asterisk AudioSocket over TCP. Connections carrying the same UUID are one call's two parties."""

    def __init__(self, service: TapHost) -> None:
        self.service = service
        self.joined: dict[str, int] = {}  # call id -> connections that joined so far

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        service = self.service
        peer = writer.get_extra_info("peername")
        if not allowed(peer[0] if peer else None, service.options.audiosocket_allow):
            log.warning("AudioSocket connection from %s refused: not in live.audiosocket_allow", peer)
            writer.close()
            return
        parser = asock.AudioSocketParser(max_payload_bytes=service.options.max_frame_bytes)
        call_id: str | None = None
        role: str | None = None
        call: LiveCall | None = None
        reason = "disconnect"
        idle = _IdleClock(service.options.idle_timeout_s)
        try:
            while True:
                try:
                    async with asyncio.timeout(max(idle.left_s(), 0.0)):  # no extra task per read
                        data = await reader.read(65536)
                except TimeoutError:
                    service.idle_timeouts += 1
                    reason = "idle timeout"
                    log.warning("AudioSocket connection from %s (call %s) closed: no audio for %.0f s "
                                "(live.idle_timeout_s)", peer, call_id, service.options.idle_timeout_s)
                    writer.write(asock.encode(asock.KIND_HANGUP))
                    break
                if not data:
                    break
                for message in parser.feed(data):
                    try:
                        item = asock.interpret(message)
                    except TapProtocolError as exc:
                        _malformed(service, call, exc)
                        continue
                    if isinstance(item, str) and item not in ("hangup", "error") and call_id is None:
                        call_id = item
                        index = self.joined.get(call_id, 0)
                        self.joined[call_id] = index + 1
                        if index >= 2:
                            raise CallRejected(f"AudioSocket call {call_id} already has two connections")
                        role = service.options.audiosocket_roles[index]
                    elif item == "hangup":
                        reason = "hangup"
                        raise _Hangup
                    elif item == "error":
                        log.warning("AudioSocket peer reported an error on call %s", call_id)
                    elif isinstance(item, asock.Audio):
                        if call_id is None:
                            _malformed(service, None, TapProtocolError("AudioSocket audio before the UUID message"))
                            continue
                        if call is None:
                            call = self._join(call_id, item.rate_hz, peer[0] if peer else "")
                        idle.audio()
                        if item.rate_hz != call.sample_rate_hz:
                            _malformed(service, call, TapProtocolError(
                                f"AudioSocket audio at {item.rate_hz} Hz in a {call.sample_rate_hz} Hz call"))
                            continue
                        service.calls.push(call, [RoleAudio(role, item.pcm, None)])
                if call is not None:
                    await service.calls.wait_for_room(call)
        except _Hangup:
            pass
        except CallRejected as exc:
            log.warning("AudioSocket call refused: %s", exc)
            writer.write(asock.encode(asock.KIND_HANGUP))  # AudioSocket's only way to say no
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "disconnect"
        finally:
            if call is not None:
                service.calls.end(call, reason=reason)
                if call.state != "live":
                    self.joined.pop(call.tap_call_id or call.call_id, None)
            elif call_id is not None and self.joined.get(call_id, 0) <= 1 and service.calls.find(call_id) is None:
                self.joined.pop(call_id, None)
            writer.close()

    def _join(self, call_id: str, rate_hz: int, peer: str) -> LiveCall:
        existing = self.service.calls.find(call_id)
        if existing is not None and existing.meta.source == "tap:audiosocket" and existing.state == "live":
            existing.connections += 1
            return existing
        return self.service.calls.open(CallMeta(call_id=call_id, sample_rate_hz=rate_hz, layout="stereo",
                                                source="tap:audiosocket", peer=peer))


class _Hangup(Exception):
    pass
