"""
The one-layer decoder of the study, Mistral-style (DESIGN.md): token embedding, RMSNorm,
causal self-attention with RoPE and grouped-query attention, SwiGLU MLP, final RMSNorm and
an untied LM head. No biases, no dropout.

The SAEs live on the MLP hidden activation h = act(gate(x)) * up(x) (width d_mlp), the input
of the down projection. trunk() returns h with the residual stream before the MLP's write, and
head(resid, h') gives the logits with any h' in its place (splice in an SAE reconstruction, or
zero-ablate, for CE-loss metrics). mlp_acts() stops at h (the down projection is not run):
harvesting activations then skips the LM head, which dominates the compute at a 32k vocabulary.
The plain code only: fast.py has the chunked LM-head loss and the forward at a few positions, keys
and values looked up.

Also here, because every stage needs them: building a model from a checkpoint, the
evaluation loss over token windows, and the FLOP count for MFU. Run on its own, it samples
the text a trained model writes: python model.py --model luastories --prompt "local function".
"""
import contextlib
import os
import shlex
import warnings
from dataclasses import asdict, dataclass, fields

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
from common import (UserError, atomic_torch_save, check_file, check_torch, die, misfit, read_json, record_problem,
                    stamp, with_settings)

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.torch_version import TorchVersion

check_torch(torch.__version__)  # an older torch: one line here, not a failure mid-stage


@dataclass
class ModelArgs:
    vocab_size: int = 32000
    block_size: int = 256      # context length (tokens)
    d_model: int = 512
    n_head: int = 16           # query heads
    n_kv_head: int = 8         # key/value heads (grouped-query attention); n_head % n_kv_head == 0
    d_mlp: int = 1024          # MLP hidden width = SAE input width
    # swiglu (Mistral) | gelu | relu (plain 2-layer MLP, Anthropic's one-layer setup)
    mlp: str = "swiglu"
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

    # fast.py's positions-only attention rotates through the module: fast.py imports no project script
    rope = staticmethod(apply_rope)

    def forward(self, x, cos, sin):
        """x (B, T, d_model) -> (B, T, d_model), each position attending to itself and the ones
        before it."""
        B, T, _ = x.shape
        # q, k, v in this order: autograd sums x's gradient in the reverse order, so the order is
        # part of the run's exact numerics (and of bit-identical resumes and reproductions)
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)       # (B, H, T, hd)
        # (B, Hkv, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # grouped-query: each kv head serves n_head / n_kv_head query heads
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                 # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.kind = args.mlp
        if args.mlp == "swiglu":
            self.gate = nn.Linear(args.d_model, args.d_mlp, bias=False)
        elif args.mlp not in ("gelu", "relu"):
            die(f"unknown mlp {args.mlp!r}; use swiglu, gelu or relu")
        self.up = nn.Linear(args.d_model, args.d_mlp, bias=False)
        # W_out: the SAE's decoder directions map through it
        self.down = nn.Linear(args.d_mlp, args.d_model, bias=False)

    def hidden(self, x):
        """The activation the SAEs are trained on: (B, T, d_mlp)."""
        if self.kind == "swiglu":
            return F.silu(self.gate(x)) * self.up(x)
        return F.gelu(self.up(x)) if self.kind == "gelu" else F.relu(self.up(x))


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

    @staticmethod
    def _init_weights(m):
        # every matrix N(0, 0.02), the norms' gains 1: the authors' models' init (HF Mistral's
        # initializer_range), without GPT-2's down-scaled residual projections
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def trunk(self, idx):
        """idx (B, T) -> (the residual stream before the MLP's output is added (B, T, d_model),
        the MLP hidden activation (B, T, d_mlp)): everything the LM head and the SAEs need."""
        B, T = idx.shape
        if T > self.args.block_size:
            die(f"sequence of {T} tokens is longer than the model's block_size "
                f"{self.args.block_size}")
        x = self.tok_emb(idx)                                               # (B, T, d_model)
        x = x + self.attn(self.attn_norm(x), self.rope_cos, self.rope_sin)  # (B, T, d_model)
        return x, self.mlp.hidden(self.mlp_norm(x))                        # resid, (B, T, d_mlp)

    def final(self, resid, h):
        """The normed final residual stream from trunk()'s outputs, with h (the MLP hidden
        activation) as given: the MLP's output added in place, then the final RMSNorm."""
        return self.norm_f(resid + self.mlp.down(h.to(resid.dtype)))

    def forward(self, idx, targets=None):
        """idx (B, T) int64 -> logits (B, T, vocab), loss (mean CE over targets != -1, or None)."""
        logits = self.lm_head(self.final(*self.trunk(idx)))                # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def head(self, resid, h):
        """Logits from trunk()'s outputs and h: one model's trunk serves every h spliced in
        (sae.evaluate: clean, zero-ablated, each SAE's reconstruction)."""
        return self.lm_head(self.final(resid, h))

    @torch.no_grad()
    def mlp_acts(self, idx):
        """MLP hidden activations (B, T, d_mlp) without computing the LM head (the SAEs' input)."""
        return self.trunk(idx)[1]

    def configure_optimizer(self, weight_decay, lr, betas, device_type):
        # decay matrices (embeddings, projections, LM head); never norms' gains
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for every parameter, on the GPU and the CPU alike
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
    "data_rng": "[state of the data-order generator before the batch in hand] (one stream for every DDP rank; "
                "--sampler windows reads it, epochs counts the windows from iter_num)",
    "best_val_loss": "lowest validation loss seen so far",
    "history": "[{iter, train_loss, val_loss, lr, tokens}] one entry per evaluation (the loss curves)",
    "loss_since": "[[each DDP rank's sum], steps] of the train loss since history's last point ([[0.0], 0] but at "
                  "a --stop_iter between evaluations, whose val_loss is {}): the resume's next point includes them",
    # merges
    "merge": "merge.py's record: a, b, t, t_rules, mode, parent, angles, tensors (each one's cos, angle and "
             "path: merge.json's, rebuilt from here), ...",
    # what the file is and whether it is whole (common.stamp writes them, common.check_file checks them)
    "kind": "'model' (common.KINDS)",
    "format": "common.FORMAT when written (files without it: the version before kinds)",
    "checksum": "sha256 of every other field (common.checksum), tensors' bytes included",
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
    atomic_torch_save(stamp(ckpt, "model"), path)  # kind, format and checksum of what is written
    return path


def model_args_from_dict(d):
    names = {f.name for f in fields(ModelArgs)}
    return ModelArgs(**{k: v for k, v in d.items() if k in names})


MAKES = {"base": "python train.py --domain base", "lua": "python train.py --domain lua",
         "tinystories": "python train.py --domain tinystories", "luastories": "python merge.py"}
STUDY_DOMAIN = {"base": "base", "lua": "lua", "tinystories": "tinystories", "luastories": None}  # None: a merge


def make_command(name, out_dir=None):
    """The command that makes model `name`: the study's (MAKES), or a variant's (train.py --name, merge.py --out:
    made by the command that named it; DOMAIN for the user to fill in, as --domain lua2 is no domain). A merge's
    (luastories too: reproduce.sh may pass it settings) with the settings its merge.json in out_dir records, a
    trained model's with those of its metrics.json (what is known of a missing or damaged checkpoint)."""
    def record(file, kind):  # whole, or not used (its reader names it)
        try:
            rec = read_json(os.path.join(out_dir, name, file)) if out_dir is not None else None
            return rec if rec is not None and record_problem(rec, kind) is None else None
        except (OSError, ValueError):
            return None
    rec = record("merge.json", "merge") if STUDY_DOMAIN.get(name) is None else None
    if rec is not None:
        return merge_command(name, rec)
    rec = record("metrics.json", "train_metrics") or {}  # (of this model: a record copied in is another's)
    made = rec.get("provenance") if rec.get("name") == name else None
    return trained_with(MAKES.get(name, f"python train.py --domain DOMAIN --name {name}"),
                        made.get("config") if isinstance(made, dict) else None)


def train_command(domain, name, parent="base"):
    """train.py's command for the model `name`: its domain and (a fine-tune of another model than base) its
    --parent, without which it would start from base."""
    return f"python train.py --domain {domain} --name {name}" + (
        f" --parent {shlex.quote(parent)}" if domain != "base" and parent != "base" else "")


def command_of(name, ckpt):
    """The command that made model `name`, as its loaded checkpoint says: a merge's with the settings of its
    merge record, a variant's train_command (its domain and parent), the study's (MAKES)."""
    if ckpt.get("domain") is None and STUDY_DOMAIN.get(name) is None:
        return merge_command(name, ckpt.get("merge"))
    parents = ckpt.get("parents")
    parent = parents[0].get("name") if isinstance(parents, list) and parents and isinstance(parents[0], dict) \
        else None
    return trained_with(MAKES.get(name, train_command(ckpt.get("domain"), name, parent if isinstance(parent, str)
                                                      and parent else "base")), ckpt.get("config"))


def trained_with(how, made):
    """how, a train.py command, with the settings of made (the config the model was trained with) that are not
    train.py's defaults (common.with_settings), or it would train another model: all but its folder (the
    command's) and those a resume may change; the batch size too (a resume keeps a step's, a new run would not).
    Another stage's command (a merge's): as it is."""
    if not how.startswith("python train.py"):
        return how
    import train  # (here: train.py imports this module)
    return with_settings(how, made, train.config, train.PRESETS, (train.RESUME_FREE - {"batch_size"}) | {"name"},
                         train.variant)


def merge_command(name, rec, grid=None):
    """The merge.py command that makes the merge `name` that rec, its merge record (merge.py's: in the checkpoint
    and merge.json), describes: its inputs, t, rules, mode and threshold, so that, run as printed, it makes the same
    merge (--out alone would merge lua and tinystories at the defaults). Without a record of them (none kept,
    hand-made): the study's command (MAKES), or a variant's with the settings to fill in named, as DOMAIN is.
    With grid (the values of t): the --sweep of those inputs over it (merge_sweep.json; name and t unused)."""
    try:
        names = [rec["a"], rec["b"], rec["mode"]]  # (and task mode's parent: a record's {name, hash})
        parent = rec["parent"] if rec["mode"] == "task" else None
        parent = parent.get("name") if isinstance(parent, dict) else parent
        t, dot = float(rec["t"]), float(rec["dot_threshold"])
        rules = ",".join(f"{p}={float(v)!r}" for p, v in rec.get("t_rules") or [])
        if not all(isinstance(w, str) and w for w in names + [parent] * (rec["mode"] == "task")):
            raise TypeError("not a merge record's settings")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # (an integer past a float's range)
        return MAKES.get(name, f"python merge.py --out {name} --a A --b B --t T --mode MODE")
    a, b, mode, t, dot = (shlex.quote(str(w)) for w in names + [t, dot])
    head = (f"python merge.py --sweep --grid {shlex.quote(','.join(map(str, grid)))}" if grid is not None
            else f"python merge.py --out {name}")
    return (f"{head} --a {a} --b {b}" + (f" --t {t}" if grid is None else "") + f" --mode {mode}"
            + (f" --parent {shlex.quote(parent)}" if parent else "")
            + (f" --t_rules {shlex.quote(rules)}" if rules else "") + f" --dot_threshold {dot}")


def made_by_authors(ckpt):
    """Whether a checkpoint dict is one of the authors' released models converted by authors.py (its provenance
    records the hub's repo and commit)."""
    prov = ckpt.get("provenance") if isinstance(ckpt, dict) else None
    return isinstance(prov, dict) and isinstance(prov.get("hub"), dict)


def authors_how(out_dir, name, ckpt=None):
    """In a study of the authors' models, the command that remakes model `name` in out_dir: authors.py's
    (authors.remake_command, with the settings the conversion recorded), as train.py and merge.py never made
    them. Which study it is: ckpt (the model's own checkpoint dict), else, when that cannot be read, another of
    out_dir's study models (only its records are read: mmap). None for a study of our own models."""
    if ckpt is None:
        for other in MAKES:
            path = os.path.join(out_dir, other, "ckpt.pt")
            if other == name or not os.path.isfile(path):
                continue
            try:
                ck = load_data(path, mmap=True)
            except Exception:  # damaged too, or not a torch file: the next one may say
                continue
            if isinstance(ck, dict):
                ckpt = ck
                break
    if not made_by_authors(ckpt):
        return None
    import authors  # (here: authors.py imports this module)
    return authors.remake_command(out_dir, name, ckpt.get("config"))


def clean_key(k):
    """A parameter name without the prefixes torch.compile (_orig_mod.) and DDP (module.) add."""
    return k.removeprefix("_orig_mod.").removeprefix("module.")


def load_data(path, mmap=False):
    """torch.load of a file as data on the CPU (weights_only: tensors, numbers, text and their containers, so
    nothing in it can run); mmap: tensors not read until used."""
    # files written before common.FORMAT 1 hold torch.__version__ as a TorchVersion (a str subclass)
    with warnings.catch_warnings(), torch.serialization.safe_globals([TorchVersion]):
        warnings.simplefilter("ignore")  # torch's notes on pickle protocols would add lines to the one
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_checkpoint(path, what="checkpoint", how=None, kind="model", again=" --overwrite"):
    """A torch file of `kind` (a model checkpoint; sae.py: an SAE, an SAE training state) as a dict on the
    CPU, after common.check_file. weights_only: the file is read as data (tensors, numbers, text and their
    containers), so nothing in it can run. Missing, unloadable, damaged or of another kind: one line naming
    the file and `how`, the command that makes it (`again`: what remakes one that is there)."""
    if not os.path.exists(path):
        die(f"no {what} at {path}" + (f"; make it with: {how}" if how else ""))
    if not os.path.isfile(path):  # a folder, a device or a pipe (which would block the read) in its place
        die(f"{path} is not a file but a folder, a device or a pipe; remove it"
            + (f" and remake it: {how}{again}" if how else ""))
    try:
        obj = load_data(path)
    except Exception as e:  # truncated or damaged, a pickle of objects (code), not a torch file at all
        why = [x.strip() for x in str(e).splitlines() if x.strip() and not x.startswith(
            ("Weights only load failed", "Check the documentation", "Please file an issue"))]  # torch's lines
        why = (why or [""])[0].split(". ")[0][:160]
        die(f"cannot load {what} {path} as data ({type(e).__name__}: {why}): damaged, or it holds Python objects "
            f"(a pickle that could run code; a file of an old version); nothing in it was run"
            + (f"; remake it: {how}{again}" if how else "; delete it and re-run"))
    return check_file(obj, path, kind, how and f"{how}{again}")


def is_finished(ckpt):
    # checkpoints from before the flag: one without training state (a merge, a hand-made one) is final
    return bool(ckpt.get("finished", "optimizer" not in ckpt))


def check_finished(ckpt, path, name, allow_unfinished=False, how=None):
    """One-line refusal of an unfinished checkpoint (a run stopped early or killed) unless allowed, and of
    another model in a study model's folder: one of the study's (folders swapped: a merge would run the wrong
    way round, an SAE would be named for the wrong model), or any trained on another domain (a copy of another
    run). A copy of the right model under another name is fine. how: the command that remakes `name` (MAKES'
    by default; authors_how's in a study of the authors' models)."""
    held, domain = ckpt.get("name"), ckpt.get("domain")
    if name in MAKES and ((held in MAKES and held != name) or domain != STUDY_DOMAIN[name]):
        what = f"domain {domain}" if domain is not None else "a merge"
        die(f"{path} holds the model '{held}' ({what}), not '{name}': folders swapped, or another run copied in? "
            f"put each model back in its own folder, or remake it: {how or MAKES[name]} --overwrite")
    if allow_unfinished or is_finished(ckpt):
        return
    how = command_of(name, ckpt)  # (a fine-tune's --parent too: the resume refuses other settings)
    die(f"{path} is unfinished (stopped at iter {ckpt.get('iter_num')}); finish it with: {how} --resume, "
        f"or pass --allow_unfinished to use it as it is")


def check_preset(ckpt, path, preset, allowed, purpose):
    """One-line refusal of a model made with another preset than this run's, unless allowed: the scripts
    default to paper on a GPU and reproduce.sh to tiny, so a stage of one preset on the other's model (a
    fine-tune, SAEs) is a mistake unless meant. purpose: what --allow_other_preset would do, for the message."""
    theirs = (ckpt.get("config") or {}).get("preset")
    if isinstance(theirs, str) and theirs != preset and not allowed:
        die(f"--preset {preset} differs from the preset {theirs} that {path} was made with; give --preset {theirs}, "
            f"or --allow_other_preset to {purpose} on purpose")


def model_from_checkpoint(ckpt, device="cpu", path="the checkpoint", how=None):
    """The model a checkpoint dict describes, with its weights; one line naming path (and `how`, the
    command that remakes it) when they do not fit its model_args (edited by hand and re-stamped)."""
    try:
        model = Transformer(model_args_from_dict(ckpt["model_args"]))
        model.load_state_dict({clean_key(k): v for k, v in ckpt["model"].items()})
    except Exception as e:  # a size mismatch, a missing or mistyped arg, an assert of the model's shape
        misfit(path, e, "model", how or trained_with(f"python train.py --domain {ckpt.get('domain')}",
                                                     ckpt.get("config")))
    return model.to(device)


def load_model(out_dir, name, device="cpu", allow_unfinished=False):
    """The model of stage `name` (base, lua, tinystories, luastories): (model in eval mode, ckpt dict).
    An unfinished checkpoint is refused unless allow_unfinished."""
    path = os.path.join(out_dir, name, "ckpt.pt")
    how = make_command(name, out_dir)
    if name not in MAKES and not os.path.lexists(path):
        either = "" if how.startswith("python merge.py") else f" (or {merge_command(name, None)})"
        die(f"no '{name}' model checkpoint at {path}; make it with: {how}{either}")
    try:
        ckpt = load_checkpoint(path, f"'{name}' model checkpoint", how)
    except UserError:  # missing or damaged: in a study of the authors' models, authors.py remakes it
        authors = authors_how(out_dir, name) if name in MAKES else None
        if authors is None:
            raise
        ckpt = load_checkpoint(path, f"'{name}' model checkpoint", authors)  # (the same line, naming it)
    authors = authors_how(out_dir, name, ckpt) if name in MAKES else None  # (None unless authors.py made it)
    check_finished(ckpt, path, name, allow_unfinished, (authors or how) if name in MAKES else None)
    # (loaded: its domain, or a merge)
    model = model_from_checkpoint(ckpt, device, path, authors or command_of(name, ckpt))
    model.eval()
    return model, ckpt


@torch.no_grad()
def eval_loss(model, windows, batch_size, device="cpu", autocast=None, rows=None):
    """Mean next-token CE over token windows (n, T+1) int64 (x the first T tokens, y the last T),
    batch_size windows at a time; the same windows give the same loss, so models compare on
    identical text (data.sample_windows' "consecutive" scheme makes them). rows: the LM head's
    logits this many tokens at a time (fast.head_rows: cache-sized blocks on a CPU); None: a batch
    at once."""
    was_training = model.training
    model.eval()
    # summed on the device, read once
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for start in range(0, len(windows), batch_size):
        xy = torch.as_tensor(windows[start:start + batch_size]).to(device)     # (b, T+1)
        with autocast if autocast is not None else contextlib.nullcontext():
            hf = model.final(*model.trunk(xy[:, :-1])).flatten(0, 1)        # (b*T, d_model)
            tgt = xy[:, 1:].reshape(-1)
            step = rows or len(tgt)
            for i in range(0, len(tgt), step):
                total += F.cross_entropy(model.lm_head(hf[i:i + step]).float(), tgt[i:i + step],
                                         reduction="sum")
        count += len(tgt)
    model.train(was_training)
    return total.item() / count


# -----------------------------------------------------------------------------
# python model.py: text a trained model writes (nanoGPT's sample.py), to see what a fine-tune
# and the merge learned before any SAE looks at them:
#   python model.py --model luastories --prompt "local function"
#   python model.py --model tinystories --num_samples 5 --temperature 1.0

config = dict(
    out_dir="out",          # reads out_dir/<model>/ckpt.pt (train.py, merge.py or authors.py)
    data_dir="data",        # the tokenizer the model was trained with (data.py)
    model="luastories",     # base | lua | tinystories | luastories | a variant's (train.py --name)
    prompt="",              # the text to continue ("": a new document)
    num_samples=3,          # continuations, drawn independently
    max_new_tokens=100,     # tokens each (the model reads the last block_size tokens)
    temperature=0.8,        # divides the logits: < 1 sharper, > 1 flatter
    top_k=50,               # draw among the top_k likeliest tokens (0: all of them)
    seed=0,                 # the same seed, model and settings give the same text
    device="auto",          # auto (cuda if available) | cpu | cuda | cuda:N
    threads=0,              # CPU threads for torch (0 = the cores free now)
)
CHECKS = {"num_samples": ">0", "max_new_tokens": ">0", "temperature": ">0", "top_k": ">=0", "threads": ">=0"}


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=0, generator=None):
    """idx (B, T) token ids -> (B, T + max_new_tokens): each new token drawn from the softmax of
    the last position's logits / temperature, among the top_k likeliest (0: all), the context
    cropped to the model's block_size (nanoGPT's generate)."""
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.args.block_size:])          # (B, <= block_size, vocab)
        logits = logits[:, -1, :].float() / temperature              # (B, vocab)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return idx


def main(argv=None):
    import common
    import data
    cfg = common.parse_config(dict(config), argv, checks=CHECKS)
    common.keep_study_settings(cfg["out_dir"], ("preset",))  # for the fixes it prints
    common.check_model_folder("--model", cfg["model"])
    device = common.pick_device(cfg["device"])
    common.set_threads(cfg["threads"])
    model, ckpt = load_model(cfg["out_dir"], cfg["model"], device)
    enc = data.load_tokenizer(cfg["data_dir"], want=ckpt.get("tokenizer_hash"))
    parents = [p.get("name") for p in ckpt.get("parents") or [] if isinstance(p, dict)]
    steps = f" ({ckpt['iter_num']} steps)" if ckpt.get("iter_num") else ""  # (authors': not kept)
    made = (f"trained on {ckpt['domain']}{steps}" if ckpt.get("domain")
            else f"a merge of {' and '.join(map(str, parents))}")
    print(f"{cfg['model']}: {made}, {model.num_params() / 1e6:.2f}M parameters, "
          f"context {model.args.block_size} tokens; device {device}")
    # a document starts after our EOT (every document ends with it) or with the authors' <s>: the
    # separator first either way (data.doc_sep), then the prompt
    sep, _ = data.doc_sep(enc)
    ctx = [sep] + enc.encode_ordinary(cfg["prompt"])  # (the model's tokenizer: `want` above)
    idx = torch.tensor([ctx] * cfg["num_samples"], device=device)    # (num_samples, len(ctx))
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    out = generate(model, idx, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], gen)
    for i, row in enumerate(out[:, len(ctx):].tolist()):
        ended = sep in row                                            # the document ended there
        text = cfg["prompt"] + enc.decode(row[:row.index(sep)] if ended else row)
        print(f"--- sample {i + 1} of {cfg['num_samples']} (temperature {cfg['temperature']}, "
              f"top_k {cfg['top_k']}, seed {cfg['seed']}) ---\n{text}"
              + ("\n[end of the document]" if ended else ""))


if __name__ == "__main__":
    from common import cli
    cli(main)
