"""Text stage: per-turn sentiment in [-1, 1], a label, and flags (abuse, escalation_request, anger), zh + en.

Three backends share one interface:

- ``trained`` (the embedded default, no network, no torch): hashed n-gram logistic models trained on
  labelled reviews and tweets and chosen across domains (``pipeline/text_linear.py``, weights in
  ``models/text/trained_*.npz``, card in ``models/text/README.md``); English adds a logistic head on
  MiniLM-L6 int8 sentence embeddings (``pipeline/text_minilm.py``, onnxruntime, one thread) whose logit is
  summed with the n-gram model's. They give a calibrated P(negative); the lexicon below is one of their
  inputs and decides whether a non-negative turn is positive or neutral.
- ``lexicon`` (no network, no torch): English is VADER's compound score plus
  call-centre complaint rules (``models/text/en_domain.tsv``); Mandarin is a project lexicon with degree
  words and negation (``models/text/zh_*.tsv``) plus a damped snownlp term. Both are summed on VADER's raw
  valence scale and normalised once, so mixed-language turns get one consistent score.
- ``transformers``: any local sequence-classification model folder (a bank's own fine-tuned model); its
  class probabilities are mapped to [-1, 1] through the labels' meaning.

Flags always come from the pattern files (``flags_en.tsv``, ``flags_zh.tsv``), whatever the backend, so a
supervisor phrase trigger ("我要投诉", "speak to your manager") never depends on a model's mood.

Modules by concern: ``text_lexicon.py`` (rule files, Mandarin lexicon, negation), ``text_flags.py`` (flag
patterns), ``text_linear.py`` (trained n-gram models and the English head), ``text_minilm.py`` (MiniLM
embeddings), ``text_transformers.py`` (local model folder); this one
puts them together. Measuring on labelled files is ``pipeline/evaluate/text_measure.py``.

``TextScorer.load()`` once per process; ``score()`` holds no per-call state and is safe from many threads.
"""
from __future__ import annotations

import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import ModelUnavailableError
from .resources import models_root
from .text_flags import FLAGS, find_flags, load_flag_patterns
from .text_lexicon import (
    CJK_CHAR,
    CJK_RUN,
    LATIN_WORD,
    ZhLexicon,
    compound_to_raw,
    join_cjk_runs,
    normalise,
    preceded_by_en_negator,
    read_formulas,
    read_markers,
    read_weighted_patterns,
    read_word_values,
    restore_contractions,
)
from .text_linear import DEFAULT_NEGATIVE_FROM_P, LinearTextModel, load_models
from .text_transformers import TransformersSentiment, label_values_from_id2label

# Names other modules and tests import from here (the stage's public surface).
__all__ = ["BACKENDS", "FLAGS", "LABELS", "TextOptions", "TextScore", "TextScorer", "label_values_from_id2label",
           "lexicon_score", "models_root"]

log = logging.getLogger("pipeline.text")

BACKENDS = ("trained", "lexicon", "transformers")
LABELS = ("negative", "neutral", "positive")
# Trained backend: P(negative) below this gives sentiment 0; from here to 1 sentiment falls linearly to -1,
# so with negative_below = -0.2 a turn is labelled negative from P(negative) = 0.52 (about the equal-prior
# boundary the models are calibrated to) and a doubtful turn adds nothing to agitation. A language's model
# may carry its own (``negative_from_p`` in trained.json, chosen across domains); this is the default.
_NEGATIVE_FROM_P = DEFAULT_NEGATIVE_FROM_P
# Trained backend: a flag is evidence the model may not have seen in reviews; it caps the sentiment.
_FLAG_CAPS = {"abuse": -0.6, "anger": -0.4, "escalation_request": -0.3}
# Trained backend: a turn shorter than this (words; a Mandarin word ~1.5 characters) gets a sentiment only
# when the lexicon or a flag finds some feeling in it (see _trained_sentiment).
_SHORT_TURN_WORDS = 10.0
# Trained backend, optional files of the lexicon folder: service forms (see _no_opinion).
ZH_SERVICE_MARKERS = "zh_service_markers.txt"
EN_SERVICE_FORMS = "en_service_forms.txt"
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


def lexicon_score(scorer: "TextScorer", text: str, language: str) -> float:
    """The lexicon's normalised score of one language's part of a text, without snownlp (what the trained
    models read as their lexicon feature; ``pipeline/training/text.py`` uses this)."""
    _text, cjk_text, latin_text, _zh_view = scorer._views(text)
    if language == "zh":
        return normalise(scorer._zh.raw_valence(cjk_text)[0]) if cjk_text else 0.0
    return normalise(scorer._en_raw(latin_text))


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
        zh_lexicon: ZhLexicon,
        zh_service: re.Pattern | None = None,
        en_service: re.Pattern | None = None,
        flag_patterns: tuple[tuple[str, str, re.Pattern], ...],
        snownlp_cls,
        to_simplified,
        model: TransformersSentiment | None,
        trained: Mapping[str, LinearTextModel] | None = None,
    ) -> None:
        self.options = options
        self._vader = vader
        self._en_rules = en_rules
        self._en_formulas = en_formulas
        self._zh = zh_lexicon
        self._zh_service = zh_service
        self._en_service = en_service
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
        flags = load_flag_patterns(folder)
        model = TransformersSentiment(options) if options.backend == "transformers" else None
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
        vader.lexicon.update(read_word_values(folder / "en_vader_overrides.tsv"))
        scorer = cls(
            options,
            vader=vader,
            en_rules=read_weighted_patterns(folder / "en_domain.tsv"),
            en_formulas=read_formulas(folder / "en_formulas.txt"),
            zh_lexicon=ZhLexicon.from_folder(folder),
            zh_service=read_markers(folder / ZH_SERVICE_MARKERS),
            en_service=read_formulas(folder / EN_SERVICE_FORMS) if (folder / EN_SERVICE_FORMS).is_file() else None,
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
            sentiment = normalise(raw)
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
        cjk_text = join_cjk_runs(text)
        latin_text = restore_contractions(text)
        zh_view = ""
        if cjk_text:
            latin_text = restore_contractions(CJK_RUN.sub(" ", text))
            # Mandarin flag patterns read the whole turn (digits too: "我要打12378").
            zh_view = text
            if self._to_simplified is not None:
                cjk_text = self._to_simplified(cjk_text)
                zh_view = self._to_simplified(text)
        return text, cjk_text, latin_text, zh_view

    def _trained_p(self, cjk_text: str, latin_text: str, zh_view: str, *,
                   skip_short: bool = False) -> tuple[float | None, float, bool, float, float]:
        """(P(negative) or None when the turn has no words, lexicon score without snownlp, whether the
        lexicon found any sentiment at all, the turn's length in words, the P(negative) from which its
        sentiment falls below 0: the models' own, mixed by words like their logits). ``skip_short``: also
        None for a short turn without lexicon evidence, whose sentiment the short-turn rule fixes at 0
        anyway (the English model runs MiniLM, milliseconds a turn: not spent on "ok" or "what is my balance")."""
        n_cjk = len(CJK_CHAR.findall(cjk_text))
        en_text = self._en_formulas.sub(" ", latin_text) if self._en_formulas is not None else latin_text
        n_words = len(LATIN_WORD.findall(en_text))
        zh_raw, zh_hits = self._zh.raw_valence(cjk_text) if n_cjk else (0.0, 0)
        en_raw = self._en_raw(latin_text) if n_words else 0.0
        lex = normalise(zh_raw + en_raw)
        # A faint lexicon match (one mild word such as "帮" in "请问有什么可以帮您") is not a feeling.
        evidence = abs(zh_raw) >= _EVIDENCE_RAW or abs(en_raw) >= _EVIDENCE_RAW
        length = n_cjk / 1.5 + n_words
        if n_cjk == 0 and n_words == 0:
            return None, lex, evidence, length, _NEGATIVE_FROM_P
        if skip_short and not evidence and self._no_opinion(length, cjk_text, latin_text):
            return None, lex, evidence, length, _NEGATIVE_FROM_P
        # Each language's model reads its own part; a mixed turn averages their calibrated logits by
        # words (one Mandarin word is about 1.5 characters).
        parts = []
        if n_cjk:
            parts.append((n_cjk / 1.5, self._trained["zh"], zh_view, normalise(zh_raw)))
        if n_words:
            parts.append((float(n_words), self._trained["en"], en_text, normalise(en_raw)))
        total = sum(w for w, *_ in parts)
        z = 0.0
        p0 = 0.0
        for w, model, part, lex_part in parts:
            p = min(1.0 - 1e-9, max(1e-9, model.p_negative(part, lex_part)))
            z += w / total * math.log(p / (1.0 - p))
            p0 += w / total * model.negative_from_p
        return 1.0 / (1.0 + math.exp(-z)), lex, evidence, length, p0

    def _trained_sentiment(self, cjk_text: str, latin_text: str, zh_view: str, flags: Sequence[str]) -> float:
        p, lex, evidence, length, p0 = self._trained_p(cjk_text, latin_text, zh_view, skip_short=not flags)
        complaint_rule = length > 0 and self._en_complaint_rule(latin_text)
        if p is None:
            # No words, or (no flag, so skip_short) service talk that _trained_p did not score: the models
            # learnt from reviews and tweets, which all carry an opinion; a short turn in which the lexicon
            # finds no feeling ("请问您是本人吗", "是的"), or one in a service form ("请您核对一下您的姓名和身份证号",
            # "how much is this month's bill"), is neither. A flag or complaint rule still caps it below.
            sentiment = 0.0
        else:
            negative = max(0.0, (p - p0) / (1.0 - p0))
            # Positive needs the lexicon (praise, thanks) with the model not against it: reviews teach the
            # model that anything not a complaint is praise, but most of a call is neither.
            positive = max(0.0, lex) * min(1.0, max(0.0, (0.6 - p) / 0.3))
            sentiment = positive - negative
        for flag in flags:
            sentiment = min(sentiment, _FLAG_CAPS[flag])
        if complaint_rule:
            sentiment = min(sentiment, _DOMAIN_RULE_CAP)
        return sentiment

    def _no_opinion(self, length: float, cjk_text: str, latin_text: str) -> bool:
        """For a turn in which the lexicon found no feeling: whether it is service talk (short, or holding a
        service form of zh_service_markers.txt / en_service_forms.txt), whose sentiment is 0."""
        if length < _SHORT_TURN_WORDS:
            return True
        # cjk_text is already in Simplified (_views), like the markers.
        if self._zh_service is not None and cjk_text and self._zh_service.search(cjk_text) is not None:
            return True
        return self._en_service is not None and self._en_service.search(latin_text) is not None

    def _en_complaint_rule(self, latin_text: str) -> bool:
        """Whether a negative call-centre rule of en_domain.tsv matches (not negated)."""
        text = self._en_formulas.sub(" ", latin_text) if self._en_formulas is not None else latin_text
        for rx, valence in self._en_rules:
            if valence < 0:
                for m in rx.finditer(text):
                    if not preceded_by_en_negator(text, m.start()):
                        return True
        return False


    @staticmethod
    def _language(cjk_text: str, latin_text: str, hint: str) -> str:
        n_cjk = len(CJK_CHAR.findall(cjk_text))
        n_words = len(LATIN_WORD.findall(latin_text))
        if n_cjk == 0 and n_words == 0:
            return hint if hint in ("en", "zh") else "en"
        # One Mandarin word is about 1.5 characters; compare words with words.
        return "zh" if n_cjk / 1.5 >= n_words else "en"

    def _en_raw(self, text: str) -> float:
        if self._en_formulas is not None:
            text = self._en_formulas.sub(" ", text)
        if not text.strip():
            return 0.0
        raw = compound_to_raw(self._vader.polarity_scores(text)["compound"])
        for rx, valence in self._en_rules:
            for m in rx.finditer(text):
                if not preceded_by_en_negator(text, m.start()):
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
            if CJK_CHAR.search(chunk):
                try:
                    p = float(self._snownlp(chunk).sentiments)
                except (ZeroDivisionError, ValueError, KeyError, IndexError) as exc:
                    # snownlp's naive Bayes has edge cases on odd strings; the lexicon result stands.
                    log.debug("text: snownlp failed on a %d-character chunk: %s", len(chunk), exc)
                else:
                    raw += self.options.snownlp_weight * (2.0 * p - 1.0)
        return raw

    def _find_flags(self, latin_text: str, zh_view: str) -> tuple[str, ...]:
        return find_flags(self._flags, latin_text, zh_view)
