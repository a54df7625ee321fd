"""``callpulse evaluate asr|emotion|alerts|text|all``: scripted offline evaluation.

Each subcommand writes ``<out>/metrics.json`` (figures + provenance), ``<out>/report.html`` with its
plots, ``predictions.csv``, and caches finished items under ``<out>/items/`` so an interrupted run
resumes where it stopped. ``all`` runs the suite of the config's ``[evaluate]`` table (see
:mod:`.suite`) with one engine and writes one report over every evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import PipelineError
from . import report
from .alerts import evaluate_alerts
from .asr import evaluate_asr
from .emotion import FEATURES, PROTOCOLS, evaluate_emotion
from .runner import RunOptions
from .suite import SuiteOptions, emotion_variant_options, load_eval_config
from .text import evaluate_text

log = logging.getLogger("pipeline.evaluate.cli")


def _common(p: argparse.ArgumentParser, *, out: str, manifest: bool = True) -> None:
    p.add_argument("--config", help="callpulse TOML (overrides pipeline/callpulse.toml; may hold an [evaluate] "
                                    "table)")
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    if manifest:
        p.add_argument("--manifest", default="", help="CSV manifest (default: the shared data's)")
        p.add_argument("--root", default="", help="folder that relative paths resolve against "
                                                  "(default: the manifest's folder)")
    p.add_argument("--limit", type=int, default=0, help="only N rows, evenly spaced over the manifest (0 = all)")
    p.add_argument("--workers", type=int, default=None,
                   help="items run in parallel (threads; capped at the CPU count; default 1 or [evaluate] workers)")
    p.add_argument("--cache", default=None, help="where finished items are kept (default: <out>/items); "
                                                 "several runs may share one")
    p.add_argument("--no-resume", action="store_true", help="redo every item instead of reusing cached ones")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="scripted offline evaluation against labelled recordings",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev = p.add_subparsers(dest="evaluation", required=True)

    a = ev.add_parser("asr", help="WER (en) / CER (zh): pipeline vs faster-whisper directly")
    _common(a, out="eval/asr")
    a.add_argument("--no-direct", action="store_true", help="skip the faster-whisper-directly comparison")
    a.set_defaults(func=_run_asr)

    e = ev.add_parser("emotion", help="acoustic emotion model: UAR, confusion, binary views, ECE")
    _common(e, out="eval/emotion")
    e.add_argument("--speaker-baseline", action="store_true",
                   help="feed each speaker's other clips (audio only) into their baseline first")
    e.add_argument("--telephone", action="store_true", help="score 8 kHz G.711 mu-law versions of the clips")
    e.add_argument("--features", choices=FEATURES, default="prosody",
                   help="prosody: the per-second heads; encoder / both: the per-turn heads' inputs (Whisper "
                   "encoder output pooled over the clip, alone or with prosody)")
    e.add_argument("--all-variants", action="store_true",
                   help="every rate x features x baseline variant in one run and one report (the [evaluate] "
                   "emotion_variants list; by default all 12)")
    e.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                   help="auto: leave-one-speaker-out when the model learnt from these speakers (default); loco: "
                   "the shipped recipe leave-one-corpus-out over EmoDB, nEMO, Korean (URDU test only), or over the "
                   "'corpus' column of --manifest")
    e.set_defaults(func=_run_emotion)

    al = ev.add_parser("alerts", help="supervisor-takeover recall, false alerts per call-hour, latency")
    _common(al, out="eval/alerts")
    al.add_argument("--no-plots", action="store_true", help="no timeline PNG per call")
    al.set_defaults(func=_run_alerts)

    t = ev.add_parser("text", help="text scorer alone on labelled text: UAR, confusion")
    _common(t, out="eval/text", manifest=False)
    t.add_argument("--manifest", action="append", default=[], help="CSV text,label,language (repeatable; "
                                                                    "default: the shared data's two sets)")
    t.set_defaults(func=_run_text)

    s = ev.add_parser("all", help="the suite of the config's [evaluate] table, one report")
    _common(s, out="eval", manifest=False)
    s.set_defaults(func=_run_all)


def _cache_dir(args: argparse.Namespace, out: Path) -> Path:
    return Path(args.cache) if args.cache else out / "items"


def _run_options(args: argparse.Namespace, suite: SuiteOptions) -> RunOptions:
    workers = args.workers if args.workers is not None else suite.workers
    return RunOptions(workers=workers, resume=not args.no_resume, progress=args.progress)


def _finish(out: Path, *, results: list[report.EvalResult], config, suite: SuiteOptions, models: dict,
            options: dict, title: str) -> int:
    prov = report.provenance(config_raw=dict(config.raw), models=models,
                             options={**options, "suite": dataclasses.asdict(suite)})
    metrics = report.write_metrics(out / "metrics.json", results=results, run_provenance=prov)
    html = report.write_report(out / "report.html", title=title, results=results, run_provenance=prov)
    for r in results:
        print("\n".join(r.summary))
        for f in r.failed_items:
            print(f"  FAILED {f['key']}: {f['error']}")
    print(f"wrote {metrics} and {html}")
    return 1 if any(r.failed_items for r in results) else 0


def _models(*, engine=None, emotion=None, scorer=None) -> dict[str, Any]:
    models: dict[str, Any] = {}
    if engine is not None:
        t = engine.transcriber
        models["asr"] = None if t is None else {"id": t.model_id, "path": t.model_path}
        models["emotion_source"] = engine.emotion_source
        emotion = emotion or engine.emotion
        scorer = scorer or engine.text
    if emotion is not None:
        models["emotion"] = emotion.model_id
    if scorer is not None:
        models["text"] = repr(getattr(scorer, "options", None))
    return models


def _single(args: argparse.Namespace, name: str, fn: Callable[..., report.EvalResult],
            make_options: Callable[[SuiteOptions], Any]) -> int:
    config, suite = load_eval_config(args.config)
    out = Path(args.out)
    options = make_options(suite)
    result = fn(options=options, config=config, run=_run_options(args, suite), out=out, cache_dir=_cache_dir(args, out))
    return _finish(out, results=[result], config=config, suite=suite, models=dict(result.metrics.get("models", {})),
                   options={name: dataclasses.asdict(options)}, title=f"callpulse evaluation: {name}")


def _manifest_overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in (("manifest", args.manifest), ("root", args.root)) if v} | \
        ({"limit": args.limit} if args.limit else {})


def _run_asr(args: argparse.Namespace) -> int:
    return _single(args, "asr", evaluate_asr,
                   lambda s: dataclasses.replace(s.asr, compare_direct=s.asr.compare_direct and not args.no_direct,
                                                 **_manifest_overrides(args)))


def _run_emotion(args: argparse.Namespace) -> int:
    if args.all_variants:
        return _run_all(args, only=("emotion",))
    return _single(args, "emotion", evaluate_emotion,
                   lambda s: dataclasses.replace(s.emotion, speaker_baseline=args.speaker_baseline,
                                                 telephone=args.telephone, protocol=args.protocol,
                                                 features=args.features,
                                                 **_manifest_overrides(args)))


def _run_alerts(args: argparse.Namespace) -> int:
    return _single(args, "alerts", evaluate_alerts,
                   lambda s: dataclasses.replace(s.alerts, plots=not args.no_plots, **_manifest_overrides(args)))


def _run_text(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {"manifests": tuple(args.manifest)} if args.manifest else {}
    if args.limit:
        changes["limit"] = args.limit
    return _single(args, "text", evaluate_text, lambda s: dataclasses.replace(s.text, **changes))


def _suite_jobs(suite: SuiteOptions, *, limit: dict, out: Path, cache: Path, config, run: RunOptions, engine
                ) -> list[tuple[str, dict, Callable[[], report.EvalResult]]]:
    """(name, options, job) for every evaluation of the suite, sharing one engine."""
    jobs: list[tuple[str, dict, Callable[[], report.EvalResult]]] = []
    for name in suite.evaluations:
        if name == "asr":
            o = dataclasses.replace(suite.asr, **limit)
            jobs.append((name, dataclasses.asdict(o), lambda o=o: evaluate_asr(
                options=o, config=config, run=run, out=out / "asr", cache_dir=cache, engine=engine)))
        elif name == "emotion":
            if engine.emotion is None:
                print("emotion: skipped, no emotion model is installed (see the engine's warning)", file=sys.stderr)
                continue
            folds: dict = {}  # leave-one-speaker-out refits are shared by the variants
            for variant in suite.emotion_variants:
                o = dataclasses.replace(emotion_variant_options(suite.emotion, variant), **limit)
                if o.features != "prosody" and engine.emotion.turn is None:
                    print(f"emotion:{variant}: skipped, model {engine.emotion.model_id} has no turn heads",
                          file=sys.stderr)
                    continue
                jobs.append((f"emotion:{variant}", dataclasses.asdict(o), lambda o=o, v=variant: evaluate_emotion(
                    options=o, config=config, run=run, out=out / f"emotion-{v}", cache_dir=cache,
                    model=engine.emotion, fold_cache=folds, transcriber=engine.transcriber)))
        elif name == "alerts":
            o = dataclasses.replace(suite.alerts, **limit)
            jobs.append((name, dataclasses.asdict(o), lambda o=o: evaluate_alerts(
                options=o, config=config, run=run, out=out / "alerts", cache_dir=cache, engine=engine)))
        elif name == "text":
            o = dataclasses.replace(suite.text, **limit)
            jobs.append((name, dataclasses.asdict(o), lambda o=o: evaluate_text(
                options=o, config=config, run=run, out=out / "text", cache_dir=cache, scorer=engine.text)))
    return jobs


def _run_all(args: argparse.Namespace, *, only: tuple[str, ...] | None = None) -> int:
    """Every evaluation of the suite with one engine (models loaded once), one metrics.json and report.

    An evaluation that cannot run (e.g. its manifest is missing) is reported as failed and the others go
    on: one missing file must not cost the figures of the rest of the suite.
    """
    from ..engine import Engine

    config, suite = load_eval_config(args.config)
    if only is not None:
        overrides = {k: v for k, v in _manifest_overrides(args).items() if k != "limit"}
        suite = dataclasses.replace(suite, evaluations=only, emotion=dataclasses.replace(suite.emotion, **overrides))
    out = Path(args.out)
    engine = Engine.load(config)
    jobs = _suite_jobs(suite, limit={"limit": args.limit} if args.limit else {}, out=out,
                       cache=_cache_dir(args, out), config=config, run=_run_options(args, suite), engine=engine)
    results: list[report.EvalResult] = []
    for name, _, job in jobs:
        try:
            results.append(job())
        except PipelineError as exc:
            log.error("evaluation %s failed: %s", name, exc)
            results.append(report.EvalResult(name=name, metrics={"error": str(exc)},
                                             summary=[f"{name}: FAILED: {exc}"],
                                             failed_items=({"key": name, "error": str(exc)},)))
    return _finish(out, results=results, config=config, suite=suite, models=_models(engine=engine),
                   options={name: opts for name, opts, _ in jobs}, title="callpulse evaluation suite")
