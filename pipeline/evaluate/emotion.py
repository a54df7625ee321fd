"""``callpulse evaluate emotion``: the acoustic emotion model on labelled single-speaker clips.

Each clip's feature vector is extracted by the model's own extractor (the one the engine uses), at the
clip's own rate and as an 8 kHz mu-law telephone version; vectors are cached per clip. Scoring then goes
through ``EmotionModel.predict``:

* by default each clip is scored on its own (no baseline: the model's population-normalised head);
* with ``speaker_baseline`` the speaker's baseline is first fed the speaker's *other* clips, audio only:
  each updates it only if the model itself finds it calm-looking (``looks_calm``), as live calls do.

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
PROTOCOLS = ("auto", "loso", "as-is")
RATES = ("native", "8k-mulaw")


@dataclass(frozen=True)
class EmotionEvalOptions:
    """What ``evaluate emotion`` scores and how."""

    manifest: str = ""          # "" = $CALLPULSE_DATA/emodb/manifest.csv
    root: str = ""              # folder relative paths resolve against ("" = the manifest's folder)
    speaker_baseline: bool = False
    telephone: bool = False     # score the 8 kHz mu-law versions instead of the clips as recorded
    protocol: str = "auto"      # auto | loso | as-is (see the module docstring)
    limit: int = 0              # read at most this many manifest rows (0 = all)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.limit < 0:
            raise ValueError("limit must be >= 0")

    @property
    def variant(self) -> str:
        return f"{'8k-mulaw' if self.telephone else 'native'}{'+speaker-baseline' if self.speaker_baseline else ''}"


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
    for i, spk in enumerate(speakers):
        model = models[spk]
        baseline = None
        if speaker_baseline:
            baseline = model.new_baseline()
            for j, other in enumerate(speakers):
                if other == spk and j != i:
                    # Calm-looking by the model's own judgement: labels are never consulted.
                    baseline.update(vectors[j], calm=model.looks_calm(vectors[j]))
        out.append(model.predict(vectors[i], baseline=baseline))
    return out


def evaluate_emotion(*, options: EmotionEvalOptions, config, run: RunOptions, out: Path, cache_dir: Path,
                     model=None, fold_cache: dict | None = None) -> report.EvalResult:
    """Score every labelled clip of the manifest and write predictions.csv and plots under ``out``.

    ``model`` defaults to the configured ``EmotionModel``; tests pass a scripted fake of its interface.
    ``fold_cache``: a dict shared by several variants of one run, so the leave-one-speaker-out refits
    (which depend on the clips, not on the variant) are computed once.
    """
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
    if protocol == "loso":
        key = fingerprint(model.model_id, [str(r.path) for r, _ in ok], truths, speakers)
        cache = fold_cache if fold_cache is not None else {}
        if key not in cache:
            from .emotion_folds import fold_models

            cache[key] = fold_models(model, vectors=vectors, labels=truths, speakers=speakers)
        models = cache[key]
    else:
        models = {s: model for s in set(speakers)}
    scores = score(vectors[rate], speakers, models=models, speaker_baseline=options.speaker_baseline)

    preds = [s.label for s in scores]
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
        "speaker_baseline": options.speaker_baseline, "protocol": protocol,
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
