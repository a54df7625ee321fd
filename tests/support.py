"""Helpers shared by test modules (import as `from support import ...`)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def load_script(name: str):
    """A module of ``scripts/`` (not a package), loaded once per test session."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


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
