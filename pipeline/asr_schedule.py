"""When a call's turns are transcribed and when their text counts: one rule for batch and live.

Finished turns of both parties wait in one queue and are packed into one Whisper window (sharing an
encoder pass) once the oldest has waited ``max_delay_s`` of call time or they fill ``max_window_s``.
A window queued at call time ``q`` is an :class:`AsrJob` whose text is applied at the first tick at or
after ``q + apply_delay_s`` (``AsrJob.apply_at_s``), in job order, whoever runs it: batch runs it then,
synchronously; live hands it to an ASR pool and the session holds a result that comes back early and
waits for one that comes back late (bounded by ``apply_wait_s`` of wall time). That is what makes a
streamed call's JSON equal to the same file's batch JSON with ASR on.

The scheduler also owns the call's language prior (what earlier windows heard) and the live-only
interim previews of turns still being spoken (shown, never scored, so they need no timing rule).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .asr import AsrChunk, AsrOptions, Transcriber, WindowResult
from .channel import AudioRing, Channel
from .events import Speaker
from .vad import SAMPLE_RATE_HZ

log = logging.getLogger("pipeline.asr_schedule")

TURN_GAP_S = 0.6  # silence Whisper sees between two packed turns (counted in a window's length)


@dataclass(frozen=True)
class AsrJob:
    """One packed Whisper window of one call, runnable on any thread (the model is shared, stateless)."""

    id: int
    chunks: tuple[AsrChunk, ...]
    indices: tuple[int, ...]   # the call's segment index of each chunk (-1 for an interim preview)
    language: str | None
    prior: Mapping[str, float]
    queued_at_s: float  # call time when the window became due
    interim: bool = False  # a preview of a turn still being spoken (never feeds sentiment)
    apply_at_s: float | None = None  # call time from which its text counts (None: interim, never applied)

    def run(self, transcriber: Transcriber) -> WindowResult:
        return transcriber.transcribe_window(list(self.chunks), language=self.language, prior=self.prior)


class AsrScheduler:
    """One call's transcription queue, open windows, held results and language prior."""

    def __init__(self, options: AsrOptions, *, language: str | None, deferred: bool, enabled: bool = True,
                 full_windows: bool | None = None) -> None:
        """``full_windows``: pack windows full instead of after ``max_delay_s`` (None: ``[asr]
        batch_packing``; never for a deferred, i.e. live, session)."""
        self.options = options
        self.enabled = enabled
        # batch may pack windows full (nothing waits for text there); live keeps max_delay_s
        wanted = options.batch_packing == "full" if full_windows is None else full_windows
        self.full_windows = wanted and not deferred
        self.language = language
        self.deferred = deferred
        self._pending: list[tuple[int, AsrChunk, float]] = []  # (segment index, chunk, turn end_s)
        self._counter = 0
        self._open: dict[int, AsrJob] = {}        # final windows not yet applied
        self._results: dict[int, Any] = {}        # their outcomes, held until the job's tick
        self._late: set[int] = set()              # given up waiting for: applied when they come
        self._waiting: dict[int, float] = {}      # job id -> wall clock when the session began to wait
        self._ready: list[AsrJob] = []            # handed out by take_ready (live)
        self._interim_open: dict[int, AsrJob] = {}
        self._last_interim_s: dict[int, float] = {}
        self._prior: dict[str, float] = {}
        self._windows = 0

    # -- queueing -------------------------------------------------------------------------------
    def add_turn(self, idx: int, speaker: Speaker, start_s: float, end_s: float, ring16: AudioRing) -> None:
        """Segment ``idx``, a finished turn, waits for transcription (unless too short to have words)."""
        if not self.enabled or end_s - start_s < self.options.min_turn_s:
            return
        chunk = AsrChunk(speaker, start_s, ring16.slice(start_s, end_s).copy())
        self._pending.append((idx, chunk, end_s))
        self._pending.sort(key=lambda item: item[1].start_s)

    def queue_due(self, now_s: float, *, force: bool = False) -> list[AsrJob]:
        """Pack pending turns into windows once the oldest has waited ``max_delay_s`` or they fill a
        window (``force``: all of them, at hang-up). Returns the new jobs."""
        o, pending, jobs = self.options, self._pending, []
        # the turn cap is for full (batch) windows; live ones are already short (max_delay_s)
        cap = o.max_window_turns if self.full_windows else 0
        while pending:
            first_end = min(end for _, _, end in pending)
            total = sum(c.audio.size for _, c, _ in pending) / SAMPLE_RATE_HZ + TURN_GAP_S * (len(pending) - 1)
            waited = now_s >= first_end + o.max_delay_s and not self.full_windows
            capped = 0 < cap <= len(pending)
            if not (force or waited or capped or total >= o.max_window_s):
                break
            batch, size = [], 0.0
            while pending:
                dur = pending[0][1].audio.size / SAMPLE_RATE_HZ
                if batch and (size + dur + TURN_GAP_S > o.max_window_s or len(batch) == cap):
                    break
                batch.append(pending.pop(0))
                size += dur + TURN_GAP_S
            limit = int(o.max_window_s * SAMPLE_RATE_HZ)
            chunks = tuple(dataclasses.replace(c, audio=c.audio[:limit]) if c.audio.size > limit else c
                           for _, c, _ in batch)
            self._counter += 1
            job = AsrJob(self._counter, chunks, tuple(idx for idx, _, _ in batch), self.language,
                         dict(self._prior), now_s, apply_at_s=now_s if force else now_s + o.apply_delay_s)
            self._open[job.id] = job
            if self.deferred:
                self._ready.append(job)
            jobs.append(job)
        return jobs

    def queue_interims(self, t: float, channels: Iterable[Channel]) -> None:
        """Live only: every ``interim_s`` of an ongoing turn, a preview of its text (one outstanding per
        channel). Interim text is shown, never scored: only final text feeds sentiment."""
        every = self.options.interim_s
        if not self.deferred or every <= 0:
            return
        # a preview never handed back (skipped by a busy live layer) stops blocking after a while
        for job_id in [j.id for j in self._interim_open.values() if t - j.queued_at_s > 3 * every]:
            del self._interim_open[job_id]
        for ch in channels:
            start = ch.vad.current_turn_start_s
            if start is None or t - start < every or t - self._last_interim_s.get(ch.index, -1e9) < every:
                continue
            if any(j.chunks[0].speaker == ch.speaker for j in self._interim_open.values()):
                continue
            begin = max(start, t - self.options.max_window_s)
            self._counter += 1
            job = AsrJob(self._counter, (AsrChunk(ch.speaker, begin, ch.ring16.slice(begin, t).copy()),), (-1,),
                         self.language, dict(self._prior), t, interim=True)
            self._interim_open[job.id] = job
            self._last_interim_s[ch.index] = t
            self._ready.append(job)

    def take_ready(self) -> list[AsrJob]:
        jobs, self._ready = self._ready, []
        return jobs

    # -- results --------------------------------------------------------------------------------
    def accept_interim(self, job: AsrJob) -> bool:
        """Whether an interim preview is still wanted (each is shown at most once)."""
        return self._interim_open.pop(job.id, None) is not None

    def deliver(self, job: AsrJob, window: Any) -> bool:
        """Hold a final window's outcome (a WindowResult or the exception it raised) until its tick.
        False when the job is not open (applied already, e.g. by ``finish``)."""
        if job.id not in self._open or job.id in self._results:
            return False
        self._results[job.id] = window
        return True

    def due(self, now_s: float) -> list[AsrJob]:
        """Open windows whose text counts by ``now_s``, in job order."""
        return sorted((j for j in self._open.values() if j.apply_at_s <= now_s + 1e-9), key=lambda j: j.id)

    def open_jobs(self) -> list[AsrJob]:
        return sorted(self._open.values(), key=lambda j: j.id)

    def has_result(self, job: AsrJob) -> bool:
        return job.id in self._results

    def may_wait_for(self, job: AsrJob) -> bool:
        """Live: whether the session should still wait for ``job`` at its tick. After ``apply_wait_s``
        of wall time it stops waiting (acoustic analysis goes on) and the text counts when it comes."""
        if job.id in self._late:
            return False
        now = time.monotonic()
        since = self._waiting.setdefault(job.id, now)
        if now - since < self.options.apply_wait_s:
            return True
        log.warning("ASR window %d (due at %.0f s of call time) not back after asr.apply_wait_s = %.0f s; going on "
                    "without it (its text counts late)", job.id, job.apply_at_s, self.options.apply_wait_s)
        self._late.add(job.id)
        return False

    def run_now(self, job: AsrJob, transcriber: Transcriber) -> None:
        """Transcribe ``job`` on this thread (batch; windows still out at hang-up) and hold the outcome."""
        try:
            window: Any = job.run(transcriber)
        except Exception as exc:  # noqa: BLE001 - ASR failing on one window must not end the call
            window = exc
        self.deliver(job, window)

    def pop(self, job: AsrJob) -> Any:
        """The held outcome of ``job``, which is then closed; the language prior learns from it."""
        self._open.pop(job.id, None)
        self._late.discard(job.id)
        self._waiting.pop(job.id, None)
        window = self._results.pop(job.id)
        if not isinstance(window, BaseException):
            for lang, p in window.language_probs.items():
                n = self._windows
                self._prior[lang] = (self._prior.get(lang, 0.0) * n + p) / (n + 1)
            self._windows += 1
        return window

    def drop_ready(self) -> None:
        """Hang-up: windows not handed out yet are run by the session itself."""
        self._ready = []
