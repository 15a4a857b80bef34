"""
The study's report: out/analysis/results.json and pages.json (both written by analyze.py), with what
the earlier stages keep (out/<model>/metrics.json loss history, out/sae_<model>/metrics.json training
logs and evaluations, out/<merge>/merge.json, out/merge_sweep.json) -> out/analysis/report.html, one
HTML file that opens offline (no network), beside its side files out/analysis/features/ (written by
analyze.py through write_side_files here).

The first screen: what was run (data, preset, models, token set), each edge against its seed-null (the
ratio table) with its reading in one line, and links to the rest: every feature (browse, search), the
example features, the models' loss curves (a fine-tune's starts at its parent's loss), the merge sweep,
the SAEs (a table, training curves with L0 on a log axis, CE loss recovered, each SAE's log-density
histogram), the edge and null tables, the stability curves, the density bands, the families. Every chart
says what one of its points is.

Model diffing (only when results.json has "diffing", analyze.py's join of diffing.py's record; a stale one
is one line naming what to re-run): a row per edge with the correlation's persisting / disappearing /
emerging fractions, its null and their ratio beside the crosscoder's shared / parent-only / child-only /
mixed fractions (each seed), its spurious exclusive latents and its seed null, and the agreement of the
two readings; per edge the histogram of the latents' relative decoder norm (both seeds, the cut-offs
dashed), the class of each SAE feature's best latent by its status (stacked bars), the cross-application
(each model's SAE on both models: FVU, L0, CE recovered, features that stop or start firing), and the
features where the two readings disagree, with their top contexts, each linking to its page.

Every live feature of every SAE has a page, in the manner of sae_vis / Neuronpedia: firing rate, activation
histogram, top contexts, contexts drawn from each activation interval, logit effects, the best partner on
every edge with r, decoder cosine and status, and the tracking view: on each edge, the partner's
activations (through its own model and SAE) on this feature's top contexts, row under row, so a reader sees
whether "persisting" means the same behaviour. The example features have more contexts (pages.json,
embedded); every other feature's come from its model's side file, features/<model>.js, a script setting
window.FEATURES[model] (a page opened from disk cannot fetch() a file, it can load a script), loaded on
demand with features/tokens.js (the token set, once: contexts are positions in it, activations one
base-36 digit a token), so the side files grow with features x a few contexts, not with the vocabulary or
the context width: the page states their size; measured and at the paper's sizes in BENCHMARKS.md. One
model's file loads for a feature page, all of them for a token search. A search by feature (lua/12) or by
token (self: the features whose top contexts peak on it), and a list of each model's features sortable by
density and filtered by status.

    python report.py                        # re-renders out/analysis/report.html; recomputes nothing
    python report.py --out_dir out_local

Links: report.html#lua/1240 opens feature 1240 of lua in place of the report, at the top (so a plain
screenshot of the link shows it); report.html#search=self runs a search; other anchors are sections.

Nothing here decides anything about features: every count, curve and status (persists, disappears,
emerges, dead) is read from what analyze.py wrote; a part an older results.json lacks is left out with
a note. Tables and figures are built here as HTML and inline SVG; the feature pages, list and search are
built in the browser from the JSON embedded in the page and the side files. Checked in headless Chromium
by tests/test_report_browser.py (the first screen, a deep link at 1280 x 800, a search, the tracking view).
"""
import html
import json
import math
import os
import shlex
import textwrap

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
    """Legend entries (a sample of the line, a dot, or a square for bars; the name) left to right, wrapping at width.
    Returns (svg, number of rows)."""
    out, cx, row = [], x, 0
    for s in series:
        wd = 24 + 6.3 * len(s["name"])
        if cx + wd > x + width and cx > x:
            cx, row = x, row + 1
        yy = y + 14 * row
        mark = (f'<rect x="{cx + 4:.0f}" y="{yy - 9}" width="10" height="10" fill="{s["colour"]}"/>' if s.get("bars")
                else
                f'<circle cx="{cx + 9:.0f}" cy="{yy - 4}" r="3" fill="{s["colour"]}"/>' if s.get("noline") else
                f'<line x1="{cx:.0f}" x2="{cx + 18:.0f}" y1="{yy - 4}" y2="{yy - 4}" stroke="{s["colour"]}" '
                f'stroke-width="2"{_dash(s)}/>')
        out.append(f'{mark}<text x="{cx + 22:.0f}" y="{yy}">{esc(s["name"])}</text>')
        cx += wd + 8
    return "".join(out), row + 1


def _dash(s):
    return ' stroke-dasharray="5,3"' if s.get("dash") else ""


def _axes(xt, yt, X, Y, box, xlabel, ylabel, ylab=tick_label):
    """Tick marks and labels, light grid lines, the axis lines and the axis titles (ylab: a y tick's label)."""
    x0, x1, y0, y1 = box
    out = []
    for v in xt:
        out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#444"/>'
                   f'<text x="{X(v):.1f}" y="{y0 + 15}" text-anchor="middle">{tick_label(v)}</text>')
    for v in yt:
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{ylab(v)}</text>')
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


def _points(s):
    """A series' (x, y) points; a bar series' (x: its bin edges, y: a count per bin) both ends of each bin, and 0."""
    if not s.get("bars"):
        return list(zip(s["x"], s["y"]))
    return [(x, v) for k, v in enumerate(s["y"]) for x in s["x"][k:k + 2]] + [(s["x"][0], 0)]


def _bars(s, X, Y, base, slot, n_slots):
    """A bar series: a bar per bin [x_k, x_k+1) of height y_k (none when 0), titled with its bin and value; the
    chart's n_slots bar series side by side in each bin, this one in place slot."""
    out = []
    for k, v in enumerate(s["y"]):
        if not (_num(v) and v > 0 and k + 1 < len(s["x"])):
            continue
        a, b = s["x"][k], s["x"][k + 1]
        wd = (X(b) - X(a)) / n_slots
        out.append(f'<rect x="{X(a) + slot * wd:.1f}" y="{Y(v):.1f}" width="{max(wd - 0.5, 0.5):.1f}" '
                   f'height="{base - Y(v):.1f}" fill="{s["colour"]}"><title>{esc(s["name"])}: {a:g} to {b:g}: '
                   f'{v:,}</title></rect>')
    return out


def line_chart(series, xlabel, ylabel, title, w=360, h=250, ylim=None, vlines=(), bands=(), logy=False, point=""):
    """An SVG line chart with tick labels, axis titles and a legend. series: [{"name", "x", "y", "colour",
    "dash", "dots", "noline" (dots only), "bars"}]; a None in y breaks the line. A series with "bars" is a
    histogram: x its bin edges, y a value per bin, drawn as bars from 0 (several such series side by side
    in each bin; not with logy). ylim: fixed (lo, hi), else from the data. vlines: [(x, label)] dashed red,
    their labels stacked at the top after every line, so no line crosses one; bands: [(x, lo, hi, colour,
    name)] shaded ranges. logy: a log10 y axis (values <= 0 left out). point: what one point of the chart
    is, written under it."""
    if logy:
        lg = lambda v: math.log10(v) if _num(v) and v > 0 else None
        series = [{**s, "y": [lg(v) for v in s["y"]]} for s in series]
        bands = [(x, [lg(v) for v in lo], [lg(v) for v in hi], c, n) for x, lo, hi, c, n in bands]
    pts = [(x, y) for s in series for x, y in _points(s) if _num(x) and _num(y)]
    if not pts:
        return f'<p class="dim">{esc(title)}: nothing recorded.</p>'
    one = "bar" if any(s.get("bars") for s in series) else "point"
    caption = textwrap.wrap(f"one {one}: {point}", int((w - 20) / 6.0)) if point else []   # ~6 px a character
    h += 14 * len(caption)
    xlo, xhi = _span([p[0] for p in pts], widen=False)
    ylo, yhi = _span([p[1] for p in pts] + [v for b in bands for v in b[1] + b[2] if _num(v)], ylim, widen=not logy)
    leg, rows = legend_svg(series, 60, 30, w - 66)
    box = x0, x1, y0, y1 = 60, w - 12, h - 40 - 14 * len(caption), 26 + 14 * rows
    X = lambda v: x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)
    Y = lambda v: y0 - (v - ylo) / (yhi - ylo) * (y0 - y1)
    xt = [v for v in nice_ticks(xlo, xhi) if xlo <= v <= xhi]
    yt = log_ticks(ylo, yhi) if logy else [v for v in nice_ticks(ylo, yhi) if ylo - 1e-12 <= v <= yhi + 1e-12]
    out = [f'<text x="{w / 2:.0f}" y="14" class="t" text-anchor="middle">{esc(title)}</text>', leg]
    out += _axes(xt, yt, X, Y, box, xlabel, ylabel + (" (log scale)" if logy else ""),
                 (lambda v: tick_label(10 ** v)) if logy else tick_label)
    out += [f'<text x="10" y="{h - 4 - 14 * (len(caption) - 1 - k)}" class="pt">{esc(line)}</text>'
            for k, line in enumerate(caption)]
    for bx, lo, hi, colour, name in bands:
        ok = [(x, a, b) for x, a, b in zip(bx, lo, hi) if _num(x) and _num(a) and _num(b)]
        poly = [f"{X(x):.1f},{Y(a):.1f}" for x, a, _ in ok] + [f"{X(x):.1f},{Y(b):.1f}" for x, _, b in reversed(ok)]
        out.append(f'<polygon points="{" ".join(poly)}" fill="{colour}" opacity="0.18"><title>{esc(name)}</title></polygon>')
    n_bars, slot = sum(1 for s in series if s.get("bars")), 0
    for s in series:
        if s.get("bars"):
            out += _bars(s, X, Y, Y(max(ylo, 0)), slot, n_bars)
            slot += 1
        else:
            out += _lines(s, X, Y)
    marks = [(vx, label) for vx, label, *_ in vlines if _num(vx) and xlo <= vx <= xhi]
    out += [f'<line x1="{X(vx):.1f}" x2="{X(vx):.1f}" y1="{y1}" y2="{y0}" stroke="{RED}" stroke-dasharray="3,2"/>'
            for vx, _ in marks]
    for k, (vx, label) in enumerate(marks):  # one row each, on a white box: no line runs through a label
        right, wd = X(vx) > (x0 + x1) / 2, 6.2 * len(label) + 4
        lx = X(vx) - 2 - wd if right else X(vx) + 2
        out.append(f'<rect x="{lx:.1f}" y="{y1 + 1 + 13 * k}" width="{wd:.0f}" height="13" fill="#fff" opacity="0.9"/>'
                   f'<text x="{lx + 2:.1f}" y="{y1 + 11 + 13 * k}" fill="{RED}">{esc(label)}</text>')
    return f'<svg class="chart" width="{w}" height="{h}" role="img">' + "".join(out) + "</svg>"


def log_ticks(lo, hi):
    """Ticks of a log10 axis over [lo, hi] (in log10): each decade, and 2 and 5 times it when few decades show."""
    steps = [0.0] if hi - lo > 2.5 else [0.0, math.log10(2), math.log10(5)]
    return [k + s for k in range(math.floor(lo), math.ceil(hi) + 1) for s in steps if lo - 1e-9 <= k + s <= hi + 1e-9]


def bar_chart(items, title, xlabel, w=540, point="", lim=None, legend=()):
    """Horizontal bars, one per (label, value, colour): a quantity measured once per item, not a curve. A value
    may instead be a list of segments (value, colour, name), stacked left to right (colour then unused);
    legend: [{"name", "colour"}], drawn under the title. The labels' column is as wide as the longest."""
    total = lambda v: sum(a for a, _, _ in v) if isinstance(v, list) else v
    vals = [total(v) for _, v, _ in items if _num(total(v))]
    if not vals:
        return f'<p class="dim">{esc(title)}: nothing recorded.</p>'
    lo, hi = lim or (min(0.0, min(vals)), max(vals))
    hi = hi if hi > lo else lo + 1
    x0, x1, row = max(110, round(10 + 6.2 * max(len(label) for label, _, _ in items))), w - 50, 16
    leg, rows = legend_svg([{**s, "bars": True} for s in legend], x0, 30, w - x0 - 10) if legend else ("", 0)
    top = 24 + 14 * rows
    caption = textwrap.wrap(f"one bar: {point}", int((w - x0) / 6.0)) if point else []
    h = top + row * len(items) + 34 + 14 * len(caption) + (2 if caption else 0)
    X = lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)
    out = [f'<text x="{w / 2:.0f}" y="14" class="t" text-anchor="middle">{esc(title)}</text>', leg]
    for k, (label, v, colour) in enumerate(items):
        y = top + row * k
        out.append(f'<text x="{x0 - 5}" y="{y + 11}" text-anchor="end">{esc(label)}</text>')
        if isinstance(v, list):  # stacked segments
            at = 0.0
            for a, c, name in v:
                if _num(a) and a > 0:
                    out.append(f'<rect x="{X(at):.1f}" y="{y + 2}" width="{X(at + a) - X(at):.1f}" height="{row - 4}" '
                               f'fill="{c}"><title>{esc(label)}, {esc(name)}: {a:.4g}</title></rect>')
                    at += a
        elif _num(v):
            out.append(f'<rect x="{min(X(0), X(v)):.1f}" y="{y + 2}" width="{abs(X(v) - X(0)):.1f}" height="{row - 4}" '
                       f'fill="{colour}"><title>{esc(label)}: {v:.4g}</title></rect>'
                       f'<text x="{max(X(0), X(v)) + 3:.1f}" y="{y + 11}">{v:.3f}</text>')
    yb = top + row * len(items) + 2
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{yb}" y2="{yb}" stroke="#444"/>')
    out += [f'<text x="{X(v):.1f}" y="{yb + 13}" text-anchor="middle">{tick_label(v)}</text>'
            for v in nice_ticks(lo, hi)]
    out.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{yb + 28}" text-anchor="middle" class="ax">{esc(xlabel)}</text>')
    out += [f'<text x="{x0}" y="{h - 4 - 14 * (len(caption) - 1 - k)}" class="pt">{esc(line)}</text>'
            for k, line in enumerate(caption)]
    return f'<svg class="chart" width="{w}" height="{h}" role="img">' + "".join(out) + "</svg>"


def density_hist_svg(dens, n_tokens, title, w=270, h=190):
    """One SAE's live features by log10 of their firing frequency (bins of a quarter decade); the dead ones
    (never firing on the token set) counted in the title."""
    live = [d for d in dens if _num(d) and d > 0]
    if not live:
        return f'<p class="dim">{esc(title)}: no live feature.</p>'
    lo = math.floor(min(math.log10(1 / max(n_tokens, 1)), min(map(math.log10, live))))
    nb = max(1, int((0 - lo) * 4))
    counts = [0] * nb
    for d in live:
        counts[min(nb - 1, int((math.log10(d) - lo) * 4))] += 1
    x0, x1, y0, y1, top = 40, w - 16, h - 48, 22, max(counts)
    X = lambda v: x0 + (v - lo) / (0 - lo) * (x1 - x0)
    out = [f'<text x="{x0}" y="13" class="t">{esc(title)} ({len(dens) - len(live):,} dead)</text>']
    bw = max(X(lo + 0.25) - X(lo) - 0.5, 0.5)
    out += [f'<rect x="{X(lo + k / 4):.1f}" y="{y0 - c / top * (y0 - y1):.1f}" width="{bw:.1f}" '
            f'height="{c / top * (y0 - y1):.1f}" fill="{BLUE}"><title>1e{lo + k / 4:g} to 1e{lo + (k + 1) / 4:g}: '
            f'{c}</title></rect>' for k, c in enumerate(counts) if c]
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>')
    out += [f'<text x="{X(k):.1f}" y="{y0 + 13}" text-anchor="middle">1e{k}</text>' for k in range(lo, 1)]
    out.append(f'<text x="{x0 - 4}" y="{y1 + 8}" text-anchor="end">{top}</text>'
               f'<text x="{(x0 + x1) / 2:.0f}" y="{y0 + 27}" text-anchor="middle" class="ax">firing frequency '
               '(log scale)</text>'
               f'<text x="{x0}" y="{h - 4}" class="pt">one bar: features per quarter decade</text>')
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


SIDE = "features"   # the feature browser's side files, beside report.html: features/<model>.js, features/tokens.js
TOKENS = "#tokens"  # the key of features/tokens.js (no model is named so)


def side_js(key, obj):
    """A side file: a script filing its record under window.FEATURES[key]. A page opened from disk (file://)
    cannot fetch() a file beside it, but it can load a script; so the page loads these on demand."""
    return f"window.FEATURES=window.FEATURES||{{}};window.FEATURES[{json.dumps(key)}]={json_for_script(obj)};\n"


def write_side_files(adir, shards, tokens, run):
    """analyze.py's records for the feature browser ({model: record}, the token record) -> features/*.js, each
    marked with the analysis run (results.json's "run") it belongs to. Returns their total size in bytes."""
    size = 0
    files = [(m, m, r, "features") for m, r in shards.items()] + [(TOKENS, "tokens", tokens, "tokens")]
    for key, name, rec, kind in files:
        text = side_js(key, common.stamp({**rec, "run": run}, kind))
        common.atomic_write_text(os.path.join(adir, SIDE, f"{name}.js"), text)
        size += len(text.encode("utf-8"))
    return size


def side_files(adir, models):
    """{key: {"file": path relative to report.html, "bytes"}} of the side files on disk now."""
    out = {}
    for key, name in [(m, m) for m in models] + [(TOKENS, "tokens")]:
        path = os.path.join(adir, SIDE, f"{name}.js")
        if os.path.isfile(path):
            out[key] = {"file": f"{SIDE}/{name}.js", "bytes": os.path.getsize(path)}
    return out


def table(header, rows, cls="", groups=()):
    """An HTML table of escaped text; groups: [(label, n columns)], a header row above header naming its groups."""
    th = "".join(f"<th>{esc(str(x))}</th>" for x in header)
    if groups:
        th = "".join(f'<th colspan="{n}">{esc(str(x))}</th>' for x, n in groups) + "</tr><tr>" + th
    return f'<table class="{cls}"><tr>' + th + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for r in rows) + "</table>"


def _f(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"


def _pct(x, d=1):
    return "n/a" if x is None else f"{x:.{d}%}"


def study_settings(res, out_dir):
    """The folder and preset settings a command the page names must keep to work on this study: out_dir, where
    the report is, and the data_dir and preset its analysis ran with (results.json's provenance). Without them
    the page's `python analyze.py` would analyse out/ and data/ with this machine's default preset."""
    try:
        return {"out_dir": out_dir, **common.recorded_settings(res["provenance"]["config"], ("data_dir", "preset"))}
    except (KeyError, TypeError, AttributeError):
        return {"out_dir": out_dir}


def for_study(msg, res, out_dir):
    """msg with each `python <script>.py` in it given this study's folders and preset (common.keep_settings)."""
    return common.keep_settings(msg, study_settings(res, out_dir))


# -----------------------------------------------------------------------------
# the sections of the page

def read_stage(out_dir, folder, name, kind):
    """A stage's JSON record of `kind` (train.py / sae.py metrics.json, merge.py merge.json, the sweep), or
    None when it is absent: the report shows what exists. One that is not JSON or of another kind: one
    line naming it (common.read_record)."""
    path, how = os.path.normpath(os.path.join(out_dir, folder, name)), STAGE_HOW[kind].format(folder, folder[4:])
    if kind == "train_metrics" and folder not in TRAINED:  # a merge's folder: merge.py writes its record there
        how = f"python merge.py --out {folder}"
    if not os.path.exists(path):
        return None
    try:
        rec = common.read_record(path, kind, how)
    except common.UserError:  # (the --resume that rewrites it is given its run's settings: it refuses others)
        rec = common.read_record(path, kind, resume_how(how, out_dir, folder))
    # a record copied or moved from another stage's folder is whole and of the right kind: its model says so
    # (a fine-tune trained under another --name and its folder renamed keeps the checkpoint its record names)
    field, want = {"train_metrics": ("name", folder), "sae_metrics": ("model", folder[4:])}.get(kind, (None, None))
    ckpt = os.path.join(out_dir, folder, "ckpt.pt")
    if field and rec.get(field, want) != want and not (kind == "train_metrics" and os.path.isfile(ckpt)
                                                       and rec.get("checkpoint_sha256") == common.sha256_file(ckpt)):
        common.die(f"{path} is the record of '{rec[field]}', not '{want}': copied or swapped? put it back, or "
                   f"remake it: {resume_how(how, out_dir, folder)}")
    return rec


def resume_how(how, out_dir, folder):
    """how, STAGE_HOW's --resume of a finished train.py or sae.py run in out_dir/<folder>/, with the settings the
    run was made with (its checkpoint's, its SAE training state's): a resume refuses others. Else how."""
    import model
    import sae  # (torch: only for a record that cannot be read)
    if how.startswith("python sae.py"):
        made = sae.run_config(os.path.join(out_dir, folder))
        seeds = made.get("seeds") if isinstance(made, dict) else None
        return f"{sae.sae_how(folder[4:], seeds if isinstance(seeds, list) else [0, 1], made)} --resume"
    if not how.startswith("python train.py"):  # (a merge's)
        return how
    try:
        made = model.load_data(os.path.join(out_dir, folder, "ckpt.pt"), mmap=True)["config"]
    except Exception:  # damaged too, or none: how as it is
        return how
    return f"{model.trained_with(how.removesuffix(' --resume'), made)} --resume"


# the commands that remake a stage's record in out_dir/<folder>/ (a finished run rewrites a missing or damaged
# one from its checkpoint or state): {0} the folder, {1} it without sae_
TRAINED = ("base", "lua", "tinystories")  # the models train.py makes (luastories: merge.py)
STAGE_HOW = {"train_metrics": "python train.py --domain {0} --resume",
             "sae_metrics": "python sae.py --model {1} --resume",
             "merge": "python merge.py --out {0} --overwrite", "sweep": "python merge.py --sweep --overwrite"}


def section_training(out_dir, models):
    """Train and validation loss over training, one chart per model (train.py's metrics.json history),
    and every model's final validation loss on each domain."""
    charts, notes, finals = [], [], {}
    for m in models:
        merged = os.path.exists(os.path.join(out_dir, m, "merge.json"))  # (then a metrics.json beside it is stray)
        met = (read_stage(out_dir, m, "merge.json", "merge") if merged else
               read_stage(out_dir, m, "metrics.json", "train_metrics")) or {}
        finals[m] = met.get("val_loss") if isinstance(met.get("val_loss"), dict) else {}
        hist = met.get("history") or []
        if hist:
            by_tokens = all(_num(row.get("tokens")) for row in hist)
            x = [row.get("tokens") if by_tokens else row.get("iter") for row in hist]
            dom = met.get("domain", m)
            evals = [(a, row.get("val_loss")) for a, row in zip(x, hist) if _num(row.get("val_loss"))]  # joined up
            val = {"name": f"val ({dom})", "x": [a for a, _ in evals], "y": [b for _, b in evals], "colour": ORANGE,
                   "dots": True}
            # a fine-tune starts from its parent's weights: its curve starts at the parent's final loss on its domain
            parent = ((met.get("provenance") or {}).get("config") or {}).get("parent") if dom != "base" else None
            start = (finals.get(parent) or {}).get(dom)
            if _num(start) and x and x[0] != 0:
                val = {**val, "name": f"val ({dom}); at 0: {parent}'s", "x": [0] + val["x"], "y": [start] + val["y"]}
            series = [{"name": "train (mean since the last eval)", "x": x, "y": [row.get("train_loss") for row in hist],
                       "colour": BLUE}, val]
            charts.append(line_chart(series, "tokens seen" if by_tokens else "iteration", "loss (nats / token)", m,
                                     point="a mean over the training batches since the last log (train) or one "
                                           "evaluation on held-out text (val)"))
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
    marks = [(ct, f"ours cross at t = {ct:.2f}")] if _num(ct) else []
    marks += [(pt, f"paper's cross at t = {pt:.2f}")] if _num(pt) else []
    marks += [(m["t"], f"{mname}: t = {m['t']:g}") for mname, m in merges
              if _num(m.get("t")) and (name(m.get("a")), name(m.get("b"))) == (name(sw.get("a")), name(sw.get("b")))]
    return line_chart(series, f"t (0 = {name(sw.get('a', 'a'))}, 1 = {name(sw.get('b', 'b'))})",
                      "validation loss (nats / token)", "SLERP(a, b, t)", w=560, h=300, vlines=marks,
                      point="one merged model's loss on one domain's validation split")


SAE_COLS = (("fvu", "FVU", 3), ("l0", "L0", 1), ("dead_frac", "dead fraction (sae.py, held-out)", 4),
            ("ce_clean", "CE clean", 3),
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
            rows.append((m, f"{s} ({role.get(str(s), 'unused')})", f"{v['n_features']} {v.get('sae_kind', '')}".strip(),
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
    titles = {"fvu": ("FVU", "FVU (normalised MSE), training batches"),
              "l0": ("L0", "L0: active features / token"),
              "dead": ("fraction dead", "dead during training (no firing in sae.py's recent window)"),
              "ce_recovered": ("CE loss recovered", "CE loss recovered (evaluations)")}
    point = "what sae.py logged at that step of one SAE's training (over its recent training batches)"
    charts = [line_chart(figs[k], "SAE training step", *titles[k], w=540, h=270, logy=k == "l0", point=point)
              for k in ("fvu", "l0", "dead") if figs[k]]
    ce = figs["ce_recovered"]
    if len({x for s in ce for x, y in zip(s["x"], s["y"]) if _num(y)}) >= 3:   # evaluated along the way: a curve
        charts.append(line_chart(ce, "SAE training step", *titles["ce_recovered"], w=540, h=270,
                                 point="one evaluation on held-out tokens, one SAE"))
    elif ce:  # evaluated at the end only: one bar per SAE, its last evaluation
        last = [(s["name"], next((y for y in reversed(s["y"]) if _num(y)), None), s["colour"]) for s in ce]
        charts.append(bar_chart(last, "CE loss recovered at the end of training", "CE loss recovered (1 = the model's)",
                                point="one SAE's last evaluation on held-out tokens", lim=(0, 1)))
    if not charts:
        return "<p class='dim'>No training history in the SAEs' metrics.json.</p>"
    return "<div class='charts'>" + "".join(charts) + "</div>"


def section_saes(res, out_dir):
    n_tok = res["token_set"]["n_tokens"]
    dens = "".join(density_hist_svg(d, n_tok, m) for m, d in res["density"].items())
    kinds = {m: v["sae_kind"] for m, v in res["models"].items() if v.get("sae_kind")}
    mixed = ("" if len(set(kinds.values())) < 2 else "<p><b>These SAEs differ in kind</b> (" + esc(", ".join(
        f"{m} {k}" for m, k in kinds.items())) + "): the tracking compares them as they are; the paper trains "
        "them alike (python sae.py --model &lt;model&gt; --overwrite with the same settings).</p>")
    return ("<h2 id='saes'>SAEs</h2><p>One SAE per model on its MLP activations (sae.py), metrics on held-out tokens. "
            "<b>CE loss recovered</b> = (CE with the MLP output zero-ablated &minus; CE with the SAE's reconstruction "
            "spliced in) / (zero-ablated &minus; clean): 1 = as good as the model. Two dead figures: <b>dead fraction "
            "(sae.py, held-out)</b> is the SAE's own evaluation; <b>live (dead) on the token set</b> counts features "
            "that never fire on this analysis' evaluation tokens (the tracked seed).</p>" + mixed
            + sae_table(res, out_dir)
            + sae_curves(out_dir, list(res["models"]))
            + f"<h3 id='density'>Feature density</h3><p>Each SAE's live features (tracked seed) by how often they fire "
              f"on the {n_tok:,} evaluation tokens, on a log scale (sae_vis's feature density histogram).</p>"
              f"<div class='charts'>{dens}</div>")


def section_edges(res, thr, cfg, out_dir):
    """The edges' and the nulls' tables; out_dir: the study's folder (the commands it names keep it and the
    analysis' data_dir and preset)."""
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
        make = sae_commands(res["null_missing"], [cfg.get("sae_seed", 0), cfg["null_seed"]], res)
        nul += (f"<p>No seed-{cfg['null_seed']} SAE for: {esc(', '.join(res['null_missing']))} (make one with "
                f"{esc(for_study(make, res, out_dir))}, which trains the other seed again with it).</p>")
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
                       w=540, ylim=(0, 1), vlines=cut, bands=bands,
                       point="one cut t: the fraction of the parent's live features with a partner at r >= t"),
            line_chart(one, "threshold t (r or decoder cos)", "fraction of live parent features",
                       f"{name}: one-to-one (Hungarian) >= t", w=540, ylim=(0, 1), vlines=[(0.7, "cos rule 0.7")],
                       point="one cut t: the fraction matched one-to-one at r (or cos) >= t"))


def ratio_cell(st, vs, k):
    """One threshold of one edge: the ratio edge / null in bold, under it the two fractions (and the null's
    seed-to-seed range when there is one). HTML."""
    if not vs:
        return f"no null<br><small>{st['parent'][k]:.1%}</small>"
    sp = vs.get("spread")
    spread = f"<br><small>null range {sp['min'][k]:.1%} to {sp['max'][k]:.1%}</small>" if sp else ""
    return (f"<b>{_f(vs['ratio'][k], 2)}</b><br><small>{st['parent'][k]:.1%} / {vs['null_parent'][k]:.1%}</small>"
            + spread)


def ratio_table(res, rerun):
    """Each edge's persisting fraction against its null's at r >= 0.5, 0.6, ..., 0.9. rerun: the command that
    analyses this study again."""
    first = next(iter(res["edges"].values()), None)
    if first is None or not all("stability" in e for e in res["edges"].values()):
        return (f"<p class='dim'>This results.json has no stability curves (an older analyze.py): re-run "
                f"{esc(rerun)}.</p>")
    keep = [k for k, t in enumerate(first["stability"]["thresholds"]) if abs(t * 10 - round(t * 10)) <= 1e-9]
    head = "".join(f"<th>r &ge; {first['stability']['thresholds'][k]:g}</th>" for k in keep)
    rows = "".join(f"<tr><td>{esc(n)}</td>" + "".join(f"<td>{ratio_cell(e['stability'], e['stability'].get('vs_null'), k)}</td>"
                                                      for k in keep) + "</tr>" for n, e in res["edges"].items())
    return ("<p>Each edge against its null: <b>edge / null</b>, the fraction of live parent features with a partner "
            "(edge) over the same fraction between two seeds of the parent's SAE (null); 1 = the edge keeps its "
            f"features as well as a retrained SAE does.</p><table class='ratio'><tr><th>edge</th>{head}</tr>{rows}</table>")


def reading(res):
    """The ratio table's reading in one line: each edge's persisting fraction over its null's at the study's cut."""
    thr, got = res["threshold"], {}
    for n, e in res["edges"].items():
        st = e.get("stability") or {}
        at = [k for k, t in enumerate(st.get("thresholds", [])) if abs(t - thr) < 1e-9]
        if st.get("vs_null") and at and _num(st["vs_null"]["ratio"][at[0]]):
            got[n] = st["vs_null"]["ratio"][at[0]]
    if not got:
        return "No edge has a null baseline (a second SAE seed of its parent): the fractions cannot be read yet."
    lo, hi = min(got, key=got.get), max(got, key=got.get)
    verdict = ("as well as" if got[lo] >= 0.95 else "less well than") if got[hi] <= 1.05 else "differently from"
    return (f"At r &ge; {thr:g}, the edges keep {got[lo]:.2f} ({esc(lo)}) to {got[hi]:.2f} ({esc(hi)}) times as many "
            f"of the parent's features as a second SAE seed of the parent does: fine-tuning and merging keep features "
            f"{verdict} retraining the SAE with another seed (1 = as well; below 1 = features changed beyond seed "
            "noise).")


def run_summary(res):
    """What was run: data, preset, models with their SAEs, token set, threshold. HTML."""
    cfg, ts = res["provenance"]["config"], res["token_set"]
    src = ", ".join(f"{esc(d)}: {esc(str(s))}" for d, s in (ts.get("sources") or {}).items()) or "not recorded"
    models = ", ".join(f"{esc(m)} ({v['n_features']:,} SAE features, {v['live']:,} live)"
                       for m, v in res["models"].items())
    edges = ", ".join(esc(n) for n in res["edges"])
    return (f"<ul class='run'><li><b>data</b> (source per domain): {src}</li><li><b>preset</b>: "
            f"{esc(str(cfg.get('preset', '?')))}</li><li><b>models</b>: {models}</li><li><b>edges</b>: {edges}</li>"
            f"<li><b>token set</b>: {ts['n_tokens']:,} evaluation tokens ({ts['n_seq']:,} windows of "
            f"{esc(str(ts['block_size']))} from the val splits: "
            + ", ".join(f"{esc(d)} {esc(str(n))}" for d, n in ts["per_domain"].items())
            + f"; seed {esc(str(ts['seed']))}); match threshold r &ge; {esc(str(res['threshold']))}</li><li><b>created</b>: "
            f"{esc(str(res['provenance'].get('created', '?')))}</li></ul>")


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


def sae_commands(models, seeds, res):
    """The commands that train each model's SAEs with these seeds: --overwrite, as sae.py trains a model's seeds
    together from one training state, so a seed added retrains the ones it has with it; with the settings the
    study's SAEs were trained with (res: results.json, its sae_configs), or they would be other SAEs."""
    import sae  # (torch: only here, for sae.py's defaults)
    made = (res.get("provenance") or {}).get("sae_configs")
    made = {m: c.get("config") for m, c in made.items() if isinstance(c, dict)} if isinstance(made, dict) else {}
    return "; ".join(f"{sae.sae_how(shlex.quote(m), seeds, made.get(m))} --overwrite" for m in models)


def third_seed_commands(res):
    """The commands that train each model's SAEs with a third seed (the analysis' sae, null and spread seeds)."""
    cfg = res["provenance"]["config"]
    spread = cfg.get("spread_seed")
    spread = spread if isinstance(spread, int) and spread >= 0 else 2  # (-1: the analysis asked for none)
    return sae_commands(res["models"], [cfg.get("sae_seed", 0), cfg.get("null_seed", 1), spread], res)


def section_stability(res, rerun, sae_seeds):
    """rerun: the command that analyses this study again; sae_seeds: the commands that train each model's third
    SAE seed (third_seed_commands, with the study's folders)."""
    if not all("stability" in e for e in list(res["edges"].values()) + list(res["null"].values())):
        return ("<h2 id='stability'>Stability</h2><p class='dim'>This results.json has no stability curves (written by "
                f"an older analyze.py): re-run {esc(rerun)}.</p>")
    charts = ["<div class='charts'>" + "".join(stability_charts(n, e, res)) + "</div>" for n, e in res["edges"].items()]
    spread = res.get("null_spread") or {}
    note = (f"<p>Shaded: the seed-to-seed spread of the null (min to max over the {next(iter(spread.values()))['seed_pairs']} "
            "pairs of three SAE seeds).</p>" if spread else
            f"<p class='dim'>With a third SAE seed per model ({esc(sae_seeds)}: the other two are trained again "
            "with it) the null gets a seed-to-seed spread (shaded).</p>")
    return ("<h2 id='stability'>Stability: each edge against its null</h2><p>Left: the fraction of the parent's live "
            "features that have a partner at r &ge; t in the child (solid) and between two seeds of the parent's SAE "
            "(dashed), for every cut t from 0.5 to 0.95; orange: the same weighted by how often each feature fires. "
            "Right: the fraction matched one-to-one (each feature used at most once; maximum-weight Hungarian matching) "
            "on activation correlation and on decoder cosine. An edge whose curve runs on its null's changes its "
            f"features no more than retraining the SAE does. The edge / null ratios at r &ge; 0.5 .. 0.9 are the table "
            f"at the <a href='#headline'>top</a>.</p>{''.join(charts)}{note}"
            + "<h3 id='one-to-one'>One-to-one matching</h3><p>Each feature used at most once. Greedy: "
            f"highest r first, pairs &ge; {res['threshold']}. Hungarian: the maximum-weight matching on r (pairs &ge; "
            f"{res['threshold']} counted: it maximises the sum of r over all pairs, so it can keep fewer above the cut "
            "than greedy does), and on decoder cosine with cos &ge; 0.7 counted, the rule of Paulo &amp; "
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


# the crosscoder's latent classes (results.diffing.class_legend's letters) and their colours in the charts
DIFF_CLASSES = (("s", GREEN), ("p", BLUE), ("c", ORANGE), ("m", PURPLE), ("x", GREY), ("u", "#d5d8dc"))
DIFF_ROWS = (("parent", "p"), ("parent", "d"), ("child", "m"), ("child", "e"))  # (side, status) of the class chart
STATUS_NAMES = {"p": "persists", "d": "disappears", "m": "matched", "e": "emerges", "x": "dead"}


def _seeds(cc):
    """A crosscoder record's seeds, first (the one the examples use) to last."""
    return [cc["seeds"][s] for s in sorted(cc["seeds"], key=int)]


def _and_others(seeds, show):
    """A value of the first seed, the other seeds' in brackets: '85.4% [85.0%]'."""
    rest = [show(s) for s in seeds[1:]]
    return show(seeds[0]) + (f" [{', '.join(rest)}]" if rest else "")


def diffing_table(d):
    """One row per edge: the correlation's fractions and null, the crosscoder's classes (each seed), its
    spurious exclusive latents and its null, and the agreement of the two readings."""
    rows = []
    for name, e in d["edges"].items():
        c, cc, a = e["correlation"], e["crosscoder"], e["agreement"]
        seeds, null = _seeds(cc), cc.get("null") or {}  # diffing.py --seeds 0: no second seed, no null
        ratio = (c["persisting_frac"] / c["null_persisting_frac"] if _num(c.get("null_persisting_frac"))
                 and c["null_persisting_frac"] > 0 else None)
        spur = lambda s: ", ".join(f"{s['spurious'][k]}/{s['counts'][k]}" for k in ("parent-only", "child-only"))
        rows.append((name, _pct(c["persisting_frac"]), _pct(c["disappearing_frac"]), _pct(c["emerging_frac"]),
                     _pct(c.get("null_persisting_frac")), _f(ratio, 2),
                     *(_and_others(seeds, lambda s, k=k: _pct(s["fractions"][k])) for k in
                       ("shared", "parent-only", "child-only", "mixed")),
                     _and_others(seeds, spur),
                     f"{_pct(null['found_again_frac'])} ({null['found_again']:,}/{null['live']:,})" if null else "n/a",
                     f"{_pct(null['same_class_frac'])} ({null['same_class']:,}/{null['found_again']:,})" if null else "n/a",
                     f"{_pct(a['agree_frac'])} ({a['agree']:,}/{a['n']:,})",
                     f"{_pct(a['agree_frac_matched'])} ({a['agree']:,}/{a['n_matched']:,})"))
    header = ["edge", "persisting", "disappearing", "emerging", "null persisting", "edge / null", "shared",
              "parent-only", "child-only", "mixed", "spurious / exclusive (parent-, child-only)", "found again",
              "same class", "all features", "matched features"]
    groups = [("", 1), ("correlation", 5), (f"crosscoder ({d['arch']}): latents, seed {_first_seed(d)} [other seed]",
                                            5), ("crosscoder null", 2), ("agreement", 2)]
    return table(header, rows, cls="diff", groups=groups)


def _first_seed(d):
    e = next(iter(d["edges"].values()), None)
    return min(e["crosscoder"]["seeds"], key=int) if e else "0"


def delta_chart(name, cc, cuts, rerun):
    """The histogram of the crosscoder's live latents by relative decoder norm, a bar per seed in each bin,
    dashed lines at the class cut-offs. rerun: the commands that make it (with the study's folders)."""
    seeds = sorted(cc["seeds"], key=int)
    hists = [(s, cc["seeds"][s].get("delta_hist")) for s in seeds]
    if not all(h for _, h in hists):
        return (f"<p class='dim'>{esc(name)}: no histogram of the relative decoder norm in this results.json "
                f"(an older diffing.py or analyze.py): {esc(rerun)}.</p>")
    series = [{"name": f"seed {s}" + (f" (mean {h['mean']:.2f}, sd {h['sd']:.2f})" if _num(h.get("mean"))
                                      and _num(h.get("sd")) else ""),
               "x": h["edges"], "y": h["counts"], "colour": COLOURS[k % len(COLOURS)], "bars": True}
              for k, (s, h) in enumerate(hists)]
    top = max([v for _, h in hists for v in h["counts"]] + [1])
    lo, hi = cuts["shared"]
    marks = [(cuts["parent_only"], f"parent-only < {cuts['parent_only']:g}"), (lo, f"shared from {lo:g}"),
             (hi, f"shared to {hi:g}"), (cuts["child_only"], f"child-only > {cuts['child_only']:g}")]
    edges = hists[0][1]["edges"]
    width = edges[1] - edges[0] if len(edges) > 1 else 0
    return line_chart(series, "relative decoder norm (0 parent-only, ½ shared, 1 child-only)", "latents",
                      f"{name}: crosscoder latents by relative decoder norm", w=540, h=290, ylim=(0, top * 1.5),
                      vlines=marks, point=f"the live latents of one crosscoder (one seed) in a bin of width {width:g}; "
                                          "the seeds side by side")


def class_chart(name, d, e):
    """Per correlation status (parent features persisting / disappearing, child features matched / emerging),
    the fraction of its features whose best crosscoder latent has each class: stacked bars."""
    legend, a = d["class_legend"], e["agreement"]
    items = []
    for side, st in DIFF_ROWS:
        row = a.get(side, {}).get(st)
        if row is None:
            continue
        n = sum(row.values())
        items.append((f"{side} {STATUS_NAMES[st]} ({n:,})",
                      [(row.get(k, 0) / max(n, 1), col, f"{legend.get(k, k)} ({row.get(k, 0):,})")
                       for k, col in DIFF_CLASSES], None))
    return bar_chart(items, f"{name}: best crosscoder latent's class by status", "fraction of the row's features",
                     point="the live SAE features of one status on this edge, split by the class of their best "
                           f"crosscoder latent (seed {_first_seed(d)})", lim=(0, 1),
                     legend=[{"name": legend.get(k, k), "colour": col} for k, col in DIFF_CLASSES])


def cross_table(e, parent, child):
    """The parent's and the child's SAE, each on both models: FVU, L0, CE loss recovered."""
    ca, rows = e["cross_application"], []
    for sae, who, role in (("parent_sae", parent, "parent"), ("child_sae", child, "child")):
        cells = []
        for on in ("on_parent", "on_child"):
            m = ca.get(on, {}).get(sae) or {}
            cells += [_f(m.get("fvu")), _f(m.get("l0"), 1), _f(m.get("ce_recovered"))]
        rows.append((f"{who}'s SAE ({role})", *cells))
    return table(["SAE", "FVU", "L0", "CE recovered", "FVU", "L0", "CE recovered"], rows, cls="diff",
                 groups=[("", 1), (f"on {parent} (parent)", 3), (f"on {child} (child)", 3)])


def firing_line(e, parent, child, ratio):
    """Each SAE's features on the other model's activations of the same tokens: how many stopped or started
    firing (their rate fell or rose by the factor `ratio`), and the median ratio of the two firing rates."""
    out = []
    for sae, who, other in (("parent_sae", parent, child), ("child_sae", child, parent)):
        f = e["firing"].get(sae)
        if not f:
            continue
        med = f.get("median_log10_ratio")
        out.append(f"{esc(who)}'s SAE on {esc(other)}: of its {f['live']:,} live features <b>{f['stopped']:,}</b> "
                   f"stopped; <b>{f['started']:,}</b> features (rare or silent on {esc(who)}) started firing; "
                   f"median firing rate on {esc(other)} / on "
                   f"{esc(who)} " + (f"<b>{10 ** med:.2f}</b>" if _num(med) else "n/a"))
    by = "by diffing.py's --fire_ratio" if ratio is None else f"{ratio:g}x (diffing.py's --fire_ratio)"
    return ("<p>Firing on the other model (the analysis' token set; stopped / started: the rate falls / rises "
            f"{by} or more): " + "; ".join(out) + ".</p>")


def diffing_examples(k, e):
    """The features whose status and best crosscoder latent's class disagree: each links to its page; its top
    contexts are drawn by the page's script (data-dctx: edge k, example j; page_data's "diff")."""
    if not e.get("examples"):
        return "<p class='dim'>No disagreement with a matched latent on this edge.</p>"
    out = []
    for j, x in enumerate(e["examples"]):
        key = f"{x['model']}/{x['feature']}"
        status = esc(str(x["status"]))
        out.append(f"<div class='dex'><p><a href='#{esc(key)}'>{esc(key)}</a> (<span class='{status}'>{status}"
                   f"</span>) &harr; latent {esc(str(x['latent']))} ({esc(str(x['latent_class']))}), r = {_f(x['r'])}, firing "
                   f"rate {_pct(x['rate_own'], 2)} on its own model &rarr; {_pct(x['rate_other'], 2)} on the other"
                   f"</p><div data-dctx='{k}.{j}'></div></div>")
    return "".join(out)


def section_diffing(res, out_dir):
    """results.diffing (analyze.py's join of diffing.py's record with the statuses), or '' when there is none.
    out_dir: the study's folder (its commands name it, and the analysis' data_dir and preset)."""
    d = res.get("diffing")
    if not d:
        return ""
    head = "<h2 id='diffing'>Model diffing: crosscoders and cross-application</h2>"
    if d.get("stale"):
        stale = str(d["stale"])  # (its fix names the analysis too, with the run's folders; an older one did not)
        return (f"{head}<p class='dim'>diffing.py's results (diffing/diffing.json beside analysis/) were "
                + esc(for_study(stale + ("" if "python analyze.py" in stale else ", then python analyze.py"), res,
                                out_dir)) + ".</p>")
    cuts, thr = d["cuts"], res["threshold"]
    null_r = next((e["crosscoder"].get("null") or {} for e in d["edges"].values()), {}).get("threshold") or 0.8
    rule = ", ".join(f"{esc(k)} with {esc(v)}" for k, v in d["agree_rule"].items())
    intro = (f"<p>Each edge read two more ways (diffing.py; DESIGN.md, \"Model diffing\"). <b>Correlation</b>: the "
             f"fractions of the parent's live features that persist (a child feature at r &ge; {thr:g}) or disappear, "
             "of the child's that emerge, the persisting fraction between two seeds of the parent's SAE (null), and "
             f"edge / null. <b>Crosscoder</b> ({esc(d['arch'])}; one dictionary over both models' activations): its "
             f"live latents by the relative decoder norm &Delta; ({esc(d.get('delta', ''))}): parent-only &Delta; &lt; "
             f"{cuts['parent_only']:g}, shared {cuts['shared'][0]:g} &le; &Delta; &le; {cuts['shared'][1]:g}, "
             f"child-only &Delta; &gt; {cuts['child_only']:g}, mixed between; <b>spurious</b>: exclusive latents that "
             f"the other model still carries (latent scaling &nu; &ge; {cuts.get('scaling', 0.5):g}), of the "
             "exclusive ones. <b>Crosscoder null</b>: a second seed, the share of the first's live latents it finds "
             f"again (r &ge; {null_r:g}) and of those the "
             "share with the same class. <b>Agreement</b>: each live SAE feature's status against the class of its "
             f"best crosscoder latent (r &ge; {d.get('match_min_r', 0.5):g}, else unmatched): {rule}; over all "
             "live features and over those with a matched latent.</p>")
    parts = [head, intro, diffing_table(d)]
    for k, (name, e) in enumerate(d["edges"].items()):
        ed = res["edges"].get(name, {})
        parent, child = ed.get("parent", "parent"), ed.get("child", "child")
        s0 = _seeds(e["crosscoder"])[0]
        fit = (f"crosscoder seed {_first_seed(d)}: {s0['live']:,} live latents ({s0['dead']:,} dead), FVU "
               f"{_f(s0['fvu']['parent'])} on {esc(parent)}, {_f(s0['fvu']['child'])} on {esc(child)}, L0 "
               f"{_f(s0['l0'], 1)}")
        parts.append(f"<h3 id='diffing-{k}'>{esc(name)}</h3><p>{fit}</p><div class='charts'>"
                     + delta_chart(name, e["crosscoder"], cuts,
                                   for_study("re-run python diffing.py, then python analyze.py", res, out_dir))
                     + class_chart(name, d, e) + "</div>"
                     + "<h4>Cross-application: each model's SAE on both models</h4><p class='dim'>The same held-out "
                       "windows, of the child's domains (so the parent SAE on its own model differs from its own "
                       "evaluation, on the parent's domains). CE recovered above 1: the spliced reconstruction "
                       "predicts these windows better than the model's own MLP output (an SAE trained on a model "
                       "that knows their domain better).</p>"
                     + cross_table(e, parent, child) + firing_line(e, parent, child, d.get("fire_ratio"))
                     + "<h4>Where the two readings disagree</h4><p class='dim'>SAE features whose status and best "
                       "latent's class disagree, the clearest (highest r) of each kind; the feature's top contexts "
                       "(its maximum outlined), each opening its page.</p>" + diffing_examples(k, e))
    return "".join(parts)


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
.toc a{margin:0 2px}.partner{border-left:3px solid #ccc;padding-left:10px;margin:10px 0}
details pre{font-size:11px;max-height:300px;overflow:auto}
[hidden]{display:none!important}.run{margin:4px 0 8px;padding-left:20px}
.reading{font-size:15px;background:#eef4fb;padding:6px 8px}.toc{font-size:15px}.pt{fill:#666;font-style:italic}
a.ex{margin-right:6px}b.edge{display:inline-block;width:12em;white-space:nowrap}.nav{margin:4px 0}
.track{border-left:3px solid #e8892b;padding-left:10px;margin:10px 0}
.pair{margin:4px 0 8px;border:1px solid #eee}.pair .mx{width:12em}#flist table td:nth-child(2){font-family:monospace}
#flist{max-height:360px;overflow:auto;display:inline-block;padding-right:12px}#flist p{margin:2px 0}
table.diff{font-size:13px}.diff td,.diff th{padding:2px 4px}.diff th{text-align:center}.dex p{margin:8px 0 2px}
.diff td:not(:first-child){white-space:normal}"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const FS = window.FEATURES = window.FEATURES || {};  // the side files (features/*.js) file their records here
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  for (const c of kids) if (c != null) e.append(c);
  return e;
}
const waiting = {};
function need(key, done) {  // load a side file once, as a script (a file:// page cannot fetch); done(loaded?)
  if (FS[key]) { done(true); return; }
  if (!D.side[key]) { done(false); return; }
  if (waiting[key]) { waiting[key].push(done); return; }
  waiting[key] = [done];
  const s = document.createElement('script');
  const finish = () => {
    // a side file of another analysis run (one that stopped between results.json and features/) is not used
    if (FS[key] && D.run && FS[key].run !== D.run) { delete FS[key]; D.side[key].other_run = true; }
    const w = waiting[key] || []; delete waiting[key]; for (const f of w) f(!!FS[key]);
  };
  s.onload = finish; s.onerror = finish;
  s.setAttribute('src', D.side[key].file);
  document.head.append(s);
}
function needAll(keys, done) {
  let left = keys.length;
  if (!left) { done(); return; }
  for (const k of keys) need(k, () => { if (--left === 0) done(); });
}
let IDS = null;
function tokenIds() {  // the token set (features/tokens.js): n_seq * T ids; every side-file context is a window of it
  if (IDS) return IDS;
  const t = FS['#tokens'], b = atob(t.ids), u = new Uint8Array(b.length);
  for (let k = 0; k < b.length; k++) u[k] = b.charCodeAt(k);
  IDS = t.dtype === 'uint16' ? new Uint16Array(u.buffer) : new Uint32Array(u.buffer);
  return IDS;
}
function win(s, st, w) {  // w token ids of sequence s from position st
  const T = FS['#tokens'].T;
  return Array.from(tokenIds().subarray(s * T + st, s * T + st + w));
}
function levels(digits) { return Array.from(digits, c => parseInt(c, 36)); }
function shardPage(m, i) {  // a feature's page from its side file, in pages.json's shape (activations to max/levels)
  const S = FS[m], f = S && FS['#tokens'] && S.f[i];
  if (!f) return null;
  const [mx, counts, top, quant, pos, neg] = f, L = S.levels, n = S.n_intervals;
  const acts = d => levels(d).map(v => v * mx / L);
  return {top: top.map(c => [win(c[0], c[1], c[2].length), acts(c[2])]),
          intervals: Array.from({length: n}, (_, q) => ({lo: mx * q / n, hi: mx * (q + 1) / n,
            ctx: quant.filter(c => c[0] === q).map(c => [win(c[1], c[2], c[3].length), acts(c[3]), c[4]])})),
          hist: {max: mx, counts: counts}, pos: pos, neg: neg, side: L};
}
function fl(x, d) { return x == null ? '-' : (+x).toFixed(d == null ? 3 : d); }
function num(x) {  // an activation or logit value: 3 significant digits when small
  if (x == null) return '-';
  const a = Math.abs(x);
  return a === 0 ? '0' : a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : x.toPrecision(3);
}
function link(m, i) { return h('a', {href: '#' + m + '/' + i}, m + '/' + i); }
function tokText(t) { return String(t).replace(/\n/g, '\u21b5').replace(/\t/g, '\u2192'); }
function tok(id) { return tokText(D.tok[id] ?? (FS['#tokens'] && FS['#tokens'].tok[id]) ?? ('<' + id + '>')); }
function argmax(a) { return a.reduce((best, v, k) => v > a[best] ? k : best, 0); }
function context(c, mx, at, words, label) {  // a token window shaded by activation; token `at` outlined
  // words: c[0] holds token strings; label: shown in place of `at`'s value (levelRow: values from levels)
  const d = h('div', {class: 'ctx'}, h('span', {class: 'mx'}, label === undefined ? num(c[1][at]) : label));
  c[0].forEach((id, t) => {
    const s = h('span', {title: 'activation ' + (label === undefined ? '' : 'about ') + num(c[1][t])},
                words ? tokText(id) : tok(id));
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
function details(P, head, n) {  // explanation, histogram, logit effects, contexts (from pages.json or a side file)
  const b = h('div', {});
  if (head) b.append(head);
  if (!P) {
    b.append(h('p', {class: 'dim'}, 'no contexts (dead on the token set, or its side file is missing)'));
    return b;
  }
  if (P.side) b.append(h('p', {class: 'dim'}, 'From the side file: ' + P.top.length + ' top contexts and one drawn '
                         + 'from each activation interval; activations to 1/' + P.side + ' of the maximum.'));
  if (P.expl) b.append(h('p', {}, h('b', {}, 'explanation: '), String(P.expl.explanation || P.expl.error || ''),
                          ' (score ' + fl(P.expl.score, 2) + ')'));
  b.append(h('div', {class: 'cols'}, h('div', {}, h('h5', {}, 'activation histogram'),
             P.hist ? histogram(P) : h('p', {class: 'dim'}, 'not in this pages.json (an older analyze.py)')),
             h('div', {}, h('h5', {}, 'direct logit effect'), logits(P))));
  b.append(contexts(P, n));
  return b;
}
function levelRow(label, ids, lv, L, mx, at) {  // a side-file window: levels 0..L of the max mx, as values
  return context([ids, lv.map(v => v * mx / L)], mx, at, false, label);
}
function tracking(m, i) {  // per edge: the best partner's activations on this feature's top contexts, row under row
  const S = FS[m], f = S && S.f[i], b = h('div', {class: 'track'});
  b.append(h('h4', {}, 'Tracking: on each edge, the partner\'s activations on this feature\'s top contexts'));
  if (!S || !FS['#tokens']) {
    b.append(h('p', {class: 'dim'}, (D.side[m] && D.side[m].other_run ? 'The side file ' + D.side[m].file
                                     + ' is from another run of analyze.py' : 'No side file ' + (D.side[m] ?
                                     D.side[m].file : 'features/' + m + '.js') + ' (or features/tokens.js) beside '
                                     + 'the report') + ': re-run ' + D.rerun + '.'));
    return b;
  }
  if (!f) { b.append(h('p', {class: 'dim'}, 'Dead on the token set: nothing to track.')); return b; }
  b.append(h('p', {class: 'dim'}, 'Each pair of rows shows the same ' + S.width + ' tokens: this feature above, the '
             + 'partner (through its own model and SAE) below, each shaded by its own maximum; outlined: this '
             + 'feature\'s maximum.'));
  const [mx, , top] = f, L = S.levels;
  f[6].forEach((pt, k) => {
    const e = D.edges.find(x => x.name === S.edges[k]);
    if (!pt || !e) { b.append(h('h5', {}, S.edges[k] + ': no live partner')); return; }
    const [, j, jmx] = pt, role = e.parent === m ? 'p' : 'c', other = e.parent === m ? e.child : e.parent;
    const name = D.status_name[e[role + 's'][i]];
    b.append(h('h5', {}, e.name + ': this feature ', h('span', {class: name}, name), '; best partner ', link(other, j),
                       ' (r = ' + fl(e[role + 'r'][i]) + ', decoder cos ' + fl(e[role + 'c'] && e[role + 'c'][i])
                       + ', its max ' + num(jmx) + ')'));
    for (const c of top) {
      const ids = win(c[0], c[1], c[2].length), own = levels(c[2]);
      b.append(h('div', {class: 'pair'}, levelRow(m + '/' + i, ids, own, L, mx, argmax(own)),
                 levelRow(other + '/' + j, ids, levels(c[3][k]), L, jmx, argmax(own))));
    }
  });
  return b;
}
let current = null;
function render(key) {  // a feature's page; what its side file adds comes when that file has loaded
  const pg = document.getElementById('page'); pg.replaceChildren();
  const parts = String(key).split('/'), m = parts[0], i = parseInt(parts[1], 10);
  if (!(m in D.density) || !(i >= 0 && i < D.density[m].length)) { pg.append(h('p', {}, 'no feature ' + key)); return false; }
  const k = m + '/' + i, dn = D.density[m][i], P = D.pages[k], nf = D.density[m].length;
  current = k;
  pg.append(h('h3', {}, 'feature ' + k));
  pg.append(h('p', {class: 'nav'}, 'previous: ', i > 0 ? link(m, i - 1) : '-', ' | next: ',
              i + 1 < nf ? link(m, i + 1) : '-'));
  if (D.why[k]) pg.append(h('p', {class: 'why'}, 'example: ' + D.why[k]));
  const info = h('p', {}, 'fires on ' + num(100 * dn) + '% of the tokens ('
                 + Math.round(dn * D.n_tokens).toLocaleString('en') + ' of ' + D.n_tokens.toLocaleString('en') + ')'
                 + (dn === 0 ? ' (dead on the token set)' : '')
                 + (P && P.hist ? '; max activation ' + num(P.hist.max) : ''));
  pg.append(info, statusTable(m, i));
  const main = h('div', {class: 'main'}, details(P, null, D.n_show));
  const box = h('div', {class: 'dim'}, 'loading ' + m + '\'s side file');
  if (!P) main.replaceChildren(h('p', {class: 'dim'}, 'loading the contexts from the side file'));
  pg.append(box, main);  // the tracking view first: the study's question, then the feature itself
  if (P) {
    for (const [tm, tj, tr, via, cos] of P.trail)
      pg.append(h('div', {class: 'partner'}, details(D.pages[tm + '/' + tj], h('h4', {}, 'partner in ' + tm + ': ',
        link(tm, tj), ' (r = ' + fl(tr) + ' on ' + via + ', decoder cos ' + fl(cos) + ')'), 3)));
    if (P.near) pg.append(h('div', {class: 'partner'}, details(D.pages[P.near[0] + '/' + P.near[1]], h('h4', {},
        'nearest feature in ' + P.near[0] + ' (below the threshold): ', link(P.near[0], P.near[1]),
        ' (r = ' + fl(P.near[2]) + ' on ' + P.near[3] + ', decoder cos ' + fl(P.near[4]) + ')'), 3)));
  }
  needAll([m, '#tokens'], () => {
    if (current !== k) return;
    const Q = shardPage(m, i);
    if (!P) {
      main.replaceChildren(details(Q, null, D.n_show));
      if (Q) info.append('; max activation ' + num(Q.hist.max));
    }
    box.replaceWith(tracking(m, i));
    document.documentElement.setAttribute('data-shown', k);  // with the time since navigation (the load time stated)
    document.documentElement.setAttribute('data-shown-ms', String(Math.round(performance.now())));
  });
  return true;
}
const sel = document.getElementById('sel');
const st = h('table', {}, h('tr', {}, ...['edge', 'class', 'feature', 'why this one'].map(x => h('th', {class: 'l'}, x))));
for (const s of D.sel)
  for (const c of ['persisting', 'disappearing', 'emerging'])
    for (const [k, why] of s[c]) st.append(h('tr', {}, h('td', {}, s.edge), h('td', {class: 'l'}, c),
                                                h('td', {class: 'l'}, h('a', {href: '#' + k}, k)), h('td', {class: 'why'}, why)));
const byEdge = h('div', {});  // a line of links per edge; the table with the reasons one click further
for (const s of D.sel)
  byEdge.append(h('div', {}, h('b', {class: 'edge'}, s.edge + ':'), ...['persisting', 'disappearing', 'emerging']
                  .flatMap(c => s[c].map(([k]) => h('a', {href: '#' + k, class: 'ex', title: c}, k)))));
sel.append(byEdge, h('details', {}, h('summary', {}, 'the examples (' + (st.rows.length - 1) + ') and why each was '
                                                     + 'chosen'), st));
// the browser: every feature of the chosen model, sorted and filtered by status; and the search
const qm = document.getElementById('qm'), ls = document.getElementById('ls'), lf = document.getElementById('lf');
for (const m of D.models) qm.append(h('option', {value: m}, m));
let shown = 100;
function edgesOf(m) {  // [[edge, 'p' or 'c' (m's end of it)]]
  return D.edges.filter(e => e.parent === m || e.child === m).map(e => [e, e.parent === m ? 'p' : 'c']);
}
function filters() {  // the status filter: every status of the chosen model on each of its edges
  lf.replaceChildren(h('option', {value: ''}, 'any status'));
  for (const [e, role] of edgesOf(qm.value))
    for (const s of [...new Set(e[role + 's'])].sort())
      lf.append(h('option', {value: e.name + '|' + role + '|' + s}, D.status_name[s] + ' on ' + e.name));
}
function list() {
  const m = qm.value, dn = D.density[m], on = edgesOf(m), out = document.getElementById('flist');
  let ids = dn.map((d, i) => i).filter(i => dn[i] > 0);
  if (lf.value) {
    const [name, role, s] = lf.value.split('|'), e = D.edges.find(x => x.name === name);
    ids = dn.map((d, i) => i).filter(i => e[role + 's'][i] === s);
  }
  if (ls.value !== 'id') ids.sort((a, b) => ls.value === 'dd' ? dn[b] - dn[a] || a - b : dn[a] - dn[b] || a - b);
  const t = h('table', {}, h('tr', {}, h('th', {}, 'feature'), h('th', {}, 'fires on (% of tokens)'),
                               ...on.map(([e]) => h('th', {}, 'on ' + e.name))));
  for (const i of ids.slice(0, shown))
    t.append(h('tr', {}, h('td', {}, link(m, i)), h('td', {}, num(100 * dn[i])), ...on.map(([e, role]) => {
      const s = D.status_name[e[role + 's'][i]];
      return h('td', {class: s}, s);
    })));
  out.replaceChildren(h('p', {}, ids.length.toLocaleString('en') + ' features'
                      + (ids.length > shown ? ', the first ' + shown + ' shown' : '')), t);
  if (ids.length > shown) out.append(h('button', {type: 'button', id: 'more'}, 'show more'));
  const more = document.getElementById('more');
  if (more) more.addEventListener('click', () => { shown += 500; list(); });
}
qm.addEventListener('change', () => { shown = 100; filters(); list(); });
ls.addEventListener('change', list);
lf.addEventListener('change', () => { shown = 100; list(); });
filters(); list();
function ask(q) {  // the search box: model/i or i opens a feature, anything else searches for a token (#search=...)
  const hit = /^([\w.-]+)\/(\d+)$/.exec(q.trim());
  if (hit) location.hash = hit[1] + '/' + hit[2];
  else if (/^\d+$/.test(q.trim())) {  // a number: of the feature shown, else of the list's model
    const inView = !document.getElementById('fview').hidden && current;
    location.hash = (inView ? current.split('/')[0] : qm.value) + '/' + q.trim();
  }
  else if (q.trim()) location.hash = 'search=' + encodeURIComponent(q.trim());
}
function search(q, out) {  // the features whose top contexts peak on token q, from every model's side file, into out
  const word = q.trim().replace(/^[`'"]+|[`'"]+$/g, '').trim();
  out.replaceChildren(h('p', {class: 'dim'}, 'loading every model\'s side file'));
  needAll(['#tokens', ...D.models], () => {
    const T = FS['#tokens'];
    if (!T) {
      out.replaceChildren(h('p', {class: 'dim'}, 'No side files of this analysis beside the report: re-run ' + D.rerun + '.'));
      return;
    }
    const want = new Set(Object.keys(T.tok).filter(id => T.tok[id].trim() === word).map(Number));
    const ids = tokenIds(), found = [];
    for (const m of D.models) {
      if (!FS[m]) continue;
      FS[m].f.forEach((f, i) => {
        if (!f) return;
        let n = 0;
        for (const c of f[2]) if (want.has(ids[c[0] * T.T + c[1] + argmax(levels(c[2]))])) n++;
        if (n) found.push([m, i, n, f[2].length]);
      });
    }
    found.sort((a, b) => b[2] - a[2] || D.density[b[0]][b[1]] - D.density[a[0]][a[1]]);
    const head = ['feature', 'top contexts peaking on it', 'fires on (% of tokens)'].map(x => h('th', {}, x));
    const t = h('table', {id: 'hits'}, h('tr', {}, ...head, h('th', {class: 'l'}, 'its top context')));
    for (const [m, i, n, of] of found.slice(0, 200)) {
      const f = FS[m].f[i], c = f[2][0], lv = levels(c[2]), row = win(c[0], c[1], c[2].length);
      t.append(h('tr', {}, h('td', {}, link(m, i)), h('td', {}, n + ' of ' + of),
                 h('td', {}, num(100 * D.density[m][i])),
                 h('td', {class: 'l'}, levelRow('', row, lv, FS[m].levels, f[0], argmax(lv)))));
    }
    out.replaceChildren(h('p', {}, found.length + ' features whose top contexts peak on the token "' + word + '"'
                          + (want.size ? '' : ' (no such token in the token set)')
                          + (found.length > 200 ? '; the first 200' : '')), t);
    out.setAttribute('data-found', String(found.length));
    document.documentElement.setAttribute('data-found-ms', String(Math.round(performance.now())));
  });
}
for (const [form, input] of [['fs', 'fq'], ['fs2', 'fq2']])  // the report's search box and the feature view's
  document.getElementById(form).addEventListener('submit', ev => {
    ev.preventDefault();
    ask(document.getElementById(input).value);
  });
function view(feature) {  // a feature page replaces the report on screen, at the top: a deep link shows it at once
  document.getElementById('fview').hidden = !feature;
  document.getElementById('report').hidden = feature;
}
function fromHash() {  // #model/i opens that feature, #search=word the search's results (both at the top, in place of
  const key = decodeURIComponent(location.hash.slice(1));  // the report); other anchors are the report's sections
  if (key.startsWith('search=')) {
    const pg = document.getElementById('page'), box = h('div', {id: 'fres'});
    current = null;
    pg.replaceChildren(h('h3', {}, 'search: ' + key.slice(7)), box);
    search(key.slice(7), box);
  } else if (!(/^[^/]+\/\d+$/.test(key) && render(key))) {
    view(false);
    if (key && document.getElementById(key)) document.getElementById(key).scrollIntoView();
    return;
  }
  view(true);
  window.scrollTo(0, 0);
  const top = document.querySelector('#page h3').getBoundingClientRect().top;
  document.documentElement.setAttribute('data-heading-top', String(Math.round(top)));
}
window.addEventListener('hashchange', fromHash);
for (const el of document.querySelectorAll('[data-dctx]')) {  // model diffing: a disagreement's top contexts
  const [k, j] = el.getAttribute('data-dctx').split('.').map(Number), cs = (D.diff || [])[k]?.[j] || [];
  const mx = Math.max(1e-9, ...cs.map(c => Math.max(...c.acts)));
  if (!cs.length) el.append(h('p', {class: 'dim'}, 'no contexts recorded'));
  for (const c of cs) el.append(context([c.tokens, c.acts], mx, argmax(c.acts), true));
}
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
const ratio = document.querySelector('table.ratio');  // where the headline ends on the page (tests: above 800 px)
if (ratio && !document.getElementById('report').hidden) {
  const bottom = ratio.getBoundingClientRect().bottom + window.scrollY;
  document.documentElement.setAttribute('data-headline-bottom', String(Math.round(bottom)));
}
document.documentElement.setAttribute('data-js', document.documentElement.getAttribute('data-js') || 'ok');
document.documentElement.setAttribute('data-ready-ms', String(Math.round(performance.now())));
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


def page_data(res, pages, side, rerun):
    """The data the page's script uses: per edge each feature's best partner, r, decoder cosine and status
    (from results.json; pages.json's copy of the status for an older results.json), densities, the feature
    pages (pages.json), the examples with their reasons, the side files (side_files) it may load, and rerun,
    the command that analyses this study again (the script's notes name it)."""
    edges = []
    for n, e in res["edges"].items():
        status = e.get("status") or pages["status"][n]
        edges.append({"name": n, "parent": e["parent"], "child": e["child"], "pb": e["parent_best"]["feature"],
                      "pr": e["parent_best"]["r"], "pc": e["parent_best"].get("cos"), "cb": e["child_best"]["feature"],
                      "cr": e["child_best"]["r"], "cc": e["child_best"].get("cos"), "ps": status["parent"],
                      "cs": status["child"]})
    data = {"models": list(res["models"]), "n_show": res["provenance"]["config"]["n_show"], "edges": edges,
            "density": res["density"], "pages": pages["pages"], "tok": pages["tok"],
            "status_name": res.get("status_legend") or pages["status_legend"], "sel": examples(res),
            "side": side, "n_tokens": res["token_set"]["n_tokens"], "run": res.get("run"), "rerun": rerun}
    data["why"] = {k: f"{c} on {s['edge']}" + (f"; {why}" if why else "") for s in data["sel"] for c in CATEGORIES
                   for k, why in s[c]}
    data["first"] = next((k for s in data["sel"] for c in CATEGORIES for k, _ in s[c]), f"{data['models'][0]}/0")
    diff = res.get("diffing") or {}
    if diff.get("edges") and not diff.get("stale"):  # the disagreement examples' contexts, by edge then example
        data["diff"] = [[x.get("contexts") or [] for x in e.get("examples") or []] for e in diff["edges"].values()]
    return data


SECTIONS = (("browse", "every feature (browse, search)"), ("features", "example features"), ("training", "training"),
            ("sweep", "merge sweep"), ("saes", "SAEs"), ("density", "feature density"), ("edges", "edges"),
            ("stability", "stability"), ("one-to-one", "one-to-one"), ("bands", "density bands"),
            ("families", "families"), ("hists", "best r"))


def sections(res):
    """The first screen's links: SECTIONS, and model diffing when results.json has it (diffing.py has run)."""
    return SECTIONS + ((("diffing", "model diffing"),) if res.get("diffing") else ())


def section_browse(side, rerun):
    """Every live feature, one click away: the search box and the sortable list (built by the page's script
    from the densities and statuses; each feature's page loads its model's side file). rerun: the command that
    makes the side files (the study's analysis)."""
    size = sum(v["bytes"] for v in side.values())
    where = (f"Contexts, histograms and logit effects of every live feature are in side files beside this page "
             f"({esc(SIDE)}/: {size / 1e6:.1f} MB, one per model plus the token set), loaded when a feature or a "
             "search needs them." if side else
             "<b>No side files</b> (features/) beside this page: the list works, but only the example features have "
             f"contexts; re-run {esc(rerun)} to make them.")
    return ("<h2 id='browse'>Every feature</h2><p>" + where + " Search by feature (lua/12, or 12 for the list's model) "
            "or by token: <i>self</i> lists the features whose top contexts peak on that token. A link to "
            "report.html#search=self runs a search.</p><form id='fs'>Search: <input id='fq' size='30' "
            "placeholder='lua/12, 12, or a token such as self'> <button>search</button></form>"
            "<p>Features of <select id='qm'></select> sorted by <select id='ls'><option value='dd'>density, most "
            "frequent first</option><option value='da'>density, rarest first</option><option value='id'>number"
            "</option></select>, <select id='lf'></select></p><div id='flist'></div>")


def render_report(res, pages, out_dir):
    """The page from analyze.py's results (results.json), its page data (pages.json), the side files beside it
    (features/) and the stages' records in out_dir. First screen: what was run, the edge / null table and its
    reading, links to the rest."""
    cfg, thr, ts = res["provenance"]["config"], res["threshold"], res["token_set"]
    side = side_files(os.path.join(out_dir, "analysis"), list(res["models"]))
    rerun = for_study("python analyze.py", res, out_dir)  # what each note of a part to remake names
    sweep = read_stage(out_dir, ".", "merge_sweep.json", "sweep")
    banner = ('<p class="banner"><b>Smoke-scale demo.</b> The data source is the generated sample corpus (data.py '
              '--source sample): tiny models on synthetic text; the numbers show that the pipeline runs, not the '
              'study\'s findings.</p>') if ts["smoke_scale_demo"] else ""
    sw = ("<h2 id='sweep'>Merge sweep</h2><p>Validation loss of SLERP(a, b, t) on each domain (merge.py --sweep), "
          "on the sweep's own evaluation batches: at t = 0 and 1 (the fine-tunes themselves) it differs a little "
          "from their final val losses above, measured on train.py's.</p>"
          + sweep_chart(sweep, [(m, read_stage(out_dir, m, "merge.json", "merge") or {}) for m in res["models"]])
          if sweep else "")
    rule = res.get("selection_rule")
    rule = (f" Every example fires on at least {esc(str(rule['min_fires']))} tokens of the token set, with a maximum activation "
            f"of at least {rule['min_act_frac']:g} x the median maximum of its SAE's live features ("
            + ", ".join(f"{esc(m)} {v:.3g}" for m, v in rule["min_act"].items()) + ")." if rule else "")
    first = (f"<h1 id='top'>Tracking SAE features through fine-tuning and merging</h1>{banner}{run_summary(res)}"
             f"<h2 id='headline'>Each edge against its null</h2><p class='reading'>{reading(res)}</p>"
             + ratio_table(res, rerun) + "<p class='toc'>" + " | ".join(f"<a href='#{k}'>{v}</a>" for k, v in sections(res))
             + f" | <a href='#{esc(page_data_first(res))}'>a feature page</a></p>")
    body = [first, section_browse(side, rerun),
            "<h2 id='features'>Example features</h2><p>The examples of each edge, chosen across the density range of "
            "their class and by their distance from the threshold (the reason is given)." + rule + " Each opens its "
            "page; links such as #lua/12 open any feature.</p><div id='sel'></div>",
            section_training(out_dir, list(res["models"])), sw, section_saes(res, out_dir), section_edges(res, thr, cfg, out_dir),
            section_stability(res, rerun, for_study(third_seed_commands(res), res, out_dir)), section_bands(res),
            section_families(res, thr), section_hists(res, thr), section_diffing(res, out_dir), "<details><summary>Provenance</summary><pre>"
            + esc(json.dumps(res["provenance"], indent=1, default=common._json_default)) + "</pre></details>"]
    view = ("<div id='fview' hidden><form class='nav' id='fs2'><a href='#top'>&larr; the report</a> | "
            "<a href='#browse'>every feature</a> | <a href='#features'>the examples</a> | <input id='fq2' size='24' "
            "placeholder='lua/12, 12 or a token'> <button>search</button></form><div id='page'></div></div>")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Feature tracking report</title>'
            "<script>window.onerror=function(m,s,l){document.documentElement.setAttribute('data-js','error: '+m+' (line '+l+')');};</script>"
            f"<style>{STYLE}</style></head><body>{view}<div id='report'>" + "\n".join(body) + "</div>"
            + f'<script type="application/json" id="data">{json_for_script(page_data(res, pages, side, rerun))}</script>'
            + f"<script>{SCRIPT}</script></body></html>\n")


def page_data_first(res):
    """The first example (model/i): the feature page the report opens with."""
    return next((k for s in examples(res) for c in CATEGORIES for k, _ in s[c]), f"{next(iter(res['models']))}/0")


# -----------------------------------------------------------------------------

def write_report(out_dir):
    """Read results.json + pages.json (and the stages' metrics) and write report.html. Returns its path."""
    adir = os.path.join(out_dir, "analysis")
    paths = {k: os.path.join(adir, f"{k}.json") for k in ("results", "pages")}
    how = f"python analyze.py --out_dir {shlex.quote(out_dir)}"
    for path in paths.values():
        if not os.path.exists(path):
            die(f"no {path}; run the analysis first: {how}")
    how += " --overwrite"  # (a results.json it would find current otherwise)
    res, pages = common.read_record(paths["results"], "results", how), common.read_record(paths["pages"], "pages", how)
    # their kinds and top-level fields are checked; a record whose inner parts are not what its writer makes
    # (hand-edited, or made by another version) is one line too, not a traceback from deep in the page
    try:
        if any("status" not in e and n not in pages.get("status", {}) for n, e in res["edges"].items()):
            die(f"{paths['results']} has no feature statuses (an older analyze.py); re-run: {how}")
        page = render_report(res, pages, out_dir)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, ArithmeticError) as e:  # 10**400: overflow
        die(f"{adir}: results.json, pages.json or a stage's record they use is not shaped as its writer makes it "
            f"({type(e).__name__}: {e}); re-run: {how}")
    out = os.path.join(adir, "report.html")
    common.atomic_write_text(out, page)
    return out


def main(argv=None):
    cfg = common.parse_config(dict(config), argv)
    common.keep_study_settings(cfg["out_dir"], ("data_dir", "preset"))  # for the fixes it prints
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
