"""
Model diffing beyond correlation (issue 28): on every edge of the study, the parent's and the child's
SAEs cross-applied to the other model's activations, and a crosscoder trained on both models'
activations of the same tokens; written beside the tracking so that analyze.py can put the three
readings of an edge side by side. DESIGN.md ("Model diffing") has the definitions and cut-offs.

    python diffing.py                          # out/diffing/diffing.json, cc_<parent>_<child>_s<seed>.pt
                                               # (stopped or killed: run it again, an edge resumes at its state)
    python diffing.py --arch l1 --edges 'base->lua' --overwrite  # (quoted: > is the shell's redirection)
                                               # that edge's crosscoders replaced; diffing.json then holds
                                               # only the edges made with these settings
    python analyze.py                          # folds out/diffing/diffing.json into results.json["diffing"]

The order (diffing.py after sae.py, before analyze.py): everything here is computed from the models and
their SAEs alone; the correlation's statuses are analyze.py's. So this script gives each SAE feature its
best-matching crosscoder latent (Pearson r over analyze.py's own token set: analyze.draw_tokens with
analyze.py's settings), and analyze.py joins that with its statuses (analyze.diffing_record). A
diffing.json made from other SAEs than analyze.py loads is named as stale there, never joined.

1. Cross-application (Kissane et al. 2024, "SAEs (usually) transfer between base and chat models"):
   the parent's SAE and the child's, each on both models' MLP activations of the same held-out windows:
   FVU, L0 and CE recovered spliced into that model (sae.evaluate, the metrics of sae.py itself), and
   per feature its firing rate on its own model's and on the other model's activations of the same tokens.
2. Crosscoders (Lindsey et al. 2024, "Sparse crosscoders for cross-layer features and model diffing";
   Minder et al. 2025, "Overcoming sparsity artifacts in crosscoders to interpret chat-tuning"): one
   dictionary of latents f = act(sum_m (x^m - b_dec^m) W_enc^m + b_enc) read from both models'
   activations x^m of a token, a decoder per model, x_hat^m = f W_dec^m + b_dec^m. Two sparsities:
   l1: ReLU, loss sum_m ||x^m - x_hat^m||^2 + l1_coeff sum_i f_i sum_m ||W_dec,i^m|| (Anthropic's);
   batchtopk: over a batch of B tokens the k*B largest f_i * sum_m ||W_dec,i^m|| are kept (Minder et
   al.), with AuxK on dead latents (sae.TopK.aux_loss) and, outside training, a threshold on that score
   (an EMA of the smallest kept one, Bussmann et al. 2024). Inputs scaled per model to E||x^m|| =
   sqrt(d) (as sae.py); the crosscoder works in that space, where its loss and its decoder norms are
   defined, and takes raw activations (Crosscoder.scaled). Per latent the relative decoder norm
   delta = (1/2) ((n_child - n_parent) / max(n_parent, n_child) + 1) (Minder et al.): 0 parent-only,
   1/2 shared, 1 child-only, with CUTS; exclusive latents get the latent-scaling check (ScalingSums).
   Every edge gets two seeds: the crosscoder's own null (how many latents a second seed finds again,
   and whether it gives them the same class).
3. Per SAE feature (seed sae_seed) its best crosscoder latent (seed 0 of the crosscoders) by r, and
   the latent's class: analyze.py's agreement table and its examples of disagreement.
"""
import math
import os
import time

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common
from common import die

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import analyze
import fast
import sae as saelib
from model import load_checkpoint

# -----------------------------------------------------------------------------
# config: the paper preset (one GPU); PRESETS below override it
config = dict(
    data_dir="data",       # token files (data.py)
    out_dir="out",         # models and SAEs here; writes out_dir/diffing/
    edges=["base->lua", "base->tinystories", "lua->luastories", "tinystories->luastories"],  # parent->child
    seeds=[0, 1],          # one crosscoder per seed and edge, fed the identical stream (two: the null)
    arch="batchtopk",      # batchtopk (Minder et al.: no L1 artefacts) | l1 (Anthropic's decoder-norm-weighted L1)
    expansion=16,          # latents = expansion x d_mlp (paper: 16,384, as one SAE; the pair shares them)
    k=64,                  # batchtopk: latents kept per token on average over the batch (both models together)
    l1_coeff=3.0,          # l1: weight of sum_i f_i sum_m ||W_dec,i^m|| (in the scaled space, as sae.py's)
    l1_warmup_frac=0.05,   # l1: the weight ramps from 0 over the first 5% of steps
    aux_k=0,               # batchtopk: dead latents in the AuxK loss; 0 = d_mlp // 2 (Gao et al.)
    aux_coeff=1 / 32,      # batchtopk: AuxK weight
    dead_acts=10_000_000,  # batchtopk: a latent is dead (for AuxK) after this many activations without firing
    lr=1e-4,               # Adam learning rate; linearly to 0 over the last lr_decay_frac
    lr_decay_frac=0.2,
    total_acts=50_000_000,  # training tokens per crosscoder (each token: both models' activations)
    seqs_per_batch=128,    # a batch = seqs_per_batch windows x tokens_per_seq positions (sae.harvest's stream)
    tokens_per_seq=24,
    skip_first=1,          # never positions < skip_first (as sae.py and analyze.py)
    seq_len=0,             # harvested window length; 0 = the model's block_size
    buffer_batches=32,     # shuffle buffer, in batches
    harvest_batch=64,      # windows per model forward while harvesting
    data_seed=4321,        # the training stream (both models read the same windows and positions)
    mix="tokens",          # the child's domains in the stream: tokens | equal (as sae.py)
    eval_seqs=1024,        # held-out windows of the cross-application metrics (the child's domains)
    eval_batch=16,
    sae_seed=0,            # the SAEs cross-applied and matched to latents (analyze.py's sae_seed)
    n_tokens=0,            # the token set the features are matched on: analyze.py's; 0 = its preset's (give both the
                           # same --n_tokens, as reproduce.sh does with EXTRA, or analyze.py will not join the two)
    match_threshold=0.8,   # r at which a latent of seed 0 is found again in seed 1 (the crosscoder's null)
    scaling_cut=0.5,       # latent scaling: an exclusive latent whose other model carries >= this share is spurious
    fire_ratio=10.0,       # cross-application: a feature "stops" when its rate falls by this factor, "starts" ...
    ckpt_interval=4000,    # steps between an edge's saved training state (all its seeds): a rerun resumes there
    stop_step=0,           # > 0: stop an edge's training at this step, its state saved (a rerun continues it)
    overwrite=False,       # retrain the crosscoders even where current ones exist
    fast=True,             # fast.py's speed-ups for the harvest and the correlation (equal to rounding)
    fast_math=True,        # CUDA: TF32 training, a bf16 harvest forward (metrics stay float32)
    threads=0,             # CPU threads; 0 = the cores free now
    device="auto",
)
PRESETS = {
    "paper": dict(),
    # tiny: at the quickstart's d_mlp 256, 512 latents and 131k tokens per crosscoder, 4 edges x 2 seeds: a minute
    # or two on a 2-core CPU (BENCHMARKS.md, "Model diffing")
    "tiny": dict(expansion=2, k=16, l1_coeff=1.5, lr=4e-3, total_acts=131_072, seqs_per_batch=32, tokens_per_seq=16,
                 buffer_batches=16, harvest_batch=128, dead_acts=65_536, mix="equal", eval_seqs=96, eval_batch=32,
                 ckpt_interval=100),
}
CHECKS = {"seeds": ">=0", "arch": ("batchtopk", "l1"), "expansion": ">=1", "k": ">=1", "l1_coeff": ">=0",
          "l1_warmup_frac": "[0,1]", "aux_k": ">=0", "aux_coeff": ">=0", "dead_acts": ">0", "lr": ">0",
          "lr_decay_frac": "[0,1]", "total_acts": ">0", "seqs_per_batch": ">0", "tokens_per_seq": ">0",
          "skip_first": ">=0", "seq_len": ">=0", "buffer_batches": ">0", "harvest_batch": ">0",
          "mix": ("tokens", "equal"),
          "eval_seqs": ">0", "eval_batch": ">0", "sae_seed": ">=0", "n_tokens": ">=0", "match_threshold": "(0,1]",
          "scaling_cut": "(0,1]",
          "fire_ratio": ">1", "threads": ">=0", "ckpt_interval": ">=0", "stop_step": ">=0"}
# relative decoder norm cut-offs (Minder et al. 2025): parent-only below, child-only above, shared inside;
# between them "mixed" (a latent both models use, one clearly more)
CUTS = {"parent_only": 0.1, "shared": (0.4, 0.6), "child_only": 0.9}
CLASSES = {"s": "shared", "p": "parent-only", "c": "child-only", "m": "mixed", "x": "dead"}
DELTA_BINS = np.linspace(0.0, 1.0, 41)  # histogram of the live latents' relative norms (Lindsey et al.'s plot)


# -----------------------------------------------------------------------------
# the crosscoder

class Crosscoder(nn.Module):
    """x (N, M, d) scaled activations of M models -> f = act(sum_m (x^m - b_dec^m) W_enc^m + b_enc)
    (N, L) -> x_hat^m = f W_dec^m + b_dec^m (N, M, d). scale (M,): raw activations times it are the
    scaled space (Crosscoder.scaled). threshold: batchtopk's inference threshold (-1: not set yet)."""

    def __init__(self, n_models, d_in, n_latents, arch="batchtopk", k=1):
        super().__init__()
        if arch not in ("batchtopk", "l1"):
            die(f"unknown --arch {arch!r}; use batchtopk or l1")
        self.n_models, self.d_in, self.n_latents, self.arch, self.k = n_models, d_in, n_latents, arch, k
        self.W_enc = nn.Parameter(torch.zeros(n_models, d_in, n_latents))
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.zeros(n_models, n_latents, d_in))  # [m, i] = latent i's direction in m
        self.b_dec = nn.Parameter(torch.zeros(n_models, d_in))
        self.register_buffer("scale", torch.ones(n_models))
        self.register_buffer("threshold", torch.tensor(-1.0))

    def scaled(self, x_raw):
        return x_raw.float() * self.scale[:, None]

    def dec_norms(self):
        """(M, L): each latent's decoder norm in each model."""
        return self.W_dec.norm(dim=-1)

    def pre_acts(self, x):
        return torch.einsum("nmd,mdl->nl", x - self.b_dec, self.W_enc) + self.b_enc

    def activate(self, pre, train=False):
        f = F.relu(pre)
        if self.arch == "l1":
            return f
        score = f * self.dec_norms().sum(0)          # what BatchTopK ranks: the latent's weight in the loss
        if train:                                      # the k * B largest scores of the batch
            top = score.flatten().topk(min(self.k * len(f), score.numel()))
            keep = torch.zeros_like(score).flatten().scatter_(0, top.indices, 1.0).view_as(score) > 0
            with torch.no_grad():                      # EMA of the smallest kept positive score
                kept = top.values[top.values > 0]
                if len(kept):
                    m = kept.min()
                    self.threshold.copy_(m if self.threshold < 0 else 0.99 * self.threshold + 0.01 * m)
            return f * keep
        return f * (score > self.threshold.clamp_min(0))

    def decode(self, f):
        return torch.einsum("nl,mld->nmd", f, self.W_dec) + self.b_dec

    def forward(self, x, train=False):
        f = self.activate(self.pre_acts(x), train)
        return self.decode(f), f


def crosscoder_args(cc):
    return {"n_models": cc.n_models, "d_in": cc.d_in, "n_latents": cc.n_latents, "arch": cc.arch, "k": cc.k}


def init_crosscoder(n_models, d_in, n_latents, arch, k, seed, b_dec=None, scale=None):
    """Random unit decoder rows in every model (independent per model, seeded), encoder = decoder
    transpose / M (the latent starts near each model's share of the identity)."""
    cc = Crosscoder(n_models, d_in, n_latents, arch, k)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(n_models, n_latents, d_in, generator=g)
        cc.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        cc.W_enc.copy_(cc.W_dec.transpose(1, 2) / n_models)
        if b_dec is not None:
            cc.b_dec.copy_(b_dec)
        if scale is not None:
            cc.scale.copy_(scale)
    return cc


def crosscoder_loss(cc, x, l1_coeff=0.0, dead=None, aux_k=0, aux_coeff=0.0):
    """x (N, M, d) scaled -> (loss, mse, f). mse: the mean over tokens of the squared error summed over
    models and dimensions. l1: + l1_coeff x the mean over tokens of sum_i f_i sum_m ||W_dec,i^m||.
    batchtopk: + aux_coeff x AuxK (sae.TopK.aux_loss) of the dead latents (dead: (L,) bool) on the residual."""
    pre = cc.pre_acts(x)                                 # (N, L), for the loss and AuxK alike
    f = cc.activate(pre, train=True)
    x_hat = cc.decode(f)                                 # (N, M, d)
    mse = (x_hat - x).pow(2).sum((1, 2)).mean()
    loss = mse
    if cc.arch == "l1":
        loss = loss + l1_coeff * (f * cc.dec_norms().sum(0)).sum(-1).mean()
    elif dead is not None and aux_coeff > 0 and bool(dead.any()):
        top = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, cc.n_latents), dim=-1)
        f_aux = torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))
        e_hat = torch.einsum("nl,mld->nmd", f_aux, cc.W_dec).flatten(1)
        loss = loss + aux_coeff * saelib.TopK.aux_loss(e_hat, x.flatten(1), x_hat.flatten(1))
    return loss, mse, f


def relative_norm(n_parent, n_child):
    """Minder et al.'s relative decoder norm, (1/2) ((n_c - n_p) / max(n_p, n_c) + 1): 0 when only the
    parent's decoder is nonzero, 1/2 when the two are equal, 1 when only the child's is. NaN when both are 0."""
    n_parent, n_child = torch.as_tensor(n_parent).double(), torch.as_tensor(n_child).double()
    top = torch.maximum(n_parent, n_child)
    return torch.where(top > 0, 0.5 * ((n_child - n_parent) / top.clamp_min(1e-300) + 1), float("nan"))


def latent_classes(delta, dead):
    """One letter per latent (CLASSES) from its relative norm delta and whether it is dead."""
    d = np.asarray(delta, dtype=np.float64)
    lo, hi = CUTS["shared"]
    out = np.where(d < CUTS["parent_only"], "p", np.where(d > CUTS["child_only"], "c",
                   np.where((d >= lo) & (d <= hi), "s", "m")))
    return np.where(np.asarray(dead) | np.isnan(d), "x", out)


def crosscoder_classes(cc, dead=False):
    """(delta, classes) of a crosscoder's latents from its decoder norms, always on the CPU: the one computation
    behind both the latents that get latent scaling (diff_pass) and the counts (crosscoder_record), so that a
    delta right at a cut-off, computed on two devices, cannot fall on one side for one and the other for the other."""
    norms = cc.dec_norms().detach().cpu()
    delta = relative_norm(norms[0], norms[1])
    return delta, latent_classes(delta.numpy(), dead)


def class_counts(classes):
    live = [c for c in classes if c != "x"]
    n = max(len(live), 1)
    counts = {CLASSES[k]: live.count(k) for k in "spcm"}
    return {"live": len(live), "dead": len(classes) - len(live), "counts": counts,
            "fractions": {k: round(v / n, 5) for k, v in counts.items()}}


class ScalingSums:
    """Latent scaling (Minder et al. 2025) of exclusive latents J, from sums over tokens. For latent j with
    its owner's decoder d_j (the child's for a child-only latent), in each model m the least-squares beta
    of beta f_j d_j against two targets: the error the other latents leave, eps^m = x^m - x_hat^m +
    f_j d_j^m, and the crosscoder's reconstruction, r^m = x_hat^m - b_dec^m:
    beta = sum_t f_j <d_j, target> / (||d_j||^2 sum_t f_j^2). nu_eps = beta_eps(other) / beta_eps(owner)
    (high: complete shrinkage, the other model still holds the direction in its error) and nu_r likewise
    (high: latent decoupling, the other model's other latents rebuild it). A latent with nu_eps or nu_r >=
    scaling_cut is a spurious exclusive: the other model carries a good share of it too."""

    def __init__(self, cc, J, owner):
        self.J, self.owner = torch.as_tensor(J, dtype=torch.long), torch.as_tensor(owner, dtype=torch.long)
        W = cc.W_dec.detach()                                    # (M, L, d)
        self.J, self.owner = self.J.to(W.device), self.owner.to(W.device)
        self.D = W[self.owner, self.J]                           # (J, d): the owner's decoder rows
        self.own = torch.einsum("jd,mjd->mj", self.D, W[:, self.J]).double()  # (M, J) d_j . d_j^m
        self.ff = torch.zeros(len(self.J), dtype=torch.float64, device=W.device)
        self.eps = torch.zeros(cc.n_models, len(self.J), dtype=torch.float64, device=W.device)
        self.rec = torch.zeros_like(self.eps)
        self.b_dec = cc.b_dec.detach()

    def update(self, x, x_hat, f):
        x, x_hat, f = x.detach(), x_hat.detach(), f.detach()
        fj = f[:, self.J].double()                               # (N, J)
        self.ff += (fj * fj).sum(0)
        for m in range(len(self.eps)):
            err = ((x[:, m] - x_hat[:, m]) @ self.D.T).double()    # (N, J) <d_j, error>
            rec = ((x_hat[:, m] - self.b_dec[m]) @ self.D.T).double()
            self.eps[m] += (fj * err).sum(0) + self.own[m] * (fj * fj).sum(0)
            self.rec[m] += (fj * rec).sum(0)

    def result(self, cut):
        norm2 = (self.D.double() ** 2).sum(1) * self.ff.clamp_min(1e-300)    # (J,)
        beta_eps, beta_rec = self.eps / norm2, self.rec / norm2            # (M, J)
        other = 1 - self.owner                                             # two models
        idx = torch.arange(len(self.J), device=self.J.device)

        def ratio(b):
            return (b[other, idx] / b[self.owner, idx].where(b[self.owner, idx].abs() > 1e-12,
                                                               torch.tensor(float("nan"), dtype=b.dtype)))
        nu_eps, nu_r = ratio(beta_eps).cpu(), ratio(beta_rec).cpu()
        fired = (self.ff > 0).cpu()
        spurious = fired & ((nu_eps >= cut) | (nu_r >= cut))
        return {"latent": self.J.tolist(), "nu_eps": [round(float(v), 4) for v in nu_eps],
                "nu_r": [round(float(v), 4) for v in nu_r], "spurious": spurious.tolist(), "fired": fired.tolist()}


# -----------------------------------------------------------------------------
# cross-application: per-feature firing on the own and the other model's activations

def firing_change(rate_own, rate_other, ratio):
    """Per-feature summary of an SAE's firing on its own model's tokens vs the other model's activations of
    the same tokens: live (fires on its own), stopped (its rate falls by `ratio` or more, to 0 included),
    started (silent or rare on its own: its rate rises by `ratio` or more; never-firing features included)."""
    own, other = np.asarray(rate_own, dtype=np.float64), np.asarray(rate_other, dtype=np.float64)
    live = own > 0
    stopped = live & (other * ratio <= own)
    started = (other > 0) & (other >= ratio * own)
    with np.errstate(divide="ignore"):
        log_ratio = np.log10(np.where(live & (other > 0), other / np.where(live, own, 1), np.nan))
    return {"live": int(live.sum()), "stopped": int(stopped.sum()), "started": int(started.sum()),
            "stopped_frac": round(float(stopped.sum()) / max(int(live.sum()), 1), 5),
            "median_log10_ratio": None if np.isnan(log_ratio).all() else round(float(np.nanmedian(log_ratio)), 4)}


# -----------------------------------------------------------------------------
# the run

def settings(argv):
    cfg = common.parse_config(dict(config), argv, PRESETS, common.default_preset(), checks=CHECKS)
    edges = []
    for e in cfg["edges"]:
        pc = tuple(e.split("->"))
        if pc not in analyze.EDGES:
            die(f"--edges: {e!r} is not an edge of the study; choose from "
                + ", ".join(f"{p}->{c}" for p, c in analyze.EDGES))
        edges.append(pc)
    if not edges:
        die("--edges is empty; give e.g. --edges base->lua")
    cfg["edges"] = [f"{p}->{c}" for p, c in dict.fromkeys(edges)]
    common.check_seeds(cfg["seeds"])
    return cfg, list(dict.fromkeys(edges))


def analysis_config(cfg, models, device):
    """analyze.py's settings for its preset, with these folders: the same token set as its run."""
    acfg = {**analyze.config, **analyze.PRESETS.get(cfg["preset"], {})}
    acfg.update(data_dir=cfg["data_dir"], out_dir=cfg["out_dir"], models=models, sae_seed=cfg["sae_seed"],
                null_seed=-1, spread_seed=-2, device=device, fast=cfg["fast"])
    if cfg["n_tokens"]:
        acfg["n_tokens"] = cfg["n_tokens"]
    acfg["min_tokens"] = 2  # the same tokens drawn; whether they are enough is analyze.py's check (--min_tokens)
    return acfg


def harvest_config(cfg, block_size):
    h = {k: cfg[k] for k in ("data_seed", "tokens_per_seq", "skip_first", "buffer_batches", "seqs_per_batch",
                             "mix", "harvest_batch", "fast_math", "fast")}
    h["seq_len"] = cfg["seq_len"] or block_size
    if h["seq_len"] > block_size or not 0 < h["tokens_per_seq"] <= h["seq_len"] - h["skip_first"]:
        die(f"need tokens_per_seq {cfg['tokens_per_seq']} <= seq_len {h['seq_len']} - skip_first {cfg['skip_first']}, "
            f"seq_len <= block_size {block_size}")
    return h


def paired_buffer(study, parent, child, arrays, chunk, hcfg, device):
    """Buffer `chunk` of the shared stream: (N, 2, d) raw activations of parent and child at the same
    windows and positions (sae.harvest is a pure function of (data_seed, chunk), so both read the same)."""
    return torch.stack([saelib.harvest(study.model[m], arrays, chunk, hcfg, device) for m in (parent, child)], 1)


def cc_path(cfg, parent, child, seed):
    return os.path.join(cfg["out_dir"], "diffing", f"cc_{parent}_{child}_s{seed}.pt")


def state_path(cfg, parent, child):
    """An edge's training state while it trains (every seed at one step; removed once its crosscoders are saved)."""
    return os.path.join(cfg["out_dir"], "diffing", f"cc_{parent}_{child}.state.pt")


def state_how(parent, child, seeds):
    """The command that (+ --overwrite) starts this edge alone over, with the run's seeds (without its --seeds
    it would train 0 and 1 only)."""
    return f"python diffing.py --edges '{parent}->{child}'" + saelib.seeds_flag(seeds)


def load_state(path, parent, child, inputs, seeds):
    """The training state at path, which this run continues exactly: one of another edge, models, settings
    or seeds, or a damaged one, is refused in one line naming the fix (--overwrite starts the edge over)."""
    how = state_how(parent, child, seeds)
    st = load_checkpoint(path, "crosscoder training state", how, kind="crosscoder_state")
    if (st.get("parent"), st.get("child")) != (parent, child):
        die(f"{path} holds the training state of {st.get('parent')}->{st.get('child')}, not {parent}->{child}: "
            f"renamed or copied? put it back under its own name, or start over: {how} --overwrite")
    check_inputs(path, st.get("inputs"), inputs, how)
    if sorted(st["crosscoders"]) != sorted(seeds):
        have = ",".join(map(str, sorted(st["crosscoders"])))
        die(f"{path} trains seeds {have}, not {','.join(map(str, seeds))}: give --seeds {have} to continue it, or "
            f"start over: {how} --overwrite")
    return st


def check_inputs(path, saved, inputs, how):
    """One line when a crosscoder file (finished, or an edge's training state) was made from other models or
    settings than this run's: training on would replace it unasked, as sae.py and train.py refuse to."""
    if saved == inputs:
        return
    saved = saved if isinstance(saved, dict) else {}
    was, models = saved.get("settings") or {}, saved.get("models") or {}
    changed = [f"--{k} {was.get(k)!r} -> {v!r}" for k, v in inputs["settings"].items() if was.get(k) != v]
    other = [f"{m} is another model now" for m, h in inputs["models"].items() if models.get(m) != h]
    keep = "give its settings to keep it, or " if changed and not other else ""  # (no setting brings a model back)
    die(f"{path} was made from other settings or models ({'; '.join(changed + other) or 'unrecorded'}): {keep}"
        f"replace it: {how} --overwrite")


def save_state(path, parent, child, inputs, runs, step, chunk, pos):
    """Every seed's crosscoder, Adam state and steps without firing after `step` steps, and where the stream is
    (buffer chunk, position in it): what the loop needs to go on exactly as if never stopped."""
    seeds = {s: {"crosscoder": {k: v.detach().cpu() for k, v in cc.state_dict().items()},
                 "optimizer": opt.state_dict(), "since": since.cpu()} for s, cc, opt, since in runs}
    common.atomic_torch_save(common.stamp({"crosscoders": seeds, "step": step, "chunk": chunk, "pos": pos,
                                           "parent": parent, "child": child, "inputs": inputs}, "crosscoder_state"),
                             path)


def load_current(path, seed, parent, child, inputs, want, seeds):
    """The crosscoder at path if it is finished (else None); a file of another edge, seed, models or
    settings, or one that does not fit its own args, is refused in one line (seeds: the run's, for its fix)."""
    how = state_how(parent, child, seeds)  # this edge only; load_checkpoint and the lines below add --overwrite
    ck = load_checkpoint(path, "crosscoder", how, kind="crosscoder")
    # refused, not retrained: a file renamed or copied onto another seed's name (s1 as s0) would pass
    # every other check and make the null find 100% of the latents again; retraining over it would
    # hide the mistake, so the file is named (as model.check_finished names swapped folders)
    held = (ck.get("parent"), ck.get("child"), ck.get("seed"))
    if held != (parent, child, seed):
        die(f"{path} holds the crosscoder of {held[0]}->{held[1]} seed {held[2]}, not {parent}->{child} seed "
            f"{seed}: renamed or copied? put it back under its own name, or remake it: {how} --overwrite")
    if not ck.get("finished"):
        return None
    check_inputs(path, ck.get("inputs"), inputs, how)
    # the checksum only says the file is whole: args or weights edited by hand (and re-stamped)
    # would fail here with a TypeError or a size mismatch, or later in the pass with a shape error
    try:
        if ck["crosscoder_args"] != want:
            raise ValueError(f"crosscoder_args {ck['crosscoder_args']}, this run's {want}")
        cc = Crosscoder(**ck["crosscoder_args"])
        cc.load_state_dict(ck["crosscoder"])
    except Exception as e:
        common.misfit(path, e, "crosscoder", how)
    return cc


def current_crosscoders(cfg, parent, child, inputs, want, device):
    """{seed: Crosscoder} of this edge's finished files (of these inputs: load_current refuses others)."""
    have = {}
    for s in cfg["seeds"]:
        p = cc_path(cfg, parent, child, s)
        if os.path.exists(p) and not cfg["overwrite"]:
            cc = load_current(p, s, parent, child, inputs, want, cfg["seeds"])
            if cc is not None:
                have[s] = cc.to(device).eval()
    return have


def edge_runs(cfg, parent, child, st, buf, device):
    """[(seed, crosscoder, Adam, steps since each latent fired)]: new ones (input scales and b_dec from the
    first buffer buf (N, 2, d)), or the saved state st's."""
    d, M = buf.shape[-1], 2
    L = cfg["expansion"] * d
    if st is None:
        scale = math.sqrt(d) / buf.norm(dim=-1).mean(0)                      # (M,) E||x^m scale_m|| = sqrt(d)
        b_dec = torch.stack([saelib.geometric_median(buf[:16384, m] * scale[m]).float() for m in range(M)])
    runs = []
    for s in cfg["seeds"]:
        cc = (init_crosscoder(M, d, L, cfg["arch"], cfg["k"], saelib.init_seed(f"{parent}->{child}", s), b_dec, scale)
              if st is None else Crosscoder(M, d, L, cfg["arch"], cfg["k"])).to(device)
        opt = torch.optim.Adam(cc.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))
        since = torch.zeros(L, dtype=torch.long, device=device)
        if st is not None:
            try:
                cc.load_state_dict(st["crosscoders"][s]["crosscoder"])
                opt.load_state_dict(st["crosscoders"][s]["optimizer"])
                common.check_adam_state(opt)
                if tuple(st["crosscoders"][s]["since"].shape) != (L,):
                    raise ValueError(f"since has shape {tuple(st['crosscoders'][s]['since'].shape)}, not ({L},)")
                since.copy_(st["crosscoders"][s]["since"])
            except Exception as e:  # whole (its checksum) but not what it says: edited by hand
                common.misfit(state_path(cfg, parent, child), e, "crosscoder state",
                              state_how(parent, child, cfg["seeds"]))
        runs.append((s, cc, opt, since))
    return runs


def save_crosscoders(cfg, parent, child, inputs, runs, steps):
    """Each seed's finished crosscoder, then the edge's training state removed. Returns {seed: Crosscoder}."""
    out = {}
    for s, cc, _, _ in runs:
        cc.eval()
        ckpt = {"crosscoder": {k: v.detach().cpu() for k, v in cc.state_dict().items()},
                "crosscoder_args": crosscoder_args(cc), "parent": parent, "child": child, "seed": s, "steps": steps,
                "finished": True, "inputs": inputs, "config": cfg, "provenance": common.provenance(cfg)}
        common.atomic_torch_save(common.stamp(ckpt, "crosscoder"), cc_path(cfg, parent, child, s))
        out[s] = cc
    remove_state(cfg, parent, child)
    return out


def remove_state(cfg, parent, child):
    """The edge's training state gone, its crosscoders saved."""
    path = state_path(cfg, parent, child)
    if os.path.exists(path):
        os.remove(path)


def train_edge(cfg, study, parent, child, inputs, device):
    """The crosscoders of one edge, one per seed, on the identical stream (buffers of sae.harvest of the
    child's domains' train splits), trained together, from a saved state where one continues this run.
    Returns {seed: Crosscoder} (loaded where current), or None when stopped by --stop_step."""
    spath = state_path(cfg, parent, child)
    want = {"n_models": 2, "d_in": study.d_mlp, "n_latents": cfg["expansion"] * study.d_mlp, "arch": cfg["arch"],
            "k": cfg["k"]}
    have = current_crosscoders(cfg, parent, child, inputs, want, device)
    if len(have) == len(cfg["seeds"]):
        print(f"{parent}->{child}: crosscoders up to date ({', '.join(map(str, have))})")
        remove_state(cfg, parent, child)  # (left by a run killed between saving the crosscoders and removing it)
        return have
    hcfg = harvest_config(cfg, study.block_size)
    ck = study.info[child]["ckpt"]
    arrays = saelib.open_domains(cfg["data_dir"], saelib.model_domains(child), "train", ck, child)
    st = load_state(spath, parent, child, inputs, cfg["seeds"]) if os.path.exists(spath) and not cfg["overwrite"] \
        else None
    chunk, pos, start = (st["chunk"], st["pos"], st["step"]) if st else (0, 0, 0)
    B = cfg["seqs_per_batch"] * cfg["tokens_per_seq"]
    steps = max(1, cfg["total_acts"] // B)
    if not (all(type(v) is int for v in (start, pos, chunk)) and 0 <= start <= steps and pos >= 0 and chunk >= 0):
        common.misfit(spath, ValueError(f"step {start} of {steps}, position {pos}, buffer {chunk}"), "crosscoder state",
                      state_how(parent, child, cfg["seeds"]))
    if 0 < cfg["stop_step"] <= start < steps:  # resumed where --stop_step already stopped it (before harvesting)
        print(f"{parent}->{child}: at step {start}, --stop_step {cfg['stop_step']}: nothing to train; run diffing.py "
              f"again without --stop_step to continue")
        return None
    if cfg["overwrite"]:  # replaced as asked: a finished file left beside the new state would be taken as current
        for path in (cc_path(cfg, parent, child, s) for s in cfg["seeds"]):
            if os.path.exists(path):
                os.remove(path)
    buf = paired_buffer(study, parent, child, arrays, chunk, hcfg, device)
    if pos > len(buf):
        common.misfit(spath, ValueError(f"position {pos} in a buffer of {len(buf)}"), "crosscoder state",
                      state_how(parent, child, cfg["seeds"]))
    runs = edge_runs(cfg, parent, child, st, buf, device)
    d, L = buf.shape[-1], cfg["expansion"] * buf.shape[-1]
    aux_k = cfg["aux_k"] or d // 2
    scale = runs[0][1].scale
    print(f"{parent}->{child}: {len(runs)} crosscoder(s) of {L} latents ({cfg['arch']}"
          f"{', k ' + str(cfg['k']) if cfg['arch'] == 'batchtopk' else ', l1 ' + format(cfg['l1_coeff'], 'g')}), "
          f"{steps} steps of {B}, input scales {scale[0]:.3g} / {scale[1]:.3g}"
          + (f"; resumed at step {start} from {spath}" if st else ""))
    t0, dead_steps = time.time(), max(1, cfg["dead_acts"] // B)
    for i in range(start, steps):
        if pos + B > len(buf):
            chunk, pos = chunk + 1, 0
            buf = paired_buffer(study, parent, child, arrays, chunk, hcfg, device)
        x_raw = buf[pos:pos + B]
        pos += B
        frac = i / steps
        lr = cfg["lr"] * min(1.0, (1 - frac) / cfg["lr_decay_frac"]) if cfg["lr_decay_frac"] > 0 else cfg["lr"]
        l1 = cfg["l1_coeff"] * min(1.0, frac / cfg["l1_warmup_frac"]) if cfg["l1_warmup_frac"] > 0 else cfg["l1_coeff"]
        last = []
        for s, cc, opt, since in runs:
            for group in opt.param_groups:
                group["lr"] = lr
            loss, mse, f = crosscoder_loss(cc, cc.scaled(x_raw), l1, since >= dead_steps, aux_k, cfg["aux_coeff"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                since.add_(1).masked_fill_((f > 0).any(0), 0)
            last.append((s, loss.detach(), mse.detach(), f.detach()))
        logging = (i + 1) % max(1, steps // 5) == 0 or i + 1 == steps
        stopping = cfg["stop_step"] > 0 and i + 1 >= cfg["stop_step"] and i + 1 < steps
        saving = i + 1 < steps and (stopping or cfg["ckpt_interval"] and (i + 1) % cfg["ckpt_interval"] == 0)
        if (logging or saving) and not all(math.isfinite(v.item()) for _, v, _, _ in last):  # (read back only here)
            die(f"{parent}->{child}: the crosscoder's loss is not finite at step {i + 1}; lower --lr")
        if logging:  # this step's batch: mse per element, L0
            print(f"  step {i + 1}/{steps}: " + " | ".join(
                f"s{s} mse {mse.item() / (2 * d):.4f}, l0 {(f > 0).sum(1).float().mean().item():.1f}"
                for s, _, mse, f in last) + f", {(i + 1 - start) * B / (time.time() - t0):,.0f} tok/s")
        if saving:
            save_state(spath, parent, child, inputs, runs, i + 1, chunk, pos)
        if stopping:
            print(f"{parent}->{child}: stopping at step {i + 1} (--stop_step), the state in {spath}; run diffing.py "
                  f"again (without --stop_step) to continue")
            return None
    return save_crosscoders(cfg, parent, child, inputs, runs, steps)


@torch.no_grad()
def diff_pass(cfg, acfg, study, seqs, parent, child, ccs, device):
    """One pass over analyze.py's token set for one edge: both models' activations of every token; each
    SAE on both (firing per feature); every crosscoder (FVU per model, firing, latent-scaling sums); and the
    streamed r of the parent's SAE features (on the parent) and the child's (on the child) with the latents
    of the first seed, and of that seed's latents with the second seed's (the null)."""
    s0, skip, batch = cfg["sae_seed"], acfg["skip_first"], acfg["batch_size"]
    sae_p, sae_c = study.sae[(parent, s0)], study.sae[(child, s0)]
    seeds = sorted(ccs)
    first = ccs[seeds[0]]
    Acc = fast.CorrAccumulator if cfg["fast"] else analyze.CorrAccumulator
    acc = {"parent": Acc(sae_p.n_features, first.n_latents, device),
           "child": Acc(sae_c.n_features, first.n_latents, device)}
    if len(seeds) > 1:
        acc["null"] = Acc(first.n_latents, ccs[seeds[1]].n_latents, device)
    fires = {k: torch.zeros(n, dtype=torch.float64, device=device) for k, n in
             (("p_on_p", sae_p.n_features), ("p_on_c", sae_p.n_features), ("c_on_c", sae_c.n_features),
              ("c_on_p", sae_c.n_features))}
    cc_fires = {s: torch.zeros(cc.n_latents, dtype=torch.float64, device=device) for s, cc in ccs.items()}
    sums = {s: dict(sse=torch.zeros(2, dtype=torch.float64, device=device), sx=0.0,
                    sxx=torch.zeros(2, dtype=torch.float64, device=device)) for s in seeds}
    scaling = {}
    for s, cc in ccs.items():  # latent scaling of the exclusive latents: those crosscoder_record counts as such
        _, classes = crosscoder_classes(cc)
        excl = np.flatnonzero((classes == "p") | (classes == "c"))
        scaling[s] = ScalingSums(cc, excl, (classes[excl] == "c").astype(np.int64))
    n = 0
    acts = [saelib.mlp_activations(study.model[m], seqs, batch, device, skip, use_fast=cfg["fast"])
            for m in (parent, child)]
    for (_, hp), (_, hc) in zip(*acts):
        hp, hc = hp.reshape(-1, study.d_mlp), hc.reshape(-1, study.d_mlp)
        n += len(hp)
        fp, fc = sae_p.encode(hp), sae_c.encode(hc)
        fires["p_on_p"] += (fp > 0).sum(0)
        fires["c_on_c"] += (fc > 0).sum(0)
        fires["p_on_c"] += (sae_p.encode(hc) > 0).sum(0)
        fires["c_on_p"] += (sae_c.encode(hp) > 0).sum(0)
        lat = {}
        for s, cc in ccs.items():
            x = cc.scaled(torch.stack([hp, hc], 1))
            x_hat, f = cc(x)
            lat[s] = f
            cc_fires[s] += (f > 0).sum(0)
            sm = sums[s]
            sm["sse"] += (x_hat - x).double().pow(2).sum((0, 2))
            sm["sx"] = sm["sx"] + x.double().sum(0)
            sm["sxx"] += x.double().pow(2).sum((0, 2))
            scaling[s].update(x, x_hat, f)
        acc["parent"].update(fp, lat[seeds[0]])
        acc["child"].update(fc, lat[seeds[0]])
        if "null" in acc:
            acc["null"].update(lat[seeds[0]], lat[seeds[1]])
    rate = {k: (v / n).cpu().numpy() for k, v in fires.items()}
    dead_lat = {s: (v == 0).cpu().numpy() for s, v in cc_fires.items()}
    return acc, rate, dead_lat, {s: (v / n).cpu().numpy() for s, v in cc_fires.items()}, sums, scaling, n


def cross_application(cfg, study, parent, child, device):
    """sae.evaluate of both SAEs on both models, on the same held-out windows of the child's domains (val)."""
    s0 = cfg["sae_seed"]
    ck = study.info[child]["ckpt"]
    arrays = saelib.open_domains(cfg["data_dir"], saelib.model_domains(child), "val", ck, child)
    wins = saelib.eval_windows(arrays, cfg["eval_seqs"], study.block_size, cfg["mix"])
    saes = [study.sae[(parent, s0)], study.sae[(child, s0)]]
    keep = ("fvu", "l0", "ce_recovered", "kl", "dead_frac", "ce_clean", "ce_spliced", "eval_tokens")
    out = {}
    with saelib.full_fp32():
        for m in (parent, child):
            got = saelib.evaluate(study.model[m], saes, wins, skip=cfg["skip_first"], batch=cfg["eval_batch"],
                                  device=device, use_fast=cfg["fast"])
            out[f"on_{'parent' if m == parent else 'child'}"] = {
                "parent_sae": {k: got[0][k] for k in keep}, "child_sae": {k: got[1][k] for k in keep}}
    return out


def crosscoder_record(cfg, cc, sums, n, dead, rate, scaling, threshold):
    """One crosscoder's part of diffing.json: FVU per model, L0, its latents' relative norms and classes."""
    delta, classes = crosscoder_classes(cc, dead)
    fvu = [saelib.fvu_from_sums(sums["sse"][m].item(), sums["sx"][m], sums["sxx"][m].item(), n) for m in range(2)]
    sc = scaling.result(cfg["scaling_cut"])
    spur = {"parent-only": 0, "child-only": 0}
    for j, s, fired in zip(sc["latent"], sc["spurious"], sc["fired"]):
        if fired and classes[j] in "pc":
            spur[CLASSES[classes[j]]] += int(s)
    rec = class_counts(classes.tolist())
    excl = {k: rec["counts"][k] for k in spur}
    live = delta.numpy()[classes != "x"]
    rec["delta_hist"] = {"edges": DELTA_BINS.round(3).tolist(), "counts": np.histogram(live, DELTA_BINS)[0].tolist(),
                         "mean": round(float(live.mean()), 4) if len(live) else None,
                         "sd": round(float(live.std()), 4) if len(live) else None}
    rec.update(fvu={"parent": round(fvu[0], 5), "child": round(fvu[1], 5)}, l0=round(float(rate.sum()), 3),
               classes="".join(classes.tolist()),
               delta=[None if math.isnan(v) else round(v, 4) for v in delta.tolist()],
               scaling=sc, spurious=spur,
               genuine={k: excl[k] - spur[k] for k in spur},
               threshold=round(float(cc.threshold), 6) if threshold else None)
    return rec


def edge_record(cfg, acfg, study, seqs, parent, child, ccs, device):
    """diffing.json's record of one edge."""
    acc, rate, dead_lat, lat_rate, sums, scaling, n = diff_pass(cfg, acfg, study, seqs, parent, child, ccs, device)
    seeds = sorted(ccs)
    cross = {s: crosscoder_record(cfg, ccs[s], sums[s], n, dead_lat[s], lat_rate[s], scaling[s],
                                  cfg["arch"] == "batchtopk") for s in seeds}
    match = {}
    for side, dead_f in (("parent", rate["p_on_p"] == 0), ("child", rate["c_on_c"] == 0)):
        c = analyze.classify(analyze.pearson(acc[side]), dead_f, dead_lat[seeds[0]], cfg["match_threshold"])
        match[side] = {"latent": c["parent_best"].tolist(), "r": analyze.rounded(c["parent_best_r"])}
    null = None
    if "null" in acc:
        c = analyze.classify(analyze.pearson(acc["null"]), dead_lat[seeds[0]], dead_lat[seeds[1]],
                             cfg["match_threshold"])
        a, b = cross[seeds[0]]["classes"], cross[seeds[1]]["classes"]
        found = [(i, int(j)) for i, j in enumerate(c["parent_best"]) if c["persisting"][i]]
        same = sum(a[i] == b[j] for i, j in found)
        live = c["counts"]["parent_live"]
        null = {"seeds": seeds[:2], "threshold": cfg["match_threshold"], "live": live,
                "found_again": len(found), "found_again_frac": round(len(found) / max(live, 1), 5),
                "same_class": same, "same_class_frac": round(same / max(len(found), 1), 5)}
    firing = {f"{side}_sae": {"rate_own": analyze.rounded(rate[own], 6), "rate_other": analyze.rounded(rate[other], 6),
                              **firing_change(rate[own], rate[other], cfg["fire_ratio"])}
              for side, own, other in (("parent", "p_on_p", "p_on_c"), ("child", "c_on_c", "c_on_p"))}
    return {"parent": parent, "child": child, "tokens": n,
            "cross_application": cross_application(cfg, study, parent, child, device), "firing": firing,
            "crosscoder": {"seeds": {str(s): cross[s] for s in seeds}, "null": null}, "match": match}


def print_edge(name, rec):
    ca, cc = rec["cross_application"], rec["crosscoder"]
    pp, pc = ca["on_parent"]["parent_sae"], ca["on_child"]["parent_sae"]
    cc_, cp = ca["on_child"]["child_sae"], ca["on_parent"]["child_sae"]
    print(f"{name}: parent SAE FVU {pp['fvu']:.3f} on the parent, {pc['fvu']:.3f} on the child (CE rec. "
          f"{pp['ce_recovered']:.3f} -> {pc['ce_recovered']:.3f}); child SAE FVU {cc_['fvu']:.3f} own, {cp['fvu']:.3f} "
          f"on the parent (CE rec. {cc_['ce_recovered']:.3f} -> {cp['ce_recovered']:.3f}); parent features that stop "
          f"firing on the child {rec['firing']['parent_sae']['stopped']}/{rec['firing']['parent_sae']['live']}")
    for s, r in cc["seeds"].items():
        f = r["fractions"]
        print(f"  crosscoder s{s}: FVU {r['fvu']['parent']:.3f} / {r['fvu']['child']:.3f}, L0 {r['l0']:.1f}, "
              f"{r['live']} live: shared {f['shared']:.1%}, parent-only {f['parent-only']:.1%} "
              f"(spurious {r['spurious']['parent-only']}), child-only {f['child-only']:.1%} "
              f"(spurious {r['spurious']['child-only']}), mixed {f['mixed']:.1%}")
    print(f"  {rec['seconds']['train']:.0f} s training, {rec['seconds']['measure']:.0f} s measuring")
    if cc["null"]:
        print(f"  null: {cc['null']['found_again_frac']:.1%} of seed {cc['null']['seeds'][0]}'s latents found again "
              f"at r >= {cc['null']['threshold']}, {cc['null']['same_class_frac']:.1%} of those in the same class")


def with_earlier_edges(path, cfg, edges_out, sae_hashes, token_set):
    """This run's edge records with those an earlier diffing.json holds for edges this run did not measure (a
    run with --edges, such as the fix an error names for one edge, would otherwise drop them), where that run
    had these settings and this token set and its SAEs are this run's where both have them (the analysis
    checks the rest against the SAEs on disk). Returns (edges, SAE hashes)."""
    try:
        old = common.read_record(path, "diffing")
        conf, kept = old["provenance"]["config"], {k: v for k, v in old["edges"].items() if k not in edges_out}
        # every setting it measured with (fire_ratio, scaling_cut, eval_seqs, ... too), as diffing_current compares
        same = (all(conf.get(k) == v for k, v in cfg.items() if k not in (*HOW_ONLY, "edges"))
                and old["token_set"] == token_set
                and all(old["sae_hashes"].get(m, h) == h for m, h in sae_hashes.items()))
    except (common.UserError, KeyError, TypeError, AttributeError):  # none, damaged or of another shape
        return edges_out, sae_hashes
    if not (same and kept):
        return edges_out, sae_hashes
    print(f"kept from {path}: {', '.join(kept)} (measured with these settings, SAEs and token set)")
    order = [*old["edges"], *(k for k in edges_out if k not in old["edges"])]
    merged = {**kept, **edges_out}
    return {k: merged[k] for k in order}, {**old["sae_hashes"], **sae_hashes}


# the settings diffing.json does not depend on (how a run goes, not what it measures)
HOW_ONLY = ("threads", "data_dir", "out_dir", "stop_step", "ckpt_interval", "overwrite")


def inputs_now(cfg, edges, hashed):
    """diffing.json's inputs: hashed (the models, SAEs and splits, hashed before they were read) and the
    crosscoder files as they are now, {edge: {seed: hash, None where there is none}}."""
    return {**hashed, "crosscoders": {f"{p}->{c}": {str(s): analyze.file_hash(cc_path(cfg, p, c, s))
                                                    for s in cfg["seeds"]} for p, c in edges}}


def measured_before(cfg, path, hashed, token_set):
    """{edge: record} of the edges a run stopped in a later edge measured (its partial.json), where it was made
    by this code with these settings (--edges too) from these models, SAEs, splits, token set and crosscoder
    files (the same files: current then, so now); {} otherwise, and always with --overwrite."""
    if cfg["overwrite"]:
        return {}
    try:
        rec = common.read_json(path)
        done = [tuple(e.split("->")) for e in rec["edges"]]
        made = {"inputs": inputs_now(cfg, done, hashed)}
        ok = common.made_as_now(rec, "diffing", cfg, HOW_ONLY, made) and rec["token_set"] == token_set
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, damaged or of another shape
        return {}
    return dict(rec["edges"]) if ok else {}


def diffing_current(cfg, edges, inputs):
    """diffing.json as this run would make it, or None: made by this code, with these settings, from these
    models, SAEs and validation splits (inputs, hashed before they are read) and these crosscoder files.
    A finished reproduce.sh run again then measures nothing, and analyze.py finds its input unchanged."""
    if cfg["overwrite"]:
        return None
    try:
        rec = common.read_json(os.path.join(cfg["out_dir"], "diffing", "diffing.json"))
    except (OSError, ValueError):  # missing or damaged: made anew
        return None
    made = {"inputs": inputs_now(cfg, edges, inputs)}
    return rec if common.made_as_now(rec, "diffing", cfg, HOW_ONLY, made) else None


def main(argv=None):
    cfg, edges = settings(argv)
    # the device as resolved, in the record too: --device auto and cpu are one run on a CPU (made_as_now)
    cfg["device"] = device = common.pick_device(cfg["device"])
    threads = common.set_threads(cfg["threads"], device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = cfg["fast_math"]
    models = list(dict.fromkeys(m for e in edges for m in e))
    out = os.path.join(cfg["out_dir"], "diffing")
    print(f"preset {cfg['preset']}, device {device}, {threads} thread(s), edges {', '.join(cfg['edges'])}, "
          f"{cfg['arch']} crosscoders, seeds {','.join(map(str, cfg['seeds']))}")
    t0 = time.time()
    with common.lock_dir(out, "a diffing run"):
        acfg = analysis_config(cfg, models, device)
        got = analyze.input_hashes(acfg)  # (before they are read: a file replaced meanwhile remakes it next time)
        hashed = {k: got[k] for k in ("models", "saes", "val_files")}
        rec = None if cfg["stop_step"] else diffing_current(cfg, edges, hashed)
        if rec is not None:
            print(f"{os.path.join(out, 'diffing.json')} is current (the same models, SAEs, tokens, crosscoders, "
                  f"settings and code); nothing measured (--overwrite retrains and measures anew)")
            return rec
        study = analyze.load_study(acfg, device, got)  # the models and SAEs, checked to belong together
        sae_hashes = {m: study.info[m][f"sae{cfg['sae_seed']}"]["hash"] for m in models}
        n_lat = cfg["expansion"] * study.d_mlp
        cc_bytes = 2 * 2 * n_lat * study.d_mlp * 4  # encoder and decoder of 2 models, float32
        # every crosscoder, and an edge's training state (weights and Adam's two moments: 3 x) twice while rewritten
        common.check_free_space(out, (len(edges) + 6) * len(cfg["seeds"]) * cc_bytes + (64 << 20),
                                "the crosscoders, an edge's training state (with Adam's) and diffing.json")
        keys = ("arch", "expansion", "k", "l1_coeff", "l1_warmup_frac", "aux_k", "aux_coeff", "dead_acts", "lr",
                "lr_decay_frac", "total_acts", "seqs_per_batch", "tokens_per_seq", "skip_first", "seq_len",
                "buffer_batches", "data_seed", "mix", "fast", "fast_math")
        inputs = {(p, c): {"models": {m: study.info[m]["model_hash"] for m in (p, c)},
                           "settings": {k: cfg[k] for k in keys}} for p, c in edges}
        if cfg["stop_step"]:  # every edge trained (or stopped) before any is measured: a stop wastes no pass
            for parent, child in edges:
                if train_edge(cfg, study, parent, child, inputs[(parent, child)], device) is None:
                    return None  # (nothing more this run, no diffing.json)
        seqs, token_set = analyze.draw_tokens(acfg, study)
        # partial.json: the edges measured so far, rewritten after each; a run stopped in a later edge left it
        part_path = os.path.join(out, "partial.json")
        edges_out = measured_before(cfg, part_path, hashed, token_set)
        for parent, child in edges:
            if f"{parent}->{child}" in edges_out:
                print(f"{parent}->{child}: measured by a run that stopped later, kept ({part_path})")
                continue
            t_edge = time.time()
            ccs = train_edge(cfg, study, parent, child, inputs[(parent, child)], device)  # (loaded where current)
            t_train = time.time() - t_edge
            for cc in ccs.values():
                cc.requires_grad_(False)
            edges_out[f"{parent}->{child}"] = rec = edge_record(cfg, acfg, study, seqs, parent, child, ccs, device)
            rec["seconds"] = {"train": round(t_train, 1), "measure": round(time.time() - t_edge - t_train, 1)}
            print_edge(f"{parent}->{child}", rec)
            done = [e for e in edges if f"{e[0]}->{e[1]}" in edges_out]
            common.atomic_write_json(part_path, common.stamp(
                {"edges": edges_out, "sae_hashes": sae_hashes, "token_set": token_set,
                 "provenance": common.provenance(cfg, inputs=inputs_now(cfg, done, hashed))}, "diffing"))
        edges_out = {f"{p}->{c}": edges_out[f"{p}->{c}"] for p, c in edges}  # (in --edges' order)
        edges_out, sae_hashes = with_earlier_edges(os.path.join(out, "diffing.json"), cfg, edges_out, sae_hashes,
                                                   token_set)
        res = {"edges": edges_out, "sae_hashes": sae_hashes, "sae_seed": cfg["sae_seed"], "token_set": token_set,
               "arch": cfg["arch"], "cuts": {**CUTS, "scaling": cfg["scaling_cut"]}, "class_legend": CLASSES,
               "delta": "(1/2) ((|d_child| - |d_parent|) / max(|d_parent|, |d_child|) + 1) (Minder et al. 2025)",
               "seconds": round(time.time() - t0, 1),
               "provenance": common.provenance(cfg, inputs=inputs_now(cfg, edges, hashed))}
        common.atomic_write_json(os.path.join(out, "diffing.json"), common.stamp(res, "diffing"))
        if os.path.exists(part_path):
            os.remove(part_path)
    print(f"-> {os.path.join(out, 'diffing.json')} ({time.time() - t0:.0f} s)")
    return res


if __name__ == "__main__":
    common.cli(main)
