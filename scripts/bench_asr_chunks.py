#!/usr/bin/env python3
"""Encoder input length side by side: padded 30 s windows vs shorter ones (``[asr] encoder_chunks_s``).

The windows are the pipeline's own: every file is run once through ``analyze_file`` with the default
config, recording each Whisper window it transcribes (its turns, forced language and language prior) and
each turn's prosody vector handed to the turn emotion heads. Then every setting transcribes the same
windows with one shared loaded model, interleaved window by window (machine load hits them alike), and
is scored against the references: WER (English) / CER (Mandarin) pooled per set (``pipeline.evaluate
.metrics``), segments with a repetition loop or more text than their duration allows
(``pipeline.evaluate.asr.count_loops``, after the pipeline's guard), windows whose language differs from
the padded 30 s one, the encoder and decode time per window, and how far the turn heads' output
(``turn_global``, no speaker baseline) moves from the padded 30 s encodings.

Sets: the shared ASR clips ($CALLPULSE_DATA/asr: 16 kHz English + Mandarin, 8 kHz telephone English),
the wideband clips again as 8 kHz telephone audio, the bundled samples (8 kHz stereo, references from
their annotation), and espeak-ng Mandarin sentences and short commands (``--no-espeak`` to skip).

    .venv/bin/python scripts/bench_asr_chunks.py [--settings pad30,c10,c15,c20,fit] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import logging
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
from pipeline.evaluate.asr import (ESPEAK_ZH_COMMANDS, ESPEAK_ZH_SENTENCES, count_loops,  # noqa: E402
                                   espeak_mandarin)
from pipeline.evaluate.manifests import default_data_dir, read_manifest  # noqa: E402
from pipeline.evaluate.metrics import error_counts, pooled  # noqa: E402

# name -> [asr] overrides
SETTINGS = {
    "pad30": {},
    "c5": {"encoder_chunks_s": (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)},
    "c10": {"encoder_chunks_s": (10.0, 15.0, 20.0, 25.0, 30.0)},
    "c15": {"encoder_chunks_s": (15.0, 20.0, 25.0, 30.0)},
    "c20": {"encoder_chunks_s": (20.0, 25.0, 30.0)},
    "fit": {"encoder_fit": True},
}


def inputs(tmp: Path, espeak: bool) -> list[tuple[str, str, str, str]]:
    """(set, path, language, reference text) of every file."""
    data = default_data_dir()
    out = []
    for row in read_manifest(data / "asr" / "manifest.csv", required=("path", "reference_text", "language")):
        path, lang, ref = str(row.path), row.get("language").lower(), row.get("reference_text")
        out.append(("clips", path, lang, ref))
        audio = load_audio(path)
        y, sr = audio.samples.mean(axis=0), audio.sample_rate_hz
        if sr > 8000:  # the same speech through a telephone band: 8 kHz, as a call's audio arrives
            import soundfile as sf

            low = tmp / f"{Path(path).stem}_8k.wav"
            sf.write(low, resample(np.asarray(y, np.float32), orig_sr=sr, target_sr=8000), 8000)
            out.append(("clips-8k", str(low), lang, ref))
    for meta in sorted((ROOT / "samples").glob("*.json")):
        info = json.loads(meta.read_text())
        turns = sorted(info["turns"], key=lambda t: t["start_s"])
        out.append(("samples", str(meta.with_suffix(".wav")), info["language"],
                    " ".join(t["text"] for t in turns)))
    if espeak:
        import soundfile as sf

        for i, (text, pinyin) in enumerate(ESPEAK_ZH_SENTENCES + ESPEAK_ZH_COMMANDS):
            wav = tmp / f"espeak_zh_{i:02d}.wav"
            pad = np.zeros(8000, np.float32)  # half a second each side, so VAD finds the turn whole
            sf.write(wav, np.concatenate([pad, espeak_mandarin(pinyin), pad]), 16000)
            out.append(("espeak-zh", str(wav), "zh", text))
    return out


def capture(engine, config, files) -> dict[str, dict]:
    """Run the pipeline once per file, recording its windows and the turn heads' prosody vectors."""
    from pipeline.batch import analyze_file
    from pipeline.emotion_stream import EmotionStream

    windows, turn_vectors = [], []
    real_window, real_rescore = asr.Transcriber.transcribe_window, EmotionStream.rescore_turn

    def window(self, chunks, *, language=None, prior=None):
        result = real_window(self, chunks, language=language, prior=prior)
        windows.append((tuple(chunks), language, dict(prior) if prior else None, result))
        return result

    def rescore(self, vector, encoding):
        turn_vectors.append((np.array(vector), np.array(encoding)))
        return real_rescore(self, vector, encoding)

    asr.Transcriber.transcribe_window, EmotionStream.rescore_turn = window, rescore
    out = {}
    try:
        for set_name, path, lang, ref in files:
            windows.clear()
            turn_vectors.clear()
            analyze_file(path, engine=engine, config=config, call_id=Path(path).stem)
            # which (window, turn) each prosody vector belongs to: the pad30 encoding it was scored with
            turns = []
            for vec, enc in turn_vectors:
                for w, (_c, _l, _p, res) in enumerate(windows):
                    for k, e in enumerate(res.encodings):
                        if e is not None and e.shape == enc.shape and np.array_equal(e, enc):
                            turns.append((w, k, vec))
            out[path] = {"set": set_name, "language": lang, "reference": ref, "turns": turns,
                         "windows": [(c, l, p) for c, l, p, _r in windows]}
    finally:
        asr.Transcriber.transcribe_window, EmotionStream.rescore_turn = real_window, real_rescore
    return out


def run_window(tr: asr.Transcriber, chunks, language, prior):
    """``Transcriber.transcribe_window`` split into its encoder pass and the rest, each timed."""
    from faster_whisper.tokenizer import Tokenizer

    t0 = time.perf_counter()
    features, encoder_output, spans = tr.encode_window(chunks)
    t1 = time.perf_counter()
    if encoder_output is None:
        return asr.WindowResult([], None, {}), 0.0, 0.0, 0
    encodings = asr.pool_turns(encoder_output, [(a, b) for a, b, _ in spans])
    lang, probs = tr._choose_language(encoder_output, language, prior)
    tokenizer = Tokenizer(tr._model.hf_tokenizer, tr.multilingual, task="transcribe", language=lang)
    segments = tr._decode(features, tokenizer, encoder_output, lang, spans)
    result = tr._window_result(segments, spans, lang, probs, encodings)
    return result, t1 - t0, time.perf_counter() - t1, tr._encoder_frames(features)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="pad30,c10,c15,c20,fit")
    parser.add_argument("--repeat", type=int, default=1, help="timing passes (the fastest counts)")
    parser.add_argument("--no-espeak", action="store_true")
    parser.add_argument("--turn-model", default="models/emotion-emodb",
                        help="emotion model with turn heads to compare (the default model has none)")
    parser.add_argument("--json", default="", help="write the per-window rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pipeline.config import load_config
    from pipeline.engine import Engine

    names = [s for s in args.settings.split(",") if s]
    config = load_config(None, overrides={"emotion": {"model_dir": args.turn_model}} if args.turn_model else None)
    engine = Engine.load(config)
    base = engine.transcriber
    emotion = engine.emotion if getattr(engine, "turn_emotion", False) else None
    trs = {n: asr.Transcriber(base._model, replace(base.options, **SETTINGS[n]), base.model_path) for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-asr-chunks-") as tmp:
        files = inputs(Path(tmp), not args.no_espeak)
        t0 = time.perf_counter()
        captured = capture(engine, config, files)
        print(f"captured {sum(len(v['windows']) for v in captured.values())} windows from {len(files)} files "
              f"in {time.perf_counter() - t0:.0f} s; encoder ids: "
              + ", ".join(f"{n}={trs[n].encoder_id}" for n in names))
        rows = []  # per (file, window, setting)
        for path, info in captured.items():
            for w, (chunks, language, prior) in enumerate(info["windows"]):
                best: dict[str, tuple] = {}
                for rep in range(max(1, args.repeat)):
                    for n in (names if rep % 2 == 0 else names[::-1]):
                        res, enc_s, dec_s, frames = run_window(trs[n], chunks, language, prior)
                        if n not in best or enc_s + dec_s < best[n][1] + best[n][2]:
                            best[n] = (res, enc_s, dec_s, frames)
                for n, (res, enc_s, dec_s, frames) in best.items():
                    rows.append({"path": path, "set": info["set"], "window": w, "setting": n, "encoder_s": enc_s,
                                 "decode_s": dec_s, "frames": frames, "language": res.language,
                                 "content_s": round(sum(c.audio.size for c in chunks) / 16000, 2),
                                 "events": res.events, "encodings": res.encodings})
    report(rows, captured, names, emotion)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k not in ("events", "encodings")}
                                               | {"text": " ".join(e.text for e in r["events"])} for r in rows],
                                              ensure_ascii=False, indent=1))
    return 0


def report(rows, captured, names, emotion) -> None:
    sets = sorted({r["set"] for r in rows})
    by = {(r["path"], r["window"], r["setting"]): r for r in rows}
    print("\n| set | setting | error rate (WER en / CER zh), pooled | loops | windows with another language "
          "than pad30 | encoder s / window | decode s / window | mean encoder input s |")
    print("|---|---|---|---|---|---|---|---|")
    for s in sets:
        paths = [p for p, i in captured.items() if i["set"] == s]
        for n in names:
            counts: dict[str, list] = {}
            loops = other_lang = 0
            enc, dec, frames = [], [], []
            for p in paths:
                info = captured[p]
                lang = "zh" if info["language"].startswith("zh") else "en"
                mine = [by[(p, w, n)] for w in range(len(info["windows"]))]
                events = sorted((e for r in mine for e in r["events"]), key=lambda e: (e.start_s, e.speaker))
                hyp = " ".join(e.text for e in events)
                counts.setdefault(lang, []).append(error_counts(info["reference"], hyp, language=lang))
                loops += sum(count_loops([{"text": e.text, "duration_s": e.end_s - e.start_s}], e.language or lang)
                             for e in events)
                other_lang += sum(r["language"] != by[(p, r["window"], "pad30")]["language"] for r in mine) \
                    if "pad30" in names else 0
                enc += [r["encoder_s"] for r in mine]
                dec += [r["decode_s"] for r in mine]
                frames += [r["frames"] for r in mine]
            rate = ", ".join(f"{lg} {pooled(c).rate:.3f}" for lg, c in sorted(counts.items()))
            print(f"| {s} ({len(enc)} windows) | {n} | {rate} | {loops} | {other_lang} | {np.mean(enc):.3f} | "
                  f"{np.mean(dec):.3f} | {np.mean(frames) / 100:.1f} |")
    total = {n: [sum(r[k] for r in rows if r["setting"] == n) for k in ("encoder_s", "decode_s")] for n in names}
    print("\nall windows, seconds (encoder + decode): "
          + "; ".join(f"{n} {e:.1f} + {d:.1f} = {e + d:.1f} ({(e + d) / sum(total[names[0]]):.2f}x {names[0]})"
                      for n, (e, d) in total.items()))
    if emotion is None or "pad30" not in names:
        print("turn heads: not loaded (or no pad30 setting): no turn-head comparison")
        return
    print("\nturn heads (turn_global) on each turn's prosody vector + its encoding, vs pad30 encodings:")
    for n in names:
        cos, d_angry, d_arousal, same_label, count = [], [], [], 0, 0
        for p, info in captured.items():
            for w, k, vec in info["turns"]:
                ref_enc, enc = by[(p, w, "pad30")]["encodings"][k], by[(p, w, n)]["encodings"][k]
                if ref_enc is None or enc is None:
                    continue
                a = emotion.predict_turn(emotion.turn_vector(vec, ref_enc), baseline=None)
                b = emotion.predict_turn(emotion.turn_vector(vec, enc), baseline=None)
                cos.append(float(np.dot(ref_enc, enc) / (np.linalg.norm(ref_enc) * np.linalg.norm(enc))))
                d_angry.append(abs(a.scores.get("angry", 0) - b.scores.get("angry", 0)))
                d_arousal.append(abs(a.arousal - b.arousal))
                same_label += a.label == b.label
                count += 1
        if count:
            print(f"  {n}: {count} turns; encoding cosine to pad30 min {min(cos):.3f} mean {np.mean(cos):.3f}; "
                  f"|dP(angry)| mean {np.mean(d_angry):.3f} max {max(d_angry):.3f}; |d arousal| mean "
                  f"{np.mean(d_arousal):.3f} max {max(d_arousal):.3f}; same label {same_label}/{count}")


if __name__ == "__main__":
    raise SystemExit(main())
