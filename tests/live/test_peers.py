"""Real protocol peers into a live service running the real engine: a real softphone (baresip) places a
SIP call, sipp streams RTP from a scripted SIP call, streamdouble plays a Twilio Media Stream — all three
at once, in real time, with the escalating sample. Each yields the call's JSON and a supervisor_takeover
alert both on the live feed and at a webhook receiver."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import encode_mulaw
from pipeline.live.server import LiveService
from pipeline.outputs.store import Store

from live_fakes import TOKEN, live_options
from live_harness import ServiceThread, WebhookReceiver, collect_feed, free_port, until

from support import skip_or_fail  # noqa: E402

pytestmark = pytest.mark.peers
DATA = Path(__file__).with_name("data")


def need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        skip_or_fail(f"real peer(s) {', '.join(missing)} not installed "
                     "(apt-get install baresip-core sip-tester; pip install streamdouble)", flag="CALLPULSE_REQUIRE_PEERS")


def baresip_config(folder: Path, wav: Path) -> Path:
    conf = folder / "baresip"
    conf.mkdir()
    (conf / "config").write_text(
        "module_path /usr/lib/baresip/modules\n"
        "sip_listen 127.0.0.1:0\n"
        f"audio_source aufile,{wav}\n"
        "audio_player aubridge,nil\naudio_alert aubridge,nil\n"
        "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule account.so\nmodule menu.so\n")
    # The agent's softphone: its SIP user is the agent id (live.sip_agent_headers includes "From").
    (conf / "accounts").write_text("<sip:a17@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    return conf


def test_baresip_sipp_and_streamdouble_calls_each_raise_a_takeover_on_the_feed_and_the_webhook(
        tmp_path, real_engine, escalating):
    need("baresip", "sipp", "streamdouble")
    sr = escalating["sr"]
    caller, agent = escalating["caller"], escalating["agent"]
    caller_wav, agent_wav = tmp_path / "caller.wav", tmp_path / "agent.wav"
    sf.write(caller_wav, caller, sr, subtype="PCM_16")
    sf.write(agent_wav, agent, sr, subtype="PCM_16")
    ulaw = tmp_path / "caller.ulaw"
    ulaw.write_bytes(encode_mulaw(caller if sr == 8000 else np.asarray(caller)))  # raw, no header: sipp sends it as is
    assert sr == 8000, "the sample is telephone-band 8 kHz"
    duration_s = caller.size / sr
    scenario = (DATA / "sipp_uac_pcmu.xml").read_text().replace("@FILE@", str(ulaw)).replace(
        "@PAUSE_MS@", str(int(duration_s * 1000) + 300)).replace("@AGENT@", "a18")
    (tmp_path / "uac.xml").write_text(scenario)

    receiver = WebhookReceiver(free_port())
    store = Store.open(tmp_path / "live.sqlite")
    options = live_options(webhook_urls=(receiver.url,), sip_agent_headers=("X-Agent-Id", "From"),
                           webhook_backoff_initial_s=0.2, webhook_backoff_max_s=1.0)
    with ServiceThread(lambda: LiveService(engine=real_engine, store=store, options=options)) as st:
        b = st.bound
        st.run(receiver.start(), timeout_s=10)
        feed = st.spawn(collect_feed(f"{b.http}/api/feed", TOKEN, timeout_s=duration_s + 60,
                                     until=lambda evs: sum(k == "alert" for k, _ in evs) >= 3))
        peers = [
            subprocess.Popen(["baresip", "-f", str(baresip_config(tmp_path, caller_wav)),
                              "-e", f"/dial sip:analyze@127.0.0.1:{b.sip_port}", "-t", str(int(duration_s) + 15)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen(["sipp", "-sf", str(tmp_path / "uac.xml"), "-m", "1", "-i", "127.0.0.1",
                              "-p", str(free_port(2)), "-mi", "127.0.0.1", "-mp", str(free_port(2)), "-s", "analyze",
                              "-timeout", f"{int(duration_s) + 30}s", "-nostdin", f"127.0.0.1:{b.sip_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen(["streamdouble", "call", "--fork", "--track", "both", "--audio", str(caller_wav),
                              "--agent-audio", str(agent_wav), "--param", "agentId=a19", "--quiet", "--allow-no-audio",
                              f"{b.ws}/tap/twilio?token={TOKEN}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            codes = [p.wait(timeout=duration_s + 45) for p in peers]
        finally:
            for p in peers:
                if p.poll() is None:
                    p.kill()
        events = feed.result(timeout=60)
        st.run(until(lambda: len(st.service.calls.live) == 0, timeout_s=30, what="all calls ended"), timeout_s=40)
        st.run(until(lambda: len(receiver.accepted) >= 3, timeout_s=20, what="3 webhooks"), timeout_s=30)
        st.run(receiver.stop(), timeout_s=10)
        sources = sorted(c.meta.source for c in st.service.calls.recent)

    assert codes[1] == 0, "sipp completed its scenario"
    assert sources == ["tap:sip", "tap:sip", "tap:twilio"]
    alerts = [e for k, e in events if k == "alert" and e["action"] == "supervisor_takeover"]
    assert {a["agent_id"] for a in alerts} == {"a17", "a18", "a19"}
    for call in st.service.calls.recent:
        assert call.result is not None and call.result["schema"] == "callpulse.call/1"
        assert call.result["duration_s"] == pytest.approx(duration_s, abs=1.5)
        assert store.get_call(call.call_id) is not None
        assert call.result["alerts"], f"{call.meta.source}: the escalating caller raised an alert"
    assert {body["agent_id"] for body in receiver.accepted.values()} == {"a17", "a18", "a19"}
    assert all(key == body["id"] for key, body in receiver.requests)


def test_streamdouble_with_packet_loss_and_jitter_keeps_the_call_clock(tmp_path):
    """Lost Twilio frames show up as timestamp jumps: the call still lasts as long as the audio sent,
    with the lost time filled by silence, not squeezed out."""
    need("streamdouble")
    from live_fakes import FakeEngine, FakeStore, fake_call_info, loud_call

    agent, caller = loud_call(6.0)
    sf.write(tmp_path / "c.wav", caller, 8000, subtype="PCM_16")
    sf.write(tmp_path / "a.wav", agent, 8000, subtype="PCM_16")
    with ServiceThread(lambda: LiveService(engine=FakeEngine(), store=FakeStore(), options=live_options(),
                                           call_info=fake_call_info)) as st:
        proc = subprocess.run(["streamdouble", "call", "--fork", "--track", "both", "--audio", str(tmp_path / "c.wav"),
                               "--agent-audio", str(tmp_path / "a.wav"), "--packet-loss", "0.1", "--jitter", "40",
                               "--chaos-seed", "7", "--quiet", "--allow-no-audio", f"{st.bound.ws}/tap/twilio?token={TOKEN}"],
                              capture_output=True, text=True, timeout=60)
        st.run(until(lambda: not st.service.calls.live and st.service.calls.recent, timeout_s=20, what="call ended"),
               timeout_s=30)
        call = st.service.calls.recent[0]
    assert proc.returncode == 0, proc.stderr[-500:]
    assert call.result["duration_s"] == pytest.approx(6.0, abs=0.1)
    assert call.gap_samples >= 0.05 * 6.0 * 8000, "about 10% of the caller's frames were lost and filled"
    assert call.malformed == 0


def test_ffmpeg_rtp_into_a_sip_dialog_arrives_as_the_callers_audio(tmp_path):
    """ffmpeg's own RTP muxer (exact 20 ms PCMU packets) streams into a SIP call set up by our client:
    the call's audio is the file's, to G.711 precision, with no loss and no malformed packets."""
    need("ffmpeg")
    from pipeline.live.replay import SipDialogClient
    from live_fakes import FakeEngine, FakeStore, fake_call_info, loud_call

    _, caller = loud_call(3.0)
    wav = tmp_path / "caller.wav"
    sf.write(wav, caller, 8000, subtype="PCM_16")
    engine = FakeEngine()
    with ServiceThread(lambda: LiveService(engine=engine, store=FakeStore(), options=live_options(),
                                           call_info=fake_call_info)) as st:
        dialog = SipDialogClient(f"sip:analyze@127.0.0.1:{st.bound.sip_port}", call_id="ffmpeg-1", agent_id="a20",
                                 recording=False)
        targets = st.run(dialog.open(), timeout_s=15)
        addr, port, pt = targets[0]
        assert pt == 0
        proc = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(wav),
                               "-af", "asetnsamples=n=160:p=0", "-acodec", "pcm_mulaw", "-ar", "8000", "-ac", "1",
                               "-f", "rtp", f"rtp://{addr}:{port}?pkt_size=172"], capture_output=True, text=True,
                              timeout=30)
        st.run(dialog.close(), timeout_s=15)
        st.run(until(lambda: not st.service.calls.live, timeout_s=15, what="call ended"), timeout_s=20)
        call = st.service.calls.recent[0]
        session = engine.sessions["ffmpeg-1"]
    assert proc.returncode == 0, proc.stderr[-500:]
    got = np.concatenate(session.caller) * 32768.0
    assert call.result["duration_s"] == pytest.approx(3.0, abs=0.05)
    n = min(got.size, caller.size)
    corr = np.corrcoef(got[:n], caller[:n].astype(np.float64))[0, 1]
    assert corr > 0.99, f"ffmpeg's RTP decodes to the file (correlation {corr:.4f})"
    assert call.malformed == 0 and call.meta.agent_id == "a20"
