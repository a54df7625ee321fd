"""The whole trained scorer, one thread, on bench_text.py's 12 short turns: one scorer per model folder, all
in one process, interleaved (150 rounds; each model keeps evicting the others from the cache, so absolute
figures are pessimistic, ratios are the point).

    python docs/experiments/text-2026-12-02/minilm_depth_scorer_time.py DIR6 DIR4 DIR3 DIR2

DIRn: a copy of models/text with `scripts/export_minilm.py --out DIRn --layers n` and
`scripts/train_text.py --languages en --out DIRn` run in it (round 5 of models/text/README.md)."""
import os, sys, time, statistics
os.environ["OMP_NUM_THREADS"]="1"
REPO = __import__("pathlib").Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
from bench_text import SHORT
from pipeline.text import TextOptions, TextScorer
S = {d: TextScorer.load(TextOptions(backend="trained", lexicon_dir=d)) for d in sys.argv[1:]}
en = [t for t in SHORT if t[1] == "en"]
res = {L: {t: [] for t, _ in SHORT} for L in S}
for r in range(150):
    for L, s in S.items():
        for t, lang in SHORT:
            c0 = time.thread_time(); s.score(t, language=lang); res[L][t].append((time.thread_time() - c0) * 1000)
for L in S:
    runs = [statistics.median(res[L][t]) for t, _ in SHORT]
    minilm = [statistics.median(res[L][t]) for t in ("this is the third time ive called", "I want to speak to your manager", "thank you so much that was really helpful")]
    allv = [x for t, _ in SHORT for x in res[L][t]]
    print(f"{L}: MiniLM turns median {statistics.median([x for t in ('this is the third time ive called', 'I want to speak to your manager', 'thank you so much that was really helpful') for x in res[L][t]]):.2f} ms (per turn {', '.join(f'{m:.2f}' for m in minilm)}); all 12 kinds median {statistics.median(allv):.2f} p95 {sorted(allv)[int(.95*len(allv))]:.2f} mean {statistics.fmean(allv):.2f}")
