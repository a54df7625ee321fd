"""The evaluation suite (``callpulse evaluate all``) and how evaluation reads its config.

An evaluation config is an ordinary callpulse config file (any subset of ``pipeline/callpulse.toml``,
so the pipeline being measured is exactly the one batch runs with that file) that may also hold an
``[evaluate]`` table describing the suite::

    [evaluate]
    evaluations = ["asr", "emotion", "alerts", "text"]
    workers = 1
    emotion_variants = ["native", "8k-mulaw", "native+both+speaker-baseline", ...]   # rate[+features][+speaker-baseline]
    [evaluate.asr]
    manifest = "../shared/data/asr/manifest.csv"   # relative paths: from this file's folder
    [evaluate.alerts]
    manifest = "eval/calls/calls.csv"

Unknown keys are errors, as everywhere in callpulse config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, build_options, load_config, read_toml
from ..errors import ConfigError
from .alerts import AlertEvalOptions
from .asr import AsrEvalOptions
from .emotion import EmotionEvalOptions
from .text import TextEvalOptions

EVALUATIONS = ("asr", "emotion", "alerts", "text")
# rate [+ features: encoder | both; prosody when absent] [+ speaker-baseline]
EMOTION_VARIANTS = tuple(f"{rate}{feat}{base}" for feat in ("", "+encoder", "+both") for base in ("", "+speaker-baseline")
                         for rate in ("native", "8k-mulaw"))


@dataclass(frozen=True)
class SuiteOptions:
    """The ``[evaluate]`` table: which evaluations ``all`` runs, on what, with how many workers."""

    evaluations: tuple[str, ...] = EVALUATIONS
    workers: int = 1
    emotion_variants: tuple[str, ...] = EMOTION_VARIANTS
    asr: AsrEvalOptions = AsrEvalOptions()
    emotion: EmotionEvalOptions = EmotionEvalOptions()
    alerts: AlertEvalOptions = AlertEvalOptions()
    text: TextEvalOptions = TextEvalOptions()

    def __post_init__(self) -> None:
        bad = [e for e in self.evaluations if e not in EVALUATIONS]
        if bad:
            raise ValueError(f"unknown evaluation(s) {bad}; choose from {EVALUATIONS}")
        bad = [v for v in self.emotion_variants if v not in EMOTION_VARIANTS]
        if bad:
            raise ValueError(f"unknown emotion variant(s) {bad}; choose from {EMOTION_VARIANTS}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


def emotion_variant_options(base: EmotionEvalOptions, variant: str) -> EmotionEvalOptions:
    parts = variant.split("+")
    features = next((p for p in parts if p in ("encoder", "both")), "prosody")
    return dataclasses.replace(base, telephone=variant.startswith("8k"), features=features,
                               speaker_baseline=variant.endswith("speaker-baseline"))


def _rebase(value: str, base: Path) -> str:
    return value if not value or Path(value).is_absolute() else str(base / value)


def _resolve_paths(suite: SuiteOptions, base: Path) -> SuiteOptions:
    """Manifest paths in the file are relative to the file's folder, not to wherever callpulse runs."""
    return dataclasses.replace(
        suite,
        asr=dataclasses.replace(suite.asr, manifest=_rebase(suite.asr.manifest, base), root=_rebase(suite.asr.root, base)),
        emotion=dataclasses.replace(suite.emotion, manifest=_rebase(suite.emotion.manifest, base),
                                    root=_rebase(suite.emotion.root, base)),
        alerts=dataclasses.replace(suite.alerts, manifest=_rebase(suite.alerts.manifest, base),
                                   root=_rebase(suite.alerts.root, base)),
        text=dataclasses.replace(suite.text, manifests=tuple(_rebase(m, base) for m in suite.text.manifests)),
    )


def load_eval_config(path: str | Path | None) -> tuple[Config, SuiteOptions]:
    """The pipeline config (shipped defaults + the file) and the suite from its ``[evaluate]`` table.

    Raises
    ------
    ConfigError
        Unreadable TOML, unknown sections or keys, invalid values.
    """
    if path is None:
        return load_config(None), SuiteOptions()
    raw: dict[str, Any] = dict(read_toml(Path(path)))
    table = raw.pop("evaluate", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [evaluate] must be a table")
    config = load_config(None, overrides=raw)
    suite = build_options(SuiteOptions, table, where="evaluate")
    return config, _resolve_paths(suite, Path(path).resolve().parent)
