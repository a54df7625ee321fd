#!/usr/bin/env python
"""Benchmark batch analysis against faster-whisper alone on the same calls (prints figures).

    .venv/bin/python scripts/bench_batch.py                    # the bundled samples, default config
    .venv/bin/python scripts/bench_batch.py calls/*.wav --config site.toml
    .venv/bin/python scripts/bench_batch.py --rounds 3          # median of 3 back-to-back rounds
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.devtools import benchmark  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, default=sorted((root / "samples").glob("*.wav")))
    parser.add_argument("--config", default=None)
    parser.add_argument("--rounds", type=int, default=1,
                        help="time pipeline then faster-whisper alone this many times; quote the median ratio")
    parser.add_argument("--asr-model", default=None, help="override [asr] model (base, tiny.en, folder)")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.asr_model:
        config = config.replace("asr", model=args.asr_model)
    print(f"asr model: {config.asr.model}, beam {config.asr.beam_size} (zh {config.asr.beam_size_zh}), "
          f"temperatures {list(config.asr.temperatures)}, {config.asr.compute_type}, {config.asr.cpu_threads} threads")
    from pipeline.evaluate.report import environment, package_versions

    print("packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items() if v)
          + f"; constraints.txt sha256 {(environment()['constraints_sha256'] or 'none')[:12]}")
    for line in benchmark.run(args.files, config, rounds=args.rounds).lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
