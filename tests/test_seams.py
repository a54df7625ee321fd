"""The engine, its sessions, the stores and the test fakes all implement the typed seams."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.engine import CallInfo, CallSession, Engine
from pipeline.outputs.store import Store
from pipeline.seams import CallEngine, CallSessionPort, CallStore

sys.path.insert(0, str(Path(__file__).resolve().parent / "live"))
from live_fakes import FakeEngine, FakeStore  # noqa: E402


def _members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(protocol.__annotations__)


def test_the_real_classes_offer_every_member_of_their_seam():
    for cls, protocol in ((Engine, CallEngine), (CallSession, CallSessionPort), (Store, CallStore)):
        missing = {m for m in _members(protocol) if not hasattr(cls, m) and m not in ("transcriber", "shifts")}
        assert not missing, (cls.__name__, missing)
    assert {"transcriber", "shifts"} <= set(Engine.__init__.__code__.co_varnames)


def test_the_fakes_implement_the_same_seams(tmp_path):
    engine = FakeEngine()
    assert isinstance(engine, CallEngine)
    session = engine.open_call(CallInfo("c1", 8000, 2, 0), defer_asr=True)
    assert isinstance(session, CallSessionPort)
    assert isinstance(FakeStore(), CallStore)
    store = Store.open(str(tmp_path / "s.sqlite"))
    try:
        assert isinstance(store, CallStore)
    finally:
        store.close()
