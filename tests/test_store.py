"""The results store keeps every call, turn, alert and shift, and fails loudly and helpfully.

Every test taking ``store`` or ``backend`` runs twice: on SQLite (a new file) and on a real PostgreSQL
server the suite starts itself (a new database; tests/pg_support.py). SQLite-only behaviour (the file,
WAL, corrupt files) keeps its own tests; PostgreSQL-only behaviour is in tests/test_store_pg.py.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import StoreError
from pipeline.outputs.store import SCHEMA_VERSION, Store
from pipeline.outputs.store_base import ResultsStore, open_store

from example_result import calm_zh_result, escalating_result, mono_result


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> str:
    """Where this test's database lives: a new SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite")
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(backend):
    s = open_store(backend)
    assert isinstance(s, ResultsStore)
    yield s
    s.close()


def _sql(store, sql: str, params: tuple = ()):
    """Query the tables directly on either backend (SQLite's ``?`` placeholders become ``%s``)."""
    if not isinstance(store.connection, sqlite3.Connection):
        sql = sql.replace("?", "%s")
    return store.connection.execute(sql, params)


def _expected_roundtrip(result: dict) -> dict:
    """What a stored result reads back as: identical, except NaN (not JSON) comes back as null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return clean(result)


def test_open_creates_the_current_schema_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "results.sqlite"
    with Store.open(path) as s:
        assert s.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in s.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"calls", "segments", "alerts", "agent_shifts"} <= tables
    assert path.is_file()


def test_a_saved_call_reads_back_as_the_same_json(store):
    result = escalating_result()
    store.save_call(result)
    assert store.get_call("escalating_en") == _expected_roundtrip(result)
    assert store.get_call("no-such-call") is None


def test_saving_indexes_segments_and_alerts(store):
    store.save_call(escalating_result())
    rows = _sql(store,
        "SELECT idx, speaker, start_s, emotion_label, flags FROM segments WHERE call_id = ? ORDER BY idx",
        ("escalating_en",)).fetchall()
    assert len(rows) == len(escalating_result()["segments"])
    assert rows[7][1] == "caller" and rows[7][3] == "angry" and "escalation_request" in rows[7][4]
    (alert,) = store.list_alerts()
    assert alert["id"] == "escalating_en-ca-1"
    assert alert["call_id"] == "escalating_en" and alert["agent_id"] == "a17"
    assert alert["action"] == "supervisor_takeover"
    assert alert["raised_at_s"] == 34.0 and alert["cleared_at_s"] is None
    assert alert["reasons"][2] == "caller said: escalation_request"


def test_saving_the_same_call_twice_is_idempotent_and_keeps_alert_cursors(store):
    result = escalating_result()
    store.save_call(result)
    first_seq = store.list_alerts()[0]["seq"]
    result["alerts"][0]["cleared_at_s"] = 66.0
    store.save_call(result)
    assert store.connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 1
    assert store.connection.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == len(result["segments"])
    (alert,) = store.list_alerts()
    assert alert["seq"] == first_seq
    assert alert["cleared_at_s"] == 66.0
    assert store.list_alerts(since_id=first_seq) == []


def test_a_resaved_call_drops_alerts_it_no_longer_has(store):
    result = escalating_result()
    store.save_call(result)
    result["alerts"] = []
    store.save_call(result)
    assert store.list_alerts() == []
    assert store.list_calls()[0]["n_alerts"] == 0


def test_alerts_without_an_id_get_a_stable_one(store):
    result = escalating_result("c9")
    del result["alerts"][0]["id"]
    store.save_call(result)
    store.save_call(result)
    (alert,) = store.list_alerts()
    assert alert["id"] == "c9:caller_agitation:0"


def test_list_calls_gives_summary_rows_newest_first(store):
    store.save_call(escalating_result("first"))
    store.save_call(calm_zh_result("second"))
    store.save_call(mono_result("third"))
    rows = store.list_calls()
    assert [r["call_id"] for r in rows] == ["third", "second", "first"]
    second = rows[1]
    assert second["languages"] == ["zh"] and second["agent_id"] == "a08"
    assert second["peak_agitation"] == pytest.approx(0.1) and second["n_alerts"] == 0
    assert rows[2]["duration_s"] == pytest.approx(70.256)
    assert rows[2]["started_at"] == "2026-11-29T09:30:00+08:00"
    assert [r["call_id"] for r in store.list_calls(limit=1)] == ["third"]
    store.save_call(escalating_result("first"))  # re-analysed: now the newest
    assert store.list_calls()[0]["call_id"] == "first"


def test_peak_agitation_falls_back_to_the_timeline_when_the_summary_lacks_it(store):
    result = escalating_result("nosummary")
    del result["summary"]["peak_agitation"]
    store.save_call(result)
    assert store.list_calls()[0]["peak_agitation"] == pytest.approx(0.92, abs=0.01)


def test_list_alerts_pages_by_cursor(store):
    for i in range(5):
        store.save_call(escalating_result(f"call{i}"))
    first_page = store.list_alerts(limit=2)
    assert [a["call_id"] for a in first_page] == ["call0", "call1"]
    rest = store.list_alerts(since_id=first_page[-1]["seq"])
    assert [a["call_id"] for a in rest] == ["call2", "call3", "call4"]
    assert [a["seq"] for a in first_page + rest] == sorted(a["seq"] for a in first_page + rest)


def test_shift_state_round_trips_and_is_replaced(store):
    assert store.load_shift("a17") is None
    store.save_shift("a17", {"agent_id": "a17", "hostile_s": 40.5, "calls": 3, "last_call_end": None})
    store.save_shift("a17", {"agent_id": "a17", "hostile_s": 80.0, "calls": 4, "last_call_end": "x"})
    assert store.load_shift("a17") == {"agent_id": "a17", "hostile_s": 80.0, "calls": 4, "last_call_end": "x"}
    assert store.connection.execute("SELECT COUNT(*) FROM agent_shifts").fetchone()[0] == 1


def test_everything_survives_closing_and_reopening(backend):
    with open_store(backend) as s:
        s.save_call(escalating_result())
        s.save_shift("a17", {"calls": 1})
    with open_store(backend) as s:
        assert s.get_call("escalating_en")["alerts"][0]["level"] == 0.71
        assert s.load_shift("a17") == {"calls": 1}


def test_numpy_values_and_nan_are_stored_as_plain_json(store):
    result = escalating_result("np")
    result["duration_s"] = np.float32(70.25)
    result["timeline"][0]["caller_agitation"] = np.float64(0.5)
    result["segments"][0]["prosody"]["f0_median_hz"] = float("nan")
    result["segments"][0]["prosody"]["hist"] = np.arange(3)
    store.save_call(result)
    back = store.get_call("np")
    assert back["duration_s"] == pytest.approx(70.25)
    assert back["segments"][0]["prosody"]["f0_median_hz"] is None
    assert back["segments"][0]["prosody"]["hist"] == [0, 1, 2]


def test_a_result_without_call_id_is_refused(store):
    result = escalating_result()
    del result["call_id"]
    with pytest.raises(StoreError, match="call_id"):
        store.save_call(result)


def test_unserialisable_shift_state_is_refused_with_a_reason(store):
    with pytest.raises(StoreError, match="JSON"):
        store.save_shift("a1", {"when": object()})


def test_a_garbage_file_raises_store_error_saying_what_to_do(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not a database at all \x00\xff" * 200)
    with pytest.raises(StoreError) as info:
        Store.open(path)
    message = str(info.value)
    assert str(path) in message and "corrupt or not a SQLite file" in message and "move it aside" in message


def test_an_unwritable_location_raises_store_error(tmp_path):
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    with pytest.raises(StoreError, match="writable"):
        Store.open("/proc/callpulse-no-such-dir/results.sqlite")


def test_a_read_only_folder_raises_store_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("running as root: permissions do not stop writes (see the /proc test)")
        with pytest.raises(StoreError, match="writable|read-only"):
            Store.open(folder / "results.sqlite")
    finally:
        folder.chmod(0o755)


def test_a_database_from_a_newer_callpulse_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(path)


def test_a_closed_store_refuses_use(backend):
    s = open_store(backend)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.list_calls()


def test_concurrent_saves_from_threads_all_land(store):
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                store.save_call(escalating_result(f"t{k}-{i}"))
                store.save_shift(f"agent{k}", {"calls": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_calls(limit=100)) == 20
    assert len(store.list_alerts()) == 20
    assert all(store.load_shift(f"agent{k}") == {"calls": 4} for k in range(4))


def test_other_modules_can_add_their_own_tables(tmp_path):
    # SQLite only: the live alert log keeps its tables on the store's connection.
    store = Store.open(tmp_path / "results.sqlite")
    db = store.connection
    with store.lock, db:
        db.execute("CREATE TABLE IF NOT EXISTS extra (k TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO extra VALUES ('a', 'b')")
    assert db.execute("SELECT v FROM extra").fetchone() == ("b",)
    store.close()


def test_the_store_never_logs_transcript_text(store, caplog):
    caplog.set_level(logging.DEBUG)
    store.save_call(escalating_result())
    store.get_call("escalating_en")
    store.list_calls()
    assert caplog.records, "expected the save to be logged"
    assert "ridiculous" not in caplog.text and "****4421" not in caplog.text


_SQLITE_HEADER = b"SQLite format 3\x00"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=1, max_size=4096), with_header=st.booleans())
def test_any_bytes_on_disk_open_cleanly_or_raise_store_error(tmp_path, body, with_header):
    path = tmp_path / "fuzz.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes((_SQLITE_HEADER if with_header else b"") + body)
    try:
        s = Store.open(path)
    except StoreError:
        return
    try:
        s.list_calls()
        s.save_call(escalating_result("fuzz"))
        assert s.get_call("fuzz")["call_id"] == "fuzz"
    except StoreError:
        pass
    finally:
        s.close()


# The live alert log's tables as pipeline.live.outbox created them itself before schema step 3.
_OLD_LIVE_TABLES = """
CREATE TABLE live_alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, state TEXT NOT NULL,
    call_id TEXT NOT NULL, agent_id TEXT, body TEXT NOT NULL, created_at TEXT NOT NULL, acked_at TEXT,
    acked_by TEXT, UNIQUE (alert_id, state));
CREATE TABLE live_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_seq INTEGER NOT NULL REFERENCES live_alerts(seq),
    url TEXT NOT NULL, idempotency_key TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL, delivered_at TEXT, last_error TEXT);
INSERT INTO live_alerts VALUES (1, 'c1-a1', 'raised', 'c1', 'a17', '{"id": "c1-a1"}', '2026-12-01T09:00:00', NULL, NULL);
INSERT INTO live_outbox VALUES (1, 1, 'http://hook', 'c1-a1', 2, 1.5, NULL, 'HTTP 503');
"""


def test_a_version_2_live_database_keeps_its_alert_log_and_outbox_through_step_3(tmp_path):
    from pipeline.outputs import store as store_module

    path = tmp_path / "live.sqlite"
    conn = sqlite3.connect(path)
    for step in range(2):  # a database written by the callpulse before step 3
        conn.executescript(f"BEGIN; {store_module._MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")
    conn.executescript(_OLD_LIVE_TABLES)
    conn.close()
    with Store.open(path) as s:
        db = s.connection
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT alert_id, state FROM live_alerts").fetchall() == [("c1-a1", "raised")]
        assert db.execute("SELECT id, idempotency_key, attempts, last_error, claimed_by FROM live_outbox").fetchall() \
            == [(1, "c1-a1", 2, "HTTP 503", None)]
        assert "worker_id" in [r[1] for r in db.execute("PRAGMA table_info(live_checkpoints)")]
