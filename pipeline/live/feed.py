"""The live feed hub: fan-out of alerts and level updates to dashboard subscribers (SSE).

Each subscriber has two lanes. Alerts go into a lane that is never dropped or coalesced and is always
sent first; level updates, transcripts and call changes go into a lane keyed by (kind, call) where a
newer update replaces an older one still unsent. A slow dashboard therefore sees fewer level ticks,
never a late or missing alert, and no subscriber can grow the server's memory without bound.

An alert with a ``seq`` (its place in the alert log) is published once: with several workers on one
database (pipeline.live.floor) the same alert reaches the hub both from this worker and from the log.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

log = logging.getLogger("pipeline.live.feed")

_SEEN_SEQS = 4096  # alert seqs remembered for de-duplication (far more than one poll window)


@dataclass(eq=False)
class Subscriber:
    max_updates: int
    alerts: deque = field(default_factory=deque)
    updates: OrderedDict = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped_updates: int = 0

    def next_batch(self) -> list[tuple[str, dict]]:
        """Everything ready to send: all alerts first, then the latest of each update."""
        batch = [("alert", a) for a in self.alerts]
        self.alerts.clear()
        batch += [(kind, payload) for (kind, _), payload in self.updates.items()]
        self.updates.clear()
        self.wake.clear()
        return batch


class FeedHub:
    """Owned by one service instance (no module-level state); used from the event loop only."""

    def __init__(self, *, max_updates: int) -> None:
        self.max_updates = max_updates
        self._subscribers: set[Subscriber] = set()
        self._counter = itertools.count(1)
        self._seen_seqs: set[int] = set()
        self._seen_order: deque = deque()

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.max_updates)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def n_subscribers(self) -> int:
        return len(self._subscribers)

    def publish_alert(self, alert: dict) -> None:
        seq = alert.get("seq")
        if seq is not None:
            if seq in self._seen_seqs:
                return
            self._seen_seqs.add(seq)
            self._seen_order.append(seq)
            if len(self._seen_order) > _SEEN_SEQS:
                self._seen_seqs.discard(self._seen_order.popleft())
        for sub in self._subscribers:
            sub.alerts.append(alert)
            sub.wake.set()

    def publish_update(self, kind: str, key: str, payload: dict) -> None:
        for sub in self._subscribers:
            slot = (kind, key)
            if slot in sub.updates:
                sub.updates.move_to_end(slot)
            elif len(sub.updates) >= sub.max_updates:
                sub.updates.popitem(last=False)
                sub.dropped_updates += 1
            sub.updates[slot] = payload
            sub.wake.set()


def sse_event(kind: str, payload: dict, *, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; the data is one JSON line (JSON never contains a raw newline)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode("utf-8")
