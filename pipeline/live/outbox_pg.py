"""The live alert log and webhook outbox on PostgreSQL, shared by several live workers.

Same interface and rows as :class:`pipeline.live.outbox.AlertLog` (schema step 3 of the stores). What
sharing adds:

- **Claims.** ``due()`` claims rows with ``FOR UPDATE SKIP LOCKED`` and stamps them
  ``claimed_by = <worker>``, ``claimed_until = now + webhook_lease_s`` (the database's clock, so machines
  with skewed clocks agree). Another worker's ``due()`` skips a claimed row until the lease lapses, so
  exactly one worker sends each attempt. The lease is longer than a POST may take
  (``webhook_timeout_s``), and a failed attempt releases the claim with its next retry time, so any
  worker may take the retry. A worker killed mid-send leaves a claim that lapses: another sends it.
- **Fan-out.** Recording an alert or an ack sends ``NOTIFY callpulse_floor`` in the same transaction
  (delivered on commit), which :mod:`pipeline.live.floor` turns into feed events on every worker.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..outputs.store_pg import FLOOR_CHANNEL
from .options import LiveOptions
from .outbox import Delivery, utc_now

log = logging.getLogger("pipeline.live.outbox_pg")

_DB_NOW = "extract(epoch from clock_timestamp())"


class PgAlertLog:
    """``live_alerts`` and ``live_outbox`` on a :class:`~pipeline.outputs.store_pg.PgStore`."""

    def __init__(self, store: Any, options: LiveOptions, *, worker_id: str) -> None:
        self.store = store
        self.options = options
        self.worker_id = worker_id

    def _tx(self, what: str):
        return self.store.transaction(what)

    def _notify(self, db: Any, payload: dict) -> None:
        db.execute("SELECT pg_notify(%s, %s)", (FLOOR_CHANNEL, json.dumps({**payload, "worker": self.worker_id})))

    def record(self, alert: dict) -> dict | None:
        """Store one alert event and queue its webhooks atomically; None if this (id, state) was
        recorded already (by this worker or another)."""
        created = utc_now()
        with self._tx(f"record alert {alert['id']}") as db:
            row = db.execute(
                "INSERT INTO live_alerts (alert_id, state, call_id, agent_id, body, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id, state) DO NOTHING RETURNING seq",
                (alert["id"], alert["state"], alert["call_id"], alert.get("agent_id"),
                 json.dumps(alert, ensure_ascii=False), created)).fetchone()
            if row is None:
                return None
            seq = row[0]
            if alert["state"] in self.options.webhook_states and self.options.webhook_urls:
                key = alert["id"] if alert["state"] == "raised" else f"{alert['id']}.{alert['state']}"
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO live_outbox (alert_seq, url, idempotency_key, next_attempt_at) "
                        f"VALUES (%s, %s, %s, {_DB_NOW})", [(seq, url, key) for url in self.options.webhook_urls])
            self._notify(db, {"kind": "alert", "seq": seq})
        return {**alert, "seq": seq, "created_at": created, "acked_at": None, "acked_by": None}

    def list(self, *, since: int = 0, limit: int = 500) -> list[dict]:
        with self._tx("list alerts") as db:
            rows = db.execute(
                "SELECT a.seq, a.body, a.created_at, k.acked_at, k.acked_by FROM live_alerts a "
                "LEFT JOIN LATERAL (SELECT b.acked_at, b.acked_by FROM live_alerts b WHERE b.alert_id = a.alert_id "
                "AND b.acked_at IS NOT NULL LIMIT 1) k ON true WHERE a.seq > %s ORDER BY a.seq LIMIT %s",
                (int(since), int(limit))).fetchall()
        return [{**json.loads(body), "seq": seq, "created_at": created, "acked_at": acked_at, "acked_by": acked_by}
                for seq, body, created, acked_at, acked_by in rows]

    def last_seq(self) -> int:
        with self._tx("read the alert cursor") as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM live_alerts").fetchone()[0])

    def ack(self, alert_id: str, *, by: str) -> dict | None:
        """Acknowledge an alert (all its states; the first ack wins on every worker)."""
        with self._tx(f"acknowledge alert {alert_id}") as db:
            cur = db.execute(
                "UPDATE live_alerts SET acked_at = COALESCE(acked_at, %s), acked_by = COALESCE(acked_by, %s) "
                "WHERE alert_id = %s", (utc_now(), by, alert_id))
            if cur.rowcount == 0:
                return None
            row = db.execute("SELECT acked_at, acked_by FROM live_alerts WHERE alert_id = %s LIMIT 1",
                             (alert_id,)).fetchone()
            ack = {"id": alert_id, "acked_at": row[0], "acked_by": row[1]}
            self._notify(db, {"kind": "ack", "ack": ack})
        return ack

    def close_interrupted(self, call_id: str) -> int:
        """A crashed call's raised, never-cleared alerts get an ``interrupted`` row. Returns how many."""
        with self._tx(f"close the alerts of call {call_id}") as db:
            rows = db.execute(
                "SELECT alert_id, body FROM live_alerts a WHERE call_id = %s AND state = 'raised' AND NOT EXISTS "
                "(SELECT 1 FROM live_alerts b WHERE b.alert_id = a.alert_id AND b.state IN ('cleared', 'interrupted'))",
                (call_id,)).fetchall()
            now = utc_now()
            for alert_id, body in rows:
                alert = {**json.loads(body), "state": "interrupted"}
                db.execute(
                    "INSERT INTO live_alerts (alert_id, state, call_id, agent_id, body, created_at) "
                    "VALUES (%s, 'interrupted', %s, %s, %s, %s) ON CONFLICT (alert_id, state) DO NOTHING",
                    (alert_id, call_id, alert.get("agent_id"), json.dumps(alert, ensure_ascii=False), now))
        return len(rows)

    def open_alert_ids(self) -> list[str]:
        with self._tx("list open alerts") as db:
            rows = db.execute(
                "SELECT alert_id FROM live_alerts a WHERE state = 'raised' AND NOT EXISTS (SELECT 1 FROM live_alerts b "
                "WHERE b.alert_id = a.alert_id AND b.state IN ('cleared', 'interrupted')) ORDER BY seq").fetchall()
        return [r[0] for r in rows]

    def due(self, *, now: float, limit: int = 50) -> list[Delivery]:
        """Claim up to ``limit`` due, unclaimed (or lapsed) rows for this worker and return them.
        Retry times and leases run on the database's clock (``now`` is unused: workers' clocks may
        differ, the database's is one)."""
        with self._tx("claim due webhooks") as db:
            rows = db.execute(
                f"WITH c AS (SELECT id FROM live_outbox WHERE delivered_at IS NULL AND next_attempt_at <= {_DB_NOW} "
                f"AND (claimed_until IS NULL OR claimed_until < {_DB_NOW}) ORDER BY next_attempt_at, id "
                "LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE live_outbox o SET claimed_by = %s, claimed_until = {_DB_NOW} + %s "
                "FROM c, live_alerts a WHERE o.id = c.id AND a.seq = o.alert_seq "
                "RETURNING o.id, o.url, o.idempotency_key, o.attempts, a.body, o.next_attempt_at",
                (int(limit), self.worker_id, self.options.webhook_lease_s)).fetchall()
        rows.sort(key=lambda r: (r[5], r[0]))
        return [Delivery(*row[:5]) for row in rows]

    def next_due_at(self) -> float | None:
        """When the next row falls due (or a claim lapses), on this machine's clock."""
        with self._tx("read the outbox") as db:
            row = db.execute(
                f"SELECT MIN(GREATEST(next_attempt_at, COALESCE(claimed_until, 0))) - {_DB_NOW} FROM live_outbox "
                "WHERE delivered_at IS NULL").fetchone()
        return None if not row or row[0] is None else time.time() + float(row[0])

    def mark_delivered(self, delivery_id: int) -> None:
        with self._tx("mark a webhook delivered") as db:
            db.execute("UPDATE live_outbox SET delivered_at = %s, attempts = attempts + 1, last_error = NULL, "
                       "claimed_by = NULL, claimed_until = NULL WHERE id = %s", (utc_now(), delivery_id))

    def mark_failed(self, delivery_id: int, *, error: str, retry_at: float) -> None:
        """Release the claim with the next retry time (``retry_at`` on this machine's clock, kept as a
        delay on the database's): whichever worker is up then takes it."""
        with self._tx("mark a webhook failed") as db:
            db.execute(f"UPDATE live_outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = {_DB_NOW} + %s, "
                       "claimed_by = NULL, claimed_until = NULL WHERE id = %s AND delivered_at IS NULL",
                       (error[:500], max(0.0, retry_at - time.time()), delivery_id))

    def outbox_counts(self) -> dict:
        with self._tx("count the outbox") as db:
            pending, delivered = db.execute(
                "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL), COUNT(*) FILTER (WHERE delivered_at IS NOT NULL) "
                "FROM live_outbox").fetchone()
        return {"pending": pending or 0, "delivered": delivered or 0}
