"""Leave-one-speaker-out copies of the shipped emotion model, for scoring it on the corpus it learnt from.

The shipped model in ``models/emotion/`` was trained on every EmoDB speaker, so scoring it on EmoDB
would measure memory, not recognition. For each held-out speaker this module refits the model's two
heads on the *other* speakers' clips only, keeping the shipped model's architecture and
hyper-parameters: each head's inputs (its ``rel:<feature>`` inputs are relative to the speaker's
baseline, ``abs:<feature>`` inputs are taken as they are), its L2 strength (``model.json`` ``loso``) and
z-score clip. Training rows are the clips as recorded and their 8 kHz mu-law versions; a training clip's
baseline is the mean of its speaker's other clips, or of those labelled calm (neutral, sad) when the
model was trained that way (``train_baseline = "calm-labels"``; training speakers' labels only); the
temperature is fitted on inner
leave-one-speaker-out logits of the training speakers; the logistic fit is
:func:`pipeline.training.emotion.fit_logistic` (class-balanced, deterministic).

This is the shipped *recipe's shape*, not every detail of ``scripts/train_emotion.py`` (which may add
augmented conditions or choose baselines differently), so its figures can differ a little from the
model card's. The held-out speaker is then scored by an ordinary :class:`~pipeline.emotion.EmotionModel`
built from the refitted heads, i.e. by the product's own prediction code. Nothing learnt comes from the
speaker being scored.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import safetensors.numpy

from ..emotion import (CLASSES, HIGH_AROUSAL, META_FILE, MODEL_FILE, EmotionModel, Head, default_model_dir,
                       resolve_model_dir)
from ..training.emotion_calibration import fit_temperature
from ..training.emotion_heads import _standardise, baseline_means, fit_logistic, pooled_within_std
from ..errors import EvaluationError

log = logging.getLogger("pipeline.evaluate.emotion_folds")

HEADS = ("global", "relative")
# How a training clip's baseline was formed: from all the speaker's other clips, or from those labelled
# low-arousal. ("calm-predicted" would need the refitted global head's own judgement: not supported.)
TRAIN_BASELINES = ("all", "calm-labels")


def read_recipe(model: EmotionModel) -> dict:
    """The shipped model's speakers and, per head, its input names, L2 strength and clip.

    Raises
    ------
    EvaluationError
        If the model folder lacks what a refit needs (a model from another recipe).
    """
    model_dir = resolve_model_dir(model.options.model_dir) if model.options.model_dir else default_model_dir()
    try:
        with open(model_dir / META_FILE, encoding="utf-8") as fh:
            meta = json.load(fh)
        arrays = safetensors.numpy.load_file(str(model_dir / MODEL_FILE))
        recipe = {"speakers": list(meta.get("trained_on", {}).get("speakers", [])), "heads": {}}
        for head in HEADS:
            recipe["heads"][head] = {
                "names": tuple(meta["heads"][head]),
                "l2": float(meta["loso"][head]["l2"]),
                "clip": float(arrays[f"{head}.clip"][0]),
                "train_baseline": meta["loso"][head].get("train_baseline", "all"),
            }
            if recipe["heads"][head]["train_baseline"] not in TRAIN_BASELINES:
                raise ValueError(f"train_baseline {recipe['heads'][head]['train_baseline']!r} cannot be refitted "
                                 f"here (supported: {TRAIN_BASELINES})")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(
            f"cannot read the training recipe of emotion model {model.model_id} in {model_dir} ({exc}); "
            "leave-one-speaker-out scoring needs its model.json. Evaluate it on speakers it was not "
            "trained on, or pass --protocol as-is (figures are then in-corpus, not speaker-independent)"
        ) from exc
    return recipe


@dataclass(frozen=True)
class _Inputs:
    """Column indices of a head's relative and absolute inputs in the feature vector."""

    rel: np.ndarray
    abs: np.ndarray

    @classmethod
    def of(cls, names: Sequence[str], vector_names: Sequence[str]) -> "_Inputs":
        try:
            rel = [vector_names.index(n[4:]) for n in names if n.startswith("rel:")]
            ab = [vector_names.index(n[4:]) for n in names if n.startswith("abs:")]
        except ValueError as exc:
            raise EvaluationError(f"emotion head input not in the feature vector: {exc}") from exc
        if len(rel) + len(ab) != len(names):
            raise EvaluationError("emotion head inputs must be named rel:<feature> or abs:<feature>")
        return cls(np.array(rel, dtype=np.int64), np.array(ab, dtype=np.int64))

    def rows(self, x: np.ndarray, speakers: np.ndarray, calm: np.ndarray | None) -> np.ndarray:
        """Head inputs [n, d] of clips x [n, D]; relative parts centred on the mean of the speaker's other
        clips (only the ``calm`` ones [n] when given, all of them if fewer than 3 are calm)."""
        parts = []
        if len(self.rel):
            xr = x[:, self.rel]
            parts.append(xr - baseline_means(xr, speakers, calm))
        if len(self.abs):
            parts.append(x[:, self.abs])
        return np.hstack(parts)


def _normaliser(inputs: _Inputs, xs: Sequence[np.ndarray], speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative part: mean 0 and the pooled within-speaker spread; absolute part: population statistics."""
    spk = np.concatenate([speakers] * len(xs))
    means, scales = [], []
    if len(inputs.rel):
        means.append(np.zeros(len(inputs.rel)))
        scales.append(pooled_within_std(np.vstack([x[:, inputs.rel] for x in xs]), spk))
    if len(inputs.abs):
        stacked = np.vstack([x[:, inputs.abs] for x in xs])
        mean, sd = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
        means.append(np.where(np.isfinite(mean), mean, 0.0))
        scales.append(np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0))
    return np.concatenate(means), np.concatenate(scales)


def _fit(inputs: _Inputs, xs: Sequence[np.ndarray], y: np.ndarray, speakers: np.ndarray, *, l2: float,
         clip: float, calm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = _normaliser(inputs, xs, speakers)
    z = np.vstack([_standardise(inputs.rows(x, speakers, calm), mean, scale, clip) for x in xs])
    w, b = fit_logistic(z, np.concatenate([y] * len(xs)), l2=l2, n_classes=len(CLASSES))
    return w, b, mean, scale


def fit_head(xs: Sequence[np.ndarray], y: np.ndarray, speakers: np.ndarray, *, names: Sequence[str],
             vector_names: Sequence[str], l2: float, clip: float, train_baseline: str = "all") -> Head:
    """Fit one head on training speakers only.

    Parameters
    ----------
    xs : per rate, full feature vectors [n, len(vector_names)] of the same n training clips
    y : class indices [n]
    speakers : [n]
    train_baseline : "all" or "calm-labels" (see TRAIN_BASELINES)
    """
    inputs = _Inputs.of(names, tuple(vector_names))
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    calm = ~np.isin(y, high) if train_baseline == "calm-labels" else None
    w, b, mean, scale = _fit(inputs, xs, y, speakers, l2=l2, clip=clip, calm=calm)
    # Temperature from inner leave-one-speaker-out logits, so calibration is also fitted out of sample.
    logits, labels = [], []
    for s in np.unique(speakers):
        test = speakers == s
        wi, bi, mi, si = _fit(inputs, [x[~test] for x in xs], y[~test], speakers[~test], l2=l2, clip=clip,
                              calm=None if calm is None else calm[~test])
        for x in xs:
            rows = inputs.rows(x[test], speakers[test], None if calm is None else calm[test])
            logits.append(_standardise(rows, mi, si, clip) @ wi + bi)
            labels.append(y[test])
    temperature = fit_temperature(np.vstack(logits), np.concatenate(labels))
    return Head(names=tuple(names), mean=mean, scale=scale, weights=w, bias=b, temperature=temperature, clip=clip)


def fold_models(model: EmotionModel, *, vectors: Mapping[str, np.ndarray], labels: Sequence[str],
                speakers: Sequence[str]) -> dict[str, EmotionModel]:
    """One EmotionModel per speaker, refitted on every other speaker's clips (all rates in ``vectors``).

    ``vectors``: rate name -> [n, len(model.vector_names)] for the same n clips as ``labels``.
    """
    recipe = read_recipe(model)
    spk = np.asarray(speakers)
    y = np.array([CLASSES.index(label) for label in labels])
    if len(np.unique(spk)) < 3:
        raise EvaluationError(
            f"leave-one-speaker-out needs at least 3 speakers in the manifest, found {len(np.unique(spk))}")
    models: dict[str, EmotionModel] = {}
    for held_out in np.unique(spk):
        train = spk != held_out
        heads = {head: fit_head([v[train] for v in vectors.values()], y[train], spk[train],
                                names=r["names"], vector_names=model.vector_names, l2=r["l2"], clip=r["clip"],
                                train_baseline=r["train_baseline"])
                 for head, r in recipe["heads"].items()}
        models[str(held_out)] = EmotionModel(
            model_id=f"{model.model_id}-without-{held_out}", heads=heads, vector_names=model.vector_names,
            prosody=model.prosody_options, options=model.options)
        log.info("fold without %s: %s training clips", held_out, int(train.sum()))
    return models
