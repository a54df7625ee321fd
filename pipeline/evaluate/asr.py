"""``callpulse evaluate asr``: transcripts against reference text, pipeline vs faster-whisper directly.

* ``pipeline``: the batch path (``pipeline.batch.analyze_file`` with the configured engine: explicit
  resampling, per-channel VAD, turn packing, language ID restricted to the configured languages,
  Simplified output, masking); the hypothesis is every transcript segment in time order.
* ``direct``: ``faster_whisper.WhisperModel`` on the same model folder, compute type, threads and beam
  size, fed by faster-whisper's own decoder (``decode_audio``: downmix, 16 kHz) with its defaults
  otherwise (99-language detection, no VAD, default temperature fallback).

The difference between the two is the pipeline's own effect. WER for English, CER for Mandarin, after
the normalisation documented in :mod:`.metrics`; pooled per language (errors summed over clips, divided
by the summed reference length) and per clip.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zhconv

from ..errors import EvaluationError
from . import report
from .manifests import default_data_dir, read_manifest
from .metrics import EditCounts, error_counts, error_rate_name, pooled
from .runner import Item, RunOptions, fingerprint, run_items

log = logging.getLogger("pipeline.evaluate.asr")

SYSTEMS = ("pipeline", "direct")


@dataclass(frozen=True)
class AsrEvalOptions:
    """What ``evaluate asr`` scores."""

    manifest: str = ""        # "" = $CALLPULSE_DATA/asr/manifest.csv
    root: str = ""
    compare_direct: bool = True
    limit: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("limit must be >= 0")


def manifest_path(options: AsrEvalOptions) -> Path:
    return Path(options.manifest) if options.manifest else default_data_dir() / "asr" / "manifest.csv"


class DirectWhisper:
    """faster-whisper on its own, with the pipeline's model, compute type, threads and beam size."""

    def __init__(self, asr_options) -> None:
        from faster_whisper import WhisperModel

        from ..asr import resolve_model_path

        self.options = asr_options
        self.model_path = resolve_model_path(asr_options)
        self._model = WhisperModel(self.model_path, device="cpu", compute_type=asr_options.compute_type,
                                   cpu_threads=asr_options.cpu_threads, local_files_only=True)

    def transcribe(self, path: str) -> dict[str, Any]:
        from faster_whisper import decode_audio

        audio = decode_audio(path, sampling_rate=16000)
        # transcribe() is lazy: decoding happens while the generator is consumed, here, in the worker.
        segments, info = self._model.transcribe(audio, beam_size=self.options.beam_size)
        text = " ".join(s.text.strip() for s in segments)
        return {"text": text, "language": info.language}


def traditional_chars(text: str) -> int:
    """Characters that Traditional->Simplified conversion would change (0 = written in Simplified)."""
    return sum(1 for ch in text if zhconv.convert(ch, "zh-hans") != ch)


def transcribe_clip(item: Item, *, engine, config, direct: DirectWhisper | None) -> dict[str, Any]:
    """Both transcripts of one clip (the cached unit of work). Timings are informative only."""
    from ..audio import probe
    from ..batch import analyze_file

    path = item.payload["path"]
    t0 = time.perf_counter()
    result = analyze_file(path, engine=engine, config=config, call_id=Path(path).stem)
    elapsed = time.perf_counter() - t0
    segments = sorted(result.get("segments", []), key=lambda s: (s["start_s"], s.get("speaker", "")))
    out: dict[str, Any] = {
        "duration_s": probe(path).duration_s,
        "pipeline": {
            "text": " ".join(s.get("text", "").strip() for s in segments if s.get("text")),
            "languages": sorted({s.get("language", "") for s in segments if s.get("text")}),
            "speakers": sorted({s.get("speaker", "") for s in segments if s.get("text")}),
            "n_segments": len(segments), "elapsed_s": elapsed,
        },
    }
    if direct is not None:
        t0 = time.perf_counter()
        out["direct"] = {**direct.transcribe(path), "elapsed_s": time.perf_counter() - t0}
    return out


def evaluate_asr(*, options: AsrEvalOptions, config, run: RunOptions, out: Path, cache_dir: Path,
                 engine=None, direct: DirectWhisper | None = None) -> report.EvalResult:
    """Transcribe every manifest clip both ways and score them; writes predictions.csv and a plot."""
    manifest = manifest_path(options)
    rows = read_manifest(manifest, required=("path", "reference_text", "language"), root=options.root or None,
                         limit=options.limit or None)
    if engine is None:
        from ..engine import Engine

        engine = Engine.load(config)
    if direct is None and options.compare_direct:
        direct = DirectWhisper(config.asr)
    items = [Item(str(r.path), {"path": str(r.path)}) for r in rows]
    signature = fingerprint("asr/1", dict(config.raw), options.compare_direct,
                            getattr(engine.transcriber, "model_path", None))
    results = run_items(items, lambda it: transcribe_clip(it, engine=engine, config=config, direct=direct),
                        cache_dir=cache_dir / "asr", signature=signature, options=run, desc="asr")
    failed = [{"key": r.key, "error": r.error} for r in results if r.error]
    systems = [s for s in SYSTEMS if s == "pipeline" or options.compare_direct]

    per_clip = []
    pooled_counts: dict[tuple[str, str], list[EditCounts]] = {}
    for row, res in zip(rows, results):
        if res.result is None:
            continue
        language = row.get("language").lower() or "en"
        clip = {"path": row.get("path") or row.get("file"), "language": language,
                "metric": error_rate_name(language), "reference": row.get("reference_text"),
                "duration_s": res.result.get("duration_s")}
        for system in systems:
            hyp = res.result[system]["text"]
            counts = error_counts(row.get("reference_text"), hyp, language=language)
            pooled_counts.setdefault((language, system), []).append(counts)
            clip[system] = {**res.result[system], "counts": counts.as_dict(), "rate": counts.rate,
                            "traditional_chars": traditional_chars(hyp)}
        per_clip.append(clip)
    if not per_clip:
        raise EvaluationError(f"no clip of {manifest} could be transcribed; first error: {failed[0]['error']}")

    by_language = {}
    for (language, system), counts in sorted(pooled_counts.items()):
        total = pooled(counts)
        by_language.setdefault(language, {"metric": error_rate_name(language), "n_clips": len(counts)})
        by_language[language][system] = total.as_dict()
    metrics = {"manifest": str(manifest), "n_items": len(per_clip),
               "models": {"asr": getattr(engine.transcriber, "model_id", None),
                          "asr_path": getattr(engine.transcriber, "model_path", None)}, "by_language": by_language,
               "clips": per_clip, "direct_settings": None if direct is None else {
                   "model_path": direct.model_path, "beam_size": config.asr.beam_size,
                   "compute_type": config.asr.compute_type, "cpu_threads": config.asr.cpu_threads,
                   "language": "faster-whisper detection (99 languages)", "vad_filter": False}}

    out.mkdir(parents=True, exist_ok=True)
    report.write_csv(out / "predictions.csv",
                     headers=["path", "language", "metric", "system", "rate", "substitutions", "deletions",
                              "insertions", "n_ref", "hypothesis", "reference"],
                     rows=[[c["path"], c["language"], c["metric"], s, c[s]["rate"], c[s]["counts"]["substitutions"],
                            c[s]["counts"]["deletions"], c[s]["counts"]["insertions"], c[s]["counts"]["n_ref"],
                            c[s]["text"], c["reference"]] for c in per_clip for s in systems])
    report.plot_bars(out / "error_rates.png", title="error rate per clip (WER en, CER zh)",
                     groups=[Path(c["path"]).stem[:24] for c in per_clip],
                     series={s: [c[s]["rate"] for c in per_clip] for s in systems}, ylabel="error rate")
    summary = [f"asr model={getattr(engine.transcriber, 'model_id', '?')} clips={len(per_clip)}"]
    for language, figures in by_language.items():
        parts = "  ".join(f"{s} {figures['metric'].upper()} {report.fmt(figures[s]['rate'])}"
                          f" (S{figures[s]['substitutions']} D{figures[s]['deletions']} I{figures[s]['insertions']}"
                          f" / N{figures[s]['n_ref']})" for s in systems)
        summary.append(f"  {language}: {figures['n_clips']} clips  {parts}")
    for c in per_clip:
        summary.append(f"  {Path(c['path']).name}: " + "  ".join(
            f"{s} {c['metric']} {report.fmt(c[s]['rate'])}"
            + (f" ({c[s]['traditional_chars']} Traditional characters)" if c[s]["traditional_chars"] else "")
            for s in systems))
    headers = ["clip", "language", "metric", *(f"{s} rate" for s in systems),
               *(f"{s} Traditional chars" for s in systems), *(f"{s} hypothesis" for s in systems)]
    table_rows = [[Path(c["path"]).name, c["language"], c["metric"], *(c[s]["rate"] for s in systems),
                   *(c[s]["traditional_chars"] for s in systems), *(c[s]["text"] for s in systems)]
                  for c in per_clip]
    lang_rows = [[lang, f["metric"], f["n_clips"], *(f[s]["rate"] for s in systems)] for lang, f in by_language.items()]
    sections = [
        report.Section("Per language (pooled)", report.table(["language", "metric", "clips",
                                                              *(f"{s} rate" for s in systems)], lang_rows)),
        report.Section("Per clip", report.table(headers, table_rows), images=(out / "error_rates.png",)),
    ]
    return report.EvalResult(name="asr", metrics=metrics, sections=sections, summary=summary, failed_items=failed)
