"""FreeSWITCH mod_audio_fork / mod_audio_stream over WebSocket (subprotocol ``audio.drachtio.org``).

``uuid_audio_fork <uuid> start <ws-url> <mono|mixed|stereo> <8k|16k> <metadata>``: the first message is a
text frame holding the metadata (JSON); every later binary frame is raw L16 (16-bit little-endian PCM)
at the chosen rate; in stereo, caller and callee are interleaved. Frames are multiples of 20 ms (40 ms
occur). FreeSWITCH does not put the mix or rate into the metadata itself, so the fork command's
arguments are carried in the URL query (``?mix=stereo&rate=16000``) or in metadata keys of the same
names, and default to mono 8 kHz as the module does.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Mapping

from ...errors import TapProtocolError
from ..options import LiveOptions
from ..security import BoundedJsonError, parse_json
from . import CallMeta, RoleAudio, l16_to_int16, pick_key

SUBPROTOCOL = "audio.drachtio.org"
MIXES = ("mono", "mixed", "stereo")
RATES = {"8k": 8000, "8000": 8000, "16k": 16000, "16000": 16000}
MAX_METADATA_BYTES = 8192


def parse_rate(value: object) -> int:
    rate = RATES.get(str(value).strip().lower())
    if rate is None:
        raise TapProtocolError(f"audio-fork sample rate {value!r} is not supported; use 8k or 16k")
    return rate


def parse_mix(value: object) -> str:
    mix = str(value).strip().lower()
    if mix not in MIXES:
        raise TapProtocolError(f"audio-fork mix {value!r} is not one of {MIXES}")
    return mix


@dataclass
class AudioForkStream:
    """State of one audio-fork connection: metadata first, then L16 frames."""

    options: LiveOptions
    query: Mapping[str, str]
    meta: CallMeta | None = None
    mix: str = "mono"
    frames: int = 0
    _sample: int = 0

    def on_text(self, text: str) -> CallMeta | None:
        """The first text frame opens the call; later text frames are ignored (returns None)."""
        if self.meta is not None:
            return None
        if len(text.encode("utf-8", "replace")) > MAX_METADATA_BYTES:
            raise TapProtocolError(f"audio-fork metadata exceeds {MAX_METADATA_BYTES} bytes")
        try:
            fields = parse_json(text, max_bytes=MAX_METADATA_BYTES, max_depth=8) if text.strip() else {}
        except BoundedJsonError as exc:
            raise TapProtocolError(f"audio-fork metadata dropped: {exc}") from exc
        if not isinstance(fields, dict):
            raise TapProtocolError("audio-fork metadata must be a JSON object")
        self.mix = parse_mix(self.query.get("mix", fields.get("mix", "mono")))
        rate = parse_rate(self.query.get("rate", fields.get("sampleRate", fields.get("rate", "8k"))))
        call_id = pick_key(fields, self.options.call_id_keys) or pick_key(self.query, ("callId", "uuid"))
        agent_id = pick_key(fields, self.options.agent_id_keys) or pick_key(self.query, ("agentId",))
        self.meta = CallMeta(
            call_id=call_id or f"fork-{uuid.uuid4().hex[:12]}",
            sample_rate_hz=rate,
            layout="mixed" if self.mix == "mixed" else "stereo",
            agent_id=agent_id,
            source="tap:audio-fork",
            extra={"mix": self.mix},
        )
        return self.meta

    def on_binary(self, payload: bytes) -> list[RoleAudio]:
        """One L16 frame -> per-role audio. Before the metadata, or misaligned, it is malformed."""
        if self.meta is None:
            raise TapProtocolError("audio-fork binary frame before the metadata text frame")
        if len(payload) > self.options.max_frame_bytes:
            raise TapProtocolError(
                f"audio-fork frame of {len(payload)} bytes exceeds live.max_frame_bytes="
                f"{self.options.max_frame_bytes}")
        n_channels = 2 if self.mix == "stereo" else 1
        pcm = l16_to_int16(payload, n_channels=n_channels)
        start = self._sample
        self._sample += pcm.shape[1]
        self.frames += 1
        if self.mix == "stereo":
            first, second = self.options.audio_fork_stereo_roles
            return [RoleAudio(first, pcm[0], start), RoleAudio(second, pcm[1], start)]
        role = "mixed" if self.mix == "mixed" else self.options.audio_fork_mono_role
        return [RoleAudio(role, pcm[0], start)]


def metadata_message(*, call_id: str, agent_id: str | None, mix: str, rate_hz: int) -> str:
    """The first text frame a fork sends (used by the replay client)."""
    fields = {"callId": call_id, "mix": mix, "sampleRate": rate_hz}
    if agent_id is not None:
        fields["agentId"] = agent_id
    return json.dumps(fields)


def server_message(kind: str, **fields: object) -> str:
    """A JSON text frame the server may send back down the fork (e.g. a live alert)."""
    return json.dumps({"type": kind, **fields})

