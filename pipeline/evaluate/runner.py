"""Run evaluation items in parallel, with a progress bar, caching each finished item on disk.

An item's result is written to ``<out>/items/<kind>/<name>-<hash>.json`` as soon as it is done, so an
interrupted evaluation picks up where it stopped. The hash covers the item and a fingerprint of everything
that shapes its result (resolved config, model identifiers, evaluation options): change any of them and
the cached result no longer matches, so stale figures are never reused.

Workers are threads, not processes: the engine loads its models once per process and is documented as
safe to share, and the heavy parts (CTranslate2, ONNX Runtime, numpy) release the GIL.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from ..errors import PipelineError

log = logging.getLogger("pipeline.evaluate.runner")


@dataclass(frozen=True)
class RunOptions:
    """How items are run: ``workers`` threads (capped at the CPU count), ``resume`` reuses cached items,
    ``progress`` shows a bar on stderr."""

    workers: int = 1
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class Item:
    """One unit of work. ``key`` is stable across runs (e.g. the manifest path of a clip)."""

    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemResult:
    """What one item produced, or the error that stopped it (failed items are not cached)."""

    key: str
    result: Mapping[str, Any] | None
    error: str | None = None
    cached: bool = False


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (non-JSON values are hashed by their repr)."""
    blob = json.dumps(parts, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:12]


def folder_digest(folder: Path) -> str | None:
    """A hash of every file's name and bytes under ``folder`` (small model folders such as lexicons);
    None if it does not exist."""
    if not folder.is_dir():
        return None
    h = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode("utf-8"))
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cache_path(cache_dir: Path, key: str, signature: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(key).stem or key)[:60]
    return cache_dir / f"{stem}-{fingerprint(key, signature)}.json"


def _read_cached(path: Path, key: str, signature: str) -> Mapping[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None  # absent or half-written (interrupted): redo the item
    if data.get("key") != key or data.get("fingerprint") != signature:
        return None
    return data.get("result")


def _write_cached(path: Path, key: str, signature: str, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"key": key, "fingerprint": signature, "result": result}, fh, ensure_ascii=False)
    os.replace(tmp, path)  # atomic: a crash never leaves a truncated result that looks finished


def effective_workers(requested: int) -> int:
    return max(1, min(requested, os.cpu_count() or 1))


def run_items(items: Sequence[Item], work: Callable[[Item], Mapping[str, Any]], *, cache_dir: Path,
              signature: str, options: RunOptions, desc: str) -> list[ItemResult]:
    """Run ``work`` on every item not already cached; results come back in the items' order.

    ``work`` raising a :class:`PipelineError` marks that item failed (reported, not cached, retried next
    run); any other exception is a bug and propagates.
    """
    results: dict[str, ItemResult] = {}
    todo: list[Item] = []
    for item in items:
        cached = _read_cached(cache_path(cache_dir, item.key, signature), item.key, signature) \
            if options.resume else None
        if cached is not None:
            results[item.key] = ItemResult(item.key, cached, cached=True)
        else:
            todo.append(item)
    if results:
        log.info("%s: %s of %s items reused from %s", desc, len(results), len(items), cache_dir)

    def run_one(item: Item) -> ItemResult:
        try:
            result = work(item)
        except PipelineError as exc:
            log.warning("%s: item %s failed: %s", desc, item.key, exc)
            return ItemResult(item.key, None, error=str(exc))
        _write_cached(cache_path(cache_dir, item.key, signature), item.key, signature, result)
        return ItemResult(item.key, result)

    workers = effective_workers(options.workers)
    bar = tqdm(total=len(items), initial=len(results), desc=desc, unit="item",
               disable=not options.progress, dynamic_ncols=True)
    try:
        if workers == 1 or len(todo) <= 1:
            for item in todo:
                results[item.key] = run_one(item)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate") as pool:
                futures = {pool.submit(run_one, item): item for item in todo}
                for future in as_completed(futures):
                    results[futures[future].key] = future.result()
                    bar.update(1)
    finally:
        bar.close()
    return [results[item.key] for item in items]
