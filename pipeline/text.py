"""Text stage: per-turn sentiment in [-1, 1], a label, and flags (abuse, escalation_request, anger), zh + en.

Three backends share one interface:

- ``trained`` (the embedded default, no network, no torch): hashed n-gram logistic models trained on
  labelled reviews and tweets and chosen across domains (``pipeline/text_linear.py``, weights in
  ``models/text/trained_*.npz``, card in ``models/text/README.md``); they give a calibrated P(negative),
  the lexicon below is one of their inputs and decides whether a non-negative turn is positive or neutral.
- ``lexicon`` (no network, no torch): English is VADER's compound score plus
  call-centre complaint rules (``models/text/en_domain.tsv``); Mandarin is a project lexicon with degree
  words and negation (``models/text/zh_*.tsv``) plus a damped snownlp term. Both are summed on VADER's raw
  valence scale and normalised once, so mixed-language turns get one consistent score.
- ``transformers``: any local sequence-classification model folder (a bank's own fine-tuned model); its
  class probabilities are mapped to [-1, 1] through the labels' meaning.

Flags always come from the pattern files (``flags_en.tsv``, ``flags_zh.tsv``), whatever the backend, so a
supervisor phrase trigger ("我要投诉", "speak to your manager") never depends on a model's mood.

``TextScorer.load()`` once per process; ``score()`` holds no per-call state and is safe from many threads.
"""
from __future__ import annotations

import csv
import logging
import math
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import DatasetError, ModelUnavailableError
from .resources import models_root
from .text_linear import LinearTextModel, load_models

log = logging.getLogger("pipeline.text")

BACKENDS = ("trained", "lexicon", "transformers")
FLAGS = ("abuse", "anger", "escalation_request")
LABELS = ("negative", "neutral", "positive")
# VADER's normalisation constant: raw valence x -> x / sqrt(x^2 + alpha). Using the same one for the
# Mandarin lexicon keeps one word of valence -2 equally negative in both languages.
_ALPHA = 15.0
# Flags that a preceding negator cancels ("I don't want to complain", "您别生气"); abuse is abuse anyway.
_NEGATABLE_FLAGS = frozenset({"escalation_request", "anger"})

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# A CJK run keeps its own punctuation so clause boundaries survive for negation windows.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_EN_NEGATOR = re.compile(
    r"\b(not|no|never|don't|dont|doesn't|doesnt|didn't|didnt|isn't|wasn't|won't|wont|can't|cant|cannot|"
    r"without|nor|hardly|neither)\b|n't\b",
    re.IGNORECASE,
)
# Whisper often writes English contractions without the apostrophe ("youre not listening", "i havent");
# the unambiguous ones get it back so VADER, the rules and the flags read them ("its", "ill", "id", "were"
# and "well" are real words and stay).
_BARE_CONTRACTION = re.compile(
    r"\b(do|does|did|is|was|were|are|have|has|had|ca|could|would|should|wo|must|need)nt\b|"
    r"\b(you|they)re\b|\b(i|you|we|they)ve\b|\b(i)m\b",
    re.IGNORECASE,
)


def _restore_contractions(text: str) -> str:
    def fix(m: re.Match) -> str:
        word = m.group(0)
        if m.group(1):
            return word[:-2] + "n't"
        if m.group(2):
            return word[:-2] + "'re"
        if m.group(3):
            return word[:-2] + "'ve"
        return word[:-1] + "'m"

    return _BARE_CONTRACTION.sub(fix, text)


_ZH_CLAUSE_BREAK = set("，。！？；：、,.!?;:\n\r\t…～~")
_ZH_FLAG_NEGATORS = set("不没别勿莫未")
# Trained backend: P(negative) below this gives sentiment 0; from here to 1 sentiment falls linearly to -1,
# so with negative_below = -0.2 a turn is labelled negative from P(negative) = 0.52 (about the equal-prior
# boundary the models are calibrated to) and a doubtful turn adds nothing to agitation.
_NEGATIVE_FROM_P = 0.4
# Trained backend: a flag is evidence the model may not have seen in reviews; it caps the sentiment.
_FLAG_CAPS = {"abuse": -0.6, "anger": -0.4, "escalation_request": -0.3}
# Trained backend: a turn shorter than this (words; a Mandarin word ~1.5 characters) gets a sentiment only
# when the lexicon or a flag finds some feeling in it (see _trained_sentiment).
_SHORT_TURN_WORDS = 10.0
_EVIDENCE_RAW = 0.5  # raw valence (VADER's -4..4 scale) that counts as the lexicon finding a feeling
# Trained backend: a call-centre complaint rule of en_domain.tsv ("cancel my card", "on hold for an hour")
# caps the sentiment here; tweets hold few such phrases, so the model cannot have learnt them.
_DOMAIN_RULE_CAP = -0.3




@dataclass(frozen=True)
class TextOptions:
    """Options of the text stage; the defaults are the ``[text]`` section of ``pipeline/callpulse.toml``."""

    backend: str = "trained"
    model_path: str = ""
    negative_below: float = -0.2
    positive_above: float = 0.2
    lexicon_dir: str = ""
    snownlp_weight: float = 0.8
    snownlp_max_chars: int = 60
    convert_traditional: bool = True
    max_tokens: int = 256
    torch_threads: int = 1
    label_values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "transformers" and not self.model_path:
            raise ValueError(
                "backend 'transformers' needs model_path: a local folder holding config.json, the "
                "tokenizer files and the weights of a sequence-classification model"
            )
        if not -1.0 <= self.negative_below <= self.positive_above <= 1.0:
            raise ValueError(
                "need -1 <= negative_below <= positive_above <= 1, got "
                f"negative_below={self.negative_below}, positive_above={self.positive_above}"
            )
        if self.snownlp_weight < 0:
            raise ValueError(f"snownlp_weight must be >= 0, got {self.snownlp_weight}")
        if self.snownlp_max_chars < 0:
            raise ValueError(f"snownlp_max_chars must be >= 0, got {self.snownlp_max_chars}")
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {self.max_tokens}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if any(not -1.0 <= float(v) <= 1.0 for v in self.label_values):
            raise ValueError(f"label_values must each lie in [-1, 1], got {self.label_values}")


@dataclass(frozen=True)
class TextScore:
    """Sentiment of one turn. ``sentiment`` in [-1, 1]; ``flags`` sorted; ``language`` is what was used."""

    sentiment: float
    label: str
    flags: tuple[str, ...]
    language: str
    backend: str


# --------------------------------------------------------------------------------------------------
# Lexicon files


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-comment, non-blank lines of a lexicon file, split on tabs, with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelUnavailableError(
            f"text lexicon {path} is missing; restore models/text/ from the repository or point "
            "[text] lexicon_dir (or $CALLPULSE_MODELS) at a folder holding it"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelUnavailableError(f"text lexicon {path} cannot be read as UTF-8 text: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        rows.append((number, line.rstrip("\r").split("\t")))
    return rows


def _float_field(path: Path, number: int, value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise ModelUnavailableError(f"{path}:{number}: {value!r} is not a number") from exc


def _regex(path: Path, number: int, pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ModelUnavailableError(f"{path}:{number}: bad regular expression {pattern!r}: {exc}") from exc


def _read_weighted_patterns(path: Path) -> tuple[tuple[re.Pattern, float], ...]:
    out = []
    for number, cols in _data_lines(path):
        if len(cols) != 2:
            raise ModelUnavailableError(f"{path}:{number}: expected '<regex>\\t<valence>', got {cols!r}")
        out.append((_regex(path, number, cols[0]), _float_field(path, number, cols[1])))
    return tuple(out)


def _read_flag_patterns(path: Path) -> tuple[tuple[str, re.Pattern], ...]:
    out = []
    for number, cols in _data_lines(path):
        if len(cols) != 2 or cols[0] not in FLAGS:
            raise ModelUnavailableError(
                f"{path}:{number}: expected '<flag>\\t<regex>' with flag one of {FLAGS}, got {cols!r}"
            )
        out.append((cols[0], _regex(path, number, cols[1])))
    return tuple(out)


def _read_word_values(path: Path) -> dict[str, float]:
    out = {}
    for number, cols in _data_lines(path):
        if len(cols) != 2:
            raise ModelUnavailableError(f"{path}:{number}: expected '<word>\\t<number>', got {cols!r}")
        out[cols[0].strip()] = _float_field(path, number, cols[1])
    return out


def _read_formulas(path: Path) -> re.Pattern | None:
    """One alternation of every formula regex in the file (None when the file lists none)."""
    patterns = []
    for number, cols in _data_lines(path):
        _regex(path, number, cols[0])  # names the bad line, if any
        patterns.append(f"(?:{cols[0]})")
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


def _read_words(path: Path) -> set[str]:
    return {cols[0].strip() for _, cols in _data_lines(path)}


# --------------------------------------------------------------------------------------------------
# Mandarin lexicon scorer


@dataclass(frozen=True)
class _ZhLexicon:
    """Longest-match lexicon with degree words and negation; immutable, so shared across threads."""

    # word -> ("s", valence) | ("d", multiplier) | ("n", 0.0)
    entries: Mapping[str, tuple[str, float]]
    max_len: int

    @classmethod
    def from_folder(cls, folder: Path) -> "_ZhLexicon":
        entries: dict[str, tuple[str, float]] = {}
        for word in _read_words(folder / "zh_negators.txt"):
            entries[word] = ("n", 0.0)
        for word, mult in _read_word_values(folder / "zh_degree.tsv").items():
            entries[word] = ("d", mult)
        # Sentiment words last: a word listed both ways ("太过分") is a sentiment word.
        for word, valence in _read_word_values(folder / "zh_sentiment.tsv").items():
            entries[word] = ("s", valence)
        return cls(entries=entries, max_len=max(len(w) for w in entries))

    def raw_valence(self, text: str) -> tuple[float, int]:
        """Sum of matched valences (VADER's raw scale) and the number of sentiment words matched."""
        total = 0.0
        hits = 0
        negated_gap: int | None = None  # unmatched characters since the last negator (None: none pending)
        degree = 1.0
        degree_gap: int | None = None
        i = 0
        n = len(text)
        while i < n:
            ch = text[i]
            if ch in _ZH_CLAUSE_BREAK:
                negated_gap = degree_gap = None
                degree = 1.0
                i += 1
                continue
            match = None
            for length in range(min(self.max_len, n - i), 0, -1):
                entry = self.entries.get(text[i : i + length])
                if entry is not None:
                    match = (length, entry)
                    break
            if match is None:
                # An unmatched character widens the gap; negation and degree only reach two characters.
                if negated_gap is not None:
                    negated_gap += 1
                    if negated_gap > 2:
                        negated_gap = None
                if degree_gap is not None:
                    degree_gap += 1
                    if degree_gap > 1:
                        degree_gap, degree = None, 1.0
                i += 1
                continue
            length, (kind, value) = match
            if kind == "n":
                negated_gap = 0
            elif kind == "d":
                degree, degree_gap = value, 0
            else:
                valence = value * (degree if degree_gap is not None else 1.0)
                if negated_gap is not None:
                    # VADER's negation scalar for praise ("不太满意" is negative, milder than "差"); a negated
                    # complaint is only mildly positive ("不差", "我不是要投诉" is no compliment).
                    valence *= -0.74 if valence > 0 else -0.3
                if value != 0.0:
                    hits += 1
                total += valence
                negated_gap = degree_gap = None
                degree = 1.0
            i += length
        return total, hits


def lexicon_score(scorer: "TextScorer", text: str, language: str) -> float:
    """The lexicon's normalised score of one language's part of a text, without snownlp (what the trained
    models read as their lexicon feature; ``pipeline/training/text.py`` uses this)."""
    _text, cjk_text, latin_text, _zh_view = scorer._views(text)
    if language == "zh":
        return _normalise(scorer._zh.raw_valence(cjk_text)[0]) if cjk_text else 0.0
    return _normalise(scorer._en_raw(latin_text))


def _normalise(raw: float) -> float:
    return raw / math.sqrt(raw * raw + _ALPHA)


def _compound_to_raw(compound: float) -> float:
    # Invert VADER's normalisation so its score can be summed with our rules on one raw scale.
    c = max(-0.9999, min(0.9999, compound))
    return c * math.sqrt(_ALPHA / (1.0 - c * c))


def _join_cjk_runs(text: str) -> str:
    """The Mandarin parts of a turn; runs split by anything but whitespace are joined by a clause break,
    so a negator in one clause (or before an English phrase) never reaches into the next."""
    parts: list[str] = []
    prev_end = None
    for m in _CJK_RUN.finditer(text):
        if prev_end is not None:
            gap = text[prev_end : m.start()]
            parts.append("" if gap.isspace() else "，")
        parts.append(m.group())
        prev_end = m.end()
    return "".join(parts)


def _preceded_by_en_negator(text: str, start: int) -> bool:
    words = text[max(0, start - 40) : start].split()[-3:]
    return bool(_EN_NEGATOR.search(" ".join(words)))


def _preceded_by_zh_negator(text: str, start: int) -> bool:
    window = text[max(0, start - 3) : start]
    for k in range(len(window) - 1, -1, -1):
        if window[k] in _ZH_CLAUSE_BREAK:
            window = window[k + 1 :]
            break
    return any(ch in _ZH_FLAG_NEGATORS for ch in window)


# --------------------------------------------------------------------------------------------------
# Transformers backend


def label_values_from_id2label(id2label: Mapping[int, str]) -> tuple[float, ...]:
    """Sentiment value in [-1, 1] of each class, from the model's label names.

    Understands negative/neutral/positive names (any case, abbreviations such as "neg", "very negative"
    as -1 with plain "negative" then -0.5), star ratings
    ("1 star" .. "5 stars"), and generic ``LABEL_i`` with 2 (neg, pos), 3 (neg, neu, pos) or 5 (stars)
    classes. Anything else raises ModelUnavailableError naming the ``[text] label_values`` option.
    """
    n = len(id2label)
    names = [str(id2label[i]).strip().lower() for i in range(n)]
    stars = [re.fullmatch(r"(\d+)\s*stars?", name) for name in names]
    if n >= 2 and all(stars):
        counts = [int(m.group(1)) for m in stars]  # type: ignore[union-attr]
        lo, hi = min(counts), max(counts)
        if hi > lo:
            return tuple(2.0 * (c - lo) / (hi - lo) - 1.0 for c in counts)
    # "very negative" / "negative" / ... (SST-5 style): plain polar labels sit half-way when strong ones exist.
    strong = re.compile(r"\b(very|strongly|extremely)\b")
    plain = 0.5 if any(strong.search(name) for name in names) else 1.0
    polar: list[float | None] = []
    for name in names:
        size = 1.0 if strong.search(name) else plain
        if "neg" in name:
            polar.append(-size)
        elif "neu" in name:
            polar.append(0.0)
        elif "pos" in name:
            polar.append(size)
        else:
            polar.append(None)
    if n >= 2 and all(v is not None for v in polar):
        return tuple(polar)  # type: ignore[arg-type]
    if all(re.fullmatch(r"label_\d+", name) for name in names) and n in (2, 3, 5):
        return tuple(2.0 * i / (n - 1) - 1.0 for i in range(n))
    raise ModelUnavailableError(
        f"cannot tell the sentiment meaning of the model's labels {names}; set [text] label_values to one "
        "number in [-1, 1] per class id (e.g. [-1.0, 0.0, 1.0]), or give the model's config.json an "
        "id2label with negative/neutral/positive names"
    )


class _TransformersSentiment:
    """A local sequence-classification model; a lock serialises calls (fast tokenizers are not re-entrant)."""

    def __init__(self, options: TextOptions) -> None:
        folder = Path(options.model_path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"[text] model_path {str(folder)!r} holds no config.json; put a sequence-classification "
                "model saved with save_pretrained() there (config.json, tokenizer files, model.safetensors "
                "or pytorch_model.bin), or set [text] backend = \"lexicon\""
            )
        try:
            import torch  # noqa: F401  (imported lazily: only this backend needs torch)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailableError(
                f"backend 'transformers' needs torch and transformers installed ({exc}); "
                "pip install torch==2.13.0 transformers, or set [text] backend = \"lexicon\""
            ) from exc
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True
            )
        except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many types; all mean "unusable"
            raise ModelUnavailableError(
                f"cannot load a sequence-classification model from {folder}: {exc}; the folder needs "
                "config.json, tokenizer files and weights written by save_pretrained()"
            ) from exc
        self._model.eval()
        self._torch = torch
        # torch's thread count is process-wide, so it is set once here rather than on every call.
        torch.set_num_threads(options.torch_threads)
        self._max_tokens = options.max_tokens
        n_labels = int(self._model.config.num_labels)
        if options.label_values:
            if len(options.label_values) != n_labels:
                raise ModelUnavailableError(
                    f"[text] label_values has {len(options.label_values)} numbers but the model in "
                    f"{folder} has {n_labels} classes; give one number per class id"
                )
            self.values = tuple(float(v) for v in options.label_values)
        else:
            id2label = {int(k): v for k, v in self._model.config.id2label.items()}
            self.values = label_values_from_id2label(id2label)
        self._lock = threading.Lock()
        log.info("text: loaded transformers model %s, class values %s", folder, self.values)

    def sentiment(self, text: str) -> float:
        torch = self._torch
        with self._lock:
            inputs = self._tokenizer(
                text, truncation=True, max_length=self._max_tokens, return_tensors="pt"
            )
            with torch.inference_mode():
                logits = self._model(**inputs).logits[0]
            probs = torch.softmax(logits.float(), dim=-1).tolist()
        return float(sum(p * v for p, v in zip(probs, self.values)))


# --------------------------------------------------------------------------------------------------
# The scorer


class TextScorer:
    """Scores turns; load once per process with ``TextScorer.load(options)``; ``score()`` is thread-safe."""

    def __init__(
        self,
        options: TextOptions,
        *,
        vader,
        en_rules: tuple[tuple[re.Pattern, float], ...],
        en_formulas: re.Pattern | None,
        zh_lexicon: _ZhLexicon,
        flag_patterns: tuple[tuple[str, str, re.Pattern], ...],
        snownlp_cls,
        to_simplified,
        model: _TransformersSentiment | None,
        trained: Mapping[str, LinearTextModel] | None = None,
    ) -> None:
        self.options = options
        self._vader = vader
        self._en_rules = en_rules
        self._en_formulas = en_formulas
        self._zh = zh_lexicon
        self._flags = flag_patterns
        self._snownlp = snownlp_cls
        self._to_simplified = to_simplified
        self._model = model
        self._trained = dict(trained or {})

    @classmethod
    def load(cls, options: TextOptions) -> "TextScorer":
        folder = Path(options.lexicon_dir) if options.lexicon_dir else models_root() / "text"
        if not folder.is_dir():
            raise ModelUnavailableError(
                f"text lexicon folder {folder} does not exist; restore models/text/ from the repository, "
                "or set $CALLPULSE_MODELS / [text] lexicon_dir to a folder holding en_domain.tsv, "
                "en_vader_overrides.tsv, en_formulas.txt, flags_en.tsv, flags_zh.tsv, zh_sentiment.tsv, zh_degree.tsv and "
                "zh_negators.txt"
            )
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as exc:
            raise ModelUnavailableError(
                f"vaderSentiment is not installed ({exc}): pip install vaderSentiment"
            ) from exc
        snownlp_cls = None
        # snownlp only serves the lexicon backend's Mandarin score (its import takes seconds).
        if options.backend == "lexicon" and options.snownlp_weight > 0:
            try:
                from snownlp import SnowNLP as snownlp_cls
            except ImportError as exc:
                raise ModelUnavailableError(
                    f"snownlp is not installed ({exc}): pip install snownlp, or set [text] snownlp_weight = 0"
                ) from exc
        to_simplified = None
        if options.convert_traditional:
            try:
                import zhconv

                def to_simplified(s: str) -> str:
                    return zhconv.convert(s, "zh-cn")
            except ImportError as exc:
                raise ModelUnavailableError(
                    f"zhconv is not installed ({exc}): pip install zhconv, "
                    "or set [text] convert_traditional = false"
                ) from exc
        flags = tuple(
            [(flag, "en", rx) for flag, rx in _read_flag_patterns(folder / "flags_en.tsv")]
            + [(flag, "zh", rx) for flag, rx in _read_flag_patterns(folder / "flags_zh.tsv")]
        )
        model = _TransformersSentiment(options) if options.backend == "transformers" else None
        trained = None
        if options.backend == "trained":
            trained, _card = load_models(folder)
            missing = {"zh", "en"} - set(trained)
            if missing:
                raise ModelUnavailableError(
                    f"{folder / 'trained.json'} has no model for {sorted(missing)}; rebuild with "
                    "`python scripts/train_text.py` or set [text] backend = \"lexicon\""
                )
        vader = SentimentIntensityAnalyzer()
        # Our own analyzer instance: banking words ("interest", "credit") and politeness are not feelings.
        vader.lexicon.update(_read_word_values(folder / "en_vader_overrides.tsv"))
        scorer = cls(
            options,
            vader=vader,
            en_rules=_read_weighted_patterns(folder / "en_domain.tsv"),
            en_formulas=_read_formulas(folder / "en_formulas.txt"),
            zh_lexicon=_ZhLexicon.from_folder(folder),
            flag_patterns=flags,
            snownlp_cls=snownlp_cls,
            to_simplified=to_simplified,
            model=model,
            trained=trained,
        )
        # Warm up: snownlp and VADER build lazy state on first use; do it here, not on a live call.
        scorer.score("您好，谢谢。 Hello, thanks.", language="auto")
        log.info("text: backend %s ready (lexicons from %s)", options.backend, folder)
        return scorer

    # -- public ------------------------------------------------------------------------------------

    def score(self, text: str, *, language: str) -> TextScore:
        """Score one turn. Any string works (empty, emoji, 10k characters); ``language`` is a hint:
        "en" | "zh" | "auto" | anything else. Mandarin parts are always read as Mandarin and Latin-script
        parts as English; the hint only decides the reported language of text with no letters at all."""
        if not isinstance(text, str):
            raise TypeError(f"TextScorer.score() needs a str, got {type(text).__name__}")
        text, cjk_text, latin_text, zh_view = self._views(text)
        used = self._language(cjk_text, latin_text, language)
        flags = self._find_flags(latin_text, zh_view)
        if self._model is not None:
            sentiment = self._model.sentiment(text) if text.strip() else 0.0
        elif self._trained:
            sentiment = self._trained_sentiment(cjk_text, latin_text, zh_view, flags)
        else:
            raw = self._en_raw(latin_text) + self._zh_raw(cjk_text)
            sentiment = _normalise(raw)
        sentiment = max(-1.0, min(1.0, sentiment))
        return TextScore(
            sentiment=sentiment,
            label=self.label_for(sentiment),
            flags=flags,
            language=used,
            backend=self.options.backend,
        )

    def label_for(self, sentiment: float) -> str:
        if sentiment < self.options.negative_below:
            return "negative"
        if sentiment > self.options.positive_above:
            return "positive"
        return "neutral"

    def with_trained_model(self, model: LinearTextModel) -> "TextScorer":
        """A copy of this trained-backend scorer with one language's model replaced (cross-domain
        evaluation scores each left-out domain with the model trained without it)."""
        if not self._trained:
            raise ValueError("with_trained_model() needs a scorer loaded with backend 'trained'")
        copy = object.__new__(TextScorer)
        copy.__dict__.update(self.__dict__)
        copy._trained = {**self._trained, model.language: model}
        return copy

    def p_negative(self, text: str) -> float | None:
        """Trained backend: the calibrated P(negative) of a turn (None for other backends or no words)."""
        if not self._trained:
            return None
        _text, cjk_text, latin_text, zh_view = self._views(text)
        return self._trained_p(cjk_text, latin_text, zh_view)[0]

    # -- parts -------------------------------------------------------------------------------------

    def _views(self, text: str) -> tuple[str, str, str, str]:
        """(NFKC text, its Mandarin runs, its Latin-script part, the whole turn in Simplified)."""
        text = unicodedata.normalize("NFKC", text)
        cjk_text = _join_cjk_runs(text)
        latin_text = _restore_contractions(text)
        zh_view = ""
        if cjk_text:
            latin_text = _restore_contractions(_CJK_RUN.sub(" ", text))
            # Mandarin flag patterns read the whole turn (digits too: "我要打12378").
            zh_view = text
            if self._to_simplified is not None:
                cjk_text = self._to_simplified(cjk_text)
                zh_view = self._to_simplified(text)
        return text, cjk_text, latin_text, zh_view

    def _trained_p(self, cjk_text: str, latin_text: str, zh_view: str) -> tuple[float | None, float, bool, float]:
        """(P(negative) or None when the turn has no words, lexicon score without snownlp, whether the
        lexicon found any sentiment at all, the turn's length in words)."""
        n_cjk = len(_CJK_CHAR.findall(cjk_text))
        en_text = self._en_formulas.sub(" ", latin_text) if self._en_formulas is not None else latin_text
        n_words = len(_LATIN_WORD.findall(en_text))
        zh_raw, zh_hits = self._zh.raw_valence(cjk_text) if n_cjk else (0.0, 0)
        en_raw = self._en_raw(latin_text) if n_words else 0.0
        lex = _normalise(zh_raw + en_raw)
        # A faint lexicon match (one mild word such as "帮" in "请问有什么可以帮您") is not a feeling.
        evidence = abs(zh_raw) >= _EVIDENCE_RAW or abs(en_raw) >= _EVIDENCE_RAW
        length = n_cjk / 1.5 + n_words
        if n_cjk == 0 and n_words == 0:
            return None, lex, evidence, length
        # Each language's model reads its own part; a mixed turn averages their calibrated logits by
        # words (one Mandarin word is about 1.5 characters).
        parts = []
        if n_cjk:
            parts.append((n_cjk / 1.5, self._trained["zh"], zh_view, _normalise(zh_raw)))
        if n_words:
            parts.append((float(n_words), self._trained["en"], en_text, _normalise(en_raw)))
        total = sum(w for w, *_ in parts)
        z = 0.0
        for w, model, part, lex_part in parts:
            p = min(1.0 - 1e-9, max(1e-9, model.p_negative(part, lex_part)))
            z += w / total * math.log(p / (1.0 - p))
        return 1.0 / (1.0 + math.exp(-z)), lex, evidence, length

    def _trained_sentiment(self, cjk_text: str, latin_text: str, zh_view: str, flags: Sequence[str]) -> float:
        p, lex, evidence, length = self._trained_p(cjk_text, latin_text, zh_view)
        complaint_rule = p is not None and self._en_complaint_rule(latin_text)
        if p is None or (not evidence and not flags and length < _SHORT_TURN_WORDS):
            # The models learnt from reviews and tweets, which all carry an opinion; a short turn in which
            # the lexicon finds no feeling at all ("请问您是本人吗", "是的") is service talk, not a review.
            sentiment = 0.0
        else:
            negative = max(0.0, (p - _NEGATIVE_FROM_P) / (1.0 - _NEGATIVE_FROM_P))
            # Positive needs the lexicon (praise, thanks) with the model not against it: reviews teach the
            # model that anything not a complaint is praise, but most of a call is neither.
            positive = max(0.0, lex) * min(1.0, max(0.0, (0.6 - p) / 0.3))
            sentiment = positive - negative
        for flag in flags:
            sentiment = min(sentiment, _FLAG_CAPS[flag])
        if complaint_rule:
            sentiment = min(sentiment, _DOMAIN_RULE_CAP)
        return sentiment

    def _en_complaint_rule(self, latin_text: str) -> bool:
        """Whether a negative call-centre rule of en_domain.tsv matches (not negated)."""
        text = self._en_formulas.sub(" ", latin_text) if self._en_formulas is not None else latin_text
        for rx, valence in self._en_rules:
            if valence < 0:
                for m in rx.finditer(text):
                    if not _preceded_by_en_negator(text, m.start()):
                        return True
        return False


    @staticmethod
    def _language(cjk_text: str, latin_text: str, hint: str) -> str:
        n_cjk = len(_CJK_CHAR.findall(cjk_text))
        n_words = len(_LATIN_WORD.findall(latin_text))
        if n_cjk == 0 and n_words == 0:
            return hint if hint in ("en", "zh") else "en"
        # One Mandarin word is about 1.5 characters; compare words with words.
        return "zh" if n_cjk / 1.5 >= n_words else "en"

    def _en_raw(self, text: str) -> float:
        if self._en_formulas is not None:
            text = self._en_formulas.sub(" ", text)
        if not text.strip():
            return 0.0
        raw = _compound_to_raw(self._vader.polarity_scores(text)["compound"])
        for rx, valence in self._en_rules:
            for m in rx.finditer(text):
                if not _preceded_by_en_negator(text, m.start()):
                    raw += valence
        return raw

    def _zh_raw(self, text: str) -> float:
        if not text:
            return 0.0
        raw, hits = self._zh.raw_valence(text)
        if self._snownlp is not None and hits and self.options.snownlp_max_chars > 0:
            # snownlp reads questions and neutral service talk as negative, so it only refines turns in
            # which the lexicon already found sentiment words; it never creates a sentiment on its own.
            chunk = text[: self.options.snownlp_max_chars]
            if _CJK_CHAR.search(chunk):
                try:
                    p = float(self._snownlp(chunk).sentiments)
                except (ZeroDivisionError, ValueError, KeyError, IndexError) as exc:
                    # snownlp's naive Bayes has edge cases on odd strings; the lexicon result stands.
                    log.debug("text: snownlp failed on a %d-character chunk: %s", len(chunk), exc)
                else:
                    raw += self.options.snownlp_weight * (2.0 * p - 1.0)
        return raw

    def _find_flags(self, latin_text: str, zh_view: str) -> tuple[str, ...]:
        found = set()
        for flag, lang, rx in self._flags:
            if flag in found:
                continue
            target = latin_text if lang == "en" else zh_view
            if not target:
                continue
            for m in rx.finditer(target):
                if flag in _NEGATABLE_FLAGS:
                    negated = (
                        _preceded_by_en_negator(target, m.start())
                        if lang == "en"
                        else _preceded_by_zh_negator(target, m.start())
                    )
                    if negated:
                        continue
                found.add(flag)
                break
        return tuple(sorted(found))


# --------------------------------------------------------------------------------------------------
# Measuring on labelled text


@dataclass(frozen=True)
class TextMeasurement:
    """Negative vs non-negative on one labelled file. UAR = mean of the two recalls (chance = 0.5)."""

    path: str
    n_texts: int
    n_negative: int
    recall_negative: float
    recall_non_negative: float
    uar: float
    ms_per_text: float
    flag_rate_negative: float
    flag_rate_non_negative: float
    sentiments: tuple[float, ...] = field(repr=False, default=())
    is_negative: tuple[bool, ...] = field(repr=False, default=())

    def uar_at(self, negative_below: float) -> float:
        """UAR if the negative threshold were ``negative_below`` (for calibration sweeps)."""
        return _uar(self.sentiments, self.is_negative, negative_below)[2]


def _uar(sentiments: Sequence[float], is_negative: Sequence[bool], threshold: float) -> tuple[float, float, float]:
    tp = sum(1 for s, y in zip(sentiments, is_negative) if y and s < threshold)
    tn = sum(1 for s, y in zip(sentiments, is_negative) if not y and s >= threshold)
    n_neg = sum(1 for y in is_negative if y)
    n_pos = len(is_negative) - n_neg
    r_neg = tp / n_neg if n_neg else float("nan")
    r_pos = tn / n_pos if n_pos else float("nan")
    return r_neg, r_pos, (r_neg + r_pos) / 2.0


def read_labelled_text(path: str | Path) -> list[tuple[str, str, str]]:
    """Rows (text, label, language) of a CSV with columns text,label,language (header required)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"text", "label"} - set(reader.fieldnames or ())
            if missing:
                raise DatasetError(
                    f"{path} lacks column(s) {sorted(missing)}; expected a header text,label,language"
                )
            return [
                (row["text"] or "", (row["label"] or "").strip(), (row.get("language") or "auto").strip())
                for row in reader
            ]
    except FileNotFoundError as exc:
        raise DatasetError(f"labelled text file {path} does not exist (set $CALLPULSE_DATA?)") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} is not a UTF-8 CSV file: {exc}") from exc


def measure_text_file(
    scorer: TextScorer,
    path: str | Path,
    *,
    negative_labels: Sequence[str] = ("negative", "complaint"),
    every: int = 1,
    limit: int | None = None,
) -> TextMeasurement:
    """Score the rows of a labelled CSV and report negative-vs-rest recall, UAR and time per text.

    ``every`` keeps every n-th row (the files are sorted by label, so a quick measure must stride, not
    cut); ``limit`` then keeps the first rows of that. A text counts as predicted negative when its label
    is "negative" (sentiment < negative_below).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    rows = read_labelled_text(path)[::every]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DatasetError(f"{path} holds no rows to measure")
    sentiments: list[float] = []
    truth: list[bool] = []
    flagged: list[bool] = []
    start = time.perf_counter()
    for text, label, language in rows:
        result = scorer.score(text, language=language)
        sentiments.append(result.sentiment)
        truth.append(label in negative_labels)
        flagged.append(bool(result.flags))
    elapsed = time.perf_counter() - start
    r_neg, r_pos, uar = _uar(sentiments, truth, scorer.options.negative_below)
    n_neg = sum(truth)
    n_pos = len(truth) - n_neg
    return TextMeasurement(
        path=str(path),
        n_texts=len(rows),
        n_negative=n_neg,
        recall_negative=r_neg,
        recall_non_negative=r_pos,
        uar=uar,
        ms_per_text=1000.0 * elapsed / len(rows),
        flag_rate_negative=sum(f for f, y in zip(flagged, truth) if y) / n_neg if n_neg else float("nan"),
        flag_rate_non_negative=sum(f for f, y in zip(flagged, truth) if not y) / n_pos if n_pos else float("nan"),
        sentiments=tuple(sentiments),
        is_negative=tuple(truth),
    )


@dataclass(frozen=True)
class FlagFigures:
    """Precision and recall of one flag over a labelled phrase set (nan when undefined)."""

    flag: str
    n_expected: int
    n_raised: int
    n_correct: int
    precision: float
    recall: float
    misses: tuple[str, ...] = field(repr=False, default=())
    false_alarms: tuple[str, ...] = field(repr=False, default=())


def read_flag_phrases(path: str | Path) -> list[tuple[frozenset[str], str]]:
    """Rows ``expected flags<TAB>text`` ("-" = none; comma-separated; ``#`` comments) of a phrase set."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"flag phrase set {path} cannot be read as UTF-8 text: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        flags = frozenset() if len(cols) == 2 and cols[0] == "-" else frozenset(cols[0].split(","))
        if len(cols) != 2 or not flags <= set(FLAGS):
            raise DatasetError(f"{path}:{number}: expected '<flags or ->\\t<text>' with flags from {FLAGS}")
        rows.append((flags, cols[1]))
    return rows


def measure_flags(scorer: TextScorer, phrases: Sequence[tuple[frozenset[str], str]]) -> dict[str, FlagFigures]:
    """Per flag: how many phrases expect it, how many raise it, precision and recall."""
    raised = [set(scorer.score(text, language="auto").flags) for _, text in phrases]
    out = {}
    for flag in FLAGS:
        expected = [flag in want for want, _ in phrases]
        got = [flag in r for r in raised]
        tp = sum(e and g for e, g in zip(expected, got))
        n_e, n_g = sum(expected), sum(got)
        out[flag] = FlagFigures(
            flag, n_e, n_g, tp, tp / n_g if n_g else float("nan"), tp / n_e if n_e else float("nan"),
            tuple(t for (_, t), e, g in zip(phrases, expected, got) if e and not g),
            tuple(t for (_, t), e, g in zip(phrases, expected, got) if g and not e),
        )
    return out
