"""SQLite results store: calls, their turns and alerts, and each agent's shift state.

The embedded default store for batch (``results.sqlite`` next to the outputs) and for the live server.
One connection per ``Store``, shared between threads behind a lock (``check_same_thread=False``); the
database runs in WAL mode so a dashboard can read while a worker writes.

The full per-call JSON (schema callpulse.call/1) is kept verbatim in ``calls.json``; the other columns and
tables are indexes into it for queries (calls by agent, alerts since a cursor, turns by sentiment).
Transcripts arrive already masked by pipeline.masking, and nothing here logs their text.

Schema versions are tracked in ``PRAGMA user_version``; ``Store.open`` applies any missing migrations in
order, and refuses a database written by a newer callpulse rather than guessing at its layout.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pipeline.errors import StoreError

from .store_sql import (SqlStore, _alert_id, _dumps, _jsonable, _text_or_none, _utc_now,  # noqa: F401 (re-exported)
                         finite_number)

log = logging.getLogger(__name__)

# Each entry upgrades the schema from version i to i + 1. Append; never edit a released step.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        call_id         TEXT PRIMARY KEY,
        source          TEXT,
        agent_id        TEXT,
        started_at      TEXT,
        duration_s      REAL,
        languages       TEXT NOT NULL DEFAULT '[]',   -- JSON list of language codes
        peak_agitation  REAL,
        n_alerts        INTEGER NOT NULL DEFAULT 0,
        json            TEXT NOT NULL,                -- the per-call JSON, verbatim
        saved_at        TEXT NOT NULL,                -- UTC, ISO 8601
        saved_seq       INTEGER NOT NULL              -- bumps on every save: "newest first" without clocks
    );
    CREATE INDEX calls_agent ON calls (agent_id, started_at);
    CREATE INDEX calls_saved ON calls (saved_seq);

    CREATE TABLE segments (
        call_id         TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        idx             INTEGER NOT NULL,
        speaker         TEXT NOT NULL,
        start_s         REAL NOT NULL,
        end_s           REAL NOT NULL,
        text            TEXT NOT NULL DEFAULT '',
        language        TEXT,
        sentiment       REAL,
        arousal         REAL,
        emotion_label   TEXT,
        flags           TEXT NOT NULL DEFAULT '[]',   -- JSON list
        PRIMARY KEY (call_id, idx)
    );

    -- rowid is the cursor readers poll with (list_alerts(since_id=...)); an upsert keeps it stable.
    CREATE TABLE alerts (
        rowid           INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        call_id         TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        kind            TEXT NOT NULL,
        action          TEXT NOT NULL,
        onset_s         REAL,
        raised_at_s     REAL,
        cleared_at_s    REAL,
        level           REAL,
        reasons         TEXT NOT NULL DEFAULT '[]'    -- JSON list
    );
    CREATE INDEX alerts_call ON alerts (call_id);

    CREATE TABLE agent_shifts (
        agent_id        TEXT PRIMARY KEY,
        state           TEXT NOT NULL,                -- JSON object, opaque to the store
        updated_at      TEXT NOT NULL
    );
    """,
    # 2: live checkpoints. A live call's partial result, saved every [live] checkpoint_interval_s while
    # it runs and deleted once its final result is in ``calls``; rows left after a crash are closed as
    # "interrupted" on restart (pipeline.live.server).
    """
    CREATE TABLE live_checkpoints (
        call_id         TEXT PRIMARY KEY,
        agent_id        TEXT,
        source          TEXT,
        started_at      TEXT,
        result          TEXT NOT NULL,                -- the per-call JSON so far
        shift           TEXT,                         -- JSON: the agent's shift as if the call ended here
        saved_at        TEXT NOT NULL                 -- UTC, ISO 8601
    );
    """,
    # 3: several live workers on one database (pipeline.live.floor). The live alert log and webhook outbox
    # become schema tables (pipeline.live.outbox created them itself before; a file that has them keeps
    # their rows), outbox rows get a claim lease so a dead worker's claims expire, checkpoints say which
    # worker holds the call, and each worker lists itself and its live calls with a heartbeat.
    """
    CREATE TABLE IF NOT EXISTS live_alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL,
        state TEXT NOT NULL,
        call_id TEXT NOT NULL,
        agent_id TEXT,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        acked_at TEXT,
        acked_by TEXT,
        UNIQUE (alert_id, state)
    );
    CREATE TABLE IF NOT EXISTS live_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_seq INTEGER NOT NULL REFERENCES live_alerts(seq),
        url TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        delivered_at TEXT,
        last_error TEXT
    );
    -- rebuilt rather than ALTERed: the table may come from an older pipeline.live.outbox, with or
    -- without these columns, and SQLite has no ADD COLUMN IF NOT EXISTS
    CREATE TABLE live_outbox_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_seq INTEGER NOT NULL REFERENCES live_alerts(seq),
        url TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        delivered_at TEXT,
        last_error TEXT,
        claimed_by TEXT,                              -- worker id holding the delivery
        claimed_until REAL                            -- unix time the claim lapses (database clock)
    );
    INSERT INTO live_outbox_v3 (id, alert_seq, url, idempotency_key, attempts, next_attempt_at, delivered_at,
                                last_error)
        SELECT id, alert_seq, url, idempotency_key, attempts, next_attempt_at, delivered_at, last_error
        FROM live_outbox;
    DROP TABLE live_outbox;
    ALTER TABLE live_outbox_v3 RENAME TO live_outbox;
    CREATE INDEX live_outbox_due ON live_outbox (delivered_at, next_attempt_at);
    ALTER TABLE live_checkpoints ADD COLUMN worker_id TEXT;
    CREATE TABLE live_workers (
        worker_id       TEXT PRIMARY KEY,
        http            TEXT,
        started_at      TEXT NOT NULL,                -- UTC, ISO 8601
        heartbeat_at    REAL NOT NULL                 -- unix time (database clock)
    );
    CREATE TABLE live_calls (
        call_id         TEXT PRIMARY KEY,
        worker_id       TEXT NOT NULL,
        summary         TEXT NOT NULL,                -- JSON: the call's live summary
        updated_at      REAL NOT NULL                 -- unix time (database clock)
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_BUSY_TIMEOUT_S = 10.0


def migrate(conn: sqlite3.Connection, where: str, version: int | None = None) -> None:
    """Apply the steps after ``version`` (default: the connection's ``user_version``). Modules handed a
    bare connection (the live alert log in tests) get their tables from here, the one schema."""
    if version is None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    for step in range(version, SCHEMA_VERSION):
        # One transaction per step, version bump included: a crash leaves the old version intact.
        try:
            conn.executescript(f"BEGIN; {_MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            raise
        log.info("results database %s migrated to schema version %d", where, step + 1)


class Store(SqlStore):
    """Results database. Open with ``Store.open(path)``; every method is safe to call from any thread."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        # Use Store.open(); this constructor trusts that the schema is already current.
        self._conn = connection
        self._path = path
        self._lock = threading.RLock()
        self._closed = False

    # ---------------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(cls, path: Path | str) -> "Store":
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        ``":memory:"`` gives a private in-memory database (tests, throwaway runs).

        Raises
        ------
        StoreError
            The file is not a SQLite database or is corrupt, its folder cannot be written, or it was made
            by a newer callpulse.
        """
        where = str(path)
        if where != ":memory:":
            folder = Path(where).expanduser().resolve().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {folder} for the results database: {exc.strerror or exc}; "
                    f"choose a writable location (batch: --out; live: the database option)"
                ) from exc
        try:
            conn = sqlite3.connect(where, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, where, "open")) from exc
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results database {where} has schema version {version}, newer than this callpulse "
                    f"understands ({SCHEMA_VERSION}); upgrade callpulse or use another database file"
                )
            if where != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("results database %s stays in %s journal mode (WAL unavailable)", where, mode)
                conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn, where, version)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_explain(exc, where, "open")) from exc
        return cls(conn, where)

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for modules that keep their own tables here
        (``CREATE TABLE IF NOT EXISTS``). Hold ``store.lock`` while using it from more than one thread."""
        return self._conn

    def _many(self, db: sqlite3.Connection, statement: str, rows: list[tuple]) -> None:
        db.executemany(statement, rows)

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"results database {self._path} is closed; cannot {what}")
            try:
                with self._conn:  # commits on success, rolls back on any exception
                    yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(_explain(exc, self._path, what)) from exc

    # ---------------------------------------------------------------------------------------------
    # Agent shifts: what differs between backends is how one row is locked (the rest is in SqlStore)

    def update_shift(self, agent_id: str, change: Callable[[dict | None], Mapping]) -> dict:
        """Read, change and write one agent's shift state atomically: ``change(current or None)`` returns
        the new state, which is saved and returned. Other writers of this file wait (BEGIN IMMEDIATE)."""
        with self._lock:
            if self._closed:
                raise StoreError(f"results database {self._path} is closed; cannot update agent {agent_id}")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute("SELECT state FROM agent_shifts WHERE agent_id = ?",
                                             (agent_id,)).fetchone()
                    new = dict(change(None if row is None else json.loads(row[0])))
                    self._conn.execute(
                        "INSERT INTO agent_shifts (agent_id, state, updated_at) VALUES (?, ?, ?) ON CONFLICT "
                        "(agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                        (agent_id, _dumps(new, f"shift of agent {agent_id}"), _utc_now()))
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            except sqlite3.Error as exc:
                raise StoreError(_explain(exc, self._path, f"update the shift of agent {agent_id}")) from exc
        return new

    def shift_book(self, options: Any) -> Any:
        """The engine's shift book on this file: cached in memory, written through (one process)."""
        from ..strain import ShiftBook

        return ShiftBook(options, load=self.load_shift, save=self.save_shift)


# -------------------------------------------------------------------------------------------------
# Helpers


def _explain(exc: sqlite3.Error, where: str, what: str) -> str:
    """Turn SQLite's terse messages into what happened and what to do."""
    msg = str(exc)
    low = msg.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (f"results database {where} is corrupt or not a SQLite file ({msg}); move it aside and "
                f"run again to start a new one, or point the database option at another file")
    if "readonly" in low or "read-only" in low:
        return (f"results database {where} is read-only ({msg}); cannot {what}; make the file and its folder "
                f"writable or choose another location")
    if "unable to open" in low:
        return (f"cannot open results database {where} ({msg}); check that its folder exists and is writable, "
                f"or choose another location")
    if "locked" in low or "busy" in low:
        return (f"results database {where} stayed locked for {_BUSY_TIMEOUT_S:.0f} s ({msg}); cannot {what}; "
                f"another process holds a write transaction — stop it or use a separate database file")
    if "disk" in low and "full" in low:
        return f"disk full writing results database {where} ({msg}); free space and run again"
    return f"results database {where}: cannot {what}: {msg}"
