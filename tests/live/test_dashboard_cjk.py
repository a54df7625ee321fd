"""A Mandarin caller's transcript is drawn as Chinese in the dashboard, not as missing-glyph boxes.

Real headless Chromium (Debian's, driven by Playwright) on the live service with the scripted engine of
``live_fakes``; the scripted session also says one Mandarin turn. Glyphs are compared by drawing them with
the transcript line's own computed font onto a canvas: with no font covering Chinese, "你" and "好" are the
same box as a private-use character no font has.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from pipeline.events import TranscriptEvent
from pipeline.live.replay import ReplayCall, replay

from live_fakes import TOKEN, FakeEngine, FakeSession, loud_call, run_live
from support import skip_or_fail

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MANDARIN_TURN = "你们的服务太差了，我要投诉"

pytestmark = pytest.mark.peers


class MandarinSession(FakeSession):
    """The scripted session, plus one final Mandarin caller turn after the first second."""

    said = False

    def feed(self, block):
        events = super().feed(block)
        if not self.said and self.samples >= self.info.sample_rate_hz:
            self.said = True
            events.append(TranscriptEvent("caller", 0.2, 0.9, MANDARIN_TURN, "zh", True, sentiment=-0.8))
        return events


class MandarinEngine(FakeEngine):
    def open_call(self, info):
        session = MandarinSession(info, self.shifts)
        self.sessions[info.call_id] = session
        return session


# Draws `text` with `font` and returns a fingerprint of its pixels (sum of alpha by column band).
_GLYPH_PIXELS = """([text, font]) => {
  const c = document.createElement("canvas"); c.width = 64; c.height = 64;
  const g = c.getContext("2d"); g.font = font; g.textBaseline = "top"; g.fillStyle = "#000";
  g.fillText(text, 4, 4);
  const d = g.getImageData(0, 0, 64, 64).data; const out = [];
  for (let y = 0; y < 64; y += 4) { let s = 0; for (let x = 0; x < 64; x++) for (let k = 0; k < 4; k++) s += d[((y + k) * 64 + x) * 4 + 3]; out.push(s); }
  return out;
}"""


def _need_browser():
    pytest.importorskip("playwright", reason="pip install playwright (the browser is Debian's chromium)")
    if not Path(CHROMIUM).exists():
        skip_or_fail("chromium is not installed (apt-get install chromium)", flag="CALLPULSE_REQUIRE_PEERS")


def _need_cjk_font():
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        skip_or_fail("fontconfig is not installed", flag="CALLPULSE_REQUIRE_PEERS")
    import subprocess

    fonts = subprocess.run([fc_list], capture_output=True, text=True, timeout=30).stdout
    if "noto sans cjk" not in fonts.lower():
        skip_or_fail("no CJK font installed (scripts/system_packages.sh installs fonts-noto-cjk)",
                     flag="CALLPULSE_REQUIRE_PEERS")


def test_a_mandarin_transcript_is_drawn_in_chinese_glyphs_in_a_real_browser():
    _need_browser()
    _need_cjk_font()
    from playwright.async_api import async_playwright

    async def scenario(r):
        b = r.bound
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await page.goto(f"{b.http}/?token={TOKEN}", timeout=15000)
                await page.wait_for_selector("#conn.up", timeout=10000)
                agent, caller = loud_call(4.0, loud_from_s=10.0)
                streaming = asyncio.create_task(replay(ReplayCall("zh-1", "a18", agent, caller, 8000),
                                                       fmt="twilio", to=f"{b.ws}/tap/twilio", token=TOKEN, speed=1.0))
                line = page.locator('[data-call-id="zh-1"] .transcript li', has_text=MANDARIN_TURN)
                await line.wait_for(timeout=10000)
                font = await line.evaluate("e => getComputedStyle(e).font")
                family = await line.evaluate("e => getComputedStyle(e).fontFamily")
                glyphs = {ch: await page.evaluate(_GLYPH_PIXELS, [ch, font]) for ch in ("你", "好", "\ue000")}
                widths = await page.evaluate("""([text, font]) => {
                    const g = document.createElement("canvas").getContext("2d"); g.font = font;
                    return [g.measureText(text).width, g.measureText("\\ue000".repeat(text.length)).width];
                }""", [MANDARIN_TURN, font])
                await asyncio.wait_for(streaming, 20)
            finally:
                await browser.close()
        return family, glyphs, widths

    family, glyphs, widths = run_live(scenario, engine=MandarinEngine(), timeout_s=60)
    # The page itself names a font that covers Chinese (not only the machine's fallback).
    assert "noto sans cjk" in family.lower(), family
    # Two different characters are two different drawings, and neither is the missing-glyph box.
    assert sum(glyphs["你"]) > 0 and sum(glyphs["好"]) > 0
    assert glyphs["你"] != glyphs["好"]
    assert glyphs["你"] != glyphs["\ue000"] and glyphs["好"] != glyphs["\ue000"]
    assert widths[0] > 0 and widths[0] != widths[1], widths
