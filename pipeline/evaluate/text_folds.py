"""Leave-one-domain-out models of the shipped text recipe, for ``callpulse evaluate text``.

For every Mandarin domain and English brand fold, the recipe in ``models/text/trained.json`` is refitted
without that unit (the same fit as ``pipeline/training/text.py``, whose fold weights are reused when
``scripts/train_text.py`` left them in ``.cache/text``) and calibrated on the other units' logits, so what
``evaluate text`` scores on a unit is as out-of-domain as its labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..text_linear import DEFAULT_NEGATIVE_FROM_P, FeatureSpec, LinearTextModel, feature_matrix
from ..training.text import (
    Candidate,
    _design,
    decision,
    en_corpus,
    en_eval_units,
    fit_candidate,
    fit_platt,
    fold_data_key,
    fold_path,
    lexicon_feature,
    sigmoid,
    zh_corpus,
    zh_eval_units,
)
from ..training.text_cut import CutRule


def corpus_and_units(language: str, data_text: Path):
    corpus = zh_corpus(data_text) if language == "zh" else en_corpus(data_text)
    units = zh_eval_units(corpus) if language == "zh" else en_eval_units(corpus)
    return corpus, units


def shipped_candidate(entry: dict) -> Candidate:
    return Candidate(entry["chosen"], "ngram", FeatureSpec.from_json(entry["features"]), float(entry["C"]),
                     bool(entry["use_lexicon"]), entry.get("mix", "lr"))


def fold_models(language: str, entry: dict, data_text: Path, cache_dir: Path, also_look_in: Sequence[Path] = (),
                negative_below: float = -0.2):
    """For each unit: (name, rows scored, LinearTextModel trained without that unit's domain).

    Each fold's Platt calibration is fitted on the other units' out-of-domain logits (never on its own),
    so the probabilities scored on a unit are as out-of-domain as its labels. Fold weights are cached
    under ``cache_dir`` (keyed by recipe and data; ``also_look_in`` first, e.g. the folds
    ``scripts/train_text.py`` left in ``.cache/text``), so a second run only scores. An entry that is a
    blend (English: n-gram + MiniLM head, ``"head"`` in trained.json) is refitted part by part."""
    if entry.get("head"):
        from ..training.text import blend_fold_models

        return blend_fold_models(language, entry, data_text, cache_dir, also_look_in, negative_below)
    cand = shipped_candidate(entry)
    corpus, units = corpus_and_units(language, data_text)
    y = corpus.negative
    lex = lexicon_feature(corpus.texts, language, next((d for d in also_look_in if d.is_dir()), cache_dir))
    data_key = fold_data_key(corpus, lex)
    X = None
    fitted = []
    for name, test, train in units:
        path = fold_path(cache_dir, cand, name, data_key)
        for folder in also_look_in:
            if fold_path(folder, cand, name, data_key).is_file():
                path = fold_path(folder, cand, name, data_key)
                break
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                coef, bias, logits = z["coef"], float(z["bias"]), z["logits"]
        else:
            if X is None:
                X = _design(cand, feature_matrix(corpus.texts, cand.spec), lex)
            w, bias = fit_candidate(cand, X, y, train)
            coef, logits = w.astype(np.float32), decision(X[test], w, bias)
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.savez(path, coef=coef, bias=np.float64(bias), logits=logits)
        fitted.append((name, test, coef, bias, logits))
    hotel = ("酒店", "chnsenticorp_hotel")
    out = []
    for k, (name, test, coef, bias, _logits) in enumerate(fitted):
        others = [j for j in range(len(fitted)) if j != k and not (name in hotel and fitted[j][0] in hotel)]
        a, b = fit_platt(np.concatenate([fitted[j][4] for j in others]),
                         np.concatenate([y[fitted[j][1]] for j in others]))
        # The decision cut too is chosen on the other units, by the rule the shipped entry was made with
        # (an entry without one keeps the equal-prior default).
        p0 = DEFAULT_NEGATIVE_FROM_P
        if "cut_rule" in entry:
            cut = CutRule(**entry["cut_rule"]).choose([sigmoid(a * fitted[j][4] + b) for j in others],
                                                     [y[fitted[j][1]] for j in others])
            p0 = (cut + negative_below) / (1.0 + negative_below)
        n_b = cand.spec.n_buckets
        weights = np.asarray(coef[:n_b], np.float32)
        lex_w = float(coef[n_b]) if cand.use_lexicon else 0.0
        out.append((name, test, LinearTextModel(language, cand.spec, weights, lex_w, bias, a, b, p0)))
    return corpus, out
