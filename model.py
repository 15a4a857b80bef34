"""
The one-layer decoder of the study, Mistral-style (DESIGN.md): token embedding, RMSNorm,
causal self-attention with RoPE and grouped-query attention, SwiGLU MLP, final RMSNorm and
an untied LM head. No biases, no dropout.

The SAEs live on the MLP hidden activation h = act(gate(x)) * up(x) (width d_mlp), the input
of the down projection. trunk() returns h with the residual stream before the MLP's write, and
head(resid, h') gives the logits with any h' in its place (splice in an SAE reconstruction, or
zero-ablate, for CE-loss metrics). mlp_acts() stops after the MLP: harvesting activations
then skips the LM head, which dominates the compute at a 32k vocabulary.

Also here, because every stage needs them: building a model from a checkpoint, the
evaluation loss over a token file, and the FLOP count for MFU.
"""
import contextlib
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import atomic_torch_save, die
from data import sample_windows


@dataclass
class ModelArgs:
    vocab_size: int = 32000
    block_size: int = 256      # context length (tokens)
    d_model: int = 512
    n_head: int = 16           # query heads
    n_kv_head: int = 8         # key/value heads (grouped-query attention); n_head % n_kv_head == 0
    d_mlp: int = 1024          # MLP hidden width = SAE input width
    mlp: str = "swiglu"        # swiglu (Mistral) | gelu | relu (plain 2-layer MLP, Anthropic's one-layer setup)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalise in float32 (as Mistral does), scale in the input dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_cache(block_size, head_dim, theta):
    """cos/sin tables (T, head_dim/2) for rotary embeddings on interleaved pairs."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(block_size, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, hd/2)
    return freqs.cos(), freqs.sin()


def apply_rope(x, cos, sin):
    # x: (B, H, T, hd); rotate each (even, odd) pair by position-dependent angle.
    # HF's Mistral rotates the two halves instead; the two are a fixed permutation of
    # head dimensions apart, equivalent for a model trained from scratch.
    T = x.size(2)
    xf = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, H, T, hd/2, 2)
    x1, x2 = xf[..., 0], xf[..., 1]
    c, s = cos[:T], sin[:T]                        # (T, hd/2), broadcast over B, H
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        assert args.d_model % args.n_head == 0 and args.n_head % args.n_kv_head == 0
        self.n_head, self.n_kv_head = args.n_head, args.n_kv_head
        self.head_dim = args.d_model // args.n_head
        self.wq = nn.Linear(args.d_model, args.n_head * self.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, args.n_kv_head * self.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, args.n_kv_head * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_head * self.head_dim, args.d_model, bias=False)

    def forward(self, x, cos, sin, positions=None, kv=None):
        """x (B, T, d_model) -> (B, T, d_model). With positions (B, k): the outputs at those positions only
        (B, k, d_model), each query attending to the keys up to its own position (the SAE harvest keeps
        24 of 255 positions, so queries at the others would be thrown away). kv (inference): every
        position's keys and values (B, T, 2 x n_kv_head x head_dim) already made (Transformer.token_kv),
        and x then only at the query positions ((B, k, d_model) with positions)."""
        B, T = (x.shape[0], kv.shape[1]) if kv is not None else x.shape[:2]
        # q, k, v in this order: autograd sums x's gradient in the reverse order, so the order is part of
        # the run's exact numerics (and of bit-identical resumes and reproductions)
        if positions is None:
            q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)         # (B, H, T, hd)
        else:
            n = positions.shape[1]
            q = self.wq(x if kv is not None else gather_positions(x, positions)).view(B, n, self.n_head, self.head_dim)
        k, v = kv.chunk(2, dim=-1) if kv is not None else (self.wk(x), self.wv(x))
        k = k.reshape(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)       # (B, Hkv, T, hd)
        v = v.reshape(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if positions is None:
            q, mask = apply_rope(q, cos, sin), None
        else:
            # RoPE at each query's own position: (1, H, B*n, hd) against the angles of those B*n positions
            q = q.permute(2, 0, 1, 3).reshape(1, self.n_head, B * n, self.head_dim)
            q = apply_rope(q, cos[positions.reshape(-1)], sin[positions.reshape(-1)])
            q = q.reshape(self.n_head, B, n, self.head_dim).transpose(0, 1)                  # (B, H, n, hd)
            mask = torch.arange(T, device=x.device) <= positions[:, None, :, None]          # (B, 1, n, T)
        k = apply_rope(k, cos, sin)
        gqa = self.n_kv_head != self.n_head  # each kv head serves n_head/n_kv_head query heads
        if gqa and positions is None:
            # training: the kv heads repeated, whose backward sums the gradients in the order of the
            # runs so far (enable_gqa's differs in the last bits); the same forward values either way
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           enable_gqa=gqa and positions is not None)  # (B, H, T or n, hd)
        return self.wo(y.transpose(1, 2).reshape(B, q.size(2), -1))


def gather_positions(t, positions):
    """t (B, T, c) at positions (B, n) -> (B, n, c) (indexing: 2.5x faster than gather on the CPU)."""
    return t[torch.arange(t.size(0), device=t.device)[:, None], positions]


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.kind = args.mlp
        if args.mlp == "swiglu":
            self.gate = nn.Linear(args.d_model, args.d_mlp, bias=False)
        elif args.mlp not in ("gelu", "relu"):
            die(f"unknown mlp {args.mlp!r}; use swiglu, gelu or relu")
        self.up = nn.Linear(args.d_model, args.d_mlp, bias=False)
        self.down = nn.Linear(args.d_mlp, args.d_model, bias=False)  # W_out: the SAE's decoder directions map through it

    def hidden(self, x):
        """The activation the SAEs are trained on: (B, T, d_mlp)."""
        if self.kind == "swiglu":
            return F.silu(self.gate(x)) * self.up(x)
        return F.gelu(self.up(x)) if self.kind == "gelu" else F.relu(self.up(x))


class LMHeadCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy of the LM head's logits h @ W.T, computed in chunks of rows so that
    the (N, vocab) float32 logits are never held at once: each chunk's logits, softmax and gradients
    (d loss / d logits = softmax - onehot, then d h and d W) are made in the forward while the chunk is
    in cache, and the backward only scales them. On a CPU the unfused head is memory-bound: at the
    tiny preset the (4096, 4096) logits are 64 MB written by the matmul, read and written by
    log_softmax, zero-filled and scattered by the loss backward, and read twice more by the softmax
    backward; chunks of 8 MB (512 rows at vocab 4096) cut the whole step's time by ~30%. At
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


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_emb = nn.Embedding(args.vocab_size, args.d_model)
        self.attn_norm = RMSNorm(args.d_model, args.norm_eps)
        self.attn = Attention(args)
        self.mlp_norm = RMSNorm(args.d_model, args.norm_eps)
        self.mlp = MLP(args)
        self.norm_f = RMSNorm(args.d_model, args.norm_eps)
        self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)  # untied from tok_emb
        cos, sin = rope_cache(args.block_size, args.d_model // args.n_head, args.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual-writing projections down
        for lin in (self.attn.wo, self.mlp.down):
            nn.init.normal_(lin.weight, mean=0.0, std=0.02 / math.sqrt(2))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def trunk(self, idx, positions=None, kv=None):
        """idx (B, T) -> (the residual stream before the MLP's output is added (B, T or n, d_model), the
        MLP hidden activation (B, T or n, d_mlp)); with positions (B, n), only at those positions.
        kv: token_kv()'s table, keys and values looked up per token (inference only: the table has no
        gradient; made under the autocast it is used in)."""
        B, T = idx.shape
        if T > self.args.block_size:
            die(f"sequence of {T} tokens is longer than the model's block_size {self.args.block_size}")
        assert kv is None or not torch.is_grad_enabled(), "token_kv's table is for inference (it has no gradient)"
        x = self.tok_emb(idx)                                               # (B, T, d_model)
        out = x if positions is None else gather_positions(x, positions)   # (B, T or n, d_model): where wanted
        if kv is None:  # keys and values projected from every position's normed embedding
            attn = self.attn(self.attn_norm(x), self.rope_cos, self.rope_sin, positions)
        else:  # looked up by token; the norm and the queries only where the output is wanted
            attn = self.attn(self.attn_norm(out), self.rope_cos, self.rope_sin, positions, kv[idx])
        x = out + attn
        return x, self.mlp.hidden(self.mlp_norm(x))                        # resid, (B, T or n, d_mlp)

    @torch.no_grad()
    def token_kv(self):
        """Every token's key (before RoPE) and value, (vocab, 2 x n_kv_head x head_dim). In one layer the
        attention reads only the normed token embedding, so a position's key and value depend on its token
        alone: inference (trunk's kv) looks them up instead of projecting every position again, which
        the SAE harvest needs at every position while it keeps 24 of them: its forward 42 -> 32 ms a batch of
        128 tiny windows on one core, bit for bit the same values here."""
        h = self.attn_norm(self.tok_emb.weight)                             # (vocab, d_model)
        return torch.cat([self.attn.wk(h), self.attn.wv(h)], dim=-1)

    def forward(self, idx, targets=None):
        """idx (B, T) int64 -> logits (B, T, vocab), loss (mean CE over targets != -1, or None).

        Training on a CPU (training mode, targets, gradients on, float32) returns logits None: the loss
        then comes from LMHeadCrossEntropy, which never holds the whole (B, T, vocab) logits."""
        hf = self.final(*self.trunk(idx))                                   # (B, T, d_model)
        if targets is not None and self.fused_head(hf):
            loss = LMHeadCrossEntropy.apply(hf.reshape(-1, hf.size(-1)), self.lm_head.weight, targets.reshape(-1),
                                            self.head_rows(targets.numel()))
            return None, loss
        logits = self.lm_head(hf)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def final(self, resid, h):
        """The normed final residual stream from trunk()'s outputs, with h (the MLP hidden activation)
        as given: the MLP's output added in place, then the final RMSNorm."""
        return self.norm_f(resid + self.mlp.down(h.to(resid.dtype)))

    def head(self, resid, h):
        """Logits from trunk()'s outputs and h: one model's trunk serves every h spliced in
        (sae.evaluate: clean, zero-ablated, each SAE's reconstruction)."""
        return self.lm_head(self.final(resid, h))

    def head_rows(self, n):
        """Rows of LM-head logits to make at a time, of n (the chunked training loss, evaluation): on a CPU
        ~8 MB of float32 logits, which stay in cache while they are used (see LMHeadCrossEntropy), at least
        256 rows; on a GPU all n at once."""
        if self.lm_head.weight.device.type != "cpu":
            return n
        return max(256, (1 << 21) // self.args.vocab_size)

    def fused_head(self, x):
        """Whether the loss takes the chunked LM head (CPU float32 training); CUDA keeps the plain head,
        which torch.compile fuses there."""
        return (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu"))

    @torch.no_grad()
    def mlp_acts(self, idx, positions=None, kv=None):
        """MLP hidden activations (B, T, d_mlp) without computing the LM head; with positions (B, n), only
        at those positions (B, n, d_mlp), the tokens after the last of them left out. kv: token_kv()."""
        if positions is not None:
            idx = idx[:, :int(positions.max()) + 1]
        return self.trunk(idx, positions, kv)[1]

    def configure_optimizer(self, weight_decay, lr, betas, device_type):
        # decay matrices (embeddings, projections, LM head); never norms' gains
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for every parameter, on the GPU and (torch >= 2.4) the CPU alike
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cuda", "cpu"))

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward = 6 x matmul params, plus attention),
        as in the PaLM appendix / nanoGPT's estimate_mfu. Embedding lookups are not matmuls."""
        args = self.args
        n = self.num_params() - self.tok_emb.weight.numel()
        return 6 * n + 12 * 1 * args.d_model * args.block_size  # one layer; attention scores + values


# -----------------------------------------------------------------------------
# checkpoints: one writer (save_checkpoint), one reader (load_checkpoint / load_model)

# Every key of a model checkpoint (out_dir/<name>/ckpt.pt, a plain dict written by torch.save),
# documented here once. train.py writes all of them; a merge writes no training state.
CHECKPOINT_KEYS = {
    "model": "state dict of the Transformer (names without torch.compile / DDP prefixes)",
    "model_args": "the ModelArgs as a dict: the architecture to rebuild",
    "finished": "True once the run completed (always True for a merge); written last with the final weights",
    "name": "run name: the folder under out_dir",
    "domain": "the domain trained on (base, lua, tinystories); None for a merge",
    "iter_num": "optimizer steps taken (0 for a merge)",
    "tokenizer_hash": "the tokenizer the training data was made with (data.py's meta.json)",
    "parents": "[{name, hash}] of the checkpoints this one was made from (sha256_file of their ckpt.pt)",
    "val_loss": "{domain: validation loss} at iter_num",
    "config": "the run's settings (train.py or merge.py config)",
    "provenance": "common.provenance(): config, code version, inputs",
    # training state, only in checkpoints train.py writes (what an exact --resume needs)
    "optimizer": "optimizer state dict",
    "data_rng": "[state of the data-order generator before the batch in hand] (rank 0's)",
    "best_val_loss": "lowest validation loss seen so far",
    "history": "[{iter, train_loss, val_loss, lr, tokens}] one entry per evaluation (the loss curves)",
    # merges
    "merge": "merge.py's record: a, b, t, t_rules, mode, parent, angles, ...",
}
REQUIRED_KEYS = ("model", "model_args", "finished", "name", "domain", "iter_num", "tokenizer_hash", "parents")


def save_checkpoint(path, model, model_args, *, finished, **fields):
    """Write a model checkpoint atomically: the one writer (train.py, merge.py and the tests use it).

    model: a Transformer (its state dict is taken, prefixes removed) or a state dict.
    model_args: ModelArgs or its dict. fields: the other CHECKPOINT_KEYS; name, domain, tokenizer_hash and
    parents must be given; iter_num, val_loss, config and provenance default to 0 / {}."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    ckpt = {"model": {clean_key(k): v for k, v in sd.items()},
            "model_args": asdict(model_args) if isinstance(model_args, ModelArgs) else dict(model_args),
            "finished": bool(finished), "iter_num": 0, "val_loss": {}, "config": {}, "provenance": {}, **fields}
    unknown = set(ckpt) - set(CHECKPOINT_KEYS)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if unknown or missing:  # a programming error, not the user's
        raise KeyError(f"save_checkpoint: unknown keys {sorted(unknown)}, missing {missing}; see model.CHECKPOINT_KEYS")
    atomic_torch_save(ckpt, path)
    return path


def model_args_from_dict(d):
    names = {f.name for f in fields(ModelArgs)}
    return ModelArgs(**{k: v for k, v in d.items() if k in names})


MAKES = {"base": "python train.py --domain base", "lua": "python train.py --domain lua",
         "tinystories": "python train.py --domain tinystories", "luastories": "python merge.py"}


def clean_key(k):
    """A parameter name without the prefixes torch.compile (_orig_mod.) and DDP (module.) add."""
    return k.removeprefix("_orig_mod.").removeprefix("module.")


def load_checkpoint(path, what="checkpoint", how=None):
    """torch.load a checkpoint dict on the CPU, or a one-line error naming the command that makes it."""
    if not os.path.exists(path):
        die(f"no {what} at {path}" + (f"; make it with: {how}" if how else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file
        die(f"cannot read {what} {path} ({type(e).__name__}: {e}); delete it and re-run" + (f": {how}" if how else ""))


def is_finished(ckpt):
    # checkpoints from before the flag: one without training state (a merge, a hand-made one) is final
    return bool(ckpt.get("finished", "optimizer" not in ckpt))


def check_finished(ckpt, path, name, allow_unfinished=False):
    """One-line refusal of an unfinished checkpoint (a run stopped early or killed) unless allowed."""
    if allow_unfinished or is_finished(ckpt):
        return
    how = MAKES.get(name, f"python train.py --domain {name} --name {name}")
    die(f"{path} is unfinished (stopped at iter {ckpt.get('iter_num')}); finish it with: {how} --resume, "
        f"or pass --allow_unfinished to use it as it is")


def model_from_checkpoint(ckpt, device="cpu"):
    model = Transformer(model_args_from_dict(ckpt["model_args"]))
    state = {clean_key(k): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.to(device)


def load_model(out_dir, name, device="cpu", allow_unfinished=False):
    """The model of stage `name` (base, lua, tinystories, luastories): (model in eval mode, ckpt dict).
    An unfinished checkpoint is refused unless allow_unfinished."""
    path = os.path.join(out_dir, name, "ckpt.pt")
    ckpt = load_checkpoint(path, f"'{name}' model checkpoint", MAKES.get(name))
    check_finished(ckpt, path, name, allow_unfinished)
    model = model_from_checkpoint(ckpt, device)
    model.eval()
    return model, ckpt


@torch.no_grad()
def eval_loss(model, tokens, batch_size, max_batches=None, device="cpu", autocast=None):
    """Mean next-token CE over consecutive non-overlapping windows of a token array (deterministic,
    the same windows every call, so losses of different models compare on identical text).

    tokens: 1-D uint16/uint32 array (memmap). Uses up to max_batches x batch_size windows."""
    T = model.args.block_size
    n_win = (len(tokens) - 1) // T
    if n_win < 1:
        die(f"evaluation set has {len(tokens)} tokens, fewer than one block of {T}; prepare more data")
    if max_batches is not None:
        n_win = min(n_win, max_batches * batch_size)
    was_training = model.training
    model.eval()
    # the LM head in chunks of rows on the CPU (no (n, T, vocab) logits: 1.3-1.5x faster at the tiny
    # preset), a batch at once on a GPU; summed on the device, read back once
    rows = model.head_rows(batch_size * T)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for start in range(0, n_win, batch_size):
        n = min(batch_size, n_win - start)
        xy = torch.from_numpy(sample_windows(tokens, n, T + 1, "consecutive", offset=start)).to(device)  # (n, T+1)
        with autocast if autocast is not None else contextlib.nullcontext():
            hf = model.final(*model.trunk(xy[:, :-1])).flatten(0, 1)        # (n*T, d_model)
            tgt = xy[:, 1:].reshape(-1)
            for i in range(0, len(tgt), rows):
                total += F.cross_entropy(model.lm_head(hf[i:i + rows]).float(), tgt[i:i + rows], reduction="sum")
        count += len(tgt)
    model.train(was_training)
    return total.item() / count
