"""``callpulse evaluate asr``: transcripts against reference text, pipeline vs faster-whisper directly.

* ``pipeline``: the batch path (``pipeline.batch.analyze_file`` with the configured engine: explicit
  resampling, per-channel VAD, turn packing, language ID restricted to the configured languages,
  Simplified output, masking); the hypothesis is every transcript segment in time order.
* ``direct``: ``faster_whisper.WhisperModel`` on the same model folder, compute type and threads, fed by
  faster-whisper's own decoder (``decode_audio``: downmix, 16 kHz) with its own defaults otherwise (beam
  5, 99-language detection, no VAD, default temperature fallback), i.e. as a user would run it.

Both are also checked for repetition loops: a segment whose text repeats a unit over and over, or holds
more characters (zh) / words (en) than its duration allows (:func:`pipeline.asr.repetition_cut`,
:func:`pipeline.asr.max_units`), counts as a loop. ``scripts/bench_asr_decoding.py --write-espeak DIR``
writes espeak-ng Mandarin sentences and commands with a manifest to score here as well.

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

import numpy as np
import zhconv

from ..errors import EvaluationError
from . import report
from .manifests import default_data_dir, read_manifest
from .metrics import EditCounts, error_counts, error_rate_name, pooled
from .runner import Item, RunOptions, fingerprint, run_items

log = logging.getLogger("pipeline.evaluate.asr")

SYSTEMS = ("pipeline", "direct")

# Mandarin read by espeak-ng from tone-numbered pinyin (its Hanzi reading is unusable; the samples do the
# same): call-centre sentences and short voice commands, where Whisper's loops showed ("换一首歌").
ESPEAK_ZH_SENTENCES = (
    ("今天天气很好，我们去公园散步吧。", "jin1 tian1 tian1 qi4 hen3 hao3, wo3 men qu4 gong1 yuan2 san4 bu4 ba."),
    ("请问您的银行卡号是多少？", "qing3 wen4 nin2 de yin2 hang2 ka3 hao4 shi4 duo1 shao3?"),
    ("我想查询一下我的账户余额。", "wo3 xiang3 cha2 xun2 yi2 xia4 wo3 de zhang4 hu4 yu2 e2."),
    ("这个月的账单有问题，我要投诉。", "zhe4 ge4 yue4 de zhang4 dan1 you3 wen4 ti2, wo3 yao4 tou2 su4."),
    ("请稍等，我帮您转接人工服务。", "qing3 shao1 deng3, wo3 bang1 nin2 zhuan3 jie1 ren2 gong1 fu2 wu4."),
    ("我的信用卡被盗刷了，怎么办？", "wo3 de xin4 yong4 ka3 bei4 dao4 shua1 le, zen3 me ban4?"),
    ("谢谢您的耐心，祝您生活愉快。", "xie4 xie4 nin2 de nai4 xin1, zhu4 nin2 sheng1 huo2 yu2 kuai4."),
    ("北京是中国的首都。", "bei3 jing1 shi4 zhong1 guo2 de shou3 du1."),
)
ESPEAK_ZH_COMMANDS = (
    ("换一首歌", "huan4 yi4 shou3 ge1"), ("打开空调", "da3 kai1 kong1 tiao2"), ("关灯", "guan1 deng1"),
    ("查询余额", "cha2 xun2 yu2 e2"), ("转人工", "zhuan3 ren2 gong1"), ("挂失银行卡", "gua4 shi1 yin2 hang2 ka3"),
    ("声音大一点", "sheng1 yin1 da4 yi4 dian3"), ("下一首", "xia4 yi4 shou3"),
)


def espeak_mandarin(pinyin: str, *, voice: str = "cmn-latn-pinyin", speed_wpm: int = 130) -> np.ndarray:
    """``pinyin`` spoken by espeak-ng, as 16 kHz mono float32 (wideband, no line simulation)."""
    import shutil
    import subprocess
    import tempfile

    import soundfile as sf

    from ..audio import resample

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise EvaluationError("espeak-ng is not installed; install it with `apt-get install -y espeak-ng`")
    with tempfile.TemporaryDirectory(prefix="callpulse-espeak-") as tmp:
        wav = Path(tmp) / "line.wav"
        proc = subprocess.run([binary, "-v", voice, "-s", str(speed_wpm), "-w", str(wav), pinyin],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wav.exists():
            raise EvaluationError(f"espeak-ng failed for {pinyin[:40]!r}: {proc.stderr.strip()[:200]}")
        y, rate = sf.read(wav, dtype="float32", always_2d=False)
    return resample(np.asarray(y, np.float32), orig_sr=rate, target_sr=16000)


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
    """faster-whisper on its own, with the pipeline's model, compute type and threads, and its own
    decoding defaults (beam 5)."""

    def __init__(self, asr_options, *, beam_size: int = 5) -> None:
        from faster_whisper import WhisperModel

        from ..asr import resolve_model_path

        self.options = asr_options
        self.beam_size = beam_size
        self.model_path = resolve_model_path(asr_options)
        self._model = WhisperModel(self.model_path, device="cpu", compute_type=asr_options.compute_type,
                                   cpu_threads=asr_options.cpu_threads, local_files_only=True)

    def transcribe(self, path: str) -> dict[str, Any]:
        from faster_whisper import decode_audio

        audio = decode_audio(path, sampling_rate=16000)
        # transcribe() is lazy: decoding happens while the generator is consumed, here, in the worker.
        segments, info = self._model.transcribe(audio, beam_size=self.beam_size)
        segments = [{"text": s.text.strip(), "duration_s": s.end - s.start} for s in segments]
        text = " ".join(s["text"] for s in segments)
        return {"text": text, "language": info.language,
                "loops": count_loops(segments, "zh" if info.language in ("zh", "yue") else "en")}


def count_loops(segments, language: str) -> int:
    """Segments (dicts with text and duration_s) holding a repetition loop or more text than they can."""
    from ..asr import AsrOptions, _text_units, _unit_count, max_units, repetition_cut

    options, n = AsrOptions(), 0
    for seg in segments:
        units = _text_units(seg["text"], language)
        if len(repetition_cut(units)) < len(units) or \
                _unit_count(units, language) > max_units(seg["duration_s"], language, options):
            n += 1
    return n


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
            "loops": sum(count_loops([{"text": s["text"], "duration_s": s["end_s"] - s["start_s"]}],
                                     s.get("language") or "en") for s in segments if s.get("text")),
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
    signature = fingerprint("asr/2", dict(config.raw), options.compare_direct,
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
                   "model_path": direct.model_path, "beam_size": direct.beam_size,
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
    summary.append("  segments with a repetition loop: " + "  ".join(
        f"{s} {sum(c[s].get('loops', 0) for c in per_clip)}" for s in systems))
    for c in per_clip:
        summary.append(f"  {Path(c['path']).name}: " + "  ".join(
            f"{s} {c['metric']} {report.fmt(c[s]['rate'])}" + (f" [{c[s]['loops']} loop(s)]" if c[s].get("loops") else "")
            + (f" ({c[s]['traditional_chars']} Traditional characters)" if c[s]["traditional_chars"] else "")
            for s in systems))
    headers = ["clip", "language", "metric", *(f"{s} rate" for s in systems),
               *(f"{s} Traditional chars" for s in systems), *(f"{s} hypothesis" for s in systems)]
    table_rows = [[Path(c["path"]).name, c["language"], c["metric"], *(c[s]["rate"] for s in systems),
                   *(c[s]["traditional_chars"] for s in systems), *(c[s]["text"] for s in systems)]
                  for c in per_clip]
    lang_rows = [[lang, f["metric"], f["n_clips"], *(f[s]["rate"] for s in systems)] for lang, f in by_language.items()]
    metrics["loops"] = {s: sum(c[s].get("loops", 0) for c in per_clip) for s in systems}
    sections = [
        report.Section("Per language (pooled)", report.table(["language", "metric", "clips",
                                                              *(f"{s} rate" for s in systems)], lang_rows)),
        report.Section("Per clip", report.table(headers, table_rows), images=(out / "error_rates.png",)),
    ]
    return report.EvalResult(name="asr", metrics=metrics, sections=sections, summary=summary, failed_items=failed)
