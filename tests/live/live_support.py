"""Constants shared by the live tests."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ESCALATING = REPO / "samples" / "escalating_en.wav"
