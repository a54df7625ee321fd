"""The one manifest reader: every caller (batch, evaluation, training) gets the same checks in its own error type."""
from __future__ import annotations

import pytest

from pipeline.errors import ConfigError, DatasetError, EvaluationError
from pipeline.manifest import read_manifest


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_resolve_relative_paths_and_keep_their_line_numbers(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    m = _write(tmp_path / "m.csv", "\ufeffpath , speaker\na.wav, s1 \n")  # a BOM and padded names are fine
    (row,) = read_manifest(m, required=("path", "speaker"), error=EvaluationError)
    assert row.path == tmp_path / "a.wav" and row.line == 2 and row.get("speaker") == "s1"


@pytest.mark.parametrize("error", [ConfigError, EvaluationError, DatasetError])
def test_each_caller_gets_its_own_error_type_naming_what_is_wrong(tmp_path, error):
    with pytest.raises(error, match="does not exist; say where"):
        read_manifest(tmp_path / "none.csv", required=("path",), error=error, hint="say where")
    with pytest.raises(error, match=r"lacks column\(s\) \['speaker'\]"):
        read_manifest(_write(tmp_path / "m.csv", "path\nx.wav\n"), required=("path", "speaker"), error=error)
    with pytest.raises(error, match="x.wav"):
        read_manifest(_write(tmp_path / "m.csv", "path\nx.wav\n"), required=("path",), error=error)
    with pytest.raises(error, match="no rows"):
        read_manifest(_write(tmp_path / "m.csv", "path\n"), required=("path",), error=error)


def test_missing_audio_may_be_left_to_fail_later_and_the_path_column_may_be_pinned(tmp_path):
    m = _write(tmp_path / "m.csv", "file\nlater.wav\n")
    (row,) = read_manifest(m, required=("path",), check_files=False, error=ConfigError)
    assert row.path == tmp_path / "later.wav"  # the shared data's "file" column is the audio column
    with pytest.raises(ConfigError, match="path"):
        read_manifest(m, required=("path",), check_files=False, path_columns=("path",), error=ConfigError)


def test_limit_keeps_rows_spread_over_the_file(tmp_path):
    m = _write(tmp_path / "m.csv", "label\n" + "".join(f"{i}\n" for i in range(10)))
    rows = read_manifest(m, required=("label",), audio=False, limit=3, error=EvaluationError)
    assert [r.get("label") for r in rows] == ["0", "3", "6"]
