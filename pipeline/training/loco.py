"""Cross-corpus training and leave-one-corpus-out (LOCO) selection of the per-second emotion heads.

The per-second heads (``global``: no baseline; ``relative``: minus the speaker's calm baseline) are
trained on clips of several corpora (:mod:`pipeline.training.corpora`) and **chosen** by how they do on a
corpus they never saw:

* For each training corpus C in turn, the heads are trained on the other corpora and score C. The
  recipe used for that fold (feature set, class balance, L2, relative inputs, how training baselines
  are formed) is itself chosen by an inner LOCO over the *other* corpora only (nested), so nothing of C
  reaches training, selection or calibration of the model that scores C (``tests/test_emotion_loco.py``
  perturbs C and checks the fold's model does not move).
* URDU (test only) is scored by the model trained on all training corpora, its recipe chosen by LOCO
  over them.
* The shipped recipe is the one with the best mean LOCO score over the training corpora.

Each clip is scored as recorded and as 8 kHz mu-law audio, as a whole clip and in the engine's live
pattern (2 s windows every second). The held-out speaker's baseline is the mean of their *other*
clips (windows of other clips) that the fold's global head calls calm: their audio only, never labels.
Temperatures are fitted on out-of-fold logits of the training corpora (inner LOCO).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..emotion import CLASSES, HIGH_AROUSAL
from .corpora import RATES, Features
from .emotion_calibration import scores_summary, softmax, uar
from .loco_heads import (  # noqa: F401  (re-exported: the recipe's public names)
    _ANG, _HAP, _NEU, _SAD, CALM_AROUSAL_MAX, GLOBAL_GRID, RELATIVE_GRID, Heads, Recipe, _grid, _groups,
    apply_heads, fit_heads,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- figures
def figures(probs: np.ndarray, y: np.ndarray, speakers: np.ndarray, *, label_min_confidence: float = 0.0,
            sad_min_confidence: float = 0.8) -> dict:
    """Every figure the card reports for one set of held-out probabilities [n, 4]."""
    s = scores_summary(probs, y, speakers)
    ah = np.isin(y, [_ANG, _HAP])
    ah_pred = np.where(probs[ah, _ANG] >= probs[ah, _HAP], _ANG, _HAP)
    # valence sign among high-arousal speech: what fusion needs to tell excitement from anger
    neutral = y == _NEU
    pred = probs.argmax(axis=1)
    # the product's label rule (EmotionModel._scores): below its confidence a reading is "neutral"
    needed = np.where(pred == _SAD, max(sad_min_confidence, label_min_confidence), label_min_confidence)
    gated = np.where(probs.max(axis=1) >= needed, pred, _NEU)
    keep = ("uar_4class", "uar_angry_vs_neutral", "uar_high_vs_low_arousal", "ece", "recall_per_class",
            "predicted_share")
    out = {k: s[k] for k in keep}
    out["uar_angry_vs_happy"] = uar(y[ah], ah_pred, [_ANG, _HAP])
    out["neutral_labelled_sad"] = float(np.mean(pred[neutral] == _SAD)) if neutral.any() else math.nan
    out["neutral_labelled_sad_gated"] = float(np.mean(gated[neutral] == _SAD)) if neutral.any() else math.nan
    out["angry_labelled_angry_gated"] = float(np.mean(gated[y == _ANG] == _ANG)) if (y == _ANG).any() else math.nan
    out["n"] = int(len(y))
    return out


HEADLINE = ("uar_4class", "uar_angry_vs_neutral", "uar_angry_vs_happy", "uar_high_vs_low_arousal", "ece")


def score_heads(F: Features, heads: Heads, test: np.ndarray, recipe: Recipe | None = None, *,
                label_min_confidence: float = 0.0) -> dict:
    logits = apply_heads(F, heads, test, recipe)
    y_clip, spk_clip = F.labels[test], F.speakers[test]
    wrows = test[F.window_clip]
    y_win, spk_win = F.labels[F.window_clip][wrows], F.speakers[F.window_clip][wrows]
    temps = {"global": heads.global_.temperature, "relative": heads.relative.temperature}
    out: dict = {}
    for kind, yy, ss in (("clip", y_clip, spk_clip), ("win", y_win, spk_win)):
        for rate in RATES:
            for head in ("global", "relative"):
                p = softmax(logits[kind][rate][head] / temps[head])
                out.setdefault(head, {}).setdefault(kind, {})[rate] = figures(
                    p, yy, ss, label_min_confidence=label_min_confidence)
    return out


def _selection_score(F: Features, train: np.ndarray, recipe: Recipe, head: str,
                     global_recipe: Recipe | None = None) -> float:
    """Mean over inner folds of the worst-rate 4-class UAR of ``head`` on clips (no calibration needed)."""
    vals = []
    for held in _groups(F, train):
        inner = fit_heads(F, train & ~held, recipe, calibrate=False)
        if head == "relative" and global_recipe is not None:
            # the calm judge is the global head of the recipe already chosen
            inner = Heads(fit_heads(F, train & ~held, global_recipe, calibrate=False).global_, inner.relative)
        lg = apply_heads(F, inner, held, recipe)["clip"]
        y = F.labels[held]
        vals.append(min(uar(y, lg[r][head].argmax(axis=1), range(len(CLASSES))) for r in RATES))
    return float(np.mean(vals))


def select_recipe(F: Features, train: np.ndarray, *, base: Recipe = Recipe(),
                  progress: Callable[[str], None] = log.info, table: list | None = None) -> Recipe:
    """The recipe with the best inner-LOCO score on the training clips ``train`` only: first the global
    head (feature set, class balance, L2), then the relative head (inputs, training baselines, L2)."""
    best_g = None
    for rec in _grid(base, GLOBAL_GRID):
        score = _selection_score(F, train, rec, "global")
        if table is not None:
            table.append(("global", rec.describe(), score))
        progress(f"    global   {rec.describe():90s} {score:.3f}")
        if best_g is None or score > best_g[0] + 1e-9:
            best_g = (score, rec)
    g_rec = best_g[1]
    best_r = None
    for rec in _grid(g_rec, RELATIVE_GRID):
        score = _selection_score(F, train, rec, "relative", global_recipe=g_rec)
        if table is not None:
            table.append(("relative", rec.describe(), score))
        progress(f"    relative {rec.describe():90s} {score:.3f}")
        if best_r is None or score > best_r[0] + 1e-9:
            best_r = (score, rec)
    return best_r[1]


def _combined(F: Features, train: np.ndarray, recipe: Recipe) -> Heads:
    """Heads of one recipe; the relative head's calm judge is the global head of the same recipe (the
    engine uses the model's own global head for that)."""
    return fit_heads(F, train, recipe)


def loco(F: Features, *, train_corpora: Sequence[str], test_only: Sequence[str] = (),
         recipe: Recipe | None = None, label_min_confidence: float = 0.0,
         progress: Callable[[str], None] = log.info) -> dict:
    """Leave-one-corpus-out figures: ``{corpus: {"recipe", "trained_on", "figures"}}``.

    ``recipe`` None = chosen per fold by nested LOCO on the fold's training corpora only.
    """
    corp = F.corpora
    allowed = np.isin(corp, list(train_corpora))
    out = {}
    folds = [(c, allowed & (corp != c)) for c in train_corpora] + [(u, allowed) for u in test_only]
    for held, train in folds:
        test = corp == held
        if not test.any():
            continue
        assert not (train & test).any(), "a held-out corpus must never be trained on"
        progress(f"LOCO: {held} held out; training on {sorted(set(corp[train]))}")
        rec = recipe if recipe is not None else select_recipe(F, train, progress=progress)
        heads = fit_heads(F, train, rec)
        out[held] = {"recipe": dataclasses.asdict(rec), "trained_on": sorted(set(corp[train])),
                     "temperatures": {"global": heads.global_.temperature, "relative": heads.relative.temperature},
                     "weights_sha256": heads_digest(heads),
                     "figures": score_heads(F, heads, test, rec, label_min_confidence=label_min_confidence)}
    return out


def heads_digest(heads: Heads) -> str:
    """SHA-256 of both heads' arrays: equal digests = the same model."""
    import hashlib

    h = hashlib.sha256()
    for head in (heads.global_, heads.relative):
        for name, arr in sorted(head.to_arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(np.round(arr, 10)).tobytes())
    return h.hexdigest()


def fold_masks(F: Features, train_corpora: Sequence[str], test_only: Sequence[str] = ()
               ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(held-out corpus, training clips, test clips) of every LOCO fold."""
    corp = F.corpora
    allowed = np.isin(corp, list(train_corpora))
    return [(c, allowed & (corp != c), corp == c) for c in train_corpora] + \
           [(u, allowed, corp == u) for u in test_only]


def summary_rows(result: Mapping[str, Mapping], *, head: str, kind: str) -> list[list]:
    """Table rows: corpus, rate, headline figures, for one head and clip/window kind."""
    rows = []
    for corpus, r in result.items():
        for rate in RATES:
            f = r["figures"][head][kind][rate]
            rows.append([corpus, rate, *(round(f[m], 3) for m in HEADLINE),
                         round(f["neutral_labelled_sad"], 3), round(f["neutral_labelled_sad_gated"], 3)])
    return rows


def mean_loco(result: Mapping[str, Mapping], corpora: Iterable[str], *, head: str, kind: str, metric: str) -> float:
    vals = [min(result[c]["figures"][head][kind][r][metric] for r in RATES) for c in corpora if c in result]
    return float(np.mean(vals)) if vals else math.nan


# ---------------------------------------------------------------------------- model folders
def write_model_dir(out_dir, heads: Heads, *, prosody, names: Sequence[str], recipe: Recipe, trained_on: Mapping,
                    card_figures: Mapping | None = None, label_min_confidence: float = 0.0) -> dict:
    """Write a model folder the engine loads (``weights.safetensors`` + ``model.json``, no turn heads).

    ``trained_on``: corpora, licences, clips and speakers it learnt from (written into model.json, so the
    card and ``evaluate emotion`` can tell what a model has seen).
    """
    import hashlib
    import json
    from pathlib import Path

    import safetensors.numpy

    from ..emotion import META_FILE, MODEL_FILE
    from .emotion import _round

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for head_name, head in (("global", heads.global_), ("relative", heads.relative)):
        for field, value in head.to_arrays().items():
            arrays[f"{head_name}.{field}"] = value
    safetensors.numpy.save_file(arrays, str(out_dir / MODEL_FILE))
    digest = hashlib.sha256((out_dir / MODEL_FILE).read_bytes()).hexdigest()
    tag = "-".join(sorted(_short(c) for c in trained_on.get("corpora", []))) or "custom"
    meta = {
        "id": f"{tag}-prosody-lr-{digest[:8]}",
        "classes": list(CLASSES),
        "high_arousal": list(HIGH_AROUSAL),
        "heads": {"global": list(heads.global_.names), "relative": list(heads.relative.names)},
        "prosody_options": dataclasses.asdict(prosody),
        "vector_names": list(names),
        "weights_sha256": digest,
        "recipe": dataclasses.asdict(recipe),
        "label_min_confidence": label_min_confidence,
        "trained_on": dict(trained_on),
        # emotion_folds reads each head's L2 and training baseline from here
        "loso": {"global": {"l2": recipe.l2_global, "train_baseline": "all"},
                 "relative": {"l2": recipe.l2_relative, "train_baseline": recipe.train_baseline}},
        "loco": _round(dict(card_figures or {})),
    }
    with open(out_dir / META_FILE, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return meta


def _short(corpus: str) -> str:
    return {"EmoDB": "emodb", "nEMO": "nemo", "emotiontts-ko": "ko", "URDU": "urdu"}.get(corpus, _slug(corpus))


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-")[:24] or "custom"


def trained_on(F: Features, train: np.ndarray) -> dict:
    from collections import Counter

    from .corpora import LICENCES

    corp = F.corpora[train]
    names = sorted(set(corp.tolist()))
    return {"corpora": names, "licences": {c: LICENCES.get(c, "as the data owner grants") for c in names},
            "clips": int(train.sum()), "clips_per_corpus": {c: int(n) for c, n in sorted(Counter(corp.tolist()).items())},
            "speakers": sorted({r.speaker for r, k in zip(F.rows, train) if k}), "rates": list(RATES)}


# ---------------------------------------------------------------------------- a bank's own clips
def cross_validate(F: Features, folds: Sequence[tuple[str, np.ndarray, np.ndarray]], recipe: Recipe | None, *,
                   label_min_confidence: float = 0.0, progress: Callable[[str], None] = log.info) -> dict:
    """Figures of each fold (name, training clips, test clips); ``recipe`` None = chosen per fold on its
    training clips only (nested)."""
    out = {}
    for name, train, test in folds:
        if not test.any() or not train.any():
            continue
        assert not (train & test).any(), "a held-out fold must never be trained on"
        rec = recipe if recipe is not None else select_recipe(F, train, progress=lambda s: None)
        heads = fit_heads(F, train, rec)
        out[name] = {"recipe": dataclasses.asdict(rec), "trained_on": sorted(set(F.corpora[train].tolist())),
                     "figures": score_heads(F, heads, test, rec, label_min_confidence=label_min_confidence)}
        progress(f"  {name}: relative head 4-class UAR (windows, 8k) "
                 f"{out[name]['figures']['relative']['win']['8k-mulaw']['uar_4class']:.3f}")
    return out


def validation_folds(F: Features) -> tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Leave-one-corpus-out when the clips come from two corpora or more, else groups of speakers."""
    everything = np.ones(len(F.rows), dtype=bool)
    corpora = sorted(set(F.corpora.tolist()))
    if len(corpora) >= 2:
        return "leave-one-corpus-out", [(c, F.corpora != c, F.corpora == c) for c in corpora]
    groups = _groups(F, everything)
    return (f"leave-speakers-out ({len(groups)} groups of speakers)",
            [(f"speakers {sorted({r.speaker for r, k in zip(F.rows, g) if k})}", ~g, g) for g in groups])


def train_from_rows(rows, out_dir, *, cache_dir=None, prosody=None, label_min_confidence: float = 0.6,
                    progress: Callable[[str], None] = log.info) -> dict:
    """``callpulse train emotion``: the shipped recipe on any labelled clips; writes a model folder
    (weights, model.json, README.md card) that ``[emotion] model_dir`` loads.

    Raises DatasetError (before any training) when the clips cannot train a model (one class, one speaker).
    """
    from pathlib import Path

    from .corpora import check_trainable, extract_features
    from ..prosody import ProsodyOptions

    prosody = prosody or ProsodyOptions()
    check_trainable(rows, where=f"{len(rows)} clips")
    F = extract_features(rows, prosody=prosody, cache_dir=None if cache_dir is None else Path(cache_dir),
                         progress=progress)
    protocol, folds = validation_folds(F)
    progress(f"{len(F.rows)} clips, {len(set(F.speakers))} speakers, corpora {sorted(set(F.corpora.tolist()))}; "
             f"figures by {protocol} (recipe chosen inside each fold)")
    figures = cross_validate(F, folds, None, label_min_confidence=label_min_confidence, progress=progress)
    everything = np.ones(len(F.rows), dtype=bool)
    recipe = select_recipe(F, everything, progress=lambda s: None)
    heads = fit_heads(F, everything, recipe)
    meta = write_model_dir(out_dir, heads, prosody=prosody, names=F.names, recipe=recipe,
                           trained_on=trained_on(F, everything),
                           card_figures={"protocol": protocol, "folds": figures},
                           label_min_confidence=label_min_confidence)
    write_card(Path(out_dir), meta, protocol=protocol, folds=figures)
    progress(f"wrote model {meta['id']} to {out_dir} (recipe: {recipe.describe()})")
    return meta


def figure_table(folds: Mapping[str, Mapping], *, head: str, kind: str) -> str:
    lines = ["| held out | rate | 4-class UAR | angry vs neutral | angry vs happy | arousal UAR | ECE | neutral labelled sad (argmax / gated) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in folds.items():
        for rate in RATES:
            f = r["figures"][head][kind][rate]
            lines.append(f"| {name} | {rate} | {f['uar_4class']:.3f} | {f['uar_angry_vs_neutral']:.3f} | "
                         f"{f['uar_angry_vs_happy']:.3f} | {f['uar_high_vs_low_arousal']:.3f} | {f['ece']:.3f} | "
                         f"{f['neutral_labelled_sad']:.3f} / {f['neutral_labelled_sad_gated']:.3f} |")
    return "\n".join(lines)


def write_card(out_dir, meta: Mapping, *, protocol: str, folds: Mapping, extra: str = "") -> None:
    """README.md of a model folder: what it learnt from (licences), how it was checked, its figures."""
    from pathlib import Path

    t = meta["trained_on"]
    nc = [c for c, lic in t["licences"].items() if "NC" in lic or "research" in lic]
    nc_named = [f"{c} ({t['licences'][c]})" for c in nc]
    licence = (f"**Non-commercial.** It learnt from {', '.join(nc_named)}: the "
               "weights inherit those terms and may not be used commercially without the data owners' permission."
               if nc else "Licences of the training data: " + ", ".join(f"{c}: {lic}" for c, lic in t["licences"].items())
               + " (a bank's own recordings: as the bank's data terms say).")
    recipe = Recipe(**meta["recipe"])
    repo = Path(__file__).resolve().parents[2]
    shown = Path(out_dir).resolve()
    shown = shown.relative_to(repo) if shown.is_relative_to(repo) else shown
    text = f"""# Emotion model `{meta['id']}`

Per-second acoustic emotion heads (`global`, `relative`) over the 55 prosody functionals of
`pipeline/prosody.py`, trained by `callpulse train emotion` / `pipeline.training.loco` (no turn heads).
Load it with `[emotion] model_dir = "{shown}"`.

{licence}

Trained on {t['clips']} clips ({', '.join(f'{c}: {n}' for c, n in t['clips_per_corpus'].items())}), {len(t['speakers'])}
speakers, each clip as recorded and as 8 kHz G.711 mu-law. Recipe (chosen by {protocol} inside the training
clips): {recipe.describe()}. Labels below {meta.get("label_min_confidence", 0.0)} confidence ("sad" below 0.8, `[emotion] sad_min_confidence`) read "neutral".

## Figures ({protocol}; each fold's recipe chosen on its training clips only)

Per-second windows (2 s every second, as the engine scores them), speaker-relative head:

{figure_table(folds, head='relative', kind='win')}

Global head (no baseline), per-second windows:

{figure_table(folds, head='global', kind='win')}
{extra}"""
    (Path(out_dir) / "README.md").write_text(text, encoding="utf-8")
