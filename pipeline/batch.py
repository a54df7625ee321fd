"""`callpulse analyze`: recorded calls in, per-call results and a readable report out.

Batch is the live path replayed as fast as possible: each file is streamed block by block through a
``CallSession`` exactly as a tap would stream it. A bad file fails that file, never the batch.

One process by default; ``--cluster local:N`` / ``--scheduler ADDRESS`` run the same per-call code as
tasks on a Dask cluster (``pipeline.cluster``), and both paths write their outputs through one
:class:`BatchWriter`, so they give the same per-call JSON. ``--database`` (or ``[output] database``)
is a SQLite file inside ``--out`` or a ``postgresql://`` URL.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .audio import SUPPORTED_SUFFIXES, iter_blocks, probe
from .config import Config, load_config
from .errors import ConfigError, PipelineError
from .manifest import read_manifest as read_csv_manifest

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
                 started_at: str | None = None, block_s: float = BLOCK_S, live_timing: bool = False) -> dict:
    """Analyse one recording through the live code path; returns the per-call JSON. ``live_timing``:
    pack ASR windows as live does even when ``[asr] batch_packing = "full"`` (what `evaluate alerts` uses).

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
    session = engine.open_call(call, full_windows=False) if live_timing else engine.open_call(call)
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


def fingerprint(engine) -> str:
    """What decides a call's result besides its audio: the config (all but [output]/[live]), the models
    and the callpulse version. Equal fingerprints mean a stored result need not be recomputed."""
    from . import __version__

    raw = {k: v for k, v in dict(engine.config.raw).items() if k not in ("output", "live")}
    transcriber = getattr(engine, "transcriber", None)
    basis = {"config": raw, "version": __version__, "emotion": engine.emotion_source,
             "asr": getattr(transcriber, "model_id", None), "asr_encoder": getattr(transcriber, "encoder_id", None),
             "asr_device": getattr(transcriber, "device", None)}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_fingerprint(model_print: str, *, agent_channel: int | None, language: str | None) -> str:
    """The engine's fingerprint plus this run's options that change results (channel, language)."""
    basis = f"{model_print}|channel={agent_channel}|language={language or 'auto'}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def stamp(result: dict, run_print: str) -> dict:
    """Record the run fingerprint in the result's summary (how a re-run recognises finished calls)."""
    result["summary"]["fingerprint"] = run_print
    return result


def already_done(store, item: "CallInput", run_print: str) -> dict | None:
    """The stored result of ``item`` if it was made from the same file and inputs with this fingerprint."""
    if store is None:
        return None
    stored = store.get_call(item.call_id)
    if (stored is None or (stored.get("summary") or {}).get("fingerprint") != run_print
            or stored.get("source") != str(item.path) or stored.get("agent_id") != item.agent_id
            or stored.get("started_at") != item.started_at):
        return None
    return stored


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
    # The one manifest reader checks the file and header; a missing audio file fails on its own later.
    rows = read_csv_manifest(path, required=("path",), check_files=False, path_columns=("path",), error=ConfigError,
                             hint="pass --manifest with a CSV of columns path, agent_id, started_at")
    inputs = []
    for row in rows:
        audio = row.path
        channel = row.get("agent_channel") or None
        try:
            channel = int(channel) if channel is not None else None
        except ValueError as exc:
            raise ConfigError(f"manifest {path} line {row.line}: agent_channel {channel!r} is not 0 or 1") from exc
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


class BatchWriter:
    """A batch run's outputs, written as each call finishes: per-call JSON and HTML, the store, the
    progress bar; summary.csv and index.html at the end. Shared by the single-process and cluster paths."""

    def __init__(self, out_dir: Path, config: Config, *, total: int, progress: bool | None) -> None:
        from .outputs.sink import ResultSink
        from .outputs.store_base import open_store, resolve_database

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.opts: OutputOptions = config.output
        target = resolve_database(self.opts.database, folder=out_dir)
        self.store = open_store(target) if target else None
        self.sink = ResultSink(store=self.store, folder=out_dir, write_json=self.opts.write_json,
                               write_html=self.opts.write_report)
        self.results: list[dict] = []
        self.failures: list[tuple[str, str]] = []
        self._bar = _progress(total, progress)
        self._audio_s = 0.0
        self._t0 = time.perf_counter()

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def succeeded(self, result: dict) -> None:
        self.results.append(result)
        self._audio_s += result["duration_s"]
        self.sink.save(result)  # the same sink as live: store, atomic JSON, HTML
        self._tick()

    def skipped(self, result: dict) -> None:
        """A call already stored with the same fingerprint: in the summary and report, not recomputed."""
        self.results.append(result)
        self.sink.write_files(result, only_missing=True)
        self._tick()

    def failed(self, path: str, reason: str) -> None:
        self.failures.append((path, reason))
        log.error("%s", reason)
        self._tick()

    def _tick(self) -> None:
        if self._bar is not None:
            elapsed = time.perf_counter() - self._t0
            self._bar.set_postfix_str(f"audio {self._audio_s / 3600:.2f} h, "
                                      f"{self._audio_s / max(elapsed, 1e-9):.1f}x real time")
            self._bar.update(1)

    def finish(self) -> tuple[list[dict], list[tuple[str, str]]]:
        from .outputs.report import write_batch_report, write_summary_csv

        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.opts.write_summary:
            write_summary_csv(self.results, self.out_dir / "summary.csv")
        if self.opts.write_report:
            write_batch_report(self.results, self.failures, self.out_dir / "index.html")
        return self.results, self.failures

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.store is not None:
            self.store.close()
            self.store = None


def analyze_paths(inputs: Sequence[CallInput], *, out_dir: Path, config: Config, engine=None,
                  agent_channel: int | None = None, language: str | None = None,
                  progress: bool | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Analyse many calls in this process, writing outputs as each finishes. Returns (results, failures).

    ``pipeline.cluster.analyze_on_cluster`` is the same on a Dask cluster (``callpulse analyze --cluster``).
    """
    from .engine import Engine

    with BatchWriter(out_dir, config, total=len(inputs), progress=progress) as writer:
        engine = engine or Engine.load(config, store=writer.store)
        run_print = run_fingerprint(fingerprint(engine), agent_channel=agent_channel, language=language)
        for item in inputs:
            try:
                result = analyze_file(item.path, engine=engine, config=config,
                                      agent_channel=item.agent_channel if item.agent_channel is not None else agent_channel,
                                      agent_id=item.agent_id, language=language, call_id=item.call_id,
                                      started_at=item.started_at)
            except PipelineError as exc:
                writer.failed(str(item.path), str(exc))
            except (OSError, ValueError, RuntimeError, MemoryError) as exc:
                # unexpected decoder trouble still fails only this file, with the reason kept
                log.exception("%s failed", item.path)
                writer.failed(str(item.path), f"{type(exc).__name__}: {exc}")
            else:
                writer.succeeded(stamp(result, run_print))
        return writer.finish()


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
