#!/usr/bin/env python
"""LOCO A/B of training augmentation (models/emotion/README.md, "Augmentation"): the shipped recipe, with and
without one augmented copy of every training clip, per-second windows of the held-out corpus scored.

    python scripts/loco_augmentation_ab.py          # ~10 min on 2 busy cores; writes /tmp/loco_augmentation.json

Each speaker's copy is a new virtual speaker (so baselines stay per voice): pitch shifted by 1-2.5
semitones up or down, white noise at 15-30 dB SNR, level -10..+6 dB, all drawn once per speaker; then as
recorded and as 8 kHz mu-law, like the originals. A held-out corpus's clips and their copies never train
its fold. Rejected by these figures (kept as the record of the experiment, not part of the recipe).
"""
import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import librosa  # noqa: E402
from pipeline.training.corpora import (TRAIN_CORPORA, RATES, Features, default_clip_rows, extract_features,  # noqa: E402
                                       _read_audio, telephone_clip)
from pipeline.training.loco import Recipe, fit_heads, score_heads  # noqa: E402
from pipeline.audio import resample  # noqa: E402
from pipeline.prosody import ProsodyExtractor, ProsodyOptions  # noqa: E402

from pipeline.training.emotion_data import data_dir_default  # noqa: E402
data = data_dir_default()
rows = default_clip_rows(data, corpora=TRAIN_CORPORA)
F = extract_features(rows, cache_dir=Path(__file__).resolve().parents[1] / ".cache" / "emotion-loco")
print("features", len(F.rows), flush=True)
cache = Path("/tmp/loco_augmentation_clips.npz")
ext = ProsodyExtractor(ProsodyOptions())

def params(speaker):
    rng = np.random.default_rng(zlib.crc32(("aug:" + speaker).encode()))
    steps = rng.choice([-1, 1]) * rng.uniform(1.0, 2.5)
    return steps, rng.uniform(-10, 6), rng.uniform(15, 30), rng

if cache.is_file():
    z = np.load(cache); aug = {r: z[r] for r in RATES}
else:
    t0 = time.time()
    aug = {r: [] for r in RATES}
    for i, r in enumerate(rows):
        y, sr = _read_audio(r.path)
        if sr > 16000:
            y, sr = resample(y, orig_sr=sr, target_sr=16000), 16000
        steps, gain_db, snr_db, _ = params(f"{r.corpus}/{r.speaker}")
        rng = np.random.default_rng(zlib.crc32(r.path.encode()))
        ya = librosa.effects.pitch_shift(y.astype(np.float32), sr=sr, n_steps=float(steps))
        p = float(np.mean(ya ** 2)) + 1e-12
        ya = ya + rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), len(ya)).astype(np.float32)
        ya = np.clip(ya * 10 ** (gain_db / 20), -1, 1).astype(np.float32)
        aug["16k"].append(ext.vector(ya, sr=sr)[1])
        aug["8k-mulaw"].append(ext.vector(telephone_clip(ya, sr=sr), sr=8000)[1])
        if i % 300 == 0:
            print(i, round(time.time() - t0), flush=True)
    aug = {r: np.vstack(v) for r, v in aug.items()}
    np.savez(cache, **aug)
rows_aug = tuple(dataclasses.replace(r, speaker=r.speaker + "~aug", corpus=r.corpus + "+aug") for r in rows)
FA = Features(rows=tuple(rows) + rows_aug, names=F.names,
              clips={r: np.vstack([F.clips[r], aug[r]]) for r in RATES}, windows=F.windows,
              window_clip=F.window_clip, extract_s=0.0)
rec = Recipe(feature_set="prosody", balance="class", l2_global=30.0, l2_relative=30.0, relative_inputs="relative",
             train_baseline="calm-labels")
out = {}
for variant, FF in (("plain", F), ("augmented", FA)):
    corp = FF.corpora
    for held in TRAIN_CORPORA:
        others = [c for c in TRAIN_CORPORA if c != held]
        allowed = others + ([c + "+aug" for c in others] if variant == "augmented" else [])
        train = np.isin(corp, allowed)
        test = corp == held
        assert not (train & test).any() and not np.isin(corp[train], [held, held + "+aug"]).any()
        heads = fit_heads(FF, train, rec)
        fig = score_heads(FF, heads, test, rec, label_min_confidence=0.6)
        for head in ("relative", "global"):
            for rate in RATES:
                f = fig[head]["win"][rate]
                out[(variant, held, head, rate)] = f
                print(f"{variant:9s} {held:14s} {head:8s} {rate:8s} 4c {f['uar_4class']:.3f} a/n {f['uar_angry_vs_neutral']:.3f} "
                      f"a/h {f['uar_angry_vs_happy']:.3f} ar {f['uar_high_vs_low_arousal']:.3f} ece {f['ece']:.3f}", flush=True)
json.dump({"|".join(k): {m: v[m] for m in ("uar_4class", "uar_angry_vs_neutral", "uar_angry_vs_happy", "uar_high_vs_low_arousal", "ece")}
           for k, v in out.items()}, open("/tmp/loco_augmentation.json", "w"), indent=1)
