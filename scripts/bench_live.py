#!/usr/bin/env python
"""Benchmark the live service on this machine; prints figures (no pass/fail).

  1. alert latency: each sample with an annotated ``agitation_onset_s`` is streamed in real time through
     the audio-fork tap; latency = arrival of its supervisor_takeover alert on the live feed minus the
     moment the onset's audio was sent (median and p90 over the samples; also split into detection
     delay in call time, raised_at_s - onset, and delivery delay, arrival - raised_at_s's audio sent);
  2. concurrent calls in real time, ASR off and on: N calls stream the sample at once (N = 1, 2, 4, ...);
     N is sustained when every call's backlog stays under --max-lag-s and each result arrives within
     --max-lag-s of its audio ending;
  3. memory per call: resident memory growth while N calls are live, divided by N.

    python scripts/bench_live.py                       # everything (takes several minutes)
    python scripts/bench_live.py --skip-latency --calls-seconds 20 --max-calls 16
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.live.options import LiveOptions  # noqa: E402
from pipeline.live.replay import ReplayCall, feed_events, replay  # noqa: E402
from pipeline.live.server import LiveService  # noqa: E402
from pipeline.outputs.store import Store  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def options(**changes) -> LiveOptions:
    return LiveOptions(port=0, sip_enabled=False, audiosocket_enabled=False, token=TOKEN, database=":memory:",
                       **changes)


async def feed_reader(http_url: str, on_event) -> None:
    async for kind, event in feed_events(f"{http_url}/api/feed", token=TOKEN):
        on_event(kind, event, time.monotonic())


async def latency(engine: Engine, samples: list[Path]) -> list[dict]:
    rows = []
    service = LiveService(engine=engine, store=Store.open(":memory:"), options=options())
    bound = await service.start()
    alerts: dict[str, tuple[dict, float]] = {}
    reader = asyncio.create_task(feed_reader(bound.http, lambda k, e, t: k == "alert" and e["state"] == "raised"
                                             and e["action"] == "supervisor_takeover"
                                             and alerts.setdefault(e["call_id"], (e, t))))
    try:
        for wav in samples:
            notes = json.loads(wav.with_suffix(".json").read_text())
            call = ReplayCall.from_file(str(wav), agent_channel=notes.get("agent_channel", 0),
                                        call_id=f"lat-{wav.stem}", agent_id="bench")
            t0 = time.monotonic()
            await replay(call, fmt="audio-fork", to=f"{bound.ws}/tap/audio-fork", token=TOKEN, speed=1.0)
            await asyncio.sleep(2.0)
            onset = notes["agitation_onset_s"]
            got = alerts.get(call.call_id)
            if got is None:
                rows.append({"sample": wav.name, "onset_s": onset, "alert": None})
                print(f"  {wav.name}: no supervisor_takeover alert", flush=True)
                continue
            alert, t_arrival = got
            wall_s = t_arrival - t0
            rows.append({"sample": wav.name, "onset_s": onset, "raised_at_s": alert["raised_at_s"],
                         "latency_s": round(wall_s - onset, 2),
                         "detection_s": round(alert["raised_at_s"] - onset, 2),
                         "delivery_s": round(wall_s - alert["raised_at_s"], 2)})
            print(f"  {wav.name}: {rows[-1]}", flush=True)
    finally:
        reader.cancel()
        await service.stop(drain_s=30)
    return rows


async def concurrent(engine: Engine, wav: Path, *, n_calls: int, seconds: float, max_lag_s: float,
                     workers: int) -> dict:
    service = LiveService(engine=engine, store=Store.open(":memory:"),
                          options=options(workers=workers, max_backlog_s=600.0))
    bound = await service.start()
    base = ReplayCall.from_file(str(wav), agent_channel=0, call_id="x", agent_id=None)
    n = int(seconds * base.sample_rate_hz)
    rss0 = rss_mb()
    calls = [ReplayCall(f"cc-{i}", f"agent-{i}", base.agent[:n], base.caller[:n], base.sample_rate_hz)
             for i in range(n_calls)]
    worst_backlog = 0.0
    rss_peak = rss0
    done = asyncio.Event()

    async def watch():
        nonlocal worst_backlog, rss_peak
        while not done.is_set():
            for call in list(service.calls.live.values()):
                worst_backlog = max(worst_backlog, call.pending_samples / call.sample_rate_hz)
            rss_peak = max(rss_peak, rss_mb())
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    await asyncio.gather(*(replay(c, fmt="audio-fork", to=f"{bound.ws}/tap/audio-fork", token=TOKEN, speed=1.0)
                           for c in calls))
    sent = time.monotonic()
    deadline = sent + max(60.0, 4 * seconds)
    while service.calls.live and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    end_lag = time.monotonic() - sent
    done.set()
    await watcher
    finished = sum(1 for c in service.calls.recent if c.result is not None)
    # Where the time goes: engine seconds per second of call audio, by stage (summed over the calls).
    stages: dict[str, float] = {}
    for c in service.calls.recent:
        for stage, spent in getattr(c.session, "stage_seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + spent
    audio_total = seconds * max(1, len(service.calls.recent))
    await service.stop(drain_s=10)
    return {"calls": n_calls, "audio_s": seconds, "send_s": round(sent - t0, 1),
            "worst_backlog_s": round(worst_backlog, 2), "end_lag_s": round(end_lag, 2),
            "finished": finished, "sustained": finished == n_calls and worst_backlog <= max_lag_s
            and end_lag <= max_lag_s, "rss_growth_mb": round(rss_peak - rss0, 1),
            "engine_s_per_audio_s": {k: round(v / audio_total, 3) for k, v in stages.items() if v > 0}}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default=str(REPO / "samples"))
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--asr", choices=("off", "on", "both"), default="both")
    parser.add_argument("--asr-model", default="tiny.en", help="ASR model for the ASR-on runs")
    parser.add_argument("--calls-seconds", type=float, default=30.0, help="audio per call in the concurrency runs")
    parser.add_argument("--max-calls", type=int, default=32)
    parser.add_argument("--start-calls", type=int, default=1, help="first N tried (then doubled)")
    parser.add_argument("--max-lag-s", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    samples = sorted(p for p in Path(args.samples).glob("*.wav")
                     if p.with_suffix(".json").exists()
                     and json.loads(p.with_suffix(".json").read_text()).get("agitation_onset_s") is not None)
    print(f"machine: {len(__import__('os').sched_getaffinity(0))} CPU(s) available; samples with onsets: "
          f"{[p.name for p in samples]}", flush=True)
    report: dict = {}
    if not args.skip_latency and samples:
        engine = Engine.load(load_config(overrides={"asr": {"enabled": False}}))
        print("alert latency (ASR off, real time, audio-fork):", flush=True)
        rows = await latency(engine, samples)
        lat = [r["latency_s"] for r in rows if r.get("latency_s") is not None]
        if lat:
            q = statistics.quantiles(lat, n=10) if len(lat) > 1 else [lat[0]] * 9
            print(f"  median {statistics.median(lat):.2f} s, p90 {q[8]:.2f} s over {len(lat)} sample(s)", flush=True)
        report["latency"] = rows
    if not args.skip_concurrency:
        wav = samples[0] if samples else next(Path(args.samples).glob("*.wav"))
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.asr]
        for asr_on in modes:
            overrides = {"asr": {"enabled": asr_on, **({"model": args.asr_model} if asr_on else {})}}
            engine = Engine.load(load_config(overrides=overrides))
            label = f"ASR {'on (' + args.asr_model + ')' if asr_on else 'off'}"
            print(f"concurrent real-time calls, {label}, {args.calls_seconds:.0f} s each:", flush=True)
            n, best, rows = args.start_calls, 0, []
            while n <= args.max_calls:
                row = await concurrent(engine, wav, n_calls=n, seconds=args.calls_seconds, max_lag_s=args.max_lag_s,
                                       workers=args.workers)
                row["rss_per_call_mb"] = round(row["rss_growth_mb"] / n, 1)
                rows.append(row)
                print(f"  {row}", flush=True)
                if not row["sustained"]:
                    break
                best = n
                n *= 2
            print(f"  => {best} concurrent call(s) sustained in real time with {label}", flush=True)
            report[label] = {"sustained": best, "runs": rows}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
