"""The batch benchmark quotes the median of per-round ratios, each round's two runs timed back to back."""
from __future__ import annotations

import pytest

from pipeline.devtools.benchmark import BenchResult


def _result(rounds):
    return BenchResult(files=3, audio_s=212.0, load_s=4.0, rounds=tuple(rounds),
                       stage_s={"asr": 20.0, "vad": 2.0}, peak_rss_mb=700.0)


def test_the_ratio_is_the_median_of_each_rounds_own_ratio_not_a_ratio_of_medians():
    # a slow round (both runs slowed alike) must not skew the quoted ratio
    r = _result([(10.0, 10.0), (40.0, 20.0), (30.0, 25.0)])
    assert r.ratio == pytest.approx(1.2)  # the ratio of the medians would say 30 / 20 = 1.5
    assert r.pipeline_s == 30.0 and r.whisper_alone_s == 20.0


def test_several_rounds_are_printed_each_with_its_ratio():
    lines = _result([(25.0, 23.0), (26.0, 22.0), (24.0, 24.0)]).lines()
    rounds = next(line for line in lines if line.startswith("rounds"))
    assert "25.0 / 23.0 = 1.09" in rounds and "24.0 / 24.0 = 1.00" in rounds
    assert "pipeline / faster-whisper alone (medians): 1.09" in lines


def test_one_round_prints_no_rounds_line():
    assert not any(line.startswith("rounds") for line in _result([(25.0, 23.0)]).lines())
