"""Evaluation metrics as pure functions: WER/CER, confusion matrices and UAR, calibration (ECE), alert
timing. Every recall-averaged or calibration figure in the project (evaluation, training recipes) comes
from here, so one definition serves the model cards and ``callpulse evaluate`` alike.

Nothing here reads files or models, so every figure the evaluations print can be checked by hand
(``tests/test_eval_metrics.py`` does exactly that). Transcript normalisation before WER/CER (numbers
spelled out, Traditional -> Simplified, punctuation) is in :mod:`.text_norm` and re-exported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .text_norm import chinese_cardinal, english_cardinal, normalize_text, tokens  # noqa: F401 (re-exported)


# --- edit distance ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditCounts:
    """Levenshtein alignment counts of a hypothesis against a reference of ``n_ref`` units."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def n_ref(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        """(S + D + I) / N; None when the reference is empty (the rate is undefined)."""
        return self.errors / self.n_ref if self.n_ref else None

    def __add__(self, other: "EditCounts") -> "EditCounts":
        return EditCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.hits + other.hits)

    def as_dict(self) -> dict:
        return {"substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "hits": self.hits, "n_ref": self.n_ref,
                "errors": self.errors, "rate": self.rate}


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Minimum-edit (Levenshtein) alignment counts. Among alignments with the same number of edits, the
    one with the most hits wins ("sat on the mat" vs "sit on mat today" is S + D + I with 4 hits, not
    3 substitutions with 3 hits), so words that do match are reported as matched."""
    n, m = len(reference), len(hypothesis)
    # cost[i][j] = (edits, substitutions, deletions, insertions) for reference[:i] vs hypothesis[:j]
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)] + [None] * m  # type: ignore[list-item]
        for j in range(1, m + 1):
            e, s, d, ins = prev[j - 1]
            sub = (e, s, d, ins) if reference[i - 1] == hypothesis[j - 1] else (e + 1, s + 1, d, ins)
            e, s, d, ins = prev[j]
            dele = (e + 1, s, d + 1, ins)
            e, s, d, ins = cur[j - 1]
            inse = (e + 1, s, d, ins + 1)
            cur[j] = min(sub, dele, inse, key=lambda c: (c[0], c[1] + c[2]))  # fewest edits, then most hits
        prev = cur
    edits, subs, dels, ins = prev[m]
    return EditCounts(substitutions=subs, deletions=dels, insertions=ins, hits=n - subs - dels)


def error_counts(reference: str, hypothesis: str, *, language: str) -> EditCounts:
    """Counts for WER (English: words) or CER (Mandarin: characters) after normalisation."""
    return align(tokens(reference, language=language), tokens(hypothesis, language=language))


def error_rate_name(language: str) -> str:
    return "cer" if language.lower().startswith("zh") else "wer"


def pooled(counts: Iterable[EditCounts]) -> EditCounts:
    """Corpus-level counts: errors and reference lengths summed before dividing (not a mean of rates)."""
    total = EditCounts(0, 0, 0, 0)
    for c in counts:
        total = total + c
    return total


# --- classification --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Confusion:
    """A confusion matrix: ``counts[i][j]`` = items whose truth is ``labels[i]`` predicted ``labels[j]``."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def support(self, label: str) -> int:
        return sum(self.counts[self.labels.index(label)])

    def recall(self, label: str) -> float | None:
        """Recall of one class; None when no item has that truth."""
        i = self.labels.index(label)
        total = sum(self.counts[i])
        return self.counts[i][i] / total if total else None

    @property
    def n(self) -> int:
        return sum(sum(row) for row in self.counts)

    @property
    def accuracy(self) -> float | None:
        return sum(self.counts[i][i] for i in range(len(self.labels))) / self.n if self.n else None

    @property
    def uar(self) -> float | None:
        """Unweighted average recall over the classes that occur in the truth (absent classes skipped)."""
        recalls = [r for r in (self.recall(label) for label in self.labels) if r is not None]
        return sum(recalls) / len(recalls) if recalls else None

    def per_class_recall(self) -> dict[str, float | None]:
        return {label: self.recall(label) for label in self.labels}

    def as_dict(self) -> dict:
        return {"labels": list(self.labels), "counts": [list(r) for r in self.counts], "n": self.n,
                "accuracy": self.accuracy, "uar": self.uar, "per_class_recall": self.per_class_recall(),
                "support": {label: self.support(label) for label in self.labels}}


def confusion(truths: Sequence[str], predictions: Sequence[str], *, labels: Sequence[str]) -> Confusion:
    """Build a confusion matrix over ``labels`` (rows truth, columns prediction).

    Raises
    ------
    ValueError
        If the sequences differ in length or hold a label outside ``labels``.
    """
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for t, p in zip(truths, predictions):
        if t not in index or p not in index:
            raise ValueError(f"label {t if t not in index else p!r} is not one of {list(labels)}")
        counts[index[t]][index[p]] += 1
    return Confusion(tuple(labels), tuple(tuple(r) for r in counts))


def uar(y_true: np.ndarray, y_pred: np.ndarray, labels: Iterable, *, every_class: bool = False) -> float:
    """Unweighted average recall of label arrays [n]: the mean recall over the ``labels`` that occur in
    ``y_true`` (absent classes skipped, as :attr:`Confusion.uar`); NaN when none occurs. With
    ``every_class`` a class absent from the truth makes the UAR NaN instead (a figure over fewer
    classes than the task has is not comparable).

    The array form the training recipes use on out-of-fold predictions (integer class indices, or booleans
    with ``labels=(True, False)`` for a two-class task).
    """
    labels = list(labels)
    present = [c for c in labels if np.any(y_true == c)]
    if every_class and len(present) < len(labels):
        return math.nan
    recalls = [np.mean(y_pred[y_true == c] == c) for c in present]
    return float(np.mean(recalls)) if recalls else math.nan


def binary_view(truths: Sequence[str], scores: Sequence[Mapping[str, float]], *,
                positive: Sequence[str], negative: Sequence[str],
                names: tuple[str, str]) -> Confusion:
    """Two-class view of a multi-class task, decided by probability mass.

    Only items whose truth is in ``positive`` or ``negative`` take part. An item is predicted positive
    when the summed scores of the positive classes are at least those of the negative classes (so
    "angry vs neutral" compares p(angry) with p(neutral), and "high vs low arousal" compares
    p(angry) + p(happy) with p(neutral) + p(sad)). ``names`` = (positive name, negative name).
    """
    if len(truths) != len(scores):
        raise ValueError(f"{len(truths)} truths but {len(scores)} score rows")
    t_out: list[str] = []
    p_out: list[str] = []
    for truth, row in zip(truths, scores):
        if truth in positive:
            t_out.append(names[0])
        elif truth in negative:
            t_out.append(names[1])
        else:
            continue
        pos = sum(float(row.get(label, 0.0)) for label in positive)
        neg = sum(float(row.get(label, 0.0)) for label in negative)
        p_out.append(names[0] if pos >= neg else names[1])
    return confusion(t_out, p_out, labels=names)


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (probability that a random positive outscores a random negative, ties
    count half); None when either class is absent."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    if not pos or not neg:
        return None
    ranks = _average_ranks(list(scores))
    pos_rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (pos_rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def _average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


# --- calibration ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and its reliability table (equal-width confidence bins)."""

    ece: float | None
    bin_edges: tuple[float, ...]
    bin_counts: tuple[int, ...]
    bin_confidence: tuple[float | None, ...]
    bin_accuracy: tuple[float | None, ...]

    def as_dict(self) -> dict:
        return {"ece": self.ece, "bin_edges": list(self.bin_edges), "bin_counts": list(self.bin_counts),
                "bin_confidence": list(self.bin_confidence), "bin_accuracy": list(self.bin_accuracy)}


def calibration(confidences: Sequence[float], correct: Sequence[bool], *, n_bins: int = 10) -> Calibration:
    """ECE = sum over bins of (items in bin / all items) * |accuracy in bin - mean confidence in bin|.

    Bins are (0, 1/n], (1/n, 2/n], ... with a confidence of exactly 0 placed in the first bin.
    """
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    edges = tuple(i / n_bins for i in range(n_bins + 1))
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for k, c in enumerate(confidences):
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} is outside [0, 1]")
        # The small epsilon keeps 0.7 * 10 = 7.000000000000001 in the (0.6, 0.7] bin where it belongs.
        members[min(n_bins - 1, max(0, math.ceil(c * n_bins - 1e-9) - 1))].append(k)
    n = len(confidences)
    ece = 0.0
    bin_conf: list[float | None] = []
    bin_acc: list[float | None] = []
    for idx in members:
        if not idx:
            bin_conf.append(None)
            bin_acc.append(None)
            continue
        conf = sum(confidences[k] for k in idx) / len(idx)
        acc = sum(bool(correct[k]) for k in idx) / len(idx)
        bin_conf.append(conf)
        bin_acc.append(acc)
        ece += len(idx) / n * abs(acc - conf)
    return Calibration(ece if n else None, edges, tuple(len(i) for i in members), tuple(bin_conf),
                       tuple(bin_acc))


def top_label_calibration(truths: Sequence[str], scores: Sequence[Mapping[str, float]], *,
                          n_bins: int = 10) -> Calibration:
    """Calibration of the most probable class: confidence = its probability, correct = it is the truth."""
    confidences, correct = [], []
    for truth, row in zip(truths, scores):
        label = max(row, key=lambda k: row[k])
        confidences.append(float(row[label]))
        correct.append(label == truth)
    return calibration(confidences, correct, n_bins=n_bins)


def top_label_ece(probs: np.ndarray, y: np.ndarray, *, n_bins: int = 10) -> float:
    """Top-label ECE of class probabilities ``probs`` [n, k] against integer truths ``y`` [n]: the
    :func:`calibration` of the most probable class (NaN for no rows)."""
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return math.nan
    correct = probs.argmax(axis=1) == np.asarray(y)
    return float(calibration(probs.max(axis=1).tolist(), correct.tolist(), n_bins=n_bins).ece)


# --- alerts -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallOutcome:
    """How the takeover alerts of one call compare with its truth.

    ``onset_s`` is None for a calm call. An alert raised at or after the onset detects the escalation
    (the first such one gives ``latency_s``); any alert raised on a calm call, or before the onset of an
    escalating call, is a false alert. ``calm_s`` is the audio that had no agitation in truth.
    """

    call_id: str
    duration_s: float
    onset_s: float | None
    detected: bool
    first_raised_at_s: float | None
    latency_s: float | None
    false_alerts: int
    calm_s: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def score_call(*, call_id: str, duration_s: float, onset_s: float | None,
               raised_at_s: Sequence[float]) -> CallOutcome:
    """Score one call's takeover alerts (``raised_at_s``: when each was raised) against its truth."""
    raised = sorted(float(t) for t in raised_at_s)
    if onset_s is None:
        return CallOutcome(call_id, duration_s, None, False, None, None, len(raised), duration_s)
    after = [t for t in raised if t >= onset_s]
    first = after[0] if after else None
    return CallOutcome(call_id, duration_s, onset_s, first is not None, first,
                       None if first is None else first - onset_s,
                       sum(1 for t in raised if t < onset_s), min(onset_s, duration_s))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's
    default); None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def alert_summary(outcomes: Sequence[CallOutcome]) -> dict:
    """Recall on escalating calls, false alerts per call-hour, detection latency median and p90.

    ``false_alerts_per_call_hour`` counts alerts on calm calls over the calm calls' total duration (the
    figure a floor supervisor feels); ``false_alerts_per_calm_hour`` also includes the calm stretch
    before the onset of escalating calls.
    """
    escalating = [o for o in outcomes if o.onset_s is not None]
    calm = [o for o in outcomes if o.onset_s is None]
    latencies = [o.latency_s for o in escalating if o.latency_s is not None]
    calm_hours = sum(o.duration_s for o in calm) / 3600.0
    all_calm_hours = sum(o.calm_s for o in outcomes) / 3600.0
    calm_false = sum(o.false_alerts for o in calm)
    all_false = sum(o.false_alerts for o in outcomes)
    return {
        "n_calls": len(outcomes),
        "n_escalating": len(escalating),
        "n_calm": len(calm),
        "n_detected": sum(o.detected for o in escalating),
        "recall": sum(o.detected for o in escalating) / len(escalating) if escalating else None,
        "calm_calls_with_alert": sum(1 for o in calm if o.false_alerts),
        "false_alerts_on_calm_calls": calm_false,
        "calm_call_hours": calm_hours,
        "false_alerts_per_call_hour": calm_false / calm_hours if calm_hours else None,
        "false_alerts_total": all_false,
        "false_alerts_per_calm_hour": all_false / all_calm_hours if all_calm_hours else None,
        "latency_median_s": percentile(latencies, 50),
        "latency_p90_s": percentile(latencies, 90),
        "latency_max_s": max(latencies) if latencies else None,
    }
