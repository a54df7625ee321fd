"""The sample calls in samples/ are what their annotations say they are."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import decode_mulaw
from pipeline.errors import SampleGenerationError
from pipeline.devtools.samples_gen import ESPEAK_VERSION_OF_SAMPLES, SCRIPTS, espeak_version, render_call, write_all

from support import require_binary

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
NAMES = ["calm_en", "escalating_en", "calm_zh"]


def _load(name: str) -> tuple[dict, np.ndarray, int, sf._SoundFileInfo]:
    annotation = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    wav = SAMPLES / annotation["file"]
    audio, sr = sf.read(wav, dtype="int16", always_2d=True)
    return annotation, audio, sr, sf.info(wav)


def _rms_dbfs(x: np.ndarray) -> float:
    x = x.astype(np.float64) / 32768.0
    return float(20.0 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12))


def _segment(audio: np.ndarray, sr: int, turn: dict, channel: int) -> np.ndarray:
    return audio[int(turn["start_s"] * sr) : int(turn["end_s"] * sr), channel]


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_a_stereo_8khz_pcm16_telephone_call_of_40_to_75_seconds(name):
    annotation, audio, sr, info = _load(name)
    assert annotation["file"] == f"{name}.wav"
    assert info.format == "WAV" and info.subtype == "PCM_16"
    assert sr == annotation["sample_rate_hz"] == 8000
    assert audio.shape[1] == 2
    assert annotation["agent_channel"] == 0
    duration_s = len(audio) / sr
    assert duration_s == pytest.approx(annotation["duration_s"], abs=0.002)
    assert 40.0 <= duration_s <= 75.0


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_value_lies_on_the_g711_mulaw_grid(name):
    _, audio, _, _ = _load(name)
    grid = np.unique(decode_mulaw(bytes(range(256))))
    assert np.isin(np.unique(audio), grid).all()


@pytest.mark.parametrize("name", NAMES)
def test_turns_lie_inside_the_call_in_order_with_realistic_gaps(name):
    annotation, audio, sr, _ = _load(name)
    duration_s = len(audio) / sr
    turns = annotation["turns"]
    assert len(turns) >= 6
    assert {t["speaker"] for t in turns} == {"agent", "caller"}
    for t in turns:
        assert 0.0 <= t["start_s"] < t["end_s"] <= duration_s
        assert t["text"].strip()
    for prev, nxt in zip(turns, turns[1:]):
        gap_s = nxt["start_s"] - prev["end_s"]
        overtalk = gap_s < 0
        assert overtalk or 0.25 <= gap_s <= 1.55, (prev["text"], gap_s)


@pytest.mark.parametrize("name", NAMES)
def test_each_party_speaks_on_its_own_channel(name):
    annotation, audio, sr, _ = _load(name)
    for t in annotation["turns"]:
        own = 0 if t["speaker"] == "agent" else 1
        other_busy = any(
            u is not t and u["speaker"] != t["speaker"] and u["start_s"] < t["end_s"] and t["start_s"] < u["end_s"]
            for u in annotation["turns"]
        )
        if other_busy:
            continue  # over-talk: both channels carry speech
        assert _rms_dbfs(_segment(audio, sr, t, own)) > _rms_dbfs(_segment(audio, sr, t, 1 - own)) + 20.0


@pytest.mark.parametrize("name", NAMES)
def test_line_noise_between_turns_is_about_minus_50_dbfs(name):
    annotation, audio, sr, _ = _load(name)
    first = annotation["turns"][0]["start_s"]
    lead_in = audio[: int((first - 0.05) * sr)]
    assert -56.0 < _rms_dbfs(lead_in) < -44.0


def test_calm_samples_have_no_agitation_onset():
    for name in ("calm_en", "calm_zh"):
        annotation, *_ = _load(name)
        assert annotation["agitation_onset_s"] is None


def test_escalating_sample_is_agitated_from_a_caller_turn_for_at_least_20_s_to_the_end():
    annotation, audio, sr, _ = _load("escalating_en")
    onset_s = annotation["agitation_onset_s"]
    duration_s = len(audio) / sr
    assert 10.0 < onset_s < duration_s - 20.0
    onset_turn = next(t for t in annotation["turns"] if t["start_s"] == onset_s)
    assert onset_turn["speaker"] == "caller"
    last_caller = [t for t in annotation["turns"] if t["speaker"] == "caller"][-1]
    assert last_caller["end_s"] > duration_s - 5.0
    words = " ".join(t["text"].lower() for t in annotation["turns"] if t["start_s"] >= onset_s)
    assert "ridiculous" in words and "manager" in words and "idiots" in words


def test_escalating_sample_has_one_brief_overtalk():
    annotation, *_ = _load("escalating_en")
    turns = annotation["turns"]
    overlaps = [
        (a, b) for a, b in zip(turns, turns[1:]) if b["start_s"] < a["end_s"] and a["speaker"] != b["speaker"]
    ]
    assert len(overlaps) == 1
    a, b = overlaps[0]
    assert 0.2 <= a["end_s"] - b["start_s"] <= 1.5


def test_agitation_is_audible_in_the_callers_voice_not_only_in_words():
    annotation, audio, sr, _ = _load("escalating_en")
    onset_s = annotation["agitation_onset_s"]
    caller = [t for t in annotation["turns"] if t["speaker"] == "caller"]
    calm = [t for t in caller if t["start_s"] < onset_s]
    agitated = [t for t in caller if t["start_s"] >= onset_s]

    def level_db(turns):
        return _rms_dbfs(np.concatenate([_segment(audio, sr, t, 1) for t in turns]))

    def median_f0_hz(turns):
        x = np.concatenate([_segment(audio, sr, t, 1) for t in turns]).astype(np.float32) / 32768.0
        f0 = librosa.yin(x, fmin=60.0, fmax=400.0, sr=sr, frame_length=512)
        return float(np.median(f0))

    def chars_per_s(turns):
        return sum(len(t["text"]) for t in turns) / sum(t["end_s"] - t["start_s"] for t in turns)

    assert level_db(agitated) > level_db(calm) + 6.0
    assert median_f0_hz(agitated) > 1.3 * median_f0_hz(calm)
    assert chars_per_s(agitated) > 1.1 * chars_per_s(calm)


def test_generation_is_deterministic_and_matches_the_committed_script():
    require_binary("espeak-ng")
    script = next(s for s in SCRIPTS if s.name == "calm_en")
    first = render_call(script, seed=7)
    second = render_call(script, seed=7)
    assert np.array_equal(first.audio_int16, second.audio_int16)
    assert first.annotation == second.annotation
    committed, *_ = _load("calm_en")
    assert [t["text"] for t in first.annotation["turns"]] == [t["text"] for t in committed["turns"]]


def test_a_different_seed_changes_the_turn_gaps():
    require_binary("espeak-ng")
    script = next(s for s in SCRIPTS if s.name == "calm_en")
    a = render_call(script, seed=1).annotation["turns"]
    b = render_call(script, seed=2).annotation["turns"]
    assert [t["start_s"] for t in a] != [t["start_s"] for t in b]


def test_the_script_regenerates_the_committed_sample(tmp_path):
    require_binary("espeak-ng")
    proc = subprocess.run([sys.executable, str(SAMPLES.parent / "scripts" / "make_samples.py"), "--only", "calm_en",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    made = json.loads((tmp_path / "calm_en.json").read_text(encoding="utf-8"))
    committed, *_ = _load("calm_en")
    assert [t["text"] for t in made["turns"]] == [t["text"] for t in committed["turns"]]
    if espeak_version() == ESPEAK_VERSION_OF_SAMPLES:
        assert made == committed
        assert (tmp_path / "calm_en.wav").read_bytes() == (SAMPLES / "calm_en.wav").read_bytes()


def test_missing_espeak_is_reported_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr("pipeline.devtools.samples_gen.shutil.which", lambda name: None)
    with pytest.raises(SampleGenerationError, match="apt-get install -y espeak-ng"):
        write_all(tmp_path, names=["calm_en"])


def test_an_unknown_sample_name_is_refused():
    with pytest.raises(SampleGenerationError, match="calm_en"):
        write_all(Path("/nonexistent"), names=["nope"])


# ------------------------------------------------------------------ alerts on the samples (default engine)
@pytest.fixture(scope="module")
def acoustic_results(engine):
    """The samples through the default engine (ASR, the shipped emotion model, learned fusion, timing)."""
    from pipeline.batch import analyze_file

    return {name: analyze_file(SAMPLES / f"{name}.wav", engine=engine) for name in NAMES}


def _takeovers(result: dict) -> list[dict]:
    return [a for a in result["alerts"] if a["action"] == "supervisor_takeover"]


@pytest.mark.slow
def test_the_escalating_sample_gets_exactly_one_takeover_within_8_s_of_its_onset(acoustic_results):
    onset = json.loads((SAMPLES / "escalating_en.json").read_text(encoding="utf-8"))["agitation_onset_s"]
    takeovers = _takeovers(acoustic_results["escalating_en"])
    assert len(takeovers) == 1, takeovers
    assert onset <= takeovers[0]["raised_at_s"] <= onset + 8.0, (onset, takeovers[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["calm_en", "calm_zh"])
def test_the_calm_samples_raise_no_takeover(acoustic_results, name):
    assert _takeovers(acoustic_results[name]) == []


@pytest.mark.slow
def test_calm_agent_turns_are_not_labelled_sad(acoustic_results):
    labels = [s["emotion"]["label"] for r in acoustic_results.values() for s in r["segments"]
              if s.get("speaker") == "agent" and s.get("emotion")]
    assert labels and sum(lab == "sad" for lab in labels) <= 0.1 * len(labels), labels
