"""`callpulse evaluate`: the harness (manifests, resumable runner, reports) with scripted fakes of each
stage's interface, the evaluation-call builder on synthetic clips, and the real models on real data."""
from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import ConfigError, EvaluationError, PipelineError
from pipeline.evaluate.alerts import AlertEvalOptions, evaluate_alerts
from pipeline.evaluate.calls import CallBuildOptions, build_calls, interleave_by_gender, plan_calls, read_clips
from pipeline.evaluate.emotion import EmotionEvalOptions, evaluate_emotion, score
from pipeline.evaluate.manifests import read_manifest
from pipeline.evaluate.runner import Item, RunOptions, run_items
from pipeline.evaluate.suite import load_eval_config
from pipeline.evaluate.text import TextEvalOptions, evaluate_text
from pipeline.events import CallEnded

ROOT = Path(__file__).resolve().parents[1]
QUIET = RunOptions(progress=False)


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tone(path: Path, *, amplitude: float, seconds: float = 0.6, sr: int = 16000, f0: float = 200.0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amplitude * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


# --- the resumable runner -----------------------------------------------------------------------------

def test_runner_caches_finished_items_and_does_not_redo_them(tmp_path):
    calls = []

    def work(item):
        calls.append(item.key)
        return {"double": item.payload["x"] * 2}

    items = [Item(f"clip{i}.wav", {"x": i}) for i in range(4)]
    first = run_items(items, work, cache_dir=tmp_path, signature="s1", options=QUIET, desc="t")
    assert [r.result["double"] for r in first] == [0, 2, 4, 6]
    again = run_items(items, work, cache_dir=tmp_path, signature="s1", options=QUIET, desc="t")
    assert len(calls) == 4                      # nothing redone
    assert all(r.cached for r in again) and [r.result["double"] for r in again] == [0, 2, 4, 6]


def test_runner_redoes_items_when_what_shapes_them_changes(tmp_path):
    calls = []
    items = [Item("a", {}), Item("b", {})]
    run_items(items, lambda it: calls.append(it.key) or {}, cache_dir=tmp_path, signature="config-1",
              options=QUIET, desc="t")
    run_items(items, lambda it: calls.append(it.key) or {}, cache_dir=tmp_path, signature="config-2",
              options=QUIET, desc="t")
    assert calls == ["a", "b", "a", "b"]
    run_items(items, lambda it: calls.append(it.key) or {}, cache_dir=tmp_path, signature="config-2",
              options=RunOptions(progress=False, resume=False), desc="t")
    assert len(calls) == 6                      # --no-resume redoes everything


def test_an_interrupted_run_resumes_at_the_first_unfinished_item(tmp_path):
    done = []

    def crashing(item):
        if item.key == "c":
            raise KeyboardInterrupt  # the user pressed ^C during item c
        done.append(item.key)
        return {"ok": True}

    items = [Item(k, {}) for k in "abcd"]
    with pytest.raises(KeyboardInterrupt):
        run_items(items, crashing, cache_dir=tmp_path, signature="s", options=QUIET, desc="t")
    # a half-written result file (killed mid-write) must be redone, not trusted
    (tmp_path / "junk-0.json").write_text("{trunc")
    redone = []
    results = run_items(items, lambda it: redone.append(it.key) or {"ok": True}, cache_dir=tmp_path,
                        signature="s", options=QUIET, desc="t")
    assert redone == ["c", "d"]
    assert [r.cached for r in results] == [True, True, False, False]


def test_a_failed_item_is_reported_not_cached_and_retried_next_run(tmp_path):
    def flaky(item):
        if item.key == "bad":
            raise PipelineError("bad.wav: not a readable audio file")
        return {"ok": True}

    items = [Item("good", {}), Item("bad", {})]
    results = run_items(items, flaky, cache_dir=tmp_path, signature="s", options=QUIET, desc="t")
    assert results[1].result is None and "not a readable" in results[1].error
    retried = []
    run_items(items, lambda it: retried.append(it.key) or {"ok": True}, cache_dir=tmp_path, signature="s",
              options=QUIET, desc="t")
    assert retried == ["bad"]


def test_two_workers_run_in_parallel_and_keep_item_order(tmp_path):
    both_running = threading.Barrier(2, timeout=10)

    def work(item):
        both_running.wait()  # only returns if a second worker is running at the same time
        return {"key": item.key}

    items = [Item(k, {}) for k in ("x", "y")]
    results = run_items(items, work, cache_dir=tmp_path, signature="s",
                        options=RunOptions(workers=2, progress=False), desc="t")
    assert [r.result["key"] for r in results] == ["x", "y"]


def test_a_bug_in_an_item_is_not_hidden_as_a_failed_item(tmp_path):
    with pytest.raises(ZeroDivisionError):
        run_items([Item("a", {})], lambda it: {"x": 1 / 0}, cache_dir=tmp_path, signature="s", options=QUIET,
                  desc="t")


# --- manifests -----------------------------------------------------------------------------------------

def test_manifest_paths_resolve_against_the_manifest_folder_and_file_is_an_alias(tmp_path):
    _tone(tmp_path / "a.wav", amplitude=0.1)
    m = _csv(tmp_path / "m.csv", ["file", "emotion", "speaker"], [["a.wav", "angry", "s1"]])
    (row,) = read_manifest(m, required=("path", "emotion", "speaker"))
    assert row.path == tmp_path / "a.wav" and row.get("emotion") == "angry"


def test_manifest_errors_name_the_missing_column_or_file(tmp_path):
    m = _csv(tmp_path / "m.csv", ["path", "speaker"], [["a.wav", "s1"]])
    with pytest.raises(EvaluationError, match="emotion"):
        read_manifest(m, required=("path", "emotion", "speaker"))
    m = _csv(tmp_path / "m2.csv", ["path", "emotion", "speaker"], [["missing.wav", "angry", "s1"]])
    with pytest.raises(EvaluationError, match="missing.wav"):
        read_manifest(m, required=("path", "emotion", "speaker"))
    with pytest.raises(EvaluationError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv", required=("path",))


def test_manifest_limit_takes_an_evenly_spaced_sample(tmp_path):
    # manifests are often sorted by label: the first rows would all be one class
    m = _csv(tmp_path / "t.csv", ["text", "label", "language"],
             [[f"t{i}", "positive" if i < 50 else "negative", "en"] for i in range(100)])
    rows = read_manifest(m, required=("text", "label", "language"), audio=False, limit=10)
    assert len(rows) == 10
    assert {r.get("label") for r in rows} == {"positive", "negative"}


# --- emotion, with a scripted fake model --------------------------------------------------------------

class FakeBaseline:
    def __init__(self):
        self.seen: list[float] = []

    @property
    def ready(self):
        return bool(self.seen)

    def update(self, vector, *, calm):
        if calm:
            self.seen.append(float(vector[0]))


class FakeScores:
    def __init__(self, label, scores, source):
        self.label, self.scores, self.source = label, scores, source
        self.arousal = scores["angry"] + scores["happy"]


class FakeEmotionModel:
    """Same interface as EmotionModel: loudness above the speaker's calm level (or 0.1) means angry."""

    model_id = "fake-loudness"
    vector_names = ("rms", "sr_khz")
    prosody_options = "fake"

    def __init__(self, model_dir: Path):
        self.options = type("Opts", (), {"model_dir": str(model_dir)})()
        self.extractor = self
        self.baselines: list[FakeBaseline] = []

    def vector(self, y, *, sr):
        return None, np.array([float(np.sqrt(np.mean(y ** 2))), sr / 1000.0])

    def new_baseline(self):
        self.baselines.append(FakeBaseline())
        return self.baselines[-1]

    def looks_calm(self, vector):
        return vector[0] < 0.1

    def predict(self, vector, *, baseline):
        ref = np.mean(baseline.seen) if baseline is not None and baseline.ready else 0.1
        p = 0.9 if vector[0] > 2 * ref else 0.1
        head = "relative" if baseline is not None and baseline.ready else "global"
        return FakeScores("angry" if p > 0.5 else "neutral",
                          {"angry": p, "happy": 0.0, "neutral": 1 - p, "sad": 0.0}, f"model:fake/{head}")


@pytest.fixture()
def emotion_clips(tmp_path):
    rows = []
    for spk in ("s1", "s2"):
        for k in range(3):
            rows.append([_tone(tmp_path / f"{spk}_n{k}.wav", amplitude=0.04 + 0.01 * k).name, "neutral", spk])
            rows.append([_tone(tmp_path / f"{spk}_a{k}.wav", amplitude=0.5).name, "angry", spk])
    rows.append([_tone(tmp_path / "s1_bored.wav", amplitude=0.05).name, "boredom", "s1"])
    return _csv(tmp_path / "emotion.csv", ["path", "emotion", "speaker"], rows)


def test_emotion_evaluation_writes_predictions_and_figures(emotion_clips, tmp_path):
    model = FakeEmotionModel(tmp_path / "no-model-dir")
    out = tmp_path / "out"
    res = evaluate_emotion(options=EmotionEvalOptions(manifest=str(emotion_clips)), config=None, run=QUIET, out=out,
                           cache_dir=out / "items", model=model)
    m = res.metrics
    assert m["n_items"] == 12 and m["excluded_labels"] == {"boredom": 1}
    assert m["uar"] == pytest.approx(1.0) and m["angry_vs_neutral"]["uar"] == pytest.approx(1.0)
    assert m["protocol"] == "as-is" and m["speaker_independent"] is None  # unknown training set: said so
    assert m["heads_used"] == {"global": 12}
    preds = _read_csv(out / "predictions.csv")
    assert list(preds[0]) == ["path", "speaker", "truth", "predicted", "p_angry", "p_happy", "p_neutral", "p_sad",
                              "arousal", "source"]
    assert (out / "confusion.png").stat().st_size > 0 and (out / "reliability.png").stat().st_size > 0
    assert len(list((out / "items" / "emotion").glob("*.json"))) == 12


def test_telephone_variant_scores_8khz_versions(emotion_clips, tmp_path):
    model = FakeEmotionModel(tmp_path)
    out = tmp_path / "out"
    evaluate_emotion(options=EmotionEvalOptions(manifest=str(emotion_clips), telephone=True), config=None, run=QUIET,
                     out=out, cache_dir=out / "items", model=model)
    cached = json.loads(next((out / "items" / "emotion").glob("*.json")).read_text())["result"]
    assert cached["native"][1] == pytest.approx(16.0) and cached["8k-mulaw"][1] == pytest.approx(8.0)


def test_speaker_baseline_uses_only_the_other_clips_of_the_same_speaker():
    model = FakeEmotionModel(Path("."))
    vectors = np.array([[0.05, 16], [0.06, 16], [0.5, 16], [0.07, 16], [0.6, 16]])
    speakers = ["s1", "s1", "s1", "s2", "s2"]
    scores = score(vectors, speakers, models={"s1": model, "s2": model}, speaker_baseline=True)
    # one baseline per scored clip; it saw the speaker's other calm-looking clips and never the clip itself
    assert [b.seen for b in model.baselines] == [[0.06], [0.05], [0.05, 0.06], [], [0.07]]
    assert [s.label for s in scores] == ["neutral", "neutral", "angry", "neutral", "angry"]


def test_evaluation_refuses_a_manifest_without_usable_labels(tmp_path):
    _tone(tmp_path / "a.wav", amplitude=0.1)
    m = _csv(tmp_path / "m.csv", ["path", "emotion", "speaker"], [["a.wav", "boredom", "s1"]])
    with pytest.raises(EvaluationError, match="no clips labelled"):
        evaluate_emotion(options=EmotionEvalOptions(manifest=str(m)), config=None, run=QUIET, out=tmp_path / "o",
                         cache_dir=tmp_path / "o" / "items", model=FakeEmotionModel(tmp_path))


def _shipped_emotion_model():
    from pipeline.emotion import EmotionModel, EmotionOptions

    return EmotionModel.load(EmotionOptions())  # committed in models/emotion: its absence is a failure


def test_leave_one_speaker_out_never_learns_from_the_held_out_speaker():
    from pipeline.evaluate.emotion_folds import fold_models

    model = _shipped_emotion_model()
    rng = np.random.default_rng(0)
    n_per, speakers = 12, ["a", "b", "c", "d"]
    spk = [s for s in speakers for _ in range(n_per)]
    labels = [("angry", "happy", "neutral", "sad")[i % 4] for i in range(len(spk))]
    d = len(model.vector_names)
    vectors = {"native": rng.normal(size=(len(spk), d)), "8k-mulaw": rng.normal(size=(len(spk), d))}
    folds = fold_models(model, vectors=vectors, labels=labels, speakers=spk)
    # scramble speaker a's labels: a's own fold model must not change, b's must
    scrambled = [("sad" if lab == "angry" else "angry" if lab == "sad" else lab) if s == "a" else lab
                 for lab, s in zip(labels, spk)]
    folds2 = fold_models(model, vectors=vectors, labels=scrambled, speakers=spk)
    x = vectors["native"][0]
    assert folds["a"].predict(x, baseline=None).scores == folds2["a"].predict(x, baseline=None).scores
    assert folds["b"].predict(x, baseline=None).scores != folds2["b"].predict(x, baseline=None).scores
    assert set(folds) == set(speakers) and folds["a"].model_id.endswith("without-a")


@pytest.mark.slow
def test_real_model_on_emodb_is_scored_leave_one_speaker_out(data_dir, tmp_path):
    model = _shipped_emotion_model()
    res = evaluate_emotion(options=EmotionEvalOptions(manifest=str(data_dir / "emodb" / "manifest.csv"), limit=120),
                           config=None, run=QUIET, out=tmp_path, cache_dir=tmp_path / "items", model=model)
    m = res.metrics
    assert m["protocol"] == "loso" and m["speaker_independent"] is True
    assert m["n_speakers"] == 10 and len(m["uar_per_speaker"]) == 10
    assert m["uar"] > 0.5                       # chance is 0.25
    assert m["angry_vs_neutral"]["uar"] > 0.8


@pytest.mark.slow
def test_turn_heads_on_emodb_are_scored_with_the_asr_encoder_and_the_speakers_other_clips(data_dir, tmp_path, engine):
    """prosody + Whisper encoder, each clip standardised by its speaker's other clips, leave-one-speaker-out.
    The turn heads ship in the EmoDB-only variant (the multi-corpus default has none)."""
    from pipeline.emotion import EmotionModel, EmotionOptions

    emodb_variant = EmotionModel.load(EmotionOptions(model_dir="models/emotion-emodb"))
    res = evaluate_emotion(options=EmotionEvalOptions(manifest=str(data_dir / "emodb" / "manifest.csv"), limit=80,
                                                      features="both", speaker_baseline=True, telephone=True),
                           config=None, run=QUIET, out=tmp_path, cache_dir=tmp_path / "items",
                           model=emodb_variant, transcriber=engine.transcriber)
    m = res.metrics
    assert m["protocol"] == "loso" and m["features"] == "both" and m["variant"] == "8k-mulaw+both+speaker-baseline"
    assert set(m["heads_used"]) == {"turn_speaker"}                 # source ".../both/turn_speaker"
    assert m["uar"] > 0.6 and m["angry_vs_neutral"]["uar"] > 0.85  # chance is 0.25 / 0.5
    assert len(list((tmp_path / "items" / "emotion-encoder").glob("*.json"))) == m["n_items"]


def test_emotion_variant_names_choose_rate_features_and_baseline():
    from pipeline.evaluate.suite import EMOTION_VARIANTS, emotion_variant_options

    o = emotion_variant_options(EmotionEvalOptions(), "8k-mulaw+both+speaker-baseline")
    assert (o.telephone, o.features, o.speaker_baseline) == (True, "both", True)
    assert o.variant == "8k-mulaw+both+speaker-baseline"
    assert emotion_variant_options(EmotionEvalOptions(), "native").features == "prosody"
    assert len(EMOTION_VARIANTS) == 12 and all(emotion_variant_options(EmotionEvalOptions(), v).variant == v
                                               for v in EMOTION_VARIANTS)


# --- text, with a scripted fake scorer -----------------------------------------------------------------

class FakeTextScore:
    def __init__(self, sentiment, label, flags):
        self.sentiment, self.label, self.flags, self.language, self.backend = sentiment, label, flags, "en", "fake"


class FakeScorer:
    options = "fake-options"

    def score(self, text, *, language):
        neg = "bad" in text
        return FakeTextScore(-0.6 if neg else 0.2, "negative" if neg else "neutral",
                             ("anger",) if "!!" in text else ())


def test_text_evaluation_maps_complaints_and_anger(tmp_path):
    m = _csv(tmp_path / "tweets.csv", ["text", "label", "language"], [
        ["bad service", "complaint"], ["bad bad!!", "anger"], ["thanks", "not_complaint"],
        ["where is my order", "complaint"], ["ok", "not_complaint"], ["", "not_complaint"]])
    out = tmp_path / "out"
    res = evaluate_text(options=TextEvalOptions(manifests=(str(m),), chunk_rows=4), config=None, run=QUIET, out=out,
                        cache_dir=out / "items", scorer=FakeScorer())
    figures = res.metrics["sets"]["tweets"]
    assert figures["truth_counts"] == {"negative": 3, "non-negative": 3}
    assert figures["per_class_recall"] == {"negative": pytest.approx(2 / 3), "non-negative": 1.0}
    assert figures["uar"] == pytest.approx((2 / 3 + 1) / 2)
    assert figures["anger_flag"]["per_class_recall"]["anger"] == 1.0
    assert figures["negative_vs_rest"]["roc_auc"] == pytest.approx((2 * 3 + 0.5 * 3) / 9)
    rows = _read_csv(out / "predictions.csv")
    assert list(rows[0])[:5] == ["set", "row", "truth", "predicted", "score"]
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5", "6"]


def test_text_evaluation_rejects_unknown_labels(tmp_path):
    m = _csv(tmp_path / "t.csv", ["text", "label", "language"], [["x", "furious", "en"]])
    with pytest.raises(EvaluationError, match="furious"):
        evaluate_text(options=TextEvalOptions(manifests=(str(m),)), config=None, run=QUIET, out=tmp_path / "o",
                      cache_dir=tmp_path / "o" / "items", scorer=FakeScorer())


# --- alerts, through the real batch path with a scripted engine ---------------------------------------

class FakeSession:
    """Implements the CallSession interface; raises a takeover at a scripted time."""

    def __init__(self, info, raise_at_s):
        self.info, self.raise_at_s, self.n = info, raise_at_s, 0
        self.stage_seconds = {}

    def feed(self, block):
        self.n += block.shape[1]
        return []

    def finish(self):
        duration = self.n / self.info.sample_rate_hz
        alerts = [] if self.raise_at_s is None else [{
            "id": "x", "kind": "caller_agitation", "action": "supervisor_takeover", "onset_s": self.raise_at_s - 2,
            "raised_at_s": self.raise_at_s, "cleared_at_s": None, "level": 0.7, "reasons": ["anger (model)"]}]
        timeline = [{"t_s": float(t), "caller_agitation": 0.8 if self.raise_at_s and t >= self.raise_at_s - 2 else 0.1,
                     "agent_strain": 0.0} for t in range(int(duration))]
        yield CallEnded(self.info.call_id, {"duration_s": duration, "alerts": alerts, "timeline": timeline,
                                            "segments": [], "summary": {"peak_agitation": 0.8}})


class FakeEngine:
    emotion_source = "fake"
    transcriber = None

    def __init__(self, script):
        self.script = script
        self.opened = []

    def open_call(self, info, *, defer_asr=False, full_windows=None):   # Engine.open_call's signature
        self.opened.append(info)
        return FakeSession(info, self.script[info.call_id])


def _stereo(path: Path, seconds: float = 12.0, sr: int = 8000) -> Path:
    sf.write(path, np.zeros((int(seconds * sr), 2), np.float32), sr, subtype="PCM_16")
    return path


def test_alert_evaluation_scores_takeovers_against_known_onsets(tmp_path, config):
    for name in ("esc", "calm"):
        _stereo(tmp_path / f"{name}.wav")
    m = _csv(tmp_path / "calls.csv", ["path", "agent_channel", "agitation_onset_s", "agent_id", "started_at"],
             [["esc.wav", 0, "5.0", "a1", "2026-01-05T09:00:00"], ["calm.wav", 1, "", "a1", ""]])
    engine = FakeEngine({"esc": 8.5, "calm": 3.0})
    out = tmp_path / "out"
    res = evaluate_alerts(options=AlertEvalOptions(manifest=str(m)), config=config, run=QUIET, out=out,
                          cache_dir=out / "items", engine=engine)
    m_ = res.metrics
    assert (m_["n_escalating"], m_["n_detected"], m_["recall"]) == (1, 1, 1.0)
    assert m_["latency_median_s"] == pytest.approx(3.5)
    assert m_["false_alerts_on_calm_calls"] == 1
    assert m_["false_alerts_per_call_hour"] == pytest.approx(1 / (12 / 3600))
    assert [c["reasons"] for c in m_["calls"]] == [["anger (model)"], ["anger (model)"]]
    # the manifest's agent channel, agent id and start time reach the engine
    assert [(i.agent_channel, i.agent_id) for i in engine.opened] == [(0, "a1"), (1, "a1")]
    assert engine.opened[0].started_at == "2026-01-05T09:00:00"
    assert (out / "timelines" / "esc.png").stat().st_size > 0
    assert _read_csv(out / "predictions.csv")[0]["latency_s"] == "3.5"


# --- evaluation calls from labelled clips --------------------------------------------------------------

@pytest.fixture()
def clip_corpus(tmp_path):
    rows = []
    for spk, gender, f0 in (("f1", "female", 220), ("f2", "female", 240), ("m1", "male", 110), ("m2", "male", 130)):
        for k in range(3):
            rows.append([_tone(tmp_path / f"{spk}_n{k}.wav", amplitude=0.05, f0=f0).name, spk, "neutral", gender])
            rows.append([_tone(tmp_path / f"{spk}_a{k}.wav", amplitude=0.5, f0=f0 * 1.5).name, spk, "angry", gender])
    return _csv(tmp_path / "manifest.csv", ["file", "speaker", "emotion", "gender"], rows)


def test_call_plan_is_balanced_and_agents_are_other_people(clip_corpus):
    clips = read_clips(clip_corpus)
    assert interleave_by_gender(clips) == ["f1", "m1", "f2", "m2"]
    plans = plan_calls(clips, CallBuildOptions(seed=3))
    assert sorted(p.caller for p in plans) == ["f1", "f2", "m1", "m2"]     # everyone calls once
    assert sorted(p.agent for p in plans) == ["f1", "f2", "m1", "m2"]      # and answers once
    assert all(p.caller != p.agent for p in plans)
    assert [p.kind for p in plans] == ["escalating", "escalating", "calm", "calm"]
    for p in plans:
        caller_emotions = [t.emotion for t in p.turns if t.role == "caller"]
        assert all(t.emotion == "neutral" for t in p.turns if t.role == "agent")
        if p.kind == "calm":
            assert set(caller_emotions) == {"neutral"}
        else:  # neutral turns, then only angry ones
            assert caller_emotions == ["neutral"] * 3 + ["angry"] * 4
    assert plan_calls(clips, CallBuildOptions(seed=3)) == plans             # deterministic


def test_calm_calls_can_have_lively_callers_but_never_angry_ones(clip_corpus, tmp_path):
    rows = list(csv.reader(open(clip_corpus)))
    rows += [[_tone(tmp_path / f"{spk}_h.wav", amplitude=0.3).name, spk, "happy", g]
             for spk, g in (("f1", "female"), ("f2", "female"), ("m1", "male"), ("m2", "male"))]
    _csv(clip_corpus, rows[0], rows[1:])
    plans = plan_calls(read_clips(clip_corpus), CallBuildOptions(calm_emotions=("neutral", "happy")))
    calm = [t.emotion for p in plans if p.kind == "calm" for t in p.turns if t.role == "caller"]
    assert set(calm) == {"neutral", "happy"}
    with pytest.raises(ValueError):
        CallBuildOptions(calm_emotions=("angry",))


def test_every_kind_gives_each_speaker_an_escalating_a_calm_and_a_lively_calm_call(clip_corpus, tmp_path):
    rows = list(csv.reader(open(clip_corpus)))
    rows = [rows[0] + ["corpus"]] + [r + ["X"] for r in rows[1:]]
    rows += [[_tone(tmp_path / f"{spk}_h{k}.wav", amplitude=0.3).name, spk, "happy", g, "X"]
             for spk, g in (("f1", "female"), ("f2", "female"), ("m1", "male")) for k in range(2)]
    rows += [[_tone(tmp_path / "other.wav", amplitude=0.5).name, "o1", "angry", "male", "Y"]]
    _csv(clip_corpus, rows[0], rows[1:])
    clips = read_clips(clip_corpus, corpus="X")
    assert {c.speaker for c in clips} == {"f1", "f2", "m1", "m2"}           # corpus Y left out
    plans = plan_calls(clips, CallBuildOptions(corpus="X", every_kind=True))
    kinds = {(p.caller, p.kind) for p in plans}
    assert {k for _, k in kinds} == {"escalating", "calm", "lively-calm"}
    # m2 has no happy clip: it calls escalating and calm, never lively-calm
    assert ("m2", "lively-calm") not in kinds and ("m2", "calm") in kinds
    for p in plans:
        caller = {t.emotion for t in p.turns if t.role == "caller"}
        assert p.call_id.startswith("X-")
        assert caller == ({"neutral", "angry"} if p.kind == "escalating" else
                          {"neutral", "happy"} if p.kind == "lively-calm" else {"neutral"})


def test_emodb_calls_are_balanced_over_speakers_and_genders(data_dir):
    clips = [c for c in read_clips(data_dir / "emodb" / "manifest.csv") if c.emotion in ("neutral", "angry")]
    plans = plan_calls(clips, CallBuildOptions())
    gender = {c.speaker: c.gender for c in clips}
    assert len(plans) == 10 and sorted(p.caller for p in plans) == sorted(gender)
    escalating = [gender[p.caller] for p in plans if p.kind == "escalating"]
    calm = [gender[p.caller] for p in plans if p.kind == "calm"]
    assert sorted(escalating) == ["female"] * 3 + ["male"] * 2
    assert sorted(calm) == ["female"] * 2 + ["male"] * 3


def test_built_calls_put_the_caller_on_the_other_channel_from_the_onset(clip_corpus, tmp_path):
    out = tmp_path / "calls"
    manifest = build_calls(CallBuildOptions(source_manifest=str(clip_corpus), out=str(out)), progress=lambda s: None)
    rows = _read_csv(manifest)
    assert len(rows) == 8 and {r["variant"] for r in rows} == {"wideband", "telephone"}
    assert list(rows[0])[:5] == ["path", "agent_channel", "agitation_onset_s", "agent_id", "started_at"]
    esc = next(r for r in rows if r["kind"] == "escalating" and r["variant"] == "wideband")
    note = json.loads((out / esc["path"]).with_suffix(".json").read_text())
    first_angry = next(t for t in note["turns"] if t["emotion"] == "angry")
    assert float(esc["agitation_onset_s"]) == pytest.approx(first_angry["start_s"], abs=1e-3)
    y, sr = sf.read(out / esc["path"], dtype="float32")
    seg = slice(int(first_angry["start_s"] * sr) + 100, int(first_angry["end_s"] * sr) - 100)
    caller = 1 - int(esc["agent_channel"])
    assert np.sqrt(np.mean(y[seg, caller] ** 2)) > 0.2                      # loud caller
    assert np.sqrt(np.mean(y[seg, 1 - caller] ** 2)) < 0.01                 # agent silent (noise floor)
    assert all(r["agitation_onset_s"] == "" for r in rows if r["kind"] == "calm")
    assert _read_csv(out / "calm.csv") == [r for r in rows if r["kind"] == "calm"]
    assert _read_csv(out / "escalating.csv") == [r for r in rows if r["kind"] == "escalating"]
    tel = next(r for r in rows if r["variant"] == "telephone")
    info = sf.info(out / tel["path"])
    assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "ULAW")


# --- config and CLI ------------------------------------------------------------------------------------

def test_eval_config_holds_pipeline_options_and_the_suite(tmp_path):
    cfg = tmp_path / "eval.toml"
    cfg.write_text('[alerts.caller_agitation]\nraise_level = 0.6\n'
                   '[evaluate]\nevaluations = ["text"]\nworkers = 2\n'
                   '[evaluate.text]\nmanifests = ["data/t.csv"]\n')
    config, suite = load_eval_config(cfg)
    assert config.alerts.caller_agitation.raise_level == 0.6
    assert suite.evaluations == ("text",) and suite.workers == 2
    assert suite.text.manifests == (str(tmp_path / "data" / "t.csv"),)   # relative to the file
    cfg.write_text('[evaluate]\nworkrs = 2\n')
    with pytest.raises(ConfigError, match="workrs"):
        load_eval_config(cfg)


def test_every_evaluate_subcommand_parses_and_has_a_handler():
    from pipeline.cli import build_parser

    parser = build_parser()
    for argv in (["asr", "--no-direct"], ["emotion", "--telephone", "--speaker-baseline", "--protocol", "loso"],
                 ["emotion", "--features", "both", "--all-variants"],
                 ["alerts", "--no-plots"], ["text", "--manifest", "a.csv", "--manifest", "b.csv"],
                 ["all", "--workers", "2", "--limit", "5", "--cache", "c", "--no-resume"]):
        args = parser.parse_args(["evaluate", *argv])
        assert callable(args.func), argv


def test_cli_text_writes_metrics_with_provenance_and_report(tmp_path, capsys):
    from pipeline.cli import main

    m = _csv(tmp_path / "t.csv", ["text", "label", "language"], [
        ["This is terrible, I want a refund now", "negative", "en"], ["Thank you, great help", "positive", "en"],
        ["服务太差了，我要投诉", "negative", "zh"], ["谢谢，非常满意", "positive", "zh"]])
    out = tmp_path / "out"
    assert main(["evaluate", "text", "--manifest", str(m), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema"] == "callpulse.eval/1"
    prov = metrics["provenance"]
    assert {"date_utc", "command", "config", "models", "packages", "options"} <= set(prov)
    assert prov["packages"]["numpy"] and "alerts" in prov["config"]
    assert metrics["evaluations"]["text"]["sets"]["t"]["n_items"] == 4
    assert "text" in (out / "report.html").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_a_missing_manifest_as_an_error(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["evaluate", "emotion", "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- real models on real data --------------------------------------------------------------------------

@pytest.mark.slow
def test_asr_evaluation_on_real_clips_pipeline_and_direct(data_dir, engine, config, tmp_path):
    from pipeline.evaluate.asr import AsrEvalOptions, evaluate_asr

    manifest = data_dir / "asr" / "manifest.csv"
    res = evaluate_asr(options=AsrEvalOptions(manifest=str(manifest)), config=config, run=QUIET, out=tmp_path,
                       cache_dir=tmp_path / "items", engine=engine)
    by_lang = res.metrics["by_language"]
    assert set(by_lang) == {"en", "zh"} and by_lang["zh"]["metric"] == "cer"
    for lang in by_lang.values():
        assert lang["pipeline"]["rate"] is not None and lang["direct"]["rate"] is not None
    zh = next(c for c in res.metrics["clips"] if c["language"] == "zh")
    assert zh["pipeline"]["traditional_chars"] == 0          # the product writes Simplified
    assert by_lang["en"]["pipeline"]["rate"] < 0.5


@pytest.mark.slow
def test_cli_all_runs_the_suite_and_reports_an_evaluation_that_cannot_run(tmp_path):
    from pipeline.cli import main

    _csv(tmp_path / "t.csv", ["text", "label", "language"], [["terrible service", "negative", "en"],
                                                             ["great, thanks", "positive", "en"]])
    cfg = tmp_path / "eval.toml"
    cfg.write_text('[evaluate]\nevaluations = ["text", "alerts"]\n'
                   '[evaluate.text]\nmanifests = ["t.csv"]\n[evaluate.alerts]\nmanifest = "no-calls.csv"\n')
    out = tmp_path / "out"
    assert main(["evaluate", "all", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluations"]["text"]["sets"]["t"]["n_items"] == 2
    assert "no-calls.csv" in metrics["evaluations"]["alerts"]["error"]
    assert (out / "text" / "predictions.csv").is_file() and (out / "report.html").is_file()


def test_metrics_json_stays_valid_json_when_a_figure_is_undefined(tmp_path):
    from pipeline.evaluate.report import EvalResult, write_metrics

    path = write_metrics(tmp_path / "metrics.json", results=[EvalResult("x", {"uar": float("nan"),
                                                                              "n": [1.0, float("inf")]})],
                         run_provenance={"date_utc": "d"})
    data = json.loads(path.read_text())  # strict parsers reject NaN
    assert data["evaluations"]["x"]["uar"] is None and data["evaluations"]["x"]["n"] == [1.0, None]
    assert "NaN" not in path.read_text()
