"""Synthetic sample calls for newcomers and tests: espeak-ng speech, telephone band, G.711 mu-law.

Each call is a scripted dialogue. Every line is synthesised by espeak-ng with the speaking party's voice,
trimmed to its speech, resampled to 8 kHz, band-limited to the telephone band (300-3400 Hz) and levelled;
lines are then laid out on the party's own channel (agent = channel 0, caller = channel 1) with
turn-taking gaps drawn from a seeded generator. Line noise is added and the whole call goes through a real
G.711 mu-law encode/decode, so the WAV sounds like what a call recorder stores.

Agitation has to be audible in the voice, not only in the words, or the acoustic stages have nothing to
find: agitated lines are louder, higher, faster and brighter (a pre-emphasis tilt stands in for the flatter
spectrum of raised vocal effort).

The output is deterministic for a given espeak-ng build and seed: nothing depends on the clock or on a
global random state.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import soundfile as sf
from scipy import signal

from pipeline.audio import decode_mulaw, encode_mulaw
from pipeline.errors import SampleGenerationError

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 8000
AGENT_CHANNEL = 0
CALLER_CHANNEL = 1
DEFAULT_SEED = 20261129
# The committed samples/ were made with this espeak-ng; other builds speak slightly differently.
ESPEAK_VERSION_OF_SAMPLES = "1.51"

# espeak-ng always renders at 22050 Hz; 8000/22050 = 160/441 exactly, so a polyphase resampler is exact.
_ESPEAK_RATE_HZ = 22050
_TELEPHONE_BAND_HZ = (300.0, 3400.0)
_LINE_NOISE_DBFS = -50.0
_LEAD_IN_S = 0.6
_TAIL_S = 0.8
# espeak pads every utterance with silence; anything below this (relative to the line's peak) is padding.
_TRIM_REL_DB = -40.0
_SOFT_CLIP = 0.9

Speaker = Literal["agent", "caller"]


@dataclass(frozen=True)
class Voice:
    """How espeak-ng speaks one party in one state (calm or agitated)."""

    espeak_voice: str
    pitch_0_99: int
    speed_wpm: int
    level_dbfs: float
    # Pre-emphasis coefficient: 0 leaves the spectrum alone; ~0.6 tilts it up as raised effort does.
    brightness: float = 0.0
    # Pitch range in percent of the voice's own (SSML prosody range); agitated speech swings wider.
    pitch_range_pct: int = 100


@dataclass(frozen=True)
class Line:
    """One turn of the script.

    ``gap_s`` is the silence before this line starts, counted from the end of the previous line; None draws
    it from the call's seeded generator (0.3-1.5 s); a negative value makes this line start before the
    previous one ends (over-talk).
    """

    speaker: Speaker
    text: str
    spoken: str | None = None  # what espeak-ng reads when it differs from the transcript (pinyin)
    agitated: bool = False
    gap_s: float | None = None


@dataclass(frozen=True)
class CallScript:
    name: str
    language: str
    description: str
    agent_voice: Voice
    caller_voice: Voice
    lines: tuple[Line, ...]
    caller_agitated_voice: Voice | None = None


@dataclass(frozen=True)
class RenderedCall:
    audio_int16: np.ndarray  # shape (n_samples, 2): column 0 agent, column 1 caller
    annotation: dict


# --------------------------------------------------------------------------------------------------
# Speech synthesis


def _espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SampleGenerationError(
            "espeak-ng is not installed; install it with `apt-get install -y espeak-ng` and run "
            "scripts/make_samples.py again"
        )
    return path


def espeak_version() -> str:
    """The installed espeak-ng's version string, e.g. "1.51"."""
    proc = subprocess.run([_espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return next((w for w in words if w[:1].isdigit()), "unknown")


def synthesize_line(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return it as telephone-band float32 audio at 8 kHz.

    Leading and trailing padding is trimmed so the annotation's turn times are speech times.

    Returns
    -------
    np.ndarray [shape=(n,)], float32 at ``SAMPLE_RATE_HZ``, RMS at ``voice.level_dbfs``
    """
    with tempfile.TemporaryDirectory(prefix="callpulse-espeak-") as tmp:
        wav_path = Path(tmp) / "line.wav"
        cmd = [
            _espeak_binary(),
            "-v", voice.espeak_voice,
            "-p", str(voice.pitch_0_99),
            "-s", str(voice.speed_wpm),
            "-w", str(wav_path),
        ]
        if voice.pitch_range_pct != 100:
            # Only SSML reaches espeak-ng's pitch range; -p moves the level alone.
            cmd += ["-m", f'<speak><prosody range="{voice.pitch_range_pct}%">{xml_escape(text)}</prosody></speak>']
        else:
            cmd.append(text)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wav_path.exists():
            raise SampleGenerationError(
                f"espeak-ng failed (exit {proc.returncode}) for voice {voice.espeak_voice!r}: "
                f"{proc.stderr.strip()[:300]}; check the voice with `espeak-ng --voices`"
            )
        raw, rate = sf.read(wav_path, dtype="float32", always_2d=False)
    if rate != _ESPEAK_RATE_HZ:
        raise SampleGenerationError(f"espeak-ng wrote {rate} Hz audio; expected {_ESPEAK_RATE_HZ} Hz")
    if raw.ndim != 1 or raw.size == 0:
        raise SampleGenerationError(f"espeak-ng produced no mono audio for {text[:40]!r}")

    raw = _trim(raw)
    if voice.brightness > 0.0:
        raw = signal.lfilter([1.0, -voice.brightness], [1.0], raw).astype(np.float32)
    y = signal.resample_poly(raw, SAMPLE_RATE_HZ, _ESPEAK_RATE_HZ)
    sos = signal.butter(4, _TELEPHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    y = signal.sosfilt(sos, y)
    rms = float(np.sqrt(np.mean(y**2)))
    if rms <= 0.0:
        raise SampleGenerationError(f"espeak-ng produced silence for {text[:40]!r}")
    y = y * (10.0 ** (voice.level_dbfs / 20.0) / rms)
    if np.max(np.abs(y)) > _SOFT_CLIP:
        # A shouted line has a crest factor that would clip; saturate it softly as a handset and line card
        # do, rather than turning the whole call down and burying the calm lines in the noise.
        y = _SOFT_CLIP * np.tanh(y / _SOFT_CLIP)
    return y.astype(np.float32)


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut espeak's silent padding; keep 20 ms either side so plosive onsets are not clipped."""
    frame = 220  # 10 ms at 22050 Hz
    n_frames = len(x) // frame
    if n_frames == 0:
        return x
    env = np.sqrt(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    threshold = env.max() * 10.0 ** (_TRIM_REL_DB / 20.0)
    active = np.flatnonzero(env > threshold)
    if active.size == 0:
        return x
    pad = 2
    start = max(0, (active[0] - pad) * frame)
    end = min(len(x), (active[-1] + 1 + pad) * frame)
    return x[start:end]


# --------------------------------------------------------------------------------------------------
# Call assembly


def render_call(script: CallScript, *, seed: int = DEFAULT_SEED) -> RenderedCall:
    """Lay a script out as a stereo call and return the 16-bit audio with its annotation dict."""
    rng = np.random.default_rng([seed, _stable_hash(script.name)])
    pieces: list[tuple[Line, float, np.ndarray]] = []
    previous_end_s: float | None = None
    for line in script.lines:
        voice = _voice_for(script, line)
        audio = synthesize_line(line.spoken or line.text, voice)
        if previous_end_s is None:
            start_s = _LEAD_IN_S
        else:
            gap_s = line.gap_s if line.gap_s is not None else float(rng.uniform(0.3, 1.5))
            start_s = max(0.0, previous_end_s + gap_s)
        pieces.append((line, start_s, audio))
        previous_end_s = start_s + len(audio) / SAMPLE_RATE_HZ

    n_samples = int(round((max(s + len(a) / SAMPLE_RATE_HZ for _, s, a in pieces) + _TAIL_S) * SAMPLE_RATE_HZ))
    mix = np.zeros((n_samples, 2), dtype=np.float64)
    turns = []
    onset_s: float | None = None
    for line, start_s, audio in pieces:
        channel = AGENT_CHANNEL if line.speaker == "agent" else CALLER_CHANNEL
        i0 = int(round(start_s * SAMPLE_RATE_HZ))
        mix[i0 : i0 + len(audio), channel] += audio
        end_s = (i0 + len(audio)) / SAMPLE_RATE_HZ
        turns.append(
            {"speaker": line.speaker, "start_s": round(i0 / SAMPLE_RATE_HZ, 3), "end_s": round(end_s, 3),
             "text": line.text}
        )
        if line.agitated and onset_s is None:
            onset_s = round(i0 / SAMPLE_RATE_HZ, 3)

    noise_rms = 10.0 ** (_LINE_NOISE_DBFS / 20.0)
    mix += rng.normal(0.0, noise_rms, size=mix.shape)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.95:
        # Shouted lines are soft-limited already, so this rarely fires; scaling the whole call (not one
        # line) keeps the loudness contrast between calm and agitated speech.
        log.info("sample %s: peak %.2f, scaling the call down to avoid clipping", script.name, peak)
        mix *= 0.95 / peak
    pcm = np.round(mix * 32767.0).clip(-32768, 32767).astype(np.int16)
    # pipeline.audio codecs work on flat byte strings; keep the (n, 2) layout around them.
    pcm = decode_mulaw(encode_mulaw(pcm)).reshape(pcm.shape)

    annotation = {
        "file": f"{script.name}.wav",
        "language": script.language,
        "agent_channel": AGENT_CHANNEL,
        "agitation_onset_s": onset_s,
        "description": script.description,
        "duration_s": round(n_samples / SAMPLE_RATE_HZ, 3),
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "turns": turns,
    }
    return RenderedCall(audio_int16=pcm, annotation=annotation)


def write_call(script: CallScript, out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """Render ``script`` and write ``<name>.wav`` (PCM_16, 8 kHz, stereo) and ``<name>.json`` to out_dir."""
    rendered = render_call(script, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_path = out_dir / f"{script.name}.wav"
    sf.write(wav_path, rendered.audio_int16, SAMPLE_RATE_HZ, subtype="PCM_16", format="WAV")
    json_path = out_dir / f"{script.name}.json"
    json_path.write_text(json.dumps(rendered.annotation, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (%.1f s)", wav_path, rendered.annotation["duration_s"])
    return wav_path


def write_all(out_dir: Path, *, seed: int = DEFAULT_SEED, names: Sequence[str] | None = None) -> list[Path]:
    """Write every sample call (or only ``names``) into ``out_dir``."""
    scripts = {s.name: s for s in SCRIPTS}
    wanted = list(scripts) if names is None else list(names)
    unknown = [n for n in wanted if n not in scripts]
    if unknown:
        raise SampleGenerationError(f"unknown sample(s) {unknown}; choose from {sorted(scripts)}")
    return [write_call(scripts[n], out_dir, seed=seed) for n in wanted]


def _voice_for(script: CallScript, line: Line) -> Voice:
    if line.speaker == "agent":
        return script.agent_voice
    if line.agitated and script.caller_agitated_voice is not None:
        return script.caller_agitated_voice
    return script.caller_voice


def _stable_hash(name: str) -> int:
    # Python's hash() is salted per process; the seed must not be.
    return int.from_bytes(name.encode("utf-8")[:8].ljust(8, b"\0"), "little")


# --------------------------------------------------------------------------------------------------
# The scripts

# Voices picked by checking what Whisper tiny.en makes of them after the 8 kHz mu-law chain: a female
# British agent and a male American caller, distinct to the ear and to a speaker baseline.
_AGENT_EN = Voice("en-gb+f3", pitch_0_99=55, speed_wpm=150, level_dbfs=-24.0)
_CALLER_EN = Voice("en-us", pitch_0_99=40, speed_wpm=150, level_dbfs=-25.0)
# Raised voice: ~11 dB louder, ~45% higher, ~25% faster, wider-ranging and brighter than the same caller calm. Faster than
# this and tiny.en loses the words the text stage needs ("ridiculous", "manager", "useless").
_CALLER_EN_AGITATED = Voice(
    "en-us", pitch_0_99=80, speed_wpm=185, level_dbfs=-14.0, brightness=0.5, pitch_range_pct=250
)

CALM_EN = CallScript(
    name="calm_en",
    language="en",
    description="A polite English call: the caller activates a new debit card; no agitation.",
    agent_voice=_AGENT_EN,
    caller_voice=_CALLER_EN,
    lines=(
        Line("agent", "Thank you for calling City Bank card services, my name is Emma. How can I help you today?"),
        Line("caller", "Hello Emma. I received my new debit card in the post and I would like to activate it, please."),
        Line("agent", "Of course, I can help with that. Could you confirm your full name and date of birth?"),
        Line("caller", "Sure. It is John Miller, born on the twelfth of March, nineteen eighty five."),
        Line("agent", "Thank you, Mister Miller. And the last four digits on the new card, please?"),
        Line("caller", "The last four digits are seven three one nine."),
        Line("agent", "Perfect. I have activated the card for you. You can set your PIN at any of our cash machines."),
        Line("caller", "That is great, thank you. Can I use it for online shopping straight away?"),
        Line("agent", "Yes, online payments work right away. Is there anything else I can help you with?"),
        Line("caller", "No, that is everything. Thank you very much for your help, have a nice day."),
        Line("agent", "You are welcome. Thank you for calling City Bank, goodbye."),
    ),
)

ESCALATING_EN = CallScript(
    name="escalating_en",
    language="en",
    description=(
        "English: a declined new card. The caller starts calm, then (from agitation_onset_s to the end) gets "
        "agitated and abusive: louder, higher, faster, with escalation phrases and insults; the agent stays "
        "calm. One brief over-talk where the caller cuts the agent off."
    ),
    agent_voice=_AGENT_EN,
    caller_voice=_CALLER_EN,
    caller_agitated_voice=_CALLER_EN_AGITATED,
    lines=(
        Line("agent", "Thank you for calling City Bank card services, my name is Emma. How can I help you today?"),
        # Three calm caller turns (~12 s of speech) give per-speaker baselines something to stand on.
        Line("caller", "Hi. My new debit card was declined at the supermarket this morning, and I do not know why."),
        Line("agent", "I am sorry to hear that. Can I have the last four digits of the card, please?"),
        Line("caller", "Yes, it ends in four four two one. The card came in the post last week."),
        Line("agent", "Thank you. I can see the card has not been activated yet."),
        # Worded so Whisper hears it through espeak and the phone chain ("supervisor" and "idiots" it does not).
        Line("caller", "This is ridiculous. I am sick and tired of this. I have called three times already!",
             agitated=True),
        Line("agent", "I understand, and I am sorry. Let me activate it for you now."),
        Line("caller", "Every time you people say the same thing and nothing happens! I want to speak to your "
                       "manager right now!", agitated=True),
        Line("agent", "I can transfer you, but I can fix this right away if you give me one minute."),
        # Cuts the agent off before she finishes.
        Line("caller", "No! I am sick of waiting. You people are useless idiots. You are useless! Stupid, useless "
                       "idiots!", agitated=True, gap_s=-0.8),
        Line("caller", "This is absolutely ridiculous! Get me your manager now, I have wasted my whole morning!",
             agitated=True),
        Line("agent", "The card is active now, and I am putting you through to my manager."),
        Line("caller", "About time! Useless, completely useless!", agitated=True),
    ),
)

# espeak-ng's Mandarin is rough; slow speech is what Whisper base recognises best after the phone chain
# (the +m3 variant made it hallucinate). Expect partial transcripts of this call, not verbatim ones.
_AGENT_ZH = Voice("cmn-latn-pinyin+f2", pitch_0_99=55, speed_wpm=125, level_dbfs=-24.0)
_CALLER_ZH = Voice("cmn-latn-pinyin", pitch_0_99=45, speed_wpm=120, level_dbfs=-25.0)

CALM_ZH = CallScript(
    name="calm_zh",
    language="zh",
    description="A polite Mandarin call: the caller reports a lost card and the agent freezes it; no agitation.",
    agent_voice=_AGENT_ZH,
    caller_voice=_CALLER_ZH,
    lines=(
        Line("agent", "您好，欢迎致电城市银行，请问有什么可以帮您？",
             "nin2 hao3, huan1 ying2 zhi4 dian4 cheng2 shi4 yin2 hang2, qing3 wen4 you3 shen2 me ke3 yi3 "
             "bang1 nin2?"),
        Line("caller", "你好，我的银行卡丢了，想挂失。",
             "ni3 hao3, wo3 de yin2 hang2 ka3 diu1 le, xiang3 gua4 shi1."),
        Line("agent", "好的，请不要着急。请问您的姓名和身份证后四位是多少？",
             "hao3 de, qing3 bu2 yao4 zhao2 ji2. qing3 wen4 nin2 de xing4 ming2 he2 shen1 fen4 zheng4 "
             "hou4 si4 wei4 shi4 duo1 shao3?"),
        Line("caller", "我叫李明，身份证后四位是三五七九。",
             "wo3 jiao4 li3 ming2, shen1 fen4 zheng4 hou4 si4 wei4 shi4 san1 wu3 qi1 jiu3."),
        Line("agent", "谢谢李先生，我已经为您办理了临时挂失。",
             "xie4 xie4 li3 xian1 sheng, wo3 yi3 jing1 wei4 nin2 ban4 li3 le lin2 shi2 gua4 shi1."),
        Line("caller", "太好了，谢谢。那我怎么补办新卡呢？",
             "tai4 hao3 le, xie4 xie4. na4 wo3 zen3 me bu3 ban4 xin1 ka3 ne?"),
        Line("agent", "请您带身份证到网点补办，七个工作日就可以拿到新卡。",
             "qing3 nin2 dai4 shen1 fen4 zheng4 dao4 wang3 dian3 bu3 ban4, qi1 ge4 gong1 zuo4 ri4 jiu4 ke3 yi3 "
             "na2 dao4 xin1 ka3."),
        Line("caller", "明白了，非常感谢你的帮助。",
             "ming2 bai2 le, fei1 chang2 gan3 xie4 ni3 de bang1 zhu4."),
        Line("agent", "不客气，感谢您的来电，祝您生活愉快，再见。",
             "bu2 ke4 qi, gan3 xie4 nin2 de lai2 dian4, zhu4 nin2 sheng1 huo2 yu2 kuai4, zai4 jian4."),
    ),
)

SCRIPTS: tuple[CallScript, ...] = (CALM_EN, ESCALATING_EN, CALM_ZH)
