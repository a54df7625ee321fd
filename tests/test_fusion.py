"""Fusion of acoustic and lexical evidence into caller agitation."""
from __future__ import annotations

from pipeline.fusion import AcousticCue, AgitationTracker, FusionOptions, TextCue, TurnCue


def _levels(tracker, seconds, start=1):
    return [tracker.step(float(t), overtalk=False)[0] for t in range(start, start + seconds)]


def test_calm_voice_and_neutral_words_keep_agitation_near_zero():
    tr = AgitationTracker(FusionOptions())
    for t in range(1, 20):
        tr.add_acoustic(AcousticCue(t, arousal=0.2, anger=0.02, source="test"))
        level, _ = tr.step(float(t), overtalk=False)
    assert level < 0.05


def test_an_angry_voice_raises_agitation_and_says_why():
    tr = AgitationTracker(FusionOptions())
    for t in range(1, 6):
        tr.add_acoustic(AcousticCue(t, arousal=0.95, anger=0.9, source="model:x"))
        level, reasons = tr.step(float(t), overtalk=False)
    assert level > 0.6
    assert any("angry voice" in r for r in reasons)


def test_acoustic_and_lexical_cues_together_beat_either_alone():
    def run(acoustic, text):
        tr = AgitationTracker(FusionOptions())
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
    o = FusionOptions()
    tr = AgitationTracker(o)
    tr.add_acoustic(AcousticCue(1, 1.0, 1.0, "x"))
    up = tr.step(1.0, overtalk=False)[0]
    tr2 = AgitationTracker(o, level=up * 2)
    down = up * 2 - tr2.step(100.0, overtalk=False)[0]
    assert down < up


def test_text_cues_fade_after_their_memory():
    o = FusionOptions(text_memory_s=5.0)
    tr = AgitationTracker(o)
    tr.add_text(TextCue(1.0, -1.0, ("abuse",), "idiot"))
    levels = _levels(tr, 30)
    assert max(levels) > 0.2 and levels[-1] < 0.05


def test_before_the_caller_baseline_exists_acoustic_evidence_counts_less():
    def run(ready):
        tr = AgitationTracker(FusionOptions())
        for t in range(1, 6):
            tr.add_acoustic(AcousticCue(t, 0.9, 0.8, "x", baseline_ready=ready))
            level, _ = tr.step(float(t), overtalk=False)
        return level

    assert run(False) < run(True)


def test_a_happy_lively_caller_is_not_agitated():
    def run(happy, anger):
        tr = AgitationTracker(FusionOptions())
        for t in range(1, 8):
            tr.add_acoustic(AcousticCue(t, arousal=0.9, anger=anger, source="x", prosody_z=3.0, happy=happy))
            level, _ = tr.step(float(t), overtalk=False)
        return level

    from pipeline.alerts import AlertOptions

    raise_level = AlertOptions().caller_agitation.raise_level
    assert run(happy=0.85, anger=0.05) < raise_level < run(happy=0.05, anger=0.85)


def test_an_angry_transcribed_turn_counts_from_when_it_arrives_and_fades():
    tr = AgitationTracker(FusionOptions())
    tr.add_turn(TurnCue(5.0, anger=0.95, source="model:x/turn_speaker"))
    early = _levels(tr, 4)                    # 1..4 s: the transcript is not there yet
    level, reasons = tr.step(5.0, overtalk=False)
    later = _levels(tr, 60, start=6)
    assert max(early) == 0.0 and level > 0.0
    assert any("angry voice in turn" in r and "turn_speaker" in r for r in reasons)
    assert later[-1] < 0.01                   # gone after text_memory_s


def test_turn_cues_can_be_switched_off():
    tr = AgitationTracker(FusionOptions(weight_turn_anger=0.0))
    tr.add_turn(TurnCue(1.0, anger=1.0, source="x"))
    assert max(_levels(tr, 5)) == 0.0


def test_an_uncertain_turn_adds_nothing_only_confident_anger_counts():
    def peak(p):
        tr = AgitationTracker(FusionOptions())
        tr.add_turn(TurnCue(1.0, anger=p, source="x"))
        return max(_levels(tr, 3))
    assert peak(0.3) == 0.0 and peak(0.5) == 0.0
    assert 0.0 < peak(0.75) < peak(0.95)
