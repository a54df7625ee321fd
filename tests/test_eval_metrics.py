"""The evaluation metrics, checked against cases worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.metrics import (
    CallOutcome, EditCounts, align, alert_summary, binary_view, calibration, chinese_cardinal, confusion,
    english_cardinal, error_counts, normalize_text, percentile, pooled, roc_auc, score_call, tokens,
    top_label_calibration, top_label_ece, uar,
)


# --- WER / CER ---------------------------------------------------------------------------------------

def test_wer_counts_one_substitution_one_deletion_one_insertion():
    # the cat sat on the mat  ->  the cat SIT on (the) mat +TODAY
    counts = error_counts("the cat sat on the mat", "the cat sit on mat today", language="en")
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.hits) == (1, 1, 1, 4)
    assert counts.n_ref == 6
    assert counts.rate == pytest.approx(3 / 6)


def test_wer_prefers_a_substitution_to_a_deletion_plus_insertion():
    assert align(["a", "b"], ["a", "c"]) == EditCounts(substitutions=1, deletions=0, insertions=0, hits=1)


def test_wer_of_only_insertions_can_exceed_one():
    counts = error_counts("yes", "yes yes yes", language="en")
    assert counts.insertions == 2 and counts.rate == pytest.approx(2.0)


def test_error_rate_of_an_empty_reference_is_undefined():
    assert error_counts("", "hello", language="en").rate is None
    assert error_counts("", "", language="en").rate is None


def test_cer_for_mandarin_counts_characters():
    ref = "广州市房地产中介协会分析"  # 12 characters
    assert len(tokens(ref, language="zh")) == 12
    missing = error_counts(ref, "广州市房地产中介协会", language="zh")
    assert (missing.deletions, missing.rate) == (2, pytest.approx(2 / 12))
    wrong = error_counts(ref, "广州市房地产中介协会分折", language="zh")
    assert (wrong.substitutions, wrong.rate) == (1, pytest.approx(1 / 12))


def test_cer_ignores_traditional_characters_spaces_and_punctuation():
    counts = error_counts("广州市房地产中介协会分析", "廣州市 房地產中介協會，分析。", language="zh")
    assert counts.errors == 0


def test_pooled_rate_divides_summed_errors_by_summed_reference_length():
    a = error_counts("one two three four", "one two three five", language="en")  # 1 / 4
    b = error_counts("six seven", "six", language="en")                              # 1 / 2
    assert pooled([a, b]).rate == pytest.approx(2 / 6)  # not the mean of rates (0.375)


# --- normalisation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("ＨＥＬＬＯ，ｗｏｒｌｄ！", "hello world"),                 # full-width -> half-width
    ("Don't stop-now.", "dont stop now"),                      # apostrophes dropped, hyphen splits
    ("I have 25 cards", "i have twenty five cards"),
    ("1,204 people", "one thousand two hundred four people"),
    ("In 1961", "in nineteen sixty one"),                      # a year
    ("in 1905 and 1900", "in nineteen oh five and nineteen hundred"),
    ("2005", "two thousand five"),
    ("3.5% of the 21st", "three point five percent of the twenty first"),
    ("call 0123", "call zero one two three"),                  # leading zero: digit by digit
    ("card 4111111111111111", "card " + " ".join(["four"] + ["one"] * 15)),
])
def test_english_normalisation(raw, expected):
    assert normalize_text(raw, language="en") == expected


@pytest.mark.parametrize("raw, expected", [
    ("廣州市房地產", "广州市房地产"),                            # Traditional -> Simplified
    ("在2015年", "在二零一五年"),                                # before 年: digit by digit
    ("有10500人", "有一万零五百人"),
    ("50%的人", "百分之五十的人"),
    ("３.５公里", "三点五公里"),                                  # full-width digits
    ("电话13812345678", "电话一三八一二三四五六七八"),
    ("你好，世界！", "你好 世界"),
])
def test_mandarin_normalisation(raw, expected):
    assert normalize_text(raw, language="zh") == expected


def test_number_words_match_digits_in_both_languages():
    assert error_counts("twenty five cards", "25 cards", language="en").errors == 0
    assert error_counts("二零一五年", "2015年", language="zh").errors == 0


@pytest.mark.parametrize("n, words", [(0, "zero"), (13, "thirteen"), (40, "forty"), (101, "one hundred one"),
                                      (1_000_000, "one million"), (2_500_017, "two million five hundred thousand seventeen")])
def test_english_cardinal(n, words):
    assert english_cardinal(n) == words


@pytest.mark.parametrize("n, words", [(0, "零"), (10, "十"), (15, "十五"), (110, "一百一十"), (1001, "一千零一"),
                                      (2015, "二千零一十五"), (100000, "十万"), (123456789, "一亿二千三百四十五万六千七百八十九")])
def test_chinese_cardinal(n, words):
    assert chinese_cardinal(n) == words


def test_normalisation_copes_with_any_string():
    for text in ("", "   ", "??", "\u200b", "🙂🙂", "a\tb\nc"):
        assert isinstance(normalize_text(text, language="en"), str)
        assert isinstance(tokens(text, language="zh"), list)


# --- classification ----------------------------------------------------------------------------------

def _known_confusion():
    # truth a: 3 right, 1 -> b ; truth b: 1 right, 1 -> c ; truth c: 2 right, 2 -> a
    truths = ["a"] * 4 + ["b"] * 2 + ["c"] * 4
    preds = ["a", "a", "a", "b", "b", "c", "c", "c", "a", "a"]
    return confusion(truths, preds, labels=("a", "b", "c"))


def test_confusion_matrix_counts_and_known_uar():
    conf = _known_confusion()
    assert conf.counts == ((3, 1, 0), (0, 1, 1), (2, 0, 2))
    assert conf.per_class_recall() == {"a": 0.75, "b": 0.5, "c": 0.5}
    assert conf.uar == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert conf.accuracy == pytest.approx(6 / 10)


def test_uar_skips_classes_absent_from_the_truth():
    conf = confusion(["a", "a"], ["a", "b"], labels=("a", "b"))
    assert conf.recall("b") is None
    assert conf.uar == pytest.approx(0.5)


def test_array_uar_equals_the_confusion_matrix_uar():
    conf = _known_confusion()
    index = {"a": 0, "b": 1, "c": 2}
    truths = np.array([index[t] for t, row in zip("abc", conf.counts) for j, n in enumerate(row) for _ in range(n)])
    preds = np.array([j for row in conf.counts for j, n in enumerate(row) for _ in range(n)])
    assert uar(truths, preds, range(3)) == pytest.approx(conf.uar)
    assert uar(truths, preds, range(4)) == pytest.approx(conf.uar)  # a class nobody has is skipped ...
    assert math.isnan(uar(truths, preds, range(4), every_class=True))  # ... unless every class must occur
    assert math.isnan(uar(np.array([], dtype=int), np.array([], dtype=int), range(3)))


def test_two_class_uar_on_booleans_averages_both_recalls():
    y = np.array([True, True, False, False, False])
    pred = np.array([True, False, False, False, True])
    assert uar(y, pred, (True, False), every_class=True) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(uar(y[:2], pred[:2], (True, False), every_class=True))


def test_confusion_rejects_unknown_labels_and_length_mismatch():
    with pytest.raises(ValueError):
        confusion(["a"], ["z"], labels=("a", "b"))
    with pytest.raises(ValueError):
        confusion(["a", "b"], ["a"], labels=("a", "b"))


def test_binary_views_compare_probability_mass():
    truths = ["angry", "neutral", "happy", "sad", "neutral"]
    scores = [
        {"angry": 0.4, "happy": 0.3, "neutral": 0.2, "sad": 0.1},   # angry > neutral: angry, right
        {"angry": 0.5, "happy": 0.0, "neutral": 0.1, "sad": 0.4},   # angry > neutral: wrong; low 0.5 vs high 0.5 -> high
        {"angry": 0.1, "happy": 0.2, "neutral": 0.6, "sad": 0.1},   # high 0.3 < low 0.7: wrong
        {"angry": 0.0, "happy": 0.1, "neutral": 0.3, "sad": 0.6},   # low: right
        {"angry": 0.1, "happy": 0.1, "neutral": 0.7, "sad": 0.1},   # neutral: right
    ]
    an = binary_view(truths, scores, positive=("angry",), negative=("neutral",), names=("angry", "neutral"))
    assert an.n == 3  # happy and sad clips take no part
    assert an.counts == ((1, 0), (1, 1))
    assert an.uar == pytest.approx((1.0 + 0.5) / 2)
    ar = binary_view(truths, scores, positive=("angry", "happy"), negative=("neutral", "sad"), names=("high", "low"))
    assert ar.counts == ((1, 1), (1, 2))
    assert ar.uar == pytest.approx((0.5 + 2 / 3) / 2)


def test_roc_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.1, 0.5 -> 3 of 4 pairs ordered correctly
    assert roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.5]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)   # a tie counts half
    assert roc_auc([True, True], [0.1, 0.2]) is None


# --- calibration -------------------------------------------------------------------------------------

def test_ece_by_hand():
    # bin (0.8, 0.9]: confidence 0.9, accuracy 0.5 ; bin (0.5, 0.6]: confidence 0.6, accuracy 1.0
    cal = calibration([0.9, 0.9, 0.6, 0.6], [True, False, True, True], n_bins=10)
    assert cal.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert cal.bin_counts[8] == 2 and cal.bin_counts[5] == 2


def test_ece_of_a_perfectly_calibrated_bin_is_zero_and_bin_edges_are_exact():
    cal = calibration([0.7] * 10, [True] * 7 + [False] * 3, n_bins=10)
    assert cal.ece == pytest.approx(0.0)
    assert cal.bin_counts[6] == 10  # 0.7 belongs to (0.6, 0.7] despite 0.7 * 10 = 7.000000000000001


def test_top_label_calibration_uses_the_most_probable_class():
    cal = top_label_calibration(["a", "b"], [{"a": 0.8, "b": 0.2}, {"a": 0.8, "b": 0.2}], n_bins=5)
    assert cal.ece == pytest.approx(abs(0.5 - 0.8))


def test_top_label_ece_of_probability_arrays_is_the_top_label_calibration():
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.1, 0.9], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    rows = [{"a": p[0], "b": p[1]} for p in probs]
    expected = top_label_calibration(["ab"[i] for i in y], rows, n_bins=10).ece
    assert top_label_ece(probs, y) == pytest.approx(expected)
    # by hand: (0.7, 0.8] conf 0.8 acc 0.5; (0.8, 0.9] conf 0.9 acc 1; (0.5, 0.6] conf 0.6 acc 1
    assert top_label_ece(probs, y) == pytest.approx(0.5 * 0.3 + 0.25 * 0.1 + 0.25 * 0.4)
    assert top_label_ece(np.eye(3), np.arange(3)) == pytest.approx(0.0)
    assert math.isnan(top_label_ece(np.zeros((0, 3)), np.zeros(0, dtype=int)))


# --- alerts ------------------------------------------------------------------------------------------

def test_alert_timeline_with_known_latency():
    outcome = score_call(call_id="c", duration_s=60.0, onset_s=20.0, raised_at_s=[40.0, 12.0, 25.0])
    assert outcome.detected
    assert outcome.first_raised_at_s == 25.0
    assert outcome.latency_s == pytest.approx(5.0)
    assert outcome.false_alerts == 1          # the one at 12 s, before anything happened
    assert outcome.calm_s == 20.0


def test_missed_escalation_and_calm_call():
    missed = score_call(call_id="m", duration_s=60.0, onset_s=20.0, raised_at_s=[])
    assert not missed.detected and missed.latency_s is None
    calm = score_call(call_id="q", duration_s=1800.0, onset_s=None, raised_at_s=[100.0, 900.0])
    assert calm.false_alerts == 2 and calm.calm_s == 1800.0


def test_false_alerts_per_call_hour_and_latency_percentiles():
    outcomes = [score_call(call_id=f"e{i}", duration_s=60.0, onset_s=10.0, raised_at_s=[10.0 + lat])
                for i, lat in enumerate([2.0, 4.0, 6.0, 8.0, 10.0])]
    outcomes.append(score_call(call_id="miss", duration_s=60.0, onset_s=10.0, raised_at_s=[5.0]))
    outcomes.append(score_call(call_id="calm1", duration_s=1800.0, onset_s=None, raised_at_s=[300.0, 600.0]))
    outcomes.append(score_call(call_id="calm2", duration_s=1800.0, onset_s=None, raised_at_s=[]))
    s = alert_summary(outcomes)
    assert (s["n_escalating"], s["n_calm"], s["n_detected"]) == (6, 2, 5)
    assert s["recall"] == pytest.approx(5 / 6)
    assert s["false_alerts_per_call_hour"] == pytest.approx(2 / 1.0)     # 2 alerts in 2 x 30 min of calm calls
    assert s["false_alerts_total"] == 3                                  # + the pre-onset one
    assert s["false_alerts_per_calm_hour"] == pytest.approx(3 / ((3600 + 6 * 10) / 3600))
    assert s["latency_median_s"] == pytest.approx(6.0)
    assert s["latency_p90_s"] == pytest.approx(9.2)   # 8 + 0.6 * (10 - 8), linear interpolation
    assert s["calm_calls_with_alert"] == 1


def test_summary_without_escalating_or_calm_calls_is_undefined_not_zero():
    s = alert_summary([CallOutcome("q", 60.0, None, False, None, None, 0, 60.0)])
    assert s["recall"] is None and s["latency_median_s"] is None
    assert percentile([], 50) is None
    assert not math.isnan(s["false_alerts_per_call_hour"])


def _levenshtein(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[:], i
        for j in range(1, len(b) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1]


from hypothesis import given, strategies as st  # noqa: E402

_words = st.lists(st.sampled_from(["a", "b", "c"]), max_size=8)


@given(_words, _words)
def test_alignment_counts_are_a_minimal_edit_script(ref, hyp):
    counts = align(ref, hyp)
    assert counts.errors == _levenshtein(ref, hyp)
    assert counts.n_ref == len(ref)
    assert counts.hits + counts.substitutions + counts.insertions == len(hyp)
