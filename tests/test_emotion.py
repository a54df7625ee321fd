"""Acoustic emotion: the shipped model, its speaker baseline, and the training pipeline end to end."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import decode_mulaw, encode_mulaw, resample
from pipeline.config import DEFAULT_CONFIG_PATH, load_config
from pipeline.emotion import CLASSES, META_FILE, MODEL_FILE, EmotionModel, EmotionOptions, default_model_dir
from pipeline.training.emotion import (CONDITIONS, TrainOptions, baseline_means, evaluate_and_train,
                                       expected_calibration_error, fit_logistic, scores_summary, uar)
from pipeline.errors import ConfigError, ModelUnavailableError
from pipeline.prosody import ProsodyOptions

SHIPPED = default_model_dir()
# The EmoDB-only (CC0) variant, selectable with [emotion] model_dir = "models/emotion-emodb".
EMODB_VARIANT = SHIPPED.parent / "emotion-emodb"


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return EmotionModel.load(EmotionOptions())


@pytest.fixture(scope="module")
def emodb_model() -> EmotionModel:
    return EmotionModel.load(EmotionOptions(model_dir=str(EMODB_VARIANT)))


def _clip(data_dir: Path, name: str) -> tuple[np.ndarray, int]:
    y, sr = sf.read(data_dir / "emodb" / name, dtype="float32")
    return y, sr


def _telephone(y: np.ndarray, sr: int) -> np.ndarray:
    """8 kHz G.711 mu-law, as a phone line delivers it (pipeline.audio codec)."""
    pcm = np.clip(np.round(resample(y, orig_sr=sr, target_sr=8000) * 32767), -32768, 32767).astype(np.int16)
    return decode_mulaw(encode_mulaw(pcm)).astype(np.float32) / 32768.0


def _emodb_rows(data_dir: Path) -> list[dict[str, str]]:
    with open(data_dir / "emodb" / "manifest.csv", newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r["emotion"] in CLASSES]


# ------------------------------------------------------------------ options and loading
def test_emotion_options_defaults_are_the_shipped_toml_section():
    with open(DEFAULT_CONFIG_PATH, "rb") as fh:
        section = tomllib.load(fh)["emotion"]
    assert set(section) == {f.name for f in dataclasses.fields(EmotionOptions)}
    assert load_config().emotion == EmotionOptions()


def test_the_shipped_model_loads_with_the_network_unavailable(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted while loading the emotion model")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = EmotionModel.load(EmotionOptions(), prosody=ProsodyOptions())
    scores = model.predict(np.zeros(len(model.vector_names)), baseline=None)
    assert scores.source == f"model:{model.model_id}/global"


def test_the_shipped_model_scores_audio_in_a_process_without_any_network(tmp_path):
    """For real: a fresh interpreter in a network namespace with no interfaces (unshare -n)."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not available here (needs user namespaces or root)")
    code = (
        "import numpy as np, librosa\n"
        "from pipeline.emotion import EmotionModel, EmotionOptions\n"
        "m = EmotionModel.load(EmotionOptions())\n"
        "s = m.predict_audio(librosa.tone(180, sr=8000, duration=1.0).astype('float32'), sr=8000)\n"
        "print(s.source)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([unshare, "-n", sys.executable, "-c", code], cwd=SHIPPED.parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = json.loads((SHIPPED / META_FILE).read_text(encoding="utf-8"))
    assert done.stdout.strip().startswith(f"model:{meta['id']}/")


def test_the_shipped_model_is_small_safe_and_matches_its_recorded_checksum():
    weights = (SHIPPED / MODEL_FILE).read_bytes()
    meta = json.loads((SHIPPED / META_FILE).read_text(encoding="utf-8"))
    assert len(weights) < 1_000_000
    assert hashlib.sha256(weights).hexdigest() == meta["weights_sha256"]
    assert meta["id"].endswith(meta["weights_sha256"][:8])
    assert (SHIPPED / "README.md").is_file()


def test_the_shipped_model_learnt_from_every_training_corpus_and_says_what_it_inherits():
    meta = json.loads((SHIPPED / META_FILE).read_text(encoding="utf-8"))
    assert meta["trained_on"]["corpora"] == ["EmoDB", "emotiontts-ko", "nEMO"]
    assert "URDU" not in meta["trained_on"]["corpora"]               # test only
    assert meta["trained_on"]["licences"]["nEMO"] == "CC BY-NC-SA 4.0"
    assert "Non-commercial" in (SHIPPED / "README.md").read_text(encoding="utf-8")
    folds = meta["loco"]["folds"]
    assert set(folds) == {"EmoDB", "nEMO", "emotiontts-ko", "URDU"}
    for held, fold in folds.items():
        assert held not in fold["trained_on"]                       # each corpus scored by a model that never saw it
        for rate in CONDITIONS[:2]:
            assert 0.0 <= fold["figures"]["relative"]["win"][rate]["uar_4class"] <= 1.0


def test_the_emodb_variant_meets_its_recorded_speaker_independent_figures():
    """The EmoDB-only card's numbers come from its model.json: they must clear the bars in every condition."""
    loso = json.loads((EMODB_VARIANT / META_FILE).read_text(encoding="utf-8"))["loso"]
    for head in ("global", "relative"):
        for cond in CONDITIONS:
            r = loso[head][cond]
            assert r["uar_angry_vs_neutral"] >= 0.95, (head, cond)
            assert r["uar_high_vs_low_arousal"] >= 0.93, (head, cond)
            assert r["uar_4class"] >= 0.78, (head, cond)
            assert r["ece"] <= 0.08, (head, cond)
            # No collapse: every class is predicted for at least a tenth of the clips.
            assert min(r["predicted_share"].values()) >= 0.1, (head, cond)


def test_a_missing_model_names_the_training_script(tmp_path):
    with pytest.raises(ModelUnavailableError, match="scripts/train_emotion.py"):
        EmotionModel.load(EmotionOptions(model_dir=str(tmp_path)))


def test_a_corrupt_model_is_reported_not_half_loaded(tmp_path):
    shutil.copy(SHIPPED / META_FILE, tmp_path / META_FILE)
    (tmp_path / MODEL_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelUnavailableError, match="unreadable"):
        EmotionModel.load(EmotionOptions(model_dir=str(tmp_path)))


def test_models_env_var_points_at_another_models_folder(tmp_path, monkeypatch):
    shutil.copytree(SHIPPED, tmp_path / "emotion")
    monkeypatch.setenv("CALLPULSE_MODELS", str(tmp_path))
    assert default_model_dir() == tmp_path / "emotion"
    assert EmotionModel.load(EmotionOptions()).model_id


def test_a_prosody_config_the_model_was_not_trained_with_is_refused():
    with pytest.raises(ConfigError, match="band_low_hz"):
        EmotionModel.load(EmotionOptions(), prosody=ProsodyOptions(band_low_hz=200.0))
    # Baseline options do not change the feature vector, so they may differ.
    EmotionModel.load(EmotionOptions(), prosody=ProsodyOptions(baseline_min_speech_s=10.0))


# ------------------------------------------------------------------ predictions and baselines
def test_scores_are_probabilities_with_arousal_and_valence_in_range(model):
    rng = np.random.default_rng(0)
    for _ in range(20):
        vec = rng.normal(size=len(model.vector_names)) * 5
        s = model.predict(vec, baseline=None)
        assert set(s.scores) == set(CLASSES)
        assert sum(s.scores.values()) == pytest.approx(1.0)
        top = max(s.scores, key=s.scores.get)
        # the most probable class, unless it is below label_min_confidence (sad: sad_min_confidence)
        needed = max(model.options.label_min_confidence, model.options.sad_min_confidence if top == "sad" else 0.0)
        assert s.label == (top if s.scores[top] >= needed else "neutral")
        assert s.arousal == pytest.approx(s.scores["angry"] + s.scores["happy"])
        assert 0.0 <= s.arousal <= 1.0 and -1.0 <= s.valence <= 1.0
        json.dumps(s.as_dict(), allow_nan=False)


def test_a_wrong_vector_is_refused(model):
    with pytest.raises(ValueError, match="ProsodyExtractor.vector"):
        model.predict(np.zeros(3), baseline=None)


def test_the_baseline_head_takes_over_after_enough_calm_speech(model):
    rng = np.random.default_rng(1)
    b = model.new_baseline()
    vec = rng.normal(size=len(model.vector_names))
    b.update(vec, calm=False)
    assert not b.ready and b.n_updates == 0
    for _ in range(EmotionOptions().baseline_min_updates):
        assert model.predict(vec, baseline=b).source.endswith("/global")
        b.update(vec, calm=True)
    assert b.ready
    assert model.predict(vec, baseline=b).source.endswith("/relative")
    np.testing.assert_allclose(b.mean, vec)


def test_baseline_learns_only_finite_values_and_keeps_a_bounded_memory():
    opts = EmotionOptions(baseline_min_updates=1, baseline_memory_updates=10)
    from pipeline.emotion import EmotionBaseline

    b = EmotionBaseline(2, opts)
    for _ in range(50):
        b.update(np.array([0.0, np.nan]), calm=True)
    assert np.isnan(b.mean[1])
    b.update(np.array([10.0, 1.0]), calm=True)
    assert b.mean[0] == pytest.approx(1.0)    # a memory of 10 updates moves a tenth of the way
    assert b.mean[1] == pytest.approx(1.0)


# ------------------------------------------------------------------ real speech (EmoDB)
@pytest.mark.real_data
def test_the_same_clip_at_16_khz_and_as_8_khz_mulaw_gets_close_scores(model, data_dir):
    rows = [r for r in _emodb_rows(data_dir) if r["speaker"] == "emodb_03"]
    picked = [r for c in CLASSES for r in [x for x in rows if x["emotion"] == c][:2]]
    diffs, same_label = [], 0
    for r in picked:
        y, sr = _clip(data_dir, r["file"])
        wide = model.predict_audio(y, sr=sr)
        narrow = model.predict_audio(_telephone(y, sr), sr=8000)
        diffs.append(max(abs(wide.scores[c] - narrow.scores[c]) for c in CLASSES))
        same_label += wide.label == narrow.label
        assert abs(wide.arousal - narrow.arousal) < 0.25, r["file"]
    assert max(diffs) < 0.3 and float(np.mean(diffs)) < 0.1, diffs
    assert same_label >= len(picked) - 1


@pytest.mark.real_data
def test_on_emodb_angry_speech_scores_high_arousal_and_sad_speech_low(emodb_model, data_dir):
    model = emodb_model
    rows = _emodb_rows(data_dir)
    arousal: dict[str, list[float]] = {c: [] for c in CLASSES}
    labels: list[str] = []
    for c in CLASSES:
        for r in [x for x in rows if x["emotion"] == c][::8]:
            y, sr = _clip(data_dir, r["file"])
            s = model.predict_audio(y, sr=sr)
            arousal[c].append(s.arousal)
            labels.append(s.label)
    assert np.mean(arousal["angry"]) > 0.8 and np.mean(arousal["sad"]) < 0.2
    assert np.mean(arousal["happy"]) > np.mean(arousal["neutral"])
    assert len(set(labels)) == len(CLASSES)      # not collapsed to one class


@pytest.mark.real_data
def test_a_speaker_baseline_from_their_other_clips_keeps_anger_apart_from_neutral(emodb_model, data_dir):
    model = emodb_model
    rows = [r for r in _emodb_rows(data_dir) if r["speaker"] == "emodb_08"]
    vecs = {}
    for r in rows:
        y, sr = _clip(data_dir, r["file"])
        vecs[r["file"]] = model.extractor.vector(y, sr=sr)[1]
    correct = total = 0
    for r in rows:
        if r["emotion"] not in ("angry", "neutral"):
            continue
        baseline = model.baseline_from([v for f, v in vecs.items() if f != r["file"]])
        assert baseline.ready
        s = model.predict(vecs[r["file"]], baseline=baseline)
        assert s.source.endswith("/relative")
        predicted = "angry" if s.scores["angry"] >= s.scores["neutral"] else "neutral"
        correct += predicted == r["emotion"]
        total += 1
    assert correct / total >= 0.9


# ------------------------------------------------------------------ training, end to end
def test_metrics_have_their_textbook_values():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert uar(y, y, range(4)) == 1.0
    assert uar(y, np.zeros_like(y), range(4)) == 0.25          # collapse to one class scores chance
    probs = np.full((4, 4), 0.25)
    assert expected_calibration_error(probs, np.array([0, 1, 2, 3])) == pytest.approx(0.0)
    confident = np.eye(4)[[0, 0, 0, 0]]
    assert expected_calibration_error(confident, np.array([0, 1, 2, 3])) == pytest.approx(0.75)
    s = scores_summary(np.eye(4)[y], y, np.array(["a", "b"] * 4))
    assert s["uar_4class"] == s["uar_angry_vs_neutral"] == s["uar_high_vs_low_arousal"] == 1.0
    assert s["confusion"] == (np.eye(4, dtype=int) * 2).tolist()


def test_baselines_never_mix_speakers_and_leave_the_clip_itself_out():
    x = np.array([[1.0], [3.0], [5.0], [100.0], [200.0]])
    spk = np.array(["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(baseline_means(x, spk, None)[:, 0], [4.0, 3.0, 2.0, 200.0, 100.0])
    calm = np.array([True, True, False, True, True])
    # Fewer than 3 calm clips: fall back to all of the speaker's other clips.
    np.testing.assert_allclose(baseline_means(x, spk, calm)[:, 0], [4.0, 3.0, 2.0, 200.0, 100.0])


def test_logistic_head_is_deterministic_and_separates_separable_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    z = rng.normal(size=(80, 3)) * 0.3 + np.eye(4)[y][:, :3] * 3 - (y == 3)[:, None] * 3
    w1, b1 = fit_logistic(z, y, l2=1.0, n_classes=4)
    w2, b2 = fit_logistic(z, y, l2=1.0, n_classes=4)
    assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    assert uar(y, np.argmax(z @ w1 + b1, axis=1), range(4)) == 1.0


_SYNTH_EMOTIONS = {  # F0 shift (st), level (dB), brightness (harmonic roll-off exponent)
    "angry": (4.0, 0.0, 0.6), "happy": (5.0, -6.0, 1.0), "neutral": (0.0, -10.0, 1.2), "sad": (-2.0, -16.0, 1.8),
}


def _synthetic_emodb(root: Path) -> None:
    """A tiny EmoDB-shaped corpus: 4 speakers, 3 'utterances' per emotion, voices that differ."""
    rng = np.random.default_rng(7)
    folder = root / "emodb"
    folder.mkdir(parents=True)
    sr = 16000
    rows = []
    for spk, (gender, f0) in {"s1": ("female", 210.0), "s2": ("female", 240.0),
                              "s3": ("male", 105.0), "s4": ("male", 125.0)}.items():
        for emotion, (shift, level_db, rolloff) in _SYNTH_EMOTIONS.items():
            for k in range(3):
                t = np.arange(int(1.2 * sr)) / sr
                glide = 2 ** ((shift + rng.normal(0, 0.5) + 2 * np.sin(2 * np.pi * 1.5 * t)) / 12)
                phase = 2 * np.pi * np.cumsum(f0 * glide) / sr
                y = sum(np.sin(h * phase) / h ** rolloff for h in range(1, 25))
                y *= (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.5 * t)))      # syllable-like envelope
                y = y / np.abs(y).max() * 10 ** (level_db / 20) * 0.5
                name = f"{spk}_{emotion}_{k}.wav"
                sf.write(folder / name, y.astype(np.float32), sr)
                rows.append({"file": name, "speaker": spk, "emotion": emotion, "gender": gender})
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "speaker", "emotion", "gender"])
        w.writeheader()
        w.writerows(rows)


def test_training_writes_a_loadable_model_and_rebuilds_it_bit_for_bit(tmp_path):
    _synthetic_emodb(tmp_path / "data")
    metas = []
    for run in ("a", "b"):
        options = TrainOptions(data_dir=tmp_path / "data", out_dir=tmp_path / run, cache_dir=None,
                               feature_set="prosody", l2=1.0)
        metas.append(evaluate_and_train(options, progress=lambda *_: None))
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()
    assert metas[0]["id"] == metas[1]["id"]
    # Speaker-independent figures on toy voices well above chance (0.25 for 4 classes, 0.5 for arousal).
    relative = metas[0]["loso"]["relative"]["16k"]
    assert relative["uar_high_vs_low_arousal"] >= 0.85 and relative["uar_4class"] >= 0.6

    model = EmotionModel.load(EmotionOptions(model_dir=str(tmp_path / "a")))
    sr = 16000
    t = np.arange(sr) / sr
    loud_bright = sum(np.sin(2 * np.pi * h * 230 * t) / h ** 0.6 for h in range(1, 25))
    quiet_dull = sum(np.sin(2 * np.pi * h * 100 * t) / h ** 1.8 for h in range(1, 25))
    hot = model.predict_audio((0.5 * loud_bright / np.abs(loud_bright).max()).astype(np.float32), sr=sr)
    cold = model.predict_audio((0.08 * quiet_dull / np.abs(quiet_dull).max()).astype(np.float32), sr=sr)
    assert hot.arousal > cold.arousal
