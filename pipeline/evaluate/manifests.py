"""Evaluation manifests: CSV files whose audio paths are relative to the manifest (or to ``--root``).

Read by the one manifest reader (:mod:`pipeline.manifest`), with :class:`EvaluationError`; this module adds
where the shared data is and how optional numbers are parsed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import EvaluationError
# The CSV reading and checking is the one shared reader's; ManifestRow and PATH_COLUMNS are re-exported.
from ..manifest import PATH_COLUMNS, ManifestRow  # noqa: F401
from ..manifest import read_manifest as read_csv_manifest


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$CALLPULSE_DATA``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("CALLPULSE_DATA")
    return Path(env) if env else (repo_root().parent / "shared" / "data").resolve()


def read_manifest(manifest: str | Path, *, required: Sequence[str], root: str | Path | None = None,
                  audio: bool = True, limit: int | None = None) -> list[ManifestRow]:
    """Read and check an evaluation manifest: :func:`pipeline.manifest.read_manifest` raising
    :class:`EvaluationError` (audio files must exist; ``limit`` keeps evenly spaced rows)."""
    return read_csv_manifest(manifest, required=required, root=root, audio=audio, limit=limit,
                             error=EvaluationError)


def parse_optional_float(row: ManifestRow, column: str, *, manifest: str | Path) -> float | None:
    """An optional number: empty means None; anything else must parse."""
    text = row.get(column)
    if not text:
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise EvaluationError(f"{manifest}:{row.line}: {column}={text!r} is not a number") from exc
