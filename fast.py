"""
fast.py: every speed-up of the study, beside the plain code it replaces (nanoGPT keeps flash
attention and torch.compile behind a flag the same way). model.py, train.py, merge.py, sae.py and
analyze.py read as the study; train.py, merge.py, sae.py, analyze.py (and diffing.py) each take a `fast`
setting (default true) and, where it is on, call the functions here instead of their plain twins
(model.py has no setting: its callers pass eval_loss fast.head_rows' `rows`). A learner can skip
this file: `--fast=false` runs the plain path everywhere (a resume keeps the setting it started
with), and tests/test_fast.py checks each entry against its twin.

Each entry: its plain twin; where it pays; what it gains (measured); how equal it is.

ChunkedHead, LMHeadCrossEntropy
    twin: Transformer.forward's F.cross_entropy
    pays: CPU float32 training: the head's (B T, vocab) logits are memory-bound
    gain: ~30% of a tiny training step (8 MB chunks stay in cache)
    equal: float32 rounding: the loss's sums run in another order
head_rows (eval_loss, sae.evaluate)
    twin: the LM head a batch at once
    pays: CPU evaluation
    gain: eval_loss 1.3-1.5x, sae.evaluate 1.5x (tiny)
    equal: float32 rounding
token_kv, trunk(kv=)
    twin: Transformer.trunk, every key and value projected
    pays: the harvest and the analysis (in one layer a key and value depend on the token alone)
    gain: harvest forward 42 -> 32 ms a batch of 128 tiny windows (one core)
    equal: bit for bit
trunk(positions=), mlp_activations
    twin: Transformer.mlp_acts, then the kept positions
    pays: the harvest keeps 24 of 255 positions
    gain: queries, attention output and MLP at 24 positions, not 255
    equal: float32 rounding (a masked attention, not a causal one)
sae_loss (dense), PreAt
    twin: sae.sae_loss through autograd
    pays: every dense SAE step
    gain: one of the step's six matmuls: b_dec's gradient as a matvec
    equal: float32 rounding (the loss's forward is the same; b_dec's gradient summed otherwise)
sae_loss (sparse), loss_for, SPARSE_BELOW
    twin: the dense step
    pays: CPU, active latents below 15% and below 320 a token (SPARSE_L0_BELOW: at the paper's width W_dec,
        64 MB, is gathered from memory, not cache, and the step pays below ~1.3%)
    gain: one core, tiny: 3.3x at 1.6% active, 1.5x at 10%, 1.2x at 16% (0.8x at 25%); 2 threads, paper
        shapes, 2 seeds: 1.8-2.6x at L0 49-50 (0.3%), 1.2x at 1%, 0.74x at 2%, 0.37x at 5%, 0.22x at 15%
    equal: float32 rounding
bag
    twin: torch's CSR products
    pays: the sparse step's four sparse-dense products
    gain: 2.4-3.9x (tiny's shapes)
    equal: float32 rounding
select_bf16
    twin: the float32 selection product
    pays: CPUs with native bf16 (AVX512-BF16, AMX)
    gain: 2.7x the selection product
    equal: values exact; latents within bf16 rounding of the threshold may differ
seed_pool
    twin: the seeds' steps one after another
    pays: CPU, several seeds and threads
    gain: 1.1-1.2x
    equal: the same operations, a step on one thread (bit for bit at the tests' shapes)
nonzero_flat
    twin: torch's nonzero
    pays: CPU
    gain: 3-4x: (1536, 2048) float32 at 1-2% active, 2.9 vs 12 ms
    equal: bit for bit
stable_order
    twin: torch.sort(stable=True)
    pays: CPU, keys below 2^15
    gain: 3x: 47k keys, 0.46 vs 1.25 ms
    equal: bit for bit
SeedSteps (sae.train_seeds)
    twin: train_seeds' loop: each seed's sae.train_step with sae.sae_loss, then sae.firing
    pays: wherever fast is on: it picks the step (pick_sae_step, loss_for) and the threads (seed_pool)
    gain, equal: those of the way it picks (the rows above and below)
SeedStack, StackPreAt, stack_loss (sae.py --sae_step stack; auto on CUDA: pick_sae_step)
    twin: each seed's own dense step (sae.train_step with sae_loss), one after another
    pays: CUDA: one product of each kind and one fused Adam for all the seeds (fewer, wider kernels)
    gain: GPU not yet measured (bench.py --only=plan times every way); CPU (tiny, 2 seeds): as fast as each
        seed's dense step (25-27k vs 27-28k act/s per SAE), slower than the sparse step there (auto: each)
    equal: float32 rounding: parameters and Adam state to 1e-6 after 5 steps, a whole tiny run to 1e-6
stack_bf16 (sae.py --sae_step stack_bf16; auto on CUDA)
    twin: the stack in float32 (TF32 on CUDA)
    pays: CUDA, whose bf16 matmuls have twice TF32's peak; CPUs with native bf16 (AVX512-BF16, AMX)
    gain: GPU not yet measured; CPU with AVX512-BF16: 1.8x the float32 stack's step (tiny and paper shapes),
        1.55x a whole paper-shape CPU run's wall time
    equal: bf16 rounding: the products' inputs and outputs (pre, f, x_hat) in bf16, float32 accumulation,
        weights, Adam and evaluation: the loss within 1%, gradients within 3%; at the paper's shapes the
        SAEs' FVU, L0, dead fraction and CE recovered within each seed pair's own spread (BENCHMARKS.md)
windows_at (sae.stream_windows(use_fast=True))
    twin: sae.stream_windows, a Python loop over the windows
    pays: the paper's buffers of 4,096 windows
    gain: 5.6x (1.0-10.4x) a buffer of 4,096 windows of 256 from a memmap (60 -> 11 ms)
    equal: bit for bit
Prefetch
    twin: a buffer's draws made when the buffer is needed
    pays: CUDA: the CPU draws the next buffer while the GPU trains on this one
    gain: not yet measured
    equal: bit for bit (the draws are a pure function of the buffer's number)
encode_features
    twin: sae.encode(x)[:, idx]
    pays: analyze.py's feature pages (a few dozen of n_features)
    gain: the encoder product of k columns, not n_features (not timed alone)
    equal: float32 rounding (a narrower product)
CorrAccumulator, update_pairs (co-active products, shift, entries made once a chunk)
    twin: analyze.CorrAccumulator: five float64 sums, dense x^T y
    pays: sparse SAE features: about L0^2 products a token, not Fx Fy
    gain: the quickstart's 9 pairs of 2048 x 2048, 62,611 tokens: 23 s vs 166 s
    equal: r to 1.6e-14 on the quickstart (float64 co-active sums); float32 dense blocks to ~2e-7
max_weight_matching (by components)
    twin: analyze.max_weight_matching: one Hungarian, dense candidates
    pays: many features: one component at a time, the dense matrix never made
    gain: 16,384 features, random candidates: 8.9 vs 14.0 s (quickstart: 3.0 vs 3.2 s)
    equal: the same summed weight; a component over HUNGARIAN_MAX rows is matched greedily (counted)

Figures: 2-core AMD EPYC VMs: the bf16 rows (select_bf16, stack_bf16, the paper-shape sparse step) on
one with AVX512-BF16 (2026-12-07, float32 peak ~190, bf16 ~420 GFLOP/s), the others on the dev VM
(AVX2, float32 peak 138-174 GFLOP/s); the correlation and matching rows measured 2026-12-06 under
load, the others in the sessions that made them (2026-11 and 12). End to end with fast on, the quickstart's checkpoints, SAEs, sweep and findings are bit for bit
those of the code before this file existed; with it off, each edge's counts within 13 of 2,048 features
(the SAEs' training compounds rounding; DESIGN.md, "Exactness"). BENCHMARKS.md has the study's times.

This file imports only torch, numpy and common: the model, the SAE and the activation functions
reach it as objects (their attributes and methods), never through an import of a project script.
"""
import concurrent.futures
import contextlib
import functools
import warnings
from types import SimpleNamespace

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
from common import check_torch, die

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

check_torch(torch.__version__)  # an older torch: one line here (common.TORCH_FLOOR)


# -----------------------------------------------------------------------------
# shared bit tricks (the SAE's sparse step, the correlation's entries)

def nonzero_flat(a, positive=False):
    """Row-major flat indices (int64) of a's nonzero entries (positive: of its entries > 0). On the CPU
    through numpy, whose comparison and nonzero are faster than torch's on one core at ~1-2% density (the
    sparse step's selection, CorrAccumulator's entries). A bf16 tensor
    (numpy has none) is read as int16, which is > 0 exactly when the value is (sign bit clear, not +0;
    NaN aside): positive only."""
    if a.device.type != "cpu":
        return ((a > 0) if positive else a).flatten().nonzero().squeeze(1)
    if a.dtype == torch.bfloat16:
        assert positive, "a bf16 tensor's nonzero entries are not its int16 view's (-0.0)"
        a = a.view(torch.int16)
    v = a.detach().numpy()
    return torch.from_numpy(np.flatnonzero(v > 0 if positive else v != 0))


def stable_order(keys, n):
    """The permutation that sorts keys (int64 in [0, n)) stably. On the CPU with n <= 2^15 through numpy's
    stable sort of int16, a radix sort, faster than torch's."""
    if keys.device.type == "cpu" and n <= 2 ** 15:
        return torch.from_numpy(np.argsort(keys.numpy().astype(np.int16), kind="stable"))
    return torch.sort(keys, stable=True).indices


# -----------------------------------------------------------------------------
# model: the LM head's loss in chunks; the harvest's forward at the kept positions only

def gather_positions(t, positions):
    """t (B, T, c) at positions (B, n) -> (B, n, c) (indexing: 2.5x faster than gather on the CPU)."""
    return t[torch.arange(t.size(0), device=t.device)[:, None], positions]


class LMHeadCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy of the LM head's logits h @ W.T, computed in chunks of rows so that
    the (N, vocab) float32 logits are never held at once: each chunk's logits, softmax and gradients
    (d loss / d logits = softmax - onehot, then d h and d W) are made in the forward while the chunk is
    in cache, and the backward only scales them. On a CPU the unfused head is memory-bound: at the
    tiny preset the (4096, 4096) logits are 64 MB written by the matmul, read and written by
    log_softmax, zero-filled and scattered by the loss backward, and read twice more by the softmax
    backward; chunks of 8 MB (512 rows at vocab 4096) stay in cache (the table above). At
    vocab 32k each chunk also re-reads the (vocab, d) gradient of W, so chunks stay >= 256 rows
    (as fast as the plain head there, without its GBs of logits). Same FLOPs as the unfused path;
    the result agrees with F.cross_entropy to float32 rounding (the sums run in another order).
    Targets equal to -1 are ignored."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk):
        # h (N, d) float32, weight (vocab, d), targets (N,) int64
        valid = targets != -1
        n_valid = valid.sum()
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        loss_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        weight_t = weight.t().contiguous()  # (d, vocab): the forward GEMM runs ~15% faster on this layout
        for start in range(0, h.shape[0], chunk):
            hc, tc, vc = h[start:start + chunk], targets[start:start + chunk], valid[start:start + chunk]
            logp = torch.log_softmax(hc @ weight_t, dim=-1)                 # (c, vocab)
            rows, tsafe = torch.arange(len(tc), device=h.device), tc.clamp(min=0)
            loss_sum -= torch.where(vc, logp[rows, tsafe], 0.0).sum()
            probs = logp.exp_()                                             # softmax, in place
            probs[rows, tsafe] -= vc.to(probs.dtype)                        # - onehot(target)
            probs.mul_(vc[:, None].to(probs.dtype))                         # ignored rows: no gradient
            torch.mm(probs, weight, out=grad_h[start:start + chunk])        # (c, d)
            grad_w.addmm_(probs.t(), hc)                                    # (vocab, d)
        ctx.save_for_backward(grad_h, grad_w, n_valid)
        return loss_sum / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_loss / n_valid
        return grad_h * scale, grad_w * scale, None, None


def head_rows(model, n):
    """Rows of LM-head logits to make at a time, of n (the chunked training loss, evaluation): on a CPU
    ~8 MB of float32 logits, which stay in cache while they are used (see LMHeadCrossEntropy), at least
    256 rows; on a GPU all n at once."""
    if model.lm_head.weight.device.type != "cpu":
        return n
    return max(256, (1 << 21) // model.args.vocab_size)


def fused_head(model, x):
    """Whether the loss takes the chunked LM head (CPU float32 training); CUDA keeps the plain head,
    which torch.compile fuses there."""
    return (model.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


class ChunkedHead(nn.Module):
    """model(idx, targets) whose loss, where fused_head says so, comes from LMHeadCrossEntropy: (None, loss),
    the (B, T, vocab) logits never held. train.py trains through it (DDP wraps it like the model); its
    parameters are the model's."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx, targets=None):
        model = self.model
        if targets is None or not fused_head(model, model.lm_head.weight):  # (the head's device and dtype are h's)
            return model(idx, targets)
        hf = model.final(*model.trunk(idx))                                 # (B, T, d_model)
        loss = LMHeadCrossEntropy.apply(hf.reshape(-1, hf.size(-1)), model.lm_head.weight, targets.reshape(-1),
                                        head_rows(model, targets.numel()))
        return None, loss


@torch.no_grad()
def token_kv(model):
    """Every token's key (before RoPE) and value, (vocab, 2 x n_kv_head x head_dim). In one layer the
    attention reads only the normed token embedding, so a position's key and value depend on its token
    alone: inference (trunk's kv) looks them up instead of projecting every position again, which
    the SAE harvest needs at every position while it keeps 24 of them. Bit for bit the same values."""
    h = model.attn_norm(model.tok_emb.weight)                           # (vocab, d_model)
    return torch.cat([model.attn.wk(h), model.attn.wv(h)], dim=-1)


def attention(attn, x, cos, sin, positions=None, kv=None):
    """model.Attention's output with positions (B, k): the outputs at those positions only
    (B, k, d_model), each query attending to the keys up to its own position (the SAE harvest keeps
    24 of 255 positions, so queries at the others would be thrown away). kv (inference): every
    position's keys and values (B, T, 2 x n_kv_head x head_dim) already made (token_kv), and x then
    only at the query positions ((B, k, d_model) with positions). Neither: attn(x, cos, sin)."""
    if positions is None and kv is None:
        return attn(x, cos, sin)
    B, T = (x.shape[0], kv.shape[1]) if kv is not None else x.shape[:2]
    if positions is None:
        q = attn.wq(x).view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)         # (B, H, T, hd)
    else:
        n = positions.shape[1]
        q = attn.wq(x if kv is not None else gather_positions(x, positions)).view(B, n, attn.n_head, attn.head_dim)
    k, v = kv.chunk(2, dim=-1) if kv is not None else (attn.wk(x), attn.wv(x))
    k = k.reshape(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2)       # (B, Hkv, T, hd)
    v = v.reshape(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2)
    if positions is None:
        q, mask = attn.rope(q, cos, sin), None
    else:
        # RoPE at each query's own position: (1, H, B*n, hd) against the angles of those B*n positions
        q = q.permute(2, 0, 1, 3).reshape(1, attn.n_head, B * n, attn.head_dim)
        q = attn.rope(q, cos[positions.reshape(-1)], sin[positions.reshape(-1)])
        q = q.reshape(attn.n_head, B, n, attn.head_dim).transpose(0, 1)                  # (B, H, n, hd)
        mask = torch.arange(T, device=x.device) <= positions[:, None, :, None]          # (B, 1, n, T)
    k = attn.rope(k, cos, sin)
    gqa = attn.n_kv_head != attn.n_head  # each kv head serves n_head/n_kv_head query heads
    if gqa and positions is None:
        rep = attn.n_head // attn.n_kv_head
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                       enable_gqa=gqa and positions is not None)  # (B, H, T or n, hd)
    return attn.wo(y.transpose(1, 2).reshape(B, q.size(2), -1))


def trunk(model, idx, positions=None, kv=None):
    """model.trunk(idx) with positions (B, n): only at those positions (B, n, ...). kv: token_kv()'s
    table, keys and values looked up per token (inference only: the table has no gradient; made under the
    autocast it is used in)."""
    B, T = idx.shape
    if T > model.args.block_size:
        die(f"sequence of {T} tokens is longer than the model's block_size {model.args.block_size}")
    assert kv is None or not torch.is_grad_enabled(), "token_kv's table is for inference (it has no gradient)"
    x = model.tok_emb(idx)                                              # (B, T, d_model)
    out = x if positions is None else gather_positions(x, positions)   # (B, T or n, d_model): where wanted
    if kv is None:  # keys and values projected from every position's normed embedding
        attn = attention(model.attn, model.attn_norm(x), model.rope_cos, model.rope_sin, positions)
    else:  # looked up by token; the norm and the queries only where the output is wanted
        attn = attention(model.attn, model.attn_norm(out), model.rope_cos, model.rope_sin, positions, kv[idx])
    x = out + attn
    return x, model.mlp.hidden(model.mlp_norm(x))                      # resid, (B, T or n, d_mlp)


def harvest_flops_per_window(model, T, k):
    """sae.harvest_flops_per_window for this file's harvest (mlp_acts with token_kv), keeping k of T
    positions: queries, attention, output projection and MLP at the k kept ones, keys and values looked up."""
    a = model.attn
    rest = a.wq.weight.numel() + a.wo.weight.numel() + sum(p.numel() for p in model.mlp.parameters())
    return k * (2 * rest + 4 * T * model.args.d_model)


@torch.no_grad()
def mlp_acts(model, idx, positions=None, kv=None):
    """model.mlp_acts(idx) with positions (B, n): only at those positions (B, n, d_mlp), the tokens after
    the last of them left out (positions on the CPU: their max read without waiting for the GPU). kv:
    token_kv()."""
    if positions is not None:
        idx = idx[:, :int(positions.max()) + 1]
        positions = positions.to(idx.device)
    return trunk(model, idx, positions, kv)[1]


@torch.no_grad()
def mlp_activations(model, windows, batch_size, device, skip_first=0, positions=None, bf16=False):
    """sae.mlp_activations (the same arguments and batches) with every position's key and value looked up
    (token_kv), and with positions, the model run at those positions only."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and str(device).startswith("cuda") \
        else contextlib.nullcontext()
    with autocast:
        kv = token_kv(model)  # every token's key and value, looked up
    for start in range(0, len(windows), batch_size):
        idx = torch.as_tensor(windows[start:start + batch_size]).to(device)
        if positions is None:
            with autocast:
                h = mlp_acts(model, idx, kv=kv)                                      # (b, T, d_mlp)
            yield start, h[:, skip_first:].float()
        else:
            with autocast:
                h = mlp_acts(model, idx, torch.as_tensor(positions[start:start + batch_size]), kv)
            yield start, h.float()                                                   # (b, k, d_mlp)


def windows_at(arrays, u, T, mix):
    """sae.stream_windows' windows (n_seq, T) from its draws u (n_seq,) float64 and the domains' arrays
    (a list, each at least T long), bit for bit its loop's, with each domain's windows gathered by one
    indexing of its array instead of a Python loop over the windows (paper shapes: 4,096 a buffer)."""
    n_seq = len(u)
    n_starts = torch.tensor([len(a) - T + 1 for a in arrays], dtype=torch.long)
    if mix == "equal":
        dom = torch.arange(n_seq) % len(arrays)
        start = (u * n_starts[dom]).long()                                   # int(): truncation, u >= 0
    else:  # a start among all the domains' starts, laid end to end
        ends = n_starts.cumsum(0)
        start = (u * int(ends[-1])).long()
        dom = torch.searchsorted(ends, start, right=True)
        start -= ends[dom] - n_starts[dom]
    idx = torch.empty(n_seq, T, dtype=torch.long)
    for d, a in enumerate(arrays):
        rows = (dom == d).nonzero()[:, 0]
        if len(rows):  # every window of a as a (len - T + 1, T) view; the drawn ones copied
            idx[rows] = torch.from_numpy(np.lib.stride_tricks.sliding_window_view(a, T)[start[rows].numpy()]
                                         .astype(np.int64))
    return idx


class Prefetch:
    """CUDA: the next shuffle buffer's draws (sae.harvest_draws: windows read from the token files,
    positions, shuffle; CPU work) made in a thread while the current buffer trains on the GPU, so the
    GPU does not wait for them. ahead(c) starts make(c) in the thread (up to the last buffer); get(c)
    gives make(c) (from the thread when it was started) and starts make(c + 1). The draws are a pure
    function of c, so the stream is the same bit for bit."""

    def __init__(self, make, last):
        self.make, self.last, self.pool, self.started = make, last, concurrent.futures.ThreadPoolExecutor(1), {}

    @staticmethod
    def pays(device):
        """On CUDA only: on a CPU the thread would take a core from the steps."""
        return str(device).startswith("cuda")

    @staticmethod
    def start(job, draws):
        """sae.py's loop start: a Prefetch of draws(arrays, c, cfg) (sae.harvest_draws) where it pays (else None),
        up to this run's last buffer (--stop_step's, if any), the buffer after the one in hand (job.buf_chunk;
        -1 on a resume, whose first buffer is made when needed) already started."""
        if not Prefetch.pays(job.device):
            return None
        end = min(job.total_steps, job.cfg["stop_step"] or job.total_steps)
        pre = Prefetch(lambda c: draws(job.train, c, job.cfg), (end - 1) // job.cfg["buffer_batches"])
        if job.buf_chunk >= 0:
            pre.ahead(job.buf_chunk + 1)
        return pre

    def ahead(self, c):
        self.started = {c: self.pool.submit(self.make, c)} if c <= self.last else {}

    def get(self, c):
        got = self.started.pop(c).result() if c in self.started else self.make(c)
        self.ahead(c + 1)
        return got


# -----------------------------------------------------------------------------
# SAE training: the dense step without autograd's b_dec product, the sparse step, seeds in threads

SPARSE_BELOW = {"cpu": 0.15}  # the sparse SAE step below this density of active latents, per device type where it
    # was measured to pay (header table). CUDA: not yet measured (bench.py --only=plan times the sparse step beside
    # the dense ones at the paper's shapes), so never there; the step itself runs on any device
SPARSE_L0_BELOW = {"cpu": 320}  # ... and below this many active latents per token: tiny's decoder (2 MB) stays in
    # cache and the sparse step pays up to ~20%, the paper's (64 MB) is gathered from memory and it pays below ~1.3%
    # (header table); 320 is 2% of 16,384 and leaves tiny's switch at 15% (307 of 2,048) as it was


def select_bf16(device, fast_math):
    """Whether the sparse step picks its active latents with a bf16 product: on a CPU that multiplies
    bf16 natively (AVX512-BF16 / AMX; elsewhere bf16 is emulated and slower than float32)."""
    return (device == "cpu" and fast_math and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def loss_for(device, density, bf16_select, n_features):
    """The loss function of a seed's next step (sae.train_step's loss_fn): the sparse step where it pays
    (the last step's density of active latents below SPARSE_BELOW and its active latents per token below
    SPARSE_L0_BELOW for this device). The choice is a function of the saved state, so a resume makes the
    same choices as an uninterrupted run."""
    kind = str(device).split(":")[0]
    sparse = density < SPARSE_BELOW.get(kind, 0.0) and density * n_features < SPARSE_L0_BELOW.get(kind, 0)
    return functools.partial(sae_loss, sparse=sparse, select_bf16=sparse and bf16_select)


def sae_loss(sae, x, hp, sparse=False, select_bf16=False):
    """sae.sae_loss (the same loss and gradients, to rounding): b_dec's gradient as a matvec (PreAt) and,
    with sparse, the decoder and every backward product restricted to the active latents (sparse_loss
    below); f is then a sparse CSR tensor without a gradient."""
    with torch.no_grad():
        xc = x.to(sae.W_enc.dtype) - sae.b_dec     # (N, d_in) without a graph: PreAt gives b_dec its gradient
    if sparse:
        return sparse_loss(sae, x, xc, hp, select_bf16)
    pre = PreAt.apply(sae.b_dec, sae.W_enc, sae.b_enc, xc, None, None)    # (N, F), = sae.pre_acts(x)
    f = sae.activate(pre)
    x_hat = sae.decode(f)
    return finish_loss(sae, x, pre, f, x_hat, lambda: f.sum(-1).mean(-1), hp)


def finish_loss(sae, x, pre, f, x_hat, l1, hp, aux_decode=None):
    """(loss, mse, f): the MSE plus the activation's penalty (l1(): the L1 term's value). A SeedStack's
    x_hat (S, N, d_in) gives one loss and MSE per seed (S,)."""
    mse = (x_hat - x).pow(2).sum(-1).mean(-1)
    loss = mse
    extra = penalty(sae, x, pre, l1, x_hat, hp, aux_decode)
    if extra is not None:
        weight, term = extra
        loss = loss + weight * term
    return loss, mse, f


def penalty(sae, x, pre, l1, x_hat, hp, aux_decode=None):
    """(weight, term) added to the MSE, or None: the activations' penalties (sae.ReLU / sae.TopK.penalty)
    from the pre-activations already made. relu: the L1 (l1() its value). topk: AuxK (sae.TopK.aux_hat,
    .aux_loss), on the CPU (where reading it back costs nothing) skipped at a step with no dead latent
    (it is then a constant without gradient: the loss differs from sae.sae_loss's by it, the step does
    not); aux_decode(rows, cols) (the sparse step): those entries decoded with their gradients, pre
    having none."""
    if sae.arch == "relu":
        return (hp.l1_coeff, l1()) if hp.l1_coeff > 0 else None
    dead_mask = hp.dead
    if hp.aux_coeff <= 0 or dead_mask is None or (not dead_mask.is_cuda and not bool(dead_mask.any())):
        return None
    if aux_decode is None:
        e_hat = sae.act.aux_hat(sae, pre, hp)
    else:  # the same top aux_k dead latents, decoded at those entries only
        e_hat = aux_decode(*top_support(pre.masked_fill(~dead_mask, float("-inf")), min(hp.aux_k, pre.size(-1))))
    return hp.aux_coeff, sae.act.aux_loss(e_hat, x, x_hat)


def support(act, pre):
    """(rows, cols) of the active entries of act(pre), row-major (pre float32, or the sparse step's bf16):
    an elementwise activation (relu) its entries > 0, TopK the k largest of each row that are > 0."""
    if not act.elementwise:
        return top_support(pre, act.k)
    flat = nonzero_flat(pre, positive=True)
    return flat // pre.shape[1], flat % pre.shape[1]


def top_support(pre, k):
    """(rows, cols), row-major, of the k largest entries of each row of pre that are > 0."""
    top = pre.topk(k, dim=-1)
    cols, order = top.indices.sort(dim=-1)                                  # CSR: ascending within a row
    keep = top.values.gather(-1, order) > 0
    rows = torch.arange(pre.size(0), device=pre.device)[:, None].expand_as(cols)
    return rows[keep], cols[keep]


def csr_firing(f):
    """sae.firing of the sparse step's f (a CSR tensor): (which latents fired (F,) bool, active entries)."""
    return torch.zeros(f.shape[1], dtype=torch.bool, device=f.device).index_fill_(0, f.col_indices(), True), \
        f.values().numel()


def seed_pool(device, n_seeds, threads):
    """CPU, several seeds and threads: each seed's step in its own thread on one core (a pool, or None). The
    steps' single-threaded parts (nonzero, indexing, the Python between the ops) then overlap. The harvest
    and the evaluation keep all the threads. Two SAE stages side by side with one thread each use 2
    cores better still (reproduce.sh on a CPU; common.stage_jobs)."""
    n = min(n_seeds, threads) if device == "cpu" else 1
    return concurrent.futures.ThreadPoolExecutor(n, initializer=torch.set_num_threads, initargs=(1,)) if n > 1 else None


# The sparse step (CPU, once few latents are active: ReLU after the L1 warm-up has L0 ~ 2-5% of the
# features, TopK k of them, AuxK's aux_k dead ones). The encoder's forward stays one dense matmul;
# the decoder f @ W_dec, its two backward products and the encoder's weight gradient touch only the
# active entries of f (sparse-dense products as weighted embedding bags, the gradient at the active
# entries as a sampled product: one dot product each). Same loss and gradients as the
# dense step, to rounding. select_bf16 (a CPU with bf16 matmuls): the dense product that only has
# to say WHICH latents are active runs in bf16 (faster there); the active values are then
# recomputed exactly in float32 at those entries, so only latents within bf16 rounding of the
# threshold (ReLU: pre ~ 0; TopK: the k-th value) can be picked differently.

def pointers(index, n):
    """CSR pointers (n + 1,) of sorted row (or column) indices: where each row's entries start."""
    ptr = torch.zeros(n + 1, dtype=torch.long, device=index.device)
    ptr[1:] = torch.bincount(index, minlength=n).cumsum(0)
    return ptr


def pattern(rows, cols, shape):
    """The entries (rows, cols), row-major, with CSR row pointers, and the same entries column-major
    (perm, their rows rows_t, col pointers) for the transposed products."""
    perm = stable_order(cols, shape[1])
    return SimpleNamespace(rows=rows, cols=cols, crow=pointers(rows, shape[0]), perm=perm, rows_t=rows[perm],
                           ccol=pointers(cols, shape[1]), shape=shape)


def csr(pat, vals):
    with warnings.catch_warnings():  # "sparse CSR support is in beta": what is used here is tested here
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(pat.crow, pat.cols, vals, pat.shape)


def bag(index, ptr, table, weights):
    """A sparse-dense product as a weighted embedding bag: row r of the result is
    sum_{e in ptr[r]:ptr[r+1]} weights[e] * table[index[e]]. CSR (ptr = crow, index = cols) @ table, or,
    column-major (ptr = ccol, index = rows_t, weights in perm's order), its transpose @ table (the
    embedding-bag kernel: faster on the CPU than torch's CSR products)."""
    # detached: the callers are autograd Functions with their own backward, and an input that requires grad
    # would take embedding_bag's slower path that prepares its backward
    return F.embedding_bag(index, table.detach(), ptr[:-1], mode="sum", per_sample_weights=weights.detach())


def sampled(pat, a, b):
    """(a @ b) at the entries of pat only (a sampled product: one dot product per entry), their values
    in pat's order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zeros = torch.zeros(len(pat.cols), dtype=a.dtype, device=a.device)
        return torch.sparse.sampled_addmm(csr(pat, zeros), a, b, beta=0.0).values()


def positive(sae, xc, rows, cols, shape):
    """The entries among (rows, cols) (row-major) whose exact float32 pre-activation xc @ W_enc + b_enc
    is > 0: (their pattern, those values). The values come from a product sampled at the entries only."""
    at = SimpleNamespace(crow=pointers(rows, shape[0]), cols=cols, shape=shape)
    vals = sampled(at, xc, sae.W_enc) + sae.b_enc[cols]
    keep = vals > 0
    if not bool(keep.all()):
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return pattern(rows, cols, shape), vals


class PreAt(torch.autograd.Function):
    """pre = (x - b_dec) @ W_enc + b_enc with a backward that gives b_dec its gradient as -W_enc @ db_enc,
    a matvec, where autograd would make xc's whole gradient G W_enc^T (N, F) x (F, d_in) only to sum it
    (one of the dense step's six matmuls); dW_enc = xc^T G, db_enc = column sums of G (xc = x - b_dec,
    computed without a graph, passed in). Dense (pat None): pre (N, F) is computed here, as
    SAE.pre_acts does. Sparse: only the entries of pat, their values computed without a graph and
    passed in, and the backward touches those entries only."""

    @staticmethod
    def forward(ctx, b_dec, W_enc, b_enc, xc, vals, pat):
        ctx.save_for_backward(W_enc, xc)
        ctx.pat = pat
        return torch.addmm(b_enc, xc, W_enc) if pat is None else vals.clone()

    @staticmethod
    def backward(ctx, grad):
        W_enc, xc = ctx.saved_tensors
        pat = ctx.pat
        if pat is None:
            grad_b_enc, grad_W_enc = grad.sum(0), xc.T @ grad                  # (F,), (d_in, F)
        else:
            grad_b_enc = torch.zeros(pat.shape[1], dtype=grad.dtype, device=grad.device).index_add_(0, pat.cols, grad)
            grad_W_enc = bag(pat.rows_t, pat.ccol, xc, grad[pat.perm]).T              # (F, d_in) -> (d_in, F)
        return -(W_enc @ grad_b_enc), grad_W_enc, grad_b_enc, None, None, None


class SparseDecode(torch.autograd.Function):
    """f @ W_dec for f given by its active values: dvals = (g W_dec^T) at the active entries
    (sampled product), dW_dec = f^T g."""

    @staticmethod
    def forward(ctx, vals, W_dec, pat):
        ctx.save_for_backward(vals, W_dec)
        ctx.pat = pat
        return bag(pat.cols, pat.crow, W_dec, vals)                          # (N, d_in)

    @staticmethod
    def backward(ctx, grad):
        vals, W_dec = ctx.saved_tensors
        pat = ctx.pat
        grad_vals = sampled(pat, grad, W_dec.T)                            # (g W_dec^T) at the active entries
        return grad_vals, bag(pat.rows_t, pat.ccol, grad, vals[pat.perm]), None


def sparse_loss(sae, x, xc, hp, select_bf16=False):
    with torch.no_grad():
        if select_bf16:  # which latents: bf16 product; their values: exact (see above)
            pre = (xc.bfloat16() @ sae.W_enc.bfloat16()).add_(sae.b_enc.bfloat16())    # (N, F) bf16
            rows, cols = support(sae.act, pre)
            pat, vals = positive(sae, xc, rows, cols, tuple(pre.shape))
        else:
            pre = torch.addmm(sae.b_enc, xc, sae.W_enc)       # (N, F); the bias in the GEMM: 3% a step
            rows, cols = support(sae.act, pre)
            pat, vals = pattern(rows, cols, tuple(pre.shape)), pre[rows, cols]  # f's active values (> 0)

    vals_g = PreAt.apply(sae.b_dec, sae.W_enc, sae.b_enc, xc, vals, pat)   # act = identity on them
    x_hat = SparseDecode.apply(vals_g, sae.W_dec, pat) + sae.b_dec

    def aux_decode(rows, cols):  # AuxK's dead latents: decoded with their gradients, like the active ones
        pat_a, vals_a = positive(sae, xc, rows, cols, tuple(pre.shape))
        return SparseDecode.apply(PreAt.apply(sae.b_dec, sae.W_enc, sae.b_enc, xc, vals_a, pat_a), sae.W_dec, pat_a)
    return finish_loss(sae, x, pre, csr(pat, vals), x_hat, lambda: vals_g.sum() / len(x), hp, aux_decode)


# -----------------------------------------------------------------------------
# SAE training on a GPU: every seed's step in one set of products (sae.py --sae_step stack, stack_bf16)

SAE_STEPS = ("auto", "each", "stack", "stack_bf16")


def pick_sae_step(choice, device, fast_math):
    """sae.py's sae_step: auto is stack_bf16 on CUDA (fast_math) or stack (no fast_math), each on a CPU
    (where the sparse step and the seeds' threads pay: SPARSE_BELOW, seed_pool)."""
    if choice != "auto":
        return choice
    return ("stack_bf16" if fast_math else "stack") if device.startswith("cuda") else "each"


class SeedStack(nn.Module):
    """The seeds' SAEs of one run as stacked parameters (S, ...) that one step trains: the encoder one
    batched product (S, N, d_in) x (S, d_in, F), the decoder another, one fused Adam over the four
    stacked tensors. Each seed's SAE parameters and Adam state become views of the stack (their .data
    and state entries point into it), so what sae.py does to a seed between steps (the log, evaluation,
    resampling, saving) reads and writes the stack, without copies. dtype: the products' (bfloat16: their
    inputs and outputs, pre, f and x_hat, rounded to bf16, float32 accumulation inside each product; the
    master weights, the gradients Adam takes, its state, the loss's sums and the evaluation stay float32).
    sae.train_step(stack, stack.opt, x, lr, hp, stack_loss) is its step, hp.dead (S, 1, F)."""

    def __init__(self, runs, dtype=torch.float32):
        super().__init__()
        saes, opts = [r["sae"] for r in runs], [r["opt"] for r in runs]
        self.act, self.arch, self.dtype = saes[0].act, saes[0].arch, dtype
        names = ("W_enc", "b_enc", "W_dec", "b_dec")
        for name in names:
            setattr(self, name, nn.Parameter(torch.stack([getattr(s, name).detach() for s in saes])))
        group = opts[0].param_groups[0]
        self.opt = torch.optim.Adam(self.parameters(), lr=group["lr"], betas=group["betas"], fused=True)
        for name in names:
            stacked, ps = getattr(self, name), [getattr(s, name) for s in saes]
            old = [o.state.get(p, {}) for o, p in zip(opts, ps)]   # Adam's state: a resumed run's, or none yet
            if any(old) and not all(torch.equal(o["step"], old[0]["step"]) for o in old):
                die("the seeds' optimizers are at different steps; they cannot train as one stack")
            step = old[0]["step"] if old[0] else torch.zeros((), dtype=torch.float32, device=stacked.device)
            state = {"step": step, **{k: torch.stack([o[k] for o in old]) if old[0] else torch.zeros_like(stacked)
                                      for k in ("exp_avg", "exp_avg_sq")}}
            self.opt.state[stacked] = state
            for j, (o, p) in enumerate(zip(opts, ps)):  # the seed's tensors: views of the stack's
                p.data = stacked.data[j]
                o.state[p] = {"step": step, "exp_avg": state["exp_avg"][j], "exp_avg_sq": state["exp_avg_sq"][j]}


class StackPreAt(torch.autograd.Function):
    """PreAt for a SeedStack: pre (S, N, F) = xc (S, N, d_in) @ W_enc (S, d_in, F) + b_enc, a batched
    product in xc's dtype (the weights and bias cast to it, pre in it), and the same backward: b_dec's gradient
    -W_enc @ db_enc (a batched matvec), dW_enc = xc^T G, db_enc = G summed over tokens (float32)."""

    @staticmethod
    def forward(ctx, b_dec, W_enc, b_enc, xc):
        w = W_enc.to(xc.dtype)
        ctx.save_for_backward(W_enc, xc)
        return torch.baddbmm(b_enc.to(xc.dtype)[:, None], xc, w)

    @staticmethod
    def backward(ctx, grad):
        W_enc, xc = ctx.saved_tensors
        grad_b_enc = grad.sum(1, dtype=torch.float32)                                  # (S, F)
        grad_W_enc = torch.bmm(xc.transpose(1, 2), grad.to(xc.dtype)).float()         # (S, d_in, F)
        return -torch.bmm(W_enc, grad_b_enc[..., None])[..., 0], grad_W_enc, grad_b_enc, None


def stack_loss(st, x, hp):
    """sae.sae_loss for a SeedStack st: x (N, d_in) shared by the seeds -> (loss (S,), mse (S,), f (S, N, F)),
    each seed's loss and gradients its own (the seeds' parameters never meet); the products in st.dtype."""
    with torch.no_grad():
        xc = (x[None] - st.b_dec[:, None]).to(st.dtype)           # (S, N, d_in), no graph: PreAt's b_dec gradient
    pre = StackPreAt.apply(st.b_dec, st.W_enc, st.b_enc, xc)       # (S, N, F)
    f = st.act(pre)
    x_hat = torch.bmm(f, st.W_dec.to(st.dtype)).float() + st.b_dec[:, None]      # (S, N, d_in)
    return finish_loss(st, x, pre, f, x_hat, lambda: f.sum(-1, dtype=torch.float32).mean(-1), hp)


class SeedSteps:
    """sae.train_seeds' fast twin of its plain loop (for each seed train_step(sae, opt, x, lr, hp), then
    firing(f)): every seed's step the way this device runs it fastest. way (pick_sae_step): "each" (each
    seed's own step, the sparse one where loss_for says it pays, in threads of one core on a CPU:
    seed_pool), or "stack" / "stack_bf16" (the seeds as one SeedStack, made by start() over a loop's runs).
    train_step and firing are sae.py's, passed in (this file imports no project script). A call returns per
    seed what the plain loop gives, (loss, mse, fired (F,) bool, active entries), and keeps each run's
    "density" (saved with it: the sparse switch of its next step, so a resume chooses as the run did)."""

    def __init__(self, choice, device, fast_math, n_seeds, threads, train_step, firing):
        self.way, self.device = pick_sae_step(choice, device, fast_math), device
        self.pool = seed_pool(device, n_seeds, threads) if self.way == "each" else None
        self.n_threads = min(n_seeds, threads)
        self.select_bf16 = select_bf16(device, fast_math)
        self.train_step, self.firing, self.stack = train_step, firing, None

    def describe(self):
        """sae.py's settings line: how the seeds step ("" for one seed after another)."""
        if self.way != "each":
            return f"the seeds' steps as one stack ({self.way})"
        return f"the seeds' steps in {self.n_threads} threads of one core each" if self.pool else ""

    def start(self, runs):
        """A loop's start, fresh or resumed: the stack over the runs' SAEs and Adam state (theirs become views)."""
        if self.way != "each":
            self.stack = SeedStack(runs, torch.bfloat16 if self.way == "stack_bf16" else torch.float32)

    def __call__(self, runs, x, lr, hps):
        if self.stack is not None:  # one step for all: (S,) losses and MSEs, (S, N, F) activations
            hp = SimpleNamespace(**{**vars(hps[0]), "dead": torch.stack([h.dead for h in hps])[:, None]})
            out = self.train_step(self.stack, self.stack.opt, x, lr, hp, stack_loss)
            return [self.keep(run, loss, mse, *self.firing(f), f.shape) for run, loss, mse, f in zip(runs, *out)]
        one = functools.partial(self.one, x=x, lr=lr)
        return list(self.pool.map(one, runs, hps) if self.pool else map(one, runs, hps))  # (list: raises here)

    def one(self, run, hp, x, lr):
        """One seed's step, the sparse one where loss_for says it pays (f is then a CSR tensor)."""
        loss_fn = loss_for(self.device, run["density"], self.select_bf16, run["sae"].n_features)
        loss, mse, f = self.train_step(run["sae"], run["opt"], x, lr, hp, loss_fn)
        fired, n_active = csr_firing(f) if f.layout == torch.sparse_csr else self.firing(f)
        return self.keep(run, loss, mse, fired, n_active, f.shape)

    def keep(self, run, loss, mse, fired, n_active, shape):
        """The run's density of active latents (N, F) = shape, read back where the device has a sparse switch
        (a CPU's, where that costs nothing), whichever way it stepped: a resume may change the way."""
        if str(self.device).split(":")[0] in SPARSE_BELOW:
            run["density"] = int(n_active) / (shape[0] * shape[1])
        return loss, mse, fired, n_active


def encode_features(sae, x, idx):
    """sae.encode(x)[:, idx] (N, k): with an elementwise activation from the k encoder columns alone
    (analyze.py's feature pages: a few dozen of n_features)."""
    if not sae.act.elementwise:
        return sae.encode(x)[:, idx]
    return sae.activate((x.to(sae.W_enc.dtype) - sae.b_dec) @ sae.W_enc[:, idx]
                        + sae.b_enc[idx])


# -----------------------------------------------------------------------------
# correlation: co-active products (analyze.py's streamed Pearson r)

# analyze.CorrAccumulator's twin: the same float64 sums, made with less work (co-active products) and
# float32 dense products after a per-feature shift; the same constructor, update and sums (r: analyze.pearson).

class CorrAccumulator:
    """Pearson r between every column of x (N, Fx) and every column of y (N, Fy), over chunks of rows.

    Running float64 sums of x, x^2, y, y^2 (column sums taken in float64: O(N F), cheap) and the
    (Fx, Fy) matrix x^T y (one product per chunk in mm_dtype, added into float64): memory O(Fx Fy)
    whatever the number of rows.
    Shift: r is shift-invariant, and sums of values near their mean do not cancel. Each feature is
    shifted by a stable estimate from the first `warmup` rows (held back until that many have arrived,
    stable_shift): 0 for a feature that is zero on at least half of the tokens, so a sparse feature stays
    sparse and is never shifted by one outlier (a shift by the first row's value put sparse features
    15-30 SD off and cost up to 7e-3 in float32 r); the bulk of its values for a dense one; and a
    constant feature (dead included) sums to exactly 0. Dense float32 products then agree with float64
    to ~2e-7 in r (measured on the quickstart's SAEs); the sparse path's products are float64.
    Sparse products (sparse=True): a chunk's x^T y over its co-active pairs only (coactive_add: about
    L0^2 products per token instead of Fx Fy; SAE features are ~1-3% active, and far sparser at the
    paper's 16,384 features), exact in float64; dense products are the reference the tests compare with."""

    def __init__(self, fx, fy, device="cpu", mm_dtype=torch.float32, sparse=True, warmup=1024):
        def zeros(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)
        self.n, self.mm_dtype, self.sparse, self.warmup = 0, mm_dtype, sparse, warmup
        self.cx = self.cy = None
        self.shift_x = self.shift_y = False
        self.pending = []                                                          # chunks held for the shift
        self.sx, self.sxx, self.sy, self.syy, self.sxy = zeros(fx), zeros(fx), zeros(fy), zeros(fy), zeros(fx, fy)

    @staticmethod
    def update_bytes(rows, fx, fy):
        """Peak bytes of one update of rows (analyze.memory_need; its twin: analyze.CorrAccumulator's): the
        shifted copies of x and y, a block of the float32 product with its float64 copy (12 x product_rows
        x Fy), and a block of co-active products (coactive_add, PAIR_ROWS)."""
        return 4 * rows * (fx + fy) + 12 * min(fx, product_rows(fy)) * fy + 3 * 16 * PAIR_ROWS * SLOT

    @torch.no_grad()
    def update(self, x, y, cache=None):
        """Add a chunk: x (N, Fx), y (N, Fy). cache: a dict shared by the accumulators of one chunk, so
        that a feature matrix in several pairs has its nonzero entries extracted once."""
        if self.cx is None:
            self.pending.append((x, y))
            if sum(len(a) for a, _ in self.pending) < self.warmup:
                return
            self._start()
            return
        self._add(x, y, cache)

    def _start(self):
        """Fix the per-feature shift from the first `warmup` rows held back, then add them all."""
        join = lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts)  # noqa: E731
        x = join([a for a, _ in self.pending]).to(self.mm_dtype)
        y = join([b for _, b in self.pending]).to(self.mm_dtype)
        self.cx, self.cy, self.pending = stable_shift(x[:self.warmup]), stable_shift(y[:self.warmup]), []
        self.shift_x, self.shift_y = bool(self.cx.any()), bool(self.cy.any())
        self._add(x, y)

    def _add(self, x, y, cache=None):
        key_x, key_y = (id(x), True, self.mm_dtype), (id(y), False, self.mm_dtype)   # within one chunk
        x, y = x.to(self.mm_dtype), y.to(self.mm_dtype)
        xs = x - self.cx if self.shift_x else x                                  # (N, Fx): most shifts are 0
        ys = y - self.cy if self.shift_y else y                                  # (N, Fy)
        self.n += x.shape[0]
        if self.sparse:
            cache = {} if cache is None else cache

            def of(key, a, shifted, make):  # made once per chunk and matrix (unshifted ones are shared by pairs)
                if shifted:
                    return make(a)
                if key not in cache:
                    cache[key] = make(a)
                return cache[key]
            # co-active pairs estimated from the first rows' active counts, so that the entries (~32 bytes
            # per active value: GBs for a dense chunk) are only extracted when the sparse path is taken;
            # the choice only changes the speed, both paths are exact
            per_token = lambda a: (a[:PAIR_SAMPLE] != 0).sum(1).double()                           # noqa: E731
            n_pairs = float((of(key_x + ("n",), xs, self.shift_x, per_token)
                             * of(key_y + ("n",), ys, self.shift_y, per_token)).mean()) * len(xs)
            if n_pairs * PAIR_COST.get(xs.device.type, 30) < xs.shape[0] * xs.shape[1] * ys.shape[1]:
                ex = of(key_x, xs, self.shift_x, lambda a: entries(a, by_feature=True))
                ey = of(key_y, ys, self.shift_y, entries)
                for total, square, (_, feat, val) in ((self.sx, self.sxx, ex), (self.sy, self.syy, ey)):
                    total.index_add_(0, feat, val)                                # exact float64 sums
                    square.index_add_(0, feat, val * val)
                coactive_add(self.sxy, ex, ey, len(xs))
                return
        f64 = torch.float64
        self.sx += xs.sum(0, dtype=f64)
        self.sxx += (xs * xs).sum(0, dtype=f64)
        self.sy += ys.sum(0, dtype=f64)
        self.syy += (ys * ys).sum(0, dtype=f64)
        rows = product_rows(ys.shape[1])
        for i in range(0, xs.shape[1], rows):  # x^T y a block of rows at a time: adding float32 into float64
            self.sxy[i:i + rows].add_(xs[:, i:i + rows].T @ ys)                   # makes a float64 copy of it

    def sums(self):
        """analyze.CorrAccumulator.sums: (n, the shifted sums of x, x^2, y, y^2, x^T y), for analyze.pearson
        (r is shift-invariant); the chunks still held back for the shift are added first."""
        if self.pending:
            self._start()
        return self.n, self.sx, self.sxx, self.sy, self.syy, self.sxy


def update_pairs(acc, pairs, feats):
    """analyze.stream's update of every pair ({name: CorrAccumulator}, [(name, key_x, key_y)]) with this
    chunk's features ({key: (N, F)}), one entries cache shared by the pairs: a feature matrix in several
    pairs has its nonzero entries extracted once."""
    cache = {}
    for n, a, b in pairs:
        acc[n].update(feats[a], feats[b], cache)


PAIR_COST = {"cpu": 30, "cuda": 20_000}  # a co-active pair costs about this many dense multiply-adds (scattered
    # writes). CPU: measured. CUDA: measured on an H200 (2026-12-04, paper preset, 16,384 x 16,384 pairs, L0 ~170-250
    # a side): the sparse path added ~0.9G co-active pairs/s, the dense float32 product ~22T multiply-adds/s (9 pairs
    # in one pass: 1,900 vs 9,100 tok/s), i.e. ~25,000 a pair; at a trained SAE's L0 of ~30 sparse still pays
PAIR_SAMPLE = 512  # rows whose active counts estimate a chunk's co-active pairs (sparse or dense path)
PRODUCT_BYTES = 64 << 20  # the dense path's x^T y in blocks of rows of this many float32 bytes: the block and its
                          # float64 copy (made by the float64 += float32 add) instead of 12 Fx Fy bytes at once
                          # (3.2 GB at 16,384 x 16,384); the CPU paper smoke's analysis peak 8.2 -> 6.5 GB (now
                          # classification's)
SLOT = 8         # y's active features per token are laid out in slots of this width (measured best of 4-32 at L0 25-40)
PAIR_ROWS = 1 << 19   # at most this many (x entry, slot) rows at once: 2^19 x SLOT pairs, 64 MB of indices and values


def product_rows(fy):
    """Rows of x^T y (of width fy) made and added at a time on the dense path (PRODUCT_BYTES)."""
    return max(1, PRODUCT_BYTES // (4 * fy))


def stable_shift(a):
    """Per-column shift (F,) from rows a (n, F): 0 for a column that is zero on at least half of the rows
    (a sparse feature: it stays sparse, and one outlier cannot move it), else the column's median (the
    bulk of a dense one's values). Medians are taken only of the dense columns: cheap."""
    shift = torch.zeros(a.shape[1], dtype=a.dtype, device=a.device)
    dense = ((a != 0).sum(0) * 2 > len(a)).nonzero()[:, 0]
    if len(dense):
        shift[dense] = a[:, dense].median(0).values
    return shift


def entries(a, by_feature=False):
    """The nonzero entries of a chunk a (n, F): (token, feature, float64 value), ordered by token then
    feature, or by feature then token (a stable sort of the few entries, not a transposed copy of a).
    index_select rather than a[index]: several times faster on the CPU."""
    flat = nonzero_flat(a)                                                     # row-major: by token
    if by_feature:
        flat = torch.index_select(flat, 0, stable_order(flat % a.shape[1], a.shape[1]))
    return flat // a.shape[1], flat % a.shape[1], torch.index_select(a.reshape(-1), 0, flat).double()


def coactive_add(out, x_entries, y_entries, n):
    """out (Fx, Fy) float64 += x^T y over the co-active entries only (x by feature, y by token, see
    entries()): for every token, every active x feature i times every active y feature j, added at
    (i, j). The work is the sum over tokens of |active x| |active y| (about L0^2 per token) instead of
    Fx Fy per token. The pairs are laid out x feature by x feature, so the writes stay within one row
    of out at a time; each token's active y features sit in slots of SLOT (padding adds zeros).
    Products in float64: exact."""
    take, fy = torch.index_select, out.shape[1]
    x_tok, x_feat, x_val = x_entries
    y_tok, y_feat, y_val = y_entries
    dev = out.device
    per_tok = torch.bincount(y_tok, minlength=n)
    n_slots = (per_tok + SLOT - 1) // SLOT
    slot0 = torch.cumsum(n_slots, 0) - n_slots                                  # first slot of each token
    within = torch.arange(len(y_tok), device=dev) - take(torch.cumsum(per_tok, 0) - per_tok, 0, y_tok)
    cell = take(slot0, 0, y_tok) * SLOT + within
    total = int(n_slots.sum()) * SLOT
    slot_feat = torch.zeros(total, dtype=torch.long, device=dev).index_copy_(0, cell, y_feat).view(-1, SLOT)
    slot_val = torch.zeros(total, dtype=torch.float64, device=dev).index_copy_(0, cell, y_val).view(-1, SLOT)
    reps = take(n_slots, 0, x_tok)                                               # slots each x entry meets
    step = max(1, PAIR_ROWS // max(int(reps.max()) if len(reps) else 1, 1))      # x entries per block: bounded memory
    for lo in range(0, len(x_tok), step):
        part = reps[lo:lo + step]
        entry = torch.repeat_interleave(part)                                    # (rows,) its x entry in the block
        slot = take(take(slot0, 0, x_tok[lo:lo + step]) - (torch.cumsum(part, 0) - part), 0, entry)
        slot += torch.arange(len(entry), device=dev)
        flat = take(slot_feat, 0, slot).add_(take(x_feat[lo:lo + step] * fy, 0, entry)[:, None])  # (rows, SLOT)
        vals = take(slot_val, 0, slot).mul_(take(x_val[lo:lo + step], 0, entry)[:, None])
        out.view(-1).index_add_(0, flat.view(-1), vals.view(-1))


# -----------------------------------------------------------------------------
# matching: the maximum-weight one-to-one matching by connected components

def components(pairs, n_rows):
    """Connected components of the bipartite graph of candidate pairs (P, 2): a component label per pair."""
    parent = np.arange(n_rows + int(pairs[:, 1].max(initial=-1)) + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for i, j in pairs:
        ra, rb = find(int(i)), find(n_rows + int(j))
        if ra != rb:
            parent[ra] = rb
    return np.array([find(int(i)) for i in pairs[:, 0]], dtype=np.int64)


HUNGARIAN_MAX = 2000   # a larger connected component is matched greedily (and counted as such)


def max_weight_matching(pairs, weights, n_rows, solve, greedy):
    """One-to-one matching of candidate pairs (P, 2) that maximises the summed weight (P,), the Hungarian
    method on each connected component of the candidate graph (pairs that are not candidates weigh 0 and
    are never matched). Returns (pairs (K, 2), weights (K,), number of components matched greedily).
    analyze.max_weight_matching's twin; solve is analyze.linear_sum_assignment and greedy analyze.greedy_matching
    (passed in: this file imports no project script)."""
    pairs, weights = np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(weights, dtype=np.float64)
    if not len(pairs):
        return pairs, weights, 0
    label = components(pairs, n_rows)
    keep, n_greedy = [], 0
    for comp in np.unique(label):
        idx = np.nonzero(label == comp)[0]
        rows, r_inv = np.unique(pairs[idx, 0], return_inverse=True)
        cols, c_inv = np.unique(pairs[idx, 1], return_inverse=True)
        if len(idx) == 1 or min(len(rows), len(cols)) == 1:
            keep.append(idx[np.argmax(weights[idx])])          # a star: its heaviest pair
            continue
        if min(len(rows), len(cols)) > HUNGARIAN_MAX:
            n_greedy += 1
            got, _ = greedy(pairs[idx], weights[idx])
            lookup = {(int(a), int(b)): k for k, (a, b) in zip(idx, pairs[idx])}
            keep += [lookup[(int(a), int(b))] for a, b in got]
            continue
        w = np.zeros((len(rows), len(cols)))
        w[r_inv, c_inv] = weights[idx]
        at = np.full(w.shape, -1, dtype=np.int64)
        at[r_inv, c_inv] = idx
        ri, ci = solve(-w)
        keep += [int(at[a, b]) for a, b in zip(ri, ci) if at[a, b] >= 0]
    keep = np.asarray(sorted(keep, key=lambda k: -weights[k]), dtype=np.int64)
    return pairs[keep], weights[keep], n_greedy
