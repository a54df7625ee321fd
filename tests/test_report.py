"""The HTML report and summary.csv: self-contained, escaped, and saying what a supervisor needs to know."""
from __future__ import annotations

import csv
import html
import re
import subprocess
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.outputs.report import (
    SUMMARY_COLUMNS,
    _thin_timeline,
    render_batch_html,
    render_call_html,
    timeline_svg,
    write_batch_report,
    write_call_report,
    write_summary_csv,
)

from support import require_binary
from example_result import calm_zh_result, escalating_result, mono_result


class _Page(HTMLParser):
    """Collects tags, attributes and visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text))


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


@pytest.fixture(scope="module")
def escalating_page() -> str:
    return render_call_html(escalating_result())


def test_call_page_is_self_contained(escalating_page):
    page = _parse(escalating_page)
    tag_names = {t for t, _ in page.tags}
    assert "script" not in tag_names and "link" not in tag_names and "img" not in tag_names
    assert "style" in tag_names and "svg" in tag_names
    for _, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"(https?:)?//", value), f"external {name}={value}"
    assert "url(http" not in escalating_page and "@import" not in escalating_page


def test_every_transcript_text_is_escaped_and_shown_verbatim(escalating_page):
    result = escalating_result()
    assert "<script>alert('x')</script>" not in escalating_page
    assert "&lt;script&gt;" in escalating_page
    visible = _parse(escalating_page).visible
    for seg in result["segments"]:
        assert re.sub(r"\s+", " ", seg["text"]) in visible
    assert "negative words <3>" in visible  # alert reasons are escaped too, and read back as written


def test_summary_header_shows_duration_languages_agent_and_peak(escalating_page):
    visible = _parse(escalating_page).visible
    assert "Call escalating_en" in visible
    assert "Duration 1:10" in visible
    assert "Languages en" in visible
    assert "Agent a17" in visible
    assert "Peak caller agitation 0.92" in visible
    assert "1 supervisor takeover" in visible


def test_alerts_are_listed_with_times_level_and_reasons(escalating_page):
    visible = _parse(escalating_page).visible
    assert "Supervisor takeover caller agitation" in visible
    assert "Onset 0:31 Raised 0:34 Cleared not cleared Level 0.71" in visible
    for reason in ("loud voice (+2.4 sd)", "high pitch (+2.1 sd)", "caller said: escalation_request"):
        assert reason in visible


def test_turns_are_coloured_by_sentiment_and_show_flags(escalating_page):
    rows = re.findall(r'<tr class="turn ([a-z-]+)">(.*?)</tr>', escalating_page, flags=re.S)
    by_text = {html.unescape(re.sub(r"<[^>]+>", " ", body)): cls for cls, body in rows}

    def cls_of(fragment: str) -> str:
        return next(c for text, c in by_text.items() if fragment in text)

    assert cls_of("useless idiots") == "neg-strong"          # -0.90
    assert cls_of("declined at the supermarket") == "neg"    # -0.20
    assert cls_of("ends in ****4421") == "neutral"           # 0.00
    assert cls_of("Let me activate it") == "pos"             # +0.30
    assert cls_of("my name is Emma") == "pos-strong"         # +0.55
    assert "escalation request" in _parse(escalating_page).visible


def test_the_agitation_onset_is_marked_above_the_turn_where_it_began(escalating_page):
    visible = _parse(escalating_page).visible
    marker = visible.index("Caller agitation begins at 0:31")
    assert visible.index("has not been activated yet") < marker < visible.index("This is ridiculous")


def test_timeline_plots_levels_threshold_alerts_and_speakers():
    svg = timeline_svg(escalating_result())
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'width="' not in svg[: svg.index(">")]  # sized by the page, not fixed
    for label in ("caller agitation", "agent strain", "alert threshold 0.55", "Supervisor takeover 0:34",
                  "alert onset", "agent", "caller", "time in call (m:ss)"):
        assert label in svg, label


def test_timeline_leaves_out_the_threshold_when_the_result_has_none():
    svg = timeline_svg(mono_result())
    assert "alert threshold" not in svg
    assert ">mixed<" in svg


def test_a_three_hour_call_plots_compactly_and_keeps_a_one_second_spike():
    timeline = [{"t_s": float(i), "caller_agitation": 0.9 if i == 5001 else 0.05, "agent_strain": i / 10800}
                for i in range(10800)]
    t, agitation, strain = _thin_timeline(timeline)
    assert len(t) <= 2400
    assert max(agitation) == 0.9
    assert strain[-1] == pytest.approx(10799 / 10800)
    result = {"call_id": "long", "duration_s": 10800.0, "channels": "mixed", "timeline": timeline,
              "segments": [], "alerts": [], "summary": {}}
    svg = timeline_svg(result)
    assert len(svg) < 250_000
    assert "3:00:00" in svg and "time in call (h:mm:ss)" in svg and "no speech found" in svg


def test_rendering_is_deterministic():
    assert render_call_html(escalating_result()) == render_call_html(escalating_result())


def test_mandarin_text_is_kept_and_tagged_as_simplified_chinese():
    page = render_call_html(calm_zh_result())
    assert "您好，欢迎致电城市银行，请问有什么可以帮您？" in page
    assert 'lang="zh-Hans"' in page
    assert "No alerts were raised on this call." in _parse(page).visible


def test_a_sparse_result_with_nans_still_renders():
    result = {"call_id": "c1", "duration_s": float("nan"), "segments": [
        {"speaker": "caller", "start_s": 0.0, "end_s": 1.0, "text": "", "sentiment": float("nan")}],
        "timeline": [], "alerts": [{"kind": "caller_agitation", "action": "supervisor_takeover",
                                    "raised_at_s": None, "reasons": []}], "summary": {}}
    visible = _parse(render_call_html(result)).visible
    assert "Duration —" in visible and "(no transcript)" in visible and "Supervisor takeover" in visible
    empty = _parse(render_call_html({"call_id": "c2"})).visible
    assert "too short for a timeline" in empty and "No speech turns were found." in empty


def test_batch_index_links_every_call_and_lists_failures_with_reasons(tmp_path):
    results = [escalating_result(), calm_zh_result(), mono_result("call #3 <b>")]
    failures = [("calls/empty.wav", "AudioFormatError: calls/empty.wav is empty; re-export the recording"),
                ("calls/<odd>.mp3", "not an audio file")]
    write_batch_report(results, failures, tmp_path / "index.html")
    page_text = (tmp_path / "index.html").read_text(encoding="utf-8")
    page = _parse(page_text)
    hrefs = [a.get("href") for t, a in page.tags if t == "a"]
    assert hrefs == ["escalating_en.html", "calm_zh.html", "call%20%233%20%3Cb%3E.html"]
    visible = page.visible
    assert "Calls analysed 3" in visible and "Supervisor takeovers 2" in visible and "Failed files 2" in visible
    assert "calls/<odd>.mp3 not an audio file" in visible
    assert "re-export the recording" in visible
    assert "call #3 &lt;b&gt;" in page_text and "call #3 <b>" in visible
    assert "takeover at 0:34" in visible


def test_batch_index_says_so_when_nothing_succeeded():
    visible = _parse(render_batch_html([], [("a.wav", "empty file")])).visible
    assert "No call was analysed successfully." in visible and "a.wav empty file" in visible


def test_summary_csv_has_one_row_per_call_with_the_key_figures(tmp_path):
    path = tmp_path / "summary.csv"
    write_summary_csv([escalating_result(), calm_zh_result()], path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
    assert [r["call_id"] for r in rows] == ["escalating_en", "calm_zh"]
    esc, zh = rows
    assert esc["n_supervisor_takeover"] == "1" and esc["first_takeover_raised_at_s"] == "34.00"
    assert esc["peak_agitation"] == "0.920" and esc["duration_s"] == "70.256"
    assert esc["caller_sentiment_score"] == "-67" and esc["agent_id"] == "a17"
    assert zh["n_supervisor_takeover"] == "0" and zh["first_takeover_raised_at_s"] == ""
    assert zh["languages"] == "zh"


def test_summary_csv_defuses_spreadsheet_formulas_in_names(tmp_path):
    result = escalating_result("=HYPERLINK(\"http://x\")")
    result["source"] = "+cmd|calc"
    path = tmp_path / "summary.csv"
    write_summary_csv([result], path)
    with open(path, encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["call_id"].startswith("'=") and row["source"].startswith("'+")
    assert row["caller_sentiment_score"] == "-67"  # numbers keep their sign


def test_writers_leave_no_temporary_files(tmp_path):
    write_call_report(escalating_result(), tmp_path / "escalating_en.html")
    write_summary_csv([escalating_result()], tmp_path / "summary.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escalating_en.html", "summary.csv"]


@pytest.mark.peers
def test_chromium_renders_the_call_page_offline(tmp_path):
    chromium = require_binary("chromium")
    page = tmp_path / "escalating_en.html"
    write_call_report(escalating_result(), page)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                    f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000  # a blank page is a few kB


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=1, max_size=200).filter(lambda t: t.strip()))
def test_any_transcript_text_reads_back_verbatim_and_never_becomes_markup(text):
    result = calm_zh_result()
    result["segments"][1]["text"] = text
    result["timeline"] = []  # the plot is not what this checks; keep each example fast
    page = render_call_html(result)
    parsed = _parse(page)
    assert [t for t, _ in parsed.tags].count("script") == 0
    assert re.sub(r"\s+", " ", text).strip() in parsed.visible


# --- templates: autoescape everywhere, a typo fails loudly ---------------------------------------

_HOSTILE = "<script>alert(\"1\")</script> O'Neil & \"我们\" <b>客户</b>"


def test_hostile_text_in_every_field_of_a_call_is_escaped_and_reads_back_verbatim():
    result = escalating_result(_HOSTILE)
    result["agent_id"] = _HOSTILE
    result["source"] = _HOSTILE
    result["languages"] = [_HOSTILE]
    result["segments"][0]["text"] = _HOSTILE
    result["segments"][0]["speaker"] = _HOSTILE
    result["segments"][0]["language"] = _HOSTILE
    result["segments"][0]["flags"] = [_HOSTILE]
    result["segments"][0]["emotion"] = {"label": _HOSTILE}
    result["alerts"][0]["reasons"] = [_HOSTILE]
    result["alerts"][0]["kind"] = _HOSTILE
    result["summary"]["stage_errors"] = [{"stage": _HOSTILE, "t_s": 3.0, "message": _HOSTILE}]
    result["summary"]["asr_model"] = _HOSTILE
    page_html = render_call_html(result)
    page = _parse(page_html)
    assert "<script>" not in page_html and "<b>客户</b>" not in page_html
    assert [t for t, _ in page.tags].count("b") == 1  # the stage name's own <b>, nothing from the call
    assert page.visible.count(_HOSTILE) >= 12
    for _, attrs in page.tags:  # attribute values (lang, class) cannot be broken out of either
        assert all('"' not in name for name in attrs)


def test_hostile_agent_and_call_ids_on_the_batch_index_are_escaped():
    result = escalating_result(_HOSTILE)
    result["agent_id"] = _HOSTILE
    page_html = render_batch_html([result], [(_HOSTILE, _HOSTILE)])
    page = _parse(page_html)
    assert "<script>" not in page_html
    assert [t for t, _ in page.tags].count("script") == 0 and [t for t, _ in page.tags].count("b") == 0
    assert page.visible.count(_HOSTILE) == 4  # call id, agent id, failed file, its reason
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    assert hrefs == [quote(_HOSTILE) + ".html"]


def test_hostile_text_in_the_evaluation_report_is_escaped(tmp_path):
    from pipeline.evaluate.report import EvalResult, Section, table, write_report

    result = EvalResult(name=_HOSTILE, metrics={}, summary=[_HOSTILE],
                        sections=[Section(_HOSTILE, table([_HOSTILE], [[_HOSTILE]]))],
                        failed_items=[{"key": _HOSTILE, "error": _HOSTILE}])
    path = write_report(tmp_path / "report.html", title=_HOSTILE, results=[result],
                        run_provenance={"date_utc": _HOSTILE, "command": _HOSTILE,
                                        "packages": {_HOSTILE: "1"}, "models": {}})
    page_html = path.read_text(encoding="utf-8")
    page = _parse(page_html)
    assert "<script>" not in page_html and [t for t, _ in page.tags].count("b") == 0
    # <title>, h1, date, command, name, summary, section title, header, cell, failed key and error, package
    assert page.visible.count(_HOSTILE) == 12


def test_a_misspelt_template_variable_fails_loudly_instead_of_printing_nothing():
    import jinja2

    from pipeline.outputs.templating import ReportTemplateError, environment, render

    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("<h1>{{ cal.call_id }}</h1>").render(call={"call_id": "c1"})
    with pytest.raises(jinja2.UndefinedError):  # a missing attribute of a present object, too
        environment().from_string("<h1>{{ call.cal_id }}</h1>").render(call={"call_id": "c1"})
    with pytest.raises(ReportTemplateError, match="call_report.html.j2"):
        render("call_report.html.j2", title="t", call={"call_id": "c1"})  # a page model lacking fields
    with pytest.raises(ReportTemplateError, match="no_such_page"):
        render("no_such_page.html.j2")


def test_every_page_template_extends_the_one_base_template():
    from pipeline.outputs.templating import environment

    env = environment()
    pages = [n for n in env.list_templates() if n.endswith(".html.j2") and n not in ("base.html.j2", "macros.html.j2")]
    assert sorted(pages) == ["batch_report.html.j2", "call_report.html.j2", "eval_report.html.j2"]
    for name in pages:
        source = env.loader.get_source(env, name)[0]
        assert '{% extends "base.html.j2" %}' in source, name
    assert env.autoescape is True


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # layout measures CJK with DejaVu; text stays text
def test_call_text_drawn_into_the_timeline_svg_is_escaped_too():
    result = escalating_result()
    result["alerts"][0]["action"] = _HOSTILE  # the plot labels each alert with its action
    svg = timeline_svg(result)
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "客户" in svg
    page = _parse(render_call_html(result))
    assert [t for t, _ in page.tags].count("script") == 0
