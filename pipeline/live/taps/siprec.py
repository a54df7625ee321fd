"""SIPREC (RFC 7866 / RFC 7865): a recording session's multipart INVITE body.

The body is ``multipart/mixed`` with an ``application/sdp`` part (one ``m=audio`` per party, each with
``a=label``) and an ``application/rs-metadata+xml`` part naming the participants and which stream each
one sends. A participant whose AOR or name matches ``live.siprec_agent_pattern`` is the agent; when
none does, the first participant in the metadata is taken as the caller (the party that placed the
communication session) and the second as the agent.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ...errors import TapProtocolError
from .sip import uri_user

MAX_METADATA_BYTES = 65536
NS = "urn:ietf:params:xml:ns:recording:1"


def split_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """``{content type: part body}`` of a multipart/mixed body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    if not content_type.lower().startswith("multipart/") or not m:
        raise TapProtocolError(f"content type {content_type[:60]!r} is not multipart with a boundary")
    delimiter = b"--" + m.group(1).encode("ascii", "replace")
    parts: dict[str, bytes] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.lstrip(b"\r\n")
        head, sep, part_body = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, sep, part_body = chunk.partition(b"\n\n")
        if not sep:
            raise TapProtocolError("multipart part has no blank line after its headers")
        ctype = "text/plain"
        for line in head.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                ctype = value.strip().split(";")[0].lower()
        if part_body.endswith(b"\r\n"):
            part_body = part_body[:-2]
        elif part_body.endswith(b"\n"):
            part_body = part_body[:-1]
        parts[ctype] = part_body
    if not parts:
        raise TapProtocolError("multipart body has no parts")
    return parts


@dataclass(frozen=True)
class Participant:
    participant_id: str
    aor: str | None
    name: str | None
    sends: tuple[str, ...]  # stream ids


@dataclass(frozen=True)
class RecordingMetadata:
    session_id: str | None
    participants: tuple[Participant, ...]
    stream_labels: dict  # stream id -> label


def parse_metadata(xml: bytes) -> RecordingMetadata:
    if len(xml) > MAX_METADATA_BYTES:
        raise TapProtocolError(f"rs-metadata exceeds {MAX_METADATA_BYTES} bytes")
    if b"<!DOCTYPE" in xml.upper() or b"<!ENTITY" in xml.upper():
        raise TapProtocolError("rs-metadata must not carry a DOCTYPE or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TapProtocolError(f"rs-metadata is not well-formed XML ({exc})") from exc

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def attr(el: ET.Element, *names: str) -> str | None:
        for name in names:
            if el.get(name):
                return el.get(name)
        return None

    sessions = [el for el in root.iter() if local(el.tag) == "session"]
    session_id = attr(sessions[0], "session_id", "id") if sessions else None
    labels: dict[str, str] = {}
    for el in root.iter():
        if local(el.tag) == "stream":
            sid = attr(el, "stream_id", "id")
            label = next((c.text for c in el if local(c.tag) == "label" and c.text), None)
            if sid and label:
                labels[sid] = label.strip()
    sends: dict[str, list[str]] = {}
    for el in root.iter():
        if local(el.tag) == "participantstreamassoc":
            pid = attr(el, "participant_id", "id")
            if pid:
                sends.setdefault(pid, []).extend(
                    c.text.strip() for c in el if local(c.tag) == "send" and c.text)
    participants = []
    for el in root.iter():
        if local(el.tag) == "participant":
            pid = attr(el, "participant_id", "id")
            if not pid:
                continue
            aor = name = None
            for child in el.iter():
                if local(child.tag) == "nameID":
                    aor = child.get("aor")
                    name = next((c.text for c in child if local(c.tag) == "name" and c.text), None)
            for child in el:  # RFC 6341-style: <send> directly inside the participant
                if local(child.tag) == "send" and child.text:
                    sends.setdefault(pid, []).append(child.text.strip())
            participants.append(Participant(pid, aor, name, tuple(sends.get(pid, ()))))
    return RecordingMetadata(session_id, tuple(participants), labels)


def roles_by_label(meta: RecordingMetadata, *, agent_pattern: str) -> tuple[dict[str, str], str | None]:
    """``({label: "agent"|"caller"}, agent id)`` from the metadata's participants and streams."""
    pattern = re.compile(agent_pattern, re.I) if agent_pattern else None
    ordered = list(meta.participants)
    agent = None
    if pattern is not None:
        agent = next((p for p in ordered if pattern.search(p.aor or "") or pattern.search(p.name or "")), None)
    if agent is None and len(ordered) >= 2:
        agent = ordered[1]
    roles: dict[str, str] = {}
    for p in ordered:
        role = "agent" if p is agent else "caller"
        for stream_id in p.sends:
            label = meta.stream_labels.get(stream_id)
            if label:
                roles[label] = role
    agent_id = uri_user(f"<{agent.aor}>") if agent is not None and agent.aor else None
    return roles, agent_id


def build_metadata(*, session_id: str, caller_aor: str, agent_aor: str, caller_label: str,
                   agent_label: str) -> bytes:
    """An rs-metadata document as an SRC sends it (used by the replay client and tests)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="{NS}">
  <datamode>complete</datamode>
  <session session_id="{session_id}"><sipSessionID>{session_id}</sipSessionID></session>
  <participant participant_id="p1"><nameID aor="{caller_aor}"><name>caller</name></nameID></participant>
  <participant participant_id="p2"><nameID aor="{agent_aor}"><name>agent</name></nameID></participant>
  <stream stream_id="s1" session_id="{session_id}"><label>{caller_label}</label></stream>
  <stream stream_id="s2" session_id="{session_id}"><label>{agent_label}</label></stream>
  <participantstreamassoc participant_id="p1"><send>s1</send><recv>s2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p2"><send>s2</send><recv>s1</recv></participantstreamassoc>
</recording>
""".encode("utf-8")
