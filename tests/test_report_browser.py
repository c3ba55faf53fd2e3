"""The tiny study's report in headless Chromium: images load, the Grad-CAM grid is
complete, nothing is fetched from outside the file, class names stay text."""

from __future__ import annotations

import shutil

import pytest
from conftest import XSS_CLASS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="Debian chromium not installed (tests/run.sh installs it as root)")


def test_report_in_headless_chromium(tiny_study, tmp_path):
    from playwright.sync_api import sync_playwright

    report = tiny_study["workdir"] / "results" / "report.html"
    requests, dialogs = [], []
    with sync_playwright() as p:
        # a fresh profile directory (Playwright passes it as --user-data-dir)
        browser = p.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(report.as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}))")
        cells = page.eval_on_selector_all("table[id^=gradcam-grid] td.gradcam-cell", "c => c.length")
        columns = page.eval_on_selector_all("table[id^=gradcam-grid] tr:first-child th img", "c => c.length")
        rows = page.eval_on_selector_all("table[id^=gradcam-grid] tr", "r => r.length") - 1
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(images) > 20
    assert [i["alt"] for i in images if not i["ok"]] == []
    assert rows == 3 and columns == 6 and cells == rows * columns
    outside = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert outside == [] and dialogs == []
    assert XSS_CLASS in text  # shown literally, never interpreted as markup
