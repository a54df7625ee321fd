"""Input bounds and signatures of the live service: bounded JSON, Host/Origin checks, webhook HMAC.

- :func:`parse_json` checks size and nesting depth *before* ``json.loads`` (whose recursive decoder
  raises ``RecursionError`` near 1000 levels), so one hostile message is a counted, dropped frame.
- :func:`host_allowed` / :func:`origin_allowed`: a browser page from another site can reach a loopback
  service (DNS rebinding: its name resolves to 127.0.0.1; CSRF: a form or fetch POSTs to it). The Host
  header must name this service, and an Origin, when a browser sends one, must be this service's own.
- :func:`sign_webhook` / :func:`verify_webhook`: ``X-Callpulse-Signature: t=<unix>,v1=<hex>`` where
  ``v1 = HMAC-SHA256(secret, "<t>.<body>")``, as Stripe and GitHub sign theirs; the timestamp bounds
  replays (a receiver refuses signatures older than a few minutes).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import time
from typing import Any, Iterable
from urllib.parse import urlsplit

from ..errors import ConfigError
from .options import LiveOptions

SIGNATURE_HEADER = "X-Callpulse-Signature"
DEFAULT_TOLERANCE_S = 300


class BoundedJsonError(ValueError):
    """A JSON text too large, too deeply nested or not JSON at all (the message says which)."""


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True when brackets outside strings nest deeper than ``max_depth`` (one linear pass, no recursion)."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def parse_json(data: str | bytes, *, max_bytes: int, max_depth: int = 16) -> Any:
    """``json.loads`` with the size and nesting checked first; raises :class:`BoundedJsonError`."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise BoundedJsonError(f"JSON of {len(data)} bytes exceeds the {max_bytes}-byte limit")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BoundedJsonError(f"JSON is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    elif len(data) > max_bytes:
        raise BoundedJsonError(f"JSON of {len(data)} characters exceeds the {max_bytes}-byte limit")
    if json_depth_exceeds(data, max_depth):
        raise BoundedJsonError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise BoundedJsonError(f"not JSON ({exc.msg} at {exc.pos})") from exc
    except RecursionError as exc:  # unreachable after the depth check; kept as the last line of defence
        raise BoundedJsonError("JSON nested too deeply") from exc


# --- Host and Origin ---------------------------------------------------------------------------------

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[1:host.index("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def allowed_hosts(bound_host: str, extra: Iterable[str]) -> frozenset[str] | None:
    """The names this service answers to, or None where any is accepted (a wildcard bind with no
    ``live.allowed_hosts`` configured: the token is then the only guard)."""
    names = {_strip_port(h) for h in extra if h}
    if _strip_port(bound_host) in WILDCARDS:
        return frozenset(names | set(LOOPBACK_NAMES)) if names else None
    return frozenset(names | {_strip_port(bound_host)} | set(LOOPBACK_NAMES))


def host_allowed(host_header: str | None, allowed: frozenset[str] | None) -> bool:
    if allowed is None:
        return True
    if not host_header:
        return False
    return _strip_port(host_header) in allowed


def origin_allowed(origin: str | None, allowed: frozenset[str] | None, *, own_host: str | None) -> bool:
    """A request without Origin is not from a browser page (taps, curl, the replay client): allowed.
    With one, its host must be this service's (same origin); ``null`` (sandboxed frames, files) is not."""
    if origin is None:
        return True
    if origin == "null":
        return False
    if "://" not in origin:
        return True  # not a browser's Origin (a SIP/WebSocket library's free-form value): the token decides
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    name = parts.hostname.lower()
    if allowed is None:
        return own_host is not None and name == _strip_port(own_host)
    return name in allowed


# --- webhook signatures ------------------------------------------------------------------------------

def sign_webhook(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Callpulse-Signature`` value for ``body``: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_webhook(secret: str, header: str | None, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
                   now: float | None = None) -> bool:
    """What a receiver does: recompute the HMAC over ``"<t>.<body>"``, compare in constant time, and
    refuse timestamps further than ``tolerance_s`` from now (a replayed old POST)."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError, IndexError):
        return False
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


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
