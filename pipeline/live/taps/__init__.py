"""Tap wire formats, as pure functions and small state machines over bytes (no sockets here).

Every parser turns outside bytes into :class:`CallMeta` (who and what the call is) and :class:`RoleAudio`
(one party's int16 PCM, placed on the call's sample clock). Bad input raises
:class:`~pipeline.errors.TapProtocolError`; the network layer drops that frame, counts it and goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

from ...errors import TapProtocolError

Role = Literal["agent", "caller", "mixed"]


@dataclass(frozen=True)
class CallMeta:
    """What a tap says about its call. ``layout`` is "stereo" (agent and caller apart) or "mixed"."""

    call_id: str
    sample_rate_hz: int
    layout: Literal["stereo", "mixed"]
    agent_id: str | None = None
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    peer: str = ""  # the tap's source address (per-source call quota); "" when unknown


@dataclass(frozen=True)
class RoleAudio:
    """One party's PCM. ``start_sample`` places it on the call clock (None = right after the last)."""

    role: Role
    pcm: np.ndarray  # int16 [n]
    start_sample: int | None = None


def pick_key(fields: Mapping, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` present in ``fields`` with a usable scalar value, as a bounded string."""
    for key in keys:
        value = fields.get(key) if isinstance(fields, Mapping) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return safe_id(str(value))
    return None


def safe_id(value: str, *, limit: int = 128) -> str:
    """An identifier from outside, trimmed to printable characters and a bounded length."""
    cleaned = "".join(ch for ch in value if ch.isprintable() and ch not in "/\\\"'<>").strip()
    if not cleaned:
        raise TapProtocolError(f"identifier {value[:40]!r} has no printable characters")
    return cleaned[:limit]


def l16_to_int16(payload: bytes, *, n_channels: int = 1) -> np.ndarray:
    """Little-endian 16-bit PCM bytes -> int16 [n_channels, n]. Odd or misaligned sizes are malformed."""
    frame = 2 * n_channels
    if len(payload) == 0 or len(payload) % frame:
        raise TapProtocolError(
            f"L16 frame of {len(payload)} bytes is not a whole number of {n_channels}-channel samples "
            f"({frame} bytes each)")
    samples = np.frombuffer(payload, dtype="<i2").astype(np.int16)
    return samples.reshape(-1, n_channels).T.copy()


__all__ = ["CallMeta", "RoleAudio", "Role", "TapProtocolError", "pick_key", "safe_id", "l16_to_int16"]
