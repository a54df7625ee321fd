"""The engine: models loaded once per process (``Engine``), each call's state in its own ``CallSession``.

Batch and live run this same code. A session is fed blocks of audio in call time and decides everything
by audio time (never wall-clock time), so a file replayed as fast as possible gives exactly the scores it
gives when streamed in real time.

Per channel: explicit resampling to 16 kHz (VAD, ASR) and to the prosody analysis rate; Silero VAD with
endpointing; every second, prosody + acoustic emotion over the last window of speech (so an acoustic alert
needs no transcript); finished turns are packed into one Whisper window per channel and transcribed once
``max_delay_s`` of audio has passed (bounding text latency while sharing encoder passes); text sentiment
and flags; fusion into caller agitation; agent strain; hysteresis alert policies.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from . import __version__
from .alerts import AlertPolicy, PolicyOptions, alert_id
from .asr import AsrChunk, Transcriber
from .audio import StreamResampler
from .config import Config
from .errors import AudioFormatError, ModelUnavailableError
from .events import (AlertEvent, CallEnded, LevelUpdate, Speaker, SpeechTurn, StageError, TranscriptEvent)
from .fusion import AcousticCue, AgitationTracker, TextCue, TurnCue
from .masking import StreamMasker, mask_text
from .prosody import ProsodyExtractor, SpeakerBaseline
from .strain import ShiftBook, ShiftState, strain_level
from .text import TextScorer
from .vad import SAMPLE_RATE_HZ, WINDOW_S, VadModel, VadStream

log = logging.getLogger("pipeline.engine")

SCHEMA = "callpulse.call/1"
EMOTION_WINDOW_S = 2.0
MIN_WINDOW_SPEECH_S = 0.5
RING_KEEP_S = 45.0


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
        shifts = ShiftBook(config.strain, load=store.load_shift if store else None,
                           save=store.save_shift if store else None)
        engine = cls(config, vad=vad, transcriber=transcriber, extractor=extractor, emotion=emotion,
                     text=text, shifts=shifts)
        if emotion is not None and transcriber is not None and not engine.turn_emotion:
            log.info("emotion model %s has no turn heads for ASR encoder %s: turns get prosody-only emotion",
                     emotion.model_id, getattr(transcriber, "encoder_id", None))
        if warm_up:
            engine.warm_up()
        log.info("engine loaded in %.1f s", time.perf_counter() - t0)
        return engine

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

    def open_call(self, info: CallInfo, *, defer_asr: bool = False) -> "CallSession":
        """A new call's state. ``defer_asr`` (live): transcription windows are handed out as jobs
        (``take_asr_jobs``) instead of running inside ``feed``, so acoustic alerts never wait for ASR."""
        return CallSession(self, info, defer_asr=defer_asr)


# --- per-call state ------------------------------------------------------------------------------

class _Ring:
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


@dataclass
class _Segment:
    speaker: Speaker
    start_s: float
    end_s: float
    text: str = ""
    language: str | None = None
    sentiment: float | None = None
    flags: tuple[str, ...] = ()
    emotion: Mapping | None = None
    arousal: float | None = None
    prosody: Mapping | None = None
    words: tuple = ()
    vector: Any = None       # the turn's emotion feature vector (not written out)

    def as_json(self) -> dict:
        return {"speaker": self.speaker, "start_s": round(self.start_s, 2), "end_s": round(self.end_s, 2),
                "text": self.text, "language": self.language,
                "sentiment": None if self.sentiment is None else round(self.sentiment, 3),
                "arousal": None if self.arousal is None else round(self.arousal, 3),
                "emotion": self.emotion, "prosody": self.prosody, "flags": list(self.flags),
                "words": [{"start_s": w.start_s, "end_s": w.end_s, "text": w.text, "p": w.probability}
                          for w in self.words]}


@dataclass
class _Channel:
    index: int
    speaker: Speaker
    to16k: StreamResampler
    to_prosody: StreamResampler
    vad: VadStream
    ring16: _Ring
    ring_pros: _Ring
    prosody_baseline: SpeakerBaseline
    emotion_baseline: Any
    turn_baseline: Any
    speech_flags: list = field(default_factory=list)   # per VAD window: speech yes/no
    speech_s: float = 0.0
    backlog: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 16 kHz not yet through VAD
    vad_fed: int = 0


def _rules_emotion(z: Mapping[str, float]) -> dict:
    """Acoustic arousal from prosody alone, against the speaker's own baseline (fallback when no model)."""
    score = 0.5 * z.get("energy_db", 0.0) + 0.3 * z.get("f0_median_st", 0.0) + \
        0.2 * z.get("speaking_rate_syl_s", 0.0)
    arousal = 1.0 / (1.0 + math.exp(-(score - 1.0)))
    anger = max(0.0, arousal - 0.5) * 2 * 0.8
    rest = 1.0 - anger
    scores = {"angry": anger, "happy": rest * 0.2, "neutral": rest * 0.6, "sad": rest * 0.2}
    label = max(scores, key=scores.get)
    return {"label": label, "scores": scores, "arousal": arousal, "valence": -anger, "source": "prosody-rules"}


@dataclass(frozen=True)
class AsrJob:
    """One packed Whisper window of one call, runnable on any thread (the model is shared, stateless)."""

    id: int
    chunks: tuple[AsrChunk, ...]
    indices: tuple[int, ...]
    language: str | None
    prior: Mapping[str, float]
    queued_at_s: float  # call time when the window became due
    interim: bool = False  # a preview of a turn still being spoken (never feeds sentiment)

    def run(self, transcriber: Transcriber):
        return transcriber.transcribe_window(list(self.chunks), language=self.language, prior=self.prior)


class CallSession:
    """One call's state. Feed it audio blocks in order; never from two threads at once."""

    def __init__(self, engine: Engine, info: CallInfo, *, defer_asr: bool = False) -> None:
        self.engine = engine
        self.info = info
        cfg = engine.config
        self.config = cfg
        self._prosody_sr = int(cfg.prosody.analysis_sr_hz)
        self._channels = [
            _Channel(i, role,
                     StreamResampler(orig_sr=info.sample_rate_hz, target_sr=SAMPLE_RATE_HZ),
                     StreamResampler(orig_sr=info.sample_rate_hz, target_sr=self._prosody_sr),
                     engine.vad.stream(role), _Ring(SAMPLE_RATE_HZ), _Ring(self._prosody_sr),
                     SpeakerBaseline(cfg.prosody),
                     engine.emotion.new_baseline() if engine.emotion is not None else None,
                     engine.emotion.new_turn_baseline() if engine.turn_emotion else None)
            for i, role in enumerate(info.roles())]
        self._samples_in = 0
        self._next_tick = 1
        self._segments: list[_Segment] = []
        self._timeline: list[dict] = []
        self._prosody_timeline: list[dict] = []
        self._alerts: dict[str, AlertEvent] = {}
        self._agitation = AgitationTracker(cfg.fusion)
        self._policy = AlertPolicy("caller_agitation", cfg.alerts.caller_agitation, info.call_id, info.agent_id)
        started = _parse_time(info.started_at)
        self._shift: ShiftState | None = (engine.shifts.state_at_call_start(info.agent_id, started)
                                          if info.agent_id else None)
        self._hostile_s = 0.0
        self._agent_talk_s = 0.0
        self._agent_drift: list[float] = []
        self._agent_sentiments: list[float] = []
        self._overtalk_s = 0.0
        self._both_silent_run_s = 0.0
        self._long_silences = 0
        self._languages: list[str] = []
        self._errors: list[StageError] = []
        self._stage_time = {"resample": 0.0, "vad": 0.0, "asr": 0.0, "prosody_emotion": 0.0, "text": 0.0,
                            "fusion": 0.0}
        self._finished = False
        self._strain = 0.0
        # finished turns of both parties waiting for ASR, packed into one Whisper window when due
        self._pending_asr: list[tuple[int, AsrChunk]] = []
        self._turn_queue: list = []
        self._language_prior: dict[str, float] = {}
        self._language_windows = 0
        self.defer_asr = defer_asr and engine.transcriber is not None
        self._job_counter = 0
        self._jobs_open: dict[int, AsrJob] = {}
        self._jobs_ready: list[AsrJob] = []
        self._interim_open: dict[int, AsrJob] = {}
        self._last_interim_s: dict[int, float] = {}
        # each speaker's transcript is masked as one stream: a number split over two segments is still
        # one number (texts and ASR words apart: words keep their timings)
        self._text_maskers: dict[str, StreamMasker] = {}
        self._word_maskers: dict[str, StreamMasker] = {}

    # -- public ---------------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        return self._samples_in / self.info.sample_rate_hz

    @property
    def stage_seconds(self) -> Mapping[str, float]:
        """CPU seconds spent per stage so far (for benchmarks)."""
        return dict(self._stage_time)

    def feed(self, block: np.ndarray) -> list:
        """Feed float32 audio [n_channels, n_samples] (or [n_samples] for mono) at the call's rate."""
        if self._finished:
            raise RuntimeError(f"call {self.info.call_id} is finished; open a new session")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[None, :]
        if block.ndim != 2 or block.shape[0] != len(self._channels):
            raise AudioFormatError(
                f"call {self.info.call_id}: block of shape {block.shape}, expected ({len(self._channels)}, n)")
        if not np.all(np.isfinite(block)):
            block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
        self._samples_in += block.shape[1]
        return self._process(block, last=False)

    def finish(self) -> list:
        """End of the call: flush every stage, close alerts, update the agent's shift, emit the result."""
        if self._finished:
            return []
        empty = np.zeros((len(self._channels), 0), np.float32)
        events = self._process(empty, last=True)
        self._finished = True
        end_s = self.time_s
        for ch in self._channels:
            self._feed_vad(ch, ch.backlog.size)
            self._turn_queue.extend((turn, ch) for turn in ch.vad.flush())
        events.extend(self._handle_turns())
        if end_s - (self._next_tick - 1) > 0.25 or self._next_tick == 1:
            events.extend(self._tick(end_s))
        events.extend(self._run_asr(force=True))
        self._jobs_ready = []
        for job in sorted(self._jobs_open.values(), key=lambda j: j.id):
            # windows still queued or running elsewhere at hang-up are transcribed here, once
            t0 = time.perf_counter()
            try:
                window: Any = job.run(self.engine.transcriber)
            except Exception as exc:  # noqa: BLE001
                window = exc
            self._stage_time["asr"] += time.perf_counter() - t0
            events.extend(self.apply_asr(job, window, t_available=end_s))
        for ev in self._policy.close(end_s):
            events.append(self._record_alert(ev))
        events.extend(self._end_shift(end_s))
        self._flush_masking()
        events.append(CallEnded(self.info.call_id, self.result()))
        return events

    # -- processing -----------------------------------------------------------------------------
    def _process(self, block: np.ndarray, *, last: bool) -> list:
        """Resample, then advance VAD and the 1 Hz clock in lock-step, one second at a time.

        Everything is decided at tick boundaries in call time, in the same order whatever the block
        sizes: that is what makes 20 ms live packets and 2 s batch blocks give identical results.
        """
        events: list = []
        t0 = time.perf_counter()
        for ch in self._channels:
            y16 = ch.to16k.process(block[ch.index], last=last)
            ch.ring16.append(y16)
            ch.ring_pros.append(ch.to_prosody.process(block[ch.index], last=last))
            ch.backlog = np.concatenate([ch.backlog, y16]) if ch.backlog.size else y16
        self._stage_time["resample"] += time.perf_counter() - t0
        while True:
            boundary = self._next_tick * SAMPLE_RATE_HZ
            for ch in self._channels:
                self._feed_vad(ch, boundary - ch.vad_fed)
            ready = all(ch.vad_fed >= boundary and
                        ch.ring_pros.end_sample >= self._next_tick * self._prosody_sr for ch in self._channels)
            if not ready:
                break
            events.extend(self._handle_turns())
            events.extend(self._tick(float(self._next_tick)))
            self._next_tick += 1
        return events

    def _feed_vad(self, ch: _Channel, n: int) -> None:
        n = min(max(n, 0), ch.backlog.size)
        if n == 0:
            return
        t0 = time.perf_counter()
        speaking, turns = ch.vad.process(ch.backlog[:n])
        ch.backlog = ch.backlog[n:]
        ch.vad_fed += n
        ch.speech_flags.extend(speaking.tolist())
        self._turn_queue.extend((turn, ch) for turn in turns)
        self._stage_time["vad"] += time.perf_counter() - t0

    def _handle_turns(self) -> list:
        events: list = []
        queue, self._turn_queue = sorted(self._turn_queue, key=lambda tc: (tc[0].end_s, tc[1].index)), []
        for turn, ch in queue:
            events.extend(self._on_turn(ch, turn))
        return events

    def _speech_in(self, ch: _Channel, start_s: float, end_s: float) -> float:
        a, b = max(0, int(start_s / WINDOW_S)), int(end_s / WINDOW_S)
        return sum(ch.speech_flags[a:b]) * WINDOW_S

    def _tick(self, t: float) -> list:
        events: list = []
        cfg = self.config
        speaking = {}
        for ch in self._channels:
            speech = self._speech_in(ch, t - 1.0, t)
            speaking[ch.speaker] = speech >= 0.3
            ch.speech_s += speech
            if ch.speaker == "agent":
                self._agent_talk_s += speech
            if self._speech_in(ch, t - EMOTION_WINDOW_S, t) >= MIN_WINDOW_SPEECH_S:
                emo = self._acoustic(ch, t - EMOTION_WINDOW_S, t, update_baseline=True)
                if emo is not None:
                    p = emo["prosody"]
                    self._prosody_timeline.append({
                        "t_s": round(t, 2), "speaker": ch.speaker, "f0_median_st": p.get("f0_median_st"),
                        "f0_range_st": p.get("f0_range_st"), "energy_db": p.get("energy_db"),
                        "speaking_rate_syl_s": p.get("speaking_rate_syl_s"), "pause_ratio": p.get("pause_ratio"),
                        "jitter": p.get("jitter"), "shimmer": p.get("shimmer"), "hnr_db": p.get("hnr_db"),
                        "z": emo["z"], "arousal": round(emo["arousal"], 3), "emotion": emo["label"]})
                if emo is not None and ch.speaker in ("caller", "mixed"):
                    z = emo["z"]
                    prosody_z = (0.5 * z.get("energy_db", 0.0) + 0.3 * z.get("f0_median_st", 0.0)
                                 + 0.2 * z.get("speaking_rate_syl_s", 0.0))
                    self._agitation.add_acoustic(AcousticCue(t, emo["arousal"], emo["scores"].get("angry", 0.0),
                                                             emo["source"], emo["baseline_ready"], prosody_z,
                                                             emo["scores"].get("happy", 0.0)))
        overtalk = speaking.get("agent", False) and speaking.get("caller", False)
        if overtalk:
            self._overtalk_s += 1.0
        if not any(speaking.values()):
            self._both_silent_run_s += 1.0
            if self._both_silent_run_s == math.ceil(cfg.vad.long_silence_s):
                self._long_silences += 1
        else:
            self._both_silent_run_s = 0.0
        t0 = time.perf_counter()
        level, reasons = self._agitation.step(t, overtalk=overtalk)
        if level >= cfg.strain.hostile_level:
            self._hostile_s += 1.0
        self._strain = self._current_strain()
        self._timeline.append({"t_s": round(t, 2), "caller_agitation": round(level, 3),
                               "agent_strain": round(self._strain, 3)})
        events.append(LevelUpdate(t, level, self._strain, reasons))
        for ev in self._policy.update(t, level, reasons):
            events.append(self._record_alert(ev))
        self._stage_time["fusion"] += time.perf_counter() - t0
        # ASR flush decisions also run on the audio clock
        events.extend(self._run_asr(force=False, now=t))
        self._schedule_interim(t)
        return events

    def _schedule_interim(self, t: float) -> None:
        """Live only: every ``interim_s`` of an ongoing turn, a preview of its text (one outstanding per
        channel). Interim text is shown, never scored: only final text feeds sentiment."""
        every = self.config.asr.interim_s
        if not self.defer_asr or every <= 0:
            return
        # a preview never handed back (skipped by a busy live layer) stops blocking after a while
        for job_id in [j.id for j in self._interim_open.values() if t - j.queued_at_s > 3 * every]:
            del self._interim_open[job_id]
        for ch in self._channels:
            start = ch.vad.current_turn_start_s
            if start is None or t - start < every or t - self._last_interim_s.get(ch.index, -1e9) < every:
                continue
            if any(j.chunks[0].speaker == ch.speaker for j in self._interim_open.values()):
                continue
            audio = ch.ring16.slice(max(start, t - self.config.asr.max_window_s), t).copy()
            self._job_counter += 1
            job = AsrJob(self._job_counter, (AsrChunk(ch.speaker, max(start, t - self.config.asr.max_window_s), audio),),
                         (-1,), self.info.language, dict(self._language_prior), t, interim=True)
            self._interim_open[job.id] = job
            self._last_interim_s[ch.index] = t
            self._jobs_ready.append(job)

    def _acoustic(self, ch: _Channel, start_s: float, end_s: float, *, update_baseline: bool) -> dict | None:
        y = ch.ring_pros.slice(start_s, end_s)
        if y.size < int(0.25 * self._prosody_sr):
            return None
        t0 = time.perf_counter()
        try:
            feats, vec = self.engine.extractor.vector(y, sr=self._prosody_sr)
            z = ch.prosody_baseline.zscores(feats)
            if self.engine.emotion is not None:
                scores = self.engine.emotion.predict(vec, baseline=ch.emotion_baseline)
                emo = {"label": scores.label, "scores": dict(scores.scores), "arousal": scores.arousal,
                       "valence": scores.valence, "source": scores.source}
            else:
                emo = _rules_emotion(z)
            if update_baseline:
                # A speaker's first seconds define their normal voice; later only calm-looking speech
                # (and never while the caller is agitated) may move the baseline.
                looks_calm = (self.engine.emotion.looks_calm(vec) if self.engine.emotion is not None
                              else emo["arousal"] < 0.6)
                calm = ch.speech_s <= self.config.fusion.baseline_warmup_s or (
                    looks_calm and emo["label"] != "angry"
                    and self._agitation.level < self.config.alerts.caller_agitation.clear_level)
                ch.prosody_baseline.update(feats, calm=calm)
                if ch.emotion_baseline is not None:
                    ch.emotion_baseline.update(vec, calm=calm)
                if ch.speaker == "agent" and ch.prosody_baseline.ready:
                    # flattening (narrow F0 range) and slowing against the agent's own calm speech
                    self._agent_drift.append(max(0.0, -z.get("f0_range_st", 0.0)) / 4 +
                                             max(0.0, -z.get("speaking_rate_syl_s", 0.0)) / 4)
            # trusted only after the warm-up: a baseline from one or two windows is mostly noise
            emo["baseline_ready"] = ch.speech_s > self.config.fusion.baseline_warmup_s and bool(
                ch.prosody_baseline.ready if ch.emotion_baseline is None else ch.emotion_baseline.ready)
            emo["prosody"] = feats.as_dict()
            emo["z"] = {k: round(v, 2) for k, v in z.items()}
            emo["vector"] = vec
            return emo
        except Exception as exc:  # noqa: BLE001 - a stage failure must not end the call
            self._stage_error("prosody_emotion", end_s, exc)
            return None
        finally:
            self._stage_time["prosody_emotion"] += time.perf_counter() - t0

    def _on_turn(self, ch: _Channel, turn: SpeechTurn) -> list:
        seg = _Segment(turn.speaker, turn.start_s, min(turn.end_s, ch.vad_fed / SAMPLE_RATE_HZ))
        emo = self._acoustic(ch, seg.start_s, seg.end_s, update_baseline=False)
        if emo is not None:
            seg.emotion = {"label": emo["label"], "scores": {k: round(v, 3) for k, v in emo["scores"].items()},
                           "source": emo["source"]}
            seg.arousal = float(emo["arousal"])
            seg.prosody = {**emo["prosody"], "z": emo["z"]}
            seg.vector = emo["vector"]
        self._segments.append(seg)
        idx = len(self._segments) - 1
        asr = self.config.asr
        if self.engine.transcriber is not None and seg.end_s - seg.start_s >= asr.min_turn_s:
            audio = ch.ring16.slice(seg.start_s, seg.end_s).copy()
            self._pending_asr.append((idx, AsrChunk(turn.speaker, seg.start_s, audio)))
            self._pending_asr.sort(key=lambda item: item[1].start_s)
        return []

    def _run_asr(self, *, force: bool, now: float | None = None) -> list:
        """Transcribe pending turns once the oldest has waited ``max_delay_s`` of audio time or they fill
        a window. Packing both parties' turns into one window shares one encoder pass between them."""
        asr = self.config.asr
        pending = self._pending_asr
        events: list = []
        while pending:
            first_end = min(self._segments[idx].end_s for idx, _ in pending)
            total = sum(c.audio.size for _, c in pending) / SAMPLE_RATE_HZ + 0.6 * (len(pending) - 1)
            due = force or (now is not None and now >= first_end + asr.max_delay_s) or total >= asr.max_window_s
            if not due:
                break
            batch, size = [], 0.0
            while pending:
                dur = pending[0][1].audio.size / SAMPLE_RATE_HZ
                if batch and size + dur + 0.6 > asr.max_window_s:
                    break
                batch.append(pending.pop(0))
                size += dur + 0.6
            events.extend(self._transcribe(batch, now if now is not None else self.time_s))
        return events

    def _transcribe(self, batch: list, t_available: float) -> list:
        chunks = []
        for _, chunk in batch:
            audio = chunk.audio
            if audio.size > self.config.asr.max_window_s * SAMPLE_RATE_HZ:
                audio = audio[: int(self.config.asr.max_window_s * SAMPLE_RATE_HZ)]
            chunks.append(dataclasses.replace(chunk, audio=audio))
        self._job_counter += 1
        job = AsrJob(self._job_counter, tuple(chunks), tuple(idx for idx, _ in batch), self.info.language,
                     dict(self._language_prior), t_available)
        self._jobs_open[job.id] = job
        if self.defer_asr:
            self._jobs_ready.append(job)
            return []
        t0 = time.perf_counter()
        try:
            window: Any = job.run(self.engine.transcriber)
        except Exception as exc:  # noqa: BLE001 - ASR failing on one window must not end the call
            window = exc
        self._stage_time["asr"] += time.perf_counter() - t0
        return self.apply_asr(job, window, t_available=t_available)

    # -- deferred ASR (live) ----------------------------------------------------------------------
    def take_asr_jobs(self) -> list["AsrJob"]:
        """Windows due for transcription since the last call (``defer_asr`` sessions only).

        Run ``job.run(engine.transcriber)`` anywhere (an ASR pool), then hand the outcome back with
        :meth:`apply_asr` from the thread that feeds this session. Acoustic analysis never waits for it.
        """
        jobs, self._jobs_ready = self._jobs_ready, []
        return jobs

    def apply_asr(self, job: "AsrJob", window: Any, *, t_available: float | None = None) -> list:
        """Apply a window's transcripts (or the exception it raised). Text cues count from the call time
        at which they arrive. A job already applied (e.g. by ``finish``) is ignored."""
        if job.interim:
            if self._interim_open.pop(job.id, None) is None or self._finished or isinstance(window, BaseException):
                return []
            return [dataclasses.replace(e, final=False, text=self._mask_preview(e.speaker, e.text), words=())
                    for e in window.events]
        if self._jobs_open.pop(job.id, None) is None:
            return []
        t = self.time_s if t_available is None else t_available
        if isinstance(window, BaseException):
            self._stage_error("asr", t, window)
            return [StageError("asr", t, str(window))]
        for lang, p in window.language_probs.items():
            n = self._language_windows
            self._language_prior[lang] = (self._language_prior.get(lang, 0.0) * n + p) / (n + 1)
        self._language_windows += 1
        if self.engine.turn_emotion:
            for idx, encoding in zip(job.indices, window.encodings):
                self._turn_emotion(idx, encoding, t)
        by_start = {round(c.start_s, 3): idx for idx, c in zip(job.indices, job.chunks)}
        events: list = []
        for res in window.events:
            idx = by_start.get(round(res.start_s, 3))
            if idx is not None:
                events.append(self._on_text(idx, res, t))
        return events

    def _turn_emotion(self, idx: int, encoding: np.ndarray | None, t: float) -> None:
        """Re-score a transcribed turn with the turn heads: its prosody vector plus the pooled encoder
        output of the window the ASR ran anyway, against the speaker's earlier calm-looking turns."""
        seg = self._segments[idx]
        if encoding is None or seg.vector is None:
            return
        ch = next(c for c in self._channels if c.speaker == seg.speaker)
        t0 = time.perf_counter()
        try:
            model = self.engine.emotion
            x = model.turn_vector(seg.vector, encoding)
            scores = model.predict_turn(x, baseline=ch.turn_baseline)
            # only calm-looking turns teach the speaker's baseline, as in training
            ch.turn_baseline.update(x, calm=model.turn_looks_calm(x))
        except Exception as exc:  # noqa: BLE001 - one turn's emotion failing must not end the call
            self._stage_error("prosody_emotion", t, exc)
            return
        finally:
            self._stage_time["prosody_emotion"] += time.perf_counter() - t0
        seg.emotion = {"label": scores.label, "scores": {k: round(v, 3) for k, v in scores.scores.items()},
                       "source": scores.source}
        seg.arousal = float(scores.arousal)
        if seg.speaker in ("caller", "mixed"):
            self._agitation.add_turn(TurnCue(t, float(scores.scores["angry"]), scores.source))

    def _on_text(self, idx: int, res: TranscriptEvent, t_available: float) -> TranscriptEvent:
        seg = self._segments[idx]
        t0 = time.perf_counter()
        text, words = self._mask_segment(idx, seg.speaker, res)
        try:
            score = self.engine.text.score(res.text, language=res.language)
            sentiment, flags = float(score.sentiment), tuple(score.flags)
        except Exception as exc:  # noqa: BLE001
            self._stage_error("text", t_available, exc)
            sentiment, flags = None, ()
        self._stage_time["text"] += time.perf_counter() - t0
        seg.text, seg.language, seg.sentiment, seg.flags = text, res.language, sentiment, flags
        if res.language not in self._languages:
            self._languages.append(res.language)
        if seg.speaker in ("caller", "mixed") and sentiment is not None:
            excerpt = text if len(text) <= 60 else text[:57] + "..."
            self._agitation.add_text(TextCue(t_available, sentiment, flags, excerpt))
        elif seg.speaker == "agent" and sentiment is not None:
            self._agent_sentiments.append(sentiment)
        seg.words = words
        return TranscriptEvent(seg.speaker, seg.start_s, seg.end_s, text, res.language, True, words,
                               sentiment or 0.0, flags, seg.emotion)

    # -- masking ----------------------------------------------------------------------------------
    def _maskers(self, speaker: str) -> tuple[StreamMasker, StreamMasker]:
        if speaker not in self._text_maskers:
            self._text_maskers[speaker] = StreamMasker(self.config.masking)
            self._word_maskers[speaker] = StreamMasker(self.config.masking)
        return self._text_maskers[speaker], self._word_maskers[speaker]

    def _mask_segment(self, idx: int, speaker: str, res: TranscriptEvent) -> tuple[str, tuple]:
        """This segment's masked text and words, masked in the speaker's stream; earlier segments whose
        digits this one continues are revised in place (the stored transcript never shows them)."""
        texts, words = self._maskers(speaker)
        text_rev, word_rev = texts.push(idx, [res.text]), words.push(idx, [w.text for w in res.words])
        self._apply_mask_revisions(text_rev, word_rev, skip=idx)
        text = text_rev[idx][0]
        masked_words = word_rev.get(idx, [w.text for w in res.words])
        return text, tuple(dataclasses.replace(w, text=m) for w, m in zip(res.words, masked_words))

    def _mask_preview(self, speaker: str, text: str) -> str:
        masker = self._text_maskers.get(speaker)
        return masker.preview([text])[0] if masker is not None else mask_text(text, self.config.masking)

    def _apply_mask_revisions(self, texts: Mapping, words: Mapping, *, skip: int | None = None) -> None:
        for idx, parts in texts.items():
            if idx != skip:
                self._segments[idx].text = parts[0]
        for idx, parts in words.items():
            if idx != skip:
                seg = self._segments[idx]
                seg.words = tuple(dataclasses.replace(w, text=m) for w, m in zip(seg.words, parts))

    def _flush_masking(self) -> None:
        """End of the call: digits held at a speaker's last segment are resolved."""
        for speaker, texts in self._text_maskers.items():
            self._apply_mask_revisions(texts.finish(), self._word_maskers[speaker].finish())

    # -- alerts, strain ---------------------------------------------------------------------------
    def _record_alert(self, ev: AlertEvent) -> AlertEvent:
        self._alerts[ev.id] = ev
        log.info("call %s: %s %s at %.1f s (level %.2f)", self.info.call_id, ev.kind, ev.state,
                 ev.raised_at_s if ev.state == "raised" else ev.cleared_at_s, ev.level,
                 extra={"call_id": self.info.call_id})
        return ev

    def _call_means(self) -> tuple[float, float]:
        """This call's agent voice drift and negative-word level so far (0 when none measured)."""
        drift = float(np.mean(self._agent_drift)) if self._agent_drift else 0.0
        negative = float(np.mean([max(0.0, -s) for s in self._agent_sentiments])) if self._agent_sentiments else 0.0
        return drift, negative

    def _call_terms(self) -> dict:
        shift = self._shift or ShiftState("")
        drift, negative = self._call_means()
        return dict(hostile_s=shift.hostile_s + self._hostile_s, talk_s=shift.talk_s + self._agent_talk_s,
                    calls=shift.calls + 1, voice_drift=max(shift.voice_drift, drift),
                    agent_negative=max(shift.agent_negative, negative))

    def _current_strain(self) -> float:
        if self.info.n_channels == 1:
            return 0.0  # roles unknown in a mixed recording: no agent voice to measure
        level, _ = strain_level(self.config.strain, **self._call_terms())
        return level

    def shift_so_far(self) -> dict | None:
        """The agent's shift state as if this call ended now (JSON), or None without an agent. A live
        service checkpoints it, so a crash mid-call still counts the call's strain on restart."""
        if self._shift is None or self.info.n_channels == 1:
            return None
        return self._shift_after(self.time_s)[0].as_json()

    def _shift_after(self, end_s: float) -> tuple[ShiftState, float, tuple]:
        """(the shift with this call folded in up to ``end_s``, strain level, reasons)."""
        terms = self._call_terms()
        level, reasons = strain_level(self.config.strain, **terms)
        started = _parse_time(self.info.started_at)
        drift, negative = self._call_means()
        shift = dataclasses.replace(
            self._shift, hostile_s=terms["hostile_s"], talk_s=terms["talk_s"], calls=terms["calls"],
            # the shift's voice and words move slowly: one call is 30% of the new value
            voice_drift=0.7 * self._shift.voice_drift + 0.3 * drift,
            agent_negative=0.7 * self._shift.agent_negative + 0.3 * negative,
            last_call_end=(datetime.fromtimestamp(started.timestamp() + end_s, timezone.utc).isoformat()
                           if started else self._shift.last_call_end),
            total_calls=self._shift.total_calls + 1)
        return shift, level, reasons

    def _end_shift(self, end_s: float) -> list:
        """Fold this call into the agent's shift; recommend a break when the call ends, never mid-call."""
        if self._shift is None or self.info.n_channels == 1:
            return []
        shift, level, reasons = self._shift_after(end_s)
        events = []
        policy: PolicyOptions = self.config.alerts.agent_strain
        if level >= policy.raise_level and not shift.recommended:
            ev = AlertEvent(id=alert_id(self.info.call_id, "agent_strain", end_s), kind="agent_strain", action="recovery_break", state="raised",
                            call_id=self.info.call_id, agent_id=self.info.agent_id, onset_s=end_s,
                            raised_at_s=end_s, cleared_at_s=None, level=level, reasons=reasons)
            events.append(self._record_alert(ev))
            shift = dataclasses.replace(shift, recommended=True)
        elif shift.recommended and level < policy.clear_level:
            shift = dataclasses.replace(shift, recommended=False)
        self.engine.shifts.record_call(shift)
        return events

    def _stage_error(self, stage: str, t_s: float, exc: BaseException) -> None:
        log.error("call %s: %s failed at %.1f s: %s", self.info.call_id, stage, t_s, exc,
                  extra={"call_id": self.info.call_id}, exc_info=log.isEnabledFor(logging.DEBUG))
        self._errors.append(StageError(stage, t_s, str(exc)))

    # -- result -----------------------------------------------------------------------------------
    def result(self) -> dict:
        """The per-call JSON (schema callpulse.call/1), as far as the call has got."""
        info, cfg = self.info, self.config
        duration = self.time_s
        channels: Any = ("mixed" if info.n_channels == 1 else
                         {"agent": info.agent_channel, "caller": 1 - info.agent_channel})
        levels = [p["caller_agitation"] for p in self._timeline]
        caller_segs = [s for s in self._segments if s.speaker in ("caller", "mixed") and s.sentiment is not None]
        talk = {ch.speaker: round(ch.speech_s, 1) for ch in self._channels}
        total_talk = sum(talk.values()) or 1.0
        summary = {
            "peak_agitation": round(max(levels), 3) if levels else 0.0,
            "mean_agitation": round(float(np.mean(levels)), 3) if levels else 0.0,
            "agitation_raise_level": cfg.alerts.caller_agitation.raise_level,
            "agent_strain_end": round(self._strain, 3),
            "n_segments": len(self._segments),
            "talk_s": talk,
            "talk_share": {k: round(v / total_talk, 3) for k, v in talk.items()},
            "overtalk_s": self._overtalk_s,
            "long_silences": self._long_silences,
            "caller_sentiment_score": _call_score(caller_segs, duration),
            "n_supervisor_takeover": sum(1 for a in self._alerts.values() if a.kind == "caller_agitation"),
            "n_recovery_break": sum(1 for a in self._alerts.values() if a.kind == "agent_strain"),
            "emotion_source": self.engine.emotion_source,
            "asr_model": self.engine.transcriber.model_id if self.engine.transcriber else None,
            "stage_errors": [dataclasses.asdict(e) for e in self._errors],
            "callpulse_version": __version__,
        }
        alerts = sorted(self._alerts.values(), key=lambda a: a.raised_at_s)
        return {
            "schema": SCHEMA, "call_id": info.call_id, "source": info.source,
            "duration_s": round(duration, 3), "sample_rate_hz": info.sample_rate_hz, "channels": channels,
            "languages": list(self._languages), "agent_id": info.agent_id, "started_at": info.started_at,
            "segments": [s.as_json() for s in sorted(self._segments, key=lambda s: (s.start_s, s.speaker))],
            "timeline": list(self._timeline),
            # per second and speaker over the last 2 s of their speech; z = against their own baseline
            "prosody_timeline": list(self._prosody_timeline),
            "alerts": [{k: v for k, v in a.as_json().items() if k not in ("state", "call_id", "agent_id")}
                       for a in alerts],
            "summary": summary,
        }


def _call_score(segments: list[_Segment], duration_s: float) -> int | None:
    """Caller sentiment as -100..+100, weighted towards the end of the call (how the call left them)."""
    if not segments:
        return None
    weights = [1.0 + 2.0 * (s.end_s / max(duration_s, 1e-6)) for s in segments]
    value = sum(w * s.sentiment for w, s in zip(weights, segments)) / sum(weights)
    return int(round(100 * value))


def _parse_time(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError as exc:
        raise AudioFormatError(f"started_at {ts!r} is not an ISO 8601 time (e.g. 2026-11-29T09:30:00+08:00)") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)

