"""One party's audio in a call: explicit resampling, a ring of recent audio by call time, VAD in
lock-step with the session's 1 Hz clock, and the party's speech seconds.

A :class:`Channel` owns everything per channel; the session only asks it for audio slices, finished
turns and how much speech fell in a span. :class:`TalkStats` owns the call's conversation figures
(overtalk, long silences) that need both channels at once.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .audio import StreamResampler
from .events import Speaker, SpeechTurn
from .vad import SAMPLE_RATE_HZ, WINDOW_S, VadModel

RING_KEEP_S = 45.0


class AudioRing:
    """The recent audio of one channel at one rate, addressable by call time.

    A preallocated buffer: appending a 20 ms live packet writes 20 ms, it does not copy the whole window
    (the oldest audio is shifted out only when the buffer is full, so the cost is amortised).
    """

    def __init__(self, sr: int) -> None:
        self.sr = sr
        self._keep = int(RING_KEEP_S * sr)
        self._buf = np.zeros(2 * self._keep, np.float32)
        self._n = 0       # samples held
        self._start = 0   # call sample index of _buf[0]

    @property
    def end_sample(self) -> int:
        return self._start + self._n

    def append(self, y: np.ndarray) -> None:
        if y.size > self._keep:
            self._start += self._n + y.size - self._keep
            self._buf[: self._keep] = y[-self._keep:]
            self._n = self._keep
            return
        if self._n + y.size > self._buf.size:
            drop = self._n + y.size - self._keep
            self._buf[: self._n - drop] = self._buf[drop: self._n]
            self._n -= drop
            self._start += drop
        self._buf[self._n: self._n + y.size] = y
        self._n += y.size

    def slice(self, start_s: float, end_s: float) -> np.ndarray:
        a = max(int(round(start_s * self.sr)), self._start)
        b = min(int(round(end_s * self.sr)), self.end_sample)
        if b <= a:
            return np.zeros(0, np.float32)
        return self._buf[a - self._start: b - self._start]


class Channel:
    """One channel of a call (one party, or the mixed recording): its resamplers, rings and VAD."""

    def __init__(self, index: int, speaker: Speaker, *, call_sr_hz: int, prosody_sr_hz: int,
                 vad: VadModel) -> None:
        self.index = index
        self.speaker: Speaker = speaker
        self.prosody_sr_hz = prosody_sr_hz
        self._to16k = StreamResampler(orig_sr=call_sr_hz, target_sr=SAMPLE_RATE_HZ)
        self._to_prosody = StreamResampler(orig_sr=call_sr_hz, target_sr=prosody_sr_hz)
        self.vad = vad.stream(speaker)
        self.ring16 = AudioRing(SAMPLE_RATE_HZ)
        self.ring_pros = AudioRing(prosody_sr_hz)
        self.speech_s = 0.0          # this party's speech so far (counted per tick)
        self.vad_fed = 0             # 16 kHz samples through VAD
        self._speech_flags: list[bool] = []  # per VAD window: speech yes/no
        self._backlog = np.zeros(0, np.float32)  # 16 kHz not yet through VAD
        self.vad_s = 0.0             # CPU seconds in VAD (for the stage figures)

    def push(self, y: np.ndarray, *, last: bool) -> None:
        """Resample a block of this channel (call rate) into both rings and the VAD backlog."""
        y16 = self._to16k.process(y, last=last)
        self.ring16.append(y16)
        self.ring_pros.append(self._to_prosody.process(y, last=last))
        self._backlog = np.concatenate([self._backlog, y16]) if self._backlog.size else y16

    def vad_until(self, sample_16k: int) -> list[SpeechTurn]:
        """Run VAD up to 16 kHz sample ``sample_16k`` (or as far as audio is there); finished turns."""
        return self._feed_vad(sample_16k - self.vad_fed)

    def vad_rest(self) -> list[SpeechTurn]:
        """End of call: everything left through VAD, and the turn still open closed."""
        return self._feed_vad(self._backlog.size) + self.vad.flush()

    def ready_for(self, tick: int) -> bool:
        """Whether both VAD and the prosody ring have reached call second ``tick``."""
        return self.vad_fed >= tick * SAMPLE_RATE_HZ and self.ring_pros.end_sample >= tick * self.prosody_sr_hz

    def speech_in(self, start_s: float, end_s: float) -> float:
        """Seconds of speech VAD found in [start_s, end_s)."""
        a, b = max(0, int(start_s / WINDOW_S)), int(end_s / WINDOW_S)
        return sum(self._speech_flags[a:b]) * WINDOW_S

    def _feed_vad(self, n: int) -> list[SpeechTurn]:
        n = min(max(n, 0), self._backlog.size)
        if n == 0:
            return []
        t0 = time.perf_counter()
        speaking, turns = self.vad.process(self._backlog[:n])
        self._backlog = self._backlog[n:]
        self.vad_fed += n
        self._speech_flags.extend(speaking.tolist())
        self.vad_s += time.perf_counter() - t0
        return turns


class TalkStats:
    """Who spoke when, per second: overtalk and long silences (both parties at once)."""

    def __init__(self, long_silence_s: float) -> None:
        self._long_silence_ticks = math.ceil(long_silence_s)
        self.overtalk_s = 0.0
        self.long_silences = 0
        self._silent_run_s = 0.0

    def step(self, speaking: dict[str, bool]) -> bool:
        """Count one second; returns whether agent and caller spoke over each other."""
        overtalk = speaking.get("agent", False) and speaking.get("caller", False)
        if overtalk:
            self.overtalk_s += 1.0
        if not any(speaking.values()):
            self._silent_run_s += 1.0
            if self._silent_run_s == self._long_silence_ticks:
                self.long_silences += 1
        else:
            self._silent_run_s = 0.0
        return overtalk
