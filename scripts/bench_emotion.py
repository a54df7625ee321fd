#!/usr/bin/env python
"""Cost of prosody + emotion per second of one speaker's audio, as the engine runs it (the last 2 s
every second), at 8 kHz and 16 kHz input; then the per-turn heads with the ASR's encoder pass shared
(pool its frames) against an encoder pass of their own, side by side, with the ASR window itself for
scale. Prints figures; asserts nothing.

    python scripts/bench_emotion.py [--seconds 60] [--turns 20 | --turns 0] [--model-dir models/emotion-emodb]

``--model-dir`` compares models (e.g. the multi-corpus default against the EmoDB-only variant, "before").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from pipeline.emotion import EmotionModel, EmotionOptions  # noqa: E402
from pipeline.training.emotion import (cost_per_audio_second, data_dir_default, read_manifest,  # noqa: E402
                                       telephone_version)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the test signal")
    ap.add_argument("--turns", type=int, default=20, help="EmoDB clips used as turns for the turn heads (0: skip)")
    ap.add_argument("--model-dir", default="", help="emotion model folder (default: the shipped models/emotion)")
    args = ap.parse_args(argv)
    emodb = (args.data or data_dir_default()) / "emodb"
    rows = read_manifest(emodb)
    clips, total = [], 0.0
    for r in rows:   # EmoDB speech back to back, the way one speaker's channel would carry it
        y, sr = sf.read(emodb / r["file"], dtype="float32")
        clips.append(y)
        total += len(y) / sr
        if total >= args.seconds:
            break
    y16 = np.concatenate(clips)
    t0 = time.perf_counter()
    model = EmotionModel.load(EmotionOptions(model_dir=args.model_dir))
    model.extractor.warm_up()
    print(f"model {model.model_id}: load + warm-up {time.perf_counter() - t0:.2f} s")
    for label, y, rate in (("8 kHz mu-law", telephone_version(y16, sr=16000), 8000), ("16 kHz", y16, 16000)):
        c = cost_per_audio_second(model, y, sr=rate)
        print(f"{label:13s} {len(y) / rate:5.0f} s: live {c['live_ms_per_s']:.2f} ms per s of audio "
              f"(extract {c['extract_ms_per_window']:.2f} ms + predict {c['predict_ms_per_window']:.3f} ms "
              f"per 2 s window), whole turn {c['turn_ms_per_s']:.2f} ms per s")
    if args.turns and model.turn is not None:
        bench_turns(model, [c for c in clips[: args.turns]])
    return 0


def bench_turns(model: EmotionModel, clips: list[np.ndarray]) -> None:
    """ms per second of turn audio: turn heads on the shared encoder pass vs their own pass."""
    from pipeline.asr import AsrChunk, AsrOptions, Transcriber, pool_turns

    transcriber = Transcriber.load(AsrOptions(cpu_threads=2))
    transcriber.warm_up()
    turns = clips   # EmoDB is 16 kHz already
    audio_s = sum(t.size for t in turns) / 16000
    baseline = model.new_turn_baseline()
    shared = own = asr = 0.0
    for y in turns:
        chunk = AsrChunk("caller", 0.0, y)
        t0 = time.perf_counter()
        transcriber.transcribe_window([chunk])                      # the ASR window (encode + decode)
        t1 = time.perf_counter()
        _f, encoder_output, spans = transcriber.encode_window([chunk])   # what the window computed anyway
        t2 = time.perf_counter()
        (enc,) = pool_turns(encoder_output, [(a, b) for a, b, _ in spans])
        vec = model.extractor.vector(y, sr=16000)[1]
        x = model.turn_vector(vec, enc)
        scores = model.predict_turn(x, baseline=baseline)
        baseline.update(x, calm=model.turn_looks_calm(x))
        t3 = time.perf_counter()
        asr += t1 - t0
        own += (t2 - t1) + (t3 - t2)
        shared += t3 - t2
        assert scores.label
    print(f"turn heads over {len(turns)} turns ({audio_s:.0f} s, one turn per window): "
          f"shared encoder {1000 * shared / audio_s:.1f} ms per s of audio (prosody + pooling + heads); "
          f"own encoder pass {1000 * own / audio_s:.1f} ms per s ({own / shared:.1f}x); "
          f"the ASR window itself {1000 * asr / audio_s:.1f} ms per s")


if __name__ == "__main__":
    raise SystemExit(main())
