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
(merge.py --sweep; shown when present).

The method, in the order main() runs it:
1. Load the models and SAEs and check that they belong together: one tokenizer, each child made
   from the parent checkpoint on disk now, each SAE trained on its model.
2. Draw one evaluation token set: whole block_size windows drawn once (seeded) from the validation
   splits of base, lua and tinystories, run through every model and SAE, so every correlation is
   over the very same tokens.
3. Stream it in chunks: each model's MLP activations and each SAE's features are computed once per
   chunk and every pair is updated from them. Pearson r comes from running float64 sums (x, x^2,
   y, y^2 and the (F_parent, F_child) matrix x^T y, one matmul per chunk): memory grows with
   F_parent x F_child, never with tokens. Per feature, a running top-k of sequences by their max.
4. Classify each pair at --threshold (DESIGN.md): a live parent feature persists when a live child
   feature has r >= threshold with it, else it disappears; a live child feature with no such parent
   emerges; dead features (never active on the token set) are counted apart. A constant feature
   has no defined r: it is 0. Many-to-many matches are every pair >= threshold; the one-to-one
   matching is greedy on r (highest pair first, each feature used once), which never pairs a
   feature with a worse partner while a better free one exists. Matched pairs also get the cosine
   of their decoder directions, a data-free second signal. The null baseline is the same
   classification between the seed-0 and seed-1 SAEs of one model: an edge's persisting fraction
   is read against its parent's seed0 -> seed1 fraction. Families follow each live base feature to
   lua and tinystories, and on to luastories.
5. Select the features that get a page: per edge and category, with their partners across models.
6. Collect their contexts (only the sequences needed are re-run) and their direct logit effects.
7. Write results.json and pages.json, and render the report.
"""
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import common
import data as datalib
import report
import sae as saelib
from common import die
from model import load_model

# -----------------------------------------------------------------------------
# default config (paper preset; PRESETS below overrides)
config = dict(
    data_dir="data",            # token files and tokenizer (data.py)
    out_dir="out",              # reads the models and SAEs here, writes out_dir/analysis/
    device="auto",              # auto = cuda when available, else cpu
    threads=0,                  # CPU threads for torch (0 = the cores free now)
    models=["base", "lua", "tinystories", "luastories"],  # every edge with both ends here is tracked
    domains=["base", "lua", "tinystories"],  # validation splits the token set is drawn from (equal shares)
    n_tokens=1_048_576,         # evaluation tokens, as whole block_size windows (fewer if the val splits are short)
    min_tokens=2048,            # a smaller token set cannot estimate a correlation: error
    seed=0,                     # token-set (and random-context) seed
    sae_seed=0,                 # the SAEs tracked
    null_seed=1,                # the second SAE per model for the null baseline (sae.py --seeds 0,1)
    threshold=0.8,              # Pearson r for a match (the study's value)
    skip_first=1,               # positions < skip_first are left out, as sae.py leaves them out (position 0 has no context)
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
CHECKS = {"threads": ">=0", "n_tokens": ">0", "min_tokens": ">=0", "threshold": "(0,1]", "skip_first": ">=0",
          "batch_size": ">0", "corr_dtype": ("float32", "float64"), "n_select": ">=0", "n_top": ">=0",
          "n_random": ">=0", "ctx_window": ">0", "n_show": ">0", "max_pairs": ">=0", "max_requests": ">=0"}
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
    for start, h in saelib.mlp_activations(model, seqs[order], batch, device):    # h (b, T, d_mlp)
        ids = order[start:start + len(h)]
        a = sae.encode(h.reshape(-1, h.shape[-1]))[:, idx].view(len(ids), T, -1).float().cpu().numpy()  # (b, T, n_feats)
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



def _r(a, d=4):
    """r rounded down (to within 1e-10), so that a rounded value is >= a threshold of d decimals when r is."""
    return (np.floor(np.asarray(a, dtype=np.float64) * 10 ** d + 1e-6) / 10 ** d).tolist()


# -----------------------------------------------------------------------------
# the study's steps, in the order main() runs them

@dataclass
class Study:
    """The models and SAEs under study, checked to belong together (load_study)."""
    models: list           # model names, in --models order
    edges: list            # [(name 'parent->child', parent, child)] with both ends in models
    model: dict            # name -> Transformer (eval mode)
    sae: dict              # (name, seed) -> SAE; seed sae_seed always, null_seed where that SAE exists
    info: dict             # name -> {"ckpt", "model_hash", "sae<seed>": {hash, metrics, config, args}}
    nulls: list            # models with both SAE seeds: their seed-null pair is tracked
    null_missing: list     # models without a null_seed SAE
    pairs: list            # [(name, (model, seed), (model, seed))]: the edges, then the seed-null pairs
    d_mlp: int
    block_size: int
    tokenizer_hash: str    # the models' tokenizer; the token files are checked against it (data.open_tokens)


def settings(argv):
    """The config, checked; and explain.py when --explain asks for it (its API key checked before the long pass)."""
    cfg = common.parse_config(dict(config), argv, presets=PRESETS, preset_default=common.default_preset(), checks=CHECKS)
    if cfg["sae_seed"] == cfg["null_seed"]:
        die(f"--null_seed must differ from --sae_seed ({cfg['sae_seed']}): the null baseline compares two SAEs of one model")
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
        explain.check_key({k: cfg[k] for k in ("api_base",) if cfg[k]})  # before the long pass, not after it
    return cfg, explain


def check_lineage(info, edges):
    """A child must descend from the parent checkpoint on disk now: a retrained base or fine-tune makes its
    children stale, and their correlations would compare unrelated models."""
    def ancestors(name, seen=()):
        found = set()
        for par in info[name]["ckpt"].get("parents", []):
            found.add(par["hash"])
            if par["name"] in info and par["name"] not in seen:
                found |= ancestors(par["name"], seen + (name,))
        return found
    for _, parent, child in edges:
        if info[parent]["model_hash"] not in ancestors(child):
            remake = "python merge.py --overwrite" if child == "luastories" else f"python train.py --domain {child} --overwrite"
            die(f"'{child}' was not made from the current '{parent}' checkpoint ({parent} was re-made since?); "
                f"re-make it: {remake}")


def load_study(cfg, device):
    """Step 1: the models and SAEs, with the checks that make their correlations meaningful."""
    models, out_dir = list(dict.fromkeys(cfg["models"])), cfg["out_dir"]
    edges = [(f"{p}->{c}", p, c) for p, c in EDGES if p in models and c in models]
    if not edges:
        die(f"--models {','.join(models)} contains no parent -> child edge ({', '.join(f'{p}->{c}' for p, c in EDGES)})")
    net, info = {}, {}
    for m in models:
        net[m], ckpt = load_model(out_dir, m, device)
        info[m] = {"ckpt": ckpt, "model_hash": common.sha256_file(os.path.join(out_dir, m, "ckpt.pt"))}
    toks = {m: info[m]["ckpt"].get("tokenizer_hash") for m in models}
    if len(set(toks.values())) > 1:
        die("the models use different tokenizers (" + ", ".join(f"{m} {t}" for m, t in toks.items()) +
            "); train them all from one --data_dir")
    check_lineage(info, edges)
    widths = {m: (net[m].args.d_mlp, net[m].args.block_size) for m in models}
    if len(set(widths.values())) > 1:
        die("the models differ in d_mlp / block_size (" + ", ".join(f"{m} {w}" for m, w in widths.items()) +
            "); fine-tunes and merges of one base share its shape")
    s0, s1 = cfg["sae_seed"], cfg["null_seed"]
    saes, null_missing = {}, []
    for m in models:
        for seed in (s0, s1):
            path = saelib.sae_path(out_dir, m, seed)
            if seed == s1 and not os.path.exists(path):
                null_missing.append(m)
                continue
            sae, sck = saelib.load_sae(out_dir, m, seed=seed, device=device)
            saelib.check_sae_matches(sck, info[m]["ckpt"], model_hash=info[m]["model_hash"])
            saes[(m, seed)] = sae
            info[m][f"sae{seed}"] = {"hash": common.sha256_file(path), "metrics": sck.get("metrics", {}),
                                     "config": sck.get("config"), "args": sck["sae_args"]}
    nulls = [m for m in models if (m, s1) in saes]
    pairs = [(n, (p, s0), (c, s0)) for n, p, c in edges] + [(m, (m, s0), (m, s1)) for m in nulls]
    d_mlp, block_size = widths[models[0]]
    return Study(models, edges, net, saes, info, nulls, null_missing, pairs, d_mlp, block_size, toks[models[0]])


def draw_tokens(cfg, study):
    """Step 2: the evaluation token set, drawn once and used by every model. Returns (seqs (n, T), token_set record)."""
    data_dir, T, skip = cfg["data_dir"], study.block_size, cfg["skip_first"]
    first = study.models[0]
    arrays = {d: datalib.open_tokens(data_dir, d, "val", tok_hash=study.tokenizer_hash,
                                     vocab_size=study.model[first].args.vocab_size, who=first) for d in cfg["domains"]}
    # distinct aligned non-overlapping windows, equal shares per domain, a short split gives what it has
    seqs, per_dom = datalib.sample_windows(arrays, cfg["n_tokens"] // T, T, "tiles", cfg["seed"], with_counts=True)
    if not skip < T - 1:
        die(f"--skip_first {skip} must be in [0, block_size - 1) = [0, {T - 1})")
    n_seq, n_tok = len(seqs), len(seqs) * (T - skip)  # tokens that enter every statistic
    if n_tok < max(cfg["min_tokens"], 2):
        die(f"the evaluation token set has {n_tok} tokens ({', '.join(f'{d}: {k} windows of {T}' for d, k in per_dom.items())}), "
            f"fewer than the {cfg['min_tokens']} needed to estimate a correlation; prepare more val data "
            f"(python data.py) or raise --n_tokens")
    sources = {d: datalib.read_meta(data_dir, d).get("source") for d in cfg["domains"]}
    token_set = {"n_tokens": int(n_tok), "n_seq": n_seq, "block_size": T, "skip_first": skip, "per_domain": per_dom,
                 "seed": cfg["seed"], "sources": sources, "smoke_scale_demo": "sample" in sources.values()}
    short = f"; asked for {cfg['n_tokens']:,}, the val splits hold fewer" if seqs.size < cfg["n_tokens"] - T else ""
    print(f"token set: {n_tok:,} tokens = {n_seq} windows of {T} (positions >= {skip}; "
          + ", ".join(f"{d} {k}" for d, k in per_dom.items()) + f") from the val splits, seed {cfg['seed']}{short}")
    return seqs, token_set


@torch.no_grad()
def stream(cfg, study, seqs, device):
    """Step 3: one pass over the token set, every model and SAE once per chunk, every pair's sums updated
    from it. Returns ({pair name: CorrAccumulator}, {(model, seed): feature stats}, seconds)."""
    s0, batch, T, skip = cfg["sae_seed"], cfg["batch_size"], study.block_size, cfg["skip_first"]
    mm_dtype = torch.float64 if cfg["corr_dtype"] == "float64" else torch.float32
    acc = {n: CorrAccumulator(study.sae[a].n_features, study.sae[b].n_features, device, mm_dtype) for n, a, b in study.pairs}
    stats = {k: stats_init(sae.n_features, cfg["n_top"] if k[1] == s0 else 0, device) for k, sae in study.sae.items()}
    n_seq, n_chunks, t0 = len(seqs), -(-len(seqs) // batch), time.time()
    acts = [saelib.mlp_activations(study.model[m], seqs, batch, device, skip) for m in study.models]
    for chunk, per_model in enumerate(zip(*acts)):
        feats = {}
        for m, (start, h) in zip(study.models, per_model):
            n_rows = len(h)
            h = h.reshape(-1, study.d_mlp)                                       # (b*(T-skip), d_mlp)
            for key in ((m, s0), (m, cfg["null_seed"])):
                if key in study.sae:
                    feats[key] = study.sae[key].encode(h)                         # (b*(T-skip), n_features)
                    stats_update(stats[key], feats[key], start, n_rows)
        for n, a, b in study.pairs:
            acc[n].update(feats[a], feats[b])
        if (chunk + 1) % max(1, n_chunks // 10) == 0 or chunk + 1 == n_chunks:
            done = min(start + batch, n_seq) * (T - skip)
            print(f"chunk {chunk + 1}/{n_chunks}: {done:,} tokens, {done / (time.time() - t0):,.0f} tok/s")
    return acc, stats, time.time() - t0


def one_to_one_record(c, sae_a, sae_b):
    """The greedy one-to-one matching of a classified pair, with each matched pair's decoder cosine."""
    one, one_r = greedy_matching(c["pairs"], c["pair_r"])
    cos = decoder_cos(sae_a.W_dec, sae_b.W_dec, one[:, 0], one[:, 1])
    return {"n": len(one), "mean_cos": float(cos.mean()) if len(one) else None,
            "pairs": [[int(i), int(j), round(float(r), 4), round(float(q), 4)] for (i, j), r, q in zip(one, one_r, cos)]}


def pair_record(c, sae_a, sae_b, dead_a, dead_b, parent, child, max_pairs):
    """results.json's record of one classified pair (an edge or a seed-null)."""
    counts = c["counts"]
    many = c["pairs"][:max_pairs]
    cos_many = decoder_cos(sae_a.W_dec, sae_b.W_dec, many[:, 0], many[:, 1])
    return {"parent": parent, "child": child, "counts": counts,
            "persisting_frac": counts["persisting"] / max(counts["parent_live"], 1),
            "emerging_frac": counts["emerging"] / max(counts["child_live"], 1),
            "one_to_one": one_to_one_record(c, sae_a, sae_b),
            "many_to_many": {"n": counts["pairs"], "truncated": counts["pairs"] > len(many),
                             "pairs": [[int(i), int(j), round(float(r), 4), round(float(q), 4)]
                                       for (i, j), r, q in zip(many, c["pair_r"][:len(many)], cos_many)]},
            "parent_best": {"feature": c["parent_best"].tolist(), "r": _r(c["parent_best_r"])},
            "child_best": {"feature": c["child_best"].tolist(), "r": _r(c["child_best_r"])},
            "hist": {"bins": HIST_BINS.round(3).tolist(), "parent": histogram(c["parent_best_r"], ~dead_a),
                     "child": histogram(c["child_best_r"], ~dead_b)}}


def classify_pairs(cfg, study, acc, dead):
    """Step 4: r per pair (one (F, F) matrix in memory at a time), classified at the threshold.
    Returns (classify() outputs by pair name, edge records, null records by model)."""
    cls, records = {}, {}
    for n, a, b in study.pairs:
        r = acc.pop(n).finalize()
        cls[n] = classify(r, dead[a], dead[b], cfg["threshold"])
        del r
        records[n] = pair_record(cls[n], study.sae[a], study.sae[b], dead[a], dead[b], a[0], b[0], cfg["max_pairs"])
    null = {m: records.pop(m) for m in study.nulls}
    for n, p, ch in study.edges:
        records[n]["null_parent_persisting_frac"] = null[p]["persisting_frac"] if p in null else None
        records[n]["null_child_persisting_frac"] = null[ch]["persisting_frac"] if ch in null else None
    return cls, records, null


def select_pages(cfg, study, cls, dens):
    """Step 5: the features that get a page: per edge and category (select_features), the nearest feature
    across the edge of each disappearing / emerging one, and every selected feature's partners in the
    other models (trail). Returns (selection {edge: {category: [(model, i)]}}, page keys, trails, near)."""
    s0, selection, keys, near = cfg["sae_seed"], {}, set(), {}
    for n, p, ch in study.edges:
        sel = select_features(cls[n], cfg["n_select"], dens[(p, s0)], dens[(ch, s0)])
        selection[n] = {"persisting": [(p, i) for i in sel["persisting"]],
                        "disappearing": [(p, i) for i in sel["disappearing"]],
                        "emerging": [(ch, i) for i in sel["emerging"]]}
        for category, chosen in selection[n].items():
            for m, i in chosen:
                keys.add((m, i))
                if category != "persisting":  # the nearest feature across the edge, below the threshold
                    other, side = (ch, "parent") if m == p else (p, "child")
                    j, r = int(cls[n][f"{side}_best"][i]), float(cls[n][f"{side}_best_r"][i])
                    if j >= 0 and r > 0:
                        near[(m, i)] = (other, j, round(r, 4))
                        keys.add((other, j))
    trails = {}
    for m, i in list(keys):
        trails[(m, i)] = trail(m, i, study.edges, cls, cfg["threshold"])
        keys.update((tm, tj) for tm, tj, _, _ in trails[(m, i)])
    return selection, keys, trails, near


def collect_pages(cfg, study, stats, seqs, keys, device):
    """Step 6: contexts (top sequences cut around the max, and shared random windows) and direct logit
    effects of the page features. Returns ({(model, i): contexts}, {(model, i): (top, bottom)}, token strings)."""
    s0, T = cfg["sae_seed"], study.block_size
    rng = np.random.default_rng(cfg["seed"] + 1)
    width = min(cfg["ctx_window"], T)
    rand = [(int(s), int(rng.integers(0, T - width + 1)))
            for s in rng.choice(len(seqs), size=min(cfg["n_random"], len(seqs)), replace=False)]
    ctx, logit, ids_used = {}, {}, set()
    for m in study.models:
        feats = sorted(i for mm, i in keys if mm == m)
        if not feats:
            continue
        st, sae = stats[(m, s0)], study.sae[(m, s0)]
        top_seqs = {i: [int(s) for s, v in zip(st["top_i"][:, i].tolist(), st["top_v"][:, i].tolist()) if v > 0]
                    for i in feats}
        got = collect_contexts(study.model[m], sae, seqs, feats, top_seqs, rand, width, cfg["batch_size"], device,
                               cfg["skip_first"])
        ti, tv, bi, bv = logit_effects(study.model[m], sae.W_dec[torch.tensor(feats, device=sae.W_dec.device)])
        for k, i in enumerate(feats):
            ctx[(m, i)] = got[i]
            logit[(m, i)] = (list(zip(ti[k].tolist(), tv[k].tolist())), list(zip(bi[k].tolist(), bv[k].tolist())))
            ids_used.update(ti[k].tolist() + bi[k].tolist())
            for c in got[i]["top"] + got[i]["random"]:
                ids_used.update(c[0])
    return ctx, logit, token_strings(datalib.load_tokenizer(cfg["data_dir"]), ids_used)


def run_explain(cfg, explain, ctx, tok, dead):
    """--explain: explanations and scores of the page features from an LLM (explain.py); {} without it.
    An endpoint problem must not throw the analysis away: what was answered is cached and kept."""
    if explain is None:
        return {}
    s0 = cfg["sae_seed"]
    feats = [{"key": f"{m}/{i}", "model": m, "feature": int(i),
              "top": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["top"]],
              "random": [{"tokens": [tok[t] for t in c[0]], "acts": c[1]} for c in ctx[(m, i)]["random"]]}
             for m, i in sorted(ctx) if not dead[(m, s0)][i]]
    ecfg = {k: cfg[k] for k in ("api_base", "llm_model", "max_requests") if cfg[k]}
    try:
        return explain.explain_features(feats, {**ecfg, "cache_dir": os.path.join(cfg["out_dir"], "explain_cache")})
    except common.UserError as e:
        print(f"explain stopped ({e.msg}); writing the analysis without explanations. Answers so far are "
              f"cached: re-run with --explain to continue")
        return {}


STATUS_LEGEND = {"p": "persists", "d": "disappears", "m": "matched", "e": "emerges", "x": "dead"}


def status_strings(c):
    """Each feature's status on one edge as a string, one letter per feature (STATUS_LEGEND): the report
    shows these, it never re-derives them from r."""
    parent = np.where(c["dead_parent"], "x", np.where(c["persisting"], "p", "d"))
    child = np.where(c["dead_child"], "x", np.where(c["matched_child"], "m", "e"))
    return {"parent": "".join(parent.tolist()), "child": "".join(child.tolist())}


def page_data(cfg, study, cls, ctx, logit, trails, near, tok, explanations):
    """pages.json: what the report's feature pages show (contexts, logit effects, partners) and each
    feature's status per edge."""
    def values(a):
        return [float(f"{v:.3g}") for v in a]
    pages = {f"{m}/{i}": {"top": [[c[0], values(c[1])] for c in ctx[(m, i)]["top"][:cfg["n_show"]]],
                          "pos": [[t, round(v, 3)] for t, v in logit[(m, i)][0]],
                          "neg": [[t, round(v, 3)] for t, v in logit[(m, i)][1]],
                          "trail": [[tm, tj, round(tr, 4), via] for tm, tj, tr, via in trails.get((m, i), [])],
                          "near": list(near[(m, i)]) if (m, i) in near else None,
                          "expl": explanations.get(f"{m}/{i}")} for m, i in ctx}
    return {"pages": pages, "tok": tok, "status_legend": STATUS_LEGEND,
            "status": {n: status_strings(cls[n]) for n, _, _ in study.edges},
            "provenance": common.provenance(cfg)}


def models_record(study, s0, s1, dens, dead):
    """results.json's per-model block: features, live / dead, median density, hashes, SAE metrics."""
    out = {}
    for m in study.models:
        info, live = study.info[m], ~dead[(m, s0)]
        out[m] = {"n_features": study.sae[(m, s0)].n_features, "live": int(live.sum()), "dead": int(dead[(m, s0)].sum()),
                  "median_density": float(np.median(dens[(m, s0)][live])) if live.any() else 0.0,
                  "model_hash": info["model_hash"], "sae_hash": info[f"sae{s0}"]["hash"],
                  "null_sae_hash": info.get(f"sae{s1}", {}).get("hash"),
                  "sae_metrics": {k: v for k, v in info[f"sae{s0}"]["metrics"].items() if isinstance(v, (int, float))}}
    return out


def results_record(cfg, study, token_set, edges, null, fam, dens, dead, selection, explanations, seconds):
    """results.json: the findings and everything they were computed from (config in the provenance)."""
    s0, s1, data_dir, out_dir = cfg["sae_seed"], cfg["null_seed"], cfg["data_dir"], cfg["out_dir"]
    sweep_path = os.path.join(out_dir, "merge_sweep.json")
    info = study.info
    prov = common.provenance(
        cfg, models={m: info[m]["model_hash"] for m in study.models},
        saes={m: {f"s{s}": info[m][f"sae{s}"]["hash"] for s in (s0, s1) if f"sae{s}" in info[m]} for m in study.models},
        model_configs={m: info[m]["ckpt"].get("config") for m in study.models},
        sae_configs={m: {"args": info[m][f"sae{s0}"]["args"], "config": info[m][f"sae{s0}"]["config"]} for m in study.models},
        tokenizer_hash=study.tokenizer_hash, token_set_seed=cfg["seed"],
        val_files={d: common.sha256_file(os.path.join(data_dir, d, "val.bin")) for d in cfg["domains"]},
        merge_sweep=common.sha256_file(sweep_path) if os.path.exists(sweep_path) else None)
    return {"threshold": cfg["threshold"],
            "matching": "one-to-one: greedy on r (highest first, each feature once); "
                        "many-to-many: every pair with r >= threshold",
            "token_set": token_set, "models": models_record(study, s0, s1, dens, dead),
            "edges": edges, "null": null, "null_missing": study.null_missing, "families": fam,
            "density": {m: [float(f"{v:.4g}") for v in dens[(m, s0)]] for m in study.models},
            "selection": {n: {c: [[m, int(i)] for m, i in v] for c, v in s.items()} for n, s in selection.items()},
            "explanations": explanations, "stream_seconds": round(seconds, 2), "provenance": prov}


def print_summary(res, study, seconds):
    n_tok = res["token_set"]["n_tokens"]
    print(f"streamed {n_tok:,} tokens through {len(study.models)} models and {len(study.sae)} SAEs in {seconds:.1f} s "
          f"({n_tok / max(seconds, 1e-9):,.0f} tok/s)")
    if res["families"]:
        c = res["families"]["counts"]
        print(f"families: of {c['base_live']} live base features, reach luastories by both paths {c['paths']['both']}, "
              f"lua only {c['paths']['lua_only']}, tinystories only {c['paths']['tinystories_only']}, "
              f"neither {c['paths']['neither']}")
    print(edge_table(res))
    if res["token_set"]["smoke_scale_demo"]:
        print("(smoke-scale demo: the data source is data.py's generated sample)")


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg, explain = settings(argv)
    device = common.pick_device(cfg["device"])
    threads = common.set_threads(cfg["threads"])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # correlations want full float32 products
    s0, s1 = cfg["sae_seed"], cfg["null_seed"]
    print(f"preset {cfg['preset']}, device {device}, {threads} CPU thread(s), threshold {cfg['threshold']}, "
          f"models {', '.join(dict.fromkeys(cfg['models']))}")
    adir = os.path.join(cfg["out_dir"], "analysis")
    with torch.no_grad(), common.lock_dir(adir, "an analysis"):
        # 1. models and SAEs; 2. the token set
        study = load_study(cfg, device)
        seqs, token_set = draw_tokens(cfg, study)
        print("SAEs: " + ", ".join(f"{m} {study.sae[(m, s0)].n_features}" for m in study.models) + f" features; null "
              f"baseline (seed {s0} vs {s1}) for {', '.join(study.nulls) or 'no model'}"
              + (f"; no seed-{s1} SAE for {', '.join(study.null_missing)}" if study.null_missing else ""))
        print(f"{len(study.edges)} edges + {len(study.nulls)} null pairs, chunks of {cfg['batch_size']} x "
              f"{study.block_size} tokens, x^T y in {cfg['corr_dtype']}, sums in float64")
        # 3. one streaming pass; 4. classification of every pair, families
        acc, stats, seconds = stream(cfg, study, seqs, device)
        dens = {k: (st["nnz"] / token_set["n_tokens"]).cpu().numpy() for k, st in stats.items()}
        dead = {k: st["nnz"].cpu().numpy() == 0 for k, st in stats.items()}
        cls, edges, null = classify_pairs(cfg, study, acc, dead)
        fam = None
        if all(m in study.models for m in MODELS):
            fam_counts, codes, legend = families(cls)
            fam = {"counts": fam_counts, "code": codes.tolist(), "code_legend": legend}
        # 5. the features that get a page; 6. their contexts and logit effects (and explanations)
        selection, keys, trails, near = select_pages(cfg, study, cls, dens)
        ctx, logit, tok = collect_pages(cfg, study, stats, seqs, keys, device)
        explanations = run_explain(cfg, explain, ctx, tok, dead)
        # 7. results.json, pages.json, report.html
        res = results_record(cfg, study, token_set, edges, null, fam, dens, dead, selection, explanations, seconds)
        pages = page_data(cfg, study, cls, ctx, logit, trails, near, tok, explanations)
        common.atomic_write_json(os.path.join(adir, "results.json"), res)
        common.atomic_write_json(os.path.join(adir, "pages.json"), pages)
        report_path = report.write_report(cfg["out_dir"])
    print_summary(res, study, seconds)
    print(f"-> {os.path.join(adir, 'results.json')}\n-> {report_path}")
    return {**res, "config": cfg}


if __name__ == "__main__":
    common.cli(main)
