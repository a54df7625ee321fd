"""SIP messages (RFC 3261) and SDP offers/answers (RFC 4566), just enough for a receive-only UA.

Parsing is strict about structure (start line, ``Name: value`` headers, Content-Length) and bounded in
size; anything else is a :class:`TapProtocolError` that drops the datagram. Compact header forms
(``v f t i m l c``) are expanded so peers that use them (sipp does) work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import TapProtocolError

MAX_MESSAGE_BYTES = 16384
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
CANONICAL = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
             "contact": "Contact", "content-length": "Content-Length", "content-type": "Content-Type"}
_REQUEST = re.compile(r"^([A-Z]+) (\S+) SIP/2\.0$")
_RESPONSE = re.compile(r"^SIP/2\.0 (\d{3}) (.*)$")
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 403: "Forbidden",
           405: "Method Not Allowed", 415: "Unsupported Media Type", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 488: "Not Acceptable Here", 500: "Server Internal Error",
           503: "Service Unavailable"}


@dataclass
class SipMessage:
    method: str | None  # None for a response
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)  # lower-case names, in order
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def call_id(self) -> str:
        value = self.get("call-id")
        if not value:
            raise TapProtocolError("SIP message without a Call-ID header")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.get("cseq") or ""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise TapProtocolError(f"SIP CSeq {value[:40]!r} is not '<number> <METHOD>'")
        return int(parts[0]), parts[1].upper()

    def to_bytes(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason}"
        lines = [start]
        for key, value in self.headers:
            if key != "content-length":
                lines.append(f"{CANONICAL.get(key, _title(key))}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def parse_sip(data: bytes) -> SipMessage:
    """One SIP message from one UDP datagram."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise TapProtocolError(f"SIP message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise TapProtocolError("SIP message has no blank line after its headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TapProtocolError("SIP headers are not UTF-8") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    msg: SipMessage
    if m := _REQUEST.match(start):
        msg = SipMessage(method=m.group(1), uri=m.group(2), status=None, reason=None)
    elif m := _RESPONSE.match(start):
        msg = SipMessage(method=None, uri=None, status=int(m.group(1)), reason=m.group(2))
    else:
        raise TapProtocolError(f"SIP start line {start[:60]!r} is neither a request nor a response")
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and msg.headers:  # folded continuation line
            key, value = msg.headers[-1]
            msg.headers[-1] = (key, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            raise TapProtocolError(f"SIP header line {line[:60]!r} is not 'Name: value'")
        msg.headers.append((COMPACT.get(name, name), value.strip()))
    length = msg.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise TapProtocolError(f"SIP Content-Length {length[:20]!r} is not a number")
        if int(length) > len(body):
            raise TapProtocolError(f"SIP body is shorter ({len(body)}) than its Content-Length ({length})")
        body = body[:int(length)]
    msg.body = body
    return msg


def response_to(request: SipMessage, status: int, *, to_tag: str | None = None,
                extra: list[tuple[str, str]] = (), body: bytes = b"", content_type: str | None = None
                ) -> SipMessage:
    """A response copying Via, From, To (with our tag), Call-ID and CSeq, as RFC 3261 8.2.6 asks."""
    headers = [("via", v) for v in request.get_all("via")]
    headers.append(("from", request.get("from") or ""))
    to = request.get("to") or ""
    if to_tag and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    headers += [("to", to), ("call-id", request.get("call-id") or ""), ("cseq", request.get("cseq") or "")]
    headers += list(extra)
    if content_type:
        headers.append(("content-type", content_type))
    return SipMessage(method=None, uri=None, status=status, reason=REASONS.get(status, "Unknown"),
                      headers=headers, body=body)


def header_param(value: str, name: str) -> str | None:
    for part in value.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None


def uri_user(value: str) -> str | None:
    """The user part of the URI in a From/To/Contact value: ``"A" <sip:a17@host>;tag=x`` -> ``a17``."""
    m = re.search(r"sips?:([^@;>\s]+)@", value)
    return m.group(1) if m else None


# --- SDP -----------------------------------------------------------------------------------------

@dataclass
class MediaLine:
    port: int
    payload_types: tuple[int, ...]
    address: str | None = None
    label: str | None = None
    direction: str = "sendrecv"
    rtpmap: dict[int, str] = field(default_factory=dict)


@dataclass
class Sdp:
    address: str | None
    media: list[MediaLine]


def parse_sdp(body: bytes) -> Sdp:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TapProtocolError("SDP is not UTF-8") from exc
    address: str | None = None
    media: list[MediaLine] = []
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN":
                raise TapProtocolError(f"SDP connection line {value[:60]!r} is not 'IN IP4 <address>'")
            if media:
                media[-1].address = parts[2].split("/")[0]
            else:
                address = parts[2].split("/")[0]
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise TapProtocolError(f"SDP media line {value[:60]!r} is not 'audio <port> RTP/AVP <pt>...'")
            if parts[0] != "audio":
                media.append(MediaLine(port=0, payload_types=()))  # kept so indexes match; rejected later
                continue
            pts = tuple(int(p) for p in parts[3:] if p.isdigit() and int(p) < 128)
            media.append(MediaLine(port=int(parts[1].split("/")[0]), payload_types=pts))
        elif kind == "a" and media:
            name, _, arg = value.partition(":")
            if name == "label":
                media[-1].label = arg.strip()[:64]
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                media[-1].direction = name
            elif name == "rtpmap":
                pt, _, codec = arg.partition(" ")
                if pt.isdigit():
                    media[-1].rtpmap[int(pt)] = codec.strip()
    if not media:
        raise TapProtocolError("SDP offer has no m=audio line")
    return Sdp(address=address, media=media)


def choose_codec(line: MediaLine) -> int | None:
    """PCMU if offered, else PCMA, else None (488 Not Acceptable Here)."""
    for pt in line.payload_types:
        name = line.rtpmap.get(pt, {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt, "")).upper()
        if name.startswith("PCMU/8000"):
            return 0
    for pt in line.payload_types:
        name = line.rtpmap.get(pt, {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt, "")).upper()
        if name.startswith("PCMA/8000"):
            return 8
    return None


def build_sdp(*, address: str, session_id: int, media: list[tuple[int, int | None, str | None, str]]) -> bytes:
    """An SDP with one m=audio per (port, payload type or None to refuse, label, direction)."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=callpulse {session_id} {session_id} IN {family} {address}", "s=callpulse",
             f"c=IN {family} {address}", "t=0 0"]
    for port, pt, label, direction in media:
        if pt is None:
            lines.append("m=audio 0 RTP/AVP 0")
            continue
        codec = "PCMU/8000" if pt == 0 else "PCMA/8000"
        lines += [f"m=audio {port} RTP/AVP {pt}", f"a=rtpmap:{pt} {codec}", "a=ptime:20", f"a={direction}"]
        if label:
            lines.append(f"a=label:{label}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
