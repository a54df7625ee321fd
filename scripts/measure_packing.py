#!/usr/bin/env python
"""How often a packed Whisper window gives one party's words to the other's turn, "live" vs "full".

    nice -n 10 .venv/bin/python scripts/measure_packing.py             # samples + a real-speech call
    nice -n 10 .venv/bin/python scripts/measure_packing.py --packings live full --json out.json
    nice -n 10 .venv/bin/python scripts/measure_packing.py --packings direct full --config cap.toml

"direct" is faster-whisper's own ``transcribe()`` with its VAD filter on each channel, as
``scripts/bench_batch.py`` times it (same model, beam, temperatures; language detected by Whisper,
Mandarin text converted to Simplified as the pipeline does), each segment given to its channel's party:
the quality a user running faster-whisper alone would get, beside the pipeline's packings.

Both packings join turns of both channels, in call order, into one window with a short silence between
them, and give each decoded word back to the turn its timestamp falls in. A word whose timestamp lands
in the neighbouring turn goes to that turn's party. To count that, each call's reference words (tagged
with their turn and party) are aligned with the words of the call's result in time order (tagged with the
reference turn each result segment overlaps most on its own channel); every matched word whose tags
differ is a cross-party (or, for the same party, a wrong-turn) word. WER/CER per party pools each
party's turns. Masking is off here, so digits read out are scored as said.

Calls: the bundled samples (espeak-ng, known text per turn) and, when ``$CALLPULSE_DATA/asr`` is there,
one call of real speech: the ten Harvard sentences of the 8 kHz Open Speech Repository clip, split on
their pauses and alternated between the parties with 0.3-0.9 s gaps, plus the JFK and LibriSpeech clips
as caller turns (their reference texts from the clip manifest).
"""
from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RefTurn:
    speaker: str
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Assignment:
    """Matched words of one call's result against its reference, by where they landed."""

    matched: int
    cross_party: int
    wrong_turn: int  # same party, another of its turns
    examples: tuple[str, ...] = ()


def _own_turn(seg: dict, refs: list[RefTurn]) -> int | None:
    """The reference turn of the same party that a result segment overlaps most (None: no overlap)."""
    best, best_overlap = None, 0.0
    for i, r in enumerate(refs):
        if r.speaker != seg["speaker"]:
            continue
        overlap = min(r.end_s, seg["end_s"]) - max(r.start_s, seg["start_s"])
        if overlap > best_overlap:
            best, best_overlap = i, overlap
    return best


def assignment(segments: list[dict], refs: list[RefTurn], *, language: str) -> Assignment:
    """Align the call's result words with its reference words, both in call order, and count matched
    words that sit in another party's (or another) turn than the reference puts them in."""
    from pipeline.evaluate.metrics import tokens

    ref_words: list[tuple[str, int]] = []
    for i, r in sorted(enumerate(refs), key=lambda item: item[1].start_s):
        ref_words += [(w, i) for w in tokens(r.text, language=language)]
    hyp_words: list[tuple[str, int | None, str]] = []
    for seg in sorted(segments, key=lambda s: (s["start_s"], s["speaker"])):
        own = _own_turn(seg, refs)
        hyp_words += [(w, own, seg["speaker"]) for w in tokens(seg.get("text") or "", language=language)]
    matcher = difflib.SequenceMatcher(a=[w for w, _ in ref_words], b=[w for w, _, _ in hyp_words], autojunk=False)
    matched = cross = wrong = 0
    examples = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            word, ref_turn = ref_words[block.a + k]
            _, hyp_turn, hyp_speaker = hyp_words[block.b + k]
            matched += 1
            if hyp_speaker != refs[ref_turn].speaker:
                cross += 1
                examples.append(f"{word!r} said by {refs[ref_turn].speaker} at {refs[ref_turn].start_s:.1f} s "
                                f"went to {hyp_speaker}")
            elif hyp_turn != ref_turn:
                wrong += 1
    return Assignment(matched, cross, wrong, tuple(examples))


def party_errors(segments: list[dict], refs: list[RefTurn], *, language: str) -> dict:
    """Pooled WER (CER for Mandarin) per party: all its reference turns vs all its result text."""
    from pipeline.evaluate.metrics import error_counts

    out = {}
    for party in sorted({r.speaker for r in refs}):
        ref = " ".join(r.text for r in sorted(refs, key=lambda r: r.start_s) if r.speaker == party)
        hyp = " ".join(s.get("text") or "" for s in sorted(segments, key=lambda s: s["start_s"])
                       if s["speaker"] == party)
        out[party] = error_counts(ref, hyp, language=language)
    return out


# --- calls -----------------------------------------------------------------------------------------

def sample_calls() -> list[tuple[str, Path, str, list[RefTurn]]]:
    calls = []
    for ann_path in sorted((ROOT / "samples").glob("*.json")):
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        refs = [RefTurn(t["speaker"], t["start_s"], t["end_s"], t["text"]) for t in ann["turns"]]
        calls.append((ann_path.stem, ann_path.with_name(ann["file"]), ann["language"], refs))
    return calls


def _split_on_pauses(audio: np.ndarray, sr: int, *, n: int) -> list[tuple[int, int]]:
    """The ``n`` longest-separated speech stretches of a clip (10 ms frame energy, -35 dB of the peak)."""
    hop = sr // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = db > db.max() - 35.0
    runs, start = [], None
    for i, v in enumerate(voiced):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append([start, i])
            start = None
    if start is not None:
        runs.append([start, len(voiced)])
    while len(runs) > n:  # merge across the shortest pause until n stretches remain
        k = int(np.argmin([b[0] - a[1] for a, b in zip(runs, runs[1:])]))
        runs[k:k + 2] = [[runs[k][0], runs[k + 1][1]]]
    return [(max(0, a * hop - sr // 20), min(len(audio), b * hop + sr // 20)) for a, b in runs]


def real_speech_call(folder: Path) -> tuple[str, Path, str, list[RefTurn]] | None:
    """A stereo 8 kHz call of real English speech with known text per turn (see the module docstring)."""
    import librosa
    import soundfile as sf

    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return None
    texts = {row["file"]: row["reference_text"] for row in csv.DictReader(manifest.open(encoding="utf-8"))}
    sr = 8000
    osr, osr_sr = sf.read(folder / "OSR_us_000_0034_8k.wav", dtype="float32", always_2d=True)
    osr = osr[:, 0]
    sentences = [s.strip() + "." for s in texts["OSR_us_000_0034_8k.wav"].split(".") if s.strip()]
    pieces = [(osr[a:b], text) for (a, b), text in zip(_split_on_pauses(osr, osr_sr, n=len(sentences)), sentences)]
    extra = []
    for name in ("jfk.flac", "librispeech-1995-1837-0001.wav"):
        clip, clip_sr = sf.read(folder / name, dtype="float32", always_2d=True)
        extra.append((librosa.resample(clip.mean(axis=1), orig_sr=clip_sr, target_sr=sr), texts[name]))
    rng = np.random.default_rng(20261202)
    # agent and caller alternate sentences; the longer real clips are caller turns 2 and 4
    order = [("agent", pieces[0]), ("caller", pieces[1]), ("agent", pieces[2]), ("caller", extra[0]),
             ("agent", pieces[3]), ("caller", pieces[4]), ("agent", pieces[5]), ("caller", extra[1]),
             ("agent", pieces[6]), ("caller", pieces[7]), ("agent", pieces[8]), ("caller", pieces[9])]
    total = sum(len(a) for _, (a, _) in order) + sr * (len(order) + 2)
    stereo = np.zeros((total, 2), np.float32)
    cursor, refs = int(0.5 * sr), []
    for speaker, (audio, text) in order:
        ch = 0 if speaker == "agent" else 1
        stereo[cursor:cursor + len(audio), ch] = audio / (np.abs(audio).max() + 1e-9) * 0.5
        refs.append(RefTurn(speaker, cursor / sr, (cursor + len(audio)) / sr, text))
        cursor += len(audio) + int(rng.uniform(0.3, 0.9) * sr)
    path = Path(tempfile.mkdtemp(prefix="callpulse-packing-")) / "real_en.wav"
    sf.write(path, stereo[:cursor + sr // 2], sr, subtype="PCM_16")
    return "real_en", path, "en", refs


# --- run -------------------------------------------------------------------------------------------

def direct_segments(model, path: Path, config, *, agent_channel: int = 0) -> tuple[list[dict], float]:
    """faster-whisper alone on each channel (its VAD filter), segments tagged with the channel's party."""
    import time

    from pipeline.asr_guards import _simplify
    from pipeline.audio import load_audio, resample
    from pipeline.devtools.benchmark import transcribe_alone

    audio = load_audio(path)
    segs, took = [], 0.0
    for ch_index, ch in enumerate(audio.samples):
        y = resample(ch, orig_sr=audio.sample_rate_hz, target_sr=16000)
        t0 = time.perf_counter()
        segments, info = transcribe_alone(model, y, config)
        speaker = "agent" if ch_index == agent_channel else "caller"
        segs += [{"speaker": speaker, "start_s": s.start, "end_s": s.end,
                  "text": _simplify(s.text.strip(), info.language)} for s in segments]
        took += time.perf_counter() - t0
    return segs, took


def main(argv: list[str] | None = None) -> int:
    from pipeline.batch import analyze_file
    from pipeline.config import load_config
    from pipeline.engine import Engine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None)
    p.add_argument("--packings", nargs="+", default=["live", "full"], choices=["live", "full", "direct"])
    p.add_argument("--no-real", action="store_true", help="only the bundled samples")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)

    config = load_config(args.config).replace("masking", enabled=False)
    base = Engine.load(config)
    calls = sample_calls()
    data = Path(os.environ.get("CALLPULSE_DATA", ROOT.parent / "shared" / "data"))
    real = None if args.no_real else real_speech_call(data / "asr")
    if real is not None:
        calls.append(real)
    figures: dict = {}
    whisper = None
    if "direct" in args.packings:
        from pipeline.devtools.benchmark import whisper_alone_model

        whisper = whisper_alone_model(config)
    for packing in args.packings:
        cfg = config.replace("asr", batch_packing="live" if packing == "direct" else packing)
        engine = Engine(cfg, vad=base.vad, transcriber=base.transcriber, extractor=base.extractor,
                        emotion=base.emotion, text=base.text, shifts=base.shifts)
        totals = {"matched": 0, "cross_party": 0, "wrong_turn": 0}
        for name, path, language, refs in calls:
            if packing == "direct":
                segs, took = direct_segments(whisper, path, cfg)
                result = {"segments": segs, "alerts": [], "summary": {"processing_s": took}}
            else:
                result = analyze_file(path, engine=engine, config=cfg, agent_channel=0, call_id=name)
            segs = [s for s in result["segments"] if s.get("text")]
            a = assignment(segs, refs, language=language)
            errs = party_errors(segs, refs, language=language)
            kind = "cer" if language == "zh" else "wer"
            rates = {party: round(c.rate, 3) for party, c in errs.items()}
            figures.setdefault(name, {})[packing] = {
                "matched": a.matched, "cross_party": a.cross_party, "wrong_turn": a.wrong_turn,
                kind: rates, "alerts": [(x["action"], x["raised_at_s"]) for x in result["alerts"]],
                "processing_s": result["summary"]["processing_s"], "examples": list(a.examples)}
            for key in totals:
                totals[key] += getattr(a, key)
            print(f"{packing:>4}  {name:<14} matched {a.matched:4d}  cross-party {a.cross_party:3d}  "
                  f"wrong turn {a.wrong_turn:3d}  {kind} " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items())
                  + f"  ({result['summary']['processing_s']:.1f} s)", flush=True)
            for ex in a.examples:
                print(f"        {ex}")
        figures.setdefault("total", {})[packing] = totals
        print(f"{packing:>4}  total          matched {totals['matched']:4d}  cross-party {totals['cross_party']:3d}  "
              f"wrong turn {totals['wrong_turn']:3d}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
