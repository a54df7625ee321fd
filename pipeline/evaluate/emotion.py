"""``callpulse evaluate emotion``: the acoustic emotion model on labelled single-speaker clips.

Each clip's feature vector is extracted by the model's own extractor (the one the engine uses), at the
clip's own rate and as an 8 kHz mu-law telephone version; vectors are cached per clip. Scoring then goes
through ``EmotionModel.predict``:

* by default each clip is scored on its own (no baseline: the model's population-normalised head);
* with ``speaker_baseline`` the speaker's baseline is first fed the speaker's *other* clips, audio only:
  each updates it only if the model itself finds it calm-looking (``looks_calm``), as live calls do.

``features`` chooses what is scored: ``prosody`` (the per-second heads, above), or the per-turn heads'
inputs -- ``encoder`` (the ASR's Whisper encoder output pooled over the clip) or ``both`` (prosody +
encoder). For those, each clip is encoded by the ASR's Whisper encoder as a one-turn window (as the model
was trained, ``emotion_turn_training.encode_clips``); with ``speaker_baseline`` each clip is standardised
by the speaker's other clips that the baseline-free turn head calls calm (audio only), as
``TurnBaseline`` does live.

``protocol = "loco"`` is the selection protocol across corpora (:mod:`pipeline.training.loco`): the
recipe of the shipped model is trained on every corpus but one and scores the one left out, for each
training corpus (EmoDB, nEMO, emotiontts-ko by default, or the corpora of ``manifest``'s ``corpus``
column); URDU (test only) is scored by the model trained on all of them. Each fold's recipe is chosen
by an inner LOCO on its training corpora only.

Speaker independence: when the model was trained on speakers of the manifest (the shipped model and
EmoDB), ``protocol = "auto"`` scores every speaker with a copy of the model refitted without that speaker
(:mod:`.emotion_folds`). ``"as-is"`` scores the loaded model whatever it learnt from, and says so.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio
from ..errors import EvaluationError
from . import report
from .manifests import default_data_dir, read_manifest
from .metrics import binary_view, confusion, top_label_calibration
from .runner import Item, RunOptions, fingerprint, run_items
from .telephone import TELEPHONE_SR_HZ, telephone_version

log = logging.getLogger("pipeline.evaluate.emotion")

LABELS = ("angry", "happy", "neutral", "sad")
PROTOCOLS = ("auto", "loso", "as-is", "loco")
RATES = ("native", "8k-mulaw")
FEATURES = ("prosody", "encoder", "both")


@dataclass(frozen=True)
class EmotionEvalOptions:
    """What ``evaluate emotion`` scores and how."""

    manifest: str = ""          # "" = $CALLPULSE_DATA/emodb/manifest.csv
    root: str = ""              # folder relative paths resolve against ("" = the manifest's folder)
    speaker_baseline: bool = False
    telephone: bool = False     # score the 8 kHz mu-law versions instead of the clips as recorded
    protocol: str = "auto"      # auto | loso | as-is (see the module docstring)
    limit: int = 0              # read at most this many manifest rows (0 = all)
    features: str = "prosody"   # prosody | encoder | both (see the module docstring)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.limit < 0:
            raise ValueError("limit must be >= 0")

    @property
    def variant(self) -> str:
        return (f"{'8k-mulaw' if self.telephone else 'native'}"
                f"{'' if self.features == 'prosody' else '+' + self.features}"
                f"{'+speaker-baseline' if self.speaker_baseline else ''}")


def manifest_path(options: EmotionEvalOptions) -> Path:
    return Path(options.manifest) if options.manifest else default_data_dir() / "emodb" / "manifest.csv"


def extract_vectors(item: Item, *, model) -> dict[str, Any]:
    """Feature vectors of one clip at its own rate and as telephone audio (the cached unit of work)."""
    audio = load_audio(item.payload["path"])
    # A stereo clip is one speaker recorded twice: average the channels rather than pick one.
    y = audio.samples.mean(axis=0) if audio.n_channels > 1 else audio.samples[0]
    _, native = model.extractor.vector(y, sr=audio.sample_rate_hz)
    _, tel = model.extractor.vector(telephone_version(y, sr=audio.sample_rate_hz), sr=TELEPHONE_SR_HZ)
    return {"native": np.asarray(native, dtype=float).tolist(), "8k-mulaw": np.asarray(tel, dtype=float).tolist(),
            "sample_rate_hz": audio.sample_rate_hz, "duration_s": audio.duration_s}


def extract_encodings(item: Item, *, transcriber, pack_s: float) -> dict[str, Any]:
    """Pooled encoder output of each clip of one pack (one speaker's clips, one Whisper window), as
    recorded and as telephone audio, both at the 16 kHz the ASR stage sees."""
    from ..audio import resample
    from ..training.emotion_turn import encode_clips

    native, tel = [], []
    for path in item.payload["paths"]:
        audio = load_audio(path)
        y = audio.samples.mean(axis=0) if audio.n_channels > 1 else audio.samples[0]
        native.append(resample(y, orig_sr=audio.sample_rate_hz, target_sr=16000))
        tel.append(resample(telephone_version(y, sr=audio.sample_rate_hz), orig_sr=TELEPHONE_SR_HZ, target_sr=16000))
    speakers = ["speaker"] * len(native)
    return {"native": encode_clips(native, speakers, transcriber, pack_s=pack_s).tolist(),
            "8k-mulaw": encode_clips(tel, speakers, transcriber, pack_s=pack_s).tolist()}


def _encodings(ok: list, speakers: list[str], *, transcriber, run: RunOptions, cache_dir: Path,
               pack_s: float) -> dict:
    """rate -> [n, dim] encodings of the scored clips, each alone in a Whisper window or packed per
    speaker (``pack_s``), as the model was trained."""
    from ..training.emotion_turn import pack_rows

    packs = pack_rows(speakers, [res["duration_s"] for _, res in ok], pack_s=pack_s)
    items = [Item("|".join(str(ok[i][0].path) for i in pack), {"paths": [str(ok[i][0].path) for i in pack]})
             for pack in packs]
    signature = fingerprint("emotion-encodings/1", transcriber.encoder_id, transcriber.model_path, pack_s)
    results = run_items(items, lambda it: extract_encodings(it, transcriber=transcriber, pack_s=pack_s),
                        cache_dir=cache_dir / "emotion-encoder", signature=signature, options=run, desc="encoder")
    failed = [r for r in results if r.error]
    if failed:
        raise EvaluationError(f"encoding failed for {len(failed)} packs of clips; first: {failed[0].error}")
    out = {rate: [None] * len(ok) for rate in RATES}
    for pack, res in zip(packs, results):
        for rate in RATES:
            for i, enc in zip(pack, res.result[rate]):
                out[rate][i] = enc
    return {rate: np.array(v, dtype=float) for rate, v in out.items()}


def score_turns(vectors: dict, encodings: dict, speakers: list[str], truths: list[str], *, model,
                options: EmotionEvalOptions, protocol: str) -> list:
    """Scores per clip from the turn heads' inputs (``options.features``), speaker-independent under
    ``loso`` (heads refitted without the held-out speaker, the shipped L2 and baseline rule), or the
    shipped heads as-is."""
    from ..training.emotion_turn import (TurnData, calm_label_flags, calm_predicted_flags, out_of_fold,
                                         turn_names)
    from ..training.emotion_calibration import loso_temperature

    norm = "speaker" if options.speaker_baseline else "global"
    rate = "8k-mulaw" if options.telephone else "native"
    x = {r: np.hstack([vectors[r], encodings[r]]) for r in RATES}
    spk = np.array(speakers)
    details = model.turn.details
    if protocol == "loso":
        best = details.get("best", {}).get(f"{norm} | {options.features}")
        if best is None:
            raise EvaluationError(f"emotion model {model.model_id} records no L2 for {norm} | {options.features}; "
                                  "rebuild it with `python scripts/train_emotion.py`")
        y = np.array([LABELS.index(t) for t in truths])
        data = TurnData(x, turn_names(model.vector_names, encodings[rate].shape[1]), y, spk,
                        train_conditions=RATES)
        calm = {}
        if norm == "speaker":
            # held-out baselines: the clips a refitted global turn head calls calm (no labels)
            glob = details["turn_global"]
            glob_logits = out_of_fold(data, glob["features"], "global", l2=float(glob["l2"]), clip=5.0)
            calm = {"train_calm": calm_label_flags(data),
                    "test_calm": calm_predicted_flags(data, glob_logits, model.options.calm_arousal_max)}
        logits = out_of_fold(data, options.features, norm, l2=float(best["l2"]), clip=5.0, **calm)[rate]
        probs = loso_temperature(logits, y, spk)
        source = f"loso-refit:{model.model_id}/{options.features}/turn_{norm}"
        return [model.scores(p, source=source) for p in probs]
    name = f"turn_{norm}"
    shipped = details.get(name, {}).get("features")
    if shipped != options.features:
        raise EvaluationError(f"the shipped {name} head reads {shipped!r} features; scoring {options.features!r} "
                              "needs the leave-one-speaker-out refit (--protocol loso, on labelled speakers)")
    out = []
    # each clip's calm judgement once, not once per other clip of its speaker
    calm = [model.turn_looks_calm(v) for v in x[rate]] if options.speaker_baseline else []
    for i, s in enumerate(speakers):
        baseline = None
        if options.speaker_baseline:
            baseline = model.new_turn_baseline()
            for j in np.flatnonzero(spk == s):
                if j != i:
                    baseline.update(x[rate][j], calm=calm[j])
        out.append(model.predict_turn(x[rate][i], baseline=baseline))
    return out


def _resolve_protocol(options: EmotionEvalOptions, model, speakers: set[str]) -> tuple[str, bool | None]:
    """-> (protocol used, speaker independent?) ; None = unknown (the model's training set is unknown)."""
    from .emotion_folds import read_recipe  # the training stack (scipy, librosa) only when scoring

    if options.protocol == "loso":
        return "loso", True
    try:
        trained = set(read_recipe(model)["speakers"])
    except EvaluationError:
        if options.protocol == "auto":
            log.warning("emotion model %s does not say which speakers it learnt from; scoring it as-is",
                        model.model_id)
        return "as-is", None
    overlap = trained & speakers
    if options.protocol == "auto" and overlap:
        log.info("model %s learnt from %s of the manifest's speakers: scoring leave-one-speaker-out",
                 model.model_id, len(overlap))
        return "loso", True
    if overlap:
        log.warning("model %s was trained on %s of these speakers: these figures are in-corpus",
                    model.model_id, len(overlap))
    return "as-is", not overlap


def score(vectors: np.ndarray, speakers: list[str], *, models: dict[str, Any], speaker_baseline: bool) -> list:
    """Scores per clip. ``models``: speaker -> model that scores that speaker's clips."""
    out = []
    # Calm-looking by the judgement of the model that scores that speaker (labels are never consulted),
    # decided once per clip.
    calm = [models[s].looks_calm(v) for v, s in zip(vectors, speakers)] if speaker_baseline else []
    for i, spk in enumerate(speakers):
        model = models[spk]
        baseline = None
        if speaker_baseline:
            baseline = model.new_baseline()
            for j, other in enumerate(speakers):
                if other == spk and j != i:
                    baseline.update(vectors[j], calm=calm[j])
        out.append(model.predict(vectors[i], baseline=baseline))
    return out


def evaluate_emotion(*, options: EmotionEvalOptions, config, run: RunOptions, out: Path, cache_dir: Path,
                     model=None, fold_cache: dict | None = None, transcriber=None) -> report.EvalResult:
    """Score every labelled clip of the manifest and write predictions.csv and plots under ``out``.

    ``model`` defaults to the configured ``EmotionModel``; tests pass a scripted fake of its interface.
    ``fold_cache``: a dict shared by several variants of one run, so the leave-one-speaker-out refits
    (which depend on the clips, not on the variant) are computed once. ``transcriber``: the Whisper
    model whose encoder the turn heads read (``features`` encoder / both); loaded from ``config.asr``
    when not given.
    """
    if options.protocol == "loco":
        return evaluate_loco(options=options, config=config, out=out, cache_dir=cache_dir)
    if model is None:
        from ..emotion import EmotionModel

        model = EmotionModel.load(config.emotion, prosody=config.prosody)
    manifest = manifest_path(options)
    rows = read_manifest(manifest, required=("path", "emotion", "speaker"), root=options.root or None,
                         limit=options.limit or None)
    kept = [r for r in rows if r.get("emotion").lower() in LABELS]
    excluded = Counter(r.get("emotion").lower() or "(empty)" for r in rows if r not in kept)
    if excluded:
        log.info("excluded %s clips with other labels: %s", sum(excluded.values()), dict(excluded))
    if not kept:
        raise EvaluationError(f"{manifest} has no clips labelled {LABELS}")
    items = [Item(str(r.path), {"path": str(r.path)}) for r in kept]
    signature = fingerprint("emotion-vectors/1", list(model.vector_names), repr(model.prosody_options))
    results = run_items(items, lambda it: extract_vectors(it, model=model), cache_dir=cache_dir / "emotion",
                        signature=signature, options=run, desc="emotion")
    failed = [{"key": r.key, "error": r.error} for r in results if r.error]
    ok = [(row, res.result) for row, res in zip(kept, results) if res.result is not None]
    if not ok:
        raise EvaluationError(f"no clip of {manifest} could be scored; first error: {failed[0]['error']}")
    speakers = [row.get("speaker") for row, _ in ok]
    truths = [row.get("emotion").lower() for row, _ in ok]
    vectors = {rate: np.array([res[rate] for _, res in ok], dtype=float) for rate in RATES}
    rate = "8k-mulaw" if options.telephone else "native"

    protocol, independent = _resolve_protocol(options, model, set(speakers))
    if options.features != "prosody":
        from ..asr import Transcriber

        if model.turn is None:
            raise EvaluationError(f"emotion model {model.model_id} has no turn heads (prosody + encoder): the "
                                  "multi-corpus default has none; score the EmoDB-only variant's with "
                                  "`[emotion] model_dir = \"models/emotion-emodb\"`, or use --features prosody")
        transcriber = transcriber or Transcriber.load(config.asr)
        if not model.turn_ready_for(transcriber.encoder_id):
            raise EvaluationError(f"emotion model {model.model_id} reads encodings of {model.turn.encoder_id}, "
                                  f"the configured ASR gives {transcriber.encoder_id}: set [asr] model / encoder_fit "
                                  "to match, or retrain")
        encodings = _encodings(ok, speakers, transcriber=transcriber, run=run, cache_dir=cache_dir,
                               pack_s=float(model.turn.details.get("training_pack_s", 0.0)))
        scores = score_turns(vectors, encodings, speakers, truths, model=model, options=options, protocol=protocol)
    elif protocol == "loso":
        key = fingerprint(model.model_id, [str(r.path) for r, _ in ok], truths, speakers)
        cache = fold_cache if fold_cache is not None else {}
        if key not in cache:
            from .emotion_folds import fold_models

            cache[key] = fold_models(model, vectors=vectors, labels=truths, speakers=speakers)
        models = cache[key]
    else:
        models = {s: model for s in set(speakers)}
    if options.features == "prosody":
        scores = score(vectors[rate], speakers, models=models, speaker_baseline=options.speaker_baseline)

    # UAR and confusion are of the most probable class: the shown label reads "neutral" below
    # [emotion] label_min_confidence, a display rule that is not the classifier.
    preds = [max(s.scores, key=s.scores.get) for s in scores]
    probs = [dict(s.scores) for s in scores]
    conf = confusion(truths, preds, labels=LABELS)
    ang_neu = binary_view(truths, probs, positive=("angry",), negative=("neutral",), names=("angry", "neutral"))
    arousal = binary_view(truths, probs, positive=("angry", "happy"), negative=("neutral", "sad"),
                          names=("high", "low"))
    cal = top_label_calibration(truths, probs)
    per_speaker = {s: confusion([t for t, sp in zip(truths, speakers) if sp == s],
                                [p for p, sp in zip(preds, speakers) if sp == s], labels=LABELS).uar
                   for s in sorted(set(speakers))}
    heads = Counter(s.source.rsplit("/", 1)[-1] for s in scores)
    metrics = {
        "manifest": str(manifest), "variant": options.variant, "rate": rate,
        "speaker_baseline": options.speaker_baseline, "protocol": protocol, "features": options.features,
        "speaker_independent": independent, "model_id": model.model_id,
        "models": {"emotion": model.model_id},
        "n_items": len(ok), "n_speakers": len(set(speakers)), "excluded_labels": dict(excluded),
        "uar": conf.uar, "accuracy": conf.accuracy, "per_class_recall": conf.per_class_recall(),
        "confusion": conf.as_dict(),
        "angry_vs_neutral": {"uar": ang_neu.uar, "confusion": ang_neu.as_dict()},
        "high_vs_low_arousal": {"uar": arousal.uar, "confusion": arousal.as_dict()},
        "ece": cal.ece, "reliability": cal.as_dict(), "uar_per_speaker": per_speaker,
        "predicted_share": {label: preds.count(label) / len(preds) for label in LABELS},
        "heads_used": dict(heads),
    }

    out.mkdir(parents=True, exist_ok=True)
    report.write_csv(out / "predictions.csv",
                     headers=["path", "speaker", "truth", "predicted", *(f"p_{c}" for c in LABELS), "arousal",
                              "source"],
                     rows=[[row.get("path") or row.get("file"), spk, t, s.label,
                            *(float(s.scores.get(c, 0.0)) for c in LABELS), float(s.arousal), s.source]
                           for (row, _), spk, t, s in zip(ok, speakers, truths, scores)])
    title = f"emotion {options.variant} ({protocol})"
    report.plot_confusion(conf, out / "confusion.png", title=title)
    report.plot_reliability(cal, out / "reliability.png", title=title)
    summary = [
        f"emotion [{options.variant}] protocol={protocol} speaker_independent={independent} "
        f"model={model.model_id} clips={len(ok)} speakers={len(set(speakers))}",
        f"  UAR {report.fmt(conf.uar)}  accuracy {report.fmt(conf.accuracy)}  "
        f"angry-vs-neutral UAR {report.fmt(ang_neu.uar)}  high-vs-low-arousal UAR {report.fmt(arousal.uar)}  "
        f"ECE {report.fmt(cal.ece)}",
        "  recall " + "  ".join(f"{c} {report.fmt(r)}" for c, r in conf.per_class_recall().items()),
    ]
    if excluded:
        summary.append(f"  excluded (other labels): {dict(excluded)}")
    sections = [
        report.Section("Confusion (rows truth, columns predicted)",
                       report.confusion_table(conf), images=(out / "confusion.png",)),
        report.Section("Binary views", report.table(
            ["view", "UAR", "n"], [["angry vs neutral", ang_neu.uar, ang_neu.n],
                                   ["high (angry, happy) vs low (neutral, sad) arousal", arousal.uar, arousal.n]])),
        report.Section("Calibration", f"<p>ECE {report.fmt(cal.ece)}</p>", images=(out / "reliability.png",)),
        report.Section("Per speaker", report.table(["speaker", "UAR"], sorted(per_speaker.items()))),
    ]
    return report.EvalResult(name=f"emotion:{options.variant}", metrics=metrics, sections=sections,
                             summary=summary, failed_items=failed)


def evaluate_loco(*, options: EmotionEvalOptions, config, out: Path, cache_dir: Path) -> report.EvalResult:
    """Leave-one-corpus-out figures of the per-second heads' recipe (see the module docstring)."""
    from ..training.corpora import TEST_ONLY_CORPORA, default_clip_rows, extract_features, read_clip_manifest
    from ..training.loco import HEADLINE, loco, summary_rows

    if options.manifest:
        rows = read_clip_manifest(options.manifest, root=options.root or None)
    else:
        rows = default_clip_rows(default_data_dir())
    corpora = sorted({r.corpus for r in rows})
    train_corpora = [c for c in corpora if c not in TEST_ONLY_CORPORA]
    test_only = [c for c in corpora if c in TEST_ONLY_CORPORA]
    if len(train_corpora) < 2:
        raise EvaluationError(f"--protocol loco needs clips of at least two training corpora (manifest column "
                              f"'corpus'); found {corpora}")
    features = extract_features(rows, prosody=config.prosody, cache_dir=cache_dir / "emotion-loco")
    result = loco(features, train_corpora=train_corpora, test_only=test_only,
                  label_min_confidence=config.emotion.label_min_confidence, progress=log.info)
    headers = ["held out", "rate", *HEADLINE, "neutral->sad", "neutral->sad (gated)"]
    sections, summary = [], [f"emotion LOCO: training corpora {train_corpora}, test only {test_only}; each fold's "
                             "recipe chosen on its training corpora only"]
    for head in ("relative", "global"):
        for kind in ("win", "clip"):
            rows_t = summary_rows(result, head=head, kind=kind)
            title = f"{head} head, {'2 s windows every second' if kind == 'win' else 'whole clips'}"
            sections.append(report.Section(title, report.table(headers, rows_t)))
            if kind == "win":
                summary.append(f"  {title}: " + "; ".join(f"{r[0]} {r[1]} UAR {r[2]:.3f} A/N {r[3]:.3f} A/H {r[4]:.3f}"
                                                           for r in rows_t))
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"protocol": "loco", "train_corpora": train_corpora, "test_only": test_only, "folds": result}
    return report.EvalResult(name="emotion", metrics=metrics, sections=sections, summary=summary)
