"""Fusion of acoustic and lexical evidence into caller agitation."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.fusion import (CUE_RECORDER, FEATURES, AcousticCue, AgitationTracker, FusionOptions, TextCue, TurnCue,
                             load_learned)
from pipeline.training import fusion as FT

from fusion_calls import synthetic_calls


def _rules(**kw) -> FusionOptions:
    """The hand-set noisy-OR fusion ([fusion] model = "rules")."""
    return FusionOptions(model="rules", **kw)


def _levels(tracker, seconds, start=1):
    return [tracker.step(float(t), overtalk=False)[0] for t in range(start, start + seconds)]


def test_calm_voice_and_neutral_words_keep_agitation_near_zero():
    tr = AgitationTracker(_rules())
    for t in range(1, 20):
        tr.add_acoustic(AcousticCue(t, arousal=0.2, anger=0.02, source="test"))
        level, _ = tr.step(float(t), overtalk=False)
    assert level < 0.05


def test_an_angry_voice_raises_agitation_and_says_why():
    tr = AgitationTracker(_rules())
    for t in range(1, 6):
        tr.add_acoustic(AcousticCue(t, arousal=0.95, anger=0.9, source="model:x"))
        level, reasons = tr.step(float(t), overtalk=False)
    assert level > 0.6
    assert any("angry voice" in r for r in reasons)


def test_acoustic_and_lexical_cues_together_beat_either_alone():
    def run(acoustic, text):
        tr = AgitationTracker(_rules())
        for t in range(1, 8):
            if acoustic:
                tr.add_acoustic(AcousticCue(t, 0.8, 0.5, "x"))
            if text and t == 1:
                tr.add_text(TextCue(1.0, -0.8, ("escalation_request",), "I want your manager"))
            level, _ = tr.step(float(t), overtalk=False)
        return level

    both, voice, words = run(True, True), run(True, False), run(False, True)
    assert both > voice and both > words


def test_agitation_falls_slower_than_it_rises():
    o = _rules()
    tr = AgitationTracker(o)
    tr.add_acoustic(AcousticCue(1, 1.0, 1.0, "x"))
    up = tr.step(1.0, overtalk=False)[0]
    tr2 = AgitationTracker(o, level=up * 2)
    down = up * 2 - tr2.step(100.0, overtalk=False)[0]
    assert down < up


def test_text_cues_fade_after_their_memory():
    o = _rules(text_memory_s=5.0)
    tr = AgitationTracker(o)
    tr.add_text(TextCue(1.0, -1.0, ("abuse",), "idiot"))
    levels = _levels(tr, 30)
    assert max(levels) > 0.2 and levels[-1] < 0.05


def test_before_the_caller_baseline_exists_acoustic_evidence_counts_less():
    def run(ready):
        tr = AgitationTracker(_rules())
        for t in range(1, 6):
            tr.add_acoustic(AcousticCue(t, 0.9, 0.8, "x", baseline_ready=ready))
            level, _ = tr.step(float(t), overtalk=False)
        return level

    assert run(False) < run(True)


def test_a_happy_lively_caller_is_not_agitated():
    def run(happy, anger):
        tr = AgitationTracker(_rules())
        for t in range(1, 8):
            tr.add_acoustic(AcousticCue(t, arousal=0.9, anger=anger, source="x", prosody_z=3.0, happy=happy))
            level, _ = tr.step(float(t), overtalk=False)
        return level

    raise_level = 0.45      # what the rules mode was tuned with (the shipped timing is the learned fusion's)
    assert run(happy=0.85, anger=0.05) < raise_level < run(happy=0.05, anger=0.85)


def test_an_angry_transcribed_turn_counts_from_when_it_arrives_and_fades():
    tr = AgitationTracker(_rules(weight_turn_anger=0.35))
    tr.add_turn(TurnCue(5.0, anger=0.95, source="model:x/turn_speaker"))
    early = _levels(tr, 4)                    # 1..4 s: the transcript is not there yet
    level, reasons = tr.step(5.0, overtalk=False)
    later = _levels(tr, 60, start=6)
    assert max(early) == 0.0 and level > 0.0
    assert any("angry voice in turn" in r and "turn_speaker" in r for r in reasons)
    assert later[-1] < 0.01                   # gone after text_memory_s


def test_turn_cues_can_be_switched_off():
    tr = AgitationTracker(_rules(weight_turn_anger=0.0))
    tr.add_turn(TurnCue(1.0, anger=1.0, source="x"))
    assert max(_levels(tr, 5)) == 0.0


def test_an_uncertain_turn_adds_nothing_only_confident_anger_counts():
    def peak(p):
        tr = AgitationTracker(_rules(weight_turn_anger=0.35))
        tr.add_turn(TurnCue(1.0, anger=p, source="x"))
        return max(_levels(tr, 3))
    assert peak(0.3) == 0.0 and peak(0.5) == 0.0
    assert 0.0 < peak(0.75) < peak(0.95)


# ---------------------------------------------------------------------------- learned fusion
def _synthetic_calls(corpus: str, seed: int, *, n: int = 6, scale: float = 1.0) -> list[FT.CallCues]:
    """Escalating calls (anger and raised prosody from the onset), calm and lively-calm ones (happy, aroused)."""
    return synthetic_calls(corpus, seed, n=n, scale=scale)


def test_the_fitted_fusion_keeps_its_signs_and_tells_excitement_from_anger():
    model = FT.fit_fusion(_synthetic_calls("A", 0) + _synthetic_calls("B", 1))
    w = dict(zip(FEATURES, model.weights))
    assert w["anger"] + w["anger_ready"] > 0 and w["happy"] <= 0 and w["prosody_z"] >= 0
    angry = model.probability((1, 0.8, 0.9, 0.05, 0.6, 1, 0.8, 0))
    happy = model.probability((1, 0.05, 0.9, 0.8, 0.2, 1, 0.05, 0))
    assert angry > 0.5 > happy


@pytest.mark.parametrize("timing", [FT.Timing(rise_tau_s=2.0, fall_tau_s=6.0, raise_level=0.5, min_sustain_s=1.0),
                                    FT.cusum_timing(0.55, 1.5)], ids=["level", "cusum"])
def test_replayed_levels_are_what_the_engine_tracker_computes(tmp_path, timing):
    calls = _synthetic_calls("A", 2)
    model = FT.fit_fusion(calls)
    FT.write_fusion_dir(tmp_path, model, timing, {})
    load_learned.cache_clear()
    c = calls[0]
    tracker = AgitationTracker(FusionOptions(model_dir=str(tmp_path), rise_tau_s=timing.rise_tau_s,
                                             fall_tau_s=timing.fall_tau_s, detector=timing.detector,
                                             cusum_drift=timing.cusum_drift, cusum_threshold=timing.cusum_threshold))
    recorder: list = []
    token = CUE_RECORDER.set(recorder)
    try:
        levels = []
        for t, x in zip(c.t_s, c.features):
            tracker.add_acoustic(AcousticCue(t, arousal=x[2], anger=x[1], source="t", baseline_ready=bool(x[5]),
                                             prosody_z=x[4] * 3.0, happy=x[3]))
            levels.append(tracker.step(float(t), overtalk=False)[0])
    finally:
        CUE_RECORDER.reset(token)
    shipped_form = load_learned(str(tmp_path))        # as written (rounded) and read back
    assert np.allclose(levels, FT.replay_levels(c, shipped_form, timing), atol=1e-9)
    assert np.allclose([r[1] for r in recorder], c.features, atol=1e-9)


def test_fusion_loco_never_fits_on_the_calls_of_the_corpus_it_scores():
    def folds(c_scale):
        calls = _synthetic_calls("A", 0) + _synthetic_calls("B", 1) + _synthetic_calls("C", 2, scale=c_scale)
        return FT.loco_fusion({k: calls for k in "ABC"}, corpora="ABC", progress=lambda s: None)

    base, moved = folds(1.0), folds(0.3)
    assert moved["C"]["model"] == base["C"]["model"] and moved["C"]["timing"] == base["C"]["timing"]
    assert moved["C"]["fit_on"] == ["A", "B"]
    assert moved["A"]["model"] != base["A"]["model"]          # C's calls do train the other folds
    assert moved["C"]["figures"]["all"]["recall"] <= base["C"]["figures"]["all"]["recall"]


# ---------------------------------------------------------------------------- detectors
def _policy_raises(levels, raise_level, sustain_s=0.0):
    return FT.policy_raises(np.arange(1.0, len(levels) + 1.0), np.asarray(levels),
                            FT.Timing(raise_level=raise_level, min_sustain_s=sustain_s))


def test_one_loud_second_never_raises_a_cusum_takeover_but_two_strong_seconds_do():
    timing = FT.cusum_timing(0.5, 0.8)
    one = FT.detector_levels(np.array([0.1] * 10 + [1.0] + [0.1] * 10), timing)
    two = FT.detector_levels(np.array([0.1] * 10 + [0.95, 0.95] + [0.1] * 10), timing)
    assert _policy_raises(one, 1.0) == []
    assert _policy_raises(two, 1.0) == [12.0]


def test_cusum_counts_moderate_evidence_that_a_level_threshold_never_sees():
    """Evidence at 0.8 for 5 s: under a 0.9 raise level it never pages, the CUSUM (drift 0.5) does in 3 s."""
    raw = np.array([0.1] * 10 + [0.8] * 5 + [0.1] * 10)
    level = FT.detector_levels(raw, FT.Timing(rise_tau_s=0.5, fall_tau_s=6.0))
    cusum = FT.detector_levels(raw, FT.cusum_timing(0.5, 0.8))
    assert _policy_raises(level, 0.9) == []
    assert _policy_raises(cusum, 1.0) == [13.0]


def test_the_cusum_statistic_forgets_a_long_angry_stretch_within_threshold_over_drift_seconds_of_calm():
    timing = FT.cusum_timing(0.5, 1.0)
    levels = FT.detector_levels(np.array([1.0] * 60 + [0.0] * 3), timing)
    assert levels[59] == 1.0 and levels[-1] == 0.0


def test_a_detector_that_is_not_known_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="level.*cusum"):
        FusionOptions(detector="page")
    with pytest.raises(ValueError, match="cusum_drift"):
        FusionOptions(detector="cusum", cusum_drift=1.0)


def test_detector_loco_never_fits_on_the_calls_of_the_corpus_it_scores():
    from pipeline.training import detector_choice as DC

    def folds(c_scale):
        calls = _synthetic_calls("A", 0) + _synthetic_calls("B", 1) + _synthetic_calls("C", 2, scale=c_scale)
        return DC.loco_detectors({k: calls for k in "ABC"}, corpora="ABC", progress=lambda s: None)

    base, moved = folds(1.0), folds(0.3)
    for det in ("level", "cusum"):
        assert moved["C"][det]["timing"] == base["C"][det]["timing"]
        assert moved["C"][det]["figures"]["all"]["recall"] <= base["C"][det]["figures"]["all"]["recall"]
    assert base["C"]["cusum"]["timing"]["detector"] == "cusum"


def test_the_shipped_learned_fusion_pages_on_anger_not_on_a_happy_caller():
    from pipeline.config import load_config

    config = load_config()
    assert config.fusion.model == "learned"
    raise_level = config.alerts.caller_agitation.raise_level

    def run(happy, anger, z):
        """10 s of a calm caller (their baseline), then 12 s of the given reading."""
        tr = AgitationTracker(config.fusion)
        for t in range(1, 23):
            calm = t <= 10
            cue = AcousticCue(t, arousal=0.3 if calm else min(1.0, happy + anger), anger=0.1 if calm else anger,
                              source="x", prosody_z=0.0 if calm else z, happy=0.1 if calm else happy,
                              baseline_ready=t > 6)
            tr.add_acoustic(cue)
            level, _ = tr.step(float(t), overtalk=False)
        return level

    assert run(happy=0.85, anger=0.05, z=0.5) < raise_level < run(happy=0.05, anger=0.9, z=2.5)


def test_a_missing_fusion_model_says_how_to_rebuild_it_or_switch_to_rules(tmp_path):
    from pipeline.errors import ModelUnavailableError

    load_learned.cache_clear()
    with pytest.raises(ModelUnavailableError, match="train_fusion.py.*rules"):
        AgitationTracker(FusionOptions(model_dir=str(tmp_path)))
