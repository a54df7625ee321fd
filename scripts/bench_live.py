#!/usr/bin/env python
"""Benchmark the live service on this machine; prints figures (no pass/fail).

  1. alert latency: each sample with an annotated ``agitation_onset_s`` is streamed in real time through
     the audio-fork tap; latency = arrival of its supervisor_takeover alert on the live feed minus the
     moment the onset's audio was sent (median and p90 over the samples; also split into detection
     delay in call time, raised_at_s - onset, and delivery delay, arrival - raised_at_s's audio sent);
  2. concurrent calls in real time, ASR off and on: N calls stream the sample at once (N = 1, 2, 4, ...);
     N is sustained when every call's backlog stays under --max-lag-s and each result arrives within
     --max-lag-s of its audio ending;
  3. memory per call: resident memory growth while N calls are live, divided by N;
  4. with ASR on, the shared ASR batcher against one window at a time (``--asr-batch 1,8``: each N is run
     in both modes one after the other, so the two columns share the machine's load), per model
     (``--asr-model base,tiny.en``). Transcript lag: how long a final window took from becoming due to
     its text being back at the call (p90 over all windows of the run; sustained needs it under
     --max-lag-s too), and from the end of its audio (that adds the engine's packing wait, up to
     [asr] max_delay_s);
  5. ``serve`` memory: RSS after 10 and after 100 sequential short calls through one service (the same
     LiveService ``callpulse serve`` runs), and how many ended calls' sessions are still alive.

    python scripts/bench_live.py                       # everything (takes several minutes)
    python scripts/bench_live.py --skip-latency --calls-seconds 20 --max-calls 16
    python scripts/bench_live.py --skip-latency --asr on --asr-model base,tiny.en --asr-batch 1,8 --calls 2,4,8
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import weakref
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


class _TimedSession:
    """A session as the service sees it, noting when each final window's text came back (wall clock)."""

    def __init__(self, session) -> None:
        self._session = session
        self.opened = time.monotonic()
        self.windows: list[tuple[float, float, float]] = []  # (due call time, audio end call time, back at)

    def apply_asr(self, job, window, **kwargs):
        if not getattr(job, "interim", False):
            end = max((c.start_s + c.audio.size / 16000 for c in job.chunks), default=job.queued_at_s)
            self.windows.append((job.queued_at_s, end, time.monotonic() - self.opened))
        return self._session.apply_asr(job, window, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


class _BenchEngine:
    """The engine, keeping the bench's own handle on each session (timings, stage seconds)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.sessions: list[_TimedSession] = []

    def open_call(self, info, **kwargs):
        timed = _TimedSession(self._engine.open_call(info, **kwargs))
        self.sessions.append(timed)
        return timed

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    return round(sorted(values)[min(len(values) - 1, int(0.9 * len(values)))], 2)


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
                     workers: int, asr_batch: int = 8) -> dict:
    engine = _BenchEngine(engine)
    service = LiveService(engine=engine, store=Store.open(":memory:"),
                          options=options(workers=workers, max_backlog_s=600.0, asr_batch=asr_batch,
                                          # all calls come from this one address and tap: lift the quotas
                                          max_calls=max(64, n_calls), max_calls_per_source=max(32, n_calls),
                                          max_calls_per_tap=max(48, n_calls)))
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
    for timed in engine.sessions:
        for stage, spent in getattr(timed, "stage_seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + spent
    audio_total = seconds * max(1, len(engine.sessions))
    # transcript lag: from a final window being due (and from its audio's end) to its text being back
    since_due = [back - due for t in engine.sessions for due, _end, back in t.windows]
    since_audio = [back - end for t in engine.sessions for _due, end, back in t.windows]
    pool = service.calls.asr_pool
    asr = {}
    if pool is not None:
        c = pool.counters
        asr = {"asr_batch": asr_batch, "windows": c.windows, "batches": c.batches,
               "windows_per_batch": round(c.windows / max(1, c.batches), 2), "largest_batch": c.largest_batch,
               "previews_skipped": c.skipped_interim, "asr_busy_s": round(c.busy_s, 1),
               "text_lag_p90_s": _p90(since_due), "text_lag_max_s": round(max(since_due), 2) if since_due else None,
               "text_behind_audio_p90_s": _p90(since_audio)}
    await service.stop(drain_s=10)
    text_ok = pool is None or not since_due or _p90(since_due) <= max_lag_s
    return {"calls": n_calls, "audio_s": seconds, "send_s": round(sent - t0, 1),
            "worst_backlog_s": round(worst_backlog, 2), "end_lag_s": round(end_lag, 2),
            "finished": finished, "sustained": finished == n_calls and worst_backlog <= max_lag_s
            and end_lag <= max_lag_s and text_ok, "rss_growth_mb": round(rss_peak - rss0, 1), **asr,
            "engine_s_per_audio_s": {k: round(v / audio_total, 3) for k, v in stages.items() if v > 0}}


def model_batching(model: str, wav: Path, *, windows: int, repeats: int) -> dict:
    """The model alone: ``windows`` live-sized windows (the sample's caller turns, 3-6 s) transcribed one at a
    time (``transcribe_window``) and as one batch (``transcribe_windows``), alternating ``repeats`` times;
    seconds per window for each and whether the texts were identical."""
    from pipeline.asr import AsrChunk, WindowRequest
    from pipeline.audio import load_audio, resample

    engine = Engine.load(load_config(overrides={"asr": {"enabled": True, "model": model}}))
    t = engine.transcriber
    audio = load_audio(wav)
    y = resample(audio.samples[1], orig_sr=audio.sample_rate_hz, target_sr=16000)
    reqs = []
    start = 0.0
    for i in range(windows):
        dur = 3.0 + (i % 4)
        piece = y[int(start * 16000):int((start + dur) * 16000)]
        reqs.append(WindowRequest((AsrChunk("caller", start, piece),), prior={"en": 0.9, "zh": 0.1}))
        start += dur
    one, many, same = [], [], True
    for _ in range(repeats):
        t0 = time.perf_counter()
        alone = [t.transcribe_window(list(r.chunks), prior=r.prior) for r in reqs]
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = t.transcribe_windows(reqs)
        many.append(time.perf_counter() - t0)
        same &= [[e.text for e in a.events] for a in alone] == [[e.text for e in b.events] for b in batched]
    return {"model": model, "windows": windows, "one_at_a_time_s_per_window": round(min(one) / windows, 3),
            "batched_s_per_window": round(min(many) / windows, 3),
            "batched_over_one": round(min(many) / min(one), 3), "same_text": same,
            "runs_s": {"one": [round(x, 2) for x in one], "batched": [round(x, 2) for x in many]}}


async def sequential(engine: Engine, wav: Path, *, checkpoints: list[int], seconds: float, asr_batch: int) -> dict:
    """RSS of one service after each checkpoint's number of calls, run one after another as fast as the
    engine takes them (the calls are the sample's first ``seconds``), and the ended sessions still alive."""
    opened: list[weakref.ref] = []

    class _Weak:
        def open_call(self, info, **kwargs):
            session = engine.open_call(info, **kwargs)
            opened.append(weakref.ref(session))
            return session

        def __getattr__(self, name):
            return getattr(engine, name)

    service = LiveService(engine=_Weak(), store=Store.open(":memory:"), options=options(asr_batch=asr_batch))
    bound = await service.start()
    base = ReplayCall.from_file(str(wav), agent_channel=0, call_id="x", agent_id=None)
    n = int(seconds * base.sample_rate_hz)
    out = {"call_s": seconds, "rss_start_mb": round(rss_mb(), 1)}
    t0 = time.monotonic()
    try:
        for i in range(1, max(checkpoints) + 1):
            call = ReplayCall(f"seq-{i}", "agent-seq", base.agent[:n], base.caller[:n], base.sample_rate_hz)
            await replay(call, fmt="audio-fork", to=f"{bound.ws}/tap/audio-fork", token=TOKEN, speed=0)
            while service.calls.live:
                await asyncio.sleep(0.02)
            if i in checkpoints:
                gc.collect()
                out[f"rss_after_{i}_mb"] = round(rss_mb(), 1)
                out[f"sessions_alive_after_{i}"] = sum(1 for r in opened if r() is not None)
                print(f"  after {i} calls ({time.monotonic() - t0:.0f} s): RSS {out[f'rss_after_{i}_mb']} MB, "
                      f"ended sessions alive {out[f'sessions_alive_after_{i}']}", flush=True)
    finally:
        await service.stop(drain_s=10)
    first, last = min(checkpoints), max(checkpoints)
    out["growth_pct"] = round(100 * (out[f"rss_after_{last}_mb"] / out[f"rss_after_{first}_mb"] - 1), 1)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default=str(REPO / "samples"))
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--asr", choices=("off", "on", "both"), default="both")
    parser.add_argument("--asr-model", default="base", help="ASR model(s) for the ASR-on runs, comma-separated")
    parser.add_argument("--asr-batch", default="1,8", help="live.asr_batch value(s), run side by side per N "
                        "(1 = one window at a time)")
    parser.add_argument("--calls", default="", help="the N to try, comma-separated (default: doubling from "
                        "--start-calls to --max-calls, stopping at the first N not sustained)")
    parser.add_argument("--model-batch", type=int, default=8, help="windows for the model-only batching "
                        "comparison (0 = skip)")
    parser.add_argument("--sequential", default="10,100", help="RSS checkpoints for sequential calls ('' = skip)")
    parser.add_argument("--sequential-seconds", type=float, default=6.0)
    parser.add_argument("--sequential-asr", choices=("off", "on"), default="on")
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
    wav = samples[0] if samples else next(Path(args.samples).glob("*.wav"))
    models = [m for m in args.asr_model.split(",") if m]
    batches = [int(b) for b in args.asr_batch.split(",") if b]
    if not args.skip_concurrency:
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.asr]
        for asr_on in modes:
            for model in (models if asr_on else [None]):
                overrides = {"asr": {"enabled": asr_on, **({"model": model} if asr_on else {})}}
                engine = Engine.load(load_config(overrides=overrides))
                label = f"ASR {'on (' + model + ')' if asr_on else 'off'}"
                kinds = batches if asr_on else [batches[-1]]
                print(f"concurrent real-time calls, {label}, {args.calls_seconds:.0f} s each"
                      + (f", live.asr_batch {kinds} side by side" if asr_on else "") + ":", flush=True)
                ns = ([int(x) for x in args.calls.split(",")] if args.calls else None)
                n, rows = (ns[0] if ns else args.start_calls), []
                best = {b: 0 for b in kinds}
                alive = set(kinds)
                while alive and n <= (max(ns) if ns else args.max_calls):
                    for b in kinds:
                        if b not in alive:
                            continue
                        row = await concurrent(engine, wav, n_calls=n, seconds=args.calls_seconds,
                                               max_lag_s=args.max_lag_s, workers=args.workers, asr_batch=b)
                        row["rss_per_call_mb"] = round(row["rss_growth_mb"] / n, 1)
                        rows.append(row)
                        print(f"  {row}", flush=True)
                        if row["sustained"]:
                            best[b] = n
                        else:
                            alive.discard(b)  # a mode that cannot keep N calls cannot keep more
                    if ns:
                        later = [x for x in ns if x > n]
                        if not later:
                            break
                        n = later[0]
                    else:
                        n *= 2
                for b in kinds:
                    print(f"  => {best[b]} concurrent call(s) sustained in real time with {label}"
                          + (f", live.asr_batch = {b}" if asr_on else ""), flush=True)
                report[label] = {"sustained": best, "runs": rows}
    if args.model_batch:
        for model in models:
            print(f"the model alone, {args.model_batch} windows one at a time vs batched ({model}):", flush=True)
            row = model_batching(model, wav, windows=args.model_batch, repeats=3)
            print(f"  {row}", flush=True)
            report.setdefault("model_batching", []).append(row)
    checkpoints = [int(x) for x in args.sequential.split(",") if x]
    if checkpoints:
        asr_on = args.sequential_asr == "on"
        engine = Engine.load(load_config(overrides={"asr": {"enabled": asr_on,
                                                            **({"model": models[0]} if asr_on else {})}}))
        label = f"ASR {'on (' + models[0] + ')' if asr_on else 'off'}"
        print(f"serve memory, sequential {args.sequential_seconds:.0f} s calls, {label}:", flush=True)
        row = await sequential(engine, wav, checkpoints=checkpoints, seconds=args.sequential_seconds,
                               asr_batch=batches[-1])
        print(f"  {row}", flush=True)
        report["sequential"] = row
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
