"""Same audio, same config, same machine: the same per-call JSON from two fresh processes.

The only fields allowed to differ are the wall-clock timings (``summary.processing_s``, ``summary.stage_s``),
which measure the run, not the call. Everything else (transcripts, words and their times, emotion, alert
ids, times, levels and reasons) must match byte for byte once those are blanked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, SAMPLES

pytestmark = pytest.mark.slow

TIMING_FIELDS = ("processing_s", "stage_s")


def without_timings(raw: bytes) -> bytes:
    """The per-call JSON with its wall-clock timings removed, re-serialised canonically."""
    doc = json.loads(raw)
    for key in TIMING_FIELDS:
        doc.get("summary", {}).pop(key, None)
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


def _analyze(out: Path, files: list[Path]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "pipeline.cli", "analyze", *map(str, files), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_two_fresh_processes_write_identical_call_json(tmp_path):
    # calm_zh: the sampled fallback used to change its Mandarin turns run to run; escalating_en: English
    files = [SAMPLES / "calm_zh.wav", SAMPLES / "escalating_en.wav"]
    first, second = tmp_path / "run1", tmp_path / "run2"
    _analyze(first, files)
    _analyze(second, files)
    for f in files:
        a, b = (first / f"{f.stem}.json").read_bytes(), (second / f"{f.stem}.json").read_bytes()
        segments = json.loads(a)["segments"]
        assert any(s.get("text") for s in segments), f"{f.name}: no transcript to compare"
        assert without_timings(a) == without_timings(b), f"{f.name}: the two runs differ"


def test_the_comparison_sees_a_changed_transcript():
    """A test of the test: one changed character in one turn makes the JSON differ."""
    doc = {"segments": [{"text": "团结产生力量。"}], "summary": {"processing_s": 1.0, "stage_s": {"asr": 0.5}}}
    other = {"segments": [{"text": "团结产生力量０"}], "summary": {"processing_s": 2.0, "stage_s": {"asr": 0.7}}}
    assert without_timings(json.dumps(doc).encode()) != without_timings(json.dumps(other).encode())
    other["segments"][0]["text"] = "团结产生力量。"
    assert without_timings(json.dumps(doc).encode()) == without_timings(json.dumps(other).encode())
