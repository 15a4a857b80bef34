"""
Feature tracking through fine-tuning and merging (DESIGN.md): which SAE features persist,
disappear and emerge along each parent -> child edge, read against a null baseline, followed as
families across the four models, and shown in an offline HTML report.

    python analyze.py                       # out/analysis/results.json + out/analysis/report.html
    python analyze.py --threshold 0.7 --n_tokens 65536 --explain --api_base http://127.0.0.1:8080/v1

Inputs: out/<model>/ckpt.pt (train.py, merge.py), out/sae_<model>/sae_s0.pt and, for the null
baseline, sae_s1.pt (sae.py --seeds 0,1), data/<domain>/val.bin (data.py), out/merge_sweep.json
(merge.py --sweep; shown when present).

How:
- One evaluation token set: whole block_size windows drawn once (seeded) from the validation
  splits of base, lua and tinystories, run through every model and SAE, so every correlation is
  over the very same tokens.
- One streaming pass in chunks: each model's MLP activations and each SAE's features are computed
  once per chunk and every edge is updated from them. Pearson r comes from running float64 sums
  (x, x^2, y, y^2 and the (F_parent, F_child) matrix x^T y, one matmul per chunk): memory grows
  with F_parent x F_child, never with tokens. Per feature, a running top-k of sequences by their
  max activation; the few sequences the report needs are re-run at the end for token activations.
- Classification at --threshold (DESIGN.md): a live parent feature persists when a live child
  feature has r >= threshold with it, else disappears; a live child feature with no such parent
  emerges; dead features (never active on the token set) are counted apart. A constant feature
  has no defined r: it is 0. Many-to-many matches are every pair >= threshold; the one-to-one
  matching is greedy on r (highest pair first, each feature used once), which never pairs a
  feature with a worse partner while a better free one exists. Matched pairs also get the cosine
  of their decoder directions, a data-free second signal.
- Null baseline: the same classification between the seed-0 and seed-1 SAEs of one model. Two
  SAEs of one model share only part of their features, so an edge's persisting fraction is read
  against its parent's seed0 -> seed1 fraction.
- Families: each live base feature is followed to lua and tinystories, and on to luastories.
"""
import html
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import common
import data as datalib
import sae as saelib
from common import die
from model import load_model

# -----------------------------------------------------------------------------
# default config (paper preset; PRESETS below overrides)
config = dict(
    data_dir="data",
    out_dir="out",              # reads the models and SAEs here, writes out_dir/analysis/
    device="auto",
    models=["base", "lua", "tinystories", "luastories"],  # every edge with both ends here is tracked
    domains=["base", "lua", "tinystories"],  # validation splits the token set is drawn from (equal shares)
    n_tokens=1_048_576,         # evaluation tokens, as whole block_size windows (fewer if the val splits are short)
    min_tokens=2048,            # a smaller token set cannot estimate a correlation: error
    seed=0,                     # token-set (and random-context) seed
    sae_seed=0,                 # the SAEs tracked
    null_seed=1,                # the second SAE per model for the null baseline (sae.py --seeds 0,1)
    threshold=0.8,              # Pearson r for a match (the study's value)
    skip_first=1,               # positions < skip_first are left out, as sae.py leaves them out of training and
                                # metrics (position 0 has no context and outlier norms)
    batch_size=32,              # sequences per chunk
    corr_dtype="float32",       # per-chunk x^T y products (running sums are float64 regardless)
    n_select=6,                 # per edge and category, this many features get a full page
    n_top=20,                   # top contexts kept per feature (running top-k while streaming)
    n_random=10,                # random contexts per model (for --explain)
    ctx_window=64,              # tokens per context window around the max activation
    n_show=8,                   # contexts shown per feature in the report
    max_pairs=200_000,          # many-to-many pairs stored per edge in results.json
    explain=False,              # automated interpretability of the selected features (explain.py)
    api_base="",                # passed to explain.py ("" = its default)
    llm_model="",               # passed to explain.py ("" = its default)
    max_requests=0,             # passed to explain.py (0 = its default)
)
PRESETS = {
    "paper": dict(),
    "tiny": dict(n_tokens=131_072, n_select=4, ctx_window=32),
}
MODELS = ("base", "lua", "tinystories", "luastories")
EDGES = (("base", "lua"), ("base", "tinystories"), ("lua", "luastories"), ("tinystories", "luastories"),
         ("base", "luastories"))
HIST_BINS = np.linspace(0.0, 1.0, 41)


# -----------------------------------------------------------------------------
# streamed correlation

class CorrAccumulator:
    """Pearson r between every column of x (N, Fx) and every column of y (N, Fy), over chunks of rows.

    Running float64 sums of x, x^2, y, y^2 and the (Fx, Fy) matrix x^T y (one matmul per chunk):
    memory O(Fx Fy) whatever the number of rows. Values are shifted by the first row seen before
    summing (r is shift-invariant): var = E[x^2] - E[x]^2 then does not cancel catastrophically for
    features that are rarely zero, and a constant feature (dead included) sums to exactly 0. Each
    chunk's sums and product are taken in mm_dtype (float32: ~1e-6 in r; float64 for a reference)."""

    def __init__(self, fx, fy, device="cpu", mm_dtype=torch.float32):
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)
        self.n, self.mm_dtype, self.cx, self.cy = 0, mm_dtype, None, None
        self.sx, self.sxx, self.sy, self.syy, self.sxy = z(fx), z(fx), z(fy), z(fy), z(fx, fy)

    @torch.no_grad()
    def update(self, x, y):
        if self.cx is None:
            self.cx, self.cy = x[0].to(self.mm_dtype), y[0].to(self.mm_dtype)
        xs, ys = x.to(self.mm_dtype) - self.cx, y.to(self.mm_dtype) - self.cy   # (N, Fx), (N, Fy)
        f64 = torch.float64
        self.sx += xs.sum(0).to(f64)
        self.sxx += (xs * xs).sum(0).to(f64)
        self.sy += ys.sum(0).to(f64)
        self.syy += (ys * ys).sum(0).to(f64)
        self.sxy += (xs.T @ ys).to(f64)                                           # (Fx, Fy)
        self.n += x.shape[0]

    @torch.no_grad()
    def finalize(self):
        """(Fx, Fy) float64 r, 0 where either feature is constant (dead included): r is undefined there."""
        n = self.n
        if n < 2:
            die(f"{n} token(s) cannot estimate a correlation; use a larger --n_tokens")
        mx, my = self.sx / n, self.sy / n
        vx, vy = self.sxx / n - mx * mx, self.syy / n - my * my
        okx, oky = vx > 1e-12 * (self.sxx / n), vy > 1e-12 * (self.syy / n)      # 0 for a constant feature
        r = self.sxy / n
        r.addr_(mx, my, alpha=-1)                                                 # covariance
        r.div_(torch.where(okx, vx, 1.0).sqrt()[:, None]).div_(torch.where(oky, vy, 1.0).sqrt()[None, :])
        r.masked_fill_(~okx[:, None], 0.0).masked_fill_(~oky[None, :], 0.0)
        return r.clamp_(-1.0, 1.0)


# -----------------------------------------------------------------------------
# classification, matching, families (pure functions)

def classify(r, dead_parent, dead_child, threshold):
    """Persisting / disappearing / emerging at threshold, from r (F_parent, F_child).

    Returns numpy arrays: parent_best / parent_best_r (each parent's best live child partner; -1 and 0
    for a dead parent), child_best / child_best_r, boolean masks persisting, disappearing (parents),
    matched_child, emerging (children), dead_parent, dead_child, every pair >= threshold (pairs
    (P, 2), pair_r (P,)), and counts."""
    r = torch.as_tensor(r)
    r = r if r.is_floating_point() else r.double()
    dp = torch.as_tensor(dead_parent, dtype=torch.bool, device=r.device)
    dc = torch.as_tensor(dead_child, dtype=torch.bool, device=r.device)
    hit = (r >= threshold) & ~dp[:, None] & ~dc[None, :]
    pairs = hit.nonzero()                                                         # (P, 2)
    low = torch.finfo(r.dtype).min
    pr, pb = r.masked_fill(dc[None, :], low).max(1)
    cr, cb = r.masked_fill(dp[:, None], low).max(0)
    pb, cb = torch.where(dp | (pr == low), -1, pb), torch.where(dc | (cr == low), -1, cb)
    pr, cr = torch.where(pb < 0, 0.0, pr), torch.where(cb < 0, 0.0, cr)
    persisting, matched = hit.any(1), hit.any(0)
    np_ = lambda t: t.cpu().numpy()
    out = {"parent_best": np_(pb), "parent_best_r": np_(pr.double()), "child_best": np_(cb),
           "child_best_r": np_(cr.double()), "persisting": np_(persisting), "disappearing": np_(~persisting & ~dp),
           "matched_child": np_(matched), "emerging": np_(~matched & ~dc), "dead_parent": np_(dp),
           "dead_child": np_(dc), "pairs": np_(pairs), "pair_r": np_(r[pairs[:, 0], pairs[:, 1]].double())}
    out["counts"] = {"parent_live": int((~dp).sum()), "parent_dead": int(dp.sum()), "child_live": int((~dc).sum()),
                     "child_dead": int(dc.sum()), "persisting": int(out["persisting"].sum()),
                     "disappearing": int(out["disappearing"].sum()), "emerging": int(out["emerging"].sum()),
                     "child_matched": int(matched.sum()), "pairs": len(pairs)}
    return out


def greedy_matching(pairs, pair_r):
    """One-to-one matching from candidate pairs (P, 2) with scores (P,): highest r first, each parent
    and each child used at most once. Returns (pairs (K, 2), r (K,)) in descending r."""
    pairs, pair_r = np.asarray(pairs).reshape(-1, 2), np.asarray(pair_r)
    used_p, used_c, keep = set(), set(), []
    for k in np.argsort(-pair_r, kind="stable"):
        i, j = int(pairs[k, 0]), int(pairs[k, 1])
        if i not in used_p and j not in used_c:
            used_p.add(i)
            used_c.add(j)
            keep.append(k)
    keep = np.asarray(keep, dtype=np.int64)
    return pairs[keep].reshape(-1, 2), pair_r[keep]


def match_one_to_one(r, threshold):
    """Greedy one-to-one matching of the pairs with r >= threshold."""
    r = torch.as_tensor(r)
    pairs = (r >= threshold).nonzero()
    return greedy_matching(pairs.cpu().numpy(), r[pairs[:, 0], pairs[:, 1]].cpu().numpy())


def decoder_cos(W_a, W_b, i, j):
    """Cosine between decoder rows W_a[i] and W_b[j] (index arrays of one length)."""
    i, j = torch.as_tensor(np.asarray(i, dtype=np.int64)), torch.as_tensor(np.asarray(j, dtype=np.int64))
    a = F.normalize(W_a.detach()[i.to(W_a.device)].double(), dim=1)
    b = F.normalize(W_b.detach()[j.to(W_b.device)].double(), dim=1)
    return (a * b).sum(1).cpu().numpy()


FAMILY_CODE = "bit 1: persists into lua, 2: into tinystories, 4: reaches luastories via lua, 8: via tinystories; -1: dead"


def families(cls):
    """Base features followed through lua and through tinystories into luastories.

    cls: classify() outputs keyed 'base->lua', 'base->tinystories', 'lua->luastories',
    'tinystories->luastories'. A base feature reaches luastories via lua when it has a lua partner
    (r >= threshold) that has a luastories partner; likewise via tinystories. Also counts the
    features new in a fine-tune (emerging) that reach luastories, and those new in luastories
    (no partner in either parent). Returns (counts, per-base-feature code, FAMILY_CODE)."""
    bl, bt, lL, tL = (cls[k] for k in ("base->lua", "base->tinystories", "lua->luastories", "tinystories->luastories"))
    live = ~bl["dead_parent"]
    in_l, in_t = bl["persisting"], bt["persisting"]
    via = []
    for e, nxt in ((bl, lL), (bt, tL)):
        v = np.zeros(len(live), dtype=bool)
        p = e["pairs"]
        v[p[:, 0][nxt["persisting"][p[:, 1]]]] = True      # base i -> j in the fine-tune -> some luastories k
        via.append(v)
    via_l, via_t = via
    reach = via_l | via_t
    groups = {"both": in_l & in_t, "lua_only": in_l & ~in_t, "tinystories_only": ~in_l & in_t,
              "neither": live & ~in_l & ~in_t}
    counts = {"base_live": int(live.sum()),
              "fine_tunes": {g: int(m.sum()) for g, m in groups.items()},
              "reach": {g: int((m & reach).sum()) for g, m in groups.items()},
              "paths": {"both": int((via_l & via_t).sum()), "lua_only": int((via_l & ~via_t).sum()),
                        "tinystories_only": int((~via_l & via_t).sum()), "neither": int((live & ~reach).sum())},
              "new_lua": {"n": int(bl["emerging"].sum()), "reach": int((bl["emerging"] & lL["persisting"]).sum())},
              "new_tinystories": {"n": int(bt["emerging"].sum()), "reach": int((bt["emerging"] & tL["persisting"]).sum())},
              "new_luastories": int((~lL["dead_child"] & ~lL["matched_child"] & ~tL["matched_child"]).sum())}
    code = in_l * 1 + in_t * 2 + via_l * 4 + via_t * 8
    return counts, np.where(live, code, -1), FAMILY_CODE


def histogram(best_r, live):
    """Counts of max-r per live feature in HIST_BINS (values below 0 in the first bin)."""
    return np.histogram(np.clip(best_r[live], 0.0, 1.0), bins=HIST_BINS)[0].tolist()


# -----------------------------------------------------------------------------
# streaming helpers

def draw_token_set(arrays, n_tokens, T, seed):
    """Windows of T tokens from each domain's val tokens: n_tokens // T in all, equal shares per domain,
    distinct non-overlapping windows chosen at random (seeded); a short split gives what it has.
    arrays: {domain: 1-D token array}. Returns (seqs (n, T) int64, {domain: windows drawn})."""
    rng = np.random.default_rng(seed)
    n_seq, names = n_tokens // T, list(arrays)
    rows, drawn = [], {}
    for d, name in enumerate(names):
        want, avail = n_seq // len(names) + (d < n_seq % len(names)), len(arrays[name]) // T
        pick = np.sort(rng.choice(avail, size=min(want, avail), replace=False)) if avail else []
        rows += [np.asarray(arrays[name][i * T:(i + 1) * T], dtype=np.int64) for i in pick]
        drawn[name] = len(pick)
    return (np.stack(rows) if rows else np.zeros((0, T), dtype=np.int64)), drawn


def stats_init(n_features, k, device):
    z = lambda *s, dt=torch.float64: torch.zeros(*s, dtype=dt, device=device)
    return {"nnz": z(n_features), "sum": z(n_features), "max": z(n_features, dt=torch.float32), "k": k,
            "top_v": z(0, n_features, dt=torch.float32), "top_i": z(0, n_features, dt=torch.long)}


def stats_update(st, f, seq0, B):
    """Density, mean, max per feature, and the running top-k sequences by max activation. f (B*T, F)."""
    st["nnz"] += (f > 0).sum(0).double()
    st["sum"] += f.sum(0, dtype=torch.float64)
    st["max"] = torch.maximum(st["max"], f.amax(0).float())
    if st["k"]:
        smax = f.reshape(B, -1, f.shape[1]).amax(1).float()                         # (B, F) per-sequence max
        ids = torch.arange(seq0, seq0 + B, device=f.device)[:, None].expand_as(smax)
        v, i = torch.cat([st["top_v"], smax]), torch.cat([st["top_i"], ids])
        st["top_v"], sel = v.topk(min(st["k"], len(v)), dim=0)
        st["top_i"] = i.gather(0, sel)


def window_start(t, T, w):
    """Start of a w-token window showing position t with 3/4 of the window before it."""
    return int(max(0, min(t - (3 * w) // 4, T - w)))


@torch.no_grad()
def collect_contexts(model, sae, seqs, feats, top_seqs, rand, w, batch, device, skip=0):
    """Token windows for features `feats` of one model: each one's top sequences cut to w tokens around
    the max, and the shared random windows rand [(seq, start)]. Re-runs the model on only the
    sequences needed. Returns {feature: {"top": [(ids, acts)] by max act, descending, "random": [...]}}."""
    col = {f: c for c, f in enumerate(feats)}
    want = {}
    for f in feats:
        for s in top_seqs[f]:
            want.setdefault(int(s), []).append((f, None))
    for s, st in rand:
        want.setdefault(int(s), []).append((None, st))
    out = {f: {"top": [], "random": []} for f in feats}
    idx, order, T = torch.tensor(feats, dtype=torch.long, device=device), sorted(want), seqs.shape[1]
    for b in range(0, len(order), batch):
        ids = order[b:b + batch]
        x = torch.from_numpy(seqs[ids]).to(device)
        h = model.mlp_acts(x).reshape(-1, model.args.d_mlp).float()
        a = sae.encode(h)[:, idx].view(len(ids), T, -1).float().cpu().numpy()  # (b, T, n_feats)
        a[:, :skip] = 0.0  # positions left out of the statistics are shown, never counted
        for k, s in enumerate(ids):
            for f, st in want[s]:
                if f is None:
                    for ff, c in col.items():
                        out[ff]["random"].append((seqs[s, st:st + w].tolist(), a[k, st:st + w, c].tolist()))
                else:
                    st = window_start(int(a[k, :, col[f]].argmax()), T, w)
                    out[f]["top"].append((seqs[s, st:st + w].tolist(), a[k, st:st + w, col[f]].tolist()))
    for f in feats:
        out[f]["top"].sort(key=lambda c: -max(c[1]))
    return out


@torch.no_grad()
def logit_effects(model, directions, n=10):
    """Direct logit effect of MLP-space directions (k, d_mlp): through mlp.down (W_out), the final
    norm's gain and the LM head (the RMS scale itself is positive and common to all directions).
    Returns (top ids, top values, bottom ids, bottom values), each (k, n)."""
    v = (directions.float() @ model.mlp.down.weight.float().T) * model.norm_f.weight.float()  # (k, d_model)
    logits = v @ model.lm_head.weight.float().T                                               # (k, vocab)
    n = min(n, logits.shape[1])
    top, bot = logits.topk(n, dim=1), (-logits).topk(n, dim=1)
    return top.indices.cpu().numpy(), top.values.cpu().numpy(), bot.indices.cpu().numpy(), -bot.values.cpu().numpy()


def token_strings(enc, ids):
    out = {}
    for i in sorted(set(int(i) for i in ids)):
        try:
            out[i] = enc.decode_single_token_bytes(i).decode("utf-8", "replace")
        except (KeyError, ValueError):
            out[i] = f"<{i}>"
    return out


def trail(m, i, edges, cls, threshold):
    """The feature followed across models by best partners with r >= threshold, both directions along
    the edges. Returns [(model, feature, r, edge)] of the other models reached."""
    found, todo = {m: (int(i), 1.0, None)}, [m]
    while todo:
        cur = todo.pop(0)
        ci = found[cur][0]
        for name, p, c in edges:
            if p == cur and c not in found:
                other, j, r = c, cls[name]["parent_best"][ci], cls[name]["parent_best_r"][ci]
            elif c == cur and p not in found:
                other, j, r = p, cls[name]["child_best"][ci], cls[name]["child_best_r"][ci]
            else:
                continue
            if j >= 0 and r >= threshold:
                found[other] = (int(j), float(r), name)
                todo.append(other)
    return [(mm, j, r, via) for mm, (j, r, via) in found.items() if mm != m]


def select_features(c, n, dens_p, dens_c):
    """Strongest persisting (highest best r, then density), and the most active disappearing and emerging."""
    pers = np.nonzero(c["persisting"])[0]
    pers = pers[np.lexsort((-dens_p[pers], -c["parent_best_r"][pers]))][:n]
    dis = np.nonzero(c["disappearing"])[0]
    emg = np.nonzero(c["emerging"])[0]
    return {"persisting": pers.tolist(), "disappearing": dis[np.argsort(-dens_p[dis], kind="stable")][:n].tolist(),
            "emerging": emg[np.argsort(-dens_c[emg], kind="stable")][:n].tolist()}


def edge_table(res):
    """The compact results table (README): one row per edge, the null baseline of its parent."""
    rows = [("edge", "parent live", "child live", "persisting", "disappearing", "emerging", "dead p/c",
             "null persisting (parent)")]
    for name, e in res["edges"].items():
        c, nul = e["counts"], e["null_parent_persisting_frac"]
        rows.append((name, c["parent_live"], c["child_live"], f"{c['persisting']} ({e['persisting_frac']:.0%})",
                     c["disappearing"], c["emerging"], f"{c['parent_dead']}/{c['child_dead']}",
                     "n/a (no seed-1 SAE)" if nul is None else f"{nul:.0%}"))
    w = [max(len(str(r[k])) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w[k]) if k == 0 else str(v).rjust(w[k]) for k, v in enumerate(r)) for r in rows)


# -----------------------------------------------------------------------------
# report: inline SVG built here, feature pages built in the browser from embedded JSON

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
  if(e.parent===m){j=e.pb[i];r=e.pr[i];role='parent';o=e.child;st=dn===0?'dead':r>=D.thr?'persists':'disappears';}
  else if(e.child===m){j=e.cb[i];r=e.cr[i];role='child';o=e.parent;st=dn===0?'dead':r>=D.thr?'matched':'emerges';}
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


def render_report(res, pages, tok, smoke, sweep):
    cfg, thr = res["config"], res["threshold"]
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
    data = {"models": list(res["models"]), "thr": thr, "n_show": cfg["n_show"], "edges": [],
            "density": {m: v for m, v in res["density"].items()}, "pages": pages, "tok": tok,
            "sel": [{"edge": n, **{c: [f"{m}/{i}" for m, i in v] for c, v in s.items()}} for n, s in res["selection"].items()]}
    for n, e in res["edges"].items():
        data["edges"].append({"name": n, "parent": e["parent"], "child": e["child"], "pb": e["parent_best"]["feature"],
                              "pr": e["parent_best"]["r"], "cb": e["child_best"]["feature"], "cr": e["child_best"]["r"]})
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


def _r(a, d=4):
    """r rounded down (to within 1e-10), so that a rounded value is >= a threshold of d decimals when r is."""
    return (np.floor(np.asarray(a, dtype=np.float64) * 10 ** d + 1e-6) / 10 ** d).tolist()


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg = common.parse_config(dict(config), argv, presets=PRESETS, preset_default=common.default_preset())
    common.require_positive(cfg, ["batch_size", "n_tokens", "ctx_window", "n_show"])
    thr, out_dir, data_dir = cfg["threshold"], cfg["out_dir"], cfg["data_dir"]
    if not 0.0 < thr <= 1.0:
        die(f"--threshold must be in (0, 1], got {thr}")
    explain = None
    if cfg["explain"]:  # optional: imported only under --explain, and before the long pass
        try:
            import explain
        except ModuleNotFoundError as e:
            if e.name != "explain":
                raise
            die("--explain needs explain.py (automated interpretability) next to analyze.py; it is not there")
        explain.check_key({k: cfg[k] for k in ("api_base",) if cfg[k]})  # before the long pass, not after it
    if cfg["corr_dtype"] not in ("float32", "float64"):
        die(f"--corr_dtype takes float32 or float64, got {cfg['corr_dtype']!r}")
    models = list(dict.fromkeys(cfg["models"]))
    bad = [m for m in models if m not in MODELS]
    if bad:
        die(f"unknown model {bad[0]!r} in --models; choose from {', '.join(MODELS)}")
    edges = [(f"{p}->{c}", p, c) for p, c in EDGES if p in models and c in models]
    if not edges:
        die(f"--models {','.join(models)} contains no parent -> child edge ({', '.join(f'{p}->{c}' for p, c in EDGES)})")
    device = common.pick_device(cfg["device"])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # correlations want full float32 products
    s0, s1 = cfg["sae_seed"], cfg["null_seed"]
    if s0 == s1:
        die(f"--null_seed must differ from --sae_seed ({s0}): the null baseline compares two SAEs of one model")
    print(f"preset {cfg['preset']}, device {device}, threshold {thr}, models {', '.join(models)}")

    # -------------------------------------------------------------------------
    # models and SAEs, with the checks that make their correlations meaningful
    M, S, info = {}, {}, {}
    for m in models:
        M[m], ck = load_model(out_dir, m, device)
        info[m] = {"ckpt": ck, "model_hash": common.sha256_file(os.path.join(out_dir, m, "ckpt.pt"))}
    toks = {m: info[m]["ckpt"].get("tokenizer_hash") for m in models}
    if len(set(toks.values())) > 1:
        die("the models use different tokenizers (" + ", ".join(f"{m} {t}" for m, t in toks.items()) +
            "); train them all from one --data_dir")
    data_tok = datalib.tokenizer_hash(data_dir)
    if data_tok != toks[models[0]]:
        die(f"{data_dir} has tokenizer {data_tok} but the models were trained with {toks[models[0]]}; "
            "pass the --data_dir they were trained on")
    # lineage: a child must descend from the parent checkpoint on disk now (a retrained base or fine-tune
    # makes its children stale, and their correlations would compare unrelated models)
    def ancestors(m, seen=()):
        out = set()
        for par in info[m]["ckpt"].get("parents", []):
            out.add(par["hash"])
            if par["name"] in info and par["name"] not in seen:
                out |= ancestors(par["name"], seen + (m,))
        return out
    for _, p, c in edges:
        if info[p]["model_hash"] not in ancestors(c):
            remake = "python merge.py --overwrite" if c == "luastories" else f"python train.py --domain {c} --overwrite"
            die(f"'{c}' was not made from the current '{p}' checkpoint ({p} was re-made since?); re-make it: {remake}")
    widths = {m: (M[m].args.d_mlp, M[m].args.block_size) for m in models}
    if len(set(widths.values())) > 1:
        die("the models differ in d_mlp / block_size (" + ", ".join(f"{m} {w}" for m, w in widths.items()) +
            "); fine-tunes and merges of one base share its shape")
    d_mlp, T = widths[models[0]]
    null_missing = []
    for m in models:
        for seed in (s0, s1):
            path = saelib.sae_path(out_dir, m, seed)
            if seed == s1 and not os.path.exists(path):
                null_missing.append(m)
                continue
            sae, sck = saelib.load_sae(out_dir, m, seed=seed, device=device)
            saelib.check_sae_matches(sck, info[m]["ckpt"], model_hash=info[m]["model_hash"])
            S[(m, seed)] = sae
            info[m][f"sae{seed}"] = {"hash": common.sha256_file(path), "metrics": sck.get("metrics", {}),
                                     "config": sck.get("config"), "args": sck["sae_args"]}
    nulls = [m for m in models if (m, s1) in S]
    pairs = [(n, (p, s0), (c, s0)) for n, p, c in edges] + [(m, (m, s0), (m, s1)) for m in nulls]

    # -------------------------------------------------------------------------
    # the evaluation token set: drawn once, used by every model
    arrays = {d: datalib.load_tokens(data_dir, d, "val") for d in cfg["domains"]}
    seqs, per_dom = draw_token_set(arrays, cfg["n_tokens"], T, cfg["seed"])
    skip = cfg["skip_first"]
    if not 0 <= skip < T - 1:
        die(f"--skip_first {skip} must be in [0, block_size - 1) = [0, {T - 1})")
    n_seq, n_tok = len(seqs), len(seqs) * (T - skip)  # tokens that enter every statistic
    if n_tok < max(cfg["min_tokens"], 2):
        die(f"the evaluation token set has {n_tok} tokens ({', '.join(f'{d}: {k} windows of {T}' for d, k in per_dom.items())}), "
            f"fewer than the {cfg['min_tokens']} needed to estimate a correlation; prepare more val data "
            f"(python data.py) or raise --n_tokens")
    sources = {d: datalib.read_meta(data_dir, d).get("source") for d in cfg["domains"]}
    smoke = "sample" in sources.values()
    print(f"token set: {n_tok:,} tokens = {n_seq} windows of {T} (positions >= {skip}; " + ", ".join(f"{d} {k}" for d, k in per_dom.items())
          + f") from the val splits, seed {cfg['seed']}" + (f"; asked for {cfg['n_tokens']:,}, the val splits hold fewer"
                                                             if seqs.size < cfg["n_tokens"] - T else ""))
    print("SAEs: " + ", ".join(f"{m} {S[(m, s0)].n_features}" for m in models) + f" features; null baseline (seed {s0} vs "
          f"{s1}) for {', '.join(nulls) or 'no model'}" + (f"; no seed-{s1} SAE for {', '.join(null_missing)}" if null_missing else ""))
    print(f"{len(edges)} edges + {len(nulls)} null pairs, chunks of {cfg['batch_size']} x {T} tokens, "
          f"x^T y in {cfg['corr_dtype']}, sums in float64")

    # -------------------------------------------------------------------------
    # one streaming pass: every model and SAE once per chunk, every pair updated from it
    mm_dtype = torch.float64 if cfg["corr_dtype"] == "float64" else torch.float32
    acc = {n: CorrAccumulator(S[a].n_features, S[b].n_features, device, mm_dtype) for n, a, b in pairs}
    stats = {k: stats_init(S[k].n_features, cfg["n_top"] if k[1] == s0 else 0, device) for k in S}
    B, n_chunks, t0 = cfg["batch_size"], -(-n_seq // cfg["batch_size"]), time.time()
    with torch.no_grad():
        for c, start in enumerate(range(0, n_seq, B)):
            x = torch.from_numpy(seqs[start:start + B]).to(device)                # (b, T)
            f = {}
            for m in models:
                h = M[m].mlp_acts(x)[:, skip:].reshape(-1, d_mlp).float()        # (b*(T-skip), d_mlp)
                for k in ((m, s0), (m, s1)):
                    if k in S:
                        f[k] = S[k].encode(h)                                     # (b*T, n_features)
                        stats_update(stats[k], f[k], start, len(x))
            for n, a, b in pairs:
                acc[n].update(f[a], f[b])
            if (c + 1) % max(1, n_chunks // 10) == 0 or c + 1 == n_chunks:
                done = min(start + B, n_seq) * (T - skip)
                print(f"chunk {c + 1}/{n_chunks}: {done:,} tokens, {done / (time.time() - t0):,.0f} tok/s")
    t_stream = time.time() - t0

    # -------------------------------------------------------------------------
    # classification per pair (one r matrix in memory at a time)
    dens = {k: (st["nnz"] / n_tok).cpu().numpy() for k, st in stats.items()}
    dead = {k: st["nnz"].cpu().numpy() == 0 for k, st in stats.items()}
    cls, out = {}, {}
    for n, a, b in pairs:
        r = acc.pop(n).finalize()
        c = cls[n] = classify(r, dead[a], dead[b], thr)
        del r
        one, one_r = greedy_matching(c["pairs"], c["pair_r"])
        cos1 = decoder_cos(S[a].W_dec, S[b].W_dec, one[:, 0], one[:, 1])
        many = c["pairs"][:cfg["max_pairs"]]
        cosm = decoder_cos(S[a].W_dec, S[b].W_dec, many[:, 0], many[:, 1])
        cn = c["counts"]
        out[n] = {"parent": a[0], "child": b[0], "counts": cn,
                  "persisting_frac": cn["persisting"] / max(cn["parent_live"], 1),
                  "emerging_frac": cn["emerging"] / max(cn["child_live"], 1),
                  "one_to_one": {"n": len(one), "mean_cos": float(cos1.mean()) if len(one) else None,
                                 "pairs": [[int(i), int(j), round(float(rr), 4), round(float(q), 4)]
                                           for (i, j), rr, q in zip(one, one_r, cos1)]},
                  "many_to_many": {"n": cn["pairs"], "truncated": cn["pairs"] > len(many),
                                   "pairs": [[int(i), int(j), round(float(rr), 4), round(float(q), 4)]
                                             for (i, j), rr, q in zip(many, c["pair_r"][:len(many)], cosm)]},
                  "parent_best": {"feature": c["parent_best"].tolist(), "r": _r(c["parent_best_r"])},
                  "child_best": {"feature": c["child_best"].tolist(), "r": _r(c["child_best_r"])},
                  "hist": {"bins": HIST_BINS.round(3).tolist(), "parent": histogram(c["parent_best_r"], ~dead[a]),
                           "child": histogram(c["child_best_r"], ~dead[b])}}
    null = {m: out.pop(m) for m in nulls}
    for n, p, ch in edges:
        out[n]["null_parent_persisting_frac"] = null[p]["persisting_frac"] if p in null else None
        out[n]["null_child_persisting_frac"] = null[ch]["persisting_frac"] if ch in null else None
    fam = None
    if all(m in models for m in MODELS):
        fc, codes, legend = families(cls)
        fam = {"counts": fc, "code": codes.tolist(), "code_legend": legend}

    # -------------------------------------------------------------------------
    # feature pages: selection, trails, contexts (re-running only the needed sequences), logit effects
    selection, page_keys, trails, near = {}, set(), {}, {}
    for n, p, ch in edges:
        sel = select_features(cls[n], cfg["n_select"], dens[(p, s0)], dens[(ch, s0)])
        selection[n] = {"persisting": [(p, i) for i in sel["persisting"]], "disappearing": [(p, i) for i in sel["disappearing"]],
                        "emerging": [(ch, i) for i in sel["emerging"]]}
        for cat, v in selection[n].items():
            for m, i in v:
                page_keys.add((m, i))
                if cat != "persisting":  # the nearest feature across the edge, below the threshold
                    other, side = (ch, "parent") if m == p else (p, "child")
                    j, r = int(cls[n][f"{side}_best"][i]), float(cls[n][f"{side}_best_r"][i])
                    if j >= 0 and r > 0:
                        near[(m, i)] = (other, j, round(r, 4))
                        page_keys.add((other, j))
    for m, i in list(page_keys):
        trails[(m, i)] = trail(m, i, edges, cls, thr)
        page_keys.update((tm, tj) for tm, tj, _, _ in trails[(m, i)])
    rng = np.random.default_rng(cfg["seed"] + 1)
    w = min(cfg["ctx_window"], T)
    rand = [(int(s), int(rng.integers(0, T - w + 1))) for s in rng.choice(n_seq, size=min(cfg["n_random"], n_seq), replace=False)]
    ctx, logit, ids_used = {}, {}, set()
    enc = datalib.load_tokenizer(data_dir)
    with torch.no_grad():
        for m in models:
            feats = sorted(i for mm, i in page_keys if mm == m)
            if not feats:
                continue
            st = stats[(m, s0)]
            top_seqs = {i: [int(s) for s, v in zip(st["top_i"][:, i].tolist(), st["top_v"][:, i].tolist()) if v > 0] for i in feats}
            got = collect_contexts(M[m], S[(m, s0)], seqs, feats, top_seqs, rand, w, B, device, skip)
            ti, tv, bi, bv = logit_effects(M[m], S[(m, s0)].W_dec[torch.tensor(feats, device=S[(m, s0)].W_dec.device)])
            for k, i in enumerate(feats):
                ctx[(m, i)] = got[i]
                logit[(m, i)] = (list(zip(ti[k].tolist(), tv[k].tolist())), list(zip(bi[k].tolist(), bv[k].tolist())))
                ids_used.update(ti[k].tolist() + bi[k].tolist())
                for cc in got[i]["top"] + got[i]["random"]:
                    ids_used.update(cc[0])
    tok = token_strings(enc, ids_used)
    explanations = {}
    if cfg["explain"]:
        feats = [{"key": f"{m}/{i}", "model": m, "feature": int(i),
                  "top": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["top"]],
                  "random": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["random"]]}
                 for m, i in sorted(ctx) if not dead[(m, s0)][i]]
        ecfg = {k: cfg[k] for k in ("api_base", "llm_model", "max_requests") if cfg[k]}
        try:
            explanations = explain.explain_features(feats, {**ecfg, "cache_dir": os.path.join(out_dir, "explain_cache")})
        except common.UserError as e:  # an endpoint problem must not throw the analysis away
            print(f"explain stopped ({e.msg}); writing the analysis without explanations. Answers so far are "
                  f"cached: re-run with --explain to continue")
    q = lambda a: [float(f"{v:.3g}") for v in a]
    pages = {f"{m}/{i}": {"top": [[c[0], q(c[1])] for c in ctx[(m, i)]["top"][:cfg["n_show"]]],
                          "pos": [[t, round(v, 3)] for t, v in logit[(m, i)][0]],
                          "neg": [[t, round(v, 3)] for t, v in logit[(m, i)][1]],
                          "trail": [[tm, tj, round(tr, 4), via] for tm, tj, tr, via in trails.get((m, i), [])],
                          "near": list(near[(m, i)]) if (m, i) in near else None,
                          "expl": explanations.get(f"{m}/{i}")} for m, i in ctx}

    # -------------------------------------------------------------------------
    # results.json and report.html
    sweep_path = os.path.join(out_dir, "merge_sweep.json")
    sweep = common.read_json(sweep_path) if os.path.exists(sweep_path) else None
    res = {"threshold": thr, "matching": "one-to-one: greedy on r (highest first, each feature once); "
                                         "many-to-many: every pair with r >= threshold",
           "token_set": {"n_tokens": int(n_tok), "n_seq": n_seq, "block_size": T, "skip_first": skip, "per_domain": per_dom, "seed": cfg["seed"],
                         "sources": sources, "smoke_scale_demo": smoke},
           "models": {m: {"n_features": S[(m, s0)].n_features, "live": int((~dead[(m, s0)]).sum()),
                          "dead": int(dead[(m, s0)].sum()),
                          "median_density": float(np.median(dens[(m, s0)][~dead[(m, s0)]])) if (~dead[(m, s0)]).any() else 0.0,
                          "model_hash": info[m]["model_hash"], "sae_hash": info[m][f"sae{s0}"]["hash"],
                          "null_sae_hash": info[m].get(f"sae{s1}", {}).get("hash"),
                          "sae_metrics": {k: v for k, v in info[m][f"sae{s0}"]["metrics"].items() if isinstance(v, (int, float))}}
                      for m in models},
           "edges": out, "null": null, "null_missing": null_missing, "families": fam,
           "density": {m: [float(f"{v:.4g}") for v in dens[(m, s0)]] for m in models},
           "selection": {n: {c: [[m, int(i)] for m, i in v] for c, v in s.items()} for n, s in selection.items()},
           "explanations": explanations, "stream_seconds": round(t_stream, 2), "config": cfg,
           "provenance": common.provenance(cfg, models={m: info[m]["model_hash"] for m in models},
                                           saes={m: {f"s{s}": info[m][f"sae{s}"]["hash"] for s in (s0, s1) if f"sae{s}" in info[m]}
                                                 for m in models},
                                           model_configs={m: info[m]["ckpt"].get("config") for m in models},
                                           sae_configs={m: {"args": info[m][f"sae{s0}"]["args"],
                                                            "config": info[m][f"sae{s0}"]["config"]} for m in models},
                                           tokenizer_hash=data_tok, token_set_seed=cfg["seed"],
                                           val_files={d: common.sha256_file(os.path.join(data_dir, d, "val.bin")) for d in cfg["domains"]},
                                           merge_sweep=common.sha256_file(sweep_path) if sweep else None)}
    adir = os.path.join(out_dir, "analysis")
    common.atomic_write_json(os.path.join(adir, "results.json"), {k: v for k, v in res.items() if k != "config"})
    common.atomic_write_text(os.path.join(adir, "report.html"), render_report(res, pages, tok, smoke, sweep))
    print(f"streamed {n_tok:,} tokens through {len(models)} models and {len(S)} SAEs in {t_stream:.1f} s "
          f"({n_tok / max(t_stream, 1e-9):,.0f} tok/s)")
    if fam:
        c = fam["counts"]
        print(f"families: of {c['base_live']} live base features, reach luastories by both paths {c['paths']['both']}, "
              f"lua only {c['paths']['lua_only']}, tinystories only {c['paths']['tinystories_only']}, neither {c['paths']['neither']}")
    print(edge_table(res))
    if smoke:
        print("(smoke-scale demo: the data source is data.py's generated sample)")
    print(f"-> {os.path.join(adir, 'results.json')}\n-> {os.path.join(adir, 'report.html')}")
    return res


if __name__ == "__main__":
    main()
