"""Fitting the per-second agitation fusion and the takeover timing on annotated evaluation calls.

1. Each call runs through the product's batch path (``batch.analyze_file``, the engine's live timing)
   with an emotion model that never saw the corpus the fold holds out; :data:`fusion.CUE_RECORDER`
   captures, every second, the learned fusion's inputs (``fusion.FEATURES``) and the text/turn evidence.
   Fitting and scoring use the acoustic path (ASR off), so text evidence is nil here (say so).
   The cues depend on the fusion the engine runs (:class:`CueFusion`): a reading teaches the caller's
   baselines only while the tracker's level is below ``clear_level`` (``CallSession._tick``). So cues are
   recorded with the fusion that will score them: :func:`refit_recorded` records with a fusion that never
   rises, fits, re-records with the fit and refits until the fit stops moving; caches are keyed by the
   fusion's id. (Never with ``model = "rules"``: there the recorder's text/turn column holds the rules'
   acoustic evidence too, which a replay would add to the learned fusion's.)
2. A logistic model over those inputs is fitted per second: positive from the annotated onset (plus
   ``LABEL_LAG_S``, the analysis window filling) to the end of an escalating call, negative everywhere
   on calm and lively-calm calls and before the onset; each call weighs alike (long calls do not
   dominate) and signs are constrained (``SIGNS``: anger, arousal and raised prosody never lower it,
   happiness never raises it).
3. The smoother (``rise_tau_s``, ``fall_tau_s``) and the policy (``raise_level``, ``min_sustain_s``) are
   chosen together on the same calls by the real ``AlertPolicy``: the most recall with at most
   ``MAX_FALSE`` false takeovers per calm call and at most ``MAX_EARLY`` of escalating calls alerted
   before their onset; then the shortest median latency. The level is the product's own detector
   (``pipeline.detector``); the CUSUM alternative is chosen and compared in ``training.detector_choice``.

Under leave-one-corpus-out the calls of the held-out corpus are scored by a fusion fitted on the other
corpora's calls only (:func:`loco_fusion` on recorded cues, :func:`loco_refit` recording them); the shipped
fusion is fitted on every corpus's calls.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.optimize

from ..alerts import AlertPolicy, PolicyOptions
from ..detector import make_detector
from ..errors import ConfigError
from ..fusion import CUE_RECORDER, FEATURES, FUSION_FILE, MODEL_FEATURES, CueBaseline, LearnedFusion, load_learned

log = logging.getLogger(__name__)

LABEL_LAG_S = 1.0
# The engine's emotion reading every second covers the last [emotion] window_s seconds (default 2).
ANALYSIS_WINDOW_S = 2.0
# +1: never lowers agitation; -1: never raises it; 0: free.
# baseline_ready may only lower agitation: free, it learnt "later in a call" (onsets come after the
# calm opening), which is no evidence of anger.
SIGNS: Mapping[str, int] = {"present": 0, "anger": 1, "arousal": 1, "happy": -1, "prosody_z": 1,
                            "baseline_ready": -1, "anger_ready": 1, "overtalk": 1, "anger_excess": 1,
                            "arousal_excess": 1}
L2 = 1.0
MAX_FALSE = 0.05
MAX_EARLY = 0.05
RISE_GRID = (0.5, 1.0, 2.0)
FALL_GRID = (3.0, 6.0)
RAISE_GRID = tuple(round(x, 3) for x in np.arange(0.20, 0.96, 0.025))
SUSTAIN_GRID = (0.0, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class CallCues:
    """One call's per-second fusion inputs (the cached unit of work)."""

    call_id: str
    corpus: str
    variant: str
    kind: str                   # escalating | calm | lively-calm
    onset_s: float | None
    duration_s: float
    t_s: np.ndarray             # [n]
    features: np.ndarray        # [n, len(FEATURES)]
    other: np.ndarray           # [n] text + turn evidence (noisy-OR), 0 with ASR off
    fusion_id: str = ""         # the fusion the engine ran while recording them (CueFusion.fusion_id)
    window_s: float = ANALYSIS_WINDOW_S   # the engine's [emotion] window_s while recording them

    def to_json(self) -> dict:
        return {"call_id": self.call_id, "corpus": self.corpus, "variant": self.variant, "kind": self.kind,
                "onset_s": self.onset_s, "duration_s": self.duration_s, "t_s": self.t_s.tolist(),
                "features": np.round(self.features, 5).tolist(), "other": np.round(self.other, 5).tolist(),
                "fusion_id": self.fusion_id, "window_s": self.window_s}

    @classmethod
    def from_json(cls, d: Mapping) -> "CallCues":
        return cls(d["call_id"], d["corpus"], d["variant"], d["kind"], d["onset_s"], float(d["duration_s"]),
                   np.asarray(d["t_s"], dtype=float), np.asarray(d["features"], dtype=float).reshape(-1, len(FEATURES)),
                   np.asarray(d["other"], dtype=float), d.get("fusion_id", ""),
                   float(d.get("window_s", ANALYSIS_WINDOW_S)))


@dataclass(frozen=True)
class Timing:
    """Detector and takeover policy, chosen together (``detector = "cusum"``: raise_level 1, sustain 0)."""

    rise_tau_s: float = 1.0
    fall_tau_s: float = 6.0
    raise_level: float = 0.45
    min_sustain_s: float = 2.0
    detector: str = "level"
    cusum_drift: float = 0.5
    cusum_threshold: float = 1.0

    def describe(self) -> str:
        if self.detector == "cusum":
            return f"cusum drift {self.cusum_drift:g}, h {self.cusum_threshold:g}"
        return f"rise {self.rise_tau_s:g} s, raise {self.raise_level:g}, sustain {self.min_sustain_s:g} s"


def cusum_timing(drift: float, threshold: float, *, fall_tau_s: float = 6.0) -> Timing:
    """The Timing of a CUSUM detector: the policy raises as soon as S reaches the threshold (level 1)."""
    return Timing(rise_tau_s=0.5, fall_tau_s=fall_tau_s, raise_level=1.0, min_sustain_s=0.0, detector="cusum",
                  cusum_drift=float(drift), cusum_threshold=float(threshold))


def record_call(path: str | Path, *, engine, config, agent_channel: int, call_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run one call through ``batch.analyze_file`` and return (t_s [n], features [n, k], other [n], duration)."""
    from ..batch import analyze_file

    recorder: list = []
    token = CUE_RECORDER.set(recorder)
    try:
        result = analyze_file(path, engine=engine, config=config, agent_channel=agent_channel, call_id=call_id)
    finally:
        CUE_RECORDER.reset(token)
    t = np.array([r[0] for r in recorder], dtype=float)
    x = np.array([r[1] for r in recorder], dtype=float).reshape(-1, len(FEATURES))
    other = np.array([r[2] for r in recorder], dtype=float)
    return t, x, other, float(result.get("duration_s") or (t[-1] if len(t) else 0.0))


def read_calls_manifest(manifest: Path) -> list[dict]:
    """Rows of an alerts manifest (path, agent_channel, agitation_onset_s; optional kind, variant, corpus)."""
    from ..evaluate.manifests import parse_optional_float, read_manifest

    rows = read_manifest(manifest, required=("path", "agent_channel", "agitation_onset_s"))
    out = []
    for r in rows:
        onset = parse_optional_float(r, "agitation_onset_s", manifest=manifest)
        try:
            channel = int(r.get("agent_channel") or 0)
        except ValueError as exc:
            from ..errors import DatasetError
            raise DatasetError(f"{manifest}:{r.line}: agent_channel {r.get('agent_channel')!r} is not 0 or 1") from exc
        out.append({"path": str(r.path), "agent_channel": channel, "onset_s": onset,
                    "kind": r.get("kind") or ("escalating" if onset is not None else "calm"),
                    "variant": r.get("variant") or "all", "corpus": r.get("corpus") or manifest.parent.name,
                    "call_id": Path(str(r.path)).stem})
    return out


def check_calls(rows: Sequence[Mapping], *, where: str) -> None:
    """Refuse, before any fitting, a call set fusion cannot be fitted on."""
    from ..errors import DatasetError

    n_esc = sum(1 for r in rows if r["onset_s"] is not None)
    n_calm = len(rows) - n_esc
    if n_esc == 0 or n_calm == 0:
        raise DatasetError(f"{where}: {n_esc} escalating and {n_calm} calm calls; fitting the fusion needs both "
                           "(escalating calls with agitation_onset_s, calm calls with it empty)")


# ---------------------------------------------------------------------------- the fusion cues are recorded with
@dataclass(frozen=True)
class CueFusion:
    """A fitted fusion and its timing, as the engine runs it while recording cues and as it scores them.

    Cues depend on it: the caller's baselines learn only while the tracker's level (these weights through
    this detector) is below ``clear_level``. ``fusion_id`` names both, so a cache never hands cues recorded
    with one fusion to another."""

    model: LearnedFusion
    timing: Timing

    @property
    def fusion_id(self) -> str:
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.timing), sort_keys=True).encode()).hexdigest()[:6]
        return f"{self.model.model_id}-t{digest}"

    def write(self, root: Path) -> Path:
        """Write ``fusion.json`` into ``root/<fusion_id>/`` (what ``[fusion] model_dir`` reads); returns the folder."""
        folder = root / self.fusion_id
        if not (folder / FUSION_FILE).is_file():
            write_fusion_dir(folder, self.model, self.timing, {"note": "written to record cues with (training only)"})
        return folder

    def config_overrides(self, model_dir: Path, *, clear_level: float) -> dict:
        """``load_config`` overrides that make the engine run this fusion, read from ``model_dir``."""
        t = self.timing
        return {"fusion": {"model": "learned", "model_dir": str(model_dir), "rise_tau_s": t.rise_tau_s,
                           "fall_tau_s": t.fall_tau_s, "detector": t.detector, "cusum_drift": t.cusum_drift,
                           "cusum_threshold": t.cusum_threshold},
                "alerts": {"caller_agitation": {"raise_level": t.raise_level, "min_sustain_s": t.min_sustain_s,
                                                "clear_level": min(clear_level, t.raise_level)}}}

    def moved_from(self, other: "CueFusion") -> float:
        """How far this fit's weights are from ``other``'s: the largest change of a weight or the bias."""
        a = np.array(self.model.weights + (self.model.bias,))
        b = np.array(other.model.weights + (other.model.bias,))
        return float(np.max(np.abs(a - b)))


def silent_fusion() -> CueFusion:
    """Where :func:`refit_recorded` starts: a fusion whose level never rises, so every calm-looking reading
    teaches the caller's baselines (no fitted fusion's feedback yet)."""
    return CueFusion(LearnedFusion((0.0,) * len(MODEL_FEATURES), -30.0, "fusion-silent"), Timing())


def check_engine_runs(config, fusion: CueFusion) -> None:
    """Refuse to record cues with an engine config that does not run ``fusion`` (the one that scores them)."""
    f, a, t = config.fusion, config.alerts.caller_agitation, fusion.timing
    if f.model != "learned":
        raise ConfigError(f"cues for {fusion.fusion_id} recorded with [fusion] model = {f.model!r}: record them with "
                          "the learned fusion that will score them (CueFusion.config_overrides)")
    running = load_learned(f.model_dir)
    runs = (f.rise_tau_s, f.fall_tau_s, f.detector, f.cusum_drift, f.cusum_threshold, a.raise_level, a.min_sustain_s)
    wanted = (t.rise_tau_s, t.fall_tau_s, t.detector, t.cusum_drift, t.cusum_threshold, t.raise_level, t.min_sustain_s)
    if running.model_id != fusion.model.model_id or runs != wanted:
        raise ConfigError(f"the engine runs fusion {running.model_id} with timing {runs}, but the cues are for "
                          f"{fusion.model.model_id} with {wanted}: build the engine from fusion.config_overrides()")


class WindowMemo:
    """The engine's prosody extractor and VAD network, remembering each result by its inputs, per call on
    disk under ``folder``. A window's prosody, feature vector and speech probabilities depend neither on
    the fusion nor on the emotion heads, and they are nearly all of a recording's time, so re-recording a
    call with another fusion or fold model reuses them; results are the models' own, bit for bit (the VAD
    network by its input and recurrent state)."""

    def __init__(self, engine, folder: Path):
        self._engine, self._folder = engine, folder
        self._extractor, self._vad = engine.extractor, engine.vad
        self._store: dict[bytes, tuple] = {}
        self._path: Path | None = None
        self._new = 0

    def __enter__(self) -> "WindowMemo":
        self._engine.extractor, self._engine.vad = _MemoExtractor(self), _MemoVad(self)
        return self

    def __exit__(self, *exc) -> None:
        self._engine.extractor, self._engine.vad = self._extractor, self._vad

    def open_call(self, key: str) -> None:
        self._path = self._folder / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pkl")
        self._store, self._new = {}, 0
        if self._path.is_file():
            with open(self._path, "rb") as fh:
                self._store = pickle.load(fh)

    def close_call(self) -> None:
        if self._path is not None and self._new:
            self._folder.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(self._store, fh)
            os.replace(tmp, self._path)   # two recording processes may write the same call: last one wins

    def lookup(self, kind: bytes, arrays: Sequence[np.ndarray], compute: Callable[[], tuple]) -> tuple:
        h = hashlib.blake2b(kind, digest_size=16)
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        key = h.digest()
        if key not in self._store:
            self._store[key] = compute()
            self._new += 1
        return self._store[key]


class _MemoExtractor:
    def __init__(self, memo: WindowMemo):
        self._memo = memo

    def __getattr__(self, name: str):
        return getattr(self._memo._extractor, name)

    def vector(self, y: np.ndarray, *, sr: int):
        feats, vec = self._memo.lookup(b"prosody%d" % sr, [np.asarray(y, dtype=np.float32)],
                                       lambda: self._memo._extractor.vector(y, sr=sr))
        return feats, vec.copy()


class _MemoVad:
    def __init__(self, memo: WindowMemo):
        self._memo = memo

    def __getattr__(self, name: str):
        return getattr(self._memo._vad, name)

    def stream(self, speaker):
        from ..vad import VadStream

        return VadStream(self, speaker)   # calls self._run below

    def _run(self, batch: np.ndarray, h: np.ndarray, c: np.ndarray):
        out, h2, c2 = self._memo.lookup(b"vad", [batch, h, c], lambda: self._memo._vad._run(batch, h, c))
        return out.copy(), h2.copy(), c2.copy()


def read_cached_cues(cache: Path, *, fusion_id: str | None = None) -> dict[str, CallCues]:
    """The calls recorded so far in a cue cache (JSON lines), by "corpus/call_id"; {} when there is none.
    ``fusion_id``: only cues recorded with that fusion."""
    done: dict[str, CallCues] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            c = CallCues.from_json(json.loads(line))
            if fusion_id is None or c.fusion_id == fusion_id:
                done[c.call_id] = c
    return done


def record_calls(rows: Sequence[Mapping], *, engine, fusion: CueFusion | None = None, cache_dir: Path | None = None,
                 memo: Path | None = None, progress: Callable[[str], None] = log.info) -> list[CallCues]:
    """CallCues of every row, recorded by ``engine``, which must run ``fusion`` (the fusion that will score
    them), cached as JSON lines in ``cache_dir/<fusion_id>.jsonl``; ``memo``: a folder for WindowMemo."""
    if fusion is None:
        raise ConfigError("record_calls needs the fusion the cues will be scored with (cues depend on it: "
                          "the caller's baselines learn only while its level is low); see refit_recorded")
    check_engine_runs(engine.config, fusion)
    window_s = engine.config.emotion.window_s
    # cues depend on the analysis window too; the default keeps the cache names it always had
    name = fusion.fusion_id if window_s == ANALYSIS_WINDOW_S else f"{fusion.fusion_id}-w{window_s:g}"
    cache = cache_dir / f"{name}.jsonl" if cache_dir is not None else None
    done = read_cached_cues(cache, fusion_id=fusion.fusion_id) if cache is not None else {}
    windows = WindowMemo(engine, memo) if memo is not None else contextlib.nullcontext()
    out = []
    with windows:
        for i, r in enumerate(rows):
            key = f"{r['corpus']}/{r['call_id']}"
            if key not in done:
                if memo is not None:
                    windows.open_call(key)
                t, x, other, dur = record_call(r["path"], engine=engine, config=engine.config,
                                               agent_channel=r["agent_channel"], call_id=r["call_id"])
                if memo is not None:
                    windows.close_call()
                # as the cache keeps them (5 decimals): a fit on fresh cues is the fit on cached ones
                line = json.dumps(CallCues(key, r["corpus"], r["variant"], r["kind"], r["onset_s"], dur, t, x, other,
                                           fusion.fusion_id, window_s).to_json())
                done[key] = CallCues.from_json(json.loads(line))
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    with open(cache, "a", encoding="utf-8") as fh:
                        fh.write(line + "\n")
                if (i + 1) % 20 == 0:
                    progress(f"  recorded {i + 1}/{len(rows)} calls")
            out.append(done[key])
    return out


# ---------------------------------------------------------------------------- the per-second model
def labels(c: CallCues) -> np.ndarray:
    """Per-second targets: agitated from the onset (+ lag) on, calm elsewhere."""
    if c.onset_s is None:
        return np.zeros(len(c.t_s))
    return (c.t_s >= c.onset_s + LABEL_LAG_S).astype(float)


def model_inputs(c: CallCues) -> np.ndarray:
    """MODEL_FEATURES per second [n, k], by the tracker's own CueBaseline."""
    base = CueBaseline()
    return np.array([base.model_features(tuple(row)) for row in c.features], dtype=float).reshape(-1, len(MODEL_FEATURES))


def fit_fusion(calls: Sequence[CallCues], *, l2: float = L2) -> LearnedFusion:
    """Sign-constrained logistic regression over every second the caller's voice is held (or over-talk)."""
    xs, ys, ws = [], [], []
    for c in calls:
        active = (c.features[:, 0] > 0) | (c.features[:, -1] > 0)
        if not active.any():
            continue
        y = labels(c)[active]
        xs.append(model_inputs(c)[active])
        ys.append(y)
        ws.append(np.full(active.sum(), 1.0 / active.sum()))
    x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    # positives and negatives weigh alike overall
    pos = y > 0.5
    w = np.where(pos, w / max(w[pos].sum(), 1e-12), w / max(w[~pos].sum(), 1e-12))
    w = w / w.sum()
    d = x.shape[1]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:d] + theta[d]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        eps = 1e-12
        loss = -np.sum(w * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))) + 0.5 * l2 * 1e-3 * theta[:d] @ theta[:d]
        g = w * (p - y)
        return float(loss), np.concatenate([x.T @ g + l2 * 1e-3 * theta[:d], [g.sum()]])

    bounds = [(0.0, None) if SIGNS[f] > 0 else (None, 0.0) if SIGNS[f] < 0 else (None, None) for f in MODEL_FEATURES]
    res = scipy.optimize.minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                                  bounds=bounds + [(None, None)], options={"maxiter": 2000})
    # kept as written to fusion.json (4 decimals), so the fitted fusion is the one an engine loads
    theta = np.round(res.x, 4)
    digest = hashlib.sha256(np.round(theta, 6).tobytes()).hexdigest()[:8]
    return LearnedFusion(tuple(float(v) for v in theta[:d]), float(theta[d]), f"fusion-lr-{digest}")


def replay_evidence(c: CallCues, model: LearnedFusion) -> np.ndarray:
    """The per-second fused evidence (before the detector) the engine's AgitationTracker computes [n]."""
    z = model_inputs(c) @ np.asarray(model.weights) + model.bias
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    active = (c.features[:, 0] > 0) | (c.features[:, -1] > 0)
    return 1.0 - (1.0 - np.where(active, p, 0.0)) * (1.0 - c.other)


def detector_levels(raw: np.ndarray, timing: Timing) -> np.ndarray:
    """The level the policy reads, by the product's own detector (``pipeline.detector``) [n]."""
    det = make_detector(timing.detector, rise_tau_s=timing.rise_tau_s, fall_tau_s=timing.fall_tau_s,
                        cusum_drift=timing.cusum_drift, cusum_threshold=timing.cusum_threshold)
    return np.array([det.update(float(r)) for r in raw])


def replay_levels(c: CallCues, model: LearnedFusion, timing: Timing) -> np.ndarray:
    """The per-second agitation the engine's AgitationTracker computes from these inputs [n]."""
    return detector_levels(replay_evidence(c, model), timing)


def policy_raises(t_s: np.ndarray, level: np.ndarray, timing: Timing, base: PolicyOptions = PolicyOptions()) -> list[float]:
    """Takeover raise times from the product's AlertPolicy."""
    options = dataclasses.replace(base, raise_level=timing.raise_level, min_sustain_s=timing.min_sustain_s,
                                  clear_level=min(base.clear_level, timing.raise_level))
    policy = AlertPolicy("caller_agitation", options, "eval", None)
    raised = []
    for t, lv in zip(t_s, level):
        raised.extend(ev.raised_at_s for ev in policy.update(float(t), float(lv)) if ev.state == "raised")
    return raised


def score(calls: Sequence[CallCues], model: LearnedFusion, timing: Timing) -> dict:
    """Recall, early alerts, false takeovers per calm call, latency median/p90 (by the real policy)."""
    esc = [c for c in calls if c.onset_s is not None]
    calm = [c for c in calls if c.onset_s is None]
    detected, early, latencies, false = 0, 0, [], 0
    per_call = []
    for c in calls:
        raises = policy_raises(c.t_s, replay_levels(c, model, timing), timing)
        if c.onset_s is None:
            false += len(raises)
            per_call.append({"call": c.call_id, "kind": c.kind, "false": len(raises)})
            continue
        before = [r for r in raises if r < c.onset_s]
        after = [r for r in raises if r >= c.onset_s]
        early += bool(before)
        if after:
            detected += 1
            latencies.append(after[0] - c.onset_s)
        per_call.append({"call": c.call_id, "kind": c.kind, "early": bool(before),
                         "latency_s": (after[0] - c.onset_s) if after else None})
    lat = np.array(latencies)
    return {
        "n_escalating": len(esc), "n_calm": len(calm),
        "n_calm_plain": sum(1 for c in calm if c.kind == "calm"), "n_lively": sum(1 for c in calm if c.kind == "lively-calm"),
        "recall": detected / len(esc) if esc else math.nan,
        "early_share": early / len(esc) if esc else math.nan,
        "false_per_calm_call": false / len(calm) if calm else math.nan,
        "false_per_lively_call": (sum(p["false"] for p in per_call if p["kind"] == "lively-calm")
                                  / max(1, sum(1 for c in calm if c.kind == "lively-calm"))),
        "latency_median_s": float(np.median(lat)) if len(lat) else math.nan,
        "latency_p90_s": float(np.percentile(lat, 90)) if len(lat) else math.nan,
        "per_call": per_call,
    }


def latency_parts(calls: Sequence[CallCues], model: LearnedFusion, timing: Timing) -> dict:
    """Where the seconds between the onset and the takeover go, medians over detected escalating calls:
    ``evidence_s`` (onset -> first second the unsmoothed evidence reaches raise_level: the 2 s analysis
    window, the 1 s hop and the cue itself), ``smoothing_s`` (-> the smoothed level reaches it) and
    ``sustain_s`` (-> the policy raises). ``full_window_s``: onset -> the first caller reading whose
    analysis window (``CallCues.window_s``) lies wholly after the onset (the floor the analysis window and the 1 s hop set). With
    ``detector = "cusum"``, evidence_s is -> the evidence first exceeds the drift and smoothing_s the
    accumulation up to the threshold."""
    parts: dict[str, list[float]] = {"full_window_s": [], "evidence_s": [], "smoothing_s": [], "sustain_s": []}
    for c in calls:
        if c.onset_s is None:
            continue
        level = replay_levels(c, model, timing)
        raises = [r for r in policy_raises(c.t_s, level, timing) if r >= c.onset_s]
        if not raises:
            continue
        raw = replay_evidence(c, model)
        after = c.t_s >= c.onset_s
        # cusum: the evidence starts to count once it exceeds the drift; "smoothing" is the accumulation
        t_ev = c.t_s[after & (raw >= (timing.cusum_drift if timing.detector == "cusum" else timing.raise_level))]
        t_lv = c.t_s[after & (level >= timing.raise_level)]
        if not len(t_ev) or not len(t_lv):
            continue
        full = c.t_s[(c.t_s - c.window_s >= c.onset_s) & (c.features[:, 0] > 0)]
        if len(full):
            parts["full_window_s"].append(float(full[0] - c.onset_s))
        parts["evidence_s"].append(float(t_ev[0] - c.onset_s))
        parts["smoothing_s"].append(float(max(0.0, t_lv[0] - t_ev[0])))
        parts["sustain_s"].append(float(max(0.0, raises[0] - t_lv[0])))
    return {k: (float(np.median(v)) if v else math.nan) for k, v in parts.items()}


def _first_raise_fast(level: np.ndarray, raise_level: float, sustain_steps: int) -> np.ndarray:
    """Indices where a run of level >= raise_level has lasted sustain_steps more seconds (first of each run)."""
    above = level >= raise_level
    if not above.any():
        return np.array([], dtype=int)
    out = []
    run = 0
    for i, a in enumerate(above):
        run = run + 1 if a else 0
        if run == sustain_steps + 1:
            out.append(i)
    return np.array(out, dtype=int)


def budget_key(calls: Sequence[CallCues], levels: Mapping[int, np.ndarray], raise_level: float, sustain: int
                ) -> tuple[tuple, dict]:
    """The selection key of one (levels, raise level, sustain): within the false/early budgets, recall,
    then the shortest median latency; outside them, the least over budget first. First raise of each
    run above the level (the policy's cooldown and hysteresis ignored: a quick scan)."""
    esc = [c for c in calls if c.onset_s is not None]
    calm = [c for c in calls if c.onset_s is None]
    n_false = sum(len(_first_raise_fast(levels[id(c)], raise_level, sustain)) > 0 for c in calm)
    n_early, lat = 0, []
    for c in esc:
        idx = _first_raise_fast(levels[id(c)], raise_level, sustain)
        ts = c.t_s[idx] if len(idx) else np.array([])
        n_early += bool((ts < c.onset_s).any())
        after = ts[ts >= c.onset_s]
        if len(after):
            lat.append(after[0] - c.onset_s)
    false_rate, early_rate = n_false / max(1, len(calm)), n_early / max(1, len(esc))
    recall = len(lat) / max(1, len(esc))
    med = float(np.median(lat)) if lat else 1e9
    ok = false_rate <= MAX_FALSE and early_rate <= MAX_EARLY
    return (ok, recall if ok else -(false_rate + early_rate), -med), {"recall": recall, "false": false_rate}


def select_timing(calls: Sequence[CallCues], model: LearnedFusion, *, progress: Callable[[str], None] = log.info
                  ) -> tuple[Timing, dict]:
    """The timing with the most recall within the false/early budgets (then the lowest median latency).

    A quick scan (first raise of each run above the level; the policy's cooldown and hysteresis are
    ignored) ranks the grid; the winner is re-scored by the real policy.
    """
    best = None
    for rise in RISE_GRID:
        for fall in FALL_GRID:
            levels = {id(c): replay_levels(c, model, Timing(rise, fall)) for c in calls}
            for sustain in SUSTAIN_GRID:
                for lv in RAISE_GRID:
                    key, _ = budget_key(calls, levels, float(lv), int(sustain))
                    if best is None or key > best[0]:
                        best = (key, Timing(rise, fall, float(lv), float(sustain)))
    timing = best[1]
    figures = score(calls, model, timing)
    progress(f"  timing {timing}: recall {figures['recall']:.2f}, false/calm call {figures['false_per_calm_call']:.3f}, "
             f"early {figures['early_share']:.2f}, median latency {figures['latency_median_s']:.1f} s")
    return timing, figures


def fit(calls: Sequence[CallCues], *, progress: Callable[[str], None] = log.info) -> tuple[LearnedFusion, Timing, dict]:
    """Fusion weights, then timing, on ``calls``; returns (model, timing, training-call figures)."""
    model = fit_fusion(calls)
    timing, figures = select_timing(calls, model, progress=progress)
    return model, timing, figures


def loco_folds(calls_by_fold: Mapping[str, Sequence[CallCues]], corpora: Sequence[str]):
    """(held-out corpus C, training calls, C's calls) for each C with both: ``calls_by_fold[C]`` holds every
    call's cues by the emotion model trained without C, and no call of C is ever in the training calls."""
    for held in corpora:
        calls = calls_by_fold[held]
        train = [c for c in calls if c.corpus != held]
        test = [c for c in calls if c.corpus == held]
        if test and train:
            yield held, train, test


def loco_fusion(calls_by_fold: Mapping[str, Sequence[CallCues]], *, corpora: Sequence[str],
                progress: Callable[[str], None] = log.info) -> dict:
    """``calls_by_fold[C]``: every call's cues by the emotion model trained without corpus C. For each
    C, fit on the other corpora's calls, score C's calls. Returns {C: {"fit_on", "timing", "model", "figures"}}."""
    out = {}
    for held, train, test in loco_folds(calls_by_fold, corpora):
        progress(f"fusion LOCO: {held} held out; fitting on {sorted({c.corpus for c in train})}")
        model, timing, _ = fit(train, progress=progress)
        out[held] = {"fit_on": sorted({c.corpus for c in train}), "timing": dataclasses.asdict(timing),
                     "model": model.to_json(), "figures": fold_figures(test, model, timing)}
    return out


def fold_figures(test: Sequence[CallCues], model: LearnedFusion, timing: Timing) -> dict:
    """score() of the scored calls, all together (with latency parts) and per variant."""
    figures = {"all": {**score(test, model, timing), "latency_parts": latency_parts(test, model, timing)}}
    for variant in sorted({c.variant for c in test}):
        figures[variant] = score([c for c in test if c.variant == variant], model, timing)
    return figures


# ---------------------------------------------------------------------------- fitting on cues it recorded
MAX_ROUNDS = 2
MOVE_TOL = 0.05


@dataclass(frozen=True)
class Refit:
    """A fit and the cues of its scored calls, recorded with it (``fusion.fusion_id`` on every call)."""

    fusion: CueFusion
    calls: list[CallCues]
    rounds: list[dict]      # per fit: its id, the fusion its training cues were recorded with, how far it moved


def refit_recorded(record: Callable[[CueFusion, bool], list[CallCues]], *, fit_on: Callable[[CallCues], bool],
                   start: CueFusion | None = None, max_rounds: int = MAX_ROUNDS, tol: float = MOVE_TOL,
                   progress: Callable[[str], None] = log.info) -> Refit:
    """Record every call with ``start`` (default :func:`silent_fusion`), fit on the calls ``fit_on`` keeps,
    re-record with the fit, refit, ... until a refit moves no weight nor the bias by more than ``tol`` with
    the same timing (then the fusion the cues were recorded with is kept) or after ``max_rounds`` fits.

    ``record(fusion, scored_only)``: the cues of the calls recorded with ``fusion``; ``scored_only`` asks
    for only the calls that will be scored (no further fit needs the others)."""
    fusion = start or silent_fusion()
    calls, rounds = record(fusion, False), []
    for k in range(1, max_rounds + 1):
        model, timing, _ = fit([c for c in calls if fit_on(c)], progress=progress)
        fitted = CueFusion(model, timing)
        moved, retimed = fitted.moved_from(fusion), timing != fusion.timing
        rounds.append({"round": k, "fitted": fitted.fusion_id, "timing": timing.describe(),
                       "on_cues_of": fusion.fusion_id, "moved": moved, "timing_changed": retimed})
        progress(f"  fit {k}: {fitted.fusion_id} ({timing.describe()}) on cues of {fusion.fusion_id}: "
                 f"weights moved {moved:.3f}{', timing changed' if retimed else ''}")
        if k > 1 and moved <= tol and not retimed:
            break
        fusion = fitted
        calls = record(fusion, k == max_rounds)
    return Refit(fusion, calls, rounds)


def loco_refit(record_fold: Callable[[str, CueFusion, bool], list[CallCues]], *, corpora: Sequence[str],
               max_rounds: int = MAX_ROUNDS, progress: Callable[[str], None] = log.info) -> tuple[dict, dict[str, Refit]]:
    """Leave-one-corpus-out with cues recorded by the fusion that scores them. ``record_fold(C, fusion,
    scored_only)``: the calls' cues by the emotion model trained without C and ``fusion`` (``scored_only``:
    C's calls only). For each C, :func:`refit_recorded` fits on the other corpora's calls; C's calls are
    scored by the fit, as recorded with it. Returns (figures as :func:`loco_fusion`, {C: Refit})."""
    out, refits = {}, {}
    for held in corpora:
        progress(f"fusion LOCO: {held} held out")
        refit = refits[held] = refit_recorded(lambda f, s, held=held: record_fold(held, f, s),
                                              fit_on=lambda c, held=held: c.corpus != held,
                                              max_rounds=max_rounds, progress=progress)
        test = [c for c in refit.calls if c.corpus == held]
        model, timing = refit.fusion.model, refit.fusion.timing
        assert all(c.fusion_id == refit.fusion.fusion_id for c in test), "scored cues recorded with another fusion"
        out[held] = {"fit_on": sorted(set(corpora) - {held}), "timing": dataclasses.asdict(timing),
                     "model": model.to_json(), "fusion_id": refit.fusion.fusion_id, "rounds": refit.rounds,
                     "figures": fold_figures(test, model, timing)}
    return out, refits


def write_fusion_dir(out_dir: Path, model: LearnedFusion, timing: Timing, details: Mapping) -> Path:
    """``fusion.json`` (weights, timing, figures); the engine reads weights, TOML carries the timing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**model.to_json(), "timing": dataclasses.asdict(timing), **details}
    path = out_dir / FUSION_FILE
    path.write_text(json.dumps(_round(meta), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 4) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def drop_per_call(figures: Mapping) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk != "per_call"} if isinstance(v, dict) else v)
            for k, v in figures.items() if k != "per_call"}


def iter_variants(calls: Iterable[CallCues]) -> list[str]:
    return sorted({c.variant for c in calls})
