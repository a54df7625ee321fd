"""Spec of the text stage: sentiment, labels and flags for Mandarin and English call-centre turns.

The spec holds for both backends that ship without a download: the trained default and the lexicon
variant (one config line apart), so every scorer test runs on each."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import skip_or_fail

from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelUnavailableError
from pipeline.evaluate.text_measure import measure_call_talk, measure_text_file, read_call_talk
from pipeline.text import (
    FLAGS,
    TextOptions,
    TextScorer,
    label_values_from_id2label,
    models_root,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def text_dir(data_dir) -> Path:
    """The labelled text folder of the shared data (skip, or fail under CALLPULSE_REQUIRE_DATA=1)."""
    path = data_dir / "text"
    if not path.is_dir():
        skip_or_fail(f"labelled text not found in {path} (set CALLPULSE_DATA)")
    return path


@pytest.fixture(scope="module", params=["trained", "lexicon"])
def scorer(request) -> TextScorer:
    return TextScorer.load(TextOptions(backend=request.param))


NEUTRAL_SERVICE_TALK = [
    ("请问您的卡号是多少", "zh"),
    ("好的，我帮您查一下", "zh"),
    ("您好，请问有什么可以帮您", "zh"),
    ("请您稍等一下", "zh"),
    ("麻烦您提供一下身份证号码", "zh"),
    ("您的问题我已经记录下来了", "zh"),
    ("请问您是本人吗", "zh"),
    ("我帮您转接到信用卡部门", "zh"),
    ("这个业务需要您到网点办理", "zh"),
    ("请问还有其他问题吗", "zh"),
    ("我想查一下我的账户余额", "zh"),
    ("是不是要带身份证", "zh"),
    ("能不能帮我看一下这笔交易", "zh"),
    ("不好意思，让您久等了", "zh"),
    ("这笔手续费是多少", "zh"),
    ("请问您的预留手机号是多少", "zh"),
    ("请问您贵姓", "zh"),
    ("what is my balance", "en"),
    ("can you check my last transaction please", "en"),
    ("I would like to update my address", "en"),
    ("please hold while I check", "en"),
    ("could you confirm your date of birth", "en"),
    ("is there anything else I can help with", "en"),
    ("what is the interest rate on my credit card", "en"),
    ("yes, that's right", "en"),
    # Agents' empathy formulas carry no feeling of their own.
    ("非常抱歉给您带来不便", "zh"),
    ("I'm really sorry for the inconvenience", "en"),
    ("I understand your frustration", "en"),
    ("thank you for your patience", "en"),
]

COMPLAINTS = [
    ("你们这什么破服务", "zh"),
    ("我已经打了三次电话了，还是没解决", "zh"),
    ("等了半天没人接", "zh"),
    ("钱被乱扣了，我要投诉", "zh"),
    ("我的卡被盗刷了", "zh"),
    ("你们银行太坑人了", "zh"),
    ("一直转来转去，烦死了", "zh"),
    ("你们这服务太差了", "zh"),
    ("this is the third time I've called", "en"),
    ("you people never fix anything", "en"),
    ("this is unacceptable", "en"),
    ("I want to cancel my card", "en"),
    ("nobody called me back", "en"),
    ("I still haven't received my new card", "en"),
    ("I've been on hold for an hour", "en"),
    ("I want to close my account", "en"),
    ("我不想再听你解释了", "zh"),
    ("你们银行的效率太低了吧", "zh"),
    ("算了算了，我不办了", "zh"),
    ("are you kidding me", "en"),
    ("I've been a customer for twenty years and this is how you treat me", "en"),
    ("you're not listening to me", "en"),
]


@pytest.mark.parametrize("text,language", NEUTRAL_SERVICE_TALK)
def test_neutral_service_talk_is_neutral(scorer, text, language):
    result = scorer.score(text, language=language)
    assert result.label == "neutral", (text, result)
    assert result.flags == ()


@pytest.mark.parametrize("language,most_pairs", [("zh", 0.20), ("en", 0.08)])
def test_plain_call_talk_is_seldom_negative_even_two_sentences_long(scorer, language, most_pairs):
    # The trained models learnt from reviews and tweets, in which a turn that does not praise complains;
    # service talk does neither. Two sentences exceed the short-turn length, so service forms
    # (zh_service_markers.txt, en_service_forms.txt) are what keeps such turns neutral: without them, 77%
    # of the Mandarin and 10% of the English two-line turns were labelled negative.
    lines = read_call_talk(REPO / "tests" / "data" / "text_call_talk.tsv")
    f = measure_call_talk(scorer, lines, language=language, n_pairs=200)
    assert f.n_lines >= 30 and f.n_pairs == 200
    assert f.line_rate <= 0.05, f.negative_lines
    assert f.pair_rate <= most_pairs, f.negative_pairs[:10]


def test_a_service_form_keeps_a_long_turn_without_feeling_neutral():
    scorer = TextScorer.load(TextOptions(backend="trained"))
    for text in ("请您核对一下您的姓名和身份证号，然后我帮您把卡片重新激活", "我想查一下上个月二十三号那笔转账到账了没有"):
        assert scorer.score(text, language="zh").label == "neutral", text
    assert scorer.score("your new card was sent out on Monday how much is this month's bill",
                        language="en").label == "neutral"
    # A service form does not hide a feeling the lexicon or a complaint rule finds.
    assert scorer.score("can you tell me why nobody called me back about my card", language="en").label == "negative"
    assert scorer.score("请问你们到底什么时候才能把我的问题解决，我等了一个星期了", language="zh").label == "negative"


@pytest.mark.parametrize("text,language", COMPLAINTS)
def test_call_centre_complaints_are_negative(scorer, text, language):
    result = scorer.score(text, language=language)
    assert result.label == "negative", (text, result)
    assert result.sentiment < -0.2


@pytest.mark.parametrize(
    "text", ["谢谢您，非常满意", "太好了，问题解决了", "thank you so much, that was really helpful", "perfect, all sorted"]
)
def test_thanks_and_resolution_are_positive(scorer, text):
    assert scorer.score(text, language="auto").label == "positive"


def test_negation_flips_mandarin_praise(scorer):
    assert scorer.score("满意", language="zh").sentiment > 0.2
    assert scorer.score("不太满意", language="zh").sentiment < -0.2
    # A whole word that starts with a negator keeps its own meaning.
    assert scorer.score("不错", language="zh").sentiment > 0.2


def test_degree_words_strengthen_mandarin_sentiment():
    # The lexicon's own arithmetic; the trained backend reads "差" alone as near -1 already (saturated).
    scorer = TextScorer.load(TextOptions(backend="lexicon"))
    assert scorer.score("非常差", language="zh").sentiment < scorer.score("差", language="zh").sentiment


@pytest.mark.parametrize(
    "text",
    [
        "I want to speak to your manager",
        "get me a supervisor now",
        "I'll file a complaint",
        "我要投诉",
        "找你们领导来",
        "叫你们经理来！",
        "我要投诉你",
        "我要打12378",
    ],
)
def test_escalation_requests_are_flagged(scorer, text):
    assert "escalation_request" in scorer.score(text, language="auto").flags


@pytest.mark.parametrize(
    "text", ["you idiot", "damn it", "shut up and listen", "垃圾银行", "混蛋", "滚", "他妈的怎么回事"]
)
def test_abuse_is_flagged(scorer, text):
    result = scorer.score(text, language="auto")
    assert "abuse" in result.flags
    assert result.label == "negative"


@pytest.mark.parametrize("text", ["I am so angry right now", "I'm fed up with this", "气死我了", "太过分了"])
def test_anger_words_are_flagged(scorer, text):
    assert "anger" in scorer.score(text, language="auto").flags


@pytest.mark.parametrize(
    "text",
    ["我不是要投诉，就问一下", "您别生气，我马上帮您处理", "I don't want to complain, just asking", "收到一条垃圾短信", "页面滚动不了"],
)
def test_negated_or_everyday_phrases_raise_no_flag(scorer, text):
    assert scorer.score(text, language="auto").flags == ()


def test_traditional_characters_score_like_simplified(scorer):
    simplified = scorer.score("你们的服务太差了，我要投诉", language="zh")
    traditional = scorer.score("你們的服務太差了，我要投訴", language="zh")
    assert traditional == simplified


def test_mixed_language_turn_reads_both_parts(scorer):
    result = scorer.score("我的卡 was declined again, 太过分了", language="auto")
    assert result.label == "negative"
    assert "anger" in result.flags
    english_only = scorer.score("my card was declined again", language="en")
    assert result.sentiment < english_only.sentiment


def test_reported_language_follows_the_script(scorer):
    assert scorer.score("请问您的卡号是多少", language="en").language == "zh"
    assert scorer.score("what is my balance", language="zh").language == "en"
    assert scorer.score("你好 hello there my friend how are you", language="auto").language == "en"


def test_language_hint_decides_text_without_letters(scorer):
    assert scorer.score("1234", language="zh").language == "zh"
    assert scorer.score("", language="en").language == "en"
    assert scorer.score("??", language="yue").language == "en"


@pytest.mark.parametrize("text", ["", "   ", "??", "😡😡", "\x00\ufffd", "🙂" * 50, "。。。", "http://x.y/z?a=1"])
def test_odd_strings_are_scored_without_error(scorer, text):
    result = scorer.score(text, language="auto")
    assert -1.0 <= result.sentiment <= 1.0


def test_empty_text_is_neutral(scorer):
    result = scorer.score("", language="auto")
    assert (result.sentiment, result.label, result.flags) == (0.0, "neutral", ())


def test_ten_thousand_characters_are_scored(scorer):
    text = ("你们的服务太差了 this is unacceptable " * 400)[:10_000]
    result = scorer.score(text, language="auto")
    assert result.label == "negative"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), language=st.sampled_from(["en", "zh", "auto", "de", ""]))
def test_any_string_gives_a_well_formed_score(scorer, text, language):
    result = scorer.score(text, language=language)
    assert -1.0 <= result.sentiment <= 1.0
    assert result.label == scorer.label_for(result.sentiment)
    assert list(result.flags) == sorted(set(result.flags))
    assert set(result.flags) <= set(FLAGS)
    assert result.language in ("en", "zh")
    assert result.backend == scorer.options.backend


def test_non_string_input_is_a_type_error(scorer):
    with pytest.raises(TypeError, match="needs a str"):
        scorer.score(None, language="en")  # type: ignore[arg-type]


def test_concurrent_scoring_matches_serial_scoring(scorer):
    texts = [t for t, _ in NEUTRAL_SERVICE_TALK + COMPLAINTS] * 4
    expected = [scorer.score(t, language="auto") for t in texts]
    got: dict[int, object] = {}

    def work(offset: int) -> None:
        for i in range(offset, len(texts), 4):
            got[i] = scorer.score(texts[i], language="auto")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(texts))] == expected


# --- options and loading ----------------------------------------------------------------------------


def test_option_defaults_equal_the_shipped_toml():
    assert load_config().text == TextOptions()


def test_labels_follow_the_configured_thresholds():
    options = TextOptions(negative_below=-0.5, positive_above=0.5)
    scorer = TextScorer.load(options)
    assert scorer.label_for(-0.4) == "neutral"
    assert scorer.label_for(-0.6) == "negative"
    assert scorer.label_for(0.6) == "positive"


@pytest.mark.parametrize(
    "section",
    [
        {"backend": "bert"},
        {"negative_below": 0.5, "positive_above": 0.1},
        {"backend": "transformers"},
        {"snownlp_weight": -1.0},
        {"label_values": [2.0, 0.0]},
        {"typo_threshold": 0.1},
    ],
)
def test_bad_text_options_are_config_errors(section):
    with pytest.raises(ConfigError):
        load_config(overrides={"text": section})


def test_models_folder_can_be_moved_with_an_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CALLPULSE_MODELS", str(tmp_path))
    assert models_root() == tmp_path
    with pytest.raises(ModelUnavailableError, match="CALLPULSE_MODELS"):
        TextScorer.load(TextOptions())


def test_malformed_lexicon_line_names_file_and_line(tmp_path):
    folder = tmp_path / "text"
    shutil.copytree(REPO / "models" / "text", folder)
    with open(folder / "zh_sentiment.tsv", "a", encoding="utf-8") as fh:
        fh.write("坏\tvery bad\n")
    with pytest.raises(ModelUnavailableError, match=r"zh_sentiment.tsv:\d+"):
        TextScorer.load(TextOptions(lexicon_dir=str(folder)))


def test_missing_lexicon_file_says_what_to_restore(tmp_path):
    folder = tmp_path / "text"
    shutil.copytree(REPO / "models" / "text", folder)
    (folder / "flags_zh.tsv").unlink()
    with pytest.raises(ModelUnavailableError, match="flags_zh.tsv"):
        TextScorer.load(TextOptions(lexicon_dir=str(folder)))


def test_lexicon_folder_option_is_used(tmp_path):
    folder = tmp_path / "text"
    shutil.copytree(REPO / "models" / "text", folder)
    with open(folder / "zh_sentiment.tsv", "a", encoding="utf-8") as fh:
        fh.write("卡号\t3.0\n")
    scorer = TextScorer.load(TextOptions(backend="lexicon", lexicon_dir=str(folder), snownlp_weight=0.0))
    assert scorer.score("请问您的卡号是多少", language="zh").label == "positive"


# --- transformers backend ---------------------------------------------------------------------------


def _tiny_bert(folder: Path, id2label: dict[int, str]) -> Path:
    """A randomly initialised, tiny BERT classifier written with save_pretrained (no network)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the card is bad good i want manager 我 要 投 诉".split()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return _tiny_bert(tmp_path_factory.mktemp("bert"), {0: "negative", 1: "neutral", 2: "positive"})


def test_transformers_backend_scores_with_a_local_model(tiny_bert_dir, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = TextOptions(backend="transformers", model_path=str(tiny_bert_dir), max_tokens=32)
    scorer = TextScorer.load(options)
    text = "i want the manager the card is bad"
    result = scorer.score(text, language="en")

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, local_files_only=True).eval()
    with torch.inference_mode():
        probs = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0], -1).tolist()
    assert result.sentiment == pytest.approx(probs[2] - probs[0], abs=1e-5)
    assert result.backend == "transformers"
    # Flags never depend on the model.
    assert result.flags == ("escalation_request",)


def test_transformers_backend_copes_with_long_and_empty_text(tiny_bert_dir):
    scorer = TextScorer.load(TextOptions(backend="transformers", model_path=str(tiny_bert_dir), max_tokens=32))
    assert -1.0 <= scorer.score("the card is bad " * 2000, language="en").sentiment <= 1.0
    assert scorer.score("", language="en").sentiment == 0.0


def test_transformers_label_values_option_overrides_the_labels(tmp_path):
    pytest.importorskip("transformers")
    folder = _tiny_bert(tmp_path / "m", {0: "sad", 1: "happy"})
    with pytest.raises(ModelUnavailableError, match="label_values"):
        TextScorer.load(TextOptions(backend="transformers", model_path=str(folder)))
    scorer = TextScorer.load(TextOptions(backend="transformers", model_path=str(folder), label_values=(-1.0, 1.0)))
    assert -1.0 <= scorer.score("the card is good", language="en").sentiment <= 1.0
    wrong_count = TextOptions(backend="transformers", model_path=str(folder), label_values=(-1.0, 0.0, 1.0))
    with pytest.raises(ModelUnavailableError, match="one number per class"):
        TextScorer.load(wrong_count)


def test_missing_model_folder_says_what_to_put_where(tmp_path):
    options = TextOptions(backend="transformers", model_path=str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="config.json"):
        TextScorer.load(options)


def test_corrupt_model_weights_are_model_unavailable(tmp_path):
    pytest.importorskip("transformers")
    folder = _tiny_bert(tmp_path / "m", {0: "negative", 1: "positive"})
    weights = next(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(b"not a tensor file")
    with pytest.raises(ModelUnavailableError, match="cannot load"):
        TextScorer.load(TextOptions(backend="transformers", model_path=str(folder)))


def test_unreadable_model_folder_is_model_unavailable(tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelUnavailableError):
        TextScorer.load(TextOptions(backend="transformers", model_path=str(tmp_path)))


@pytest.mark.parametrize(
    "id2label,expected",
    [
        ({0: "NEGATIVE", 1: "POSITIVE"}, (-1.0, 1.0)),
        ({0: "negative", 1: "neutral", 2: "positive"}, (-1.0, 0.0, 1.0)),
        ({0: "pos", 1: "neg"}, (1.0, -1.0)),
        ({0: "1 star", 1: "2 stars", 2: "3 stars", 3: "4 stars", 4: "5 stars"}, (-1.0, -0.5, 0.0, 0.5, 1.0)),
        ({0: "very negative", 1: "negative", 2: "neutral", 3: "positive", 4: "very positive"},
         (-1.0, -0.5, 0.0, 0.5, 1.0)),
        ({0: "LABEL_0", 1: "LABEL_1"}, (-1.0, 1.0)),
        ({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, (-1.0, 0.0, 1.0)),
    ],
)
def test_model_labels_map_to_sentiment_values(id2label, expected):
    assert label_values_from_id2label(id2label) == pytest.approx(expected)


def test_unknown_model_labels_are_refused():
    with pytest.raises(ModelUnavailableError, match="label_values"):
        label_values_from_id2label({0: "anger", 1: "joy", 2: "fear", 3: "love"})


# --- measured on real labelled text -------------------------------------------------------------------


@pytest.mark.real_data
def test_hotel_reviews_negative_vs_rest_beats_chance_clearly(scorer, text_dir):
    m = measure_text_file(scorer, text_dir / "chnsenticorp_hotel_zh.csv", every=20)
    assert m.n_negative > 50
    assert m.uar > 0.78, m


@pytest.mark.real_data
def test_english_complaints_negative_vs_rest_beats_chance(scorer, text_dir):
    m = measure_text_file(scorer, text_dir / "complaints_en.csv", every=10)
    assert m.n_negative > 50
    assert m.uar > 0.6, m


def test_measuring_a_missing_file_is_a_dataset_error(scorer, tmp_path):
    from pipeline.errors import DatasetError

    with pytest.raises(DatasetError, match="does not exist"):
        measure_text_file(scorer, tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,class\nhi,positive\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="lacks column"):
        measure_text_file(scorer, bad)


def test_measurement_counts_recalls_correctly(scorer, tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text(
        "text,label,language\n你们这服务太差了,negative,zh\n谢谢您，非常满意,positive,zh\n"
        "this is unacceptable,complaint,en\nwhat is my balance,not_complaint,en\n",
        encoding="utf-8",
    )
    m = measure_text_file(scorer, path)
    assert (m.n_texts, m.n_negative) == (4, 2)
    assert (m.recall_negative, m.recall_non_negative, m.uar) == (1.0, 1.0, 1.0)
    assert m.uar_at(-1.0) == 0.5


def test_the_text_stage_is_split_by_concern_into_small_modules():
    """Lexicon, flags, trained models and the transformers backend live in their own stage modules; the
    names the engine and the tests import from ``pipeline.text`` stay there."""
    import pipeline.text as text

    for name in ("text", "text_lexicon", "text_flags", "text_linear", "text_transformers"):
        lines = (REPO / "pipeline" / f"{name}.py").read_text(encoding="utf-8").count("\n")
        assert lines <= 500, (name, lines)
    for name in ("FLAGS", "TextOptions", "TextScore", "TextScorer", "label_values_from_id2label", "lexicon_score",
                 "models_root"):
        assert hasattr(text, name), name
