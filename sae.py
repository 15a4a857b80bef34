"""
Sparse autoencoders on each model's MLP hidden activations (model.mlp_acts, width d_mlp), trained
on that model's own data distribution, with honest metrics.

    python sae.py --model lua                  # out/sae_lua/sae_s0.pt, sae_s1.pt, metrics.json
    python sae.py --model base --arch topk --seeds 0,1,2
    python sae.py --model lua --resume         # continue exactly (a finished run: nothing to do)

Activations are harvested on the fly: random windows of the model's data (equal shares of its
domains, MODEL_DATA), tokens_per_seq random positions of each (position 0 skipped: it has no
context and is an outlier), into a shuffle buffer of buffer_batches batches that is refilled from
fresh random sequences whenever it drains. Buffer number c is a pure function of (data_seed, c),
so a resume rebuilds the buffer it stopped in and continues exactly, and every seed's SAE sees
the identical stream (the seeds differ only in their initialisation).

Architectures (inputs scaled by one scalar per model so that E||x|| = sqrt(d_in)):
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
lr_decay_frac. The training log's mse is per element in the scaled space (E||x||^2 = d_in, so it
reads like FVU); metrics.json has mse in raw units and mse_scaled. Evaluation (held-out val
windows, positions >= skip_first) runs the folded raw-space SAEs, i.e. exactly what is saved.
At save time the scale is folded into the weights (b_enc, b_dec divided by it), so the saved SAE
takes raw activations, keeps unit decoder rows, and gives features in raw units.
"""
import hashlib
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data as datalib
from common import (atomic_torch_save, atomic_write_json, default_preset, die, parse_config, pick_device,
                    provenance, require_positive, sha256_file)
from model import clean_key, load_checkpoint, load_model

# -----------------------------------------------------------------------------
# default config (paper preset; PRESETS below overrides)
config = dict(
    model="base",          # base | lua | tinystories | luastories: whose MLP activations, on its own data
    data_dir="data",       # made by data.py
    out_dir="out",         # models in out_dir/<model>/ckpt.pt; SAEs go to out_dir/sae_<model>/
    seeds=[0, 1],          # one SAE per seed, all fed the identical stream (a seed pair = the null baseline)
    resume=False,          # continue out_dir/sae_<model>/sae_s<seed>.pt exactly
    overwrite=False,       # start over even if checkpoints exist
    arch="relu",           # relu (L1 + resampling) | topk (TopK + AuxK)
    expansion=16,          # n_features = expansion * d_mlp (paper: 16 x 1024 = 16,384)
    k=32,                  # topk: active latents per token
    l1_coeff=3.0,          # relu: L1 weight. The soft threshold ~ l1/2 is compared with per-feature magnitudes
                           # ~ sqrt(d_in / L0), so equal L0/d_in needs l1 ~ sqrt(d_in): tiny's tuned 1.5 x 2
    l1_warmup_frac=0.05,   # relu: L1 weight ramps from 0 over the first 5% of steps (Anthropic Apr 2024)
    resample_every=12500,  # relu: every this many steps, re-initialise latents that did not fire since the last check
    resample_until=0.5,    # relu: ... only in the first half of training, so resampled latents can settle
    aux_k=0,               # topk: latents in the AuxK loss; 0 = d_in // 2 (Gao et al.)
    aux_coeff=1 / 32,      # topk: AuxK weight (Gao et al.)
    dead_window=10_000_000,  # a latent is dead after this many training activations without firing (Gao: 10M)
    lr=1e-4, beta1=0.9, beta2=0.9999,  # Adam (DESIGN.md)
    lr_decay_frac=0.2,     # lr decays linearly to 0 over the last 20% of steps
    seqs_per_batch=128,    # a batch = seqs_per_batch sequences x tokens_per_seq random positions (DESIGN.md: 128 x 24)
    tokens_per_seq=24,
    skip_first=1,          # never use positions < skip_first (position 0: no context, outlier norms)
    seq_len=0,             # tokens per harvested window; 0 = the model's block_size
    total_acts=200_000_000,  # training budget in activations (200M = 65,104 steps of 3072)
    buffer_batches=32,     # shuffle buffer size in batches (32 x 3072 activations from 4096 sequences)
    harvest_batch=64,      # sequences per model forward while harvesting
    data_seed=1234,        # the activation stream (shared by all seeds)
    eval_seqs=1024,        # held-out val windows (equal shares per domain); metrics use positions >= skip_first
    eval_batch=16,
    eval_interval=10000, log_interval=500, ckpt_interval=5000,
    stop_step=0,           # > 0: stop after this step as if interrupted (continue with --resume)
    device="auto",
)
PRESETS = {
    "paper": dict(),
    # tiny: 2048 features on d_mlp 256, ~1.5 min per model (both seeds) on 2 CPU cores
    # (lr and l1 tuned on the base model: lr 1e-3 -> 4e-3 took FVU 0.21 -> 0.17 at L0 ~50)
    "tiny": dict(expansion=8, l1_coeff=1.5, lr=4e-3, seqs_per_batch=64, total_acts=1_000_000,
                 resample_every=200, dead_window=200_000, buffer_batches=16, harvest_batch=128,
                 eval_seqs=192, eval_batch=32, eval_interval=250, log_interval=50, ckpt_interval=250),
}
MODEL_DATA = {"base": ["base"], "lua": ["base", "lua"], "tinystories": ["base", "tinystories"],
              "luastories": ["base", "lua", "tinystories"]}
# settings a resume may change; every other config key must equal the checkpoint's
RESUME_FREE = {"resume", "overwrite", "device", "eval_interval", "log_interval", "ckpt_interval", "stop_step",
               "harvest_batch", "eval_batch", "data_dir", "out_dir", "seeds", "preset"}


class SAE(nn.Module):
    """x (N, d_in) -> f = act((x - b_dec) @ W_enc + b_enc) (N, n_features) -> x_hat = f @ W_dec + b_dec.
    act: ReLU (arch 'relu') or ReLU of the k largest pre-activations, others 0 (arch 'topk')."""

    def __init__(self, d_in, n_features, arch="relu", k=0):
        super().__init__()
        if arch not in ("relu", "topk"):
            die(f"unknown --arch {arch!r}; use relu or topk")
        if arch == "topk" and not 0 < k <= n_features:
            die(f"--k {k} must be between 1 and n_features {n_features}")
        self.d_in, self.n_features, self.arch, self.k = d_in, n_features, arch, k
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_features))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, d_in))  # row i = feature i's direction
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def pre_acts(self, x):
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc  # (N, n_features)

    def activate(self, pre):
        if self.arch == "relu":
            return F.relu(pre)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))

    def encode(self, x):
        return self.activate(self.pre_acts(x))

    def decode(self, f):
        return f @ self.W_dec + self.b_dec

    def forward(self, x):
        f = self.encode(x)
        return self.decode(f), f


def sae_args(sae):
    return {"d_in": sae.d_in, "n_features": sae.n_features, "arch": sae.arch, "k": sae.k}


def init_sae(d_in, n_features, arch, k, seed, b_dec=None):
    """Random unit decoder rows (seeded), encoder = decoder transpose (Gao et al.; Anthropic Apr 2024),
    for relu scaled by 2 d_in / n_features: with random directions sum_i relu(<v, d_i>) d_i ~
    (n_features / 2 d_in) v, so the SAE starts near the identity instead of with L0 ~ n_features / 2
    and a reconstruction several times too large (tiny preset: FVU 0.13 vs 0.18 at equal L1)."""
    sae = SAE(d_in, n_features, arch, k)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(n_features, d_in, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T * (min(1.0, 2 * d_in / n_features) if arch == "relu" else 1.0))
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

def l0(f):
    """Mean number of active features per token; f (N, n_features)."""
    return (f > 0).sum(-1).float().mean().item()


def fvu_from_sums(sse, sum_x, sum_sq, n):
    """Fraction of variance unexplained over a whole set from running sums: total squared error over
    total squared deviation from the per-dimension mean. sum_x (d,), sum_sq = sum of all x^2."""
    total_var = float(sum_sq) - float((sum_x.double() ** 2).sum()) / n
    return float(sse) / max(total_var, 1e-30)


def fvu(x, x_hat):
    x, x_hat = x.detach().double(), x_hat.detach().double()
    return fvu_from_sums((x - x_hat).pow(2).sum(), x.sum(0), x.pow(2).sum(), len(x))


def ce_recovered(ce_clean, ce_spliced, ce_zero):
    """1 when splicing the reconstruction costs nothing, 0 when it is as bad as zero-ablating the MLP."""
    if abs(ce_zero - ce_clean) < 1e-12:  # the MLP does not matter to the loss: undefined
        return float("nan")
    return (ce_zero - ce_spliced) / (ce_zero - ce_clean)


def kl_div(logits_p, logits_q):
    """Per-token KL(p || q) from logits (..., vocab)."""
    lp, lq = F.log_softmax(logits_p.float(), -1), F.log_softmax(logits_q.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def dead_fraction(fire_counts):
    return (fire_counts == 0).float().mean().item()


def dense_fraction(fire_counts, n_tokens, threshold=0.1):
    return (fire_counts > threshold * n_tokens).float().mean().item()


def density_histogram(fire_counts, n_tokens, lo=-6.0, step=0.25):
    """Histogram of log10(firing frequency) of the features that fire at all (dead counted apart)."""
    dens = fire_counts[fire_counts > 0].double() / n_tokens
    edges = np.arange(lo, 0 + step / 2, step)
    counts, _ = np.histogram(np.log10(dens.cpu().numpy()).clip(lo, 0), bins=edges)
    return {"log10_edges": edges.round(4).tolist(), "counts": counts.tolist(), "dead": int((fire_counts == 0).sum())}


# -----------------------------------------------------------------------------
# training step pieces

def sae_loss(sae, x, l1_coeff=0.0, dead_mask=None, aux_k=0, aux_coeff=0.0):
    """x (N, d_in) in training (scaled) space -> (loss, parts, x_hat, f). MSE and L1 are means over
    tokens of sums over dimensions / features (never sums over tokens)."""
    pre = sae.pre_acts(x)                      # (N, F)
    f = sae.activate(pre)
    x_hat = sae.decode(f)
    mse = (x_hat - x).pow(2).sum(-1).mean()
    parts = {"mse": mse}
    loss = mse
    if sae.arch == "relu" and l1_coeff > 0:
        parts["l1"] = f.sum(-1).mean()         # = decoder-norm-weighted L1, the rows being unit norm
        loss = loss + l1_coeff * parts["l1"]
    if sae.arch == "topk" and aux_coeff > 0 and dead_mask is not None and bool(dead_mask.any()):
        # AuxK (Gao et al. 2024, A.2): the aux_k largest dead pre-activations reconstruct the residual
        kk = min(aux_k, int(dead_mask.sum()))
        top = pre.masked_fill(~dead_mask, float("-inf")).topk(kk, dim=-1)
        e_hat = torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values)) @ sae.W_dec
        e = (x - x_hat).detach()
        parts["aux"] = (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = loss + aux_coeff * parts["aux"]
    return loss, parts, x_hat, f


def normalize_decoder(sae):
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


def remove_parallel_grad(sae):
    """Keep the decoder on the unit sphere: drop each row gradient's component along the row."""
    if sae.W_dec.grad is not None:
        w, g = sae.W_dec.data, sae.W_dec.grad
        g.sub_((g * w).sum(-1, keepdim=True) * w)


def make_optimizer(sae, cfg):
    return torch.optim.Adam(sae.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]))


def train_step(sae, opt, x, lr, l1_coeff=0.0, dead_mask=None, aux_k=0, aux_coeff=0.0):
    """One Adam step on batch x (scaled space). Returns (loss, x_hat, f); does not step if the loss
    is not finite (the caller stops)."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss, _, x_hat, f = sae_loss(sae, x, l1_coeff, dead_mask, aux_k, aux_coeff)
    if not torch.isfinite(loss):
        return loss, x_hat, f
    opt.zero_grad(set_to_none=True)
    loss.backward()
    remove_parallel_grad(sae)
    opt.step()
    normalize_decoder(sae)
    return loss.detach(), x_hat.detach(), f.detach()


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
# data: the model's distribution, the shuffled activation stream, held-out windows

def model_domains(name):
    if name not in MODEL_DATA:
        die(f"unknown model {name!r}; choose one of: {', '.join(MODEL_DATA)}")
    return MODEL_DATA[name]


def load_domain_tokens(data_dir, domains, split, tok_hash, model_name, vocab_size):
    """Token arrays of the model's domains, after checking they were made with the model's tokenizer."""
    for d in domains:
        if not os.path.exists(os.path.join(data_dir, d, "meta.json")):
            die(f"no prepared data for '{d}' in {data_dir}/{d}; make it with: python data.py --domain {d} --data_dir {data_dir}")
    arrays = []
    for d in domains:
        meta = datalib.read_meta(data_dir, d)
        if meta.get("tokenizer_hash") != tok_hash:
            die(f"{data_dir}/{d} was prepared with another tokenizer ({meta.get('tokenizer_hash')}) than model "
                f"'{model_name}' ({tok_hash}); pass the --data_dir the model was trained on")
        if meta.get("vocab_size", 0) > vocab_size:
            die(f"{data_dir}/{d} has vocabulary {meta['vocab_size']} > the model's {vocab_size}; wrong --data_dir")
        arrays.append(datalib.load_tokens(data_dir, d, split))
    return arrays


def windows(arrays, starts_per_domain, seq_len):
    """(n, seq_len) int64 token windows: for each domain's array, one window per start."""
    rows = [np.asarray(a[s:s + seq_len], dtype=np.int64) for a, starts in zip(arrays, starts_per_domain) for s in starts]
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def harvest(model, arrays, chunk, cfg, device):
    """Shuffle buffer number `chunk`: buffer_batches x seqs_per_batch fresh random windows (domains in
    equal shares), tokens_per_seq random positions >= skip_first of each, all shuffled together.
    A pure function of (data_seed, chunk). Returns (N, d_mlp) float32 raw activations on device."""
    g = torch.Generator().manual_seed(cfg["data_seed"] * 1_000_003 + chunk)
    T, tps, skip = cfg["seq_len"], cfg["tokens_per_seq"], cfg["skip_first"]
    n_seq, n_dom = cfg["buffer_batches"] * cfg["seqs_per_batch"], len(arrays)
    u = torch.rand(n_seq, generator=g, dtype=torch.float64)
    pos = torch.rand(n_seq, T - skip, generator=g).argsort(dim=1)[:, :tps] + skip  # (n_seq, tps) distinct
    perm = torch.randperm(n_seq * tps, generator=g)
    dom = torch.arange(n_seq) % n_dom                                               # equal shares
    starts = [(u[dom == d] * (len(a) - T + 1)).long().tolist() for d, a in enumerate(arrays)]
    order = torch.cat([torch.nonzero(dom == d)[:, 0] for d in range(n_dom)])  # row of windows() -> sequence id
    idx = torch.empty(n_seq, T, dtype=torch.long)
    idx[order] = windows(arrays, starts, T)
    out = []
    for i in range(0, n_seq, cfg["harvest_batch"]):
        h = model.mlp_acts(idx[i:i + cfg["harvest_batch"]].to(device))  # (b, T, d_mlp)
        p = pos[i:i + cfg["harvest_batch"]].to(device)
        out.append(h.gather(1, p[:, :, None].expand(-1, -1, h.size(-1))).reshape(-1, h.size(-1)).float())
    return torch.cat(out)[perm.to(device)]


def eval_windows(arrays, n_seqs, seq_len):
    """Deterministic held-out windows of seq_len + 1 tokens, spread evenly over each domain's array."""
    n_dom = len(arrays)
    starts = []
    for d, a in enumerate(arrays):
        n = n_seqs // n_dom + (d < n_seqs % n_dom)
        if len(a) < seq_len + 1:
            die(f"a val split has {len(a)} tokens, fewer than one window of {seq_len + 1}; prepare more data")
        starts.append(np.linspace(0, len(a) - seq_len - 1, n).astype(np.int64).tolist())
    return windows(arrays, starts, seq_len + 1)


@torch.no_grad()
def evaluate(model, saes, wins, skip=1, batch=16, device="cpu"):
    """Metrics of raw-space SAEs on held-out windows (n, T+1), over positions >= skip: FVU, MSE, L0,
    dead/dense fractions and density histogram over all eval tokens, and the model's CE with the
    reconstruction spliced in at those positions vs clean and zero-ablated, KL to the clean model."""
    n_f = [s.n_features for s in saes]
    acc = [dict(sse=0.0, l0=0.0, fires=torch.zeros(n, dtype=torch.long, device=device), ce=0.0, kl=0.0) for n in n_f]
    sum_x, sum_sq, n_tok, ce_clean, ce_zero = 0.0, 0.0, 0, 0.0, 0.0
    for i in range(0, len(wins), batch):
        xy = wins[i:i + batch].to(device)
        inp, tgt = xy[:, :-1], xy[:, 1:].clone()
        tgt[:, :skip] = -1  # CE over the positions the SAE is applied to
        cap = []
        logits, loss = model(inp, tgt, mlp_fn=cap.append)  # append returns None: h is kept, not replaced
        h = cap[0]                                                   # (B, T, d_mlp)
        B, T, d = h.shape
        x = h[:, skip:].reshape(-1, d).float()                         # (B*(T-skip), d)
        n = len(x)
        n_tok += n
        sum_x = sum_x + x.double().sum(0)
        sum_sq += x.double().pow(2).sum().item()
        ce_clean += loss.item() * n
        zero = lambda h: torch.cat([h[:, :skip], torch.zeros_like(h[:, skip:])], 1)
        ce_zero += model(inp, tgt, mlp_fn=zero)[1].item() * n
        for sae, a in zip(saes, acc):
            x_hat, f = sae(x)
            a["sse"] += (x_hat - x).double().pow(2).sum().item()
            a["l0"] += (f > 0).sum().item()
            a["fires"] += (f > 0).sum(0)
            splice = lambda h: torch.cat([h[:, :skip], x_hat.view(B, T - skip, d).to(h.dtype)], 1)
            logits_s, loss_s = model(inp, tgt, mlp_fn=splice)
            a["ce"] += loss_s.item() * n
            a["kl"] += kl_div(logits[:, skip:], logits_s[:, skip:]).sum().item()
    out = []
    for a in acc:
        c, s, z = ce_clean / n_tok, a["ce"] / n_tok, ce_zero / n_tok
        out.append({"fvu": fvu_from_sums(a["sse"], sum_x, sum_sq, n_tok), "mse": a["sse"] / (n_tok * d),  # raw units
                    "l0": a["l0"] / n_tok, "dead_frac": dead_fraction(a["fires"]),
                    "dense_frac": dense_fraction(a["fires"], n_tok), "ce_clean": c, "ce_spliced": s,
                    "ce_zero_ablation": z, "ce_recovered": ce_recovered(c, s, z), "kl": a["kl"] / n_tok,
                    "eval_tokens": n_tok, "density_hist": density_histogram(a["fires"], n_tok)})
    return out


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


def load_sae(out_dir, model_name, seed=0, device="cpu"):
    """(SAE in eval mode on raw activations, its checkpoint dict without the training state)."""
    model_domains(model_name)
    path = sae_path(out_dir, model_name, seed)
    how = f"python sae.py --model {model_name}" + (f" --seeds {seed}" if seed not in (0, 1) else "")
    ckpt = load_checkpoint(path, f"SAE for '{model_name}'", how)
    if not isinstance(ckpt, dict) or "sae_args" not in ckpt:
        die(f"{path} is not an SAE checkpoint; remake it with: {how} --overwrite")
    if not ckpt.get("finished"):
        die(f"{path} is unfinished (step {ckpt.get('step')}/{ckpt.get('total_steps')}); finish it with: {how} --resume")
    ckpt.pop("train", None)
    a = ckpt["sae_args"]
    sae = SAE(a["d_in"], a["n_features"], a["arch"], a["k"])
    sae.load_state_dict(ckpt["sae"])
    return sae.to(device).eval(), ckpt


def check_sae_matches(sae_ckpt, model_ckpt, model_hash=None):
    """One-line errors when an SAE does not belong to a model checkpoint dict (model_hash: optional
    common.sha256_file of the model's file, compared too)."""
    name = sae_ckpt["model_name"]
    fix = f"retrain the SAE: python sae.py --model {model_ckpt.get('name', name)} --overwrite"
    d_in, d_mlp = sae_ckpt["sae_args"]["d_in"], model_ckpt["model_args"]["d_mlp"]
    if d_in != d_mlp:
        die(f"the SAE for '{name}' takes {d_in}-wide inputs but model '{model_ckpt.get('name')}' has d_mlp {d_mlp}; {fix}")
    if sae_ckpt["tokenizer_hash"] != model_ckpt["tokenizer_hash"]:
        die(f"the SAE for '{name}' was trained with tokenizer {sae_ckpt['tokenizer_hash']}, model "
            f"'{model_ckpt.get('name')}' uses {model_ckpt['tokenizer_hash']}; {fix}")
    if model_ckpt.get("name") != name:
        die(f"this SAE was trained on model '{name}', not '{model_ckpt.get('name')}'; load the SAE of '{model_ckpt.get('name')}'")
    if (model_hash is not None and model_hash != sae_ckpt["model_hash"]) or \
            model_fingerprint(model_ckpt) != sae_ckpt["model_fingerprint"]:
        die(f"the SAE for '{name}' was trained on another version of that model (its file hash then: "
            f"{sae_ckpt['model_hash']}); {fix}")


def save_sae(path, run, scale, info, cfg, step, total_steps, history, finished):
    """Raw-space SAE for users, training-space state for exact resumes; atomic."""
    sae = run["sae"]
    raw = fold_scale(sae, scale)
    ckpt = {"sae": {k: v.detach().cpu() for k, v in raw.state_dict().items()}, "sae_args": sae_args(sae),
            "seed": run["seed"], "step": step, "total_steps": total_steps, "finished": finished, "scale": scale,
            "config": cfg, "metrics": run.get("metrics", {}), **info,
            "provenance": provenance(cfg, **info),
            "train": {"sae": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
                      "optimizer": run["opt"].state_dict(), "last_fired": run["last_fired"].cpu(),
                      "n_resampled": run["n_resampled"], "history": history}}
    atomic_torch_save(ckpt, path)


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg = parse_config(dict(config), argv, PRESETS, default_preset())
    require_positive(cfg, ["seqs_per_batch", "tokens_per_seq", "total_acts", "buffer_batches", "harvest_batch",
                           "eval_seqs", "eval_batch", "eval_interval", "log_interval", "ckpt_interval", "expansion"])
    name = cfg["model"]
    domains = model_domains(name)
    seeds = list(dict.fromkeys(cfg["seeds"]))
    if not seeds:
        die("--seeds is empty; give e.g. --seeds 0,1")
    device = pick_device(cfg["device"])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # SAE metrics (FVU ~ 1e-2) want full fp32 matmuls

    model_path = os.path.join(cfg["out_dir"], name, "ckpt.pt")
    model, mckpt = load_model(cfg["out_dir"], name, device)
    for p in model.parameters():
        p.requires_grad_(False)
    tok_hash, margs = mckpt["tokenizer_hash"], model.args
    info = {"model_name": name, "model_hash": sha256_file(model_path), "model_fingerprint": model_fingerprint(mckpt),
            "tokenizer_hash": tok_hash, "domains": domains}
    train_arrays = load_domain_tokens(cfg["data_dir"], domains, "train", tok_hash, name, margs.vocab_size)
    val_arrays = load_domain_tokens(cfg["data_dir"], domains, "val", tok_hash, name, margs.vocab_size)
    info["data_meta_sha256"] = datalib.data_fingerprint(cfg["data_dir"], domains)
    cfg["seq_len"] = cfg["seq_len"] or margs.block_size
    T = cfg["seq_len"]
    if T > margs.block_size or not 0 < cfg["tokens_per_seq"] <= T - cfg["skip_first"]:
        die(f"need tokens_per_seq {cfg['tokens_per_seq']} <= seq_len {T} - skip_first {cfg['skip_first']}, seq_len <= block_size {margs.block_size}")
    for a in train_arrays:
        if len(a) < T + 1:
            die(f"a train split has {len(a)} tokens, fewer than one window of {T + 1}; prepare more data")
    d_in = margs.d_mlp
    n_features = cfg["expansion"] * d_in
    aux_k = cfg["aux_k"] or d_in // 2
    B = cfg["seqs_per_batch"] * cfg["tokens_per_seq"]
    total_steps = max(1, cfg["total_acts"] // B)
    nb = cfg["buffer_batches"]
    sae_dir = os.path.join(cfg["out_dir"], f"sae_{name}")
    paths = {s: sae_path(cfg["out_dir"], name, s) for s in seeds}

    print(f"preset {cfg['preset']}: SAE on '{name}' MLP activations (d_mlp {d_in}), data {'+'.join(domains)} "
          f"(equal shares) from {cfg['data_dir']}, device {device}")
    print(f"{cfg['arch']}: {n_features} features ({cfg['expansion']}x), " +
          (f"l1 {cfg['l1_coeff']:g} (warm-up {cfg['l1_warmup_frac']:.0%}), resample every {cfg['resample_every']} steps"
           if cfg["arch"] == "relu" else f"k {cfg['k']}, AuxK k {aux_k} x {cfg['aux_coeff']:.4g}") +
          f"; Adam lr {cfg['lr']:g} betas ({cfg['beta1']}, {cfg['beta2']}); seeds {','.join(map(str, seeds))}")
    print(f"stream: {cfg['seqs_per_batch']} seqs x {cfg['tokens_per_seq']} positions = {B} activations/step, "
          f"{total_steps} steps = {total_steps * B:,} activations, buffer {nb} batches; "
          f"eval {cfg['eval_seqs']} val windows x {T - cfg['skip_first']} positions")

    # -------------------------------------------------------------------------
    # fresh SAEs (scale and b_dec from the first buffer) or the checkpoints to resume
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not cfg["resume"] and not cfg["overwrite"]:
        die(f"{existing[0]} exists; add --resume to continue it or --overwrite to start over")
    runs, history, step, buf, buf_chunk = [], [], 0, None, -1
    if cfg["resume"] and existing and not cfg["overwrite"]:
        if len(existing) != len(paths):
            die(f"--resume needs a checkpoint for every seed; missing {[p for p in paths.values() if p not in existing][0]}"
                f" (train it alone with --seeds, or drop --resume and add --overwrite)")
        cks = {s: load_checkpoint(paths[s], "SAE checkpoint to resume") for s in seeds}
        for s, ck in cks.items():
            if "train" not in ck:
                die(f"{paths[s]} has no training state to resume; retrain with --overwrite")
            if ck["model_hash"] != info["model_hash"]:
                die(f"{paths[s]} was trained on another version of model '{name}'; retrain with --overwrite")
            diff = [k for k in cfg if k not in RESUME_FREE and ck["config"].get(k) != cfg[k]]
            if diff:
                die(f"--resume with other settings than {paths[s]}: --{diff[0]} was {ck['config'].get(diff[0])!r}, "
                    f"now {cfg[diff[0]]!r}; use the same settings or --overwrite")
        if len({ck["step"] for ck in cks.values()}) != 1:
            die(f"the seeds' checkpoints in {sae_dir} stopped at different steps; resume them one at a time with --seeds")
        if all(ck["finished"] for ck in cks.values()):
            print(f"{sae_dir}: finished at step {total_steps}; nothing to do (--overwrite to retrain)")
            return None
        for s, ck in cks.items():
            sae = SAE(**ck["sae_args"]).to(device)
            sae.load_state_dict(ck["train"]["sae"])
            opt = make_optimizer(sae, cfg)
            opt.load_state_dict(ck["train"]["optimizer"])
            runs.append({"seed": s, "sae": sae, "opt": opt, "last_fired": ck["train"]["last_fired"].to(device),
                         "n_resampled": ck["train"]["n_resampled"], "metrics": ck["metrics"]})
            scale, step, history = ck["scale"], ck["step"], ck["train"]["history"]
        del cks
        print(f"resuming {len(runs)} SAE(s) from step {step}/{total_steps}")
    else:
        buf, buf_chunk = harvest(model, train_arrays, 0, cfg, device), 0
        scale = math.sqrt(d_in) / buf.norm(dim=1).mean().item()  # E||x * scale|| = sqrt(d_in)
        b_dec = geometric_median(buf[:16384] * scale).float()
        for s in seeds:
            sae = init_sae(d_in, n_features, cfg["arch"], cfg["k"], s, b_dec).to(device)
            runs.append({"seed": s, "sae": sae, "opt": make_optimizer(sae, cfg), "n_resampled": 0,
                         "last_fired": torch.zeros(n_features, dtype=torch.long, device=device)})
        print(f"input scale {scale:.4g} (mean raw norm {math.sqrt(d_in) / scale:.4g}); b_dec = geometric median of "
              f"{min(len(buf), 16384)} activations, norm {b_dec.norm().item() / scale:.4g} raw")
    wins = eval_windows(val_arrays, cfg["eval_seqs"], T)

    def lr_at(i):  # constant, then linearly to 0 over the last lr_decay_frac of the steps
        return cfg["lr"] * min(1.0, (total_steps - i) / max(1.0, cfg["lr_decay_frac"] * total_steps))

    def run_eval(i):
        raws = [fold_scale(r["sae"], scale) for r in runs]
        for r, m in zip(runs, evaluate(model, raws, wins, cfg["skip_first"], cfg["eval_batch"], device)):
            r["metrics"] = {"step": i, **m, "mse_scaled": m["mse"] * scale ** 2}
        print(f"eval step {i}: " + " | ".join(
            f"s{r['seed']} fvu {r['metrics']['fvu']:.3f} l0 {r['metrics']['l0']:.1f} ce_rec {r['metrics']['ce_recovered']:.3f} "
            f"kl {r['metrics']['kl']:.3f} dead {r['metrics']['dead_frac']:.1%} dense {r['metrics']['dense_frac']:.1%}" for r in runs))
        history.append({"step": i, "eval": {r["seed"]: {k: v for k, v in r["metrics"].items() if k != "density_hist"} for r in runs}})

    def save_all(i, finished):
        for r in runs:
            if not all(torch.isfinite(p).all() for p in r["sae"].parameters()):
                die(f"seed {r['seed']}'s weights are not finite at step {i}; not saved (the last good checkpoint is kept)")
        for r in runs:
            save_sae(paths[r["seed"]], r, scale, info, cfg, i, total_steps, history, finished)

    # -------------------------------------------------------------------------
    # the training loop: one harvested batch feeds every seed's SAE
    stats = None
    t0, last_logged = time.time(), step
    while step < total_steps:
        chunk, off = divmod(step, nb)
        if chunk != buf_chunk:
            buf, buf_chunk = harvest(model, train_arrays, chunk, cfg, device), chunk
        x = buf[off * B:(off + 1) * B] * scale                              # (B, d_in) scaled
        if stats is None:
            stats = {"sum_x": torch.zeros(d_in, dtype=torch.float64, device=device), "sum_sq": 0.0, "n": 0,
                     "sse": [0.0] * len(runs), "l0": [0.0] * len(runs)}
        stats["sum_x"] += x.double().sum(0)
        stats["sum_sq"] += x.double().pow(2).sum()
        stats["n"] += B
        l1 = cfg["l1_coeff"] * min(1.0, (step + 1) / max(1.0, cfg["l1_warmup_frac"] * total_steps))
        for j, r in enumerate(runs):
            dead = (step - r["last_fired"]) * B >= cfg["dead_window"]
            loss, x_hat, f = train_step(r["sae"], r["opt"], x, lr_at(step), l1, dead, aux_k, cfg["aux_coeff"])
            if not torch.isfinite(loss):
                die(f"the loss of seed {r['seed']} became {loss.item()} at step {step}; stopped without saving, the last "
                    f"good checkpoint {paths[r['seed']]} (if any) is kept; retrain with a lower --lr and --overwrite")
            r["last_fired"][(f > 0).any(0)] = step + 1
            stats["sse"][j] += (x_hat - x).double().pow(2).sum()
            stats["l0"][j] += (f > 0).sum()
        step += 1
        if cfg["arch"] == "relu" and cfg["resample_every"] > 0 and step % cfg["resample_every"] == 0 \
                and step <= cfg["resample_until"] * total_steps:
            for r in runs:
                dead = r["last_fired"] <= step - cfg["resample_every"]
                g = torch.Generator().manual_seed(r["seed"] * 1_000_003 + step)
                n = resample_dead(r["sae"], r["opt"], dead, buf * scale, g)
                r["last_fired"][dead] = step
                r["n_resampled"] += n
                print(f"step {step}: seed {r['seed']}: resampled {n} dead latents ({n / n_features:.1%})")
        if step % cfg["log_interval"] == 0 or step == total_steps:
            rate = (step - last_logged) * B / max(time.time() - t0, 1e-9)
            logs = {r["seed"]: {"mse": float(stats["sse"][j]) / (stats["n"] * d_in),  # per element, scaled space
                                "fvu": fvu_from_sums(float(stats["sse"][j]), stats["sum_x"], float(stats["sum_sq"]), stats["n"]),
                                "l0": float(stats["l0"][j]) / stats["n"],
                                "dead": ((step - r["last_fired"]) * B >= cfg["dead_window"]).float().mean().item()}
                    for j, r in enumerate(runs)}
            print(f"step {step}/{total_steps}: " + " | ".join(
                f"s{s} mse {m['mse']:.4f}, fvu {m['fvu']:.3f}, l0 {m['l0']:.1f}, dead {m['dead']:.1%}" for s, m in logs.items())
                + (f", {rate / 1e6:.2f}M act/s" if rate >= 1e6 else f", {rate / 1e3:.1f}k act/s"))
            history.append({"step": step, "train": logs, "act_per_s": rate})
            stats, t0, last_logged = None, time.time(), step
        stopping = cfg["stop_step"] > 0 and step >= cfg["stop_step"] and step < total_steps
        if step < total_steps and (step % cfg["eval_interval"] == 0):
            run_eval(step)
        if step < total_steps and (step % cfg["ckpt_interval"] == 0 or stopping):
            save_all(step, finished=False)
        if stopping:
            print(f"stopping at step {step} (--stop_step); continue with --resume")
            return None
        if step % cfg["log_interval"] == 0:
            t0 = time.time()  # do not count evaluation and saving in the rate

    # -------------------------------------------------------------------------
    # final evaluation, checkpoints, metrics.json
    run_eval(step)
    save_all(step, finished=True)
    per_seed = {str(r["seed"]): {**r["metrics"], "n_resampled": r["n_resampled"], "checkpoint": paths[r["seed"]],
                                 "checkpoint_sha256": sha256_file(paths[r["seed"]])} for r in runs}
    metrics = {"model": name, "arch": cfg["arch"], "d_in": d_in, "n_features": n_features, "scale": scale,
               "steps": step, "activations": step * B, "seeds": per_seed, "history": history,
               "provenance": provenance(cfg, **info)}
    atomic_write_json(os.path.join(sae_dir, "metrics.json"), metrics)
    print(f"-> {sae_dir}: " + " | ".join(f"s{s}: fvu {m['fvu']:.3f}, l0 {m['l0']:.1f}, dead {m['dead_frac']:.1%}, "
                                         f"ce recovered {m['ce_recovered']:.3f}" for s, m in per_seed.items()))
    return metrics


if __name__ == "__main__":
    main()
