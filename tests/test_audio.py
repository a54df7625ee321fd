"""Audio in: decoding, validation, explicit resampling and G.711 codecs."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audio import (AudioOptions, StreamResampler, decode_alaw, decode_mulaw, encode_alaw,
                            encode_mulaw, iter_blocks, load_audio, probe, resample)
from pipeline.errors import AudioFormatError


def _snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = ref.astype(float) - test.astype(float)
    return 10 * np.log10(np.sum(ref.astype(float) ** 2) / np.sum(noise ** 2))


@pytest.mark.parametrize("encode, decode", [(encode_mulaw, decode_mulaw), (encode_alaw, decode_alaw)])
def test_g711_round_trip_of_speech_level_tone_keeps_about_37_db_snr(encode, decode):
    t = np.arange(8000) / 8000
    x = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    y = decode(encode(x))
    assert y.dtype == np.int16 and y.shape == x.shape
    assert _snr_db(x, y) > 33


@pytest.mark.parametrize("encode, decode", [(encode_mulaw, decode_mulaw), (encode_alaw, decode_alaw)])
def test_g711_decoding_then_encoding_every_code_is_the_identity_on_levels(encode, decode):
    codes = bytes(range(256))
    levels = decode(codes)
    assert np.array_equal(decode(encode(levels)), levels)


def test_mulaw_matches_the_itu_reference_for_known_codes():
    # G.711 mu-law: 0xFF and 0x7F are the two zeros, 0x80 is the largest positive, 0x00 the largest negative
    assert decode_mulaw(bytes([0xFF, 0x7F, 0x80, 0x00])).tolist() == [0, 0, 32124, -32124]
    assert decode_alaw(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_decode_as_g711_without_error(data):
    assert decode_mulaw(data).size == len(data)
    assert decode_alaw(data).size == len(data)


def test_resampling_is_explicit_and_keeps_a_tone_at_its_frequency():
    sr = 8000
    y = np.sin(2 * np.pi * 300 * np.arange(sr) / sr).astype(np.float32)
    z = resample(y, orig_sr=sr, target_sr=16000)
    assert z.size == 16000
    spectrum = np.abs(np.fft.rfft(z))
    assert abs(np.argmax(spectrum) * 16000 / z.size - 300) < 2


@pytest.mark.parametrize("block", [160, 320, 1234, 16000])
def test_stream_resampler_output_does_not_depend_on_block_size(block):
    rng = np.random.default_rng(1)
    y = rng.normal(0, 0.1, 24000).astype(np.float32)
    whole = StreamResampler(orig_sr=8000, target_sr=16000)
    ref = np.concatenate([whole.process(y[:8000]), whole.process(y[8000:]), whole.process(y[:0], last=True)])
    parts = StreamResampler(orig_sr=8000, target_sr=16000)
    out = [parts.process(y[i:i + block]) for i in range(0, y.size, block)]
    out.append(parts.process(y[:0], last=True))
    got = np.concatenate(out)
    np.testing.assert_array_equal(got, ref)  # bit-identical: a last bit can flip a VAD decision


def test_stereo_wav_is_read_as_channels_by_samples(tmp_path):
    path = tmp_path / "call.wav"
    data = np.stack([np.full(8000, 0.25), np.full(8000, -0.5)], axis=1)
    sf.write(path, data, 8000, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.samples.shape == (2, 8000)
    assert audio.sample_rate_hz == 8000
    assert audio.samples[0].mean() == pytest.approx(0.25, abs=1e-3)
    assert audio.samples[1].mean() == pytest.approx(-0.5, abs=1e-3)


def test_blocks_cover_the_file_exactly(tmp_path):
    path = tmp_path / "mono.flac"
    sf.write(path, np.zeros(16000 * 3 + 17), 16000)
    blocks = list(iter_blocks(path, block_s=1.0))
    assert sum(b.shape[1] for b in blocks) == 16000 * 3 + 17
    assert all(b.shape[0] == 1 for b in blocks)


@pytest.mark.parametrize("maker, message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"this is a text file, not audio" * 10), "not a readable audio file"),
    (lambda p: sf.write(p, np.zeros((800, 6)), 8000), "6 channels"),
])
def test_unusable_files_raise_a_clear_audio_format_error(tmp_path, maker, message):
    path = tmp_path / "bad.wav"
    maker(path)
    with pytest.raises(AudioFormatError, match=message):
        probe(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(AudioFormatError, match="not found"):
        probe(tmp_path / "nope.wav")


def test_overlong_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 5), 8000)
    with pytest.raises(AudioFormatError, match="over the limit"):
        probe(path, AudioOptions(max_duration_s=4.0))
