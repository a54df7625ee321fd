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
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

if typing.TYPE_CHECKING:  # the stages' options classes, for the typed attributes (loaded lazily below)
    from .alerts import AlertOptions
    from .asr import AsrOptions
    from .audio import AudioOptions
    from .emotion import EmotionOptions
    from .fusion import FusionOptions
    from .live.options import LiveOptions
    from .masking import MaskingOptions
    from .prosody import ProsodyOptions
    from .strain import StrainOptions
    from .text import TextOptions
    from .vad import VadOptions

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


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, field_type: Any, *, key: str) -> Any:
    """``value`` checked against the field's annotation (and TOML lists turned into tuples).

    A wrong type is a ConfigError naming the key and the type expected: ``cpu_threads = "4"`` must not
    load as a string and fail later, deep inside a stage. An int is accepted where a float is expected
    (TOML writes ``1`` for ``1.0``); a bool is never a number.
    """
    origin = typing.get_origin(field_type)
    args = typing.get_args(field_type)
    if field_type is Any or field_type is None:
        return tuple(value) if isinstance(value, list) else value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key=key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key} must be {_type_name(field_type)}, not {type(value).__name__} ({value!r})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, not {value!r}")
        return value
    if origin is tuple or field_type is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be an array ({_type_name(field_type)}), not "
                              f"{type(value).__name__} ({value!r})")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key=f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key} must have {len(args)} items ({_type_name(field_type)}), not {len(value)}")
        return tuple(_coerce(v, t, key=f"{key}[{i}]") for i, (v, t) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or field_type in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, not {type(value).__name__}")
        return value
    if field_type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false (bool), not {type(value).__name__} ({value!r})")
        return value
    if field_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer (int), not {type(value).__name__} ({value!r})")
        return value
    if field_type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number (float), not {type(value).__name__} ({value!r})")
        return float(value)
    if field_type is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string (str), not {type(value).__name__} ({value!r})")
        return value
    # Any other annotation (a path type, a custom class): leave the value to the dataclass's own checks.
    return tuple(value) if isinstance(value, list) else value


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
    hints = typing.get_type_hints(cls)
    for name, value in section.items():
        nested = _nested_dataclass(cls, name)
        if nested is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{where}.{name}] must be a table")
            kwargs[name] = build_options(nested, value, where=f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, hints.get(name, Any), key=f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [{where}] options: {exc}") from exc


def _nested_dataclass(cls: type, name: str) -> type | None:
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
    """Every stage's options as a typed attribute (``config.asr.beam_size``), plus the merged raw tables
    (recorded in results for reproducibility). Built by :func:`load_config`; frozen."""

    audio: AudioOptions
    vad: VadOptions
    asr: AsrOptions
    prosody: ProsodyOptions
    emotion: EmotionOptions
    text: TextOptions
    fusion: FusionOptions
    alerts: AlertOptions
    strain: StrainOptions
    masking: MaskingOptions
    output: Any   # pipeline.batch.OutputOptions (batch imports this module: not imported back)
    live: LiveOptions
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [name for name in SECTIONS if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"config is missing section(s) {missing}")

    @property
    def sections(self) -> Mapping[str, Any]:
        return {name: getattr(self, name) for name in SECTIONS}

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some options of one section changed (used by CLI flags)."""
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; valid: {sorted(SECTIONS)}")
        raw = dict(self.raw)
        raw[section] = {**raw.get(section, {}), **changes}
        return dataclasses.replace(self, raw=raw, **{section: dataclasses.replace(getattr(self, section), **changes)})


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
    return Config(**sections, raw=raw)
