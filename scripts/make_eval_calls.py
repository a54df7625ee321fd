#!/usr/bin/env python
"""Build annotated stereo evaluation calls from EmoDB clips and write the alerts manifest.

    python scripts/make_eval_calls.py                       # -> eval/calls/ (git-ignored)
    callpulse evaluate alerts --manifest eval/calls/calls.csv --out eval/alerts/

The design (who calls whom, turn order, gaps, telephone variants) is documented in
pipeline/evaluate/calls.py and docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.evaluate.calls import CallBuildOptions, build_calls  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    defaults = CallBuildOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="", help="labelled clip manifest (default: $CALLPULSE_DATA/emodb/manifest.csv)")
    p.add_argument("--out", default="", help="output folder (default: eval/calls/)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--agent-channel", type=int, choices=(0, 1), default=defaults.agent_channel)
    p.add_argument("--neutral-turns", type=int, default=defaults.neutral_turns,
                   help="caller neutral turns before the escalation")
    p.add_argument("--angry-turns", type=int, default=defaults.angry_turns)
    p.add_argument("--clips-per-angry-turn", type=int, default=defaults.clips_per_angry_turn)
    p.add_argument("--calm-turns", type=int, default=defaults.calm_turns, help="caller turns of a calm call")
    p.add_argument("--calm-emotions", default=",".join(defaults.calm_emotions),
                   help="comma-separated emotions of calm callers' turns, cycled (e.g. neutral,happy)")
    p.add_argument("--no-telephone", action="store_true", help="skip the 8 kHz mu-law telephone variants")
    p.add_argument("--corpus", default="", help="only the source rows of this corpus (manifest column 'corpus')")
    p.add_argument("--every-kind", action="store_true",
                   help="each speaker calls once per kind (escalating, calm, lively-calm with happy turns)")
    p.add_argument("--all-corpora", action="store_true",
                   help="build every-kind calls of EmoDB, nEMO, emotiontts-ko and URDU into OUT/<corpus>/ and "
                   "one OUT/calls.csv over all of them (the LOCO fusion set; see docs/evaluation.md)")
    args = p.parse_args(argv)
    if args.all_corpora:
        return _all_corpora(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = CallBuildOptions(
        source_manifest=args.source, out=args.out, seed=args.seed, agent_channel=args.agent_channel,
        neutral_turns=args.neutral_turns, angry_turns=args.angry_turns,
        clips_per_angry_turn=args.clips_per_angry_turn, calm_turns=args.calm_turns, calm_emotions=tuple(e.strip() for e in args.calm_emotions.split(",") if e.strip()),
        telephone=not args.no_telephone, corpus=args.corpus, every_kind=args.every_kind)
    try:
        manifest = build_calls(options, progress=print)
    except PipelineError as exc:
        print(f"make_eval_calls: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}")
    return 0


def _all_corpora(args) -> int:
    import csv

    from pipeline.evaluate.calls import MANIFEST_COLUMNS, MANIFEST_NAME
    from pipeline.evaluate.manifests import default_data_dir, repo_root

    data = default_data_dir()
    out = Path(args.out) if args.out else repo_root() / "eval" / "calls-loco"
    sources = [("EmoDB", str(data / "emodb" / "manifest.csv"), "")] + [
        (c, str(data / "emotion-multi" / "manifest.csv"), c) for c in ("nEMO", "emotiontts-ko", "URDU")]
    rows = []
    for name, source, corpus in sources:
        options = CallBuildOptions(source_manifest=source, out=str(out / name), seed=args.seed, corpus=corpus,
                                   every_kind=True, telephone=not args.no_telephone)
        try:
            manifest = build_calls(options, progress=print)
        except PipelineError as exc:
            print(f"make_eval_calls: {name}: skipped: {exc}", file=sys.stderr)
            continue
        with open(manifest, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows.append({**r, "path": f"{name}/{r['path']}", "corpus": name,
                             "call_id": f"{name}-{Path(r['path']).stem}"})
    with open(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / MANIFEST_NAME} ({len(rows)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
