"""Streaming and batch give the same per-call JSON on the same audio, with ASR on, to the last digit:
the escalating call streamed through the audio-fork tap (lossless L16, 20 ms frames) and through Twilio
(mu-law, 20 ms), each against batch on a file of exactly the samples the tap carried (the replay tool's
int16, after the same mu-law round trip for Twilio). Live hands Whisper windows to its ASR pool; each
window's text counts from a tick fixed in call time (``[asr] apply_delay_s``), so it lands where batch
with live timing (``live_timing=True``, as `evaluate alerts` runs it) puts it. Only wall-clock fields
may differ."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.audio import decode_mulaw, encode_mulaw
from pipeline.batch import analyze_file
from pipeline.engine import Engine
from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_support import ESCALATING
from live_fakes import TOKEN, FakeStore, run_live

pytestmark = pytest.mark.slow

WALL_CLOCK = ("processing_s", "stage_s")  # summary fields that measure this machine, not the call


def comparable(result: dict) -> dict:
    r = json.loads(json.dumps(result))
    for key in WALL_CLOCK:
        r["summary"].pop(key, None)
    r.pop("source")       # the file's path vs the tap's name
    r.pop("started_at")   # live stamps the wall-clock start; batch has none
    return r


@pytest.fixture(scope="module")
def patient_engine(engine):
    """The real engine with ASR, waiting as long as it takes for a late window (a busy test machine
    must not turn a wait into a late text; giving up after apply_wait_s is tested in test_engine)."""
    return Engine(engine.config.replace("asr", apply_wait_s=1e6), vad=engine.vad, transcriber=engine.transcriber,
                  extractor=engine.extractor, emotion=engine.emotion, text=engine.text, shifts=engine.shifts)


def _as_carried(call: ReplayCall, fmt: str, out):
    """A stereo file (agent, caller) of the int16 samples the tap ``fmt`` delivers for ``call``."""
    import soundfile as sf

    if fmt == "twilio":
        agent, caller = call.at_rate(8000)
        agent, caller = decode_mulaw(encode_mulaw(agent)), decode_mulaw(encode_mulaw(caller))
        sr = 8000
    else:
        agent, caller, sr = call.agent, call.caller, call.sample_rate_hz
    sf.write(out, np.stack([agent, caller], axis=1), sr, subtype="PCM_16")
    return out


@pytest.mark.parametrize("fmt", ["audio-fork", "twilio"])
def test_streamed_call_gives_batch_json_with_asr_on(patient_engine, fmt, tmp_path):
    if not ESCALATING.exists():
        pytest.skip(f"{ESCALATING} is missing")
    call_id = f"live-{fmt}"
    call = ReplayCall.from_file(str(ESCALATING), agent_channel=0, call_id=call_id, agent_id=None)
    carried = _as_carried(call, fmt, tmp_path / f"{fmt}.wav")
    batch = analyze_file(carried, engine=patient_engine, call_id=call_id, agent_id=None, agent_channel=0,
                         live_timing=True)

    async def scenario(r):
        await replay(call, fmt=fmt, to=f"{r.bound.ws}/tap/{fmt}", token=TOKEN, speed=0)
        return await wait_for_result(r.bound.http, call.call_id, token=TOKEN, timeout_s=300)

    live = run_live(scenario, engine=patient_engine, store=FakeStore(), timeout_s=400)["result"]
    assert [a["action"] for a in batch["alerts"]] == ["supervisor_takeover"]
    assert any(s["text"] for s in batch["segments"]), "ASR is on: the call has text"
    assert comparable(live) == comparable(batch)
