"""Batch on a Dask cluster: ``callpulse analyze ... --cluster local:N`` or ``--scheduler tcp://host:8786``.

The cluster runs the same per-call code as the single-process path (``batch.analyze_file``); only the
scheduling differs:

- every worker loads the models once, when it joins (:class:`EnginePlugin`, a Dask WorkerPlugin);
- each call is one task; a failed file fails alone (the task returns the reason, it does not raise);
- an agent's calls are chained in shift order, each task taking the shift state the previous one left
  (strain carries across an agent's calls exactly as in one process); calls of different agents, and
  calls without an agent, run in parallel;
- results come back to the client, which writes the per-call JSON, HTML, summary and the store, so
  workers need no database access and no write access to the output folder;
- a re-run skips calls already in the store with the same fingerprint (config, models, callpulse
  version, language and channel options) and the same inputs; for an agent, the stored calls at the
  start of the shift are skipped and the rest resume from the stored shift state (an interrupted run
  resumes exactly; a call that failed in the middle of a shift makes the later ones recompute from the
  state the shift ended at, with a warning);
- the progress bar follows the futures as they finish.

Workers read the audio files by path: on several machines, every worker must see the files under the
same path (shared storage), and run the same callpulse version and models.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, PipelineError

try:
    from distributed import WorkerPlugin as _PluginBase
except ImportError:  # dask is an install requirement; without it only --cluster/--scheduler fail
    _PluginBase = object

log = logging.getLogger("pipeline.cluster")

PLUGIN_NAME = "callpulse-engine"


@dataclass(frozen=True)
class ClusterOptions:
    """Where batch runs: ``local_workers`` processes on this machine, or an existing ``scheduler``."""

    local_workers: int = 0
    scheduler: str = ""
    threads_per_worker: int = 1

    @classmethod
    def parse(cls, cluster: str | None, scheduler: str | None) -> "ClusterOptions | None":
        if cluster and scheduler:
            raise ConfigError("give either --cluster local:N or --scheduler ADDRESS, not both")
        if scheduler:
            return cls(scheduler=scheduler)
        if not cluster:
            return None
        kind, _, n = cluster.partition(":")
        if kind != "local" or not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--cluster {cluster!r}: expected local:N with N >= 1 worker processes "
                              f"(for a cluster you run yourself, use --scheduler tcp://host:8786)")
        return cls(local_workers=int(n))


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("--cluster/--scheduler need dask.distributed: pip install 'dask[distributed]'") from exc
    return distributed


class EnginePlugin(_PluginBase):
    """Loads the engine once per worker process, when the worker starts or joins."""

    name = PLUGIN_NAME

    def __init__(self, config: Any) -> None:
        self.config = config
        self.engine: Any = None
        self.fingerprint: str | None = None

    def setup(self, worker: Any) -> None:
        from .batch import fingerprint
        from .engine import Engine

        _undo_malloc_trim()
        t0 = time.perf_counter()
        self.engine = Engine.load(self.config)
        self.fingerprint = fingerprint(self.engine)
        log.info("worker %s: engine loaded in %.1f s", getattr(worker, "address", "?"), time.perf_counter() - t0)

    def teardown(self, worker: Any) -> None:
        self.engine = None


def _undo_malloc_trim() -> None:
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches off glibc's
    adaptive mmap threshold: every large numpy buffer is then mmap-ed and unmapped afresh, and this
    pipeline spent about 45% more CPU per call (measured in one process with and without the variable).
    Restore glibc's adapted state (buffers up to 32 MiB from the heap, trim above 64 MiB)."""
    import ctypes
    import os
    import sys

    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1 and libc.mallopt(m_trim_threshold, 64 << 20) == 1
    except (OSError, AttributeError):
        ok = False
    log.info("MALLOC_TRIM_THRESHOLD_ set by the Dask nanny: glibc thresholds %s", "restored" if ok else "left as set")


def _worker_plugin() -> EnginePlugin:
    from distributed import get_worker

    plugin = get_worker().plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.engine is None:
        raise RuntimeError("this Dask worker has no callpulse engine (the plugin did not load)")
    return plugin


def _worker_fingerprint(dask_worker=None) -> str | None:
    plugin = (dask_worker.plugins.get(PLUGIN_NAME) if dask_worker is not None else _worker_plugin())
    return None if plugin is None else plugin.fingerprint


def run_call(item: Any, previous: Any, *, agent_channel: int | None, language: str | None) -> dict:
    """One call on a worker. ``previous`` is the shift state this agent brings in: a dict, None, or the
    outcome of the agent's previous call (Dask passes its result). Returns an outcome dict, never raises
    for a bad file: {"call_id", "path", "result" | "error", "shift", "fingerprint"}."""
    from .batch import analyze_file
    from .strain import ShiftBook

    plugin = _worker_plugin()
    shift_in = previous.get("shift") if isinstance(previous, dict) and "call_id" in previous else previous
    captured: dict[str, Any] = {}
    if item.agent_id:
        captured[item.agent_id] = shift_in
    # A per-task view of the worker's engine: same models, but a shift book that starts from the state
    # passed in and records what the call leaves (workers keep no shift state of their own).
    engine = plugin.engine.with_shifts(ShiftBook(
        plugin.engine.config.strain, load=lambda agent: shift_in if agent == item.agent_id else None,
        save=captured.__setitem__))
    outcome: dict[str, Any] = {"call_id": item.call_id, "path": str(item.path), "fingerprint": plugin.fingerprint}
    try:
        outcome["result"] = analyze_file(
            item.path, engine=engine, config=plugin.engine.config,
            agent_channel=item.agent_channel if item.agent_channel is not None else agent_channel,
            agent_id=item.agent_id, language=language, call_id=item.call_id, started_at=item.started_at)
    except PipelineError as exc:
        outcome["error"] = str(exc)
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("%s failed", item.path)
    outcome["shift"] = captured.get(item.agent_id) if item.agent_id else None
    return outcome


def _connect(options: ClusterOptions):
    distributed = _distributed()
    # Dask logs every worker start and stop at INFO; keep it to problems (errors only unless -v).
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    logging.getLogger("distributed").setLevel(logging.WARNING if verbose else logging.ERROR)
    if options.scheduler:
        try:
            return distributed.Client(options.scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {options.scheduler}: {exc}; start one with "
                              f"'dask scheduler' and workers with 'dask worker {options.scheduler}'") from exc
    import dask

    # Workers get glibc's own malloc behaviour, not Dask's trim threshold (see _undo_malloc_trim).
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = distributed.LocalCluster(n_workers=options.local_workers,
                                           threads_per_worker=options.threads_per_worker, processes=True,
                                           dashboard_address=None, silence_logs=logging.WARNING)
    return distributed.Client(cluster), cluster


def start(options: ClusterOptions, config: Any):
    """Connect to (or start) the cluster and load the engine on every worker. Returns (client, cluster);
    ``cluster`` is the LocalCluster started here, or None for an existing scheduler."""
    client, cluster = _connect(options)
    try:
        client.register_plugin(EnginePlugin(config), name=PLUGIN_NAME)
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    return client, cluster


def stop(client: Any, cluster: Any) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


def analyze_on_cluster(inputs: Sequence[Any], *, options: ClusterOptions, out_dir: Path, config: Any,
                       agent_channel: int | None = None, language: str | None = None,
                       progress: bool | None = None, client: Any = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """The cluster twin of ``batch.analyze_paths``: same outputs, same per-call JSON. Returns
    (results in input order, failures). ``client``: a cluster already started with :func:`start`
    (kept running afterwards; benchmarks), else one is started and stopped here."""
    from .batch import BatchWriter, already_done, run_fingerprint, stamp

    distributed = _distributed()
    own = client is None
    if own:
        client, cluster = start(options, config)
    try:
        prints = {fp for fp in client.run(_worker_fingerprint).values()}
        if len(prints) != 1 or None in prints:
            raise ConfigError(f"the Dask workers disagree on config/models ({sorted(map(str, prints))}); "
                              f"run one callpulse version with the same models on every worker")
        model_print = prints.pop()
        with BatchWriter(out_dir, config, total=len(inputs), progress=progress) as writer:
            fp = run_fingerprint(model_print, agent_channel=agent_channel, language=language)
            order = {item.call_id: n for n, item in enumerate(inputs)}
            done: dict[str, dict] = {}
            groups: dict[str | None, list[Any]] = {}
            for item in inputs:
                groups.setdefault(item.agent_id, []).append(item)
            futures = []
            paths: dict[str, str] = {}  # task key -> file, to name a file whose worker was lost
            for agent, items in groups.items():
                chain = items if agent is not None else [[i] for i in items]
                if agent is not None:
                    stored = [already_done(writer.store, i, fp) for i in items]
                    k = next((n for n, r in enumerate(stored) if r is None), len(items))
                    done.update({i.call_id: r for i, r in zip(items[:k], stored[:k])})
                    if k == len(items):
                        continue
                    if any(stored[k:]):
                        log.warning("agent %s: call %s is not stored but later calls of the shift are; they are "
                                    "recomputed from the stored shift state, which is the end of the shift",
                                    agent, items[k].call_id)
                    # The stored shift is the state after the agent's last stored call: the done prefix.
                    previous = writer.store.load_shift(agent) if writer.store is not None else None
                    for item in items[k:]:
                        previous = client.submit(run_call, item, previous, agent_channel=agent_channel,
                                                 language=language, key=f"callpulse-{item.call_id}-{time.time_ns()}",
                                                 pure=False)
                        futures.append(previous)
                        paths[previous.key] = str(item.path)
                else:
                    for (item,) in chain:
                        stored = already_done(writer.store, item, fp)
                        if stored:
                            done[item.call_id] = stored
                            continue
                        future = client.submit(run_call, item, None, agent_channel=agent_channel,
                                               language=language, pure=False,
                                               key=f"callpulse-{item.call_id}-{time.time_ns()}")
                        futures.append(future)
                        paths[future.key] = str(item.path)
            for call_id, result in done.items():
                writer.skipped(result)
            log.info("%d call(s) on the cluster, %d already stored with this fingerprint", len(futures), len(done))
            finished = distributed.as_completed(futures)
            futures.clear()  # results are dropped from the workers as soon as the client has written them
            for future in finished:
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker fails its calls, not the batch
                    writer.failed(paths.get(future.key, str(future.key)),
                                  f"{type(exc).__name__} on the cluster: {exc}")
                    continue
                finally:
                    future.release()
                if "error" in outcome:
                    writer.failed(outcome["path"], outcome["error"])
                else:
                    writer.succeeded(stamp(outcome["result"], fp))
                if outcome.get("shift") is not None and writer.store is not None:
                    writer.store.save_shift(outcome["result"]["agent_id"] if "result" in outcome
                                            else _agent_of(inputs, outcome["call_id"]), outcome["shift"])
            writer.results.sort(key=lambda r: order.get(r["call_id"], len(order)))
            return writer.finish()
    finally:
        if own:
            stop(client, cluster)


def _agent_of(inputs: Sequence[Any], call_id: str) -> str | None:
    return next((i.agent_id for i in inputs if i.call_id == call_id), None)
