"""Spec: the shipped text scorer (trained default and lexicon variant) copes with text the way ASR writes it.

No punctuation, Whisper's mis-spellings and mis-hearings, Traditional characters, Mandarin-English
code-switching, one-word turns, empty turns and 10,000-character turns. Both backends that ship without a
model download are held to the same spec, because they are one config line apart.
"""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.text import TextOptions, TextScorer


@pytest.fixture(scope="module", params=["trained", "lexicon"])
def scorer(request) -> TextScorer:
    return TextScorer.load(TextOptions(backend=request.param))


NEGATIVE_ASR_TURNS = [
    # no punctuation, as Whisper often writes Mandarin
    ("你们这个服务太差了我要投诉", "zh"),
    ("等了半天都没有人接电话", "zh"),
    ("我的钱被乱扣了到现在都没退回来", "zh"),
    # Traditional characters (Whisper writes them for some Mandarin speakers)
    ("你們這個服務太差了", "zh"),
    ("我的錢被亂扣了", "zh"),
    # lower case, no punctuation, contractions without apostrophes
    ("this is the third time ive called and nobody called me back", "en"),
    ("i still havent received my card its been three weeks", "en"),
    ("youre not listening to me", "en"),
    # Whisper's homophones ("ours" for "hours")
    ("ive been on hold for ours this is a joke", "en"),
    # code-switching
    ("我的 credit card 又被 decline 了 太过分了", "zh"),
    ("the app 一直闪退 so annoying", "en"),
]

NEUTRAL_ASR_TURNS = [
    ("嗯", "zh"), ("喂", "zh"), ("对", "zh"), ("ok", "en"), ("yes", "en"), ("uh huh", "en"),
    ("hello", "en"), ("请问您的卡号是多少", "zh"), ("我想查一下余额", "zh"), ("what is my balance", "en"),
    ("请问您的卡号是多少", "zh"), ("can you check my last transaction please", "en"), ("是的", "zh"),
]


@pytest.mark.parametrize("text,language", NEGATIVE_ASR_TURNS)
def test_complaints_as_asr_writes_them_are_negative(scorer, text, language):
    result = scorer.score(text, language=language)
    assert result.label == "negative", (text, result)


@pytest.mark.parametrize("text,language", NEUTRAL_ASR_TURNS)
def test_short_and_service_turns_stay_neutral_without_flags(scorer, text, language):
    result = scorer.score(text, language=language)
    assert result.label == "neutral", (text, result)
    assert result.flags == ()


def test_traditional_turn_scores_like_its_simplified_form(scorer):
    assert scorer.score("我要投訴，你們太過分了", language="zh") == scorer.score("我要投诉，你们太过分了", language="zh")


def test_punctuation_does_not_change_the_label(scorer):
    with_punct = scorer.score("你们这个服务太差了，我要投诉！", language="zh")
    without = scorer.score("你们这个服务太差了我要投诉", language="zh")
    assert with_punct.label == without.label == "negative"
    assert with_punct.flags == without.flags == ("escalation_request",)


@pytest.mark.parametrize("text", ["", " ", "\n", "。", "...", "??", "[BLANK_AUDIO]", "♪♪", "1 2 3 4"])
def test_empty_and_symbol_turns_are_neutral(scorer, text):
    result = scorer.score(text, language="auto")
    assert result.label == "neutral", (text, result)
    assert -1.0 <= result.sentiment <= 1.0


def test_empty_turn_scores_exactly_zero(scorer):
    result = scorer.score("", language="zh")
    assert (result.sentiment, result.label, result.flags) == (0.0, "neutral", ())


@pytest.mark.parametrize("unit", ["你们的服务太差了", "this is unacceptable ", "我的 card 又被盗刷了 太过分了 "])
def test_ten_thousand_character_turns_are_scored(scorer, unit):
    text = (unit * (10_000 // len(unit) + 1))[:10_000]
    result = scorer.score(text, language="auto")
    assert -1.0 <= result.sentiment <= 1.0
    assert result.label == "negative", result


def test_the_trained_default_and_the_lexicon_are_one_config_line_apart():
    assert load_config().text.backend == "trained"
    lexicon = load_config(overrides={"text": {"backend": "lexicon"}}).text
    assert lexicon == TextOptions(backend="lexicon")
    assert TextScorer.load(lexicon).score("你们太坑人了", language="zh").backend == "lexicon"
