"""Spec: the rule-based flags (abuse, anger, escalation_request) on a labelled phrase set, zh + en.

The phrase set (``tests/data/text_flag_phrases.tsv``) was written before the patterns were tuned and holds
ASR-style turns, mis-hearings ("manger", "投述", "领到", "一二三七八"), negated and everyday confusables.
``python scripts/measure_text.py --flags`` prints the same figures with the phrases missed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import DatasetError
from pipeline.evaluate.text_measure import measure_flags, read_flag_phrases
from pipeline.text import FLAGS, TextOptions, TextScorer

PHRASES = Path(__file__).resolve().parent / "data" / "text_flag_phrases.tsv"


@pytest.fixture(scope="module")
def figures():
    scorer = TextScorer.load(TextOptions())
    return measure_flags(scorer, read_flag_phrases(PHRASES))


def test_the_phrase_set_covers_every_flag_in_both_languages():
    rows = read_flag_phrases(PHRASES)
    for flag in FLAGS:
        with_flag = [t for want, t in rows if flag in want]
        assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in with_flag), flag
        assert any(t.isascii() for t in with_flag), flag
    assert sum(1 for want, _ in rows if not want) >= 30


@pytest.mark.parametrize("flag", FLAGS)
def test_each_flag_is_precise(figures, flag):
    f = figures[flag]
    assert f.precision >= 0.9, (f, f.false_alarms)


@pytest.mark.parametrize("flag", FLAGS)
def test_each_flag_finds_most_of_its_phrases(figures, flag):
    f = figures[flag]
    assert f.recall >= 0.9, (f, f.misses)


def test_flags_do_not_depend_on_the_sentiment_backend():
    rows = read_flag_phrases(PHRASES)
    trained = TextScorer.load(TextOptions(backend="trained"))
    lexicon = TextScorer.load(TextOptions(backend="lexicon"))
    for _, text in rows:
        assert trained.score(text, language="auto").flags == lexicon.score(text, language="auto").flags, text


def test_a_malformed_phrase_line_is_a_dataset_error(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("shouting\tyou idiot\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.tsv:1"):
        read_flag_phrases(bad)


def test_precision_and_recall_are_counted_per_flag():
    scorer = TextScorer.load(TextOptions(backend="lexicon"))
    rows = [(frozenset({"abuse"}), "you idiot"), (frozenset(), "what is my balance"),
            (frozenset({"escalation_request"}), "hello there"), (frozenset(), "我要投诉")]
    f = measure_flags(scorer, rows)
    assert (f["abuse"].precision, f["abuse"].recall) == (1.0, 1.0)
    assert f["escalation_request"].n_expected == 1 and f["escalation_request"].n_raised == 1
    assert (f["escalation_request"].precision, f["escalation_request"].recall) == (0.0, 0.0)
    assert f["escalation_request"].misses == ("hello there",)
    assert f["escalation_request"].false_alarms == ("我要投诉",)


def test_flag_rules_stand_on_their_own_without_a_scorer():
    """The flag module is usable alone (the explainable part: patterns in, flag names out)."""
    from pipeline.resources import models_root
    from pipeline.text_flags import find_flags, load_flag_patterns

    patterns = load_flag_patterns(models_root() / "text")
    assert find_flags(patterns, "i want to speak to your manager", "") == ("escalation_request",)
    assert find_flags(patterns, "", "我要投诉") == ("escalation_request",)
    # a negator just before an escalation or anger phrase cancels it; abuse stays abuse
    assert find_flags(patterns, "i dont want to complain", "") == ()
    assert find_flags(patterns, "", "我不是要投诉") == ()
    assert find_flags(patterns, "", "您别生气") == ()
    assert find_flags(patterns, "", "我很生气") == ("anger",)
    assert find_flags(patterns, "", "") == ()


def test_a_malformed_flag_pattern_line_names_file_and_line(tmp_path):
    from pipeline.errors import ModelUnavailableError
    from pipeline.text_flags import read_flag_patterns

    bad = tmp_path / "flags_en.tsv"
    bad.write_text("# comment\nabuse\tidiot\nshouting\tstop it\n", encoding="utf-8")
    with pytest.raises(ModelUnavailableError, match=r"flags_en.tsv:3"):
        read_flag_patterns(bad)
