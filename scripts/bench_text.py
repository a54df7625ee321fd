"""Cost per turn of the text scorer (ms), one thread, for each backend that ships without a download.

    python scripts/bench_text.py [--backends trained,lexicon] [--repeat 200]

Turns: typical short call-centre turns in Mandarin, English and mixed (what a live call sends), the English
ones alone (the trained backend runs MiniLM on every turn with Latin words), plus one 500-character and one
10,000-character turn (the worst case a transcript window can produce). Prints the median and 95th
percentile per turn kind, in wall time and in the scoring thread's CPU time (``time.thread_time``: what
one core spends, less sensitive to other jobs on a shared machine than wall time); run it on an idle core
for wall figures worth quoting (with `nice` on a shared machine they are upper bounds). Nothing is
asserted: speed is measured, not tested.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.text import TextOptions, TextScorer  # noqa: E402

SHORT = [
    ("请问您的卡号是多少", "zh"), ("我已经打了三次电话了还是没解决", "zh"), ("你们这什么破服务我要投诉", "zh"),
    ("好的谢谢", "zh"), ("嗯", "zh"), ("what is my balance", "en"), ("this is the third time ive called", "en"),
    ("I want to speak to your manager", "en"), ("thank you so much that was really helpful", "en"), ("ok", "en"),
    ("我的 credit card 又被 decline 了", "zh"), ("the app 一直闪退", "en"),
]
LONG = ("我的卡上个月被扣了一笔年费，我打电话问了好几次，每次都说会回电话，结果一直没人联系我。 "
        "I have called three times about this fee and nobody ever calls me back. ")


def bench(scorer: TextScorer, turns, repeat: int) -> tuple[list[float], list[float]]:
    """(wall ms, thread CPU ms) per turn."""
    wall, cpu = [], []
    for _ in range(repeat):
        for text, lang in turns:
            t0, c0 = time.perf_counter(), time.thread_time()
            scorer.score(text, language=lang)
            cpu.append((time.thread_time() - c0) * 1000.0)
            wall.append((time.perf_counter() - t0) * 1000.0)
    return wall, cpu


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="trained,lexicon")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    kinds = {
        "short turns (12 kinds)": (SHORT, args.repeat),
        "short English turns (5)": ([t for t in SHORT if t[1] == "en"], args.repeat),
        "500-character turn": ([((LONG * 10)[:500], "auto")], max(5, args.repeat // 4)),
        "10,000-character turn": ([((LONG * 100)[:10_000], "auto")], max(3, args.repeat // 20)),
    }
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        scorer = TextScorer.load(TextOptions(backend=backend))
        print(f"backend={backend}: load {1000 * (time.perf_counter() - t0):.0f} ms")
        for name, (turns, repeat) in kinds.items():
            wall, cpu = bench(scorer, turns, repeat)
            print(f"  {name:24s} median {statistics.median(wall):7.3f} ms  p95 {_p95(wall):7.3f} ms  "
                  f"mean {statistics.fmean(wall):7.3f} ms  | CPU median {statistics.median(cpu):7.3f} ms  "
                  f"p95 {_p95(cpu):7.3f} ms  ({len(wall)} turns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
