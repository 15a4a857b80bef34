"""
Pretraining (--domain base) and fine-tuning (--domain lua | tinystories) of the one-layer LM.

    python train.py --domain base                   # from scratch on the base mix (BabyLM + Python)
    python train.py --domain lua                    # every weight fine-tuned from out/base/ckpt.pt
    python train.py --domain tinystories --preset paper --compile=false
    torchrun --standalone --nproc_per_node=4 train.py --domain base   # several GPUs (DDP)

The recipes follow DESIGN.md (the authors' released configs): pretraining AdamW lr 6e-4, cosine,
no warmup, wd 0.1, betas (0.9, 0.999), 64 x 256 tokens a step, 3 epochs; fine-tuning lr 2e-5,
cosine, 500 warmup steps, wd 0.01, 1 epoch. The tiny preset scales everything down for a CPU.
Any config key below can be overridden: --key=value (python train.py --help lists them).
"""
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch

import data as datalib
from common import (atomic_torch_save, atomic_write_json, default_preset, die, parse_config,
                    pick_device, provenance, require_positive, sha256_file)
from model import MAKES, ModelArgs, Transformer, eval_loss, load_checkpoint, model_from_checkpoint

# -----------------------------------------------------------------------------
# default config (the paper preset's values unless noted; PRESETS below overrides)
config = dict(
    domain="base",         # base (pretrain from scratch) | lua | tinystories (fine-tune from base)
    data_dir="data",       # made by data.py
    out_dir="out",         # checkpoints go to out_dir/<name>/ckpt.pt
    name="",               # run name; default: the domain
    parent="base",         # fine-tunes start from out_dir/<parent>/ckpt.pt
    resume=False,          # continue out_dir/<name>/ckpt.pt (a finished run is left as it is)
    overwrite=False,       # start over even if a checkpoint exists
    # model (pretraining only; a fine-tune inherits its parent's)
    block_size=256, d_model=512, n_head=16, n_kv_head=8, d_mlp=1024, mlp="swiglu",
    rope_theta=10000.0, norm_eps=1e-6,
    # optimisation; -1 = take the recipe below for this domain (pretrain or finetune)
    batch_size=64,         # sequences per micro-step (per GPU)
    grad_accum=1,          # micro-steps per optimizer step
    lr=-1.0, min_lr_frac=0.0,   # cosine from lr down to lr * min_lr_frac (HF's cosine goes to 0)
    warmup_iters=-1, weight_decay=-1.0, epochs=-1.0,
    max_iters=0,           # > 0: a fixed number of steps instead of epochs
    stop_iter=0,           # > 0: stop after this step, as if interrupted (split a run; --resume later)
    beta1=0.9, beta2=0.999, grad_clip=1.0,
    # evaluation and logging
    eval_interval=1000, eval_iters=50, log_interval=50,
    seed=1337,
    # system
    device="auto",         # auto: cuda when available
    dtype="auto",          # auto: bfloat16 autocast on CUDA, float32 on CPU
    compile=True,          # torch.compile on CUDA (ignored on CPU)
    peak_flops=989e12,     # for MFU: H100 SXM dense bf16
)
RECIPES = {  # per preset: (pretrain, finetune) optimisation recipes
    "paper": {"pretrain": dict(lr=6e-4, warmup_iters=0, weight_decay=0.1, epochs=3.0),
              "finetune": dict(lr=2e-5, warmup_iters=500, weight_decay=0.01, epochs=1.0)},
    # tiny: a few minutes on 2 CPU cores; the fine-tune lr is higher than the paper's because
    # it has ~300 steps, not ~50k, to move the model
    "tiny": {"pretrain": dict(lr=2e-3, warmup_iters=50, weight_decay=0.1, epochs=2.0),
             "finetune": dict(lr=3e-4, warmup_iters=30, weight_decay=0.01, epochs=1.0)},
}
PRESETS = {
    "paper": dict(),
    "tiny": dict(block_size=128, d_model=128, n_head=4, n_kv_head=2, d_mlp=256, batch_size=32,
                 eval_interval=200, eval_iters=20, log_interval=20, min_lr_frac=0.1, compile=False),
}
# settings a resume may change; every other key must equal the checkpoint's (same data, model, schedule)
RESUME_FREE = {"resume", "overwrite", "stop_iter", "eval_interval", "eval_iters", "log_interval", "device",
               "compile", "data_dir", "out_dir", "peak_flops", "max_iters_resolved", "preset"}


def lr_schedule(it, lr, warmup, max_iters, min_lr_frac):
    """Learning rate of step `it`: linear warmup over `warmup` steps, then cosine from lr down to
    lr * min_lr_frac at max_iters (HF's get_cosine_schedule_with_warmup when min_lr_frac = 0)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    progress = min(1.0, (it - warmup) / max(1, max_iters - warmup))
    return lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def main(argv=None):
    cfg = parse_config(dict(config), argv, PRESETS, default_preset())
    if cfg["domain"] not in ("base", "lua", "tinystories"):
        die(f"unknown domain {cfg['domain']!r}; train.py takes --domain base (pretrain), lua or tinystories (fine-tune)")
    require_positive(cfg, ["batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval"])
    finetune = cfg["domain"] != "base"
    recipe = RECIPES[cfg["preset"]]["finetune" if finetune else "pretrain"]
    for k, v in recipe.items():  # -1 means "the recipe's value"
        if cfg[k] == -1:
            cfg[k] = v
    name = cfg["name"] or cfg["domain"]
    ckpt_path = os.path.join(cfg["out_dir"], name, "ckpt.pt")

    # -------------------------------------------------------------------------
    # devices: DDP when launched by torchrun (one process per GPU), as nanoGPT does
    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        from torch.distributed import init_process_group
        init_process_group(backend="nccl")
        rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
        device = pick_device(cfg["device"])
    master = rank == 0
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = cfg["dtype"] if cfg["dtype"] != "auto" else ("bfloat16" if device_type == "cuda" else "float32")
    if dtype not in ("float32", "bfloat16"):  # float16 would need a GradScaler; bf16 has float32's range
        die(f"--dtype {dtype}: use float32 or bfloat16")
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=torch.bfloat16)
    torch.manual_seed(cfg["seed"] + rank)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # -------------------------------------------------------------------------
    # data; its tokenizer must be the one the parent was trained with
    meta = datalib.read_meta(cfg["data_dir"], cfg["domain"])
    train_tokens = datalib.load_tokens(cfg["data_dir"], cfg["domain"], "train")
    val_tokens = datalib.load_tokens(cfg["data_dir"], cfg["domain"], "val")
    tok_hash = meta["tokenizer_hash"]
    data_hash = datalib.data_fingerprint(cfg["data_dir"], [cfg["domain"]])  # which token files made this model

    # -------------------------------------------------------------------------
    # model: resume, fine-tune from the parent, or fresh
    resume_ckpt = None
    if os.path.exists(ckpt_path) and not cfg["overwrite"]:
        if not cfg["resume"]:
            die(f"{ckpt_path} exists; add --resume to continue it or --overwrite to start over")
        resume_ckpt = load_checkpoint(ckpt_path, "checkpoint to resume")
        if resume_ckpt.get("finished"):
            if master:
                print(f"{ckpt_path} is finished (iter {resume_ckpt['iter_num']}, val loss "
                      f"{resume_ckpt['val_loss'].get(cfg['domain'], float('nan')):.4f}); nothing to do")
            if ddp:
                torch.distributed.destroy_process_group()
            return resume_ckpt
        if "optimizer" not in resume_ckpt:
            die(f"{ckpt_path} holds no training state (a merge?); it cannot be resumed, use --overwrite to train anew")
        changed = [f"{k} {resume_ckpt['config'].get(k)!r} -> {cfg[k]!r}" for k in cfg
                   if k not in RESUME_FREE and resume_ckpt["config"].get(k) != cfg[k]]
        if changed:
            die(f"--resume of {ckpt_path} with other settings ({'; '.join(changed)}); use the original ones, or --overwrite")
        if resume_ckpt["tokenizer_hash"] != tok_hash:
            die(f"{cfg['data_dir']}/{cfg['domain']} was tokenized with another tokenizer than {ckpt_path}; "
                f"re-run python data.py with the original tokenizer or train with --overwrite")
    parents = []
    if resume_ckpt is not None:
        model = model_from_checkpoint(resume_ckpt, device)
        parents = resume_ckpt["parents"]
        cfg_saved = resume_ckpt["config"]
        if master:
            print(f"resuming {ckpt_path} from iter {resume_ckpt['iter_num']}")
    elif finetune:
        parent_path = os.path.join(cfg["out_dir"], cfg["parent"], "ckpt.pt")
        parent = load_checkpoint(parent_path, f"parent checkpoint '{cfg['parent']}'",
                                 MAKES.get(cfg["parent"], f"python train.py --domain {cfg['parent']}"))
        if parent["tokenizer_hash"] != tok_hash:
            die(f"data in {cfg['data_dir']}/{cfg['domain']} was tokenized with another tokenizer "
                f"({tok_hash}) than the parent {parent_path} ({parent['tokenizer_hash']}); "
                f"re-run: python data.py --domain {cfg['domain']} --data_dir <the parent's data_dir>")
        model = model_from_checkpoint(parent, device)  # every weight, exactly the parent's
        parents = [{"name": cfg["parent"], "hash": sha256_file(parent_path)}]
        del parent
    else:
        margs = ModelArgs(vocab_size=meta["vocab_size"], **{k: cfg[k] for k in (
            "block_size", "d_model", "n_head", "n_kv_head", "d_mlp", "mlp", "rope_theta", "norm_eps")})
        if margs.d_model % margs.n_head or margs.n_head % margs.n_kv_head:
            die(f"d_model {margs.d_model} must divide by n_head {margs.n_head}, and n_head by n_kv_head {margs.n_kv_head}")
        model = Transformer(margs).to(device)
    margs = model.args
    if margs.vocab_size < meta["vocab_size"]:
        die(f"the model's vocabulary ({margs.vocab_size}) is smaller than the data's ({meta['vocab_size']})")
    block, B = margs.block_size, cfg["batch_size"]

    # -------------------------------------------------------------------------
    # schedule: epochs over the training tokens unless max_iters is given
    tokens_per_iter = B * block * cfg["grad_accum"] * world
    if cfg["max_iters"] > 0:
        max_iters = cfg["max_iters"]
    else:
        max_iters = max(1, math.ceil(cfg["epochs"] * len(train_tokens) / tokens_per_iter))
    if resume_ckpt is not None:
        max_iters = cfg_saved["max_iters_resolved"]  # the schedule of the run being resumed
    cfg["max_iters_resolved"] = max_iters
    warmup = cfg["warmup_iters"]

    def lr_at(it):
        return lr_schedule(it, cfg["lr"], warmup, max_iters, cfg["min_lr_frac"])

    optimizer = model.configure_optimizer(cfg["weight_decay"], cfg["lr"], (cfg["beta1"], cfg["beta2"]), device_type)
    gen = torch.Generator().manual_seed(cfg["seed"] + rank)  # the data order, saved for exact resumes
    iter_num, best_val = 0, float("inf")
    if resume_ckpt is not None:
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        if rank == 0:
            gen.set_state(resume_ckpt["data_rng"][0])
        else:  # only rank 0's stream is saved; other ranks continue on a fresh, distinct stream
            gen.manual_seed(cfg["seed"] + rank + 7919 * resume_ckpt["iter_num"])
        iter_num, best_val = resume_ckpt["iter_num"], resume_ckpt["best_val_loss"]
        del resume_ckpt
    raw_model = model
    if cfg["compile"] and device_type == "cuda":
        if master:
            print("compiling the model (torch.compile)...")
        model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(device.split(":")[1])])

    if master:
        print(f"preset {cfg['preset']}" + (" (no CUDA GPU: --preset paper for the DESIGN.md figures)"
                                            if cfg["preset"] == "tiny" and device_type == "cpu" else ""))
        print(f"{'fine-tuning ' + name + ' from ' + cfg['parent'] if finetune else 'pretraining ' + name} "
              f"on {cfg['data_dir']}/{cfg['domain']} (source: {meta.get('source')}); device {device}, {dtype}, world {world}")
        print(f"model: {raw_model.num_params() / 1e6:.2f}M params, d_model {margs.d_model}, heads {margs.n_head}/{margs.n_kv_head}, "
              f"d_mlp {margs.d_mlp} ({margs.mlp}), vocab {margs.vocab_size}, block {block}")
        print(f"data: {len(train_tokens):,} train / {len(val_tokens):,} val tokens; {tokens_per_iter:,} tokens a step, "
              f"{max_iters} steps = {max_iters * tokens_per_iter / max(1, len(train_tokens)):.2f} epochs; "
              f"lr {cfg['lr']:g}, warmup {warmup}, wd {cfg['weight_decay']:g}")

    # -------------------------------------------------------------------------
    # evaluation: the own domain's val split, plus the other prepared domains at the end
    def evaluate(domains):
        out = {}
        for d in domains:
            toks = val_tokens if d == cfg["domain"] else datalib.load_tokens(cfg["data_dir"], d, "val")
            out[d] = eval_loss(raw_model, toks, B, cfg["eval_iters"], device, autocast)
        return out

    def save(val_losses, finished):
        if not master:
            return
        ckpt = {"model": raw_model.state_dict(), "model_args": asdict(margs), "config": cfg,
                "name": name, "domain": cfg["domain"], "iter_num": iter_num, "best_val_loss": best_val,
                "val_loss": val_losses, "tokenizer_hash": tok_hash, "parents": parents,
                "optimizer": optimizer.state_dict(), "data_rng": [pending_state], "finished": finished,
                "provenance": provenance(cfg, data={"source": meta.get("source"), "tokenizer_hash": tok_hash,
                                                    "meta_sha256": data_hash}, parents=parents)}
        atomic_torch_save(ckpt, ckpt_path)

    # -------------------------------------------------------------------------
    # the training loop
    model.train()
    pending_state = gen.get_state()  # the data RNG before the batch in hand: what a resume restarts from
    x, y = datalib.get_batch(train_tokens, B, block, device, gen)
    t0 = t_start = time.time()
    tokens_seen_run, last_logged = 0, iter_num
    loss_acc = torch.zeros((), device=device)
    val_losses = {}
    while iter_num < max_iters:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(iter_num)
        loss_acc.zero_()
        for micro in range(cfg["grad_accum"]):
            if ddp:  # sync gradients on the last micro-step only
                model.require_backward_grad_sync = micro == cfg["grad_accum"] - 1
            with autocast:
                _, loss = model(x, y)
                loss = loss / cfg["grad_accum"]
            pending_state = gen.get_state()
            x, y = datalib.get_batch(train_tokens, B, block, device, gen)  # prefetch while the GPU works
            loss.backward()
            loss_acc += loss.detach()
        # the gradient norm (clipped when grad_clip > 0) and the loss must be finite before the step, so
        # a NaN never reaches the weights or a checkpoint; one flag, all-reduced so every DDP rank stops
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] if cfg["grad_clip"] > 0 else float("inf"))
        bad = (~torch.isfinite(loss_acc) | ~torch.isfinite(gnorm)).float()
        if ddp:
            torch.distributed.all_reduce(bad)
        if bad.item():
            if ddp:
                torch.distributed.destroy_process_group()
            die(f"loss {loss_acc.item():.4g}, gradient norm {gnorm.item():.4g} at iter {iter_num}: not finite; stopped "
                f"before the step. The last good checkpoint {ckpt_path} is kept (if any): lower --lr and --overwrite")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        tokens_seen_run += tokens_per_iter

        if iter_num % cfg["log_interval"] == 0 and master:
            lossf = loss_acc.item()  # syncs with the GPU only at log time
            dt = (time.time() - t0) / max(1, iter_num - last_logged)
            tps = tokens_per_iter / dt
            mfu = raw_model.flops_per_token() * tps / world / cfg["peak_flops"]
            print(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, {dt * 1000:.1f}ms, "
                  f"{tps / 1e3:.1f}k tok/s, lr {lr_at(iter_num - 1):.2e}" +
                  (f", mfu {mfu * 100:.1f}%" if device_type == "cuda" else ""))  # MFU vs a GPU peak means nothing on a CPU
            t0, last_logged = time.time(), iter_num
        last = iter_num == max_iters
        stopping = cfg["stop_iter"] > 0 and iter_num >= cfg["stop_iter"]
        if iter_num % cfg["eval_interval"] == 0 or last or stopping:
            val_losses = evaluate([cfg["domain"]])
            best_val = min(best_val, val_losses[cfg["domain"]])
            if master:
                print(f"iter {iter_num}: val loss {val_losses[cfg['domain']]:.4f} ({cfg['domain']})")
            save(val_losses, finished=False)
            t0 = time.time()  # do not count evaluation in the step time
        if stopping and not last:
            if master:
                print(f"stopping at iter {iter_num} (--stop_iter); continue with --resume")
            if ddp:
                torch.distributed.destroy_process_group()
            return None

    # -------------------------------------------------------------------------
    # final: validation loss on every prepared domain, the finished checkpoint, metrics.json
    others = [d for d in ("base", "lua", "tinystories") if d != cfg["domain"] and
              os.path.exists(os.path.join(cfg["data_dir"], d, "val.bin"))]
    val_losses = evaluate([cfg["domain"]] + others)
    elapsed = time.time() - t_start
    save(val_losses, finished=True)
    if master:
        metrics = {"name": name, "domain": cfg["domain"], "iters": iter_num, "val_loss": val_losses,
                   "tokens_per_step": tokens_per_iter, "tokens_this_run": tokens_seen_run,
                   "seconds_this_run": round(elapsed, 2), "tokens_per_s": round(tokens_seen_run / max(elapsed, 1e-9)),
                   "params": raw_model.num_params(), "checkpoint": ckpt_path,
                   "checkpoint_sha256": sha256_file(ckpt_path), "data_source": meta.get("source"),
                   "provenance": provenance(cfg, tokenizer_hash=tok_hash, parents=parents, data_meta_sha256=data_hash)}
        atomic_write_json(os.path.join(cfg["out_dir"], name, "metrics.json"), metrics)
        print("val loss: " + ", ".join(f"{d} {v:.4f}" for d, v in val_losses.items()) +
              f"  ({elapsed:.0f}s) -> {ckpt_path}")
    if ddp:
        from torch.distributed import destroy_process_group
        destroy_process_group()
    return val_losses


if __name__ == "__main__":
    main()
