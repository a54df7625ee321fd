"""Voice activity: Silero VAD streamed per channel with endpointing."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import resample
from pipeline.vad import VadModel, VadOptions


@pytest.fixture(scope="module")
def vad():
    return VadModel.load(VadOptions())


@pytest.fixture(scope="module")
def speech_16k(data_dir):
    y, sr = sf.read(data_dir / "asr" / "librispeech-1995-1837-0001.wav", dtype="float32")
    return resample(y, orig_sr=sr, target_sr=16000)


def _run(stream, y, block):
    flags, turns = [], []
    for i in range(0, y.size, block):
        f, t = stream.process(y[i:i + block])
        flags.append(f)
        turns.extend(t)
    turns.extend(stream.flush())
    return np.concatenate(flags), turns


def test_silence_and_hum_give_no_turns(vad):
    t = np.arange(16000 * 5) / 16000
    hum = (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    for y in (np.zeros(16000 * 5, np.float32), hum):
        flags, turns = _run(vad.stream("caller"), y, 4000)
        assert turns == [] and not flags.any()


def test_speech_between_silences_is_one_turn_covering_it(vad, speech_16k):
    pad = np.zeros(16000 * 2, np.float32)
    y = np.concatenate([pad, speech_16k, pad])
    _, turns = _run(vad.stream("agent"), y, 3200)
    assert turns, "no speech found in a LibriSpeech sentence"
    assert turns[0].start_s == pytest.approx(2.0, abs=0.5)
    assert turns[-1].end_s == pytest.approx(2.0 + speech_16k.size / 16000, abs=0.8)
    assert all(t.speaker == "agent" for t in turns)


def test_vad_results_do_not_depend_on_block_size(vad, speech_16k):
    a_flags, a_turns = _run(vad.stream("caller"), speech_16k, 512 * 7 + 13)
    b_flags, b_turns = _run(vad.stream("caller"), speech_16k, 160)
    assert a_turns == b_turns
    np.testing.assert_array_equal(a_flags, b_flags[: a_flags.size])


def test_long_monologue_is_cut_so_its_text_arrives_in_time(vad, speech_16k):
    y = np.concatenate([speech_16k] * 3)
    _, turns = _run(vad.stream("caller"), y, 16000)
    assert max(t.end_s - t.start_s for t in turns) <= VadOptions().max_turn_s + 1.0


def test_two_streams_do_not_share_state(vad, speech_16k):
    s1, s2 = vad.stream("agent"), vad.stream("caller")
    f1, _ = s1.process(speech_16k)
    s2.process(np.zeros(16000, np.float32))
    f1b, _ = vad.stream("agent").process(speech_16k)
    np.testing.assert_array_equal(f1, f1b)
