"""``callpulse evaluate text``: the text scorer alone, row by row, against labelled text.

Manifest columns: ``text, label, language``. Truth labels map onto the scorer's classes:
``negative``/``neutral``/``positive`` as they are; ``complaint`` -> negative and ``not_complaint`` ->
non-negative; ``anger`` -> negative, and also the positive class of a separate "anger flag" view whose
prediction is "the scorer raised one of ``anger_flags``".

Each manifest (a *set*) is reported on its own:

* the scorer's label against the truth over the union of both label sets (UAR over the truth classes,
  per-class recall, confusion);
* negative vs non-negative, the view that feeds caller agitation (predicted negative = label negative),
  with the ROC AUC of ``-sentiment`` (threshold-free).

With no manifests given, the default sets are the data the trained backend was trained on, so scoring the
shipped model on them would be in-sample. Instead the *cross-domain* view is run: for every Mandarin
domain (10 shopping categories + ChnSentiCorp hotels) and every English brand fold, the shipped recipe is
refitted without that domain (``pipeline/evaluate/text_folds.py``), calibrated on the other domains,
and the whole trained scorer with that fold model scores the left-out rows, side by side with the lexicon
backend on the same rows. Negative recall, negative-vs-rest UAR, AUC and the ECE of the calibrated
P(negative) are reported per domain, with the nested figures of ``scripts/train_text.py`` (recipe chosen
on the other domains) from ``models/text/trained.json``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from . import report
from ..text import models_root
from .manifests import default_data_dir, read_manifest, repo_root
from .metrics import confusion, roc_auc
from .runner import Item, RunOptions, fingerprint, folder_digest, run_items

log = logging.getLogger("pipeline.evaluate.text")

SCORER_LABELS = ("negative", "neutral", "positive")
# truth label in a manifest -> (sentiment class, is anger)
TRUTH_MAP: dict[str, tuple[str, bool]] = {
    "negative": ("negative", False), "neutral": ("neutral", False), "positive": ("positive", False),
    "complaint": ("negative", False), "not_complaint": ("non-negative", False), "anger": ("negative", True),
}
DEFAULT_SETS = ("text/complaints_en.csv", "text/chnsenticorp_hotel_zh.csv")


@dataclass(frozen=True)
class TextEvalOptions:
    """What ``evaluate text`` scores."""

    manifests: tuple[str, ...] = ()    # () = the two sets in $CALLPULSE_DATA/text
    limit: int = 0                     # rows per set (0 = all)
    chunk_rows: int = 250              # rows per cached work item
    anger_flags: tuple[str, ...] = ("anger", "abuse")
    # Cross-domain view (default sets only): score every n-th row of each left-out Mandarin domain (the
    # lexicon backend's snownlp takes ~15 ms a review; the trained backend ~0.1 ms). English folds are
    # small and VADER is fast: every row (brands4 negative recall: 0.73 on every third row, 0.80 on all).
    cross_domain_every: int = 3

    def __post_init__(self) -> None:
        if self.limit < 0 or self.chunk_rows < 1 or self.cross_domain_every < 1:
            raise ValueError("limit must be >= 0, chunk_rows >= 1 and cross_domain_every >= 1")


def manifest_paths(options: TextEvalOptions) -> list[Path]:
    if options.manifests:
        return [Path(m) for m in options.manifests]
    return [default_data_dir() / rel for rel in DEFAULT_SETS]


def score_chunk(item: Item, *, scorer) -> dict[str, Any]:
    out = []
    for text, language in item.payload["rows"]:
        s = scorer.score(text, language=language)
        p = scorer.p_negative(text) if hasattr(scorer, "p_negative") else None
        out.append({"sentiment": float(s.sentiment), "label": s.label, "flags": list(s.flags),
                    "backend": s.backend, "p_negative": p})
    return {"scores": out}


def _evaluate_set(manifest: Path, *, options: TextEvalOptions, scorer, run: RunOptions, cache_dir: Path,
                  signature: str) -> tuple[dict, list[list]]:
    rows = read_manifest(manifest, required=("text", "label", "language"), audio=False,
                         limit=options.limit or None)
    truths = []
    for r in rows:
        label = r.get("label").lower()
        if label not in TRUTH_MAP:
            raise EvaluationError(f"{manifest}:{r.line}: label {label!r} is not one of {sorted(TRUTH_MAP)}")
        truths.append(TRUTH_MAP[label])
    items = []
    for start in range(0, len(rows), options.chunk_rows):
        chunk = [(r.fields.get("text") or "", r.get("language") or "auto") for r in rows[start:start + options.chunk_rows]]
        digest = hashlib.sha1(repr(chunk).encode("utf-8")).hexdigest()[:10]
        items.append(Item(f"{manifest.stem}-{start:06d}-{digest}", {"rows": chunk}))
    results = run_items(items, lambda it: score_chunk(it, scorer=scorer), cache_dir=cache_dir, signature=signature,
                        options=run, desc=f"text {manifest.stem}")
    failed = [{"key": r.key, "error": r.error} for r in results if r.error]
    if failed:
        raise EvaluationError(f"text scoring failed on {manifest}: {failed[0]['error']}")
    scores = [s for r in results for s in r.result["scores"]]
    for s in scores:
        if s["label"] not in SCORER_LABELS:
            raise EvaluationError(f"the text scorer returned label {s['label']!r}, expected one of {SCORER_LABELS}")

    sentiment_truth = [t for t, _ in truths]
    binary = "non-negative" in sentiment_truth
    order = ("negative", "non-negative", "neutral", "positive")
    label_set = {"negative", "non-negative"} if binary else set(sentiment_truth) | set(SCORER_LABELS)
    labels = tuple(label for label in order if label in label_set)
    preds = [s["label"] if not binary else ("negative" if s["label"] == "negative" else "non-negative")
             for s in scores]
    main = confusion(sentiment_truth, preds, labels=labels)
    is_neg = [t == "negative" for t in sentiment_truth]
    neg_view = confusion(["negative" if n else "non-negative" for n in is_neg],
                         ["negative" if s["label"] == "negative" else "non-negative" for s in scores],
                         labels=("negative", "non-negative"))
    figures: dict[str, Any] = {
        "manifest": str(manifest), "n_items": len(rows),
        "truth_counts": {label: sentiment_truth.count(label) for label in labels},
        "uar": main.uar, "accuracy": main.accuracy, "per_class_recall": main.per_class_recall(),
        "confusion": main.as_dict(),
        "negative_vs_rest": {"uar": neg_view.uar, "confusion": neg_view.as_dict(),
                             "roc_auc": roc_auc(is_neg, [-s["sentiment"] for s in scores])},
        "predicted_share": {label: [s["label"] for s in scores].count(label) / len(scores) for label in SCORER_LABELS},
        "backends": sorted({s["backend"] for s in scores}),
    }
    if any(anger for _, anger in truths):
        anger_pred = ["anger" if set(s["flags"]) & set(options.anger_flags) else "other" for s in scores]
        figures["anger_flag"] = confusion(["anger" if a else "other" for _, a in truths], anger_pred,
                                          labels=("anger", "other")).as_dict()
    # row = 1-based data row of the manifest (its CSV line minus the header)
    pred_rows = [[manifest.stem, r.line - 1, r.get("label").lower(), s["label"], s["sentiment"], ";".join(s["flags"]),
                  r.get("language")] for r, s in zip(rows, scores)]
    return figures, pred_rows


def evaluate_text(*, options: TextEvalOptions, config, run: RunOptions, out: Path, cache_dir: Path,
                  scorer=None) -> report.EvalResult:
    """Score every row of every set; writes predictions.csv and a confusion PNG per set."""
    if not options.manifests:
        return evaluate_cross_domain(options=options, config=config, run=run, out=out, cache_dir=cache_dir)
    if scorer is None:
        from ..text import TextScorer

        scorer = TextScorer.load(config.text)
    # The lexicons shape the scores as much as the options do: a changed lexicon invalidates cached rows.
    signature = fingerprint("text/1", repr(getattr(scorer, "options", None)), folder_digest(models_root() / "text"))
    sets: dict[str, dict] = {}
    all_rows: list[list] = []
    sections = []
    summary = ["text scorer on labelled text (negative / non-negative is the view that feeds agitation)"]
    out.mkdir(parents=True, exist_ok=True)
    for manifest in manifest_paths(options):
        figures, rows = _evaluate_set(manifest, options=options, scorer=scorer, run=run,
                                         cache_dir=cache_dir / "text", signature=signature)
        sets[manifest.stem] = figures
        all_rows += rows
        conf = confusion_from_dict(figures["confusion"])
        report.plot_confusion(conf, out / f"confusion_{manifest.stem}.png", title=f"text: {manifest.stem}")
        nv = figures["negative_vs_rest"]
        summary.append(f"  {manifest.stem}: {figures['n_items']} rows  UAR {report.fmt(figures['uar'])}  "
                       f"accuracy {report.fmt(figures['accuracy'])}  negative-vs-rest UAR {report.fmt(nv['uar'])}  "
                       f"AUC {report.fmt(nv['roc_auc'])}  recall " +
                       "  ".join(f"{k} {report.fmt(v)}" for k, v in figures["per_class_recall"].items()
                                 if figures["truth_counts"].get(k)))
        sections.append(report.Section(f"{manifest.stem} ({figures['n_items']} rows, backends {figures['backends']})",
                                       report.confusion_table(conf) + report.table(
                                           ["view", "UAR", "ROC AUC"], [["negative vs rest", nv["uar"], nv["roc_auc"]]]),
                                       images=(out / f"confusion_{manifest.stem}.png",)))
    report.write_csv(out / "predictions.csv", headers=["set", "row", "truth", "predicted", "score", "flags", "language"],
                     rows=all_rows)
    models = {"text_scorer": repr(getattr(scorer, "options", None)),
              "text_lexicons_sha1": folder_digest(models_root() / "text"),
              "backends": sorted({b for f in sets.values() for b in f["backends"]})}
    return report.EvalResult(name="text", metrics={"sets": sets, "models": models}, sections=sections,
                             summary=summary)


def confusion_from_dict(d: dict):
    from .metrics import Confusion

    return Confusion(tuple(d["labels"]), tuple(tuple(r) for r in d["counts"]))


# --- cross-domain view: lexicon vs trained, each domain scored by a model that never saw it ----------


def _binary_figures(is_neg: list[bool], scores: list[dict]) -> dict[str, Any]:
    from .metrics import calibration

    pred = [s["label"] == "negative" for s in scores]
    n_neg = sum(is_neg)
    n_pos = len(is_neg) - n_neg
    r_neg = sum(p and y for p, y in zip(pred, is_neg)) / n_neg if n_neg else None
    r_pos = sum((not p) and (not y) for p, y in zip(pred, is_neg)) / n_pos if n_pos else None
    out: dict[str, Any] = {
        "n": len(is_neg), "n_negative": n_neg, "recall_negative": r_neg, "recall_non_negative": r_pos,
        "uar": (r_neg + r_pos) / 2 if r_neg is not None and r_pos is not None else None,
        "roc_auc": roc_auc(is_neg, [-s["sentiment"] for s in scores]), "ece": None,
    }
    # ECE over the rows that have a probability (a row with no words at all has none).
    pairs = [(s.get("p_negative"), y) for s, y in zip(scores, is_neg) if s.get("p_negative") is not None]
    if pairs:
        conf = [max(p, 1.0 - p) for p, _ in pairs]
        correct = [(p >= 0.5) == y for p, y in pairs]
        out["ece"] = calibration(conf, correct).ece
        out["n_with_probability"] = len(pairs)
    return out


def evaluate_cross_domain(*, options: TextEvalOptions, config, run: RunOptions, out: Path,
                          cache_dir: Path) -> report.EvalResult:
    import dataclasses

    import numpy as np

    from ..text import TextScorer
    from ..text_linear import load_models
    from .text_folds import fold_models

    folder = Path(config.text.lexicon_dir) if config.text.lexicon_dir else models_root() / "text"
    _models, card = load_models(folder)
    trained = TextScorer.load(dataclasses.replace(config.text, backend="trained"))
    lexicon = TextScorer.load(dataclasses.replace(config.text, backend="lexicon"))
    data_text = default_data_dir() / "text"
    lex_sig = fingerprint("text-xd/1", repr(lexicon.options), folder_digest(folder))
    out.mkdir(parents=True, exist_ok=True)
    units: dict[str, dict] = {}
    pred_rows: list[list] = []
    table_rows = []
    summary = [f"text, cross-domain (each domain scored by a model trained without it; every "
               f"{options.cross_domain_every}. Mandarin row, every English row): lexicon vs trained, "
               f"negative vs rest"]
    for lang in ("zh", "en"):
        entry = card["models"][lang]
        nested = {r["unit"]: r for r in entry.get("cross_domain", [])}
        corpus, folds = fold_models(lang, entry, data_text, cache_dir / "text-folds",
                                    also_look_in=(repo_root() / ".cache" / "text",),
                                    negative_below=trained.options.negative_below)
        for name, test, model in folds:
            idx = np.flatnonzero(test)[:: options.cross_domain_every if lang == "zh" else 1]
            if options.limit:
                idx = idx[: options.limit]
            texts = [corpus.texts[i] for i in idx]
            is_neg = [bool(corpus.negative[i]) for i in idx]
            fold_scorer = trained.with_trained_model(model)
            model_sig = fingerprint(float(model.bias), float(model.platt_a), float(model.platt_b),
                                    hashlib.sha1(model.weights.tobytes()).hexdigest())
            figures = {}
            for backend, sc, sig in (("lexicon", lexicon, lex_sig),
                                     ("trained", fold_scorer, fingerprint(lex_sig, model_sig, repr(trained.options)))):
                items = []
                for start in range(0, len(texts), options.chunk_rows):
                    chunk = [(t, lang) for t in texts[start:start + options.chunk_rows]]
                    digest = hashlib.sha1(repr(chunk).encode("utf-8")).hexdigest()[:10]
                    items.append(Item(f"xd-{lang}-{_safe(name)}-{backend}-{start:06d}-{digest}", {"rows": chunk}))
                results = run_items(items, lambda it, sc=sc: score_chunk(it, scorer=sc),
                                    cache_dir=cache_dir / "text", signature=sig, options=run,
                                    desc=f"text {name} {backend}")
                failed = [r for r in results if r.error]
                if failed:
                    raise EvaluationError(f"text scoring failed on {name}: {failed[0].error}")
                scores = [s for r in results for s in r.result["scores"]]
                figures[backend] = _binary_figures(is_neg, scores)
                pred_rows += [[lang, name, backend, int(i), "negative" if y else "non-negative", s["label"],
                               s["sentiment"], s.get("p_negative")] for i, y, s in zip(idx, is_neg, scores)]
            nest = nested.get(name, {})
            figures["nested"] = nest
            figures["shipped_recipe"] = entry["chosen"]
            units[f"{lang}:{name}"] = figures
            lx, tr = figures["lexicon"], figures["trained"]
            table_rows.append([lang, name, lx["n"], lx["n_negative"], lx["uar"], lx["recall_negative"],
                               tr["uar"], tr["recall_negative"], tr["roc_auc"], tr["ece"], nest.get("uar"),
                               nest.get("chosen", "")])
            summary.append(f"  {lang} {name}: n={lx['n']}  lexicon UAR {report.fmt(lx['uar'])} "
                           f"neg recall {report.fmt(lx['recall_negative'])}  |  trained UAR {report.fmt(tr['uar'])} "
                           f"neg recall {report.fmt(tr['recall_negative'])} ECE {report.fmt(tr['ece'])}")
    for lang in ("zh", "en"):
        for backend in ("lexicon", "trained"):
            vals = [u[backend] for k, u in units.items() if k.startswith(lang + ":")]
            summary.append(f"  {lang} mean over domains, {backend}: UAR "
                           f"{report.fmt(_mean([v['uar'] for v in vals]))}  negative recall "
                           f"{report.fmt(_mean([v['recall_negative'] for v in vals]))}"
                           + (f"  ECE {report.fmt(_mean([v['ece'] for v in vals]))}" if backend == "trained" else ""))
    report.write_csv(out / "predictions.csv",
                     headers=["language", "domain", "backend", "row", "truth", "predicted", "score", "p_negative"],
                     rows=pred_rows)
    headers = ["lang", "left-out domain", "rows", "negative", "lexicon UAR", "lexicon neg. recall", "trained UAR",
               "trained neg. recall", "trained AUC", "trained ECE", "nested UAR (train_text)", "nested choice"]
    sections = [report.Section("Cross-domain: lexicon vs trained (each domain left out of training)",
                               report.table(headers, table_rows))]
    models = {"text_scorer": repr(trained.options), "text_models_sha1": folder_digest(folder),
              "shipped": {lang: card["models"][lang]["chosen"] for lang in ("zh", "en")}}
    return report.EvalResult(name="text", metrics={"cross_domain": units, "models": models,
                                                   "every": options.cross_domain_every},
                             sections=sections, summary=summary)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _safe(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
