"""Reports in headless Chromium: images load, the Grad-CAM grid is complete, nothing
is fetched from outside the file, class names stay text; partial reports open too."""

from __future__ import annotations

from conftest import CHROMIUM, XSS_CLASS, chromium, open_in_chromium

pytestmark = chromium


def test_report_in_headless_chromium(tiny_study, tmp_path):
    page = open_in_chromium(tiny_study["workdir"] / "results" / "report.html", tmp_path)
    assert len(page["images"]) > 20
    assert [i["alt"] for i in page["images"] if not i["ok"]] == []
    assert page["rows"] == 3 and page["columns"] == 6 and page["cells"] == 3 * 6
    assert page["outside"] == [] and page["dialogs"] == []
    assert XSS_CLASS in page["text"]  # shown literally, never interpreted as markup


def test_the_first_screen_holds_the_decision_and_the_grids_are_folded(tmp_path):
    """At 1,400 × 900 px the decision (choice, comparison, warnings) is on screen without
    scrolling; the per-configuration grids take no room until opened."""
    from playwright.sync_api import sync_playwright
    from report_study import hand_made_report

    report = hand_made_report(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(report.as_uri(), wait_until="load")
        decision = page.locator("#decision-1").bounding_box()
        warnings = page.locator("#decision-1 ul.qualifiers li").count()
        first_screen = page.inner_text("#decision-1")
        roc = page.locator('img[alt="ROC curves"]')
        hidden_before = not roc.is_visible()
        page.locator("#roc-1 + details > summary").click()
        shown_after = roc.is_visible()
        browser.close()
    assert decision["y"] >= 0 and decision["y"] + decision["height"] <= 900
    assert warnings == 5 and "vgg16 · frozen · weights imagenet" in first_screen
    assert "validation overestimates this configuration" in first_screen
    assert hidden_before and shown_after
