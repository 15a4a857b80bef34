"""
The study's report: out/analysis/results.json and pages.json (both written by analyze.py), with what
the earlier stages keep (out/<model>/metrics.json loss history, out/sae_<model>/metrics.json training
logs and evaluations, out/<merge>/merge.json, out/merge_sweep.json) -> out/analysis/report.html, one
offline HTML file (no network, no external scripts): the models' loss curves, the merge sweep, the SAEs
(a table with CE loss recovered, their training curves), the edge and null tables, the stability
curves of each edge against its null (many-to-many and one-to-one, plain and frequency-weighted), the
density bands, the feature families, and a page per feature in the manner of sae_vis / Neuronpedia:
activation histogram, top contexts, contexts drawn from each activation interval, logit effects as
values, and the best partner on every edge with r, decoder cosine and status.

    python report.py                        # re-renders out/analysis/report.html; recomputes nothing
    python report.py --out_dir out_local

Nothing here decides anything about features: every count, curve and status (persists, disappears,
emerges, dead) is read from what analyze.py wrote; a part an older results.json lacks is left out with
a note. Tables and figures are built here as HTML and inline SVG; the feature pages are built in the
browser from the JSON embedded in the page, and report.html#lua/1240 opens feature 1240 of lua.
Checked in headless Chromium by tests/test_report_browser.py (which also takes screenshots).
"""
import html
import json
import math
import os

import common
from common import die

# -----------------------------------------------------------------------------
config = dict(
    out_dir="out",              # reads out_dir/analysis/{results,pages}.json and the stages' metrics; writes out_dir/analysis/report.html
)

esc = html.escape
GREEN, GREY, ORANGE, BLUE, RED, PURPLE = "#2a9d5c", "#9aa0a6", "#e8892b", "#3a6ea5", "#c0392b", "#8e44ad"
COLOURS = [BLUE, ORANGE, GREEN, PURPLE, RED, "#16a085", "#7f8c8d"]


# -----------------------------------------------------------------------------
# figures (inline SVG)

def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def nice_ticks(lo, hi, n=5):
    """About n round values (1, 2, 2.5 or 5 x 10^k apart) between lo and hi."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m * (1 + 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def tick_label(v):
    a = abs(v)
    return f"{v / 1e6:g}M" if a >= 1e6 else f"{v / 1e3:g}k" if a >= 1e3 else f"{v:.4g}"


def _span(values, fixed=None, widen=True):
    """(lo, hi) of an axis: fixed, else the data widened to the round ticks around it; never empty."""
    lo, hi = fixed or (min(values), max(values))
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        d = abs(lo) * 0.1 or 1.0
        lo, hi = (0.0, 1.0) if lo == 0 else (lo - d, hi + d)
    ticks = nice_ticks(lo, hi)
    if fixed or not widen or len(ticks) < 2:
        return lo, hi
    step = ticks[1] - ticks[0]
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def legend_svg(series, x, y, width):
    """Legend entries (a sample of the line, or a dot, and the name) left to right, wrapping at width.
    Returns (svg, number of rows)."""
    out, cx, row = [], x, 0
    for s in series:
        wd = 24 + 6.3 * len(s["name"])
        if cx + wd > x + width and cx > x:
            cx, row = x, row + 1
        yy = y + 14 * row
        mark = (f'<circle cx="{cx + 9:.0f}" cy="{yy - 4}" r="3" fill="{s["colour"]}"/>' if s.get("noline") else
                f'<line x1="{cx:.0f}" x2="{cx + 18:.0f}" y1="{yy - 4}" y2="{yy - 4}" stroke="{s["colour"]}" '
                f'stroke-width="2"{_dash(s)}/>')
        out.append(f'{mark}<text x="{cx + 22:.0f}" y="{yy}">{esc(s["name"])}</text>')
        cx += wd + 8
    return "".join(out), row + 1


def _dash(s):
    return ' stroke-dasharray="5,3"' if s.get("dash") else ""


def _axes(xt, yt, X, Y, box, xlabel, ylabel):
    """Tick marks and labels, light grid lines, the axis lines and the axis titles."""
    x0, x1, y0, y1 = box
    out = []
    for v in xt:
        out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#444"/>'
                   f'<text x="{X(v):.1f}" y="{y0 + 15}" text-anchor="middle">{tick_label(v)}</text>')
    for v in yt:
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{tick_label(v)}</text>')
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>'
               f'<line x1="{x0}" x2="{x0}" y1="{y1}" y2="{y0}" stroke="#444"/>'
               f'<text x="{(x0 + x1) / 2:.0f}" y="{y0 + 30}" text-anchor="middle" class="ax">{esc(xlabel)}</text>'
               f'<text transform="rotate(-90)" x="{-(y0 + y1) / 2:.0f}" y="12" text-anchor="middle" class="ax">'
               f'{esc(ylabel)}</text>')
    return out


def _lines(s, X, Y):
    """One series: its polyline(s), broken where a value is missing, and dots when asked."""
    out, run = [], []
    pts = [(x, y) for x, y in zip(s["x"], s["y"])]
    for x, y in pts + [(None, None)]:
        if _num(x) and _num(y):
            run.append(f"{X(x):.1f},{Y(y):.1f}")
            continue
        if len(run) > 1 and not s.get("noline"):
            out.append(f'<polyline fill="none" stroke="{s["colour"]}" stroke-width="{s.get("width", 2)}"{_dash(s)} '
                       f'points="{" ".join(run)}"><title>{esc(s["name"])}</title></polyline>')
        elif len(run) == 1 and not (s.get("dots") or s.get("noline")):  # a lone point between gaps stays visible
            cx, cy = run[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{s["colour"]}"/>')
        run = []
    if s.get("dots") or s.get("noline"):
        out += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.8" fill="{s["colour"]}"><title>{esc(s["name"])}: '
                f'{tick_label(x)}, {y:.4g}</title></circle>' for x, y in pts if _num(x) and _num(y)]
    return out


def line_chart(series, xlabel, ylabel, title, w=360, h=250, ylim=None, vlines=(), bands=()):
    """An SVG line chart with tick labels, axis titles and a legend. series: [{"name", "x", "y", "colour",
    "dash", "dots", "noline" (dots only)}]; a None in y breaks the line. ylim: fixed (lo, hi), else from the
    data. vlines: [(x, label) or (x, label, "bottom" | "middle" | "upper")] dashed red; bands: [(x, lo, hi, colour, name)] shaded ranges."""
    pts = [(x, y) for s in series for x, y in zip(s["x"], s["y"]) if _num(x) and _num(y)]
    if not pts:
        return f'<p class="dim">{esc(title)}: nothing recorded.</p>'
    xlo, xhi = _span([p[0] for p in pts], widen=False)
    ylo, yhi = _span([p[1] for p in pts] + [v for b in bands for v in b[1] + b[2] if _num(v)], ylim)
    leg, rows = legend_svg(series, 60, 30, w - 66)
    box = x0, x1, y0, y1 = 60, w - 12, h - 40, 26 + 14 * rows
    X = lambda v: x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)
    Y = lambda v: y0 - (v - ylo) / (yhi - ylo) * (y0 - y1)
    xt = [v for v in nice_ticks(xlo, xhi) if xlo <= v <= xhi]
    yt = [v for v in nice_ticks(ylo, yhi) if ylo - 1e-12 <= v <= yhi + 1e-12]
    out = [f'<text x="{w / 2:.0f}" y="14" class="t" text-anchor="middle">{esc(title)}</text>', leg]
    out += _axes(xt, yt, X, Y, box, xlabel, ylabel)
    for bx, lo, hi, colour, name in bands:
        ok = [(x, a, b) for x, a, b in zip(bx, lo, hi) if _num(x) and _num(a) and _num(b)]
        poly = [f"{X(x):.1f},{Y(a):.1f}" for x, a, _ in ok] + [f"{X(x):.1f},{Y(b):.1f}" for x, _, b in reversed(ok)]
        out.append(f'<polygon points="{" ".join(poly)}" fill="{colour}" opacity="0.18"><title>{esc(name)}</title></polygon>')
    for s in series:
        out += _lines(s, X, Y)
    for vx, label, *where in vlines:
        if _num(vx) and xlo <= vx <= xhi:
            ty = {"bottom": y0 - 5, "middle": (y0 + y1) / 2, "upper": y1 + (y0 - y1) * 0.3}.get(where[0] if where else "top", y1 + 11)
            out.append(f'<line x1="{X(vx):.1f}" x2="{X(vx):.1f}" y1="{y1}" y2="{y0}" stroke="{RED}" stroke-dasharray="3,2"/>'
                       f'<text x="{X(vx) + 3:.1f}" y="{ty}" fill="{RED}">{esc(label)}</text>')
    return f'<svg class="chart" width="{w}" height="{h}" role="img">' + "".join(out) + "</svg>"


def sankey_svg(cols, links, width=900, height=330):
    """Flow diagram. cols: [[(id, label, value, colour)], ...] left to right; links: [(src, dst, value)];
    band widths proportional to value, coloured by their destination."""
    pad, nw, lab = 14, 14, 240
    tot = max(sum(n[2] for n in col) for col in cols) or 1
    k = (height - 20 - pad * (max(len(c) for c in cols) - 1)) / tot
    step = (width - lab - nw - 10) / max(len(cols) - 1, 1)
    pos, nodes, bands, colour = {}, [], [], {}
    for ci, col in enumerate(cols):
        x, y = 10 + ci * step, 10.0
        for nid, label, v, col_ in col:
            if v <= 0:  # an empty node would only add a label over the others
                continue
            hh = v * k
            pos[nid], colour[nid] = [x, y, y], col_
            nodes.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{nw}" height="{hh:.1f}" fill="{col_}"/>'
                         f'<text x="{x + nw + 4:.1f}" y="{y + hh / 2 + 4:.1f}">{esc(label)} ({v:,})</text>')
            y += hh + pad
    for s, d, v in links:
        if v <= 0:
            continue
        w, x0, x1 = v * k, pos[s][0] + nw, pos[d][0]
        y0, y1, xm = pos[s][1], pos[d][2], (pos[s][0] + nw + pos[d][0]) / 2
        pos[s][1] += w
        pos[d][2] += w
        bands.append(f'<path d="M{x0:.1f},{y0:.1f}C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}'
                     f'L{x1:.1f},{y1 + w:.1f}C{xm:.1f},{y1 + w:.1f} {xm:.1f},{y0 + w:.1f} {x0:.1f},{y0 + w:.1f}Z" '
                     f'fill="{colour[d]}" opacity="0.35"><title>{esc(s)} to {esc(d)}: {v:,}</title></path>')
    return f'<svg class="sankey" width="{width}" height="{height}">' + "".join(bands + nodes) + "</svg>"


FINE_TUNE_GROUPS = {"both": "persist into both fine-tunes", "lua_only": "persist into lua only",
                    "tinystories_only": "persist into tinystories only", "neither": "persist into neither fine-tune"}
PATHS = {"both": "by both paths", "lua_only": "by the lua path only", "tinystories_only": "by the tinystories path only",
         "neither": "by no path"}


def family_flow(fam):
    """Sankey columns/links: base features by the fine-tunes they persist into, then whether they reach luastories."""
    g, reach = fam["fine_tunes"], fam["reach"]
    col1 = [(k, label, g[k], GREEN if k != "neither" else GREY) for k, label in FINE_TUNE_GROUPS.items()]
    col1 += [("new_lua", "new in lua", fam["new_lua"]["n"], ORANGE),
             ("new_tinystories", "new in tinystories", fam["new_tinystories"]["n"], ORANGE)]
    links = [("base", k, g[k]) for k in FINE_TUNE_GROUPS]
    for k in FINE_TUNE_GROUPS:
        links += [(k, "L", reach[k]), (k, "lost", g[k] - reach[k])]
    for k in ("new_lua", "new_tinystories"):
        links += [(k, "L", fam[k]["reach"]), (k, "lost", fam[k]["n"] - fam[k]["reach"])]
    reached = sum(v for s, d, v in links if d == "L")
    lost = sum(v for s, d, v in links if d == "lost")
    cols = [[("base", "base (live)", fam["base_live"], BLUE)], col1,
            [("L", "reach luastories", reached, GREEN), ("new_L", "new in luastories", fam["new_luastories"], ORANGE),
             ("lost", "lost on the way", lost, GREY)]]
    return cols, links


def hist_svg(hp, hc, thr, title, w=290, h=160):
    """Max-r histograms of one pair: parent features (bars) and child features (line); threshold in red."""
    n, m = len(hp), max(max(hp), max(hc), 1)
    x0, x1, y0, y1 = 36, w - 8, h - 34, 20
    sx, sy = (x1 - x0) / n, (y0 - y1) / m
    bars = "".join(f'<rect x="{x0 + b * sx:.1f}" y="{y0 - v * sy:.1f}" width="{sx - 0.5:.1f}" height="{v * sy:.1f}" '
                   f'fill="{BLUE}"/>' for b, v in enumerate(hp) if v)
    pts = " ".join(f"{x0 + b * sx:.1f},{y0 - v * sy:.1f} {x0 + (b + 1) * sx:.1f},{y0 - v * sy:.1f}" for b, v in enumerate(hc))
    xt = x0 + thr * (x1 - x0)
    return (f'<svg width="{w}" height="{h}"><text x="{x0}" y="13" class="t">{esc(title)}</text>{bars}'
            f'<polyline points="{pts}" fill="none" stroke="{ORANGE}" stroke-width="1.5"/>'
            f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{y1}" y2="{y0}" stroke="#d33" stroke-dasharray="3,2"/>'
            f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>'
            f'<text x="{x0}" y="{y0 + 13}">0</text><text x="{(x0 + x1) / 2 - 8:.0f}" y="{y0 + 13}">0.5</text>'
            f'<text x="{x1 - 8}" y="{y0 + 13}">1</text><text x="{x0 - 4}" y="{y1 + 8}" text-anchor="end">{m}</text>'
            f'<text x="{(x0 + x1) / 2:.0f}" y="{h - 4}" text-anchor="middle">best r of each feature</text>'
            f'<text transform="translate(10,{(y0 + y1) / 2:.0f}) rotate(-90)" text-anchor="middle">features</text></svg>')


def json_for_script(obj):
    """JSON safe inside <script type="application/json">: no '</script>', no HTML-significant characters."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=common._json_default)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def table(header, rows, cls=""):
    th = "".join(f"<th>{esc(str(x))}</th>" for x in header)
    return f'<table class="{cls}"><tr>' + th + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for r in rows) + "</table>"


def _f(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"


def _pct(x, d=1):
    return "n/a" if x is None else f"{x:.{d}%}"


# -----------------------------------------------------------------------------
# the sections of the page

def read_stage(out_dir, folder, name, kind):
    """A stage's JSON record of `kind` (train.py / sae.py metrics.json, merge.py merge.json, the sweep), or
    None when it is absent: the report shows what exists. One that is not JSON or of another kind: one
    line naming it (common.read_record)."""
    path, how = os.path.normpath(os.path.join(out_dir, folder, name)), STAGE_HOW[kind].format(folder, folder[4:])
    return common.read_record(path, kind, how) if os.path.exists(path) else None


# the commands that remake a stage's record in out_dir/<folder>/: {0} the folder, {1} it without sae_
STAGE_HOW = {"train_metrics": "python train.py --domain {0} --overwrite",
             "sae_metrics": "python sae.py --model {1} --overwrite",
             "merge": "python merge.py --out {0} --overwrite", "sweep": "python merge.py --sweep --overwrite"}


def section_training(out_dir, models):
    """Train and validation loss over training, one chart per model (train.py's metrics.json history),
    and every model's final validation loss on each domain."""
    charts, notes, finals = [], [], {}
    for m in models:
        met = (read_stage(out_dir, m, "metrics.json", "train_metrics") or read_stage(out_dir, m, "merge.json", "merge")
               or {})
        finals[m] = met.get("val_loss") if isinstance(met.get("val_loss"), dict) else {}
        hist = met.get("history") or []
        if hist:
            by_tokens = all(_num(row.get("tokens")) for row in hist)
            x = [row.get("tokens") if by_tokens else row.get("iter") for row in hist]
            series = [{"name": "train (mean since the last eval)", "x": x, "y": [row.get("train_loss") for row in hist],
                       "colour": BLUE},
                      {"name": f"val ({met.get('domain', m)})", "x": x, "y": [row.get("val_loss") for row in hist],
                       "colour": ORANGE, "dots": True}]
            charts.append(line_chart(series, "tokens seen" if by_tokens else "iteration", "loss (nats / token)", m))
        elif "t" in met and "a" in met:
            notes.append(f"{m} is a merge of {met.get('a')} and {met.get('b')} at t = {met.get('t')} (merge.py): no training")
        else:
            notes.append(f"{m}: " + ("no loss history in its metrics.json (trained before train.py kept one)"
                                     if met else "no metrics.json"))
    doms = list(dict.fromkeys(d for v in finals.values() for d in v))
    val = (table(["validation loss at the end"] + doms, [(m, *(_f(v.get(d)) for d in doms)) for m, v in finals.items()])
           if doms else "")
    return ("<h2 id='training'>Training</h2><p>Loss over training for each model (train.py); a fine-tune starts from "
            "its parent's weights.</p><div class='charts'>" + "".join(charts) + "</div>"
            + "".join(f"<p class='dim'>{esc(n)}.</p>" for n in notes) + val)


def sweep_chart(sw, merges=()):
    """The merge sweep: val loss on each domain against t (t = 0: model a), the paper's curves dashed; the
    crossings and, for each merge made of the same a and b (merges: [(name, merge.json)]), its t."""
    t, losses = sw.get("t") or [], sw.get("losses") or sw.get("loss") or {}
    paper = sw.get("paper") if isinstance(sw.get("paper"), dict) else {}
    series = []
    for k, d in enumerate(losses):
        colour = COLOURS[k % len(COLOURS)]
        series.append({"name": f"{d} (ours)", "x": t, "y": losses[d], "colour": colour, "dots": True})
        if d in paper and "t" in paper:
            series.append({"name": f"{d} (paper)", "x": paper["t"], "y": paper[d], "colour": colour, "dash": True})
    name = lambda v: v.get("name", "?") if isinstance(v, dict) else str(v)
    ct, pt = sw.get("crossing_t", sw.get("cross_t")), paper.get("crossing_t")
    marks = [(ct, f"ours cross at t = {ct:.2f}", "bottom")] if _num(ct) else []
    marks += [(pt, f"paper's cross at t = {pt:.2f}", "middle")] if _num(pt) else []
    marks += [(m["t"], f"{mname}: t = {m['t']:g}", "upper") for mname, m in merges
              if _num(m.get("t")) and (name(m.get("a")), name(m.get("b"))) == (name(sw.get("a")), name(sw.get("b")))]
    return line_chart(series, f"t (0 = {name(sw.get('a', 'a'))}, 1 = {name(sw.get('b', 'b'))})",
                      "validation loss (nats / token)", "SLERP(a, b, t)", w=560, h=300,
                      vlines=marks)


SAE_COLS = (("fvu", "FVU", 3), ("l0", "L0", 1), ("dead_frac", "dead", 4), ("ce_clean", "CE clean", 3),
            ("ce_spliced", "CE with SAE", 3), ("ce_zero_ablation", "CE zero-ablated", 3),
            ("ce_recovered", "CE loss recovered", 3), ("kl", "KL", 4))


def sae_table(res, out_dir):
    """Every SAE (each seed) with its held-out metrics from sae.py's metrics.json (else the tracked seed's
    from results.json), and live / dead / density on the analysis' token set for the tracked seed."""
    cfg = res["provenance"]["config"]
    role = {str(cfg.get("sae_seed", 0)): "tracked", str(cfg.get("null_seed", 1)): "null",
            str(cfg.get("spread_seed", 2)): "spread"}
    rows = []
    for m, v in res["models"].items():
        seeds = ((read_stage(out_dir, f"sae_{m}", "metrics.json", "sae_metrics") or {}).get("seeds")
                 or {str(cfg.get("sae_seed", 0)): v["sae_metrics"]})
        for s, sm in seeds.items():
            tracked = role.get(str(s)) == "tracked"
            rows.append((m, f"{s} ({role.get(str(s), 'unused')})", v["n_features"],
                         f"{v['live']} ({v['dead']})" if tracked else "-",
                         f"{v['median_density']:.2e}" if tracked else "-",
                         *(_f(sm.get(k), d) for k, _, d in SAE_COLS)))
    return table(["model", "seed", "features", "live (dead) on the token set", "median density (live)",
                  *(label for _, label, _ in SAE_COLS)], rows)


def sae_curves(out_dir, models):
    """FVU, L0 and the dead fraction over SAE training (training batches), and CE loss recovered at each
    evaluation; a colour per model, seed 0 solid, other seeds dashed."""
    figs = {"fvu": [], "l0": [], "dead": [], "ce_recovered": []}
    for k, m in enumerate(models):
        hist = (read_stage(out_dir, f"sae_{m}", "metrics.json", "sae_metrics") or {}).get("history") or []
        train, evals = [r for r in hist if "train" in r], [r for r in hist if "eval" in r]
        seeds = list(dict.fromkeys(s for r in train + evals for s in r.get("train", r.get("eval", {}))))
        for j, seed in enumerate(seeds):
            style = {"colour": COLOURS[k % len(COLOURS)], "dash": j > 0, "name": f"{m} s{seed}"}
            for key in ("fvu", "l0", "dead"):
                figs[key].append({**style, "x": [r["step"] for r in train],
                                  "y": [r["train"].get(seed, {}).get(key) for r in train]})
            figs["ce_recovered"].append({**style, "dots": True, "x": [r["step"] for r in evals],
                                         "y": [r["eval"].get(seed, {}).get("ce_recovered") for r in evals]})
    titles = {"fvu": ("FVU", "FVU (normalised MSE), training batches"), "l0": ("L0", "L0: active features / token"),
              "dead": ("fraction dead", "dead features (fraction)"),
              "ce_recovered": ("CE loss recovered", "CE loss recovered (evaluations)")}
    charts = [line_chart(figs[k], "SAE training step", *titles[k], w=540, h=270) for k in figs if figs[k]]
    if not charts:
        return "<p class='dim'>No training history in the SAEs' metrics.json.</p>"
    return "<div class='charts'>" + "".join(charts) + "</div>"


def section_saes(res, out_dir):
    return ("<h2 id='saes'>SAEs</h2><p>One SAE per model on its MLP activations (sae.py), metrics on held-out tokens. "
            "<b>CE loss recovered</b> = (CE with the MLP output zero-ablated &minus; CE with the SAE's reconstruction "
            "spliced in) / (zero-ablated &minus; clean): 1 = as good as the model. Live / dead and density: on this "
            "analysis' token set.</p>" + sae_table(res, out_dir) + sae_curves(out_dir, list(res["models"])))


def section_edges(res, thr, cfg):
    edges = table(["edge", "parent live (dead)", "child live (dead)", "persisting", "disappearing", "emerging",
                   "child matched", "pairs >= thr", "one-to-one", "mean decoder cos (1:1)", "null persisting (parent)",
                   "null persisting (child)"],
                  [(n, f"{e['counts']['parent_live']} ({e['counts']['parent_dead']})",
                    f"{e['counts']['child_live']} ({e['counts']['child_dead']})",
                    f"{e['counts']['persisting']} ({e['persisting_frac']:.1%})", e["counts"]["disappearing"],
                    f"{e['counts']['emerging']} ({e['emerging_frac']:.1%})", e["counts"]["child_matched"],
                    e["counts"]["pairs"], e["one_to_one"]["n"], _f(e["one_to_one"]["mean_cos"]),
                    _pct(e.get("null_parent_persisting_frac")), _pct(e.get("null_child_persisting_frac")))
                   for n, e in res["edges"].items()])
    nul = table(["model", "live s0", "live s1", "persisting s0->s1", "emerging in s1", "one-to-one", "mean decoder cos"],
                [(m, e["counts"]["parent_live"], e["counts"]["child_live"], f"{e['counts']['persisting']} ({e['persisting_frac']:.1%})",
                  f"{e['counts']['emerging']} ({e['emerging_frac']:.1%})", e["one_to_one"]["n"], _f(e["one_to_one"]["mean_cos"]))
                 for m, e in res["null"].items()])
    if res.get("null_missing"):
        nul += (f"<p>No seed-{cfg['null_seed']} SAE for: {esc(', '.join(res['null_missing']))} (make one with "
                "python sae.py --model NAME --seeds 0,1).</p>")
    return (f"<h2 id='edges'>Edges</h2><p>A live parent feature <b>persists</b> when some live child feature correlates "
            f"with it at r &ge; {thr} over the same tokens, else it <b>disappears</b>; a live child feature with no such "
            "parent <b>emerges</b>; dead features (never active on the token set) are counted apart. <b>Null</b>: the "
            "same between two SAEs of the parent model that differ only in seed; an edge's persisting fraction means "
            "something only against it (see the stability curves below).</p>" + edges
            + f"<h3>Null baseline (seed {cfg['sae_seed']} vs seed {cfg['null_seed']} SAE of one model)</h3>" + nul)


def stability_charts(name, e, res):
    """Two charts of one edge against its parent's null over the threshold: the fraction of live parent
    features with a partner at r >= t (plain and weighted by firing frequency), and the fraction in the
    one-to-one (Hungarian) matching on r and on decoder cosine."""
    st, vs = e["stability"], e["stability"].get("vs_null")
    t, null = st["thresholds"], res["null"][vs["null"]]["stability"] if vs else None
    many = [{"name": "edge", "x": t, "y": st["parent"], "colour": BLUE},
            {"name": "edge, weighted by firing", "x": t, "y": st["parent_weighted"], "colour": ORANGE}]
    one = [{"name": "edge: on r", "x": t, "y": st["one_to_one_r"], "colour": BLUE},
           {"name": "edge: on decoder cos", "x": t, "y": st["one_to_one_cos"], "colour": GREEN}]
    bands = []
    if null:
        many += [{"name": f"null ({vs['null']} s0 vs s1)", "x": t, "y": null["parent"], "colour": BLUE, "dash": True},
                 {"name": "null, weighted", "x": t, "y": null["parent_weighted"], "colour": ORANGE, "dash": True}]
        one += [{"name": "null: on r", "x": t, "y": null["one_to_one_r"], "colour": BLUE, "dash": True},
                {"name": "null: on decoder cos", "x": t, "y": null["one_to_one_cos"], "colour": GREEN, "dash": True}]
        if vs.get("spread"):
            bands.append((t, vs["spread"]["min"], vs["spread"]["max"], BLUE, "null: min to max over seed pairs"))
    cut = [(res["threshold"], "study's cut")]
    return (line_chart(many, "threshold t on r", "fraction of live parent features", f"{name}: partner at r >= t",
                       w=540, ylim=(0, 1), vlines=cut, bands=bands),
            line_chart(one, "threshold t (r or decoder cos)", "fraction of live parent features",
                       f"{name}: one-to-one (Hungarian) >= t", w=540, ylim=(0, 1), vlines=[(0.7, "cos rule 0.7")]))


def ratio_cell(st, vs, k):
    """One threshold of one edge: the ratio edge / null in bold, under it the two fractions (and the null's
    seed-to-seed range when there is one). HTML."""
    if not vs:
        return f"no null<br><small>{st['parent'][k]:.1%}</small>"
    sp = vs.get("spread")
    spread = f"<br><small>null range {sp['min'][k]:.1%} to {sp['max'][k]:.1%}</small>" if sp else ""
    return (f"<b>{_f(vs['ratio'][k], 2)}</b><br><small>{st['parent'][k]:.1%} / {vs['null_parent'][k]:.1%}</small>"
            + spread)


def ratio_table(res):
    """Each edge's persisting fraction against its null's at r >= 0.5, 0.6, ..., 0.9."""
    first = next(iter(res["edges"].values()), None)
    if first is None:
        return ""
    keep = [k for k, t in enumerate(first["stability"]["thresholds"]) if abs(t * 10 - round(t * 10)) <= 1e-9]
    head = "".join(f"<th>r &ge; {first['stability']['thresholds'][k]:g}</th>" for k in keep)
    rows = "".join(f"<tr><td>{esc(n)}</td>" + "".join(f"<td>{ratio_cell(e['stability'], e['stability'].get('vs_null'), k)}</td>"
                                                      for k in keep) + "</tr>" for n, e in res["edges"].items())
    return ("<p>Each edge against its null: <b>edge / null</b>, the fraction of live parent features with a partner "
            "(edge) over the same fraction between two seeds of the parent's SAE (null); 1 = the edge keeps its "
            f"features as well as a retrained SAE does.</p><table class='ratio'><tr><th>edge</th>{head}</tr>{rows}</table>")


def one_to_one_table(res):
    rows = []
    for kind, group in (("edge", res["edges"]), ("null", res["null"])):
        for n, e in group.items():
            st, o, live = e["stability"], e["one_to_one"], max(e["counts"]["parent_live"], 1)
            greedy = sum(o.get(k, {}).get("greedy_components", 0) or 0 for k in ("hungarian_r", "hungarian_cos"))
            rows.append((n if kind == "edge" else f"null {n} s0->s1", e["counts"]["parent_live"],
                         f"{o['n']} ({o['n'] / live:.1%})",
                         f"{o['hungarian_r']['n']} ({o['hungarian_r']['n'] / live:.1%})",
                         f"{st['cos_rule']['matched']} ({st['cos_rule']['rate']:.1%})", _f(o["mean_cos"]), greedy))
    return table(["pair", "parent live", f"greedy on r >= {res['threshold']}", f"Hungarian on r >= {res['threshold']}",
                  "Hungarian on decoder cos >= 0.7", "mean decoder cos (greedy)", "components matched greedily"], rows)


def section_stability(res):
    if not all("stability" in e for e in list(res["edges"].values()) + list(res["null"].values())):
        return ("<h2 id='stability'>Stability</h2><p class='dim'>This results.json has no stability curves (written by "
                "an older analyze.py): re-run python analyze.py.</p>")
    charts = ["<div class='charts'>" + "".join(stability_charts(n, e, res)) + "</div>" for n, e in res["edges"].items()]
    spread = res.get("null_spread") or {}
    note = (f"<p>Shaded: the seed-to-seed spread of the null (min to max over the {next(iter(spread.values()))['seed_pairs']} "
            "pairs of three SAE seeds).</p>" if spread else
            "<p class='dim'>With a third SAE seed per model (python sae.py --seeds 0,1,2) the null gets a seed-to-seed "
            "spread (shaded).</p>")
    return ("<h2 id='stability'>Stability: each edge against its null</h2><p>Left: the fraction of the parent's live "
            "features that have a partner at r &ge; t in the child (solid) and between two seeds of the parent's SAE "
            "(dashed), for every cut t from 0.5 to 0.95; orange: the same weighted by how often each feature fires. "
            "Right: the fraction matched one-to-one (each feature used at most once; maximum-weight Hungarian matching) "
            "on activation correlation and on decoder cosine. An edge whose curve runs on its null's changes its "
            f"features no more than retraining the SAE does.</p>{''.join(charts)}{note}"
            + ratio_table(res) + "<h3 id='one-to-one'>One-to-one matching</h3><p>Each feature used at most once. Greedy: "
            f"highest r first, pairs &ge; {res['threshold']}. Hungarian: the maximum-weight matching on r (pairs &ge; "
            f"{res['threshold']} counted), and on decoder cosine with cos &ge; 0.7 counted, the rule of Paulo &amp; "
            "Belrose (2025), who find about 30% of latents shared across seeds for large SAEs. Percentages of the "
            "parent's live features. A connected component too large for the Hungarian algorithm is matched greedily "
            "(counted in the last column).</p>" + one_to_one_table(res))


def band_label(band, lo, hi):
    band = esc(band)
    return f"{band} (&lt; {hi:.1%})" if lo <= 0 else f"{band} (&ge; {lo:.0%})" if hi > 1 else f"{band} ({lo:.1%} to {hi:.1%})"


def section_bands(res):
    if not all("density_bands" in e for e in res["edges"].values()):
        return ""
    rows = []
    for n, e in res["edges"].items():
        null = res["null"].get(e["parent"]) if (e.get("stability") or {}).get("vs_null") else None
        for band, b in e["density_bands"].items():
            nb = null["density_bands"][band] if null else None
            rows.append((n, band_label(band, *b["density"]), b["parent_live"], b["persisting"], _pct(b["persisting_frac"]),
                         _pct(nb["persisting_frac"]) if nb else "n/a", b["child_live"], b["emerging"],
                         _pct(b["emerging_frac"])))
    header = ["edge", "density band", "parent live", "persisting", "persisting %", "null persisting %", "child live",
              "emerging", "emerging %"]
    html_rows = "".join("<tr>" + "".join(f"<td>{x if k == 1 else esc(str(x))}</td>" for k, x in enumerate(r)) + "</tr>"
                        for r in rows)
    return ("<h3 id='bands'>By firing frequency</h3><p>The classification split by density band (the fraction of tokens "
            "a feature fires on; parents by theirs, children by theirs). Seed-unstable features are mostly rare ones, "
            "so read each band against the null's same band.</p><table><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + html_rows + "</table>")


def section_families(res, thr):
    fam = res.get("families")
    if not fam:
        return "<h2 id='families'>Feature families</h2><p class='dim'>Needs all four models.</p>"
    c = fam["counts"]
    return (f"<h2 id='families'>Feature families</h2><p>Live base features ({c['base_live']}) by the fine-tunes they persist into "
            f"(r &ge; {thr}), then whether a chain of matches carries them into luastories; features new in a fine-tune "
            "and new in luastories flow in too. Counted as features of their model of origin. Note the two different "
            "\"neither\"s: a base feature that persists into neither fine-tune (the flow's middle column) cannot reach "
            "luastories, but one that persists into a fine-tune may still be lost on the way (the table counts "
            "reaching luastories by no path).</p>" + sankey_svg(*family_flow(c)) +
            table(["base features reaching luastories"] + list(PATHS.values()),
                  [("count", *(c["paths"][k] for k in PATHS))]))


def section_hists(res, thr):
    pairs = [(n, e) for n, e in res["edges"].items()] + [(f"null {m} s0->s1", e) for m, e in res["null"].items()]
    hists = "".join(hist_svg(e["hist"]["parent"], e["hist"]["child"], thr, n) for n, e in pairs if e.get("hist"))
    return ("<h2 id='hists'>Best correlation per feature</h2><p class='dim'>Blue bars: each live parent feature's best r with a "
            "child feature; orange line: each live child feature's best r with a parent feature; red: the threshold.</p>"
            f"<div class='charts'>{hists}</div>")


# -----------------------------------------------------------------------------
# the page: sections rendered above, feature pages built in the browser from the embedded data

STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:20px auto;max-width:1150px;padding:0 12px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}td{white-space:nowrap}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left;white-space:nowrap}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px}.dim{color:#777}
svg text{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px}.t{font-weight:bold}
.charts svg{margin:4px 10px 4px 0;vertical-align:top}
.ctx{font-family:monospace;white-space:pre-wrap;word-break:break-all;border-bottom:1px solid #eee;padding:2px 0}
.mx{display:inline-block;width:5.5em;color:#777;white-space:nowrap}td.l,th.l{text-align:left}.ratio td{text-align:center;line-height:1.2}.ratio td:first-child{text-align:left}.at{outline:1.5px solid #333}.persists,.matched{color:#2a9d5c}.disappears{color:#b33}
.emerges{color:#e8892b}.dead{color:#777}#page{border:1px solid #ccc;padding:6px 12px;margin-top:8px}
.cols{display:flex;gap:24px;flex-wrap:wrap}.lg td{font-family:monospace}.why{color:#555;font-size:12px;text-align:left!important;white-space:normal}
.toc a{margin:0 2px}.partner{border-left:3px solid #ccc;padding-left:10px;margin:10px 0}details pre{font-size:11px;max-height:300px;overflow:auto}"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  for (const c of kids) if (c != null) e.append(c);
  return e;
}
function fl(x, d) { return x == null ? '-' : (+x).toFixed(d == null ? 3 : d); }
function num(x) {  // an activation or logit value: 3 significant digits when small
  if (x == null) return '-';
  const a = Math.abs(x);
  return a === 0 ? '0' : a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : x.toPrecision(3);
}
function link(m, i) { return h('a', {href: '#' + m + '/' + i}, m + '/' + i); }
function tok(id) {
  return String(D.tok[id] ?? ('<' + id + '>')).replace(/\n/g, '\u21b5').replace(/\t/g, '\u2192');
}
function argmax(a) { return a.reduce((best, v, k) => v > a[best] ? k : best, 0); }
function context(c, mx, at) {  // one token window, tokens shaded by activation; token `at` outlined, its value shown
  const d = h('div', {class: 'ctx'}, h('span', {class: 'mx'}, num(c[1][at])));
  c[0].forEach((id, t) => {
    const s = h('span', {title: 'activation ' + num(c[1][t])}, tok(id));
    if (c[1][t] > 0) s.style.background = 'rgba(255,140,0,' + Math.min(1, c[1][t] / mx).toFixed(2) + ')';
    if (t === at) s.className = 'at';
    d.append(s);
  });
  return d;
}
function drawn(c, q) {  // the sampled token of an interval context: stored by analyze.py, else the largest in (lo, hi]
  if (Number.isInteger(c[2])) return c[2];
  const inside = c[1].map((v, k) => v > q.lo && v <= q.hi ? v : -1);
  return Math.max(...inside) > 0 ? argmax(inside) : argmax(c[1]);
}
function contexts(P, n) {
  const b = h('div', {});
  if (!P.top.length) { b.append(h('p', {class: 'dim'}, 'no activating context in the token set')); return b; }
  const mx = Math.max(1e-9, P.hist ? P.hist.max : 0, ...P.top.map(c => Math.max(...c[1])));
  b.append(h('h5', {}, 'top activations (the outlined token: the value on the left)'));
  for (const c of P.top.slice(0, n)) b.append(context(c, mx, argmax(c[1])));
  if (n < D.n_show || !P.intervals) return b;
  for (const q of P.intervals.slice().reverse()) {
    if (!q.ctx.length) continue;
    b.append(h('h5', {}, 'drawn at random from the activations in (' + num(q.lo) + ', ' + num(q.hi) + ']'));
    for (const c of q.ctx) b.append(context(c, mx, drawn(c, q)));
  }
  return b;
}
function logits(P) {  // the direct effect on the logits, as values
  const t = h('table', {class: 'lg'}, h('tr', {}, h('th', {}, 'promotes'), h('th', {}, 'logit'),
                                                h('th', {}, 'suppresses'), h('th', {}, 'logit')));
  for (let k = 0; k < Math.max(P.pos.length, P.neg.length); k++) {
    const p = P.pos[k] || ['', null], n = P.neg[k] || ['', null];
    t.append(h('tr', {}, h('td', {}, p[0] === '' ? '' : JSON.stringify(tok(p[0]))), h('td', {}, num(p[1])),
                         h('td', {}, n[0] === '' ? '' : JSON.stringify(tok(n[0]))), h('td', {}, num(n[1]))));
  }
  return t;
}
function sv(tag, attrs, ...kids) {  // an SVG element; text children as text nodes, never markup
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  for (const c of kids) if (c != null) e.append(c);
  return e;
}
function histogram(P) {  // the feature's nonzero activations over the token set: equal bins on (0, max]
  const c = P.hist.counts.map(Number), W = 330, H = 124, L = 44, B = 96, mx = Math.max(1, ...c), bw = (W - L - 6) / c.length;
  const s = sv('svg', {width: W, height: H});
  c.forEach((v, k) => {
    if (!v) return;
    const lo = P.hist.max * k / c.length, hi = P.hist.max * (k + 1) / c.length;
    s.append(sv('rect', {x: (L + k * bw).toFixed(1), y: (B - v / mx * (B - 10)).toFixed(1), width: Math.max(bw - 0.5, 0.5).toFixed(1),
                         height: (v / mx * (B - 10)).toFixed(1), fill: '#3a6ea5'}, sv('title', {}, num(lo) + ' to ' + num(hi) + ': ' + v)));
  });
  s.append(sv('line', {x1: L, x2: W - 6, y1: B, y2: B, stroke: '#444'}), sv('text', {x: L, y: B + 13}, '0'),
           sv('text', {x: W - 6, y: B + 13, 'text-anchor': 'end'}, num(P.hist.max)),
           sv('text', {x: L - 4, y: 14, 'text-anchor': 'end'}, String(mx)),
           sv('text', {x: (L + W) / 2, y: H - 2, 'text-anchor': 'middle'}, 'activation (nonzero only)'),
           sv('text', {transform: 'translate(11,' + B / 2 + ') rotate(-90)', 'text-anchor': 'middle'}, 'tokens'));
  return s;
}
function statusTable(m, i) {  // every edge the feature is on: its best partner, r, decoder cosine, status
  const t = h('table', {}, h('tr', {}, ...['edge', 'role', 'best partner', 'r', 'decoder cos', 'status']
                                             .map(x => h('th', {}, x))));
  for (const e of D.edges) {
    let j, r, q, st, role, other;
    if (e.parent === m) { j = e.pb[i]; r = e.pr[i]; q = e.pc && e.pc[i]; st = e.ps[i]; role = 'parent'; other = e.child; }
    else if (e.child === m) { j = e.cb[i]; r = e.cr[i]; q = e.cc && e.cc[i]; st = e.cs[i]; role = 'child'; other = e.parent; }
    else continue;
    const name = D.status_name[st];
    t.append(h('tr', {}, h('td', {}, e.name), h('td', {}, role), h('td', {}, j >= 0 ? link(other, j) : '-'),
                         h('td', {}, fl(r)), h('td', {}, fl(q)), h('td', {class: name}, name)));
  }
  return t;
}
function details(key, head, n) {  // explanation, histogram, logit effects, contexts of one feature
  const P = D.pages[key], b = h('div', {});
  if (head) b.append(head);
  if (!P) { b.append(h('p', {class: 'dim'}, 'Contexts are stored for the example features and their partners.')); return b; }
  if (P.expl) b.append(h('p', {}, h('b', {}, 'explanation: '), String(P.expl.explanation || P.expl.error || ''),
                          ' (score ' + fl(P.expl.score, 2) + ')'));
  b.append(h('div', {class: 'cols'}, h('div', {}, h('h5', {}, 'activation histogram'),
             P.hist ? histogram(P) : h('p', {class: 'dim'}, 'not in this pages.json (an older analyze.py)')),
             h('div', {}, h('h5', {}, 'direct logit effect'), logits(P))));
  b.append(contexts(P, n));
  return b;
}
function render(key) {
  const pg = document.getElementById('page'); pg.replaceChildren();
  const parts = String(key).split('/'), m = parts[0], i = parseInt(parts[1], 10);
  if (!(m in D.density) || !(i >= 0 && i < D.density[m].length)) { pg.append(h('p', {}, 'no feature ' + key)); return false; }
  document.getElementById('qm').value = m; document.getElementById('qi').value = i;
  const dn = D.density[m][i], P = D.pages[m + '/' + i];
  pg.append(h('h3', {}, 'feature ' + m + '/' + i));
  if (D.why[m + '/' + i]) pg.append(h('p', {class: 'why'}, 'example: ' + D.why[m + '/' + i]));
  pg.append(h('p', {}, 'fires on ' + num(100 * dn) + '% of the tokens' + (dn === 0 ? ' (dead on the token set)' : '')
                 + (P && P.hist ? '; max activation ' + num(P.hist.max) : '')));
  pg.append(statusTable(m, i));
  pg.append(h('div', {class: 'main'}, details(m + '/' + i, null, D.n_show)));
  if (!P) return true;
  for (const [tm, tj, tr, via, cos] of P.trail)
    pg.append(h('div', {class: 'partner'}, details(tm + '/' + tj, h('h4', {}, 'partner in ' + tm + ': ', link(tm, tj),
      ' (r = ' + fl(tr) + ' on ' + via + ', decoder cos ' + fl(cos) + ')'), 3)));
  if (P.near) pg.append(h('div', {class: 'partner'}, details(P.near[0] + '/' + P.near[1], h('h4', {},
      'nearest feature in ' + P.near[0] + ' (below the threshold): ', link(P.near[0], P.near[1]),
      ' (r = ' + fl(P.near[2]) + ' on ' + P.near[3] + ', decoder cos ' + fl(P.near[4]) + ')'), 3)));
  return true;
}
const sel = document.getElementById('sel');
const st = h('table', {}, h('tr', {}, ...['edge', 'class', 'feature', 'why this one'].map(x => h('th', {class: 'l'}, x))));
for (const s of D.sel)
  for (const c of ['persisting', 'disappearing', 'emerging'])
    for (const [k, why] of s[c]) st.append(h('tr', {}, h('td', {}, s.edge), h('td', {class: 'l'}, c),
                                                h('td', {class: 'l'}, h('a', {href: '#' + k}, k)), h('td', {class: 'why'}, why)));
sel.append(h('details', {open: ''}, h('summary', {}, 'the examples (' + (st.rows.length - 1) + ') and why each was chosen'), st));
const qm = document.getElementById('qm');
for (const m of D.models) qm.append(h('option', {value: m}, m));
document.getElementById('q').addEventListener('submit', ev => {
  ev.preventDefault(); location.hash = qm.value + '/' + document.getElementById('qi').value; });
function fromHash() {  // #model/i opens that feature; other anchors (#stability, ...) are the browser's
  const key = decodeURIComponent(location.hash.slice(1));
  if (/^[^/]+\/\d+$/.test(key) && render(key)) document.getElementById('page').scrollIntoView();
}
window.addEventListener('hashchange', fromHash);
function selftest() {  // tests/test_report_browser.py: every page renders; every example shows contexts and logit values
  for (const k in D.pages) {
    render(k);
    const pg = document.getElementById('page');
    if (k in D.why && !pg.querySelector('.main .ctx')) throw new Error('example ' + k + ' shows no context');
    if (!pg.querySelector('.main table.lg')) throw new Error('feature ' + k + ' shows no logit values');
  }
  for (const m of D.models) render(m + '/0');
  render(D.first);
}
if (location.hash === '#selftest') selftest();
else { render(D.first); fromHash(); }
document.documentElement.setAttribute('data-js', document.documentElement.getAttribute('data-js') || 'ok');
"""


CATEGORIES = ("persisting", "disappearing", "emerging")


def examples(res):
    """Each edge's examples as [{"edge", category: [["model/i", why it was chosen]]}]; a results.json of an
    older analyze.py has no reasons (empty)."""
    out = []
    for n, sel in res["selection"].items():
        reasons = (res.get("selection_reasons") or {}).get(n, {})
        row = {"edge": n}
        for c in CATEGORIES:
            picks = sel.get(c, [])
            why = list(reasons.get(c) or [p[2] if len(p) > 2 else "" for p in picks]) + [""] * len(picks)
            row[c] = [[f"{p[0]}/{p[1]}", w] for p, w in zip(picks, why)]
        out.append(row)
    return out


def page_data(res, pages):
    """The data the page's script uses: per edge each feature's best partner, r, decoder cosine and status
    (from results.json; pages.json's copy of the status for an older results.json), densities, the feature
    pages (pages.json) and the examples with their reasons."""
    edges = []
    for n, e in res["edges"].items():
        status = e.get("status") or pages["status"][n]
        edges.append({"name": n, "parent": e["parent"], "child": e["child"], "pb": e["parent_best"]["feature"],
                      "pr": e["parent_best"]["r"], "pc": e["parent_best"].get("cos"), "cb": e["child_best"]["feature"],
                      "cr": e["child_best"]["r"], "cc": e["child_best"].get("cos"), "ps": status["parent"],
                      "cs": status["child"]})
    data = {"models": list(res["models"]), "n_show": res["provenance"]["config"]["n_show"], "edges": edges,
            "density": res["density"], "pages": pages["pages"], "tok": pages["tok"],
            "status_name": res.get("status_legend") or pages["status_legend"], "sel": examples(res)}
    data["why"] = {k: f"{c} on {s['edge']}" + (f"; {why}" if why else "") for s in data["sel"] for c in CATEGORIES
                   for k, why in s[c]}
    data["first"] = next((k for s in data["sel"] for c in CATEGORIES for k, _ in s[c]), f"{data['models'][0]}/0")
    return data


SECTIONS = (("training", "training"), ("sweep", "merge sweep"), ("saes", "SAEs"), ("edges", "edges"),
            ("stability", "stability"), ("one-to-one", "one-to-one"), ("bands", "density bands"),
            ("families", "families"), ("hists", "best r"), ("features", "feature pages"))


def render_report(res, pages, out_dir):
    """The page from analyze.py's results (results.json), its page data (pages.json) and the stages' records in out_dir."""
    cfg, thr, ts = res["provenance"]["config"], res["threshold"], res["token_set"]
    sweep = read_stage(out_dir, ".", "merge_sweep.json", "sweep")
    summary = esc(f"{ts['n_tokens']:,} evaluation tokens ({ts['n_seq']:,} windows of {ts['block_size']} from the val splits: "
                  + ", ".join(f"{d} {n}" for d, n in ts["per_domain"].items()) + f"; seed {ts['seed']}), threshold r ")
    summary += f"&ge; {esc(str(thr))}. Created {esc(str(res['provenance']['created']))}."
    banner = ('<p class="banner"><b>Smoke-scale demo.</b> The data source is the generated sample corpus (data.py '
              '--source sample): tiny models on synthetic text; the numbers show that the pipeline runs, not the '
              'study\'s findings.</p>') if ts["smoke_scale_demo"] else ""
    sw = ("<h2 id='sweep'>Merge sweep</h2><p>Validation loss of SLERP(a, b, t) on each domain (merge.py --sweep).</p>"
          + sweep_chart(sweep, [(m, read_stage(out_dir, m, "merge.json", "merge") or {}) for m in res["models"]])
          if sweep else "")
    body = [f"<h1>Tracking SAE features through fine-tuning and merging</h1>{banner}<p>{summary}</p>",
            "<p class='toc'>" + " | ".join(f"<a href='#{k}'>{v}</a>" for k, v in SECTIONS) + "</p>",
            section_training(out_dir, list(res["models"])), sw, section_saes(res, out_dir), section_edges(res, thr, cfg),
            section_stability(res), section_bands(res), section_families(res, thr), section_hists(res, thr),
            "<h2 id='features'>Feature pages</h2><p>The examples of each edge, chosen across the density range of their "
            "class and by their distance from the threshold (the reason is given), then any feature by its number; "
            "links such as #lua/12 open that feature.</p><div id='sel'></div>"
            "<form id='q'>Feature: <select id='qm'></select> <input id='qi' type='number' min='0' value='0' "
            "style='width:7em'> <button>show</button></form><div id='page'></div>",
            "<details><summary>Provenance</summary><pre>"
            + esc(json.dumps(res["provenance"], indent=1, default=common._json_default)) + "</pre></details>"]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Feature tracking report</title>'
            "<script>window.onerror=function(m,s,l){document.documentElement.setAttribute('data-js','error: '+m+' (line '+l+')');};</script>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body)
            + f'<script type="application/json" id="data">{json_for_script(page_data(res, pages))}</script>'
            + f"<script>{SCRIPT}</script></body></html>\n")


# -----------------------------------------------------------------------------

def write_report(out_dir):
    """Read results.json + pages.json (and the stages' metrics) and write report.html. Returns its path."""
    adir = os.path.join(out_dir, "analysis")
    paths = {k: os.path.join(adir, f"{k}.json") for k in ("results", "pages")}
    how = f"python analyze.py --out_dir {out_dir}"
    for path in paths.values():
        if not os.path.exists(path):
            die(f"no {path}; run the analysis first: {how}")
    res, pages = common.read_record(paths["results"], "results", how), common.read_record(paths["pages"], "pages", how)
    # their kinds and top-level fields are checked; a record whose inner parts are not what its writer makes
    # (hand-edited, or made by another version) is one line too, not a traceback from deep in the page
    try:
        if any("status" not in e and n not in pages.get("status", {}) for n, e in res["edges"].items()):
            die(f"{paths['results']} has no feature statuses (an older analyze.py); re-run: {how}")
        page = render_report(res, pages, out_dir)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        die(f"{adir}: results.json, pages.json or a stage's record they use is not shaped as its writer makes it "
            f"({type(e).__name__}: {e}); re-run: {how}")
    out = os.path.join(adir, "report.html")
    common.atomic_write_text(out, page)
    return out


def main(argv=None):
    cfg = common.parse_config(dict(config), argv)
    adir = os.path.join(cfg["out_dir"], "analysis")
    if not os.path.isdir(adir):  # write_report names the command that makes it
        return write_report(cfg["out_dir"])
    with common.lock_dir(adir, "report.py"):  # analyze.py writes this folder too: one writer at a time
        # report.html holds the pages and results (escaped, in HTML): twice their size is ample
        size = sum(os.path.getsize(p) for p in (os.path.join(adir, f"{k}.json") for k in ("results", "pages"))
                   if os.path.isfile(p))
        common.check_free_space(adir, 2 * size + (1 << 20), "report.html")
        print(f"-> {write_report(cfg['out_dir'])}")


if __name__ == "__main__":
    common.cli(main)
