"""Leave-one-corpus-out selection and `callpulse train emotion`: nothing of a held-out corpus is learnt from,
and a bank's own clips train a loadable model (or are refused, with a reason, before any training)."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.emotion import CLASSES, EmotionModel, EmotionOptions
from pipeline.training.corpora import ClipRow, Features, RATES, read_clip_manifest
from pipeline.training.loco import Recipe, loco, train_from_rows
from pipeline.errors import DatasetError

NAMES = ("voiced_ratio", "f0_median_st", "energy_db", "speaking_rate_syl_s", "hnr_db", "mfcc1_mean")


def _synthetic(seed: int = 0, *, shift_corpus: str | None = None) -> Features:
    """Three corpora x 3 speakers x 4 classes x 4 clips; class shifts the features, as emotions do."""
    rng = np.random.default_rng(seed)
    rows, clips = [], []
    for corpus in ("A", "B", "C"):
        for s in range(3):
            offset = rng.normal(0, 1, len(NAMES))
            for k, emotion in enumerate(CLASSES):
                for i in range(4):
                    rows.append(ClipRow(f"/x/{corpus}{s}{emotion}{i}.wav", emotion, f"s{s}", corpus))
                    clips.append(offset + np.eye(len(NAMES))[k] * 2.0 + rng.normal(0, 0.5, len(NAMES)))
    x = np.array(clips)
    if shift_corpus is not None:
        m = np.array([r.corpus == shift_corpus for r in rows])
        x[m] = x[m] * 3.0 + 7.0 + np.random.default_rng(99).normal(0, 2, x[m].shape)
    vectors = {rate: x + (0.05 if rate == "8k-mulaw" else 0.0) for rate in RATES}
    return Features(rows=tuple(rows), names=NAMES, clips=vectors, windows=vectors,
                    window_clip=np.arange(len(rows)), extract_s=0.0)


def test_a_held_out_corpus_never_reaches_the_model_or_the_choice_that_scores_it():
    base = loco(_synthetic(), train_corpora=("A", "B", "C"))
    moved = loco(_synthetic(shift_corpus="C"), train_corpora=("A", "B", "C"))
    # fold C: training, recipe selection and calibration saw none of C, so changing C changes nothing in it
    assert moved["C"]["recipe"] == base["C"]["recipe"]
    assert moved["C"]["weights_sha256"] == base["C"]["weights_sha256"]
    assert moved["C"]["temperatures"] == base["C"]["temperatures"]
    assert moved["C"]["trained_on"] == ["A", "B"]
    # ... while the folds that trained on C do move (the check can fail)
    assert moved["A"]["weights_sha256"] != base["A"]["weights_sha256"]


def test_a_test_only_corpus_is_scored_by_the_model_of_every_training_corpus_and_never_trained_on():
    f = _synthetic()
    rows = tuple(dataclasses.replace(r, corpus="U") if r.corpus == "C" else r for r in f.rows)
    f = dataclasses.replace(f, rows=rows)
    res = loco(f, train_corpora=("A", "B"), test_only=("U",), recipe=Recipe())
    assert res["U"]["trained_on"] == ["A", "B"]
    assert res["A"]["trained_on"] == ["B"] and res["B"]["trained_on"] == ["A"]
    fig = res["U"]["figures"]["global"]["clip"]["16k"]
    assert fig["n"] == 48 and fig["uar_4class"] > 0.5   # the synthetic classes transfer


def _tiny_manifest(tmp_path: Path, data_dir: Path, *, speakers=("emodb_03", "emodb_08", "emodb_09"), per_class=3,
                   classes=CLASSES, extra_rows=()) -> Path:
    with open(data_dir / "emodb" / "manifest.csv", newline="", encoding="utf-8") as fh:
        src = list(csv.DictReader(fh))
    rows = []
    for s in speakers:
        for c in classes:
            picked = [r for r in src if r["speaker"] == s and r["emotion"] == c][:per_class]
            rows += [{"path": str(data_dir / "emodb" / r["file"]), "emotion": c, "speaker": s, "language": "de"}
                     for r in picked]
    rows += list(extra_rows)
    path = tmp_path / "clips.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "emotion", "speaker", "language"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_train_emotion_on_a_tiny_manifest_writes_a_model_the_engine_loads(tmp_path, data_dir):
    manifest = _tiny_manifest(tmp_path, data_dir)
    out = tmp_path / "bank-model"
    meta = train_from_rows(read_clip_manifest(manifest), out, progress=lambda s: None)
    model = EmotionModel.load(EmotionOptions(model_dir=str(out)))
    assert model.model_id == meta["id"]
    assert (out / "README.md").read_text(encoding="utf-8").count("| speakers") >= 1
    y = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    scores = model.predict_audio(y, sr=16000)
    assert abs(sum(scores.scores.values()) - 1.0) < 1e-6
    assert meta["trained_on"]["speakers"] == ["emodb_03", "emodb_08", "emodb_09"]


@pytest.mark.parametrize("case, message", [
    ("missing", "do not exist"),
    ("one_class", "training needs at least two"),
    ("one_speaker", "at least two speakers"),
    ("unknown_label", "unknown emotion labels"),
])
def test_a_bad_manifest_is_refused_with_its_reason_before_training(tmp_path, data_dir, case, message):
    if case == "missing":
        manifest = _tiny_manifest(tmp_path, data_dir, extra_rows=[
            {"path": "nowhere.wav", "emotion": "angry", "speaker": "x", "language": "de"}])
    elif case == "one_class":
        manifest = _tiny_manifest(tmp_path, data_dir, classes=("angry",))
    elif case == "one_speaker":
        manifest = _tiny_manifest(tmp_path, data_dir, speakers=("emodb_03",))
    else:
        manifest = _tiny_manifest(tmp_path, data_dir, extra_rows=[
            {"path": str(data_dir / "emodb" / "03a01Wa.wav"), "emotion": "bored", "speaker": "x", "language": "de"}])
    out = tmp_path / "never"
    with pytest.raises(DatasetError, match=message):
        train_from_rows(read_clip_manifest(manifest), out, progress=lambda s: None)
    assert not out.exists()


def test_the_train_command_reports_a_bad_manifest_and_exits_2(tmp_path, data_dir, capsys):
    from pipeline.cli import main

    manifest = _tiny_manifest(tmp_path, data_dir, speakers=("emodb_03",))
    assert main(["train", "emotion", "--manifest", str(manifest), "--out", str(tmp_path / "m")]) == 2
    assert "at least two speakers" in capsys.readouterr().err


def test_uncertain_readings_are_labelled_neutral_but_keep_their_probabilities():
    model = EmotionModel.load(EmotionOptions(label_min_confidence=0.6))
    sad_ish = np.array([0.1, 0.1, 0.35, 0.45])
    s = model.scores(sad_ish, source="t")  # sad needs sad_min_confidence
    assert s.label == "neutral" and s.scores["sad"] == pytest.approx(0.45)
    assert model.scores(np.array([0.05, 0.05, 0.2, 0.7]), source="t").label == "neutral"   # sad needs 0.8
    assert model.scores(np.array([0.05, 0.05, 0.05, 0.85]), source="t").label == "sad"
    assert model.scores(np.array([0.7, 0.1, 0.1, 0.1]), source="t").label == "angry"
    argmax = EmotionModel.load(EmotionOptions(label_min_confidence=0.0, sad_min_confidence=0.0))
    assert argmax.scores(sad_ish, source="t").label == "sad"


def test_evaluate_emotion_loco_scores_each_corpus_of_a_manifest_by_a_model_trained_without_it(tmp_path, data_dir):
    from pipeline.config import load_config
    from pipeline.evaluate.emotion import EmotionEvalOptions, evaluate_emotion
    from pipeline.evaluate.runner import RunOptions

    manifest = _tiny_manifest(tmp_path, data_dir, speakers=("emodb_03", "emodb_08", "emodb_09", "emodb_10"),
                              per_class=2)
    rows = list(csv.DictReader(open(manifest, encoding="utf-8")))
    for r in rows:   # two "corpora" of two speakers each
        r["corpus"] = "P" if r["speaker"] in ("emodb_03", "emodb_08") else "Q"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = evaluate_emotion(options=EmotionEvalOptions(manifest=str(manifest), protocol="loco"), config=load_config(),
                           run=RunOptions(), out=tmp_path / "out", cache_dir=tmp_path / "cache")
    folds = res.metrics["folds"]
    assert set(folds) == {"P", "Q"}
    assert folds["P"]["trained_on"] == ["Q"] and folds["Q"]["trained_on"] == ["P"]
    assert folds["P"]["figures"]["relative"]["win"]["8k-mulaw"]["n"] >= 16
