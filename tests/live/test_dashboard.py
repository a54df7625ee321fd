"""The supervisor dashboard in a real headless Chromium (Debian's, driven by Playwright): alerts appear
live, "Take over" acknowledges them, the strain board shows the agent. Saves a screenshot."""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from pipeline.live.replay import ReplayCall, replay, wait_for_result

from live_fakes import TOKEN, loud_call, run_live

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CALLPULSE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

from support import skip_or_fail  # noqa: E402

pytestmark = pytest.mark.peers


def _need_browser():
    pytest.importorskip("playwright", reason="pip install playwright (the browser is Debian's chromium)")
    if not Path(CHROMIUM).exists():
        skip_or_fail("chromium is not installed (apt-get install chromium)", flag="CALLPULSE_REQUIRE_PEERS")


def test_alerts_appear_live_and_take_over_acknowledges_them_in_a_real_browser():
    _need_browser()
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"

    async def scenario(r):
        b = r.bound
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await page.goto(f"{b.http}/?token={TOKEN}", timeout=15000)
                await page.wait_for_selector("#conn.up", timeout=10000)
                assert await page.is_visible("#no-alerts")
                # A live call streams while the page is open; its alert must appear without a reload.
                agent, caller = loud_call(10.0)
                streaming = asyncio.create_task(replay(ReplayCall("dash-1", "a17", agent, caller, 8000),
                                                       fmt="twilio", to=f"{b.ws}/tap/twilio", token=TOKEN, speed=2.0))
                card = page.locator('[data-alert-id="dash-1-a1"]')
                await card.wait_for(timeout=10000)
                text = await card.inner_text()
                live_card = await page.locator('[data-call-id="dash-1"]').inner_text(timeout=5000)
                await page.screenshot(path=str(shot), full_page=True)
                await asyncio.wait_for(streaming, 20)
                await wait_for_result(b.http, "dash-1", token=TOKEN, timeout_s=10)
                await page.wait_for_selector('tr[data-agent-id="a17"]', timeout=10000)
                await card.locator('button[data-action="takeover"]').click()
                await page.wait_for_selector('[data-alert-id="dash-1-a1"].acked', timeout=10000)
                async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                    alerts = await (await http.get(f"{b.http}/api/alerts")).json()
                board = await page.inner_text("#agents")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-acked.png"), full_page=True)
            finally:
                await browser.close()
        return text, live_card, alerts, board

    text, live_card, alerts, board = run_live(scenario, timeout_s=90)
    assert "caller agitation" in live_card and "agent a17" in live_card
    assert "Take over" in text and "loud voice" in text and "agent a17" in text
    assert alerts[0]["acked_by"] == "dashboard:takeover"
    assert "a17" in board and "break recommended" in board
    assert shot.stat().st_size > 10000
