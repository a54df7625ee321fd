"""PostgreSQL results store (psycopg 3): the same tables, rows and methods as the SQLite store.

For sites where several processes or machines write one database: batch clients of a Dask cluster,
several ``analyze`` runs, dashboards reading while workers write. Open with
``PgStore.open("postgresql://user@host:5432/callpulse")`` or through ``pipeline.outputs.store_base.open_store``.

One connection per store, shared between threads behind a lock (as the SQLite store does); writes run
in explicit transactions, reads in autocommit. The schema is versioned in ``callpulse_schema``; opening
applies the missing migrations in order, each in its own transaction holding an advisory lock, so two
processes starting together against an empty database do not both create it. A database written by a
newer callpulse is refused. Step *i* here is step *i* of the SQLite store: same tables, same columns,
with each dialect's types (``BIGSERIAL`` for SQLite's ``AUTOINCREMENT``).

The per-call JSON is kept verbatim as text (not ``jsonb``, which would reorder keys), so ``get_call``
returns what SQLite returns. Nothing here logs transcript text, and errors never show the password.
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from ..errors import StoreError
from .store import _alert_id, _dumps, _text_or_none, _utc_now, finite_number

log = logging.getLogger(__name__)

# Each entry upgrades the schema from version i to i + 1, mirroring pipeline.outputs.store._MIGRATIONS step for
# step (tests compare the two layouts). Append; never edit a released step.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE SEQUENCE calls_saved_seq;
    CREATE TABLE calls (
        call_id         TEXT PRIMARY KEY,
        source          TEXT,
        agent_id        TEXT,
        started_at      TEXT,
        duration_s      DOUBLE PRECISION,
        languages       TEXT NOT NULL DEFAULT '[]',
        peak_agitation  DOUBLE PRECISION,
        n_alerts        INTEGER NOT NULL DEFAULT 0,
        json            TEXT NOT NULL,
        saved_at        TEXT NOT NULL,
        saved_seq       BIGINT NOT NULL
    );
    CREATE INDEX calls_agent ON calls (agent_id, started_at);
    CREATE INDEX calls_saved ON calls (saved_seq);

    CREATE TABLE segments (
        call_id         TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        idx             INTEGER NOT NULL,
        speaker         TEXT NOT NULL,
        start_s         DOUBLE PRECISION NOT NULL,
        end_s           DOUBLE PRECISION NOT NULL,
        text            TEXT NOT NULL DEFAULT '',
        language        TEXT,
        sentiment       DOUBLE PRECISION,
        arousal         DOUBLE PRECISION,
        emotion_label   TEXT,
        flags           TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (call_id, idx)
    );

    CREATE TABLE alerts (
        rowid           BIGSERIAL PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        call_id         TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        kind            TEXT NOT NULL,
        action          TEXT NOT NULL,
        onset_s         DOUBLE PRECISION,
        raised_at_s     DOUBLE PRECISION,
        cleared_at_s    DOUBLE PRECISION,
        level           DOUBLE PRECISION,
        reasons         TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX alerts_call ON alerts (call_id);

    CREATE TABLE agent_shifts (
        agent_id        TEXT PRIMARY KEY,
        state           TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    """,
    # 2: live checkpoints (partial results of calls in progress; see pipeline.outputs.store step 2).
    """
    CREATE TABLE live_checkpoints (
        call_id         TEXT PRIMARY KEY,
        agent_id        TEXT,
        source          TEXT,
        started_at      TEXT,
        result          TEXT NOT NULL,
        shift           TEXT,
        saved_at        TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# pg_advisory_xact_lock key: "callpulse" schema migrations (any constant shared by every callpulse).
_MIGRATION_LOCK = 0x63616C6C70756C73
_CONNECT_TIMEOUT_S = 10


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by connect(); show nothing secret
        return url.split("@")[-1] if "@" in url else url
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    user = params.get("user", "")
    db = params.get("dbname", "")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class PgStore:
    """Results database on PostgreSQL. Open with ``PgStore.open(url)``; thread-safe like ``Store``."""

    def __init__(self, connection: Any, url: str) -> None:
        self._conn = connection
        self._url = url  # kept to reconnect; never shown (``path`` is the URL without the password)
        self._path = safe_url(url)
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(cls, url: str) -> "PgStore":
        """Connect and bring the schema up to date.

        Raises
        ------
        StoreError
            psycopg is missing, the server cannot be reached or refuses the login, the database does not
            exist, or it was migrated by a newer callpulse.
        """
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a postgresql:// database needs psycopg 3: pip install 'psycopg[binary]'") from exc
        where = safe_url(url)
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                                   application_name="callpulse")
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the results database {where}: {_first_line(exc)}; check that the server "
                f"is running and reachable, the user may log in, and the database exists (createdb)"
            ) from exc
        try:
            _migrate(conn, where)
        except StoreError:
            conn.close()
            raise
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"results database {where}: cannot apply the schema: {_first_line(exc)}") from exc
        return cls(conn, url)

    @property
    def path(self) -> str:
        return self._path

    @property
    def connection(self) -> Any:
        """The psycopg connection (autocommit; use ``with store.lock, conn.transaction():`` to write)."""
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, what: str) -> Iterator[Any]:
        import psycopg

        with self._lock:
            if self._closed:
                raise StoreError(f"results database {self._path} is closed; cannot {what}")
            if self._conn.broken or self._conn.closed:
                # The server restarted or the network dropped: the failed operation raised already;
                # reconnect once for this one (the schema is there, so no migration).
                try:
                    self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                                                 application_name="callpulse")
                    log.warning("results database %s: reconnected", self._path)
                except psycopg.Error as exc:
                    raise StoreError(f"results database {self._path}: cannot {what}: lost the connection and "
                                     f"cannot reconnect ({_first_line(exc)}); check the server") from exc
            try:
                with self._conn.transaction():
                    yield self._conn
            except psycopg.Error as exc:
                raise StoreError(f"results database {self._path}: cannot {what}: {_first_line(exc)}") from exc

    # ---------------------------------------------------------------------------------------------
    # Calls

    def save_call(self, result: Mapping) -> None:
        """Insert or replace one call, its segments and alerts; alerts keep their ``seq`` when re-saved."""
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
            db.execute(
                "INSERT INTO calls (call_id, source, agent_id, started_at, duration_s, languages, "
                "peak_agitation, n_alerts, json, saved_at, saved_seq) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,nextval('calls_saved_seq')) "
                "ON CONFLICT (call_id) DO UPDATE SET source = excluded.source, agent_id = excluded.agent_id, "
                "started_at = excluded.started_at, duration_s = excluded.duration_s, "
                "languages = excluded.languages, peak_agitation = excluded.peak_agitation, "
                "n_alerts = excluded.n_alerts, json = excluded.json, saved_at = excluded.saved_at, "
                "saved_seq = excluded.saved_seq",
                (call_id, _pg(result.get("source")), _pg(result.get("agent_id")), _pg(_text_or_none(started_at)),
                 finite_number(result.get("duration_s")), json.dumps(list(result.get("languages") or [])),
                 finite_number(peak), len(alerts), body, _utc_now()),
            )
            db.execute("DELETE FROM segments WHERE call_id = %s", (call_id,))
            if segments:
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO segments (call_id, idx, speaker, start_s, end_s, text, language, sentiment, "
                        "arousal, emotion_label, flags) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        [
                            (call_id, i, _pg(s.get("speaker", "mixed")), finite_number(s.get("start_s")) or 0.0,
                             finite_number(s.get("end_s")) or 0.0, _pg(s.get("text") or ""), _pg(s.get("language")),
                             finite_number(s.get("sentiment")), finite_number(s.get("arousal")),
                             _pg((s.get("emotion") or {}).get("label")), json.dumps(list(s.get("flags") or [])))
                            for i, s in enumerate(segments)
                        ],
                    )
            db.execute("DELETE FROM alerts WHERE call_id = %s AND NOT (id = ANY(%s))", (call_id, alert_ids))
            if alerts:
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO alerts (id, call_id, kind, action, onset_s, raised_at_s, cleared_at_s, level, "
                        "reasons) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET "
                        "call_id = excluded.call_id, kind = excluded.kind, action = excluded.action, "
                        "onset_s = excluded.onset_s, raised_at_s = excluded.raised_at_s, "
                        "cleared_at_s = excluded.cleared_at_s, level = excluded.level, reasons = excluded.reasons",
                        [
                            (aid, call_id, _pg(a.get("kind", "")), _pg(a.get("action", "")),
                             finite_number(a.get("onset_s")), finite_number(a.get("raised_at_s")),
                             finite_number(a.get("cleared_at_s")), finite_number(a.get("level")),
                             json.dumps(list(a.get("reasons") or []), ensure_ascii=False))
                            for aid, a in zip(alert_ids, alerts)
                        ],
                    )
        log.info("stored call %s: %d segments, %d alerts", call_id, len(segments), len(alerts),
                 extra={"call_id": call_id})

    def get_call(self, call_id: str) -> dict | None:
        with self._transaction(f"read call {call_id}") as db:
            row = db.execute("SELECT json FROM calls WHERE call_id = %s", (call_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_calls(self, *, limit: int = 100) -> list[dict]:
        with self._transaction("list calls") as db:
            rows = db.execute(
                "SELECT call_id, source, agent_id, started_at, duration_s, languages, peak_agitation, "
                "n_alerts, saved_at FROM calls ORDER BY saved_seq DESC LIMIT %s", (int(limit),)
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
        with self._transaction("list alerts") as db:
            rows = db.execute(
                "SELECT a.rowid, a.id, a.call_id, c.agent_id, a.kind, a.action, a.onset_s, a.raised_at_s, "
                "a.cleared_at_s, a.level, a.reasons FROM alerts a JOIN calls c ON c.call_id = a.call_id "
                "WHERE a.rowid > %s ORDER BY a.rowid LIMIT %s", (int(since_id), int(limit))
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
        with self._transaction(f"read the shift of agent {agent_id}") as db:
            row = db.execute("SELECT state FROM agent_shifts WHERE agent_id = %s", (agent_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save_shift(self, agent_id: str, state: Mapping) -> None:
        body = _dumps(state, f"shift of agent {agent_id}")
        with self._transaction(f"save the shift of agent {agent_id}") as db:
            db.execute(
                "INSERT INTO agent_shifts (agent_id, state, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (agent_id, body, _utc_now()),
            )

    # ---------------------------------------------------------------------------------------------
    # Live checkpoints (schema step 2), as in pipeline.outputs.store

    def save_checkpoint(self, call_id: str, result: Mapping, *, shift: Mapping | None = None) -> None:
        """Insert or replace the checkpoint of live call ``call_id`` (per-call JSON so far + shift)."""
        body = _dumps(result, f"checkpoint of call {call_id}")
        shift_body = None if shift is None else _dumps(shift, f"shift checkpoint of call {call_id}")
        with self._transaction(f"checkpoint call {call_id}") as db:
            db.execute(
                "INSERT INTO live_checkpoints (call_id, agent_id, source, started_at, result, shift, saved_at) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (call_id) DO UPDATE SET agent_id = excluded.agent_id, "
                "source = excluded.source, started_at = excluded.started_at, result = excluded.result, "
                "shift = excluded.shift, saved_at = excluded.saved_at",
                (call_id, _pg(result.get("agent_id")), _pg(result.get("source")),
                 _pg(_text_or_none(result.get("started_at"))), body, shift_body, _utc_now()),
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
        with self._transaction(f"drop the checkpoint of call {call_id}") as db:
            db.execute("DELETE FROM live_checkpoints WHERE call_id = %s", (call_id,))

    def call_exists(self, call_id: str) -> bool:
        """True when ``call_id`` is taken: a stored call or a live call's checkpoint."""
        with self._transaction(f"look up call {call_id}") as db:
            row = db.execute(
                "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = %s) "
                "OR EXISTS (SELECT 1 FROM live_checkpoints WHERE call_id = %s)", (call_id, call_id)).fetchone()
        return bool(row[0])

    def stored_call_exists(self, call_id: str) -> bool:
        with self._transaction(f"look up call {call_id}") as db:
            row = db.execute("SELECT 1 FROM calls WHERE call_id = %s", (call_id,)).fetchone()
        return row is not None

    def list_shift_agents(self) -> list[str]:
        """Every agent with a saved shift (the live service restores the strain board from it)."""
        with self._transaction("list agent shifts") as db:
            return [r[0] for r in db.execute("SELECT agent_id FROM agent_shifts ORDER BY agent_id").fetchall()]


# -------------------------------------------------------------------------------------------------


def _migrate(conn: Any, where: str) -> None:
    while True:
        with conn.transaction():
            # Serialise migrations across processes (even CREATE TABLE IF NOT EXISTS races in
            # PostgreSQL); the version is read under the lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS callpulse_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM callpulse_schema").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results database {where} has schema version {version}, newer than this callpulse "
                    f"understands ({SCHEMA_VERSION}); upgrade callpulse or use another database"
                )
            if version == SCHEMA_VERSION:
                return
            conn.execute(_MIGRATIONS[version])
            if row is None:
                conn.execute("INSERT INTO callpulse_schema (version) VALUES (%s)", (version + 1,))
            else:
                conn.execute("UPDATE callpulse_schema SET version = %s", (version + 1,))
        log.info("results database %s migrated to schema version %d", where, version + 1)


def _pg(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL characters (SQLite can); the verbatim JSON escapes them anyway.
    return value.replace("\x00", "") if isinstance(value, str) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
