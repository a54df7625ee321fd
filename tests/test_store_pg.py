"""The PostgreSQL store holds the same tables and rows as SQLite, migrates safely with several
processes, and fails with a reason (never a password). Runs against the suite's real server
(tests/pg_support.py); the behaviour both backends share is tested in tests/test_store.py."""
from __future__ import annotations

import socket
import sqlite3
import threading

import pytest

from pipeline.outputs import store as sqlite_store
from pipeline.outputs import store_pg
from pipeline.errors import StoreError
from pipeline.outputs.store_base import is_postgres_url, open_store, resolve_database
from pipeline.outputs.store_pg import PgStore
from pipeline.live.options import LiveOptions
from pipeline.live.floor import open_alert_log

from example_result import calm_zh_result, escalating_result, mono_result

TABLES = ("calls", "segments", "alerts", "agent_shifts", "live_checkpoints", "live_alerts", "live_outbox",
          "live_workers", "live_calls")
# Values that are per-database by design: when a row was saved and the cursors handed out.
PER_DATABASE = {"saved_at", "saved_seq", "rowid", "updated_at", "created_at", "acked_at", "next_attempt_at",
                "claimed_until", "heartbeat_at", "started_at"}


def _both(tmp_path, pg_url):
    return sqlite_store.Store.open(tmp_path / "r.sqlite"), PgStore.open(pg_url)


@pytest.fixture
def pg_url(postgres_server) -> str:
    return postgres_server.new_database()


def _columns_sqlite(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _columns_pg(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        (table,))]


def test_both_backends_have_the_same_migrations_tables_and_columns(tmp_path, pg_url):
    assert store_pg.SCHEMA_VERSION == sqlite_store.SCHEMA_VERSION, \
        "every SQLite migration step needs its PostgreSQL twin in pipeline/outputs/store_pg.py"
    with sqlite_store.Store.open(tmp_path / "r.sqlite") as lite, PgStore.open(pg_url) as pg:
        assert pg.connection.execute("SELECT version FROM callpulse_schema").fetchone()[0] == store_pg.SCHEMA_VERSION
        for table in TABLES:
            assert _columns_pg(pg.connection, table) == _columns_sqlite(lite.connection, table), table


def _rows(conn, table: str, columns: list[str], order: str) -> list[tuple]:
    keep = [c for c in columns if c not in PER_DATABASE]
    return [tuple(r) for r in conn.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY {order}")]


def test_the_same_results_give_the_same_rows_in_both(tmp_path, pg_url):
    results = [escalating_result("e1"), calm_zh_result("z1"), mono_result("m1"), escalating_result("e2")]
    resaved = escalating_result("e1")
    resaved["alerts"][0]["cleared_at_s"] = 70.0
    order = {"calls": "call_id", "segments": "call_id, idx", "alerts": "id", "agent_shifts": "agent_id",
             "live_checkpoints": "call_id", "live_alerts": "seq", "live_outbox": "id"}
    live = LiveOptions(webhook_urls=("http://a/hook", "http://b/hook"), webhook_states=("raised", "cleared"))
    raised = {"id": "e1-a1", "state": "raised", "call_id": "e1", "agent_id": "a17", "level": 0.8}
    with sqlite_store.Store.open(tmp_path / "r.sqlite") as lite, PgStore.open(pg_url) as pg:
        for s in (lite, pg):
            for r in results:
                s.save_call(r)
            s.save_call(resaved)
            s.save_shift("a17", {"agent_id": "a17", "hostile_s": 12.5, "calls": 2})
            s.save_checkpoint("live-1", escalating_result("live-1"), shift={"agent_id": "a17", "calls": 3})
            alerts = open_alert_log(s, live, worker_id="w1")
            alerts.record(raised)
            alerts.record({**raised, "state": "cleared"})
            alerts.ack("e1-a1", by="sup:ack")
        for table in order:
            cols = _columns_sqlite(lite.connection, table)
            lite_rows = _rows(lite.connection, table, cols, order[table])
            assert lite_rows, table
            assert _rows(pg.connection, table, cols, order[table]) == lite_rows, table
        assert [c["call_id"] for c in pg.list_calls()] == [c["call_id"] for c in lite.list_calls()]
        assert [a["id"] for a in pg.list_alerts()] == [a["id"] for a in lite.list_alerts()]
        assert pg.get_call("e1") == lite.get_call("e1")


def test_database_option_picks_the_backend(tmp_path, pg_url):
    assert is_postgres_url(pg_url) and is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("results.sqlite") and not is_postgres_url(None)
    assert resolve_database("results.sqlite", folder=tmp_path) == str(tmp_path / "results.sqlite")
    assert resolve_database(pg_url, folder=tmp_path) == pg_url
    assert resolve_database("", folder=tmp_path) is None
    with open_store(pg_url) as s:
        assert isinstance(s, PgStore)
    with open_store(tmp_path / "x.sqlite") as s:
        assert isinstance(s, sqlite_store.Store)


def test_several_processes_opening_an_empty_database_at_once_migrate_it_once(pg_url):
    stores: list[PgStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        try:
            barrier.wait()
            stores.append(PgStore.open(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        db = stores[0].connection
        assert db.execute("SELECT COUNT(*), MAX(version) FROM callpulse_schema").fetchone() == (1, store_pg.SCHEMA_VERSION)
    finally:
        for s in stores:
            s.close()


def test_two_connections_writing_at_once_lose_nothing(pg_url):
    a, b = PgStore.open(pg_url), PgStore.open(pg_url)
    try:
        def worker(s: PgStore, k: int) -> None:
            for i in range(6):
                s.save_call(escalating_result(f"w{k}-{i}"))
        threads = [threading.Thread(target=worker, args=(s, k)) for k, s in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(a.list_calls(limit=100)) == 12 and len(b.list_alerts()) == 12
        seqs = [r[0] for r in a.connection.execute("SELECT saved_seq FROM calls")]
        assert len(set(seqs)) == 12, "newest-first order needs a distinct saved_seq per save"
    finally:
        a.close()
        b.close()


def test_a_database_from_a_newer_callpulse_is_refused(pg_url):
    with PgStore.open(pg_url) as s:
        s.connection.execute("UPDATE callpulse_schema SET version = version + 1")
    with pytest.raises(StoreError, match="newer"):
        PgStore.open(pg_url)


def test_an_unreachable_server_says_what_to_check_and_hides_the_password():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(StoreError) as info:
        PgStore.open(f"postgresql://callpulse:s3cret-pw@127.0.0.1:{port}/callpulse")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "running" in message
    assert "s3cret-pw" not in message


def test_a_missing_database_says_to_create_it(postgres_server):
    with pytest.raises(StoreError, match="createdb"):
        PgStore.open(postgres_server.url("no_such_database"))


def test_text_with_nul_characters_is_stored(pg_url):
    result = escalating_result("nul")
    result["segments"][0]["text"] = "before\x00after"
    with PgStore.open(pg_url) as s:
        s.save_call(result)
        assert s.get_call("nul")["segments"][0]["text"] == "before\x00after"
        assert s.connection.execute("SELECT text FROM segments WHERE call_id = 'nul' AND idx = 0").fetchone()[0] \
            == "beforeafter"


def test_live_checkpoints_behave_as_on_sqlite(tmp_path, pg_url):
    lite, pg = _both(tmp_path, pg_url)
    with lite, pg:
        seen = []
        for s in (lite, pg):
            s.save_call(calm_zh_result("done"))
            s.save_checkpoint("c1", escalating_result("c1"), shift={"agent_id": "a17", "calls": 1})
            s.save_checkpoint("c2", mono_result("c2"))
            s.save_checkpoint("c1", escalating_result("c1"), shift={"agent_id": "a17", "calls": 2})  # replaced
            listed = [(c["call_id"], c["shift"], c["result"]["call_id"]) for c in s.list_checkpoints()]
            exists = (s.call_exists("c1"), s.call_exists("done"), s.call_exists("nope"),
                      s.stored_call_exists("c1"), s.stored_call_exists("done"))
            s.drop_checkpoint("c1")
            s.drop_checkpoint("c1")  # idempotent
            seen.append((sorted(listed, key=str), exists, [c["call_id"] for c in s.list_checkpoints()]))
        assert seen[0] == seen[1]
        assert seen[1][1] == (True, True, False, False, True)
        assert seen[1][2] == ["c2"]


def test_a_dropped_connection_fails_one_operation_then_reconnects(pg_url, postgres_server):
    import psycopg

    with PgStore.open(pg_url) as s:
        s.save_call(escalating_result("before"))
        pid = s.connection.info.backend_pid
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="cannot read call before"):
            s.get_call("before")
        assert s.get_call("before")["call_id"] == "before"
        s.save_call(escalating_result("after"))
        assert s.connection.info.backend_pid != pid


def test_the_live_service_takes_a_postgresql_database_and_an_unreachable_one_fails_with_the_reason():
    # Several live workers share one PostgreSQL (tests/live/test_multiworker.py); a wrong URL fails
    # before any model loads, saying where it tried and never the password.
    from pipeline.config import load_config
    from pipeline.live.server import LiveService

    config = load_config().replace("live", database="postgresql://callpulse:s3cret@127.0.0.1:1/callpulse")
    with pytest.raises(StoreError, match="cannot connect to the results database") as err:
        LiveService.from_config(config, insecure=True)
    assert "127.0.0.1:1" in str(err.value) and "s3cret" not in str(err.value)
