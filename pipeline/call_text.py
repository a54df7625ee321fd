"""What one transcribed window does to a call: texts on their segments (masked), sentiment and flags,
the turn heads' emotion, and the cues they give fusion (caller) and strain (agent).

:class:`CallText` is applied by the session at the window's tick (``AsrJob.apply_at_s``), so the cues
count from the same call time in batch and live.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .asr_schedule import AsrJob
from .call_strain import CallStrain
from .emotion_stream import EmotionStream
from .events import SessionEvent, StageError, TranscriptEvent
from .fusion import AgitationTracker, TextCue, TurnCue
from .result import CallLog
from .transcript import Transcript

EXCERPT_CHARS = 60  # of the caller's words shown as an alert reason


class CallText:
    """Applies transcribed windows to one call's transcript, fusion and strain."""

    def __init__(self, *, scorer: Any, transcript: Transcript, emotion: Mapping[str, EmotionStream],
                 agitation: AgitationTracker, strain: CallStrain, calllog: CallLog, turn_heads: bool) -> None:
        self._scorer = scorer
        self._transcript = transcript
        self._emotion = emotion
        self._agitation = agitation
        self._strain = strain
        self._log = calllog
        self._turn_heads = turn_heads

    def apply(self, job: AsrJob, window: Any, t: float) -> list[SessionEvent]:
        """Window ``window`` (a WindowResult, or the exception the job raised) applied at call time ``t``."""
        if isinstance(window, BaseException):
            error = self._log.stage_error("asr", t, window)
            return [StageError(error.stage, error.t_s, error.message)]
        if self._turn_heads:
            for idx, encoding in zip(job.indices, window.encodings):
                self._turn_emotion(idx, encoding, t)
        by_start = {round(c.start_s, 3): idx for idx, c in zip(job.indices, job.chunks)}
        return [self._on_text(by_start[round(r.start_s, 3)], r, t) for r in window.events
                if round(r.start_s, 3) in by_start]

    def _turn_emotion(self, idx: int, encoding: np.ndarray | None, t: float) -> None:
        seg = self._transcript.segments[idx]
        if encoding is None or seg.vector is None:
            return
        with self._log.timed("prosody_emotion"):
            try:
                scores = self._emotion[seg.speaker].rescore_turn(seg.vector, encoding)
            except Exception as exc:  # noqa: BLE001 - one turn's emotion failing must not end the call
                self._log.stage_error("prosody_emotion", t, exc)
                return
        self._transcript.set_turn_emotion(idx, scores)
        if seg.speaker in ("caller", "mixed"):
            self._agitation.add_turn(TurnCue(t, float(scores.scores["angry"]), scores.source))

    def _on_text(self, idx: int, res: TranscriptEvent, t: float) -> TranscriptEvent:
        with self._log.timed("text"):
            try:
                score = self._scorer.score(res.text, language=res.language)
                sentiment, flags = float(score.sentiment), tuple(score.flags)
            except Exception as exc:  # noqa: BLE001 - no text score is an error event, never a neutral one
                self._log.stage_error("text", t, exc)
                sentiment, flags = None, ()
            event = self._transcript.set_text(idx, res, sentiment, flags)
        if event.speaker in ("caller", "mixed") and sentiment is not None:
            text = event.text
            excerpt = text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 3] + "..."
            self._agitation.add_text(TextCue(t, sentiment, flags, excerpt))
        elif event.speaker == "agent" and sentiment is not None:
            self._strain.add_agent_sentiment(sentiment)
        return event
