"""The one reader of CSV manifests: the shift manifests of ``callpulse analyze --manifest``, the labelled
clip and call manifests of ``callpulse evaluate`` and ``callpulse train``.

A manifest is a UTF-8 CSV with a header (a BOM is accepted). Its audio column is ``path`` (``file`` is
accepted too, as the shared data spells it); relative paths resolve against the manifest's folder or
``root``. This module checks the file, the header and, when asked, that every audio file exists, and
raises the caller's own error type (``ConfigError`` for a batch run, ``EvaluationError``,
``DatasetError``) with a message naming the manifest, the line and what to change. What a column means
is the caller's business: each reader turns :class:`ManifestRow` into its own rows.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import PipelineError

log = logging.getLogger("pipeline.manifest")

# The shared data ships manifests whose audio column is called "file"; both names are accepted.
PATH_COLUMNS = ("path", "file")


@dataclass(frozen=True)
class ManifestRow:
    """One row. ``line`` is the CSV line number (for error messages); ``path`` is resolved (None when the
    manifest names no audio)."""

    line: int
    fields: Mapping[str, str]
    path: Path | None

    def get(self, name: str, default: str = "") -> str:
        value = self.fields.get(name)
        return default if value is None else value.strip()


def read_manifest(manifest: str | Path, *, required: Sequence[str], root: str | Path | None = None,
                  audio: bool = True, check_files: bool = True, limit: int | None = None,
                  path_columns: Sequence[str] = PATH_COLUMNS, error: type[PipelineError] = PipelineError,
                  hint: str = "pass --manifest with a CSV file") -> list[ManifestRow]:
    """Read and check a manifest.

    Parameters
    ----------
    manifest : path
        The CSV file (UTF-8, header row).
    required : columns that must be present (``path`` may be spelled ``file``).
    root : folder relative audio paths are resolved against (default: the manifest's folder).
    audio : whether rows name audio files (a ``path`` column, never empty).
    check_files : with ``audio``, whether those files must exist now (a batch run lets each missing file
        fail on its own instead).
    limit : keep at most this many rows, evenly spaced over the file (None = all). Manifests are often
        sorted by label or speaker, so the first N rows would not be a fair sample.
    path_columns : the names the audio column may have, first found wins.
    error : the exception type to raise (a :class:`PipelineError` subclass).
    hint : what to do when the manifest does not exist.

    Raises
    ------
    error
        Missing file or columns, an empty audio path, no rows, or audio files that do not exist (the
        first few are named).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise error(f"manifest {manifest} does not exist; {hint}")
    base = Path(root) if root is not None else manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        path_col = next((c for c in path_columns if c in header), None)
        wanted = [c for c in required if c != "path"]
        missing = [c for c in wanted if c not in header]
        if audio and path_col is None:
            missing.insert(0, "path")
        if missing:
            raise error(
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
                    raise error(f"{manifest}:{line}: empty {path_col!r}")
                path = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                if check_files and not path.is_file():
                    missing_files.append((line, f"{manifest}:{line}: {path}"))
            rows.append(ManifestRow(line, fields, path))
    if limit is not None and 0 < limit < len(rows):
        keep = {int(i * len(rows) / limit) for i in range(limit)}
        rows = [r for i, r in enumerate(rows) if i in keep]
        kept_lines = {r.line for r in rows}
        missing_files = [m for m in missing_files if m[0] in kept_lines]
    if missing_files:
        shown = "; ".join(text for _, text in missing_files[:3])
        raise error(
            f"{len(missing_files)} audio file(s) named in {manifest} do not exist ({shown}); paths are "
            f"relative to {base} (use --root to change that)")
    if not rows:
        raise error(f"manifest {manifest} has a header but no rows")
    log.info("read %s rows from %s", len(rows), manifest)
    return rows
