"""The analysis report (report.py), rendered from a small random study (test_analyze's make_study, with
the stages' loss and SAE histories added) and checked in a real browser: headless Chromium loads
report.html and its script must run to its end (it sets data-js="ok" on <html>; window.onerror overwrites
it with the error). At #selftest the script renders every stored feature page and fails when an example
shows no context or a page no logit values. A deep link (#model/i) must open that feature on first load.
A report with a broken script must fail the same check. Also checked without a browser: the report of an
older results.json (no stability, bands or reasons) still renders, with notes where parts are missing.
The model diffing section, from a hand-made record of analyze.diffing_record's shape: its numbers, its
histogram's bars and its examples' links and contexts; a stale record is one line, none is no section.
The browser tests are skipped when chromium is not installed (apt-get install chromium).

Also runs alone on any report and writes a screenshot to look at:
    python tests/test_report_browser.py out/analysis/report.html [report.png] [#lua/12]
"""
import base64
import copy
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run alone: the repository's modules
import report  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--virtual-time-budget=5000"]
SECTIONS = ("training", "sweep", "saes", "edges", "stability", "one-to-one", "bands", "families", "hists", "features")


def chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render(html_path, fragment="#selftest", screenshot=None, height=3000, timeout=120, width=1200):
    """The DOM after the page's script ran at html_path + fragment, in a width x height window; a PNG
    screenshot of the top of the page (the same window) if asked. A feature's deep link shows its page at
    the top (the report is hidden), so a screenshot of a normal window shows it."""
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        dom = subprocess.run(cmd + ["--dump-dom", url + fragment], capture_output=True, text=True, timeout=timeout).stdout
    if screenshot:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(screenshot)}",
                            f"--window-size={width},{height}", "--hide-scrollbars",
                            url + ("" if fragment == "#selftest" else fragment)], capture_output=True, timeout=timeout)
    return dom


def side_file(out_dir, key):
    """The record a side file (analysis/features/<key>.js) files under window.FEATURES[key]."""
    text = open(os.path.join(out_dir, "analysis", "features", f"{key}.js"), encoding="utf-8").read()
    return json.loads(text[text.index("]=") + 2:].rstrip().rstrip(";"))


def peak_token(tokens, c):
    """The token at the peak of a side-file context [seq, start, digits, ...] (the first highest digit: base 36
    digits sort as characters)."""
    dtype = "<" + {"uint16": "u2", "uint32": "u4"}[tokens["dtype"]]
    T, ids = tokens["T"], np.frombuffer(base64.b64decode(tokens["ids"]), dtype=dtype)
    return int(ids[c[0] * T + c[1] + c[2].index(max(c[2]))])


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
    from test_analyze import make_study, run, share_features
    root = str(tmp_path_factory.mktemp("browser"))
    data_dir, out_dir = make_study(root)
    share_features(out_dir, ("base", "lua", "tinystories"), 32)  # each null finds some features again
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
    dom = render(page, "#lua/7")                                    # a feature without a stored page: its side file
    assert problems(dom) == [] and shown_feature(dom) == "lua/7"
    assert 'data-shown="lua/7"' in dom and re.search(r"From the side file: \d", dom) and 'class="ctx"' in dom
    dom = render(page, "#stability")                                # a section anchor is not a feature
    assert problems(dom) == [] and shown_feature(dom) is not None
    assert re.search(r'<div id="fview" hidden', dom)                # the report shows, not the feature view


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


@needs_chromium
def test_the_first_screen_holds_what_was_run_and_the_headline(study, tmp_path):
    """On a 1280 x 800 screen the report opens with what was run, the edge / null table with its one-line
    reading (ending above the fold), and links to everything else; no chart comes before it."""
    out_dir, page = study
    dom = render(page, "", screenshot=str(tmp_path / "first.png"), width=1280, height=800)
    assert problems(dom) == []
    first = dom.split('<div id="report">')[1].split('id="browse"')[0]
    assert "<b>preset</b>: tiny" in first and "<b>models</b>: base (96 SAE features" in first
    assert 'class="reading"' in first and "times as many" in first and "<svg" not in first
    assert first.index('class="ratio"') < first.index('class="toc"')
    assert all(f'href="#{k}"' in first for k, _ in report.SECTIONS)
    assert 0 < int(re.search(r'data-headline-bottom="(\d+)"', dom).group(1)) <= 800


@needs_chromium
def test_a_deep_link_shows_the_feature_at_the_top_of_a_normal_window(study, tmp_path):
    """report.html#tinystories/20 in a 1280 x 800 window: the feature's heading is on screen (the report is
    hidden behind the feature view, nothing to scroll to), and a plain screenshot of it is not blank."""
    out_dir, page = study
    shot = str(tmp_path / "deep.png")
    dom = render(page, "#tinystories/20", screenshot=shot, width=1280, height=800)
    assert problems(dom) == [] and shown_feature(dom) == "tinystories/20" and 'data-shown="tinystories/20"' in dom
    assert 0 <= int(re.search(r'data-heading-top="(-?\d+)"', dom).group(1)) < 700
    assert re.search(r'<div id="report" hidden', dom)
    assert os.path.getsize(shot) > 20_000                           # a real picture, not a blank page


@needs_chromium
def test_a_token_search_lists_the_features_whose_top_contexts_peak_on_it(study):
    """#search=WORD lists, from every model's side file, exactly the features with a top context whose peak
    token is WORD (counted here from the side files themselves)."""
    out_dir, page = study
    res, _ = load(out_dir)
    tokens, peaks = side_file(out_dir, "tokens"), {}
    for m in res["models"]:
        for i, f in enumerate(side_file(out_dir, m)["f"]):
            for c in (f[2] if f else []):
                peaks.setdefault(tokens["tok"][str(peak_token(tokens, c))].strip(), set()).add(f"{m}/{i}")
    word = max((w for w in peaks if w.isalpha() and len(peaks[w]) <= 200), key=lambda w: len(peaks[w]))
    dom = render(page, "#search=" + word)
    assert 'data-js="ok"' in dom and f'data-found="{len(peaks[word])}"' in dom      # the results replace a feature
    assert re.search(r'<div id="report" hidden', dom) and f"<h3>search: {word}</h3>" in dom
    hits = dom.split('id="hits"')[1].split("</table>")[0]
    assert set(re.findall(r'<a href="#([\w.-]+/\d+)"', hits)) == peaks[word]
    dom = render(page, "#search=nosuchtoken")
    assert 'data-found="0"' in dom and "no such token in the token set" in dom


@needs_chromium
def test_the_tracking_view_shows_the_partner_on_this_features_top_contexts(study):
    """A feature's page shows, per edge, its best partner's activations on its own top contexts, shaded token
    by token as the side file holds them. lua is base with base's SAE: on base->lua the partner of base/i is
    lua/i, shaded on exactly the same tokens."""
    out_dir, page = study
    base = side_file(out_dir, "base")
    i = next(k for k, f in enumerate(base["f"]) if f and len(f[2]) >= 2)
    f = base["f"][i]
    dom = render(page, f"#base/{i}")
    assert problems(dom) == [] and f'data-shown="base/{i}"' in dom and "Tracking: on each edge" in dom
    rows = re.findall(r'<div class="pair"><div class="ctx">(.*?)</div><div class="ctx">(.*?)</div></div>', dom)
    expected = [(k, c) for k, p in enumerate(f[6]) if p for c in f[2]]
    assert len(rows) == len(expected) > 0
    shaded = lambda row: [("background" in s) for s in re.findall(r"<span title=[^>]*>", row)]
    for (own, partner), (k, c) in zip(rows, expected):
        assert f'<span class="mx">base/{i}</span>' in own and f'<span class="mx">base/{i}</span>' not in partner
        assert shaded(own) == [d != "0" for d in c[2]] and shaded(partner) == [d != "0" for d in c[3][k]]
        # each token's value: its digit of 35 times the row's own max (this feature's f[0]; the partner's, the
        # head's [edge, j, max]), shown to 3 significant digits (2 decimals from 1 up)
        for row, digits, mx in ((own, c[2], f[0]), (partner, c[3][k], f[6][k][2])):
            shown = [float(v) for v in re.findall(r'<span title="activation about ([^"]*)"', row)]
            want = [int(d, 36) * mx / base["levels"] for d in digits]
            assert len(shown) == len(want) and all(abs(a - b) <= (0.0051 if b >= 1 else 0.006 * b)
                                                   for a, b in zip(shown, want)), (shown, want)
        if base["edges"][k] == "base->lua":
            assert f'<span class="mx">lua/{i}</span>' in partner and c[3][k] == c[2]


@needs_chromium
def test_a_feature_page_from_the_side_file_shows_each_tokens_digit_times_its_max_over_35(study):
    """A live feature with no example page (pages.json) is drawn from its side file: its top context's tokens
    show activation digit x max / levels (35), to 3 significant digits (2 decimals from 1 up)."""
    out_dir, page = study
    _, pages = load(out_dir)
    base = side_file(out_dir, "base")
    i = next(k for k, f in enumerate(base["f"]) if f and f[2] and f"base/{k}" not in pages["pages"])
    f = base["f"][i]
    dom = render(page, f"#base/{i}")
    assert problems(dom) == [] and f'data-shown="base/{i}"' in dom
    shown = [float(v) for v in re.findall(r'<span title="activation (-?[0-9][^"]*)"', dom)][:len(f[2][0][2])]
    want = [int(d, 36) * f[0] / base["levels"] for d in f[2][0][2]]
    assert len(shown) == len(want) and all(abs(a - b) <= (0.0051 if b >= 1 else 0.006 * b)
                                           for a, b in zip(shown, want)), (shown, want)


def test_every_live_feature_has_a_compact_side_file_entry(study):
    """analyze.py writes every live feature of every SAE to its model's side file (dead ones null), with the
    same top sequence as pages.json's example pages; the token set is stored once (features/tokens.js)."""
    out_dir, _ = study
    res, pages = load(out_dir)
    tokens = side_file(out_dir, "tokens")
    assert tokens["kind"] == "tokens" and tokens["n_seq"] == res["token_set"]["n_seq"]
    for m in res["models"]:
        S = side_file(out_dir, m)
        assert S["kind"] == "features" and [f is None for f in S["f"]] == [d == 0 for d in res["density"][m]]
        assert all(len(c[2]) == S["width"] and len(c[3]) == len(S["edges"]) for f in S["f"] if f for c in f[2])
    for key, p in pages["pages"].items():
        m, i = key.split("/")
        f = side_file(out_dir, m)["f"][int(i)]
        if f and p["top"]:
            ids, acts = p["top"][0][:2]
            c = f[2][0]
            T = tokens["T"]
            seq = np.frombuffer(base64.b64decode(tokens["ids"]), dtype="<u2")[c[0] * T:(c[0] + 1) * T].tolist()
            top_at = [seq[c[1] + k] for k, d in enumerate(c[2]) if d == max(c[2])]
            assert ids[acts.index(max(acts))] in top_at and f[0] == pytest.approx(p["hist"]["max"], rel=0.01)


@needs_chromium
def test_side_files_of_another_analysis_run_are_not_shown(study, tmp_path):
    """results.json rewritten by an analysis that stopped before its side files: the page does not show the old
    run's contexts under the new statuses; it names the file and the command."""
    import shutil
    out_dir, _ = study
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2, ignore=shutil.ignore_patterns(".lock"))
    res, pages = load(out2)
    assert side_file(out2, "lua")["run"] == res["run"]                            # analyze.py ties them
    report.common.atomic_write_json(os.path.join(out2, "analysis", "results.json"),
                                    report.common.stamp({**res, "run": "another"}, "results"))
    dom = render(report.write_report(out2), "#lua/7")
    assert problems(dom) == [] and shown_feature(dom) == "lua/7"
    assert "features/lua.js is from another run of analyze.py: re-run python analyze.py" in dom
    assert not re.search(r"From the side file: \d", dom)                            # (the script's text has it)


def test_a_report_without_side_files_says_so(study, tmp_path):
    """An analysis folder made before the browser (no features/): the page renders, states that only the
    examples have contexts and names the command that makes the rest."""
    out_dir, _ = study
    res, pages = load(out_dir)
    assert "features/: " in report.render_report(res, pages, out_dir)             # the size of what is there
    page = report.render_report(res, pages, str(tmp_path))                         # no analysis/features/ there
    assert "No side files" in page and '"side":{}' in page


def other_study(out_dir, where):
    """The study's analysis copied to the folder `where`, its results.json saying that the analysis read the data of
    the folder 'elsewhere' with the paper preset (as a study run with --out_dir where --data_dir elsewhere
    --preset paper records): (results, pages, the command that analyses that study again)."""
    shutil.copytree(out_dir, where, ignore=shutil.ignore_patterns(".lock"))
    res, pages = load(where)
    res["provenance"]["config"].update(data_dir="elsewhere", preset="paper")
    report.common.atomic_write_json(os.path.join(where, "analysis", "results.json"), report.common.stamp(res, "results"))
    return res, pages, f"python analyze.py --data_dir=elsewhere --out_dir={where} --preset=paper"


def test_the_notes_name_the_analysis_of_this_study_not_of_the_default_folders(study, tmp_path):
    """Every note of the page that says to re-run the analysis (or diffing.py, or sae.py for more seeds) names the
    command with the study's folders and preset: the report's --out_dir, the analysis' --data_dir and --preset
    (results.json's provenance). A plain python analyze.py would analyse out/ with data/ and this machine's preset."""
    out_dir, _ = study
    where = str(tmp_path / "other")
    res, pages, want = other_study(out_dir, where)
    folders = want[len("python analyze.py"):]
    old = copy.deepcopy(res)                                       # an older analyze.py: no stability curves
    for group in (old["edges"], old["null"]):
        for e in group.values():
            e.pop("stability")
    page = report.render_report(old, pages, where)
    assert page.count(f"re-run {want}.</p>") == 2                 # the first screen's table and the section
    shutil.rmtree(os.path.join(where, "analysis", "features"))    # no side files
    page = report.render_report(res, pages, where)
    assert f"re-run {want} to make them." in page
    assert f"(python sae.py{folders} --model base --seeds 0,1,2 --overwrite; python sae.py{folders} --model lua " in page
    assert res["null_missing"] == ["luastories"] and f"(make one with python sae.py{folders} --model luastories " \
        "--overwrite, which" in page                              # (seeds 0 and 1: sae.py's default, unnamed)
    res["diffing"] = {"stale": "made from other SAEs (lua); re-run python diffing.py"}
    assert f"re-run python diffing.py{folders}, then {want}.</p>" in report.render_report(res, pages, where)
    res["diffing"] = diffing_record(res)                           # an older diffing.py: no histogram
    for e in res["diffing"]["edges"].values():
        e["crosscoder"]["seeds"]["0"].pop("delta_hist")
    assert f"re-run python diffing.py{folders}, then {want}.</p>" in report.render_report(res, pages, where)
    assert '"rerun":"' + want + '"' in report.render_report(res, pages, where)  # the script's notes (below) use it


@needs_chromium
def test_the_scripts_notes_name_the_analysis_of_this_study(study, tmp_path):
    """The notes the page's script writes (a feature page or a search without the side files) name the command
    that analyses this study, passed in with the page's data."""
    out_dir, _ = study
    where = str(tmp_path / "other")
    _, _, want = other_study(out_dir, where)
    os.remove(os.path.join(where, "analysis", "features", "tokens.js"))
    page = report.write_report(where)
    dom = render(page, "#lua/7")
    assert problems(dom) == [] and shown_feature(dom) == "lua/7"
    assert f"(or features/tokens.js) beside the report: re-run {want}." in dom
    dom = render(page, "#search=self")
    assert f"No side files of this analysis beside the report: re-run {want}." in dom


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
    for key in ("selection_reasons", "status_legend", "thresholds", "density_bands", "null_spread", "checksum"):
        old.pop(key)                                              # (and made before JSON records had checksums)
    old["format"] = pages["format"] = 1
    pages.pop("checksum")
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


def test_the_reading_of_the_ratio_table_known_answers():
    """The headline's reading: the edges' lowest and highest edge / null ratio at the study's cut, named, and the
    verdict: within [0.95, 1.05] (both ends included) as well as the seed null, below it less well, above it
    differently."""
    def res(*ratios):
        return {"threshold": 0.8, "edges": {f"e{k}": {"stability": {"thresholds": [0.5, 0.8], "vs_null": {"ratio": [
            9.0, r]}}} for k, r in enumerate(ratios)}}
    text = report.reading(res(1.05, 0.95))
    assert "the edges keep 0.95 (e1) to 1.05 (e0) times as many" in text and "keep features as well as " in text
    assert "keep features less well than " in report.reading(res(1.0, 0.949))
    assert "keep features differently from " in report.reading(res(1.051, 0.99))
    assert "No edge has a null baseline" in report.reading({"threshold": 0.8, "edges": {"e": {"stability": {
        "thresholds": [0.8], "vs_null": None}}}})


def test_the_ratio_table_shows_the_tenths_only():
    t = [0.5 + 0.05 * k for k in range(10)]                         # 0.5, 0.55, ..., 0.95 (as analyze.py's)
    st = {"thresholds": t, "parent": [0.5] * 10, "vs_null": {"ratio": [1.0] * 10, "null_parent": [0.5] * 10}}
    page = report.ratio_table({"edges": {"base->lua": {"stability": st}}}, "python analyze.py")
    assert re.findall(r"<th>r &ge; ([\d.]+)</th>", page) == ["0.5", "0.6", "0.7", "0.8", "0.9"]


def test_the_commands_a_section_names_keep_the_analysis_seeds(monkeypatch):
    """The null's missing SAE is made with the analysis' seeds (--null_seed 3: seed 3, not 1); the third seed's
    commands take its spread seed (2 when the analysis asked for none, -1); a stale diffing record's fix that
    names the analysis already is not given it twice."""
    html = report.section_edges({"edges": {}, "null": {}, "null_missing": ["luastories"]}, 0.8,
                                {"sae_seed": 0, "null_seed": 3}, "o")
    assert "(make one with python sae.py --out_dir=o --model luastories --seeds 0,3 --overwrite" in html
    res = {"models": {"base": {}, "lua x": {}}, "provenance": {"config": {"sae_seed": 0, "null_seed": 3,
                                                                        "spread_seed": 5}}}
    assert report.third_seed_commands(res) == ("python sae.py --model base --seeds 0,3,5 --overwrite; "
                                               "python sae.py --model 'lua x' --seeds 0,3,5 --overwrite")
    res["provenance"]["config"]["spread_seed"] = -1
    assert report.third_seed_commands(res).startswith("python sae.py --model base --seeds 0,3,2 --overwrite;")
    # with the settings the study's SAEs were trained with (results.json's sae_configs), off sae.py's defaults for
    # their preset: without them the new seeds' SAEs, and the ones retrained with them, would be other SAEs
    import sae
    monkeypatch.setattr(report.common, "GIVEN", {"preset": "tiny"})  # (the study's: the page names it)
    tiny = {**sae.config, **sae.PRESETS["tiny"], "preset": "tiny", "model": "base"}
    res["provenance"]["sae_configs"] = {"base": {"config": {**tiny, "arch": "topk", "expansion": 4, "threads": 2}},
                                        "lua x": {"config": tiny}}
    assert report.third_seed_commands(res) == ("python sae.py --model base --seeds 0,3,2 --arch topk --expansion 4 "
                                               "--overwrite; python sae.py --model 'lua x' --seeds 0,3,2 --overwrite")
    stale = "made from other SAEs (lua); re-run python diffing.py, then python analyze.py"
    html = report.section_diffing({"diffing": {"stale": stale}}, "o")
    assert html.count("python analyze.py") == 1 and "then python analyze.py --out_dir=o.</p>" in html


def test_a_fine_tunes_loss_curve_starts_at_its_parents_final_loss(tmp_path):
    """The training section: a fine-tune's validation curve starts, at 0 tokens, at its parent's final loss on its
    domain (train.py records the parent); base's own does not (its config's parent is base, unused)."""
    def metrics(m, val):
        hist = [{"iter": it, "tokens": 128 * it, "train_loss": 5 - it / 10, "val_loss": 5.1 - it / 10, "lr": 1e-3}
                for it in (5, 10)]
        report.common.atomic_write_json(os.path.join(tmp_path, m, "metrics.json"), {
            "name": m, "domain": m, "history": hist, "val_loss": val, "provenance": {"config": {"parent": "base"}}})
    metrics("base", {"base": 4.1, "lua": 6.5})
    metrics("lua", {"base": 5.0, "lua": 4.0})
    html = report.section_training(str(tmp_path), ["base", "lua"])
    assert "val (lua); at 0: base&#x27;s: 0, 6.5<" in html                 # base's final loss on lua, at 0 tokens
    assert "val (base): 640, 4.6<" in html and "at 0" not in html.replace("val (lua); at 0", "")


def test_the_diffing_sections_figures_known_answers():
    """The median firing-rate ratio is shown as a ratio (10 ** its log10), not as its log; an edge whose null
    persists nothing has no edge / null ratio ('-'), not a division by zero; a band's null figure is shown only
    when the edge has a null to read it against."""
    line = report.firing_line({"firing": {"parent_sae": {"live": 10, "stopped": 1, "started": 2,
                                                         "median_log10_ratio": 0.30103}}}, "base", "lua", 4.0)
    assert "median firing rate on lua / on base <b>2.00</b>" in line
    seed = {"fractions": {k: 0.25 for k in ("shared", "parent-only", "child-only", "mixed")},
            "spurious": {"parent-only": 1, "child-only": 2}, "counts": {"parent-only": 5, "child-only": 6}}
    edge = {"correlation": {"persisting_frac": 0.5, "disappearing_frac": 0.5, "emerging_frac": 0.1,
                            "null_persisting_frac": 0.0},
            "crosscoder": {"seeds": {"0": seed}}, "agreement": {"agree": 3, "n": 4, "agree_frac": 0.75,
                                                                "n_matched": 3, "agree_frac_matched": 1.0}}
    html = report.diffing_table({"edges": {"base->lua": edge}, "arch": "l1"})
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells[:7] == ["base-&gt;lua", "50.0%", "50.0%", "10.0%", "0.0%", "-", "25.0%"], cells
    band = {"density": [0.0, 0.001], "parent_live": 4, "persisting": 2, "persisting_frac": 0.5, "child_live": 4,
            "emerging": 1, "emerging_frac": 0.25}
    res = {"edges": {"base->lua": {"parent": "base", "density_bands": {"rare": band}, "stability": {}}},
           "null": {"base": {"density_bands": {"rare": {**band, "persisting_frac": 0.75}}}}}
    row = re.findall(r"<td>(.*?)</td>", report.section_bands(res))
    assert row[4:6] == ["50.0%", "n/a"], row
    res["edges"]["base->lua"]["stability"] = {"vs_null": {"null": "base"}}
    assert re.findall(r"<td>(.*?)</td>", report.section_bands(res))[4:6] == ["50.0%", "75.0%"]


def test_the_sae_table_names_each_seeds_role_and_gives_token_set_figures_to_the_tracked_one(tmp_path):
    """Each seed sae.py's metrics.json holds is a row with its role in the analysis (--sae_seed tracked, --null_seed
    the null, else unused) and its own held-out metrics; live, dead and density on the token set are the tracked
    seed's only."""
    sm = {"fvu": 0.1, "l0": 3.0, "dead_frac": 0.0, "ce_clean": 4.0, "ce_spliced": 4.1, "ce_zero_ablation": 5.0,
          "ce_recovered": 0.9, "kl": 0.01}
    report.common.atomic_write_json(os.path.join(tmp_path, "sae_base", "metrics.json"), report.common.stamp(
        {"model": "base", "history": [], "seeds": {"0": sm, "3": {**sm, "fvu": 0.2}, "7": sm}}, "sae_metrics"))
    res = {"provenance": {"config": {"sae_seed": 0, "null_seed": 3, "spread_seed": 2}},
           "models": {"base": {"n_features": 96, "sae_kind": "relu", "live": 90, "dead": 6, "median_density": 0.01,
                               "sae_metrics": sm}}}
    html = report.sae_table(res, str(tmp_path))
    rows = [re.findall(r"<td>(.*?)</td>", r)[:6] for r in re.findall(r"<tr>(.*?)</tr>", html)]
    assert rows[1:] == [["base", "0 (tracked)", "96 relu", "90 (6)", "1.00e-02", "0.100"],
                        ["base", "3 (null)", "96 relu", "-", "-", "0.200"],
                        ["base", "7 (unused)", "96 relu", "-", "-", "0.100"]]


def test_markup_in_the_inputs_is_escaped(study):
    out_dir, _ = study
    res, pages = load(out_dir)
    edge = next(iter(res["selection_reasons"]))
    res["selection_reasons"][edge]["persisting"][0] = "<img src=x onerror=alert(1)>"
    res["token_set"]["per_domain"] = {"<b>lua</b>": 1}
    page = report.render_report(res, pages, out_dir)
    assert "<img src=x" not in page and "<b>lua</b>" not in page


def diffing_record(res, n_edges=2):
    """A results.json["diffing"] of the shape analyze.diffing_record writes, for the test study's first edges:
    made-up numbers (seeded), examples on live features of each edge's models, with contexts of token strings
    (one holding markup, which must show as text)."""
    rng = np.random.default_rng(0)
    legend = {"s": "shared", "p": "parent-only", "c": "child-only", "m": "mixed", "x": "dead", "u": "unmatched"}
    edges = {}
    for k, (name, e) in enumerate(list(res["edges"].items())[:n_edges]):
        seeds = {}
        for s in ("0", "1"):
            hist = rng.integers(0, 12, 40) * (rng.random(40) < 0.7)
            live = int(hist.sum())
            n = dict(zip(("shared", "parent-only", "child-only", "mixed"), rng.multinomial(live, [0.6, 0.1, 0.1, 0.2])))
            spur = {c: int(rng.integers(0, n[c] + 1)) for c in ("parent-only", "child-only")}
            seeds[s] = {"live": live, "dead": 3, "counts": {c: int(v) for c, v in n.items()},
                        "fractions": {c: round(int(v) / live, 5) for c, v in n.items()},
                        "fvu": {"parent": 0.3 + 0.01 * k, "child": 0.31}, "l0": 14.2, "spurious": spur,
                        "genuine": {c: int(n[c]) - spur[c] for c in spur},
                        "delta_hist": {"edges": [round(b / 40, 3) for b in range(41)], "counts": hist.tolist(),
                                       "mean": 0.5, "sd": 0.1}}
        table = {side: {st: {c: int(rng.integers(0, 30)) for c in "spcmxu"} for st in pick}
                 for side, pick in (("parent", "pd"), ("child", "me"))}
        agree = sum(t[st][{"p": "s", "d": "p", "m": "s", "e": "c"}[st]] for t in table.values() for st in t)
        total = sum(sum(v.values()) for t in table.values() for v in t.values())
        matched = total - sum(v["u"] for t in table.values() for v in t.values())
        examples = []
        for j, (m, status, cls) in enumerate(((e["parent"], "disappears", "shared"), (e["child"], "emerges", "mixed"))):
            i = [f for f, d in enumerate(res["density"][m]) if d > 0][3 + 2 * j + k]
            tokens = ["def", " main", "():", "\n", "<b>cat</b>", " &", " dog", "\t"]
            examples.append({"model": m, "feature": i, "status": status, "latent": 17 + j, "latent_class": cls,
                             "r": 0.9 - 0.1 * j, "rate_own": 0.0123, "rate_other": 0.0456,
                             "contexts": [{"tokens": tokens, "acts": [0, 0.5, 0, 0, 2.0 + c, 0.25, 0, 0]}
                                          for c in range(3 - j)]})
        cross = {on: {sae: {"fvu": 0.2 + 0.1 * (on[3:] != sae[:-4]), "l0": 50.0 + k, "ce_recovered": 0.9,
                            "kl": 0.05, "dead_frac": 0.0} for sae in ("parent_sae", "child_sae")}
                 for on in ("on_parent", "on_child")}
        live0 = seeds["0"]["live"]
        edges[name] = {
            "crosscoder": {"seeds": seeds, "null": {"seeds": [0, 1], "threshold": 0.8, "live": live0,
                                                    "found_again": 40 + k, "found_again_frac": (40 + k) / live0,
                                                    "same_class": 30, "same_class_frac": 30 / (40 + k)}},
            "correlation": {"persisting_frac": e["persisting_frac"], "disappearing_frac": 1 - e["persisting_frac"],
                            "emerging_frac": e["emerging_frac"],
                            "null_persisting_frac": e.get("null_parent_persisting_frac")},
            "cross_application": cross,
            "firing": {s: {"live": 91, "stopped": 2 + k, "started": 1, "stopped_frac": 0.02, "median_log10_ratio": 0.3}
                       for s in ("parent_sae", "child_sae")},
            "agreement": {**table, "agree": agree, "n": total, "agree_frac": round(agree / total, 5),
                          "n_matched": matched, "agree_frac_matched": round(agree / matched, 5)},
            "examples": examples}
    return {"edges": edges, "arch": "batchtopk", "cuts": {"parent_only": 0.1, "shared": [0.4, 0.6], "child_only": 0.9,
                                                          "scaling": 0.5},
            "match_min_r": 0.5, "agree_rule": {"persists": "shared", "disappears": "parent-only", "matched": "shared",
                                               "emerges": "child-only"},
            "class_legend": legend, "delta": "(1/2) ((|d_child| - |d_parent|) / max(|d_parent|, |d_child|) + 1)",
            "seconds": 1.0, "fire_ratio": 4.0}


def numbers(cell):
    """The numbers written in a table cell's text, in order ('85.4% [85.0%]' -> [85.4, 85.0])."""
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell.replace(",", ""))]


def expected_row(name, e):
    """What the diffing table's row of edge name must say, as numbers in the order of its cells."""
    c, cc, a = e["correlation"], e["crosscoder"], e["agreement"]
    s0, s1, null = cc["seeds"]["0"], cc["seeds"]["1"], cc["null"]
    pct = lambda v: 100 * v
    out = [pct(c["persisting_frac"]), pct(c["disappearing_frac"]), pct(c["emerging_frac"]),
           pct(c["null_persisting_frac"]), c["persisting_frac"] / c["null_persisting_frac"]]
    for k in ("shared", "parent-only", "child-only", "mixed"):
        out += [pct(s0["fractions"][k]), pct(s1["fractions"][k])]
    for s in (s0, s1):
        out += [v for k in ("parent-only", "child-only") for v in (s["spurious"][k], s["counts"][k])]
    out += [pct(null["found_again_frac"]), null["found_again"], null["live"], pct(null["same_class_frac"]),
            null["same_class"], null["found_again"], pct(a["agree_frac"]), a["agree"], a["n"],
            pct(a["agree_frac_matched"]), a["agree"], a["n_matched"]]
    return out


@pytest.fixture(scope="module")
def diffing_page(study):
    """The test study's report with a diffing record, written beside report.html (its side files load)."""
    out_dir, _ = study
    res, pages = load(out_dir)
    assert "diffing" not in res                                   # analyze.py ran without diffing.py's record
    res["diffing"] = diffing_record(res)
    path = os.path.join(out_dir, "analysis", "report_diffing.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(report.render_report(res, pages, out_dir))
    return res, path


@needs_chromium
def test_the_model_diffing_section_shows_the_records_numbers(diffing_page):
    """With results.json["diffing"] the report has a model diffing section, linked from the first screen: its
    table says the record's numbers, each edge's relative-norm histogram has the record's counts in its bars
    (both seeds), and each disagreement links to a live feature's page and shows its contexts, the maximum
    outlined and markup in a token shown as text; the script runs cleanly."""
    res, page = diffing_page
    d = res["diffing"]
    dom = render(page, "#diffing", width=1280)
    assert problems(dom) == [] and 'id="diffing"' in dom
    assert 'href="#diffing"' in dom.split('id="browse"')[0]                     # in the first screen's links
    section = dom.split('id="diffing"')[1].split("<details>")[0]
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", section.split('class="diff"')[1].split("</table>")[0])
    assert [html.unescape(n) for n, _ in rows] == list(d["edges"])
    for (name, cells), e in zip(rows, d["edges"].values()):
        got = [v for c in re.findall(r"<td>(.*?)</td>", cells) for v in numbers(c)]
        assert got == pytest.approx(expected_row(name, e), abs=0.051), name
    for k, (name, e) in enumerate(d["edges"].items()):
        block = section.split(f'id="diffing-{k}"')[1].split('id="diffing-')[0]
        for s, rec in e["crosscoder"]["seeds"].items():
            bars = re.findall(rf"<title>seed {s}\b[^:<]*: ([\d.]+) to ([\d.]+): ([\d,]+)</title>", block)
            bins, counts = rec["delta_hist"]["edges"], rec["delta_hist"]["counts"]
            want = [(f"{bins[b]:g}", f"{bins[b + 1]:g}", str(c)) for b, c in enumerate(counts) if c]
            assert bars == want, (name, s)
        assert "relative decoder norm (0 parent-only, ½ shared, 1 child-only)" in block
        assert "the rate falls / rises 4x (diffing.py's --fire_ratio) or more" in block   # the record's factor
        exs = re.findall(r'<div class="dex"><p><a href="#([\w.-]+)/(\d+)">.*?<div data-dctx="[\d.]+">(.*?)</div></div>',
                         block)
        assert len(exs) == len(e["examples"]) > 0
        for (m, i, ctx), x in zip(exs, e["examples"]):
            assert (m, int(i)) == (x["model"], x["feature"]) and res["density"][m][int(i)] > 0   # a live feature's page
            shown = re.findall(r'<div class="ctx">(.*?)</div>', ctx + "</div>")
            assert len(shown) == len(x["contexts"])
            for c in shown:   # the maximum (the markup token) outlined, shown as text
                assert re.search(r'<span title="activation [^"]*" [^>]*class="at"[^>]*>&lt;b&gt;cat&lt;/b&gt;</span>',
                                 c)
    x = next(iter(d["edges"].values()))["examples"][0]
    key = f"{x['model']}/{x['feature']}"
    assert shown_feature(render(page, "#" + key)) == key                         # the link opens that page


def test_a_stale_or_absent_diffing_record(study, diffing_page):
    """A stale record (made from other SAEs) shows one line naming what to re-run, no table or chart; without
    a record there is no section and no link to one."""
    out_dir, _ = study
    res, pages = load(out_dir)
    plain = report.render_report(res, pages, out_dir)
    assert 'id="diffing"' not in plain and "href='#diffing'" not in plain and "Model diffing" not in plain
    res["diffing"] = {"stale": "made from other SAEs (lua); re-run python diffing.py"}
    page = report.render_report(res, pages, out_dir)
    section = page.split("id='diffing'>")[1].split("<details>")[0]
    assert "href='#diffing'" in page and re.search(r"re-run python diffing\.py --data_dir=\S+ --out_dir=\S+ "
                                                   r"--preset=\w+, then python analyze\.py --data_dir", section)
    assert "<table" not in section and "<svg" not in section and section.count("<p") == 1
    assert '"diff"' not in page.split('id="data">')[1]                          # no contexts to draw


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
