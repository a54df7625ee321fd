#!/usr/bin/env python
"""Leave-one-corpus-out for the *turn* emotion heads: Whisper-encoder features (and prosody) on voices and
languages the heads never heard (models/emotion/README.md, "Turn heads under leave-one-corpus-out").

    python scripts/loco_turn_encoder.py              # ~30 min cold on 2 cores (encoder passes), 1 min cached
    python scripts/loco_turn_encoder.py --out /tmp/loco_turn_encoder.json

What a turn head sees in the engine: a turn's prosody vector and the ASR's Whisper encoder output pooled
over the turn (``Transcriber.encode_turns``, the transcription code path). Here every clip of EmoDB, nEMO,
emotiontts-ko and URDU is a turn, as recorded (16 kHz) and as 8 kHz G.711 mu-law (resampled back to 16 kHz,
as the engine feeds Whisper). Clips are packed into Whisper windows the way full batch windows pack a
call's turns: up to ``max_window_turns`` (3) clips of one speaker, 0.6 s apart, at most ``max_window_s``
of audio, in a shuffled order (seed 0) so a window mixes that speaker's emotions as a call seldom does
(the harder case: a neighbour's emotion leaks through attention).

For each feature set (prosody, encoder, both) and normalisation (global: the training population's
statistics; speaker: each speaker's other clips, audio only, shrunk like ``TurnBaseline``), a 4-class
balanced logistic head is trained on two training corpora and scores the third; its L2 is chosen by
inner leave-one-corpus-out on those two (nested: the held-out corpus never chooses anything). URDU
(test only) is scored by heads trained on all three, L2 chosen by LOCO over the three.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.asr import PACK_GAP_S, AsrChunk, Transcriber  # noqa: E402
from pipeline.audio import resample  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.emotion import CLASSES  # noqa: E402
from pipeline.training.corpora import (RATES, TEST_ONLY_CORPORA, TRAIN_CORPORA, _read_audio,  # noqa: E402
                                       default_clip_rows, extract_features, telephone_clip)
from pipeline.training.emotion_data import data_dir_default  # noqa: E402
from pipeline.training.emotion_heads import _nan_mean_std, _standardise, fit_logistic  # noqa: E402
from pipeline.training.emotion_turn import speaker_standardised, within_speaker_var  # noqa: E402
from pipeline.training.loco import HEADLINE, figures  # noqa: E402

L2_GRID = (3.0, 10.0, 30.0, 100.0, 300.0)
FEATURES = ("prosody", "encoder", "both")
NORMALISATIONS = ("global", "speaker")
CLIP_Z = 5.0   # standardised inputs clipped at +-5, as the engine's heads do


def packs(rows, durations_s, *, max_turns: int, max_s: float, seed: int = 0) -> list[list[int]]:
    """Row indices grouped into windows: per speaker, in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_speaker.setdefault(f"{r.corpus}/{r.speaker}", []).append(i)
    out: list[list[int]] = []
    for spk in sorted(by_speaker):
        idx = list(rng.permutation(by_speaker[spk]))
        current, size = [], 0.0
        for i in idx:
            if current and (len(current) == max_turns or size + PACK_GAP_S + durations_s[i] > max_s):
                out.append(current)
                current, size = [], 0.0
            size += (PACK_GAP_S if current else 0.0) + durations_s[i]
            current.append(int(i))
        if current:
            out.append(current)
    return out


def encodings(rows, transcriber, config, cache_dir: Path) -> dict[str, np.ndarray]:
    """rate -> pooled encoder output [n_clips, dim], cached per model, packing and clip list."""
    o = config.asr
    h = hashlib.sha256(f"loco-turn-encoder-1-{transcriber.encoder_id}-{o.max_window_turns}-{o.max_window_s}".encode())
    h.update(str(Path(transcriber.model_path).resolve()).encode())
    for r in rows:
        h.update(f"{r.path},{r.speaker};".encode())
    out: dict[str, np.ndarray] = {}
    for rate in RATES:
        cache = cache_dir / f"turn-encoder-{rate}-{h.hexdigest()[:16]}.npy"
        if cache.is_file():
            out[rate] = np.load(cache, allow_pickle=False)
            continue
        audio = []
        for r in rows:
            y, sr = _read_audio(r.path)
            if sr > 16000:
                y, sr = resample(y, orig_sr=sr, target_sr=16000), 16000
            if rate == "8k-mulaw":
                y = resample(telephone_clip(y, sr=sr), orig_sr=8000, target_sr=16000)
            else:
                y = resample(y, orig_sr=sr, target_sr=16000)
            audio.append(y)
        groups = packs(rows, [a.size / 16000 for a in audio], max_turns=max(1, o.max_window_turns),
                       max_s=o.max_window_s)
        enc: list[np.ndarray | None] = [None] * len(rows)
        t0 = time.perf_counter()
        for n, group in enumerate(groups):
            cursor, chunks = 0.0, []
            for i in group:
                chunks.append(AsrChunk("mixed", cursor, audio[i]))
                cursor += audio[i].size / 16000 + PACK_GAP_S
            for i, e in zip(group, transcriber.encode_turns(chunks)):
                enc[i] = e
            if n % 100 == 0:
                print(f"{rate}: window {n} of {len(groups)}, {time.perf_counter() - t0:.0f} s", flush=True)
        dim = next(e.size for e in enc if e is not None)
        out[rate] = np.vstack([np.full(dim, np.nan) if e is None else e.astype(np.float64) for e in enc])
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, out[rate], allow_pickle=False)
        print(f"{rate}: {len(rows)} clips in {len(groups)} windows, {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def design(prosody: dict, enc: dict, features: str) -> dict[str, np.ndarray]:
    if features == "prosody":
        return {r: prosody[r] for r in RATES}
    if features == "encoder":
        return {r: enc[r] for r in RATES}
    return {r: np.hstack([prosody[r], enc[r]]) for r in RATES}


def normalised(x: dict, speakers: np.ndarray, train: np.ndarray, normalisation: str) -> dict[str, np.ndarray]:
    if normalisation == "global":
        return x
    prior = within_speaker_var(np.vstack([x[r][train] for r in RATES]), np.concatenate([speakers[train]] * len(RATES)))
    return {r: speaker_standardised(x[r], speakers, prior) for r in RATES}


def fit_score(z: dict, y: np.ndarray, train: np.ndarray, test: np.ndarray, corpora: np.ndarray, *, l2: float
              ) -> dict[str, np.ndarray]:
    """Train on ``train`` rows (both rates, classes balanced within each corpus), probabilities of ``test``."""
    x = np.vstack([z[r][train] for r in RATES])
    yy = np.concatenate([y[train]] * len(RATES))
    cc = np.concatenate([corpora[train]] * len(RATES))
    w = np.zeros(len(yy))
    for c in np.unique(cc):
        for k in np.unique(yy[cc == c]):
            m = (cc == c) & (yy == k)
            w[m] = 1.0 / m.sum()
    w *= len(yy) / w.sum()
    mean, scale = _nan_mean_std(x)
    W, b = fit_logistic(_standardise(x, mean, scale, CLIP_Z), yy, l2=l2, n_classes=len(CLASSES), sample_weight=w)
    out = {}
    for r in RATES:
        logits = _standardise(z[r][test], mean, scale, CLIP_Z) @ W + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        out[r] = p / p.sum(axis=1, keepdims=True)
    return out


def inner_choice(x: dict, y, speakers, corpora, train_corpora, normalisation, *, grid=L2_GRID,
                 thin: np.ndarray | None = None) -> float:
    """L2 with the best mean (over the training corpora, each left out in turn) of the worse-rate UAR.
    ``thin`` [n]: only these rows train the heads (all rows still form the speaker baselines)."""
    scores: dict[float, list[float]] = {l2: [] for l2 in grid}
    for held in train_corpora:
        train = np.isin(corpora, [c for c in train_corpora if c != held])
        test = corpora == held
        z = normalised(x, speakers, train, normalisation)
        for l2 in grid:
            probs = fit_score(z, y, train if thin is None else train & thin, test, corpora, l2=l2)
            scores[l2].append(min(figures(probs[r], y[test], speakers[test])["uar_4class"] for r in RATES))
    return max(grid, key=lambda l2: (float(np.mean(scores[l2])), -l2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/loco_turn_encoder.json"))
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "turn-encoder-loco")
    ap.add_argument("--encode-only", action="store_true")
    args = ap.parse_args(argv)
    config = load_config(None)
    rows = default_clip_rows(data_dir_default(), corpora=TRAIN_CORPORA + TEST_ONLY_CORPORA)
    transcriber = Transcriber.load(config.asr)
    enc = encodings(rows, transcriber, config, args.cache_dir)
    if args.encode_only:
        return 0
    F = extract_features(rows, cache_dir=ROOT / ".cache" / "emotion-loco")
    prosody = {r: F.clips[r] for r in RATES}
    y, speakers, corpora = F.labels, F.speakers, F.corpora
    results: dict = {}
    for features in FEATURES:
        x = design(prosody, enc, features)
        for norm in NORMALISATIONS:
            key = f"{features}/{norm}"
            results[key] = {}
            folds = [(held, [c for c in TRAIN_CORPORA if c != held]) for held in TRAIN_CORPORA]
            folds += [(held, list(TRAIN_CORPORA)) for held in TEST_ONLY_CORPORA]
            for held, train_corpora in folds:
                l2 = inner_choice(x, y, speakers, corpora, train_corpora, norm)
                train, test = np.isin(corpora, train_corpora), corpora == held
                probs = fit_score(normalised(x, speakers, train, norm), y, train, test, corpora, l2=l2)
                results[key][held] = {"l2": l2, **{r: figures(probs[r], y[test], speakers[test]) for r in RATES}}
                print(f"{key:18s} {held:14s} l2={l2:<5g} {fold_line(results[key][held])}", flush=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print("headline order:", ", ".join(HEADLINE), "; written", args.out)
    return 0


def fold_line(fold: dict) -> str:
    """One held-out corpus's headline figures at every rate, as the scripts print them."""
    return "  ".join(f"{r} " + " ".join(f"{fold[r][m]:.3f}" for m in HEADLINE) for r in RATES)


if __name__ == "__main__":
    raise SystemExit(main())
