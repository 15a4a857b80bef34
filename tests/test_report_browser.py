"""The analysis report in a real browser. Headless Chromium renders report.html (built as in
test_analyze from tiny random models) at #selftest, where the page's script renders every stored
feature page; the page must then carry data-js="ok" on <html> (set only when the script ran to its
end, and overwritten by window.onerror on any error) and show a feature page. A report with a broken
script must fail the same check. Skipped when chromium is not installed (apt-get install chromium).

Also runs alone on any report and writes a screenshot to look at:
    python tests/test_report_browser.py out/analysis/report.html [report.png]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--virtual-time-budget=5000"]


def chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render(html_path, screenshot=None, timeout=120):
    """The DOM after the page's script ran (at #selftest); a PNG screenshot of the top of the page if asked."""
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(cmd + ["--dump-dom", url + "#selftest"], capture_output=True, text=True, timeout=timeout).stdout
    if screenshot:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(screenshot)}",
                            "--window-size=1200,3000", url], capture_output=True, timeout=timeout)
    return dom


def problems(dom):
    """What is wrong with a rendered report ([] when nothing)."""
    m = re.search(r'<html[^>]*\bdata-js="([^"]*)"', dom)
    out = []
    if not m:
        out.append("the page's script did not run to its end (no data-js marker on <html>)")
    elif m.group(1) != "ok":
        out.append(f"JavaScript error: {m.group(1)}")
    if not re.search(r'<div id="page"><h3>feature \w+/\d+</h3>', dom):
        out.append("no feature page was rendered")
    if "<table>" not in dom or "<svg" not in dom:
        out.append("the page is empty (no tables or figures)")
    return out


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from test_analyze import make_study, run
    root = str(tmp_path_factory.mktemp("browser"))
    data_dir, out_dir = make_study(root)
    run(data_dir, out_dir)
    return os.path.join(out_dir, "analysis", "report.html")


@needs_chromium
def test_report_renders_in_chromium_without_javascript_errors(report, tmp_path):
    shot = str(tmp_path / "report.png")
    dom = render(report, screenshot=shot)
    assert problems(dom) == []
    assert "Smoke-scale demo" in dom and "partner in" in dom
    assert os.path.getsize(shot) > 20_000                                     # a real picture, not a blank page


@needs_chromium
def test_the_check_catches_a_broken_script(report, tmp_path):
    broken = str(tmp_path / "broken.html")
    page = open(report, encoding="utf-8").read()
    with open(broken, "w", encoding="utf-8") as f:
        f.write(page.replace("const qm=", "D.models.nosuch();const qm=", 1))
    found = problems(render(broken))
    assert any("JavaScript error" in p for p in found) or any("did not run" in p for p in found)


if __name__ == "__main__":
    if chromium() is None:
        sys.exit("error: chromium is not installed; apt-get install chromium")
    path = sys.argv[1] if len(sys.argv) > 1 else "out/analysis/report.html"
    found = problems(render(path, screenshot=sys.argv[2] if len(sys.argv) > 2 else None))
    print("\n".join(found) or f"{path}: rendered in Chromium, script ran cleanly")
    sys.exit(1 if found else 0)
