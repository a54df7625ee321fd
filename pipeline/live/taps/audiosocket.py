"""Asterisk AudioSocket over TCP: ``type (1 byte) | length (2 bytes, big-endian) | payload``.

0x00 hangup, 0x01 call UUID (16 bytes), 0x03 DTMF (1 ASCII byte), 0x10 signed-linear 16-bit mono LE at
8 kHz (newer builds: 0x11..0x16 for 12..48 kHz; we take 0x12 = 16 kHz, the other rates are refused per
frame), 0xff error. 320 bytes per 20 ms at 8 kHz. One direction per connection: two connections that
carry the same UUID are the two parties of one call (roles in connection order, ``live.audiosocket_roles``).
"""
from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

import numpy as np

from ...errors import TapProtocolError
from . import l16_to_int16

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000}
SUPPORTED_RATES = (8000, 16000)
HEADER = struct.Struct(">BH")


@dataclass(frozen=True)
class Message:
    """One AudioSocket message: ``kind`` byte and payload; ``error`` says why it was dropped, if it was."""

    kind: int
    payload: bytes
    error: str | None = None


class AudioSocketParser:
    """Incremental framing over a TCP byte stream. Holds at most one header plus a bounded payload; an
    oversized message is skipped byte-exactly, so the stream stays in step and the call goes on."""

    def __init__(self, *, max_payload_bytes: int) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._buf = bytearray()
        self._skip = 0
        self.malformed = 0

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data
        while True:
            if self._skip:
                dropped = min(self._skip, len(self._buf))
                self._skip -= dropped
                del self._buf[:dropped]
                if self._skip:
                    break
            if len(self._buf) < HEADER.size:
                break
            kind, length = HEADER.unpack_from(self._buf)
            if length > self.max_payload_bytes:
                del self._buf[:HEADER.size]
                self._skip = length
                self.malformed += 1
                out.append(Message(kind, b"", f"message of {length} bytes exceeds the "
                                               f"{self.max_payload_bytes}-byte limit; skipped"))
                continue
            if len(self._buf) < HEADER.size + length:
                break
            payload = bytes(self._buf[HEADER.size:HEADER.size + length])
            del self._buf[:HEADER.size + length]
            out.append(Message(kind, payload))
        return out


@dataclass(frozen=True)
class Audio:
    rate_hz: int
    pcm: np.ndarray  # int16 [n]


def interpret(message: Message) -> str | Audio | None:
    """A message -> the call UUID (str), audio, "hangup", a DTMF digit marker or None; bad -> raises."""
    if message.error is not None:
        raise TapProtocolError(f"AudioSocket: {message.error}")
    kind, payload = message.kind, message.payload
    if kind == KIND_HANGUP:
        return "hangup"
    if kind == KIND_UUID:
        if len(payload) != 16:
            raise TapProtocolError(f"AudioSocket UUID message has {len(payload)} bytes, not 16")
        return str(uuidlib.UUID(bytes=payload))
    if kind == KIND_DTMF:
        if len(payload) != 1:
            raise TapProtocolError("AudioSocket DTMF message must hold one byte")
        return None
    if kind == KIND_ERROR:
        return "error"
    if kind in AUDIO_RATES:
        rate = AUDIO_RATES[kind]
        if rate not in SUPPORTED_RATES:
            raise TapProtocolError(f"AudioSocket audio at {rate} Hz is not supported (use 8 or 16 kHz)")
        return Audio(rate, l16_to_int16(payload, n_channels=1)[0])
    raise TapProtocolError(f"unknown AudioSocket message type 0x{kind:02x}")


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One message on the wire (used by the replay client and the tests)."""
    if len(payload) > 0xFFFF:
        raise ValueError("AudioSocket payloads are at most 65535 bytes")
    return HEADER.pack(kind, len(payload)) + payload


def encode_uuid(call_uuid: str) -> bytes:
    return encode(KIND_UUID, uuidlib.UUID(call_uuid).bytes)


def encode_audio(pcm: np.ndarray, *, rate_hz: int = 8000) -> bytes:
    kind = {v: k for k, v in AUDIO_RATES.items()}[rate_hz]
    return encode(kind, np.asarray(pcm, dtype="<i2").tobytes())
