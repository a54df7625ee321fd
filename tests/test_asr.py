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


def test_real_clips_are_transcribed_within_error_bounds(transcriber, manifest, data_dir):
    """WER (English) / CER (Mandarin) per clip, the 8 kHz telephone clip included."""
    bounds = {"en": 0.35, "zh": 0.35}
    for row in manifest:
        y = _mono16k(data_dir / "asr" / row["file"])
        chunks = [AsrChunk("caller", s / 16000, y[s:s + 16000 * 24]) for s in range(0, y.size, 16000 * 24)]
        events = []
        for c in chunks:
            events.extend(transcriber.transcribe_chunks([c]))
        hyp = "".join(e.text for e in events)
        lang = row["language"]
        if lang == "zh":
            ref_u, hyp_u = _chars(row["reference_text"]), _chars(hyp)
        else:
            ref_u, hyp_u = _words(row["reference_text"]), _words(hyp)
        err = _edit_distance(ref_u, hyp_u) / max(1, len(ref_u))
        print(f"{row['file']}: {'CER' if lang == 'zh' else 'WER'} {err:.3f} ({row['sample_rate']} Hz) -> {hyp!r}")
        assert {e.language for e in events} == {lang}, f"{row['file']}: language detected as {events}"
        assert err <= bounds[lang], f"{row['file']}: error {err:.2f} -> {hyp!r}"


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
