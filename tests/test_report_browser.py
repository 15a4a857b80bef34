"""The analysis report (report.py), rendered from a small random study (test_analyze's make_study, with
the stages' loss and SAE histories added) and checked in a real browser: headless Chromium loads
report.html and its script must run to its end (it sets data-js="ok" on <html>; window.onerror overwrites
it with the error). At #selftest the script renders every stored feature page and fails when an example
shows no context or a page no logit values. A deep link (#model/i) must open that feature on first load.
A report with a broken script must fail the same check. Also checked without a browser: the report of an
older results.json (no stability, bands or reasons) still renders, with notes where parts are missing.
The browser tests are skipped when chromium is not installed (apt-get install chromium).

Also runs alone on any report and writes a screenshot to look at:
    python tests/test_report_browser.py out/analysis/report.html [report.png] [#lua/12]
"""
import copy
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run alone: the repository's modules
import report  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--virtual-time-budget=5000"]
SECTIONS = ("training", "sweep", "saes", "edges", "stability", "one-to-one", "bands", "families", "hists", "features")


def chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render(html_path, fragment="#selftest", screenshot=None, height=3000, timeout=120):
    """The DOM after the page's script ran at html_path + fragment; a PNG screenshot of the top of the page
    (window 1200 x height) if asked. A deep link scrolls, and a headless screenshot of a scrolled page is
    blank: give a height above the page's to see the feature page (the picture then holds the whole page)."""
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(cmd + ["--dump-dom", url + fragment], capture_output=True, text=True, timeout=timeout).stdout
    if screenshot:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(screenshot)}",
                            f"--window-size=1200,{height}", "--hide-scrollbars", url + ("" if fragment == "#selftest" else fragment)],
                           capture_output=True, timeout=timeout)
    return dom


def problems(dom):
    """What is wrong with a rendered report ([] when nothing)."""
    m = re.search(r'<html[^>]*\bdata-js="([^"]*)"', dom)
    out = []
    if not m:
        out.append("the page's script did not run to its end (no data-js marker on <html>)")
    elif m.group(1) != "ok":
        out.append(f"JavaScript error: {m.group(1)}")
    if not re.search(r'<div id="page"><h3>feature [\w.-]+/\d+</h3>', dom):
        out.append("no feature page was rendered")
    if "<table" not in dom or "<svg" not in dom:
        out.append("the page is empty (no tables or figures)")
    return out


def shown_feature(dom):
    m = re.search(r'<div id="page"><h3>feature ([\w.-]+/\d+)</h3>', dom)
    return m and m.group(1)


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")


def add_stage_histories(out_dir):
    """What train.py and sae.py keep in their metrics.json: a loss history per model and SAE training logs
    and evaluations per seed (made-up numbers of the right shape)."""
    for m in ("base", "lua", "tinystories"):
        hist = [{"iter": it, "train_loss": 3 + 3 * math.exp(-it / 30), "val_loss": 3.2 + 3 * math.exp(-it / 30),
                 "lr": 1e-3, "tokens": it * 4096} for it in range(0, 101, 20)]
        report.common.atomic_write_json(os.path.join(out_dir, m, "metrics.json"),
                                        {"name": m, "domain": m, "history": hist, "val_loss": {m: hist[-1]["val_loss"]}})
    for m in ("base", "lua", "tinystories", "luastories"):
        hist = []
        for step in range(50, 301, 50):
            hist.append({"step": step, "train": {s: {"mse": 0.1 / step, "fvu": 3 / step, "l0": 900 / step, "dead": 0.01 * int(s)}
                                                 for s in ("0", "1")}, "act_per_s": 1e4})
            if step % 100 == 0:
                hist.append({"step": step, "eval": {s: {"ce_recovered": 1 - 2 / step, "fvu": 3 / step} for s in ("0", "1")}})
        seeds = {s: {"fvu": 0.01, "l0": 3.0, "dead_frac": 0.0, "ce_clean": 4.0, "ce_spliced": 4.01, "ce_zero_ablation": 5.0,
                     "ce_recovered": 0.99, "kl": 0.01} for s in ("0", "1")}
        report.common.atomic_write_json(os.path.join(out_dir, f"sae_{m}", "metrics.json"),
                                        {"model": m, "history": hist, "seeds": seeds})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from test_analyze import make_study, run
    root = str(tmp_path_factory.mktemp("browser"))
    data_dir, out_dir = make_study(root)
    run(data_dir, out_dir)
    add_stage_histories(out_dir)
    return out_dir, report.write_report(out_dir)


def load(out_dir):
    adir = os.path.join(out_dir, "analysis")
    return (report.common.read_json(os.path.join(adir, "results.json")),
            report.common.read_json(os.path.join(adir, "pages.json")))


@needs_chromium
def test_report_renders_in_chromium_without_javascript_errors(study, tmp_path):
    out_dir, page = study
    shot = str(tmp_path / "report.png")
    dom = render(page, screenshot=shot)
    assert problems(dom) == []
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    assert "Smoke-scale demo" in dom and "partner in" in dom
    assert dom.count('class="chart"') >= 3 + 4 + 2 * 5 + 1          # losses, SAE curves, stability pairs, sweep
    assert os.path.getsize(shot) > 20_000                           # a real picture, not a blank page


@needs_chromium
def test_a_deep_link_opens_the_named_feature_on_first_load(study):
    out_dir, page = study
    res, pages = load(out_dir)
    stored = sorted(pages["pages"])[-1]                             # a feature with contexts
    assert shown_feature(render(page, "#" + stored)) == stored
    dom = render(page, "#lua/7")                                    # a feature without a stored page
    assert problems(dom) == [] and shown_feature(dom) == "lua/7"
    assert "Contexts are stored for the example features" in dom
    dom = render(page, "#stability")                                # a section anchor is not a feature
    assert problems(dom) == [] and shown_feature(dom) is not None


@needs_chromium
def test_the_check_catches_a_broken_script_and_an_example_without_contexts(study, tmp_path):
    out_dir, page = study
    broken = str(tmp_path / "broken.html")
    text = open(page, encoding="utf-8").read()
    with open(broken, "w", encoding="utf-8") as f:
        f.write(text.replace("const qm =", "D.models.nosuch();const qm =", 1))
    found = problems(render(broken))
    assert any("JavaScript error" in p for p in found) or any("did not run" in p for p in found)

    res, pages = load(out_dir)
    example = "/".join(map(str, next(iter(res["selection"].values()))["persisting"][0][:2]))
    pages["pages"][example]["top"] = []
    pages["pages"][example]["intervals"] = []
    with open(broken, "w", encoding="utf-8") as f:
        f.write(report.render_report(res, pages, out_dir))
    assert any(f"example {example} shows no context" in p for p in problems(render(broken)))


def test_an_older_results_json_renders_with_notes_for_what_it_lacks(study):
    out_dir, _ = study
    res, pages = load(out_dir)
    pages["status"] = {n: e["status"] for n, e in res["edges"].items()}   # where the phase-A analyze.py kept them
    pages["status_legend"] = res["status_legend"]
    old = copy.deepcopy(res)
    for group in (old["edges"], old["null"]):
        for e in group.values():
            for key in ("stability", "density_bands", "status"):
                e.pop(key, None)
            e["parent_best"].pop("cos", None)
            e["child_best"].pop("cos", None)
    for key in ("selection_reasons", "status_legend", "thresholds", "density_bands", "null_spread"):
        old.pop(key)
    page = report.render_report(old, pages, out_dir)              # statuses from pages.json's copy
    assert "no stability curves" in page and 'id="data"' in page
    del pages["status"]                                           # no status anywhere: one line naming the fix
    os.makedirs(os.path.join(out_dir, "old", "analysis"), exist_ok=True)
    for name, obj in (("results", old), ("pages", pages)):
        report.common.atomic_write_json(os.path.join(out_dir, "old", "analysis", f"{name}.json"), obj)
    with pytest.raises(report.common.UserError, match="re-run: python analyze.py"):
        report.write_report(os.path.join(out_dir, "old"))


def test_the_page_shows_every_part_of_the_study(study):
    out_dir, page = study
    text = open(page, encoding="utf-8").read()
    assert "tokens seen" in text and "loss (nats / token)" in text                 # model loss curves, axis titles
    assert "CE loss recovered" in text and "L0: active features / token" in text    # SAE table and curves
    assert "validation loss (nats / token)" in text                                 # the sweep's y-axis title
    assert "one-to-one (Hungarian)" in text and "Hungarian on decoder cos &gt;= 0.7" in text
    assert "By firing frequency" in text and "rare (&lt; 0.1%)" in text
    assert "by no path" in text                                                      # the families table
    assert "td{white-space:nowrap}" in text.replace(" ", "")                        # "base->lua" never wraps
    assert re.search(r"<script(?! type=\"application/json\")[^>]*\bsrc=", text) is None  # offline: no external script
    assert "http://" not in text.split('id="data"')[0].replace("http://www.w3.org", "")


def test_a_third_seed_shows_the_null_spread(study):
    """With --seeds 0,1,2 analyze.py gives each null a seed-to-seed range: shaded on the stability charts and
    in the ratio table."""
    out_dir, _ = study
    res, pages = load(out_dir)
    assert "null range" not in report.render_report(res, pages, out_dir)
    for e in res["edges"].values():
        vs = e["stability"].get("vs_null")
        if vs:
            curve = vs["null_parent"]
            vs["spread"] = {"seed_pairs": 3, "min": [v * 0.9 for v in curve], "max": [min(1, v * 1.1) for v in curve]}
            res["null_spread"][vs["null"]] = vs["spread"]
    page = report.render_report(res, pages, out_dir)
    assert "null range" in page and "<polygon" in page and "over the 3 pairs" in page


def test_the_two_neithers_are_worded_apart():
    """The flow's "neither" (persists into no fine-tune) and the table's (reaches luastories by no path)
    count different sets: different words, both shown."""
    counts = {"base_live": 10, "fine_tunes": {"both": 2, "lua_only": 2, "tinystories_only": 2, "neither": 4},
              "reach": {"both": 1, "lua_only": 1, "tinystories_only": 1, "neither": 0},
              "paths": {"both": 1, "lua_only": 1, "tinystories_only": 1, "neither": 7},
              "new_lua": {"n": 1, "reach": 0}, "new_tinystories": {"n": 1, "reach": 1}, "new_luastories": 2}
    html = report.section_families({"families": {"counts": counts}}, 0.8)
    assert "persist into neither fine-tune (4)" in html and re.search(r"by no path</th>.*<td>7</td>", html)
    assert "neither fine-tune" not in report.PATHS["neither"] and "path" not in report.FINE_TUNE_GROUPS["neither"]


def test_markup_in_the_inputs_is_escaped(study):
    out_dir, _ = study
    res, pages = load(out_dir)
    edge = next(iter(res["selection_reasons"]))
    res["selection_reasons"][edge]["persisting"][0] = "<img src=x onerror=alert(1)>"
    res["token_set"]["per_domain"] = {"<b>lua</b>": 1}
    page = report.render_report(res, pages, out_dir)
    assert "<img src=x" not in page and "<b>lua</b>" not in page


def test_axis_ticks_are_round_and_cover_the_data():
    assert report.nice_ticks(0.5, 0.95) == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert report.nice_ticks(0, 651) == [0, 200, 400, 600]
    svg = report.line_chart([{"name": "a", "x": [0, 1, 2], "y": [3.2, None, 5.1], "colour": "#000"}], "step", "loss", "t")
    assert ">step<" in svg and ">loss<" in svg and svg.count("<polyline") == 0      # a gap: two lone points
    assert svg.count("<circle") == 2
    assert "nothing recorded" in report.line_chart([{"name": "a", "x": [1], "y": [None], "colour": "#000"}], "x", "y", "t")


if __name__ == "__main__":
    if chromium() is None:
        sys.exit("error: chromium is not installed; apt-get install chromium")
    path = sys.argv[1] if len(sys.argv) > 1 else "out/analysis/report.html"
    fragment = sys.argv[3] if len(sys.argv) > 3 else "#selftest"
    found = problems(render(path, fragment, screenshot=sys.argv[2] if len(sys.argv) > 2 else None,
                            height=3000 if fragment == "#selftest" else 20000))
    print("\n".join(found) or f"{path}{fragment}: rendered in Chromium, script ran cleanly")
    sys.exit(1 if found else 0)
