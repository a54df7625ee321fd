#!/usr/bin/env python
"""Batch scaling benchmark: the same calls in one process and on local Dask clusters of N workers
(prints figures: calls per minute, x real time, per core; never asserted anywhere).

    .venv/bin/python scripts/bench_cluster.py                        # samples x2, workers 0 (one process), 1, 2
    .venv/bin/python scripts/bench_cluster.py --copies 4 --workers 1 2 --asr-model tiny.en
    .venv/bin/python scripts/bench_cluster.py --no-asr --cpu-threads 1

Worker start-up and model loading are timed apart from the analysis, so "calls/min" is the steady rate a
long batch sees; "x rt / core" divides by every core of the machine (each configuration may use all).
"audio s / cpu s" is audio analysed per CPU-second actually used (user + system, workers and client,
which here also runs the scheduler; "of it workers" is the workers' share): the per-core capacity, and
less disturbed than wall time when other work shares the machine. Each configuration writes to a fresh output folder and database (nothing is skipped).
"""
import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.batch import analyze_paths, read_manifest  # noqa: E402
from pipeline.cluster import ClusterOptions, analyze_on_cluster, start, stop  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used, all threads."""
    t = os.times()
    return t.user + t.system


def worker_cpu_s(client) -> float:
    return sum(client.run(cpu_s).values())


def manifest_of(files: list[Path], copies: int, folder: Path) -> Path:
    """Each file ``copies`` times under distinct call ids, no agent (every call independent)."""
    path = folder / "calls.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "call_id"])
        for k in range(copies):
            for f in files:
                w.writerow([str(f.resolve()), f"{f.stem}-{k}"])
    return path


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, default=sorted((root / "samples").glob("*.wav")))
    parser.add_argument("--copies", type=int, default=2, help="times each file is analysed (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="configurations: 0 = one process (no Dask), N = local cluster of N workers")
    parser.add_argument("--config", default=None)
    parser.add_argument("--asr-model", default=None)
    parser.add_argument("--no-asr", action="store_true")
    parser.add_argument("--cpu-threads", type=int, default=None, help="override [asr] cpu_threads per worker")
    args = parser.parse_args()

    config = load_config(args.config)
    if args.asr_model:
        config = config.replace("asr", model=args.asr_model)
    if args.no_asr:
        config = config.replace("asr", enabled=False)
    if args.cpu_threads:
        config = config.replace("asr", cpu_threads=args.cpu_threads)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-cluster-"))
    try:
        inputs = read_manifest(manifest_of(args.files, args.copies, work))
        print(f"{len(inputs)} calls ({args.copies} x {len(args.files)} files), {cores} CPU cores, "
              f"asr {'off' if not config.asr.enabled else config.asr.model}, cpu_threads {config.asr.cpu_threads}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
        print(f"{'workers':>8} {'start+load s':>12} {'analysis s':>10} {'audio s':>8} {'x real time':>11} "
              f"{'calls/min':>9} {'x rt / core':>11} {'cpu s':>7} {'audio s / cpu s':>15} {'of it workers':>13} {'failures':>8}")
        for n in args.workers:
            out = work / f"out-{n}"
            t0 = time.perf_counter()
            if n == 0:
                from pipeline.engine import Engine

                engine = Engine.load(config)
                t1 = time.perf_counter()
                c1 = cpu_s()
                results, failures = analyze_paths(inputs, out_dir=out, config=config, engine=engine, progress=False)
                used = cpu_s() - c1
                on_workers = used
            else:
                options = ClusterOptions(local_workers=n)
                client, cluster = start(options, config)
                t1 = time.perf_counter()
                try:
                    c1, w1 = cpu_s(), worker_cpu_s(client)
                    results, failures = analyze_on_cluster(inputs, options=options, out_dir=out, config=config,
                                                           progress=False, client=client)
                    # the workers' CPU plus this process's: it writes the outputs and, for a local cluster,
                    # also runs the scheduler
                    on_workers = worker_cpu_s(client) - w1
                    used = on_workers + cpu_s() - c1
                finally:
                    stop(client, cluster)
            t2 = time.perf_counter()
            audio_s = sum(r["duration_s"] for r in results)
            busy = t2 - t1
            print(f"{n if n else '1 proc':>8} {t1 - t0:12.1f} {busy:10.1f} {audio_s:8.1f} {audio_s / busy:11.2f} "
                  f"{60 * len(results) / busy:9.2f} {audio_s / busy / cores:11.2f} "
                  f"{used:7.1f} {audio_s / max(used, 1e-9):15.2f} {on_workers:13.1f} {len(failures):>8}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
