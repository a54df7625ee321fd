"""Genesys Cloud AudioHook (Monitor) over WebSocket: ``ws://host:port/tap/audiohook``.

Protocol version 2, as published by Genesys (see ../shared/docs/telephony.md). Genesys is the client:

- every text message is a JSON object ``{"version": "2", "id": <session uuid>, "type", "seq",
  "serverseq", "position", "parameters"}``; ``seq`` counts the client's messages from 1, ``position`` is
  the audio sent so far (ISO 8601 duration, ``PT12.34S``);
- ``open`` (parameters ``organizationId``, ``conversationId``, ``participant``, ``media``: the offered
  formats ``{type: "audio", format: "PCMU"|"L16", channels: ["external", "internal"], rate: 8000}``)
  must be answered with ``opened`` naming the chosen format before any audio flows. An ``open`` for the
  null conversation id with no media is Genesys' connection probe: answered, no call opened;
- ``ping`` is answered with ``pong``; ``paused`` / ``resumed`` say the client stopped / restarted the
  audio (no audio in between: it is dropped if it comes); ``discarded`` says how much audio was lost
  (it stays a gap of silence of exactly that length); ``update`` and ``error`` are taken note of;
- ``close`` is answered with ``closed``, which ends the call; the server may end a session with
  ``disconnect`` (used here when a call is refused);
- binary frames carry the audio: PCMU (1 byte a sample) or L16 (16-bit little-endian), at 8 kHz, the
  channels interleaved in the order offered; ``external`` is the customer (caller), ``internal`` the
  agent.

Server messages carry their own ``seq`` from 1 and ``clientseq``, the last client ``seq`` seen.
Authentication: the service token as ``X-API-KEY`` (the header Genesys sends for the integration's API
key), ``Authorization: Bearer``, or ``?token=``. Anything malformed (not JSON, wrong version or session,
a repeated ``seq``, audio before ``opened`` or misaligned, an unknown type) is dropped and counted,
never the call.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...audio import decode_mulaw
from ...errors import TapProtocolError
from ..options import LiveOptions
from . import CallMeta, RoleAudio, l16_to_int16, pick_key, safe_id

log = logging.getLogger("pipeline.live.taps.audiohook")

VERSION = "2"
CHANNEL_ROLES = {"external": "caller", "internal": "agent"}
FORMATS = ("PCMU", "L16")
RATES = (8000,)
PROBE_CONVERSATION = "00000000-0000-0000-0000-000000000000"
MAX_TEXT_BYTES = 65536
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_duration_s(value: Any) -> float:
    """ISO 8601 duration as AudioHook writes it (``PT1.5S``, ``PT2M3.04S``) -> seconds."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or value == "PT":
        raise TapProtocolError(f"AudioHook duration {str(value)[:32]!r} is not an ISO 8601 duration like PT1.5S")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def format_duration(seconds: float) -> str:
    return f"PT{max(seconds, 0.0):.3f}".rstrip("0").rstrip(".") + "S"


@dataclass
class Step:
    """What one client message asks of the network layer."""

    replies: list[dict] = field(default_factory=list)
    opened: CallMeta | None = None
    audio: list[RoleAudio] = field(default_factory=list)
    end: str | None = None


@dataclass
class AudioHookSession:
    """State of one AudioHook connection (pure: bytes and JSON in, replies and audio out)."""

    options: LiveOptions
    session_id: str | None = None
    state: str = "new"  # new -> open (<-> paused) -> closed
    client_seq: int = 0
    server_seq: int = 0
    media: dict | None = None
    meta: CallMeta | None = None
    sample: int = 0
    frames: int = 0
    pings: int = 0
    discarded_s: float = 0.0
    probe: bool = False

    # --- text ----------------------------------------------------------------------------------

    def on_text(self, text: str) -> Step:
        if len(text.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
            raise TapProtocolError(f"AudioHook message exceeds {MAX_TEXT_BYTES} bytes")
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TapProtocolError(f"AudioHook message is not JSON ({exc.msg} at {exc.pos})") from exc
        if not isinstance(msg, dict):
            raise TapProtocolError("AudioHook message must be a JSON object")
        if msg.get("version") != VERSION:
            raise TapProtocolError(f"AudioHook version {str(msg.get('version'))[:8]!r}; this server speaks {VERSION}")
        kind, seq, sid = msg.get("type"), msg.get("seq"), msg.get("id")
        if not isinstance(kind, str) or not kind:
            raise TapProtocolError("AudioHook message lacks its 'type'")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise TapProtocolError(f"AudioHook message seq {str(seq)[:16]!r} is not a positive integer")
        if not isinstance(sid, str) or not sid:
            raise TapProtocolError("AudioHook message lacks the session 'id'")
        if self.session_id is not None and sid != self.session_id:
            raise TapProtocolError(f"AudioHook message for session {sid[:40]!r} on session {self.session_id}")
        if seq <= self.client_seq:
            raise TapProtocolError(f"AudioHook seq {seq} repeats or goes back (last {self.client_seq})")
        if seq != self.client_seq + 1:
            log.warning("AudioHook session %s: seq jumped from %d to %d", sid, self.client_seq, seq)
        params = msg.get("parameters", {})
        if not isinstance(params, dict):
            raise TapProtocolError("AudioHook 'parameters' must be an object")
        if self.state == "new" and kind != "open":
            raise TapProtocolError(f"AudioHook {kind!r} before 'open'")
        if self.state == "closed":
            raise TapProtocolError(f"AudioHook {kind!r} after 'close'")
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise TapProtocolError(f"unknown AudioHook message type {kind[:32]!r}")
        if len(sid) > 128:
            raise TapProtocolError("AudioHook session id longer than 128 characters")
        step = handler(self, params, sid)
        # Accepted: only now does the message count for sequencing (a dropped one leaves no trace).
        self.client_seq = seq
        for reply in step.replies:
            reply["clientseq"] = seq
        return step

    def reply(self, kind: str, parameters: Mapping | None = None) -> dict:
        """A server message with the next server ``seq`` (``clientseq`` is filled in by ``on_text``)."""
        self.server_seq += 1
        return {"version": VERSION, "type": kind, "seq": self.server_seq, "clientseq": self.client_seq,
                "id": self.session_id or "", "parameters": dict(parameters or {})}

    # --- binary --------------------------------------------------------------------------------

    def on_binary(self, payload: bytes) -> Step:
        if self.state == "new" or self.media is None:
            raise TapProtocolError("AudioHook audio before 'opened'")
        if self.state == "closed":
            raise TapProtocolError("AudioHook audio after 'close'")
        if len(payload) > self.options.max_frame_bytes:
            raise TapProtocolError(f"AudioHook frame of {len(payload)} bytes exceeds live.max_frame_bytes="
                                   f"{self.options.max_frame_bytes}")
        if self.state == "paused":
            raise TapProtocolError("AudioHook audio while paused")
        channels = self.media["channels"]
        n = len(channels)
        if self.media["format"] == "PCMU":
            if len(payload) == 0 or len(payload) % n:
                raise TapProtocolError(f"PCMU frame of {len(payload)} bytes is not a whole number of "
                                       f"{n}-channel samples")
            pcm = decode_mulaw(payload).reshape(-1, n).T
        else:
            pcm = l16_to_int16(payload, n_channels=n)
        start = self.sample
        self.sample += pcm.shape[1]
        self.frames += 1
        return Step(audio=[RoleAudio(CHANNEL_ROLES[ch], np.ascontiguousarray(pcm[i]), start)
                           for i, ch in enumerate(channels)])


def _choose_media(offered: Any) -> dict | None:
    if not isinstance(offered, list):
        raise TapProtocolError("AudioHook open 'media' must be a list of offered formats")
    for entry in offered:
        if not isinstance(entry, dict):
            continue
        channels = entry.get("channels")
        if (entry.get("type") == "audio" and entry.get("format") in FORMATS and entry.get("rate") in RATES
                and isinstance(channels, list) and 1 <= len(channels) <= 2 and len(set(channels)) == len(channels)
                and all(ch in CHANNEL_ROLES for ch in channels)):
            return {"type": "audio", "format": entry["format"], "channels": list(channels), "rate": entry["rate"]}
    return None


def _on_open(self: AudioHookSession, params: dict, sid: str) -> Step:
    if self.state != "new":
        raise TapProtocolError("second AudioHook 'open' on one session")
    conversation = params.get("conversationId")
    if not isinstance(conversation, str) or not conversation:
        raise TapProtocolError("AudioHook open lacks 'conversationId'")
    offered = params.get("media", [])
    custom = params.get("customConfig") or {}
    participant = params.get("participant") or {}
    if not isinstance(custom, dict) or not isinstance(participant, dict):
        raise TapProtocolError("AudioHook customConfig and participant must be objects")
    media = _choose_media(offered)  # raises for a malformed list, before any state changes
    self.session_id = sid
    self.state = "open"
    if conversation == PROBE_CONVERSATION and not offered:
        self.probe = True
        return Step(replies=[self.reply("opened", {"startPaused": False, "media": []})])
    if media is None:
        self.state = "closed"
        return Step(replies=[self.reply("disconnect", {
            "reason": "error", "info": f"no offered media is supported; this server takes audio {FORMATS} "
                                       f"at {RATES} Hz with channels external/internal"})], end="unsupported media")
    self.media = media
    call_id = pick_key(custom, self.options.call_id_keys) or safe_id(conversation)
    self.meta = CallMeta(
        call_id=call_id, sample_rate_hz=media["rate"], layout="stereo",
        agent_id=pick_key(custom, self.options.agent_id_keys) or pick_key(params, self.options.agent_id_keys),
        source="tap:audiohook",
        extra={"session": self.session_id or "", "format": media["format"], "channels": ",".join(media["channels"]),
               "organizationId": str(params.get("organizationId", ""))[:64]},
    )
    return Step(replies=[self.reply("opened", {"startPaused": False, "media": [media]})], opened=self.meta)


def _on_ping(self: AudioHookSession, params: dict, sid: str) -> Step:
    self.pings += 1
    return Step(replies=[self.reply("pong")])


def _on_paused(self: AudioHookSession, params: dict, sid: str) -> Step:
    self.state = "paused"
    return Step()


def _on_resumed(self: AudioHookSession, params: dict, sid: str) -> Step:
    self.state = "open"
    return Step()


def _on_discarded(self: AudioHookSession, params: dict, sid: str) -> Step:
    lost = parse_duration_s(params.get("discarded"))
    if self.media is not None and lost > 0:
        # Lost audio stays a gap of its exact length, so later audio keeps its place in the call.
        self.sample += int(round(lost * self.media["rate"]))
        self.discarded_s += lost
    return Step()


def _on_update(self: AudioHookSession, params: dict, sid: str) -> Step:
    return Step()


def _on_error(self: AudioHookSession, params: dict, sid: str) -> Step:
    log.warning("AudioHook session %s: the client reported an error: %s", self.session_id,
                str(params.get("message") or params.get("code"))[:200])
    return Step()


def _on_close(self: AudioHookSession, params: dict, sid: str) -> Step:
    self.state = "closed"
    reason = params.get("reason", "end")
    return Step(replies=[self.reply("closed")], end=f"close ({str(reason)[:32]})")


_HANDLERS = {"open": _on_open, "ping": _on_ping, "paused": _on_paused, "resumed": _on_resumed,
             "discarded": _on_discarded, "update": _on_update, "error": _on_error, "close": _on_close}


# --- the WebSocket endpoint ---------------------------------------------------------------------

async def audiohook_handler(request):
    """aiohttp handler for /tap/audiohook (the token is checked by the service's middleware)."""
    from aiohttp import WSMsgType, web

    from ..calls import CallRejected
    from ..ingest import SERVICE_KEY, _malformed

    service = request.app[SERVICE_KEY]
    ws = web.WebSocketResponse(max_msg_size=4 * service.options.max_frame_bytes, heartbeat=30.0)
    await ws.prepare(request)
    hook = AudioHookSession(service.options, session_id=None)
    call = None
    reason = "disconnect"
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    step = hook.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    if call is None and hook.meta is not None:
                        continue  # the call was refused; nothing to feed
                    step = hook.on_binary(msg.data)
                else:
                    break
            except TapProtocolError as exc:
                _malformed(service, call, exc)
                continue
            if step.opened is not None:
                meta = step.opened
                if "peer" in {f.name for f in dataclasses.fields(meta)}:
                    meta = dataclasses.replace(meta, peer=request.remote or "")
                try:
                    call = service.calls.open(meta)
                except CallRejected as exc:
                    log.warning("AudioHook call refused: %s", exc)
                    await ws.send_str(json.dumps(hook.reply("disconnect", {"reason": "error", "info": str(exc)})))
                    await ws.close(code=1013, message=b"call refused")
                    break
            for reply in step.replies:
                await ws.send_str(json.dumps(reply))
            if step.audio and call is not None:
                service.calls.push(call, step.audio)
                await service.calls.wait_for_room(call)
            if step.end is not None:
                reason = step.end
                await ws.close()
                break
    except (ConnectionResetError, asyncio.CancelledError):
        reason = "disconnect"
        raise
    finally:
        if call is not None:
            service.calls.end(call, reason=reason)
    return ws


def new_session_id() -> str:
    return str(uuid.uuid4())
