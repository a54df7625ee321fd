"""Leave-one-speaker-out copies of the shipped emotion model, for scoring it on the corpus it learnt from.

The shipped model in ``models/emotion/`` was trained on every EmoDB speaker, so scoring it on EmoDB
would measure memory, not recognition. For each held-out speaker this module refits the model's two
heads with the model's own recipe (the feature names, L2 strength and clip recorded in its
``model.json``/weights; class-balanced logistic regression from :mod:`pipeline.emotion_training`) on the
*other* speakers' clips only, at both rates as in training, and fits the temperature on inner
leave-one-speaker-out logits of those training speakers. The held-out speaker's clips are then scored by
an ordinary :class:`~pipeline.emotion.EmotionModel` built from those heads, i.e. the product's own
prediction code. Nothing learnt comes from the speaker being scored.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import safetensors.numpy

from ..emotion import CLASSES, META_FILE, MODEL_FILE, EmotionModel, Head, default_model_dir
from ..emotion_training import fit_logistic, fit_temperature, pooled_within_std, speaker_means
from ..errors import EvaluationError

log = logging.getLogger("pipeline.evaluate.emotion_folds")

HEADS = ("global", "relative")


def read_recipe(model: EmotionModel) -> dict:
    """The training recipe of the loaded model: per head its feature names, L2 and clip; the speakers it
    was trained on.

    Raises
    ------
    EvaluationError
        If the model folder lacks what a refit needs (a model from another recipe).
    """
    model_dir = Path(model.options.model_dir) if model.options.model_dir else default_model_dir()
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
            }
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(
            f"cannot read the training recipe of emotion model {model.model_id} in {model_dir} ({exc}); "
            "leave-one-speaker-out scoring needs its model.json. Evaluate it on speakers it was not "
            "trained on, or pass --protocol as-is (figures are then in-corpus, not speaker-independent)"
        ) from exc
    return recipe


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    z = (x - mean) / scale
    return np.clip(np.where(np.isfinite(z), z, 0.0), -clip, clip)


def _design(xs: Sequence[np.ndarray], speakers: np.ndarray, *, head: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked training inputs of one head over rates -> (x, mean, scale) before standardising."""
    stacked = np.vstack(xs)
    spk = np.concatenate([speakers] * len(xs))
    if head == "relative":
        # Each clip relative to the mean of its speaker's other clips, as the live baseline would see it.
        centred = np.vstack([x - speaker_means(x, speakers, leave_self_out=True) for x in xs])
        return centred, np.zeros(stacked.shape[1]), pooled_within_std(stacked, spk)
    mean = np.nanmean(stacked, axis=0)
    sd = np.nanstd(stacked, axis=0)
    return (stacked, np.where(np.isfinite(mean), mean, 0.0),
            np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0))


def _fit(xs: Sequence[np.ndarray], y: np.ndarray, speakers: np.ndarray, *, head: str, l2: float,
         clip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, mean, scale = _design(xs, speakers, head=head)
    w, b = fit_logistic(_standardise(x, mean, scale, clip), np.concatenate([y] * len(xs)), l2=l2,
                        n_classes=len(CLASSES))
    return w, b, mean, scale


def fit_head(xs: Sequence[np.ndarray], y: np.ndarray, speakers: np.ndarray, *, head: str, names: Sequence[str],
             l2: float, clip: float) -> Head:
    """Fit one head on training speakers only.

    Parameters
    ----------
    xs : per rate, the head's feature columns [n, d] of the same n training clips
    y : class indices [n]; speakers : [n]
    """
    w, b, mean, scale = _fit(xs, y, speakers, head=head, l2=l2, clip=clip)
    # Temperature from inner leave-one-speaker-out logits of the training speakers.
    logits, labels = [], []
    for s in np.unique(speakers):
        test = speakers == s
        wi, bi, mi, si = _fit([x[~test] for x in xs], y[~test], speakers[~test], head=head, l2=l2, clip=clip)
        for x in xs:
            xt = x[test] - speaker_means(x, speakers, leave_self_out=True)[test] if head == "relative" else x[test]
            logits.append(_standardise(xt, mi, si, clip) @ wi + bi)
            labels.append(y[test])
    temperature = fit_temperature(np.vstack(logits), np.concatenate(labels))
    return Head(names=tuple(names), mean=mean, scale=scale, weights=w, bias=b, temperature=temperature,
                clip=clip)


def fold_models(model: EmotionModel, *, vectors: Mapping[str, np.ndarray], labels: Sequence[str],
                speakers: Sequence[str]) -> dict[str, EmotionModel]:
    """One EmotionModel per speaker, trained on every other speaker's clips (all rates in ``vectors``).

    ``vectors``: rate name -> [n, len(model.vector_names)] for the same n clips as ``labels``.
    """
    recipe = read_recipe(model)
    spk = np.asarray(speakers)
    y = np.array([CLASSES.index(label) for label in labels])
    if len(np.unique(spk)) < 3:
        raise EvaluationError(
            f"leave-one-speaker-out needs at least 3 speakers in the manifest, found {len(np.unique(spk))}")
    index = {head: [model.vector_names.index(n) for n in recipe["heads"][head]["names"]] for head in HEADS}
    models: dict[str, EmotionModel] = {}
    for held_out in np.unique(spk):
        train = spk != held_out
        heads = {}
        for head in HEADS:
            r = recipe["heads"][head]
            heads[head] = fit_head([v[train][:, index[head]] for v in vectors.values()], y[train], spk[train],
                                   head=head, names=r["names"], l2=r["l2"], clip=r["clip"])
        models[str(held_out)] = EmotionModel(
            model_id=f"{model.model_id}-without-{held_out}", heads=heads, vector_names=model.vector_names,
            prosody=model.prosody_options, options=model.options)
        log.info("fold without %s: %s training clips", held_out, int(train.sum()))
    return models
