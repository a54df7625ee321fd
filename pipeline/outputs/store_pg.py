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
from typing import Any, Callable, Iterator, Mapping

from ..errors import StoreError
from .store_sql import SqlStore, _dumps, _utc_now

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
    # 3: several live workers on one database (see pipeline.outputs.store step 3 and pipeline.live.floor).
    """
    CREATE TABLE live_alerts (
        seq             BIGSERIAL PRIMARY KEY,
        alert_id        TEXT NOT NULL,
        state           TEXT NOT NULL,
        call_id         TEXT NOT NULL,
        agent_id        TEXT,
        body            TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        acked_at        TEXT,
        acked_by        TEXT,
        UNIQUE (alert_id, state)
    );
    CREATE TABLE live_outbox (
        id              BIGSERIAL PRIMARY KEY,
        alert_seq       BIGINT NOT NULL REFERENCES live_alerts (seq),
        url             TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        delivered_at    TEXT,
        last_error      TEXT,
        claimed_by      TEXT,
        claimed_until   DOUBLE PRECISION
    );
    CREATE INDEX live_outbox_due ON live_outbox (delivered_at, next_attempt_at);
    ALTER TABLE live_checkpoints ADD COLUMN worker_id TEXT;
    CREATE TABLE live_workers (
        worker_id       TEXT PRIMARY KEY,
        http            TEXT,
        started_at      TEXT NOT NULL,
        heartbeat_at    DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE live_calls (
        call_id         TEXT PRIMARY KEY,
        worker_id       TEXT NOT NULL,
        summary         TEXT NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# pg_advisory_xact_lock key: "callpulse" schema migrations (any constant shared by every callpulse).
_MIGRATION_LOCK = 0x63616C6C70756C73
# LISTEN/NOTIFY channel of the live floor: alerts, acks and shift changes, so every worker's feed hears.
FLOOR_CHANNEL = "callpulse_floor"
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


class PgStore(SqlStore):
    """Results database on PostgreSQL. Open with ``PgStore.open(url)``; thread-safe like ``Store``."""

    def __init__(self, connection: Any, url: str) -> None:
        self._conn = connection
        self._url = url  # kept to reconnect; never shown (``path`` is the URL without the password)
        self._path = safe_url(url)
        self._lock = threading.RLock()
        self._closed = False
        # The live worker this process is (pipeline.live.floor sets it); its checkpoints carry it.
        self.worker_id: str | None = None

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
    def connection(self) -> Any:
        """The psycopg connection (autocommit; use ``with store.lock, conn.transaction():`` to write)."""
        return self._conn

    @property
    def url(self) -> str:
        """The connection URL, password included: for a second connection (LISTEN), never for display."""
        return self._url

    def transaction(self, what: str):
        """``with store.transaction("do x") as conn:`` one transaction under the lock; psycopg errors
        become StoreError naming ``what`` (for modules keeping their own rows here, e.g. the live outbox)."""
        return self._transaction(what)

    # dialect (see SqlStore): %s placeholders, a sequence for saved_seq, no NUL in text
    _NEXT_SAVED_SEQ = "nextval('calls_saved_seq')"

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def _text(self, value: Any) -> Any:
        return _pg(value)

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
    # Agent shifts: what differs between backends is how one row is locked (the rest is in SqlStore)

    def update_shift(self, agent_id: str, change: Callable[[dict | None], Mapping]) -> dict:
        """Read, change and write one agent's shift state in one transaction holding the row lock
        (``SELECT ... FOR UPDATE``): two workers ending calls of one agent at once both count.
        ``change(current or None)`` returns the new state, which is saved and returned."""
        with self._transaction(f"update the shift of agent {agent_id}") as db:
            # the row must exist to be locked; a first call of a new agent inserts a placeholder
            db.execute("INSERT INTO agent_shifts (agent_id, state, updated_at) VALUES (%s, 'null', %s) "
                       "ON CONFLICT (agent_id) DO NOTHING", (agent_id, _utc_now()))
            row = db.execute("SELECT state FROM agent_shifts WHERE agent_id = %s FOR UPDATE", (agent_id,)).fetchone()
            new = dict(change(json.loads(row[0]) if row and row[0] != "null" else None))
            db.execute("UPDATE agent_shifts SET state = %s, updated_at = %s WHERE agent_id = %s",
                       (_dumps(new, f"shift of agent {agent_id}"), _utc_now(), agent_id))
            note = {"kind": "shift", "agent_id": agent_id, "worker": self.worker_id}
            db.execute("SELECT pg_notify(%s, %s)", (FLOOR_CHANNEL, json.dumps(note)))
        return new

    def shift_book(self, options: Any) -> Any:
        """The engine's shift book on the shared database: every read goes to the database and every
        change is a locked read-modify-write, so an agent's calls on several workers add up."""
        from ..strain import ShiftBook

        return ShiftBook(options, load=self.load_shift, save=self.save_shift, update=self.update_shift,
                         load_all=self.load_shifts)


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
