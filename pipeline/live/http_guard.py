"""The HTTP service's middlewares, outermost first: errors as JSON, then Host/Origin/method/type checks,
then the token. Each takes only what it needs (a refusal counter, the allowed hosts, the token), not the
service, so the checks read and test on their own."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Callable

from aiohttp import web

from .security import host_allowed, origin_allowed

log = logging.getLogger("pipeline.live.server")

CountRefused = Callable[[str], None]


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _allow(exc: web.HTTPException) -> dict:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def errors_middleware(count_refused: CountRefused):
    @web.middleware
    async def errors(request: web.Request, handler):
        """Last line: an error from a handler is a JSON 4xx/5xx without a traceback to the client."""
        if request.path.startswith("/tap/"):
            return await handler(request)  # an upgraded WebSocket cannot be answered with a new response
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow(exc))
            raise
        except (ValueError, UnicodeError, OverflowError, RecursionError) as exc:
            count_refused("bad request")
            return web.json_response({"error": f"bad request: {type(exc).__name__}"}, status=400)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error (the service log says why)"}, status=500)
    return errors


def guard_middleware(hosts: Callable[[], frozenset[str] | None], count_refused: CountRefused):
    """``hosts`` is read per request: the service knows its allowed hosts only once it is bound."""
    @web.middleware
    async def guard(request: web.Request, handler):
        """Host, Origin and Content-Type checks, before the token: a web page the supervisor has open
        must not reach this service through their browser (DNS rebinding, CSRF)."""
        allowed = hosts()
        if not host_allowed(request.headers.get("Host"), allowed):
            count_refused("host")
            return web.json_response({"error": "this Host is not served here (add it to live.allowed_hosts)"},
                                     status=421)
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site" or not origin_allowed(
                request.headers.get("Origin"), allowed, own_host=request.headers.get("Host")):
            count_refused("origin")
            return web.json_response({"error": "cross-origin requests are refused"}, status=403)
        if request.method not in ("GET", "HEAD", "POST"):
            count_refused("method")
            return web.json_response({"error": f"method {request.method} is not allowed"}, status=405,
                                     headers={"Allow": "GET, HEAD, POST"})
        if request.method == "POST" and request.content_type != "application/json":
            count_refused("content type")
            return web.json_response({"error": "POST bodies must be Content-Type: application/json"}, status=415)
        return await handler(request)
    return guard


def auth_middleware(token: str | None, *, public: tuple[str, ...]):
    @web.middleware
    async def auth(request: web.Request, handler):
        if token is not None and not request.path.startswith(public):
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.lower().startswith("bearer "):
                given = header[7:].strip()
            elif "X-API-KEY" in request.headers and request.path == "/tap/audiohook":
                given = request.headers["X-API-KEY"]  # what Genesys AudioHook sends as the integration's key
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response({"error": "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                   "or ?token=<token>"}, status=401)
        return await handler(request)
    return auth
