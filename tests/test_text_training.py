"""Spec of the trained text scorer's training protocol and its stored form (``pipeline/training/text.py``,
``pipeline/text_linear.py``, ``models/text/trained*``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import ModelUnavailableError
from pipeline.text import TextOptions, TextScorer, models_root
from pipeline.text_linear import FeatureSpec, feature_ids, load_models, tokens
from pipeline.training.text import (
    Candidate,
    Corpus,
    FoldResult,
    HOTEL_DOMAIN,
    fold_data_key,
    nested_report,
    write_model,
    zh_eval_units,
)
from pipeline.training.text_cut import CutRule

ZH = FeatureSpec(char_orders=(1, 2, 3), word_orders=(), n_buckets=1 << 12, cjk_words=True)
EN = FeatureSpec(char_orders=(3, 4), word_orders=(1, 2), n_buckets=1 << 12, cjk_words=False)


def test_features_ignore_punctuation_case_and_digit_values():
    assert feature_ids("你们的服务太差了，我要投诉！", ZH) == feature_ids("你们的服务太差了我要投诉", ZH)
    assert feature_ids("This is UNACCEPTABLE!!", EN) == feature_ids("this is unacceptable", EN)
    assert feature_ids("I called 3 times", EN) == feature_ids("i called 7 times", EN)
    assert tokens("我的card被decline了") == ["我", "的", "card", "被", "decline", "了"]


def test_features_of_empty_text_are_empty_and_long_text_is_cut():
    assert feature_ids("", ZH) == {} and feature_ids("。。。", ZH) == {}
    long = "差" * 50_000
    assert feature_ids(long, ZH) == feature_ids(long[:2000], ZH)


def test_features_are_l2_normalised():
    v = np.array(list(feature_ids("the card was declined again and again", EN).values()))
    assert float(np.sum(v * v)) == pytest.approx(1.0)


def _corpus():
    fold = ["书籍", "书籍", "水果", "水果", HOTEL_DOMAIN, HOTEL_DOMAIN, HOTEL_DOMAIN, HOTEL_DOMAIN]
    source = ["online_shopping_zh"] * 6 + ["chnsenticorp_hotel_zh"] * 2
    return Corpus([f"t{i}" for i in range(8)], np.array([1, 0, 1, 0, 1, 0, 1, 0], bool), fold, source)


def test_a_left_out_domain_is_never_trained_on_and_the_hotel_sources_go_out_together():
    units = zh_eval_units(_corpus())
    names = [u[0] for u in units]
    assert names == ["书籍", "水果", "酒店", "chnsenticorp_hotel"]
    for _name, test, train in units:
        assert test.any() and not (test & train).any()
    for name, _test, train in units[2:]:
        assert not train[4:].any(), name  # neither hotel source trains a hotel fold


def test_the_figure_on_a_domain_comes_from_a_candidate_chosen_on_the_others():
    corpus = _corpus()
    units = zh_eval_units(corpus)
    cands = [Candidate("a", "ngram", ZH, 1.0, False), Candidate("b", "ngram", ZH, 1.0, False)]
    y = corpus.negative

    def fold(unit, good):
        test = unit[1]
        z = np.where(y[test], 1.0, -1.0) * (1.0 if good else -1.0)
        return FoldResult(unit[0], int(test.sum()), int(y[test].sum()), z, 1.0 if good else 0.0)

    # "a" is perfect on 书籍 only, "b" on every other unit: 书籍 must be reported with "b".
    results = {"a": [fold(u, u[0] == "书籍") for u in units], "b": [fold(u, u[0] != "书籍") for u in units]}
    fixed_cut = CutRule(equal_prior_cut=0.5, lowest=0.5)  # the cut is not what this test is about
    rows = {r["unit"]: r for r in nested_report(cands, results, corpus, units, fixed_cut)}
    assert rows["书籍"]["chosen"] == "b" and rows["书籍"]["uar"] == 0.0
    assert rows["水果"]["chosen"] == "b" and rows["水果"]["uar"] == 1.0


def test_written_models_load_without_pickles_and_refuse_a_version_mismatch(tmp_path):
    spec = FeatureSpec(char_orders=(1,), word_orders=(), n_buckets=8, cjk_words=True)
    cand = Candidate("c", "ngram", spec, 1.0, False)
    fitted = {lang: {"weights": np.arange(8, dtype=np.float32), "candidate": cand, "chosen": "c", "lexicon_weight": 0.0,
                     "bias": 0.5, "platt": (1.0, 0.0), "n_train": 2, "n_negative_train": 1, "nested": [],
                     "candidates": []} for lang in ("zh", "en")}
    write_model(tmp_path, fitted, {"licence": "not stated"})
    models, card = load_models(tmp_path)
    assert set(models) == {"zh", "en"} and card["data"]["licence"] == "not stated"
    assert models["zh"].weights.tolist() == list(range(8))
    raw = json.loads((tmp_path / "trained.json").read_text(encoding="utf-8"))
    raw["feature_version"] = 999
    (tmp_path / "trained.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelUnavailableError, match="train_text.py"):
        load_models(tmp_path)


def test_the_shipped_model_is_small_and_says_where_it_came_from():
    folder = models_root() / "text"
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size <= 30 * 1024 * 1024
    card = json.loads((folder / "trained.json").read_text(encoding="utf-8"))
    assert card["data"]["licence"].startswith("not stated")
    for lang in ("zh", "en"):
        assert card["models"][lang]["cross_domain"], lang


def test_a_missing_trained_model_says_how_to_rebuild_or_switch(tmp_path):
    import shutil

    folder = tmp_path / "text"
    shutil.copytree(models_root() / "text", folder)
    (folder / "trained.json").unlink()
    with pytest.raises(ModelUnavailableError, match=r"train_text.py.*lexicon"):
        TextScorer.load(TextOptions(lexicon_dir=str(folder)))
    assert TextScorer.load(TextOptions(backend="lexicon", lexicon_dir=str(folder))).score("ok", language="en")


def test_calibrated_probability_is_monotone_in_the_evidence():
    scorer = TextScorer.load(TextOptions())
    p_mild = scorer.p_negative("有点慢")
    p_strong = scorer.p_negative("太慢了，服务太差了，垃圾，再也不来了")
    assert p_mild is not None and 0.0 < p_mild < p_strong < 1.0
    assert scorer.p_negative("") is None


def test_cross_domain_figures_are_counted_by_hand():
    from pipeline.evaluate.text import _binary_figures

    is_neg = [True, True, False, False]
    scores = [{"label": "negative", "sentiment": -0.8, "p_negative": 0.9},
              {"label": "neutral", "sentiment": -0.1, "p_negative": 0.45},
              {"label": "negative", "sentiment": -0.3, "p_negative": 0.6},
              {"label": "positive", "sentiment": 0.5, "p_negative": 0.1}]
    f = _binary_figures(is_neg, scores)
    assert (f["recall_negative"], f["recall_non_negative"], f["uar"]) == (0.5, 0.5, 0.5)
    # confidences 0.9 (right), 0.55 (wrong), 0.6 (wrong), 0.9 (right): bins (0.5,0.6] (0.8,0.9]
    assert f["ece"] == pytest.approx(0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.0 - 0.575))
    assert f["roc_auc"] == pytest.approx(0.75)
    assert _binary_figures([True], [{"label": "negative", "sentiment": -1.0, "p_negative": None}])["ece"] is None


def _toy_matrix():
    from scipy import sparse

    # 6 rows, 4 n-gram buckets + 1 lexicon column; bucket 0 marks negatives, bucket 1 non-negatives.
    dense = np.array([[1, 0, 1, 0, -0.5], [1, 0, 0, 1, -0.2], [1, 1, 0, 0, 0.0],
                      [0, 1, 1, 0, 0.4], [0, 1, 0, 1, 0.1], [0, 1, 0, 0, 0.3]], np.float32)
    return sparse.csr_matrix(dense), np.array([1, 1, 1, 0, 0, 0], bool)


def test_log_count_ratio_points_to_the_class_a_feature_marks():
    from pipeline.training.text import log_count_ratio

    X, y = _toy_matrix()
    r = log_count_ratio(X[:, :4], y)
    assert r[0] > 0 > r[1]  # bucket 0 is in 3 of 3 negatives, bucket 1 in 3 of 3 non-negatives (and one negative)
    assert r[2] == pytest.approx(r[3])  # each in one row of either class


@pytest.mark.parametrize("mix", ["lr", "nb", "lr+nb"])
def test_every_mix_collapses_into_one_weight_vector(mix):
    """What is shipped (weights over the buckets, the lexicon weight, a bias) scores exactly like the
    fitted candidate, NB ratios included: LinearTextModel needs no notion of how it was trained."""
    from pipeline.training.text import decision, fit_candidate, fit_logistic, log_count_ratio

    X, y = _toy_matrix()
    spec = FeatureSpec(char_orders=(1,), word_orders=(), n_buckets=4, cjk_words=True)
    cand = Candidate("t", "ngram", spec, 1.0, True, mix)
    rows = np.array([True, True, False, True, True, False])
    w, b = fit_candidate(cand, X, y, rows)
    assert w.shape == (5,)
    lr = fit_logistic(X[rows], y[rows], 1.0)
    r = np.append(log_count_ratio(X[rows][:, :4], y[rows]), 1.0).astype(np.float32)
    from scipy import sparse

    Xr = X @ sparse.diags(r)
    nb = fit_logistic(Xr[rows], y[rows], 1.0)
    expected = {"lr": lr.decision_function(X), "nb": nb.decision_function(Xr),
                "lr+nb": (lr.decision_function(X) + nb.decision_function(Xr)) / 2}[mix]
    assert decision(X, w, b) == pytest.approx(expected, abs=1e-5)


def test_an_unknown_mix_is_refused():
    with pytest.raises(ValueError, match="mix"):
        Candidate("t", "ngram", ZH, 1.0, True, "svm")


def test_the_cut_stays_at_equal_prior_when_recall_is_enough_and_is_lowered_only_as_far_as_needed():
    rule = CutRule(equal_prior_cut=0.52, recall_target=0.80, lowest=0.30)
    y = np.array([True] * 10 + [False] * 10)
    confident = np.array([0.9] * 9 + [0.1] + [0.1] * 10)  # recall 0.9 at 0.52
    assert rule.choose([confident], [y]) == 0.52
    # 7 negatives far above, 3 at 0.45: mean recall 0.7 until the cut drops below 0.45
    shy = np.array([0.9] * 7 + [0.45] * 3 + [0.1] * 10)
    assert rule.choose([shy], [y]) == 0.44
    # the mean over units counts, not the pooled rows
    assert rule.choose([confident, shy], [y, y]) == 0.52
    hopeless = np.array([0.05] * 10 + [0.1] * 10)
    assert rule.choose([hopeless], [y]) == 0.30


def test_a_lower_cut_makes_the_scorer_call_a_doubtful_turn_negative():
    import dataclasses

    scorer = TextScorer.load(TextOptions())
    text = "i have a question about the fee on my statement from last month"  # long enough to be scored
    p = scorer.p_negative(text)
    assert p is not None and 0.2 < p < 0.8
    en = scorer._trained["en"]
    eager = scorer.with_trained_model(dataclasses.replace(en, negative_from_p=p - 0.15))
    shy = scorer.with_trained_model(dataclasses.replace(en, negative_from_p=min(0.99, p + 0.01)))
    assert shy.score(text, language="en").label != "negative"
    assert eager.score(text, language="en").label == "negative"
    assert eager.score(text, language="en").sentiment < shy.score(text, language="en").sentiment
    assert eager.p_negative(text) == p  # the cut moves the decision, not the calibrated probability


def test_retraining_one_language_keeps_the_other_and_the_cut_is_stored(tmp_path):
    spec = FeatureSpec(char_orders=(1,), word_orders=(), n_buckets=8, cjk_words=True)
    cand = Candidate("c", "ngram", spec, 1.0, False)

    def fitted(cut):
        return {"weights": np.zeros(8, np.float32), "candidate": cand, "chosen": "c", "lexicon_weight": 0.0,
                "bias": 0.0, "platt": (1.0, 0.0), "p_cut": cut, "n_train": 2, "n_negative_train": 1,
                "nested": [], "candidates": []}

    write_model(tmp_path, {"zh": fitted(0.52), "en": fitted(0.52)}, {"licence": "not stated"})
    _models, first = load_models(tmp_path)
    write_model(tmp_path, {"en": fitted(0.44)}, {"licence": "not stated"}, keep={"zh": first["models"]["zh"]})
    models, card = load_models(tmp_path)
    assert card["models"]["zh"] == first["models"]["zh"]
    assert models["zh"].negative_from_p == pytest.approx(0.4)
    assert models["en"].negative_from_p == pytest.approx((0.44 - 0.2) / 0.8)
    raw = json.loads((tmp_path / "trained.json").read_text(encoding="utf-8"))
    raw["models"]["en"]["negative_from_p"] = 1.5
    (tmp_path / "trained.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelUnavailableError, match="negative_from_p"):
        load_models(tmp_path)


def test_cached_fold_fits_are_not_reused_after_the_lexicon_feature_changes():
    corpus = Corpus(texts=["好", "差"], negative=np.array([False, True]), fold=["a", "b"], source=["s", "s"])
    lex = np.array([0.5, -0.5], dtype=np.float32)
    assert fold_data_key(corpus, lex) == fold_data_key(corpus, lex.copy())
    assert fold_data_key(corpus, lex) != fold_data_key(corpus, np.array([0.5, -0.7], dtype=np.float32))
