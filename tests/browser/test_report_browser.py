"""Reports in headless Chromium: images load, the Grad-CAM grid is complete, nothing
is fetched from outside the file, class names stay text; partial reports open too."""

from __future__ import annotations

from conftest import XSS_CLASS, chromium, open_in_chromium

pytestmark = chromium


def test_report_in_headless_chromium(tiny_study, tmp_path):
    page = open_in_chromium(tiny_study["workdir"] / "results" / "report.html", tmp_path)
    assert len(page["images"]) > 20
    assert [i["alt"] for i in page["images"] if not i["ok"]] == []
    assert page["rows"] == 3 and page["columns"] == 6 and page["cells"] == 3 * 6
    assert page["outside"] == [] and page["dialogs"] == []
    assert XSS_CLASS in page["text"]  # shown literally, never interpreted as markup
