"""The tap wire formats: each parser takes published-format bytes to the right audio and metadata, and
turns any other bytes into a TapProtocolError (never another exception, never a crash)."""
from __future__ import annotations

import base64
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audio import decode_mulaw, encode_alaw, encode_mulaw
from pipeline.errors import TapProtocolError
from pipeline.live.options import LiveOptions
from pipeline.live.taps import RoleAudio
from pipeline.live.taps import audiosocket as asock
from pipeline.live.taps import siprec, twilio
from pipeline.live.taps.aligner import Aligner
from pipeline.live.taps.audio_fork import AudioForkStream, metadata_message
from pipeline.live.taps.rtp import JitterBuffer, build_rtp, parse_rtp
from pipeline.live.taps.sip import build_sdp, choose_codec, parse_sdp, parse_sip, response_to

OPTS = LiveOptions()
FUZZ = settings(max_examples=150, deadline=None)


def ramp(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n) % 2000 - 1000).astype(np.int16)


# --- audio fork --------------------------------------------------------------------------------

def test_audio_fork_stereo_deinterleaves_caller_and_callee_into_roles():
    stream = AudioForkStream(OPTS, {"mix": "stereo", "rate": "16k"})
    meta = stream.on_text(metadata_message(call_id="fs-1", agent_id="a17", mix="stereo", rate_hz=16000))
    assert (meta.call_id, meta.agent_id, meta.sample_rate_hz, meta.layout) == ("fs-1", "a17", 16000, "stereo")
    caller, agent = ramp(640), -ramp(640)
    frame = np.stack([caller, agent], axis=1).astype("<i2").tobytes()
    out = stream.on_binary(frame)
    assert [a.role for a in out] == ["caller", "agent"]
    np.testing.assert_array_equal(out[0].pcm, caller)
    np.testing.assert_array_equal(out[1].pcm, agent)
    assert stream.on_binary(frame)[0].start_sample == 640


def test_audio_fork_mixed_is_one_mixed_channel_and_mono_is_the_caller():
    mixed = AudioForkStream(OPTS, {"mix": "mixed"})
    assert mixed.on_text("{}").layout == "mixed"
    assert mixed.on_binary(ramp(160).tobytes())[0].role == "mixed"
    mono = AudioForkStream(OPTS, {})
    mono.on_text('{"callId": "x"}')
    assert mono.on_binary(ramp(320).tobytes())[0].role == "caller"


def test_audio_fork_rejects_audio_before_metadata_and_misaligned_frames():
    stream = AudioForkStream(OPTS, {"mix": "stereo"})
    with pytest.raises(TapProtocolError, match="before the metadata"):
        stream.on_binary(b"\0" * 640)
    stream.on_text("{}")
    with pytest.raises(TapProtocolError, match="whole number"):
        stream.on_binary(b"\0" * 642)  # 2-channel frames are 4 bytes
    with pytest.raises(TapProtocolError, match="max_frame_bytes"):
        stream.on_binary(b"\0" * (OPTS.max_frame_bytes + 4))
    with pytest.raises(TapProtocolError, match="not supported"):
        AudioForkStream(OPTS, {"rate": "44k"}).on_text("{}")


@FUZZ
@given(st.text(max_size=300), st.binary(max_size=2000))
def test_audio_fork_any_input_is_audio_or_a_tap_protocol_error(text, data):
    stream = AudioForkStream(OPTS, {"mix": "stereo"})
    try:
        stream.on_text(text)
        out = stream.on_binary(data)
        assert all(a.pcm.dtype == np.int16 for a in out)
    except TapProtocolError:
        pass


# --- Twilio ------------------------------------------------------------------------------------

def test_twilio_maps_inbound_to_caller_outbound_to_agent_and_places_audio_by_timestamp():
    stream = twilio.TwilioStream(OPTS)
    assert stream.on_text(twilio.connected_message()) is None
    meta = stream.on_text(twilio.start_message(stream_sid="MZ1", call_sid="CA1", tracks=["inbound", "outbound"],
                                               params={"agentId": "a17"}))
    assert (meta.call_id, meta.agent_id, meta.sample_rate_hz) == ("CA1", "a17", 8000)
    pcm = ramp(160)
    inbound = stream.on_text(twilio.media_message(stream_sid="MZ1", seq=2, track="inbound", chunk=1,
                                                  timestamp_ms=40, pcm=pcm))
    assert inbound[0].role == "caller" and inbound[0].start_sample == 320
    np.testing.assert_array_equal(inbound[0].pcm, decode_mulaw(encode_mulaw(pcm)))
    outbound = stream.on_text(twilio.media_message(stream_sid="MZ1", seq=3, track="outbound", chunk=1,
                                                   timestamp_ms=0, pcm=pcm))
    assert outbound[0].role == "agent"
    assert isinstance(stream.on_text(twilio.stop_message(stream_sid="MZ1", call_sid="CA1", seq=4)),
                      twilio.TwilioEnd)


@pytest.mark.parametrize("message, match", [
    ("not json", "not JSON"),
    ('{"event": "media", "media": {"payload": "AAAA"}}', "before 'start'"),
    ('{"event": "bogus"}', "unknown Twilio event"),
    ('[1, 2]', "JSON object"),
])
def test_twilio_malformed_messages_say_what_is_wrong(message, match):
    with pytest.raises(TapProtocolError, match=match):
        twilio.TwilioStream(OPTS).on_text(message)


def test_twilio_rejects_bad_base64_and_foreign_media_formats():
    stream = twilio.TwilioStream(OPTS)
    stream.on_text(twilio.start_message(stream_sid="MZ", call_sid="CA", tracks=["inbound"], params={}))
    bad = {"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": "@@@"}}
    with pytest.raises(TapProtocolError, match="base64"):
        stream.on_text(json.dumps(bad))
    start = json.loads(twilio.start_message(stream_sid="MZ", call_sid="CA", tracks=["inbound"], params={}))
    start["start"]["mediaFormat"]["sampleRate"] = 16000
    with pytest.raises(TapProtocolError, match="8000"):
        twilio.TwilioStream(OPTS).on_text(json.dumps(start))


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                        ["event", "start", "media", "track", "payload", "timestamp", "tracks", "mediaFormat",
                         "customParameters", "callSid", "dtmf", "digit"]), c, max_size=5), max_leaves=20))
def test_twilio_any_json_is_handled_or_a_tap_protocol_error(doc):
    stream = twilio.TwilioStream(OPTS)
    stream.on_text(twilio.start_message(stream_sid="MZ", call_sid="CA", tracks=["inbound"], params={}))
    for message in (json.dumps(doc), json.dumps({"event": "media", "media": doc})):
        try:
            stream.on_text(message)
        except TapProtocolError:
            pass


# --- AudioSocket -------------------------------------------------------------------------------

def test_audiosocket_framing_survives_arbitrary_tcp_segmentation():
    call = "8f0e1a3c-7a5b-4d6e-9f10-112233445566"
    wire = asock.encode_uuid(call) + asock.encode_audio(ramp(160)) + asock.encode(asock.KIND_DTMF, b"5") \
        + asock.encode_audio(ramp(160, 160)) + asock.encode(asock.KIND_HANGUP)
    rng = random.Random(1)
    parser = asock.AudioSocketParser(max_payload_bytes=4096)
    messages = []
    i = 0
    while i < len(wire):
        n = rng.randint(1, 7)
        messages += parser.feed(wire[i:i + n])
        i += n
    kinds = [asock.interpret(m) for m in messages]
    assert kinds[0] == call and kinds[2] is None and kinds[-1] == "hangup"
    np.testing.assert_array_equal(kinds[1].pcm, ramp(160))
    assert kinds[1].rate_hz == 8000 and kinds[3].rate_hz == 8000


def test_audiosocket_oversized_message_is_skipped_and_the_stream_stays_in_step():
    parser = asock.AudioSocketParser(max_payload_bytes=1000)
    wire = asock.encode(0x10, b"\0" * 3000) + asock.encode_audio(ramp(160))
    messages = parser.feed(wire[:10]) + parser.feed(wire[10:])
    assert messages[0].error is not None and parser.malformed == 1
    with pytest.raises(TapProtocolError):
        asock.interpret(messages[0])
    np.testing.assert_array_equal(asock.interpret(messages[1]).pcm, ramp(160))


@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_audiosocket_any_bytes_parse_into_bounded_messages(data, step):
    parser = asock.AudioSocketParser(max_payload_bytes=512)
    for i in range(0, len(data), step):
        for message in parser.feed(data[i:i + step]):
            assert len(message.payload) <= 512
            try:
                asock.interpret(message)
            except TapProtocolError:
                pass
    assert len(parser._buf) <= 3 + 512


# --- RTP and the jitter buffer -----------------------------------------------------------------

def rtp_stream(n_packets: int, *, ssrc: int = 0x1234, seq0: int = 65530, ts0: int = 2**32 - 480, pt: int = 0):
    pcm = ramp(160 * n_packets)
    enc = encode_mulaw if pt == 0 else encode_alaw
    packets = [build_rtp(payload_type=pt, sequence=(seq0 + i) & 0xFFFF, timestamp=(ts0 + 160 * i) & 0xFFFFFFFF,
                         ssrc=ssrc, payload=enc(pcm[160 * i:160 * (i + 1)])) for i in range(n_packets)]
    return pcm, packets


def play(jb: JitterBuffer, packets: list[bytes]) -> np.ndarray:
    out = []
    for p in packets:
        out += jb.push(parse_rtp(p))
    out += jb.flush()
    expected = 0
    for pos, pcm in out:
        assert pos == expected, "jitter buffer output must be contiguous"
        expected += pcm.size
    return np.concatenate([pcm for _, pcm in out]) if out else np.zeros(0, np.int16)


def test_rtp_parser_handles_csrc_extension_and_padding():
    payload = b"\x01\x02\x03"
    packet = bytes([0x80 | 0x20 | 0x10 | 1, 0x08]) + (7).to_bytes(2, "big") + (99).to_bytes(4, "big") \
        + (5).to_bytes(4, "big") + b"CSRC" + b"\xbe\xde\x00\x01" + b"EXT1" + payload + b"\x00\x00\x03"
    parsed = parse_rtp(packet)
    assert (parsed.payload_type, parsed.sequence, parsed.timestamp, parsed.ssrc) == (8, 7, 99, 5)
    assert parsed.payload == payload


def test_jitter_buffer_in_order_stream_across_sequence_and_timestamp_wrap_is_exact():
    pcm, packets = rtp_stream(50)
    np.testing.assert_array_equal(play(JitterBuffer(), packets), decode_mulaw(encode_mulaw(pcm)))


def test_jitter_buffer_reorders_and_drops_duplicates():
    pcm, packets = rtp_stream(40)
    shuffled = packets[:]
    for i in range(0, 38, 3):
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    shuffled.insert(10, packets[9])
    shuffled.insert(20, packets[5])
    jb = JitterBuffer(depth_packets=3)
    np.testing.assert_array_equal(play(jb, shuffled), decode_mulaw(encode_mulaw(pcm)))
    assert jb.stats.duplicates + jb.stats.late == 2 and jb.stats.lost == 0


def test_jitter_buffer_fills_lost_packets_with_exactly_their_duration_of_silence():
    pcm, packets = rtp_stream(30)
    lost = {4, 5, 17}
    jb = JitterBuffer(depth_packets=2)
    out = play(jb, [p for i, p in enumerate(packets) if i not in lost])
    expected = decode_mulaw(encode_mulaw(pcm)).copy()
    for i in lost:
        expected[160 * i:160 * (i + 1)] = 0
    np.testing.assert_array_equal(out, expected)
    assert jb.stats.lost == 3 and jb.stats.silence_samples == 480


def test_jitter_buffer_continues_a_new_ssrc_right_after_the_old_one():
    pcm1, first = rtp_stream(10, ssrc=1)
    pcm2, second = rtp_stream(10, ssrc=2, seq0=100, ts0=777, pt=8)
    jb = JitterBuffer()
    out = play(jb, first + second)
    assert out.size == 3200 and jb.stats.ssrc_changes == 1
    np.testing.assert_array_equal(out[:1600], decode_mulaw(encode_mulaw(pcm1)))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=80), st.integers(0, 4))
def test_jitter_buffer_output_is_contiguous_and_bounded_for_any_arrival_order(arrivals, depth):
    _, packets = rtp_stream(41)
    jb = JitterBuffer(depth_packets=depth)
    out = play(jb, [packets[i] for i, keep in arrivals if keep] or packets[:1])
    assert out.size <= 41 * 160
    assert len(jb._pending) == 0


@FUZZ
@given(st.binary(max_size=400))
def test_rtp_parser_any_bytes_give_a_packet_or_a_tap_protocol_error(data):
    try:
        packet = parse_rtp(data)
        assert len(packet.payload) <= len(data)
    except TapProtocolError:
        pass


# --- the aligner -------------------------------------------------------------------------------

def test_aligner_places_parties_by_timestamp_and_pads_a_silent_party_after_the_skew_limit():
    al = Aligner(roles=("agent", "caller"), max_skew_samples=800, max_gap_samples=8000)
    al.push(RoleAudio("caller", ramp(1600), 0))
    block = al.pop()
    assert block.shape == (2, 800)  # the agent sent nothing: released up to the skew limit only
    assert not block[0].any()
    al.push(RoleAudio("agent", ramp(400), 1000))  # arrives late, partly inside the released region
    al.push(RoleAudio("caller", ramp(160, 1600), 1760))  # 160 samples lost before it
    final = al.pop(final=True)
    assert al.released_samples == 1920
    caller = np.concatenate([block[1], final[1]])
    np.testing.assert_array_equal(caller[:1600], ramp(1600))
    assert not caller[1600:1760].any()
    assert al.late_samples == 0 and final[0, 200:600].any()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["agent", "caller"]), st.integers(0, 400),
                          st.one_of(st.none(), st.integers(0, 4000))), max_size=40))
def test_aligner_releases_each_sample_of_the_call_clock_exactly_once(pushes):
    al = Aligner(roles=("agent", "caller"), max_skew_samples=320, max_gap_samples=2000)
    total = 0
    for role, n, start in pushes:
        al.push(RoleAudio(role, ramp(n), start))
        block = al.pop()
        if block is not None:
            assert block.shape[0] == 2
            total += block.shape[1]
    last = al.pop(final=True)
    total += 0 if last is None else last.shape[1]
    assert total == al.released_samples and al.held_samples == 0


# --- SIP, SDP, SIPREC --------------------------------------------------------------------------

INVITE = (
    "INVITE sip:analyze@127.0.0.1:5070 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds\r\n"
    "f: \"Bot\" <sip:bot@127.0.0.1>;tag=1928301774\r\n"
    "t: <sip:analyze@127.0.0.1>\r\n"
    "i: a84b4c76e66710@127.0.0.1\r\n"
    "CSeq: 314159 INVITE\r\n"
    "X-Agent-Id: a17\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {n}\r\n\r\n{body}")
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\n")


def test_sip_invite_parses_with_compact_headers_and_the_response_echoes_the_dialog():
    msg = parse_sip(INVITE.format(n=len(SDP), body=SDP).encode())
    assert msg.method == "INVITE" and msg.call_id == "a84b4c76e66710@127.0.0.1"
    assert msg.cseq == (314159, "INVITE") and msg.get("x-agent-id") == "a17"
    sdp = parse_sdp(msg.body)
    assert sdp.media[0].port == 40000 and choose_codec(sdp.media[0]) == 0
    answer = build_sdp(address="127.0.0.1", session_id=1, media=[(41000, 0, None, "recvonly")])
    resp = parse_sip(response_to(msg, 200, to_tag="xyz", body=answer, content_type="application/sdp").to_bytes())
    assert resp.status == 200 and resp.get("to").endswith(";tag=xyz")
    assert resp.get("via") == msg.get("via") and parse_sdp(resp.body).media[0].port == 41000


def test_siprec_metadata_maps_labels_to_agent_and_caller():
    xml = siprec.build_metadata(session_id="s1", caller_aor="sip:+8613800000000@pstn",
                                agent_aor="sip:agent-a17@bank", caller_label="10", agent_label="11")
    body = (b"--XX\r\nContent-Type: application/sdp\r\n\r\n" + SDP.encode() +
            b"\r\n--XX\r\nContent-Type: application/rs-metadata+xml\r\n\r\n" + xml + b"\r\n--XX--\r\n")
    parts = siprec.split_multipart('multipart/mixed;boundary="XX"', body)
    assert set(parts) == {"application/sdp", "application/rs-metadata+xml"}
    roles, agent_id = siprec.roles_by_label(siprec.parse_metadata(parts["application/rs-metadata+xml"]),
                                            agent_pattern="agent")
    assert roles == {"10": "caller", "11": "agent"} and agent_id == "agent-a17"
    with pytest.raises(TapProtocolError, match="DOCTYPE"):
        siprec.parse_metadata(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')


@FUZZ
@given(st.binary(max_size=600))
def test_sip_and_sdp_parsers_any_bytes_give_a_message_or_a_tap_protocol_error(data):
    for parse in (parse_sip, parse_sdp, siprec.parse_metadata,
                  lambda d: siprec.split_multipart("multipart/mixed; boundary=b", d)):
        try:
            parse(data)
        except TapProtocolError:
            pass


@FUZZ
@given(st.lists(st.sampled_from([
    "Via: SIP/2.0/UDP h;branch=z9", "Call-ID: x", "CSeq: 1 INVITE", "Content-Length: 5", "l: 99",
    " folded", "Bad Header", ":", "To: <sip:a@b>", "Content-Type: application/sdp"]), max_size=8),
    st.text(max_size=40))
def test_sip_parser_structured_fuzz(headers, body):
    data = ("INVITE sip:a@b SIP/2.0\r\n" + "\r\n".join(headers) + "\r\n\r\n" + body).encode()
    try:
        msg = parse_sip(data)
        msg.to_bytes()
    except TapProtocolError:
        pass


def test_base64_helper_roundtrip():  # Twilio payloads are standard base64 with padding
    pcm = ramp(160)
    msg = json.loads(twilio.media_message(stream_sid="s", seq=1, track="inbound", chunk=1, timestamp_ms=0, pcm=pcm))
    assert len(base64.b64decode(msg["media"]["payload"])) == 160
