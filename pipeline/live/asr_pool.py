"""Live ASR shared across calls: one scheduler takes the due Whisper windows of every live call and runs
them through the shared model in batches (``Transcriber.transcribe_windows``: one encoder call and one
first decode for the batch), instead of one window at a time per call.

Queue policy, in this order:

- **oldest first**: windows leave the queue in the order they were submitted (the order they became due);
- **fairness bound**: at most ``max_per_call`` windows of one call in one batch, so a call with a backlog
  (a long monologue, a call that fell behind) cannot take a whole batch from the others;
- **previews go first under load**: when more windows wait than one batch takes, every waiting interim
  preview is skipped (resolved with :class:`AsrSkipped`; the session then frees the turn's preview
  slot), so final windows are next. Final windows are never skipped: their text feeds sentiment and
  the result.

The pool runs on the event loop; transcription runs in ``executor`` (its own threads, so a call's acoustic
path never waits behind ASR). ``max_batch = 1`` is the old one-window-at-a-time behaviour.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ..errors import PipelineError

log = logging.getLogger("pipeline.live.asr_pool")


class AsrSkipped(PipelineError):
    """An interim preview was not transcribed: the ASR was behind (or its call ended first)."""


class Job(Protocol):
    """What the pool needs of a session's ASR job (``pipeline.engine.AsrJob``)."""

    id: int
    interim: bool
    chunks: tuple
    language: str | None
    prior: Any

    def run(self, transcriber: Any) -> Any: ...


GPU_BATCH = 8


def auto_batch(transcriber: Any) -> int:
    """``live.asr_batch = 0``: batch on a GPU, one window at a time on CPU. On 2 CPU cores a batched call
    saved little (8 windows: 0.96x the time one by one with base, 0.85x with tiny.en on a quiet machine;
    1.2x, slower, on a loaded one) and concurrent calls sustained were the same either way, while a batch
    answers all its windows only at its end (``scripts/bench_live.py``, README "Live")."""
    return GPU_BATCH if getattr(transcriber, "device", "cpu") not in ("cpu", None) else 1


@dataclass(frozen=True)
class AsrPoolOptions:
    """How the shared live ASR batches (from ``[live] asr_batch``, ``asr_batch_per_call``, ``asr_workers``)."""

    max_batch: int = 8
    max_per_call: int = 2
    workers: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_per_call < 1 or self.workers < 1:
            raise ValueError("live.asr_batch, live.asr_batch_per_call and live.asr_workers must be at least 1")


@dataclass
class _Entry:
    seq: int
    call_id: str
    job: Any
    future: asyncio.Future = field(repr=False)


@dataclass
class PoolCounters:
    """Running totals (the metrics endpoint reads them)."""

    windows: int = 0          # windows transcribed
    batches: int = 0          # transcription calls (a batch of one counts)
    skipped_interim: int = 0  # previews skipped under load or after their call ended
    busy_s: float = 0.0       # seconds the workers spent transcribing
    largest_batch: int = 0


class AsrPool:
    """One per service. ``submit`` from the event loop; await the returned future for the outcome (a
    ``WindowResult``, the exception the window raised, or :class:`AsrSkipped`)."""

    def __init__(self, transcriber: Any, executor: Executor, options: AsrPoolOptions, *,
                 autostart: bool = True) -> None:
        """``autostart=False``: no worker takes batches until :meth:`start` (lets a caller inspect the
        queue policy through :meth:`take_batch` alone)."""
        self.autostart = autostart
        self.transcriber = transcriber
        self.executor = executor
        self.options = options
        self.counters = PoolCounters()
        self._queue: list[_Entry] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._runners: list[asyncio.Task] = []
        self.in_flight = 0
        self._batched = callable(getattr(transcriber, "transcribe_windows", None))

    # --- event-loop side ------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Windows waiting (not yet handed to a worker)."""
        return len(self._queue)

    @property
    def queued_final(self) -> int:
        return sum(1 for e in self._queue if not getattr(e.job, "interim", False))

    def submit(self, call_id: str, job: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self.autostart:
            self.start()
        future: asyncio.Future = loop.create_future()
        self._queue.append(_Entry(next(self._seq), call_id, job, future))
        if self._wake is not None:
            self._wake.set()
        return future

    def start(self) -> None:
        """Start the workers (on the running event loop); ``submit`` does it unless ``autostart=False``."""
        if self._runners:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake.set()
        self._runners = [loop.create_task(self._run(), name=f"asr-pool-{n}") for n in range(self.options.workers)]

    def drop_call(self, call_id: str) -> int:
        """Forget the waiting windows of a call that is finishing (its ``finish`` transcribes what is
        still open itself): their futures get :class:`AsrSkipped`. Returns how many were dropped."""
        keep, dropped = [], 0
        for entry in self._queue:
            if entry.call_id == call_id:
                dropped += 1
                self._resolve(entry, AsrSkipped(f"call {call_id} ended before this window was transcribed"))
            else:
                keep.append(entry)
        self._queue = keep
        return dropped

    def take_batch(self) -> list[_Entry]:
        """The next batch under the queue policy (module docstring); removes it from the queue."""
        limit, per_call = self.options.max_batch, self.options.max_per_call
        if len(self._queue) > limit and any(getattr(e.job, "interim", False) for e in self._queue):
            kept = []
            for entry in self._queue:
                if getattr(entry.job, "interim", False):
                    self.counters.skipped_interim += 1
                    self._resolve(entry, AsrSkipped("the ASR is behind: previews are skipped first"))
                else:
                    kept.append(entry)
            self._queue = kept
        batch: list[_Entry] = []
        taken: dict[str, int] = {}
        for entry in self._queue:  # submit order = oldest first
            if len(batch) >= limit:
                break
            if taken.get(entry.call_id, 0) >= per_call:
                continue
            taken[entry.call_id] = taken.get(entry.call_id, 0) + 1
            batch.append(entry)
        chosen = {id(e) for e in batch}
        self._queue = [e for e in self._queue if id(e) not in chosen]
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self.take_batch()
                if not batch:
                    break
                self.in_flight += len(batch)
                t0 = loop.time()
                try:
                    outcomes = await loop.run_in_executor(self.executor, self._transcribe, [e.job for e in batch])
                except Exception as exc:  # noqa: BLE001 - the executor itself failed: every window says so
                    outcomes = [exc] * len(batch)
                finally:
                    self.in_flight -= len(batch)
                c = self.counters
                c.busy_s += loop.time() - t0
                c.batches += 1
                c.windows += len(batch)
                c.largest_batch = max(c.largest_batch, len(batch))
                for entry, outcome in zip(batch, outcomes):
                    self._resolve(entry, outcome)
                # entries hold a call's audio: let them go as soon as they are answered
                del batch, outcomes

    def _transcribe(self, jobs: Sequence[Any]) -> list:
        """Worker thread: one batched call when the transcriber has it, else each job's own ``run``."""
        if self._batched and len(jobs) > 1:
            from ..asr import WindowRequest

            return self.transcriber.transcribe_windows(
                [WindowRequest(tuple(j.chunks), j.language, j.prior) for j in jobs])
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.run(self.transcriber))
            except Exception as exc:  # noqa: BLE001 - handed to the session, which records a stage error
                outcomes.append(exc)
        return outcomes

    @staticmethod
    def _resolve(entry: _Entry, outcome: Any) -> None:
        if not entry.future.done():
            entry.future.set_result(outcome)

    async def close(self) -> None:
        for entry in self._queue:
            self._resolve(entry, AsrSkipped("the service is stopping"))
        self._queue = []
        for task in self._runners:
            task.cancel()
        for task in self._runners:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._runners = []
