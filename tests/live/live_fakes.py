"""Helpers for the live tests: a scripted fake engine (same interface as pipeline.engine, for protocol
and server tests that are not about the models) and a running service on free loopback ports."""
from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from pipeline.events import AlertEvent, CallEnded, LevelUpdate
from pipeline.live.options import LiveOptions
from pipeline.strain import ShiftBook, ShiftState, StrainOptions


class FakeSession:
    """Scripted stand-in for CallSession (pipeline.seams.CallSessionPort): caller loudness is 'agitation'; an alert is raised when it
    stays >= 0.5 for 2 s, exactly like a hysteresis policy with a 2 s sustain."""

    def __init__(self, info, shifts=None) -> None:
        self.info = info
        self.shifts = shifts
        self.samples = 0
        self.caller = []
        self.next_tick = 1
        self.above = 0
        self.alert: AlertEvent | None = None
        self.fed_blocks = 0
        self.threads: set[str] = set()

    def feed(self, block: np.ndarray) -> list:
        import threading

        self.threads.add(threading.current_thread().name)
        assert block.dtype == np.float32 and block.shape[0] == self.info.n_channels
        self.fed_blocks += 1
        caller = block[-1]
        self.caller.append(caller)
        self.samples += block.shape[1]
        events = []
        sr = self.info.sample_rate_hz
        audio = np.concatenate(self.caller)
        while self.next_tick * sr <= self.samples:
            t = self.next_tick
            sec = audio[(t - 1) * sr:t * sr]
            level = float(min(1.0, np.sqrt(np.mean(sec ** 2)) * 4)) if sec.size else 0.0
            events.append(LevelUpdate(t_s=float(t), caller_agitation=level, agent_strain=0.1, reasons=("loud",)))
            self.above = self.above + 1 if level >= 0.5 else 0
            if self.above == 2 and self.alert is None:
                self.alert = AlertEvent(id=f"{self.info.call_id}-a1", kind="caller_agitation",
                                        action="supervisor_takeover", state="raised", call_id=self.info.call_id,
                                        agent_id=self.info.agent_id, onset_s=t - 2.0, raised_at_s=float(t),
                                        cleared_at_s=None, level=level, reasons=("loud voice",))
                events.append(self.alert)
            self.next_tick += 1
        return events

    def result(self) -> dict:
        return {"schema": "callpulse.call/1", "call_id": self.info.call_id,
                "duration_s": self.samples / self.info.sample_rate_hz,
                "alerts": [] if self.alert is None else [self.alert.as_json()]}

    def shift_so_far(self) -> dict | None:
        return None

    def take_asr_jobs(self) -> list:
        return []  # the fake transcribes nothing

    def apply_asr(self, job, window, *, t_available=None) -> list:
        return []

    def finish(self) -> list:
        if self.info.agent_id and self.shifts is not None:
            state = self.shifts.get(self.info.agent_id)
            self.shifts.record_call(ShiftState(self.info.agent_id, hostile_s=state.hostile_s + 300.0,
                                               talk_s=state.talk_s + self.samples / self.info.sample_rate_hz,
                                               calls=state.calls + 1, recommended=True))
        return [CallEnded(self.info.call_id, self.result())]


class FakeEngine:
    """The engine's interface (pipeline.seams.CallEngine) with scripted sessions and no ASR."""

    transcriber = None

    def __init__(self) -> None:
        self.sessions: dict[str, FakeSession] = {}
        self.shifts = ShiftBook(StrainOptions())

    def open_call(self, info, *, defer_asr: bool = False) -> FakeSession:
        session = FakeSession(info, self.shifts)
        self.sessions[info.call_id] = session
        return session


class FakeStore:
    """The store's interface (pipeline.seams.CallStore) on an in-memory SQLite connection (unit tests only)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.connection = sqlite3.connect(path)
        self.calls: dict[str, dict] = {}

    def save_call(self, result) -> None:
        self.calls[result["call_id"]] = dict(result)

    def get_call(self, call_id):
        return self.calls.get(call_id)

    def list_calls(self):
        return [{"call_id": k} for k in self.calls]

    def list_shift_agents(self):
        return []  # the fake keeps no shifts: the engine's book is in memory


def fake_call_info(**fields):
    return SimpleNamespace(**fields)


@dataclass
class Running:
    service: object
    bound: object
    engine: FakeEngine
    store: FakeStore
    token: str


TOKEN = "test-token-0123456789abcdef"


def live_options(**changes) -> LiveOptions:
    base = dict(port=0, sip_port=0, audiosocket_port=0, token=TOKEN, jitter_buffer_ms=40)
    return LiveOptions(**{**base, **changes})


def run_live(scenario, *, options: LiveOptions | None = None, timeout_s: float = 60.0, store=None, engine=None):
    """Start a service on free loopback ports (the fake engine unless ``engine`` is given), run
    ``await scenario(running)`` under a timeout, stop the service (bounded) and return the scenario's value."""
    from pipeline.live.calls import default_call_info
    from pipeline.live.server import LiveService

    async def main():
        eng = engine if engine is not None else FakeEngine()
        st = store if store is not None else FakeStore()
        service = LiveService(engine=eng, store=st, options=options or live_options(),
                              call_info=fake_call_info if engine is None else default_call_info)
        bound = await service.start()
        try:
            return await asyncio.wait_for(scenario(Running(service, bound, eng, st, TOKEN)), timeout=timeout_s)
        finally:
            await asyncio.wait_for(service.stop(drain_s=5.0), timeout=15.0)

    return asyncio.run(main())


def loud_call(seconds: float, *, sr: int = 8000, loud_from_s: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(agent, caller) int16: a quiet caller who gets loud at ``loud_from_s``."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    caller = 0.05 * np.sin(2 * np.pi * 220 * t)
    caller[int(loud_from_s * sr):] = 0.5 * np.sin(2 * np.pi * 330 * t[int(loud_from_s * sr):])
    agent = 0.05 * np.sin(2 * np.pi * 180 * t)
    return (agent * 32767).astype(np.int16), (caller * 32767).astype(np.int16)
