"""Live tests run with no token from the environment (each test states its own)."""
import pytest


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch):
    monkeypatch.delenv("CALLPULSE_TOKEN", raising=False)
