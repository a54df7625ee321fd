"""Batch on a Dask cluster gives what one process gives: the same per-call JSON, an agent's strain
carried across their calls, a bad file failing alone, results in the store (here PostgreSQL), and a
re-run that recomputes nothing already stored with the same fingerprint.

The cluster runs use ``--no-asr`` to stay cheap on 2 shared cores: ASR runs inside the same per-call
code (``batch.analyze_file``) on either path, so the comparison covers the scheduling, not Whisper.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.batch import CallInput, already_done, run_fingerprint, stamp
from pipeline.cluster import ClusterOptions
from pipeline.errors import ConfigError
from pipeline.outputs.store import Store

from example_result import escalating_result

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# Differ between any two runs by design: the wall-clock timings.
RUN_SPECIFIC_SUMMARY = ("processing_s", "stage_s")


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def _comparable(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    for key in RUN_SPECIFIC_SUMMARY:
        result["summary"].pop(key, None)
    return result


def test_cluster_option_parsing():
    assert ClusterOptions.parse(None, None) is None
    assert ClusterOptions.parse("local:3", None).local_workers == 3
    assert ClusterOptions.parse(None, "tcp://10.0.0.5:8786").scheduler == "tcp://10.0.0.5:8786"
    for bad in ("local", "local:0", "local:x", "remote:2"):
        with pytest.raises(ConfigError, match="local:N"):
            ClusterOptions.parse(bad, None)
    with pytest.raises(ConfigError, match="not both"):
        ClusterOptions.parse("local:2", "tcp://h:8786")


def test_a_stored_call_counts_as_done_only_with_the_same_fingerprint_and_inputs(tmp_path):
    fp = run_fingerprint("models-a", agent_channel=None, language="auto")
    item = CallInput(Path("/calls/escalating_en.wav"), "escalating_en", "a17", "2026-11-29T09:30:00+08:00")
    result = escalating_result()
    result.update(source=str(item.path), agent_id=item.agent_id, started_at=item.started_at)
    with Store.open(tmp_path / "r.sqlite") as store:
        assert already_done(store, item, fp) is None
        store.save_call(stamp(result, fp))
        assert already_done(store, item, fp)["call_id"] == "escalating_en"
        assert already_done(store, item, run_fingerprint("models-b", agent_channel=None, language="auto")) is None
        assert already_done(store, item, run_fingerprint("models-a", agent_channel=1, language="auto")) is None
        moved = CallInput(Path("/elsewhere/escalating_en.wav"), item.call_id, item.agent_id, item.started_at)
        assert already_done(store, moved, fp) is None
        other_agent = CallInput(item.path, item.call_id, "a18", item.started_at)
        assert already_done(store, other_agent, fp) is None
    assert already_done(None, item, fp) is None


@pytest.fixture(scope="module")
def shift(tmp_path_factory) -> Path:
    """Agent a17 takes the escalating call, then a calm one (strain carries over); calm_zh has no agent;
    one file is not audio."""
    d = tmp_path_factory.mktemp("shift")
    for name in ("escalating_en", "calm_en", "calm_zh"):
        shutil.copy(SAMPLES / f"{name}.wav", d / f"{name}.wav")
    (d / "broken.wav").write_bytes(b"not a recording at all" * 40)
    with open(d / "shift.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "agent_id", "started_at"])
        w.writerow(["calm_en.wav", "a17", "2026-11-29T09:36:00+08:00"])
        w.writerow(["escalating_en.wav", "a17", "2026-11-29T09:30:00+08:00"])
        w.writerow(["calm_zh.wav", "", ""])
        w.writerow(["broken.wav", "a17", "2026-11-29T09:40:00+08:00"])
    return d / "shift.csv"


@pytest.fixture(scope="module")
def runs(shift, tmp_path_factory, postgres_server):
    single = tmp_path_factory.mktemp("single")
    clustered = tmp_path_factory.mktemp("cluster")
    pg_url = postgres_server.new_database("cluster")
    one = _cli("analyze", "--manifest", str(shift), "--out", str(single), "--no-asr")
    two = _cli("analyze", "--manifest", str(shift), "--out", str(clustered), "--no-asr", "--cluster", "local:2",
               "--database", pg_url)
    return single, clustered, pg_url, one, two


@pytest.mark.slow
def test_cluster_gives_the_same_per_call_json_as_one_process(runs):
    single, clustered, _, one, two = runs
    assert one.returncode == 1 and two.returncode == 1, (one.stderr[-2000:], two.stderr[-2000:])
    names = sorted(p.name for p in single.glob("*.json"))
    assert names == ["calm_en.json", "calm_zh.json", "escalating_en.json"]
    assert sorted(p.name for p in clustered.glob("*.json")) == names
    for name in names:
        a = json.loads((single / name).read_text())
        b = json.loads((clustered / name).read_text())
        assert _comparable(b) == _comparable(a), name
    # the agent's second call starts from the strain the escalating call left, on both paths
    calm = json.loads((clustered / "calm_en.json").read_text())
    escalating = json.loads((clustered / "escalating_en.json").read_text())
    assert calm["summary"]["agent_strain_end"] > 0 and escalating["summary"]["agent_strain_end"] > 0
    assert [r["call_id"] for r in csv.DictReader(open(single / "summary.csv"))] == \
        [r["call_id"] for r in csv.DictReader(open(clustered / "summary.csv"))]


@pytest.mark.slow
def test_a_bad_file_fails_alone_on_the_cluster(runs):
    _, clustered, _, _, two = runs
    assert "FAILED" in two.stderr and "broken.wav" in two.stderr
    assert (clustered / "calm_en.json").exists() and not (clustered / "broken.json").exists()


@pytest.mark.slow
def test_cluster_results_and_shifts_land_in_postgresql(runs):
    from pipeline.outputs.store_pg import PgStore

    single, _, pg_url, _, _ = runs
    with PgStore.open(pg_url) as pg, Store.open(single / "results.sqlite") as lite:
        assert sorted(c["call_id"] for c in pg.list_calls()) == ["calm_en", "calm_zh", "escalating_en"]
        assert _comparable(pg.get_call("escalating_en")) == _comparable(lite.get_call("escalating_en"))
        assert pg.load_shift("a17") == lite.load_shift("a17")
        assert pg.load_shift("a17")["calls"] == 2


@pytest.mark.slow
def test_a_rerun_on_the_cluster_recomputes_nothing_already_stored(runs, shift):
    _, clustered, pg_url, _, _ = runs
    from pipeline.outputs.store_pg import PgStore

    with PgStore.open(pg_url) as pg:
        before = {c["call_id"]: c["saved_at"] for c in pg.list_calls()}
        seqs = dict(pg.connection.execute("SELECT call_id, saved_seq FROM calls").fetchall())
    again = _cli("-v", "analyze", "--manifest", str(shift), "--out", str(clustered), "--no-asr", "--cluster", "local:1",
                 "--database", pg_url)
    assert again.returncode == 1, again.stderr[-2000:]
    # only broken.wav (the end of a17's shift, never stored) is tried again, and fails again
    assert "1 call(s) on the cluster, 3 already stored with this fingerprint" in again.stderr
    assert "broken.wav" in again.stderr
    with PgStore.open(pg_url) as pg:
        after = dict(pg.connection.execute("SELECT call_id, saved_seq FROM calls").fetchall())
        assert pg.load_shift("a17")["calls"] == 2
    assert after == seqs, "a stored call with the same fingerprint was recomputed"
    assert set(after) == set(before)
    assert json.loads((clustered / "calm_en.json").read_text())["summary"]["fingerprint"]


@pytest.mark.slow
def test_an_existing_cluster_is_used_through_its_scheduler_address(tmp_path):
    """What several machines do, on loopback: `dask scheduler`, a `dask worker` process, and analyze
    pointed at the scheduler; the worker loads the engine through the plugin, the client writes."""
    import os
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env,
                                 start_new_session=True)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--nworkers", "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler must be listening before analyze connects
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "dask scheduler did not start"
                time.sleep(0.3)
        call = tmp_path / "in" / "calm_en.wav"
        call.parent.mkdir()
        shutil.copy(SAMPLES / "calm_en.wav", call)
        proc = _cli("analyze", str(call.parent), "--out", str(tmp_path / "out"), "--no-asr", "--scheduler", address)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads((tmp_path / "out" / "calm_en.json").read_text())
        assert result["call_id"] == "calm_en" and result["summary"]["fingerprint"]
        with Store.open(tmp_path / "out" / "results.sqlite") as store:
            assert store.get_call("calm_en")["duration_s"] == result["duration_s"]
    finally:
        for p in (worker, scheduler):
            os.killpg(p.pid, signal.SIGTERM)
        for p in (worker, scheduler):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLES / "calm_en.wav", tmp_path / "in" / "calm_en.wav")
    proc = _cli("analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-asr",
                "--scheduler", f"tcp://127.0.0.1:{port}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot reach the Dask scheduler" in proc.stderr and "dask scheduler" in proc.stderr


def test_batch_outputs_go_to_a_postgresql_database_when_given_its_url(tmp_path, postgres_server):
    from pipeline.batch import BatchWriter
    from pipeline.config import load_config
    from pipeline.outputs.store_pg import PgStore

    url = postgres_server.new_database("writer")
    config = load_config().replace("output", database=url)
    with BatchWriter(tmp_path, config, total=2, progress=False) as writer:
        assert isinstance(writer.store, PgStore)
        writer.succeeded(escalating_result("w1"))
        writer.failed("/calls/bad.wav", "not audio")
        results, failures = writer.finish()
    assert [r["call_id"] for r in results] == ["w1"] and failures == [("/calls/bad.wav", "not audio")]
    assert (tmp_path / "w1.json").exists() and (tmp_path / "summary.csv").exists()
    assert not (tmp_path / "results.sqlite").exists()
    with PgStore.open(url) as pg:
        assert pg.get_call("w1")["call_id"] == "w1"
