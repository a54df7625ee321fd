"""One ResultSink for batch and live: the store, an atomic <call_id>.json, optionally the HTML page."""
from __future__ import annotations

import json

import pytest

from pipeline.outputs.sink import ResultSink


class _Store:
    def __init__(self):
        self.saved = []

    def save_call(self, result):
        self.saved.append(result["call_id"])


def _result(call_id="c1"):
    return {"schema": "callpulse.call/1", "call_id": call_id, "duration_s": 1.0, "alerts": [], "segments": [],
            "timeline": [], "summary": {}}


def test_a_result_is_stored_and_written_whole_with_no_temporary_file_left(tmp_path):
    store = _Store()
    sink = ResultSink(store=store, folder=tmp_path)
    sink.save(_result())
    assert store.saved == ["c1"]
    assert json.loads((tmp_path / "c1.json").read_text(encoding="utf-8"))["call_id"] == "c1"
    assert [p.name for p in tmp_path.iterdir()] == ["c1.json"]  # no .tmp, no HTML unless asked


def test_a_call_recognised_as_done_gets_its_json_only_if_missing(tmp_path):
    sink = ResultSink(folder=tmp_path, write_html=True)
    (tmp_path / "c1.json").write_text("{}", encoding="utf-8")
    assert sink.write_files(_result(), only_missing=True) is None
    assert (tmp_path / "c1.json").read_text(encoding="utf-8") == "{}"
    assert not (tmp_path / "c1.html").exists()


def test_live_logs_a_failing_disk_instead_of_raising(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = ResultSink(folder=blocker / "sub")  # a folder that cannot be made
    assert sink.write_files_logged(_result()) is None
    assert "could not write" in caplog.text
    with pytest.raises(OSError):
        sink.write_files(_result())


def test_no_folder_means_no_files_and_no_store_means_nothing_stored(tmp_path):
    sink = ResultSink()
    sink.save(_result())  # nothing to do, no error
    assert sink.json_path("c1") is None
