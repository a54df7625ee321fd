"""`callpulse train fusion`: a bank's annotated calls give a fusion folder that `[fusion] model_dir` loads.

Real calls: a few EmoDB speakers' clips assembled into escalating and calm calls, as
`scripts/make_eval_calls.py` builds them, then the command itself (ASR off, cues recorded with the fusion
each refit produced)."""
from __future__ import annotations

import csv
import json

import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.evaluate.calls import CallBuildOptions, build_calls
from pipeline.fusion import load_learned

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

SPEAKERS = ("emodb_03", "emodb_08", "emodb_09", "emodb_10")


def _calls(tmp_path, data_dir):
    source = data_dir / "emodb" / "manifest.csv"
    with open(source, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["speaker"] in SPEAKERS and r["emotion"] in ("neutral", "angry")]
    clips = tmp_path / "clips.csv"
    with open(clips, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "file": str(source.parent / r["file"])} for r in rows)
    return build_calls(CallBuildOptions(source_manifest=str(clips), out=str(tmp_path / "calls"), telephone=False,
                                        neutral_turns=2, angry_turns=3, calm_turns=4), progress=lambda s: None)


def test_train_fusion_writes_a_fusion_the_config_loads_and_leaves_nothing_else(tmp_path, data_dir, capsys):
    manifest = _calls(tmp_path, data_dir)
    out = tmp_path / "bank-fusion"
    assert main(["train", "fusion", "--manifest", str(manifest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fit 1:" in printed and "recording the cues of 4 calls" in printed  # refitted on re-recorded cues
    assert sorted(p.name for p in out.iterdir()) == ["fusion.json"]            # no recording folders left
    model = load_learned(str(out))
    card = json.loads((out / "fusion.json").read_text(encoding="utf-8"))
    assert model.model_id == card["id"] and card["fitted_on"]["n_calls"] == 4
    config = load_config(overrides={"fusion": {"model": "learned", "model_dir": str(out)}})
    assert config.fusion.model_dir == str(out)
