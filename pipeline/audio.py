"""Audio in: decode files, check them, resample explicitly, G.711 codecs.

Nothing here resamples silently: every stage states the rate it needs and calls :func:`resample` or a
:class:`StreamResampler` itself. Files are read block by block so a 3-hour recording never sits in memory
as float64.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioFormatError

log = logging.getLogger("pipeline.audio")

SUPPORTED_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")


@dataclass(frozen=True)
class AudioOptions:
    """[audio] options."""

    agent_channel: int = 0
    max_duration_s: float = 14400.0
    max_channels: int = 2

    def __post_init__(self) -> None:
        if self.agent_channel not in (0, 1):
            raise ValueError(f"agent_channel must be 0 or 1, got {self.agent_channel}")
        if self.max_duration_s <= 0:
            raise ValueError("max_duration_s must be positive")


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header before any decoding."""

    path: str
    sample_rate_hz: int
    n_channels: int
    n_frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate_hz if self.sample_rate_hz else 0.0


@dataclass(frozen=True)
class CallAudio:
    """A whole decoded recording. ``samples`` is float32 [n_channels, n_samples] in [-1, 1]."""

    samples: np.ndarray
    sample_rate_hz: int
    path: str = ""

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate_hz


def probe(path: str | Path, options: AudioOptions | None = None) -> AudioInfo:
    """Read and validate a file's header.

    Raises
    ------
    AudioFormatError
        If the file is missing, not audio, empty, has 0 or too many channels, or is too long.
    """
    options = options if options is not None else AudioOptions()
    path = Path(path)
    if not path.exists():
        raise AudioFormatError(f"{path}: file not found")
    if path.is_dir():
        raise AudioFormatError(f"{path}: is a folder, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioFormatError(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFormatError(
            f"{path}: not a readable audio file ({exc}); supported: WAV, FLAC, OGG, MP3"
        ) from exc
    n_frames = int(info.frames)
    if info.channels < 1:
        raise AudioFormatError(f"{path}: has no audio channels")
    if info.channels > options.max_channels:
        raise AudioFormatError(
            f"{path}: has {info.channels} channels; a call recording is mono (mixed) or stereo "
            f"(agent + caller). Split or downmix it first (e.g. sox in.wav out.wav remix 1 2)"
        )
    if info.samplerate < 8000:
        raise AudioFormatError(f"{path}: sample rate {info.samplerate} Hz is below telephone band (8000 Hz)")
    if n_frames <= 0:
        raise AudioFormatError(f"{path}: contains no audio frames")
    duration_s = n_frames / info.samplerate
    if duration_s > options.max_duration_s:
        raise AudioFormatError(
            f"{path}: {duration_s:.0f} s long, over the limit of {options.max_duration_s:.0f} s "
            f"([audio] max_duration_s)"
        )
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), n_frames, info.format, info.subtype)


def iter_blocks(path: str | Path, *, block_s: float, options: AudioOptions | None = None
                ) -> Iterator[np.ndarray]:
    """Yield float32 blocks [n_channels, n] of ``block_s`` seconds (the last may be shorter).

    A file that turns out truncated mid-way raises AudioFormatError naming the position.
    """
    info = probe(path, options)
    frames = max(1, int(round(block_s * info.sample_rate_hz)))
    read = 0
    try:
        with sf.SoundFile(str(path)) as fh:
            while True:
                block = fh.read(frames, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                read += block.shape[0]
                yield np.ascontiguousarray(block.T)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioFormatError(
            f"{path}: decoding failed after {read / info.sample_rate_hz:.1f} s ({exc}); the file is "
            f"probably truncated or corrupt"
        ) from exc
    if read == 0:
        raise AudioFormatError(f"{path}: header promises audio but no frames could be decoded")


def load_audio(path: str | Path, options: AudioOptions | None = None) -> CallAudio:
    """Decode a whole file into memory (evaluation and tests; batch streams with :func:`iter_blocks`)."""
    info = probe(path, options)
    blocks = list(iter_blocks(path, block_s=60.0, options=options))
    return CallAudio(np.concatenate(blocks, axis=1), info.sample_rate_hz, str(path))


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a whole signal (soxr, high quality). y: [..., n] float32."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32)
    return np.stack([resample(ch, orig_sr=orig_sr, target_sr=target_sr) for ch in y])


class StreamResampler:
    """Block-by-block resampling of one channel whose output does not depend on how the input was cut.

    soxr's stream output differs in the last bits with the chunking, and a last bit can flip a VAD
    decision; so input is re-cut into fixed 20 ms chunks (the telephony packet size) before soxr sees it.
    That is what lets batch (2 s blocks) and live (20 ms packets) give identical scores.
    """

    def __init__(self, *, orig_sr: int, target_sr: int, chunk_s: float = 0.02) -> None:
        self.orig_sr = orig_sr
        self.target_sr = target_sr
        self._chunk = max(1, int(round(orig_sr * chunk_s)))
        self._pending = np.zeros(0, np.float32)
        self._stream = None if orig_sr == target_sr else soxr.ResampleStream(
            orig_sr, target_sr, 1, dtype="float32", quality="HQ")

    def process(self, y: np.ndarray, *, last: bool = False) -> np.ndarray:
        y = y.astype(np.float32, copy=False)
        if self._stream is None:
            return y
        buf = np.concatenate([self._pending, y]) if self._pending.size else y
        n = (buf.size // self._chunk) * self._chunk
        self._pending = buf[n:].copy()
        out = [self._stream.resample_chunk(buf[i:i + self._chunk]) for i in range(0, n, self._chunk)]
        if last:
            out.append(self._stream.resample_chunk(self._pending, last=True))
            self._pending = np.zeros(0, np.float32)
        return np.concatenate(out) if out else np.zeros(0, np.float32)


# --- G.711 (ITU-T) ------------------------------------------------------------------------------
# Decoding uses the standard tables; encoding follows the reference segment search. Both vectorised.

def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    sample = magnitude - 0x84
    return np.where(sign != 0, -sample, sample).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    sample = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, sample, -sample).astype(np.int16)


_MULAW_TABLE = _mulaw_decode_table()
_ALAW_TABLE = _alaw_decode_table()


def decode_mulaw(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    return _MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def decode_alaw(data: bytes) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def encode_mulaw(samples: np.ndarray) -> bytes:
    """int16 samples -> G.711 mu-law bytes."""
    x = np.asarray(samples, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def encode_alaw(samples: np.ndarray) -> bytes:
    """int16 samples -> G.711 A-law bytes (the reference segment search of Sun's g711.c)."""
    pcm = np.asarray(samples, dtype=np.int32) >> 3
    positive = pcm >= 0
    mask = np.where(positive, 0xD5, 0x55)
    magnitude = np.where(positive, pcm, -pcm - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, magnitude, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((magnitude >> np.minimum(shift, 7)) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def float_to_int16(y: np.ndarray) -> np.ndarray:
    return (np.clip(y, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def int16_to_float(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) / 32768.0).astype(np.float32)
