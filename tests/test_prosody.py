"""Prosody stage: measurements on synthetic signals with known answers, and the speaker baseline."""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib

import librosa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import DEFAULT_CONFIG_PATH, load_config
from pipeline.errors import ConfigError
from pipeline.prosody import ProsodyExtractor, ProsodyFeatures, ProsodyOptions
from pipeline.speaker_baseline import SpeakerBaseline


@pytest.fixture(scope="module")
def extractor() -> ProsodyExtractor:
    ex = ProsodyExtractor(ProsodyOptions())
    ex.warm_up()
    return ex


def _tone(freq_hz: float, *, sr: int, duration_s: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * librosa.tone(freq_hz, sr=sr, duration=duration_s)).astype(np.float32)


def _voiced(f0_hz: float, *, sr: int, duration_s: float, amplitude: float = 0.3) -> np.ndarray:
    """A vowel-like harmonic complex (harmonics up to 3.4 kHz, falling 6 dB/octave)."""
    t = np.arange(int(duration_s * sr)) / sr
    y = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, int(3400 // f0_hz) + 1))
    return (amplitude * y / np.max(np.abs(y))).astype(np.float32)


def test_prosody_options_defaults_are_the_shipped_toml_section():
    with open(DEFAULT_CONFIG_PATH, "rb") as fh:
        section = tomllib.load(fh)["prosody"]
    assert set(section) == {f.name for f in dataclasses.fields(ProsodyOptions)}
    assert load_config().prosody == ProsodyOptions()


@pytest.mark.parametrize("bad", [{"fmin_hz": 700.0}, {"band_high_hz": 4500.0}, {"frame_ms": 10.0},
                                 {"voicing_threshold": 1.5}, {"n_mfcc": 30}])
def test_impossible_prosody_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="prosody"):
        load_config(overrides={"prosody": bad})


@pytest.mark.parametrize("sr", [8000, 16000, 44100])
@pytest.mark.parametrize("f0_hz", [110.0, 220.0, 330.0])
def test_f0_of_a_pure_tone_is_its_frequency_at_any_rate(extractor, f0_hz, sr):
    f = extractor.extract(_tone(f0_hz, sr=sr), sr=sr)
    assert f.f0_median_hz == pytest.approx(f0_hz, rel=0.02)
    assert f.f0_median_st == pytest.approx(12 * math.log2(f0_hz / 100.0), abs=0.35)
    assert f.voiced_ratio > 0.9
    assert f.f0_range_st < 0.5


def test_f0_of_a_harmonic_voice_is_its_fundamental_even_though_the_band_removes_it(extractor):
    # 120 Hz lies below the 300 Hz telephone band edge: F0 must come from the harmonics' period.
    f = extractor.extract(_voiced(120.0, sr=16000, duration_s=1.0), sr=16000)
    assert f.f0_median_hz == pytest.approx(120.0, rel=0.03)


def test_a_glide_has_the_f0_range_and_slope_it_was_made_with(extractor):
    sr = 16000
    y = librosa.chirp(fmin=150.0, fmax=300.0, sr=sr, duration=2.0, linear=False).astype(np.float32) * 0.5
    f = extractor.extract(y, sr=sr)
    # An exponential glide over one octave in 2 s: 6 st/s; 10th-90th percentiles span 80% of 12 st.
    assert f.f0_slope_st_s == pytest.approx(6.0, abs=0.6)
    assert f.f0_range_st == pytest.approx(9.6, abs=1.0)


def test_energy_is_the_rms_level_in_db_and_a_6_db_step_raises_it_by_6_db(extractor):
    sr = 16000
    quiet = extractor.extract(_tone(1000.0, sr=sr, amplitude=0.1), sr=sr)
    loud = extractor.extract(_tone(1000.0, sr=sr, amplitude=0.2), sr=sr)
    # A sine of peak 0.1 has RMS 0.0707: -23.0 dB re full-scale RMS (1 kHz is in the pass band).
    assert quiet.energy_db == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.3)
    assert loud.energy_db - quiet.energy_db == pytest.approx(20 * math.log10(2.0), abs=0.1)


def test_a_loudness_step_inside_one_window_shows_as_its_loudness_range(extractor):
    sr = 8000
    y = np.concatenate([_tone(1000.0, sr=sr, amplitude=0.05), _tone(1000.0, sr=sr, amplitude=0.2)])
    f = extractor.extract(y, sr=sr)
    assert f.loudness_range_db == pytest.approx(20 * math.log10(4.0), abs=1.0)
    # The mean level is the mean of the two halves' levels in dB.
    halves_db = [20 * math.log10(a / math.sqrt(2)) for a in (0.05, 0.2)]
    assert f.energy_db == pytest.approx(sum(halves_db) / 2, abs=0.7)


def test_syllable_rate_counts_voiced_bursts_and_pause_ratio_measures_the_gap(extractor):
    sr = 16000
    burst = _voiced(150.0, sr=sr, duration_s=0.15)
    gap = np.zeros(int(0.1 * sr), dtype=np.float32)
    second = np.concatenate([burst, gap] * 4)                  # 4 syllables per second of speech
    pause = np.zeros(int(1.0 * sr), dtype=np.float32)
    y = np.concatenate([second, second, pause, second, second])
    f = extractor.extract(y, sr=sr)
    # Rate is per second of active speech: the count of nuclei is exactly the 16 bursts.
    assert f.speaking_rate_syl_s * f.speech_s == pytest.approx(16, abs=0.5)
    assert 4.0 < f.speaking_rate_syl_s < 4.0 / 0.6
    # The 1 s pause (plus the last short gap before it, too short to count) in a 5 s span.
    assert f.pause_ratio == pytest.approx(1.0 / 4.9, abs=0.05)
    fluent = extractor.extract(np.concatenate([second] * 4), sr=sr)
    assert fluent.pause_ratio == 0.0


def test_noise_lowers_hnr_and_period_wobble_raises_jitter(extractor):
    sr = 16000
    rng = np.random.default_rng(0)
    clean = _voiced(150.0, sr=sr, duration_s=1.0)
    noisy = clean + 0.1 * rng.standard_normal(len(clean)).astype(np.float32)
    f_clean, f_noisy = extractor.extract(clean, sr=sr), extractor.extract(noisy, sr=sr)
    assert f_clean.hnr_db > f_noisy.hnr_db + 5.0
    # Frequency wobbling by +-3% every 20 ms.
    t = np.arange(sr) / sr
    inst = 150.0 * (1 + 0.03 * np.sign(np.sin(2 * np.pi * 25 * t)))
    phase = 2 * np.pi * np.cumsum(inst) / sr
    wobble = (0.3 * sum(np.sin(k * phase) / k for k in range(1, 20))).astype(np.float32)
    assert extractor.extract(wobble, sr=sr).jitter > 3 * f_clean.jitter


def test_a_brighter_voice_has_a_flatter_spectral_slope_and_higher_alpha_ratio(extractor):
    sr = 16000
    t = np.arange(sr) / sr
    dull = sum(np.sin(2 * np.pi * k * 150 * t) / k ** 2 for k in range(1, 22))
    bright = sum(np.sin(2 * np.pi * k * 150 * t) / k ** 0.5 for k in range(1, 22))
    f_dull = extractor.extract((0.3 * dull / np.abs(dull).max()).astype(np.float32), sr=sr)
    f_bright = extractor.extract((0.3 * bright / np.abs(bright).max()).astype(np.float32), sr=sr)
    assert f_bright.spectral_slope_db_khz > f_dull.spectral_slope_db_khz + 3.0
    assert f_bright.alpha_ratio_db > f_dull.alpha_ratio_db + 6.0
    assert f_bright.hammarberg_db < f_dull.hammarberg_db


def test_the_same_signal_at_8_and_16_khz_gives_nearly_the_same_vector(extractor):
    sr = 16000
    rng = np.random.default_rng(1)
    y = np.concatenate([_voiced(140.0, sr=sr, duration_s=0.4), 0.01 * rng.standard_normal(3200),
                        _voiced(180.0, sr=sr, duration_s=0.6)]).astype(np.float32)
    y8 = librosa.resample(y, orig_sr=sr, target_sr=8000, res_type="soxr_hq")
    _, v16 = extractor.vector(y, sr=sr)
    _, v8 = extractor.vector(y8, sr=8000)
    assert v16.shape == v8.shape == (len(extractor.vector_names),)
    finite = np.isfinite(v16)
    assert np.array_equal(finite, np.isfinite(v8))
    np.testing.assert_allclose(v8[finite], v16[finite], rtol=0.05, atol=0.3)


def test_silence_and_very_short_input_give_undefined_pitch_not_errors(extractor):
    for y in (np.zeros(16000, dtype=np.float32), np.zeros(10, dtype=np.float32), np.zeros(0, dtype=np.float32)):
        f, vec = extractor.vector(y, sr=16000)
        assert math.isnan(f.f0_median_hz) and f.voiced_ratio == 0.0 and f.speech_s == 0.0
        assert vec.shape == (len(extractor.vector_names),)
        d = f.as_dict()
        assert d["f0_median_hz"] is None
        json.dumps(d, allow_nan=False)   # JSON-safe


def test_as_dict_has_every_field_rounded(extractor):
    f = extractor.extract(_tone(220.0, sr=8000), sr=8000)
    d = f.as_dict()
    assert list(d) == [fl.name for fl in dataclasses.fields(ProsodyFeatures)]
    assert d["f0_median_hz"] == round(f.f0_median_hz, 2)


def test_extract_rejects_multichannel_audio_and_a_missing_rate(extractor):
    with pytest.raises(ValueError, match="mono"):
        extractor.extract(np.zeros((2, 8000), dtype=np.float32), sr=8000)
    with pytest.raises(ValueError, match="sr"):
        extractor.extract(np.zeros(8000, dtype=np.float32), sr=8000.0)


def _features(**changes) -> ProsodyFeatures:
    base = dict(duration_s=2.0, speech_s=1.5, voiced_ratio=0.7, f0_median_hz=200.0, f0_median_st=12.0,
                f0_range_st=5.0, f0_std_st=2.0, f0_slope_st_s=0.0, energy_db=-25.0, loudness_range_db=12.0,
                speaking_rate_syl_s=4.0, pause_ratio=0.1, jitter=0.01, shimmer=0.1, hnr_db=10.0,
                spectral_slope_db_khz=-3.0, alpha_ratio_db=-5.0, hammarberg_db=15.0)
    base.update(changes)
    return ProsodyFeatures(**base)


def test_speaker_baseline_needs_calm_speech_before_it_scores_anything():
    b = SpeakerBaseline(ProsodyOptions(baseline_min_speech_s=4.0))
    assert not b.ready
    b.update(_features(energy_db=-10.0), calm=False)          # agitated speech is not learnt
    b.update(_features(), calm=True)
    assert not b.ready and b.speech_s == 1.5
    assert all(v == 0.0 for v in b.zscores(_features(energy_db=0.0)).values())
    b.update(_features(), calm=True)
    b.update(_features(), calm=True)
    assert b.ready
    assert b.means()["energy_db"] == pytest.approx(-25.0)


def test_speaker_baseline_zscores_are_relative_to_the_speakers_own_calm_voice():
    b = SpeakerBaseline(ProsodyOptions())
    for i in range(10):
        b.update(_features(energy_db=-25.0 + (i % 2), f0_median_st=12.0 + 0.5 * (i % 2)), calm=True)
    z = b.zscores(_features(energy_db=-15.0, f0_median_st=18.0, speaking_rate_syl_s=4.0))
    # The spread of a nearly constant feature is floored (2 dB, 1 st), so z-scores stay meaningful.
    assert z["energy_db"] == pytest.approx((-15.0 - -24.5) / 2.0, rel=0.05)
    assert z["f0_median_st"] == pytest.approx(5.0, abs=0.5)  # clipped at zscore_clip
    assert z["speaking_rate_syl_s"] == pytest.approx(0.0, abs=1e-9)
    assert b.zscores(_features(f0_median_st=float("nan")))["f0_median_st"] == 0.0


def test_speaker_baseline_moves_slowly_once_its_memory_is_full():
    b = SpeakerBaseline(ProsodyOptions(baseline_memory_s=100.0))
    for _ in range(100):
        b.update(_features(energy_db=-30.0, speech_s=2.0), calm=True)
    b.update(_features(energy_db=-10.0, speech_s=2.0), calm=True)
    # One 2 s window moves a 100 s memory by 2% of the difference.
    assert b.means()["energy_db"] == pytest.approx(-30.0 + 0.02 * 20.0, abs=0.01)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=0, max_value=24000), sr=st.sampled_from([8000, 16000, 48000]),
       scale=st.floats(min_value=0.0, max_value=1.0), seed=st.integers(min_value=0, max_value=2**16))
def test_any_finite_audio_of_any_length_gives_a_json_safe_result(n, sr, scale, seed):
    rng = np.random.default_rng(seed)
    y = (scale * rng.uniform(-1.0, 1.0, n)).astype(np.float32)
    features, vec = ProsodyExtractor(ProsodyOptions()).vector(y, sr=sr)
    assert vec.shape == (len(ProsodyExtractor(ProsodyOptions()).vector_names),)
    assert features.duration_s == pytest.approx(n / sr)
    assert 0.0 <= features.voiced_ratio <= 1.0 and 0.0 <= features.pause_ratio <= 1.0
    json.dumps(features.as_dict(), allow_nan=False)
