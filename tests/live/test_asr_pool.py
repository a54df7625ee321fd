"""The shared live ASR scheduler (pipeline/live/asr_pool.py): oldest first, at most ``max_per_call`` windows
of one call per batch, interim previews skipped first when final windows fill a batch, one batched model
call per batch, each outcome back to its own window. A scripted transcriber stands in for Whisper (the
real batched path is tested in tests/test_asr_batch.py and tests/live/test_live_asr.py)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from pipeline.live.asr_pool import AsrPool, AsrPoolOptions, AsrSkipped


@dataclass(frozen=True)
class Job:
    id: int
    chunks: tuple
    language: str | None = None
    prior: dict | None = None
    interim: bool = False

    def run(self, transcriber):
        return transcriber.transcribe_windows_one(self.chunks)


class ScriptedTranscriber:
    """Answers each window with its own chunks' label; records the size of every batched call."""

    def __init__(self, fail_label: str | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_label = fail_label
        self.gate = gate

    def transcribe_windows(self, requests):
        if self.gate is not None:
            self.gate.wait(5)
        labels = [r.chunks[0] for r in requests]
        self.batches.append(labels)
        return [ValueError(f"bad window {lab}") if lab == self.fail_label else f"text of {lab}" for lab in labels]

    def transcribe_windows_one(self, chunks):
        self.batches.append([chunks[0]])
        return f"text of {chunks[0]}"


def _job(n: int, label: str, *, interim: bool = False) -> Job:
    return Job(n, (label,), interim=interim)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_batches_are_taken_oldest_first_with_at_most_max_per_call_windows_of_one_call():
    async def main():
        pool = AsrPool(ScriptedTranscriber(), ThreadPoolExecutor(1), AsrPoolOptions(max_batch=3, max_per_call=1),
                       autostart=False)  # no worker: the queue policy is read through take_batch alone
        for n, (call, label) in enumerate([("A", "a1"), ("A", "a2"), ("A", "a3"), ("B", "b1"), ("C", "c1")]):
            pool.submit(call, _job(n, label))
        return [[e.job.chunks[0] for e in pool.take_batch()] for _ in range(4)]

    assert _run(main()) == [["a1", "b1", "c1"], ["a2"], ["a3"], []]


def test_previews_are_skipped_first_when_more_windows_wait_than_one_batch_takes():
    async def main():
        pool = AsrPool(ScriptedTranscriber(), ThreadPoolExecutor(1), AsrPoolOptions(max_batch=2, max_per_call=2),
                       autostart=False)
        preview = pool.submit("A", _job(1, "a-preview", interim=True))
        pool.submit("B", _job(2, "b1"))
        pool.submit("C", _job(3, "c1"))
        batch = [e.job.chunks[0] for e in pool.take_batch()]
        return batch, preview.result(), pool.counters.skipped_interim

    batch, outcome, skipped = _run(main())
    assert batch == ["b1", "c1"]
    assert isinstance(outcome, AsrSkipped) and skipped == 1


def test_previews_are_transcribed_when_the_asr_keeps_up():
    async def main():
        pool = AsrPool(ScriptedTranscriber(), ThreadPoolExecutor(1), AsrPoolOptions(max_batch=4))
        preview = pool.submit("A", _job(1, "a-preview", interim=True))
        final = pool.submit("B", _job(2, "b1"))
        return await preview, await final

    assert _run(main()) == ("text of a-preview", "text of b1")


def test_windows_waiting_together_go_to_the_model_in_one_batched_call_and_answers_find_their_window():
    gate = threading.Event()
    transcriber = ScriptedTranscriber(gate=gate)

    async def main():
        pool = AsrPool(transcriber, ThreadPoolExecutor(1), AsrPoolOptions(max_batch=8, max_per_call=2))
        first = pool.submit("A", _job(0, "a0"))   # taken alone while the model is busy (the gate holds it)
        await asyncio.sleep(0.05)
        futures = [pool.submit(call, _job(n, f"{call}{n}")) for n, call in enumerate("ABCDE", start=1)]
        gate.set()
        outcomes = [await first] + [await f for f in futures]
        await pool.close()
        return outcomes, pool.counters

    outcomes, counters = _run(main())
    assert transcriber.batches == [["a0"], ["A1", "B2", "C3", "D4", "E5"]]
    assert outcomes == ["text of a0"] + [f"text of {c}{n}" for n, c in enumerate("ABCDE", start=1)]
    assert counters.windows == 6 and counters.batches == 2 and counters.largest_batch == 5


def test_a_failing_window_fails_alone():
    transcriber = ScriptedTranscriber(fail_label="B1")
    gate = threading.Event()
    transcriber.gate = gate

    async def main():
        pool = AsrPool(transcriber, ThreadPoolExecutor(1), AsrPoolOptions(max_batch=8))
        hold = pool.submit("Z", _job(0, "Z0"))
        await asyncio.sleep(0.05)
        a, b = pool.submit("A", _job(1, "A1")), pool.submit("B", _job(2, "B1"))
        gate.set()
        out = await hold, await a, await b
        await pool.close()
        return out

    z, a, b = _run(main())
    assert a == "text of A1" and isinstance(b, ValueError) and "B1" in str(b)


def test_a_finishing_call_gives_up_its_waiting_windows():
    async def main():
        pool = AsrPool(ScriptedTranscriber(), ThreadPoolExecutor(1), AsrPoolOptions(), autostart=False)
        mine = [pool.submit("A", _job(n, f"a{n}")) for n in range(3)]
        other = pool.submit("B", _job(9, "b9"))
        dropped = pool.drop_call("A")
        return dropped, [f.result() for f in mine], other.done(), pool.queued

    dropped, outcomes, other_done, queued = _run(main())
    assert dropped == 3 and all(isinstance(o, AsrSkipped) for o in outcomes)
    assert not other_done and queued == 1


def test_options_refuse_a_batch_of_zero():
    with pytest.raises(ValueError, match="asr_batch"):
        AsrPoolOptions(max_batch=0)


def test_auto_batch_batches_on_a_gpu_and_takes_one_window_at_a_time_on_cpu():
    from types import SimpleNamespace

    from pipeline.live.asr_pool import GPU_BATCH, auto_batch

    assert auto_batch(SimpleNamespace(device="cpu")) == 1
    assert auto_batch(SimpleNamespace(device="cuda")) == GPU_BATCH > 1


def test_metrics_show_the_shared_asr_queue_and_its_counters():
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families

    from pipeline.live.metrics import LiveMetrics

    async def main():
        pool = AsrPool(ScriptedTranscriber(), ThreadPoolExecutor(1), AsrPoolOptions(max_batch=1), autostart=False)
        pool.submit("A", _job(1, "a1"))
        pool.submit("B", _job(2, "b-preview", interim=True))
        pool.submit("C", _job(3, "c1"))
        pool.take_batch()  # three waiting, a batch takes one: the preview is skipped, a1 goes
        pool.counters.windows, pool.counters.batches = 1, 1
        service = SimpleNamespace(
            calls=SimpleNamespace(live={}, asr_pool=pool, asr_waiting=pool.queued),
            sender=SimpleNamespace(failures=0, delivered=0),
            alerts=SimpleNamespace(outbox_counts=lambda: {"pending": 0}),
            hub=SimpleNamespace(n_subscribers=0))
        return LiveMetrics(service).render().decode()

    text = _run(main())
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["callpulse_asr_queued"] == 1 and values["callpulse_asr_queued_final"] == 1
    assert values["callpulse_asr_interim_skipped_total"] == 1
    assert values["callpulse_asr_windows_total"] == 1 and values["callpulse_asr_batches_total"] == 1
    assert values["callpulse_asr_queue_depth"] == 1
