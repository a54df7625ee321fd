"""The engine: models loaded once per process (``Engine``); each call's state in its own ``CallSession``
(``pipeline.session``, which composes the per-call pieces: channel, emotion_stream, asr_schedule,
transcript, call_strain, result).

Per channel: explicit resampling to 16 kHz (VAD, ASR) and to the prosody analysis rate; Silero VAD with
endpointing; every second, prosody + acoustic emotion over the last window of speech (so an acoustic alert
needs no transcript); finished turns are packed into Whisper windows and their text counts from a tick
fixed in call time (one rule for batch and live); text sentiment and flags; fusion into caller agitation;
agent strain; hysteresis alert policies.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from .asr import Transcriber
from .asr_schedule import AsrJob
from .channel import RING_KEEP_S, AudioRing as _Ring
from .config import Config
from .errors import ModelUnavailableError
from .events import CallEnded
from .prosody import ProsodyExtractor
from .result import SCHEMA, CallResult
from .session import CallInfo, CallSession
from .strain import ShiftBook
from .text import TextScorer
from .vad import VadModel

__all__ = ["AsrJob", "CallEnded", "CallInfo", "CallResult", "CallSession", "Engine", "RING_KEEP_S", "SCHEMA",
           "_Ring"]

log = logging.getLogger("pipeline.engine")


class Engine:
    """Every model, loaded once per process and shared (read-only) by all calls."""

    def __init__(self, config: Config, *, vad: VadModel, transcriber: Transcriber | None,
                 extractor: ProsodyExtractor, emotion: Any | None, text: TextScorer,
                 shifts: ShiftBook) -> None:
        self.config = config
        self.vad = vad
        self.transcriber = transcriber
        self.extractor = extractor
        self.emotion = emotion
        self.text = text
        self.shifts = shifts

    @classmethod
    def load(cls, config: Config, *, store: Any | None = None, warm_up: bool = True) -> "Engine":
        from .emotion import EmotionModel

        t0 = time.perf_counter()
        vad = VadModel.load(config.vad)
        transcriber = Transcriber.load(config.asr) if config.asr.enabled else None
        extractor = ProsodyExtractor(config.prosody)
        emotion = None
        if config.emotion.enabled:
            try:
                emotion = EmotionModel.load(config.emotion, prosody=config.prosody)
            except ModelUnavailableError as exc:
                # The product still works on prosody rules; every result says which source it used.
                log.warning("acoustic emotion model unavailable (%s); using prosody rules", exc)
        text = TextScorer.load(config.text)
        # The store decides how shifts are kept: SQLite caches them in this process, PostgreSQL reads
        # through and updates atomically so an agent's calls on several workers add up to one shift.
        shifts = store.shift_book(config.strain) if store is not None else ShiftBook(config.strain)
        engine = cls(config, vad=vad, transcriber=transcriber, extractor=extractor, emotion=emotion,
                     text=text, shifts=shifts)
        if emotion is not None and transcriber is not None and not engine.turn_emotion:
            log.info("emotion model %s has no turn heads for ASR encoder %s: turns get prosody-only emotion",
                     emotion.model_id, getattr(transcriber, "encoder_id", None))
        if warm_up:
            engine.warm_up()
        log.info("engine loaded in %.1f s", time.perf_counter() - t0)
        return engine

    def with_shifts(self, shifts: ShiftBook) -> "Engine":
        """The same models with another shift book (a cluster task's view of its worker's engine)."""
        return Engine(self.config, vad=self.vad, transcriber=self.transcriber, extractor=self.extractor,
                      emotion=self.emotion, text=self.text, shifts=shifts)

    def warm_up(self) -> None:
        """Compile numba kernels and touch every model now, not on the first live call."""
        self.extractor.warm_up()
        if self.transcriber is not None:
            self.transcriber.warm_up()

    @property
    def emotion_source(self) -> str:
        return f"model:{self.emotion.model_id}" if self.emotion is not None else "prosody-rules"

    @property
    def turn_emotion(self) -> bool:
        """Whether transcribed turns get the turn heads (prosody + the ASR's pooled encoder output):
        the model must have them, trained on encodings of this transcriber's kind."""
        return (self.emotion is not None and self.transcriber is not None
                and self.emotion.turn_ready_for(getattr(self.transcriber, "encoder_id", None)))

    def open_call(self, info: CallInfo, *, defer_asr: bool = False, full_windows: bool | None = None) -> CallSession:
        """A new call's state. ``defer_asr`` (live): transcription windows are handed out as jobs
        (``take_asr_jobs``) instead of running inside ``feed``; a session waits for one only when it is
        still out at its tick (``[asr] apply_delay_s`` after it was queued, at most ``apply_wait_s``).
        ``full_windows`` (batch): override ``[asr] batch_packing`` (False = live timing, for evaluation)."""
        return CallSession(self, info, defer_asr=defer_asr, full_windows=full_windows)


