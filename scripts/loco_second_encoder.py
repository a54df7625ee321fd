#!/usr/bin/env python
"""Leave-one-corpus-out for the *per-second* emotion heads with Whisper-encoder features: does the encoder
carry emotion across languages in the 2 s windows that raise alerts, and what would it cost?
(models/emotion/README.md, "Per-second heads on the Whisper encoder").

    python scripts/loco_second_encoder.py            # ~25 min cold on 2 cores, ~10 min cached
    python scripts/loco_second_encoder.py --encode-only

What a per-second head sees in the engine: the prosody vector of a 2 s window of one speaker, read every
second (``LIVE_WINDOW_S`` / ``LIVE_HOP_S``, the same windows ``pipeline.training.corpora`` measures). Here
each such window of every clip of EmoDB, nEMO, emotiontts-ko and URDU, as recorded and as 8 kHz G.711
mu-law (resampled back to 16 kHz for Whisper), is also run through the Whisper base encoder *alone and
unpadded* (2 s of log-mel in, 100 frames out: ~35 ms on 2 cores against ~0.9 s for a padded 30 s window),
and the frames are pooled (mean and spread, 1,024 numbers). Unpadded input is not what Whisper was trained
on; whether its output still carries emotion is what this measures.

For each feature set (prosody, encoder, both) and normalisation (global; speaker: each window standardised
by its speaker's other windows, shrunk like ``TurnBaseline``), a 4-class head (classes balanced within each
corpus, both rates) is trained on two training corpora and scores the third's windows; its L2 is chosen by
inner leave-one-corpus-out on those two. URDU (test only) is scored by heads trained on all three.
Training windows are thinned to every ``--train-stride``-th to keep the fits within minutes; scoring uses
every window.
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
from pipeline.audio import resample  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.asr import Transcriber  # noqa: E402
from pipeline.training.corpora import (LIVE_HOP_S, LIVE_WINDOW_S, RATES, TEST_ONLY_CORPORA,  # noqa: E402
                                       TRAIN_CORPORA, _read_audio, _spans, default_clip_rows,
                                       extract_features, telephone_clip)
from pipeline.training.emotion_data import data_dir_default  # noqa: E402
from pipeline.training.loco import HEADLINE, figures  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from loco_turn_encoder import fit_score, fold_line, inner_choice, normalised  # noqa: E402

L2_GRID = (10.0, 30.0, 100.0, 300.0)
FEATURES = ("prosody", "encoder", "both")
NORMALISATIONS = ("global", "speaker")


def encode_window(model, y16: np.ndarray) -> np.ndarray:
    """Pooled encoder output of one window encoded alone, unpadded (mean and spread over its frames)."""
    from faster_whisper.audio import pad_or_trim

    feats = model.feature_extractor(y16)
    frames = min(3000, feats.shape[-1] + feats.shape[-1] % 2)
    out = np.asarray(model.encode(pad_or_trim(feats, frames)), dtype=np.float32)[0]
    return np.concatenate([out.mean(axis=0), out.std(axis=0)])


def window_encodings(rows, transcriber, cache_dir: Path) -> tuple[dict[str, np.ndarray], float]:
    """rate -> [n_windows, 1024] in the order ``extract_features`` lays its windows out; seconds per window."""
    h = hashlib.sha256(f"loco-second-encoder-1-{transcriber.model_path}-{LIVE_WINDOW_S}-{LIVE_HOP_S}".encode())
    for r in rows:
        h.update(f"{r.path},{r.speaker};".encode())
    caches = {rate: cache_dir / f"second-encoder-{rate}-{h.hexdigest()[:16]}.npy" for rate in RATES}
    if all(c.is_file() for c in caches.values()):
        return {rate: np.load(c) for rate, c in caches.items()}, float("nan")
    model = transcriber._model
    by_corpus: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_corpus.setdefault(r.corpus, []).append(i)
    out: dict[str, list[np.ndarray]] = {rate: [] for rate in RATES}
    t0, n = time.perf_counter(), 0
    # extract_features lays windows out corpus by corpus in first-seen order, clip by clip within one
    for corpus, idx in by_corpus.items():
        for i in idx:
            y, sr = _read_audio(rows[i].path)
            if sr > 16000:
                y, sr = resample(y, orig_sr=sr, target_sr=16000), 16000
            versions = {"16k": (y, sr), "8k-mulaw": (telephone_clip(y, sr=sr), 8000)}
            n_win = None
            for rate, (audio, rsr) in versions.items():
                spans = _spans(len(audio), sr=rsr, window_s=LIVE_WINDOW_S, hop_s=LIVE_HOP_S)
                spans = spans if n_win is None else (spans + spans[-1:] * n_win)[:n_win]
                n_win = len(spans)
                y16 = resample(audio, orig_sr=rsr, target_sr=16000) if rsr != 16000 else audio
                for a, b in spans:
                    a16, b16 = int(a * 16000 / rsr), int(b * 16000 / rsr)
                    out[rate].append(encode_window(model, y16[a16:b16].astype(np.float32)))
                    n += 1
        print(f"{corpus}: {n} windows encoded, {time.perf_counter() - t0:.0f} s", flush=True)
    per_window_s = (time.perf_counter() - t0) / max(n, 1)
    arrays = {rate: np.vstack(v).astype(np.float64) for rate, v in out.items()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    for rate, c in caches.items():
        np.save(c, arrays[rate], allow_pickle=False)
    return arrays, per_window_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/loco_second_encoder.json"))
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "second-encoder-loco")
    ap.add_argument("--encode-only", action="store_true")
    ap.add_argument("--train-stride", type=int, default=2)
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--norms", default=",".join(NORMALISATIONS))
    args = ap.parse_args(argv)
    config = load_config(None)
    rows = default_clip_rows(data_dir_default(), corpora=TRAIN_CORPORA + TEST_ONLY_CORPORA)
    F = extract_features(rows, cache_dir=ROOT / ".cache" / "emotion-loco", progress=print)
    transcriber = Transcriber.load(config.asr)
    enc, per_window_s = window_encodings(rows, transcriber, args.cache_dir)
    n_win = len(F.window_clip)
    assert all(enc[r].shape[0] == n_win for r in RATES), (n_win, {r: enc[r].shape for r in RATES})
    cost = "cached" if per_window_s != per_window_s else f"{1000 * per_window_s:.1f} ms a window (reading, G.711, mel, pooling)"
    print(f"{n_win} windows per rate; encoder pass {cost}")
    if args.encode_only:
        return 0
    prosody = {r: F.windows[r] for r in RATES}
    clip = F.window_clip
    y, speakers, corpora = F.labels[clip], F.speakers[clip], F.corpora[clip]
    thin = (np.arange(n_win) % max(1, args.train_stride)) == 0
    results: dict = {"per_window_s": per_window_s, "windows": n_win}
    for features in args.features.split(","):
        x = {"prosody": prosody, "encoder": enc,
             "both": {r: np.hstack([prosody[r], enc[r]]) for r in RATES}}[features]
        for norm in args.norms.split(","):
            key = f"{features}/{norm}"
            results[key] = {}
            folds = [(held, [c for c in TRAIN_CORPORA if c != held]) for held in TRAIN_CORPORA]
            folds += [(held, list(TRAIN_CORPORA)) for held in TEST_ONLY_CORPORA]
            for held, train_corpora in folds:
                t0 = time.perf_counter()
                l2 = inner_choice(x, y, speakers, corpora, train_corpora, norm, grid=L2_GRID, thin=thin)
                base = np.isin(corpora, train_corpora)
                test = corpora == held
                probs = fit_score(normalised(x, speakers, base, norm), y, base & thin, test, corpora, l2=l2)
                results[key][held] = {"l2": l2, **{r: figures(probs[r], y[test], speakers[test]) for r in RATES}}
                print(f"{key:18s} {held:14s} l2={l2:<5g} {fold_line(results[key][held])}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            args.out.write_text(json.dumps(results, indent=1, default=float))
    print("headline order:", ", ".join(HEADLINE), "; written", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
