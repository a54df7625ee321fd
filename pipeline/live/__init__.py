"""Live analysis: audio taps in, a streaming server, a durable alert outbox, a supervisor dashboard.

``callpulse serve`` runs :class:`pipeline.live.server.LiveService`; ``callpulse replay`` is the project's
own tap client (:mod:`pipeline.live.replay`). The wire formats live in :mod:`pipeline.live.taps`, free of
any networking, so every parser can be fuzzed on plain bytes.
"""
