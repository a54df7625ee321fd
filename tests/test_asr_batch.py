"""Batched transcription (``Transcriber.transcribe_windows``, the live ASR shared across calls) gives what
one window at a time gives (``transcribe_window``), on real speech with the embedded base model: the same
text, language and words for greedy decoding, and the same pooled turn encodings that the turn emotion heads
read, within float rounding of batched matrix products (measured: 0.0 on this machine; bounded below)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.asr import AsrChunk, AsrOptions, Transcriber, WindowRequest, WindowResult
from pipeline.audio import load_audio, resample

pytestmark = pytest.mark.slow

# Largest difference allowed between a turn's pooled encoder output batched and alone (values are O(1)),
# and between the language probabilities.
MAX_ENCODING_DIFF = 1e-3
MAX_LANGUAGE_PROB_DIFF = 1e-3


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber.load(AsrOptions())


def _mono16k(path, seconds: float | None = None):
    audio = load_audio(path)
    y = resample(audio.samples.mean(axis=0), orig_sr=audio.sample_rate_hz, target_sr=16000)
    return y if seconds is None else y[: int(seconds * 16000)]


@pytest.fixture(scope="module")
def requests_(data_dir):
    """Windows as live calls hand them out: the shared clips (English, Mandarin, 8 kHz telephone; one long
    enough that the decoder goes past its first pass) and two turns of the escalating sample packed."""
    asr = data_dir / "asr"
    out = [WindowRequest((AsrChunk("caller", 0.0, _mono16k(asr / name, 24.0)),)) for name in
           ("jfk.flac", "aishell-BAC009S0724W0121.wav", "librispeech-1995-1837-0001.wav",
            "OSR_us_000_0034_8k.wav")]
    sample = Path(__file__).resolve().parents[1] / "samples" / "escalating_en.wav"
    if sample.exists():
        a = load_audio(sample)
        caller = resample(a.samples[1], orig_sr=a.sample_rate_hz, target_sr=16000)
        agent = resample(a.samples[0], orig_sr=a.sample_rate_hz, target_sr=16000)
        out.append(WindowRequest((AsrChunk("caller", 3.0, caller[3 * 16000:8 * 16000]),
                                  AsrChunk("agent", 9.0, agent[9 * 16000:12 * 16000])), prior={"en": 0.9, "zh": 0.1}))
    # a forced language and a window too short to transcribe ride in the same batch
    out.append(WindowRequest((AsrChunk("caller", 0.0, _mono16k(asr / "jfk.flac", 4.0)),), language="en"))
    out.append(WindowRequest((AsrChunk("caller", 0.0, np.zeros(800, np.float32)),)))
    return out


def test_batched_windows_give_the_one_window_text_words_language_and_encodings(transcriber, requests_):
    alone = [transcriber.transcribe_window(list(r.chunks), language=r.language, prior=r.prior) for r in requests_]
    batched = transcriber.transcribe_windows(requests_)
    assert len(batched) == len(requests_)
    for one, many in zip(alone, batched):
        assert isinstance(many, WindowResult), many
        assert [(e.speaker, e.start_s, e.text) for e in many.events] == [(e.speaker, e.start_s, e.text)
                                                                         for e in one.events]
        assert [[(w.text, w.start_s) for w in e.words] for e in many.events] == \
            [[(w.text, w.start_s) for w in e.words] for e in one.events]
        assert many.language == one.language
        for lang, p in one.language_probs.items():
            assert abs(many.language_probs[lang] - p) <= MAX_LANGUAGE_PROB_DIFF
        assert len(many.encodings) == len(one.encodings)
        for x, y in zip(one.encodings, many.encodings):
            assert (x is None) == (y is None)
            if x is not None:
                assert float(np.max(np.abs(x - y))) <= MAX_ENCODING_DIFF
    texts = " ".join(e.text for r in batched for e in r.events).lower()
    assert "fellow americans" in texts and "广州" in texts  # the batch held real English and Mandarin speech


def test_a_window_of_a_batch_that_fails_is_that_window_s_outcome_alone(transcriber, requests_):
    broken = WindowRequest((AsrChunk("caller", 0.0, np.array(["not audio"])),))
    out = transcriber.transcribe_windows([requests_[0], broken, requests_[1]])
    assert isinstance(out[1], Exception)
    assert isinstance(out[0], WindowResult) and "americans" in " ".join(e.text for e in out[0].events).lower()
    assert isinstance(out[2], WindowResult) and out[2].language == "zh"


def test_the_batched_path_guards_every_turn_against_loops_and_overlong_text(transcriber, requests_, monkeypatch):
    import pipeline.asr as asr

    seen = []
    real = asr.guard_units

    def spy(units, language, duration_s, options):
        seen.append((language, round(duration_s, 2)))
        return real(units, language, duration_s, options)

    monkeypatch.setattr(asr, "guard_units", spy)
    out = transcriber.transcribe_windows(requests_[:2])
    turns = [(r.language, round(c.audio.size / 16000, 2)) for r, req in zip(out, requests_[:2]) for c in req.chunks]
    assert sorted(seen) == sorted(turns)
