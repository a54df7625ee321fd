"""A live service in a background thread (for tests that drive it with outside processes: baresip, sipp,
ffmpeg, streamdouble, a killed `callpulse serve`), a feed collector and a webhook receiver."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from concurrent.futures import Future

from aiohttp import web

from pipeline.live.replay import feed_events


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceThread:
    """Runs ``LiveService`` on its own event loop in a thread; ``run(coro)`` executes in that loop."""

    def __init__(self, service_factory) -> None:
        self._factory = service_factory
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-service", daemon=True)
        self.service = None
        self.bound = None

    def __enter__(self) -> "ServiceThread":
        self._thread.start()

        async def start():
            self.service = self._factory()
            self.bound = await self.service.start()

        self.run(start(), timeout_s=120)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.run(self.service.stop(drain_s=10.0), timeout_s=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def run(self, coro, *, timeout_s: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout_s)

    def spawn(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


async def collect_feed(url: str, token: str | None, *, until, timeout_s: float) -> list[tuple[str, dict]]:
    """SSE events from ``url`` until ``until(events)`` holds or the time is up (then returns what it has)."""
    events: list[tuple[str, dict]] = []
    try:
        async with contextlib.aclosing(feed_events(url, token=token, timeout_s=timeout_s)) as feed:
            async for kind, data in feed:
                events.append((kind, data))
                if until(events):
                    break
    except asyncio.TimeoutError:
        pass
    return events


class WebhookReceiver:
    """Records POSTs; honours Idempotency-Key; ``fail_first`` answers 503 that many times."""

    def __init__(self, port: int, *, fail_first: int = 0) -> None:
        self.port, self.fail_first = port, fail_first
        self.requests: list[tuple[str, dict]] = []
        self.accepted: dict[str, dict] = {}
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        body = await request.json()
        self.requests.append((key, body))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.accepted.setdefault(key, body)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def until(predicate, *, timeout_s: float, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
