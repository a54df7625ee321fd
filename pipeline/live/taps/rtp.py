"""RTP (RFC 3550) packets and a per-stream jitter buffer for G.711 (PT 0 = PCMU, 8 = PCMA, 8 kHz).

The jitter buffer releases audio in sequence order, holding at most ``depth_packets`` out-of-order
packets: a missing packet is waited for that long, then given up as lost and filled with silence (its
duration comes from the RTP timestamps, so a lost 20 ms is exactly 160 samples of silence). Duplicates
and packets that arrive after their slot was played are dropped and counted. An SSRC change (a
re-INVITE, a transfer, a media server taking over) flushes the old stream and continues the new one
right after it on the same clock.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...audio import decode_alaw, decode_mulaw, encode_alaw, encode_mulaw
from ...errors import TapProtocolError

PT_PCMU = 0
PT_PCMA = 8
CLOCK_RATE_HZ = 8000
DECODERS: dict[int, Callable[[bytes], np.ndarray]] = {PT_PCMU: decode_mulaw, PT_PCMA: decode_alaw}
ENCODERS = {PT_PCMU: encode_mulaw, PT_PCMA: encode_alaw}
MAX_PACKET_BYTES = 1500  # one Ethernet MTU; G.711 at 20 ms is 172 bytes
_FIXED = struct.Struct("!BBHII")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet (CSRCs, header extension and padding handled). Raises TapProtocolError."""
    if len(data) > MAX_PACKET_BYTES:
        raise TapProtocolError(f"RTP packet of {len(data)} bytes exceeds {MAX_PACKET_BYTES}")
    if len(data) < _FIXED.size:
        raise TapProtocolError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != 2:
        raise TapProtocolError(f"RTP version {b0 >> 6} is not 2")
    offset = _FIXED.size + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise TapProtocolError("RTP header extension is truncated")
        (ext_words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * ext_words
    end = len(data)
    if b0 & 0x20:
        if end == 0 or data[-1] == 0:
            raise TapProtocolError("RTP padding flag set with a zero padding count")
        end -= data[-1]
    if end < offset:
        raise TapProtocolError("RTP header, extension and padding are longer than the packet")
    pt = b1 & 0x7F
    if 72 <= pt <= 76:
        raise TapProtocolError(f"payload type {pt} is RTCP, not RTP (send RTCP to the odd port)")
    return RtpPacket(pt, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[offset:end]))


def build_rtp(*, payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
              marker: bool = False) -> bytes:
    return _FIXED.pack(0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


@dataclass
class JitterStats:
    received: int = 0
    released: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    ssrc_changes: int = 0
    resyncs: int = 0
    unknown_payload: int = 0
    silence_samples: int = 0


@dataclass
class JitterBuffer:
    """Reorders one RTP stream and turns it into contiguous PCM on the stream's own sample clock.

    ``push`` and ``flush`` return ``[(position_samples, int16 pcm), ...]``; positions start at 0 with the
    first packet and every sample of the stream, silence fill included, is covered exactly once.
    """

    depth_packets: int = 3
    max_gap_samples: int = 5 * CLOCK_RATE_HZ
    max_reorder_packets: int = 100
    stats: JitterStats = field(default_factory=JitterStats)
    _ssrc: int | None = None
    _next_seq: int = 0  # extended sequence number of the next packet to release
    _pending: dict[int, RtpPacket] = field(default_factory=dict)
    _last_ts: int = 0
    _last_pos: int = 0
    _end: int = 0  # stream position after the last released sample
    _started: bool = False  # whether this SSRC has released audio yet

    def push(self, packet: RtpPacket) -> list[tuple[int, np.ndarray]]:
        self.stats.received += 1
        out: list[tuple[int, np.ndarray]] = []
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self.stats.ssrc_changes += 1
            out += self.flush()
            self._ssrc = None
        if self._ssrc is None:
            self._start(packet)
        ext = self._extend(packet.sequence)
        if ext < self._next_seq and self._started:
            self.stats.late += 1
            return out
        if ext in self._pending:
            self.stats.duplicates += 1
            return out
        if abs(ext - self._next_seq) > self.max_reorder_packets:
            # A sequence jump far beyond any reordering: the sender restarted its numbering.
            self.stats.resyncs += 1
            out += self.flush()
            self._start(packet)
            ext = self._next_seq
        self._pending[ext] = packet
        out += self._drain()
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Release everything held, in order (end of call, SSRC change)."""
        out: list[tuple[int, np.ndarray]] = []
        if self._pending and not self._started:
            self._begin_at(min(self._pending))
        for ext in sorted(self._pending):
            self._lose(ext - self._next_seq)
            out += self._release(self._pending.pop(ext))
            self._next_seq = ext + 1
        return out

    @property
    def end_samples(self) -> int:
        return self._end

    def _start(self, packet: RtpPacket) -> None:
        self._ssrc = packet.ssrc
        self._next_seq = packet.sequence
        self._last_ts = packet.timestamp
        self._last_pos = self._end
        self._started = False

    def _begin_at(self, ext: int) -> None:
        self._next_seq = ext
        self._last_ts = self._pending[ext].timestamp

    def _extend(self, seq: int) -> int:
        diff = ((seq - (self._next_seq & 0xFFFF) + 0x8000) & 0xFFFF) - 0x8000
        return self._next_seq + diff

    def _drain(self) -> list[tuple[int, np.ndarray]]:
        out: list[tuple[int, np.ndarray]] = []
        if not self._started:
            # The stream's first packets may arrive out of order too: fill the buffer once before playing.
            if len(self._pending) <= self.depth_packets:
                return out
            self._begin_at(min(self._pending))
        while True:
            if self._next_seq in self._pending:
                out += self._release(self._pending.pop(self._next_seq))
                self._next_seq += 1
            elif len(self._pending) > self.depth_packets:
                first = min(self._pending)
                self._lose(first - self._next_seq)
                self._next_seq = first
            else:
                return out

    def _lose(self, n_packets: int) -> None:
        if n_packets > 0:
            self.stats.lost += n_packets

    def _release(self, packet: RtpPacket) -> list[tuple[int, np.ndarray]]:
        decode = DECODERS.get(packet.payload_type)
        d_ts = ((packet.timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        pos = self._last_pos + d_ts
        if decode is None:
            # telephone-event, comfort noise...: its time is covered by the silence before the next audio.
            self.stats.unknown_payload += 1
            return []
        pcm = decode(packet.payload)
        if pos > self._end + self.max_gap_samples or pos + pcm.size < self._end - self.max_gap_samples:
            # A timestamp jump no pause explains (sender clock reset): carry on contiguously.
            self.stats.resyncs += 1
            pos = self._end
        self._last_ts, self._last_pos = packet.timestamp, pos
        self._started = True
        self.stats.released += 1
        out: list[tuple[int, np.ndarray]] = []
        if pos > self._end:
            gap = pos - self._end
            self.stats.silence_samples += gap
            out.append((self._end, np.zeros(gap, dtype=np.int16)))
            self._end = pos
        elif pos < self._end:
            pcm = pcm[self._end - pos:]
        if pcm.size:
            out.append((self._end, pcm))
            self._end += pcm.size
        return out
