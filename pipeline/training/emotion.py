"""Training and speaker-independent evaluation of the acoustic emotion head (``scripts/train_emotion.py``).

Data: EmoDB (10 speakers, German, acted, CC0), the four classes the product uses. Each clip is scored in
three conditions: as recorded (16 kHz), as telephone audio (8 kHz, G.711 mu-law coded and decoded), and
as telephone audio through a handset the model never saw (per-speaker gain and spectral tilt). The
heads train on the first two.

Two logistic heads share the prosody feature vector (``pipeline.prosody``):

* ``global``: features standardised with the training population's statistics; used until a speaker
  baseline is ready, and the judge of what "looks calm". The absolute level (``energy_db``) is left out
  because telephone gain varies from call to call.
* ``relative``: features minus the speaker's baseline, divided by the pooled within-speaker spread.
  A baseline is the mean of the speaker's *calm-looking* speech, exactly as the live engine forms it
  (``EmotionBaseline`` updated when ``EmotionModel.looks_calm``); in evaluation, the held-out speaker's
  baseline is their other clips that the global head calls calm (their audio only, never their labels).

Every choice is made by speaker-independent cross-validation: leave-one-speaker-out (LOSO) and
cross-gender (train on the women, test on the men, and back: a stand-in for unseen speakers). The head
is multinomial logistic regression (numpy + scipy L-BFGS from zeros: deterministic, no random draws)
with class-balanced weights, so the model cannot score well by collapsing onto one class; its
probabilities are calibrated by temperature scaling on out-of-fold logits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import safetensors.numpy

from ..emotion import CLASSES, HIGH_AROUSAL, MODEL_FILE, META_FILE, Head
from ..prosody import ProsodyOptions
# The concern modules; their public names are re-exported here for scripts and tests.
from .emotion_calibration import (  # noqa: F401
    expected_calibration_error, fit_temperature, loso_temperature, scores_summary, softmax, uar,
)
from .emotion_data import (  # noqa: F401
    CONDITIONS, FEATURE_SETS, GAIN_DEPENDENT, LIVE_HOP_S, LIVE_WINDOW_S, PROSODY_MFCC_SET, PROSODY_SET,
    REPO_ROOT, TRAIN_CONDITIONS, Corpus, data_dir_default, feature_names, load_corpus, other_handset,
    read_manifest, telephone_version,
)
from .emotion_heads import (  # noqa: F401
    MIN_BASELINE_CLIPS, Design, HeadSpec, _columns, _fit_normaliser, _inputs, _nan_mean_std, _standardise,
    baseline_means, fit_logistic, loso, pooled_within_std, speaker_means,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Choices of one training run (the script's flags)."""

    data_dir: Path
    out_dir: Path
    cache_dir: Path
    feature_set: str = "auto"           # "auto" = the LOSO winner, or one of FEATURE_SETS
    l2: float = -1.0                    # < 0: chosen by LOSO among L2_GRID
    pack_s: float = 0.0                 # turn heads: clips per Whisper window (0 = each alone)


L2_GRID = (1.0, 3.0, 10.0, 30.0)
# How the training speakers' baselines are formed for the relative head (compared under LOSO).
BASELINE_KINDS = ("calm-labels", "calm-predicted")


# ---------------------------------------------------------------------------- the whole run
_HEADLINE = ("uar_4class", "uar_angry_vs_neutral", "uar_high_vs_low_arousal", "ece")


def candidate_specs(all_names: Sequence[str], feature_set: str) -> dict[str, HeadSpec]:
    """The relative heads compared: baseline-relative features alone, or with the gain-independent
    prosodic functionals as they are (absolute pitch level, spectral balance, rate...)."""
    rel = feature_names(all_names, feature_set, head="relative")
    return {
        "relative": HeadSpec(rel=rel, abs=()),
        "relative+absolute-prosody": HeadSpec(rel=rel, abs=feature_names(all_names, PROSODY_SET, head="global")),
    }


def evaluate_candidate(
    corpus: Corpus, spec: HeadSpec, *, key: str, l2: float, clip: float,
    calm_sets: Mapping[str, Mapping[str, Mapping[str, np.ndarray] | None]] | None = None,
    calm_kind: str | None = None, test_all: bool = False, comparison: dict | None = None, progress=print,
) -> tuple[float, dict, dict]:
    """LOSO and cross-gender figures of one candidate head.

    ``calm_sets[protocol][kind]`` gives the calm flags that form baselines ("calm-predicted" for the
    held-out speakers; ``calm_kind`` for the training ones; ``test_all`` = the held-out speaker's
    baseline from all their other clips). Returns (score, figures per condition, logits per protocol);
    the score is the mean of the LOSO and cross-gender 4-class UARs, each in its worst condition, so
    selection favours what transfers.
    """
    y, spk = corpus.labels, corpus.speakers
    out = {}
    for protocol, by in (("loso", "speaker"), ("cross_gender", "gender")):
        calm = {}
        if calm_kind is not None:
            calm["train_calm"] = calm_sets[protocol][calm_kind]
            calm["test_calm"] = None if test_all else calm_sets[protocol]["calm-predicted"]
        logits = loso(corpus, spec, l2=l2, clip=clip, by=by, **calm)
        probs = {c: loso_temperature(logits[c], y, spk) for c in CONDITIONS}
        out[protocol] = ({c: scores_summary(probs[c], y, spk) for c in CONDITIONS}, logits)
    res, logits = out["loso"]
    res_x = out["cross_gender"][0]
    if comparison is not None:
        comparison[key] = {c: {**{m: res[c][m] for m in _HEADLINE},
                               "cross_gender_uar_4class": res_x[c]["uar_4class"]} for c in CONDITIONS}
    progress(f"  {key:66s} " + "  ".join(f"{res[c]['uar_4class']:.3f}" for c in CONDITIONS)
             + "   " + "  ".join(f"{res_x[c]['uar_4class']:.3f}" for c in CONDITIONS))
    score = 0.5 * (min(res[c]["uar_4class"] for c in CONDITIONS)
                   + min(res_x[c]["uar_4class"] for c in CONDITIONS))
    res = {c: {**res[c], "cross_gender": {m: res_x[c][m] for m in _HEADLINE}} for c in CONDITIONS}
    return score, res, {"loso": logits, "cross_gender": out["cross_gender"][1]}


def calm_flags(corpus: Corpus, global_logits: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """protocol -> {"all": None, "calm-labels": flags, "calm-predicted": flags} (condition -> bool [n]):
    calm-labels = neutral or sad (training speakers only); calm-predicted = the global head's
    out-of-fold arousal below 0.5 (the live rule, no labels)."""
    y, spk = corpus.labels, corpus.speakers
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    calm_label = {c: ~np.isin(y, high) for c in CONDITIONS}
    out = {}
    for protocol, lg in global_logits.items():
        pred = {c: loso_temperature(lg[c], y, spk)[:, high].sum(axis=1) < 0.5 for c in CONDITIONS}
        out[protocol] = {"all": None, "calm-labels": calm_label, "calm-predicted": pred}
    return out


def evaluate_and_train(options: TrainOptions, *, prosody: ProsodyOptions | None = None,
                       clip: float = 5.0, transcriber=None, turn_training=None, progress=print) -> dict:
    """Compare feature sets, heads and baselines under LOSO, train the chosen heads, write the model.

    Every choice (feature set, head inputs, L2, how training baselines are formed) maximises the mean
    of two speaker-independent 4-class UARs, each in the worst of the three conditions: LOSO, and
    cross-gender (train on the 5 women, test on the 5 men, and back: a harder shift of speakers, a
    stand-in for the unseen speakers and languages of real calls).

    With a ``transcriber`` (the ASR's Whisper model), the per-turn heads over prosody + pooled encoder
    output are compared and trained too (``pipeline.training.emotion_turn``).
    """
    prosody = prosody or ProsodyOptions()
    t_start = time.perf_counter()
    corpus = load_corpus(options.data_dir, prosody=prosody, cache_dir=options.cache_dir)
    y, spk = corpus.labels, corpus.speakers
    progress(f"EmoDB: {len(y)} clips, {len(np.unique(spk))} speakers, features extracted in "
             f"{corpus.extract_s:.1f} s ({len(CONDITIONS)} conditions); LOSO UAR (4 classes):")
    l2_grid = L2_GRID if options.l2 < 0 else (options.l2,)
    sets = FEATURE_SETS if options.feature_set == "auto" else (options.feature_set,)
    comparison: dict[str, dict] = {}

    def run(key: str, spec: HeadSpec, l2: float, calm_kind: str | None = None,
            test_all: bool = False) -> tuple[float, dict, dict]:
        return evaluate_candidate(corpus, spec, key=key, l2=l2, clip=clip, calm_sets=calm_sets,
                                  calm_kind=calm_kind, test_all=test_all, comparison=comparison,
                                  progress=progress)

    calm_sets: dict[str, dict] = {}
    progress("  " + " " * 66 + " LOSO: " + "  ".join(CONDITIONS) + "   cross-gender: same")
    # 1. The global head (no baseline): used until a baseline is ready, and it decides what looks calm.
    best_g = None
    for fs in sets:
        spec = HeadSpec(rel=(), abs=feature_names(corpus.names, fs, head="global"))
        for l2 in l2_grid:
            score, res, logits = run(f"global | {fs} | no baseline | l2={l2:g}", spec, l2)
            if best_g is None or score > best_g[0] + 1e-9:
                best_g = (score, fs, l2, spec, res, logits)
    _, fs_g, l2_g, spec_g, res_g, logits_all_g = best_g
    logits_g = logits_all_g["loso"]
    high = [CLASSES.index(c) for c in HIGH_AROUSAL]
    calm_sets.update(calm_flags(corpus, logits_all_g))
    calm_pred = calm_sets["loso"]["calm-predicted"]
    calm_kinds = calm_sets["loso"]

    # 2. The baseline head. Live, a baseline learns only from calm-looking speech, so the held-out
    #    speaker's baseline is the mean of their clips the global head calls calm (never their labels).
    best_r = None
    for fs in sets:
        for head_name, spec in candidate_specs(corpus.names, fs).items():
            for kind in BASELINE_KINDS:
                for l2 in l2_grid:
                    key = f"{head_name} | {fs} | train baseline {kind} | l2={l2:g}"
                    score, res, logits = run(key, spec, l2, calm_kind=kind)
                    if best_r is None or score > best_r[0] + 1e-9:
                        best_r = (score, f"{head_name} | {fs}", l2, kind, spec, res, logits)
    _, choice_r, l2_r, kind_r, spec_r, res_r, logits_all_r = best_r
    logits_r = logits_all_r["loso"]
    # The same head when the baseline is every other clip of the speaker, calm or not.
    _, res_r_all, _ = run(f"{choice_r} | train baseline {kind_r} | l2={l2_r:g} | TEST baseline all clips",
                          spec_r, l2_r, calm_kind=kind_r, test_all=True)

    def raw_ece(logits: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {c: expected_calibration_error(softmax(logits[c]), y) for c in CONDITIONS}

    details = {
        "global": {"choice": f"global | {fs_g}", "l2": l2_g, **res_g, "uncalibrated_ece": raw_ece(logits_g)},
        "relative": {"choice": choice_r, "l2": l2_r, "train_baseline": kind_r, **res_r,
                     "uncalibrated_ece": raw_ece(logits_r)},
        "relative_all_clips_baseline": res_r_all,
        "calm_looking_share": {c: float(calm_pred[c].mean()) for c in CONDITIONS},
    }

    # What the live engine sees: 2 s windows every second (a clip shorter than 2 s is one window),
    # scored by the clip-trained heads; the held-out speaker's baseline is their calm-looking windows
    # from other clips.
    windows = load_corpus(options.data_dir, prosody=prosody, cache_dir=options.cache_dir,
                          window_s=LIVE_WINDOW_S, hop_s=LIVE_HOP_S)
    yw = windows.labels
    lg_w = loso(corpus, spec_g, l2=l2_g, clip=clip, test_corpus=windows)
    pg_w = {c: loso_temperature(lg_w[c], yw, windows.speakers) for c in CONDITIONS}
    calm_w = {c: pg_w[c][:, high].sum(axis=1) < 0.5 for c in CONDITIONS}
    lr_w = loso(corpus, spec_r, l2=l2_r, clip=clip, train_calm=calm_kinds[kind_r], test_calm=calm_w,
                test_corpus=windows)
    details["windows"] = {
        "window_s": LIVE_WINDOW_S, "hop_s": LIVE_HOP_S, "rows": int(len(yw)),
        "global": {c: scores_summary(pg_w[c], yw, windows.speakers) for c in CONDITIONS},
        "relative": {c: scores_summary(loso_temperature(lr_w[c], yw, windows.speakers), yw, windows.speakers)
                     for c in CONDITIONS},
    }
    win = details["windows"]
    progress(f"live-sized windows ({len(yw)} x {LIVE_WINDOW_S:g} s), 4-class UAR: global "
             + "  ".join(f"{win['global'][c]['uar_4class']:.3f}" for c in CONDITIONS)
             + "   relative " + "  ".join(f"{win['relative'][c]['uar_4class']:.3f}" for c in CONDITIONS))

    # 3. Final heads: every speaker, both training conditions; temperature from the LOSO logits.
    heads = {
        "global": _final_head(corpus, spec_g, l2_g, None, clip, logits_g),
        "relative": _final_head(corpus, spec_r, l2_r, calm_kinds[kind_r], clip, logits_r),
    }
    turn = None
    encode_s_per_s = None
    if transcriber is not None:
        # injected (pipeline.training.emotion_turn.train_turn_heads), so the two modules import one way only
        if turn_training is None:
            raise ValueError("a transcriber needs turn_training=emotion_turn_training.train_turn_heads")
        turn_heads, turn, encode_s_per_s = turn_training(options, corpus, transcriber, clip=clip, progress=progress)
        heads.update(turn_heads)
    train_s = time.perf_counter() - t_start
    meta = write_model(options.out_dir, heads=heads, prosody=prosody, details=details,
                       comparison=comparison, corpus=corpus, turn=turn)
    # Timings vary from run to run, so they are reported, not written into the model files.
    return {**meta, "train_s": train_s, "feature_extraction_s": corpus.extract_s, "encode_s_per_s": encode_s_per_s}


def _final_head(corpus: Corpus, spec: HeadSpec, l2: float, calm: Mapping[str, np.ndarray] | None,
                clip: float, loso_logits: Mapping[str, np.ndarray]) -> Head:
    spk, y = corpus.speakers, corpus.labels
    x_rel, x_abs = _columns(corpus, spec.rel), _columns(corpus, spec.abs)
    base = {c: baseline_means(x_rel[c], spk, None if calm is None else calm[c], groups=corpus.clip_ids)
            for c in CONDITIONS} if spec.rel else {}
    rows = np.ones(len(y), dtype=bool)
    norm = _fit_normaliser(spec, x_rel, x_abs, spk, rows)
    z = np.vstack([_standardise(_inputs(spec, x_rel, x_abs, base, c, rows), norm.mean, norm.scale, clip)
                   for c in TRAIN_CONDITIONS])
    y_train = np.concatenate([y] * len(TRAIN_CONDITIONS))
    W, b = fit_logistic(z, y_train, l2=l2, n_classes=len(CLASSES))
    temperature = fit_temperature(np.vstack([loso_logits[c] for c in TRAIN_CONDITIONS]), y_train)
    return Head(names=spec.names, mean=norm.mean, scale=norm.scale, weights=W, bias=b,
                temperature=temperature, clip=clip)


def write_model(out_dir: Path, *, heads: Mapping[str, Head], prosody: ProsodyOptions, details: dict,
                comparison: dict, corpus: Corpus, turn: Mapping | None = None) -> dict:
    """Write the weights (safetensors) and model.json; both depend only on the data and the code.

    ``turn``: encoder_id, encoding_dim, prior_turns, prior_var and details of the turn heads (in ``heads``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for head_name, head in heads.items():
        for field, value in head.to_arrays().items():
            arrays[f"{head_name}.{field}"] = value
    if turn is not None:
        arrays["turn.prior_var"] = np.ascontiguousarray(turn["prior_var"], dtype=np.float64)
    # safetensors: no pickle, and byte-identical output for identical arrays (a zip would stamp times).
    safetensors.numpy.save_file(arrays, str(out_dir / MODEL_FILE))
    digest = hashlib.sha256((out_dir / MODEL_FILE).read_bytes()).hexdigest()
    meta = {
        "id": f"emodb-{'turn' if turn is not None else 'prosody'}-lr-{digest[:8]}",
        "classes": list(CLASSES),
        "high_arousal": list(HIGH_AROUSAL),
        "heads": {name: list(head.names) for name, head in heads.items()},
        "prosody_options": dataclasses.asdict(prosody),
        "vector_names": list(corpus.names),
        "weights_sha256": digest,
        "trained_on": {"corpus": "EmoDB (CC0-1.0)", "clips": len(corpus.files),
                       "speakers": sorted(set(corpus.speakers.tolist())),
                       "conditions": list(TRAIN_CONDITIONS)},
        "loso": _round(details),
        "comparison": _round(comparison),
    }
    if turn is not None:
        meta["turn"] = {"encoder_id": turn["encoder_id"], "encoding_dim": turn["encoding_dim"],
                        "training_pack_s": turn["training_pack_s"],
                        "prior_turns": turn["prior_turns"], **turn["details"]}
    with open(out_dir / META_FILE, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return meta


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- cost
def cost_per_audio_second(model, y: np.ndarray, *, sr: int, window_s: float = LIVE_WINDOW_S,
                          hop_s: float = LIVE_HOP_S, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of CPU per second of one speaker's audio, the way the engine runs the stage.

    Parameters
    ----------
    model : EmotionModel
    y : np.ndarray [shape=(n,)], one speaker's audio at ``sr`` Hz
    window_s, hop_s : the live pattern (the last ``window_s`` every ``hop_s``)

    Returns
    -------
    dict: ``live_ms_per_s`` (windows: extraction + prediction), ``extract_ms_per_window``,
    ``predict_ms_per_window``, ``turn_ms_per_s`` (one pass over the whole signal).
    """
    win, hop = int(window_s * sr), int(hop_s * sr)
    starts = list(range(0, max(1, len(y) - win + 1), hop))
    baseline = model.new_baseline()
    best_extract = best_predict = best_turn = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        vecs = [model.extractor.vector(y[s:s + win], sr=sr)[1] for s in starts]
        t1 = time.perf_counter()
        for v in vecs:
            model.predict(v, baseline=baseline)
            baseline.update(v, calm=model.looks_calm(v))
        t2 = time.perf_counter()
        model.predict_audio(y, sr=sr)
        t3 = time.perf_counter()
        best_extract, best_predict = min(best_extract, t1 - t0), min(best_predict, t2 - t1)
        best_turn = min(best_turn, t3 - t2)
    audio_s = len(starts) * hop_s
    return {
        "live_ms_per_s": 1000.0 * (best_extract + best_predict) / audio_s,
        "extract_ms_per_window": 1000.0 * best_extract / len(starts),
        "predict_ms_per_window": 1000.0 * best_predict / len(starts),
        "turn_ms_per_s": 1000.0 * best_turn / (len(y) / sr),
    }
