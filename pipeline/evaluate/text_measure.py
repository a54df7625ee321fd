"""Measuring the text stage on labelled files: negative-vs-rest recall and UAR of a labelled CSV
(``measure_text_file``, ``scripts/measure_text.py``), and flag precision / recall on a phrase set
(``measure_flags``, ``tests/data/text_flag_phrases.tsv``). ``callpulse evaluate text`` is in ``text.py``.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DatasetError
from ..text import TextScorer
from ..text_flags import FLAGS
from .metrics import uar as uar_of


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
    """(recall of the negatives, recall of the rest, UAR) when below ``threshold`` means negative; NaN
    where a class is absent. The figures are :func:`.metrics.uar`'s, the project's one definition."""
    y = np.asarray(is_negative, dtype=bool)
    pred = np.asarray(sentiments, dtype=float) < threshold
    return uar_of(y, pred, (True,)), uar_of(y, pred, (False,)), uar_of(y, pred, (True, False), every_class=True)


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


@dataclass(frozen=True)
class CallTalkFigures:
    """How often plain service talk of one language is labelled negative, alone and two lines to a turn."""

    language: str
    n_lines: int
    negative_lines: tuple[str, ...]
    n_pairs: int
    negative_pairs: tuple[str, ...]

    @property
    def line_rate(self) -> float:
        return len(self.negative_lines) / self.n_lines if self.n_lines else 0.0

    @property
    def pair_rate(self) -> float:
        return len(self.negative_pairs) / self.n_pairs if self.n_pairs else 0.0


def read_call_talk(path: str | Path) -> list[tuple[str, str]]:
    """(text, language) of a neutral call-talk TSV (columns text, language, party; '#' lines are notes)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    except FileNotFoundError as exc:
        raise DatasetError(f"call-talk file {path} not found") from exc
    if not rows or not {"text", "language"} <= set(rows[0]):
        raise DatasetError(f"{path} needs the tab-separated columns text, language (and party)")
    return [(r["text"], r["language"]) for r in rows]


def measure_call_talk(scorer: TextScorer, lines: Sequence[tuple[str, str]], *, language: str, n_pairs: int = 300,
                      seed: int = 0) -> CallTalkFigures:
    """Label every line of ``language``, and ``n_pairs`` turns of two random lines joined (an ASR turn often
    holds two sentences, which passes the short-turn length), counting those labelled negative."""
    import random

    texts = [t for t, lang in lines if lang == language]
    joiner = "，" if language == "zh" else " "
    rng = random.Random(seed)
    pairs = [joiner.join(rng.sample(texts, 2)) for _ in range(n_pairs)] if len(texts) >= 2 else []
    neg_lines = tuple(t for t in texts if scorer.score(t, language=language).label == "negative")
    neg_pairs = tuple(t for t in pairs if scorer.score(t, language=language).label == "negative")
    return CallTalkFigures(language, len(texts), neg_lines, len(pairs), neg_pairs)
