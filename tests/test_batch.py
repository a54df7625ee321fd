"""`callpulse analyze`: many files, bad ones fail alone with a reason, outputs for the rest."""
from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.batch import analyze_paths, collect_inputs, read_manifest
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _zero_channel_wav(path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 1, 0, 8000, 16000, 2, 16)
    data = b"\x00\x00" * 800
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("calls")
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_bytes(b"Meeting notes, definitely not audio.\n" * 50)
    good = sf.read(SAMPLES / "calm_en.wav", dtype="int16")[0]
    sf.write(d / "truncated_src.wav", good, 8000, subtype="PCM_16")
    raw = (d / "truncated_src.wav").read_bytes()
    (d / "truncated.wav").write_bytes(raw[: len(raw) // 3])
    (d / "truncated_src.wav").unlink()
    _zero_channel_wav(d / "zero_channels.wav")
    sf.write(d / "six_channels.wav", np.zeros((8000, 6), np.int16), 8000, subtype="PCM_16")
    sf.write(d / "one_second.wav", np.zeros((8000, 2), np.int16), 8000, subtype="PCM_16")
    loud = np.clip(good.astype(np.int32) * 20, -32768, 32767).astype(np.int16)
    sf.write(d / "clipped.wav", loud, 8000, subtype="PCM_16")
    # three hours of digital silence, written in blocks (never held in memory at once)
    with sf.SoundFile(d / "three_hours_silence.wav", "w", 8000, 1, subtype="PCM_16") as fh:
        block = np.zeros(8000 * 600, np.int16)
        for _ in range(18):
            fh.write(block)
    shutil.copy(SAMPLES / "calm_en.wav", d / "good.wav")
    return d


@pytest.fixture(scope="module")
def bad_batch(bad_folder, acoustic_engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    results, failures = analyze_paths(collect_inputs([bad_folder]), out_dir=out, config=acoustic_engine.config,
                                      engine=acoustic_engine, progress=False)
    return out, {r["call_id"]: r for r in results}, dict(failures)


def test_each_unusable_file_fails_alone_with_its_reason(bad_batch, bad_folder):
    _, _, failures = bad_batch
    reasons = {Path(p).name: why for p, why in failures.items()}
    assert "empty" in reasons["empty.wav"]
    assert "not a readable audio file" in reasons["notes.wav"]
    assert "6 channels" in reasons["six_channels.wav"]
    assert "zero_channels.wav" in reasons
    assert set(reasons) <= {"empty.wav", "notes.wav", "six_channels.wav", "zero_channels.wav", "truncated.wav"}


def test_usable_files_still_get_full_results(bad_batch):
    out, results, _ = bad_batch
    for call_id in ("good", "one_second", "clipped", "three_hours_silence"):
        assert call_id in results, f"{call_id} should have been analysed"
        assert (out / f"{call_id}.json").exists() and (out / f"{call_id}.html").exists()
    assert (out / "summary.csv").exists() and (out / "index.html").exists() and (out / "results.sqlite").exists()


def test_a_truncated_file_gives_an_error_or_the_audio_that_is_there(bad_batch):
    _, results, failures = bad_batch
    if "truncated" in results:
        assert 0 < results["truncated"]["duration_s"] < 40
    else:
        assert any("truncated.wav" in p for p in failures)


def test_three_hours_of_silence_is_a_quiet_call_not_a_crash(bad_batch):
    _, results, _ = bad_batch
    r = results["three_hours_silence"]
    assert r["duration_s"] == pytest.approx(10800, abs=1)
    assert r["segments"] == [] and r["alerts"] == []
    assert len(r["timeline"]) == 10800


def test_one_second_call_has_a_timeline_point(bad_batch):
    _, results, _ = bad_batch
    assert len(results["one_second"]["timeline"]) == 1


def test_manifest_orders_each_agents_shift_in_time(tmp_path):
    m = tmp_path / "shift.csv"
    with open(m, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "agent_id", "started_at"])
        w.writerow(["b.wav", "a1", "2026-11-29T10:00:00"])
        w.writerow(["a.wav", "a1", "2026-11-29T09:00:00"])
    rows = read_manifest(m)
    assert [r.path.name for r in rows] == ["a.wav", "b.wav"]
    assert rows[0].path == tmp_path / "a.wav" and rows[0].agent_id == "a1"


def test_manifest_without_a_path_column_is_rejected(tmp_path):
    m = tmp_path / "bad.csv"
    m.write_text("file,agent\nx.wav,a1\n")
    with pytest.raises(ConfigError, match="path"):
        read_manifest(m)


def _cli(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_cli_exits_non_zero_and_lists_failures_after_writing_the_rest(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLES / "calm_en.wav", tmp_path / "in" / "ok.wav")
    (tmp_path / "in" / "broken.wav").write_bytes(b"garbage")
    proc = _cli("analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-asr")
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stderr and "broken.wav" in proc.stderr
    assert (tmp_path / "out" / "ok.json").exists()


@pytest.mark.slow
def test_whole_pipeline_runs_with_the_network_unavailable(tmp_path):
    """Every default model is embedded: analysing a call works inside a network namespace with no network."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to remove the network")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n not permitted here: {probe.stderr.decode().strip()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "pipeline.cli", "analyze",
                           str(SAMPLES / "calm_zh.wav"), "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "calm_zh.json").read_text(encoding="utf-8"))
    assert "zh" in result["languages"] and any(s["text"] for s in result["segments"])
