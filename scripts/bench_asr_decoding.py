#!/usr/bin/env python3
"""Mandarin decoding settings side by side: CER, junk characters, repetition loops and real-time factor.

Every Mandarin clip there is: the shared AISHELL clip ($CALLPULSE_DATA/asr), espeak-ng sentences and short
commands (``pipeline.evaluate.asr.ESPEAK_ZH_*``, synthesised on the fly) and the turns of
``samples/calm_zh.wav`` cut from their channel by the annotation. Each clip is one turn in its own Whisper
window, decoded as Mandarin (language ID is not what is compared here) by the pipeline's own
``Transcriber`` with the setting's ``[asr]`` options. ``--before REV`` adds the ``pipeline/asr.py`` of a
git revision with its own defaults, for a before/after row.

    .venv/bin/python scripts/bench_asr_decoding.py [--before HEAD] [--english] [--settings a,b]
    .venv/bin/python scripts/bench_asr_decoding.py --write-espeak eval/espeak-zh   # WAVs + manifest.csv for
        callpulse evaluate asr --manifest eval/espeak-zh/manifest.csv

CER: ``pipeline.evaluate.metrics`` (NFKC, Simplified, punctuation dropped), pooled per clip set. RTF:
decode seconds / audio seconds (encoder + decode, language fixed); the settings share one loaded model
and are run interleaved clip by clip, so machine load hits them alike (absolute RTFs stay noisy). "junk":
small forms, full-width digits / Latin letters and U+FFFD; "in output" is what is left in the transcript,
"removed by guard" what the decoder wrote and the pipeline's guard removed. "loops": transcripts with a
repetition loop or more characters than their duration allows ("in output"), and the loops / over-long
turns the guard cut ("cut by guard"): the guard's count is what the decoder itself produced.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import asr  # noqa: E402
from pipeline.audio import load_audio, resample  # noqa: E402
from pipeline.evaluate.asr import ESPEAK_ZH_COMMANDS, ESPEAK_ZH_SENTENCES, espeak_mandarin  # noqa: E402
from pipeline.evaluate.manifests import default_data_dir  # noqa: E402
from pipeline.evaluate.metrics import error_counts, pooled  # noqa: E402
from pipeline.evaluate.report import environment, package_versions  # noqa: E402

PROMPT = "以下是普通话的句子，请用简体中文。"
# name -> AsrOptions overrides (temperature 0 only unless said; full-width suppression on unless said)
SETTINGS = {
    "beam1": dict(beam_size_zh=1),
    "beam1+prompt": dict(beam_size_zh=1, initial_prompt_zh=PROMPT),
    "beam2": dict(beam_size_zh=2),
    "beam2+prompt": dict(beam_size_zh=2, initial_prompt_zh=PROMPT),
    "beam3": dict(beam_size_zh=3),
    "beam3+prompt": dict(beam_size_zh=3, initial_prompt_zh=PROMPT),
    "beam5": dict(beam_size_zh=5),
    "beam5+prompt": dict(beam_size_zh=5, initial_prompt_zh=PROMPT),
    "beam5 no-suppress": dict(beam_size_zh=5, suppress_fullwidth=False),
    "beam1 no-suppress": dict(beam_size_zh=1, suppress_fullwidth=False),
    "beam1+prompt no-suppress": dict(beam_size_zh=1, initial_prompt_zh=PROMPT, suppress_fullwidth=False),
    "beam1 T0+0.4 seeded": dict(beam_size_zh=1, temperatures=(0.0, 0.4)),
    # the old defaults' decoding (prompt, sampled fallback) with and without the full-width suppression
    "beam1+prompt T0+0.4 seeded": dict(beam_size_zh=1, initial_prompt_zh=PROMPT, temperatures=(0.0, 0.4)),
    "beam1+prompt T0+0.4 seeded no-suppress": dict(beam_size_zh=1, initial_prompt_zh=PROMPT, temperatures=(0.0, 0.4),
                                                   suppress_fullwidth=False),
}


def mandarin_clips(data_dir: Path) -> list[dict]:
    clips = []
    aishell = data_dir / "asr" / "aishell-BAC009S0724W0121.wav"
    if aishell.exists():
        a = load_audio(aishell)
        clips.append({"set": "aishell", "name": aishell.name, "ref": "广州市房地产中介协会分析",
                      "audio": resample(a.samples.mean(axis=0), orig_sr=a.sample_rate_hz, target_sr=16000)})
    for group, lines in (("espeak sentences", ESPEAK_ZH_SENTENCES), ("espeak commands", ESPEAK_ZH_COMMANDS)):
        for text, pinyin in lines:
            clips.append({"set": group, "name": text, "ref": text, "audio": espeak_mandarin(pinyin)})
    sample = ROOT / "samples" / "calm_zh.wav"
    ann = json.loads(sample.with_suffix(".json").read_text(encoding="utf-8"))
    a = load_audio(sample)
    for turn in ann["turns"]:
        ch = ann["agent_channel"] if turn["speaker"] == "agent" else 1 - ann["agent_channel"]
        lo = max(0, int((turn["start_s"] - 0.2) * a.sample_rate_hz))
        hi = int((turn["end_s"] + 0.2) * a.sample_rate_hz)
        clips.append({"set": "calm_zh turns", "name": f"{turn['speaker']}@{turn['start_s']}", "ref": turn["text"],
                      "audio": resample(a.samples[ch, lo:hi], orig_sr=a.sample_rate_hz, target_sr=16000)})
    return clips


def english_clips(data_dir: Path) -> list[dict]:
    import csv

    out = []
    with open(data_dir / "asr" / "manifest.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["language"] != "en":
                continue
            a = load_audio(data_dir / "asr" / row["file"])
            y = resample(a.samples.mean(axis=0), orig_sr=a.sample_rate_hz, target_sr=16000)
            # one turn per window (<= 24 s), as the pipeline's turns are
            for k, s in enumerate(range(0, y.size, 16000 * 24)):
                out.append({"set": "english", "name": f"{row['file']}#{k}", "ref": row["reference_text"] if k == 0
                            else "", "audio": y[s:s + 16000 * 24], "whole": row["file"]})
    return out


def write_espeak(folder: Path) -> int:
    import csv

    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "language", "reference_text"])
        for kind, lines in (("sentence", ESPEAK_ZH_SENTENCES), ("command", ESPEAK_ZH_COMMANDS)):
            for k, (text, pinyin) in enumerate(lines):
                name = f"espeak-zh-{kind}-{k:02d}.wav"
                sf.write(folder / name, espeak_mandarin(pinyin), 16000, subtype="PCM_16")
                w.writerow([name, "zh", text])
    print(f"wrote {len(ESPEAK_ZH_SENTENCES) + len(ESPEAK_ZH_COMMANDS)} clips and {folder / 'manifest.csv'}")
    return 0


def load_before(rev: str):
    """The pipeline/asr.py of a git revision, importable as pipeline._asr_before (its own defaults)."""
    source = subprocess.run(["git", "show", f"{rev}:pipeline/asr.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="callpulse-asr-before-")) / "_asr_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pipeline._asr_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline._asr_before"] = module
    spec.loader.exec_module(module)
    return module


class _CutCounter(logging.Handler):
    """Counts the guard's cuts (the pipeline logs each loop / over-long turn it cuts)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.cuts = 0
        self.junk = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("cut a"):
            self.cuts += 1
        elif record.getMessage().startswith("removed") and record.args:
            self.junk += int(record.args[0])


def run_settings(todo, clips, language: str) -> dict:
    """Decode every clip with every setting, the settings interleaved clip by clip over one loaded model,
    so that the machine's load (shared, noisy) hits all settings alike and their RTFs compare."""
    model = None
    runners = []
    for name, module, options in todo:
        if model is None:
            first = module.Transcriber.load(options)
            model, path = first._model, first.model_path
        runners.append((name, module, module.Transcriber(model, options, path)))
    for _name, module, t in runners:
        t.transcribe_chunks([module.AsrChunk("caller", 0.0, np.zeros(16000, np.float32))], language=language)
    out = {name: {"rows": [], "decode_s": 0.0, "audio_s": 0.0, "cuts": 0, "junk_cut": 0} for name, _m, _t in runners}
    logger = logging.getLogger("pipeline.asr")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # counted, not printed
    for clip in clips:
        for name, module, t in runners:
            counter = _CutCounter()
            logger.addHandler(counter)
            try:
                t0 = time.perf_counter()
                events = t.transcribe_chunks([module.AsrChunk("caller", 0.0, clip["audio"])], language=language)
                elapsed = time.perf_counter() - t0
            finally:
                logger.removeHandler(counter)
            res = out[name]
            res["decode_s"] += elapsed
            res["audio_s"] += clip["audio"].size / 16000
            res["cuts"] += counter.cuts
            res["junk_cut"] += counter.junk
            res["rows"].append({**{k: v for k, v in clip.items() if k != "audio"},
                                "duration_s": clip["audio"].size / 16000, "hyp": "".join(e.text for e in events)})
    for res in out.values():
        res["rtf"] = res["decode_s"] / max(res["audio_s"], 1e-9)
    return out


def has_loop(text: str, language: str, duration_s: float) -> bool:
    """A repetition loop, or more characters/words than the clip's duration allows, in the output."""
    units = asr._text_units(text, language)
    return (len(asr.repetition_cut(units)) < len(units)
            or asr._unit_count(units, language) > asr.max_units(duration_s, language, asr.AsrOptions()))


def score(rows: list[dict], language: str) -> dict:
    sets: dict[str, list] = {}
    if language == "en":  # windows of one file are joined before scoring
        joined: dict[str, dict] = {}
        for r in rows:
            j = joined.setdefault(r["whole"], {"set": "english", "ref": "", "hyp": "", "duration_s": 0.0})
            j["duration_s"] += r["duration_s"]
            j["ref"] += r["ref"]
            j["hyp"] += r["hyp"]
        rows = list(joined.values())
    for r in rows:
        sets.setdefault(r["set"], []).append(error_counts(r["ref"], r["hyp"], language=language))
    out = {name: pooled(c).rate for name, c in sets.items()}
    out["all"] = pooled([c for cs in sets.values() for c in cs]).rate
    out["junk"] = sum(len(asr._JUNK.findall(r["hyp"])) for r in rows)
    out["loops"] = sum(1 for r in rows if has_loop(r["hyp"], language, r.get("duration_s", 0.0)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="", help="git revision whose pipeline/asr.py (own defaults) adds a row")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from: " + ", ".join(SETTINGS))
    ap.add_argument("--english", action="store_true", help="also English beam 1 vs 5 on the shared English clips")
    ap.add_argument("--show", action="store_true", help="print every hypothesis")
    ap.add_argument("--json", default="", help="write all figures and hypotheses here")
    ap.add_argument("--write-espeak", default="", metavar="DIR",
                    help="only write the espeak-ng Mandarin clips as 16 kHz WAVs with a manifest.csv, then exit")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.write_espeak:
        return write_espeak(Path(args.write_espeak))
    data_dir = default_data_dir()
    clips = mandarin_clips(data_dir)
    base = asr.AsrOptions()
    print(f"Mandarin clips: {len(clips)} ({sum(c['audio'].size for c in clips) / 16000:.1f} s); "
          f"model {base.model} {base.compute_type}, {base.cpu_threads} threads; defaults now: beam_zh "
          f"{base.beam_size_zh}, temperatures {list(base.temperatures)}, prompt {base.initial_prompt_zh!r}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items() if v)
          + f"; constraints.txt sha256 {(environment()['constraints_sha256'] or 'none')[:12]}")
    results = {}
    todo = []
    if args.before:
        todo.append((f"before ({args.before} defaults)", load_before(args.before), None))
    for name in filter(None, args.settings.split(",")):
        todo.append((name, asr, replace(base, **SETTINGS[name])))
    sets = ["aishell", "espeak sentences", "espeak commands", "calm_zh turns"]
    print(f"\n| setting | {' | '.join(f'CER {s}' for s in sets)} | CER all | junk in output | junk removed by guard | loops in output | loops cut by guard | RTF |")
    print("|---|" + "---|" * (len(sets) + 6))
    todo = [(name, module, options if options is not None else module.AsrOptions()) for name, module, options in todo]
    all_res = run_settings(todo, clips, "zh")
    for name, _module, _options in todo:
        res = all_res[name]
        fig = score(res["rows"], "zh")
        results[name] = {**res, "figures": fig}
        cells = [f"{fig[s]:.3f}" if s in fig else "-" for s in sets]
        print(f"| {name} | {' | '.join(cells)} | {fig['all']:.3f} | {fig['junk']} | {res['junk_cut']} | {fig['loops']} | {res['cuts']} | "
              f"{res['rtf']:.3f} |", flush=True)
        if args.show:
            for r in res["rows"]:
                print(f"    {r['set']:17s} {r['ref']} -> {r['hyp']}")
    if args.english:
        eclips = english_clips(data_dir)
        print("\n| English setting | WER | RTF |\n|---|---|---|")
        eng = run_settings([(f"beam {b}", asr, replace(base, beam_size=b)) for b in (1, 5)], eclips, "en")
        for name, res in eng.items():
            fig = score(res["rows"], "en")
            results[f"english {name}"] = {**res, "figures": fig}
            print(f"| {name} | {fig['all']:.3f} | {res['rtf']:.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"packages": package_versions(), "environment": environment(), "results": results}, ensure_ascii=False,
                                              indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
