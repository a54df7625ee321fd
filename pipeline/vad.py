"""Voice activity per channel: Silero VAD v6 (the ONNX file bundled with faster-whisper, run by
onnxruntime, no torch, no network), streamed block by block with endpointing hysteresis.

``VadModel`` is loaded once per process; each channel of each call gets its own ``VadStream`` holding the
LSTM state and the endpointing state (Silero's own iterator keeps state inside the shared model — the
anti-example this avoids). Streaming gives bit-identical probabilities whatever the block sizes.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import ModelUnavailableError
from .events import Speaker, SpeechTurn

log = logging.getLogger("pipeline.vad")

SAMPLE_RATE_HZ = 16000
WINDOW = 512          # samples per Silero window at 16 kHz (32 ms)
CONTEXT = 64          # samples of left context Silero v6 expects
WINDOW_S = WINDOW / SAMPLE_RATE_HZ
# Windows quieter than this never hold speech; skipping the network on them makes hours of silence or
# hold gaps nearly free. (-70 dBFS RMS.)
_SILENCE_RMS = 10 ** (-70 / 20)


@dataclass(frozen=True)
class VadOptions:
    """[vad] options."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: int = 250
    min_silence_ms: int = 600
    speech_pad_ms: int = 200
    max_turn_s: float = 12.0
    long_silence_s: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("vad needs 0 < neg_threshold <= threshold < 1")
        if self.max_turn_s < 1.0:
            raise ValueError("vad.max_turn_s must be at least 1 s")


class VadModel:
    """The Silero ONNX session, shared by every stream (onnxruntime sessions are thread-safe)."""

    def __init__(self, session, options: VadOptions) -> None:
        self._session = session
        self.options = options
        self._lock = threading.Lock()

    @classmethod
    def load(cls, options: VadOptions) -> "VadModel":
        try:
            import onnxruntime
            from faster_whisper.utils import get_assets_path
        except ImportError as exc:
            raise ModelUnavailableError("VAD needs onnxruntime and faster-whisper (pip install faster-whisper)") from exc
        path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
        if not os.path.exists(path):
            raise ModelUnavailableError(f"Silero VAD model missing at {path}; reinstall faster-whisper")
        so = onnxruntime.SessionOptions()
        so.inter_op_num_threads = 1
        so.intra_op_num_threads = 1
        so.log_severity_level = 4
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=so)
        return cls(session, options)

    def stream(self, speaker: Speaker) -> "VadStream":
        return VadStream(self, speaker)

    def _run(self, batch: np.ndarray, h: np.ndarray, c: np.ndarray):
        out, h, c = self._session.run(None, {"input": batch, "h": h, "c": c})
        return np.asarray(out, np.float32).reshape(-1), h, c


@dataclass
class _Endpoint:
    in_speech: bool = False
    start_s: float = 0.0
    last_voiced_end_s: float = 0.0


class VadStream:
    """One channel's VAD: feed 16 kHz audio, get per-window probabilities and finished turns."""

    def __init__(self, model: VadModel, speaker: Speaker) -> None:
        self._model = model
        self.options = model.options
        self.speaker = speaker
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._n_windows = 0
        self._ep = _Endpoint()

    @property
    def time_s(self) -> float:
        """Audio time processed so far (end of the last full window)."""
        return self._n_windows * WINDOW_S

    @property
    def in_speech(self) -> bool:
        return self._ep.in_speech

    @property
    def current_turn_start_s(self) -> float | None:
        return self._ep.start_s if self._ep.in_speech else None

    def process(self, audio_16k: np.ndarray) -> tuple[np.ndarray, list[SpeechTurn]]:
        """Feed 16 kHz mono samples. Returns (speech state per new 32 ms window, finished turns).

        The state is the endpointer's (hysteresis between ``threshold`` and ``neg_threshold``), not the
        raw probability: a speaker mid-turn stays "speaking" through dips that Silero scores at 0.4.

        Turns carry ``speech_pad_ms`` of padding; a turn longer than ``max_turn_s`` is cut so its text
        arrives in time (the rest continues as a new turn).
        """
        buf = np.concatenate([self._pending, audio_16k.astype(np.float32, copy=False)])
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW:]
        if n == 0:
            return np.zeros(0, np.float32), []
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        ctx = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]], axis=0)
        self._context = windows[-1, -CONTEXT:].copy()
        probs = np.zeros(n, np.float32)
        speaking = np.zeros(n, bool)
        loud = np.sqrt(np.mean(windows ** 2, axis=1)) >= _SILENCE_RMS
        if loud.any():
            idx = np.flatnonzero(loud)
            batch = np.concatenate([ctx[idx], windows[idx]], axis=1)
            out, self._h, self._c = self._model._run(batch, self._h, self._c)
            probs[idx] = out
        turns = []
        for i, p in enumerate(probs):
            t0 = self._n_windows * WINDOW_S
            self._n_windows += 1
            turn = self._step(float(p), t0)
            speaking[i] = self._ep.in_speech and p >= self.options.neg_threshold
            if turn is not None:
                turns.append(turn)
        return speaking, turns

    def flush(self) -> list[SpeechTurn]:
        """End of audio: close an open turn."""
        if self._ep.in_speech:
            turn = self._close(self._ep.last_voiced_end_s if self._ep.last_voiced_end_s > self._ep.start_s
                               else self.time_s)
            return [turn] if turn else []
        return []

    def _step(self, p: float, t0: float) -> SpeechTurn | None:
        o, ep = self.options, self._ep
        t1 = t0 + WINDOW_S
        if not ep.in_speech:
            if p >= o.threshold:
                ep.in_speech, ep.start_s, ep.last_voiced_end_s = True, t0, t1
            return None
        if p >= o.neg_threshold:
            ep.last_voiced_end_s = t1
        if t1 - ep.last_voiced_end_s >= o.min_silence_ms / 1000.0:
            return self._close(ep.last_voiced_end_s)
        if t1 - ep.start_s >= o.max_turn_s:
            turn = self._close(t1)
            if p >= o.neg_threshold:  # still speaking: continue as a new turn
                ep.in_speech, ep.start_s, ep.last_voiced_end_s = True, t1, t1
            return turn
        return None

    def _close(self, end_s: float) -> SpeechTurn | None:
        ep, o = self._ep, self.options
        start_s = ep.start_s
        ep.in_speech = False
        if end_s - start_s < o.min_speech_ms / 1000.0:
            return None
        pad = o.speech_pad_ms / 1000.0
        return SpeechTurn(self.speaker, round(max(0.0, start_s - pad), 3), round(end_s + pad, 3))
