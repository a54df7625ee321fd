"""``callpulse serve``: the live service (taps in, HTTP API, live feed, webhooks, dashboard).

One :class:`LiveService` per process holds the engine (models loaded once), the store, the call manager,
the feed hub and the webhook sender; nothing lives in module globals. Security: every tap, the API and
the dashboard page need the token (``Authorization: Bearer <token>`` or ``?token=`` where a tap cannot
set headers; SIP and AudioSocket by source-address allow-list), unless the service was started with
``insecure=True``, which is only accepted on a loopback address.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ConfigError, PipelineError
from .calls import CallManager, LiveCall, default_call_info
from .feed import FeedHub, sse_event
from .ingest import SERVICE_KEY, AudioSocketServer, audio_fork_handler, twilio_handler
from .options import LiveOptions
from .outbox import AlertLog, WebhookSender
from .sip_ua import SipUserAgent

log = logging.getLogger("pipeline.live.server")

STATIC_DIR = Path(__file__).with_name("static")
PUBLIC_PREFIXES = ("/static/",)


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(options: LiveOptions, *, insecure: bool) -> str | None:
    token = os.environ.get("CALLPULSE_TOKEN") or options.token
    if token:
        if len(token) < 16:
            raise ConfigError("the live token must be at least 16 characters (CALLPULSE_TOKEN or [live] token); "
                              "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        return token
    if not insecure:
        raise ConfigError("no live token configured: set CALLPULSE_TOKEN (or [live] token), or pass --insecure "
                          "to run without one on a loopback address only")
    if not is_loopback(options.host):
        raise ConfigError(f"--insecure is only allowed on a loopback address, not {options.host}; "
                          "configure a token to listen elsewhere")
    return None


class LiveService:
    def __init__(self, *, engine: Any, store: Any, options: LiveOptions, insecure: bool = False,
                 call_info=default_call_info) -> None:
        self.engine = engine
        self.store = store
        self.options = options
        self.token = resolve_token(options, insecure=insecure)
        self.insecure = insecure
        self.executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="callpulse-feed")
        self.hub = FeedHub(max_updates=options.feed_queue)
        self.alerts = AlertLog(store.connection, options, lock=getattr(store, "lock", None))
        self.sender = WebhookSender(self.alerts, options)
        self.calls = CallManager(engine=engine, options=options, executor=self.executor,
                                 on_alert=self._on_alert, on_update=self.hub.publish_update,
                                 on_ended=self._on_ended, call_info=call_info)
        self.sip = SipUserAgent(self)
        self.audiosocket = AudioSocketServer(self)
        self.malformed_outside_calls = 0
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
        from ..store import Store

        options: LiveOptions = config.live
        store = Store.open(options.database)
        engine = Engine.load(config, store=store) if _accepts_store(Engine.load) else Engine.load(config)
        service = cls(engine=engine, store=store, options=options, insecure=insecure)
        service._owns_store = True
        return service

    async def start(self) -> Bound:
        opts = self.options
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app[SERVICE_KEY] = self
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name}", self._static),
            web.get("/tap/audio-fork", audio_fork_handler),
            web.get("/tap/twilio", twilio_handler),
            web.get("/api/health", self._health),
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
        pending = self.alerts.outbox_counts()["pending"]
        if pending:
            log.info("%d undelivered webhook(s) restored from the outbox", pending)
        return self.bound

    async def stop(self, *, drain_s: float = 30.0) -> None:
        """Finalise live calls (bounded), stop listening, close the feed and the executor."""
        await self.sip.stop()
        if self._tcp is not None:
            self._tcp.close()
        await self.calls.close_all(reason="service stopping", timeout_s=drain_s)
        background = [*self._feeds, *self._tasks]
        for task in background:
            task.cancel()
        # wait for them to unwind (the webhook sender closes its HTTP session) before the loop goes
        await asyncio.gather(*background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_store:
            self.store.close()

    def _restore_shifts(self) -> None:
        """Put every agent with a saved shift on the strain board now, not only when they next take a
        call: after a restart mid-shift the supervisor must still see who needs a break."""
        shifts = getattr(self.engine, "shifts", None)
        if shifts is None:
            return
        lister = getattr(self.store, "list_shift_agents", None)
        try:
            if callable(lister):
                agents = list(lister())
            else:
                with getattr(self.store, "lock", _NoLock()):
                    agents = [row[0] for row in self.store.connection.execute("SELECT agent_id FROM agent_shifts")]
        except sqlite3.Error:
            return  # a store without shift persistence: nothing to restore
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
        self.sender.wake.set()
        if call.notify is not None:
            call.notify({"type": "callpulse.alert", "data": recorded})
        log.warning("alert %s %s %s on call %s (level %.2f: %s)", recorded["id"], recorded["action"],
                    recorded["state"], call.call_id, recorded["level"], ", ".join(recorded["reasons"]),
                    extra={"call_id": call.call_id})

    async def _on_ended(self, call: LiveCall) -> None:
        if call.result is not None:
            try:
                self.store.save_call(call.result)
            except Exception:  # the live result stays in memory and in the API; the log says why
                log.exception("call %s: could not save the result", call.call_id, extra={"call_id": call.call_id})
            if self.options.results_dir:
                await asyncio.get_running_loop().run_in_executor(None, write_result, self.options.results_dir,
                                                                 call.result)
        self.hub.publish_update("agents", "board", {"agents": self._board()})

    def _board(self) -> list[dict]:
        shifts = getattr(self.engine, "shifts", None)
        return shifts.board() if shifts is not None else []

    # --- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token is not None and not request.path.startswith(PUBLIC_PREFIXES):
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.lower().startswith("bearer "):
                given = header[7:].strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response({"error": "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                   "or ?token=<token>"}, status=401)
        return await handler(request)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (STATIC_DIR / name).resolve()
        if path.parent != STATIC_DIR.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({
            "status": "ok", "live_calls": len(self.calls.live), "feed_subscribers": self.hub.n_subscribers,
            "outbox": self.alerts.outbox_counts(), "webhook_failures": self.sender.failures,
            "malformed_outside_calls": self.malformed_outside_calls, "sip_malformed": self.sip.malformed,
            "bound": None if self.bound is None else self.bound.__dict__,
        })

    async def _calls(self, request: web.Request) -> web.Response:
        live = [c.summary() for c in self.calls.live.values()]
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
            return web.json_response({"error": f"no call {call_id}"}, status=404)
        return web.json_response({"call_id": call_id, "state": "ended", "result": stored})

    async def _alerts(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = min(int(request.query.get("limit", "500")), 5000)
        except ValueError:
            return web.json_response({"error": "since and limit must be integers (since = last seq seen)"},
                                     status=400)
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
        shifts = getattr(self.engine, "shifts", None)
        if shifts is None:
            return web.json_response({"error": "this engine tracks no shifts"}, status=503)
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
            await resp.write(sse_event("hello", {"live": [c.summary() for c in self.calls.live.values()],
                                                 "agents": self._board()}))
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


def write_result(folder: str, result: dict) -> Path | None:
    """``<folder>/<call_id>.json``, written to a temporary name first so a reader never sees half a file."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{result['call_id']}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path
    except OSError as exc:
        log.error("could not write %s/%s.json (%s); the result is still in the database", folder,
                  result.get("call_id"), exc, extra={"call_id": result.get("call_id")})
        return None


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _call_id_of(row: Any) -> str | None:
    if isinstance(row, dict):
        return row.get("call_id") or row.get("id")
    return getattr(row, "call_id", None)


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text='{"error": "the body must be JSON"}', content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}', content_type="application/json")
    return body


def _accepts_store(fn) -> bool:
    import inspect

    try:
        return "store" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
