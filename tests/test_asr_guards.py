"""The ASR guards on synthetic strings: repetition loops cut, junk full-width forms removed, over-long
text bounded by the audio's duration, sampled re-decodes that invent text refused. No model needed,
except for the token table of the suppressed full-width byte (the embedded model's tokenizer)."""
from __future__ import annotations

import pytest

from pipeline.asr import (AsrOptions, _text_units, fullwidth_tokens, guard_units, max_units,
                          redecode_is_acceptable, repetition_cut)

OPTIONS = AsrOptions()


def guarded(text: str, language: str = "zh", duration_s: float = 5.0) -> str:
    units = _text_units(text, language)
    return "".join(units[i] for i in guard_units(units, language, duration_s, OPTIONS))


def test_a_single_character_loop_is_cut_to_one_copy():
    assert guarded("造音产生污染。请问" + "问" * 300, duration_s=38.4) == "造音产生污染。请问"


def test_a_loop_of_a_longer_unit_is_cut_and_the_text_after_it_kept():
    assert guarded("好的" + "1-" * 40 + "谢谢", duration_s=8.0) == "好的1-谢谢"
    assert guarded("the the end " + "of it " * 12 + "thanks", "en", 8.0) == "the the end of it thanks"


def test_full_width_junk_at_a_mandarin_turn_end_is_removed():
    assert guarded("团节产生力量０") == "团节产生力量"
    assert guarded("国际既行合作﹐") == "国际既行合作"
    assert guarded("坏一首歌" + "Ｇ" * 70, duration_s=1.0) == "坏一首歌"


@pytest.mark.parametrize("text, language", [
    ("我的卡号是六二二二 0000 1111 2222", "zh"),   # card digits repeat, but not six times
    ("卡号 6222 0000 0000 0012", "zh"),           # ten zeros in a row: a real card number
    ("card number 4111 1111 1111 1111", "en"),
    ("1234 1234 1234 1234", "zh"),
    ("谢谢谢谢你，哈哈哈", "zh"),
    ("no no no no, I said no", "en"),
    ("It was the first great sorrow of his life", "en"),
])
def test_ordinary_repetition_is_not_a_loop(text, language):
    units = _text_units(text, language)
    assert repetition_cut(units) == list(range(len(units)))
    assert guarded(text, language, duration_s=6.0) == text


def test_text_longer_than_the_audio_allows_is_cut_at_the_duration_bound():
    text = "我们今天讨论一下这个月的账单还有信用卡的额度以及积分兑换的规则"   # 31 characters
    out = guarded(text, duration_s=1.0)
    assert text.startswith(out) and len(out) == max_units(1.0, "zh", OPTIONS)
    words = " ".join(f"word{i}" for i in range(40))
    assert len(guarded(words, "en", 2.0).split()) == max_units(2.0, "en", OPTIONS)


def test_a_re_decode_that_invents_words_is_refused():
    first, invented = "Say the word, tape. I'm sorry.", "Say the word, tape. You know, I'm a little bit more patient."
    assert not redecode_is_acceptable(first, invented, "en", 5.9, OPTIONS)


def test_a_re_decode_that_drops_a_loop_is_accepted():
    assert redecode_is_acceptable("造音产生污染。请问" + "问" * 100, "造音产生污染。", "zh", 38.4, OPTIONS)


def test_a_re_decode_that_loops_or_overflows_is_refused():
    assert not redecode_is_acceptable("欢迎收看", "欢迎收看" * 5, "zh", 30.0, OPTIONS)
    assert not redecode_is_acceptable("关灯", "关灯" + "好的谢谢你" * 3, "zh", 1.2, OPTIONS)


def test_the_suppressed_tokens_are_exactly_those_that_spell_the_full_width_lead_byte():
    from tokenizers import Tokenizer

    from pipeline.asr import resolve_model_path

    tok = Tokenizer.from_file(resolve_model_path(AsrOptions()) + "/tokenizer.json")
    ids = set(fullwidth_tokens(tok))
    for ch in "，０Ｇ﹐﹑：？！":  # full-width / small forms: spelled as byte tokens led by 0xEF
        assert tok.encode(ch, add_special_tokens=False).ids[0] in ids, ch
    for text in ("广州市房地产中介协会分析。", "你好、谢谢", "Hello, world!"):
        assert not ids & set(tok.encode(text, add_special_tokens=False).ids), text


@pytest.mark.parametrize("bad", [dict(temperatures=()), dict(temperatures=(-0.1,)), dict(beam_size_zh=0),
                                 dict(max_chars_per_s_zh=0.0), dict(max_window_s=40.0)])
def test_invalid_decoding_options_are_rejected(bad):
    with pytest.raises(ValueError):
        AsrOptions(**bad)


def test_mandarin_has_its_own_beam_width():
    options = AsrOptions(beam_size=1, beam_size_zh=5)
    assert options.beam_for("zh") == 5 and options.beam_for("en") == 1


def test_a_digit_loop_longer_than_any_card_number_is_cut():
    assert guarded("余额是" + "0" * 60, duration_s=3.0) == "余额是0"


def test_a_loop_of_punctuation_alone_is_cut():
    assert guarded("。" * 200 + "谢谢你,我会不会有空", duration_s=3.0) == "。谢谢你,我会不会有空"


def test_a_punctuation_loop_inside_one_word_is_squeezed():
    """Whisper attaches trailing punctuation to the word before it: "库" + 60 "，" is a single word."""
    from pipeline.asr import squeeze_punctuation

    assert squeeze_punctuation("下云库" + "，" * 60) == "下云库，"
    assert squeeze_punctuation("好的。。。") == "好的。。。"   # three in a row stay
    assert squeeze_punctuation("wait...") == "wait..."
