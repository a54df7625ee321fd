#!/usr/bin/env python
"""Cost of prosody + emotion per second of one speaker's audio, as the engine runs it (the last 2 s
every second), at 8 kHz and 16 kHz input. Prints figures; asserts nothing.

    python scripts/bench_emotion.py [--seconds 60]
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
from pipeline.emotion_training import (cost_per_audio_second, data_dir_default, read_manifest,  # noqa: E402
                                       telephone_version)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the test signal")
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
    model = EmotionModel.load(EmotionOptions())
    model.extractor.warm_up()
    print(f"model {model.model_id}: load + warm-up {time.perf_counter() - t0:.2f} s")
    for label, y, rate in (("8 kHz mu-law", telephone_version(y16, sr=16000), 8000), ("16 kHz", y16, 16000)):
        c = cost_per_audio_second(model, y, sr=rate)
        print(f"{label:13s} {len(y) / rate:5.0f} s: live {c['live_ms_per_s']:.2f} ms per s of audio "
              f"(extract {c['extract_ms_per_window']:.2f} ms + predict {c['predict_ms_per_window']:.3f} ms "
              f"per 2 s window), whole turn {c['turn_ms_per_s']:.2f} ms per s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
