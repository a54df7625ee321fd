"""One TOML config for every stage.

The shipped defaults are the file ``pipeline/callpulse.toml`` itself: every option of every stage is
written there with a comment. A user file given with ``--config`` overrides any subset of it. Each
``[section]`` becomes that stage's frozen options dataclass; unknown keys are errors, not silently
ignored, because a typo in a threshold must not pass unnoticed in a bank.
"""
from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("callpulse.toml")

# section name -> "module:OptionsClass"; each stage owns its options dataclass.
SECTIONS: dict[str, str] = {
    "audio": "pipeline.audio:AudioOptions",
    "vad": "pipeline.vad:VadOptions",
    "asr": "pipeline.asr:AsrOptions",
    "prosody": "pipeline.prosody:ProsodyOptions",
    "emotion": "pipeline.emotion:EmotionOptions",
    "text": "pipeline.text:TextOptions",
    "fusion": "pipeline.fusion:FusionOptions",
    "alerts": "pipeline.alerts:AlertOptions",
    "strain": "pipeline.strain:StrainOptions",
    "masking": "pipeline.masking:MaskingOptions",
    "output": "pipeline.batch:OutputOptions",
    "live": "pipeline.live.options:LiveOptions",
}


def _load_class(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _coerce(value: Any, field_type: Any) -> Any:
    # TOML arrays arrive as lists; frozen options hold tuples so they stay hashable and immutable.
    if isinstance(value, list):
        return tuple(_coerce(v, None) for v in value)
    return value


def build_options(cls: type, section: Mapping[str, Any], *, where: str) -> Any:
    """Build a (possibly nested) options dataclass from a TOML table, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(where + '.' + k for k in unknown)}; "
            f"valid keys in [{where}] are: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in section.items():
        ftype = fields[name].type
        nested = _nested_dataclass(cls, name)
        if nested is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{where}.{name}] must be a table")
            kwargs[name] = build_options(nested, value, where=f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, ftype)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [{where}] options: {exc}") from exc


def _nested_dataclass(cls: type, name: str) -> type | None:
    import typing

    hints = typing.get_type_hints(cls)
    hint = hints.get(name)
    return hint if dataclasses.is_dataclass(hint) else None


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


@dataclass(frozen=True)
class Config:
    """Every stage's options, plus the merged raw tables (recorded in results for reproducibility)."""

    sections: Mapping[str, Any]
    raw: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        sections = object.__getattribute__(self, "sections")
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some options of one section changed (used by CLI flags)."""
        sections = dict(self.sections)
        sections[section] = dataclasses.replace(sections[section], **changes)
        raw = dict(self.raw)
        raw[section] = {**raw.get(section, {}), **changes}
        return Config(sections=sections, raw=raw)


def load_config(path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load the shipped defaults, then the user's file (if any), then explicit overrides."""
    raw = read_toml(DEFAULT_CONFIG_PATH)
    if path is not None:
        raw = _merge(raw, read_toml(Path(path)))
    if overrides:
        raw = _merge(raw, overrides)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: {sorted(SECTIONS)}")
    sections = {}
    for name, spec in SECTIONS.items():
        sections[name] = build_options(_load_class(spec), raw.get(name, {}), where=name)
    return Config(sections=sections, raw=raw)
