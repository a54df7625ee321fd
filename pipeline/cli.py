"""The ``callpulse`` command: analyze (batch), serve / replay (live), evaluate, train."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from datetime import datetime, timezone

from .errors import PipelineError

log = logging.getLogger("pipeline.cli")

# Subcommand groups owned by other modules; each exposes register(subparsers).
_PLUGINS = ("pipeline.analyze_cli", "pipeline.live.cli", "pipeline.evaluate.cli", "pipeline.training.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpulse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default) or one JSON object per line (log collectors)")
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


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, call_id when the record has one,
    and exc (the traceback) for exceptions. Masking runs before it (a handler filter)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(*, verbose: int = 0, log_format: str = "text") -> None:
    """Root logging for the command line: level from -v, text or JSON lines, transcripts masked."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
    _mask_logs()


def _mask_logs() -> None:
    """Transcripts carry card, ID and phone numbers: every log handler masks them."""
    from .masking import MaskingOptions, install_log_masking

    install_log_masking(MaskingOptions())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, log_format=args.log_format)
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
