"""Batch benchmark: the whole pipeline versus faster-whisper alone on the same audio, side by side.

Figures are measured in one run so machine noise hits both alike; ratios are what to quote.
"""
from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..audio import load_audio, resample
from ..batch import analyze_file
from ..config import Config


@dataclass(frozen=True)
class BenchResult:
    files: int
    audio_s: float
    load_s: float
    rounds: tuple[tuple[float, float], ...]  # (pipeline s, faster-whisper alone s), timed back to back
    stage_s: dict  # of the last round
    peak_rss_mb: float

    @property
    def pipeline_s(self) -> float:
        return float(np.median([p for p, _ in self.rounds]))

    @property
    def whisper_alone_s(self) -> float:
        return float(np.median([a for _, a in self.rounds]))

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: each round's two runs saw the same machine load."""
        return float(np.median([p / a for p, a in self.rounds]))

    def lines(self) -> list[str]:
        asr = self.stage_s.get("asr", 0.0)
        other = sum(v for k, v in self.stage_s.items() if k != "asr")
        median = " (medians)" if len(self.rounds) > 1 else ""
        lines = [
            f"calls: {self.files}, audio: {self.audio_s:.1f} s (stereo, both channels analysed)",
            f"model load + warm-up: {self.load_s:.1f} s (once per process)",
            f"pipeline{median}: {self.pipeline_s:.1f} s = {self.audio_s / self.pipeline_s:.1f}x real time, "
            f"{60 * self.files / self.pipeline_s:.1f} calls/min",
            f"faster-whisper alone (same model, same audio, its own VAD filter){median}: "
            f"{self.whisper_alone_s:.1f} s = {self.audio_s / self.whisper_alone_s:.1f}x real time",
            f"pipeline / faster-whisper alone{median}: {self.ratio:.2f}",
        ]
        if len(self.rounds) > 1:
            lines.append("rounds (pipeline s / alone s = ratio): " + "; ".join(
                f"{p:.1f} / {a:.1f} = {p / a:.2f}" for p, a in self.rounds))
        return lines + [
            "stage seconds (last round): " + ", ".join(f"{k} {v:.2f}" for k, v in self.stage_s.items()),
            f"everything beyond transcription: {other:.2f} s = {100 * other / max(asr, 1e-9):.1f}% of ASR time",
            f"peak memory (RSS, both models loaded): {self.peak_rss_mb:.0f} MB",
        ]


def whisper_alone_model(config: Config):
    """The configured Whisper model loaded by faster-whisper itself, as a user would load it, warmed up."""
    from faster_whisper import WhisperModel

    from ..asr import resolve_model_path

    o = config.asr
    model = WhisperModel(resolve_model_path(o), device="cpu", compute_type=o.compute_type, cpu_threads=o.cpu_threads)
    list(model.transcribe(np.zeros(16000, np.float32), beam_size=o.beam_size)[0])
    return model


def transcribe_alone(model, y16: np.ndarray, config: Config):
    """faster-whisper's own transcribe() with its VAD filter on one channel: (lazy segments, info)."""
    o = config.asr
    return model.transcribe(y16, beam_size=o.beam_size, temperature=list(o.temperatures), vad_filter=True,
                            word_timestamps=o.word_timestamps, condition_on_previous_text=False)


def whisper_alone(paths: Sequence[Path], config: Config, model=None) -> float:
    """faster-whisper's own transcribe() with its VAD filter on each channel, as a user would run it."""
    model = model if model is not None else whisper_alone_model(config)
    total = 0.0
    for path in paths:
        audio = load_audio(path)
        for ch in audio.samples:
            y = resample(ch, orig_sr=audio.sample_rate_hz, target_sr=16000)
            t0 = time.perf_counter()
            segments, _ = transcribe_alone(model, y, config)
            for _ in segments:  # decoding happens while iterating
                pass
            total += time.perf_counter() - t0
    return total


def run(paths: Sequence[Path], config: Config, *, rounds: int = 1) -> BenchResult:
    """``rounds`` times: the pipeline on every file, then faster-whisper alone on the same files, so a
    change in machine load between rounds moves both figures of a round alike."""
    from ..engine import Engine

    t0 = time.perf_counter()
    engine = Engine.load(config)
    load_s = time.perf_counter() - t0
    alone_model = whisper_alone_model(config)
    timed: list[tuple[float, float]] = []
    for _ in range(max(1, rounds)):
        stage: dict[str, float] = {}
        audio_s = pipeline_s = 0.0
        for path in paths:
            t0 = time.perf_counter()
            result = analyze_file(path, engine=engine)
            pipeline_s += time.perf_counter() - t0
            audio_s += result["duration_s"]
            for k, v in result["summary"]["stage_s"].items():
                stage[k] = stage.get(k, 0.0) + v
        gc.collect()
        timed.append((pipeline_s, whisper_alone(paths, config, alone_model)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(len(paths), audio_s, load_s, tuple(timed), stage, peak)
