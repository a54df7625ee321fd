"""One call's state: :class:`CallSession` composes the per-call pieces and runs the 1 Hz tick loop.

Batch and live run this same code. A session is fed blocks of audio in call time and decides everything
by audio time (never wall-clock time), so a file replayed as fast as possible gives exactly the result
it gives when streamed in real time, with ASR on: a window's text counts from a tick fixed in call time
(``asr_schedule``), which live waits for when the ASR pool is late (audio is held, not lost).

Who owns what: each :class:`~pipeline.channel.Channel` its resamplers, audio rings and VAD; each
speaker's :class:`~pipeline.emotion_stream.EmotionStream` their baselines; the
:class:`~pipeline.asr_schedule.AsrScheduler` the transcription queue, held results and language prior;
the :class:`~pipeline.transcript.Transcript` the segments and masking streams; the
:class:`~pipeline.call_strain.CallStrain` the agent's exposure and the recovery break; the session
itself the fusion tracker, the agitation policy, the timelines and the alerts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol

import numpy as np

from .alerts import AlertPolicy
from .asr_schedule import AsrJob, AsrScheduler
from .call_strain import CallStrain
from .call_text import CallText
from .channel import Channel, TalkStats
from .config import Config
from .emotion_stream import AcousticReading, EmotionStream
from .errors import AudioFormatError
from .events import CallEnded, LevelUpdate, SessionEvent, Speaker, SpeechTurn
from .fusion import AgitationTracker
from .result import CallLog, CallResult
from .strain import ShiftBook
from .transcript import Transcript
from .vad import SAMPLE_RATE_HZ

MIN_WINDOW_SPEECH_S = 0.5


@dataclass(frozen=True)
class CallInfo:
    """What is known about a call when it starts."""

    call_id: str
    sample_rate_hz: int
    n_channels: int
    agent_channel: int | None = 0
    agent_id: str | None = None
    source: str = ""
    started_at: str | None = None   # ISO 8601; used for idle-time breaks between an agent's calls
    language: str | None = None     # force one language for ASR ("zh", "en"), None = configured

    def __post_init__(self) -> None:
        if self.sample_rate_hz < 8000:
            raise AudioFormatError(f"call {self.call_id}: sample rate {self.sample_rate_hz} Hz is below 8000 Hz")
        if self.n_channels not in (1, 2):
            raise AudioFormatError(f"call {self.call_id}: {self.n_channels} channels; expected 1 (mixed) or 2")
        if self.n_channels == 2 and self.agent_channel not in (0, 1):
            raise AudioFormatError(f"call {self.call_id}: stereo needs agent_channel 0 or 1")

    def roles(self) -> tuple[Speaker, ...]:
        if self.n_channels == 1:
            return ("mixed",)
        return ("agent", "caller") if self.agent_channel == 0 else ("caller", "agent")


class SessionModels(Protocol):
    """What a session needs of the engine: the shared models and the shift book (``Engine`` has them)."""

    config: Config
    vad: Any
    transcriber: Any
    extractor: Any
    emotion: Any
    text: Any
    shifts: ShiftBook
    turn_emotion: bool
    emotion_source: str


class CallSession:
    """One call's state. Feed it audio blocks in order; never from two threads at once."""

    def __init__(self, engine: SessionModels, info: CallInfo, *, defer_asr: bool = False,
                 full_windows: bool | None = None) -> None:
        self.engine, self.info = engine, info
        cfg = self.config = engine.config
        sr_p = int(cfg.prosody.analysis_sr_hz)
        self._channels = [Channel(i, role, call_sr_hz=info.sample_rate_hz, prosody_sr_hz=sr_p, vad=engine.vad)
                          for i, role in enumerate(info.roles())]
        self._emotion = {role: EmotionStream(role, extractor=engine.extractor, model=engine.emotion, prosody=cfg.prosody,
                                             sr_hz=sr_p, warmup_s=cfg.fusion.baseline_warmup_s,
                                             turn_heads=engine.turn_emotion) for role in info.roles()}
        self._transcript = Transcript(cfg.masking)
        self._talk = TalkStats(cfg.vad.long_silence_s)
        self._agitation = AgitationTracker(cfg.fusion)
        self._policy = AlertPolicy("caller_agitation", cfg.alerts.caller_agitation, info.call_id, info.agent_id)
        self._strain = CallStrain(cfg.strain, cfg.alerts.agent_strain, engine.shifts, call_id=info.call_id,
                                  agent_id=info.agent_id, started_at=parse_time(info.started_at),
                                  measurable=info.n_channels == 2)
        self.defer_asr = defer_asr and engine.transcriber is not None
        self._asr = AsrScheduler(cfg.asr, language=info.language, deferred=self.defer_asr,
                                 enabled=engine.transcriber is not None, full_windows=full_windows)
        self._log = CallLog(info.call_id, ("resample", "asr", "prosody_emotion", "text", "fusion"))
        self._text = CallText(scorer=engine.text, transcript=self._transcript, emotion=self._emotion,
                              agitation=self._agitation, strain=self._strain, calllog=self._log,
                              turn_heads=engine.turn_emotion)
        self._sync = not self.defer_asr   # run a due window here (batch, hang-up) instead of waiting for it
        self._samples_in, self._next_tick, self._finished = 0, 1, False
        self._held: list[np.ndarray] = []           # audio fed while waiting for a late window
        self._text_tick: float | None = None        # the tick whose text step waits for a window
        self._turns: list[tuple[SpeechTurn, Channel]] = []
        self._timeline, self._prosody_timeline = [], []   # of dicts, as written out

    @property
    def time_s(self) -> float:
        return self._samples_in / self.info.sample_rate_hz

    @property
    def stage_seconds(self) -> Mapping[str, float]:
        """CPU seconds spent per stage so far (for benchmarks)."""
        return {**self._log.stage_s, "vad": sum(ch.vad_s for ch in self._channels)}

    def feed(self, block: np.ndarray) -> list[SessionEvent]:
        """Feed float32 audio [n_channels, n_samples] (or [n_samples] for mono) at the call's rate."""
        if self._finished:
            raise RuntimeError(f"call {self.info.call_id} is finished; open a new session")
        block = checked_block(block, n_channels=len(self._channels), call_id=self.info.call_id)
        self._samples_in += block.shape[1]
        self._held.append(block)
        return self._advance()

    def finish(self) -> list[SessionEvent]:
        """End of the call: flush every stage, close alerts, update the agent's shift, emit the result."""
        if self._finished:
            return []
        self._sync = True  # windows still out at hang-up are transcribed here, once
        events = self._advance()
        self._ingest(np.zeros((len(self._channels), 0), np.float32), last=True)
        events += self._run_ticks()
        self._finished, end_s = True, self.time_s
        self._turns += [(turn, ch) for ch in self._channels for turn in ch.vad_rest()]
        self._handle_turns()
        if end_s - (self._next_tick - 1) > 0.25 or self._next_tick == 1:
            events += self._tick(end_s) + self._text_step(end_s)
        self._asr.queue_due(end_s, force=True)
        self._asr.drop_ready()
        events += self._text_step(end_s, every_open=True)
        events += [self._log.record(ev) for ev in self._policy.close(end_s) + self._strain.end(end_s)]
        self._transcript.finish()
        return events + [CallEnded(self.info.call_id, self.result())]

    def take_asr_jobs(self) -> list[AsrJob]:
        """Windows due since the last call (``defer_asr``): run ``job.run(engine.transcriber)`` anywhere,
        hand the outcome back with :meth:`apply_asr` from the thread that feeds this session."""
        return self._asr.take_ready()

    def apply_asr(self, job: AsrJob, window: Any, *, t_available: float | None = None) -> list[SessionEvent]:
        """A window's transcripts (or the exception it raised): its text counts from ``job.apply_at_s``
        (held until then; the session waits for it there) or from ``t_available`` if given. A job already
        applied (e.g. by ``finish``) is ignored. Returns the events of the ticks the session went on with."""
        if job.interim:
            if not self._asr.accept_interim(job) or self._finished or isinstance(window, BaseException):
                return []
            return [self._transcript.preview(e) for e in window.events]
        if not self._asr.deliver(job, window):
            return []
        if t_available is not None:
            return self._text.apply(job, self._asr.pop(job), t_available)
        return self._advance()

    def shift_so_far(self) -> dict | None:
        """The agent's shift as if the call ended now (JSON; None without an agent): live checkpoints."""
        return self._strain.shift_so_far(self.time_s)

    def call_result(self) -> CallResult:
        return CallResult.assemble(
            self.info, duration_s=self.time_s, transcript=self._transcript, timeline=self._timeline,
            prosody_timeline=self._prosody_timeline, talk=self._talk, calllog=self._log, strain_end=self._strain.level,
            speech_s={ch.speaker: ch.speech_s for ch in self._channels}, config=self.config,
            emotion_source=self.engine.emotion_source,
            asr_model=self.engine.transcriber.model_id if self.engine.transcriber else None)

    def result(self) -> dict:
        """The per-call JSON (schema callpulse.call/1) as far as the call has got."""
        return self.call_result().to_json()

    def _advance(self) -> list[SessionEvent]:
        """Process held audio tick by tick until it is used up or a tick waits for a window."""
        events = self._run_ticks()
        while self._text_tick is None and self._held:
            self._ingest(self._held.pop(0), last=False)
            events += self._run_ticks()
        return events

    def _ingest(self, block: np.ndarray, *, last: bool) -> None:
        with self._log.timed("resample"):
            for ch in self._channels:
                ch.push(block[ch.index], last=last)

    def _run_ticks(self) -> list[SessionEvent]:
        """Advance VAD and the 1 Hz clock in lock-step, one second at a time. Everything is decided at
        tick boundaries in call time, in the same order whatever the block sizes."""
        events: list[SessionEvent] = []
        while True:
            if self._text_tick is not None:
                events += self._text_step(self._text_tick)
                if self._text_tick is not None:
                    return events
            tick = self._next_tick
            self._turns += [(turn, ch) for ch in self._channels for turn in ch.vad_until(tick * SAMPLE_RATE_HZ)]
            if not all(ch.ready_for(tick) for ch in self._channels):
                return events
            self._handle_turns()
            events += self._tick(float(tick))
            self._next_tick += 1

    def _tick(self, t: float) -> list[SessionEvent]:
        speaking, caller_calm = {}, self._agitation.level < self.config.alerts.caller_agitation.clear_level
        window_s = self.config.emotion.window_s
        for ch in self._channels:
            speech = ch.speech_in(t - 1.0, t)
            speaking[ch.speaker] = speech >= 0.3
            ch.speech_s += speech
            if ch.speaker == "agent":
                self._strain.add_talk(speech)
            if ch.speech_in(t - window_s, t) >= MIN_WINDOW_SPEECH_S:
                r = self._read(ch, t - window_s, t, learn=True, caller_calm=caller_calm)
                if r is not None:
                    self._prosody_timeline.append(r.timeline_row(t, ch.speaker))
                    if r.voice_drift is not None:
                        self._strain.add_drift(r.voice_drift)
                    if ch.speaker in ("caller", "mixed"):
                        self._agitation.add_acoustic(r.cue(t))
        overtalk = self._talk.step(speaking)
        with self._log.timed("fusion"):
            level, reasons = self._agitation.step(t, overtalk=overtalk)
            strain = self._strain.tick(t, level)
            self._timeline.append({"t_s": round(t, 2), "caller_agitation": round(level, 3),
                                   "agent_strain": round(strain, 3)})
            events: list[SessionEvent] = [LevelUpdate(t, level, strain, reasons)]
            events += [self._log.record(ev) for ev in self._policy.update(t, level, reasons)]
        self._asr.queue_due(t)   # ASR decisions run on the audio clock too
        self._asr.queue_interims(t, self._channels)
        self._text_tick = t
        return events

    def _text_step(self, t: float, *, every_open: bool = False) -> list[SessionEvent]:
        """Apply the windows whose text counts by tick ``t`` (``every_open``: all, at hang-up), in job
        order; stop at one not back yet (live), or transcribe it now (batch, hang-up)."""
        events: list[SessionEvent] = []
        for job in self._asr.open_jobs() if every_open else self._asr.due(t):
            if not self._asr.has_result(job) and not self._sync:
                if self._asr.may_wait_for(job):
                    return events
                continue  # given up waiting: it counts when it comes
            if not self._asr.has_result(job):
                with self._log.timed("asr"):
                    self._asr.run_now(job, self.engine.transcriber)
            events += self._text.apply(job, self._asr.pop(job), t)
        self._text_tick = None
        return events

    def _handle_turns(self) -> None:
        queue, self._turns = sorted(self._turns, key=lambda tc: (tc[0].end_s, tc[1].index)), []
        for turn, ch in queue:
            end = min(turn.end_s, ch.vad_fed / SAMPLE_RATE_HZ)
            reading = self._read(ch, turn.start_s, end, learn=False, caller_calm=True)
            idx = self._transcript.add_turn(turn.speaker, turn.start_s, end, reading)
            self._asr.add_turn(idx, turn.speaker, turn.start_s, end, ch.ring16)

    def _read(self, ch: Channel, start_s: float, end_s: float, *, learn: bool,
              caller_calm: bool) -> AcousticReading | None:
        with self._log.timed("prosody_emotion"):
            try:
                return self._emotion[ch.speaker].read(ch.ring_pros.slice(start_s, end_s), speech_s=ch.speech_s,
                                                      learn=learn, caller_calm=caller_calm)
            except Exception as exc:  # noqa: BLE001 - a stage failure must not end the call
                self._log.stage_error("prosody_emotion", end_s, exc)
                return None


def checked_block(block: np.ndarray, *, n_channels: int, call_id: str) -> np.ndarray:
    """``block`` as float32 [n_channels, n]; NaN and infinities (a broken decoder) clipped, not passed on."""
    block = np.asarray(block, dtype=np.float32)
    block = block[None, :] if block.ndim == 1 else block
    if block.ndim != 2 or block.shape[0] != n_channels:
        raise AudioFormatError(f"call {call_id}: block of shape {block.shape}, expected ({n_channels}, n)")
    if not np.all(np.isfinite(block)):
        block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    return block


def parse_time(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError as exc:
        raise AudioFormatError(f"started_at {ts!r} is not an ISO 8601 time (e.g. 2026-11-29T09:30:00+08:00)") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
