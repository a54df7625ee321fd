"""Live calls: one :class:`LiveCall` per call (its session, aligner and backlog), one :class:`CallManager`
per service.

Taps push per-party audio from the event loop; the aligner turns it into [agent, caller] blocks that
wait in the call's backlog. Each call has one worker task that feeds the whole backlog to
``session.feed`` in a thread pool, so a session is never fed from two threads at once and inference
never runs on the event loop. Queue policy when the machine falls behind: the backlog is fed as one
larger block (cheaper per second of audio), a warning is logged once the backlog exceeds
``live.lag_warn_s``, and beyond ``live.max_backlog_s`` the oldest audio is dropped and counted (the
call's later times shift by the dropped amount, which the call's ``dropped_audio_s`` states). Alerts
are never dropped: they leave the worker as soon as ``feed`` returns them, recorded durably first.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from ..errors import TapProtocolError
from ..seams import CallEngine, CallSessionPort
from ..events import AlertEvent, CallEnded, LevelUpdate, StageError, TranscriptEvent
from .asr_pool import AsrPool, AsrPoolOptions, AsrSkipped, auto_batch
from .options import LiveOptions
from .taps import CallMeta, RoleAudio
from .taps.aligner import Aligner

log = logging.getLogger("pipeline.live.calls")


class CallRejected(TapProtocolError):
    """The service cannot take this call (too many calls, duplicate call id)."""


def default_call_info(**fields: Any) -> Any:
    from ..engine import CallInfo

    return CallInfo(**fields)


@dataclass
class LiveCall:
    meta: CallMeta
    session: CallSessionPort | None  # None once released at the call's end
    aligner: Aligner
    started_at: str
    opened_mono: float
    state: str = "live"  # live -> ending -> ended
    pending: list = field(default_factory=list)
    pending_samples: int = 0
    fed_samples: int = 0
    dropped_samples: int = 0
    malformed: int = 0
    frames: int = 0
    level: dict | None = None
    transcript: deque = field(default_factory=deque)
    alerts: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    result: dict | None = None
    end_reason: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # whoever holds it may use the session
    connections: int = 1
    notify: Callable[[dict], None] | None = None  # a tap that can talk back (audio-fork) hears alerts
    last_lag_warning: float = 0.0
    last_drop_warning: float = 0.0
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever the worker took the backlog
    tap_call_id: str = ""  # the id the tap gave, when the service had to give the call another one
    last_checkpoint: float = 0.0
    gap_samples: int = 0  # audio lost in transit and filled with silence (kept when the aligner is released)

    @property
    def call_id(self) -> str:
        return self.meta.call_id

    @property
    def sample_rate_hz(self) -> int:
        return self.meta.sample_rate_hz

    def release(self) -> None:
        """The call has ended and its result is taken: drop the session (its audio rings, models' per-call
        state), the aligner's buffers and the tap's callback. What the API shows of an ended call
        (``summary``, ``result``) stays; a server keeps ``live.recent_calls`` of these, not sessions."""
        if self.aligner is not None:
            self.gap_samples = self.aligner.gap_samples
        self.session = None
        self.aligner = None
        self.pending = []
        self.pending_samples = 0
        self.notify = None

    def note_malformed(self, error: Exception) -> None:
        self.malformed += 1
        # Log the first few and then every 1000th, so a flood cannot flood the log too.
        if self.malformed <= 3 or self.malformed % 1000 == 0:
            log.warning("call %s: dropped a malformed frame (%d so far): %s", self.call_id, self.malformed,
                        error, extra={"call_id": self.call_id})

    def summary(self) -> dict:
        return {
            "call_id": self.call_id, "agent_id": self.meta.agent_id, "source": self.meta.source,
            "state": self.state, "started_at": self.started_at, "sample_rate_hz": self.sample_rate_hz,
            "layout": self.meta.layout,
            "audio_s": round(self.fed_samples / self.sample_rate_hz, 2),
            "backlog_s": round(self.pending_samples / self.sample_rate_hz, 2),
            "dropped_audio_s": round(self.dropped_samples / self.sample_rate_hz, 2),
            "malformed_frames": self.malformed, "level": self.level,
            "transcript_tail": list(self.transcript),
            "alerts": [a["id"] for a in self.alerts if a["state"] == "raised"],
            "errors": self.errors[-5:], "end_reason": self.end_reason,
            **({"tap_call_id": self.tap_call_id} if self.tap_call_id else {}),
        }


class CallManager:
    """Opens, feeds and finalises live calls. Event-loop side only; sessions run in ``executor``."""

    def __init__(self, *, engine: CallEngine, options: LiveOptions, executor: Executor,
                 on_alert: Callable[[LiveCall, dict], None],
                 on_update: Callable[[str, str, dict], None],
                 on_ended: Callable[[LiveCall], Any],
                 call_info: Callable[..., Any] = default_call_info,
                 id_taken: Callable[[str], bool] | None = None,
                 on_checkpoint: Callable[[LiveCall, dict, dict | None], Any] | None = None) -> None:
        self.engine = engine
        self.id_taken = id_taken
        self.on_checkpoint = on_checkpoint
        self.refused: dict[str, int] = {}  # reason -> calls refused
        self.options = options
        self.executor = executor
        self.on_alert = on_alert
        self.on_update = on_update
        self.on_ended = on_ended
        self.call_info = call_info
        self.live: dict[str, LiveCall] = {}
        self.recent: deque[LiveCall] = deque(maxlen=options.recent_calls)
        # Whisper windows of every call go through one shared scheduler (live/asr_pool.py) that batches
        # them, in their own threads so a call's acoustic path never waits behind ASR; one thread by
        # default because each transcription already uses [asr] cpu_threads cores.
        self.transcriber = engine.transcriber
        self.defer_asr = options.asr_mode == "deferred" and self.transcriber is not None
        self.asr_executor = (ThreadPoolExecutor(max_workers=options.asr_workers, thread_name_prefix="callpulse-asr")
                             if self.defer_asr else None)
        self.asr_pool = (AsrPool(self.transcriber, self.asr_executor,
                                 AsrPoolOptions(max_batch=options.asr_batch or auto_batch(self.transcriber),
                                                max_per_call=options.asr_batch_per_call, workers=options.asr_workers))
                         if self.defer_asr else None)
        self._asr_warned = 0.0

    # --- opening -----------------------------------------------------------------------------

    def _refuse(self, reason: str, message: str) -> CallRejected:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return CallRejected(message)

    def find(self, tap_call_id: str) -> LiveCall | None:
        """The live call a tap knows as ``tap_call_id`` (renamed or not)."""
        call = self.live.get(tap_call_id)
        if call is not None and not call.tap_call_id:
            return call
        return next((c for c in self.live.values() if c.tap_call_id == tap_call_id), None)

    def _fresh_id(self, call_id: str) -> str:
        """``call_id``, or ``<call_id>~2``, ``~3``... when a stored call (or a crashed call's checkpoint)
        already has it: a reused id never overwrites the call stored under it."""
        if self.id_taken is None or not self.id_taken(call_id):
            return call_id
        for n in range(2, 1000):
            candidate = f"{call_id[:120]}~{n}"
            if candidate not in self.live and not self.id_taken(candidate):
                return candidate
        raise self._refuse("call id reused", f"call id {call_id} has been used 1000 times; refused")

    def open(self, meta: CallMeta) -> LiveCall:
        if self.find(meta.call_id) is not None:
            raise self._refuse("call id live", f"call {meta.call_id} is already live; a tap must use a fresh call id")
        if len(self.live) >= self.options.max_calls:
            raise self._refuse("max_calls", f"{len(self.live)} calls are live, the limit live.max_calls; call "
                               f"{meta.call_id} refused (raise the limit only if the CPUs keep up: see "
                               "scripts/bench_live.py)")
        same_tap = sum(1 for c in self.live.values() if c.meta.source == meta.source)
        if same_tap >= self.options.max_calls_per_tap:
            raise self._refuse("max_calls_per_tap", f"{same_tap} calls are live on {meta.source}, the limit "
                               f"live.max_calls_per_tap; call {meta.call_id} refused")
        if meta.peer:
            same_peer = sum(1 for c in self.live.values() if c.meta.peer == meta.peer)
            if same_peer >= self.options.max_calls_per_source:
                raise self._refuse("max_calls_per_source", f"{same_peer} calls are live from {meta.peer}, the "
                                   f"limit live.max_calls_per_source; call {meta.call_id} refused")
        tap_call_id = ""
        fresh = self._fresh_id(meta.call_id)
        if fresh != meta.call_id:
            log.warning("call id %s is already stored; this call is %s (the stored call is kept)", meta.call_id,
                        fresh, extra={"call_id": fresh})
            tap_call_id = meta.call_id
            meta = dataclasses.replace(meta, call_id=fresh)
        stereo = meta.layout == "stereo"
        roles = ("agent", "caller") if stereo else ("mixed",)
        sr = meta.sample_rate_hz
        info = self.call_info(call_id=meta.call_id, sample_rate_hz=sr, n_channels=len(roles),
                              agent_channel=0 if stereo else None, agent_id=meta.agent_id, source=meta.source,
                              started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            session = self.engine.open_call(info, defer_asr=True) if self.defer_asr else self.engine.open_call(info)
        except Exception as exc:  # the engine cannot take it (a model missing, a bad option): refuse, say why
            log.error("call %s: the engine could not open it (%s)", meta.call_id, exc, extra={"call_id": meta.call_id})
            raise self._refuse("engine", f"the engine could not open call {meta.call_id}: {exc}") from exc
        aligner = Aligner(roles=roles, max_skew_samples=sr * self.options.max_skew_ms // 1000,
                          max_gap_samples=int(sr * self.options.rtp_max_gap_s))
        call = LiveCall(meta=meta, session=session, aligner=aligner, started_at=info.started_at,
                        opened_mono=time.monotonic(), tap_call_id=tap_call_id)
        self.live[meta.call_id] = call
        call.task = asyncio.get_running_loop().create_task(self._work(call), name=f"call-{meta.call_id}")
        log.info("call %s opened from %s (%s, %d Hz, agent %s)", meta.call_id, meta.source, meta.layout, sr,
                 meta.agent_id, extra={"call_id": meta.call_id})
        self.on_update("call", meta.call_id, call.summary())
        return call

    # --- audio in ------------------------------------------------------------------------------

    def push(self, call: LiveCall, audio: list[RoleAudio]) -> None:
        if call.state != "live":
            return
        call.frames += 1
        for piece in audio:
            call.aligner.push(piece)
        self._enqueue(call, call.aligner.pop())

    def _enqueue(self, call: LiveCall, block: np.ndarray | None) -> None:
        if block is None or block.shape[1] == 0:
            return
        call.pending.append(block)
        call.pending_samples += block.shape[1]
        sr = call.sample_rate_hz
        limit = int(self.options.max_backlog_s * sr)
        while call.pending_samples > limit and len(call.pending) > 1:
            dropped = call.pending.pop(0)
            call.pending_samples -= dropped.shape[1]
            call.dropped_samples += dropped.shape[1]
            now = time.monotonic()
            if now - call.last_drop_warning > 10:
                call.last_drop_warning = now
                log.error("call %s: more than live.max_backlog_s of audio waiting; dropping the oldest (%.2f s "
                          "dropped so far). The machine cannot keep up: fewer calls, or [asr] model tiny/off",
                          call.call_id, call.dropped_samples / sr, extra={"call_id": call.call_id})
        call.wake.set()

    async def wait_for_room(self, call: LiveCall) -> None:
        """Backpressure for stream taps (WebSocket, TCP): while half of ``max_backlog_s`` waits for the
        engine, stop reading from this connection so TCP slows the sender instead of audio being dropped.
        (RTP over UDP cannot be slowed down; there the drop policy applies.)"""
        limit = self.options.max_backlog_s * call.sample_rate_hz / 2
        while call.state == "live" and call.pending_samples > limit:
            call.drained.clear()
            try:
                await asyncio.wait_for(call.drained.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    def end(self, call: LiveCall, *, reason: str) -> None:
        """The tap is gone (hangup, BYE, disconnect): flush what is held and finalise in the worker."""
        if call.state != "live":
            return
        call.connections -= 1
        if call.connections > 0:
            return
        self._enqueue(call, call.aligner.pop(final=True))
        call.state = "ending"
        call.end_reason = reason
        call.wake.set()
        log.info("call %s ending (%s)", call.call_id, reason, extra={"call_id": call.call_id})

    # --- the worker ------------------------------------------------------------------------------

    async def _work(self, call: LiveCall) -> None:
        loop = asyncio.get_running_loop()
        sr = call.sample_rate_hz
        try:
            await self._checkpoint(call)  # at once: a call that started always leaves a record
            while True:
                await call.wake.wait()
                call.wake.clear()
                while call.pending:
                    blocks, call.pending = call.pending, []
                    n = call.pending_samples
                    call.pending_samples = 0
                    call.drained.set()
                    block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
                    lag_s = n / sr
                    now = time.monotonic()
                    if lag_s > self.options.lag_warn_s and now - call.last_lag_warning > 10:
                        call.last_lag_warning = now
                        log.warning("call %s: processing lags real time by %.1f s", call.call_id, lag_s,
                                    extra={"call_id": call.call_id})
                    floats = (block.astype(np.float32) / 32768.0)
                    async with call.lock:
                        events = await loop.run_in_executor(self.executor, call.session.feed, floats)
                    call.fed_samples += n
                    self._dispatch(call, events)
                    self._schedule_asr(call)
                    if time.monotonic() - call.last_checkpoint >= self.options.checkpoint_interval_s:
                        await self._checkpoint(call)
                if call.state == "ending":
                    break
            if self.asr_pool is not None:
                self.asr_pool.drop_call(call.call_id)  # finish() transcribes what is still open itself
            async with call.lock:
                events = await loop.run_in_executor(self.executor, call.session.finish)
            self._dispatch(call, events)
        except Exception as exc:  # the engine failed: the call must still end visibly, with what we have
            log.exception("call %s: the engine failed (%s); closing the call with its result so far",
                          call.call_id, exc, extra={"call_id": call.call_id})
            call.errors.append({"stage": "live", "t_s": call.fed_samples / sr, "message": str(exc)})
            if call.result is None and call.session is not None:
                try:
                    call.result = dict(await loop.run_in_executor(self.executor, call.session.result))
                except Exception:
                    log.exception("call %s: no result could be saved", call.call_id, extra={"call_id": call.call_id})
        finally:
            call.state = "ended"
            self.live.pop(call.call_id, None)
            self.recent.appendleft(call)
            try:
                await _maybe_await(self.on_ended(call))
            finally:
                call.release()
                call.done.set()
                self.on_update("call", call.call_id, call.summary())

    async def _checkpoint(self, call: LiveCall) -> None:
        """Save the call's partial result and the agent's shift as if the call ended now: after a crash
        the call is closed as "interrupted" with these, its strain counted."""
        call.last_checkpoint = time.monotonic()
        if self.on_checkpoint is None:
            return
        loop = asyncio.get_running_loop()
        session = call.session
        if session is None:  # already released: the call's end saved its result
            return
        try:
            async with call.lock:
                partial = dict(await loop.run_in_executor(self.executor, session.result))
                state = await loop.run_in_executor(self.executor, session.shift_so_far)
            partial.setdefault("call_id", call.call_id)
            partial.setdefault("source", call.meta.source)
            partial.setdefault("started_at", call.started_at)
            if call.tap_call_id:
                partial["tap_call_id"] = call.tap_call_id
            await _maybe_await(self.on_checkpoint(call, partial, state))
        except Exception:  # a failing checkpoint must not end the call; the log says why
            log.exception("call %s: checkpoint failed", call.call_id, extra={"call_id": call.call_id})

    @property
    def asr_waiting(self) -> int:
        """Windows queued or being transcribed, all calls together (the ``callpulse_asr_waiting`` gauge)."""
        pool = self.asr_pool
        return 0 if pool is None else pool.queued + pool.in_flight

    def _schedule_asr(self, call: LiveCall) -> None:
        if not self.defer_asr or call.session is None:
            return
        for job in call.session.take_asr_jobs():
            # queue policy (oldest first, a per-call bound per batch, previews skipped first): asr_pool.py
            future = self.asr_pool.submit(call.call_id, job)
            asyncio.get_running_loop().create_task(self._asr(call, job, future), name=f"asr-{call.call_id}-{job.id}")
        now = time.monotonic()
        waiting = self.asr_waiting
        if waiting > 2 * max(1, len(self.live)) and now - self._asr_warned > 10:
            # Policy when the machine falls behind: transcripts queue up (never dropped, never blocking
            # audio or alerts); their text cues arrive late. Say so.
            self._asr_warned = now
            log.warning("%d transcription windows waiting for %d live calls: texts lag; acoustic alerts are "
                        "unaffected (fewer calls, [asr] model tiny.en, or more live.asr_workers on more cores)",
                        waiting, len(self.live))

    async def _asr(self, call: LiveCall, job: Any, future: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        window: Any = await future  # a WindowResult, the exception the window raised, or AsrSkipped
        if call.state == "ended" or (isinstance(window, AsrSkipped) and not getattr(job, "interim", False)):
            return  # finish() transcribes what is still open itself
        async with call.lock:
            if call.state == "ended":
                return
            # a skipped preview goes back too: the session frees the turn's preview slot (no error)
            events = await loop.run_in_executor(self.executor, call.session.apply_asr, job, window)
        self._dispatch(call, events)
        self._schedule_asr(call)  # a session that waited for this window may have queued new ones going on

    def _dispatch(self, call: LiveCall, events: list) -> None:
        for event in events:
            if isinstance(event, AlertEvent):
                alert = event.as_json()
                call.alerts.append(alert)
                self.on_alert(call, alert)
            elif isinstance(event, LevelUpdate):
                call.level = {"t_s": round(event.t_s, 2), "caller_agitation": round(event.caller_agitation, 3),
                              "agent_strain": round(event.agent_strain, 3), "reasons": list(event.reasons)}
                self.on_update("level", call.call_id, {"call_id": call.call_id, **call.level})
            elif isinstance(event, TranscriptEvent):
                if not event.final:
                    preview = {"speaker": event.speaker, "start_s": round(event.start_s, 2),
                               "text": event.text + " …", "interim": True}
                    self.on_update("transcript", call.call_id,
                                   {"call_id": call.call_id, "tail": list(call.transcript) + [preview]})
                    continue
                line = {"speaker": event.speaker, "start_s": round(event.start_s, 2), "text": event.text,
                        "sentiment": round(event.sentiment, 2), "flags": list(event.flags),
                        "emotion": event.emotion.get("label") if event.emotion else None}
                call.transcript.append(line)
                while len(call.transcript) > self.options.transcript_tail:
                    call.transcript.popleft()
                self.on_update("transcript", call.call_id, {"call_id": call.call_id, "tail": list(call.transcript)})
            elif isinstance(event, StageError):
                call.errors.append({"stage": event.stage, "t_s": round(event.t_s, 2), "message": event.message})
                log.warning("call %s: stage %s failed at %.1f s: %s", call.call_id, event.stage, event.t_s,
                            event.message, extra={"call_id": call.call_id})
            elif isinstance(event, CallEnded):
                call.result = dict(event.result)
                if call.tap_call_id:
                    call.result["tap_call_id"] = call.tap_call_id

    async def result_so_far(self, call: LiveCall) -> dict:
        """The engine's per-call JSON as far as the call has got (taken between two feeds)."""
        if call.result is not None:
            return call.result
        async with call.lock:
            if call.result is not None:
                return call.result
            if call.session is None:  # ended without a result (the engine failed); its session is released
                return {"call_id": call.call_id, "alerts": call.alerts, "level": call.level}
            return await asyncio.get_running_loop().run_in_executor(self.executor, call.session.result)

    async def close_all(self, *, reason: str, timeout_s: float) -> None:
        """End every live call and wait (bounded) for their results (service shutdown)."""
        calls = list(self.live.values())
        for call in calls:
            call.connections = 1
            self.end(call, reason=reason)
        if calls:
            await asyncio.wait([asyncio.ensure_future(c.done.wait()) for c in calls], timeout=timeout_s)
        if self.asr_pool is not None:
            await self.asr_pool.close()
        if self.asr_executor is not None:
            self.asr_executor.shutdown(wait=False, cancel_futures=True)


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
