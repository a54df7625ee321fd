"""What the taps and the SIP/AudioSocket servers need from the live service, and no more.

They open, feed and end calls through the call manager, read the live options and count what they
refuse; typing them against this protocol instead of ``LiveService`` keeps the imports one way
(server -> ingest/sip_ua/taps, never back).
"""
from __future__ import annotations

from typing import Protocol

from .calls import CallManager
from .options import LiveOptions


class TapHost(Protocol):
    """The service as a tap sees it (``pipeline.live.server.LiveService`` implements it)."""

    options: LiveOptions
    calls: CallManager
    # connections closed for sending no audio within [live] idle_timeout_s
    idle_timeouts: int
    # malformed frames that arrived before any call was open on their connection
    malformed_outside_calls: int
