"""Twilio Media Streams over WebSocket: JSON text messages, base64 mu-law at 8 kHz.

Messages: ``connected``; ``start`` (streamSid, callSid, tracks, customParameters, mediaFormat
``{encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1}``); ``media`` (``track`` inbound|outbound,
``chunk``, ``timestamp`` in ms from the stream's start, ``payload``); ``dtmf``; ``mark``; ``stop``.
Inbound is the caller, outbound what the agent side sends (configurable). Lost packets show up as a
``timestamp`` jump, so audio is placed by timestamp, not by arrival.
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field

from ...audio import decode_mulaw, encode_mulaw
from ...errors import TapProtocolError
from ..options import LiveOptions
from ..security import BoundedJsonError, parse_json
from . import CallMeta, RoleAudio, pick_key

SAMPLE_RATE_HZ = 8000
MAX_PAYLOAD_BYTES = 8000  # one second of mu-law; Twilio sends 160-byte (20 ms) chunks
MAX_TIMESTAMP_MS = 24 * 3600 * 1000
MAX_JSON_DEPTH = 8  # Twilio's messages nest 3 levels


@dataclass
class TwilioEnd:
    """The stream's ``stop`` message arrived."""

    reason: str = "stop"


@dataclass
class TwilioStream:
    """State of one Media Streams connection."""

    options: LiveOptions
    meta: CallMeta | None = None
    stream_sid: str | None = None
    tracks: tuple[str, ...] = ()
    dtmf: list[str] = field(default_factory=list)

    def on_text(self, text: str) -> CallMeta | list[RoleAudio] | TwilioEnd | None:
        """One JSON message -> the call's metadata (start), audio (media), an end (stop) or None."""
        if len(text) > self.options.max_frame_bytes:
            raise TapProtocolError(
                f"Twilio message of {len(text)} characters exceeds live.max_frame_bytes")
        try:
            # depth checked before parsing: '[' * 1100 would end the call with a RecursionError
            msg = parse_json(text, max_bytes=self.options.max_frame_bytes, max_depth=MAX_JSON_DEPTH)
        except BoundedJsonError as exc:
            raise TapProtocolError(f"Twilio message dropped: {exc}") from exc
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            raise TapProtocolError("Twilio message must be a JSON object with an 'event' string")
        event = msg["event"]
        if event == "connected":
            return None
        if event == "start":
            return self._start(msg)
        if event == "media":
            return self._media(msg)
        if event == "dtmf":
            digit = msg.get("dtmf", {}).get("digit") if isinstance(msg.get("dtmf"), dict) else None
            if isinstance(digit, str) and len(digit) == 1:
                self.dtmf.append(digit)
            return None
        if event == "mark":
            return None
        if event == "stop":
            return TwilioEnd()
        raise TapProtocolError(f"unknown Twilio event {event[:32]!r}")

    def _start(self, msg: dict) -> CallMeta | None:
        if self.meta is not None:
            raise TapProtocolError("second Twilio 'start' message on one stream")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise TapProtocolError("Twilio 'start' message lacks its 'start' object")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise TapProtocolError("Twilio mediaFormat must be an object")
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = fmt.get("sampleRate", SAMPLE_RATE_HZ)
        channels = fmt.get("channels", 1)
        if encoding != "audio/x-mulaw" or rate != SAMPLE_RATE_HZ or channels != 1:
            raise TapProtocolError(
                f"Twilio mediaFormat {encoding!r}/{rate}/{channels} is not the audio/x-mulaw 8000 Hz mono "
                "that Media Streams sends")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(t in ("inbound", "outbound") for t in tracks):
            raise TapProtocolError(f"Twilio tracks {str(tracks)[:60]} must be inbound and/or outbound")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise TapProtocolError("Twilio customParameters must be an object")
        self.tracks = tuple(tracks)
        self.stream_sid = pick_key(start, ("streamSid",)) or pick_key(msg, ("streamSid",))
        call_id = (pick_key(params, self.options.call_id_keys) or pick_key(start, ("callSid",))
                   or self.stream_sid or f"twilio-{uuid.uuid4().hex[:12]}")
        self.meta = CallMeta(
            call_id=call_id,
            sample_rate_hz=SAMPLE_RATE_HZ,
            layout="stereo",
            agent_id=pick_key(params, self.options.agent_id_keys),
            source="tap:twilio",
            extra={"streamSid": self.stream_sid or "", "tracks": ",".join(self.tracks)},
        )
        return self.meta

    def _media(self, msg: dict) -> list[RoleAudio]:
        if self.meta is None:
            raise TapProtocolError("Twilio 'media' message before 'start'")
        media = msg.get("media")
        if not isinstance(media, dict):
            raise TapProtocolError("Twilio 'media' message lacks its 'media' object")
        track = media.get("track", "inbound")
        if track not in ("inbound", "outbound"):
            raise TapProtocolError(f"Twilio media track {str(track)[:20]!r} is not inbound/outbound")
        payload = media.get("payload")
        if not isinstance(payload, str) or not payload:
            raise TapProtocolError("Twilio media payload must be a non-empty base64 string")
        if len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
            raise TapProtocolError(f"Twilio media payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TapProtocolError(f"Twilio media payload is not valid base64 ({exc})") from exc
        start = None
        ts = media.get("timestamp")
        if ts is not None:
            try:
                ts_ms = int(ts)
            except (TypeError, ValueError) as exc:
                raise TapProtocolError(f"Twilio media timestamp {str(ts)[:20]!r} is not an integer") from exc
            if not 0 <= ts_ms <= MAX_TIMESTAMP_MS:
                raise TapProtocolError(f"Twilio media timestamp {ts_ms} ms is out of range")
            start = ts_ms * SAMPLE_RATE_HZ // 1000
        role = self.options.twilio_inbound_role if track == "inbound" else self.options.twilio_outbound_role
        return [RoleAudio(role, decode_mulaw(raw), start)]


# --- messages a Twilio peer sends (the replay client uses these) ----------------------------------

def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(*, stream_sid: str, call_sid: str, tracks: list[str], params: dict[str, str]) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": stream_sid, "callSid": call_sid,
                  "tracks": tracks, "customParameters": params,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE_HZ, "channels": 1}},
    })


def media_message(*, stream_sid: str, seq: int, track: str, chunk: int, timestamp_ms: int, pcm) -> str:
    return json.dumps({
        "event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
        "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp_ms),
                  "payload": base64.b64encode(encode_mulaw(pcm)).decode("ascii")},
    })


def stop_message(*, stream_sid: str, call_sid: str, seq: int) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid,
                       "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}})
