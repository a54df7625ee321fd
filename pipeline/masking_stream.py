"""Masking a call's transcript as one text stream, across the segments ASR cuts it into.

A card number read over a pause arrives in two segments ("4111 1111" + "1111 1111"), and a "PIN is" may
end one segment with the digits in the next: masking each segment alone would keep both halves.
``StreamMasker`` (one per speaker and call: it holds that stream's state) masks each new segment with
the earlier ones its masking may depend on, holds a digit run still open at the end (``HELD``) until
the next segment says whether it continues, and reports the earlier segments whose masking changed.
The masking itself is :mod:`pipeline.masking`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from .masking import MaskingOptions, blank_spans, mask_piece, mask_spans
from .masking_digits import digit_groups, is_number_gap

HELD = "[…]"  # digits at the end of a segment that the next segment may continue: shown once resolved


@dataclass
class _StreamSegment:
    key: Hashable
    parts: tuple[str, ...]
    emitted: tuple[str, ...] | None = None
    open_tail: bool = False  # part of the digit run open at the stream's end when last masked


def _joins_without_space(left: str, right: str) -> bool:
    # ASR segments carry their own leading space (" 1111"), Mandarin none; only two words that would
    # run together ("four" + "one") need one put between them.
    return not (left[-1:].isascii() and left[-1:].isalpha() and right[:1].isascii() and right[:1].isalpha())


class StreamMasker:
    """Masks one speaker's transcript as one text stream, across the segments ASR cuts it into.

    Each segment is masked together with the segments before it that its masking may depend on: the
    ones holding a digit run still open at the stream's end (a card number "4111 1111" + "1111 1111"
    read over a pause), and the last one (a "PIN is" before the digits). A run still open at the end of
    the newest segment is shown as ``HELD`` until the next segment (or :meth:`finish`) says whether it
    continues, so the live feed shows at most ``hold_min_digits - 1`` digits of a split number, and
    the stored transcript none. :meth:`push` returns the masked parts of the new segment and of every
    earlier segment whose masking changed (the caller replaces what it stored for them).
    """

    def __init__(self, options: MaskingOptions, *, max_segments: int = 8, hold_min_digits: int = 3) -> None:
        self.options = options
        self.max_segments = max(1, max_segments)
        self.hold_min_digits = max(1, hold_min_digits)
        self._window: list[_StreamSegment] = []

    def push(self, key: Hashable, parts: Sequence[str]) -> dict[Hashable, list[str]]:
        """Add a finished segment (its text as one part, or its ASR words). Returns ``{key: masked
        parts}`` for this segment and for each earlier one that needs revising."""
        parts = tuple(parts)
        if not all(isinstance(p, str) for p in parts):
            raise TypeError("StreamMasker.push() needs a sequence of str")
        self._window.append(_StreamSegment(key, parts))
        return self._remask(final=False)

    def preview(self, parts: Sequence[str]) -> list[str]:
        """Masked parts of a segment still being spoken (an interim transcript), in the stream's
        context; nothing is kept."""
        probe = _StreamSegment(object(), tuple(parts))
        masked = self._mask_window(self._window + [probe], final=False)
        return list(masked[-1])

    def finish(self) -> dict[Hashable, list[str]]:
        """The stream has ended: resolve held digits. Returns revisions like :meth:`push`."""
        revised = self._remask(final=True)
        self._window.clear()
        return revised

    # --- internals -------------------------------------------------------------------------------

    def _remask(self, *, final: bool) -> dict[Hashable, list[str]]:
        masked = self._mask_window(self._window, final=final)
        revised: dict[Hashable, list[str]] = {}
        last = len(self._window) - 1
        for i, (seg, parts) in enumerate(zip(self._window, masked)):
            # Only the new segment and those still holding digits are (re)decided; the others are
            # context, and what was shown for them stays (it was masked with at least this context).
            held = seg.emitted is not None and HELD in "".join(seg.emitted)
            if (i == last and not final) or held or seg.open_tail:
                if seg.emitted != parts:
                    revised[seg.key] = list(parts)
                seg.emitted = parts
        if not final:
            joined, _, seg_starts = self._joined(self._window)
            run = self._open_run(joined)
            ends = seg_starts[1:] + [len(joined) + 1]
            for seg, start, end in zip(self._window, seg_starts, ends):
                seg.open_tail = run is not None and end > run[0]
            self._trim()
        return revised

    def _joined(self, window: list[_StreamSegment]) -> tuple[str, list[list[tuple[int, int]]], list[int]]:
        pieces: list[str] = []
        bounds: list[list[tuple[int, int]]] = []
        seg_starts: list[int] = []
        pos = 0
        for seg in window:
            text = "".join(seg.parts)
            if pieces and text and not _joins_without_space(pieces[-1], text):
                pieces.append(" ")
                pos += 1
            seg_starts.append(pos)
            spans = []
            for part in seg.parts:
                spans.append((pos, pos + len(part)))
                pos += len(part)
            if text:
                pieces.append(text)
            bounds.append(spans)
        return "".join(pieces), bounds, seg_starts

    def _open_run(self, joined: str) -> tuple[int, int, int] | None:
        """(start, end, digits) of the digit run at the end of the stream, if nothing but a number's
        gap follows it (the next segment may continue it)."""
        runs = digit_groups(joined, self.options.spoken_digits)
        if not runs:
            return None
        run = runs[-1]
        if not is_number_gap(joined[run[-1].end:]):
            return None
        return run[0].start, run[-1].end, sum(len(g.digits) for g in run)

    def _mask_window(self, window: list[_StreamSegment], *, final: bool) -> list[tuple[str, ...]]:
        joined, bounds, _ = self._joined(window)
        spans = mask_spans(joined, self.options)
        if not final and self.options.enabled:
            run = self._open_run(joined)
            if run is not None and run[2] >= self.hold_min_digits:
                start, end, _ = run
                covered = sum(min(e, end) - max(s, start) for s, e, _ in spans if s < end and e > start)
                digits_left = any(ch.isdecimal() or ch.isalpha() for ch in blank_spans(joined, spans)[start:end])
                if covered < end - start and digits_left:
                    # hold the whole open run: whatever it turns out to be, it is not shown yet
                    hold_start = min([start] + [s for s, e, _ in spans if s < end and e > start])
                    spans = [sp for sp in spans if sp[1] <= hold_start or sp[0] >= end] + [(hold_start, end, HELD)]
                    spans.sort()
        out: list[tuple[str, ...]] = []
        for seg_bounds in bounds:
            out.append(tuple(mask_piece(joined, a, b, spans) for a, b in seg_bounds))
        return out

    def _trim(self) -> None:
        """Keep the segments the next one's masking may depend on: from the one where the open digit
        run starts (if any), else the last one only; never more than ``max_segments``."""
        joined, _, seg_starts = self._joined(self._window)
        keep_from = len(self._window) - 1
        run = self._open_run(joined)
        if run is not None:
            # the segment where the open run starts, and the one before it as its context
            first = max(i for i, start in enumerate(seg_starts) if start <= run[0])
            keep_from = min(keep_from, max(0, first - 1))
        keep_from = max(keep_from, len(self._window) - self.max_segments)
        del self._window[:keep_from]
