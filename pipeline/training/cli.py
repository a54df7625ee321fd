"""``callpulse train emotion|fusion``: the shipped recipes on a bank's own labelled recordings.

* ``train emotion --manifest clips.csv --out DIR``: columns ``path, emotion, speaker`` (optional
  ``language``, ``corpus``, ``gender``); emotions angry / happy / neutral / sad. Writes DIR with the
  weights, ``model.json`` and a ``README.md`` card (figures by leave-one-corpus-out, or by held-out
  speakers for one corpus). Use it with ``[emotion] model_dir = "DIR"``.
* ``train fusion --manifest calls.csv --out DIR``: the alerts manifest (``path, agent_channel,
  agitation_onset_s``; an empty onset = a calm call). Each call runs through the configured engine with
  ASR off (the acoustic path), then the fusion weights and the takeover timing are fitted (see
  ``pipeline.training.fusion``). Writes ``DIR/fusion.json`` and prints the ``[fusion]`` /
  ``[alerts.caller_agitation]`` lines to put in the config.

Bad manifests (missing files or columns, unknown labels, one class, one speaker, no calm or no
escalating call) stop with a message before anything is trained.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("pipeline.training.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="retrain the emotion model or the alert fusion on your own labelled data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="what", required=True)
    e = tsub.add_parser("emotion", help="per-second emotion heads from labelled clips")
    e.add_argument("--manifest", required=True, type=Path, help="CSV: path, emotion, speaker[, language, corpus]")
    e.add_argument("--out", required=True, type=Path, help="model folder to write")
    e.add_argument("--root", type=Path, default=None, help="folder relative paths resolve against (default: the manifest's)")
    e.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: none)")
    e.add_argument("--config", default=None, help="config whose [prosody] options the model is trained with")
    e.set_defaults(func=_train_emotion)
    f = tsub.add_parser("fusion", help="fusion weights and takeover timing from annotated calls")
    f.add_argument("--manifest", required=True, type=Path, help="alerts manifest: path, agent_channel, agitation_onset_s")
    f.add_argument("--out", type=Path, default=Path("fusion-model"), help="folder for fusion.json (default ./fusion-model)")
    f.add_argument("--config", default=None, help="config of the engine the calls run through (its [emotion] model_dir)")
    f.set_defaults(func=_train_fusion)


def _train_emotion(args) -> int:
    from ..config import load_config
    from .corpora import read_clip_manifest
    from .loco import train_from_rows

    config = load_config(args.config)
    rows = read_clip_manifest(args.manifest, root=args.root)
    meta = train_from_rows(rows, args.out, cache_dir=args.cache, prosody=config.prosody,
                           label_min_confidence=config.emotion.label_min_confidence, progress=print)
    print(f"model {meta['id']} in {args.out}; use it with [emotion] model_dir = \"{args.out}\"")
    return 0


def _train_fusion(args) -> int:
    from ..config import load_config
    from ..engine import Engine
    from .fusion import check_calls, read_calls_manifest, record_calls, refit_recorded, score, write_fusion_dir, drop_per_call

    rows = read_calls_manifest(args.manifest)
    check_calls(rows, where=str(args.manifest))
    # A call's cues depend on the fusion the engine runs (the caller's baselines learn only while its
    # level is calm), so every fit is re-recorded with the fusion it produced and refitted.
    base = load_config(args.config, overrides={"asr": {"enabled": False}})
    clear = base.alerts.caller_agitation.clear_level
    engines: dict = {}
    recording = Path(tempfile.mkdtemp(prefix="callpulse-fusion-"))  # the fusions cues are recorded with

    def record(fusion, scored_only):
        if fusion.fusion_id not in engines:
            engines.clear()
            cfg = load_config(args.config, overrides={"asr": {"enabled": False}, **fusion.config_overrides(
                fusion.write(recording), clear_level=clear)})
            engines[fusion.fusion_id] = Engine.load(cfg, warm_up=False)
        print(f"recording the cues of {len(rows)} calls (acoustic path, ASR off) with {fusion.fusion_id}")
        return record_calls(rows, engine=engines[fusion.fusion_id], fusion=fusion, progress=print)

    try:
        refit = refit_recorded(record, fit_on=lambda c: True, progress=print)
    finally:
        shutil.rmtree(recording, ignore_errors=True)
    model, timing, calls = refit.fusion.model, refit.fusion.timing, refit.calls
    figures = score(calls, model, timing)
    engine = next(iter(engines.values()))
    write_fusion_dir(args.out, model, timing, {
        "fitted_on": {"calls": str(args.manifest), "n_calls": len(calls), "emotion_model": engine.emotion_source,
                      "asr": "off (acoustic path)", "emotion_window_s": engine.config.emotion.window_s},
        "training_call_figures": drop_per_call(figures)})
    print(f"wrote {args.out / 'fusion.json'} ({model.model_id}); figures are on the calls it was fitted on. Config:\n"
          f"[fusion]\nmodel = \"learned\"\nmodel_dir = \"{args.out}\"\nrise_tau_s = {timing.rise_tau_s}\n"
          f"fall_tau_s = {timing.fall_tau_s}\n[alerts.caller_agitation]\nraise_level = {timing.raise_level}\n"
          f"min_sustain_s = {timing.min_sustain_s}\n"
          # the cues were read over this window: the fit holds only where the engine reads the same
          f"[emotion]\nwindow_s = {engine.config.emotion.window_s}")
    return 0
