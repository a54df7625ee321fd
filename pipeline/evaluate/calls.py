"""Annotated stereo evaluation calls built from labelled single-speaker clips (EmoDB), for
``evaluate alerts``; run by ``scripts/make_eval_calls.py``.

Design (every choice is an option of :class:`CallBuildOptions`):

* Each speaker of the corpus is the *caller* of exactly one call; speakers are interleaved by gender
  (f, m, f, m, ...) and the first half of that list gets *escalating* calls, the second half *calm*
  ones, so both kinds have callers of both genders (with EmoDB's 5 f + 5 m: 3 f + 2 m escalating,
  2 f + 3 m calm). The *agent* of a call is the next speaker in the list, so everyone is agent once too,
  and agent and caller are always different people.
* The agent (channel ``agent_channel``, default 0) speaks only neutral clips: a greeting, then one turn
  after every caller turn. The caller (the other channel) speaks ``neutral_turns`` neutral turns, then
  ``angry_turns`` angry turns of ``clips_per_angry_turn`` clips each (an agitated caller talks longer);
  calm calls have ``calm_turns`` caller turns and no angry one, cycling through ``calm_emotions``
  (default neutral only; ``("neutral", "happy")`` makes a harder set with lively but not agitated
  callers, the usual source of false alarms on arousal).
* Turns are separated by a random silence in ``gap_s`` (seeded), clips within a turn by
  ``intra_turn_gap_s``; the call opens with ``lead_in_s`` of silence and closes with ``tail_s``.
  Both channels carry a faint white-noise floor (``noise_dbfs``), as real lines do, so no stage sees
  digital silence.
* With ``every_kind`` each speaker is instead the caller of one call of *each* kind in ``kinds``:
  ``escalating``, ``calm`` (caller turns cycle through ``calm_emotions``) and ``lively-calm`` (caller
  turns cycle through ``lively_emotions``, default neutral and happy: excitement, not agitation). A
  speaker without the clips a kind needs is skipped as that kind's caller (logged).
* ``corpus`` keeps only the source manifest's rows of that ``corpus`` column (e.g. one corpus of
  ``emotion-multi/manifest.csv``); call ids then start with it, so calls of several corpora can share
  one folder.
* ``agitation_onset_s`` is the start of the caller's first angry turn (empty for calm calls).
* Every call is written at the corpus rate (16-bit PCM WAV) and, with ``telephone``, as an 8 kHz G.711
  mu-law WAV band-limited to 300-3400 Hz (:func:`.telephone.telephone_version`), with the same timing.
* Clips are drawn per speaker and emotion from a seeded shuffle without replacement, reshuffled when
  exhausted (a speaker with few neutral clips may repeat one late in a call).

Outputs under ``out``: ``<call>.wav``, ``<call>.json`` (turn-level annotations) and ``calls.csv``
(``path, agent_channel, agitation_onset_s, agent_id, started_at`` plus ``variant, kind, caller_speaker,
agent_speaker, duration_s``), split by kind into ``escalating.csv`` and ``calm.csv``.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from ..audio import load_audio
from ..errors import EvaluationError
from .manifests import default_data_dir, read_manifest, repo_root
from .telephone import TELEPHONE_SR_HZ, telephone_version

log = logging.getLogger("pipeline.evaluate.calls")

MANIFEST_NAME = "calls.csv"
MANIFEST_COLUMNS = ("path", "agent_channel", "agitation_onset_s", "agent_id", "started_at", "variant", "kind",
                    "caller_speaker", "agent_speaker", "duration_s", "corpus")
KINDS = ("escalating", "calm", "lively-calm")


@dataclass(frozen=True)
class CallBuildOptions:
    """How evaluation calls are assembled (see the module docstring)."""

    source_manifest: str = ""        # "" = $CALLPULSE_DATA/emodb/manifest.csv
    out: str = ""                    # "" = <repo>/eval/calls
    seed: int = 0
    agent_channel: int = 0
    neutral_turns: int = 3
    angry_turns: int = 4
    clips_per_angry_turn: int = 2
    calm_turns: int = 7
    calm_emotions: tuple[str, ...] = ("neutral",)
    gap_s: tuple[float, float] = (0.4, 1.2)
    intra_turn_gap_s: float = 0.25
    lead_in_s: float = 1.0
    tail_s: float = 3.0
    noise_dbfs: float = -60.0
    telephone: bool = True
    shift_start: str = "2026-01-05T09:00:00+08:00"
    call_spacing_min: float = 10.0   # started_at of consecutive calls
    corpus: str = ""                 # keep only source rows of this corpus ("" = all)
    every_kind: bool = False         # each speaker calls once per kind in `kinds`
    kinds: tuple[str, ...] = ("escalating", "calm", "lively-calm")
    lively_emotions: tuple[str, ...] = ("neutral", "happy")

    def __post_init__(self) -> None:
        if self.agent_channel not in (0, 1):
            raise ValueError("agent_channel must be 0 or 1")
        if min(self.neutral_turns, self.calm_turns) < 1 or self.angry_turns < 1 or self.clips_per_angry_turn < 1:
            raise ValueError("every call needs at least one turn of each kind it uses")
        if not self.calm_emotions or "angry" in self.calm_emotions:
            raise ValueError("calm_emotions must name at least one emotion, and not angry")
        if "angry" in self.lively_emotions or not self.lively_emotions:
            raise ValueError("lively_emotions must name at least one emotion, and not angry")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be among {KINDS}, got {self.kinds}")
        if not 0.0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError("gap_s must be (low, high) with 0 <= low <= high")


@dataclass(frozen=True)
class Clip:
    file: str          # path as resolved from the source manifest
    speaker: str
    emotion: str
    gender: str


@dataclass(frozen=True)
class Turn:
    role: str                    # "agent" | "caller"
    emotion: str
    clips: tuple[str, ...]


@dataclass(frozen=True)
class CallPlan:
    call_id: str
    kind: str                    # "escalating" | "calm" | "lively-calm"
    caller: str
    agent: str
    turns: tuple[Turn, ...]
    gaps_s: tuple[float, ...]    # silence before each turn
    started_at: str


@dataclass(frozen=True)
class PlacedTurn:
    role: str
    emotion: str
    start_s: float
    end_s: float
    clips: tuple[str, ...]


def interleave_by_gender(clips: Sequence[Clip]) -> list[str]:
    """Speakers sorted within each gender, then alternated (f, m, f, m, ...; leftovers at the end)."""
    by_gender: dict[str, list[str]] = {}
    for c in clips:
        group = by_gender.setdefault(c.gender or "?", [])
        if c.speaker not in group:
            group.append(c.speaker)
    lists = [sorted(v) for _, v in sorted(by_gender.items())]
    order: list[str] = []
    for k in range(max(len(v) for v in lists)):
        order += [v[k] for v in lists if k < len(v)]
    return order


class _Draw:
    """Seeded draws without replacement per (speaker, emotion), reshuffled when a pool runs out."""

    def __init__(self, clips: Sequence[Clip], rng: random.Random) -> None:
        self.rng = rng
        self.pools: dict[tuple[str, str], list[str]] = {}
        for c in clips:
            self.pools.setdefault((c.speaker, c.emotion), []).append(c.file)
        self.left: dict[tuple[str, str], list[str]] = {}

    def take(self, speaker: str, emotion: str) -> str:
        key = (speaker, emotion)
        if key not in self.pools:
            raise EvaluationError(f"speaker {speaker} has no {emotion} clip; every speaker needs neutral and "
                                  "angry clips to build calls")
        if not self.left.get(key):
            pool = sorted(self.pools[key])
            self.rng.shuffle(pool)
            self.left[key] = pool
        return self.left[key].pop()


def plan_calls(clips: Sequence[Clip], options: CallBuildOptions) -> list[CallPlan]:
    """The deterministic call plan: who calls, who answers, which clips, which gaps."""
    speakers = interleave_by_gender(clips)
    if len(speakers) < 2:
        raise EvaluationError("building calls needs at least two speakers (a caller and an agent)")
    rng = random.Random(options.seed)
    draw = _Draw(clips, rng)
    start = _dt.datetime.fromisoformat(options.shift_start)
    n_escalating = (len(speakers) + 1) // 2
    if options.every_kind:
        have = {(c.speaker, c.emotion) for c in clips}
        needs = {"escalating": ("neutral", "angry"), "calm": options.calm_emotions,
                 "lively-calm": options.lively_emotions}
        pairs = []
        for kind in options.kinds:
            for i, caller in enumerate(speakers):
                if all((caller, e) in have for e in needs[kind]):
                    pairs.append((i, caller, kind))
                else:
                    log.info("speaker %s has no %s clips: not the caller of a %s call", caller,
                             "/".join(e for e in needs[kind] if (caller, e) not in have), kind)
    else:
        pairs = [(i, c, "escalating" if i < n_escalating else "calm") for i, c in enumerate(speakers)]
    prefix = f"{options.corpus}-" if options.corpus else ""
    plans = []
    for n_call, (i, caller, kind) in enumerate(pairs):
        agent = speakers[(i + 1) % len(speakers)]
        turns = [Turn("agent", "neutral", (draw.take(agent, "neutral"),))]
        emotions = options.lively_emotions if kind == "lively-calm" else options.calm_emotions
        caller_turns = ([("neutral", 1)] * options.neutral_turns + [("angry", options.clips_per_angry_turn)]
                        * options.angry_turns) if kind == "escalating" else \
            [(emotions[k % len(emotions)], 1) for k in range(options.calm_turns)]
        for emotion, n in caller_turns:
            turns.append(Turn("caller", emotion, tuple(draw.take(caller, emotion) for _ in range(n))))
            turns.append(Turn("agent", "neutral", (draw.take(agent, "neutral"),)))
        gaps = [options.lead_in_s] + [round(rng.uniform(*options.gap_s), 3) for _ in turns[1:]]
        started = start + _dt.timedelta(minutes=options.call_spacing_min * n_call)
        short = {"escalating": "esc", "calm": "calm", "lively-calm": "lively"}[kind]
        plans.append(CallPlan(call_id=f"{prefix}{short}-{i:02d}-{caller}", kind=kind, caller=caller, agent=agent,
                              turns=tuple(turns), gaps_s=tuple(gaps), started_at=started.isoformat()))
    return plans


def render(plan: CallPlan, *, load: Callable[[str], np.ndarray], sr: int, options: CallBuildOptions
           ) -> tuple[np.ndarray, list[PlacedTurn], float | None]:
    """Lay the plan's clips out on two channels.

    Returns
    -------
    audio : np.ndarray [shape=(2, n)], float32 at ``sr``
    placed : every turn with its start and end in seconds
    onset_s : start of the first angry caller turn, or None
    """
    placed: list[PlacedTurn] = []
    pieces: list[tuple[int, int, np.ndarray]] = []   # (channel, start sample, audio)
    t = 0
    for turn, gap in zip(plan.turns, plan.gaps_s):
        t += int(round(gap * sr))
        channel = options.agent_channel if turn.role == "agent" else 1 - options.agent_channel
        start = t
        for k, clip in enumerate(turn.clips):
            if k:
                t += int(round(options.intra_turn_gap_s * sr))
            y = load(clip)
            pieces.append((channel, t, y))
            t += len(y)
        placed.append(PlacedTurn(turn.role, turn.emotion, start / sr, t / sr, turn.clips))
    n = t + int(round(options.tail_s * sr))
    audio = np.zeros((2, n), dtype=np.float32)
    for channel, s, y in pieces:
        audio[channel, s:s + len(y)] += y
    rng = np.random.default_rng(options.seed + sum(map(ord, plan.call_id)))
    audio += (10 ** (options.noise_dbfs / 20.0) * rng.standard_normal(audio.shape)).astype(np.float32)
    onset = next((p.start_s for p in placed if p.role == "caller" and p.emotion == "angry"), None)
    return np.clip(audio, -1.0, 1.0), placed, onset


def read_clips(manifest: Path, *, corpus: str = "") -> list[Clip]:
    """The manifest's clips (only those of ``corpus`` when given and the manifest has that column)."""
    rows = read_manifest(manifest, required=("path", "speaker", "emotion"))
    if corpus:
        rows = [r for r in rows if r.get("corpus") == corpus]
        if not rows:
            raise EvaluationError(f"{manifest} has no rows of corpus {corpus!r} (column 'corpus')")
    return [Clip(str(r.path), r.get("speaker"), r.get("emotion").lower(), r.get("gender").lower()) for r in rows]


def build_calls(options: CallBuildOptions, *, progress: Callable[[str], None] = log.info) -> Path:
    """Plan, render and write every call and the manifest; returns the manifest's path."""
    source = Path(options.source_manifest) if options.source_manifest else default_data_dir() / "emodb" / "manifest.csv"
    out = Path(options.out) if options.out else repo_root() / "eval" / "calls"
    wanted = ("neutral", "angry", *options.calm_emotions, *(options.lively_emotions if options.every_kind else ()))
    clips = [c for c in read_clips(source, corpus=options.corpus) if c.emotion in wanted]
    plans = plan_calls(clips, options)
    cache: dict[str, np.ndarray] = {}
    sr_seen: set[int] = set()

    def load(path: str) -> np.ndarray:
        if path not in cache:
            audio = load_audio(path)
            sr_seen.add(audio.sample_rate_hz)
            if len(sr_seen) > 1:
                raise EvaluationError(f"source clips have different sample rates {sorted(sr_seen)}; resample them "
                                      "to one rate first")
            cache[path] = audio.samples.mean(axis=0)
        return cache[path]

    load(clips[0].file)
    sr = next(iter(sr_seen))
    out.mkdir(parents=True, exist_ok=True)
    manifest_rows = []
    for plan in plans:
        audio, placed, onset = render(plan, load=load, sr=sr, options=options)
        variants = [("wideband", plan.call_id, audio, sr, "PCM_16")]
        if options.telephone:
            tel = np.stack([telephone_version(ch, sr=sr, band_pass=True) for ch in audio])
            variants.append(("telephone", f"{plan.call_id}-8k", tel, TELEPHONE_SR_HZ, "ULAW"))
        for k, (variant, name, y, rate, subtype) in enumerate(variants):
            # Each variant is a separate shift day for the same agent, so their calls never overlap in time.
            started_at = (_dt.datetime.fromisoformat(plan.started_at) + _dt.timedelta(days=k)).isoformat()
            sf.write(out / f"{name}.wav", y.T, rate, subtype=subtype)
            note = {"call_id": name, "variant": variant, "kind": plan.kind, "caller_speaker": plan.caller,
                    "agent_speaker": plan.agent, "agent_channel": options.agent_channel,
                    "agitation_onset_s": onset, "sample_rate_hz": rate, "duration_s": y.shape[1] / rate,
                    "turns": [{"role": p.role, "emotion": p.emotion, "start_s": round(p.start_s, 3),
                               "end_s": round(p.end_s, 3), "clips": [Path(c).name for c in p.clips]} for p in placed],
                    "options": {k: v for k, v in options.__dict__.items()}}
            (out / f"{name}.json").write_text(json.dumps(note, indent=1, ensure_ascii=False), encoding="utf-8")
            manifest_rows.append({
                "path": f"{name}.wav", "agent_channel": options.agent_channel,
                "agitation_onset_s": "" if onset is None else f"{onset:.3f}",
                "agent_id": f"agent-{plan.agent}", "started_at": started_at, "variant": variant,
                "kind": plan.kind, "caller_speaker": plan.caller, "agent_speaker": plan.agent,
                "duration_s": f"{y.shape[1] / rate:.3f}", "corpus": options.corpus})
        progress(f"{plan.call_id}: {plan.kind}, caller {plan.caller}, agent {plan.agent}, "
                 f"{audio.shape[1] / sr:.1f} s, onset {'-' if onset is None else f'{onset:.2f} s'}")
    # calls.csv holds every call; escalating.csv and calm.csv the same rows split by kind, for
    # evaluating one kind alone (e.g. false alerts on a harder calm set).
    for name, rows in ((MANIFEST_NAME, manifest_rows),
                       *((f"{kind}.csv", [r for r in manifest_rows if r["kind"] == kind]) for kind in KINDS
                         if any(r["kind"] == kind for r in manifest_rows) or kind != "lively-calm")):
        with open(out / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return out / MANIFEST_NAME



__all__ = ["CallBuildOptions", "CallPlan", "Clip", "Turn", "PlacedTurn", "plan_calls", "render", "build_calls",
           "interleave_by_gender", "read_clips"]
