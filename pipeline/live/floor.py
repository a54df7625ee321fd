"""Several live workers, one floor: what a `callpulse serve` worker does on a shared PostgreSQL.

Each worker (``[live] worker_id``, default ``<hostname>:<port>``):

- **heartbeats** into ``live_workers`` every ``worker_heartbeat_s`` and lists its live calls (their
  summaries) in ``live_calls``; a worker silent for ``worker_dead_after_s`` is dead, and its rows are
  dropped by whichever worker notices first;
- **shows every worker's calls**: the other live workers' ``live_calls`` rows are merged into this
  worker's ``/api/calls`` and feed (``call`` events; a call that leaves the table is sent as ended);
- **shows every worker's alerts and acks**: the alert log sends ``NOTIFY callpulse_floor`` with each
  alert and ack (:mod:`pipeline.live.outbox_pg`); a ``LISTEN`` connection turns them into feed events
  here, and each heartbeat also reads the log from its cursor, so a lost notification only delays;
- **takes over a dead worker's calls**: their checkpoints are adopted (one ``UPDATE ... RETURNING``,
  so one worker gets each) and closed as interrupted, their strain counted, as after a restart.

The webhook outbox needs nothing here: its rows are claimed with a lease (pipeline.live.outbox_pg).
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, PipelineError
from ..outputs.store_pg import FLOOR_CHANNEL
from .feed import FeedHub
from .options import LiveOptions
from .outbox import AlertLog, utc_now
from .outbox_pg import PgAlertLog

log = logging.getLogger("pipeline.live.floor")

_DB_NOW = "extract(epoch from clock_timestamp())"
# Alert sequence numbers are handed out at insert and become visible at commit, so another worker's
# alert can appear below the cursor; the poll re-reads this far back (the hub drops repeats).
_SEQ_LOOKBACK = 200
_ADOPT_LOCK = 0x63706C5F61646F70  # pg_advisory_xact_lock key: adopting dead workers' checkpoints


def open_alert_log(store: Any, options: LiveOptions, *, worker_id: str) -> AlertLog | PgAlertLog:
    """The alert log on the store's database: PostgreSQL (a floor several workers share) or SQLite (one)."""
    from ..outputs.store_base import is_postgres_url

    if is_postgres_url(getattr(store, "url", None)):
        return PgAlertLog(store, options, worker_id=worker_id)
    return AlertLog(store.connection, options, lock=getattr(store, "lock", None))


def default_worker_id(options: LiveOptions) -> str:
    return options.worker_id or f"{socket.gethostname()}:{options.port}"


@dataclass(frozen=True)
class FloorView:
    """One heartbeat's reading of the shared tables."""

    remote_calls: dict[str, dict]
    alerts: list[dict]
    orphans: list[str]


class Floor:
    """This worker's place on the shared floor. ``join()`` before recovering interrupted calls,
    ``start()`` once the loop runs, ``leave()`` on stop."""

    def __init__(self, store: Any, alerts: Any, options: LiveOptions, *, worker_id: str, hub: FeedHub,
                 local_calls: Callable[[], list[dict]], board: Callable[[], list[dict]],
                 on_orphans: Callable[[list[str]], Any]) -> None:
        self.store = store
        self.alerts = alerts
        self.options = options
        self.worker_id = worker_id
        self.hub = hub
        self.local_calls = local_calls
        self.board = board
        self.on_orphans = on_orphans
        self.remote: dict[str, dict] = {}
        self.cursor = 0
        self._joined_at = 0
        self.beats = 0
        self.notifications = 0
        self._tasks: list[asyncio.Task] = []
        self._poll_now: asyncio.Event | None = None  # made in start(), on the service's loop

    # --- lifecycle -----------------------------------------------------------------------------

    def join(self, *, http: str | None = None) -> list[str]:
        """Register this worker and adopt dead workers' checkpoints (before the service recovers its
        own). Returns the adopted call ids. Refuses (ConfigError) when another running worker already has
        this id: the two would delete each other's live calls and adopt each other's checkpoints."""
        self._refuse_a_live_namesake()
        self.store.worker_id = self.worker_id
        with self.store.transaction("register this live worker") as db:
            db.execute(
                "INSERT INTO live_workers (worker_id, http, started_at, heartbeat_at) "
                f"VALUES (%s, %s, %s, {_DB_NOW}) ON CONFLICT (worker_id) DO UPDATE SET http = excluded.http, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                (self.worker_id, http, utc_now()))
            # This worker's previous life listed calls that died with it.
            db.execute("DELETE FROM live_calls WHERE worker_id = %s", (self.worker_id,))
        self.cursor = self._joined_at = self.alerts.last_seq()  # the feed shows what is raised from now on
        adopted = self._adopt_orphans()
        log.info("live worker %s joined the floor on %s", self.worker_id, self.store.path)
        return adopted

    def _refuse_a_live_namesake(self, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """A fresh row under this id is either this worker's previous life (restarted within
        worker_dead_after_s) or a namesake still running: only the latter keeps heartbeating."""
        def last_beat() -> tuple[float, float] | None:
            with self.store.transaction("read this worker id's heartbeat") as db:
                row = db.execute(f"SELECT heartbeat_at, {_DB_NOW}::double precision FROM live_workers "
                                 "WHERE worker_id = %s",
                                 (self.worker_id,)).fetchone()
                return None if row is None else (float(row[0]), float(row[1]))
        first = last_beat()
        if first is None or first[1] - first[0] > self.options.worker_dead_after_s:
            return
        sleep(2.5 * self.options.worker_heartbeat_s)
        again = last_beat()
        if again is not None and again[0] > first[0]:
            raise ConfigError(f"another live worker is running as {self.worker_id!r} on this database (its "
                              f"heartbeat is {again[1] - again[0]:.1f} s old): give each `serve` its own "
                              "[live] worker_id (or --port, since the default is <hostname>:<port>)")

    async def start(self) -> None:
        self._poll_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_loop(), name="floor-heartbeat"),
                       loop.create_task(self._listen_loop(), name="floor-listen")]

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            with self.store.transaction("leave the floor") as db:
                db.execute("DELETE FROM live_calls WHERE worker_id = %s", (self.worker_id,))
                db.execute("DELETE FROM live_workers WHERE worker_id = %s", (self.worker_id,))
        except PipelineError as exc:
            log.warning("live worker %s could not deregister (%s); it drops off after %.0f s", self.worker_id,
                        exc, self.options.worker_dead_after_s)

    def remote_live(self) -> list[dict]:
        """The other live workers' calls (summaries with ``worker``), for /api/calls and the feed."""
        return list(self.remote.values())

    # --- heartbeat -----------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                local = self.local_calls()
                view = await loop.run_in_executor(None, self._beat, local)
                self._publish(view)
                if view.orphans:
                    result = self.on_orphans(view.orphans)
                    if asyncio.iscoroutine(result):
                        await result
            except asyncio.CancelledError:
                raise
            except PipelineError as exc:
                log.error("live worker %s: floor heartbeat failed (%s); retrying", self.worker_id, exc)
            except Exception:  # noqa: BLE001 - the floor must keep beating; the log says why
                log.exception("live worker %s: floor heartbeat failed", self.worker_id)
            self._poll_now.clear()
            try:
                await asyncio.wait_for(self._poll_now.wait(), timeout=self.options.worker_heartbeat_s)
            except asyncio.TimeoutError:
                pass

    def _beat(self, local: list[dict]) -> FloorView:
        """One heartbeat (in a thread: it is database work)."""
        dead_after = self.options.worker_dead_after_s
        with self.store.transaction("heartbeat") as db:
            db.execute(f"UPDATE live_workers SET heartbeat_at = {_DB_NOW} WHERE worker_id = %s", (self.worker_id,))
            if db.execute("SELECT 1 FROM live_workers WHERE worker_id = %s", (self.worker_id,)).fetchone() is None:
                # another worker thought us dead (a long pause) and dropped us: come back
                db.execute(f"INSERT INTO live_workers (worker_id, started_at, heartbeat_at) VALUES (%s, %s, {_DB_NOW})",
                           (self.worker_id, utc_now()))
            ids = [c["call_id"] for c in local]
            db.execute("DELETE FROM live_calls WHERE worker_id = %s AND NOT (call_id = ANY(%s))", (self.worker_id, ids))
            if local:
                with db.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO live_calls (call_id, worker_id, summary, updated_at) VALUES (%s, %s, %s, {_DB_NOW}) "
                        "ON CONFLICT (call_id) DO UPDATE SET worker_id = excluded.worker_id, "
                        "summary = excluded.summary, updated_at = excluded.updated_at",
                        [(c["call_id"], self.worker_id, json.dumps(c, ensure_ascii=False)) for c in local])
            dead = f"SELECT worker_id FROM live_workers WHERE heartbeat_at < {_DB_NOW} - %s"
            db.execute(f"DELETE FROM live_calls WHERE worker_id IN ({dead})", (dead_after,))
            db.execute(f"DELETE FROM live_workers WHERE worker_id IN ({dead})", (dead_after,))
            rows = db.execute("SELECT call_id, worker_id, summary FROM live_calls WHERE worker_id <> %s "
                              "ORDER BY call_id", (self.worker_id,)).fetchall()
        remote = {cid: {**json.loads(summary), "worker": wid} for cid, wid, summary in rows}
        alerts = self.alerts.list(since=max(0, self.cursor - _SEQ_LOOKBACK), limit=5000)
        self.beats += 1
        return FloorView(remote, alerts, self._adopt_orphans())

    def _adopt_orphans(self) -> list[str]:
        """Checkpoints of workers that are gone (or of no worker) become this worker's, atomically."""
        with self.store.transaction("adopt a dead worker's calls") as db:
            # One adopter at a time, each reading after the last committed (READ COMMITTED takes the
            # UPDATE's snapshot after the lock): a checkpoint another worker just adopted, and that
            # worker's heartbeat, are seen, so no call is closed twice.
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_ADOPT_LOCK,))
            db.execute(f"UPDATE live_workers SET heartbeat_at = {_DB_NOW} WHERE worker_id = %s", (self.worker_id,))
            rows = db.execute(
                "UPDATE live_checkpoints SET worker_id = %s WHERE (worker_id IS NULL OR worker_id <> %s) AND "
                "(worker_id IS NULL OR worker_id NOT IN (SELECT worker_id FROM live_workers WHERE "
                f"heartbeat_at >= {_DB_NOW} - %s)) RETURNING call_id",
                (self.worker_id, self.worker_id, self.options.worker_dead_after_s)).fetchall()
        adopted = sorted(r[0] for r in rows)
        if adopted:
            log.warning("live worker %s took over %d call(s) of a worker that stopped: %s", self.worker_id,
                        len(adopted), ", ".join(adopted))
        return adopted

    def _publish(self, view: FloorView) -> None:
        """On the loop: every new alert, and every remote call that appeared, changed or went."""
        for alert in view.alerts:
            if alert["seq"] > self._joined_at:  # the look-back must not replay what was there at join
                self.hub.publish_alert(alert)
            self.cursor = max(self.cursor, int(alert["seq"]))
        gone = [c for cid, c in self.remote.items() if cid not in view.remote_calls]
        for call in gone:
            self.hub.publish_update("call", call["call_id"], {**call, "state": "ended"})
        for cid, call in view.remote_calls.items():
            if self.remote.get(cid) != call:
                self.hub.publish_update("call", cid, call)
        self.remote = dict(view.remote_calls)
        if gone:
            self.hub.publish_update("agents", "board", {"agents": self.board()})

    # --- notifications -------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.store.url, autocommit=True,
                                                                 application_name="callpulse-floor") as conn:
                    await conn.execute(f"LISTEN {FLOOR_CHANNEL}")
                    self._poll_now.set()  # catch up on what was sent while not listening
                    async for note in conn.notifies():
                        self.notifications += 1
                        await self._on_notify(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("live worker %s: lost the floor notifications (%s); reconnecting in 1 s",
                            self.worker_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _on_notify(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if not isinstance(note, dict) or note.get("worker") == self.worker_id:
            return  # our own: the service published it already
        kind = note.get("kind")
        if kind == "alert":
            self._poll_now.set()  # the heartbeat reads it from the log (one query, in order)
        elif kind == "ack" and isinstance(note.get("ack"), dict):
            ack = note["ack"]
            self.hub.publish_update("ack", str(ack.get("id")), ack)
        elif kind == "shift":
            board = await asyncio.get_running_loop().run_in_executor(None, self.board)
            self.hub.publish_update("agents", "board", {"agents": board})
