"""Shared fixtures: the real data folder and one real engine per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import ROOT, SAMPLES, skip_or_fail, require_binary  # noqa: F401
from pg_support import postgres_server  # noqa: F401  (session-scoped real PostgreSQL, started on first use)


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
