"""Live alerts, durable: an alert log and a webhook outbox in the results database.

Every alert is written to ``live_alerts`` (what ``GET /api/alerts`` pages through) and, in the same
transaction, one ``live_outbox`` row per webhook URL, *before* anyone is told about it. A sender task
POSTs due rows with ``Idempotency-Key: <alert id>`` (``<alert id>.cleared`` for the clearing of an
alert, so a receiver that honours the key still sees both), marks them delivered on a 2xx answer and
otherwise retries with exponential backoff for as long as it takes: a dead endpoint delays an alert,
a restart resumes where it stopped, nothing is dropped. Delivery is at-least-once; the key is what
makes it exactly-once for the receiver.

The tables are schema step 3 of the stores (pipeline.outputs.store). The backend follows the store
(:func:`pipeline.live.floor.open_alert_log`): SQLite here, PostgreSQL in :mod:`pipeline.live.outbox_pg`,
where several live workers share one outbox and each due row is claimed by exactly one of them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp

from ..errors import PipelineError
from .options import LiveOptions
from .security import SIGNATURE_HEADER, sign_webhook

log = logging.getLogger("pipeline.live.outbox")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Delivery:
    id: int
    url: str
    key: str
    attempts: int
    body: str


def _locked(method):
    """Run a method holding the store's lock: the connection is shared with the engine's worker threads
    (shift state), and an interleaved transaction would commit someone else's half-done work."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return wrapper


class AlertLog:
    """The ``live_alerts`` and ``live_outbox`` tables on the store's connection."""

    def __init__(self, connection: sqlite3.Connection, options: LiveOptions, *, lock=None) -> None:
        self.db = connection
        self.options = options
        self.lock = lock if lock is not None else threading.RLock()
        with self.lock:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'live_outbox'").fetchone() is None:
                # a bare connection (a store-opened one has the tables): the store's schema, all of it
                from ..outputs.store import migrate

                migrate(self.db, "the live alert log")

    @_locked
    def record(self, alert: dict) -> dict | None:
        """Store one alert event and queue its webhooks atomically. Returns it with ``seq`` and
        ``created_at`` added, or None if this (id, state) was already recorded (a replayed event)."""
        created = utc_now()
        try:
            with self.db:
                cur = self.db.execute(
                    "INSERT INTO live_alerts (alert_id, state, call_id, agent_id, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (alert["id"], alert["state"], alert["call_id"], alert.get("agent_id"),
                     json.dumps(alert, ensure_ascii=False), created))
                seq = cur.lastrowid
                if alert["state"] in self.options.webhook_states:
                    key = alert["id"] if alert["state"] == "raised" else f"{alert['id']}.{alert['state']}"
                    now = time.time()
                    self.db.executemany(
                        "INSERT INTO live_outbox (alert_seq, url, idempotency_key, next_attempt_at) "
                        "VALUES (?, ?, ?, ?)", [(seq, url, key, now) for url in self.options.webhook_urls])
        except sqlite3.IntegrityError:
            return None
        return {**alert, "seq": seq, "created_at": created, "acked_at": None, "acked_by": None}

    @_locked
    def list(self, *, since: int = 0, limit: int = 500) -> list[dict]:
        rows = self.db.execute(
            "SELECT seq, body, created_at, acked_at, acked_by FROM live_alerts a WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (since, limit)).fetchall()
        out = []
        for seq, body, created, _, _ in rows:
            alert = json.loads(body)
            acked = self.db.execute(
                "SELECT acked_at, acked_by FROM live_alerts WHERE alert_id = ? AND acked_at IS NOT NULL "
                "LIMIT 1", (alert["id"],)).fetchone()
            out.append({**alert, "seq": seq, "created_at": created,
                        "acked_at": acked[0] if acked else None, "acked_by": acked[1] if acked else None})
        return out

    @_locked
    def ack(self, alert_id: str, *, by: str) -> dict | None:
        """Acknowledge an alert (all its states). Returns the ack, or None for an unknown id."""
        at = utc_now()
        with self.db:
            cur = self.db.execute(
                "UPDATE live_alerts SET acked_at = COALESCE(acked_at, ?), acked_by = COALESCE(acked_by, ?) "
                "WHERE alert_id = ?", (at, by, alert_id))
        if cur.rowcount == 0:
            return None
        row = self.db.execute("SELECT acked_at, acked_by FROM live_alerts WHERE alert_id = ? LIMIT 1",
                              (alert_id,)).fetchone()
        return {"id": alert_id, "acked_at": row[0], "acked_by": row[1]}

    @_locked
    def close_interrupted(self, call_id: str) -> int:
        """A crashed call's alerts that were raised and never cleared get an ``interrupted`` state row
        (the alert log shows they ended with the call, not that they are still open). Returns how many."""
        rows = self.db.execute(
            "SELECT alert_id, body FROM live_alerts a WHERE call_id = ? AND state = 'raised' AND NOT EXISTS "
            "(SELECT 1 FROM live_alerts b WHERE b.alert_id = a.alert_id AND b.state IN ('cleared', 'interrupted'))",
            (call_id,)).fetchall()
        now = utc_now()
        with self.db:
            for alert_id, body in rows:
                alert = {**json.loads(body), "state": "interrupted"}
                self.db.execute(
                    "INSERT OR IGNORE INTO live_alerts (alert_id, state, call_id, agent_id, body, created_at) "
                    "VALUES (?, 'interrupted', ?, ?, ?, ?)",
                    (alert_id, call_id, alert.get("agent_id"), json.dumps(alert, ensure_ascii=False), now))
        return len(rows)

    @_locked
    def open_alert_ids(self) -> list[str]:
        """Alerts raised and not (yet) cleared or interrupted."""
        rows = self.db.execute(
            "SELECT alert_id FROM live_alerts a WHERE state = 'raised' AND NOT EXISTS (SELECT 1 FROM live_alerts b "
            "WHERE b.alert_id = a.alert_id AND b.state IN ('cleared', 'interrupted')) ORDER BY seq").fetchall()
        return [r[0] for r in rows]

    @_locked
    def due(self, *, now: float, limit: int = 50) -> list[Delivery]:
        rows = self.db.execute(
            "SELECT o.id, o.url, o.idempotency_key, o.attempts, a.body FROM live_outbox o "
            "JOIN live_alerts a ON a.seq = o.alert_seq WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ? "
            "ORDER BY o.next_attempt_at, o.id LIMIT ?", (now, limit)).fetchall()
        return [Delivery(*row) for row in rows]

    @_locked
    def next_due_at(self) -> float | None:
        row = self.db.execute(
            "SELECT MIN(next_attempt_at) FROM live_outbox WHERE delivered_at IS NULL").fetchone()
        return row[0] if row else None

    @_locked
    def mark_delivered(self, delivery_id: int) -> None:
        with self.db:
            self.db.execute("UPDATE live_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                            "WHERE id = ?", (utc_now(), delivery_id))

    @_locked
    def mark_failed(self, delivery_id: int, *, error: str, retry_at: float) -> None:
        with self.db:
            self.db.execute("UPDATE live_outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                            "WHERE id = ?", (error[:500], retry_at, delivery_id))

    @_locked
    def outbox_counts(self) -> dict:
        pending, delivered = self.db.execute(
            "SELECT SUM(delivered_at IS NULL), SUM(delivered_at IS NOT NULL) FROM live_outbox").fetchone()
        return {"pending": pending or 0, "delivered": delivered or 0}


def backoff_s(options: LiveOptions, attempts: int, *, rng: random.Random) -> float:
    """Exponential backoff after ``attempts`` failures, capped, with +-10% jitter so many alerts queued
    behind one dead endpoint do not retry in lockstep."""
    base = min(options.webhook_backoff_initial_s * 2 ** max(0, attempts - 1), options.webhook_backoff_max_s)
    return base * rng.uniform(0.9, 1.1)


class WebhookSender:
    """Delivers the outbox. One task per service; woken when an alert is recorded."""

    def __init__(self, alerts: AlertLog, options: LiveOptions, *, concurrency: int = 8,
                 secret: str | None = None) -> None:
        self.alerts = alerts
        self.secret = secret
        self.options = options
        self.wake = asyncio.Event()
        self._rng = random.Random()
        self._sem = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._inflight: set[int] = set()
        self.delivered = 0
        self.failures = 0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.options.webhook_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                # Claim no more than can be sent now: on a shared outbox a claim is a lease, and a row
                # queued here behind the semaphore would hold it while another worker could send it.
                free = self._concurrency - len(self._inflight)
                try:
                    due = self.alerts.due(now=time.time(), limit=free) if free > 0 else []
                    next_at = self.alerts.next_due_at()
                except (PipelineError, sqlite3.Error) as exc:
                    # the database is down: the rows wait there; try again shortly rather than stop sending
                    log.error("webhook outbox unreadable (%s); retrying in 1 s", exc)
                    due, next_at = [], None
                batch = [d for d in due if d.id not in self._inflight]
                for delivery in batch:
                    self._inflight.add(delivery.id)
                    asyncio.create_task(self._deliver(http, delivery))
                wait = 1.0 if next_at is None else min(max(next_at - time.time(), 0.05), 1.0)
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass

    async def _deliver(self, http: aiohttp.ClientSession, delivery: Delivery) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.key,
                   "User-Agent": "callpulse-live"}
        body = delivery.body.encode("utf-8")
        error: str | None = None
        try:
            async with self._sem:
                if self.secret:
                    # signed per attempt: the timestamp is when this POST leaves, so a receiver's replay
                    # window counts from now, not from when the alert was raised
                    headers[SIGNATURE_HEADER] = sign_webhook(self.secret, body)
                async with http.post(delivery.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 300:
                        error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            self._settle(delivery, error)
        except (PipelineError, sqlite3.Error) as exc:
            # not marked: the row stays due (its claim lapses) and is sent again, which the key makes safe
            log.error("webhook %s for %s: could not mark the outcome (%s)", delivery.url, delivery.key, exc)
        finally:
            self._inflight.discard(delivery.id)
            self.wake.set()

    def _settle(self, delivery: Delivery, error: str | None) -> None:
        if error is None:
            self.alerts.mark_delivered(delivery.id)
            self.delivered += 1
            log.info("webhook %s delivered %s", delivery.url, delivery.key)
            return
        self.failures += 1
        delay = backoff_s(self.options, delivery.attempts + 1, rng=self._rng)
        self.alerts.mark_failed(delivery.id, error=error, retry_at=time.time() + delay)
        log.warning("webhook %s failed for %s (%s, attempt %d); retrying in %.1f s",
                    delivery.url, delivery.key, error, delivery.attempts + 1, delay)
