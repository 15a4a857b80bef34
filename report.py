"""
The analysis report: out/analysis/results.json and pages.json (both written by analyze.py) ->
out/analysis/report.html, one offline HTML file (no network, no external scripts): the edge and
null tables, the feature-family flow, the max-r histograms, the merge sweep and the feature pages.

    python report.py                        # re-renders out/analysis/report.html; recomputes nothing
    python report.py --out_dir out_local

Nothing here decides anything about features: every count and every status (persists, disappears,
emerges, dead) is read from what analyze.py wrote. The tables and figures are built here as HTML and
inline SVG; the feature pages are built in the browser from the JSON embedded in the page.
"""
import html
import json
import os

import common
from common import die

# -----------------------------------------------------------------------------
config = dict(
    out_dir="out",              # reads out_dir/analysis/{results,pages}.json and out_dir/merge_sweep.json; writes out_dir/analysis/report.html
)

esc = html.escape
GREEN, GREY, ORANGE, BLUE = "#2a9d5c", "#9aa0a6", "#e8892b", "#3a6ea5"


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


def family_flow(fam):
    """Sankey columns/links: base features by fine-tune, then whether they reach luastories."""
    g, reach, L = fam["fine_tunes"], fam["reach"], {"n": 0}
    names = {"both": "in lua and tinystories", "lua_only": "in lua only", "tinystories_only": "in tinystories only",
             "neither": "in neither fine-tune"}
    col1 = [(k, names[k], g[k], GREEN if k != "neither" else GREY) for k in names]
    col1 += [("new_lua", "new in lua", fam["new_lua"]["n"], ORANGE),
             ("new_tinystories", "new in tinystories", fam["new_tinystories"]["n"], ORANGE)]
    links = [("base", k, g[k]) for k in names]
    for k in names:
        links += [(k, "L", reach[k]), (k, "lost", g[k] - reach[k])]
    for k in ("new_lua", "new_tinystories"):
        links += [(k, "L", fam[k]["reach"]), (k, "lost", fam[k]["n"] - fam[k]["reach"])]
    L = sum(v for s, d, v in links if d == "L")
    lost = sum(v for s, d, v in links if d == "lost")
    cols = [[("base", "base (live)", fam["base_live"], BLUE)], col1,
            [("L", "reach luastories", L, GREEN), ("new_L", "new in luastories", fam["new_luastories"], ORANGE),
             ("lost", "lost on the way", lost, GREY)]]
    return cols, links


def hist_svg(hp, hc, thr, title, w=280, h=140):
    """Max-r histograms of one edge: parent features (bars) and child features (line); threshold in red."""
    n, m = len(hp), max(max(hp), max(hc), 1)
    x0, x1, y0, y1 = 30, w - 8, h - 22, 20
    sx, sy = (x1 - x0) / n, (y0 - y1) / m
    bars = "".join(f'<rect x="{x0 + b * sx:.1f}" y="{y0 - v * sy:.1f}" width="{sx - 0.5:.1f}" height="{v * sy:.1f}" '
                   f'fill="{BLUE}"/>' for b, v in enumerate(hp) if v)
    pts = " ".join(f"{x0 + b * sx:.1f},{y0 - v * sy:.1f} {x0 + (b + 1) * sx:.1f},{y0 - v * sy:.1f}" for b, v in enumerate(hc))
    xt = x0 + thr * (x1 - x0)
    return (f'<svg width="{w}" height="{h}"><text x="{x0}" y="13" class="t">{esc(title)}</text>{bars}'
            f'<polyline points="{pts}" fill="none" stroke="{ORANGE}" stroke-width="1.5"/>'
            f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{y1}" y2="{y0}" stroke="#d33" stroke-dasharray="3,2"/>'
            f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>'
            f'<text x="{x0}" y="{h - 6}">0</text><text x="{(x0 + x1) / 2 - 8:.0f}" y="{h - 6}">0.5</text>'
            f'<text x="{x1 - 8}" y="{h - 6}">1</text><text x="2" y="{y1 + 8}">{m}</text></svg>')


def sweep_svg(sw, w=520, h=260):
    """The merge sweep: val loss on each domain against t (t = 0: model a), the paper's curves dashed."""
    t, losses = sw["t"], sw.get("losses") or sw.get("loss") or {}
    paper = sw.get("paper") if isinstance(sw.get("paper"), dict) else {}
    ys = [v for d in losses for v in losses[d]] + [v for d in losses for v in paper.get(d, [])]
    lo, hi = min(ys), max(ys)
    x0, x1, y0, y1 = 44, w - 130, h - 30, 12
    X = lambda v: x0 + v * (x1 - x0)
    Y = lambda v: y0 - (v - lo) / max(hi - lo, 1e-9) * (y0 - y1)
    out, colours = [], [BLUE, ORANGE, GREEN, "#8e44ad"]
    for k, d in enumerate(losses):
        c = colours[k % 4]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in zip(t, losses[d])) + '"/>')
        out.append(f'<text x="{x1 + 8}" y="{y1 + 14 + 16 * k}" fill="{c}">{esc(str(d))} (ours)</text>')
        if d in paper and "t" in paper:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-dasharray="4,3" points="'
                       + " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in zip(paper["t"], paper[d])) + '"/>')
    if paper:
        out.append(f'<text x="{x1 + 8}" y="{y1 + 14 + 16 * len(losses)}">dashed: paper</text>')
    ct = sw.get("crossing_t", sw.get("cross_t"))
    if isinstance(ct, (int, float)):
        out.append(f'<line x1="{X(ct):.1f}" x2="{X(ct):.1f}" y1="{y1}" y2="{y0}" stroke="#888" stroke-dasharray="2,2"/>'
                   f'<text x="{X(ct) + 3:.1f}" y="{y1 + 10}">cross {ct:.2f}</text>')
    name = lambda v: v.get("name", "?") if isinstance(v, dict) else str(v)
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/><line x1="{x0}" x2="{x0}" y1="{y1}" y2="{y0}" stroke="#444"/>'
               f'<text x="{x0}" y="{h - 8}">t = 0 ({esc(name(sw.get("a", "a")))})</text>'
               f'<text x="{x1 - 110}" y="{h - 8}">t = 1 ({esc(name(sw.get("b", "b")))})</text>'
               f'<text x="2" y="{y1 + 8}">{hi:.2f}</text><text x="2" y="{y0}">{lo:.2f}</text>')
    return f'<svg width="{w}" height="{h}">' + "".join(out) + "</svg>"


def json_for_script(obj):
    """JSON safe inside <script type="application/json">: no '</script>', no HTML-significant characters."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=common._json_default)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def table(header, rows):
    th = "".join(f"<th>{esc(str(x))}</th>" for x in header)
    return "<table><tr>" + th + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for r in rows) + "</table>"


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Feature tracking report</title>
<script>window.onerror=function(m,s,l){document.documentElement.setAttribute('data-js','error: '+m+' (line '+l+')');};</script>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:20px auto;max-width:1100px;padding:0 12px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px}
.dim{color:#777}svg text{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px}.t{font-weight:bold}
.ctx{font-family:monospace;white-space:pre-wrap;word-break:break-all;border-bottom:1px solid #eee;padding:2px 0}
.mx{display:inline-block;width:58px;color:#777}.persists,.matched{color:%GREEN%}.disappears{color:#b33}.emerges{color:%ORANGE%}
#page{border:1px solid #ccc;padding:6px 12px;margin-top:8px}.lg span{font-family:monospace;margin-right:10px}
.hists svg{margin:4px}details pre{font-size:11px;max-height:300px;overflow:auto}</style></head><body>
<h1>Tracking SAE features through fine-tuning and merging</h1>%BANNER%
<p>%SUMMARY%</p>
<h2>Edges</h2><p>A live parent feature <b>persists</b> when some live child feature correlates with it at r &ge; %THR%
over the same tokens, else it <b>disappears</b>; a live child feature with no such parent <b>emerges</b>; dead features
(never active on the token set) are counted apart. <b>Null</b>: the same between two SAEs of the parent model that differ
only in seed; an edge's persisting fraction means something only against it.</p>%EDGES%
<h3>Null baseline (seed %S0% vs seed %S1% SAE of one model)</h3>%NULL%
<h3>Models and SAEs</h3>%MODELS%
<h2>Feature families</h2>%FAMILY%
<h2>Max correlation per feature</h2><p class="dim">Blue bars: each live parent feature's best r with a child feature;
orange line: each live child feature's best r with a parent feature; red: the threshold.</p><div class="hists">%HISTS%</div>
%SWEEP%
<h2 id="features">Feature pages</h2><div id="sel"></div>
<form id="q">Feature: <select id="qm"></select> <input id="qi" type="number" min="0" value="0" style="width:7em">
<button>show</button></form><div id="page"></div>
<details><summary>Provenance</summary><pre>%PROV%</pre></details>
<script type="application/json" id="data">%DATA%</script>
<script>
const D=JSON.parse(document.getElementById('data').textContent);
function h(t,a,...k){const e=document.createElement(t);for(const n in a||{})e.setAttribute(n,a[n]);for(const c of k)if(c!=null)e.append(c);return e;}
function fl(x,d){return x==null?'-':(+x).toFixed(d==null?3:d);}
function fk(m,i){return h('a',{href:'#'+m+'/'+i},m+'/'+i);}
function tk(id){return String(D.tok[id]??('<'+id+'>')).replace(/\\n/g,'\\u21b5').replace(/\\t/g,'\\u2192');}
function ctxs(key){const P=D.pages[key],b=h('div',{});if(!P.top.length){b.append(h('p',{class:'dim'},'no activating context in the token set'));return b;}
 const mx=Math.max(1e-9,...P.top.map(c=>Math.max(...c[1])));
 for(const c of P.top.slice(0,D.n_show)){const d=h('div',{class:'ctx'},h('span',{class:'mx'},fl(Math.max(...c[1]),2)));
  c[0].forEach((id,t)=>{const s=h('span',{title:'act '+fl(c[1][t])},tk(id));if(c[1][t]>0)s.style.background='rgba(255,140,0,'+Math.min(1,c[1][t]/mx).toFixed(2)+')';d.append(s);});b.append(d);}
 return b;}
function logits(P){const d=h('div',{class:'lg'});for(const [lab,L] of [['promotes',P.pos],['suppresses',P.neg]]){
 const p=h('p',{},h('b',{},lab+': '));for(const [id,v] of L)p.append(h('span',{title:fl(v)},JSON.stringify(tk(id))));d.append(p);}return d;}
function page(key,head){const P=D.pages[key],b=h('div',{});b.append(head);if(!P)return b;
 if(P.expl)b.append(h('p',{},h('b',{},'explanation: '),String(P.expl.explanation||P.expl.error||''),' (score '+fl(P.expl.score,2)+')'));
 b.append(logits(P),ctxs(key));return b;}
function render(key){const pg=document.getElementById('page');pg.replaceChildren();
 const p=String(key).split('/'),m=p[0],i=parseInt(p[1],10);
 if(!(m in D.density)||!(i>=0&&i<D.density[m].length)){pg.append(h('p',{},'no feature '+key));return;}
 const dn=D.density[m][i];pg.append(h('h3',{},'feature '+m+'/'+i));
 pg.append(h('p',{},'active on '+fl(100*dn,3)+'% of the tokens'+(dn===0?' (dead on the token set)':'')));
 const tb=h('table',{},h('tr',{},...['edge','role','best partner','r','status'].map(x=>h('th',{},x))));
 for(const e of D.edges){let j,r,st,role,o;
  if(e.parent===m){j=e.pb[i];r=e.pr[i];role='parent';o=e.child;st=D.status_name[e.ps[i]];}
  else if(e.child===m){j=e.cb[i];r=e.cr[i];role='child';o=e.parent;st=D.status_name[e.cs[i]];}
  else continue;
  tb.append(h('tr',{},h('td',{},e.name),h('td',{},role),h('td',{},j>=0?fk(o,j):'-'),h('td',{},fl(r)),h('td',{class:st},st)));}
 pg.append(tb);const P=D.pages[m+'/'+i];
 if(!P){pg.append(h('p',{class:'dim'},'Contexts and logit effects are stored for the selected features and their partners only.'));return;}
 pg.append(page(m+'/'+i,h('h4',{},'in '+m)));
 for(const [tm,tj,tr,via] of P.trail)pg.append(page(tm+'/'+tj,h('h4',{},'partner in '+tm+': ',fk(tm,tj),' (r = '+fl(tr)+' on '+via+')')));
 if(P.near)pg.append(page(P.near[0]+'/'+P.near[1],h('h4',{},'nearest feature in '+P.near[0]+' (below the threshold): ',fk(P.near[0],P.near[1]),' (r = '+fl(P.near[2])+')')));}
const sl=document.getElementById('sel');
for(const s of D.sel){const d=h('p',{},h('b',{},s.edge));for(const c of ['persisting','disappearing','emerging']){d.append(' | '+c+': ');if(!s[c].length)d.append('none ');for(const k of s[c])d.append(h('a',{href:'#'+k},k),' ');}sl.append(d);}
const qm=document.getElementById('qm');for(const m of D.models)qm.append(h('option',{value:m},m));
document.getElementById('q').addEventListener('submit',ev=>{ev.preventDefault();location.hash=qm.value+'/'+document.getElementById('qi').value;});
window.addEventListener('hashchange',()=>{render(decodeURIComponent(location.hash.slice(1)));document.getElementById('features').scrollIntoView();});
if(location.hash==='#selftest'){for(const k in D.pages)render(k);for(const m of D.models)render(m+'/0');}
render(location.hash.length>1&&location.hash!=='#selftest'?decodeURIComponent(location.hash.slice(1)):D.first);
document.documentElement.setAttribute('data-js',document.documentElement.getAttribute('data-js')||'ok');
</script></body></html>
"""


def render_report(res, pages, sweep):
    """The page from analyze.py's results (results.json), its page data (pages.json) and the merge sweep (or None)."""
    cfg, thr = res["provenance"]["config"], res["threshold"]
    smoke = res["token_set"]["smoke_scale_demo"]
    ts = res["token_set"]
    summary = (f"{ts['n_tokens']:,} evaluation tokens ({ts['n_seq']:,} windows of {ts['block_size']} from the val splits: "
               + esc(", ".join(f"{d} {n}" for d, n in ts["per_domain"].items())) + f"; seed {ts['seed']}), threshold r &ge; {thr}. "
               f"Created {esc(res['provenance']['created'])}.")
    banner = ('<p class="banner"><b>Smoke-scale demo.</b> The data source is the generated sample corpus (data.py '
              '--source sample): tiny models on synthetic text; the numbers show that the pipeline runs, not the '
              'study\'s findings.</p>') if smoke else ""
    edges = table(["edge", "parent live (dead)", "child live (dead)", "persisting", "disappearing", "emerging",
                   "child matched", "pairs >= thr", "one-to-one", "mean decoder cos (1:1)", "null persisting (parent)",
                   "null persisting (child)"],
                  [(n, f"{e['counts']['parent_live']} ({e['counts']['parent_dead']})",
                    f"{e['counts']['child_live']} ({e['counts']['child_dead']})",
                    f"{e['counts']['persisting']} ({e['persisting_frac']:.1%})", e["counts"]["disappearing"],
                    f"{e['counts']['emerging']} ({e['emerging_frac']:.1%})", e["counts"]["child_matched"],
                    e["counts"]["pairs"], e["one_to_one"]["n"], _f(e["one_to_one"]["mean_cos"]),
                    _pct(e["null_parent_persisting_frac"]), _pct(e["null_child_persisting_frac"]))
                   for n, e in res["edges"].items()])
    nul = table(["model", "live s0", "live s1", "persisting s0->s1", "emerging in s1", "one-to-one", "mean decoder cos"],
                [(m, e["counts"]["parent_live"], e["counts"]["child_live"], f"{e['counts']['persisting']} ({e['persisting_frac']:.1%})",
                  f"{e['counts']['emerging']} ({e['emerging_frac']:.1%})", e["one_to_one"]["n"], _f(e["one_to_one"]["mean_cos"]))
                 for m, e in res["null"].items()])
    if res["null_missing"]:
        nul += f"<p>No seed-{cfg['null_seed']} SAE for: {esc(', '.join(res['null_missing']))} (make one with python sae.py --model NAME --seeds 0,1).</p>"
    mods = table(["model", "features", "live", "dead", "median density (live)", "SAE fvu", "SAE L0", "null SAE"],
                 [(m, v["n_features"], v["live"], v["dead"], f"{v['median_density']:.2e}", _f(v["sae_metrics"].get("fvu")),
                   _f(v["sae_metrics"].get("l0"), 1), "yes" if v["null_sae_hash"] else "no") for m, v in res["models"].items()])
    fam = res.get("families")
    if fam:
        c = fam["counts"]
        famh = (f"<p>Live base features ({c['base_live']}) by the fine-tunes they persist into, then whether a chain of "
                f"matches (r &ge; {thr}) carries them into luastories; features new in a fine-tune and new in luastories "
                "flow in too. Counted as features of their model of origin.</p>" + sankey_svg(*family_flow(c)) +
                table(["reaching luastories by", "both paths", "lua path only", "tinystories path only", "neither"],
                      [("base features", *c["paths"].values())]))
    else:
        famh = "<p class='dim'>Needs all four models.</p>"
    hists = "".join(hist_svg(e["hist"]["parent"], e["hist"]["child"], thr, n) for n, e in res["edges"].items())
    hists += "".join(hist_svg(e["hist"]["parent"], e["hist"]["child"], thr, f"null {m} s0->s1") for m, e in res["null"].items())
    sw = (f"<h2>Merge sweep</h2><p>Validation loss of SLERP(a, b, t) on each domain (merge.py --sweep).</p>{sweep_svg(sweep)}"
          if sweep else "")
    data = {"models": list(res["models"]), "n_show": cfg["n_show"], "edges": [],
            "density": {m: v for m, v in res["density"].items()}, "pages": pages["pages"], "tok": pages["tok"],
            "status_name": pages["status_legend"],
            "sel": [{"edge": n, **{c: [f"{m}/{i}" for m, i in v] for c, v in s.items()}} for n, s in res["selection"].items()]}
    for n, e in res["edges"].items():
        data["edges"].append({"name": n, "parent": e["parent"], "child": e["child"], "pb": e["parent_best"]["feature"],
                              "pr": e["parent_best"]["r"], "cb": e["child_best"]["feature"], "cr": e["child_best"]["r"],
                              "ps": pages["status"][n]["parent"], "cs": pages["status"][n]["child"]})
    data["first"] = next((k for s in data["sel"] for c in ("persisting", "disappearing", "emerging") for k in s[c]),
                         f"{data['models'][0]}/0")
    prov = json.dumps(res["provenance"], indent=1, default=common._json_default)
    out = PAGE
    for k, v in (("%GREEN%", GREEN), ("%ORANGE%", ORANGE), ("%BANNER%", banner), ("%SUMMARY%", summary),
                 ("%THR%", str(thr)), ("%EDGES%", edges), ("%S0%", str(cfg["sae_seed"])), ("%S1%", str(cfg["null_seed"])),
                 ("%NULL%", nul), ("%MODELS%", mods), ("%FAMILY%", famh), ("%HISTS%", hists), ("%SWEEP%", sw),
                 ("%PROV%", esc(prov)), ("%DATA%", json_for_script(data))):
        out = out.replace(k, v)
    return out


def _f(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"


def _pct(x):
    return "n/a" if x is None else f"{x:.1%}"


# -----------------------------------------------------------------------------

def write_report(out_dir):
    """Read results.json + pages.json (and the merge sweep when present) and write report.html. Returns its path."""
    adir = os.path.join(out_dir, "analysis")
    paths = {k: os.path.join(adir, f"{k}.json") for k in ("results", "pages")}
    for path in paths.values():
        if not os.path.exists(path):
            die(f"no {path}; run the analysis first: python analyze.py --out_dir {out_dir}")
    res, pages = common.read_json(paths["results"]), common.read_json(paths["pages"])
    sweep_path = os.path.join(out_dir, "merge_sweep.json")
    sweep = common.read_json(sweep_path) if os.path.exists(sweep_path) else None
    out = os.path.join(adir, "report.html")
    common.atomic_write_text(out, render_report(res, pages, sweep))
    return out


def main(argv=None):
    cfg = common.parse_config(dict(config), argv)
    print(f"-> {write_report(cfg['out_dir'])}")


if __name__ == "__main__":
    common.cli(main)
