"""The SQL both results-store backends run, written once (SQLite: pipeline.outputs.store, PostgreSQL:
pipeline.outputs.store_pg), and the value helpers both use. A backend subclasses :class:`SqlStore` and
supplies its connection, its transactions and its dialect; the rows it writes are the same.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from ..errors import StoreError

log = logging.getLogger("pipeline.outputs.store")


class SqlStore:
    """The reads and writes both backends share, written once with ``?`` placeholders.

    A backend provides ``_transaction(what)`` (a context manager yielding a connection whose ``execute``
    returns a cursor; errors become StoreError), and may override the dialect hooks below.
    """

    # SQL for the next ``calls.saved_seq`` ("newest first" without trusting clocks).
    _NEXT_SAVED_SEQ = "(SELECT COALESCE(MAX(saved_seq), 0) + 1 FROM calls)"
    # The live worker this process is (pipeline.live.floor sets it); checkpoints carry it.
    worker_id: str | None = None

    def _transaction(self, what: str) -> AbstractContextManager[Any]:  # pragma: no cover - each backend has one
        raise NotImplementedError

    # Each backend's __init__ sets _conn, _path, _lock (an RLock around the one connection) and _closed.
    @property
    def path(self) -> str:
        """Where the database is (a file path, or the URL without its password)."""
        return self._path

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sql(self, statement: str) -> str:
        """The statement in this backend's placeholder style (``?`` here)."""
        return statement

    def _text(self, value: Any) -> Any:
        """A text value as this backend can store it (PostgreSQL text cannot hold NUL)."""
        return value

    def _run(self, db: Any, statement: str, params: Sequence = ()) -> Any:
        return db.execute(self._sql(statement), tuple(params))

    def _many(self, db: Any, statement: str, rows: list[tuple]) -> None:
        if rows:
            with db.cursor() as cur:
                cur.executemany(self._sql(statement), rows)

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
        t = self._text

        with self._transaction(f"save call {call_id}") as db:
            self._run(
                db,
                "INSERT INTO calls (call_id, source, agent_id, started_at, duration_s, languages, "
                f"peak_agitation, n_alerts, json, saved_at, saved_seq) VALUES (?,?,?,?,?,?,?,?,?,?,{self._NEXT_SAVED_SEQ}) "
                "ON CONFLICT (call_id) DO UPDATE SET source = excluded.source, agent_id = excluded.agent_id, "
                "started_at = excluded.started_at, duration_s = excluded.duration_s, "
                "languages = excluded.languages, peak_agitation = excluded.peak_agitation, "
                "n_alerts = excluded.n_alerts, json = excluded.json, saved_at = excluded.saved_at, "
                "saved_seq = excluded.saved_seq",
                (call_id, t(result.get("source")), t(result.get("agent_id")), t(_text_or_none(started_at)),
                 finite_number(result.get("duration_s")), json.dumps(list(result.get("languages") or [])),
                 finite_number(peak), len(alerts), body, _utc_now()),
            )
            self._run(db, "DELETE FROM segments WHERE call_id = ?", (call_id,))
            self._many(
                db,
                "INSERT INTO segments (call_id, idx, speaker, start_s, end_s, text, language, sentiment, "
                "arousal, emotion_label, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (call_id, i, t(s.get("speaker", "mixed")), finite_number(s.get("start_s")) or 0.0,
                     finite_number(s.get("end_s")) or 0.0, t(s.get("text") or ""), t(s.get("language")),
                     finite_number(s.get("sentiment")), finite_number(s.get("arousal")),
                     t((s.get("emotion") or {}).get("label")), json.dumps(list(s.get("flags") or [])))
                    for i, s in enumerate(segments)
                ],
            )
            keep = f" AND id NOT IN ({','.join('?' * len(alert_ids))})" if alert_ids else ""
            self._run(db, f"DELETE FROM alerts WHERE call_id = ?{keep}", (call_id, *alert_ids))
            self._many(
                db,
                "INSERT INTO alerts (id, call_id, kind, action, onset_s, raised_at_s, cleared_at_s, level, "
                "reasons) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "call_id = excluded.call_id, kind = excluded.kind, action = excluded.action, "
                "onset_s = excluded.onset_s, raised_at_s = excluded.raised_at_s, "
                "cleared_at_s = excluded.cleared_at_s, level = excluded.level, reasons = excluded.reasons",
                [
                    (aid, call_id, t(a.get("kind", "")), t(a.get("action", "")), finite_number(a.get("onset_s")),
                     finite_number(a.get("raised_at_s")), finite_number(a.get("cleared_at_s")),
                     finite_number(a.get("level")), json.dumps(list(a.get("reasons") or []), ensure_ascii=False))
                    for aid, a in zip(alert_ids, alerts)
                ],
            )
        log.info("stored call %s: %d segments, %d alerts", call_id, len(segments), len(alerts),
                 extra={"call_id": call_id})

    def get_call(self, call_id: str) -> dict | None:
        """The stored per-call JSON, or None if there is no such call."""
        with self._transaction(f"read call {call_id}") as db:
            row = self._run(db, "SELECT json FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_calls(self, *, limit: int = 100) -> list[dict]:
        """Summary rows of the most recently stored calls, newest first."""
        keys = ("call_id", "source", "agent_id", "started_at", "duration_s", "languages", "peak_agitation",
                "n_alerts", "saved_at")
        with self._transaction("list calls") as db:
            rows = self._run(db, f"SELECT {', '.join(keys)} FROM calls ORDER BY saved_seq DESC LIMIT ?",
                             (int(limit),)).fetchall()
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["languages"] = json.loads(item["languages"])
            out.append(item)
        return out

    def list_alerts(self, *, since_id: int = 0, limit: int = 500) -> list[dict]:
        """Alerts with a row id above ``since_id``, oldest first; poll with the last ``seq`` seen."""
        with self._transaction("list alerts") as db:
            rows = self._run(
                db,
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
            row = self._run(db, "SELECT state FROM agent_shifts WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save_shift(self, agent_id: str, state: Mapping) -> None:
        """Replace the saved shift state of ``agent_id`` (any JSON-able mapping)."""
        body = _dumps(state, f"shift of agent {agent_id}")
        with self._transaction(f"save the shift of agent {agent_id}") as db:
            self._run(
                db,
                "INSERT INTO agent_shifts (agent_id, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (agent_id, body, _utc_now()),
            )

    def load_shifts(self) -> dict[str, dict]:
        """Every saved shift state, by agent id."""
        with self._transaction("list agent shifts") as db:
            rows = self._run(db, "SELECT agent_id, state FROM agent_shifts WHERE state <> 'null' "
                                 "ORDER BY agent_id").fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def list_shift_agents(self) -> list[str]:
        """Every agent with a saved shift (the live service restores the strain board from it)."""
        return list(self.load_shifts())

    # ---------------------------------------------------------------------------------------------
    # Live checkpoints (schema step 2): partial results of calls in progress, for crash recovery

    def save_checkpoint(self, call_id: str, result: Mapping, *, shift: Mapping | None = None) -> None:
        """Insert or replace the checkpoint of live call ``call_id``: its per-call JSON so far and the
        agent's shift state as if the call ended now (None without an agent)."""
        body = _dumps(result, f"checkpoint of call {call_id}")
        shift_body = None if shift is None else _dumps(shift, f"shift checkpoint of call {call_id}")
        t = self._text
        with self._transaction(f"checkpoint call {call_id}") as db:
            self._run(
                db,
                "INSERT INTO live_checkpoints (call_id, agent_id, source, started_at, result, shift, saved_at, "
                "worker_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (call_id) DO UPDATE SET "
                "agent_id = excluded.agent_id, source = excluded.source, started_at = excluded.started_at, "
                "result = excluded.result, shift = excluded.shift, saved_at = excluded.saved_at, "
                "worker_id = excluded.worker_id",
                (call_id, t(result.get("agent_id")), t(result.get("source")),
                 t(_text_or_none(result.get("started_at"))), body, shift_body, _utc_now(), self.worker_id),
            )

    def list_checkpoints(self) -> list[dict]:
        """Every checkpoint left, oldest first: ``{call_id, result, shift, saved_at}``. With a ``worker_id``
        set (several live workers), only this worker's: another worker's calls are not ours to close."""
        with self._transaction("list checkpoints") as db:
            rows = self._run(
                db,
                "SELECT call_id, result, shift, saved_at FROM live_checkpoints "
                "WHERE CAST(? AS TEXT) IS NULL OR worker_id = ? ORDER BY saved_at, call_id",
                (self.worker_id, self.worker_id)).fetchall()
        return [{"call_id": r[0], "result": json.loads(r[1]), "shift": None if r[2] is None else json.loads(r[2]),
                 "saved_at": r[3]} for r in rows]

    def drop_checkpoint(self, call_id: str) -> None:
        """Delete the checkpoint of ``call_id`` (its final result is stored; idempotent)."""
        with self._transaction(f"drop the checkpoint of call {call_id}") as db:
            self._run(db, "DELETE FROM live_checkpoints WHERE call_id = ?", (call_id,))

    def call_exists(self, call_id: str) -> bool:
        """True when ``call_id`` is taken: a stored call or a live call's checkpoint."""
        with self._transaction(f"look up call {call_id}") as db:
            row = self._run(
                db,
                "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = ?) "
                "OR EXISTS (SELECT 1 FROM live_checkpoints WHERE call_id = ?)", (call_id, call_id)).fetchone()
        return bool(row[0])

    def stored_call_exists(self, call_id: str) -> bool:
        """True when ``call_id`` has a final (or interrupted) record in ``calls``."""
        with self._transaction(f"look up call {call_id}") as db:
            row = self._run(db, "SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return row is not None


# -------------------------------------------------------------------------------------------------
# Helpers both backends use (pipeline.outputs.store re-exports them)


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
