"""Prometheus metrics of the live service (``GET /metrics``), with the standard ``prometheus-client``.

Read at scrape time from the service's own state (live calls, backlogs, the ASR queue, the outbox), so
nothing on the audio path pays for metrics; the few events that leave no state behind (an alert raised,
a call ended with its malformed frames and dropped audio) are counted by two hooks the server calls.
Each service has its own registry: two services in one process (tests) never share counters.

| metric | type | what |
|---|---|---|
| ``callpulse_live_calls`` | gauge | calls being received now |
| ``callpulse_audio_backlog_seconds`` | gauge | audio received but not yet analysed, summed over live calls |
| ``callpulse_audio_backlog_max_seconds`` | gauge | the most behind live call |
| ``callpulse_asr_queue_depth`` | gauge | transcription windows waiting or running (deferred ASR) |
| ``callpulse_asr_queued`` | gauge | windows waiting for the shared ASR (not yet handed to the model) |
| ``callpulse_asr_queued_final`` | gauge | of those, final windows (the rest are interim previews) |
| ``callpulse_asr_windows_total``, ``callpulse_asr_batches_total`` | counter | windows transcribed, model calls |
| ``callpulse_asr_interim_skipped_total`` | counter | previews skipped because the ASR was behind |
| ``callpulse_asr_busy_seconds_total`` | counter | seconds the ASR workers spent transcribing |
| ``callpulse_alerts_raised_total{kind}`` | counter | alerts raised (caller_agitation, agent_strain) |
| ``callpulse_alerts_cleared_total{kind}`` | counter | alerts cleared |
| ``callpulse_webhook_retries_total`` | counter | failed webhook attempts (each is retried) |
| ``callpulse_webhooks_delivered_total`` | counter | webhooks answered 2xx |
| ``callpulse_webhook_outbox_pending`` | gauge | webhooks not yet delivered |
| ``callpulse_malformed_frames_total{where}`` | counter | tap frames dropped as malformed (on a call, outside any call, SIP) |
| ``callpulse_audio_dropped_seconds_total`` | counter | audio dropped beyond ``max_backlog_s`` |
| ``callpulse_calls_ended_total`` | counter | calls finalised |
| ``callpulse_feed_subscribers`` | gauge | dashboards / SSE clients connected |
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .calls import LiveCall

log = logging.getLogger("pipeline.live.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class LiveMetrics:
    """The service's registry and its collector. ``render()`` gives the text exposition format."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._alerts: Counter[tuple[str, str]] = Counter()
        self._ended = 0
        self._ended_malformed = 0
        self._ended_dropped_s = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --- hooks (event loop) --------------------------------------------------------------------

    def alert_recorded(self, alert: dict) -> None:
        with self._lock:
            self._alerts[(str(alert.get("state", "")), str(alert.get("kind", "")))] += 1

    def call_ended(self, call: LiveCall) -> None:
        with self._lock:
            self._ended += 1
            self._ended_malformed += call.malformed
            self._ended_dropped_s += call.dropped_samples / call.sample_rate_hz

    # --- collection ----------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self):
        svc = self.service
        live = list(svc.calls.live.values())
        backlogs = [c.pending_samples / c.sample_rate_hz for c in live]
        yield _gauge("callpulse_live_calls", "Calls being received now.", len(live))
        yield _gauge("callpulse_audio_backlog_seconds", "Audio received but not yet analysed, summed over live "
                     "calls (seconds).", sum(backlogs))
        yield _gauge("callpulse_audio_backlog_max_seconds", "Audio waiting in the most behind live call (seconds).",
                     max(backlogs, default=0.0))
        yield _gauge("callpulse_asr_queue_depth", "Transcription windows waiting or running (deferred ASR).",
                     svc.calls.asr_waiting)
        pool = svc.calls.asr_pool
        if pool is not None:
            yield _gauge("callpulse_asr_queued", "Windows waiting for the shared ASR.", pool.queued)
            yield _gauge("callpulse_asr_queued_final", "Final windows waiting for the shared ASR (not previews).",
                         pool.queued_final)
            c = pool.counters
            yield CounterMetricFamily("callpulse_asr_windows", "Windows transcribed.", value=c.windows)
            yield CounterMetricFamily("callpulse_asr_batches", "Batched transcription calls (windows of several "
                                      "calls in one).", value=c.batches)
            yield CounterMetricFamily("callpulse_asr_interim_skipped", "Interim previews skipped because the ASR "
                                      "was behind.", value=c.skipped_interim)
            yield CounterMetricFamily("callpulse_asr_busy_seconds", "Seconds the ASR workers spent transcribing.",
                                      value=c.busy_s)
        with self._lock:
            alerts = dict(self._alerts)
            ended, ended_malformed, ended_dropped = self._ended, self._ended_malformed, self._ended_dropped_s
        for state, name in (("raised", "raised"), ("cleared", "cleared")):
            fam = CounterMetricFamily(f"callpulse_alerts_{name}", f"Alerts {name} by this worker.", labels=["kind"])
            for kind in sorted({"caller_agitation", "agent_strain"} | {k for s, k in alerts if s == state}):
                fam.add_metric([kind], alerts.get((state, kind), 0))
            yield fam
        sender = svc.sender
        yield CounterMetricFamily("callpulse_webhook_retries", "Failed webhook attempts (each one is retried).",
                                  value=sender.failures)
        yield CounterMetricFamily("callpulse_webhooks_delivered", "Webhooks answered with 2xx.",
                                  value=sender.delivered)
        try:
            pending = svc.alerts.outbox_counts()["pending"]
        except Exception:  # noqa: BLE001 - a failing database must not break the scrape; it is logged elsewhere
            pending = float("nan")
        yield _gauge("callpulse_webhook_outbox_pending", "Webhooks not yet delivered.", pending)
        fam = CounterMetricFamily("callpulse_malformed_frames", "Tap frames dropped as malformed.", labels=["where"])
        fam.add_metric(["call"], ended_malformed + sum(c.malformed for c in live))
        fam.add_metric(["outside_call"], getattr(svc, "malformed_outside_calls", 0))
        fam.add_metric(["sip"], getattr(getattr(svc, "sip", None), "malformed", 0))
        yield fam
        yield CounterMetricFamily("callpulse_audio_dropped_seconds", "Audio dropped beyond live.max_backlog_s "
                                  "(seconds).", value=ended_dropped + sum(c.dropped_samples / c.sample_rate_hz
                                                                          for c in live))
        yield CounterMetricFamily("callpulse_calls_ended", "Calls finalised by this worker.", value=ended)
        yield _gauge("callpulse_feed_subscribers", "Dashboards and SSE clients connected.",
                     svc.hub.n_subscribers)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
