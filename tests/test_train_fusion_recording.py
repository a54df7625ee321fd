"""Fusion fitting records every call's cues with the fusion that will score them (issue 9).

The cues depend on the fusion the engine runs: a reading teaches the caller's baselines only while the
tracker's level is below ``clear_level``. So a fit is re-recorded with and refitted, and cue caches are
keyed by the fusion's id.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.fusion import load_learned
from pipeline.training import fusion as FT

from fusion_calls import synthetic_calls


def _calls(corpus: str, seed: int, fusion: FT.CueFusion, *, scale: float = 1.0, n: int = 4) -> list[FT.CallCues]:
    """Synthetic calls as a recorder would give them with ``fusion``: a fusion that rises keeps the
    caller's baseline from learning the anger, so the recorded prosody stays higher after the onset."""
    lift = 0.0 if fusion.model.model_id == "fusion-silent" else 0.3
    return synthetic_calls(corpus, seed, n=n, scale=scale, z_after=0.3 + lift, arousal_lift=0.0,
                           fusion_id=fusion.fusion_id)


class FakeRecorder:
    """record(fusion, scored_only) over corpora A, B, C; remembers what it was asked for."""

    def __init__(self, c_scale: float = 1.0):
        self.c_scale = c_scale
        self.asked: list[tuple[str, bool]] = []

    def __call__(self, fusion: FT.CueFusion, scored_only: bool, scored: str | None = None) -> list[FT.CallCues]:
        self.asked.append((fusion.fusion_id, scored_only))
        corpora = [scored] if scored_only and scored else ["A", "B", "C"]
        return [c for k, corpus in enumerate("ABC") if corpus in corpora
                for c in _calls(corpus, k, fusion, scale=self.c_scale if corpus == "C" else 1.0)]


def test_the_scored_cues_are_recorded_with_the_fusion_that_scores_them():
    record = FakeRecorder()
    refit = FT.refit_recorded(record, fit_on=lambda c: True, max_rounds=2, progress=lambda s: None)
    assert record.asked[0] == (FT.silent_fusion().fusion_id, False)     # it starts with no feedback
    assert refit.fusion.fusion_id != FT.silent_fusion().fusion_id
    assert {c.fusion_id for c in refit.calls} == {refit.fusion.fusion_id}
    assert record.asked[-1][0] == refit.fusion.fusion_id
    # each fit is trained on cues recorded with the fusion before it
    assert [r["on_cues_of"] for r in refit.rounds][0] == FT.silent_fusion().fusion_id
    assert len(refit.rounds) <= 2


def test_a_refit_that_stops_moving_keeps_the_fusion_its_cues_were_recorded_with():
    record = FakeRecorder()
    refit = FT.refit_recorded(record, fit_on=lambda c: True, max_rounds=3, tol=np.inf, progress=lambda s: None)
    # round 2 refits on round-1 cues and has not moved (tol = inf): the round-1 fit is kept, not re-recorded
    assert len(refit.rounds) == 2 and refit.rounds[1]["on_cues_of"] == refit.fusion.fusion_id
    assert [a for a, _ in record.asked] == [FT.silent_fusion().fusion_id, refit.fusion.fusion_id]


def test_loco_refit_never_fits_on_the_corpus_it_scores_and_scores_its_own_recording():
    def run(c_scale):
        rec = FakeRecorder(c_scale)
        loco, refits = FT.loco_refit(lambda held, f, s: rec(f, s, held), corpora="ABC", progress=lambda s: None)
        return loco, refits

    (base, base_refits), (moved, _) = run(1.0), run(0.3)
    assert moved["C"]["model"] == base["C"]["model"] and moved["C"]["timing"] == base["C"]["timing"]
    assert moved["C"]["fit_on"] == ["A", "B"]
    assert moved["A"]["model"] != base["A"]["model"]          # C's calls do train the other folds
    for held, refit in base_refits.items():
        scored = [c for c in refit.calls if c.corpus == held]
        assert scored and {c.fusion_id for c in scored} == {base[held]["fusion_id"]}


def _fusion(weight: float) -> FT.CueFusion:
    model = FT.LearnedFusion(tuple([weight] + [0.0] * (len(FT.MODEL_FEATURES) - 1)), -1.0, f"fusion-lr-test{weight:g}")
    return FT.CueFusion(model, FT.Timing(rise_tau_s=2.0, fall_tau_s=6.0, raise_level=0.85, min_sustain_s=3.0))


def _config(fusion: FT.CueFusion, root):
    load_learned.cache_clear()
    return load_config(overrides=fusion.config_overrides(fusion.write(root), clear_level=0.3))


def test_an_engine_that_runs_another_fusion_may_not_record_its_cues(tmp_path):
    a, b = _fusion(0.5), _fusion(0.7)
    config = _config(a, tmp_path)
    assert config.fusion.rise_tau_s == 2.0 and config.alerts.caller_agitation.raise_level == 0.85
    FT.check_engine_runs(config, a)
    with pytest.raises(ConfigError, match="fusion-lr-test0.5.*fusion-lr-test0.7"):
        FT.check_engine_runs(config, b)
    late = FT.CueFusion(a.model, FT.Timing(rise_tau_s=0.5, fall_tau_s=6.0, raise_level=0.85, min_sustain_s=3.0))
    with pytest.raises(ConfigError, match="timing"):
        FT.check_engine_runs(config, late)
    with pytest.raises(ConfigError, match="rules"):
        FT.check_engine_runs(load_config(overrides={"fusion": {"model": "rules"}}), a)


def test_cues_cached_for_one_fusion_are_never_handed_to_another(tmp_path, monkeypatch):
    recorded: list[str] = []

    def fake_record_call(path, *, engine, config, agent_channel, call_id):
        recorded.append(config.fusion.model_dir)
        t = np.arange(1.0, 4.0)
        return t, np.zeros((3, len(FT.FEATURES))), np.zeros(3), 3.0

    monkeypatch.setattr(FT, "record_call", fake_record_call)
    rows = [{"path": "x.wav", "agent_channel": 0, "onset_s": None, "kind": "calm", "variant": "all",
             "corpus": "A", "call_id": "calm-0"}]
    a, b = _fusion(0.5), _fusion(0.7)
    engine_a = types.SimpleNamespace(config=_config(a, tmp_path / "fusions"))
    engine_b = types.SimpleNamespace(config=_config(b, tmp_path / "fusions"))
    first = FT.record_calls(rows, engine=engine_a, fusion=a, cache_dir=tmp_path / "cues")
    again = FT.record_calls(rows, engine=engine_a, fusion=a, cache_dir=tmp_path / "cues")
    other = FT.record_calls(rows, engine=engine_b, fusion=b, cache_dir=tmp_path / "cues")
    assert len(recorded) == 2 and a.fusion_id in recorded[0] and b.fusion_id in recorded[1]
    assert first[0].fusion_id == again[0].fusion_id == a.fusion_id and other[0].fusion_id == b.fusion_id
    with pytest.raises(ConfigError, match="fusion"):
        FT.record_calls(rows, engine=engine_a, fusion=b, cache_dir=tmp_path / "cues")
    with pytest.raises(ConfigError, match="fusion the cues will be scored with"):
        FT.record_calls(rows, engine=engine_a)


def test_the_window_memo_gives_the_models_own_results_and_computes_each_window_once(tmp_path):
    calls = []

    class Extractor:
        def vector(self, y, *, sr):
            calls.append(len(y))
            return ("feats", np.array([y.sum(), float(sr)]))

    engine = types.SimpleNamespace(extractor=Extractor(), vad=object())
    y1, y2 = np.ones(160, np.float32), np.arange(160, dtype=np.float32)
    with FT.WindowMemo(engine, tmp_path) as memo:
        memo.open_call("A/call")
        first = engine.extractor.vector(y1, sr=16000)
        first[1][0] = -1.0                                   # a caller's change does not reach the memo
        assert engine.extractor.vector(y1, sr=16000)[1][0] == 160.0 and len(calls) == 1
        engine.extractor.vector(y2, sr=16000)
        memo.close_call()
    assert isinstance(engine.extractor, Extractor)          # the engine gets its own models back
    with FT.WindowMemo(engine, tmp_path) as memo:
        memo.open_call("A/call")                            # a later recording of the call reads the disk
        assert engine.extractor.vector(y2, sr=16000)[1][0] == y2.sum() and len(calls) == 2
        engine.extractor.vector(y1, sr=8000)                # another rate is another window
        assert len(calls) == 3


def test_cues_remember_the_analysis_window_they_were_read_over_and_old_caches_read_as_2_s():
    from dataclasses import replace

    cue = replace(synthetic_calls("EmoDB", 3, n=1)[0], window_s=1.5)
    back = FT.CallCues.from_json(cue.to_json())
    assert back.window_s == 1.5
    old = {k: v for k, v in cue.to_json().items() if k != "window_s"}   # a cache written before the setting
    assert FT.CallCues.from_json(old).window_s == 2.0
