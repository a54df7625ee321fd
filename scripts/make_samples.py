#!/usr/bin/env python
"""Make the sample calls in samples/ (deterministic; needs espeak-ng). Logic: pipeline/devtools/samples_gen.py.

    python scripts/make_samples.py                 # all three, into samples/
    python scripts/make_samples.py --only calm_en --out /tmp/s
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.devtools.samples_gen import DEFAULT_SEED, SCRIPTS, write_all  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="output folder (default samples/)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for gaps and line noise")
    parser.add_argument("--only", action="append", choices=[s.name for s in SCRIPTS], help="make only this call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for path in write_all(args.out, seed=args.seed, names=args.only):
            print(path)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
