"""Training and cross-domain choice of the trained text scorer (``scripts/train_text.py`` drives this).

Protocol (every figure in ``models/text/README.md`` comes from here):

* Mandarin: 11 domains = the 10 ``category`` values of ``online_shopping_zh.csv`` + ChnSentiCorp hotels.
  Leave-one-domain-out: train on 10, score the one left out. The shopping set's ``酒店`` domain and
  ChnSentiCorp hotels share 5,574 texts, so either hotel domain, when left out, takes the other out of
  training too (one hotel *domain*, two sources).
* English: one labelled set (complaints_en.csv, complaint vs not). Its tweets are addressed to ~1,150
  brands; rows are grouped by the first @handle (no handle: its own group) and split into 5 group folds,
  so no brand is in both training and scoring. This is "across brands", not across corpora: there is no
  second English set here, and the card says so.
* English candidates are n-gram models, logistic heads on MiniLM-L6 int8 embeddings (computed one text
  per run by the run-time code, ``pipeline/text_minilm.py``, so the head sees what it will score), and
  *blends*: the sum of one n-gram candidate's and one head candidate's raw out-of-fold logits (each part
  fitted on the same training rows), calibrated as one.
* Candidates are compared on every fold. The figure reported for fold d comes from the candidate with the
  best mean UAR over the *other* folds (nested: d's scores never choose what is reported on d), and its
  Platt calibration is fitted on the other folds' out-of-fold logits. The shipped candidate is the one with
  the best mean over all folds, trained on everything, calibrated on all out-of-fold logits.

Deterministic: liblinear with a fixed random_state, folds fixed by handle hash / domain name.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..text_linear import FEATURE_VERSION, FeatureSpec, feature_matrix
from .text_cut import CutRule

log = logging.getLogger("pipeline.training.text")

HOTEL_DOMAIN = "hotel"  # ChnSentiCorp hotels and the shopping set's 酒店 are one domain
N_EN_FOLDS = 5
MIXES = ("lr", "nb", "lr+nb")


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str                      # "ngram" | "minilm" | "blend"
    spec: FeatureSpec | None       # n-gram features (a blend: its n-gram part's)
    C: float                       # a blend: its n-gram part's
    use_lexicon: bool              # a blend: its n-gram part's
    # "lr": logistic regression on the features; "nb": on the features scaled by their log-count ratio
    # (NB-LR, Wang & Manning 2012), ratios from the training rows only; "lr+nb": the mean of the two
    # models' logits. All three collapse into one weight vector over the same buckets (weights x ratio),
    # so the run-time model (``LinearTextModel``) is the same whatever was chosen.
    mix: str = "lr"
    # "minilm": which embeddings (model file digest), so cached folds of another export are never reused.
    embedding: str = ""
    # "blend": the names of its n-gram and head candidates, whose raw logits it sums.
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, got {self.mix!r}")
        if self.kind not in ("ngram", "minilm", "blend"):
            raise ValueError(f"kind must be ngram, minilm or blend, got {self.kind!r}")
        if (self.kind == "blend") != (len(self.parts) == 2):
            raise ValueError("a blend names exactly two parts (n-gram, head); other kinds none")


def zh_candidates(with_nb: bool = False) -> list[Candidate]:
    """The Mandarin grid; ``with_nb`` adds the log-count-ratio variants (measured, not shipped: +0.003 mean
    UAR over the 11 left-out domains, inside the spread between domains; see the card)."""
    out = []
    for orders in ((1, 2), (1, 2, 3)):
        spec = FeatureSpec(char_orders=orders, word_orders=(), n_buckets=1 << 19, cjk_words=True)
        for C in (1.0, 4.0):
            for lex in (False, True):
                out.append(Candidate(f"char{''.join(map(str, orders))}-C{C:g}{'+lex' if lex else ''}", "ngram",
                                     spec, C, lex))
    if with_nb:
        # Log-count-ratio variants of the char 1-3 + lexicon recipe (the best plain one in the grid above).
        spec = FeatureSpec(char_orders=(1, 2, 3), word_orders=(), n_buckets=1 << 19, cjk_words=True)
        for mix in ("nb", "lr+nb"):
            out.append(Candidate(f"char123-C4+lex-{mix}", "ngram", spec, 4.0, True, mix))
    return out


def en_candidates(with_minilm: bool, embedding: str = "minilm-int8") -> list[Candidate]:
    """The English grid: n-gram candidates; with ``with_minilm`` also MiniLM heads (``embedding`` names the
    embeddings, e.g. the model file's digest) and every n-gram + head blend."""
    out = []
    for chars in ((), (3, 4, 5)):
        spec = FeatureSpec(char_orders=chars, word_orders=(1, 2), n_buckets=1 << 18, cjk_words=False)
        for C in (1.0, 4.0, 16.0):
            for lex in (False, True):
                name = f"word12{'+char345' if chars else ''}-C{C:g}{'+lex' if lex else ''}"
                out.append(Candidate(name, "ngram", spec, C, lex))
    if with_minilm:
        ngrams = list(out)
        heads = [Candidate(f"minilm-C{C:g}{'+lex' if lex else ''}", "minilm", None, C, lex, embedding=embedding)
                 for C in (0.3, 1.0, 4.0) for lex in (False, True)]
        out += heads
        out += [blend_of(n, h) for n in ngrams for h in heads]
    return out


def blend_of(ngram: Candidate, head: Candidate) -> Candidate:
    return Candidate(f"{ngram.name}&{head.name}", "blend", ngram.spec, ngram.C, ngram.use_lexicon, ngram.mix,
                     head.embedding, (ngram.name, head.name))


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    texts: list[str]
    negative: np.ndarray           # bool
    fold: list[str]                # domain (zh) or fold name (en)
    source: list[str]              # file stem


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def zh_corpus(data_text: Path) -> Corpus:
    texts, neg, fold, source = [], [], [], []
    for r in _read(data_text / "online_shopping_zh.csv"):
        cat = r["category"]
        texts.append(r["text"] or "")
        neg.append(r["label"] == "negative")
        fold.append(HOTEL_DOMAIN if cat == "酒店" else cat)
        source.append("online_shopping_zh")
    for r in _read(data_text / "chnsenticorp_hotel_zh.csv"):
        texts.append(r["text"] or "")
        neg.append(r["label"] == "negative")
        fold.append(HOTEL_DOMAIN)
        source.append("chnsenticorp_hotel_zh")
    return Corpus(texts, np.asarray(neg), fold, source)


def _handle(text: str) -> str | None:
    m = re.search(r"@(\w+)", text)
    return m.group(1).lower() if m else None


def en_corpus(data_text: Path) -> Corpus:
    texts, neg, fold, source = [], [], [], []
    for k, r in enumerate(_read(data_text / "complaints_en.csv")):
        t = r["text"] or ""
        h = _handle(t)
        key = h if h is not None else f"row{k}"
        texts.append(t)
        neg.append(r["label"] == "complaint")
        fold.append(f"brands{zlib.crc32(key.encode()) % N_EN_FOLDS}")
        source.append("complaints_en")
    return Corpus(texts, np.asarray(neg), fold, source)


def zh_eval_units(corpus: Corpus) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(reported domain, rows scored, rows trained on) for the 11 Mandarin domains."""
    fold = np.asarray(corpus.fold)
    src = np.asarray(corpus.source)
    units = []
    for d in sorted(set(corpus.fold) - {HOTEL_DOMAIN}):
        units.append((d, fold == d, fold != d))
    not_hotel = fold != HOTEL_DOMAIN
    units.append(("酒店", (fold == HOTEL_DOMAIN) & (src == "online_shopping_zh"), not_hotel))
    units.append(("chnsenticorp_hotel", src == "chnsenticorp_hotel_zh", not_hotel))
    return units


def en_eval_units(corpus: Corpus) -> list[tuple[str, np.ndarray, np.ndarray]]:
    fold = np.asarray(corpus.fold)
    return [(d, fold == d, fold != d) for d in sorted(set(corpus.fold))]


# --- features --------------------------------------------------------------------------------------


def _cache_key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()[:16]


def lexicon_feature(texts: Sequence[str], language: str, cache_dir: Path) -> np.ndarray:
    """The lexicon backend's normalised score of each text (Mandarin lexicon without snownlp, or VADER +
    the call-centre rules), the one extra dense feature a candidate may use."""
    from ..text import TextOptions, TextScorer, lexicon_score

    lex_digest = _models_text_digest()
    path = cache_dir / f"lex-{language}-{_cache_key(language, lex_digest, *texts)}.npy"
    if path.is_file():
        return np.load(path)
    scorer = TextScorer.load(TextOptions(backend="lexicon", snownlp_weight=0.0))
    values = np.asarray([lexicon_score(scorer, t, language) for t in texts], dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, values)
    return values


def _models_text_digest() -> str:
    from ..text import models_root

    h = hashlib.sha1()
    folder = models_root() / "text"
    for p in sorted(folder.glob("*")):
        if p.suffix in (".tsv", ".txt"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def file_digest(*paths: Path) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def minilm_embeddings(texts: Sequence[str], cache_dir: Path, model_folder: Path) -> np.ndarray:
    """(n, 384) MiniLM-L6 int8 embeddings of ``texts`` by the run-time embedder in ``model_folder``, one
    text per run (what the scorer computes for a turn; a padded batch would quantise differently).
    Cached by texts and model files."""
    from ..text_minilm import ONNX_NAME, TOKENIZER_NAME, MiniLMEmbedder

    digest = file_digest(model_folder / ONNX_NAME, model_folder / TOKENIZER_NAME)
    path = cache_dir / f"minilm8-{_cache_key('minilm-int8-b1', digest, *texts)}.npy"
    if path.is_file():
        return np.load(path)
    embedder = MiniLMEmbedder.load(model_folder)
    t0 = time.perf_counter()
    values = embedder.embed_many(list(texts))
    log.info("MiniLM int8 embeddings of %d texts: %.0f s", len(texts), time.perf_counter() - t0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, values)
    return values


def blend_results(blends: Sequence[Candidate], results: dict[str, list["FoldResult"]], corpus: Corpus,
                  units) -> None:
    """Add each blend's out-of-fold results to ``results``: the sum of its two parts' raw logits."""
    y = corpus.negative
    for c in blends:
        a, b = results[c.parts[0]], results[c.parts[1]]
        results[c.name] = [FoldResult(ra.unit, ra.n, ra.n_negative, ra.logits + rb.logits,
                                      uar(y[u[1]], (ra.logits + rb.logits) > 0))
                           for ra, rb, u in zip(a, b, units)]


# --- fitting ---------------------------------------------------------------------------------------


def _design(cand: Candidate, base, lex: np.ndarray):
    """The matrix a candidate is fitted on: its features, plus the lexicon score as one more column."""
    from scipy import sparse

    if not cand.use_lexicon:
        return base
    col = lex.reshape(-1, 1).astype(np.float32)
    if sparse.issparse(base):
        return sparse.hstack([base, sparse.csr_matrix(col)], format="csr")
    return np.hstack([base, col])


def fit_logistic(X, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="liblinear", class_weight="balanced", max_iter=200, random_state=0)
    clf.fit(X, y.astype(int))
    return clf


def log_count_ratio(X, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """NB log-count ratio of each column from binarised features: log((p/|p|) / (q/|q|)), p and q the
    smoothed counts over negative and non-negative rows."""
    Xb = X.copy()
    Xb.data[:] = 1.0
    p = np.asarray(Xb[y].sum(0)).ravel() + alpha
    q = np.asarray(Xb[~y].sum(0)).ravel() + alpha
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


def fit_candidate(cand: Candidate, X, y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights over X's columns, bias) of a candidate fitted on ``rows``; NB ratios (n-gram columns only,
    the lexicon column is left unscaled) are folded into the weights, so scoring is ``X @ w + b``."""
    from scipy import sparse

    fits = []
    if cand.mix in ("lr", "lr+nb"):
        clf = fit_logistic(X[rows], y[rows], cand.C)
        fits.append((clf.coef_[0].astype(np.float64), float(clf.intercept_[0])))
    if cand.mix in ("nb", "lr+nb"):
        n_b = cand.spec.n_buckets
        r = np.ones(X.shape[1], np.float64)
        r[:n_b] = log_count_ratio(X[rows][:, :n_b], y[rows])
        clf = fit_logistic(X[rows] @ sparse.diags(r.astype(np.float32)), y[rows], cand.C)
        fits.append((clf.coef_[0].astype(np.float64) * r, float(clf.intercept_[0])))
    w = np.mean([f[0] for f in fits], axis=0)
    return w, float(np.mean([f[1] for f in fits]))


def decision(X, w: np.ndarray, b: float) -> np.ndarray:
    return np.asarray(X @ w, dtype=np.float64).ravel() + b


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling with equal class weights: calibrated P(negative) as if both classes were equally
    common (the scorer's operating point; the card also reports ECE on each set's own mix)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, class_weight="balanced", solver="lbfgs", max_iter=1000)
    clf.fit(logits.reshape(-1, 1), y.astype(int))
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def uar(y_neg: np.ndarray, pred_neg: np.ndarray) -> float:
    """Negative-vs-rest UAR of boolean arrays, NaN unless both classes occur (the one UAR definition)."""
    from ..evaluate.metrics import uar as uar_of

    return uar_of(y_neg, pred_neg, (True, False), every_class=True)


def ece_binary(p_neg: np.ndarray, y_neg: np.ndarray) -> float:
    from ..evaluate.metrics import calibration

    conf = np.maximum(p_neg, 1.0 - p_neg)
    correct = (p_neg >= 0.5) == y_neg
    return float(calibration(conf.tolist(), correct.tolist()).ece)


@dataclass
class FoldResult:
    unit: str
    n: int
    n_negative: int
    logits: np.ndarray             # out-of-fold raw logits (decision at 0 = balanced LR's own)
    uar_raw: float


def fold_data_key(corpus: Corpus, lex: np.ndarray) -> str:
    """Cache key of the fold fits on this data: the texts, labels, folds and the lexicon feature (a
    changed lexicon changes the +lex candidates' fits, so their cached folds must not be reused)."""
    lex_key = hashlib.sha1(np.ascontiguousarray(lex, dtype=np.float32).tobytes()).hexdigest()
    return _cache_key(*corpus.texts, corpus.negative.tobytes().hex(), *corpus.fold, lex_key)


def fold_path(cache_dir: Path, cand: Candidate, unit: str, data_key: str) -> Path:
    return cache_dir / f"fold-{_cache_key(repr(cand), unit, data_key)}.npz"


def cross_domain(cands: Sequence[Candidate], corpus: Corpus, units, features: Callable[[Candidate], object],
                 lex: np.ndarray, cache_dir: Path | None = None) -> dict[str, list[FoldResult]]:
    """Out-of-domain logits of every candidate on every unit (cached per candidate, unit and data)."""
    y = corpus.negative
    data_key = fold_data_key(corpus, lex)
    out: dict[str, list[FoldResult]] = {}
    for cand in cands:
        X = None
        results = []
        t0 = time.perf_counter()
        for name, test, train in units:
            path = (cache_dir / f"oof-{_cache_key(repr(cand), name, data_key)}.npy") if cache_dir else None
            if path is not None and path.is_file():
                z = np.load(path)
            else:
                if X is None:
                    X = _design(cand, features(cand), lex)
                if cand.kind == "ngram":
                    w, b = fit_candidate(cand, X, y, train)
                    z = decision(X[test], w, b)
                else:
                    clf = fit_logistic(X[train], y[train], cand.C)
                    w, b = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
                    z = clf.decision_function(X[test])
                if path is not None:
                    cache_dir.mkdir(parents=True, exist_ok=True)
                    np.save(path, z)
                    # The fold's weights too: `callpulse evaluate text` scores with them (evaluate/text_folds.py).
                    np.savez(fold_path(cache_dir, cand, name, data_key),
                             coef=w.astype(np.float32), bias=np.float64(b), logits=z)
            results.append(FoldResult(name, int(test.sum()), int(y[test].sum()), z, uar(y[test], z > 0)))
        out[cand.name] = results
        log.info("%s: mean UAR %.3f over %d units (%.0f s)", cand.name,
                 np.mean([r.uar_raw for r in results]), len(results), time.perf_counter() - t0)
    return out


def nested_report(cands: Sequence[Candidate], results: dict[str, list[FoldResult]], corpus: Corpus, units,
                  rule: CutRule) -> list[dict]:
    """Per unit: the candidate chosen on the other units, its calibrated figures on this one, negative when
    P(negative) > the cut ``rule`` chooses on the other units' calibrated probabilities."""
    y = corpus.negative
    rows = []
    names = [c.name for c in cands]
    for k, (unit, test, _train) in enumerate(units):
        others = [j for j in range(len(units)) if j != k and units[j][0] != unit]
        # A hotel source never chooses for the other hotel source (they are one domain).
        if unit in ("酒店", "chnsenticorp_hotel"):
            others = [j for j in others if units[j][0] not in ("酒店", "chnsenticorp_hotel")]
        best = max(names, key=lambda n: (np.mean([results[n][j].uar_raw for j in others]), n))
        z_other = np.concatenate([results[best][j].logits for j in others])
        y_other = np.concatenate([y[units[j][1]] for j in others])
        a, b = fit_platt(z_other, y_other)
        cut = rule.choose([sigmoid(a * results[best][j].logits + b) for j in others], [y[units[j][1]] for j in others])
        r = results[best][k]
        p = sigmoid(a * r.logits + b)
        yt = y[test]
        pred = p > cut
        rows.append({
            "unit": unit, "n": r.n, "n_negative": r.n_negative, "chosen": best, "cut": cut,
            "uar": uar(yt, pred), "recall_negative": float(pred[yt].mean()) if yt.any() else math.nan,
            "recall_non_negative": float((~pred[~yt]).mean()) if (~yt).any() else math.nan,
            "uar_at_p50": uar(yt, p >= 0.5), "ece": ece_binary(p, yt),
        })
    return rows


def candidate_table(cands: Sequence[Candidate], results: dict[str, list[FoldResult]]) -> list[dict]:
    return [{"candidate": c.name, "mean_uar": float(np.mean([r.uar_raw for r in results[c.name]])),
             "per_unit": {r.unit: round(r.uar_raw, 4) for r in results[c.name]}} for c in cands]


# --- the whole job ---------------------------------------------------------------------------------


def train_language(language: str, data_text: Path, cache_dir: Path, *, with_minilm: bool = True,
                   with_nb: bool = False, rule: CutRule = CutRule(), minilm_folder: Path | None = None) -> dict:
    """Compare, choose and fit one language; returns the figures and the final weights (not yet written).

    English with ``with_minilm``: the MiniLM files (``minilm_en_int8.onnx``, ``minilm_en_tokenizer.json``)
    are read from ``minilm_folder``, the folder the model is written to, so the head is fitted on the
    embeddings of the very file it ships beside."""
    corpus = zh_corpus(data_text) if language == "zh" else en_corpus(data_text)
    units = zh_eval_units(corpus) if language == "zh" else en_eval_units(corpus)
    use_minilm = language == "en" and with_minilm
    if use_minilm:
        from ..text_minilm import ONNX_NAME, TOKENIZER_NAME

        if minilm_folder is None:
            raise ValueError("the MiniLM candidates need minilm_folder")
        embedding = "minilm-int8-b1:" + file_digest(minilm_folder / ONNX_NAME, minilm_folder / TOKENIZER_NAME)
        cands = en_candidates(True, embedding)
    else:
        cands = zh_candidates(with_nb) if language == "zh" else en_candidates(False)
    lex = lexicon_feature(corpus.texts, language, cache_dir)
    feats: dict[object, object] = {}

    def features(cand: Candidate):
        key = cand.spec if cand.kind == "ngram" else "minilm"
        if key not in feats:
            t0 = time.perf_counter()
            feats[key] = (feature_matrix(corpus.texts, cand.spec) if cand.kind == "ngram"
                          else minilm_embeddings(corpus.texts, cache_dir, minilm_folder))
            log.info("%s features %s: %.0f s", language, key, time.perf_counter() - t0)
        return feats[key]

    results = cross_domain([c for c in cands if c.kind != "blend"], corpus, units, features, lex, cache_dir)
    blend_results([c for c in cands if c.kind == "blend"], results, corpus, units)
    by_name = {c.name: c for c in cands}
    # Shippable: an n-gram model alone, or a blend (n-gram + head). A head alone is reported, not shipped:
    # the blend contains it as a candidate, and one run-time shape is enough.
    ngram_only = [c for c in cands if c.kind == "ngram"]
    shippable = [c for c in cands if c.kind in ("ngram", "blend")]
    nested = nested_report(shippable, results, corpus, units, rule)
    nested_all = nested_report(cands, results, corpus, units, rule) if len(shippable) < len(cands) else []
    nested_ngram = nested_report(ngram_only, results, corpus, units, rule) if len(ngram_only) < len(shippable) else []
    table = candidate_table(cands, results)
    best = max(shippable, key=lambda c: (float(np.mean([r.uar_raw for r in results[c.name]])), c.name))
    y = corpus.negative
    all_z = np.concatenate([r.logits for r in results[best.name]])
    all_y = np.concatenate([y[u[1]] for u in units])
    platt = fit_platt(all_z, all_y)
    p_cut = rule.choose([sigmoid(platt[0] * r.logits + platt[1]) for r in results[best.name]],
                        [y[u[1]] for u in units])
    # Train on everything once (the two hotel sources' shared texts counted once).
    seen: set[str] = set()
    keep = np.zeros(len(corpus.texts), bool)
    for i, t in enumerate(corpus.texts):
        if t not in seen:
            seen.add(t)
            keep[i] = True
    ngram = by_name[best.parts[0]] if best.kind == "blend" else best
    X = _design(ngram, features(ngram), lex)
    coef, bias = fit_candidate(ngram, X, y, keep)
    n_b = ngram.spec.n_buckets
    head = None
    if best.kind == "blend":
        hc = by_name[best.parts[1]]
        clf = fit_logistic(_design(hc, features(hc), lex)[keep], y[keep], hc.C)
        hw = clf.coef_[0].astype(np.float64)
        dim = features(hc).shape[1]
        head = {"candidate": hc, "weights": hw[:dim].astype(np.float32),
                "lexicon_weight": float(hw[dim]) if hc.use_lexicon else 0.0, "bias": float(clf.intercept_[0])}
    return {
        "language": language, "chosen": best.name, "candidate": ngram, "platt": platt, "p_cut": p_cut,
        "cut_rule": rule.to_json(), "head": head,
        "weights": coef[:n_b].astype(np.float32), "lexicon_weight": float(coef[n_b]) if ngram.use_lexicon else 0.0,
        "bias": bias, "nested": nested, "nested_all": nested_all, "nested_ngram": nested_ngram, "candidates": table,
        "n_train": int(keep.sum()), "n_negative_train": int(y[keep].sum()),
    }


def write_model(folder: Path, fitted: dict[str, dict], data_note: dict, *, negative_below: float = -0.2,
                keep: dict[str, dict] | None = None) -> dict:
    """Write ``trained_<lang>.npz`` and ``trained.json``; returns the JSON written. ``keep``: entries of
    languages not retrained, carried over as they are (their weight files are left alone).

    A language's chosen cut becomes ``negative_from_p``, the P(negative) from which the scorer's sentiment
    falls below 0, so that its label is negative (sentiment < ``negative_below``) exactly above the cut."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {"feature_version": FEATURE_VERSION, "models": dict(keep or {}), "data": data_note}
    for lang, f in fitted.items():
        p_cut = float(f.get("p_cut", 0.52))
        name = f"trained_{lang}.npz"
        np.savez_compressed(folder / name, weights=f["weights"])
        head = None
        # A language written without a head leaves no stale head weights behind.
        (folder / f"trained_{lang}_minilm.npz").unlink(missing_ok=True)
        if f.get("head"):
            from ..text_minilm import ONNX_NAME, TOKENIZER_NAME

            h, hc = f["head"], f["head"]["candidate"]
            head_name = f"trained_{lang}_minilm.npz"
            np.savez_compressed(folder / head_name, weights=h["weights"])
            head = {"kind": "minilm-int8", "onnx": ONNX_NAME, "tokenizer": TOKENIZER_NAME, "weights": head_name,
                    "embedding": hc.embedding, "chosen": hc.name, "C": hc.C, "use_lexicon": hc.use_lexicon,
                    "lexicon_weight": round(h["lexicon_weight"], 6), "bias": round(h["bias"], 6)}
        card["models"][lang] = {
            "weights": name, "features": f["candidate"].spec.to_json(), "chosen": f["chosen"],
            "C": f["candidate"].C, "use_lexicon": f["candidate"].use_lexicon, "mix": f["candidate"].mix,
            "lexicon_weight": round(f["lexicon_weight"], 6), "bias": round(f["bias"], 6),
            "platt": [round(f["platt"][0], 6), round(f["platt"][1], 6)],
            "p_cut": round(p_cut, 4), "negative_from_p": round((p_cut + negative_below) / (1.0 + negative_below), 6),
            "cut_rule": f.get("cut_rule", CutRule().to_json()),
            "n_train": f["n_train"], "n_negative_train": f["n_negative_train"],
            "cross_domain": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                             for row in f["nested"]],
            "cross_domain_any_candidate": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                                           for row in f.get("nested_all", [])],
            "cross_domain_ngram_only": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                                        for row in f.get("nested_ngram", [])],
            "candidates": [{"candidate": c["candidate"], "mean_uar": round(c["mean_uar"], 4),
                            "per_unit": c["per_unit"]} for c in f["candidates"]],
        }
        if head is not None:
            # The blend: P(negative) = sigmoid(platt . (n-gram raw logit + head raw logit)).
            card["models"][lang]["recipe"] = "blend: n-gram logit + MiniLM-L6 int8 head logit, one Platt"
            card["models"][lang]["head"] = head
            card["models"][lang]["ngram_chosen"] = f["candidate"].name
    (folder / "trained.json").write_text(json.dumps(card, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return card


# --- leave-one-unit-out models of a shipped blend (``callpulse evaluate text``) ---------------------


def blend_fold_models(language: str, entry: dict, data_text: Path, cache_dir: Path,
                      also_look_in: Sequence[Path] = (), negative_below: float = -0.2,
                      model_folder: Path | None = None):
    """For each unit: (name, rows scored, LinearTextModel with its MiniLM head) trained without that unit,
    for an entry of ``trained.json`` that is a blend (has ``"head"``). Same contract as
    ``pipeline.evaluate.text_folds.fold_models``: both parts' fold weights come from the folds
    ``scripts/train_text.py`` cached (or are refitted), Platt and the cut are chosen on the other units'
    summed logits, so each unit's probabilities are as out-of-domain as its labels."""
    from ..text import models_root
    from ..text_linear import EmbeddingHead, LinearTextModel
    from ..text_minilm import MiniLMEmbedder

    folder = Path(model_folder) if model_folder is not None else models_root() / "text"
    h = entry["head"]
    ngram = Candidate(entry.get("ngram_chosen", entry["chosen"]), "ngram", FeatureSpec.from_json(entry["features"]),
                      float(entry["C"]), bool(entry["use_lexicon"]), entry.get("mix", "lr"))
    head = Candidate(h["chosen"], "minilm", None, float(h["C"]), bool(h["use_lexicon"]), embedding=h["embedding"])
    corpus = zh_corpus(data_text) if language == "zh" else en_corpus(data_text)
    units = zh_eval_units(corpus) if language == "zh" else en_eval_units(corpus)
    y = corpus.negative
    look = [d for d in also_look_in if d.is_dir()]
    lex = lexicon_feature(corpus.texts, language, look[0] if look else cache_dir)
    data_key = fold_data_key(corpus, lex)
    matrices: dict[str, object] = {}

    def part(cand: Candidate, name: str, test, train):
        for d in look:
            if fold_path(d, cand, name, data_key).is_file():
                with np.load(fold_path(d, cand, name, data_key), allow_pickle=False) as z:
                    return z["coef"], float(z["bias"]), z["logits"]
        if cand.name not in matrices:
            base = (feature_matrix(corpus.texts, cand.spec) if cand.kind == "ngram"
                    else minilm_embeddings(corpus.texts, look[0] if look else cache_dir, folder))
            matrices[cand.name] = _design(cand, base, lex)
        X = matrices[cand.name]
        if cand.kind == "ngram":
            w, b = fit_candidate(cand, X, y, train)
        else:
            clf = fit_logistic(X[train], y[train], cand.C)
            w, b = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
        return w.astype(np.float32), b, decision(X[test], w, b)

    embedder = MiniLMEmbedder.load(folder, onnx_name=h["onnx"], tokenizer_name=h["tokenizer"])
    fitted = []
    for name, test, train in units:
        ng, hd = part(ngram, name, test, train), part(head, name, test, train)
        fitted.append((name, test, ng, hd, ng[2] + hd[2]))
    n_b = ngram.spec.n_buckets
    out = []
    for k, (name, test, ng, hd, _z) in enumerate(fitted):
        others = [j for j in range(len(fitted)) if j != k]
        a, b = fit_platt(np.concatenate([fitted[j][4] for j in others]),
                         np.concatenate([y[fitted[j][1]] for j in others]))
        cut = CutRule(**entry["cut_rule"]).choose([sigmoid(a * fitted[j][4] + b) for j in others],
                                                 [y[fitted[j][1]] for j in others])
        p0 = (cut + negative_below) / (1.0 + negative_below)
        dim = len(hd[0]) - (1 if head.use_lexicon else 0)
        emb_head = EmbeddingHead(embedder, np.asarray(hd[0][:dim], np.float32),
                                 float(hd[0][dim]) if head.use_lexicon else 0.0, hd[1])
        out.append((name, test, LinearTextModel(language, ngram.spec, np.asarray(ng[0][:n_b], np.float32),
                                                float(ng[0][n_b]) if ngram.use_lexicon else 0.0, ng[1], a, b, p0,
                                                emb_head)))
    return corpus, out
