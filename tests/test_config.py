"""One TOML config: the shipped file is the defaults, unknown keys are errors."""
from __future__ import annotations

import dataclasses
import tomllib

import pytest

from pipeline.config import DEFAULT_CONFIG_PATH, SECTIONS, _load_class, load_config
from pipeline.errors import ConfigError


def test_every_option_of_every_stage_is_written_in_the_shipped_file():
    raw = tomllib.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    for section, spec in SECTIONS.items():
        cls = _load_class(spec)
        table = raw.get(section, {})
        for f in dataclasses.fields(cls):
            assert f.name in table, f"[{section}] {f.name} is missing from {DEFAULT_CONFIG_PATH.name}"


def test_shipped_file_values_equal_the_options_dataclass_defaults():
    config = load_config()
    for section, spec in SECTIONS.items():
        cls = _load_class(spec)
        assert getattr(config, section) == cls(), f"[{section}] in the TOML differs from {cls.__name__}()"


def test_user_file_overrides_a_subset(tmp_path):
    user = tmp_path / "site.toml"
    user.write_text("[alerts.caller_agitation]\nraise_level = 0.7\n[asr]\nmodel = 'tiny.en'\n")
    config = load_config(user)
    assert config.alerts.caller_agitation.raise_level == 0.7
    assert config.alerts.caller_agitation.clear_level == load_config().alerts.caller_agitation.clear_level
    assert config.asr.model == "tiny.en"


def test_a_misspelt_option_is_rejected_with_the_valid_names(tmp_path):
    user = tmp_path / "typo.toml"
    user.write_text("[fusion]\nweight_anegr = 0.2\n")
    with pytest.raises(ConfigError, match="fusion.weight_anegr.*valid keys"):
        load_config(user)


def test_zero_is_a_valid_value_not_a_missing_one(tmp_path):
    user = tmp_path / "zero.toml"
    user.write_text("[alerts.caller_agitation]\nmin_sustain_s = 0.0\n[fusion]\nweight_overtalk = 0.0\n")
    config = load_config(user)
    assert config.alerts.caller_agitation.min_sustain_s == 0.0
    assert config.fusion.weight_overtalk == 0.0


def test_inconsistent_hysteresis_is_rejected(tmp_path):
    user = tmp_path / "bad.toml"
    user.write_text("[alerts.caller_agitation]\nraise_level = 0.2\nclear_level = 0.5\n")
    with pytest.raises(ConfigError, match="hysteresis"):
        load_config(user)


def test_broken_toml_names_the_file(tmp_path):
    user = tmp_path / "broken.toml"
    user.write_text("[asr\nmodel=")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(user)


@pytest.mark.parametrize("line, key, expected", [
    ('[asr]\ncpu_threads = "4"\n', "asr.cpu_threads", "int"),
    ("[asr]\nbeam_size = 1.5\n", "asr.beam_size", "int"),
    ("[asr]\nword_timestamps = 1\n", "asr.word_timestamps", "bool"),
    ('[fusion]\nweight_anger = "high"\n', "fusion.weight_anger", "float"),
    ("[fusion]\nweight_anger = true\n", "fusion.weight_anger", "float"),
    ('[asr]\nlanguages = "zh"\n', "asr.languages", "array"),
    ("[asr]\nlanguages = [1, 2]\n", r"asr.languages\[0\]", "str"),
    ('[alerts.caller_agitation]\nraise_level = "0.5"\n', "alerts.caller_agitation.raise_level", "float"),
])
def test_a_wrong_typed_value_names_the_key_and_the_expected_type(tmp_path, line, key, expected):
    user = tmp_path / "typed.toml"
    user.write_text(line)
    with pytest.raises(ConfigError, match=rf"{key} must be .*{expected}"):
        load_config(user)


def test_an_integer_is_accepted_where_a_number_is_expected(tmp_path):
    user = tmp_path / "int.toml"
    user.write_text("[fusion]\nweight_anger = 1\n")
    value = load_config(user).fusion.weight_anger
    assert value == 1.0 and isinstance(value, float)


def test_each_section_is_a_typed_attribute_of_the_frozen_config():
    import dataclasses

    from pipeline.asr import AsrOptions
    from pipeline.live.options import LiveOptions

    config = load_config()
    assert isinstance(config.asr, AsrOptions) and isinstance(config.live, LiveOptions)
    with pytest.raises(AttributeError):
        config.asrr  # a typo is an error, not a silently missing section
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.asr = None
    changed = config.replace("asr", beam_size=3)
    assert changed.asr.beam_size == 3 and config.asr.beam_size != 3 and changed.raw["asr"]["beam_size"] == 3
