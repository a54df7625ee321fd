"""The ``callpulse`` command: analyze (batch), serve / replay (live), evaluate."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PipelineError

log = logging.getLogger("pipeline.cli")

# Subcommand groups owned by other modules; each exposes register(subparsers).
_PLUGINS = ("pipeline.batch", "pipeline.live.cli", "pipeline.evaluate.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpulse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name is not None and exc.name.startswith("pipeline"):
                continue  # that part of the product is not in this build
            raise
        module.register(sub)
    return parser


def _mask_logs() -> None:
    """Transcripts carry card, ID and phone numbers: every log handler masks them."""
    from .masking import MaskingOptions, install_log_masking

    install_log_masking(MaskingOptions())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _mask_logs()
    try:
        return int(args.func(args) or 0)
    except PipelineError as exc:
        print(f"callpulse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("callpulse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
