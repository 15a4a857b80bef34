"""
Feature tracking through fine-tuning and merging: which SAE features persist, disappear and emerge
along each parent -> child edge, read against a null baseline, and followed as families across the
four models. Writes out/analysis/results.json (the findings) and pages.json (what the feature pages
show); report.py renders both into out/analysis/report.html.

    python analyze.py                       # out/analysis/results.json, pages.json, report.html
    python analyze.py --threshold 0.7 --n_tokens 65536 --explain --api_base http://127.0.0.1:8080/v1
    python report.py                        # re-render the report alone

Inputs: out/<model>/ckpt.pt (train.py, merge.py), out/sae_<model>/sae_s0.pt and, for the null
baseline, sae_s1.pt (sae.py --seeds 0,1), data/<domain>/val.bin (data.py), out/merge_sweep.json
(merge.py --sweep; shown when present). When out/analysis already holds what these would give (the same
inputs by hash, settings and code: analysis_current), only the report is re-rendered; --overwrite recomputes.

The method, in the order main() runs it:
1. Load the models and SAEs and check that they belong together: one tokenizer, each child made
   from the parent checkpoint on disk now, each SAE trained on its model.
2. Draw one evaluation token set: whole windows drawn once (seeded) from the validation splits of
   base, lua and tinystories, as long as the SAEs' training windows (sae.py --seq_len, the model's
   block_size by default), run through every model and SAE, so every correlation is over the very
   same tokens, each read with the context its SAE learned from.
3. Stream it in chunks: each model's MLP activations and each SAE's features are computed once per
   chunk and every pair is updated from them. Pearson r comes from running float64 sums (x, x^2,
   y, y^2 and the (F_parent, F_child) matrix x^T y; with --fast, fast.py makes x^T y over the
   co-active feature pairs of each token only where that is cheaper, SAE features being sparse, and
   else as float32 products of features shifted per feature); memory grows with
   F_parent x F_child, never with tokens. Pairs are streamed in groups that fit --memory_gb
   (planned, and checked against the device, before the long pass). Per feature: density, max and
   a running top-k of sequences by their max.
4. Classify each pair at --threshold (DESIGN.md): a live parent feature persists when a live child
   feature has r >= threshold with it, else it disappears; a live child feature with no such parent
   emerges; dead features (never active on the token set) are counted apart. A constant feature
   has no defined r: it is 0. Many-to-many matches are every pair >= threshold; the one-to-one
   matching is greedy on r (highest pair first, each feature used once). The null baseline is the
   same classification between the seed-0 and seed-1 SAEs of one model (and a seed-2 SAE, where it
   exists, gives its seed-to-seed spread). Because one cut cannot say whether an edge differs from
   noise, every pair also gets stability curves: the fraction of live features matched at r >= t for
   t = 0.5 .. 0.95, the same weighted by firing frequency, and the maximum-weight one-to-one matching
   (Hungarian) on r and on decoder cosine (Paulo & Belrose 2025 count cos >= 0.7), each beside its
   null's, the persisting curve also as edge / null ratios (vs_null); and the classification by
   density band (rare / medium / common). Families follow each live base feature to lua and
   tinystories, and on to luastories.
5. Select the examples: per edge and category, features spread over the category's density range,
   alternately the clearest case and the closest call, distinct across edges, each with its reason,
   among the features that fire on >= min_fires tokens with a max >= min_act_frac x their SAE's median
   max (example_rule); and their partners across models.
6. One more pass for every live feature's activation histogram and the occurrences drawn from each
   activation interval; then the examples' top contexts (only the sequences needed are re-run) and
   their direct logit effects; then, in one pass with every model, every live feature's few top and
   interval contexts, and on each of its edges its best partner's activations on the same top windows
   (the report's tracking view), with its logit effects (browse_features).
7. Write results.json, pages.json and the feature browser's side files (out/analysis/features/), and
   render the report (report.py).
One device: every edge's correlations come from the same pass of the models and SAEs, which split
over GPUs each would repeat (DESIGN.md, "Several GPUs").
"""
import json
import os
import time
from dataclasses import dataclass

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common

import numpy as np
import torch
import torch.nn.functional as F

import data as datalib
import fast
import report
import sae as saelib
from common import die
from model import authors_how, command_of, load_model

# -----------------------------------------------------------------------------
# default config (paper preset; PRESETS below overrides)
config = dict(
    data_dir="data",            # token files and tokenizer (data.py)
    out_dir="out",              # reads the models and SAEs here, writes out_dir/analysis/
    device="auto",              # auto = cuda when available, else cpu
    threads=0,                  # CPU threads for torch (0 = the cores free now)
    models=["base", "lua", "tinystories", "luastories"],  # every edge with both ends here is tracked
    domains=["base", "lua", "tinystories"],  # validation splits the token set is drawn from (equal shares)
    n_tokens=1_048_576,         # evaluation tokens, as whole seq_len windows (fewer if the val splits are short)
    min_tokens=2048,            # a smaller token set cannot estimate a correlation: error
    seed=0,                     # token-set (and random-context) seed
    sae_seed=0,                 # the SAEs tracked
    null_seed=1,                # the second SAE per model for the null baseline (sae.py --seeds 0,1)
    spread_seed=2,              # a third SAE per model where it exists (sae.py --seeds 0,1,2): the null's spread (-1: none)
    threshold=0.8,              # Pearson r for a match (the study's value)
    seq_len=0,                  # tokens per token-set window; 0: the SAEs' (sae.py --seq_len: the context they learned)
    skip_first=-1,              # positions < skip_first are left out; -1: the SAEs' (sae.py: 1; position 0: no context)
    batch_size=32,              # sequences per chunk
    memory_gb=8.0,              # device memory the analysis may use: pairs stream in groups that fit (0: all that is free)
    n_select=6,                 # per edge and category, this many features get a full page
    n_top=20,                   # top contexts kept per feature (running top-k while streaming)
    n_random=10,                # random contexts per model (for --explain)
    ctx_window=64,              # tokens per context window around the max activation
    n_intervals=5,              # activation intervals (equal widths up to the max) that page contexts are drawn from
    n_per_interval=2,           # contexts drawn at random from each interval
    hist_bins=30,               # bins of a feature page's activation histogram
    n_show=8,                   # contexts shown per feature in the report
    n_all_top=3,                # every live feature, in the report's feature browser: top contexts kept (features/*.js)
    all_window=16,              # tokens per context window there (and in its tracking view)
    n_all_logits=5,             # logit effects kept there (each way)
    min_fires=20,               # an example fires on at least this many tokens of the token set ...
    min_act_frac=0.1,           # ... and its max activation is at least this fraction of its SAE's median max (live)
    max_pairs=200_000,          # many-to-many pairs stored per edge in results.json
    explain=False,              # automated interpretability of the selected features (explain.py)
    api_base="",                # passed to explain.py ("" = its default)
    llm_model="",               # passed to explain.py ("" = its default)
    max_requests=0,             # passed to explain.py (0 = its default)
    fast=True,                  # speed-ups from fast.py (false: the plain code only, equal results to rounding)
    overwrite=False,            # run again even when out_dir/analysis is current (the same inputs, settings and code)
)
PRESETS = {
    "paper": dict(batch_size=16),  # 16 x 255-token chunks: one pair's sums and a chunk's features fit 8 GB (plan_groups)
    "tiny": dict(n_tokens=131_072, n_select=4, ctx_window=32),
}
CHECKS = {"threads": ">=0", "n_tokens": ">0", "min_tokens": ">=0", "threshold": "(0,1]", "skip_first": ">=-1",
          "seq_len": ">=0", "batch_size": ">0", "n_select": ">=0", "n_top": ">=1",
          "n_random": ">=0", "ctx_window": ">0", "n_show": ">0", "max_pairs": ">=0", "max_requests": ">=0",
          "memory_gb": ">=0", "n_intervals": ">=1", "n_per_interval": ">=0", "hist_bins": ">=1",
          "n_all_top": ">=1", "all_window": ">0", "n_all_logits": ">=1", "min_fires": ">=1", "min_act_frac": ">=0"}
MODELS = ("base", "lua", "tinystories", "luastories")
EDGES = (("base", "lua"), ("base", "tinystories"), ("lua", "luastories"), ("tinystories", "luastories"),
         ("base", "luastories"))
HIST_BINS = np.linspace(0.0, 1.0, 41)
THRESHOLDS = [round(0.5 + 0.05 * k, 2) for k in range(10)]  # the cuts of the stability curves (r, and decoder cosine)
CURVE_MIN = THRESHOLDS[0]   # pairs below this r are never candidates for the curves or the one-to-one matching
COS_RULE = 0.7              # decoder cosine cut after one-to-one matching (Paulo & Belrose 2025)
FROM_SAES = {"seq_len": 0, "skip_first": -1}  # these values of the settings mean: as the SAEs were trained
BANDS = {"rare": (0.0, 1e-3), "medium": (1e-3, 1e-2), "common": (1e-2, 1.01)}  # firing frequency (fraction of tokens)


# -----------------------------------------------------------------------------
# streamed correlation

class CorrAccumulator:
    """Pearson r between every column of x (N, Fx) and every column of y (N, Fy), over chunks
    of rows.

    Five running float64 sums: the column sums of x and x^2 (Fx,), of y and y^2 (Fy,), and the
    (Fx, Fy) product sums x^T y, each chunk's product made in float64. Memory is O(Fx Fy) whatever
    the number of rows. At the end r = cov(x, y) / (sd(x) sd(y)), with cov = E[xy] - E[x] E[y].
    fast.CorrAccumulator makes the same sums with less work (--fast)."""

    def __init__(self, fx, fy, device="cpu"):
        def zeros(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)
        self.n = 0
        self.sx, self.sxx, self.sy, self.syy = zeros(fx), zeros(fx), zeros(fy), zeros(fy)
        self.sxy = zeros(fx, fy)

    @torch.no_grad()
    def update(self, x, y):
        """Add a chunk: x (N, Fx), y (N, Fy)."""
        x, y = x.double(), y.double()
        self.n += len(x)
        self.sx += x.sum(0)
        self.sxx += (x * x).sum(0)
        self.sy += y.sum(0)
        self.syy += (y * y).sum(0)
        self.sxy.addmm_(x.T, y)                                        # += x^T y, in place

    def sums(self):
        """(n, the sums of x, x^2, y, y^2, x^T y): what pearson() makes r from."""
        return self.n, self.sx, self.sxx, self.sy, self.syy, self.sxy

    @staticmethod
    def update_bytes(rows, fx, fy):
        """Peak bytes of one update of rows: float64 copies of x and y and one of their squares."""
        return 8 * rows * (fx + fy + max(fx, fy))


@torch.no_grad()
def pearson(acc):
    """(Fx, Fy) float64 r from an accumulator's sums (this file's or fast.CorrAccumulator's, whose
    shifted sums give the same r: r is shift-invariant), 0 where either feature is constant (dead
    included): r is undefined there. The product sums become r in place (no second (Fx, Fy)
    matrix); the accumulator is spent."""
    n, sx, sxx, sy, syy, sxy = acc.sums()
    if n < 2:
        die(f"{n} token(s) cannot estimate a correlation; use a larger --n_tokens")
    mx, my = sx / n, sy / n
    vx, vy = sxx / n - mx * mx, syy / n - my * my                    # variances
    okx, oky = vx > 1e-12 * (sxx / n), vy > 1e-12 * (syy / n)        # False: constant
    r = sxy.div_(n)
    r.addr_(mx, my, alpha=-1)                                       # covariance
    sdx, sdy = torch.where(okx, vx, 1.0).sqrt(), torch.where(oky, vy, 1.0).sqrt()
    r.div_(sdx[:, None]).div_(sdy[None, :])
    r.masked_fill_(~okx[:, None], 0.0).masked_fill_(~oky[None, :], 0.0)
    return r.clamp_(-1.0, 1.0)


# -----------------------------------------------------------------------------
# classification, stability curves, families (pure functions)

def classify(r, dead_parent, dead_child, threshold):
    """Persisting / disappearing / emerging at threshold, from r (F_parent, F_child).

    Returns numpy arrays: parent_best / parent_best_r (each parent's best live child partner; -1
    and 0 for a dead parent), child_best / child_best_r, boolean masks persisting, disappearing
    (parents), matched_child, emerging (children), dead_parent, dead_child, every pair >= threshold
    (pairs (P, 2), pair_r (P,)), every pair >= min(CURVE_MIN, threshold) (cand, cand_r), and
    counts."""
    r = torch.as_tensor(r)
    r = r if r.is_floating_point() else r.double()
    dp = torch.as_tensor(dead_parent, dtype=torch.bool, device=r.device)
    dc = torch.as_tensor(dead_child, dtype=torch.bool, device=r.device)
    live = ~dp[:, None] & ~dc[None, :]
    hit = (r >= threshold) & live
    pairs = hit.nonzero()                                                         # (P, 2)
    # for the curves, one-to-one
    cand = ((r >= min(CURVE_MIN, threshold)) & live).nonzero()
    low = torch.finfo(r.dtype).min
    pr, pb = r.masked_fill(dc[None, :], low).max(1)
    cr, cb = r.masked_fill(dp[:, None], low).max(0)
    pb, cb = torch.where(dp | (pr == low), -1, pb), torch.where(dc | (cr == low), -1, cb)
    pr, cr = torch.where(pb < 0, 0.0, pr), torch.where(cb < 0, 0.0, cr)
    persisting, matched = hit.any(1), hit.any(0)
    np_ = lambda t: t.cpu().numpy()
    out = {"parent_best": np_(pb), "parent_best_r": np_(pr.double()), "child_best": np_(cb),
           "child_best_r": np_(cr.double()), "persisting": np_(persisting),
           "disappearing": np_(~persisting & ~dp),
           "matched_child": np_(matched), "emerging": np_(~matched & ~dc), "dead_parent": np_(dp),
           "dead_child": np_(dc), "pairs": np_(pairs),
           "pair_r": np_(r[pairs[:, 0], pairs[:, 1]].double()),
           "cand": np_(cand), "cand_r": np_(r[cand[:, 0], cand[:, 1]].double())}
    out["counts"] = {"parent_live": int((~dp).sum()), "parent_dead": int(dp.sum()),
                     "child_live": int((~dc).sum()),
                     "child_dead": int(dc.sum()), "persisting": int(out["persisting"].sum()),
                     "disappearing": int(out["disappearing"].sum()),
                     "emerging": int(out["emerging"].sum()),
                     "child_matched": int(matched.sum()), "pairs": len(pairs)}
    return out


def decoder_cos(W_a, W_b, i, j):
    """Cosine between decoder rows W_a[i] and W_b[j] (index arrays of one length)."""
    i, j = torch.as_tensor(np.asarray(i, dtype=np.int64)), torch.as_tensor(np.asarray(j, dtype=np.int64))
    a = F.normalize(W_a.detach()[i.to(W_a.device)].double(), dim=1)
    b = F.normalize(W_b.detach()[j.to(W_b.device)].double(), dim=1)
    return (a * b).sum(1).cpu().numpy()


@torch.no_grad()
def decoder_cos_pairs(W_a, W_b, live_a, live_b, min_cos, rows=4096):
    """Every pair of live features whose decoder directions have cosine >= min_cos: (pairs (P, 2), cos (P,)).
    Row blocks keep the (F_a, F_b) cosine matrix out of memory."""
    a = F.normalize(W_a.detach().float(), dim=1)
    b = F.normalize(W_b.detach().float(), dim=1)
    la = torch.as_tensor(live_a, device=a.device)
    lb = torch.as_tensor(live_b, device=b.device)
    pairs, vals = [], []
    for start in range(0, len(a), rows):
        cos = a[start:start + rows] @ b.T                                                     # (rows, F_b)
        hit = ((cos >= min_cos) & la[start:start + rows, None] & lb[None, :]).nonzero()
        pairs.append((hit + torch.tensor([start, 0], device=hit.device)).cpu())
        vals.append(cos[hit[:, 0], hit[:, 1]].double().cpu())
    return torch.cat(pairs).numpy(), torch.cat(vals).numpy()


def stability(c, dens_p, dens_c, match_r, match_cos):
    """How many features are found again, as a function of the cut (THRESHOLDS, r from 0.5 to 0.95):
    parent: fraction of live parent features with a live child partner at r >= t (persisting at t);
    child: fraction of live child features matched at t; *_weighted: the same weighted by firing
    frequency (the share of all feature firings that is matched); one_to_one_r: fraction of live parent
    features in the maximum-weight one-to-one matching on r (Hungarian, max_weight_matching) with r >= t;
    one_to_one_cos: the same matching on decoder cosine, with cos >= t (cos_rule: the 0.7 cut of Paulo &
    Belrose 2025, whose cross-seed figures it compares with)."""
    live_p, live_c = ~c["dead_parent"], ~c["dead_child"]
    n_p, n_c = max(int(live_p.sum()), 1), max(int(live_c.sum()), 1)
    w_p, w_c = np.where(live_p, dens_p, 0.0), np.where(live_c, dens_c, 0.0)

    def frac(mask, n):
        return round(float(mask.sum()) / n, 5)

    def weighted(mask, w):
        return round(float(w[mask].sum() / max(w.sum(), 1e-300)), 5)
    pr, cr = c["parent_best_r"], c["child_best_r"]
    return {"thresholds": THRESHOLDS,
            "parent": [frac(live_p & (pr >= t), n_p) for t in THRESHOLDS],
            "child": [frac(live_c & (cr >= t), n_c) for t in THRESHOLDS],
            "parent_weighted": [weighted(live_p & (pr >= t), w_p) for t in THRESHOLDS],
            "child_weighted": [weighted(live_c & (cr >= t), w_c) for t in THRESHOLDS],
            "one_to_one_r": [frac(match_r >= t, n_p) for t in THRESHOLDS],
            "one_to_one_cos": [frac(match_cos >= t, n_p) for t in THRESHOLDS],
            "cos_rule": {"cos": COS_RULE, "matched": int((match_cos >= COS_RULE).sum()),
                         "rate": frac(match_cos >= COS_RULE, n_p)}}


def density_bands(c, dens_p, dens_c):
    """The classification split by firing frequency (BANDS): parents by their density, children by theirs."""
    out = {}
    for band, (lo, hi) in BANDS.items():
        par = ~c["dead_parent"] & (dens_p >= lo) & (dens_p < hi)
        chi = ~c["dead_child"] & (dens_c >= lo) & (dens_c < hi)
        n_p, n_c = int(par.sum()), int(chi.sum())
        pers, emg = int((c["persisting"] & par).sum()), int((c["emerging"] & chi).sum())
        out[band] = {"density": [lo, hi], "parent_live": n_p, "persisting": pers, "disappearing": n_p - pers,
                     "persisting_frac": round(pers / n_p, 5) if n_p else None, "child_live": n_c, "emerging": emg,
                     "emerging_frac": round(emg / n_c, 5) if n_c else None}
    return out


FAMILY_CODE = "bit 1: persists into lua, 2: into tinystories, 4: reaches luastories via lua, 8: via tinystories; -1: dead"


def families(cls):
    """Base features followed through lua and through tinystories into luastories.

    cls: classify() outputs keyed 'base->lua', 'base->tinystories', 'lua->luastories',
    'tinystories->luastories'. A base feature reaches luastories via lua when it has a lua partner
    (r >= threshold) that has a luastories partner; likewise via tinystories. Also counts the
    features new in a fine-tune (emerging) that reach luastories, and those new in luastories
    (no partner in either parent). Returns (counts, per-base-feature code, FAMILY_CODE)."""
    bl, bt, lL, tL = (cls[k] for k in ("base->lua", "base->tinystories", "lua->luastories",
                                       "tinystories->luastories"))
    live = ~bl["dead_parent"]
    in_l, in_t = bl["persisting"], bt["persisting"]
    via = []
    for e, nxt in ((bl, lL), (bt, tL)):
        v = np.zeros(len(live), dtype=bool)
        p = e["pairs"]
        # base i -> j in the fine-tune -> some luastories k
        v[p[:, 0][nxt["persisting"][p[:, 1]]]] = True
        via.append(v)
    via_l, via_t = via
    reach = via_l | via_t
    groups = {"both": in_l & in_t, "lua_only": in_l & ~in_t, "tinystories_only": ~in_l & in_t,
              "neither": live & ~in_l & ~in_t}
    counts = {"base_live": int(live.sum()),
              "fine_tunes": {g: int(m.sum()) for g, m in groups.items()},
              "reach": {g: int((m & reach).sum()) for g, m in groups.items()},
              "paths": {"both": int((via_l & via_t).sum()), "lua_only": int((via_l & ~via_t).sum()),
                        "tinystories_only": int((~via_l & via_t).sum()),
                        "neither": int((live & ~reach).sum())},
              "new_lua": {"n": int(bl["emerging"].sum()),
                          "reach": int((bl["emerging"] & lL["persisting"]).sum())},
              "new_tinystories": {"n": int(bt["emerging"].sum()),
                                  "reach": int((bt["emerging"] & tL["persisting"]).sum())},
              "new_luastories": int((~lL["dead_child"] & ~lL["matched_child"]
                                     & ~tL["matched_child"]).sum())}
    code = in_l * 1 + in_t * 2 + via_l * 4 + via_t * 8
    return counts, np.where(live, code, -1), FAMILY_CODE


def histogram(best_r, live):
    """Counts of max-r per live feature in HIST_BINS (values below 0 in the first bin)."""
    return np.histogram(np.clip(best_r[live], 0.0, 1.0), bins=HIST_BINS)[0].tolist()


# -----------------------------------------------------------------------------
# one-to-one matchings (greedy; the Hungarian method; fast.max_weight_matching is the fast twin)

def greedy_matching(pairs, pair_r):
    """One-to-one matching from candidate pairs (P, 2) with scores (P,): highest r first, each
    parent and each child used at most once. Returns (pairs (K, 2), r (K,)) in descending r."""
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


def linear_sum_assignment(cost):
    """Minimum-cost assignment (the Hungarian method as shortest augmenting paths: Jonker &
    Volgenant 1987, with the dual update after each search of Crouse 2016): each row of cost (n, m),
    n <= m (else transposed), gets a distinct column. Returns (rows, cols) as
    scipy.optimize.linear_sum_assignment does. numpy only; one vectorised relaxation over the
    columns per step of a search."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = linear_sum_assignment(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    u, v = np.zeros(n), np.zeros(m)                      # dual potentials
    col_of, row_of = np.full(n, -1), np.full(m, -1)      # the assignment, both ways
    path = np.zeros(m, dtype=np.int64)                   # the row each column was reached from
    for cur in range(n):                                 # Dijkstra from row cur to a free column
        shortest = np.full(m, np.inf)                    # shortest reduced path to each column
        final = np.zeros(m, dtype=bool)                  # columns whose shortest path is known
        rows_seen, i, min_val, sink = [cur], cur, 0.0, -1
        while sink < 0:
            reduced = min_val + cost[i] - u[i] - v        # paths that go on through row i
            better = (reduced < shortest) & ~final
            shortest[better], path[better] = reduced[better], i
            open_ = np.where(final, np.inf, shortest)
            min_val = open_.min()
            ties = np.flatnonzero(open_ == min_val)
            # among equals, a free column ends the search
            free = ties[row_of[ties] < 0]
            j = int(free[0] if len(free) else ties[0])
            final[j] = True
            if row_of[j] < 0:
                sink = j
            else:
                i = int(row_of[j])
                rows_seen.append(i)
        u[cur] += min_val                                 # keep the reduced costs >= 0 on the tree
        others = np.asarray(rows_seen[1:], dtype=np.int64)
        u[others] += min_val - shortest[col_of[others]]
        v[final] -= min_val - shortest[final]
        j = sink                                          # augment along the path
        while True:
            i = int(path[j])
            row_of[j] = i
            col_of[i], j = j, col_of[i]
            if i == cur:
                break
    return np.arange(n), col_of.copy()


def max_weight_matching(pairs, weights):
    """One-to-one matching of candidate pairs (P, 2) that maximises the summed weight (P,): the
    Hungarian method once on the (rows in pairs) x (columns in pairs) weight matrix, where a pair
    that is not a candidate weighs 0 and is never kept. Returns (pairs (K, 2), weights (K,) in
    descending weight, 0: components matched greedily, which only fast.max_weight_matching has)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64)
    if not len(pairs):
        return pairs, weights, 0
    rows, r_inv = np.unique(pairs[:, 0], return_inverse=True)
    cols, c_inv = np.unique(pairs[:, 1], return_inverse=True)
    w = np.zeros((len(rows), len(cols)))
    w[r_inv, c_inv] = weights
    at = np.full(w.shape, -1, dtype=np.int64)                  # the candidate at each cell
    at[r_inv, c_inv] = np.arange(len(pairs))
    ri, ci = linear_sum_assignment(-w)
    keep = [int(at[a, b]) for a, b in zip(ri, ci) if at[a, b] >= 0]
    keep = np.asarray(sorted(keep, key=lambda k: -weights[k]), dtype=np.int64)
    return pairs[keep], weights[keep], 0


# -----------------------------------------------------------------------------
# streaming helpers

def stats_init(n_features, k, device):
    """Per-feature statistics of one SAE over the token set: firing count, max, and the top-k sequences."""
    return {"nnz": torch.zeros(n_features, dtype=torch.float64, device=device),
            "max": torch.zeros(n_features, device=device), "k": k,
            "top_v": torch.zeros(0, n_features, device=device),
            "top_i": torch.zeros(0, n_features, dtype=torch.long, device=device)}


def stats_update(stats, feats, seq0, n_seq):
    """Add a chunk of n_seq sequences starting at seq0, feats (n_seq * positions, F): firing counts, max per
    feature, and the running top-k sequences by their max activation."""
    stats["nnz"] += (feats > 0).sum(0, dtype=torch.int32)                          # firing counts (F,)
    stats["max"] = torch.maximum(stats["max"], feats.amax(0).float())
    if stats["k"]:
        seq_max = feats.reshape(n_seq, -1, feats.shape[1]).amax(1).float()          # (n_seq, F)
        ids = torch.arange(seq0, seq0 + n_seq, device=feats.device)[:, None].expand_as(seq_max)
        values, seqs = torch.cat([stats["top_v"], seq_max]), torch.cat([stats["top_i"], ids])
        stats["top_v"], best = values.topk(min(stats["k"], len(values)), dim=0)
        stats["top_i"] = seqs.gather(0, best)


def encode_at(sae, x, idx, use_fast):
    """sae.encode(x)[:, idx] (N, k), the features of the pages; fast.encode_features makes those k only."""
    return fast.encode_features(sae, x, idx) if use_fast else sae.encode(x)[:, idx]


def window_start(t, T, w):
    """Start of a w-token window showing position t (an int, or a tensor of them) with 3/4 of the window
    before it."""
    start = (torch.as_tensor(t) - (3 * w) // 4).clamp(0, T - w)
    return start if torch.is_tensor(t) else int(start)


@torch.no_grad()
def collect_contexts(model, sae, seqs, feats, wants, width, batch, device, skip=0, use_fast=False):
    """Token windows of `width` for features `feats` of one model, re-running only the sequences asked for.
    wants: {seq: [(feature, kind, pos)]}: pos None = around the feature's max in that sequence; feature None
    = a shared window starting at pos, shown for every feature. Returns {feature: {kind: [(ids, acts)]}}
    ((ids, acts, k) with k the position of pos in the window when a position was asked for), "top" sorted by
    max activation, descending."""
    col = {f: c for c, f in enumerate(feats)}
    out = {f: {"top": [], "random": []} for f in feats}
    idx, order, T = torch.tensor(feats, dtype=torch.long, device=device), sorted(wants), seqs.shape[1]
    for start, h in saelib.mlp_activations(model, seqs[order], batch, device, use_fast=use_fast):  # (b, T, d_mlp)
        ids = order[start:start + len(h)]
        acts = encode_at(sae, h.reshape(-1, h.shape[-1]), idx, use_fast)
        acts = acts.view(len(ids), T, -1).float().cpu().numpy()                    # (b, T, k)
        acts[:, :skip] = 0.0  # positions left out of the statistics are shown, never counted
        for row, s in enumerate(ids):
            for f, kind, pos in wants[s]:
                for ff in (feats if f is None else [f]):
                    c = col[ff]
                    st = pos if f is None else window_start(int(acts[row, :, c].argmax()) if pos is None else pos, T, width)
                    window = (seqs[s, st:st + width].tolist(), acts[row, st:st + width, c].tolist())
                    if f is not None and pos is not None:
                        window += (pos - st,)                                     # the drawn token in the window
                    out[ff].setdefault(kind, []).append(window)
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


def select_features(c, n, threshold, dens_p, dens_c, names, taken, allowed=None):
    """The report's examples for one edge: per category, n features spread over the category's density
    quantiles (the features split by density into n equal groups, one from each), within a group alternately
    the clearest case (farthest from the threshold on its side) and the closest call, never a feature that
    is an example on another edge already (taken: set of (model, i), updated). allowed: {model: bool (F,)}, the
    features active enough to be an example (select_pages: a firing count and a max activation); None = all.
    Returns {category: [(model, feature, reason)]}."""
    parent, child = names
    cats = {"persisting": (c["persisting"], c["parent_best_r"], dens_p, parent),
            "disappearing": (c["disappearing"], c["parent_best_r"], dens_p, parent),
            "emerging": (c["emerging"], c["child_best_r"], dens_c, child)}
    out = {}
    for cat, (mask, best, dens, model) in cats.items():
        mask = mask if allowed is None else mask & allowed[model]
        idx = np.array([i for i in np.nonzero(mask)[0] if (model, int(i)) not in taken], dtype=np.int64)
        side = 1.0 if cat == "persisting" else -1.0                                  # side * (r - threshold) >= 0
        picks = []
        groups = np.array_split(idx[np.argsort(dens[idx], kind="stable")], n) if len(idx) and n else []
        for q, group in enumerate(groups):
            if not len(group):
                continue
            m_group = side * (best[group] - threshold)
            clear = q % 2 == 0
            i = int(group[np.argmax(m_group) if clear else np.argmin(m_group)])
            how = "the clearest case" if clear else "the closest call"
            picks.append((model, i, f"density group {q + 1}/{len(groups)} of the {len(idx)} {cat} features that can "
                                    f"be examples (active enough, no example on another edge; fires on "
                                    f"{dens[i]:.2%} of tokens), {how}: best r {best[i]:.4f}, "
                                    f"{abs(best[i] - threshold):.4f} {'above' if best[i] >= threshold else 'below'} "
                                    f"the threshold"))
            taken.add((model, i))
        out[cat] = picks
    return out


def edge_table(res):
    """The compact results table (printed at the end): one row per edge, the null baseline of its parent."""
    rows = [("edge", "parent live", "child live", "persisting", "disappearing", "emerging", "dead p/c",
             "null persisting (parent)")]
    for name, e in res["edges"].items():
        c, nul = e["counts"], e["null_parent_persisting_frac"]
        rows.append((name, c["parent_live"], c["child_live"], f"{c['persisting']} ({e['persisting_frac']:.0%})",
                     c["disappearing"], c["emerging"], f"{c['parent_dead']}/{c['child_dead']}",
                     "n/a (no seed-1 SAE)" if nul is None else f"{nul:.0%}"))
    w = [max(len(str(r[k])) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w[k]) if k == 0 else str(v).rjust(w[k]) for k, v in enumerate(r)) for r in rows)


def rounded(a, d=4):
    return np.round(np.asarray(a, dtype=np.float64), d).tolist()


# -----------------------------------------------------------------------------
# device memory: the correlation sums are F_parent x F_child float64 per pair

def memory_need(sizes, rows, d_mlp, n_models, sae_features, weights, use_fast=True):
    """Peak device bytes of streaming and then classifying one group of pairs at once.
    sizes: [(F_parent, F_child)] of the group's pairs; rows: tokens per chunk; n_models / sae_features
    ([F] of the SAEs run): what one pass computes; weights: bytes of the models and SAEs on the device.
    - the group's sums: 8 Fp Fc per pair (float64 x^T y) and its column sums;
    - a chunk: the models' MLP activations (4 rows d_mlp each) and the SAE features one pair needs plus
      the one SAE being encoded (4 rows F each); then the pair's update (CorrAccumulator.update_bytes,
      or with use_fast fast.CorrAccumulator's);
    - classifying a pair (the group's other sums still held; r is made in place): classify's masked copy
      (8 Fp Fc) and boolean masks (4 Fp Fc: live pairs, hits, candidates, slack), and a 4,096-row block of
      decoder cosines; without use_fast, the plain one-to-one matching's dense weights, their indices and
      the solver's cost copy (32 Fp Fc, on the host: counted whatever the device, to be safe)."""
    sums = sum(8 * a * b + 32 * (a + b) for a, b in sizes)
    feats = 4 * rows * (sum(a + b for a, b in sizes) + max(sae_features, default=0))
    Acc = fast.CorrAccumulator if use_fast else CorrAccumulator
    update = max(Acc.update_bytes(rows, a, b) for a, b in sizes)
    chunk = 4 * rows * d_mlp * n_models + feats + update
    classify = max(12 * a * b + 4 * 4096 * b + (0 if use_fast else 32 * a * b) for a, b in sizes)
    return weights + sums + max(chunk, classify)


def plan_groups(cfg, study, device):
    """The pairs in groups streamed one pass each, as many per pass as fit --memory_gb (and the device's
    free memory), checked before the long pass: a single pair that does not fit is a one-line error."""
    rows = cfg["batch_size"] * (cfg["seq_len"] - cfg["skip_first"])
    size = {k: sae.n_features for k, sae in study.sae.items()}
    weights = sum(p.numel() * p.element_size() for mod in list(study.model.values()) + list(study.sae.values())
                  for p in mod.parameters())
    free = common.device_free_bytes(device)
    budget = cfg["memory_gb"] * 2 ** 30 if cfg["memory_gb"] > 0 else free
    budget = min(budget, free) if budget and free else budget or free or float("inf")

    def need(group):
        return memory_need([(size[a], size[b]) for _, a, b in group], rows, study.d_mlp, len(study.models),
                           list(size.values()), weights, cfg["fast"])
    groups = []
    for pair in study.pairs:
        if groups and need(groups[-1] + [pair]) <= budget:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    worst = max(need(g) for g in groups)
    if worst > budget:
        gb = lambda b: f"{b / 2 ** 30:.1f} GB"
        by_flag = cfg["memory_gb"] > 0 and cfg["memory_gb"] * 2 ** 30 <= (free or float("inf"))
        limit = f"--memory_gb {cfg['memory_gb']:g}" if by_flag else f"{gb(free)} free on {device}"
        die(f"the analysis needs {gb(worst)} of {device} memory for one pair of SAEs, more than {limit}; use a smaller "
            f"--batch_size, fewer --models, a larger --memory_gb if the device has it, or --device cpu")
    return groups, worst


# -----------------------------------------------------------------------------
# the study's steps, in the order main() runs them

@dataclass
class Study:
    """The models and SAEs under study, checked to belong together (load_study)."""
    models: list           # model names, in --models order
    edges: list            # [(name 'parent->child', parent, child)] with both ends in models
    model: dict            # name -> Transformer (eval mode)
    sae: dict              # (name, seed) -> SAE; sae_seed always, null_seed / spread_seed where those SAEs exist
    info: dict             # name -> {"ckpt", "model_hash", "sae<seed>": {hash, metrics, config, args}}
    nulls: list            # models with both SAE seeds: their seed-null pair is tracked
    null_missing: list     # models without a null_seed SAE
    spread: list           # models with a spread_seed SAE too: the null's seed-to-seed spread
    pairs: list            # [(name, (model, seed), (model, seed))]: the edges, the seed-nulls, the spread pairs
    d_mlp: int
    block_size: int
    tokenizer_hash: str    # the models' tokenizer; the token files are checked against it (data.open_tokens)
    enc: object = None     # data_dir's tokenizer, checked against tokenizer_hash before the pass (main)


def sae_seeds(cfg):
    """The SAE seeds a model's tracking reads: sae_seed, null_seed and spread_seed (unless -1)."""
    return [cfg["sae_seed"], cfg["null_seed"]] + ([cfg["spread_seed"]] if cfg["spread_seed"] >= 0 else [])


def settings(argv):
    """The config, checked; and explain.py when --explain asks for it (its API key checked before the long pass)."""
    cfg = common.parse_config(dict(config), argv, presets=PRESETS, preset_default=common.default_preset(), checks=CHECKS)
    seeds = sae_seeds(cfg)
    if len(set(seeds)) < len(seeds):
        die(f"--sae_seed, --null_seed and --spread_seed must differ (got {', '.join(map(str, seeds))}): the null "
            f"baseline compares SAEs of one model that differ in seed")
    bad = [m for m in cfg["models"] if m not in MODELS]
    if bad:
        die(f"unknown model {bad[0]!r} in --models; choose from {', '.join(MODELS)}")
    explain = None
    if cfg["explain"]:  # optional: imported only under --explain, and before the long pass
        try:
            import explain
        except ModuleNotFoundError as e:
            if e.name != "explain":
                raise
            die("--explain needs explain.py (automated interpretability) next to analyze.py; it is not there")
        ecfg = {k: cfg[k] for k in ("api_base",) if cfg[k]}
        explain.check_key(ecfg)  # before the long pass, not after it
        explain.check_reachable(ecfg)
    return cfg, explain


def check_lineage(info, edges, out_dir):
    """A child must descend from the parent checkpoint on disk now: a retrained base or fine-tune makes its
    children stale, and their correlations would compare unrelated models. The fix remakes the child with
    what made it: train.py, or merge.py with its merge's settings, or authors.py in a study of the authors' models
    (out_dir: the study's)."""
    def ancestors(name, seen=()):
        found = set()
        for par in info[name]["ckpt"].get("parents", []):
            found.add(par["hash"])
            if par["name"] in info and par["name"] not in seen:
                found |= ancestors(par["name"], seen + (name,))
        return found
    for _, parent, child in edges:
        if info[parent]["model_hash"] not in ancestors(child):
            ck = info[child]["ckpt"]
            remake = authors_how(out_dir, child, ck) or command_of(child, ck)  # (authors_how: None unless it made it)
            die(f"'{child}' was not made from the current '{parent}' checkpoint ({parent} was re-made since?); "
                f"re-make it: {remake} --overwrite")


def load_saes(cfg, info, models, device, hashes):
    """Every model's SAEs: sae_seed (required), null_seed and spread_seed (where they exist), each checked
    against its model (hashes: input_hashes' of the SAE files). Returns ({(model, seed): SAE}, models without
    a null_seed SAE)."""
    s0, s1 = cfg["sae_seed"], cfg["null_seed"]
    saes, null_missing = {}, []
    for m in models:
        for seed in sae_seeds(cfg):
            path = saelib.sae_path(cfg["out_dir"], m, seed)
            if seed != s0 and not os.path.exists(path):
                if seed == s1:
                    null_missing.append(m)
                continue
            sae, sck = saelib.load_sae(cfg["out_dir"], m, seed=seed, device=device)
            saelib.check_sae_matches(sck, info[m]["ckpt"], model_hash=info[m]["model_hash"], path=path)
            saes[(m, seed)] = sae
            info[m][f"sae{seed}"] = {"hash": hashes.get(m, {}).get(f"s{seed}") or common.sha256_file(path),
                                     "metrics": sck.get("metrics", {}),
                                     "config": sck.get("config"), "args": sck["sae_args"]}
    return saes, null_missing


def load_study(cfg, device, hashes):
    """Step 1: the models and SAEs, with the checks that make their correlations meaningful. hashes:
    input_hashes, taken just before (each file is read once more only where it had none then)."""
    models, out_dir = list(dict.fromkeys(cfg["models"])), cfg["out_dir"]
    edges = [(f"{p}->{c}", p, c) for p, c in EDGES if p in models and c in models]
    if not edges:
        die(f"--models {','.join(models)} contains no parent -> child edge ({', '.join(f'{p}->{c}' for p, c in EDGES)})")
    net, info = {}, {}
    for m in models:
        net[m], ckpt = load_model(out_dir, m, device)
        info[m] = {"ckpt": ckpt, "model_hash": hashes["models"].get(m)
                   or common.sha256_file(os.path.join(out_dir, m, "ckpt.pt"))}
    toks = {m: info[m]["ckpt"].get("tokenizer_hash") for m in models}
    if len(set(toks.values())) > 1:
        die("the models use different tokenizers (" + ", ".join(f"{m} {t}" for m, t in toks.items()) +
            "); train them all from one --data_dir")
    check_lineage(info, edges, out_dir)
    widths = {m: (net[m].args.d_mlp, net[m].args.block_size) for m in models}
    if len(set(widths.values())) > 1:
        die("the models differ in d_mlp / block_size (" + ", ".join(f"{m} {w}" for m, w in widths.items()) +
            "); fine-tunes and merges of one base share its shape")
    saes, null_missing = load_saes(cfg, info, models, device, hashes["saes"])
    s0, s1, s2 = cfg["sae_seed"], cfg["null_seed"], cfg["spread_seed"]
    nulls = [m for m in models if (m, s1) in saes]
    spread = [m for m in nulls if (m, s2) in saes]
    pairs = ([(n, (p, s0), (c, s0)) for n, p, c in edges] + [(m, (m, s0), (m, s1)) for m in nulls]
             + [(f"{m}:{a}-{s2}", (m, a), (m, s2)) for m in spread for a in (s0, s1)])
    d_mlp, block_size = widths[models[0]]
    return Study(models, edges, net, saes, info, nulls, null_missing, spread, pairs, d_mlp, block_size, toks[models[0]])


def sae_context(cfg, study):
    """The token set's window length and first position (cfg's seq_len and skip_first), as given or else as
    every SAE was trained (sae.py), so each reads activations with the context it learned from (the authors'
    SAEs: 24-token blocks from position 0). Set in cfg; SAEs trained on different ones are a one-line error."""
    for key, unset in FROM_SAES.items():
        if cfg[key] != unset:
            continue
        got = {}
        for m, seed in study.sae:
            c = study.info[m][f"sae{seed}"]["config"] or {}
            v = c.get("skip_first", 1) if key == "skip_first" else c.get("seq_len") or study.block_size
            if type(v) is not int or v < 0:  # (the fix names its other settings: not this one's value)
                how = saelib.sae_how(m, seed, {k: x for k, x in c.items() if k != key})
                die(f"{saelib.sae_path(cfg['out_dir'], m, seed)} says it was trained with --{key} {v!r}: damaged "
                    f"or hand-made; remake it: {how} --overwrite")
            got.setdefault(v, []).append(f"{m} seed {seed}")
        if len(got) > 1:
            each = "; ".join(f"{v}: {', '.join(w)}" for v, w in got.items())
            die(f"the SAEs were trained with different --{key} ({each}): one token set cannot give each its own; "
                f"train them alike, or give analyze.py --{key}")
        cfg[key] = next(iter(got))
    if cfg["seq_len"] > study.block_size:
        die(f"--seq_len {cfg['seq_len']} is longer than the models' block_size {study.block_size}")


def draw_tokens(cfg, study):
    """Step 2: the evaluation token set, drawn once and used by every model: windows of the SAEs' context
    (sae_context). Returns (seqs (n, T), token_set record)."""
    sae_context(cfg, study)
    data_dir, T, skip = cfg["data_dir"], cfg["seq_len"], cfg["skip_first"]
    first = study.models[0]
    arrays = {d: datalib.open_tokens(data_dir, d, "val", tok_hash=study.tokenizer_hash,
                                     vocab_size=study.model[first].args.vocab_size, who=first) for d in cfg["domains"]}
    # distinct aligned non-overlapping windows, equal shares per domain, a short split gives what it has
    seqs, per_dom = datalib.sample_windows(arrays, cfg["n_tokens"] // T, T, "tiles", cfg["seed"], with_counts=True)
    if not skip < T - 1:
        die(f"--skip_first {skip} must be in [0, seq_len - 1) = [0, {T - 1})")
    n_seq, n_tok = len(seqs), len(seqs) * (T - skip)  # tokens that enter every statistic
    if n_tok < max(cfg["min_tokens"], 2):
        windows = -(-max(cfg["min_tokens"], 2) // (T - skip))  # windows the token set needs
        if seqs.size < cfg["n_tokens"] - T:  # the val splits hold fewer than asked: the one with the fewest grows
            d = min(per_dom, key=per_dom.get)
            fix = (f"the {d} val split holds the fewest; " + datalib.grow_fix(
                data_dir, d, "val", -(-windows // len(per_dom)) * T))
        else:
            fix = f"give --n_tokens {windows * T}"
        die(f"the evaluation token set has {n_tok} tokens ({', '.join(f'{d}: {k} windows of {T}' for d, k in per_dom.items())}), "
            f"fewer than the {cfg['min_tokens']} needed to estimate a correlation; {fix}")
    sources = {d: datalib.read_meta(data_dir, d).get("source") for d in cfg["domains"]}
    token_set = {"n_tokens": int(n_tok), "n_seq": n_seq, "block_size": T, "skip_first": skip, "per_domain": per_dom,
                 "seed": cfg["seed"], "sources": sources, "smoke_scale_demo": "sample" in sources.values()}
    short = f"; asked for {cfg['n_tokens']:,}, the val splits hold fewer" if seqs.size < cfg["n_tokens"] - T else ""
    print(f"token set: {n_tok:,} tokens = {n_seq} windows of {T} (positions >= {skip}; "
          + ", ".join(f"{d} {k}" for d, k in per_dom.items()) + f") from the val splits, seed {cfg['seed']}{short}")
    return seqs, token_set


@torch.no_grad()
def stream(cfg, study, seqs, device, pairs, stats=None):
    """Step 3: one pass over the token set updating the sums of `pairs`; with stats=None (the first pass)
    also every SAE's feature statistics (density, max, top sequences). Each model and SAE needed runs once
    per chunk; only the features the pairs need are held. Returns ({pair: CorrAccumulator}, stats, seconds)."""
    s0, batch, T, skip = cfg["sae_seed"], cfg["batch_size"], cfg["seq_len"], cfg["skip_first"]
    Acc = fast.CorrAccumulator if cfg["fast"] else CorrAccumulator
    acc = {n: Acc(study.sae[a].n_features, study.sae[b].n_features, device) for n, a, b in pairs}
    first = stats is None
    if first:
        stats = {k: stats_init(sae.n_features, cfg["n_top"] if k[1] == s0 else 0, device) for k, sae in study.sae.items()}
    held = {k for _, a, b in pairs for k in (a, b)}
    run = set(study.sae) if first else held
    models = [m for m in study.models if any(k[0] == m for k in run)]
    n_seq, n_chunks, t0 = len(seqs), -(-len(seqs) // batch), time.time()
    acts = [saelib.mlp_activations(study.model[m], seqs, batch, device, skip, use_fast=cfg["fast"]) for m in models]
    for chunk, per_model in enumerate(zip(*acts)):
        feats = {}
        for m, (start, h) in zip(models, per_model):
            n_rows = len(h)
            h = h.reshape(-1, study.d_mlp)                                       # (b*(T-skip), d_mlp)
            for key in sorted(k for k in run if k[0] == m):
                f = study.sae[key].encode(h)                                      # (b*(T-skip), n_features)
                if first:
                    stats_update(stats[key], f, start, n_rows)
                if key in held:
                    feats[key] = f
        if cfg["fast"]:  # fast.py: each feature matrix's nonzero entries made once for all its pairs
            fast.update_pairs(acc, pairs, feats)
        else:
            for n, a, b in pairs:
                acc[n].update(feats[a], feats[b])
        if (chunk + 1) % max(1, n_chunks // 10) == 0 or chunk + 1 == n_chunks:
            done = min(start + batch, n_seq) * (T - skip)
            print(f"chunk {chunk + 1}/{n_chunks}: {done:,} tokens, {done / (time.time() - t0):,.0f} tok/s")
    return acc, stats, time.time() - t0


def one_to_one_record(c, sae_a, sae_b, threshold, use_fast=True):
    """The one-to-one matchings of a classified pair: greedy on r at the threshold (with each matched
    pair's decoder cosine), and the maximum-weight (Hungarian) matchings on r and on decoder cosine over
    the candidates >= CURVE_MIN, whose matched values make the one-to-one curves (use_fast:
    fast.max_weight_matching, one connected component at a time)."""
    def match(pairs, weights):
        if use_fast:
            return fast.max_weight_matching(pairs, weights, len(c["dead_parent"]),
                                            linear_sum_assignment, greedy_matching)
        return max_weight_matching(pairs, weights)
    one, one_r = greedy_matching(c["pairs"], c["pair_r"])
    cos = decoder_cos(sae_a.W_dec, sae_b.W_dec, one[:, 0], one[:, 1])
    hung, hung_r, greedy_r = match(c["cand"], c["cand_r"])
    cos_pairs, cos_vals = decoder_cos_pairs(sae_a.W_dec, sae_b.W_dec, ~c["dead_parent"], ~c["dead_child"], CURVE_MIN)
    hung_cos, hung_cos_v, greedy_cos = match(cos_pairs, cos_vals)
    record = {"n": len(one), "mean_cos": float(cos.mean()) if len(one) else None,
              "pairs": [[int(i), int(j), round(float(r), 4), round(float(q), 4)] for (i, j), r, q in zip(one, one_r, cos)],
              "hungarian_r": {"n": int((hung_r >= threshold).sum()), "greedy_components": greedy_r},
              "hungarian_cos": {"n": int((hung_cos_v >= COS_RULE).sum()), "cos": COS_RULE,
                                "greedy_components": greedy_cos}}
    return record, hung_r, hung_cos_v


def best_partner_cos(c, sae_a, sae_b):
    """Decoder cosine of each feature with its best partner by r (None without one), parents then children."""
    def side(best, w_self, w_other):
        ok = best >= 0
        cos = decoder_cos(w_self, w_other, np.nonzero(ok)[0], best[ok])
        out = np.full(len(best), np.nan)
        out[ok] = cos
        return [None if np.isnan(v) else round(float(v), 4) for v in out]
    return side(c["parent_best"], sae_a.W_dec, sae_b.W_dec), side(c["child_best"], sae_b.W_dec, sae_a.W_dec)


def pair_record(c, sae_a, sae_b, dens_a, dens_b, names, threshold, max_pairs, use_fast=True):
    """results.json's record of one classified pair (an edge or a seed-null)."""
    counts, dead_a, dead_b = c["counts"], c["dead_parent"], c["dead_child"]
    many = c["pairs"][:max_pairs]
    cos_many = decoder_cos(sae_a.W_dec, sae_b.W_dec, many[:, 0], many[:, 1])
    one, match_r, match_cos = one_to_one_record(c, sae_a, sae_b, threshold, use_fast)
    cos_p, cos_c = best_partner_cos(c, sae_a, sae_b)
    return {"parent": names[0], "child": names[1], "counts": counts,
            "persisting_frac": counts["persisting"] / max(counts["parent_live"], 1),
            "emerging_frac": counts["emerging"] / max(counts["child_live"], 1),
            "one_to_one": one,
            "many_to_many": {"n": counts["pairs"], "truncated": counts["pairs"] > len(many),
                             "pairs": [[int(i), int(j), round(float(r), 4), round(float(q), 4)]
                                       for (i, j), r, q in zip(many, c["pair_r"][:len(many)], cos_many)]},
            "stability": stability(c, dens_a, dens_b, match_r, match_cos),
            "density_bands": density_bands(c, dens_a, dens_b),
            "status": status_strings(c),
            "parent_best": {"feature": c["parent_best"].tolist(), "r": rounded(c["parent_best_r"]), "cos": cos_p},
            "child_best": {"feature": c["child_best"].tolist(), "r": rounded(c["child_best_r"]), "cos": cos_c},
            "hist": {"bins": HIST_BINS.round(3).tolist(), "parent": histogram(c["parent_best_r"], ~dead_a),
                     "child": histogram(c["child_best_r"], ~dead_b)}}


def classify_group(cfg, study, acc, dens, dead, pairs):
    """Step 4 for one group of pairs: r per pair (one (F, F) matrix at a time, made in place from its sums),
    classified at the threshold. Returns ({pair: classify() output without the pair lists}, {pair: record})."""
    cls, records = {}, {}
    for n, a, b in pairs:
        c = classify(pearson(acc.pop(n)), dead[a], dead[b], cfg["threshold"])
        records[n] = pair_record(c, study.sae[a], study.sae[b], dens[a], dens[b], (a[0], b[0]), cfg["threshold"],
                                 cfg["max_pairs"], cfg["fast"])
        for k in ("cand", "cand_r"):
            del c[k]
        cls[n] = c
    return cls, records


def vs_null(study, records):
    """Each edge read against its parent's null: the null's curve and the ratio edge / null at each
    threshold, with the seed-to-seed spread (min and max over the seed pairs) where a third seed
    exists."""
    spread = {}
    for m in study.spread:
        names = [n for n, _, _ in study.pairs if n.startswith(f"{m}:")]
        curves = ([records[m]["stability"]["parent"]]
                  + [records.pop(n)["stability"]["parent"] for n in names])
        spread[m] = {"seed_pairs": len(curves), "min": np.min(curves, 0).round(5).tolist(),
                     "max": np.max(curves, 0).round(5).tolist()}
    null = {m: records.pop(m) for m in study.nulls}
    for n, p, ch in study.edges:
        e = records[n]
        e["null_parent_persisting_frac"] = null[p]["persisting_frac"] if p in null else None
        e["null_child_persisting_frac"] = null[ch]["persisting_frac"] if ch in null else None
        if p in null:
            edge_c, null_c = e["stability"]["parent"], null[p]["stability"]["parent"]
            e["stability"]["vs_null"] = {"null": p, "null_parent": null_c, "spread": spread.get(p),
                                         "ratio": [round(a / b, 4) if b else None
                                                   for a, b in zip(edge_c, null_c)]}
    return records, null, spread


def example_rule(cfg, study, stats):
    """Which features may be an example: those that fire on >= min_fires tokens of the token set with a max
    activation >= min_act_frac x the median max of their SAE's live features (a feature firing on a few tokens
    at a tiny activation is no clear case of anything). Returns ({model: bool (F,)}, {model: that activation})."""
    s0, allowed, floor = cfg["sae_seed"], {}, {}
    for m in study.models:
        nnz, mx = stats[(m, s0)]["nnz"].cpu().numpy(), stats[(m, s0)]["max"].cpu().numpy()
        floor[m] = float(cfg["min_act_frac"] * np.median(mx[nnz > 0])) if (nnz > 0).any() else 0.0
        allowed[m] = (nnz >= cfg["min_fires"]) & (mx >= floor[m])
    return allowed, floor


def select_pages(cfg, study, cls, dens, stats):
    """Step 5: the features that get a page: per edge the examples (select_features, among the features
    example_rule allows), the nearest feature across the edge of each disappearing / emerging one, and every
    page feature's partners in the other models (trail). Returns (selection {edge: {category: [(model, i,
    reason)]}}, page keys, trails, near, the rule {"min_fires", "min_act_frac", "min_act": {model: value}})."""
    s0, selection, keys, near, taken = cfg["sae_seed"], {}, set(), {}, set()
    allowed, floor = example_rule(cfg, study, stats)
    for n, p, ch in study.edges:
        selection[n] = select_features(cls[n], cfg["n_select"], cfg["threshold"], dens[(p, s0)], dens[(ch, s0)],
                                       (p, ch), taken, allowed)
        for category, chosen in selection[n].items():
            for m, i, _ in chosen:
                keys.add((m, i))
                if category != "persisting":  # the nearest feature across the edge, below the threshold
                    other, side = (ch, "parent") if m == p else (p, "child")
                    j, r = int(cls[n][f"{side}_best"][i]), float(cls[n][f"{side}_best_r"][i])
                    if j >= 0 and r > 0:
                        near[(m, i)] = (other, j, round(r, 4), n)
                        keys.add((other, j))
    trails = {}
    for m, i in list(keys):
        trails[(m, i)] = trail(m, i, study.edges, cls, cfg["threshold"])
        keys.update((tm, tj) for tm, tj, _, _ in trails[(m, i)])
    rule = {"min_fires": cfg["min_fires"], "min_act_frac": cfg["min_act_frac"],
            "min_act": {m: float(f"{v:.4g}") for m, v in floor.items()}}
    return selection, keys, trails, near, rule


@torch.no_grad()
def feature_activity(cfg, study, seqs, keys, stats, device):
    """For the features in keys (collect_pages: the page features and every live feature), one more
    pass over the token set: a histogram of each one's nonzero activations (hist_bins equal bins up to
    its max), and n_per_interval occurrences drawn uniformly at random from each of n_intervals
    equal-width activation intervals (sae_vis's quantile contexts; the smallest random keys are kept,
    a reservoir sample). Only the firing entries are touched (SAE features are sparse). Returns
    {(model, i): {"max", "hist", "samples": [[(seq, pos)] per interval]}}."""
    s0, T, skip, batch = cfg["sae_seed"], cfg["seq_len"], cfg["skip_first"], cfg["batch_size"]
    n_bins, n_int, per = cfg["hist_bins"], cfg["n_intervals"], cfg["n_per_interval"]
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 2)
    out = {}
    for m in study.models:
        feats = sorted(i for mm, i in keys if mm == m)
        if not feats:
            continue
        k = len(feats)
        sae, idx = study.sae[(m, s0)], torch.tensor(feats, device=device)
        top = stats[(m, s0)]["max"][idx].float().clamp_min(1e-30)                           # (k,)
        hist = torch.zeros(k * n_bins, dtype=torch.float64, device=device)
        # the reservoir, per (interval, feature) group g = q * k + feature: `per` (key, row) pairs; an empty slot
        # has key 1.5 (real keys are in [0, 1)), so sorting by 2 g + key keeps groups apart, smallest keys first
        keep_g = torch.arange(n_int * k, device=device).repeat_interleave(per)            # (n_int * k * per,)
        keep_key = torch.full((n_int * k * per,), 1.5, dtype=torch.float64, device=device)
        keep_row = torch.full((n_int * k * per,), -1, dtype=torch.long, device=device)
        for start, h in saelib.mlp_activations(study.model[m], seqs, batch, device, skip, use_fast=cfg["fast"]):
            acts = encode_at(sae, h.reshape(-1, study.d_mlp), idx, cfg["fast"])            # (rows, k)
            r, f = (acts > 0).nonzero(as_tuple=True)                                        # firing entries (N,)
            level = (acts[r, f] / top[f]).clamp(0, 1)
            hist.index_add_(0, (level * n_bins).ceil().long().clamp(1, n_bins) - 1 + f * n_bins,
                            torch.ones(len(r), dtype=torch.float64, device=device))
            g = torch.cat([keep_g, ((level * n_int).ceil().long().clamp(1, n_int) - 1) * k + f])
            key = torch.cat([keep_key, torch.rand(len(r), generator=gen, device=device, dtype=torch.float64)])
            row = torch.cat([keep_row, start * (T - skip) + r])
            order = torch.argsort(2.0 * g + key)
            g, key, row = g[order], key[order], row[order]
            first = torch.searchsorted(g, g)                                                # each group's first
            take = torch.arange(len(g), device=device) - first < per                       # its `per` smallest
            keep_key, keep_row = key[take], row[take]
        hist = hist.view(k, n_bins).long().cpu().tolist()
        # as lists per feature ([k][interval][sample]) once: indexing tensors per feature is slow at 16,384 features
        kept = keep_row.view(n_int, k, per).permute(1, 0, 2).tolist()
        keys_k = keep_key.view(n_int, k, per).permute(1, 0, 2).tolist()
        tops = top.tolist()
        for c, i in enumerate(feats):
            rows = [[r for r, v in zip(kept[c][q], keys_k[c][q]) if v < 1.0] for q in range(n_int)]
            out[(m, i)] = {"max": tops[c], "hist": hist[c],
                           "samples": [[(r // (T - skip), r % (T - skip) + skip) for r in qr] for qr in rows]}
    return out


def want_top(wants, st, i):
    """Ask collect_contexts (wants {seq: [(feature, kind, pos)]}) for feature i's top sequences (st: its SAE's
    stats), each cut around its max."""
    for s, v in zip(st["top_i"][:, i].tolist(), st["top_v"][:, i].tolist()):
        if v > 0:
            wants.setdefault(int(s), []).append((i, "top", None))


def collect_pages(cfg, study, stats, seqs, keys, device):
    """Step 6: the activity of the page features and of every live feature (feature_activity: the browser shows
    every one), the page features' contexts (top sequences cut around the max, occurrences from each activation
    interval, shared random windows), and direct logit effects. Returns ({(model, i): contexts},
    {(model, i): activity}, {(model, i): (top, bottom)}, token strings)."""
    s0, T = cfg["sae_seed"], cfg["seq_len"]
    rng = np.random.default_rng(cfg["seed"] + 1)
    width = min(cfg["ctx_window"], T)
    rand = [(int(s), int(rng.integers(0, T - width + 1)))
            for s in rng.choice(len(seqs), size=min(cfg["n_random"], len(seqs)), replace=False)]
    live = {(m, int(i)) for m in study.models for i in torch.nonzero(stats[(m, s0)]["nnz"] > 0).flatten().tolist()}
    activity = feature_activity(cfg, study, seqs, keys | live, stats, device)
    ctx, logit, ids_used = {}, {}, set()
    for m in study.models:
        feats = sorted(i for mm, i in keys if mm == m)
        if not feats:
            continue
        st, sae = stats[(m, s0)], study.sae[(m, s0)]
        wants = {}
        for s, start in rand:
            wants.setdefault(s, []).append((None, "random", start))
        for i in feats:
            want_top(wants, st, i)
            for q, samples in enumerate(activity[(m, i)]["samples"]):
                for s, pos in samples:
                    wants.setdefault(int(s), []).append((i, f"q{q}", pos))
        got = collect_contexts(study.model[m], sae, seqs, feats, wants, width, cfg["batch_size"], device,
                               cfg["skip_first"], cfg["fast"])
        ti, tv, bi, bv = logit_effects(study.model[m], sae.W_dec[torch.tensor(feats, device=sae.W_dec.device)])
        for k, i in enumerate(feats):
            ctx[(m, i)] = got[i]
            logit[(m, i)] = (list(zip(ti[k].tolist(), tv[k].tolist())), list(zip(bi[k].tolist(), bv[k].tolist())))
            ids_used.update(ti[k].tolist() + bi[k].tolist())
            for kind in got[i].values():
                for c in kind:
                    ids_used.update(c[0])
    return ctx, activity, logit, token_strings(study.enc, ids_used)


# every live feature for the report's browser: a few contexts each, as token positions in the token set (one
# copy of it, features/tokens.js) and activations in base-36 digits, 0 = not firing, k = ceil(LEVELS * a / max)
LEVELS = 35
DIGITS = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def level_strings(acts, top):
    """(R, W) activations and (R,) the max of the feature each row is of -> R strings of W base-36 digits."""
    lv = torch.ceil(acts / top.clamp_min(1e-30)[:, None] * LEVELS).clamp(0, LEVELS).to(torch.uint8).cpu().numpy()
    raw, W = DIGITS[lv].tobytes().decode(), lv.shape[1]
    return [raw[k * W:(k + 1) * W] for k in range(len(lv))]


@torch.no_grad()
def browse_features(cfg, study, cls, stats, activity, seqs, device):
    """Step 6b: every live feature of every tracked SAE for the report's feature browser, in one pass over the
    token set with every model: its n_all_top top sequences cut to all_window tokens around the max, the first
    occurrence feature_activity drew from each activation interval, and, on each edge it is on, its best
    partner's activations on the same top windows (run through the partner's model and SAE: the tracking
    view), with the histogram and n_all_logits logit effects each way. Returns {model: side-file record}."""
    s0, T, batch, n_top = cfg["sae_seed"], cfg["seq_len"], cfg["batch_size"], cfg["n_all_top"]
    W, skip = min(cfg["all_window"], T), cfg["skip_first"]
    # what to cut, per model: rows (seq, feature, pos, slot) sorted by seq; pos -1 = around the max in that
    # sequence (a top context, slot = its rank), else the drawn token of interval slot - n_top
    want = {}
    for m in study.models:
        top_v, top_i = stats[(m, s0)]["top_v"][:n_top].cpu().numpy(), stats[(m, s0)]["top_i"][:n_top].cpu().numpy()
        rank, f = np.nonzero(top_v > 0)                                                 # (n_top, F) -> hits
        rows = [[int(s), i, -1, int(r)] for s, i, r in zip(top_i[rank, f].tolist(), f.tolist(), rank.tolist())]
        rows += [[q_s[0][0], i, q_s[0][1], n_top + q] for (mm, i), a in activity.items() if mm == m
                 for q, q_s in enumerate(a["samples"]) if q_s]
        a = np.array(rows, dtype=np.int64).reshape(-1, 4)
        want[m] = a[np.argsort(a[:, 0], kind="stable")]
    # the edges each model is on, and each of its features' best partner there (-1: none)
    partners = {m: [(k, c if p == m else p, np.asarray(cls[n]["parent_best" if p == m else "child_best"]))
                    for k, (n, p, c) in enumerate(study.edges) if m in (p, c)] for m in study.models}
    maxes = {m: stats[(m, s0)]["max"].float() for m in study.models}
    got = {m: [] for m in study.models}
    ar_T, ar_W = torch.arange(T, device=device), torch.arange(W, device=device)
    runs = [saelib.mlp_activations(study.model[m], seqs, batch, device, use_fast=cfg["fast"]) for m in study.models]
    for per_model in zip(*runs):
        A = {}
        for m, (lo, h) in zip(study.models, per_model):
            A[m] = study.sae[(m, s0)].encode(h.reshape(-1, study.d_mlp)).view(len(h), T, -1).float()  # (b, T, F)
            A[m][:, :skip] = 0.0  # positions left out of the statistics are shown, never counted
        hi = lo + len(h)
        for m in study.models:
            a = want[m][np.searchsorted(want[m][:, 0], lo):np.searchsorted(want[m][:, 0], hi)]
            if not len(a):
                continue
            t = torch.from_numpy(a).to(device)
            rows, feat = t[:, 0] - lo, t[:, 1]
            vals = A[m][rows[:, None], ar_T[None, :], feat[:, None]]                   # (R, T)
            centre = torch.where(t[:, 2] >= 0, t[:, 2], vals.argmax(1))
            cols = window_start(centre, T, W)[:, None] + ar_W                             # (R, W)
            track = []
            for k, other, best in partners[m]:
                j = torch.from_numpy(best[a[:, 1]]).to(device).clamp_min(0)
                pv = A[other][rows[:, None], cols, j[:, None]]                            # (R, W)
                track.append(level_strings(pv, maxes[other][j]))
            got[m].append((a.tolist(), cols[:, 0].tolist(), level_strings(vals.gather(1, cols), maxes[m][feat]),
                           list(zip(*track)) if track else [()] * len(a)))
    out = {}
    for m in study.models:
        sae, live = study.sae[(m, s0)], (stats[(m, s0)]["nnz"] > 0).cpu().numpy()
        tops, quants = {}, {}
        for rows, starts, own, track in got[m]:
            for (s, i, pos, slot), st, codes, tr in zip(rows, starts, own, track):
                if slot < n_top:   # [seq, start, digits, [the partner's digits per edge]], by rank below
                    tops.setdefault(i, []).append((slot, [s, st, codes, list(tr)]))
                else:              # [interval, seq, start, digits, the drawn token's place in the window]
                    quants.setdefault(i, []).append([slot - n_top, s, st, codes, pos - st])
        feats = [None] * sae.n_features
        ids = torch.nonzero(torch.from_numpy(live)).flatten().tolist()
        for c0 in range(0, len(ids), 1024):  # logit effects in chunks: (chunk, vocab) at a time
            chunk = ids[c0:c0 + 1024]
            ti, tv, bi, bv = logit_effects(study.model[m], sae.W_dec[torch.tensor(chunk, device=sae.W_dec.device)],
                                           cfg["n_all_logits"])
            for k, i in enumerate(chunk):
                act = activity[(m, i)]
                head = []
                for (e, other, best) in partners[m]:   # [edge index, partner, its max], or None
                    j = int(best[i])
                    head.append([e, j, float(f"{maxes[other][j]:.3g}")] if j >= 0 else None)
                pairs = lambda ids, vals: [[a, round(b, 2)] for a, b in zip(ids[k].tolist(), vals[k].tolist())]
                feats[i] = [float(f"{act['max']:.3g}"), act["hist"], [c for _, c in sorted(tops.get(i, []))],
                            sorted(quants.get(i, [])), pairs(ti, tv), pairs(bi, bv), head]
        out[m] = {"model": m, "levels": LEVELS, "width": W, "n_intervals": cfg["n_intervals"],
                  "fields": "per feature (null: dead): [max, histogram counts, top [seq, start, digits, partner digits "
                            "per edge], interval [q, seq, start, digits, at], promotes [[id, logit]], suppresses, "
                            "partners [edge, feature, max] per edge]",
                  "edges": [study.edges[e][0] for e, _, _ in partners[m]], "f": feats}
    return out


def token_record(enc, seqs, logit_ids):
    """features/tokens.js: the token set (every context of the browser is a window of it) as little-endian
    uint16 or uint32 in base64, and the strings of every token id it or a logit effect uses."""
    import base64
    seqs = np.asarray(seqs)
    dtype = np.dtype(np.uint16 if int(seqs.max()) < 65536 else np.uint32).newbyteorder("<")
    used = set(np.unique(seqs).tolist()) | set(logit_ids)
    return {"n_seq": int(seqs.shape[0]), "T": int(seqs.shape[1]), "dtype": dtype.name,
            "ids": base64.b64encode(seqs.astype(dtype).tobytes()).decode(),
            "tok": token_strings(enc, used)}


def run_explain(cfg, explain, ctx, tok, dead):
    """--explain: explanations and scores of the page features from an LLM (explain.py). Returns
    (explanations, error or None): an endpoint problem must not throw the analysis away, so what was
    answered is kept (and cached), the analysis is written, and main() fails afterwards."""
    if explain is None:
        return {}, None
    s0 = cfg["sae_seed"]
    feats = [{"key": f"{m}/{i}", "model": m, "feature": int(i),
              "top": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["top"]],
              "random": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["random"]]}
             for m, i in sorted(ctx) if not dead[(m, s0)][i]]
    ecfg = {k: cfg[k] for k in ("api_base", "llm_model", "max_requests") if cfg[k]}
    try:
        return explain.explain_features(feats, {**ecfg, "cache_dir": os.path.join(cfg["out_dir"], "explain_cache")}), None
    except common.UserError as e:
        print(f"explain: {e.msg}; writing the analysis with the explanations there are")
        return getattr(e, "results", {}) or {}, e.msg


STATUS_LEGEND = {"p": "persists", "d": "disappears", "m": "matched", "e": "emerges", "x": "dead"}


def status_strings(c):
    """Each feature's status on one edge as a string, one letter per feature (STATUS_LEGEND): the report
    shows these, it never re-derives them from r."""
    parent = np.where(c["dead_parent"], "x", np.where(c["persisting"], "p", "d"))
    child = np.where(c["dead_child"], "x", np.where(c["matched_child"], "m", "e"))
    return {"parent": "".join(parent.tolist()), "child": "".join(child.tolist())}


def page_data(cfg, study, ctx, activity, logit, trails, near, tok, explanations):
    """pages.json: what the report's feature pages show: contexts (top, per activation interval), the
    activation histogram, logit effects, the partners (with r and decoder cosine) and the explanation."""
    s0 = cfg["sae_seed"]

    def values(a):
        return [float(f"{v:.3g}") for v in a]

    def cos(m, i, tm, tj):
        return round(float(decoder_cos(study.sae[(m, s0)].W_dec, study.sae[(tm, s0)].W_dec, [i], [tj])[0]), 4)
    pages = {}
    for m, i in ctx:
        act, n_int = activity[(m, i)], cfg["n_intervals"]
        pages[f"{m}/{i}"] = {
            "top": [[c[0], values(c[1])] for c in ctx[(m, i)]["top"][:cfg["n_show"]]],
            "intervals": [{"lo": float(f"{act['max'] * q / n_int:.4g}"), "hi": float(f"{act['max'] * (q + 1) / n_int:.4g}"),
                           "ctx": [[c[0], values(c[1]), c[2]] for c in ctx[(m, i)].get(f"q{q}", [])]} for q in range(n_int)],
            "hist": {"max": float(f"{act['max']:.4g}"), "counts": act["hist"]},
            "pos": [[t, round(v, 3)] for t, v in logit[(m, i)][0]],
            "neg": [[t, round(v, 3)] for t, v in logit[(m, i)][1]],
            "trail": [[tm, tj, round(tr, 4), via, cos(m, i, tm, tj)] for tm, tj, tr, via in trails.get((m, i), [])],
            "near": [*near[(m, i)], cos(m, i, near[(m, i)][0], near[(m, i)][1])] if (m, i) in near else None,
            "expl": explanations.get(f"{m}/{i}")}
    return {"pages": pages, "tok": tok, "provenance": common.provenance(cfg)}


def sae_kind(args):
    """An SAE's kind in words, from its args: 'relu' or 'topk k 32'."""
    return args.get("arch", "relu") + (f" k {args['k']}" if args.get("arch") == "topk" else "")


def models_record(study, s0, s1, dens, dead):
    """results.json's per-model block: features, live / dead, median density, hashes, SAE metrics."""
    out = {}
    for m in study.models:
        info, live = study.info[m], ~dead[(m, s0)]
        out[m] = {"n_features": study.sae[(m, s0)].n_features, "sae_kind": sae_kind(info[f"sae{s0}"]["args"]),
                  "live": int(live.sum()), "dead": int(dead[(m, s0)].sum()),
                  "median_density": float(np.median(dens[(m, s0)][live])) if live.any() else 0.0,
                  "model_hash": info["model_hash"], "sae_hash": info[f"sae{s0}"]["hash"],
                  "null_sae_hash": info.get(f"sae{s1}", {}).get("hash"),
                  "sae_metrics": {k: v for k, v in info[f"sae{s0}"]["metrics"].items() if isinstance(v, (int, float))}}
    return out


def results_record(cfg, study, inputs, token_set, found, dens, dead, selection, explanations, timing):
    """results.json: the findings and everything they were computed from (config and input_hashes in the
    provenance). found: {"edges", "null", "spread", "families"}; timing: {"stream_seconds", "stream_passes",
    "peak_gpu_mib"}."""
    s0, s1, info = cfg["sae_seed"], cfg["null_seed"], study.info
    prov = common.provenance(
        cfg, **inputs, model_configs={m: info[m]["ckpt"].get("config") for m in study.models},
        sae_configs={m: {"args": info[m][f"sae{s0}"]["args"], "config": info[m][f"sae{s0}"]["config"]} for m in study.models},
        tokenizer_hash=study.tokenizer_hash, token_set_seed=cfg["seed"])
    return {"threshold": cfg["threshold"],
            "matching": "many-to-many: every pair with r >= threshold (persisting / disappearing / emerging); "
                        "one-to-one: greedy on r (highest first, each feature once); hungarian_r / hungarian_cos: "
                        f"maximum-weight matching (Hungarian) on r / decoder cosine over pairs >= {CURVE_MIN}",
            "thresholds": THRESHOLDS, "density_bands": BANDS, "status_legend": STATUS_LEGEND,
            "token_set": token_set, "models": models_record(study, s0, s1, dens, dead),
            "edges": found["edges"], "null": found["null"], "null_spread": found["spread"],
            "null_missing": study.null_missing, "families": found["families"],
            "density": {m: [float(f"{v:.4g}") for v in dens[(m, s0)]] for m in study.models},
            "selection": {n: {c: [[m, int(i)] for m, i, _ in v] for c, v in s.items()} for n, s in selection.items()},
            "selection_reasons": {n: {c: [why for _, _, why in v] for c, v in s.items()} for n, s in selection.items()},
            "explanations": explanations, **timing, "provenance": prov}


def file_hash(path):
    """common.sha256_file, or None for a file that is not there or cannot be read (its reader names it)."""
    try:
        return common.sha256_file(path) if os.path.isfile(path) else None
    except OSError:
        return None


def input_hashes(cfg):
    """What the analysis reads, hashed from disk before it is read: each model's checkpoint, each of its SAE
    seed files that exists (the null's and the spread's are optional), the validation splits, the merge
    sweep and diffing.py's record; None for a file that is not there (load_study names what it needs)."""
    out_dir, models = cfg["out_dir"], list(dict.fromkeys(cfg["models"]))
    saes = {m: {f"s{s}": file_hash(saelib.sae_path(out_dir, m, s)) for s in sae_seeds(cfg)} for m in models}
    return {"models": {m: file_hash(os.path.join(out_dir, m, "ckpt.pt")) for m in models},
            "saes": {m: {k: h for k, h in hs.items() if h} for m, hs in saes.items()},
            "val_files": {d: file_hash(os.path.join(cfg["data_dir"], d, "val.bin")) for d in cfg["domains"]},
            "merge_sweep": file_hash(os.path.join(out_dir, "merge_sweep.json")),
            "diffing": file_hash(os.path.join(out_dir, "diffing", "diffing.json"))}


HOW_ONLY = ("threads", "memory_gb", "data_dir", "out_dir", "overwrite")  # settings that leave the findings as they are


def analysis_current(cfg, inputs):
    """results.json as it would be made now, or None: one made by this code (its sources' hash), with these
    settings (seq_len and skip_first: as given, or left to the SAEs by both runs, the SAEs being hashed),
    from these inputs (input_hashes), with pages.json and the feature browser's side files of the same run
    beside it. --explain always runs (the LLM is asked anew, or its cache read); a record with explanations is
    current for a run without (a ./reproduce.sh after analyze.py --explain keeps them)."""
    adir = os.path.join(cfg["out_dir"], "analysis")
    if cfg["overwrite"] or cfg["explain"]:
        return None
    try:
        res, pages = (common.read_json(os.path.join(adir, f"{k}.json")) for k in ("results", "pages"))
        left, run = res["provenance"]["from_saes"], res.get("run")

        def same(k, v, saved):  # left to the SAEs now: left to them then too (saved holds what they gave)
            if k in ("explain", "api_base", "llm_model", "max_requests"):
                return True  # explanations (here: not asked for now) add to the findings, never change them
            return k in left if k in FROM_SAES and v == FROM_SAES[k] else saved.get(k) == v
        if not common.made_as_now(res, "results", cfg, HOW_ONLY, inputs, same) or \
                common.record_problem(pages, "pages") or not isinstance(run, str):
            return None
        # each side file names its key (another model's file copied or swapped onto this name sets another
        # key: the page finds none for this model), then holds its record of this run, whole: the checksum
        # stamped at writing (a hand edit anywhere in it, its run id left in place, no longer matches)
        for key, name, kind in [*((m, m, "features") for m in dict.fromkeys(cfg["models"])),
                                (report.TOKENS, "tokens", "tokens")]:
            path = os.path.join(adir, report.SIDE, f"{name}.js")
            common.check_regular(path)  # a pipe's open would wait for a writer (check_outputs names it below)
            head = report.side_js(key, {})[:-len("{};\n")].encode()
            with open(path, "rb") as f:
                text = f.read()
            if not (text.startswith(head) and text.endswith(b";\n")):
                return None
            rec = json.loads(text[len(head):-2])
            if rec.get("kind") != kind or rec.get("checksum") != common.json_checksum(rec) or rec.get("run") != run:
                return None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):  # missing, damaged, other shape: made anew
        return None
    return res


# -----------------------------------------------------------------------------
# model diffing (issue 28): diffing.py's crosscoders and cross-applied SAEs joined with this run's statuses

DIFF_AGREE = {"p": "s", "d": "p", "m": "s", "e": "c"}  # status -> the crosscoder class that agrees with it
DIFF_MATCH = CURVE_MIN   # a feature's best crosscoder latent counts from this r on; below: "unmatched"


def agreement(status, latent, r, classes, pick):
    """One side of an edge: its features' statuses against the classes of their best crosscoder latents.
    status (F,) of "p" "d" "m" "e" "x" (STATUS_LEGEND); latent (F,) each feature's best latent (-1: none) at
    r (F,); classes (L,) of "s" "p" "c" "m" "x" (diffing.CLASSES). Returns (got (F,): the class of each
    feature's latent, "u" when it is below DIFF_MATCH, {status in pick: {class: features}})."""
    if not len(status) == len(latent) == len(r):
        raise ValueError(f"{len(status)} statuses, {len(latent)} latents, {len(r)} r values")
    got = [classes[j] if j >= 0 and rj >= DIFF_MATCH else "u" for j, rj in zip(latent, r)]
    table = {st: {cl: sum(1 for s, g in zip(status, got) if s == st and g == cl) for cl in "spcmxu"} for st in pick}
    return got, table


TOKEN_SET_KEYS = ("n_tokens", "n_seq", "block_size", "skip_first", "per_domain", "seed")  # what fixes the tokens


def diffing_record(cfg, study, found, stats, seqs, token_set, device, n_examples=2, n_ctx=3):
    """results.json["diffing"] from out_dir/diffing/diffing.json (diffing.py), None when there is none: per edge the
    crosscoder's class fractions beside the correlation's fractions and the null's, the cross-application's
    metrics, and per SAE feature the agreement of its status (persists / disappears, matched / emerges) with
    the class of its best crosscoder latent (DIFF_AGREE), with examples of disagreement and their top contexts.
    A diffing.json made from other SAEs or on another token set than this run's is named stale, and one that is
    damaged or of another shape is named so; neither is joined (the analysis is written all the same)."""
    path, s0, odd = os.path.join(cfg["out_dir"], "diffing", "diffing.json"), cfg["sae_seed"], []
    if not os.path.exists(path):
        return None
    try:
        d = common.read_record(path, "diffing")
    except common.UserError as e:  # not JSON, or not diffing.py's: named below, and the analysis written
        d, why = None, "damaged: " + e.msg.replace(path, "the file")
    if d is not None:
        other = [m for m, h in d["sae_hashes"].items() if m in study.models and study.info[m][f"sae{s0}"]["hash"] != h]
        theirs = d.get("token_set") if isinstance(d.get("token_set"), dict) else {}
        differ = [k for k in TOKEN_SET_KEYS if theirs.get(k) != token_set[k]]
        # diffing.py draws analyze.py's token set of its preset with its own --n_tokens only: a count it can match;
        # this run's --seed, --seq_len, --skip_first or --domains it cannot (this analysis without them joins it)
        odd = [{"block_size": "--seq_len"}.get(k, f"--{k}") for k in differ
               if k not in ("n_tokens", "n_seq", "per_domain")]
        was = theirs.get("per_domain")
        if differ and not (isinstance(was, dict) and set(was) == set(token_set["per_domain"])):
            odd.append("--domains")
        if other or d.get("sae_seed", s0) != s0:
            odd = []  # (named once those are fixed)
        why = (f"made from other SAEs ({', '.join(other)})" if other else
               "made from another seed's SAEs" if d.get("sae_seed", s0) != s0 else
               f"made on analyze.py's default token set, not on this analysis' (its {', '.join(odd)} differ)"
               if odd else
               "made on another token set (give diffing.py the same --n_tokens as analyze.py)" if differ else None)
    if why is None:
        try:
            out, wanted, meta = join_diffing(d, found, n_examples)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # the file's inner shape
            why = f"damaged or of another shape ({type(e).__name__}: {str(e)[:80]})"
    if why is not None:
        fix = common.keep_settings(
            f"run python analyze.py without {', '.join(odd)} (diffing.py cannot take them) to join it" if odd else
            "re-run python diffing.py (current crosscoders are loaded, not retrained), then python analyze.py")
        print(f"note: {path} was {why}; not joined: {fix}")
        return {"stale": f"{why}; {fix}"}
    ctx = diffing_contexts(cfg, study, stats, seqs, wanted, device, n_ctx)
    for rec in out.values():
        for x in rec["examples"]:
            x["contexts"] = ctx.get((x["model"], x["feature"]), [])
    return {"edges": out, **meta}


def join_diffing(d, found, n_examples):
    """diffing_record's join of diffing.json (d) with this run's edges (found): ({edge: record}, {model:
    example features}, the record's settings). Raises on a record of another inner shape."""
    out, wanted, legend = {}, {}, {**d["class_legend"], "u": "unmatched"}
    for name, e in d["edges"].items():
        if name not in found["edges"]:
            continue
        rec, status = found["edges"][name], found["edges"][name]["status"]
        seeds = e["crosscoder"]["seeds"]
        classes = seeds[min(seeds, key=int)]["classes"]
        table, examples = {}, []
        for side, model, pick in (("parent", e["parent"], "pd"), ("child", e["child"], "me")):
            m = e["match"][side]
            got, table[side] = agreement(status[side], m["latent"], m["r"], classes, pick)
            own = e["firing"][f"{side}_sae"]
            for i, (st, g) in enumerate(zip(status[side], got)):
                if st in pick and g in "spcm" and g != DIFF_AGREE[st] and (st in "de" or g in "pc"):
                    examples.append({"model": model, "feature": i, "status": STATUS_LEGEND[st],
                                     "latent": m["latent"][i], "latent_class": legend[g], "r": m["r"][i],
                                     "rate_own": own["rate_own"][i], "rate_other": own["rate_other"][i]})
        examples.sort(key=lambda x: -x["r"])
        kinds, chosen = {}, []
        for x in examples:  # the clearest (highest r) n_examples of each kind of disagreement
            k = (x["status"], x["latent_class"])
            if kinds.get(k, 0) < n_examples:
                kinds[k] = kinds.get(k, 0) + 1
                chosen.append(x)
                wanted.setdefault(x["model"], set()).add(x["feature"])
        agree = sum(t[st][DIFF_AGREE[st]] for t in table.values() for st in t)
        n = sum(sum(v.values()) for t in table.values() for v in t.values())
        matched = n - sum(v["u"] for t in table.values() for v in t.values())   # with a latent at r >= DIFF_MATCH
        c = rec["counts"]
        kept = ("live", "dead", "counts", "fractions", "fvu", "l0", "spurious", "genuine", "delta_hist")
        out[name] = {"crosscoder": {"seeds": {s: {k: v[k] for k in kept} for s, v in seeds.items()},
                                    "null": e["crosscoder"]["null"]},
                     "correlation": {"persisting_frac": rec["persisting_frac"],
                                     "disappearing_frac": c["disappearing"] / max(c["parent_live"], 1),
                                     "emerging_frac": rec["emerging_frac"],
                                     "null_persisting_frac": rec.get("null_parent_persisting_frac")},
                     "cross_application": e["cross_application"],
                     "firing": {s: {k: v for k, v in f.items() if not k.startswith("rate")}
                                for s, f in e["firing"].items()},
                     "agreement": {**table, "agree": agree, "n": n, "agree_frac": round(agree / max(n, 1), 5),
                                   "n_matched": matched, "agree_frac_matched": round(agree / max(matched, 1), 5)},
                     "examples": chosen}
    meta = {"arch": d["arch"], "cuts": d["cuts"], "match_min_r": DIFF_MATCH,
            "agree_rule": {STATUS_LEGEND[k]: legend[v] for k, v in DIFF_AGREE.items()}, "class_legend": legend,
            "delta": d["delta"], "seconds": d["seconds"], "fire_ratio": d["provenance"]["config"]["fire_ratio"]}
    return out, wanted, meta


def diffing_contexts(cfg, study, stats, seqs, wanted, device, n_ctx):
    """{(model, feature): [{"tokens": [str], "acts": [float]}]}: the n_ctx top contexts of the examples."""
    s0, width, top = cfg["sae_seed"], min(cfg["ctx_window"], cfg["seq_len"]), {}
    for m, feats in wanted.items():
        feats = sorted(feats)
        wants = {}
        for i in feats:
            want_top(wants, stats[(m, s0)], i)
        got = collect_contexts(study.model[m], study.sae[(m, s0)], seqs, feats, wants, width, cfg["batch_size"],
                               device, cfg["skip_first"], cfg["fast"])
        top.update({(m, i): got[i]["top"][:n_ctx] for i in feats})
    if not top:
        return {}
    tok = token_strings(study.enc, {t for cs in top.values() for c in cs for t in c[0]})
    return {key: [{"tokens": [tok[t] for t in c[0]], "acts": [round(a, 3) for a in c[1]]} for c in cs]
            for key, cs in top.items()}


def print_summary(res, study):
    n_tok, secs = res["token_set"]["n_tokens"], res["stream_seconds"]
    print(f"streamed {n_tok:,} tokens through {len(study.models)} models and {len(study.sae)} SAEs in {secs:.1f} s "
          f"({res['stream_passes']} pass(es); {n_tok / max(secs, 1e-9):,.0f} tok/s)")
    if res["families"]:
        c = res["families"]["counts"]
        print(f"families: of {c['base_live']} live base features, reach luastories by both paths {c['paths']['both']}, "
              f"lua only {c['paths']['lua_only']}, tinystories only {c['paths']['tinystories_only']}, "
              f"by no path {c['paths']['neither']}")
    print(edge_table(res))
    if res["token_set"]["smoke_scale_demo"]:
        print("(smoke-scale demo: the data source is data.py's generated sample)")


def track(cfg, study, seqs, token_set, device):
    """Steps 3 and 4: the pairs streamed in groups that fit the device (plan_groups), each group classified
    right after its pass; then families. Returns (classify() outputs, found, dens, dead, stats, timing)."""
    groups, need = plan_groups(cfg, study, device)
    print(f"{len(study.edges)} edges + {len(study.pairs) - len(study.edges)} null pairs in {len(groups)} pass(es) of "
          f"{cfg['batch_size']} x {cfg['seq_len']}-token chunks, sums in float64"
          f"{' (fast.CorrAccumulator)' if cfg['fast'] else ''}; about {need / 2 ** 30:.2f} GB of "
          f"{device} memory")
    stats, dens, dead, cls, records, seconds = None, None, None, {}, {}, 0.0
    for group in groups:
        acc, stats, secs = stream(cfg, study, seqs, device, group, stats)   # the first pass makes the stats
        seconds += secs
        if dens is None:
            dens = {k: (st["nnz"] / token_set["n_tokens"]).cpu().numpy() for k, st in stats.items()}
            dead = {k: st["nnz"].cpu().numpy() == 0 for k, st in stats.items()}
        got_cls, got = classify_group(cfg, study, acc, dens, dead, group)
        cls.update(got_cls)
        records.update(got)
    edges, null, spread = vs_null(study, records)
    fam = None
    if all(m in study.models for m in MODELS):
        fam_counts, codes, legend = families(cls)
        fam = {"counts": fam_counts, "code": codes.tolist(), "code_legend": legend}
    found = {"edges": edges, "null": null, "spread": spread, "families": fam}
    return cls, found, dens, dead, stats, {"stream_seconds": round(seconds, 2), "stream_passes": len(groups),
                                           "peak_gpu_mib": common.peak_gpu_mib(device)}


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg, explain = settings(argv)
    # the device as resolved, in the record too: --device auto and cpu are one run on a CPU (made_as_now)
    cfg["device"] = device = common.pick_device(cfg["device"])
    threads = common.set_threads(cfg["threads"])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # correlations want full float32 products
    s0, s1 = cfg["sae_seed"], cfg["null_seed"]
    print(f"preset {cfg['preset']}, device {device}, {threads} CPU thread(s), threshold {cfg['threshold']}, "
          f"models {', '.join(dict.fromkeys(cfg['models']))}")
    adir = os.path.join(cfg["out_dir"], "analysis")
    # (subfolders: features/ is this folder's own, so the temp files a killed run left there are removed too)
    with torch.no_grad(), common.lock_dir(adir, "an analysis", subfolders=True):
        # results.json, pages.json, report.html and the browser's side files (features/, which dominate; their
        # size at the paper's sizes: BENCHMARKS.md); checked before the long passes, not after them
        common.check_free_space(adir, 128 << 20, "the analysis (results.json, pages.json, features/, report.html)")
        inputs = input_hashes(cfg)  # (hashed before they are read: a file replaced meanwhile reruns next time)
        res = analysis_current(cfg, inputs)
        if res is not None:  # nothing to recompute: the page re-rendered (its stages' records may be newer)
            path = report.write_report(cfg["out_dir"])  # (a record it cannot show: one line naming the fix)
            print(f"{adir} is current (results.json of {res['provenance'].get('created')}: the same models, "
                  f"SAEs, tokens, settings and code); nothing recomputed (--overwrite recomputes it)\n-> {path}")
            return {**res, "config": cfg}
        from_saes = [k for k, unset in FROM_SAES.items() if cfg[k] == unset]  # (draw_tokens sets them)
        side = os.path.join(adir, report.SIDE)
        if os.path.lexists(side) and not os.path.isdir(side):
            die(f"{side} is not a folder (the feature browser's side files go there); move it away and re-run")
        common.check_outputs(*(os.path.join(adir, f) for f in ("results.json", "pages.json", "report.html")),
                             *(os.path.join(side, f"{m}.js") for m in [*cfg["models"], "tokens"]))
        # 1. models and SAEs; 2. the token set
        study = load_study(cfg, device, inputs)
        seqs, token_set = draw_tokens(cfg, study)
        study.enc = datalib.load_tokenizer(cfg["data_dir"], want=study.tokenizer_hash)  # the pages' token strings
        arch = {m: sae_kind(study.info[m][f"sae{s0}"]["args"]) for m in study.models}
        print("SAEs: " + ", ".join(f"{m} {study.sae[(m, s0)].n_features}" for m in study.models) + " features"
              + (f" ({next(iter(arch.values()))})" if len(set(arch.values())) == 1 else "") + "; null "
              f"baseline (seed {s0} vs {s1}) for {', '.join(study.nulls) or 'no model'}"
              + (f"; no seed-{s1} SAE for {', '.join(study.null_missing)}" if study.null_missing else "")
              + (f"; seed-to-seed spread (seed {cfg['spread_seed']}) for {', '.join(study.spread)}" if study.spread else ""))
        if len(set(arch.values())) > 1:  # (the paper trains them alike: a feature's match then means the same)
            print("note: the SAEs differ in kind (" + ", ".join(f"{m} {a}" for m, a in arch.items()) + "); the "
                  "tracking compares them as they are (the report says so); the paper's comparison trains them alike")
        # 3. streaming passes; 4. classification of every pair, stability, families
        cls, found, dens, dead, stats, timing = track(cfg, study, seqs, token_set, device)
        # 5. the features that get a page; 6. their activity, contexts and logit effects (and explanations)
        selection, keys, trails, near, rule = select_pages(cfg, study, cls, dens, stats)
        t0 = time.time()  # (each of the next two steps passes over the token set again: a line before each)
        print(f"feature pages: {len(keys)} features' activity, contexts and logit effects ...", flush=True)
        ctx, activity, logit, tok = collect_pages(cfg, study, stats, seqs, keys, device)
        print(f"feature pages: done in {time.time() - t0:.1f} s")
        t0 = time.time()
        print("feature browser: every live feature's top contexts and its partner's activations ...", flush=True)
        browse = browse_features(cfg, study, cls, stats, activity, seqs, device)   # 6b. every live feature
        print(f"feature browser: {sum(f is not None for r in browse.values() for f in r['f']):,} live features' "
              f"contexts, partners and logit effects in {time.time() - t0:.1f} s")
        explanations, explain_error = run_explain(cfg, explain, ctx, tok, dead)
        # 7. results.json, pages.json, the browser's side files (features/), report.html
        res = results_record(cfg, study, inputs, token_set, found, dens, dead, selection, explanations, timing)
        res["selection_rule"] = rule
        res["provenance"]["from_saes"] = from_saes  # (analysis_current: what the saved config's values mean)
        res["run"] = os.urandom(8).hex()  # ties the side files (features/) to this results.json (report.py)
        diff = diffing_record(cfg, study, found, stats, seqs, token_set, device)  # diffing.py's, when it has run
        if diff is not None:
            res["diffing"] = diff
        pages = page_data(cfg, study, ctx, activity, logit, trails, near, tok, explanations)
        common.atomic_write_json(os.path.join(adir, "results.json"), common.stamp(res, "results"))
        common.atomic_write_json(os.path.join(adir, "pages.json"), common.stamp(pages, "pages"))
        logit_ids = {t for r in browse.values() for f in r["f"] if f for t, _ in f[4] + f[5]}
        side_bytes = report.write_side_files(adir, browse, token_record(study.enc, seqs, logit_ids), res["run"])
        print(f"-> {os.path.join(adir, report.SIDE)}/: {len(browse)} models + the token set, {side_bytes / 1e6:.1f} MB")
        report_path = report.write_report(cfg["out_dir"])
    print_summary(res, study)
    print(f"-> {os.path.join(adir, 'results.json')}\n-> {report_path}")
    if explain_error:
        die(f"--explain: {explain_error}; the analysis was written, but without these explanations")
    return {**res, "config": cfg}


if __name__ == "__main__":
    common.cli(main)
