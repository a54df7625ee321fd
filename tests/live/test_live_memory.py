"""Bounded live memory (issue 11 item 4): an ended call keeps its summary and result for the API, never its
session (audio rings, per-call model state) or its tap's buffers. Many short calls are driven through a
real server; afterwards no session of an ended call is alive (weak references), whatever the number of
calls, and the server keeps at most ``live.recent_calls`` ended calls."""
from __future__ import annotations

import asyncio
import gc
import weakref

import numpy as np
import pytest

from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_fakes import TOKEN, FakeEngine, FakeStore, live_options, run_live


class _Tracking:
    """The engine as the server sees it, remembering each session it opened by weak reference only."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.opened: list[weakref.ref] = []

    def open_call(self, info, **kwargs):
        session = self._engine.open_call(info, **kwargs)
        self.opened.append(weakref.ref(session))
        return session

    def __getattr__(self, name):
        return getattr(self._engine, name)


class _ForgetfulFakeEngine(FakeEngine):
    """The scripted fake engine without its test-side dict of sessions (which would keep them alive)."""

    def open_call(self, info):
        from live_fakes import FakeSession

        return FakeSession(info, self.shifts)


def _short_call(call_id: str, seconds: float, sr: int = 8000) -> ReplayCall:
    rng = np.random.default_rng(abs(hash(call_id)) % 2**32)
    n = int(seconds * sr)
    agent = (rng.standard_normal(n) * 800).astype(np.int16)
    caller = (rng.standard_normal(n) * 800).astype(np.int16)
    return ReplayCall(call_id, "a17", agent, caller, sr)


def _drive(engine, *, calls: int, seconds: float, recent: int, call_info_real: bool):
    tracking = _Tracking(engine)
    options = live_options(recent_calls=recent)

    async def scenario(r):
        for n in range(calls):
            call = _short_call(f"mem-{n}", seconds)
            await replay(call, fmt="audio-fork", to=f"{r.bound.ws}/tap/audio-fork", token=TOKEN, speed=0)
            await wait_for_result(r.bound.http, call.call_id, token=TOKEN, timeout_s=60)
        for _ in range(100):  # the last call's worker lets go right after its result is taken
            if not r.service.calls.live:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        gc.collect()
        alive = [ref for ref in tracking.opened if ref() is not None]
        recent = list(r.service.calls.recent)
        return len(tracking.opened), len(alive), recent, len(r.store.calls)

    if call_info_real:
        return run_live(scenario, engine=tracking, store=FakeStore(), options=options, timeout_s=600)
    from live_fakes import fake_call_info
    from pipeline.live.server import LiveService

    async def main():
        service = LiveService(engine=tracking, store=FakeStore(), options=options, call_info=fake_call_info)
        bound = await service.start()
        from live_fakes import Running

        try:
            return await asyncio.wait_for(scenario(Running(service, bound, tracking, service.store, TOKEN)), 120)
        finally:
            await asyncio.wait_for(service.stop(drain_s=5.0), timeout=15.0)

    return asyncio.run(main())


def test_no_session_of_an_ended_call_stays_alive_on_the_scripted_engine():
    opened, alive, recent, stored = _drive(_ForgetfulFakeEngine(), calls=30, seconds=1.5, recent=10,
                                           call_info_real=False)
    assert opened == 30 and stored == 30
    assert alive == 0, f"{alive} of {opened} ended sessions are still referenced"
    assert len(recent) == 10, "the server lists live.recent_calls ended calls"
    assert all(c.session is None and c.aligner is None and c.result is not None for c in recent)


@pytest.mark.slow
def test_no_session_of_an_ended_call_stays_alive_on_the_real_engine(real_engine):
    opened, alive, recent, stored = _drive(real_engine, calls=12, seconds=3.0, recent=5, call_info_real=True)
    assert opened == 12 and stored == 12
    assert alive == 0, f"{alive} of {opened} ended real sessions are still referenced"
    assert len(recent) == 5 and all(c.session is None for c in recent)
