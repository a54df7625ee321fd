"""Trained text sentiment: hashed n-gram logistic models (zh, en), stored as plain arrays.

The ``trained`` text backend (``pipeline/text.py``) reads ``models/text/trained_zh.npz`` /
``trained_en.npz`` (weights, no pickles) and ``trained.json`` (feature recipe, Platt calibration, data
and figures). Features are hashed with CRC-32, so there is no vocabulary to ship or to keep in step with
the weights, and the same code turns a turn into features at training (``pipeline/training/text.py``) and
at run time.

English may add a second part (``"head"`` in its ``trained.json`` entry): a logistic head on MiniLM-L6
sentence embeddings (``pipeline/text_minilm.py``, int8 ONNX), whose raw logit is *added* to the n-gram
model's before the one Platt calibration (the blend chosen across brand folds; see the card).

What the text looks like before features are taken is chosen for ASR: punctuation is dropped (Whisper
writes little of it and reviews a lot), digits fold to ``0``, Latin letters are lower-cased, Traditional
characters are turned Simplified by the caller. So a review and a transcript of the same words look alike.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import ModelUnavailableError

# CJK ideographs, then Latin words (with apostrophes), then digit runs; anything else is a separator.
_TOKEN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)|([a-z]+(?:'[a-z]+)*)|(\d+)")
FEATURE_VERSION = 1
# P(negative) from which a turn's sentiment falls below 0 (see pipeline/text.py); a language's entry in
# trained.json may lower it (a decision threshold chosen across domains, ``negative_from_p``).
DEFAULT_NEGATIVE_FROM_P = 0.4
# Longest text read for features: a 10,000-character turn costs no more than this many characters do.
MAX_CHARS = 2000


@dataclass(frozen=True)
class FeatureSpec:
    """What features a model reads. ``char_orders``: CJK character n-gram orders (zh), or character
    n-gram orders inside ``<word>`` (en); ``word_orders``: word n-gram orders; ``n_buckets`` a power of 2."""

    char_orders: tuple[int, ...]
    word_orders: tuple[int, ...]
    n_buckets: int
    cjk_words: bool  # True: CJK runs are read character by character (zh); False: ignored (en)

    def __post_init__(self) -> None:
        if self.n_buckets <= 0 or self.n_buckets & (self.n_buckets - 1):
            raise ValueError(f"n_buckets must be a power of 2, got {self.n_buckets}")

    def to_json(self) -> dict:
        return {"char_orders": list(self.char_orders), "word_orders": list(self.word_orders),
                "n_buckets": self.n_buckets, "cjk_words": self.cjk_words}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSpec":
        return cls(tuple(int(x) for x in d["char_orders"]), tuple(int(x) for x in d["word_orders"]),
                   int(d["n_buckets"]), bool(d["cjk_words"]))


def tokens(text: str) -> list[str]:
    """ASR-style tokens: CJK characters one by one, lower-cased Latin words, digit runs as ``0``."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower()
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        cjk, word, _digits = m.groups()
        if cjk:
            out.extend(cjk)
        elif word:
            out.append(word)
        else:
            out.append("0")
    return out


def _is_cjk(tok: str) -> bool:
    return len(tok) == 1 and ("\u3400" <= tok <= "\u9fff" or "\uf900" <= tok <= "\ufaff")


def feature_ids(text: str, spec: FeatureSpec) -> dict[int, float]:
    """Hashed feature counts of one text -> {bucket: log(1 + count)}, L2-normalised."""
    toks = tokens(text)
    grams: list[str] = []
    if spec.cjk_words:
        # zh: character n-grams over the CJK stream (Latin words and digits sit in it as single tokens,
        # so "app 闪退" and "闪退" share grams); a non-CJK token is also a word feature.
        for n in spec.char_orders:
            for i in range(len(toks) - n + 1):
                grams.append(f"c{n}|" + "".join(toks[i : i + n]))
        for t in toks:
            if not _is_cjk(t):
                grams.append("w|" + t)
    else:
        words = [t for t in toks if not _is_cjk(t)]
        for n in spec.word_orders:
            for i in range(len(words) - n + 1):
                grams.append(f"w{n}|" + " ".join(words[i : i + n]))
        for w in words:
            padded = f"<{w}>"
            for n in spec.char_orders:
                for i in range(len(padded) - n + 1):
                    grams.append(f"c{n}|" + padded[i : i + n])
    counts: dict[int, float] = {}
    mask = spec.n_buckets - 1
    for g in grams:
        b = zlib.crc32(g.encode("utf-8")) & mask
        counts[b] = counts.get(b, 0.0) + 1.0
    if not counts:
        return {}
    for b in counts:
        counts[b] = math.log1p(counts[b])
    norm = math.sqrt(sum(v * v for v in counts.values()))
    return {b: v / norm for b, v in counts.items()}


def feature_matrix(texts: Iterable[str], spec: FeatureSpec):
    """A scipy CSR matrix of the hashed features of many texts (training and evaluation only)."""
    from scipy import sparse

    indptr, indices, data = [0], [], []
    for t in texts:
        f = feature_ids(t, spec)
        indices.extend(f.keys())
        data.extend(f.values())
        indptr.append(len(indices))
    return sparse.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int32),
                              np.asarray(indptr, np.int64)), shape=(len(indptr) - 1, spec.n_buckets))


@dataclass(frozen=True)
class EmbeddingHead:
    """Logistic head on a sentence embedding (+ the lexicon's normalised score): one more raw logit."""

    embedder: object             # pipeline.text_minilm.MiniLMEmbedder (anything with embed(text) -> (dim,))
    weights: np.ndarray          # (dim,) float32
    lexicon_weight: float
    bias: float

    def logit(self, text: str, lexicon_score: float = 0.0) -> float:
        e = self.embedder.embed(text)
        return self.bias + self.lexicon_weight * lexicon_score + float(np.dot(e, self.weights))


@dataclass(frozen=True)
class LinearTextModel:
    """P(negative) of a text: logistic on hashed n-grams (+ the lexicon's normalised score), plus the
    raw logit of an optional embedding head (the English blend), then Platt."""

    language: str
    spec: FeatureSpec
    weights: np.ndarray          # (n_buckets,) float32
    lexicon_weight: float        # weight of the lexicon feature (0 = not used)
    bias: float
    platt_a: float               # calibrated logit = platt_a * raw logit + platt_b
    platt_b: float
    negative_from_p: float = DEFAULT_NEGATIVE_FROM_P  # P(negative) where sentiment starts to fall below 0
    head: EmbeddingHead | None = None  # English blend: its raw logit is added before calibration

    def logit(self, text: str, lexicon_score: float = 0.0) -> float:
        f = feature_ids(text, self.spec)
        z = self.bias + self.lexicon_weight * lexicon_score
        w = self.weights
        for b, v in f.items():
            z += float(w[b]) * v
        if self.head is not None:
            z += self.head.logit(text, lexicon_score)
        return z

    def p_negative(self, text: str, lexicon_score: float = 0.0) -> float:
        z = self.platt_a * self.logit(text, lexicon_score) + self.platt_b
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


def load_models(folder: Path) -> tuple[dict[str, LinearTextModel], dict]:
    """The trained models in ``folder`` (``trained.json`` + ``trained_<lang>.npz``) and the JSON card."""
    card_path = folder / "trained.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelUnavailableError(
            f"trained text model {card_path} is missing; rebuild it with `python scripts/train_text.py` "
            "or set [text] backend = \"lexicon\""
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"{card_path} is not readable JSON: {exc}; rebuild with "
                                    "`python scripts/train_text.py`") from exc
    if card.get("feature_version") != FEATURE_VERSION:
        raise ModelUnavailableError(
            f"{card_path} was written for feature version {card.get('feature_version')}, this code reads "
            f"{FEATURE_VERSION}; rebuild with `python scripts/train_text.py`"
        )
    models = {}
    for lang, entry in card["models"].items():
        spec = FeatureSpec.from_json(entry["features"])
        weights = read_weights(folder / entry["weights"], spec.n_buckets, rebuild="`python scripts/train_text.py`")
        p0 = float(entry.get("negative_from_p", DEFAULT_NEGATIVE_FROM_P))
        if not 0.0 < p0 < 1.0:
            raise ModelUnavailableError(f"{card_path}: models.{lang}.negative_from_p must lie in (0, 1), got {p0}")
        head = _load_head(folder, card_path, lang, entry["head"]) if entry.get("head") else None
        models[lang] = LinearTextModel(lang, spec, weights, float(entry["lexicon_weight"]),
                                       float(entry["bias"]), float(entry["platt"][0]), float(entry["platt"][1]), p0,
                                       head)
    return models, card


def read_weights(path: Path, n: int, *, rebuild: str) -> np.ndarray:
    """The (n,) float32 ``weights`` array of a model part from its ``.npz`` (no pickles), read-only."""
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = np.asarray(z["weights"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot read the weights {path}: {exc}; rebuild with {rebuild}") from exc
    if weights.shape != (n,):
        raise ModelUnavailableError(f"{path} holds {weights.shape} weights where {n} are expected; "
                                    f"rebuild with {rebuild}")
    weights.setflags(write=False)
    return weights


def _load_head(folder: Path, card_path: Path, lang: str, h: dict) -> EmbeddingHead:
    from .text_minilm import DIM, MiniLMEmbedder

    if h.get("kind") != "minilm-int8":
        raise ModelUnavailableError(f"{card_path}: models.{lang}.head.kind {h.get('kind')!r} is not known to "
                                    "this code (minilm-int8); rebuild with `python scripts/train_text.py`")
    weights = read_weights(folder / h["weights"], DIM, rebuild="`python scripts/train_text.py --languages en`")
    # Loaded here, once per process: the session is shared read-only by every call (and fold model).
    embedder = MiniLMEmbedder.load(folder, onnx_name=h["onnx"], tokenizer_name=h["tokenizer"])
    return EmbeddingHead(embedder, weights, float(h["lexicon_weight"]), float(h["bias"]))
