"""Operations: /metrics is valid Prometheus text (parsed with prometheus_client's own parser) and counts
what happened; /api/ready says whether this worker should take calls; JSON logs are one object a line.
The service runs on loopback with the scripted fake engine (tests/live/live_fakes.py)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from pipeline.live.replay import ReplayCall, replay, wait_for_result
from pipeline.live.taps.audio_fork import SUBPROTOCOL

from live_fakes import TOKEN, live_options, loud_call, run_live

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


async def scrape(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from one scrape, through the client library's parser."""
    resp = await http.get(f"{base}/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_calls_alerts_retries_and_malformed_frames(tmp_path):
    dead = "http://127.0.0.1:9/hook"  # discard port: nothing answers, every attempt fails and is retried
    options = live_options(webhook_urls=(dead,), webhook_backoff_initial_s=0.05, webhook_backoff_max_s=0.2,
                           webhook_timeout_s=1.0)

    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession(headers=AUTH) as http:
            before = await scrape(http, b.http)
            # a call held open: live, with its backlog gauge present
            ws = await http.ws_connect(f"{b.ws}/tap/audio-fork?token={TOKEN}", protocols=(SUBPROTOCOL,))
            await ws.send_str(json.dumps({"callId": "held", "agentId": "a1"}))
            await ws.send_bytes(np.zeros(160, np.int16).tobytes())
            await ws.send_bytes(b"\x01")  # odd length: not L16, dropped and counted on the call
            await asyncio.sleep(0.5)
            during = await scrape(http, b.http)
            await ws.close()
            # a call that raises a takeover alert (the webhook for it cannot be delivered)
            agent, caller = loud_call(6)
            await replay(ReplayCall("loud", "a17", agent, caller, 8000), fmt="audio-fork",
                         to=f"{b.ws}/tap/audio-fork", token=TOKEN, speed=0)
            await wait_for_result(b.http, "loud", token=TOKEN, timeout_s=20)
            for _ in range(50):
                after = await scrape(http, b.http)
                if after[("callpulse_webhook_retries_total", ())] >= 2:
                    break
                await asyncio.sleep(0.1)
            twilio = await http.ws_connect(f"{b.ws}/tap/twilio?token={TOKEN}")
            await twilio.send_str("{ not json")
            await asyncio.sleep(0.3)
            await twilio.close()
            final = await scrape(http, b.http)
            async with aiohttp.ClientSession() as anon:
                status = (await anon.get(f"{b.http}/metrics")).status
        return before, during, after, final, status

    before, during, after, final, status = run_live(scenario, options=options)
    assert status == 401, "metrics are behind the token like the rest of the API"
    assert before[("callpulse_live_calls", ())] == 0
    assert before[("callpulse_alerts_raised_total", (("kind", "caller_agitation"),))] == 0
    assert during[("callpulse_live_calls", ())] == 1
    assert during[("callpulse_malformed_frames_total", (("where", "call"),))] == 1
    assert ("callpulse_audio_backlog_seconds", ()) in during and ("callpulse_asr_queue_depth", ()) in during
    assert after[("callpulse_live_calls", ())] == 0
    assert after[("callpulse_calls_ended_total", ())] == 2
    assert after[("callpulse_alerts_raised_total", (("kind", "caller_agitation"),))] == 1
    assert after[("callpulse_webhook_retries_total", ())] >= 2
    assert after[("callpulse_webhooks_delivered_total", ())] == 0
    assert after[("callpulse_webhook_outbox_pending", ())] == 1
    # the held call's malformed frame still counts after it ended (a counter never goes down)
    assert after[("callpulse_malformed_frames_total", (("where", "call"),))] == 1
    malformed_twilio = (final[("callpulse_malformed_frames_total", (("where", "call"),))]
                        + final[("callpulse_malformed_frames_total", (("where", "outside_call"),))])
    assert malformed_twilio == 2


def test_ready_is_503_with_the_reason_when_the_worker_is_full():
    async def scenario(r):
        b = r.bound
        async with aiohttp.ClientSession(headers=AUTH) as http:
            first = await http.get(f"{b.http}/api/ready")
            ready = (first.status, await first.json())
            ws = await http.ws_connect(f"{b.ws}/tap/audio-fork?token={TOKEN}", protocols=(SUBPROTOCOL,))
            await ws.send_str(json.dumps({"callId": "only"}))
            await asyncio.sleep(0.3)
            full = await http.get(f"{b.http}/api/ready")
            busy = (full.status, await full.json())
            health = (await http.get(f"{b.http}/api/health")).status
            await ws.close()
        return ready, busy, health

    ready, busy, health = run_live(scenario, options=live_options(max_calls=1))
    assert ready == (200, {"ready": True, "reasons": [], "live_calls": 0, "max_calls": 1})
    assert busy[0] == 503 and busy[1]["ready"] is False
    assert any("max_calls" in reason for reason in busy[1]["reasons"])
    assert health == 200, "a full worker is healthy, only not ready"


def test_json_logs_are_one_object_per_line_and_masked(tmp_path):
    code = (
        "import logging, sys\n"
        "from pipeline.cli import setup_logging\n"
        "setup_logging(verbose=1, log_format='json')\n"
        "logging.getLogger('pipeline.test').warning('card 4111 1111 1111 1111 for %s', 'c9', extra={'call_id': 'c9'})\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('pipeline.test').exception('boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    first, second = lines
    assert first["level"] == "WARNING" and first["logger"] == "pipeline.test" and first["call_id"] == "c9"
    assert "4111 1111 1111 1111" not in first["message"] and first["message"].endswith("for c9")
    assert first["time"].endswith("Z") or "+00:00" in first["time"]
    assert second["message"] == "boom" and "ZeroDivisionError" in second["exc"]
