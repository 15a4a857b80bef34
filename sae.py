"""
Sparse autoencoders on each model's MLP hidden activations (model.mlp_acts, width d_mlp), trained
on that model's own data distribution, with honest metrics.

    python sae.py --model lua                  # out/sae_lua/sae_s0.pt, sae_s1.pt, metrics.json
    python sae.py --model base --arch topk --seeds 0,1,2 --overwrite  # replaces the study's out/sae_base
    python sae.py --model lua --resume         # continue exactly (a finished run: nothing to do)

Activations are harvested on the fly: random windows of the model's data (its domains, MODEL_DATA,
in shares by tokens as the authors' or equal: `mix`), tokens_per_seq random positions of each
(position 0 skipped: it has no context and is an outlier), into a shuffle buffer of buffer_batches
batches that is refilled from fresh random sequences whenever it drains. Buffer number c is a
pure function of (data_seed, c), so a resume rebuilds the buffer it stopped in and continues
exactly, and every seed's SAE sees the identical stream (the seeds differ only in their
initialisation).

Architectures (ACTIVATIONS below: the one place an architecture is defined, whose methods fast.py's
steps call too; inputs scaled by one scalar per model so that E||x|| = sqrt(d_in)):
- relu: ReLU encoder, L1 penalty (mean over tokens of the sum over features), decoder rows held at
  unit norm (gradient parallel to each row projected out, rows renormalised after each step;
  Anthropic, Towards Monosemanticity). With unit rows the plain L1 equals Anthropic's
  decoder-norm-weighted L1, feature activations are the raw-space magnitudes along their
  directions, and the L1 cannot be gamed by shrinking f while growing W_dec. Dead latents are
  resampled toward badly reconstructed inputs (Anthropic's recipe).
- topk: the k largest pre-activations (then ReLU), AuxK auxiliary loss on dead latents
  (Gao et al. 2024), same unit-norm decoder.
Both: decoder bias initialised at the geometric median of a sample (Weiszfeld), encoder
initialised as the decoder's transpose (see init_sae), Adam, lr linearly to 0 over the last
lr_decay_frac. The training log's mse is per element in the scaled space (E||x|| = sqrt(d_in), so
E||x||^2 is about d_in and mse about the error's share of the mean square; the log's fvu is the exact
ratio to the variance); metrics.json has mse in raw units and mse_scaled. Evaluation (held-out val
windows, positions >= skip_first) runs the folded raw-space SAEs, i.e. exactly what is saved.
At save time the scale is folded into the weights (b_enc, b_dec divided by it), so the saved SAE
takes raw activations, keeps unit decoder rows, and gives features in raw units.

Files in out_dir/sae_<model>/: train_state.pt holds every seed's training state at one step (one
atomic write, so a crash can never leave the seeds at different steps; --resume reads only it);
sae_s<seed>.pt is each seed's raw-space SAE for analyze.py (written from the state, after it);
metrics.json is written last and lists every seed. The folder is locked while a run writes it.
fast (default on): the speed-ups of fast.py (the harvest run at the kept positions only with keys and
values looked up, the SAE step's b_dec gradient as a matvec, the sparse step once few latents are active,
the seeds' steps in threads on a CPU; on a GPU every seed's step as one stack of batched products,
sae_step); --fast=false trains with the plain code here, the same SAEs to rounding. fast_math: on CUDA
the stack's products run in bf16 (sae_step auto: stack_bf16; float32 weights, Adam and metrics), other
matmuls in TF32, and the harvest forward in bf16; on a CPU with bf16 matmuls bf16 picks the sparse step's
active latents; evaluation and the saved SAEs stay full float32.
One device a run: its seeds train as one stack on it. Several GPUs take one model's run each, side by
side (reproduce.sh: JOBS, CUDA_VISIBLE_DEVICES; DESIGN.md, "Several GPUs").
"""
import contextlib
import hashlib
import math
import os
import time
import zlib
from types import SimpleNamespace

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
from common import (COMMAND_LINE, UserError, atomic_torch_save, atomic_write_json, check_adam_state,
                    check_free_space, check_resume, check_resume_or_overwrite, check_seeds, cli, default_preset, die,
                    lock_dir, misfit, parse_config, peak_gpu_mib, pick_device, provenance, read_json, record_problem,
                    set_threads, sha256_file, stamp, with_settings)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data as datalib
import fast
from model import check_preset, clean_key, load_checkpoint, load_data, load_model

# -----------------------------------------------------------------------------
# config: the paper's values; PRESETS below override them
config = dict(
    model="base",          # whose MLP activations, on its own data: base | lua | tinystories | luastories
    data_dir="data",       # token files made by data.py
    out_dir="out",         # models in out_dir/<model>/ckpt.pt; SAEs go to out_dir/sae_<model>/
    seeds=[0, 1],          # one SAE per seed, all fed the identical stream (a seed pair = the null baseline)
    resume=False,          # continue out_dir/sae_<model>/ exactly (a finished run: nothing to do)
    overwrite=False,       # start over even if checkpoints exist
    allow_unfinished=False,  # train on a model whose training did not finish (stopped early or killed)
    allow_other_preset=False,  # train SAEs of this preset on a model made with another one (its scale), on purpose
    arch="relu",           # relu (L1 + resampling) | topk (TopK + AuxK): see ACTIVATIONS
    expansion=16,          # n_features = expansion * d_mlp (paper: 16 x 1024 = 16,384)
    k=32,                  # topk: active latents per token
    l1_coeff=3.0,          # relu: L1 weight, which sets L0: at 16,384 x 1,024 it gave L0 ~40 (BENCHMARKS.md, "The L1
                           # at the paper's width"); tiny's 1.5 was tuned at 2,048 x 256 (L1_NOTE: l1 ~ sqrt(d_in))
    l1_warmup_frac=0.05,   # relu: L1 weight ramps from 0 over the first 5% of steps (Anthropic Apr 2024)
    resample_every=12500,  # relu: every this many steps, re-initialise latents that did not fire since the last check
    resample_until=0.5,    # relu: ... only in the first half of training, so resampled latents can settle
    aux_k=0,               # topk: latents in the AuxK loss; 0 = d_in // 2 (Gao et al.)
    aux_coeff=1 / 32,      # topk: AuxK weight (Gao et al.)
    dead_window=10_000_000,  # a latent is dead after this many training activations without firing (Gao: 10M)
    lr=1e-4,               # Adam learning rate (the authors' config, DESIGN.md)
    beta1=0.9,             # Adam beta1
    beta2=0.9999,          # Adam beta2 (the authors' config, DESIGN.md)
    lr_decay_frac=0.2,     # lr decays linearly to 0 over the last 20% of steps
    seqs_per_batch=128,    # a batch = seqs_per_batch sequences x tokens_per_seq random positions (128 x 24)
    tokens_per_seq=24,     # positions kept per harvested window
    skip_first=1,          # never use positions < skip_first (position 0: no context, outlier norms)
    seq_len=0,             # tokens per harvested window; 0 = the model's block_size
    total_acts=200_000_000,  # training budget in activations (200M = 65,104 steps of 3072)
    buffer_batches=32,     # shuffle buffer size in batches (32 x 3072 activations from 4096 sequences)
    harvest_batch=0,       # windows per model forward while harvesting; 0 = 64, or 512 on a GPU with fast on (a call
                           # of 64 keeps 1,536 positions: too little work for one to keep a GPU busy)
    data_seed=1234,        # the activation stream (shared by all seeds)
    mix="tokens",          # a model's domains in the stream and the evaluation: tokens (shares = their token
                           # counts, as the authors' concatenated datasets) | equal (one share per domain)
    eval_seqs=1024,        # held-out val windows (domains as `mix`); metrics use positions >= skip_first
    eval_batch=16,         # windows per model forward in evaluation
    eval_interval=10000,   # evaluate every this many steps (and at the end)
    log_interval=500,      # print the training metrics every this many steps
    ckpt_interval=5000,    # save every this many steps (and at the end)
    stop_step=0,           # > 0: stop after this step as if interrupted (continue with --resume)
    health_at=0.1,         # early check at the first log past this share of the steps (the L1 ramped up): an SAE
                           # outside HEALTH stops there, saved, naming the setting to change; 0 = no check
    peak_flops=989e12,     # the device's peak FLOP/s for metrics.json's mfu (default: H100 SXM dense bf16)
    fast=True,             # the speed-ups of fast.py (false: the plain code here; the same SAEs to rounding)
    fast_math=True,        # CUDA: bf16 SAE products (sae_step auto), TF32 otherwise, a bf16 harvest forward; CPU with
                           # bf16 matmuls: bf16 picks the sparse step's active latents; evaluation, saved SAEs: fp32
    sae_step="auto",       # fast: how the seeds' steps run: each (one after another or in threads; the sparse step
                           # on a CPU) | stack (every seed in one set of batched products, one Adam) | stack_bf16
                           # (those products in bf16; weights, Adam, metrics fp32) | auto (fast.pick_sae_step:
                           # stack_bf16 on CUDA, each on a CPU)
    threads=0,             # CPU threads; 0 = the cores free now (common.set_threads)
    device="auto",         # auto (cuda if available) | cpu | cuda | cuda:N
)
PRESETS = {
    "paper": dict(),
    # tiny: 2048 features on d_mlp 256, a minute or two per model (both seeds) on a CPU core (BENCHMARKS.md)
    # (lr and l1 tuned on the base model: lr 1e-3 -> 4e-3 took FVU 0.21 -> 0.17 at L0 ~50);
    # evaluation only at the end: one costs ~4% of this short run, more than bookkeeping should (the
    # training log's FVU and L0 every 50 steps show the progress)
    # mix equal: the demo corpora's sizes are set by data.py's sample_kb, not by the datasets, so token shares
    # would mean nothing there
    "tiny": dict(expansion=8, l1_coeff=1.5, lr=4e-3, seqs_per_batch=64, total_acts=1_000_000, mix="equal",
                 resample_every=200, dead_window=200_000, buffer_batches=16, harvest_batch=128,
                 eval_seqs=192, eval_batch=32, eval_interval=1000, log_interval=50, ckpt_interval=250),
}
MODEL_DATA = {"base": ["base"], "lua": ["base", "lua"], "tinystories": ["base", "tinystories"],
              "luastories": ["base", "lua", "tinystories"]}
CHECKS = {"model": tuple(MODEL_DATA), "mix": ("tokens", "equal"), "seeds": ">=0", "arch": ("relu", "topk"),
          "expansion": ">=1", "k": ">=1",
          "l1_coeff": ">=0", "l1_warmup_frac": "[0,1]", "resample_every": ">=0", "resample_until": "[0,1]",
          "aux_k": ">=0", "aux_coeff": ">=0", "dead_window": ">0", "lr": ">0", "beta1": "[0,1)", "beta2": "[0,1)",
          "lr_decay_frac": "[0,1]", "seqs_per_batch": ">0", "tokens_per_seq": ">0", "skip_first": ">=0",
          "seq_len": ">=0", "total_acts": ">0", "buffer_batches": ">0", "harvest_batch": ">=0", "eval_seqs": ">0",
          "eval_batch": ">0", "eval_interval": ">0", "log_interval": ">0", "ckpt_interval": ">0", "stop_step": ">=0",
          "health_at": "[0,1]", "sae_step": fast.SAE_STEPS,
          "threads": ">=0", "peak_flops": ">0"}
# settings a resume may change; every other config key must equal the checkpoint's
RESUME_FREE = {"resume", "overwrite", "device", "eval_interval", "log_interval", "ckpt_interval", "stop_step",
               "harvest_batch", "eval_batch", "data_dir", "out_dir", "preset", "allow_unfinished", "threads",
               "peak_flops", "health_at", "allow_other_preset", "sae_step"}
# the early check's bands (health_at), for far-off runs only: an SAE that explains less than half the
# variance, fires none of its latents, or more per token than both its input's dimensions and a quarter of
# its latents (relu: a random encoder fires about half, so the L1 has barely acted; a healthy L0 still
# falls several-fold after the check, and can be above d_in there), or whose latents mostly stayed silent
# through a whole log interval, does not come right in the rest of its run. Healthy runs at their check:
# BENCHMARKS.md ("The early check").
HEALTH = {"fvu": 0.5, "silent": 0.5, "l0_frac": 0.25}  # maxima; L0 in [1, max(d_in, l0_frac x n_features)]
# L1_NOTE: the soft threshold ~ l1/2 is compared with per-feature magnitudes ~ sqrt(d_in / L0)
STATE_FILE = "train_state.pt"  # every seed's training state at one step (see save_state)
# seed * SEED_STRIDE + i: one generator seed for each (seed, i) of a stream (i: a chunk, a step, a model's crc32)
SEED_STRIDE = 1_000_003  # (a prime: two seeds' streams meet only past a million chunks or steps)
MEDIAN_SAMPLE = 16384  # activations b_dec's start value (their geometric median) is taken over: cheap at any d_in


# -----------------------------------------------------------------------------
# the SAE. Its architecture is its activation (with the training-loss term and the habits that go
# with it), chosen once from ACTIVATIONS: add an architecture there and nowhere else.

class ReLU:
    """relu: f = ReLU(pre), an L1 penalty on f; dead latents are resampled (Anthropic)."""
    resamples = True
    # a feature's activation needs only its own pre-activation (fast.encode_features, fast.support)
    elementwise = True

    def __init__(self, k, n_features):
        pass

    def __call__(self, pre):
        return F.relu(pre)

    def encoder_gain(self, d_in, n_features):
        """Encoder init = decoder transpose x this: with random directions
        sum_i relu(<v, d_i>) d_i ~ (n_features / 2 d_in) v, so 2 d_in / n_features starts the SAE
        near the identity instead of with a reconstruction n_features / (2 d_in) times too large.
        L0 starts at ~n_features / 2 either way: a positive gain does not change which
        pre-activations are > 0."""
        return min(1.0, 2 * d_in / n_features)

    def penalty(self, sae, x, pre, f, x_hat, hp):
        """The L1 term: the mean over tokens of sum_i f_i (= the decoder-norm-weighted L1, the
        decoder's rows being unit norm), times hp.l1_coeff."""
        return hp.l1_coeff * f.sum(-1).mean(-1)

    def describe(self, cfg, aux_k):
        return (f"l1 {cfg['l1_coeff']:g} (warm-up {cfg['l1_warmup_frac']:.0%}), "
                f"resample every {cfg['resample_every']} steps")


class TopK:
    """topk: the k largest pre-activations through a ReLU, the others 0; AuxK on dead latents
    (Gao et al.)."""
    resamples = False
    elementwise = False

    def __init__(self, k, n_features):
        if not 0 < k <= n_features:
            die(f"--k {k} must be between 1 and n_features {n_features}")
        self.k = k

    def __call__(self, pre):
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))

    def encoder_gain(self, d_in, n_features):
        return 1.0

    def penalty(self, sae, x, pre, f, x_hat, hp):
        """AuxK (Gao et al. 2024, A.2): the dead latents (hp.dead, a (F,) mask) reconstruct the
        residual x - x_hat from their pre-activations pre (N, F), times hp.aux_coeff."""
        return hp.aux_coeff * self.aux_loss(self.aux_hat(sae, pre, hp), x, x_hat)

    def aux_hat(self, sae, pre, hp):
        """AuxK's reconstruction (N, d_in) from the pre-activations pre (N, F): the hp.aux_k largest
        of the dead latents'. Live latents are masked to -inf, whose ReLU is 0, so with fewer than
        aux_k dead latents only the dead ones reconstruct."""
        masked = pre.masked_fill(~hp.dead, float("-inf"))                       # (N, F)
        top = masked.topk(min(hp.aux_k, pre.size(-1)), dim=-1)
        e_f = torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))
        return e_f @ sae.W_dec.to(pre.dtype)  # (.to: a no-op but in fast.py's bf16 step)

    @staticmethod
    def aux_loss(e_hat, x, x_hat):
        """AuxK's loss: ||e_hat - e||^2 over the residual's variance, e = x - x_hat
        (no gradient)."""
        e = (x - x_hat).detach()
        return ((e_hat - e).pow(2).sum(-1).mean(-1)
                / (e - e.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).clamp_min(1e-12))

    def describe(self, cfg, aux_k):
        return f"k {cfg['k']}, AuxK k {aux_k} x {cfg['aux_coeff']:.4g}"


ACTIVATIONS = {"relu": ReLU, "topk": TopK}


class SAE(nn.Module):
    """x (N, d_in) -> f = act((x - b_dec) @ W_enc + b_enc) (N, n_features)
    -> x_hat = f @ W_dec + b_dec, act = ACTIVATIONS[arch]."""

    def __init__(self, d_in, n_features, arch="relu", k=0):
        super().__init__()
        if arch not in ACTIVATIONS:
            die(f"unknown --arch {arch!r}; use {' or '.join(ACTIVATIONS)}")
        self.d_in, self.n_features, self.arch, self.k = d_in, n_features, arch, k
        self.act = ACTIVATIONS[arch](k, n_features)
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_features))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, d_in))  # row i = feature i's direction
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def pre_acts(self, x):
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc  # (N, n_features)

    def activate(self, pre):
        return self.act(pre)

    def encode(self, x):
        return self.activate(self.pre_acts(x))

    def decode(self, f):
        return f @ self.W_dec + self.b_dec

    def forward(self, x):
        f = self.encode(x)
        return self.decode(f), f


def sae_args(sae):
    return {"d_in": sae.d_in, "n_features": sae.n_features, "arch": sae.arch, "k": sae.k}


def init_seed(model_name, seed):
    """The seed of an SAE's random initialisation: distinct for every (model, seed). With the seed alone,
    a parent's and a child's seed-0 SAEs would start from the same random decoder, so an edge would
    share its start while the null (seed 0 vs seed 1 of one model) does not, and every edge would look
    more alike than it is."""
    return seed * SEED_STRIDE + zlib.crc32(model_name.encode("utf-8"))


def init_sae(d_in, n_features, arch, k, seed, b_dec=None):
    """Random unit decoder rows (seeded), encoder = decoder transpose x the activation's encoder_gain
    (Gao et al.; Anthropic Apr 2024)."""
    sae = SAE(d_in, n_features, arch, k)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(n_features, d_in, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T * sae.act.encoder_gain(d_in, n_features))
        if b_dec is not None:
            sae.b_dec.copy_(b_dec)
    return sae


def fold_scale(sae, scale):
    """The SAE trained on x * scale as an SAE on raw x: f_raw = f / scale, x_hat_raw = x_hat / scale.
    pre((s x - b_dec) W + b_enc) / s = (x - b_dec/s) W + b_enc/s, and ReLU/TopK commute with s > 0."""
    raw = SAE(sae.d_in, sae.n_features, sae.arch, sae.k).to(sae.W_enc.device)
    with torch.no_grad():
        raw.W_enc.copy_(sae.W_enc)
        raw.W_dec.copy_(sae.W_dec)
        raw.b_enc.copy_(sae.b_enc / scale)
        raw.b_dec.copy_(sae.b_dec / scale)
    return raw


def geometric_median(x, iters=200, tol=1e-7):
    """Weiszfeld iterations for argmin_y sum_i ||x_i - y|| (x: (N, d)), from the mean, in float64."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-12)  # (N,)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        done = (y_new - y).norm() <= tol * max(1.0, y.norm().item())
        y = y_new
        if done:
            break
    return y


# -----------------------------------------------------------------------------
# metrics: small pure functions

def fvu_from_sums(sse, sum_x, sum_sq, n):
    """Fraction of variance unexplained over a whole set from running sums: total squared error over
    total squared deviation from the per-dimension mean. sum_x (d,), sum_sq = sum of all x^2."""
    total_var = float(sum_sq) - float((sum_x.double() ** 2).sum()) / n
    return float(sse) / max(total_var, 1e-30)


def ce_recovered(ce_clean, ce_spliced, ce_zero):
    """1 when splicing the reconstruction costs nothing, 0 when it is as bad as zero-ablating
    the MLP."""
    if abs(ce_zero - ce_clean) < 1e-12:  # the MLP does not matter to the loss: undefined
        return float("nan")
    return (ce_zero - ce_spliced) / (ce_zero - ce_clean)


def kl_div(log_p, log_q, p=None):
    """KL(p || q) summed over tokens, from log-probabilities (..., vocab); p: log_p.exp(), when
    at hand already. One dot product: no (..., vocab) product tensor is made."""
    return torch.vdot((log_p.exp() if p is None else p).reshape(-1), (log_p - log_q).reshape(-1))


def dead_fraction(fire_counts):
    return (fire_counts == 0).float().mean().item()


def dense_fraction(fire_counts, n_tokens, threshold=0.1):
    return (fire_counts > threshold * n_tokens).float().mean().item()


def density_histogram(fire_counts, n_tokens, lo=-6.0, step=0.25):
    """Histogram of log10(firing frequency) of the features that fire at all (dead counted
    apart)."""
    dens = fire_counts[fire_counts > 0].double() / n_tokens
    edges = np.arange(lo, 0 + step / 2, step)
    counts, _ = np.histogram(np.log10(dens.cpu().numpy()).clip(lo, 0), bins=edges)
    return {"log10_edges": edges.round(4).tolist(), "counts": counts.tolist(),
            "dead": int((fire_counts == 0).sum())}


# -----------------------------------------------------------------------------
# training step pieces

def sae_loss(sae, x, hp):
    """x (N, d_in) in training (scaled) space -> (loss, mse, f). The MSE is a mean over tokens of
    the sum over dimensions; the penalty is the activation's (ReLU: the L1, a mean over tokens of
    the sum over features; TopK: AuxK's MSE over the residual's variance). hp: this step's settings,
    made by train_seeds: l1_coeff (ReLU's ramped L1), dead (F,) bool, aux_k, aux_coeff (TopK)."""
    pre = sae.pre_acts(x)                              # (N, F): sae(x) in steps, pre kept for AuxK
    f = sae.activate(pre)                                                  # (N, F)
    x_hat = sae.decode(f)                                                  # (N, d_in)
    mse = (x_hat - x).pow(2).sum(-1).mean()
    return mse + sae.act.penalty(sae, x, pre, f, x_hat, hp), mse, f


def firing(f):
    """(which latents fired on this batch (F,) bool, how many entries are active) of f (N, F)."""
    fired = f > 0
    # (a bool tensor's sum() first copies it to int64)
    return fired.any(0), torch.count_nonzero(fired)


def normalize_decoder(sae):
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def remove_parallel_grad(sae):
    """Keep the decoder on the unit sphere: drop each row gradient's component along the row."""
    if sae.W_dec.grad is not None:
        w, g = sae.W_dec.data, sae.W_dec.grad
        g.sub_((g * w).sum(-1, keepdim=True) * w)


def make_optimizer(sae, cfg):
    # fused: one kernel for all parameters (CPU too)
    return torch.optim.Adam(sae.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), fused=True)


def train_step(sae, opt, x, lr, hp, loss_fn=sae_loss):
    """One Adam step on batch x (scaled space). Returns (loss, mse, f), all detached. The loss is
    not read back here (no host sync per step): the caller checks its finiteness at each log,
    evaluation and save, so a non-finite loss stops the run before anything it touched is saved.
    loss_fn: sae_loss, or fast.sae_loss (the same loss and gradients to rounding; f then may be a
    sparse CSR tensor), or fast.stack_loss for every seed at once (sae a fast.SeedStack; a loss per
    seed, whose sum gives each seed its own gradient)."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss, mse, f = loss_fn(sae, x, hp)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    remove_parallel_grad(sae)
    opt.step()
    normalize_decoder(sae)
    return loss.detach(), mse.detach(), f.detach()


@torch.no_grad()
def resample_dead(sae, opt, dead, pool, generator, batch=4096):
    """Anthropic's resampling: each dead latent gets an input drawn with probability proportional to
    the square of its reconstruction loss; decoder row = that input (minus b_dec) normalised,
    encoder column = the same direction at 0.2 x the mean alive encoder norm, bias 0, Adam state of
    the touched entries reset. pool (N, d_in) scaled inputs. Returns the number resampled."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    sse = torch.cat([(sae(pool[i:i + batch])[0] - pool[i:i + batch]).pow(2).sum(-1) for i in range(0, len(pool), batch)])
    probs = sse.double().pow(2).cpu()
    replacement = n_dead > int((probs > 0).sum())
    idx = torch.multinomial(probs, n_dead, replacement=replacement, generator=generator).to(pool.device)
    dirs = pool[idx] - sae.b_dec
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (n_dead, d_in)
    alive_norm = sae.W_enc[:, ~dead].norm(dim=0).mean() if bool((~dead).any()) else torch.tensor(1.0)
    sae.W_dec[dead] = dirs
    sae.W_enc[:, dead] = dirs.T * 0.2 * alive_norm
    sae.b_enc[dead] = 0.0
    for p, sel in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
        for v in opt.state.get(p, {}).values():
            if torch.is_tensor(v) and v.shape == p.shape:
                v[sel] = 0.0
    return n_dead


# -----------------------------------------------------------------------------
# data: the model's distribution, THE path to MLP activations, the shuffled stream, held-out windows

def model_domains(name):
    if name not in MODEL_DATA:
        die(f"unknown model {name!r}; choose one of: {', '.join(MODEL_DATA)}")
    return MODEL_DATA[name]


def open_domains(data_dir, domains, split, model_ckpt, who):
    """{domain: token memmap} of a model's domains, checked against the model (data.open_tokens)."""
    return {d: datalib.open_tokens(data_dir, d, split, model_ckpt["tokenizer_hash"],
                                   model_ckpt["model_args"]["vocab_size"], who) for d in domains}


@torch.no_grad()
def mlp_activations(model, windows, batch_size, device, skip_first=0, positions=None, bf16=False,
                    use_fast=False):
    """THE path from a model and token windows to its MLP hidden activations (sae.harvest,
    analyze.py). windows (n, T) int64 (tensor or numpy). Yields (row_start, acts) per batch of up to
    batch_size windows: acts (b, T - skip_first, d_mlp) float32, or with positions (n, k) the
    activations at those positions (b, k, d_mlp). bf16: on CUDA, the forward under bf16 autocast
    (harvesting for training; evaluation stays float32). use_fast: fast.mlp_activations (the same,
    keys and values looked up and the model run at the positions only)."""
    if use_fast:
        yield from fast.mlp_activations(model, windows, batch_size, device, skip_first, positions,
                                        bf16)
        return
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if bf16 and str(device).startswith("cuda") else contextlib.nullcontext())
    for start in range(0, len(windows), batch_size):
        idx = torch.as_tensor(windows[start:start + batch_size]).to(device)         # (b, T)
        with autocast:
            h = model.mlp_acts(idx).float()                                       # (b, T, d_mlp)
        if positions is None:
            yield start, h[:, skip_first:]
        else:
            pos = torch.as_tensor(positions[start:start + batch_size]).to(device)  # (b, k)
            yield start, h[torch.arange(len(h), device=device)[:, None], pos]       # (b, k, d_mlp)


def short_splits(job, cfg, T):
    """One line where a train or val split holds less than one window of T + 1 tokens (the harvest's, the held-out
    evaluation's): the data.py command that makes it larger (data.grow_fix) or, where every split holds a shorter
    window that still leaves tokens_per_seq positions past skip_first, the --seq_len that fits (with those two
    where the command line gave them: the printed command's defaults may not fit)."""
    sizes = {(d, s): len(a) for s, arrays in (("train", job.train), ("val", job.val)) for d, a in arrays.items()}
    short = [(d, s) for (d, s), n in sizes.items() if n < T + 1]
    if not short:
        return
    (d, split), fits = short[0], min(sizes.values()) - 1  # the longest seq_len every split holds a window of
    fix = datalib.grow_fix(cfg["data_dir"], d, split, T + 1)
    if fits >= cfg["skip_first"] + cfg["tokens_per_seq"]:  # (the command names those that the command line set)
        keep = "".join(f" --{k} {cfg[k]}" for k in ("tokens_per_seq", "skip_first") if k in COMMAND_LINE)
        fix += f"; or harvest shorter windows: {sae_how(job.name, job.seeds)} --seq_len {fits}{keep}"
    die(f"the {d} {split} split ({os.path.join(cfg['data_dir'], d, split + '.bin')}) has {sizes[short[0]]:,} tokens, "
        f"fewer than one window of {T + 1} (--seq_len {T}, and the next token); {fix}")


def stream_windows(arrays, n_seq, T, g, mix="equal", use_fast=False):
    """The harvest's windows (n_seq, T), a float64 draw u_i a window, first from g. mix equal:
    window i from domain i % n_domains at start u_i (len - T + 1); mix tokens (the authors'
    joined datasets): u_i picks one of all domains' starts (shares by tokens). fast: windows_at."""
    u = torch.rand(n_seq, generator=g, dtype=torch.float64)                  # (n_seq,) in [0, 1)
    for name, a in arrays.items():
        if len(a) < T:
            datalib.too_short(a, name, T)
    arrays = list(arrays.values())
    if use_fast:
        return fast.windows_at(arrays, u, T, mix)
    n_starts = [len(a) - T + 1 for a in arrays]
    idx = torch.empty(n_seq, T, dtype=torch.long)
    for i in range(n_seq):
        if mix == "equal":
            d = i % len(arrays)
            start = int(u[i] * n_starts[d])
        else:  # a start among all the domains' starts, laid end to end
            d, start = 0, int(u[i] * sum(n_starts))
            while start >= n_starts[d]:
                start, d = start - n_starts[d], d + 1
        idx[i] = torch.from_numpy(arrays[d][start:start + T].astype(np.int64))
    return idx


def harvest_draws(arrays, chunk, cfg):
    """Shuffle buffer `chunk`'s draws, a pure function of (data_seed, chunk): windows (n_seq, T),
    tokens_per_seq distinct positions >= skip_first in each (n_seq, tps), the shuffle of all."""
    g = torch.Generator().manual_seed(cfg["data_seed"] * SEED_STRIDE + chunk)
    T, tps, skip = cfg["seq_len"], cfg["tokens_per_seq"], cfg["skip_first"]
    n_seq = cfg["buffer_batches"] * cfg["seqs_per_batch"]
    # draws first from g (fast: the same windows gathered at once)
    idx = stream_windows(arrays, n_seq, T, g, cfg["mix"], cfg["fast"])
    pos = torch.rand(n_seq, T - skip, generator=g).argsort(dim=1)[:, :tps] + skip
    return idx, pos, torch.randperm(n_seq * tps, generator=g)


@torch.no_grad()
def harvest(model, arrays, chunk, cfg, device, draws=None):
    """Shuffle buffer `chunk`: MLP activations at its draws' positions, shuffled, (N, d_mlp) float32
    on device. draws: harvest_draws' (fast, CUDA: drawn in a thread as the last buffer trained)."""
    idx, pos, perm = draws or harvest_draws(arrays, chunk, cfg)
    out = [acts.reshape(-1, acts.size(-1)) for _, acts in
           mlp_activations(model, idx, cfg["harvest_batch"], device, positions=pos,
                           bf16=cfg["fast_math"], use_fast=cfg["fast"])]
    # shuffled (N, d_mlp)
    return torch.cat(out).index_select(0, perm.to(device))


def eval_windows(arrays, n_seqs, seq_len, mix="equal"):
    """Deterministic held-out windows (n_seqs, seq_len + 1), spread evenly over each domain's array:
    equal shares per domain, or with mix tokens shares proportional to the domains' tokens."""
    if mix == "equal":
        return torch.from_numpy(datalib.sample_windows(arrays, n_seqs, seq_len + 1, "spread"))
    ends = np.cumsum([0] + [len(a) for a in arrays.values()])
    counts = np.diff(np.round(ends / ends[-1] * n_seqs)).astype(int)    # (n_domains,), summing to n_seqs
    return torch.from_numpy(np.concatenate([datalib.sample_windows(a, c, seq_len + 1, "spread")
                                            for a, c in zip(arrays.values(), counts)]))


@torch.no_grad()
def evaluate(model, saes, wins, skip=1, batch=16, device="cpu", use_fast=False):
    """Metrics of raw-space SAEs on held-out windows (n, T+1), over positions >= skip: FVU, MSE, L0,
    dead/dense fractions and density histogram over all eval tokens, and the model's CE with the
    reconstruction spliced in at those positions vs clean and zero-ablated, KL to the clean model.
    The trunk (embedding, attention, MLP input) runs once per batch: the MLP output is the only
    thing a splice changes, so model.head gives each variant's logits from the same residual stream;
    sums stay on the device until the end.
    use_fast: the head a cache-sized block of tokens at a time on a CPU (fast.head_rows), else a
    batch at once."""
    def zero():
        return torch.zeros((), dtype=torch.float64, device=device)
    acc = [dict(sse=zero(), l0=zero(),
                fires=torch.zeros(s.n_features, dtype=torch.long, device=device),
                ce=zero(), kl=zero()) for s in saes]
    sum_x, sum_sq, n_tok, ce_clean, ce_zero = 0.0, zero(), 0, zero(), zero()
    for i in range(0, len(wins), batch):
        xy = wins[i:i + batch].to(device)
        # (B, T, d_model), (B, T, d_mlp)
        resid, h = model.trunk(xy[:, :-1])
        # positions >= skip (the MLP output acts in place): (N, d_model), (N, d)
        resid, h = resid[:, skip:].flatten(0, 1), h[:, skip:].flatten(0, 1)
        # (N, 1) their next tokens
        tgt = xy[:, 1 + skip:].reshape(-1, 1)
        x = h.float()
        n_tok += len(x)
        sum_x = sum_x + x.double().sum(0)
        sum_sq += x.double().pow(2).sum()
        x_hats = []
        for sae, a in zip(saes, acc):
            x_hat, f = sae(x)
            a["sse"] += (x_hat - x).double().pow(2).sum()
            # (F,) (int32: faster than int64)
            fires = (f > 0).sum(0, dtype=torch.int32)
            a["fires"] += fires
            a["l0"] += fires.sum()
            x_hats.append(x_hat)
        rows = fast.head_rows(model, len(x)) if use_fast else len(x)
        # a block of the head's rows at a time
        for j in range(0, len(x), rows):
            r, t = resid[j:j + rows], tgt[j:j + rows]
            log_p = F.log_softmax(model.head(r, h[j:j + rows]).float(), -1)   # (rows, vocab), clean
            ce_clean -= log_p.gather(-1, t).sum()
            # shared by the SAEs' KLs
            p = log_p.exp()
            # zero-ablated: the MLP's output removed
            log_z = F.log_softmax(model.head(r, torch.zeros_like(h[j:j + rows])).float(), -1)
            ce_zero -= log_z.gather(-1, t).sum()
            for x_hat, a in zip(x_hats, acc):
                log_q = F.log_softmax(model.head(r, x_hat[j:j + rows]).float(), -1)
                a["ce"] -= log_q.gather(-1, t).sum()
                a["kl"] += kl_div(log_p, log_q, p)                           # KL(clean || spliced)
    out = []
    d = len(sum_x)
    for a in acc:
        c, s, z = ce_clean.item() / n_tok, a["ce"].item() / n_tok, ce_zero.item() / n_tok
        out.append({"fvu": fvu_from_sums(a["sse"], sum_x, sum_sq, n_tok),
                    "mse": a["sse"].item() / (n_tok * d),  # raw units
                    "l0": a["l0"].item() / n_tok, "dead_frac": dead_fraction(a["fires"]),
                    "dense_frac": dense_fraction(a["fires"], n_tok), "ce_clean": c, "ce_spliced": s,
                    "ce_zero_ablation": z, "ce_recovered": ce_recovered(c, s, z),
                    "kl": a["kl"].item() / n_tok,
                    "eval_tokens": n_tok, "density_hist": density_histogram(a["fires"], n_tok)})
    return out


@contextlib.contextmanager
def full_fp32():
    """Metrics want full float32 matmuls (FVU ~ 1e-2) even where training uses TF32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# -----------------------------------------------------------------------------
# checkpoints: what analyze.py imports

def sae_path(out_dir, model_name, seed):
    return os.path.join(out_dir, f"sae_{model_name}", f"sae_s{seed}.pt")


def model_fingerprint(model_ckpt):
    """A hash of a model checkpoint's weights (a model ckpt dict does not know its own file hash)."""
    h = hashlib.sha256()
    state = model_ckpt["model"]
    for k in sorted(state, key=clean_key):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{clean_key(k)}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def sae_how(model_name, seeds, made=None):
    """The command that trains model_name's SAEs: with seeds, a run's own (a list), or the study's 0 and 1
    with this seed (an int) among them. Without its --seeds the command would train 0 and 1 only. made: the
    config they were (or are being) trained with, whose settings off the defaults the command names (else it
    would train other SAEs: common.with_settings)."""
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [0, 1] + [seeds] * (seeds not in (0, 1))
    return with_settings(f"python sae.py --model {model_name}" + seeds_flag(seeds), made, config, PRESETS,
                         RESUME_FREE | {"seeds"})


def seeds_flag(seeds):
    """' --seeds a,b' for a command that trains these seeds (sae.py's, diffing.py's); '' for their default 0,1."""
    return "" if list(seeds) == [0, 1] else f" --seeds {','.join(map(str, seeds))}"


def remake_flag(path):
    """What remakes the seed file at path: a damaged or misplaced one is rewritten by --resume from the run's
    training state where that is kept beside it (any seed file it does not match); without it (or without a
    folder to look in), only retraining."""
    folder = os.path.dirname(path)
    return " --resume" if folder and os.path.isfile(os.path.join(folder, STATE_FILE)) else " --overwrite"


def run_config(folder):
    """The config the SAE run in folder recorded: its training state's (what a --resume must be given; its
    records only: mmap), else its metrics.json's; None where neither can be read."""
    try:
        return load_data(os.path.join(folder, STATE_FILE), mmap=True)["config"]
    except Exception:  # damaged too, or none: the record may say
        pass
    try:
        return read_json(os.path.join(folder, "metrics.json"))["provenance"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_sae(out_dir, model_name, seed=0, device="cpu"):
    """(SAE in eval mode on raw activations, its checkpoint dict without the training state)."""
    model_domains(model_name)
    path = sae_path(out_dir, model_name, seed)
    how, again = sae_how(model_name, seed), remake_flag(path)
    try:
        ckpt = load_checkpoint(path, f"SAE for '{model_name}'", how, kind="sae", again=again)
    except UserError:  # missing or damaged: the command names the settings its run recorded
        how = sae_how(model_name, seed, run_config(os.path.dirname(path)))
        ckpt = load_checkpoint(path, f"SAE for '{model_name}'", how, kind="sae", again=again)  # (the same line)
    how = sae_how(model_name, seed, ckpt.get("config"))
    # a seed's file copied or renamed onto another seed's name passes every other check, and the null
    # baseline (seed 0 against seed 1) would then find every feature again: named, never used
    if ckpt.get("seed", seed) != seed:
        die(f"{path} holds the SAE of seed {ckpt.get('seed')}, not seed {seed}: renamed or copied? put it back "
            f"under its own name, or remake it: {how}{again}")
    if not ckpt.get("finished"):
        die(f"{path} is unfinished (step {ckpt.get('step')}/{ckpt.get('total_steps')}); finish it with: {how} --resume")
    ckpt.pop("train", None)
    try:
        a = ckpt["sae_args"]
        sae = SAE(a["d_in"], a["n_features"], a["arch"], a["k"])
        sae.load_state_dict(ckpt["sae"])
    except Exception as e:  # whole by its checksum, but its args or weights edited (and re-stamped)
        misfit(path, e, "SAE", how)
    return sae.to(device).eval(), ckpt


def check_sae_matches(sae_ckpt, model_ckpt, model_hash=None, path="this SAE"):
    """One-line errors when an SAE does not belong to a model checkpoint dict (model_hash: optional
    common.sha256_file of the model's file, compared too; path: the SAE file, for the messages)."""
    name = sae_ckpt["model_name"]
    seed, made = sae_ckpt.get("seed", 0), sae_ckpt.get("config")  # (the command names its settings)
    fix = f"retrain the SAE: {sae_how(model_ckpt.get('name', name), seed, made)} --overwrite"
    d_in, d_mlp = sae_ckpt["sae_args"]["d_in"], model_ckpt["model_args"]["d_mlp"]
    if d_in != d_mlp:
        die(f"the SAE for '{name}' takes {d_in}-wide inputs but model '{model_ckpt.get('name')}' has d_mlp {d_mlp}; {fix}")
    if sae_ckpt["tokenizer_hash"] != model_ckpt["tokenizer_hash"]:
        die(f"the SAE for '{name}' was trained with tokenizer {sae_ckpt['tokenizer_hash']}, model "
            f"'{model_ckpt.get('name')}' uses {model_ckpt['tokenizer_hash']}; {fix}")
    if model_ckpt.get("name") != name:  # (a file copied in: its own run's training state, kept, remakes it)
        made = run_config(os.path.dirname(path)) if os.path.dirname(path) else None  # (with that run's settings)
        die(f"{path} holds an SAE of model '{name}', not '{model_ckpt.get('name')}': folders swapped? put each back in "
            f"its own folder (sae_<model>), or remake it: {sae_how(model_ckpt.get('name'), seed, made)}"
            f"{remake_flag(path)}")
    if (model_hash is not None and model_hash != sae_ckpt["model_hash"]) or \
            model_fingerprint(model_ckpt) != sae_ckpt["model_fingerprint"]:
        die(f"the SAE for '{name}' was trained on another version of that model (its file hash then: "
            f"{sae_ckpt['model_hash']}); {fix}")


def save_seed_file(job, run, finished):
    """One seed's raw-space SAE for users (analyze.py's load_sae), atomic; no training state."""
    raw = fold_scale(run["sae"], job.scale)
    ckpt = {"sae": {k: v.detach().cpu() for k, v in raw.state_dict().items()}, "sae_args": sae_args(run["sae"]),
            "seed": run["seed"], "init_seed": init_seed(job.name, run["seed"]), "step": job.step,
            "total_steps": job.total_steps, "finished": finished,
            "scale": job.scale, "config": job.cfg, "metrics": run.get("metrics", {}), **job.info,
            "provenance": provenance(job.cfg, **job.info)}
    atomic_torch_save(stamp(ckpt, "sae"), job.paths[run["seed"]])  # kind, format, checksum


def save_state(job, runs, finished):
    """Every seed's training state at this step in ONE atomic file: a crash or a full disk leaves the
    previous state or this one, never seeds at different steps. --resume reads only this file."""
    seeds = {r["seed"]: {"sae": {k: v.detach().cpu() for k, v in r["sae"].state_dict().items()},
                         "sae_args": sae_args(r["sae"]), "optimizer": r["opt"].state_dict(),
                         "last_fired": r["last_fired"].cpu(), "n_resampled": r["n_resampled"], "density": r["density"],
                         "metrics": r.get("metrics", {})} for r in runs}
    # the training log's sums since its last line (a save between two logs): a resume logs the same numbers
    # and meets the early check (health_at) at the same log
    log = {"last_logged": job.last_logged, "stats": on_device(job.stats, "cpu")}
    state = {"step": job.step, "total_steps": job.total_steps, "finished": finished, "scale": job.scale,
             "config": job.cfg, "history": job.history, "seeds": seeds, "log": log, **job.info,
             "provenance": provenance(job.cfg, **job.info)}
    atomic_torch_save(stamp(state, "sae_state"), job.state_path)


def on_device(x, device):
    """x (the training log's sums: a dict of tensors, numbers and lists of them; or None), its tensors on device."""
    if isinstance(x, dict):
        return {k: on_device(v, device) for k, v in x.items()}
    if isinstance(x, list):
        return [on_device(v, device) for v in x]
    return x.to(device) if torch.is_tensor(x) else x


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg = parse_config(dict(config), argv, PRESETS, default_preset(), checks=CHECKS)
    job = setup(cfg)
    with lock_dir(job.dir, f"sae.py --model {cfg['model']}"):  # also removes temp files of killed saves
        print_settings(job)
        runs = open_run(job)
        if runs is None:
            return job.result  # finished before: nothing to do
        print_plan(job)
        if not train_loop(job, runs):
            return None  # --stop_step
        return finish(job, runs)


# -----------------------------------------------------------------------------
# the steps of main(), in order

def setup(cfg):
    """The device, the model (a finished one unless --allow_unfinished), its data checked against it,
    the stream's shapes and the output paths."""
    check_seeds(cfg["seeds"])
    check_resume_or_overwrite(cfg)
    job = SimpleNamespace(cfg=cfg, name=cfg["model"], domains=model_domains(cfg["model"]), seeds=list(cfg["seeds"]),
                          result=None)
    job.device = pick_device(cfg["device"])
    job.threads = set_threads(cfg["threads"], job.device)
    cfg["harvest_batch"] = cfg["harvest_batch"] or (512 if cfg["fast"] and job.device.startswith("cuda") else 64)
    if job.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = cfg["fast_math"]  # SAE training; full_fp32() for the metrics
    if not cfg["fast"] and cfg["sae_step"] != "auto":
        die(f"--sae_step {cfg['sae_step']} is one of fast.py's steps; drop it, or drop --fast=false")
    # fast: the seeds' steps as one stack, or each seed's (sparse where it pays) in threads on a CPU
    job.fast_steps = (fast.SeedSteps(cfg["sae_step"], job.device, cfg["fast_math"], len(job.seeds), job.threads,
                                     train_step, firing) if cfg["fast"] else None)
    model_path = os.path.join(cfg["out_dir"], job.name, "ckpt.pt")
    job.model, mckpt = load_model(cfg["out_dir"], job.name, job.device, allow_unfinished=cfg["allow_unfinished"])
    for p in job.model.parameters():
        p.requires_grad_(False)
    check_preset(mckpt, model_path, cfg["preset"], cfg["allow_other_preset"],
                 f"train {cfg['preset']}-preset SAEs on it")
    margs = job.model.args
    job.info = {"model_name": job.name, "model_hash": sha256_file(model_path), "model_fingerprint": model_fingerprint(mckpt),
                "tokenizer_hash": mckpt["tokenizer_hash"], "domains": job.domains}
    job.train = open_domains(cfg["data_dir"], job.domains, "train", mckpt, job.name)
    job.val = open_domains(cfg["data_dir"], job.domains, "val", mckpt, job.name)
    job.info["data_meta_sha256"] = datalib.data_fingerprint(cfg["data_dir"], job.domains)
    job.info["data_train_sha256"] = datalib.tokens_sha256(cfg["data_dir"], job.domains)  # what it trains on
    cfg["seq_len"] = cfg["seq_len"] or margs.block_size
    T = cfg["seq_len"]
    if T > margs.block_size or not 0 < cfg["tokens_per_seq"] <= T - cfg["skip_first"]:
        die(f"need tokens_per_seq {cfg['tokens_per_seq']} <= seq_len {T} - skip_first {cfg['skip_first']}, "
            f"seq_len <= block_size {margs.block_size}")
    short_splits(job, cfg, T)
    job.d_in = margs.d_mlp
    job.n_features = cfg["expansion"] * job.d_in
    job.aux_k = cfg["aux_k"] or job.d_in // 2
    job.act = ACTIVATIONS[cfg["arch"]](cfg["k"], job.n_features)
    job.B = cfg["seqs_per_batch"] * cfg["tokens_per_seq"]
    job.total_steps = max(1, cfg["total_acts"] // job.B)
    job.health_step = math.ceil(cfg["health_at"] * job.total_steps)  # 0: no check
    # settings that each pass CHECKS but mean nothing together: more active latents than there are, or a
    # resampling period no step of the resampling window reaches (so none would happen)
    if cfg["arch"] == "topk" and max(cfg["k"], job.aux_k) > job.n_features:
        die(f"--k {cfg['k']} / --aux_k {job.aux_k} must be at most the SAE's {job.n_features} features "
            f"(--expansion {cfg['expansion']} x d_mlp {job.d_in})")
    # (refused when chosen on the command line; only said when the preset's period meets a short run, as
    # tests and smoke runs make, which is fine without resampling)
    window = int(cfg["resample_until"] * job.total_steps)
    if cfg["arch"] == "relu" and cfg["resample_every"] > max(window, 1):
        why = (f"--resample_every {cfg['resample_every']} is beyond the resampling window (--resample_until "
               f"{cfg['resample_until']} x {job.total_steps} steps = step {window})")
        if "resample_every" in COMMAND_LINE:
            die(f"{why}, so nothing would be resampled; give at most {max(window, 1)}, or 0 for no resampling")
        print(f"note: {why}: nothing will be resampled")
    job.dir = os.path.join(cfg["out_dir"], f"sae_{job.name}")
    job.paths = {s: sae_path(cfg["out_dir"], job.name, s) for s in job.seeds}
    job.state_path = os.path.join(job.dir, STATE_FILE)
    return job


def open_run(job):
    """Fresh SAEs, or the training state to resume; None when the run had finished (its outputs are
    rewritten from the state if a crash left them incomplete)."""
    cfg = job.cfg
    existing = [p for p in (job.state_path, *job.paths.values()) if os.path.exists(p)]
    if existing and not cfg["resume"] and not cfg["overwrite"]:
        die(f"{existing[0]} exists; add --resume to continue it or --overwrite to start over")
    n_params = 2 * job.d_in * job.n_features + job.n_features + job.d_in
    check_free_space(job.dir, len(job.seeds) * (16 * n_params + 8 * job.n_features) + (16 << 20),
                     "the SAE checkpoints")  # the state (weights + Adam) and the raw SAEs, before the long pass
    job.buf, job.buf_chunk = None, -1
    if cfg["resume"] and existing and not cfg["overwrite"]:
        runs = resume_runs(job)
    else:
        runs = fresh_runs(job)
    job.eval_wins = eval_windows(job.val, cfg["eval_seqs"], cfg["seq_len"], cfg["mix"])
    return runs


def new_run(seed, sae, cfg, n_features, device):
    return {"seed": seed, "sae": sae, "opt": make_optimizer(sae, cfg), "n_resampled": 0, "density": 1.0,
            "last_fired": torch.zeros(n_features, dtype=torch.long, device=device)}


def fresh_runs(job):
    """Input scale and b_dec from the first buffer, then one SAE per seed."""
    cfg, d_in = job.cfg, job.d_in
    job.buf, job.buf_chunk = harvest(job.model, job.train, 0, cfg, job.device), 0
    job.scale = math.sqrt(d_in) / job.buf.norm(dim=1).mean().item()  # E||x * scale|| = sqrt(d_in)
    b_dec = geometric_median(job.buf[:MEDIAN_SAMPLE] * job.scale).float()
    job.step, job.history, job.last_logged, job.stats = 0, [], 0, None
    runs = [new_run(s, init_sae(d_in, job.n_features, cfg["arch"], cfg["k"], init_seed(job.name, s), b_dec).to(job.device),
                    cfg, job.n_features, job.device) for s in job.seeds]
    print(f"input scale {job.scale:.4g} (mean raw norm {math.sqrt(d_in) / job.scale:.4g}); b_dec = geometric median "
          f"of {min(len(job.buf), MEDIAN_SAMPLE)} activations, norm {b_dec.norm().item() / job.scale:.4g} raw")
    return runs


def resume_runs(job):
    """The seeds' training state from train_state.pt, after checking it belongs to this run."""
    cfg, path = job.cfg, job.state_path
    try:
        if not os.path.exists(path):
            die(f"{job.dir} has SAE checkpoints but no {STATE_FILE} to resume from (made by an older sae.py, or "
                f"deleted); retrain with --overwrite")
        st = load_checkpoint(path, "SAE training state", sae_how(job.name, job.seeds, cfg), kind="sae_state")
        check_resume(st["config"], cfg, RESUME_FREE | {"seeds"}, path)
        if st["model_hash"] != job.info["model_hash"]:
            die(f"{path} was trained on another version of model '{job.name}'; retrain with --overwrite")
        if sorted(st["seeds"]) != sorted(job.seeds):
            have = ",".join(map(str, st["seeds"]))
            die(f"{path} trains seeds {have} together; resume with --seeds {have}, or start over with --overwrite")
        if not st.get("finished"):  # the harvest goes on from the tokens it began on, never others
            datalib.check_same_tokens(st.get("data_train_sha256"), cfg["data_dir"], job.domains, path,
                                      sae_how(job.name, job.seeds, cfg))
    except UserError:  # the state is needed only to train on: finished SAE files with their metrics stand
        if not finished_without_state(job):
            raise
        print(f"{job.dir}: finished at step {job.total_steps}; nothing to do ({STATE_FILE} is missing, damaged or "
              f"another run's, and is needed only to train further; --overwrite retrains)")
        return None
    job.scale, job.step, job.history = st["scale"], st["step"], st["history"]
    runs = []
    for s in job.seeds:
        ck = st["seeds"][s]
        try:
            job.last_logged, job.stats = resume_log(job, st)
            if not (type(job.step) is int and 0 <= job.step <= job.total_steps and math.isfinite(job.scale)
                    and type(job.last_logged) is int and 0 <= job.last_logged <= job.step):
                raise ValueError(f"step {job.step} of {job.total_steps}, last logged at {job.last_logged}, input "
                                 f"scale {job.scale}")
            sae = SAE(**ck["sae_args"]).to(job.device)
            sae.load_state_dict(ck["sae"])
            run = new_run(s, sae, cfg, job.n_features, job.device)
            run["opt"].load_state_dict(ck["optimizer"])
            check_adam_state(run["opt"])
            if tuple(ck["last_fired"].shape) != (job.n_features,):
                raise ValueError(f"last_fired has shape {tuple(ck['last_fired'].shape)}, not ({job.n_features},)")
        except Exception as e:  # whole by its checksum, but edited (and re-stamped)
            misfit(path, e, "SAE training state", sae_how(job.name, job.seeds, cfg))
        for adam in run["opt"].state.values():  # its own step count (a stack's seeds were saved sharing one)
            adam["step"] = adam["step"].clone()
        run.update(last_fired=ck["last_fired"].to(job.device), n_resampled=ck["n_resampled"], metrics=ck["metrics"],
                   density=ck.get("density", 1.0))
        runs.append(run)
    if st["finished"]:
        if outputs_current(job):
            print(f"{job.dir}: finished at step {job.total_steps}; nothing to do (--overwrite to retrain)")
        else:
            print(f"{job.dir}: finished at step {job.total_steps}, but the SAE files or metrics.json are missing or "
                  f"stale (an interrupted save); rewriting those from {STATE_FILE}")
            for run in runs:  # a good seed file stays as it is: a new one would have a new hash (stale diffing)
                if not seed_file_current(job, run):
                    save_seed_file(job, run, finished=True)
            job.result = write_metrics(job, runs)
        return None
    print(f"resuming {len(runs)} SAE(s) from step {job.step}/{job.total_steps}")
    return runs


def resume_log(job, st):
    """(the step last logged, the training log's sums since: save_state's) of a state, each seed's sums in this
    run's order of the seeds (--seeds 1,0 resumes 0,1); a state of an older sae.py kept none: logged at its step."""
    log = st.get("log") or {"last_logged": st["step"], "stats": None}
    stats = on_device(log["stats"], job.device)
    if stats is not None:
        at = [list(st["seeds"]).index(s) for s in job.seeds]
        stats.update({k: [stats[k][i] for i in at] for k in ("sse", "l0")})
        if tuple(stats["sum_x"].shape) != (job.d_in,):
            raise ValueError(f"the log's sum_x has shape {tuple(stats['sum_x'].shape)}, not ({job.d_in},)")
    return log["last_logged"], stats


def print_settings(job):
    """The SAEs and the stream."""
    cfg, T = job.cfg, job.cfg["seq_len"]
    print(f"preset {cfg['preset']}: SAE on '{job.name}' MLP activations (d_mlp {job.d_in}), data "
          f"{'+'.join(job.domains)} ({cfg['mix']} shares) from {cfg['data_dir']}, device {job.device}"
          + (f", {job.threads} threads" if job.device == "cpu" else "")
          + (f"; {job.fast_steps.describe()}" if job.fast_steps and job.fast_steps.describe() else ""))
    print(f"{cfg['arch']}: {job.n_features} features ({cfg['expansion']}x), {job.act.describe(cfg, job.aux_k)}; "
          f"Adam lr {cfg['lr']:g} betas ({cfg['beta1']}, {cfg['beta2']}); seeds {','.join(map(str, job.seeds))}")
    print(f"stream: {cfg['seqs_per_batch']} seqs x {cfg['tokens_per_seq']} positions = {job.B} activations/step, "
          f"{job.total_steps} steps = {job.total_steps * job.B:,} activations, buffer {cfg['buffer_batches']} "
          f"batches, harvested {cfg['harvest_batch']} windows a forward; eval {cfg['eval_seqs']} val windows x "
          f"{T - cfg['skip_first']} positions")


def print_plan(job):
    """What is left to do, in FLOPs (the ETA follows in the log from the first steps' rate)."""
    cfg, T = job.cfg, job.cfg["seq_len"]
    steps = job.total_steps - job.step
    sae_flops = 12 * job.d_in * job.n_features * job.B * steps * len(job.seeds)  # fwd 4dF + bwd 8dF per activation
    per_window = (fast.harvest_flops_per_window(job.model, T, cfg["tokens_per_seq"]) if cfg["fast"] else
                  harvest_flops_per_window(job.model, T))
    harvest_flops = per_window * cfg["seqs_per_batch"] * steps
    n_evals = steps // cfg["eval_interval"] + 1
    job.flops_per_step = (sae_flops + harvest_flops) / max(steps, 1)  # for the MFU in metrics.json
    eval_flops = n_evals * cfg["eval_seqs"] * T * (job.model.flops_per_token() / 3 * (2 + len(job.seeds))
                                                   + 4 * job.d_in * job.n_features * len(job.seeds))
    print(f"plan: {steps} steps x {len(job.seeds)} SAE(s): {sae_flops:.3g} FLOP SAE training, {harvest_flops:.3g} "
          f"harvesting, {eval_flops:.3g} in {n_evals} evaluation(s); ETA in the log from the first "
          f"{min(cfg['log_interval'], steps)} steps")


def harvest_flops_per_window(model, T):
    """Matmul FLOPs of the harvest's forward for one window of T tokens, every position run: the attention's
    four projections and the MLP (2 FLOP a weight a token), and its scores and weighted sum (4 T d_model a
    token). fast.harvest_flops_per_window: its harvest's, at the kept positions only."""
    weights = sum(p.numel() for p in model.attn.parameters()) + sum(p.numel() for p in model.mlp.parameters())
    return T * (2 * weights + 4 * T * model.args.d_model)


def train_loop(job, runs):
    """One harvested batch feeds every seed's SAE. Returns False when stopped by --stop_step."""
    cfg = job.cfg
    if 0 < cfg["stop_step"] <= job.step < job.total_steps:  # resumed where --stop_step already stopped it
        print(f"at step {job.step}, --stop_step {cfg['stop_step']}: nothing to train; continue with --resume alone")
        return False
    job.t0, job.t0_step = time.time(), job.step  # the rate: this process's steps (a resume's log began before)
    if job.fast_steps:  # fast: a stack of the seeds' parameters and Adam state, the runs' views of it
        job.fast_steps.start(runs)
    # fast, CUDA: the next buffer's draws made in a thread while this one trains (else None)
    job.prefetch = fast.Prefetch.start(job, harvest_draws) if cfg["fast"] else None
    job.loop_start = (time.time(), job.step)
    for r in runs:  # the first step whose loss was not finite, and that loss (read back only at checks)
        r["bad_step"] = torch.tensor(-1, device=job.device)
        r["bad_loss"] = torch.tensor(0.0, device=job.device)
    while job.step < job.total_steps:
        train_seeds(job, runs, next_batch(job))
        job.step += 1
        step = job.step
        if job.act.resamples and cfg["resample_every"] > 0 and step % cfg["resample_every"] == 0 \
                and step <= cfg["resample_until"] * job.total_steps:
            resample(job, runs)
        if step % cfg["log_interval"] == 0 or step == job.total_steps:
            log_progress(job, runs)
        stopping = cfg["stop_step"] > 0 and step >= cfg["stop_step"] and step < job.total_steps
        if step < job.total_steps and step % cfg["eval_interval"] == 0:
            run_eval(job, runs)
        if step < job.total_steps and (step % cfg["ckpt_interval"] == 0 or stopping):
            save_all(job, runs, finished=False)
        if stopping:
            print(f"stopping at step {step} (--stop_step); continue with --resume")
            return False
        if step % cfg["log_interval"] == 0:
            job.t0 = time.time()  # do not count evaluation and saving in the rate
    return True


def next_batch(job):
    """This step's batch (B, d_in), scaled; the shuffle buffer is refilled when the step enters a new one."""
    chunk, off = divmod(job.step, job.cfg["buffer_batches"])
    if chunk != job.buf_chunk:
        draws = job.prefetch.get(chunk) if job.prefetch else None  # fast, CUDA: drawn in a thread
        job.buf, job.buf_chunk = harvest(job.model, job.train, chunk, job.cfg, job.device, draws), chunk
    return job.buf[off * job.B:(off + 1) * job.B] * job.scale


def lr_at(job, i):
    """Constant, then linearly to 0 over the last lr_decay_frac of the steps."""
    decay_steps = max(1.0, job.cfg["lr_decay_frac"] * job.total_steps)
    return job.cfg["lr"] * min(1.0, (job.total_steps - i) / decay_steps)


def l1_at(job, i):
    """ReLU's L1 weight at step i: linearly up to l1_coeff over the first l1_warmup_frac of the
    steps (step i trains with (i + 1) / warm-up steps of it), then constant."""
    warmup_steps = max(1.0, job.cfg["l1_warmup_frac"] * job.total_steps)
    return job.cfg["l1_coeff"] * min(1.0, (i + 1) / warmup_steps)


def train_seeds(job, runs, x):
    """One step of every seed's SAE on x, and the running sums of the training log (on the device:
    nothing is read back here)."""
    cfg, step, B = job.cfg, job.step, job.B
    if job.stats is None:
        job.stats = {"sum_x": torch.zeros(job.d_in, dtype=torch.float64, device=job.device),
                     "sum_sq": 0.0, "n": 0, "sse": [0.0] * len(runs), "l0": [0.0] * len(runs)}
    stats = job.stats
    stats["sum_x"] += x.sum(0, dtype=torch.float64)
    stats["sum_sq"] += x.pow(2).sum(dtype=torch.float64)
    stats["n"] += B
    lr, l1 = lr_at(job, step), l1_at(job, step)
    hps = [SimpleNamespace(l1_coeff=l1, dead=(step - r["last_fired"]) * B >= cfg["dead_window"],
                           aux_k=job.aux_k, aux_coeff=cfg["aux_coeff"]) for r in runs]  # dead (F,)
    if job.fast_steps:  # fast.py: the seeds as one stack, or sparse steps in threads (to rounding)
        outs = job.fast_steps(runs, x, lr, hps)
    else:  # each seed's step, then firing(f): (which latents fired (F,), how many entries)
        outs = []
        for r, hp in zip(runs, hps):
            loss, mse, f = train_step(r["sae"], r["opt"], x, lr, hp)
            outs.append((loss, mse, *firing(f)))
    for j, (r, (loss, mse, fired, n_active)) in enumerate(zip(runs, outs)):
        # the first non-finite loss kept on the device: check_finite reads it at the next log
        new_bad = (r["bad_step"] < 0) & ~torch.isfinite(loss)
        r["bad_step"] = torch.where(new_bad, step, r["bad_step"])
        r["bad_loss"] = torch.where(new_bad, loss, r["bad_loss"])
        r["last_fired"].masked_fill_(fired, step + 1)
        stats["sse"][j] += mse * B  # the loss's own sum of squares
        stats["l0"][j] += n_active


def check_finite(job, runs):
    """Stop in one line, saving nothing, if a seed's loss was not finite at some step (a step count
    read back at logs, resamplings, evaluations and saves instead of at every step)."""
    for r in runs:
        if int(r["bad_step"]) >= 0:
            die(f"the loss of seed {r['seed']} became {float(r['bad_loss'])} at step {int(r['bad_step'])}; stopped "
                f"without saving, the last good checkpoint in {job.dir} (if any) is kept; retrain with a lower "
                f"--lr and --overwrite")


def resample(job, runs):
    check_finite(job, runs)
    step, every = job.step, job.cfg["resample_every"]
    for r in runs:
        dead = r["last_fired"] <= step - every
        g = torch.Generator().manual_seed(r["seed"] * SEED_STRIDE + step)
        n = resample_dead(r["sae"], r["opt"], dead, job.buf * job.scale, g)
        r["last_fired"][dead] = step
        r["n_resampled"] += n
        print(f"step {step}: seed {r['seed']}: resampled {n} dead latents ({n / job.n_features:.1%})")


def log_progress(job, runs):
    """The training log since the last one (sums over every step, read back once here), rate and ETA."""
    check_finite(job, runs)
    cfg, stats, step, B, d_in = job.cfg, job.stats, job.step, job.B, job.d_in
    rate = (step - job.t0_step) * B / max(time.time() - job.t0, 1e-9)
    logs = {r["seed"]: {"mse": float(stats["sse"][j]) / (stats["n"] * d_in),  # per element, scaled space
                        "fvu": fvu_from_sums(float(stats["sse"][j]), stats["sum_x"], float(stats["sum_sq"]), stats["n"]),
                        "l0": float(stats["l0"][j]) / stats["n"],
                        "dead": ((step - r["last_fired"]) * B >= cfg["dead_window"]).float().mean().item(),
                        "silent": (r["last_fired"] <= job.last_logged).float().mean().item()}  # none since the last log
            for j, r in enumerate(runs)}
    eta = (job.total_steps - step) * B / max(rate, 1e-9)
    print(f"step {step}/{job.total_steps}: " + " | ".join(
        f"s{s} mse {m['mse']:.4f}, fvu {m['fvu']:.3f}, l0 {m['l0']:.1f}, dead {m['dead']:.1%}" for s, m in logs.items())
        + (f", {rate / 1e6:.2f}M act/s" if rate >= 1e6 else f", {rate / 1e3:.1f}k act/s")
        + (f", eta {eta / 60:.1f} min" if step < job.total_steps else ""))
    job.history.append({"step": step, "train": logs, "act_per_s": rate})
    # the log's sums start again here, before the early check: a run it stops is saved with this line logged
    since, job.stats, job.t0, job.t0_step, job.last_logged = job.last_logged, None, time.time(), step, step
    if since < job.health_step <= step < job.total_steps:  # early: a finished run is evaluated instead
        check_health(job, runs, logs, since)


def check_health(job, runs, logs, since):
    """The early check (health_at): a seed outside HEALTH stops the run here, its state saved, in one
    line naming the setting to change."""
    cfg, l0_max = job.cfg, max(job.d_in, HEALTH["l0_frac"] * job.n_features)
    bands = f"L0 1-{l0_max:g}, FVU <= {HEALTH['fvu']}, silent <= {HEALTH['silent']:.0%}"
    for r in runs:
        m = logs[r["seed"]]
        if job.act.resamples and m["l0"] > l0_max:
            fix = f"raise --l1_coeff (now {cfg['l1_coeff']:g}: too weak for {job.n_features} features)"
        elif m["l0"] < 1 or m["fvu"] > HEALTH["fvu"] or m["silent"] > HEALTH["silent"]:
            fix = (f"lower --l1_coeff (now {cfg['l1_coeff']:g}) or --lr (now {cfg['lr']:g})" if job.act.resamples
                   else f"raise --k (now {cfg['k']}) or lower --lr (now {cfg['lr']:g})")
        else:
            continue
        save_all(job, runs, finished=False)
        die(f"early check at step {job.step} ({job.step / job.total_steps:.0%} of the run): seed {r['seed']} has L0 "
            f"{m['l0']:.1f}, FVU {m['fvu']:.3f}, {m['silent']:.0%} of latents silent since step {since} "
            f"(bands: {bands}); {fix} and start over with --overwrite, or train on with --resume --health_at 0 "
            f"(state saved)")
    print(f"early check at step {job.step}: " + ", ".join(
        f"s{s} L0 {m['l0']:.1f}, FVU {m['fvu']:.3f}, {m['silent']:.0%} silent" for s, m in logs.items())
        + f": within the bands ({bands})")


def run_eval(job, runs):
    """Metrics of the raw-space SAEs (exactly what is saved) on the held-out windows, in full float32."""
    check_finite(job, runs)
    with full_fp32():
        raws = [fold_scale(r["sae"], job.scale) for r in runs]
        results = evaluate(job.model, raws, job.eval_wins, job.cfg["skip_first"], job.cfg["eval_batch"], job.device,
                           use_fast=job.cfg["fast"])
    for r, m in zip(runs, results):
        r["metrics"] = {"step": job.step, **m, "mse_scaled": m["mse"] * job.scale ** 2}
    print(f"eval step {job.step}: " + " | ".join(
        f"s{r['seed']} fvu {r['metrics']['fvu']:.3f} l0 {r['metrics']['l0']:.1f} ce_rec {r['metrics']['ce_recovered']:.3f} "
        f"kl {r['metrics']['kl']:.3f} dead {r['metrics']['dead_frac']:.1%} dense {r['metrics']['dense_frac']:.1%}" for r in runs))
    job.history.append({"step": job.step, "eval": {r["seed"]: {k: v for k, v in r["metrics"].items() if k != "density_hist"}
                                                   for r in runs}})


def save_all(job, runs, finished):
    """The training state of every seed (one file), then each seed's SAE file; nothing non-finite."""
    check_finite(job, runs)
    for r in runs:
        if not all(torch.isfinite(p).all() for p in r["sae"].parameters()):
            die(f"seed {r['seed']}'s weights are not finite at step {job.step}; not saved (the last good checkpoint "
                f"is kept)")
    save_state(job, runs, finished)
    for r in runs:
        save_seed_file(job, r, finished)


def finish(job, runs):
    """Final evaluation, the state and SAE files, metrics.json."""
    run_eval(job, runs)
    save_all(job, runs, finished=True)
    return write_metrics(job, runs)


def write_metrics(job, runs):
    """metrics.json, written last: every seed of the run, with the hash of its SAE file."""
    per_seed = {str(r["seed"]): {**r["metrics"], "n_resampled": r["n_resampled"], "checkpoint": job.paths[r["seed"]],
                                 "checkpoint_sha256": sha256_file(job.paths[r["seed"]])} for r in runs}
    mfu = None  # SAE training + harvest FLOPs (dense-equivalent) per second of this process's loop / peak; CUDA only
    if job.device.startswith("cuda") and hasattr(job, "loop_start"):
        seconds, steps = time.time() - job.loop_start[0], job.step - job.loop_start[1]
        mfu = job.flops_per_step * steps / max(seconds, 1e-9) / job.cfg["peak_flops"]
    metrics = {"model": job.name, "arch": job.cfg["arch"], "d_in": job.d_in, "n_features": job.n_features,
               "scale": job.scale, "steps": job.step, "activations": job.step * job.B, "mfu": mfu,
               "peak_gpu_mib": peak_gpu_mib(job.device), "seeds": per_seed,
               "history": job.history, "provenance": provenance(job.cfg, **job.info)}
    atomic_write_json(os.path.join(job.dir, "metrics.json"), stamp(metrics, "sae_metrics"))
    print(f"-> {job.dir}: " + " | ".join(f"s{s}: fvu {m['fvu']:.3f}, l0 {m['l0']:.1f}, dead {m['dead_frac']:.1%}, "
                                         f"ce recovered {m['ce_recovered']:.3f}" for s, m in per_seed.items()))
    return metrics


def finished_without_state(job):
    """Every seed's SAE file finished, on this model, with these settings (else one line naming the change),
    and metrics.json listing exactly them: the run is done, whatever became of its training state."""
    return outputs_current(job) and all(finished_seed_file(job, s) is not None for s in job.paths)


def finished_seed_file(job, s):
    """Seed s's SAE file, loaded, when it is finished and of this model and seed (else None); one line when it
    is damaged, or was trained with other settings."""
    p = job.paths[s]
    ck = load_checkpoint(p, f"SAE for '{job.name}'", sae_how(job.name, job.seeds, job.cfg), kind="sae")
    if not ck.get("finished") or ck.get("model_hash") != job.info["model_hash"] or ck.get("seed") != s:
        return None
    check_resume(ck["config"], job.cfg, RESUME_FREE | {"seeds"}, p)
    return ck


def seed_file_current(job, run):
    """A seed's SAE file is whole, finished, of this model and seed, with these settings, and holds the
    weights its training state folds to (not an earlier run's)."""
    try:
        ck = finished_seed_file(job, run["seed"])
    except (UserError, KeyError, TypeError, AttributeError):
        return False
    raw = fold_scale(run["sae"], job.scale).state_dict()
    return (ck is not None and ck["sae"].keys() == raw.keys()
            and all(torch.equal(ck["sae"][k], v.cpu()) for k, v in raw.items()))


def outputs_current(job):
    """metrics.json lists exactly this run's seeds, each with the hash its SAE file has now, and is shaped as
    write_metrics makes it (one the readers would refuse is not current: it is rewritten)."""
    path = os.path.join(job.dir, "metrics.json")
    try:
        rec = read_json(path)
    except (OSError, ValueError):
        return False
    if record_problem(rec, "sae_metrics"):
        return False
    seeds = rec["seeds"]
    return set(seeds) == {str(s) for s in job.seeds} and all(
        os.path.isfile(p) and seeds[str(s)].get("checkpoint_sha256") == sha256_file(p) for s, p in job.paths.items())


if __name__ == "__main__":
    cli(main)
