"""``[asr] recover_turn_s``: a turn that a packed window came back without, or with far fewer words than its
length holds, is transcribed alone and the fuller text kept; nothing else is decoded twice."""
import numpy as np
import pytest

from pipeline.asr import AsrChunk, AsrOptions, Transcriber, WindowResult
from pipeline.events import TranscriptEvent


class _Model:
    class model:
        is_multilingual = True


def _chunk(speaker: str, start_s: float, dur_s: float) -> AsrChunk:
    return AsrChunk(speaker, start_s, np.zeros(int(dur_s * 16000), np.float32))


def _event(chunk: AsrChunk, text: str) -> TranscriptEvent:
    return TranscriptEvent(speaker=chunk.speaker, start_s=round(chunk.start_s, 3),
                           end_s=round(chunk.start_s + chunk.audio.size / 16000, 3), text=text,
                           language="en", final=True)


class _DecodesAlone(Transcriber):
    """Stands in for Whisper on single-turn windows: every turn decoded alone has text."""

    def __init__(self, options: AsrOptions, text: str = "heard alone in {language}") -> None:
        super().__init__(_Model(), options, "x")
        self.alone: list[AsrChunk] = []
        self.text = text

    def transcribe_window(self, chunks, *, language=None, prior=None):
        assert len(chunks) == 1, "a recovered turn is decoded in a window of its own"
        self.alone.append(chunks[0])
        return WindowResult([_event(chunks[0], self.text.format(language=language))], language, {})


AGENT, CALLER, CALLER_SHORT = _chunk("agent", 0.0, 2.0), _chunk("caller", 3.0, 2.0), _chunk("caller", 6.0, 0.5)
PACKED = (AGENT, CALLER, CALLER_SHORT)
# Whisper heard the agent's turn of the packed window and skipped both caller turns
HEARD_AGENT_ONLY = WindowResult([_event(AGENT, "good morning how can I help you")], "en", {"en": 1.0},
                                (None, None, None))


def test_a_dropped_turn_long_enough_is_transcribed_alone_in_the_windows_language():
    tr = _DecodesAlone(AsrOptions(recover_turn_s=1.0))
    result = tr._recover_dropped(HEARD_AGENT_ONLY, PACKED, "en", {"en": 1.0})
    assert tr.alone == [CALLER]  # the 0.5 s turn is below recover_turn_s: left as it came
    assert [(e.speaker, e.start_s, e.text) for e in result.events] == [
        ("agent", 0.0, "good morning how can I help you"), ("caller", 3.0, "heard alone in en")]
    assert result.language == "en" and result.encodings == (None, None, None)  # the window's own


def test_by_default_no_turn_is_decoded_twice():
    tr = _DecodesAlone(AsrOptions())
    assert tr._recover_dropped(HEARD_AGENT_ONLY, PACKED, "en", None) is HEARD_AGENT_ONLY
    assert tr.alone == []


def test_a_window_of_one_turn_or_with_every_turn_heard_is_left_alone():
    tr = _DecodesAlone(AsrOptions(recover_turn_s=1.0))
    alone = WindowResult([], "en", {})
    assert tr._recover_dropped(alone, (CALLER,), "en", None) is alone
    heard = WindowResult([_event(AGENT, "good morning how can I help you"),
                          _event(CALLER, "my card was declined this morning")], "en", {})
    assert tr._recover_dropped(heard, (AGENT, CALLER), "en", None) is heard
    assert tr.alone == []


def test_a_turn_cut_short_is_decoded_again_and_the_fuller_text_kept():
    # 2 words in 2 s is under a third of what 2 s holds (5 words a second + slack): Whisper stopped early
    cut_short = WindowResult([_event(AGENT, "good morning how can I help you"), _event(CALLER, "my card")], "en", {})
    fuller = _DecodesAlone(AsrOptions(recover_turn_s=1.0), text="my card was declined this morning")
    result = fuller._recover_dropped(cut_short, (AGENT, CALLER), "en", None)
    assert fuller.alone == [CALLER]
    assert [e.text for e in result.events] == ["good morning how can I help you", "my card was declined this morning"]
    # decoded alone it is no fuller: the window's own text stays
    emptier = _DecodesAlone(AsrOptions(recover_turn_s=1.0), text="card")
    assert [e.text for e in emptier._recover_dropped(cut_short, (AGENT, CALLER), "en", None).events] == [
        "good morning how can I help you", "my card"]


def test_a_negative_length_is_refused():
    with pytest.raises(ValueError, match="recover_turn_s"):
        AsrOptions(recover_turn_s=-1.0)
