"""The typed seams between the engine and what runs it (batch, cluster, the live service): what an
engine, a call session and a result store must offer. ``Engine`` / ``CallSession`` / the stores
implement them, and so do the scripted test fakes (tests/live/live_fakes.py), checked by a test."""
from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from .asr_schedule import AsrJob
from .events import SessionEvent
from .strain import ShiftBook


@runtime_checkable
class CallSessionPort(Protocol):
    """One call's state, fed in call order from one thread at a time."""

    def feed(self, block: np.ndarray) -> list[SessionEvent]: ...

    def finish(self) -> list[SessionEvent]: ...

    def result(self) -> dict: ...

    def shift_so_far(self) -> dict | None: ...

    def take_asr_jobs(self) -> list[AsrJob]: ...

    def apply_asr(self, job: AsrJob, window: Any, *, t_available: float | None = None) -> list[SessionEvent]: ...


@runtime_checkable
class CallEngine(Protocol):
    """The models, loaded once per process, and the agents' shift book (passed in, shared by calls)."""

    transcriber: Any  # None when ASR is off
    shifts: ShiftBook

    def open_call(self, info: Any, *, defer_asr: bool = False) -> CallSessionPort: ...


@runtime_checkable
class CallStore(Protocol):
    """Where finished calls are kept (SQLite, PostgreSQL, a test's in-memory fake)."""

    def save_call(self, result: Mapping) -> None: ...

    def get_call(self, call_id: str) -> dict | None: ...

    def list_calls(self) -> list[dict]: ...

    def list_shift_agents(self) -> list[str]: ...
