"""Evaluation manifests: CSV files whose audio paths are relative to the manifest (or to ``--root``)."""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import EvaluationError

log = logging.getLogger("pipeline.evaluate.manifests")

# The shared data ships manifests whose audio column is called "file"; both names are accepted.
PATH_COLUMNS = ("path", "file")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$CALLPULSE_DATA``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("CALLPULSE_DATA")
    return Path(env) if env else (repo_root().parent / "shared" / "data").resolve()


@dataclass(frozen=True)
class ManifestRow:
    """One labelled item. ``line`` is the CSV line number (for error messages); ``path`` is resolved."""

    line: int
    fields: Mapping[str, str]
    path: Path | None

    def get(self, name: str, default: str = "") -> str:
        value = self.fields.get(name)
        return default if value is None else value.strip()


def read_manifest(manifest: str | Path, *, required: Sequence[str], root: str | Path | None = None,
                  audio: bool = True, limit: int | None = None) -> list[ManifestRow]:
    """Read and check a manifest.

    Parameters
    ----------
    manifest : path
        The CSV file (UTF-8, header row).
    required : columns that must be present (``path`` may be spelled ``file``).
    root : folder relative audio paths are resolved against (default: the manifest's folder).
    audio : whether rows name audio files that must exist.
    limit : keep at most this many rows, evenly spaced over the file (None = all). Manifests are often
        sorted by label or speaker, so the first N rows would not be a fair sample.

    Raises
    ------
    EvaluationError
        Missing file or columns, no rows, or audio files that do not exist (the first few are named).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise EvaluationError(f"manifest {manifest} does not exist; pass --manifest with a CSV file")
    base = Path(root) if root is not None else manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        path_col = next((c for c in PATH_COLUMNS if c in header), None)
        wanted = [c for c in required if c != "path"]
        missing = [c for c in wanted if c not in header]
        if audio and path_col is None:
            missing.insert(0, "path")
        if missing:
            raise EvaluationError(
                f"manifest {manifest} lacks column(s) {missing}; its header is {header}, expected at least "
                f"{list(required)}")
        rows: list[ManifestRow] = []
        missing_files: list[tuple[int, str]] = []
        for line, raw in enumerate(reader, start=2):
            fields = {(k or "").strip(): (v or "") for k, v in raw.items()}
            path = None
            if audio:
                rel = fields[path_col].strip()  # type: ignore[index]
                if not rel:
                    raise EvaluationError(f"{manifest}:{line}: empty {path_col!r}")
                path = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                if not path.is_file():
                    missing_files.append((line, f"{manifest}:{line}: {path}"))
            rows.append(ManifestRow(line, fields, path))
    if limit is not None and 0 < limit < len(rows):
        keep = {int(i * len(rows) / limit) for i in range(limit)}
        rows = [r for i, r in enumerate(rows) if i in keep]
        kept_lines = {r.line for r in rows}
        missing_files = [m for m in missing_files if m[0] in kept_lines]
    if missing_files:
        shown = "; ".join(text for _, text in missing_files[:3])
        raise EvaluationError(
            f"{len(missing_files)} audio file(s) named in {manifest} do not exist ({shown}); paths are "
            f"relative to {base} (use --root to change that)")
    if not rows:
        raise EvaluationError(f"manifest {manifest} has a header but no rows")
    log.info("read %s rows from %s", len(rows), manifest)
    return rows


def parse_optional_float(row: ManifestRow, column: str, *, manifest: str | Path) -> float | None:
    """An optional number: empty means None; anything else must parse."""
    text = row.get(column)
    if not text:
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise EvaluationError(f"{manifest}:{row.line}: {column}={text!r} is not a number") from exc
