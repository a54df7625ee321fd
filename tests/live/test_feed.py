"""The live feed hub: a slow dashboard gets every alert, first, and only the latest level per call."""
from __future__ import annotations

import asyncio

from pipeline.live.feed import FeedHub, sse_event


def test_alerts_are_never_dropped_and_come_before_coalesced_level_updates():
    async def scenario():
        hub = FeedHub(max_updates=3)
        sub = hub.subscribe()
        for t in range(1000):
            hub.publish_update("level", f"call-{t % 5}", {"t_s": t})
            if t % 100 == 0:
                hub.publish_alert({"id": f"a{t}"})
        batch = sub.next_batch()
        hub.unsubscribe(sub)
        hub.publish_alert({"id": "after"})
        return batch, sub

    batch, sub = asyncio.run(scenario())
    kinds = [k for k, _ in batch]
    assert kinds[:10] == ["alert"] * 10 and [p["id"] for _, p in batch[:10]] == [f"a{t}" for t in range(0, 1000, 100)]
    levels = [p["t_s"] for k, p in batch if k == "level"]
    assert levels == [997, 998, 999], "bounded: only the newest updates of the most recent calls"
    assert sub.dropped_updates > 0 and not sub.alerts, "an unsubscribed dashboard holds nothing"


def test_sse_event_is_one_json_line_per_event():
    raw = sse_event("alert", {"text": "line1\nline2", "n": 1}, event_id=7).decode()
    assert raw == 'id: 7\nevent: alert\ndata: {"text": "line1\\nline2", "n": 1}\n\n'
