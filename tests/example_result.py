"""Realistic per-call results (schema callpulse.call/1) for the report and store tests.

Shaped like pipeline.engine's output for the escalating sample: an agent on channel 0, a caller who turns
agitated at about 30 s, one supervisor_takeover alert, prosody with the odd NaN the extractor emits on
unvoiced turns, and text that would break a page if it were not escaped.
"""
from __future__ import annotations

import copy
import math

_TURNS = [
    # speaker, start_s, end_s, text, sentiment, arousal, emotion, flags
    ("agent", 0.6, 6.77, "Thank you for calling City Bank card services, my name is Emma.", 0.55, 0.22, "neutral", []),
    ("caller", 7.29, 12.02, "Hi. My new debit card was declined at the supermarket this morning.", -0.2, 0.28,
     "neutral", []),
    ("agent", 13.32, 18.35, "I am sorry to hear that. Can I have the last four digits of the card, please?", 0.1,
     0.2, "neutral", []),
    ("caller", 19.2, 21.6, "Yes, it ends in ****4421.", 0.0, 0.25, "neutral", []),
    ("agent", 22.5, 28.9, "Thank you. I can see the card has not been activated yet.", 0.2, 0.21, "neutral", []),
    ("caller", 29.85, 34.9, "No! This is ridiculous, I have called three times about this card already!", -0.72,
     0.81, "angry", ["anger"]),
    ("agent", 35.8, 39.3, "I understand, and I am sorry. Let me activate it for you now.", 0.3, 0.2, "neutral", []),
    ("caller", 40.2, 46.8, "Every time you people say the same thing! I want to speak to your manager right now!",
     -0.65, 0.86, "angry", ["anger", "escalation_request"]),
    ("agent", 47.6, 51.6, "I can transfer you, but I can fix this right away <if> you give me one minute & wait.",
     0.25, 0.23, "neutral", []),
    ("caller", 50.8, 55.4, "No! I am sick of waiting. You people are useless idiots! <script>alert('x')</script>",
     -0.9, 0.9, "angry", ["abuse", "anger"]),
    ("caller", 56.6, 62.0, "This is absolutely ridiculous! Get me your manager now!", -0.8, 0.88, "angry",
     ["anger", "escalation_request"]),
    ("agent", 62.6, 67.4, "The card is active now, and I am putting you through to my manager.", 0.35, 0.2,
     "neutral", []),
    ("caller", 67.9, 70.2, "About time! Useless, completely useless!", -0.85, 0.84, "angry", ["abuse"]),
]


def _prosody(arousal: float, voiced: bool = True) -> dict:
    nan = float("nan")
    return {
        "duration_s": 4.0, "speech_s": 3.6, "voiced_ratio": 0.7 if voiced else 0.0,
        "f0_median_hz": 95.0 + 80.0 * arousal if voiced else nan,
        "f0_median_st": 12.0 * math.log2((95.0 + 80.0 * arousal) / 100.0) if voiced else nan,
        "f0_range_st": 5.0 + 6.0 * arousal, "energy_db": -26.0 + 12.0 * arousal, "speaking_rate_syl_s": 4.0 + arousal,
        "pause_ratio": 0.1, "jitter": 0.01, "shimmer": 0.05, "hnr_db": 12.0,
        "z": {"energy_db": 3.0 * arousal, "f0_median_st": 2.5 * arousal},
    }


def escalating_result(call_id: str = "escalating_en") -> dict:
    segments = []
    for i, (spk, t0, t1, text, sent, ar, label, flags) in enumerate(_TURNS):
        angry = 0.8 if label == "angry" else 0.05
        segments.append({
            "speaker": spk, "start_s": t0, "end_s": t1, "text": text, "language": "en", "sentiment": sent,
            "arousal": ar,
            "emotion": {"label": label, "scores": {"angry": angry, "happy": 0.05, "neutral": 0.9 - angry,
                                                   "sad": 0.05}, "source": "prosody_rules"},
            "prosody": _prosody(ar, voiced=(i != 3)), "flags": flags,
        })
    timeline = []
    for t in range(71):
        if t < 30:
            level = 0.08 + 0.02 * math.sin(t / 3.0)
        else:
            level = min(0.92, 0.1 + 0.82 * (1.0 - math.exp(-(t - 30) / 3.0)))
        timeline.append({"t_s": float(t), "caller_agitation": round(level, 3),
                         "agent_strain": round(0.12 + 0.002 * t, 3)})
    alerts = [{
        "id": f"{call_id}-ca-1", "kind": "caller_agitation", "action": "supervisor_takeover", "onset_s": 31.0,
        "raised_at_s": 34.0, "cleared_at_s": None, "level": 0.71,
        "reasons": ["loud voice (+2.4 sd)", "high pitch (+2.1 sd)", "caller said: escalation_request",
                    "negative words <3>"],
    }]
    return {
        "schema": "callpulse.call/1", "call_id": call_id, "source": "samples/escalating_en.wav",
        "duration_s": 70.256, "sample_rate_hz": 8000, "channels": {"agent": 0, "caller": 1},
        "languages": ["en"], "agent_id": "a17", "started_at": "2026-11-29T09:30:00+08:00",
        "segments": segments, "timeline": timeline, "alerts": alerts,
        "summary": {
            "peak_agitation": max(p["caller_agitation"] for p in timeline),
            "mean_agitation": 0.41, "agitation_raise_level": 0.55, "agent_strain_end": 0.26,
            "n_segments": len(segments), "talk_s": {"agent": 31.4, "caller": 33.2},
            "talk_share": {"agent": 0.486, "caller": 0.514}, "overtalk_s": 0.8, "long_silences": 0,
            "caller_sentiment_score": -67, "n_supervisor_takeover": 1, "n_recovery_break": 0,
            "emotion_source": "prosody_rules", "asr_model": "whisper-base", "stage_errors": [],
            "callpulse_version": "0.1.0",
        },
    }


def calm_zh_result(call_id: str = "calm_zh") -> dict:
    r = escalating_result(call_id)
    r["source"] = "samples/calm_zh.wav"
    r["languages"] = ["zh"]
    r["agent_id"] = "a08"
    r["alerts"] = []
    r["segments"] = [
        {**copy.deepcopy(r["segments"][0]), "speaker": "agent", "text": "您好，欢迎致电城市银行，请问有什么可以帮您？",
         "language": "zh", "sentiment": 0.6, "flags": []},
        {**copy.deepcopy(r["segments"][1]), "speaker": "caller", "text": "你好，我的银行卡丢了，想挂失。",
         "language": "zh", "sentiment": -0.3, "flags": []},
    ]
    for p in r["timeline"]:
        p["caller_agitation"] = 0.1
    r["summary"] = {**r["summary"], "peak_agitation": 0.1, "n_supervisor_takeover": 0, "caller_sentiment_score": 20}
    return r


def mono_result(call_id: str = "mono_call") -> dict:
    """A mixed (mono) recording without ASR: no text, roles unknown, no agent id, no threshold given."""
    r = escalating_result(call_id)
    r["channels"] = "mixed"
    r["agent_id"] = None
    r["started_at"] = None
    r["languages"] = []
    r["segments"] = [{**s, "speaker": "mixed", "text": "", "sentiment": None, "language": None}
                     for s in r["segments"][:3]]
    del r["summary"]["agitation_raise_level"]
    return r
