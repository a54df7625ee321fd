"""Training of the per-turn emotion heads: prosody + the ASR's Whisper encoder output, per speaker.

The turn heads see what the engine has once a turn is transcribed: the turn's prosody vector
(``pipeline.prosody``) and the Whisper encoder output pooled over the turn (``asr.pool_turns``), taken
from the ASR's own encoder pass. To train on what the engine sees, each speaker's EmoDB clips are packed
into Whisper windows the way the engine packs turns (0.6 s apart, at most ``PACK_S`` of speech, padded to
30 s) and encoded by ``Transcriber.encode_turns`` -- the same code path as transcription.

Two normalisations are compared for each feature set (prosody, encoder, both), leave-one-speaker-out
and cross-gender:

* ``global``: standardised with the training population's statistics (a turn on its own);
* ``speaker``: standardised with the speaker's own mean and spread over their *other* clips (their
  audio only, never their labels), the spread shrunk towards the population's within-speaker spread by
  ``PRIOR_TURNS`` pseudo-clips: what ``TurnBaseline`` does live with a speaker's earlier turns.

The shipped ``turn_global`` and ``turn_speaker`` heads are the best of each normalisation.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile as sf

from ..asr import PACK_GAP_S, AsrChunk, pool_turns
from ..audio import resample
from ..emotion import CLASSES, HIGH_AROUSAL, Head, shrunk_mean_std
from .emotion import _round
from .emotion_calibration import fit_temperature, loso_temperature, scores_summary
from .emotion_data import (CONDITIONS, GAIN_DEPENDENT, TRAIN_CONDITIONS, Corpus, other_handset, read_manifest,
                           telephone_version)
from .emotion_heads import _nan_mean_std, _standardise, fit_logistic

logger = logging.getLogger(__name__)

# Speech per packed window in training. 0 = each clip alone in its window (padded to 30 s, as a
# one-turn ASR window). Packing a speaker's clips together lets the encoder attend to their other
# clips (EmoDB's: the same sentences in other emotions), a context real calls do not give; the card
# reports it as a comparison (--pack-s 12), not as the shipped figure.
PACK_S = 0.0
PRIOR_TURNS = 5.0
TURN_L2_GRID = (10.0, 30.0, 100.0)
TURN_FEATURES = ("prosody", "encoder", "both")
NORMALISATIONS = ("global", "speaker")
# How many other clips form the held-out speaker's baseline in the "few turns" check (a call's caller).
BASELINE_SIZES = (4, 8, 16)
# Fewer calm rows than this: a speaker's baseline falls back to all their other rows.
MIN_BASELINE_ROWS = 2
_CACHE_FORMAT = 1


# ---------------------------------------------------------------------------- encodings
def pack_rows(speakers: Sequence[str], durations_s: Sequence[float], *, pack_s: float = PACK_S) -> list[list[int]]:
    """Row indices grouped into windows: each speaker's rows in order, at most ``pack_s`` of speech plus
    gaps per window (a longer row, or any row when ``pack_s`` is 0, gets a window of its own)."""
    packs: list[list[int]] = []
    for spk in dict.fromkeys(speakers):
        current, size = [], 0.0
        for i, s in enumerate(speakers):
            if s != spk:
                continue
            if current and size + PACK_GAP_S + durations_s[i] > pack_s:
                packs.append(current)
                current, size = [], 0.0
            size += (PACK_GAP_S if current else 0.0) + durations_s[i]
            current.append(i)
        if current:
            packs.append(current)
    return packs


def encode_clips(audio16: Sequence[np.ndarray], speakers: Sequence[str], transcriber, *,
                 pack_s: float = PACK_S) -> np.ndarray:
    """Pooled encoder output of each clip [n, dim] (16 kHz mono float32 clips), each alone in a Whisper
    window or packed per speaker (``pack_s``) the way the engine packs turns; a clip too short to pool
    is a row of nan."""
    packs = pack_rows(speakers, [a.size / 16000 for a in audio16], pack_s=pack_s)
    out: list[np.ndarray | None] = [None] * len(audio16)
    for pack in packs:
        cursor, chunks = 0.0, []
        for i in pack:
            chunks.append(AsrChunk("mixed", cursor, audio16[i]))
            cursor += audio16[i].size / 16000 + PACK_GAP_S
        for i, enc in zip(pack, transcriber.encode_turns(chunks)):
            out[i] = enc
    dim = next(e.size for e in out if e is not None)
    return np.vstack([np.full(dim, np.nan) if e is None else e.astype(np.float64) for e in out])


def corpus_encodings(data_dir: Path, transcriber, *, cache_dir: Path | None,
                     pack_s: float = PACK_S) -> tuple[dict[str, np.ndarray], float]:
    """EmoDB encodings in every condition (condition -> [n_clips, dim]) and encoder seconds per second
    of audio. Cached per model, packing code and clip list."""
    emodb = data_dir / "emodb"
    rows = read_manifest(emodb)
    h = hashlib.sha256(f"turn-encoder-{_CACHE_FORMAT}-{transcriber.encoder_id}".encode())
    h.update(str(Path(transcriber.model_path).resolve()).encode())
    for fn in (encode_clips, pack_rows, pool_turns, telephone_version, other_handset):
        h.update(inspect.getsource(fn).encode())
    h.update(repr(pack_s).encode())
    for r in rows:
        h.update(f"{r['file']},{r['speaker']};".encode())
    cache = cache_dir / f"emodb-turn-encoder-{h.hexdigest()[:16]}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {c: z[c] for c in CONDITIONS}, float(z["encode_s_per_s"])
    versions: dict[str, list[np.ndarray]] = {c: [] for c in CONDITIONS}
    for r in rows:
        y, sr = sf.read(emodb / r["file"], dtype="float32", always_2d=False)
        # the ASR stage sees 16 kHz: telephone versions are resampled back up, as the engine does
        versions["16k"].append(resample(y, orig_sr=sr, target_sr=16000))
        versions["8k-mulaw"].append(resample(telephone_version(y, sr=sr), orig_sr=8000, target_sr=16000))
        versions["8k-mulaw-other-handset"].append(resample(
            telephone_version(other_handset(y, sr=sr, speaker=r["speaker"]), sr=sr), orig_sr=8000, target_sr=16000))
    speakers = [r["speaker"] for r in rows]
    out, t0 = {}, time.perf_counter()
    for c in CONDITIONS:
        out[c] = encode_clips(versions[c], speakers, transcriber, pack_s=pack_s)
    audio_s = sum(a.size for c in CONDITIONS for a in versions[c]) / 16000
    rate = (time.perf_counter() - t0) / audio_s
    logger.info("encoded %d clips x %d conditions in %.0f s", len(rows), len(CONDITIONS), time.perf_counter() - t0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, encode_s_per_s=rate, **out)
    return out, rate


# ---------------------------------------------------------------------------- design
@dataclass(frozen=True)
class TurnData:
    """Turn vectors (prosody vector then encoding) of every clip in every condition."""

    x: Mapping[str, np.ndarray]     # condition -> [n, d]
    names: tuple[str, ...]          # pros:<feature> ..., enc:<i> ...
    labels: np.ndarray
    speakers: np.ndarray
    genders: np.ndarray | None = None
    train_conditions: tuple[str, ...] = TRAIN_CONDITIONS   # the conditions heads train on (all are scored)


def turn_names(vector_names: Sequence[str], encoding_dim: int) -> tuple[str, ...]:
    return tuple(f"pros:{n}" for n in vector_names) + tuple(f"enc:{i}" for i in range(encoding_dim))


def turn_data(corpus: Corpus, encodings: Mapping[str, np.ndarray]) -> TurnData:
    names = turn_names(corpus.names, encodings[CONDITIONS[0]].shape[1])
    return TurnData({c: np.hstack([corpus.vectors[c], encodings[c]]) for c in CONDITIONS}, names,
                    corpus.labels, corpus.speakers, corpus.genders)


def feature_columns(names: Sequence[str], features: str, normalisation: str) -> np.ndarray:
    """Columns a head reads. The absolute level is left out of global heads (it measures line gain)."""
    keep = []
    for i, n in enumerate(names):
        kind, feat = n.split(":", 1)
        if features == "prosody" and kind != "pros" or features == "encoder" and kind != "enc":
            continue
        if normalisation == "global" and kind == "pros" and feat in GAIN_DEPENDENT:
            continue
        keep.append(i)
    return np.array(keep, dtype=np.int64)


def within_speaker_var(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Variance around each speaker's mean, pooled over speakers [d] (nan-aware)."""
    dev = np.full_like(x, np.nan)
    for s in np.unique(speakers):
        m = speakers == s
        dev[m] = x[m] - np.nanmean(x[m], axis=0)
    return np.nanmean(dev ** 2, axis=0)


def speaker_standardised(x: np.ndarray, speakers: np.ndarray, prior_var: np.ndarray, *,
                         pool: np.ndarray | None = None, limit: int | None = None) -> np.ndarray:
    """Each row standardised by its speaker's *other* rows that may form a baseline (``pool``, bool [n];
    None = all), the spread shrunk towards ``prior_var``: exactly what TurnBaseline computes live.

    A speaker with fewer than MIN_BASELINE_ROWS such rows falls back to all their other rows.
    ``limit``: only that many of them, drawn at random per row (fixed seed): a baseline of a few turns.
    """
    pool = np.ones(len(x), dtype=bool) if pool is None else pool
    out = np.empty_like(x)
    finite = np.isfinite(x)
    xz = np.where(finite, x, 0.0)
    rng = np.random.default_rng(0)
    for s in np.unique(speakers):
        idx = np.flatnonzero(speakers == s)
        for i in idx:
            others = idx[(idx != i) & pool[idx]]
            if len(others) < MIN_BASELINE_ROWS:
                others = idx[idx != i]
            if limit is not None and len(others) > limit:
                others = np.sort(rng.choice(others, size=limit, replace=False))
            mean, std = shrunk_mean_std(xz[others].sum(0), (xz[others] ** 2).sum(0),
                                        finite[others].sum(0).astype(float), prior_var, PRIOR_TURNS)
            out[i] = (x[i] - mean) / std
    return out


def _inputs(data: TurnData, normalisation: str, train: np.ndarray, *,
            pool: Mapping[str, np.ndarray] | None = None, limit: int | None = None) -> dict[str, np.ndarray]:
    """condition -> head input before the head's own standardisation (``pool``: condition -> which
    rows may enter a speaker's baseline)."""
    if normalisation == "global":
        return dict(data.x)
    conds = data.train_conditions
    prior = within_speaker_var(np.vstack([data.x[c][train] for c in conds]),
                               np.concatenate([data.speakers[train]] * len(conds)))
    return {c: speaker_standardised(data.x[c], data.speakers, prior, pool=None if pool is None else pool[c],
                                    limit=limit) for c in data.x}


def fit_head(z_in: Mapping[str, np.ndarray], y: np.ndarray, rows: np.ndarray, cols: np.ndarray, *,
             l2: float, clip: float, conditions: Sequence[str] = TRAIN_CONDITIONS
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise the training rows (every training condition) and fit: -> mean, scale, W, b."""
    x = np.vstack([z_in[c][rows][:, cols] for c in conditions])
    mean, scale = _nan_mean_std(x)
    W, b = fit_logistic(_standardise(x, mean, scale, clip), np.concatenate([y[rows]] * len(conditions)),
                        l2=l2, n_classes=len(CLASSES))
    return mean, scale, W, b


def out_of_fold(data: TurnData, features: str, normalisation: str, *, l2: float, clip: float,
                by: str = "speaker", train_calm: Mapping[str, np.ndarray] | None = None,
                test_calm: Mapping[str, np.ndarray] | None = None, limit: int | None = None
                ) -> dict[str, np.ndarray]:
    """Out-of-fold logits per condition [n, k]: one head per held-out speaker (or gender).

    ``speaker`` normalisation: a training row's baseline is its speaker's other rows flagged in
    ``train_calm`` (condition -> bool [n]; None = all), a held-out row's those flagged in ``test_calm``
    (default: ``train_calm``), at most ``limit`` of them for held-out rows.
    """
    cols = feature_columns(data.names, features, normalisation)
    folds = data.speakers if by == "speaker" else data.genders
    test_calm = train_calm if test_calm is None else test_calm
    out = {c: np.zeros((len(data.labels), len(CLASSES))) for c in data.x}
    for s in np.unique(folds):
        train, test = folds != s, folds == s
        z_in = _inputs(data, normalisation, train, pool=None if train_calm is None else {
            c: np.where(test, test_calm[c], train_calm[c]) for c in data.x})
        if limit is not None:
            z_test = _inputs(data, normalisation, train, pool=None if test_calm is None else test_calm, limit=limit)
            z_in = {c: np.where(test[:, None], z_test[c], z_in[c]) for c in data.x}
        mean, scale, W, b = fit_head(z_in, data.labels, train, cols, l2=l2, clip=clip,
                                     conditions=data.train_conditions)
        for c in data.x:
            out[c][test] = _standardise(z_in[c][test][:, cols], mean, scale, clip) @ W + b
    return out


def calm_label_flags(data: TurnData) -> dict[str, np.ndarray]:
    """Rows labelled low-arousal (neutral, sad): the training speakers' baselines (their labels only)."""
    calm = ~np.isin(data.labels, [CLASSES.index(c) for c in HIGH_AROUSAL])
    return {c: calm for c in data.x}


def calm_predicted_flags(data: TurnData, global_logits: Mapping[str, np.ndarray],
                         calm_arousal_max: float = 0.5) -> dict[str, np.ndarray]:
    """Rows the out-of-fold global turn head calls calm (arousal below the bar): the live rule."""
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    return {c: loso_temperature(global_logits[c], data.labels, data.speakers)[:, high].sum(axis=1) < calm_arousal_max
            for c in data.x}


def _summary(data: TurnData, logits: Mapping[str, np.ndarray]) -> dict:
    y, spk = data.labels, data.speakers
    return {c: scores_summary(loso_temperature(logits[c], y, spk), y, spk) for c in data.x}


# ---------------------------------------------------------------------------- the run
def compare_and_train(corpus: Corpus, encodings: Mapping[str, np.ndarray], *, encoder_id: str,
                      pack_s: float = PACK_S, clip: float = 5.0, progress=print
                      ) -> tuple[dict[str, Head], dict, np.ndarray]:
    """Compare feature sets and normalisations, train the two shipped turn heads.

    The global heads come first: the best one judges which turns look calm. A ``speaker`` head's
    baselines are then formed as live: a held-out speaker's from their other clips that the global head
    calls calm (never their labels); a training speaker's from their neutral and sad clips.

    Returns (heads ``turn_global`` / ``turn_speaker``, details for model.json, prior variance [d]).
    Each choice maximises the mean of the LOSO and cross-gender 4-class UAR, each in its worst condition.
    """
    data = turn_data(corpus, encodings)
    y = data.labels
    comparison, best, oof = {}, {}, {}
    packing = "each clip alone in a window" if pack_s <= 0 else f"clips packed per speaker, up to {pack_s:g} s a window"
    progress(f"turn heads (prosody + Whisper encoder {encoder_id}, {packing}); "
             "4-class UAR LOSO 16k / 8k / other   cross-gender 16k / 8k / other:")
    calm_labels = calm_label_flags(data)
    calm_pred: dict[str, dict] = {}

    def run(norm: str, features: str, l2: float, *, label: str = "", all_clips: bool = False) -> tuple[float, dict, dict]:
        logits = {}
        for protocol, by in (("loso", "speaker"), ("cross_gender", "gender")):
            calm = {} if norm == "global" or all_clips else {"train_calm": calm_labels,
                                                            "test_calm": calm_pred[protocol]}
            logits[protocol] = out_of_fold(data, features, norm, l2=l2, clip=clip, by=by, **calm)
        res, cross = _summary(data, logits["loso"]), _summary(data, logits["cross_gender"])
        score = 0.5 * (min(res[c]["uar_4class"] for c in CONDITIONS) + min(cross[c]["uar_4class"] for c in CONDITIONS))
        key = f"{norm} | {features} | l2={l2:g}{label}"
        comparison[key] = {c: {"uar_4class": res[c]["uar_4class"],
                               "uar_angry_vs_neutral": res[c]["uar_angry_vs_neutral"],
                               "uar_high_vs_low_arousal": res[c]["uar_high_vs_low_arousal"],
                               "ece": res[c]["ece"], "cross_gender_uar_4class": cross[c]["uar_4class"]}
                           for c in CONDITIONS}
        progress(f"  {key:52s} " + " / ".join(f"{res[c]['uar_4class']:.3f}" for c in CONDITIONS)
                 + "   " + " / ".join(f"{cross[c]['uar_4class']:.3f}" for c in CONDITIONS))
        return score, res, logits

    for norm in NORMALISATIONS:
        for features in TURN_FEATURES:
            for l2 in TURN_L2_GRID:
                score, res, logits = run(norm, features, l2)
                if (norm, features) not in best or score > best[(norm, features)][0] + 1e-9:
                    best[(norm, features)] = (score, l2, res)
                    oof[(norm, features)] = logits
        if norm == "global":
            # the chosen global head decides what looks calm, per protocol, out of fold
            choice = max(TURN_FEATURES, key=lambda f: best[("global", f)][0])
            calm_pred.update({p: calm_predicted_flags(data, lg) for p, lg in oof[("global", choice)].items()})
    details: dict = {"comparison": comparison, "best": {
        f"{norm} | {features}": {"l2": l2, "score": score, **res}
        for (norm, features), (score, l2, res) in best.items()},
        "calm_looking_share": {c: float(calm_pred["loso"][c].mean()) for c in CONDITIONS}}
    heads = {}
    prior = within_speaker_var(np.vstack([data.x[c] for c in TRAIN_CONDITIONS]),
                               np.concatenate([data.speakers] * len(TRAIN_CONDITIONS)))
    prior = np.where(np.isfinite(prior), prior, 1.0)
    for norm, name in (("global", "turn_global"), ("speaker", "turn_speaker")):
        features = max(TURN_FEATURES, key=lambda f: best[(norm, f)][0])
        l2 = best[(norm, features)][1]
        details[name] = {"features": features, "l2": l2}
        cols = feature_columns(data.names, features, norm)
        every = np.ones(len(y), dtype=bool)
        z_in = _inputs(data, norm, every, pool=None if norm == "global" else calm_labels)
        mean, scale, W, b = fit_head(z_in, y, every, cols, l2=l2, clip=clip)
        logits = oof[(norm, features)]["loso"]
        temperature = fit_temperature(np.vstack([logits[c] for c in TRAIN_CONDITIONS]),
                                      np.concatenate([y] * len(TRAIN_CONDITIONS)))
        heads[name] = Head(names=tuple(data.names[i] for i in cols), mean=mean, scale=scale, weights=W,
                           bias=b, temperature=temperature, clip=clip)
        if norm == "speaker":
            # The literal protocol: every other clip of the speaker as the baseline, calm or not.
            details[name]["all_clips_baseline"] = {
                c: r["uar_4class"] for c, r in run(norm, features, l2, label=" | all-clips baselines",
                                                   all_clips=True)[1].items()}
            # What a caller's first calm turns give: the held-out baseline limited to a few of them.
            details[name]["few_turn_baselines"] = {
                str(size): {c: r["uar_4class"] for c, r in _summary(data, out_of_fold(
                    data, features, norm, l2=l2, clip=clip, train_calm=calm_labels, test_calm=calm_pred["loso"],
                    limit=size)).items()}
                for size in BASELINE_SIZES}
        progress(f"chosen {name}: {features}, l2={l2:g}")
    return heads, _round(details), prior


def train_turn_heads(options, corpus: Corpus, transcriber, *, clip: float, progress=print):
    """The turn heads of ``emotion_training.evaluate_and_train`` (passed to it as ``turn_training``):
    encode the corpus, compare and train. Returns (heads, the model.json "turn" entry, encode s per s)."""
    encodings, encode_s_per_s = corpus_encodings(options.data_dir, transcriber, cache_dir=options.cache_dir,
                                                 pack_s=options.pack_s)
    turn_heads, turn_details, prior_var = compare_and_train(corpus, encodings, encoder_id=transcriber.encoder_id,
                                                            pack_s=options.pack_s, clip=clip, progress=progress)
    turn = {"encoder_id": transcriber.encoder_id, "encoding_dim": int(encodings["16k"].shape[1]),
            "training_pack_s": options.pack_s,
            "prior_turns": PRIOR_TURNS, "prior_var": prior_var, "details": turn_details}
    return turn_heads, turn, encode_s_per_s
