"""
Speed and memory figures, each against the fairest peer measured in the same run (same shapes, same
precision, same work, the peer's own training step), with this machine's measured matmul peak and
each stage's share of it. Not a test: it prints numbers (no timing is ever asserted).

    python bench.py                      # the default parts (peak, train, sae, corr, bpe), CPU-sized shapes
    python bench.py --markdown           # ... and BENCHMARKS.md's table, with date, CPU, threads, torch
    python bench.py --only=train,sae     # any of: peak train sae corr bpe data quickstart plan loop quality
    python bench.py --paper_smoke        # every stage at the paper's shapes for a few steps + the plan
    python bench.py --only=plan          # the full-budget projection alone
    python bench.py --only=loop          # sae.py's whole loop at the paper preset (GPU): act/s, the draws made ahead or not
    python bench.py --only=quality       # the bf16 SAE step's metrics against float32's (--shapes=paper: on a GPU)

Peers (optional: pip install -r requirements-bench.txt; skipped with a note when missing):
peak  : torch.mm of two square float32 matrices (bf16 too on CUDA): the FLOP/s every share is of.
train : train.py's step (fwd + bwd + clip + AdamW, decay groups) vs a one-layer transformers
        MistralForCausalLM with the same shapes, loss from its own labels path, the same clip + AdamW.
sae   : sae.py's loop step (sae.train_seeds: the step and its bookkeeping) vs SAELens' SAETrainer.step (its
        loss, firing statistics, grad clip, Adam, lr and coefficient schedulers), ReLU+L1 and TopK.
corr  : fast.CorrAccumulator (streamed chunks) vs all activations in memory + one float32
        torch matmul of the centred (N, Fa) x (N, Fb) block (the same work), each in its own process;
        accuracy of both over the FULL (Fa, Fb) matrix against float64; peak memory at two token counts.
bpe   : data.train_bpe in MB/s of training text (no peer: tokenizers' BPE is a different algorithm).
data (only when asked): `data.py --preset paper` on generated corpora with the paper's document sizes: peak
        resident memory and MB/s per stage at each size, and the paper's corpora on 8 cores, extrapolated.
quickstart (only when asked): ./reproduce.sh from scratch into a temp folder, wall time and peak memory.
quality (only when asked): data.py, train.py (base) and sae.py twice (--sae_step stack, stack_bf16) at --shapes'
        preset, in a temp folder; each seed's FVU, L0, dead fraction and CE recovered against QUALITY_BANDS.
FLOPs are dense-equivalent matmul FLOPs (an implementation that skips zeros can pass 100%).
"""
import copy
import datetime
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common

import numpy as np
import torch

import fast
from common import UserError, die, parse_config, pick_device

HERE = os.path.dirname(os.path.abspath(__file__))
config = dict(
    only="peak,train,sae,corr,bpe",  # parts to run, comma-separated: peak, train, sae, corr, bpe, data, quickstart, plan,
                                     # loop, quality
    shapes="tiny",          # tiny: the quickstart's shapes (CPU) | paper: DESIGN.md's shapes (use a GPU)
    device="auto",          # auto: cuda when available, else cpu
    threads=0,              # torch CPU threads; 0 = common.set_threads' default (fewer on a loaded machine)
    steps=10,               # timed steps per measurement
    warmup=3,               # untimed steps before them
    compile=False,          # train: torch.compile both LM models (ours and the peer) before timing (as train.py on CUDA)
    sae_density=0.02,       # sae: share of ReLU latents firing, as in a trained SAE (tiny: L0 27-54 of 2048); both SAEs
                            # start from the same weights with the encoder bias set for it (TopK: k / features)
    markdown=False,         # also print every figure as BENCHMARKS.md's markdown table
    json_out="",            # also write every figure and its conditions to this JSON file
    corpora="",             # real text samples in data.py's local:DIR layout (bpe, data: else generated text;
                            # --paper_smoke and quality at paper shapes need it)
    corr_features=2048,     # corr: features on each side (tiny SAEs: 2048)
    corr_tokens=[25_000, 100_000],  # corr: two token counts (memory against tokens); speed and accuracy at the last
    corr_chunk=8192,        # corr: tokens per streamed chunk
    corr_density=0.012,     # corr: share of active features per token (the quickstart SAEs: L0 22-31 of 2048)
    data_mb=[60, 240],      # data: sizes of the generated corpus with the paper's document sizes, MB over four domains
    paper_smoke=False,      # run each stage at the paper's shapes for smoke_steps steps, then the plan
    smoke_dir="",           # paper_smoke: work folder ("" = a temp folder, removed at the end)
    smoke_mb=3.0,           # paper_smoke: MB of train text per domain taken from --corpora (3: enough for 32,000 BPE tokens)
    smoke_steps=2,          # paper_smoke: LM steps per training stage (SAE: 2 batches)
    plan_steps=2,           # plan: timed steps per paper-shape measurement (after one untimed)
    plan_batch=0,           # plan: LM sequences per measured step; 0 = the paper's 64 (a CPU needs ~8 GB for it)
    loop_buffers=4,         # loop: shuffle buffers of 32 steps timed per run (CUDA; a CPU runs 2 of 2 steps)
    plan_sae_l0=50,         # plan: active latents per token in the SAE step's timing: the paper's SAEs' L0 for most of a
                            # run (40-65 at 16,384 x 1,024 in BENCHMARKS.md's CPU runs; it starts in the thousands)
    plan_tokens_per_word=0.0,   # plan: base tokens per word; 0 = from the paper_smoke data, else 1.5 (assumed)
    plan_base_words=200e6,      # plan: base mix words (BabyLM 100M + as many words of Python; DESIGN.md)
    plan_lua_tokens=1.25e9,     # plan: Lua fine-tune tokens (ESTIMATE, DESIGN.md's expected sizes: the authors' Lua fine-tune ran ~75k steps of 64 x 256)
    plan_tinystories_tokens=480e6,  # plan: TinyStories fine-tune tokens (ESTIMATE, DESIGN.md's expected sizes: ~1.9 GB / 3.95 bytes/token)
    quality_acts=0,         # quality: activations per SAE run; 0 = the preset's own (tiny 1M) or 30M at paper shapes
                            # (15% of the paper's 200M: the resampling checks and dead window scaled to it)
    quality_lm_steps=0,     # quality: base LM steps before the SAEs; 0 = train.py's own run (its preset's epochs: 2 at tiny)
)
checks = {"loop_buffers": ">=2", "plan_sae_l0": ">0", "steps": ">0", "warmup": ">=0", "sae_density": "(0,1]", "threads": ">=0", "corr_features": ">0", "corr_chunk": ">0",
          "corr_density": "(0,1]", "smoke_mb": ">0", "quality_acts": ">=0", "quality_lm_steps": ">=0", "smoke_steps": ">0", "plan_steps": ">0",
          "shapes": ("tiny", "paper")}
SHAPES = {  # model (DESIGN.md / train.py presets), SAE (d_in, features, batch), corr features
    "tiny": dict(vocab_size=4096, block_size=128, d_model=128, n_head=4, n_kv_head=2, d_mlp=256, batch=32,
                 sae=(256, 2048, 3072)),
    "paper": dict(vocab_size=32000, block_size=256, d_model=512, n_head=16, n_kv_head=8, d_mlp=1024, batch=64,
                  sae=(1024, 16384, 3072)),
}
ROWS = []       # every figure: dict(part, what, ours, peer, ratio, share, note)
CONTEXT = {}    # conditions: date, CPU, threads, versions, peaks


# the project's speed goals (issue 13: ratios in one run on a quiet 2-core CPU); they live here, never in tests
GOALS = {"train": 1.3, "sae": 1.5, "corr": 5.0}


def row(part, what, ours, peer="", ratio=None, share="", note="", goal=None):
    """One figure. ratio: ours / peer speed (a number); goal: the GOALS entry it is held against (or a verdict)."""
    verdict = goal if isinstance(goal, str) else "" if ratio is None or goal is None else \
        f">= {goal:g}x: {'met' if ratio >= goal else 'NOT met'}"
    ROWS.append(dict(part=part, what=what, ours=ours, peer=peer, ratio="" if ratio is None else f"{ratio:.2f}x",
                     share=share, note=note, goal=verdict))


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(step, steps, warmup, device, stat=np.median):
    return time_rounds({"": step}, steps, warmup, device, stat)[""]


def time_rounds(fns, steps, warmup, device, stat=np.median):
    """Seconds per call of each function in fns: the median of `steps` timed calls after `warmup`
    untimed ones, the functions taking turns call by call, so a change of load on a shared machine
    falls on all of them alike (and one descheduled call does not move a median)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: float(stat(v)) for k, v in times.items()}


def share(flops, seconds, peak):
    return f"{flops / seconds / peak:.0%}" if peak else ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peer_versions():
    from importlib import metadata
    out = {}
    for name in ("transformers", "sae-lens"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# -----------------------------------------------------------------------------
# peak: the machine's own matmul FLOP/s at the threads in use (every share is of this)

def bench_peak(cfg, device):
    """Best of several square matmuls (float32; bfloat16 too on CUDA). TF32 stays off: float32 means float32."""
    sizes = (1024, 2048, 3072) if device == "cpu" else (4096, 8192)
    kinds = [("float32", torch.float32, False)]
    if device.startswith("cuda"):
        kinds += [("tf32", torch.float32, True), ("bfloat16", torch.bfloat16, False)]
    elif fast.select_bf16(device, True):  # a CPU with native bf16 matmuls (the bf16 SAE step's peak)
        kinds += [("bfloat16", torch.bfloat16, False)]
    peaks, tf32 = {}, torch.backends.cuda.matmul.allow_tf32
    for name, dt, allow_tf32 in kinds:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
            sec = timeit(lambda: torch.mm(a, b), max(5, cfg["steps"]), 2, device, stat=np.min)  # a peak: the best call
            best = max(best, 2 * n ** 3 / sec)
        peaks[name] = best
        row("peak", f"{name} matmul peak (best of {', '.join(map(str, sizes))} squared)",
            f"{best / 1e9:,.0f} GFLOP/s", note="measured here, the denominator of every share")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    CONTEXT["peak_flops"] = peaks
    print("peak: " + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()) + f" ({device})")
    return peaks


def peak_for(device, low_precision):
    """The peak a stage's share is of: bf16 autocast on CUDA -> bfloat16; float32 -> tf32 when TF32 is on."""
    p = CONTEXT.get("peak_flops", {})
    if low_precision:
        return p.get("bfloat16", 0.0)
    tf32 = device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32
    return p.get("tf32" if tf32 else "float32", 0.0)


# -----------------------------------------------------------------------------
# train: our LM step vs transformers' MistralForCausalLM, same shapes, same step

def lm_step(model, loss_fn, device, autocast, compile_=False):
    """train.py's step: forward + loss, backward, clip to norm 1, finite check, AdamW (decay on matrices only)."""
    state = {"run": torch.compile(model) if compile_ else model}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), fused=device.startswith("cuda"))

    def step():
        try:
            with autocast():
                loss = loss_fn(state["run"])
            # in the try too: AOTAutograd lowers a static-shape backward at its first call
            # (train.py's compile_or_eager tries both)
            loss.backward()
        except Exception as e:  # noqa: BLE001 - a compiler failure (e.g. no C compiler): eager, as train.py does
            if state["run"] is model:
                raise
            print(f"  warning: torch.compile failed ({type(e).__name__}); timing eager instead")
            state["run"] = model
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model)
            loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(gnorm)):
            die("non-finite loss in the LM benchmark")
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def model_args(s):
    """model.ModelArgs of a SHAPES entry (its model's fields, without the batch and the SAE's shape)."""
    from model import ModelArgs
    return ModelArgs(**{k: v for k, v in s.items() if k not in ("batch", "sae")})


def bench_train(cfg, device, shapes=None, steps=None, warmup=None, peer=True, batch=0, compile_=None):
    """Tokens/s of one LM training step, ours and the peer; returns ours in tokens/s."""
    from model import Transformer
    s = SHAPES[shapes or cfg["shapes"]]
    B, T = batch or s["batch"], s["block_size"]
    margs = model_args(s)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, margs.vocab_size, (B, T + 1), generator=g).to(device)
    x, y = idx[:, :-1], idx[:, 1:]
    cuda = device.startswith("cuda")   # train.py: bfloat16 autocast on CUDA, float32 on the CPU
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))
    torch.manual_seed(0)
    ours = Transformer(margs).to(device)
    flops = ours.flops_per_token() * B * T   # 6 N + attention, the same count for both (same shapes)
    compile_ = cfg["compile"] if compile_ is None else compile_
    # ours as train.py trains it (fast on): through fast.ChunkedHead, the LM head's loss in chunks on a CPU
    steps_ = {"ours": lm_step(fast.ChunkedHead(ours), lambda m: m(x, y)[1], device, autocast, compile_)}
    if peer:
        try:
            from transformers import MistralConfig, MistralForCausalLM
            hf = MistralConfig(vocab_size=margs.vocab_size, hidden_size=margs.d_model, intermediate_size=margs.d_mlp,
                               num_hidden_layers=1, num_attention_heads=margs.n_head, num_key_value_heads=margs.n_kv_head,
                               max_position_embeddings=T, rope_theta=margs.rope_theta, rms_norm_eps=margs.norm_eps,
                               tie_word_embeddings=False, sliding_window=None, attn_implementation="sdpa")
            peer_model = MistralForCausalLM(hf).to(device)
            # its own loss path: labels shifted inside (T - 1 targets per row; logits at all T positions)
            steps_["peer"] = lm_step(peer_model, lambda m: m(input_ids=x, labels=x).loss, device, autocast, compile_)
        except ImportError:
            print("  train: transformers is not installed (pip install -r requirements-bench.txt): no peer")
    peak = peak_for(device, cuda)
    print(f"train step, {shapes or cfg['shapes']} shapes: {B} x {T} tokens, vocab {margs.vocab_size}, d_model "
          f"{margs.d_model}, d_mlp {margs.d_mlp}, heads {margs.n_head}/{margs.n_kv_head}, "
          f"{'bf16 autocast' if cuda else 'float32'}, {device}, {flops / 1e9:,.1f} GFLOP/step"
          + (", torch.compile" if compile_ else ""))
    tps = {}
    secs = time_rounds(steps_, steps or cfg["steps"], cfg["warmup"] if warmup is None else warmup, device)
    for name, sec in secs.items():
        tps[name] = B * T / sec
        print(f"  {name:5s} {sec * 1000:9.1f} ms/step {tps[name] / 1e3:9.1f}k tok/s  {share(flops, sec, peak)} of peak")
    if not peer:
        return tps["ours"]
    bench_forward(cfg, ours, x, device, peak, shapes or cfg["shapes"])
    what = (f"LM training step, {shapes or cfg['shapes']} shapes ({B} x {T} tokens, vocab {margs.vocab_size}, "
            f"d_model {margs.d_model}); fwd + bwd + clip + AdamW" + (", both torch.compile'd" if compile_ else ""))
    ratio = tps["ours"] / tps["peer"] if "peer" in tps else None
    row("train", what, f"{tps['ours'] / 1e3:,.1f}k tok/s",
        f"transformers MistralForCausalLM 1 layer: {tps['peer'] / 1e3:,.1f}k tok/s" if "peer" in tps else "not installed",
        ratio, " / ".join(share(flops, B * T / t, peak) for t in tps.values()),
        note="peer predicts T-1 tokens per row (its labels path), ours T", goal=GOALS["train"])
    return tps["ours"]


def bench_forward(cfg, model, x, device, peak, shapes):
    """The MLP-activation forward (what SAE harvesting and analysis run, fast on): fast.mlp_acts, no LM head."""
    B, T = x.shape
    a = model.args
    trunk = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and ("attn" in n or "mlp" in n)
                and not any(w in n for w in ("down", "wk", "wv")))  # down comes after; keys, values: looked up
    flops = B * T * (2 * trunk + 4 * T * a.d_model)  # matmuls + attention scores and values (causal: counted full)
    kv = fast.token_kv(model)  # as sae.mlp_activations does (fast on)
    sec = timeit(lambda: fast.mlp_acts(model, x, kv=kv), cfg["steps"], cfg["warmup"], device)
    print(f"  forward to the MLP activations (harvest, analysis): {sec * 1000:.1f} ms for {B} x {T} tokens, "
          f"{B * T / sec / 1e3:,.1f}k tok/s, {share(flops, sec, peak)} of peak")
    row("train", f"MLP-activation forward (SAE harvest, analysis), {shapes} shapes, {B} x {T} tokens",
        f"{B * T / sec / 1e3:,.1f}k tok/s", share=share(flops, sec, peak),
        note="fast.mlp_acts: every position of each window, keys and values looked up, no LM head")


# -----------------------------------------------------------------------------
# sae: our SAE step (and its loop's bookkeeping) vs SAELens' SAETrainer.step

def ours_sae_step(S, saes, x, arch, fast_math=True, sae_step="each", threads=1):
    """sae.py's training step as its loop runs it: sae.train_seeds (train_step for each seed or one
    step of their stack (sae_step), the firing record, the running sums of the log, its own choice of
    the sparse path, fast on) on runs made by sae.new_run; each seed in a thread of its own on a CPU
    with threads (fast.seed_pool). 10% of latents are held dead so TopK pays for AuxK (as in the peer)."""
    import types
    n_feat, (B, d_in), dev = saes[0].n_features, x.shape, str(x.device)
    cfg = dict(S.config, arch=arch, lr=1e-4, l1_coeff=5.0, dead_window=B, fast_math=fast_math)
    runs = [S.new_run(j, sae, cfg, n_feat, x.device) for j, sae in enumerate(saes)]
    for run in runs:
        run.update(bad_step=torch.tensor(-1, device=x.device), bad_loss=torch.tensor(0.0, device=x.device))
    steps = fast.SeedSteps(sae_step, dev, fast_math, len(saes), threads, S.train_step, S.firing)
    steps.start(runs)
    job = types.SimpleNamespace(cfg=cfg, step=0, B=B, stats=None, d_in=d_in, device=dev, n_features=n_feat,
                                total_steps=10 ** 9, aux_k=d_in // 2, fast_steps=steps)

    def step():
        for run in runs:
            run["last_fired"][: n_feat // 10] = -10 ** 9
        S.train_seeds(job, runs, x)
    return step


@torch.no_grad()
def set_density(sae, x, density):
    """Lower the encoder bias so that about `density` of the latents fire on x, as in a trained ReLU SAE
    (a fresh one fires on about half): the step then does the work a real run's steps do."""
    pre = sae.pre_acts(x)
    sample = pre.flatten()[torch.randperm(pre.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000].to(pre.device)]
    sae.b_enc -= torch.quantile(sample.float().cpu(), 1 - density).to(sae.b_enc.device)


def sae_lens_step(d_in, n_feat, batch, arch, device, x, ours):
    """SAELens' real training step: SAETrainer.step (loss, firing stats, clip, Adam, schedulers), then
    the step counter as its fit() advances it. 10% of latents held dead so TopK pays for AuxK, like ours."""
    from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    if arch == "relu":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=n_feat, device=device, l1_coefficient=5.0))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=n_feat, device=device, k=32, aux_loss_coefficient=1 / 32))
    with torch.no_grad():  # the same weights as ours: the same sparsity, so the same work
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(ours, name))
    tcfg = SAETrainerConfig(total_training_samples=10 ** 12, train_batch_size_samples=batch, lr=1e-4, lr_end=1e-4,
                            adam_beta1=0.9, adam_beta2=0.9999, device=device, dead_feature_window=1000)
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))

    def step():
        trainer.n_forward_passes_since_fired[: n_feat // 10] = 10 ** 6
        trainer.step(x)
        trainer.n_training_steps += 1
    return step


def bench_sae(cfg, device, shapes=None, steps=None, warmup=None, peer=True):
    """Activations/s of one SAE training step, ours and SAELens', ReLU+L1 and TopK+AuxK; returns ours relu."""
    import sae as S
    d_in, n_feat, batch = SHAPES[shapes or cfg["shapes"]]["sae"]
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, d_in, generator=g).relu() * 2).to(device)  # non-negative-ish, like MLP activations
    flops = 12 * batch * d_in * n_feat  # encoder + decoder, forward + backward, dense-equivalent
    precision = "TF32" if device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32 else "float32"
    print(f"sae step, {shapes or cfg['shapes']} shapes: {d_in} -> {n_feat} features, batch {batch}, {precision}, {device}, "
          f"{flops / 1e9:,.1f} GFLOP/step (dense)")
    have_peer = peer
    if peer:
        try:
            __import__("sae_lens")  # its many dependencies can fail to import too
        except Exception as e:  # ImportError, or a broken install of its many dependencies
            print(f"  sae: sae-lens unavailable ({type(e).__name__}: {e}); pip install -r requirements-bench.txt: no peer")
            have_peer = False
    peak, out = peak_for(device, False), {}
    for arch in ("relu",) if not peer else ("relu", "topk"):
        sae = S.init_sae(d_in, n_feat, arch, 32, seed=0).to(device)
        if arch == "relu":
            set_density(sae, x, cfg["sae_density"])
        if have_peer:  # made first: it copies our weights before our steps change them
            peer_step = sae_lens_step(d_in, n_feat, batch, arch, device, x, sae)
        fns = {"ours": ours_sae_step(S, [sae], x, arch)}
        bf16 = fast.select_bf16(device, True)
        if bf16:  # the same step with the active latents picked in float32 too (fast_math off)
            fns["ours_fp32"] = ours_sae_step(S, [copy.deepcopy(sae)], x, arch, fast_math=False)
        if have_peer:
            fns["peer"] = peer_step
        sec = time_rounds(fns, steps or cfg["steps"], cfg["warmup"] if warmup is None else warmup, device)
        for name, t in sec.items():
            print(f"  {arch:4s} {name:9s} {t * 1000:9.1f} ms/step {batch / t / 1e3:9.1f}k act/s  {share(flops, t, peak)} of peak")
        out[arch] = batch / sec["ours"]
        if not peer:
            break
        label = {"relu": "ReLU + L1", "topk": "TopK (k 32) + AuxK"}[arch]
        row("sae", f"SAE training step {label}, {d_in} -> {n_feat}, batch {batch}",
            f"{batch / sec['ours'] / 1e3:,.1f}k act/s",
            f"SAELens SAETrainer.step ({'StandardTrainingSAE' if arch == 'relu' else 'TopKTrainingSAE'}): "
            f"{batch / sec['peer'] / 1e3:,.1f}k act/s" if "peer" in sec else "not installed",
            sec["peer"] / sec["ours"] if "peer" in sec else None,
            " / ".join(share(flops, sec[k], peak) for k in ("ours", "peer") if k in sec),
            note="ours: sae.py's loop step (train_seeds: step, firing record, log sums); same start weights, "
                 + (f"active latents picked by a bf16 product, values and gradients float32 (picked in float32: "
                    f"{batch / sec['ours_fp32'] / 1e3:,.1f}k act/s"
                    + (f", {sec['peer'] / sec['ours_fp32']:.2f}x" if "peer" in sec else "") + "); " if bf16 else "")
                 + (f"{cfg['sae_density']:.0%} of latents firing" if arch == "relu" else "k 32 firing")
                 + "; 10% of latents dead (AuxK)",
            goal=GOALS["sae"])
    return out["relu"]


# -----------------------------------------------------------------------------
# corr: the streamed correlation (fast.CorrAccumulator) vs everything in memory + one float32 torch matmul

def _corr_chunk(seed, n, n_feat, density):
    """Sparse non-negative 'feature activations' x, y (n, n_feat); y shares part of x, so some r are high."""
    g = torch.Generator().manual_seed(seed)
    mask = lambda: (torch.rand(n, n_feat, generator=g) < density).float()
    x = torch.rand(n, n_feat, generator=g) * mask()
    y = x[:, torch.randperm(n_feat, generator=g)] * mask() + torch.rand(n, n_feat, generator=g) * mask()
    return x, y


def _proc_status_mb(key):
    """VmRSS (now) or VmHWM (this process's own peak since exec) in MiB; ru_maxrss is no use here: it
    starts at the parent's size at fork. None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _peak_mb():
    hwm = _proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pearson_in_memory(x, y):
    """The peer: all (N, F) activations at hand; centre, one (Fa, Fb) matmul, divide by the norms; 0 for constants."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    cov = xc.T @ yc                                                   # (Fa, Fb)
    den = xc.pow(2).sum(0).sqrt()[:, None] * yc.pow(2).sum(0).sqrt()[None, :]
    return torch.where(den > 0, cov / den.clamp_min(1e-30), torch.zeros((), dtype=cov.dtype, device=cov.device))


def _corr_worker(how, n_feat, n_tokens, chunk, density, device, threads, save, q):
    """One measurement in a fresh process, so its peak memory is its own. Times only the correlation
    (making the synthetic activations is not part of either method)."""
    torch.set_num_threads(threads)
    import analyze  # (analyze.pearson: r from the accumulator's sums)
    rss0, busy = _proc_status_mb("VmRSS") or _peak_mb(), 0.0  # the baseline: resident size after the imports
    starts = range(0, n_tokens, chunk)
    if how == "streamed":
        acc = fast.CorrAccumulator(n_feat, n_feat, device)
        for i, s in enumerate(starts):
            x, y = (t.to(device) for t in _corr_chunk(i, min(chunk, n_tokens - s), n_feat, density))
            sync(device)
            t0 = time.perf_counter()
            acc.update(x, y)
            sync(device)
            busy += time.perf_counter() - t0
        t0 = time.perf_counter()
        r = analyze.pearson(acc)
        sync(device)
        busy += time.perf_counter() - t0
    else:
        parts = [_corr_chunk(i, min(chunk, n_tokens - s), n_feat, density) for i, s in enumerate(starts)]
        x, y = torch.cat([p[0] for p in parts]).to(device), torch.cat([p[1] for p in parts]).to(device)
        del parts
        sync(device)
        t0 = time.perf_counter()
        r = pearson_in_memory(x, y)
        sync(device)
        busy = time.perf_counter() - t0
    peak = _peak_mb() - rss0
    gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else None
    if save:
        np.save(os.path.join(save, f"{how}.npy"), r.double().cpu().numpy())
        if how == "peer":  # the float64 reference over the full matrix (untimed, after the peak was read)
            np.save(os.path.join(save, "ref.npy"), pearson_in_memory(x.double(), y.double()).cpu().numpy())
    q.put((busy, peak, gpu))


def bench_corr(cfg, device, threads):
    n_feat, chunk, dens = cfg["corr_features"], cfg["corr_chunk"], cfg["corr_density"]
    sizes = sorted(cfg["corr_tokens"])
    if not sizes:
        die("--corr_tokens needs one or two token counts, e.g. 25000,100000")
    ctx, res = mp.get_context("spawn"), {}

    def run(how, n, save, env):  # one measurement in a fresh process with env set: (busy s, peak MiB, GPU MiB)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            q = ctx.Queue()
            p = ctx.Process(target=_corr_worker, args=(how, n_feat, n, chunk, dens, device, threads, save, q))
            p.start()
            got = q.get()
            p.join()
            return got
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    tmp = tempfile.mkdtemp(prefix="bench_corr_")
    try:
        # memory: a fixed mmap threshold, else glibc raises it as big blocks are freed and then keeps the
        # freed chunk buffers in its heap, so the peak would grow with the number of chunks, not with the
        # method. Speed: glibc's defaults, as a user runs it (every fresh mmap of a chunk's temporaries
        # faults its pages in again: that would time the allocator, not the method).
        for n in sizes:
            for how in ("streamed", "peer"):
                res[how, n] = run(how, n, "", {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
        for how in ("streamed", "peer"):
            res[how, "time"] = run(how, sizes[-1], tmp, {})
        r = {k: np.load(os.path.join(tmp, f"{k}.npy")) for k in ("streamed", "peer", "ref")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    err = {k: float(np.abs(r[k] - r["ref"]).max()) for k in ("streamed", "peer")}
    n, peak = sizes[-1], peak_for(device, False)
    flops = 2 * n * n_feat * n_feat  # the cross block x^T y, dense-equivalent
    t_s, t_p = res["streamed", "time"][0], res["peer", "time"][0]
    mem = lambda how: " -> ".join(f"{res[how, m][1]:,.0f}" for m in sizes) + " MiB" + (
        " (GPU " + " -> ".join(f"{res[how, m][2]:,.0f}" for m in sizes) + " MiB)" if device.startswith("cuda") else "")
    print(f"corr {n_feat} x {n_feat} features, density {dens}, chunks of {chunk}, {device}: at {n:,} tokens "
          f"streamed {n / t_s:,.0f} tok/s ({share(flops, t_s, peak)} of peak), in-memory float32 {n / t_p:,.0f} tok/s "
          f"({share(flops, t_p, peak)}); peak RSS over {' -> '.join(f'{m:,}' for m in sizes)} tokens: streamed "
          f"{mem('streamed')}, in-memory {mem('peer')}; max |r - float64 r| over the full matrix: streamed "
          f"{err['streamed']:.1e}, in-memory float32 {err['peer']:.1e}")
    what = f"feature correlation, {n_feat} x {n_feat} features, {n:,} tokens (density {dens})"
    row("corr", what, f"streamed: {n / t_s:,.0f} tok/s", f"in memory, torch float32 matmul: {n / t_p:,.0f} tok/s",
        t_p / t_s, f"{share(flops, t_s, peak)} / {share(flops, t_p, peak)}", goal=GOALS["corr"])
    grow = lambda how, i: res[how, sizes[-1]][i] - res[how, sizes[0]][i]
    flat = grow("streamed", 1) <= max(32.0, 0.1 * res["streamed", sizes[0]][1])  # MiB: allocator noise aside
    row("corr", f"correlation peak memory, {' -> '.join(f'{m:,}' for m in sizes)} tokens",
        f"streamed: +{mem('streamed')}", f"in memory: +{mem('peer')}",
        note=f"peak RSS above the process's baseline; chunks of {chunk} tokens",
        goal=f"streamed flat in tokens: {'met' if flat else 'NOT met'} ({grow('streamed', 1):+,.0f} MiB)")
    row("corr", "correlation accuracy, max |r - float64 r| over the full matrix",
        f"streamed: {err['streamed']:.1e}", f"in memory float32: {err['peer']:.1e}")


# -----------------------------------------------------------------------------
# bpe: the tokenizer trainer's speed on real text

def bench_bpe(cfg, device):
    import data
    files = [os.path.join(cfg["corpora"], d, "train.txt") for d in ("babylm", "python")]
    if all(os.path.exists(f) for f in files):
        texts = [d for f in files for d in data.split_eot(open(f, encoding="utf-8").read())]
        what = f"{sum(len(t.encode('utf-8')) for t in texts) / 1e6:.1f} MB of real text (babylm + python samples)"
    else:
        texts = [data.sample_corpus_text()]
        what = f"{len(texts[0].encode('utf-8')) / 1e6:.1f} MB of the built-in sample"
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    speeds = []
    for vocab in (4096, 32000):
        t0 = time.perf_counter()
        data.train_bpe(texts, vocab, log=lambda *a: None)
        sec = time.perf_counter() - t0
        speeds.append(f"{mb / sec:.2f} MB/s (vocab {vocab:,})")
        print(f"bpe trainer: {what}, vocab {vocab}: {sec:.1f} s = {mb / sec:.2f} MB/s")
    row("bpe", f"BPE trainer, {what}", ", ".join(speeds), note="single-threaded Python; no peer (another algorithm)")


# -----------------------------------------------------------------------------
# stages as subprocesses: wall time and peak resident memory of each (data, paper_smoke)

# A child's ru_maxrss starts at its parent's resident size at fork (Linux carries the pre-exec high-water
# mark over exec), so a stage started from this process would inherit bench's own footprint. Each stage is
# therefore started by this small fresh interpreter, which reports its child's own peak.
RSS_HELPER = ("import os, subprocess, sys\n"
              "p = subprocess.Popen(sys.argv[2:])\n"
              "_, status, usage = os.wait4(p.pid, 0)\n"
              "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
              "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(cmd, log_path, env=None):
    """Run cmd (a list) from the repository folder, output to log_path. Returns (exit code, seconds,
    peak RSS in MiB of the process and the children it waited for, last line of its output)."""
    peak_file = log_path + ".maxrss"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", RSS_HELPER, peak_file, *cmd], stdout=log, stderr=subprocess.STDOUT,
                             cwd=HERE, env=None if env is None else {**os.environ, **env})
        try:
            rc = p.wait()
        except KeyboardInterrupt:
            p.kill()
            raise
        sec = time.perf_counter() - t0
    try:
        with open(peak_file) as f:
            peak = int(f.read()) / 1024  # Linux: KiB
    except (OSError, ValueError):
        peak = float("nan")
    with open(log_path, "rb") as f:
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return rc, sec, peak, (lines[-1] if lines else "")


SYLLABLES = ("ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu "
             "pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu").split()


def _generated_pool(rng, kind, n_items=20_000, n_vocab=5000):
    """Items (sentences or code lines) of one generated domain, over a Zipf-distributed pseudo-word vocabulary."""
    vocab = np.array(["".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(n_vocab)])
    p = 1 / np.arange(1, len(vocab) + 1)
    words = iter(vocab[rng.choice(len(vocab), size=n_items * 24, p=p / p.sum())].tolist())
    pick = lambda k: [next(words) for _ in range(k)]
    items = []
    for _ in range(n_items):
        if kind in ("prose", "story"):
            s = " ".join(pick(int(rng.integers(4, 18))))
            items.append(("Once upon a time " if kind == "story" and rng.random() < 0.05 else "") + s.capitalize() + ".")
            continue
        w, n = pick(6), int(rng.integers(1000))
        if kind == "python":
            forms = [f"def {w[0]}_{w[1]}({w[2]}, {w[3]}=None):", f"    {w[0]} = {w[1]}.{w[2]}({w[3]}, {n})",
                     f"    return {w[0]} + {n}", f"import {w[0]}", f"class {w[0].capitalize()}{w[1]}:",
                     f"    # {' '.join(w)}", f"        if {w[0]} is not None and {w[1]} > {n}:"]
        else:
            forms = [f"local {w[0]} = {w[1]}.{w[2]}({w[3]}, {n})", f"function {w[0]}_{w[1]}({w[2]})", "end",
                     f"  return {w[0]} .. \"{w[1]}\"", f"-- {' '.join(w)}", f"  if {w[0]} ~= nil then {w[1]}[{n}] = {w[2]} end"]
        items.append(forms[int(rng.integers(len(forms)))])
    return items


def make_paper_like_corpus(folder, total_mb, seed=0, lua_big_every=400):
    """A generated local corpus (local:DIR layout) with the paper's document sizes, total_mb MB over four domains
    in equal shares, 10% of each in valid: babylm one line (~9 words) a document, as the local source keeps
    BabyLM's rows; tinystories stories of ~900 bytes; python files of ~5 KB; lua files of ~5 KB and one in every
    lua_big_every a 1 MB file (about a third of lua's bytes)."""
    shapes = {"babylm": ("prose", " ", (1, 2)), "tinystories": ("story", " ", (8, 24)),
              "python": ("python", "\n", (40, 300)), "lua": ("lua", "\n", (40, 300))}  # items a document: [lo, hi)
    for i, (domain, (kind, sep, (lo, hi))) in enumerate(shapes.items()):
        rng = np.random.default_rng(seed * 10 + i)
        pool = _generated_pool(rng, kind, n_items=100_000, n_vocab=200_000)  # enough distinct words for 32,000 merges
        if kind == "prose":  # ~9 words, as a BabyLM row
            pool = [" ".join(s.split()[:int(rng.integers(4, 14))]) for s in pool]
        os.makedirs(os.path.join(folder, domain), exist_ok=True)
        for split, share_ in (("train", 0.9), ("valid", 0.1)):
            target, size, n = total_mb * 1e6 / len(shapes) * share_, 0, 0
            with open(os.path.join(folder, domain, f"{split}.txt"), "w", encoding="utf-8") as f:
                while size < target:
                    k = 30_000 if domain == "lua" and n % lua_big_every == lua_big_every - 1 else int(rng.integers(lo, hi))
                    text = sep.join(pool[j] for j in rng.integers(0, len(pool), size=k).tolist()) + "\n<|endoftext|>\n"
                    f.write(text)
                    size, n = size + len(text), n + 1


# The paper's text, MB of train split (the val splits add about a tenth more): baby-python's card says 1.22 GB,
# BabyLM (~100M words as one-line rows, ~550 MB) plus Python matched to it by words; TinyStories ~1.9 GB;
# small-lua-stack ~4-5 GB (its parquet is 1.07 GB compressed; the authors' Lua fine-tune saw ~1.2-1.3B Mistral
# tokens), the upper end taken. base is all of baby-python again, copied from babylm's and python's tokens.
PAPER_MB = {"babylm": 550, "python": 670, "tinystories": 1900, "lua": 5000}
PAPER_CORES = 8


def _encode_seconds(enc, path):
    """encode_split's work on one file, apart: (seconds of its serial Python, in one thread: reading, chunking,
    counting, joining; seconds inside the tokenizer, which runs on every thread (it releases the GIL); MB)."""
    import data
    t0, tok, size = time.perf_counter(), 0.0, 0
    for chunk in data.batched(data.local_file_docs(path)):
        size += data.n_bytes(chunk)
        data.n_words(chunk), any(data.EOT in d for d in chunk)
        text = data.EOT.join(chunk) + data.EOT
        t1 = time.perf_counter()
        enc.encode_to_numpy(text, allowed_special={data.EOT}, disallowed_special=()).astype(np.uint16)
        tok += time.perf_counter() - t1
    return time.perf_counter() - t0 - tok, tok, size / 1e6


def paper_extrapolation(cfg, corp, ddir, metas, mbs):
    """bench_data's second half: on the largest generated corpus (corp, its token files in ddir), each part of
    data.py timed alone on one thread, then {part: (wall seconds on PAPER_CORES cores, CPU seconds)} at the
    paper's sizes, EXTRAPOLATED."""
    import data
    print("  on the largest corpus, each part alone (one thread) ...", flush=True)
    enc, lcfg = data.load_tokenizer(ddir), dict(data.config, source=f"local:{corp}")
    t0, memo = time.perf_counter(), {}
    sides_mb = sum(int(data.doc_counts(lcfg, d, "train", memo)[1].sum()) for d in data.MIX_SIDES) / 1e6
    t_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    sum(1 for _ in data.base_train_docs(lcfg, memo, 0.5))  # the paper's case: each document hashed for the share
    t_pick = time.perf_counter() - t0
    # the BPE on real text where there is some (generated text has fewer distinct chunks: a faster trainer)
    real = [os.path.join(cfg["corpora"], d, "train.txt") for d in data.MIX_SIDES]
    docs = [d for f in real for d in data.local_file_docs(f)] if all(map(os.path.exists, real)) else \
        list(data.base_train_docs(lcfg, memo))
    bpe_what = "real babylm + python samples" if all(map(os.path.exists, real)) else "the generated base mix"
    bpe_mb, t0 = data.n_bytes(docs) / 1e6, time.perf_counter()
    data.train_bpe(docs, 32000, log=lambda *a: None)
    t_bpe = time.perf_counter() - t0
    # its two phases scale apart: counting the chunks with the text, the merges with the distinct chunks, which
    # grow as MB^heaps (Heaps' law; the exponent from half the text against all of it)
    rx, t0, counts = re.compile(data.RE_PATTERN), time.perf_counter(), [Counter(), Counter()]
    for i, d in enumerate(docs):  # as train_bpe counts them
        counts[i % 2].update(rx.findall(d))
    n_half, n_all = len(counts[0]), len(counts[0] | counts[1])
    t_count = time.perf_counter() - t0
    heaps = np.log(n_all / n_half) / np.log(bpe_mb / (data.n_bytes(docs[::2]) / 1e6))
    del docs
    enc_parts = {d: _encode_seconds(enc, os.path.join(corp, d, "train.txt")) for d in PAPER_MB}
    t0 = time.perf_counter()
    common.sha256_file(os.path.join(corp, "lua", "train.txt"))
    hash_rate = os.path.getsize(os.path.join(corp, "lua", "train.txt")) / 1e6 / (time.perf_counter() - t0)
    # the paper, EXTRAPOLATED: each part's measured seconds per MB times the paper's MB; the serial parts on one
    # core, the tokenizer's calls on the PAPER_CORES - 1 cores the serial Python leaves (whichever takes longer)
    # est: (wall seconds on PAPER_CORES cores, CPU seconds of all threads) of each part
    mix, val = PAPER_MB["babylm"] + PAPER_MB["python"], 1.1
    one = lambda s: (s, s)  # a serial part: its wall time is its CPU time
    r = data.config["bpe_mb"] / bpe_mb  # the BPE's text at the paper's size over the text timed
    est = {"tokenizer: count + pick passes over babylm + python": one((t_pass + t_pick) / sides_mb * mix),
           f"tokenizer: BPE on {data.config['bpe_mb']:g} MB (bpe_mb); on {bpe_mb:.1f} MB of {bpe_what}: counting "
           f"{t_count:.1f} s x r, merges {t_bpe - t_count:.0f} s x r^{heaps:.2f}, r = {r:.1f}":
               one(t_count * r + max(t_bpe - t_count, 0) * r ** heaps)}
    for d, (serial, tok_s, dmb) in enc_parts.items():
        scale = PAPER_MB[d] * val / dmb
        est[f"encode {d} (serial Python {dmb / serial:.0f} MB/s, tokenizer {dmb / tok_s:.1f} MB/s a thread)"] = \
            (max(serial, tok_s / (PAPER_CORES - 1)) * scale, (serial + tok_s) * scale)
    est["base assembly (and the val count pass)"] = one(metas["base"]["encode_seconds"] / mbs["base"] * mix * val)
    est["file hashes (settings: babylm and python x3)"] = one((sum(PAPER_MB.values()) + 2 * mix) * val / hash_rate)
    return est


def bench_data(cfg, device):
    """Issue 24: `data.py --domain all --preset paper --vocab_size 32000` on generated corpora with the paper's
    document sizes (make_paper_like_corpus) at each of data_mb: peak RSS and each stage's MB/s; then, on the
    largest, each stage's parts timed alone and the paper's corpora EXTRAPOLATED to PAPER_CORES cores."""
    import data
    threads, tmp, peaks = torch.get_num_threads(), tempfile.mkdtemp(prefix="bench_data_"), []
    try:
        for mb in cfg["data_mb"]:
            corp, ddir = os.path.join(tmp, "corpus"), os.path.join(tmp, "data")
            shutil.rmtree(corp, ignore_errors=True)
            shutil.rmtree(ddir, ignore_errors=True)
            t0 = time.perf_counter()
            make_paper_like_corpus(corp, mb)
            print(f"data: generated a {mb:g} MB corpus with the paper's document sizes in {time.perf_counter() - t0:.0f} s; "
                  f"data.py --preset paper --threads {threads} ...", flush=True)
            cmd = [sys.executable, "data.py", "--domain", "all", "--source", f"local:{corp}", "--data_dir", ddir,
                   "--preset", "paper", "--vocab_size", "32000", "--threads", str(threads)]
            rc, sec, peak, last = run_measured(cmd, os.path.join(tmp, "log.txt"))
            if rc != 0:
                print(f"  data.py failed (exit {rc}) on {mb:g} MB: {last}")
                row("data", f"data.py on {mb:g} MB", f"FAILED (exit {rc})", note=last)
                return
            tok, metas = common.read_json(os.path.join(ddir, "tokenizer", "tokenizer.json")), \
                {d: common.read_json(os.path.join(ddir, d, "meta.json")) for d in data.DOMAINS}
            mbs = {d: sum(m["splits"][s]["bytes"] for s in ("train", "val")) / 1e6 for d, m in metas.items()}
            stages = {"tokenizer (count pass + BPE)": (tok["train_seconds"] * tok["train_mb_per_s"], tok["train_seconds"]),
                      **{f"encode {d}": (mbs[d], metas[d]["encode_seconds"]) for d in data.DOMAINS if d != "base"},
                      "base assembly": (mbs["base"], metas["base"]["encode_seconds"])}
            peaks.append((mb, peak, sec))
            print(f"  {mb:g} MB: peak RSS {peak:,.0f} MiB, {sec:.0f} s in all; "
                  + "; ".join(f"{k} {m / max(s, 1e-9):.1f} MB/s" for k, (m, s) in stages.items()))
        est = paper_extrapolation(cfg, corp, ddir, metas, mbs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total, cpu = sum(w for w, _ in est.values()), sum(c for _, c in est.values())
    print(f"  EXTRAPOLATION to the paper's corpora ({', '.join(f'{d} {m:,} MB' for d, m in PAPER_MB.items())}, "
          f"+10% val) on {PAPER_CORES} cores, from these one-thread timings on this machine (wall, CPU time):")
    for k, (w, c) in est.items():
        print(f"    {k:100s} {fmt_time(w):>9s} {fmt_time(c):>9s}")
    print(f"    {'total':100s} {fmt_time(total):>9s} {fmt_time(cpu):>9s}  (goal: 10 min on {PAPER_CORES} cores: "
          f"{'met' if total <= 600 else 'NOT met'})")
    (m0, p0, _), (m1, p1, _) = peaks[0], peaks[-1]
    row("data", f"data.py --preset paper --vocab_size 32000 --threads {threads}, generated corpus with the paper's "
        f"document sizes, {' -> '.join(f'{m:g}' for m, _, _ in peaks)} MB", " -> ".join(f"{p:,.0f}" for _, p, _ in peaks)
        + " MiB peak RSS", note=f"{(p1 - p0) / max(m1 - m0, 1e-9):.2f} MiB more per extra MB of input; "
        + "; ".join(f"{k} {m / max(s, 1e-9):.1f} MB/s" for k, (m, s) in stages.items()))
    row("data", f"data.py on the paper's corpora, {PAPER_CORES} cores (EXTRAPOLATED from one-thread parts)",
        f"{fmt_time(total)} wall", note=f"{fmt_time(cpu)} of CPU time", goal=f"<= 10 min: {'met' if total <= 600 else 'NOT met'}")


def bench_quickstart(cfg, device):
    """The quickstart (./reproduce.sh: sample corpus, tiny preset) from nothing, into a temp folder."""
    tmp = tempfile.mkdtemp(prefix="bench_quickstart_")
    try:
        env = {"DATA": os.path.join(tmp, "data"), "OUT": os.path.join(tmp, "out"), "PYTHON": sys.executable}
        print("quickstart: ./reproduce.sh from scratch (sample corpus, tiny preset) ...", flush=True)
        rc, sec, peak, last = run_measured(["bash", "reproduce.sh"], os.path.join(tmp, "log.txt"), env)
        table = os.path.join(env["OUT"], "analysis", "stages.md")  # reproduce.sh's own table of the stages
        if os.path.exists(table):
            print(open(table, encoding="utf-8").read().rstrip())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  quickstart: {'ok' if rc == 0 else f'FAILED (exit {rc}): {last}'} in {sec:,.0f} s, peak RSS {peak:,.0f} MiB")
    row("quickstart", "quickstart ./reproduce.sh from scratch (sample corpus, tiny preset)",
        f"{sec:,.0f} s, peak RSS {peak:,.0f} MiB" if rc == 0 else f"FAILED (exit {rc})", note="" if rc == 0 else last,
        goal=f"<= 240 s: {'met' if rc == 0 and sec <= 240 else 'NOT met'}")


# -----------------------------------------------------------------------------
# paper_smoke: every stage at the paper's shapes, a couple of steps each, as the user runs them

def make_smoke_corpus(src, folder, mb, domains=("babylm", "python", "tinystories", "lua")):
    """The first `mb` MB of each domain's train documents (and a tenth of that of valid) of the real
    text samples, copied into a temp folder (never into the repository)."""
    for domain in domains:
        os.makedirs(os.path.join(folder, domain), exist_ok=True)
        for split, limit in (("train", mb * 1e6), ("valid", max(mb * 1e5, 60_000))):
            path = os.path.join(src, domain, f"{split}.txt")
            if not src or not os.path.exists(path):
                die("--paper_smoke and --only=quality at paper shapes need real text: " + (f"no {path}; " if src else "")
                    + "point --corpora at a folder in data.py's local:DIR layout (<domain>/train.txt, valid.txt)")
            out, size = [], 0
            for doc in open(path, encoding="utf-8").read().split("\n<|endoftext|>\n")[:-1]:
                out.append(doc + "\n<|endoftext|>\n")
                size += len(doc.encode("utf-8"))
                if size >= limit:
                    break
            with open(os.path.join(folder, domain, f"{split}.txt"), "w", encoding="utf-8") as f:
                f.write("".join(out))


def smoke_stages(cfg, corp, ddir, odir, device):
    """(name, command, stages it needs) for each stage at --preset paper with tiny budgets."""
    py, s, dev = sys.executable, str(cfg["smoke_steps"]), ["--device", device]
    io = ["--preset", "paper", "--data_dir", ddir, "--out_dir", odir]
    lm = ["--max_iters", s, "--eval_iters", "1", "--eval_interval", s, "--log_interval", "1"]
    sae = ["--total_acts", str(cfg["smoke_steps"] * 3072), "--buffer_batches", "2", "--eval_seqs", "16", "--log_interval", "1"]
    return [
        ("data (32k BPE, all domains)", [py, "data.py", "--domain", "all", "--source", f"local:{corp}", "--preset", "paper",
                                         "--data_dir", ddir], []),
        ("train base", [py, "train.py", "--domain", "base", *io, *lm, *dev], ["data (32k BPE, all domains)"]),
        ("train lua", [py, "train.py", "--domain", "lua", *io, *lm, *dev], ["train base"]),
        ("train tinystories", [py, "train.py", "--domain", "tinystories", *io, *lm, *dev], ["train base"]),
        ("merge (SLERP)", [py, "merge.py", *io, "--eval_batches", "1", "--batch_size", "8", *dev], ["train lua", "train tinystories"]),
        ("sae base (16,384 features)", [py, "sae.py", "--model", "base", *io, *sae, *dev], ["train base"]),
        ("sae lua (16,384 features)", [py, "sae.py", "--model", "lua", *io, *sae, *dev], ["train lua"]),
        ("analyze base,lua", [py, "analyze.py", *io, "--models", "base,lua", "--domains", "base,lua", "--n_tokens", "4096",
                              *dev], ["sae base (16,384 features)", "sae lua (16,384 features)"]),
    ]


def smoke_findings(log_text):
    """Paper-shape problems a zero exit status hides, read from a stage's output."""
    import re
    out = []
    if "Traceback (most recent call last)" in log_text:
        out.append("a traceback instead of a one-line error")
    cos = [float(c) for c in re.findall(r"cos \+?(-?\d+\.\d+)", log_text)]
    if cos and max(abs(c) for c in cos) > 1 + 1e-9:
        out.append(f"merge: |cos| = {max(abs(c) for c in cos):.6f} > 1 (norms or dot products not in float64)")
    vocab = re.search(r"tokenizer: (\d+) tokens", log_text)
    if vocab and int(vocab.group(1)) < 32000:
        out.append(f"data: the BPE stopped at {int(vocab.group(1)):,} tokens, not 32,000 (too little text: raise --smoke_mb)")
    warm, iters = re.search(r"warmup (?:over )?(\d+)", log_text), re.findall(r"iter \d+/(\d+)", log_text)
    if warm and iters and int(warm.group(1)) >= int(iters[-1]) > 0:
        out.append(f"train: warmup {warm.group(1)} >= the run's {iters[-1]} steps: the lr never reaches its value")
    return out


def paper_smoke(cfg, device):
    work = cfg["smoke_dir"] or tempfile.mkdtemp(prefix="paper_smoke_")
    corp, ddir, odir, logs = (os.path.join(work, d) for d in ("corpora", "data", "out", "logs"))
    os.makedirs(logs, exist_ok=True)
    make_smoke_corpus(cfg["corpora"], corp, cfg["smoke_mb"])
    print(f"paper smoke: every stage at --preset paper, {cfg['smoke_steps']} steps, on {cfg['smoke_mb']:g} MB per domain "
          f"of {cfg['corpora']}, device {device}; logs in {logs}" + ("" if cfg["smoke_dir"] else " (removed at the end)"))
    status, t_all = {}, time.perf_counter()
    for name, cmd, needs in smoke_stages(cfg, corp, ddir, odir, device):
        if any(status.get(n) != "ok" for n in needs):
            status[name] = "skipped"
            print(f"  {name:30s} skipped (needs {', '.join(n for n in needs if status.get(n) != 'ok')})")
            row("smoke", name, "skipped", note="an earlier stage failed")
            continue
        log = os.path.join(logs, name.split(" (")[0].replace(" ", "_").replace(",", "_") + ".txt")
        rc, sec, peak, last = run_measured(cmd, log)
        status[name] = "ok" if rc == 0 else "FAILED"
        with open(log, encoding="utf-8", errors="replace") as f:
            found = smoke_findings(f.read())
        print(f"  {name:30s} {'ok' if rc == 0 else f'FAILED (exit {rc})':16s} {sec:7.1f} s  peak RSS {peak:7,.0f} MiB"
              + ("" if rc == 0 else f"\n      {' '.join(cmd[1:])}\n      -> {last}")
              + "".join(f"\n      WARNING {w}" for w in found), flush=True)
        row("smoke", name, f"{sec:,.1f} s, peak RSS {peak:,.0f} MiB" if rc == 0 else f"FAILED (exit {rc})",
            note="; ".join(([] if rc == 0 else [last]) + found))
    print(f"paper smoke: {sum(v == 'ok' for v in status.values())}/{len(status)} stages ok in {time.perf_counter() - t_all:.0f} s")
    tpw = None
    try:
        meta = common.read_json(os.path.join(ddir, "base", "meta.json"))
        va = meta["splits"]["val"]  # the held-out split: a BPE fitted to a few MB has nearly memorised its train split
        tpw = va["tokens"] / max(va["words"], 1)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not cfg["smoke_dir"]:
        shutil.rmtree(work, ignore_errors=True)
    return tpw


# -----------------------------------------------------------------------------
# quality: the bf16 SAE step (sae.py --sae_step stack_bf16) against its float32 twin (stack; TF32 on CUDA),
# both trained on one activation stream of one model, as the user runs them (issue 29, point 1)

QUALITY_BANDS = {  # bf16 against float32, per seed, for a converging run (BENCHMARKS.md, "bf16 SAE training")
    "fvu": ("abs", 0.005), "l0": ("rel", 0.02), "dead_frac": ("abs", 0.02), "ce_recovered": ("abs", 0.005)}


def quality_rows(ref, low, bands=QUALITY_BANDS):
    """[(seed, metric, float32 value, bf16 value, |difference|, band, within)] for each seed both sae.py
    metrics.json dicts hold; a "rel" band is that share of the float32 value."""
    out = []
    for seed in sorted(set(ref["seeds"]) & set(low["seeds"]), key=int):
        a, b = ref["seeds"][seed], low["seeds"][seed]
        for k, (how, lim) in bands.items():
            band = lim * abs(a[k]) if how == "rel" else lim
            out.append((seed, k, a[k], b[k], abs(b[k] - a[k]), band, abs(b[k] - a[k]) <= band))
    return out


def seed_spread(metrics, keys=tuple(QUALITY_BANDS)):
    """{metric: max - min over the seeds of one sae.py run}: how far two seeds alone move each metric."""
    vals = {k: [m[k] for m in metrics["seeds"].values()] for k in keys}
    return {k: max(v) - min(v) for k, v in vals.items()}


def bench_quality(cfg, device):
    import sae as S
    preset = cfg["shapes"]  # train.py's and sae.py's presets share bench's shape names: tiny | paper
    sc = {**S.config, **S.PRESETS[preset]}
    acts = cfg["quality_acts"] or (30_000_000 if preset == "paper" else sc["total_acts"])
    work = cfg["smoke_dir"] or tempfile.mkdtemp(prefix="quality_")
    corp, ddir, odir, logs = (os.path.join(work, d) for d in ("corpora", "data", "out", "logs"))
    os.makedirs(logs, exist_ok=True)
    source = "sample"  # tiny: the built-in sample, as the quickstart
    if preset == "paper":
        make_smoke_corpus(cfg["corpora"], corp, cfg["smoke_mb"], domains=("babylm", "python"))
        source = f"local:{corp}"
    py, io = sys.executable, ["--preset", preset, "--data_dir", ddir, "--out_dir", odir, "--device", device]
    lm = ["--max_iters", str(cfg["quality_lm_steps"])] if cfg["quality_lm_steps"] else []
    sae = ["--model", "base", *io, "--total_acts", str(acts), "--health_at", "0", "--overwrite"]
    if acts != sc["total_acts"]:  # the resampling checks and the dead window in proportion to the budget
        f = acts / sc["total_acts"]
        sae += ["--resample_every", str(max(1, round(sc["resample_every"] * f))),
                "--dead_window", str(max(sc["seqs_per_batch"] * sc["tokens_per_seq"], round(sc["dead_window"] * f)))]
    stages = [("data", [py, "data.py", "--domain", "base", "--source", source, "--preset", preset, "--data_dir", ddir]),
              ("train base", [py, "train.py", "--domain", "base", *io, *lm, "--resume"]),  # a --smoke_dir's: kept
              *((f"sae base, {step}", [py, "sae.py", *sae, "--sae_step", step]) for step in ("stack", "stack_bf16"))]
    lm_run = f"{lm[1]} steps" if lm else "train.py's own run"
    print(f"quality: {preset} preset, base model ({lm_run}), two SAE runs of {acts:,} activations on one stream "
          f"(--sae_step stack, then stack_bf16), device {device}; logs in {logs}"
          + ("" if cfg["smoke_dir"] else " (removed at the end unless a stage fails)"), flush=True)
    runs, seconds = {}, {}
    for name, cmd in stages:
        log = os.path.join(logs, name.replace(", ", "_").replace(" ", "_") + ".txt")
        rc, seconds[name], peak, last = run_measured(cmd, log)
        print(f"  {name:24s} {'ok' if rc == 0 else f'FAILED (exit {rc})':16s} {seconds[name]:7.1f} s  peak RSS "
              f"{peak:7,.0f} MiB" + ("" if rc == 0 else f"\n      {' '.join(cmd[1:])}\n      -> {last}"), flush=True)
        if rc != 0:  # the log's tail here: its folder may be out of reach (a GPU lease's machine)
            with open(log, encoding="utf-8", errors="replace") as f:
                print("".join("      | " + ln for ln in f.readlines()[-25:]), end="", flush=True)
            row("quality", name, f"FAILED (exit {rc})", note=last)
            return
        if name.startswith("sae"):  # each run's SAEs kept apart: the second run writes sae_base again
            step = name.split(", ")[1]
            shutil.rmtree(os.path.join(odir, f"sae_base_{step}"), ignore_errors=True)
            os.replace(os.path.join(odir, "sae_base"), os.path.join(odir, f"sae_base_{step}"))
            runs[step] = common.read_record(os.path.join(odir, f"sae_base_{step}", "metrics.json"), "sae_metrics")
    ref, low = runs["stack"], runs["stack_bf16"]
    spread = seed_spread(ref)
    ref_name = "TF32" if device.startswith("cuda") and sc["fast_math"] else "float32"
    print(f"  {'seed':>4s} {'metric':13s} {ref_name:>9s} {'bf16':>9s} {'|diff|':>8s} {'band':>8s}   {ref_name} seeds differ by")
    rows = quality_rows(ref, low)
    for seed, k, a, b, d, band, ok in rows:
        print(f"  {seed:>4s} {k:13s} {a:9.5f} {b:9.5f} {d:8.5f} {band:8.5f}   {spread[k]:.5f}"
              + ("" if ok else "   OUTSIDE the band"))
        row("quality", f"seed {seed} {k}", f"{ref_name} {a:.5f}, bf16 {b:.5f}",
            note=f"|diff| {d:.5f}, band {band:.5f}{'' if ok else ' (OUTSIDE)'}; seeds differ by {spread[k]:.5f}")
    outside = [f"seed {seed} {k}" for seed, k, *_, ok in rows if not ok]
    # resampling amplifies the last bits' differences (BENCHMARKS.md): the bands hold where few were
    resampled = "; ".join(f"{ref_name if r is ref else 'bf16'} " + ", ".join(
        f"s{s} {m['n_resampled']:,}" for s, m in sorted(r["seeds"].items())) for r in (ref, low))
    print(f"  latents resampled: {resampled}")
    speed = seconds["sae base, stack"] / seconds["sae base, stack_bf16"]
    print(f"quality: {'every metric within its band' if not outside else 'OUTSIDE the band: ' + ', '.join(outside)}; "
          f"the bf16 run took {seconds['sae base, stack_bf16']:.0f} s against {seconds['sae base, stack']:.0f} s "
          f"({speed:.2f}x, harvest and evaluation included)")
    row("quality", "verdict", "within every band" if not outside else f"OUTSIDE: {', '.join(outside)}",
        note=f"{acts:,} activations a run, {preset} preset; sae.py wall time {ref_name} "
             f"{seconds['sae base, stack']:.0f} s, bf16 {seconds['sae base, stack_bf16']:.0f} s; "
             f"latents resampled: {resampled}")
    if not cfg["smoke_dir"]:
        shutil.rmtree(work, ignore_errors=True)


# -----------------------------------------------------------------------------
# plan: the full-budget time of each stage on this device, PROJECTED from steps measured at paper shapes

def sae_step_rates(cfg, device, seeds=2):
    """Activations/s per SAE of sae.py's loop step for `seeds` seeds on one batch at the paper's shapes (ReLU,
    plan_sae_l0 latents firing), each way the step can run: every seed its own dense step, the
    sparse step (forced, whatever fast.SPARSE_BELOW and SPARSE_L0_BELOW say here), the seeds as one stack in float32
    (TF32 on CUDA with fast_math) and in bf16. Returns ({name: act/s per SAE}, the name sae.py's defaults take
    here)."""
    import sae as S
    d_in, n_feat, batch = SHAPES["paper"]["sae"]
    x = (torch.randn(batch, d_in, generator=torch.Generator().manual_seed(0)).relu() * 2).to(device)
    dev_type, threads = device.split(":")[0], torch.get_num_threads()
    ways = {"each seed, dense": ("each", False), "each seed, sparse": ("each", True), "stack": ("stack", False),
            "stack_bf16": ("stack_bf16", False)}
    saes = [S.init_sae(d_in, n_feat, "relu", 32, seed=s).to(device) for s in range(seeds)]
    density = cfg["plan_sae_l0"] / n_feat
    for sae in saes:
        set_density(sae, x, density)
    switches, rates = (fast.SPARSE_BELOW, fast.SPARSE_L0_BELOW), {}
    picked = fast.pick_sae_step(S.config["sae_step"], device, S.config["fast_math"])
    if picked == "each":  # (the sparse step's switch as sae.py reads it here)
        picked = "each seed, " + ("sparse" if fast.loss_for(device, density, False, n_feat).keywords["sparse"]
                                  else "dense")
    saved = [dict(d) for d in switches]
    flops = 12 * batch * d_in * n_feat * seeds  # dense-equivalent
    try:
        for name, (step, sparse) in ways.items():
            for d, forced in zip(switches, (1.0, n_feat + 1)):
                d.clear()
                d.update({dev_type: forced} if sparse else {})
            try:  # a way that fails on this device (its first run there) is named, and the others still timed
                fn = ours_sae_step(S, [copy.deepcopy(s) for s in saes], x, "relu", sae_step=step, threads=threads)
                sec = timeit(fn, cfg["plan_steps"], 2, device)  # (the first step of each: dense, density unknown)
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                print(f"plan: SAE step, {name}: FAILED ({type(e).__name__}: {str(e)[:200]})")
                row("plan", f"SAE step, 2 seeds, {name}", f"FAILED ({type(e).__name__})", note=str(e)[:200])
                continue
            rates[name] = seeds * batch / sec
            print(f"plan: SAE step, {seeds} seeds x {batch} activations, {d_in} -> {n_feat}, {name}: {sec * 1e3:,.1f} "
                  f"ms, {rates[name] / 1e3:,.1f}k act/s per SAE, "
                  f"{share(flops, sec, peak_for(device, step == 'stack_bf16'))} of the peak (dense-equivalent)")
    finally:
        for d, was in zip(switches, saved):
            d.clear()
            d.update(was)
    return rates, picked


def crosscoder_rate(cfg, device):
    """Tokens/s per crosscoder of diffing.py's training step at the paper's shapes (2 models x 1,024 -> 16,384
    latents, diffing.py's arch, k and batch; 10% of the latents dead, so batchtopk pays for AuxK), as its loop
    runs it: the loss, backward, Adam, the firing record. The same float32 (TF32) as diffing.py on this device."""
    import diffing as D
    dc, (d_in, n_lat, _) = D.config, SHAPES["paper"]["sae"]
    batch = dc["seqs_per_batch"] * dc["tokens_per_seq"]
    cc = D.init_crosscoder(2, d_in, n_lat, dc["arch"], dc["k"], seed=0).to(device)
    opt = torch.optim.Adam(cc.parameters(), lr=dc["lr"])
    x = (torch.randn(batch, 2, d_in, generator=torch.Generator().manual_seed(0)).relu() * 2).to(device)
    dead, since = torch.arange(n_lat, device=device) % 10 == 0, torch.zeros(n_lat, dtype=torch.long, device=device)

    def step():
        loss, _, f = D.crosscoder_loss(cc, x, dc["l1_coeff"], dead, dc["aux_k"] or d_in // 2, dc["aux_coeff"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            since.add_(1).masked_fill_((f > 0).any(0), 0)
    sec = timeit(step, cfg["plan_steps"], 1, device)
    flops = 2 * 6 * batch * 2 * d_in * n_lat  # two models' encoder and decoder: forward 4 dL, backward 8 dL each
    print(f"plan: crosscoder step, {batch} tokens x 2 models, {d_in} -> {n_lat} ({dc['arch']}): {sec * 1e3:,.1f} ms, "
          f"{batch / sec / 1e3:,.1f}k tok/s, {share(flops, sec, peak_for(device, False))} of the peak")
    return batch / sec


def harvest_rates(cfg, device, batches, bf16):
    """Windows/s of sae.py's harvest forward (fast.mlp_activations' call: keys and values looked up, the model at
    tokens_per_seq of block_size positions) at the paper's shapes, for each harvest batch in batches."""
    import sae as S
    from model import Transformer
    s, tps = SHAPES["paper"], S.config["tokens_per_seq"]
    model = Transformer(model_args(s)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda"))
    with autocast:
        kv = fast.token_kv(model)  # once a buffer of 4,096 windows in sae.py: left out of a call's time
    rates = {}
    for b in batches:
        idx = torch.randint(0, s["vocab_size"], (b, s["block_size"]), generator=g).to(device)
        pos = torch.rand(b, s["block_size"] - 1, generator=g).argsort(dim=1)[:, :tps] + 1  # on the CPU, as sae.py's

        def call():
            with autocast:
                fast.mlp_acts(model, idx, pos, kv).float()
        sec = timeit(call, cfg["plan_steps"], 1, device)
        rates[b] = b / sec
        print(f"plan: harvest forward, {b} windows a call ({tps} of {s['block_size']} positions kept): "
              f"{rates[b]:,.0f} windows/s = {rates[b] * tps / 1e6:,.2f}M activations/s")
    return rates


def write_random_study(folder, seed=0):
    """A paper-shape model 'base' (random weights) and random token files in data.py's layout, for timing sae.py's
    loop (its speed does not depend on what the tokens say): (data_dir, out_dir)."""
    import hashlib

    from model import Transformer, save_checkpoint
    s = SHAPES["paper"]
    args = model_args(s)
    data_dir, out_dir = os.path.join(folder, "data"), os.path.join(folder, "out")
    rng = np.random.default_rng(seed)
    splits = {"train": rng.integers(0, s["vocab_size"], 4_000_000, dtype=np.uint16),
              "val": rng.integers(0, s["vocab_size"], 200_000, dtype=np.uint16)}
    os.makedirs(os.path.join(data_dir, "base"), exist_ok=True)
    for split, toks in splits.items():
        toks.tofile(os.path.join(data_dir, "base", f"{split}.bin"))
    common.atomic_write_json(os.path.join(data_dir, "base", "meta.json"), {
        "domain": "base", "source": "bench (random tokens)", "vocab_size": s["vocab_size"], "dtype": "uint16",
        "tokenizer_hash": "bench-random", "splits": {k: {"tokens": len(a), "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
                                                         "max_id": int(a.max())} for k, a in splits.items()}})
    torch.manual_seed(seed)
    save_checkpoint(os.path.join(out_dir, "base", "ckpt.pt"), Transformer(args), args, finished=True, name="base",
                    domain="base", tokenizer_hash="bench-random", parents=[])
    return data_dir, out_dir


def bench_loop(cfg, device):
    """sae.py's whole loop at the paper preset (harvest, both seeds' steps, the log), on a random paper-shape model
    and random tokens, for loop_buffers shuffle buffers: activations/s per model as its log reports them, with the
    next buffer's draws made ahead in a thread (fast.Prefetch) and without, alternated. Its defaults otherwise
    (sae_step, harvest_batch), so the figure is the one a paper run's log would print on this device."""
    import sae as S
    buffers = cfg["loop_buffers"] if device.startswith("cuda") else 2
    per_buffer = 32 if device.startswith("cuda") else 2  # a CPU: short buffers (a paper step takes seconds there)
    pays, tf32, rates = fast.Prefetch.__dict__["pays"], torch.backends.cuda.matmul.allow_tf32, {}
    work = tempfile.mkdtemp(prefix="bench_loop_")
    try:
        data_dir, out_dir = write_random_study(work)
        args = ["--preset=paper", "--model=base", f"--data_dir={data_dir}", f"--out_dir={out_dir}", f"--device={device}",
                f"--buffer_batches={per_buffer}", f"--total_acts={buffers * per_buffer * 3072}",
                f"--log_interval={per_buffer}", "--eval_interval=1000000", "--ckpt_interval=1000000", "--eval_seqs=8",
                "--health_at=0", "--resample_every=0", "--overwrite", f"--threads={torch.get_num_threads()}"]
        for rnd in range(2):
            for ahead in ((True, False) if device.startswith("cuda") else (False,)):
                fast.Prefetch.pays = staticmethod(lambda d, ahead=ahead: ahead)
                try:
                    m = S.main(args)
                except (Exception, SystemExit) as e:  # noqa: BLE001 (reported: a first run on this device)
                    print(f"loop: FAILED ({type(e).__name__}: {str(e)[:200]})")
                    rates.setdefault(ahead, []).append(None)
                    continue
                # the log lines after the first: that interval trains on buffer 0, harvested before the loop's clock
                logged = [h["act_per_s"] for h in m["history"] if "act_per_s" in h][1:]
                rates.setdefault(ahead, []).append(float(np.median(logged)) if logged else None)
    finally:
        fast.Prefetch.pays = pays
        torch.backends.cuda.matmul.allow_tf32 = tf32  # (sae.py sets it for its run)
        shutil.rmtree(work, ignore_errors=True)
    for ahead, r in rates.items():
        what = "the next buffer drawn ahead (fast.Prefetch)" if ahead else "each buffer drawn when needed"
        got = ", ".join("failed" if x is None else f"{x / 1e3:,.1f}k" for x in r)
        ran = [x for x in r if x is not None]
        print(f"loop: sae.py --preset paper, 2 seeds, {what}: {got} act/s per model (2 rounds; each the median of its "
              f"log lines after the first, which has no harvest in it)")
        row("loop", f"sae.py's loop at the paper preset, 2 seeds, {what}",
            f"{max(ran) / 1e3:,.1f}k act/s per model" if ran else "failed",
            note=f"random paper-shape model, {buffers} buffers of {per_buffer} steps; rounds: {got}")
    return rates


def measure_forward_and_corr(cfg, device, harvest_batch, bf16):
    """Tokens/s of the MLP-activation forward at every position (the analysis: float32, bf16
    False; bf16: under bf16 autocast) and of one streamed correlation pair at 16,384 x 16,384
    features, paper shapes, this device."""
    from model import Transformer
    s = SHAPES["paper"]
    model = Transformer(model_args(s)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, s["vocab_size"], (harvest_batch, s["block_size"]), generator=g).to(device)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else (lambda: torch.autocast("cpu", enabled=False))

    with ctx():
        kv = fast.token_kv(model)  # as sae.mlp_activations does (fast on)

    def forward():
        with ctx():
            fast.mlp_acts(model, idx, kv=kv)
    sec = timeit(forward, cfg["plan_steps"], 1, device)
    fwd = harvest_batch * s["block_size"] / sec
    n_feat, chunk = s["sae"][1], 1024
    acc = fast.CorrAccumulator(n_feat, n_feat, device)
    x, y = (t.to(device) for t in _corr_chunk(0, chunk, n_feat, cfg["corr_density"]))
    sec = timeit(lambda: acc.update(x, y), cfg["plan_steps"], 1, device)
    print(f"plan: MLP-activation forward {fwd / 1e3:,.1f}k tok/s (batch {harvest_batch} x {s['block_size']}); "
          f"correlation {n_feat:,} x {n_feat:,}: {chunk / sec:,.0f} tok/s per pair ({device})")
    return fwd, chunk / sec


def fmt_time(sec):
    return f"{sec / 3600:,.1f} h" if sec >= 3600 else f"{sec / 60:,.1f} min" if sec >= 60 else f"{sec:,.0f} s"


def plan(cfg, device, tokens_per_word=None):
    import analyze
    import sae as S
    sc, ac = S.config, analyze.config
    tpw = cfg["plan_tokens_per_word"] or tokens_per_word or 1.5
    tpw_from = ("--plan_tokens_per_word" if cfg["plan_tokens_per_word"] else
                "measured on the smoke's base val split with its 32k BPE" if tokens_per_word else "assumed")
    import train
    compile_lm = device.startswith("cuda") and bool(train.config.get("compile", False))  # as train.py runs it
    lm = bench_train(cfg, device, shapes="paper", steps=cfg["plan_steps"], warmup=1, peer=False, batch=cfg["plan_batch"],
                     compile_=compile_lm)
    fast_math = device.startswith("cuda") and bool(sc.get("fast_math", False))  # sae.py: TF32 SAE, bf16 harvest
    tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, fast_math  # (diffing.py too)
    try:
        sae_rates, picked = sae_step_rates(cfg, device)
        try:  # the optional diffing stage's: its failure (a first run here) leaves the rest
            cc_rate = crosscoder_rate(cfg, device)
        except Exception as e:  # noqa: BLE001 (reported, not hidden)
            print(f"plan: crosscoder step FAILED ({type(e).__name__}: {str(e)[:200]})")
            row("plan", "crosscoder step", f"FAILED ({type(e).__name__})", note=str(e)[:200])
            cc_rate = None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if not sae_rates:
        die("plan: every way of the SAE step failed on this device (above); nothing to project")
    if picked not in sae_rates:
        print(f"plan: sae.py's default here, {picked}, failed; the projection takes the fastest way that ran")
        picked = max(sae_rates, key=sae_rates.get)
    sae_rate = sae_rates[picked]
    for name, r in sae_rates.items():
        row("plan", f"SAE step, 2 seeds, {name}" + (" (sae.py's default here)" if name == picked else ""),
            f"{r / 1e3:,.1f}k act/s per SAE", note=f"paper shapes, ReLU, L0 {cfg['plan_sae_l0']} of 16,384")
    hb = sc.get("harvest_batch") or (512 if device.startswith("cuda") else 64)  # sae.py's harvest batch here
    windows = harvest_rates(cfg, device, sorted({64, hb} | ({256, 1024} if device.startswith("cuda") else set())),
                            fast_math)
    for b, r in windows.items():
        row("plan", f"harvest forward, {b} windows a call" + (" (sae.py's default here)" if b == hb else ""),
            f"{r * sc.get('tokens_per_seq', 24) / 1e6:,.2f}M act/s", note="paper shapes, 24 of 256 positions")
    # float32: analyze.py's and diffing.py's measuring passes run the model without autocast
    # (analyze.py with TF32 off, as here)
    fwd, corr = measure_forward_and_corr(cfg, device, hb, False)
    seeds, acts, per_seq = len(sc.get("seeds", [0, 1])), sc.get("total_acts", 200_000_000), sc.get("tokens_per_seq", 24)
    seq_len = sc.get("seq_len") or SHAPES["paper"]["block_size"]
    models, n_tok = ac.get("models", ["base", "lua", "tinystories", "luastories"]), ac.get("n_tokens", 1_048_576)
    pairs = sum(1 for a, b in analyze.EDGES if a in models and b in models) + len(models)  # edges + seed nulls
    pre = 3 * cfg["plan_base_words"] * tpw  # DESIGN.md: 3 epochs of the base mix; fine-tunes: 1 epoch
    stages = [
        ("pretrain base", f"3 epochs x {cfg['plan_base_words'] / 1e6:,.0f}M words x {tpw:.2f} tokens/word ({tpw_from}) "
         f"= {pre / 1e9:,.2f}G tokens", pre / lm),
        ("fine-tune lua", f"1 epoch, {cfg['plan_lua_tokens'] / 1e6:,.0f}M tokens (estimated)", cfg["plan_lua_tokens"] / lm),
        ("fine-tune tinystories", f"1 epoch, {cfg['plan_tinystories_tokens'] / 1e6:,.0f}M tokens (estimated)",
         cfg["plan_tinystories_tokens"] / lm),
        ("SAE training", f"{len(MODEL_NAMES)} models x {seeds} seeds x {acts / 1e6:,.0f}M activations ({picked})",
         len(MODEL_NAMES) * seeds * acts / sae_rate),
        ("SAE harvesting", f"{len(MODEL_NAMES)} x {acts / per_seq / 1e6:,.1f}M windows forward, {hb} a call "
         f"({per_seq} of {seq_len} positions kept)", len(MODEL_NAMES) * acts / per_seq / windows[hb]),
        ("analysis", f"{n_tok:,} tokens x ({len(models)} forwards + {pairs} correlation pairs of 16,384^2)",
         n_tok * (len(models) / fwd + pairs / corr)),
    ]
    total = sum(t for _, _, t in stages)
    dev = torch.cuda.get_device_name() if device.startswith("cuda") else f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"\nPROJECTION (not a measurement): full-budget time per stage on this device ({dev}), from "
          f"{cfg['plan_steps']}-step measurements at the paper's shapes, LM {'compiled' if compile_lm else 'eager'}, "
          f"the rest eager; merge not counted; "
          + (f"LM bf16 autocast, SAE step {picked}, other matmuls " + ("TF32, harvest bf16" if fast_math else "float32")
             if device.startswith("cuda") else f"float32, SAE step {picked}"))
    for name, work, t in stages:
        print(f"  {name:22s} {fmt_time(t):>10s}   {work}")
        row("plan", name, f"projected {fmt_time(t)}", note=work)
    print(f"  {'total':22s} {fmt_time(total):>10s}")
    row("plan", "total (projection)", f"projected {fmt_time(total)}",
        note=f"on {dev}; LM {lm / 1e3:,.1f}k tok/s, SAE {sae_rate / 1e3:,.1f}k act/s per SAE ({picked}), "
             f"harvest {windows[hb]:,.0f} windows/s, forward {fwd / 1e3:,.1f}k tok/s, "
             f"correlation {corr:,.0f} tok/s per pair, all measured at paper shapes")
    if cc_rate:  # (None: its step failed, said above)
        diff_work, diff_t = diffing_stage(cc_rate, windows, hb, fwd, corr, n_tok)
        print(f"  {'diffing (optional)':22s} {fmt_time(diff_t):>10s}   {diff_work} (not in the total)")
        row("plan", "diffing (optional, not in the total)", f"projected {fmt_time(diff_t)}",
            note=f"{diff_work}; crosscoder {cc_rate / 1e3:,.1f}k tok/s measured")


def diffing_stage(cc_rate, windows, hb, fwd, corr, n_tok):
    """(what, seconds) of DIFFING=1's stage at diffing.py's defaults, from the measured rates: the crosscoders'
    training, their paired streams (windows/s at diffing.py's harvest batch, else at hb), the measuring passes."""
    import diffing
    dc = diffing.config
    harvest = windows.get(dc["harvest_batch"], windows[hb])
    n_edges, n_cc = len(dc["edges"]), len(dc["edges"]) * len(dc["seeds"])
    work = (f"DIFFING=1: {n_cc} crosscoders x {dc['total_acts'] / 1e6:,.0f}M tokens, {n_edges} streams harvested "
            f"from 2 models ({dc['harvest_batch']} windows a call), {n_edges} passes of {n_tok:,} tokens x (2 forwards "
            f"+ 3 correlation pairs; the SAEs' and crosscoders' own products there and the cross-application not "
            f"counted)")
    return work, (n_cc * dc["total_acts"] / cc_rate + n_edges * 2 * dc["total_acts"] / dc["tokens_per_seq"] / harvest
                  + n_edges * n_tok * (2 / fwd + 3 / corr))


MODEL_NAMES = ("base", "lua", "tinystories", "luastories")


# -----------------------------------------------------------------------------
# output: conditions, every figure, BENCHMARKS.md's table

def print_markdown():
    c = CONTEXT
    peers = ", ".join(f"{k} {v}" for k, v in c["peers"].items() if v) or "no peers installed"
    peak = ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in c.get("peak_flops", {}).items())
    print(f"\nMeasured {c['date']} with `{c['argv']}` on {c['device_name']}, {c['threads']} torch threads of "
          f"{c['cores']} cores (load average {c['loadavg']} at the start), torch {c['torch']}, {peers}; matmul peak "
          f"measured in the same run: {peak or 'not measured'}.\n")
    main_rows = [r for r in ROWS if r["part"] not in ("smoke", "plan", "loop")]
    if main_rows:
        print("| what | ours | peer (same run) | ours / peer | share of peak, dense-equivalent FLOPs (ours / peer) | goal |\n"
              "|---|---|---|---|---|---|")
        for r in main_rows:
            note = f" ({r['note']})" if r["note"] else ""
            cells = [f"{r['what']}{note}", r["ours"], r["peer"] or "-", r["ratio"] or "-", r["share"] or "-", r["goal"] or "-"]
            print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for part, title in (("loop", "sae.py's loop at the paper preset (measured)"),
                        ("smoke", "Paper-shape smoke (each stage at --preset paper, a few steps)"),
                        ("plan", "Full-budget PROJECTION (from steps measured at paper shapes; not a measurement)")):
        rows = [r for r in ROWS if r["part"] == part]
        if rows:
            print(f"\n{title}:\n\n| stage | result | note |\n|---|---|---|")
            for r in rows:
                print("| " + " | ".join(c.replace("|", "\\|") for c in (r["what"], r["ours"], r["note"] or "-")) + " |")


def main(argv=None):
    cfg = parse_config(dict(config), argv, checks=checks)
    threads = common.set_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    parts = ["peak", "smoke", "plan"] if cfg["paper_smoke"] else [p for p in cfg["only"].split(",") if p]
    unknown = [p for p in parts if p not in ("peak", "train", "sae", "corr", "bpe", "data", "quickstart", "plan",
                                             "smoke", "loop", "quality")]
    if unknown or not parts:  # (--only= or --only=, would run nothing and end as if all went well)
        die(f"--only: {f'unknown part {unknown[0]!r}' if unknown else 'no part named'}; choose from peak, train, sae, "
            f"corr, bpe, data, quickstart, plan, loop, quality")
    if set(parts) & {"train", "sae", "corr", "plan"} and "peak" not in parts:
        parts.insert(0, "peak")  # every share needs it
    CONTEXT.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   cpu=cpu_model(), cores=os.cpu_count(), threads=threads, torch=torch.__version__,
                   device=device, peers=peer_versions(), argv=" ".join(["python", "bench.py", *(argv or sys.argv[1:])]),
                   loadavg=" / ".join(f"{x:.1f}" for x in os.getloadavg()),
                   device_name=torch.cuda.get_device_name() if device.startswith("cuda") else cpu_model())
    print(f"bench: {threads} torch threads ({'--threads' if cfg['threads'] else 'common.set_threads: cores free now'}; "
          f"{os.cpu_count()} cores, load average {CONTEXT['loadavg']}), device {device} ({CONTEXT['device_name']}), "
          f"torch {torch.__version__}, " + ", ".join(f"{k} {v or 'not installed'}" for k, v in CONTEXT["peers"].items()))
    tpw, failed = None, []
    for part in parts:
        try:
            if part == "peak":
                bench_peak(cfg, device)
            elif part == "corr":
                bench_corr(cfg, device, threads)
            elif part == "smoke":
                tpw = paper_smoke(cfg, device)
            elif part == "plan":
                plan(cfg, device, tpw)
            else:
                {"train": bench_train, "sae": bench_sae, "bpe": bench_bpe, "data": bench_data,
                 "quickstart": bench_quickstart, "loop": bench_loop,
                 "quality": bench_quality}[part](cfg, device)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - named; the other parts still run: a
            # part's first run on a device (a GPU lease of minutes) must not cost later parts theirs
            why = e.msg if isinstance(e, UserError) else str(e).strip()
            if not isinstance(e, UserError):
                traceback.print_exc()
            print(f"{part}: FAILED ({type(e).__name__}: {why[:300]})")
            failed.append(part)
            row(part, f"{part} (the whole part)", f"FAILED ({type(e).__name__})", note=why[:200])
        sys.stdout.flush()
        if cfg["json_out"]:  # after every part: a timeout or a later failure keeps the parts done
            common.atomic_write_json(cfg["json_out"], {"context": CONTEXT, "rows": ROWS,
                                                       "provenance": common.provenance(cfg)})
    goals = [f"{r['part']} {r['ratio'] or ''} {r['goal']}".replace("  ", " ") for r in ROWS if r["goal"]]
    if goals:
        print("goals (issue 13; valid on a quiet machine only): " + "; ".join(goals))
    if cfg["markdown"]:
        print_markdown()
    if cfg["json_out"]:
        print(f"-> {cfg['json_out']}")
    if failed:
        die(f"bench.py: {', '.join(failed)} failed (above); the other parts' figures are printed"
            + (f" and in {cfg['json_out']}" if cfg["json_out"] else ""))


if __name__ == "__main__":
    common.cli(main)
