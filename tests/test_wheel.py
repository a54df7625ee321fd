"""A built wheel is a working callpulse: it carries models/ and analyses a call away from the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_into_a_fresh_environment_finds_its_models_and_analyses_a_sample(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    (wheel,) = wheels.glob("callpulse-*.whl")

    # A fresh environment holding only the wheel; the heavy dependencies (torch, faster-whisper, ...)
    # are borrowed from this test's environment through a .pth line instead of being downloaded again.
    # Its .pth files are not processed from there, so the checkout's editable install is not visible.
    env_dir = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    fresh_python = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.run(
        [str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: without it pip first uninstalls this environment's own (editable) callpulse
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q",
                    "--prefix", str(env_dir), str(wheel)], check=True, capture_output=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CALLPULSE_MODELS", "PYTHONPATH")}
    where = subprocess.run([str(fresh_python), "-c",
                            "import pipeline, pipeline.resources as r; print(pipeline.__file__); "
                            "print(r.models_root())"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(where[0]).is_relative_to(env_dir), f"imported the checkout, not the wheel: {where[0]}"
    assert Path(where[1]).is_relative_to(env_dir / "share" / "callpulse"), where[1]

    out = work / "results"
    run = subprocess.run([str(fresh_python), "-m", "pipeline.cli", "analyze", str(REPO / "samples" / "calm_en.wav"),
                          "--out", str(out)], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "calm_en.json").read_text())
    assert result["summary"]["emotion_source"].startswith("model:"), "the emotion model was not found"
    assert any(seg["text"] for seg in result["segments"]), "no transcript: ASR or the text stage did not run"
    mine = subprocess.run([sys.executable, "-m", "pip", "show", "callpulse"], capture_output=True, text=True)
    assert mine.returncode == 0, "installing the wheel elsewhere removed this environment's callpulse"
