"""Transcription on real speech with the embedded offline models (real data, real models)."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import zhconv

from pipeline.asr import AsrChunk, AsrOptions, Transcriber, resolve_model_path
from pipeline.audio import load_audio, resample

pytestmark = pytest.mark.slow


def _edit_distance(ref, hyp):
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def _words(text):
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def _chars(text):
    return [c for c in zhconv.convert(text, "zh-cn") if "\u4e00" <= c <= "\u9fff"]


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber.load(AsrOptions())


@pytest.fixture(scope="module")
def manifest(data_dir):
    with open(data_dir / "asr" / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _mono16k(path):
    audio = load_audio(path)
    return resample(audio.samples.mean(axis=0), orig_sr=audio.sample_rate_hz, target_sr=16000)


def test_embedded_base_model_is_assembled_and_checksum_verified():
    path = resolve_model_path(AsrOptions())
    from pathlib import Path

    assert (Path(path) / "model.bin").stat().st_size == 145_217_532
    assert (Path(path) / "ok").read_text().strip().startswith("d01c3014")


# The pipeline may be at most this much worse than faster-whisper run directly on the same clip, model and
# machine (absolute error rate): one character of the 12-character Mandarin clip is 0.083, one word of the
# 22-word JFK clip 0.045. Greedy int8 decoding differs between CPUs and library builds, so a fixed bound
# measured on one machine fails on another (issue 15); a bound relative to direct decoding does not.
MARGIN = {"zh": 0.10, "en": 0.05}


@pytest.fixture(scope="module")
def direct():
    from pipeline.evaluate.asr import DirectWhisper

    return DirectWhisper(AsrOptions())


def _error(ref, hyp, lang):
    if lang == "zh":
        ref_u, hyp_u = _chars(ref), _chars(hyp)
    else:
        ref_u, hyp_u = _words(ref), _words(hyp)
    return _edit_distance(ref_u, hyp_u) / max(1, len(ref_u))


def _pipeline_text(transcriber, y):
    """The clip as the pipeline's turns would be: windows of at most 24 s, each transcribed on its own."""
    events = []
    for s in range(0, y.size, 16000 * 24):
        events.extend(transcriber.transcribe_chunks([AsrChunk("caller", s / 16000, y[s:s + 16000 * 24])]))
    return "".join(e.text for e in events), events


def _check(row, pipeline_hyp, direct_hyp):
    """(passes, message): the pipeline's error is no worse than direct decoding's plus the margin."""
    lang = row["language"]
    err, ref_err = _error(row["reference_text"], pipeline_hyp, lang), _error(row["reference_text"], direct_hyp, lang)
    name = "CER" if lang == "zh" else "WER"
    msg = (f"{row['file']} ({row['sample_rate']} Hz): pipeline {name} {err:.3f} {pipeline_hyp!r}; faster-whisper "
           f"direct {ref_err:.3f} {direct_hyp!r}; bound {ref_err:.3f} + {MARGIN[lang]}")
    return err <= ref_err + MARGIN[lang], msg


def test_real_clips_are_transcribed_no_worse_than_faster_whisper_direct(transcriber, direct, manifest, data_dir):
    """WER (English) / CER (Mandarin) per clip, the 8 kHz telephone clip included, against faster-whisper
    run directly (its own decoding and language detection) on the same clip in this test."""
    failures = []
    for row in manifest:
        path = data_dir / "asr" / row["file"]
        hyp, events = _pipeline_text(transcriber, _mono16k(path))
        ok, msg = _check(row, hyp, direct.transcribe(str(path))["text"])
        print(msg)
        assert {e.language for e in events} == {row["language"]}, f"{row['file']}: language detected as {events}"
        if not ok:
            failures.append(msg)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("clip", ["aishell-BAC009S0724W0121.wav", "jfk.flac"])
def test_the_bound_fails_when_the_pipeline_clips_the_onset(transcriber, direct, manifest, data_dir, clip):
    """A test of the test: a pipeline that lost the first second of speech (a VAD cutting onsets) must
    fail the bound above, so the bound is tight enough to catch broken ASR."""
    row = next(r for r in manifest if r["file"] == clip)
    path = data_dir / "asr" / clip
    y = _mono16k(path)
    onset = int(np.argmax(np.abs(y) > 0.1 * np.abs(y).max()))   # first loud sample: the speech onset
    hyp, _ = _pipeline_text(transcriber, y[onset + 16000:])
    ok, msg = _check(row, hyp, direct.transcribe(str(path))["text"])
    print("onset clipped by 1 s:", msg)
    assert not ok, f"the bound did not catch a clipped onset: {msg}"


def test_mandarin_comes_out_in_simplified_characters(transcriber, data_dir):
    y = _mono16k(data_dir / "asr" / "aishell-BAC009S0724W0121.wav")
    text = "".join(e.text for e in transcriber.transcribe(y))
    assert text and zhconv.convert(text, "zh-cn") == text


def test_language_is_chosen_among_the_configured_languages_only(data_dir):
    only_en = Transcriber.load(AsrOptions(languages=("en",), language="auto"))
    y = _mono16k(data_dir / "asr" / "aishell-BAC009S0724W0121.wav")
    assert {e.language for e in only_en.transcribe(y)} <= {"en"}


def test_silence_and_noise_produce_no_text(transcriber):
    rng = np.random.default_rng(0)
    assert transcriber.transcribe(np.zeros(16000 * 8, np.float32)) == []
    assert transcriber.transcribe(rng.normal(0, 0.005, 16000 * 8).astype(np.float32)) == []


def test_packed_turns_keep_their_own_times_and_words(transcriber, data_dir):
    y = _mono16k(data_dir / "asr" / "librispeech-1995-1837-0001.wav")
    half = y.size // 2
    events = transcriber.transcribe_chunks([AsrChunk("agent", 3.0, y[:half]), AsrChunk("caller", 40.0, y[half:])])
    assert [e.speaker for e in events] == ["agent", "caller"]
    assert events[0].start_s == 3.0 and events[1].start_s == 40.0
    for e in events:
        assert e.words and all(e.start_s - 0.5 <= w.start_s <= e.end_s + 0.5 for w in e.words)
