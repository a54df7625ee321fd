"""`callpulse analyze`: recorded calls in, per-call results and a readable report out.

Batch is the live path replayed as fast as possible: each file is streamed block by block through a
``CallSession`` exactly as a tap would stream it. A bad file fails that file, never the batch.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .audio import SUPPORTED_SUFFIXES, iter_blocks, probe
from .config import Config, load_config
from .errors import ConfigError, PipelineError

log = logging.getLogger("pipeline.batch")

BLOCK_S = 2.0


@dataclass(frozen=True)
class OutputOptions:
    """[output] options."""

    write_json: bool = True
    write_report: bool = True
    write_summary: bool = True
    database: str = "results.sqlite"


@dataclass(frozen=True)
class CallInput:
    """One recording to analyse and what is known about it."""

    path: Path
    call_id: str
    agent_id: str | None = None
    started_at: str | None = None
    agent_channel: int | None = None


def analyze_file(path: str | Path, *, engine, config: Config | None = None, agent_channel: int | None = None,
                 agent_id: str | None = None, language: str | None = None, call_id: str | None = None,
                 started_at: str | None = None, block_s: float = BLOCK_S) -> dict:
    """Analyse one recording through the live code path; returns the per-call JSON.

    Raises AudioFormatError for files that cannot be used (the caller decides whether that ends a batch).
    """
    from .engine import CallInfo, CallEnded

    config = config if config is not None else engine.config
    path = Path(path)
    info = probe(path, config.audio)
    if agent_channel is None:
        agent_channel = config.audio.agent_channel
    call = CallInfo(call_id=call_id or _call_id(path), sample_rate_hz=info.sample_rate_hz,
                    n_channels=info.n_channels, agent_channel=agent_channel if info.n_channels == 2 else None,
                    agent_id=agent_id, source=str(path), started_at=started_at,
                    language=None if language in (None, "auto") else language)
    session = engine.open_call(call)
    t0 = time.perf_counter()
    for block in iter_blocks(path, block_s=block_s, options=config.audio):
        session.feed(block)
    result = None
    for event in session.finish():
        if isinstance(event, CallEnded):
            result = dict(event.result)
    elapsed = time.perf_counter() - t0
    result["summary"]["processing_s"] = round(elapsed, 3)
    result["summary"]["stage_s"] = {k: round(v, 3) for k, v in session.stage_seconds.items()}
    return result


def _call_id(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "call"


def collect_inputs(paths: Sequence[str | Path]) -> list[CallInput]:
    """Files as given, folders searched recursively for supported audio; ids made unique."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in SUPPORTED_SUFFIXES and q.is_file()))
        else:
            found.append(p)  # missing/unreadable files fail individually, with their reason
    return _unique([CallInput(p, _call_id(p)) for p in found])


def read_manifest(path: str | Path) -> list[CallInput]:
    """CSV with columns path, agent_id, started_at (+ optional agent_channel, call_id); paths relative to it.

    Rows are ordered by (agent_id, started_at) so each agent's shift is replayed in time order.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise ConfigError(f"manifest {path} does not exist") from exc
    if not rows or "path" not in rows[0]:
        raise ConfigError(f"manifest {path} needs a header with at least a 'path' column "
                          f"(path, agent_id, started_at)")
    inputs = []
    for n, row in enumerate(rows, start=2):
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = path.parent / audio
        channel = row.get("agent_channel") or None
        try:
            channel = int(channel) if channel is not None else None
        except ValueError as exc:
            raise ConfigError(f"manifest {path} line {n}: agent_channel {channel!r} is not 0 or 1") from exc
        inputs.append(CallInput(audio, row.get("call_id") or _call_id(audio), row.get("agent_id") or None,
                                row.get("started_at") or None, channel))
    inputs.sort(key=lambda c: (c.agent_id or "", c.started_at or ""))
    return _unique(inputs)


def _unique(inputs: list[CallInput]) -> list[CallInput]:
    seen: dict[str, int] = {}
    out = []
    for c in inputs:
        n = seen.get(c.call_id, 0)
        seen[c.call_id] = n + 1
        out.append(c if n == 0 else CallInput(c.path, f"{c.call_id}-{n + 1}", c.agent_id, c.started_at,
                                              c.agent_channel))
    return out


def analyze_paths(inputs: Sequence[CallInput], *, out_dir: Path, config: Config, engine=None,
                  agent_channel: int | None = None, language: str | None = None,
                  progress: bool | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Analyse many calls, writing outputs as each finishes. Returns (results, failures)."""
    from .engine import Engine
    from .report import write_batch_report, write_call_report, write_summary_csv
    from .store import Store

    out_dir.mkdir(parents=True, exist_ok=True)
    opts: OutputOptions = config.output
    store = Store.open(out_dir / opts.database) if opts.database else None
    try:
        engine = engine or Engine.load(config, store=store)
        results: list[dict] = []
        failures: list[tuple[str, str]] = []
        bar = _progress(len(inputs), progress)
        audio_s = 0.0
        t0 = time.perf_counter()
        for item in inputs:
            try:
                result = analyze_file(item.path, engine=engine, config=config,
                                      agent_channel=item.agent_channel if item.agent_channel is not None else agent_channel,
                                      agent_id=item.agent_id, language=language, call_id=item.call_id,
                                      started_at=item.started_at)
            except PipelineError as exc:
                failures.append((str(item.path), str(exc)))
                log.error("%s", exc)
            except (OSError, ValueError, RuntimeError, MemoryError) as exc:
                # unexpected decoder trouble still fails only this file, with the reason kept
                failures.append((str(item.path), f"{type(exc).__name__}: {exc}"))
                log.exception("%s failed", item.path)
            else:
                results.append(result)
                audio_s += result["duration_s"]
                if opts.write_json:
                    (out_dir / f"{item.call_id}.json").write_text(
                        json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
                if opts.write_report:
                    write_call_report(result, out_dir / f"{item.call_id}.html")
                if store is not None:
                    store.save_call(result)
            finally:
                if bar is not None:
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix_str(f"audio {audio_s / 3600:.2f} h, {audio_s / max(elapsed, 1e-9):.1f}x real time")
                    bar.update(1)
        if bar is not None:
            bar.close()
        if opts.write_summary:
            write_summary_csv(results, out_dir / "summary.csv")
        if opts.write_report:
            write_batch_report(results, failures, out_dir / "index.html")
        return results, failures
    finally:
        if store is not None:
            store.close()


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="call", file=sys.stderr)


# --- CLI -----------------------------------------------------------------------------------------

def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `analyze` and the live `serve`/`replay` commands (one engine, one config)."""
    parser.add_argument("--config", help="TOML file overriding pipeline/callpulse.toml")
    parser.add_argument("--agent-channel", type=int, choices=(0, 1), default=None,
                        help="which stereo channel is the agent (default from config: [audio] agent_channel)")
    parser.add_argument("--language", default="auto",
                        help="'auto' (detect among [asr] languages) or a language code such as zh / en")
    parser.add_argument("--asr-model", default=None, help="override [asr] model: base, tiny.en or a folder")
    parser.add_argument("--no-asr", action="store_true", help="acoustic analysis only (no transcripts)")


def config_from_args(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "asr_model", None):
        config = config.replace("asr", model=args.asr_model)
    if getattr(args, "no_asr", False):
        config = config.replace("asr", enabled=False)
    return config


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyse recorded calls (files, folders or a shift manifest)",
                       description="Analyse recorded calls: per-call JSON, summary.csv, HTML report, SQLite.")
    p.add_argument("paths", nargs="*", help="audio files or folders (WAV, FLAC, OGG, MP3)")
    p.add_argument("--manifest", help="CSV: path, agent_id, started_at (one or more agents' shifts)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--agent-id", default=None, help="agent id for all given files (one agent's shift)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    add_common_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.manifest:
        inputs = read_manifest(args.manifest)
    elif args.paths:
        inputs = collect_inputs(args.paths)
        if args.agent_id:
            inputs = [CallInput(c.path, c.call_id, args.agent_id, c.started_at, c.agent_channel) for c in inputs]
    else:
        raise ConfigError("give audio files/folders or --manifest")
    if not inputs:
        raise ConfigError("no audio files found in " + " ".join(args.paths))
    out_dir = Path(args.out)
    results, failures = analyze_paths(inputs, out_dir=out_dir, config=config, agent_channel=args.agent_channel,
                                      language=args.language, progress=args.progress)
    _print_summary(results, failures, out_dir)
    return 1 if failures else 0


def _print_summary(results: Iterable[dict], failures: Sequence[tuple[str, str]], out_dir: Path) -> None:
    for r in results:
        s = r["summary"]
        line = (f"{r['call_id']}: {r['duration_s']:.1f} s, languages {','.join(r['languages']) or '-'}, "
                f"peak agitation {s['peak_agitation']:.2f}, {len(r['alerts'])} alert(s), "
                f"processed in {s.get('processing_s', 0):.1f} s")
        print(line)
        for a in r["alerts"]:
            print(f"  ALERT {a['action']}: {a['kind']} raised at {a['raised_at_s']:.1f} s "
                  f"(onset {a['onset_s']:.1f} s, level {a['level']:.2f})")
            for reason in a["reasons"][:3]:
                print(f"      - {reason}")
    for path, reason in failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    print(f"results in {out_dir}/ (index.html, summary.csv, per-call JSON, {out_dir}/results.sqlite)")
