"""``[asr] encoder_chunks_s``: which encoder input length a window gets, and what the option accepts."""
import numpy as np
import pytest

from pipeline.asr import AsrOptions, Transcriber


class _Model:
    class model:
        is_multilingual = True


def _frames(options: AsrOptions, content_s: float) -> int:
    tr = Transcriber(_Model(), options, "x")
    return tr._encoder_frames(np.zeros((80, int(content_s * 100)), np.float32))


def test_default_pads_every_window_to_30_s():
    assert [_frames(AsrOptions(), s) for s in (1.0, 8.0, 24.0)] == [3000, 3000, 3000]
    assert Transcriber(_Model(), AsrOptions(), "x").encoder_id == "base/pad30"


def test_the_smallest_listed_length_that_holds_content_plus_tail_is_used():
    options = AsrOptions(encoder_chunks_s=(10.0, 15.0, 20.0))
    # 8.9 s + 1 s tail fits 10 s; 9.5 s + 1 s does not; 24 s fits none: 30 s as trained
    assert [_frames(options, s) for s in (3.0, 8.9, 9.5, 24.0)] == [1000, 1000, 1500, 3000]
    assert Transcriber(_Model(), options, "x").encoder_id == "base/pad10-15-20-30"


@pytest.mark.parametrize("bad", [(), (0.5,), (31.0,), (10.0, 40.0)])
def test_lengths_outside_one_whisper_window_are_refused(bad):
    with pytest.raises(ValueError, match="encoder_chunks_s"):
        AsrOptions(encoder_chunks_s=bad)
