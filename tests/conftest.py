"""Shared fixtures: the real data folder and one real engine per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _require(flag: str) -> bool:
    return os.environ.get(flag, "") not in ("", "0", "false", "no")


def skip_or_fail(reason: str, *, flag: str = "CALLPULSE_REQUIRE_DATA") -> None:
    """Skip with a reason, or fail when CI demands the resource (CALLPULSE_REQUIRE_*=1)."""
    if _require(flag):
        pytest.fail(f"{reason} (required because {flag}=1)")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (scripts/system_packages.sh installs it)",
                     flag="CALLPULSE_REQUIRE_PEERS")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("CALLPULSE_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        skip_or_fail(f"shared data folder {path} not found; set CALLPULSE_DATA")
    return path


@pytest.fixture(scope="session")
def config():
    from pipeline.config import load_config

    return load_config()


@pytest.fixture(scope="session")
def engine(config):
    """The real engine with the default (embedded, multilingual base) models, loaded once."""
    from pipeline.engine import Engine

    return Engine.load(config)


@pytest.fixture(scope="session")
def acoustic_engine(config):
    """The real engine without ASR: for tests about the acoustic path, alerts and inputs."""
    from pipeline.engine import Engine

    return Engine.load(config.replace("asr", enabled=False))
