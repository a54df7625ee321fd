"""Per-party PCM streams -> blocks on one call clock, [agent, caller] (or [mixed]).

Each party's audio arrives on its own schedule (two RTP streams, two Twilio tracks, two AudioSocket
connections). The aligner places every piece at its sample position, fills gaps with silence (lost
packets, silence suppression, a party that stops sending) and trims overlaps (duplicates, late packets),
then releases whatever both parties have covered. A party that falls more than ``max_skew`` behind the
other is padded with silence rather than holding the call back: a silent leg must not stall alerts.
"""
from __future__ import annotations

import numpy as np

from . import RoleAudio


class Aligner:
    """Aligns the parties of one call. Not thread-safe: one per call, used from one task."""

    def __init__(self, *, roles: tuple[str, ...], max_skew_samples: int, max_gap_samples: int) -> None:
        if not roles:
            raise ValueError("an aligner needs at least one role")
        self.roles = tuple(roles)
        self.max_skew_samples = int(max_skew_samples)
        self.max_gap_samples = int(max_gap_samples)
        self._chunks: dict[str, list[np.ndarray]] = {r: [] for r in self.roles}
        self._end: dict[str, int] = {r: 0 for r in self.roles}  # call-clock sample after the last one held
        self._released = 0  # call-clock samples already released as blocks
        self.late_samples = 0
        self.gap_samples = 0

    def push(self, audio: RoleAudio) -> None:
        role = audio.role
        if role not in self._chunks:
            raise ValueError(f"role {role!r} is not one of this call's roles {self.roles}")
        pcm = np.asarray(audio.pcm, dtype=np.int16).reshape(-1)
        start = self._end[role] if audio.start_sample is None else int(audio.start_sample)
        if start < self._end[role]:
            # Late or duplicated audio: the time it covers was already filled, keep only what is new.
            overlap = self._end[role] - start
            self.late_samples += min(overlap, pcm.size)
            pcm = pcm[overlap:]
            start = self._end[role]
        if pcm.size == 0:
            return
        gap = start - self._end[role]
        if gap > self.max_gap_samples:
            # A timestamp jump beyond any plausible pause is a discontinuity, not hours of silence.
            gap = 0
        if gap > 0:
            self.gap_samples += gap
            self._chunks[role].append(np.zeros(gap, dtype=np.int16))
        self._chunks[role].append(pcm)
        self._end[role] += gap + pcm.size

    def pop(self, *, final: bool = False) -> np.ndarray | None:
        """Release the aligned block both parties cover (all that is held when ``final``), or None."""
        ends = self._end
        lead = max(ends.values())
        if final:
            ready = lead
        else:
            ready = min(ends.values())
            ready = max(ready, lead - self.max_skew_samples)
        n = ready - self._released
        if n <= 0:
            return None
        out = np.zeros((len(self.roles), n), dtype=np.int16)
        for i, role in enumerate(self.roles):
            if self._end[role] < ready:
                pad = ready - self._end[role]
                self._chunks[role].append(np.zeros(pad, dtype=np.int16))
                self._end[role] = ready
                self.gap_samples += pad
            out[i] = self._take(role, n)
        self._released = ready
        return out

    def _take(self, role: str, n: int) -> np.ndarray:
        chunks = self._chunks[role]
        buf = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        head, rest = buf[:n], buf[n:]
        self._chunks[role] = [rest] if rest.size else []
        return head

    @property
    def released_samples(self) -> int:
        return self._released

    @property
    def held_samples(self) -> int:
        return max(self._end.values()) - self._released
