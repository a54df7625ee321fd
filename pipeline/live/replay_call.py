"""What every ``callpulse replay`` format shares: the call to send (:class:`ReplayCall`, both parties as
int16 at the file's rate, resampled explicitly on request), 20 ms packets on an absolute schedule
(:class:`Pacer`), and the error a refused call raises (:class:`CallRefusedError`).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..audio import float_to_int16, load_audio, resample
from ..errors import AudioFormatError, TapProtocolError

PACKET_S = 0.02


class CallRefusedError(TapProtocolError):
    """The service refused or cut the call (WebSocket close 1013/1008, an error frame, an AudioSocket
    hangup, a SIP 4xx/5xx): ``callpulse replay`` exits non-zero so a script can tell."""


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


def frames(n: int, step: int):
    for i, start in enumerate(range(0, n, step)):
        yield i, start, min(start + step, n)
