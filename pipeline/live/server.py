"""``callpulse serve``: the live service (taps in, HTTP API, live feed, webhooks, dashboard).

One :class:`LiveService` per process holds the engine (models loaded once), the store, the call manager,
the feed hub and the webhook sender; nothing lives in module globals. Security: every tap, the API and
the dashboard page need the token (``Authorization: Bearer <token>`` or ``?token=`` where a tap cannot
set headers; SIP and AudioSocket by source-address allow-list), unless the service was started with
``insecure=True``, which is only accepted on a loopback address. Before the token: the Host header must
name this service and a browser's Origin must be its own (DNS rebinding, CSRF), and every POST must be
``application/json`` (a cross-site form cannot send that without a CORS preflight, which is never
granted). Requests are parsed strictly: a bad path, query or body is a 4xx, never a 500.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import PipelineError
from ..outputs.sink import ResultSink
from ..seams import CallEngine
from .calls import CallManager, LiveCall, default_call_info
from .feed import FeedHub, sse_event
from .ingest import SERVICE_KEY, AudioSocketServer, audio_fork_handler, twilio_handler
from .options import LiveOptions
from .outbox import WebhookSender
from .http_guard import auth_middleware, bad_request, errors_middleware, guard_middleware
from .security import BoundedJsonError, allowed_hosts, parse_json, resolve_token
from .sip_ua import SipUserAgent
from .taps.audiohook import audiohook_handler

log = logging.getLogger("pipeline.live.server")

STATIC_DIR = Path(__file__).with_name("static")
PUBLIC_PREFIXES = ("/static/",)
STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(?:js|css|html|svg|png|ico|woff2?)")
MAX_CURSOR = 2 ** 63 - 1  # SQLite integers are 64-bit signed


@dataclass(frozen=True)
class Bound:
    """Where a started service listens (ports resolved when 0 was asked for)."""

    host: str
    http_port: int
    sip_port: int | None
    audiosocket_port: int | None

    @property
    def http(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://", 1)


class LiveService:
    def __init__(self, *, engine: CallEngine, store: Any, options: LiveOptions, insecure: bool = False,
                 call_info=default_call_info) -> None:
        self.engine = engine
        self.store = store
        self.options = options
        self.token = resolve_token(options, insecure=insecure)
        self.insecure = insecure
        self.executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="callpulse-feed")
        self.hub = FeedHub(max_updates=options.feed_queue)
        self.sink = ResultSink(store=store, folder=options.results_dir or None)
        from .floor import default_worker_id, open_alert_log

        self.worker_id = default_worker_id(options)
        self.alerts = open_alert_log(store, options, worker_id=self.worker_id)
        self.floor = None  # several workers on one PostgreSQL: see start()
        self.webhook_secret = os.environ.get("CALLPULSE_WEBHOOK_SECRET") or options.webhook_secret
        self.sender = WebhookSender(self.alerts, options, secret=self.webhook_secret or None)
        self.calls = CallManager(engine=engine, options=options, executor=self.executor,
                                 on_alert=self._on_alert, on_update=self.hub.publish_update,
                                 on_ended=self._on_ended, call_info=call_info,
                                 id_taken=self._id_taken if callable(getattr(store, "call_exists", None)) else None,
                                 on_checkpoint=(self._on_checkpoint
                                                if callable(getattr(store, "save_checkpoint", None)) else None))
        self.sip = SipUserAgent(self)
        self.audiosocket = AudioSocketServer(self)
        self.malformed_outside_calls = 0
        self.idle_timeouts = 0
        self.http_refused: dict[str, int] = {}  # why requests were answered 4xx before a handler ran
        self.interrupted_on_start: list[str] = []
        self._hosts: frozenset[str] | None = None
        from .metrics import LiveMetrics

        self.metrics = LiveMetrics(self)
        self.stopping = False
        self.bound: Bound | None = None
        self._runner: web.AppRunner | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._feeds: set[asyncio.Task] = set()
        self._owns_store = False

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, *, insecure: bool = False) -> "LiveService":
        """The real service: the engine loaded once for this process, the store opened."""
        from ..engine import Engine
        from ..outputs.store import Store

        options: LiveOptions = config.live
        from ..outputs.store_base import is_postgres_url

        if is_postgres_url(options.database):
            from ..outputs.store_base import open_store

            store = open_store(options.database)  # several workers share it (pipeline.live.floor)
        else:
            store = Store.open(options.database)
        engine = Engine.load(config, store=store)
        service = cls(engine=engine, store=store, options=options, insecure=insecure)
        service._owns_store = True
        return service

    async def start(self) -> Bound:
        opts = self.options
        self._hosts = allowed_hosts(opts.host, opts.allowed_hosts)
        if callable(getattr(self.alerts, "last_seq", None)):  # the PostgreSQL alert log: a shared floor
            from .floor import Floor

            self.floor = Floor(self.store, self.alerts, opts, worker_id=self.worker_id, hub=self.hub,
                               local_calls=lambda: [c.summary() for c in self.calls.live.values()],
                               board=self._board, on_orphans=self._take_over)
            self.floor.join()
        self._recover_interrupted()
        if opts.webhook_urls and not self.webhook_secret:
            log.warning("webhooks are unsigned: set [live] webhook_secret or CALLPULSE_WEBHOOK_SECRET so "
                        "receivers can verify X-Callpulse-Signature")
        app = web.Application(middlewares=[errors_middleware(self._count_refused),
                                           guard_middleware(lambda: self._hosts, self._count_refused),
                                           auth_middleware(self.token, public=PUBLIC_PREFIXES)],
                              client_max_size=max(opts.max_body_bytes, 1024))
        app[SERVICE_KEY] = self
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name}", self._static),
            web.get("/tap/audio-fork", audio_fork_handler),
            web.get("/tap/twilio", twilio_handler),
            web.get("/tap/audiohook", audiohook_handler),
            web.get("/api/health", self._health),
            web.get("/api/ready", self._ready),
            web.get("/metrics", self._metrics),
            web.get("/api/calls", self._calls),
            web.get("/api/calls/{call_id}", self._call),
            web.get("/api/alerts", self._alerts),
            web.post("/api/alerts/{alert_id}/ack", self._ack),
            web.get("/api/agents", self._agents),
            web.post("/api/agents/{agent_id}/break", self._break),
            web.get("/api/feed", self._feed),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, opts.host, opts.port, reuse_address=True)
        await site.start()
        http_port = site._server.sockets[0].getsockname()[1]
        sip_port = await self.sip.start(opts.host, opts.sip_port) if opts.sip_enabled else None
        as_port = None
        if opts.audiosocket_enabled:
            self._tcp = await asyncio.start_server(self.audiosocket.handle, opts.host, opts.audiosocket_port,
                                                   family=socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
            as_port = self._tcp.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.get_running_loop().create_task(self.sender.run(), name="webhooks"))
        self.bound = Bound(opts.host, http_port, sip_port, as_port)
        self._restore_shifts()
        if self.floor is not None:
            await self.floor.start()
        pending = self.alerts.outbox_counts()["pending"]
        if pending:
            log.info("%d undelivered webhook(s) restored from the outbox", pending)
        return self.bound

    async def stop(self, *, drain_s: float = 30.0) -> None:
        """Finalise live calls (bounded), stop listening, close the feed and the executor."""
        self.stopping = True
        await self.sip.stop()
        if self._tcp is not None:
            self._tcp.close()
        await self.calls.close_all(reason="service stopping", timeout_s=drain_s)
        background = [*self._feeds, *self._tasks]
        for task in background:
            task.cancel()
        # wait for them to unwind (the webhook sender closes its HTTP session) before the loop goes
        await asyncio.gather(*background, return_exceptions=True)
        if self.floor is not None:
            await self.floor.leave()
        if self._runner is not None:
            await self._runner.cleanup()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_store:
            self.store.close()

    def _recover_interrupted(self, only: set[str] | None = None) -> None:
        """Calls that were live when the last process died (their checkpoints are still there) are
        closed as ``interrupted``: the partial record is stored, their raised alerts are closed as
        ``interrupted``, and their strain so far is folded into the agent's shift. ``only``: just these
        (a dead worker's calls taken over while this one has live calls of its own)."""
        lister = getattr(self.store, "list_checkpoints", None)
        if not callable(lister):
            return
        shifts = self.engine.shifts
        for cp in lister():
            call_id = cp["call_id"]
            if only is not None and call_id not in only:
                continue
            try:
                if not self.store.stored_call_exists(call_id):
                    result = dict(cp["result"])
                    result["interrupted"] = True
                    result["end_reason"] = "interrupted"
                    result.setdefault("call_id", call_id)
                    self.store.save_call(result)
                    if cp.get("shift") and shifts is not None:
                        from ..strain import ShiftState

                        shifts.record_call(ShiftState.from_json(cp["shift"]))
                closed = self.alerts.close_interrupted(call_id)
                self.store.drop_checkpoint(call_id)
            except (PipelineError, sqlite3.Error, KeyError, TypeError, ValueError) as exc:
                log.error("call %s: could not be closed as interrupted (%s); its checkpoint is kept", call_id, exc,
                          extra={"call_id": call_id})
                continue
            self.interrupted_on_start.append(call_id)
            log.warning("call %s was live when the service stopped; stored as interrupted (%d alert(s) closed)",
                        call_id, closed, extra={"call_id": call_id})

    async def _take_over(self, call_ids: list[str]) -> None:
        """Another worker died with these calls live: close them here as interrupted."""
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._recover_interrupted(set(call_ids)))
        self.hub.publish_update("agents", "board", {"agents": self._board()})

    def _id_taken(self, call_id: str) -> bool:
        try:
            return bool(self.store.call_exists(call_id))
        except PipelineError as exc:
            log.error("could not check whether call id %s is taken (%s); taking it as taken", call_id, exc)
            return True

    async def _on_checkpoint(self, call: LiveCall, partial: dict, shift: dict | None) -> None:
        if call.state == "ended":
            return  # the final result is stored already; a late checkpoint must not reopen it
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.store.save_checkpoint(call.call_id, partial, shift=shift))

    def _restore_shifts(self) -> None:
        """Put every agent with a saved shift on the strain board now, not only when they next take a
        call: after a restart mid-shift the supervisor must still see who needs a break."""
        shifts = self.engine.shifts
        agents = self.store.list_shift_agents()
        for agent_id in agents:
            shifts.get(agent_id)
        if agents:
            log.info("restored the shift state of %d agent(s)", len(agents))

    # --- events out ----------------------------------------------------------------------------

    def _on_alert(self, call: LiveCall, alert: dict, *, attempt: int = 0) -> None:
        # Durable first, then the feed and the webhooks: a crash after this line loses nothing.
        try:
            recorded = self.alerts.record(alert)
        except (sqlite3.Error, PipelineError) as exc:
            # The database is failing: the supervisor still hears now, and recording is retried (the
            # webhooks go out once it is recorded) rather than the alert being lost with the error.
            delay = min(2.0 ** attempt, 30.0)
            log.error("alert %s could not be recorded (%s); retrying in %.0f s", alert["id"], exc, delay,
                      extra={"call_id": call.call_id})
            if attempt == 0:
                self.hub.publish_alert({**alert, "seq": None, "created_at": None})
            asyncio.get_running_loop().call_later(delay, lambda: self._on_alert(call, alert, attempt=attempt + 1))
            return
        if recorded is None:
            return
        if attempt > 0:
            log.info("alert %s recorded after %d retries", alert["id"], attempt, extra={"call_id": call.call_id})
        self.hub.publish_alert(recorded)
        self.metrics.alert_recorded(recorded)
        self.sender.wake.set()
        if call.notify is not None:
            call.notify({"type": "callpulse.alert", "data": recorded})
        log.warning("alert %s %s %s on call %s (level %.2f: %s)", recorded["id"], recorded["action"],
                    recorded["state"], call.call_id, recorded["level"], ", ".join(recorded["reasons"]),
                    extra={"call_id": call.call_id})

    async def _on_ended(self, call: LiveCall) -> None:
        self.metrics.call_ended(call)
        if call.result is not None:
            try:
                self.sink.store_result(call.result)  # the same sink as batch: store, atomic JSON
                dropper = getattr(self.store, "drop_checkpoint", None)
                if callable(dropper):
                    dropper(call.call_id)  # after the save: a crash in between finds the final record
            except Exception:  # the live result stays in memory and in the API; the log says why
                log.exception("call %s: could not save the result", call.call_id, extra={"call_id": call.call_id})
            if self.sink.folder is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.sink.write_files_logged, call.result)
        self.hub.publish_update("agents", "board", {"agents": self._board()})

    def _remote_live(self) -> list[dict]:
        """Other workers' live calls on a shared floor (none on SQLite)."""
        return self.floor.remote_live() if self.floor is not None else []

    def _board(self) -> list[dict]:
        return self.engine.shifts.board()

    # --- HTTP ----------------------------------------------------------------------------------

    def _count_refused(self, reason: str) -> None:
        self.http_refused[reason] = self.http_refused.get(reason, 0) + 1

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not STATIC_NAME.fullmatch(name):  # NUL bytes, dots, separators: never reach the file system
            raise web.HTTPNotFound()
        path = (STATIC_DIR / name).resolve()
        if path.parent != STATIC_DIR.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({
            "status": "ok", "live_calls": len(self.calls.live), "feed_subscribers": self.hub.n_subscribers,
            "outbox": self.alerts.outbox_counts(), "webhook_failures": self.sender.failures,
            "malformed_outside_calls": self.malformed_outside_calls, "sip_malformed": self.sip.malformed,
            "calls_refused": dict(self.calls.refused), "idle_timeouts": self.idle_timeouts,
            "http_refused": dict(self.http_refused), "interrupted_on_start": list(self.interrupted_on_start),
            "webhooks_signed": bool(self.webhook_secret),
            "bound": None if self.bound is None else self.bound.__dict__,
        })

    async def _ready(self, request: web.Request) -> web.Response:
        """Readiness (load balancers, Kubernetes): 200 when this worker should get new calls, else 503
        with the reasons. Health says the process is up; ready says it can take traffic now."""
        reasons = []
        if self.bound is None or self.stopping:
            reasons.append("not started" if self.bound is None else "stopping")
        if len(self.calls.live) >= self.options.max_calls:
            reasons.append(f"at live.max_calls ({self.options.max_calls} live calls)")
        try:
            self.alerts.outbox_counts()
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            reasons.append(f"database unavailable: {type(exc).__name__}")
        body = {"ready": not reasons, "reasons": reasons, "live_calls": len(self.calls.live),
                "max_calls": self.options.max_calls}
        return web.json_response(body, status=200 if not reasons else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        from .metrics import CONTENT_TYPE

        # On the loop, like /api/health: the collector reads the call table the loop owns (cheap).
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _calls(self, request: web.Request) -> web.Response:
        live = [c.summary() for c in self.calls.live.values()] + self._remote_live()
        recent = [c.summary() for c in self.calls.recent]
        seen = {c["call_id"] for c in live + recent}
        stored = []
        try:
            stored = [c for c in self.store.list_calls() if _call_id_of(c) not in seen][:self.options.recent_calls]
        except Exception:
            log.exception("could not list stored calls")
        return web.json_response({"live": live, "recent": recent, "stored": stored})

    async def _call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        call = self.calls.live.get(call_id) or next((c for c in self.calls.recent if c.call_id == call_id), None)
        if call is not None:
            body = call.summary()
            body["result"] = await self.calls.result_so_far(call)
            return web.json_response(body)
        stored = self.store.get_call(call_id)
        if stored is None:
            remote = self.floor.remote.get(call_id) if self.floor is not None else None
            if remote is not None:  # live on another worker: its summary (the result is over there)
                return web.json_response(remote)
            return web.json_response({"error": f"no call {call_id}"}, status=404)
        return web.json_response({"call_id": call_id, "state": "ended", "result": stored})

    async def _alerts(self, request: web.Request) -> web.Response:
        since = _query_int(request, "since", 0, lo=0, hi=MAX_CURSOR)
        limit = _query_int(request, "limit", 500, lo=1, hi=5000)
        return web.json_response(self.alerts.list(since=since, limit=limit))

    async def _ack(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        by = str(body.get("by", "supervisor"))[:64]
        action = str(body.get("action", "ack"))
        if action not in ("ack", "takeover"):
            return web.json_response({"error": "action must be 'ack' or 'takeover'"}, status=400)
        ack = self.alerts.ack(request.match_info["alert_id"], by=f"{by}:{action}")
        if ack is None:
            return web.json_response({"error": f"no alert {request.match_info['alert_id']}"}, status=404)
        self.hub.publish_update("ack", ack["id"], ack)
        return web.json_response(ack)

    async def _agents(self, request: web.Request) -> web.Response:
        return web.json_response(self._board())

    async def _break(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        action = body.get("action")
        if action not in ("start", "end"):
            return web.json_response({"error": "POST {\"action\": \"start\"} or {\"action\": \"end\"}"}, status=400)
        shifts = self.engine.shifts
        agent_id = request.match_info["agent_id"][:128]
        state = shifts.record_break(agent_id, start=action == "start", at=datetime.now(timezone.utc))
        self.hub.publish_update("agents", "board", {"agents": self._board()})
        return web.json_response(state.as_json() if hasattr(state, "as_json") else {"agent_id": agent_id})

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        sub = self.hub.subscribe()
        task = asyncio.current_task()
        self._feeds.add(task)
        try:
            await resp.write(sse_event("hello", {"live": [c.summary() for c in self.calls.live.values()]
                                                 + self._remote_live(), "agents": self._board()}))
            while True:
                try:
                    await asyncio.wait_for(sub.wake.wait(), timeout=15.0)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                for kind, payload in sub.next_batch():
                    await resp.write(sse_event(kind, payload, event_id=payload.get("seq") if kind == "alert" else None))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unsubscribe(sub)
            self._feeds.discard(task)
        return resp


def _call_id_of(row: Any) -> str | None:
    if isinstance(row, dict):
        return row.get("call_id") or row.get("id")
    return getattr(row, "call_id", None)


def _query_int(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not lo <= int(raw) <= hi:
        raise bad_request(f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    limit = request.app[SERVICE_KEY].options.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=json.dumps({"error": f"bodies are at most {limit} bytes"}),
                                            content_type="application/json")
    raw = await request.read()
    try:
        body = parse_json(raw, max_bytes=limit, max_depth=8)
    except BoundedJsonError as exc:
        raise bad_request(f"the body must be JSON ({exc})")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}', content_type="application/json")
    return body
