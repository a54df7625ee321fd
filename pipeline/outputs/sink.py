"""Where a finished call's result goes, the same way for batch and live: the store, ``<folder>/<call_id>.json``
(written atomically: a reader never sees half a file) and, optionally, ``<folder>/<call_id>.html``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Protocol

from .files import write_text_atomic

log = logging.getLogger("pipeline.outputs.sink")


class ResultStore(Protocol):
    """What a sink needs of a store (``outputs.store.Store``, ``outputs.store_pg.PgStore``, test fakes)."""

    def save_call(self, result: Mapping) -> None: ...


def result_json(result: Mapping) -> str:
    return json.dumps(result, ensure_ascii=False, indent=1)


class ResultSink:
    """A run's outputs for each finished call. ``folder=None``: no files; ``store=None``: no store."""

    def __init__(self, *, store: ResultStore | None = None, folder: str | Path | None = None,
                 write_json: bool = True, write_html: bool = False) -> None:
        self.store = store
        self.folder = Path(folder) if folder else None
        self.write_json = write_json and self.folder is not None
        self.write_html = write_html and self.folder is not None

    def save(self, result: Mapping) -> None:
        """Store the result, then write its files. Errors propagate (batch fails the call loudly)."""
        self.store_result(result)
        self.write_files(result)

    def store_result(self, result: Mapping) -> None:
        if self.store is not None:
            self.store.save_call(result)

    def json_path(self, call_id: str) -> Path | None:
        return self.folder / f"{call_id}.json" if self.folder is not None else None

    def write_files(self, result: Mapping, *, only_missing: bool = False) -> Path | None:
        """``<call_id>.json`` (and ``.html`` when asked); ``only_missing``: JSON only, if not there yet
        (a call a re-run recognised as done). Returns the JSON path, or None when none is written."""
        path = self.json_path(result["call_id"])
        if path is None:
            return None
        if self.write_html and not only_missing:
            from .report import write_call_report

            write_call_report(result, path.with_suffix(".html"))
        if not self.write_json or (only_missing and path.exists()):
            return None
        write_text_atomic(path, result_json(result))
        return path

    def write_files_logged(self, result: Mapping) -> Path | None:
        """:meth:`write_files` for live use: a failing disk is logged, the result stays in the store."""
        try:
            return self.write_files(result)
        except OSError as exc:
            log.error("could not write %s/%s.json (%s); the result is still in the database", self.folder,
                      result.get("call_id"), exc, extra={"call_id": result.get("call_id")})
            return None
