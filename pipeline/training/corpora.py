"""Labelled emotion clips from several corpora, and their cached prosody feature vectors.

The emotion model is trained and *chosen* across corpora (leave-one-corpus-out,
:mod:`pipeline.training.loco`), so clips carry their corpus, language and licence. Sources:

* ``$CALLPULSE_DATA/emodb`` (German, 10 speakers, CC0);
* ``$CALLPULSE_DATA/emotion-multi`` (nEMO Polish and emotiontts-ko Korean, both CC BY-NC-SA 4.0; URDU,
  research use, **test only**: each of its classes comes from a few speakers, see its README);
* a bank's own manifest (``callpulse train emotion --manifest``): ``path, emotion, speaker`` and
  optionally ``language``, ``corpus``, ``gender``.

Each clip is measured as recorded and as an 8 kHz G.711 mu-law telephone version, once as a whole clip
(what training sees) and in the live engine's pattern (the last 2 s every second), by the model's own
``ProsodyExtractor``; vectors are cached per corpus under ``.cache/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import soundfile as sf

from ..audio import resample
from ..emotion import CLASSES
from ..errors import DatasetError
from ..manifest import read_manifest as read_csv_manifest
from ..prosody import ProsodyExtractor, ProsodyOptions

log = logging.getLogger(__name__)

# Corpora the shipped model may learn from, and the one that is only ever scored.
TRAIN_CORPORA: tuple[str, ...] = ("EmoDB", "nEMO", "emotiontts-ko")
TEST_ONLY_CORPORA: tuple[str, ...] = ("URDU",)
LICENCES: Mapping[str, str] = {"EmoDB": "CC0-1.0", "nEMO": "CC BY-NC-SA 4.0",
                               "emotiontts-ko": "CC BY-NC-SA 4.0", "URDU": "research use only"}
RATES: tuple[str, ...] = ("16k", "8k-mulaw")
LIVE_WINDOW_S = 2.0
LIVE_HOP_S = 1.0
# Labels a manifest may use for the four classes (case-insensitive); anything else is an error.
LABEL_ALIASES: Mapping[str, str] = {
    "angry": "angry", "anger": "angry", "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral", "sad": "sad", "sadness": "sad",
}
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ClipRow:
    """One labelled clip."""

    path: str
    emotion: str        # one of CLASSES
    speaker: str
    corpus: str
    language: str = ""
    gender: str = ""


def read_clip_manifest(manifest: str | Path, *, root: str | Path | None = None,
                       default_corpus: str = "") -> list[ClipRow]:
    """Read and check a clip manifest (``path`` or ``file``, ``emotion``, ``speaker``; optional
    ``language``, ``corpus``, ``gender``).

    Raises
    ------
    DatasetError
        Missing manifest or columns, empty cells, labels outside the four classes, audio files that do
        not exist (the first few are named, with their line numbers).
    """
    manifest = Path(manifest)
    base = Path(root) if root is not None else manifest.parent
    # The one manifest reader checks the file, the header and the paths; the labels are checked here.
    rows, bad_labels, missing_files, empty = [], [], [], []
    corpus_name = default_corpus or manifest.parent.name
    for r in read_csv_manifest(manifest, required=("path", "emotion", "speaker"), root=root, check_files=False,
                               error=DatasetError, hint="pass a CSV with columns path, emotion, speaker (and "
                               "optionally language, corpus, gender)"):
        if not r.get("speaker") or not r.get("emotion"):
            empty.append(r.line)
            continue
        label = LABEL_ALIASES.get(r.get("emotion").lower())
        if label is None:
            bad_labels.append((r.line, r.get("emotion")))
            continue
        if not r.path.is_file():
            missing_files.append((r.line, str(r.path)))
        rows.append(ClipRow(str(r.path), label, r.get("speaker"), r.get("corpus") or corpus_name,
                            r.get("language"), r.get("gender").lower()))
    if empty:
        raise DatasetError(f"{manifest}: line(s) {empty[:5]} have an empty path, emotion or speaker")
    if bad_labels:
        shown = ", ".join(f"line {ln}: {lab!r}" for ln, lab in bad_labels[:5])
        raise DatasetError(f"{manifest}: {len(bad_labels)} row(s) with unknown emotion labels ({shown}); "
                           f"use one of {list(CLASSES)} (or anger/happiness/joy/sadness)")
    if missing_files:
        shown = "; ".join(f"line {ln}: {p}" for ln, p in missing_files[:3])
        raise DatasetError(f"{manifest}: {len(missing_files)} audio file(s) do not exist ({shown}); relative "
                           f"paths resolve against {base}")
    if not rows:
        raise DatasetError(f"clip manifest {manifest} has a header but no rows")
    return rows


def check_trainable(rows: Sequence[ClipRow], *, where: str) -> None:
    """Refuse, before any training, a set of clips no speaker-independent model can be learnt from."""
    classes = Counter(r.emotion for r in rows)
    speakers = sorted({r.speaker for r in rows})
    if len(classes) < 2:
        raise DatasetError(f"{where}: every clip is {next(iter(classes))!r}; training needs at least two of "
                           f"{list(CLASSES)} (angry and neutral at the least)")
    if len(speakers) < 2:
        raise DatasetError(f"{where}: every clip is from speaker {speakers[0]!r}; training needs at least two "
                           "speakers (baselines and calibration are fitted across speakers)")
    thin = sorted(c for c, n in classes.items() if n < 2)
    if thin:
        raise DatasetError(f"{where}: class(es) {thin} have a single clip; give each class at least two")


def default_clip_rows(data_dir: Path, *, corpora: Sequence[str] | None = None) -> list[ClipRow]:
    """EmoDB and emotion-multi clips (four classes), optionally only some corpora."""
    rows: list[ClipRow] = []
    # (folder, corpus name or None = the manifest's corpus column, language when the manifest has none)
    for folder, corpus, language in (("emodb", "EmoDB", "de"), ("emotion-multi", None, "")):
        manifest = data_dir / folder / "manifest.csv"
        if not manifest.is_file():
            continue
        for r in read_csv_manifest(manifest, required=("path", "emotion", "speaker", *(() if corpus else ("corpus",))),
                                   check_files=False, error=DatasetError):
            if r.get("emotion") in CLASSES:
                rows.append(ClipRow(str(r.path), r.get("emotion"), r.get("speaker"), corpus or r.get("corpus"),
                                    r.get("language", language), r.get("gender")))
    if not rows:
        raise DatasetError(f"no emotion corpora under {data_dir} (expected emodb/manifest.csv and "
                           "emotion-multi/manifest.csv); point CALLPULSE_DATA at the shared data folder")
    if corpora is not None:
        unknown = sorted(set(corpora) - {r.corpus for r in rows})
        if unknown:
            raise DatasetError(f"corpora {unknown} not found under {data_dir}")
        rows = [r for r in rows if r.corpus in corpora]
    rows.sort(key=lambda r: (r.corpus, r.speaker, r.path))
    return rows


@dataclass(frozen=True)
class Features:
    """Prosody vectors of every clip (whole clip and live-sized windows) at both rates."""

    rows: tuple[ClipRow, ...]
    names: tuple[str, ...]
    clips: Mapping[str, np.ndarray]       # rate -> [n_clips, d]
    windows: Mapping[str, np.ndarray]     # rate -> [n_windows, d]
    window_clip: np.ndarray               # [n_windows] clip index of each window
    extract_s: float

    @property
    def labels(self) -> np.ndarray:
        return np.array([CLASSES.index(r.emotion) for r in self.rows], dtype=np.int64)

    @property
    def speakers(self) -> np.ndarray:
        return np.array([f"{r.corpus}/{r.speaker}" for r in self.rows])

    @property
    def corpora(self) -> np.ndarray:
        return np.array([r.corpus for r in self.rows])

    def subset(self, keep: np.ndarray) -> "Features":
        """The clips where ``keep`` [n_clips] is true, with their windows."""
        keep = np.asarray(keep, dtype=bool)
        index = np.cumsum(keep) - 1
        wkeep = keep[self.window_clip]
        return Features(rows=tuple(r for r, k in zip(self.rows, keep) if k), names=self.names,
                        clips={k: v[keep] for k, v in self.clips.items()},
                        windows={k: v[wkeep] for k, v in self.windows.items()},
                        window_clip=index[self.window_clip[wkeep]], extract_s=self.extract_s)


def telephone_clip(y: np.ndarray, *, sr: int) -> np.ndarray:
    """The G.711 line version of a clip (8 kHz mu-law coded and decoded), as evaluation calls make it."""
    from ..evaluate.telephone import telephone_version

    return telephone_version(y, sr=sr)


def _spans(n: int, *, sr: int, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    win, hop = int(round(window_s * sr)), int(round(hop_s * sr))
    if n <= win:
        return [(0, n)]
    return [(s, s + win) for s in range(0, n - win + 1, hop)]


def _key(rows: Sequence[ClipRow], prosody: ProsodyOptions) -> str:
    h = hashlib.sha256(f"corpora-{_CACHE_FORMAT}".encode())
    h.update(Path(__file__).resolve().parents[1].joinpath("prosody.py").read_bytes())
    h.update(inspect.getsource(telephone_clip).encode())
    h.update(repr(dataclasses.asdict(prosody)).encode())
    for r in rows:
        h.update(f"{r.path},{r.speaker},{r.emotion};".encode())
    return h.hexdigest()[:16]


def _read_audio(path: str) -> tuple[np.ndarray, int]:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    return y.mean(axis=1), sr


def extract_features(rows: Sequence[ClipRow], *, prosody: ProsodyOptions | None = None,
                     cache_dir: Path | None = None, progress: Callable[[str], None] = log.info,
                     window_s: float = LIVE_WINDOW_S) -> Features:
    """Vectors of ``rows`` (cached per corpus in ``cache_dir``), in the rows' order; the live-sized
    windows are ``window_s`` long, one every ``LIVE_HOP_S`` (the engine's ``[emotion] window_s``)."""
    prosody = prosody or ProsodyOptions()
    extractor = ProsodyExtractor(prosody)
    d = len(extractor.vector_names)
    by_corpus: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_corpus.setdefault(r.corpus, []).append(i)
    clips = {rate: np.zeros((len(rows), d)) for rate in RATES}
    win_parts: dict[str, list[np.ndarray]] = {rate: [] for rate in RATES}
    win_clip_parts: list[np.ndarray] = []
    total_s = 0.0
    for corpus, idx in by_corpus.items():
        sub = [rows[i] for i in idx]
        key = _key(sub, prosody) + ("" if window_s == LIVE_WINDOW_S else f"-win{window_s:g}")
        cache = None if cache_dir is None else cache_dir / f"clips-{_safe(corpus)}-{key}.npz"
        if cache is not None and cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                part = {k: z[k] for k in z.files}
        else:
            t0 = time.perf_counter()
            part = _extract(sub, extractor, window_s=window_s)
            part["extract_s"] = np.array([time.perf_counter() - t0])
            progress(f"{corpus}: {len(sub)} clips measured in {part['extract_s'][0]:.1f} s")
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, **part)
        total_s += float(part["extract_s"][0])
        for rate in RATES:
            clips[rate][idx] = part[f"clip.{rate}"]
            win_parts[rate].append(part[f"win.{rate}"])
        win_clip_parts.append(np.asarray(idx)[part["win_clip"]])
    return Features(rows=tuple(rows), names=extractor.vector_names, clips=clips,
                    windows={rate: np.vstack(win_parts[rate]) for rate in RATES},
                    window_clip=np.concatenate(win_clip_parts), extract_s=total_s)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _extract(rows: Sequence[ClipRow], extractor: ProsodyExtractor, *, window_s: float = LIVE_WINDOW_S
             ) -> dict[str, np.ndarray]:
    out: dict[str, list] = {f"{k}.{rate}": [] for k in ("clip", "win") for rate in RATES}
    win_clip: list[int] = []
    for i, r in enumerate(rows):
        y, sr = _read_audio(r.path)
        if sr > 16000:    # as recorded means at most 16 kHz here: the engine's wideband rate
            y, sr = resample(y, orig_sr=sr, target_sr=16000), 16000
        versions = {"16k": (y, sr), "8k-mulaw": (telephone_clip(y, sr=sr), 8000)}
        n_win = None
        for rate, (audio, rsr) in versions.items():
            out[f"clip.{rate}"].append(extractor.vector(audio, sr=rsr)[1])
            spans = _spans(len(audio), sr=rsr, window_s=window_s, hop_s=LIVE_HOP_S)
            spans = spans if n_win is None else (spans + spans[-1:] * n_win)[:n_win]
            n_win = len(spans)
            out[f"win.{rate}"].extend(extractor.vector(audio[a:b], sr=rsr)[1] for a, b in spans)
        win_clip.extend([i] * n_win)
    arrays = {k: np.vstack(v) for k, v in out.items()}
    arrays["win_clip"] = np.array(win_clip, dtype=np.int64)
    return arrays
