"""``callpulse analyze``: recorded calls in, per-call results and reports out, in this process or on Dask.

The command lives apart from ``pipeline.batch`` (the single-process runner) and ``pipeline.cluster``
(the Dask runner) so that imports run one way: this module -> both runners -> the engine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .batch import CallInput, add_common_options, analyze_paths, collect_inputs, config_from_args, read_manifest
from .cluster import ClusterOptions, analyze_on_cluster
from .errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyse recorded calls (files, folders or a shift manifest)",
                       description="Analyse recorded calls: per-call JSON, summary.csv, HTML report, SQLite.")
    p.add_argument("paths", nargs="*", help="audio files or folders (WAV, FLAC, OGG, MP3)")
    p.add_argument("--manifest", help="CSV: path, agent_id, started_at (one or more agents' shifts)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--agent-id", default=None, help="agent id for all given files (one agent's shift)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    p.add_argument("--database", default=None,
                   help="results database: a SQLite file (relative to --out) or postgresql://user@host/db "
                        "(default: [output] database)")
    p.add_argument("--cluster", default=None, metavar="local:N",
                   help="run the calls on a local Dask cluster of N worker processes")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the calls on an existing Dask cluster, e.g. tcp://host:8786")
    add_common_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.database is not None:
        config = config.replace("output", database=args.database)
    cluster = ClusterOptions.parse(args.cluster, args.scheduler)
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
    if cluster is not None:
        results, failures = analyze_on_cluster(inputs, options=cluster, out_dir=out_dir, config=config,
                                               agent_channel=args.agent_channel, language=args.language,
                                               progress=args.progress)
    else:
        results, failures = analyze_paths(inputs, out_dir=out_dir, config=config,
                                          agent_channel=args.agent_channel, language=args.language,
                                          progress=args.progress)
    _print_summary(results, failures, out_dir, config.output.database)
    return 1 if failures else 0


def _print_summary(results: Iterable[dict], failures: Sequence[tuple[str, str]], out_dir: Path,
                   database: str | None = "results.sqlite") -> None:
    from .outputs.store_base import resolve_database
    from .outputs.store_pg import safe_url

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
    target = resolve_database(database, folder=out_dir)
    where = "" if target is None else ", " + (safe_url(target) if "://" in target else target)
    print(f"results in {out_dir}/ (index.html, summary.csv, per-call JSON{where})")
