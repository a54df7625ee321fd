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
import math
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from pipeline.errors import StoreError

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
)
SCHEMA_VERSION = len(_MIGRATIONS)

_BUSY_TIMEOUT_S = 10.0


class Store:
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
            for step in range(version, SCHEMA_VERSION):
                # One transaction per step, version bump included: a crash leaves the old version intact.
                try:
                    conn.executescript(f"BEGIN; {_MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")
                except sqlite3.Error:
                    if conn.in_transaction:
                        conn.rollback()
                    raise
                log.info("results database %s migrated to schema version %d", where, step + 1)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_explain(exc, where, "open")) from exc
        return cls(conn, where)

    @property
    def path(self) -> str:
        return self._path

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for modules that keep their own tables here
        (``CREATE TABLE IF NOT EXISTS``). Hold ``store.lock`` while using it from more than one thread."""
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
    # Calls

    def save_call(self, result: Mapping) -> None:
        """Insert or replace one call, its segments and its alerts (idempotent on ``call_id``).

        Alerts are matched on their ``id``, so saving the same call again keeps each alert's row id (the
        cursor of ``list_alerts``) and does not announce it twice.
        """
        call_id = result.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise StoreError("cannot save a call result without a non-empty string call_id")
        body = _dumps(result, call_id)
        summary = result.get("summary") or {}
        segments = list(result.get("segments") or [])
        alerts = list(result.get("alerts") or [])
        timeline = result.get("timeline") or []
        peak = summary.get("peak_agitation")
        if peak is None and timeline:
            peak = max(float(p.get("caller_agitation", 0.0)) for p in timeline)
        started_at = result.get("started_at") or summary.get("started_at")
        alert_ids = [_alert_id(call_id, i, a) for i, a in enumerate(alerts)]

        with self._transaction(f"save call {call_id}") as db:
            seq = db.execute("SELECT COALESCE(MAX(saved_seq), 0) + 1 FROM calls").fetchone()[0]
            db.execute(
                "INSERT INTO calls (call_id, source, agent_id, started_at, duration_s, languages, "
                "peak_agitation, n_alerts, json, saved_at, saved_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (call_id) DO UPDATE SET source = excluded.source, agent_id = excluded.agent_id, "
                "started_at = excluded.started_at, duration_s = excluded.duration_s, "
                "languages = excluded.languages, peak_agitation = excluded.peak_agitation, "
                "n_alerts = excluded.n_alerts, json = excluded.json, saved_at = excluded.saved_at, "
                "saved_seq = excluded.saved_seq",
                (call_id, result.get("source"), result.get("agent_id"), _text_or_none(started_at),
                 finite_number(result.get("duration_s")), json.dumps(list(result.get("languages") or [])),
                 finite_number(peak), len(alerts), body, _utc_now(), seq),
            )
            db.execute("DELETE FROM segments WHERE call_id = ?", (call_id,))
            db.executemany(
                "INSERT INTO segments (call_id, idx, speaker, start_s, end_s, text, language, sentiment, "
                "arousal, emotion_label, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (call_id, i, s.get("speaker", "mixed"), finite_number(s.get("start_s")) or 0.0,
                     finite_number(s.get("end_s")) or 0.0, s.get("text") or "", s.get("language"),
                     finite_number(s.get("sentiment")), finite_number(s.get("arousal")),
                     (s.get("emotion") or {}).get("label"), json.dumps(list(s.get("flags") or [])))
                    for i, s in enumerate(segments)
                ],
            )
            placeholders = ",".join("?" * len(alert_ids))
            db.execute(
                f"DELETE FROM alerts WHERE call_id = ? AND id NOT IN ({placeholders})", (call_id, *alert_ids)
            )
            db.executemany(
                "INSERT INTO alerts (id, call_id, kind, action, onset_s, raised_at_s, cleared_at_s, level, "
                "reasons) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "call_id = excluded.call_id, kind = excluded.kind, action = excluded.action, "
                "onset_s = excluded.onset_s, raised_at_s = excluded.raised_at_s, "
                "cleared_at_s = excluded.cleared_at_s, level = excluded.level, reasons = excluded.reasons",
                [
                    (aid, call_id, a.get("kind", ""), a.get("action", ""), finite_number(a.get("onset_s")),
                     finite_number(a.get("raised_at_s")), finite_number(a.get("cleared_at_s")), finite_number(a.get("level")),
                     json.dumps(list(a.get("reasons") or []), ensure_ascii=False))
                    for aid, a in zip(alert_ids, alerts)
                ],
            )
        log.info("stored call %s: %d segments, %d alerts", call_id, len(segments), len(alerts),
                 extra={"call_id": call_id})

    def get_call(self, call_id: str) -> dict | None:
        """The stored per-call JSON, or None if there is no such call."""
        with self._transaction(f"read call {call_id}") as db:
            row = db.execute("SELECT json FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_calls(self, *, limit: int = 100) -> list[dict]:
        """Summary rows of the most recently stored calls, newest first."""
        with self._transaction("list calls") as db:
            rows = db.execute(
                "SELECT call_id, source, agent_id, started_at, duration_s, languages, peak_agitation, "
                "n_alerts, saved_at FROM calls ORDER BY saved_seq DESC LIMIT ?", (int(limit),)
            ).fetchall()
        keys = ("call_id", "source", "agent_id", "started_at", "duration_s", "languages", "peak_agitation",
                "n_alerts", "saved_at")
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["languages"] = json.loads(item["languages"])
            out.append(item)
        return out

    def list_alerts(self, *, since_id: int = 0, limit: int = 500) -> list[dict]:
        """Alerts with a row id above ``since_id``, oldest first; poll with the last ``seq`` seen."""
        with self._transaction("list alerts") as db:
            rows = db.execute(
                "SELECT a.rowid, a.id, a.call_id, c.agent_id, a.kind, a.action, a.onset_s, a.raised_at_s, "
                "a.cleared_at_s, a.level, a.reasons FROM alerts a JOIN calls c ON c.call_id = a.call_id "
                "WHERE a.rowid > ? ORDER BY a.rowid LIMIT ?", (int(since_id), int(limit))
            ).fetchall()
        keys = ("seq", "id", "call_id", "agent_id", "kind", "action", "onset_s", "raised_at_s", "cleared_at_s",
                "level", "reasons")
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["reasons"] = json.loads(item["reasons"])
            out.append(item)
        return out

    # ---------------------------------------------------------------------------------------------
    # Agent shifts

    def load_shift(self, agent_id: str) -> dict | None:
        """The saved shift state of ``agent_id``, or None if the agent has none yet."""
        with self._transaction(f"read the shift of agent {agent_id}") as db:
            row = db.execute("SELECT state FROM agent_shifts WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save_shift(self, agent_id: str, state: Mapping) -> None:
        """Replace the saved shift state of ``agent_id`` (any JSON-able mapping)."""
        body = _dumps(state, f"shift of agent {agent_id}")
        with self._transaction(f"save the shift of agent {agent_id}") as db:
            db.execute(
                "INSERT INTO agent_shifts (agent_id, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (agent_id, body, _utc_now()),
            )


    # ---------------------------------------------------------------------------------------------
    # Live checkpoints (schema step 2): partial results of calls in progress, for crash recovery

    def save_checkpoint(self, call_id: str, result: Mapping, *, shift: Mapping | None = None) -> None:
        """Insert or replace the checkpoint of live call ``call_id``: its per-call JSON so far and the
        agent's shift state as if the call ended now (None without an agent)."""
        body = _dumps(result, f"checkpoint of call {call_id}")
        shift_body = None if shift is None else _dumps(shift, f"shift checkpoint of call {call_id}")
        with self._transaction(f"checkpoint call {call_id}") as db:
            db.execute(
                "INSERT INTO live_checkpoints (call_id, agent_id, source, started_at, result, shift, saved_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (call_id) DO UPDATE SET agent_id = excluded.agent_id, "
                "source = excluded.source, started_at = excluded.started_at, result = excluded.result, "
                "shift = excluded.shift, saved_at = excluded.saved_at",
                (call_id, result.get("agent_id"), result.get("source"), _text_or_none(result.get("started_at")),
                 body, shift_body, _utc_now()),
            )

    def list_checkpoints(self) -> list[dict]:
        """Every checkpoint left, oldest first: ``{call_id, result, shift, saved_at}``."""
        with self._transaction("list checkpoints") as db:
            rows = db.execute(
                "SELECT call_id, result, shift, saved_at FROM live_checkpoints ORDER BY saved_at, call_id"
            ).fetchall()
        return [{"call_id": r[0], "result": json.loads(r[1]), "shift": None if r[2] is None else json.loads(r[2]),
                 "saved_at": r[3]} for r in rows]

    def drop_checkpoint(self, call_id: str) -> None:
        """Delete the checkpoint of ``call_id`` (its final result is stored; idempotent)."""
        with self._transaction(f"drop the checkpoint of call {call_id}") as db:
            db.execute("DELETE FROM live_checkpoints WHERE call_id = ?", (call_id,))

    def call_exists(self, call_id: str) -> bool:
        """True when ``call_id`` is taken: a stored call or a live call's checkpoint."""
        with self._transaction(f"look up call {call_id}") as db:
            row = db.execute(
                "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = ?) "
                "OR EXISTS (SELECT 1 FROM live_checkpoints WHERE call_id = ?)", (call_id, call_id)).fetchone()
        return bool(row[0])

    def stored_call_exists(self, call_id: str) -> bool:
        """True when ``call_id`` has a final (or interrupted) record in ``calls``."""
        with self._transaction(f"look up call {call_id}") as db:
            row = db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return row is not None


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


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays become numbers/lists, NaN and inf become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy here
        return _jsonable(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _dumps(value: Mapping, what: str) -> str:
    try:
        return json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise StoreError(f"cannot store {what}: {exc}; pass plain JSON types (dict, list, str, numbers)") from exc


def finite_number(value: Any) -> float | None:
    """A finite float, or None for missing, boolean, non-numeric, NaN or infinite values (result JSON
    read back from disk may hold any of these)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _alert_id(call_id: str, index: int, alert: Mapping) -> str:
    # Alerts from the engine carry an id; older or hand-made results may not, so derive a stable one.
    aid = alert.get("id")
    return str(aid) if aid else f"{call_id}:{alert.get('kind', 'alert')}:{index}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
