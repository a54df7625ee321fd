"""The command line: batch and live accept the same engine options (one engine, one config)."""
from __future__ import annotations

from pipeline.cli import build_parser

ENGINE_OPTIONS = {"--config", "--agent-channel", "--language", "--asr-model", "--no-asr"}


def _options(parser, command):
    sub = next(a for a in parser._actions if a.dest == "command")
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


def test_batch_and_live_entry_points_accept_the_same_engine_options():
    parser = build_parser()
    for command in ("analyze", "serve"):
        missing = ENGINE_OPTIONS - _options(parser, command)
        assert not missing, f"`callpulse {command}` lacks {sorted(missing)}"


def test_every_use_is_a_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"analyze", "serve", "replay", "evaluate"} <= set(sub.choices)
