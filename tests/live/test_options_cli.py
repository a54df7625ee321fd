"""[live] options: the shipped TOML equals the dataclass defaults, bad values are refused with a reason,
and `callpulse serve` / `replay` are registered with the documented flags."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.cli import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.live.options import LiveOptions


def test_shipped_toml_live_section_equals_the_dataclass_defaults():
    config = load_config()
    assert config.live == LiveOptions()
    assert set(config.raw["live"]) == {f.name for f in dataclasses.fields(LiveOptions)}


@pytest.mark.parametrize("changes, match", [
    ({"twilio_inbound_role": "boss"}, "twilio_inbound_role"),
    ({"audio_fork_stereo_roles": ["caller", "caller"]}, "audio_fork_stereo_roles"),
    ({"port": 70000}, "port"),
    ({"webhook_states": ["sent"]}, "webhook_states"),
    ({"max_frame_bytes": 10}, "max_frame_bytes"),
    ({"no_such_option": 1}, "unknown option"),
])
def test_bad_live_options_are_config_errors_that_name_the_option(changes, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={"live": changes})


def test_serve_and_replay_are_registered_with_their_flags():
    parser = build_parser()
    serve = parser.parse_args(["serve", "--host", "127.0.0.1", "--port", "0", "--sip-port", "-1", "--insecure",
                               "--config", "x.toml"])
    assert (serve.port, serve.sip_port, serve.insecure, serve.config) == (0, -1, True, "x.toml")
    assert callable(serve.func)
    rep = parser.parse_args(["replay", "call.wav", "--format", "sip", "--to", "sip:analyze@127.0.0.1:5070",
                             "--agent-id", "a17", "--realtime"])
    assert (rep.format, rep.agent_id, rep.realtime) == ("sip", "a17", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "call.wav", "--format", "carrier-pigeon", "--to", "x"])
