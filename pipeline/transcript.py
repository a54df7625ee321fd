"""A call's segments (one per VAD turn) and their text, masked per speaker.

:class:`Transcript` owns the segments and each speaker's two masking streams (texts and ASR words apart:
words keep their timings). A speaker's transcript is masked as one stream, so a card number split over
two segments is still one number: earlier segments whose digits a later one continues are revised in
place, and the stored transcript never shows them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .emotion import EmotionScores
from .emotion_stream import AcousticReading
from .events import Speaker, TranscriptEvent, Word
from .masking import MaskingOptions, mask_text
from .masking_stream import StreamMasker


@dataclass
class Segment:
    """One turn of one speaker, filled in as its analyses arrive (internal; written out by ``as_json``)."""

    speaker: Speaker
    start_s: float
    end_s: float
    text: str = ""
    language: str | None = None
    sentiment: float | None = None
    flags: tuple[str, ...] = ()
    emotion: Mapping | None = None
    arousal: float | None = None
    prosody: Mapping | None = None
    words: tuple[Word, ...] = ()
    vector: Any = None       # the turn's emotion feature vector (not written out)

    def as_json(self) -> dict:
        return {"speaker": self.speaker, "start_s": round(self.start_s, 2), "end_s": round(self.end_s, 2),
                "text": self.text, "language": self.language,
                "sentiment": None if self.sentiment is None else round(self.sentiment, 3),
                "arousal": None if self.arousal is None else round(self.arousal, 3),
                "emotion": self.emotion, "prosody": self.prosody, "flags": list(self.flags),
                "words": [{"start_s": w.start_s, "end_s": w.end_s, "text": w.text, "p": w.probability}
                          for w in self.words]}


class Transcript:
    """Every segment of one call and the per-speaker masking streams."""

    def __init__(self, masking: MaskingOptions) -> None:
        self._masking = masking
        self.segments: list[Segment] = []
        self.languages: list[str] = []
        self._texts: dict[str, StreamMasker] = {}
        self._words: dict[str, StreamMasker] = {}

    def add_turn(self, speaker: Speaker, start_s: float, end_s: float, reading: AcousticReading | None) -> int:
        """A new segment (its acoustic emotion from the whole turn, when measured); returns its index."""
        seg = Segment(speaker, start_s, end_s)
        if reading is not None:
            seg.emotion = reading.emotion_json()
            seg.arousal = reading.arousal
            seg.prosody = {**reading.prosody, "z": dict(reading.z)}
            seg.vector = reading.vector
        self.segments.append(seg)
        return len(self.segments) - 1

    def set_turn_emotion(self, idx: int, scores: EmotionScores) -> None:
        seg = self.segments[idx]
        seg.emotion = {"label": scores.label, "scores": {k: round(v, 3) for k, v in scores.scores.items()},
                       "source": scores.source}
        seg.arousal = float(scores.arousal)

    def set_text(self, idx: int, res: TranscriptEvent, sentiment: float | None,
                 flags: tuple[str, ...]) -> TranscriptEvent:
        """Segment ``idx`` gets its (masked) text; returns the final transcript event."""
        seg = self.segments[idx]
        text, words = self._mask_segment(idx, seg.speaker, res)
        seg.text, seg.language, seg.sentiment, seg.flags, seg.words = text, res.language, sentiment, flags, words
        if res.language not in self.languages:
            self.languages.append(res.language)
        return TranscriptEvent(seg.speaker, seg.start_s, seg.end_s, text, res.language, True, words,
                               sentiment or 0.0, flags, seg.emotion)

    def preview(self, event: TranscriptEvent) -> TranscriptEvent:
        """An interim hypothesis, masked against what its speaker said before (never stored)."""
        masker = self._texts.get(event.speaker)
        text = masker.preview([event.text])[0] if masker is not None else mask_text(event.text, self._masking)
        return dataclasses.replace(event, final=False, text=text, words=())

    def finish(self) -> None:
        """End of the call: digits held at a speaker's last segment are resolved."""
        for speaker, texts in self._texts.items():
            self._apply_revisions(texts.finish(), self._words[speaker].finish())

    def as_json(self) -> list[dict]:
        return [s.as_json() for s in sorted(self.segments, key=lambda s: (s.start_s, s.speaker))]

    def _maskers(self, speaker: str) -> tuple[StreamMasker, StreamMasker]:
        if speaker not in self._texts:
            self._texts[speaker] = StreamMasker(self._masking)
            self._words[speaker] = StreamMasker(self._masking)
        return self._texts[speaker], self._words[speaker]

    def _mask_segment(self, idx: int, speaker: str, res: TranscriptEvent) -> tuple[str, tuple[Word, ...]]:
        texts, words = self._maskers(speaker)
        text_rev, word_rev = texts.push(idx, [res.text]), words.push(idx, [w.text for w in res.words])
        self._apply_revisions(text_rev, word_rev, skip=idx)
        masked_words = word_rev.get(idx, [w.text for w in res.words])
        return text_rev[idx][0], tuple(dataclasses.replace(w, text=m) for w, m in zip(res.words, masked_words))

    def _apply_revisions(self, texts: Mapping, words: Mapping, *, skip: int | None = None) -> None:
        for idx, parts in texts.items():
            if idx != skip:
                self.segments[idx].text = parts[0]
        for idx, parts in words.items():
            if idx != skip:
                seg = self.segments[idx]
                seg.words = tuple(dataclasses.replace(w, text=m) for w, m in zip(seg.words, parts))
