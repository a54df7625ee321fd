"""What an ASR window is: its turns (:class:`AsrChunk`), a request for a batch (:class:`WindowRequest`),
its result (:class:`WindowResult`), and each turn's pooled encoder output (:func:`pool_turns`, read by
the turn emotion heads from the ASR's own encoder pass)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .events import Speaker

ENCODER_FPS = 50          # Whisper encoder frames per second of audio


@dataclass(frozen=True)
class AsrChunk:
    """One speaker turn to transcribe: 16 kHz mono float32 audio and where it sits in the call."""

    speaker: Speaker
    start_s: float
    audio: np.ndarray


@dataclass(frozen=True)
class WindowResult:
    """One Whisper window: a TranscriptEvent per turn with text, the language used and its probabilities."""

    events: list
    language: str | None
    language_probs: Mapping[str, float]
    # per chunk of the window, in order: its pooled encoder output [2 * d_model] (None if too short)
    encodings: tuple = ()


@dataclass(frozen=True)
class WindowRequest:
    """One window for :meth:`Transcriber.transcribe_windows`: its turns, forced language, language prior."""

    chunks: tuple[AsrChunk, ...]
    language: str | None = None
    prior: Mapping[str, float] | None = None


def pool_turns(encoder_output, spans: Sequence[tuple[float, float]]) -> tuple[np.ndarray | None, ...]:
    """Mean and spread over time of the encoder frames (50 a second) inside each span of the window.

    Parameters
    ----------
    encoder_output : ctranslate2 StorageView or array [1, frames, d_model]
    spans : (start_s, end_s) of each turn within the window

    Returns
    -------
    one float32 array [2 * d_model] per span (mean then spread), or None for a span under 4 frames
    """
    frames = np.asarray(encoder_output, dtype=np.float32)[0]
    out = []
    for start_s, end_s in spans:
        a = int(math.floor(start_s * ENCODER_FPS))
        b = min(frames.shape[0], int(math.ceil(end_s * ENCODER_FPS)))
        if b - a < 4:
            out.append(None)
            continue
        block = frames[a:b]
        out.append(np.concatenate([block.mean(axis=0), block.std(axis=0)]).astype(np.float32))
    return tuple(out)
