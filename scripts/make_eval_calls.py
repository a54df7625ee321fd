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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = CallBuildOptions(
        source_manifest=args.source, out=args.out, seed=args.seed, agent_channel=args.agent_channel,
        neutral_turns=args.neutral_turns, angry_turns=args.angry_turns,
        clips_per_angry_turn=args.clips_per_angry_turn, calm_turns=args.calm_turns, calm_emotions=tuple(e.strip() for e in args.calm_emotions.split(",") if e.strip()),
        telephone=not args.no_telephone)
    try:
        manifest = build_calls(options, progress=print)
    except PipelineError as exc:
        print(f"make_eval_calls: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
