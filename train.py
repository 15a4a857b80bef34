"""
Pretraining (--domain base) and fine-tuning (--domain lua | tinystories) of the one-layer LM.

    python train.py --domain base                   # from scratch on the base mix (BabyLM + Python)
    python train.py --domain lua                    # every weight fine-tuned from out/base/ckpt.pt
    python train.py --domain tinystories --preset paper --compile=false
    torchrun --standalone --nproc_per_node=4 train.py --domain base --batch_size=16  # DDP: 4 GPUs x 16

The recipes follow DESIGN.md (the authors' released configs): pretraining AdamW lr 6e-4, cosine,
no warmup, wd 0.1, betas (0.9, 0.999), 64 x 256 tokens a step, 3 epochs; fine-tuning lr 2e-5,
cosine, 500 warmup steps (at most 10% of the run), wd 0.01, 1 epoch; an epoch reads every
256-token block once, in a shuffled order (--sampler). The tiny preset scales everything down for a CPU.
Any config key below can be overridden: --key=value (python train.py --help lists them).

Reading order: main() is the algorithm; each of its steps is one function below it, in order.
"""
import importlib
import math
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
from common import (atomic_write_json, check_adam_state, check_free_memory, check_free_space, check_model_folder,
                    check_resume, check_resume_or_overwrite, cli, default_preset, die, lock_dir, misfit, parse_config,
                    peak_gpu_mib, pick_device, provenance, read_json, record_problem, set_threads, sha256_file, stamp)

import torch

import data as datalib
import fast
from model import (MAKES, STUDY_DOMAIN, ModelArgs, Transformer, check_finished, check_preset, command_of, eval_loss,
                   load_checkpoint, make_command, model_from_checkpoint, save_checkpoint, train_command, trained_with)

# -----------------------------------------------------------------------------
# config: the paper's pretraining values; PRESETS below override them per preset and per variant
config = dict(
    domain="base",          # base (pretrain from scratch) | lua | tinystories (fine-tune from --parent)
    data_dir="data",        # token files made by data.py
    out_dir="out",          # checkpoints go to out_dir/<name>/ckpt.pt
    name="",                # run name (folder under out_dir); empty: the domain
    parent="base",          # fine-tunes start from out_dir/<parent>/ckpt.pt
    allow_unfinished=False,  # fine-tune from a parent that did not finish (stopped early or killed)
    allow_other_preset=False,  # fine-tune with another preset than the parent was trained with (its recipe)
    resume=False,           # continue out_dir/<name>/ckpt.pt exactly (a finished run is left as it is)
    overwrite=False,        # start over even if a checkpoint exists
    # model shape (pretraining only; a fine-tune inherits its parent's)
    block_size=256,         # context length in tokens
    d_model=512,            # residual stream width
    n_head=16,              # query heads; d_model / n_head must be even (RoPE rotates pairs)
    n_kv_head=8,            # key/value heads (grouped-query attention); must divide n_head
    d_mlp=1024,             # MLP hidden width = the SAEs' input width
    mlp="swiglu",           # swiglu (Mistral) | gelu | relu
    rope_theta=10000.0,     # RoPE base frequency
    norm_eps=1e-6,          # RMSNorm epsilon
    # optimisation (the variant presets pretrain / finetune set lr, warmup, decay and epochs)
    batch_size=64,          # sequences per micro-step and process (a step: batch_size x processes x grad_accum)
    grad_accum=1,           # micro-steps per optimizer step
    lr=6e-4,                # peak learning rate (AdamW)
    min_lr_frac=0.0,        # cosine decays to lr * min_lr_frac (0 as in HF's cosine schedule)
    warmup_iters=0,         # linear warmup steps (at most 10% of the run's steps)
    weight_decay=0.1,       # AdamW decay of matrices (never of norm gains)
    epochs=3.0,             # passes over the training tokens (unless --max_iters)
    max_iters=0,            # > 0: this many steps instead of --epochs
    sampler="epochs",       # epochs: every block of block_size tokens once an epoch, reshuffled each
                            # epoch (the authors' trainer); windows: random starts, as nanoGPT draws them
    stop_iter=0,            # > 0: stop after this step, as if interrupted (continue with --resume)
    beta1=0.9,              # AdamW beta1
    beta2=0.999,            # AdamW beta2
    grad_clip=1.0,          # clip the gradient norm to this (0: no clipping)
    # evaluation and logging
    eval_interval=1000,     # steps between validation evaluations (and checkpoints)
    eval_iters=50,          # validation batches per evaluation
    log_interval=50,        # steps between log lines (and checks that the loss is finite)
    seed=1337,              # seed of the initial weights and the data order
    # system
    device="auto",          # auto: cuda when available, else cpu
    dtype="auto",           # auto: bfloat16 autocast on CUDA, float32 on CPU
    fast=True,              # the speed-ups of fast.py: on a CPU the LM head's logits in cache-sized blocks of rows
                            # (the training loss: fast.ChunkedHead; evaluation: fast.head_rows)
    compile=True,           # torch.compile on CUDA (falls back to eager if it fails); not on a CPU (minutes to compile)
    threads=0,              # CPU threads; 0: the cores free now
    peak_flops=989e12,      # the device's peak FLOP/s for MFU (default: H100 SXM dense bf16)
)
PRESETS = {
    "paper": dict(),
    "paper/pretrain": dict(lr=6e-4, warmup_iters=0, weight_decay=0.1, epochs=3.0),
    "paper/finetune": dict(lr=2e-5, warmup_iters=500, weight_decay=0.01, epochs=1.0),
    # tiny: a few minutes on 2 CPU cores
    "tiny": dict(block_size=128, d_model=128, n_head=4, n_kv_head=2, d_mlp=256, batch_size=32,
                 eval_interval=200, eval_iters=20, log_interval=20, min_lr_frac=0.1, compile=False),
    "tiny/pretrain": dict(lr=2e-3, warmup_iters=50, weight_decay=0.1, epochs=2.0),
    # the fine-tune lr is higher than the paper's because it has ~300 steps, not ~50k, to move the model
    "tiny/finetune": dict(lr=3e-4, warmup_iters=30, weight_decay=0.01, epochs=1.0),
}
CHECKS = {
    "domain": ("base", "lua", "tinystories"), "mlp": ("swiglu", "gelu", "relu"), "sampler": ("epochs", "windows"),
    "dtype": ("auto", "float32", "bfloat16"),  # float16 would need a GradScaler; bf16 has float32's range
    "block_size": ">=1", "d_model": ">=1", "n_head": ">=1", "n_kv_head": ">=1", "d_mlp": ">=1",
    "rope_theta": ">0", "norm_eps": ">0", "batch_size": ">=1", "grad_accum": ">=1", "lr": ">=0",
    "min_lr_frac": "[0,1]", "warmup_iters": ">=0", "weight_decay": ">=0", "epochs": ">0", "max_iters": ">=0",
    "stop_iter": ">=0", "beta1": "[0,1)", "beta2": "[0,1)", "grad_clip": ">=0", "eval_interval": ">=1",
    "eval_iters": ">=1", "log_interval": ">=1", "seed": ">=0", "threads": ">=0", "peak_flops": ">0",
}
# settings a resume may change; every other key must equal the checkpoint's (same data, model, schedule).
# batch_size is per process: open_run holds the batch of a step (batch_global) to the checkpoint's instead
RESUME_FREE = {"resume", "overwrite", "stop_iter", "eval_interval", "eval_iters", "log_interval", "device",
               "compile", "data_dir", "out_dir", "peak_flops", "max_iters_resolved", "preset", "threads",
               "allow_unfinished", "allow_other_preset", "batch_size", "batch_global"}
ETA_STEPS = 5  # steps timed (after the first, which may compile) for the start-up time estimate


def variant(cfg):
    return "finetune" if cfg["domain"] != "base" else "pretrain"


def check_consistency(cfg):
    """The settings that must agree with each other (each alone is checked by CHECKS)."""
    if cfg["d_model"] % cfg["n_head"] or (cfg["d_model"] // cfg["n_head"]) % 2:
        die(f"--d_model {cfg['d_model']} must be n_head ({cfg['n_head']}) times an even head size")
    if cfg["n_head"] % cfg["n_kv_head"]:
        die(f"--n_head {cfg['n_head']} must be a multiple of --n_kv_head {cfg['n_kv_head']}")


def lr_schedule(it, lr, warmup, max_iters, min_lr_frac):
    """Learning rate of step `it`: linear warmup over `warmup` steps (lr (it + 1) / (warmup + 1):
    never 0), then cosine from lr down to lr * min_lr_frac at max_iters (HF's cosine when
    min_lr_frac = 0)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    progress = min(1.0, (it - warmup) / max(1, max_iters - warmup))
    return lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def main(argv=None):
    cfg = parse_config(dict(config), argv, PRESETS, default_preset(), checks=CHECKS, variant=variant)
    check_resume_or_overwrite(cfg)
    check_consistency(cfg)
    name = cfg["name"] or cfg["domain"]  # (the saved config keeps "": resumes compare configs)
    # the output folder is a new or own one: never the parent it starts from, another stage's folder or a path
    if cfg["domain"] != "base" and name == cfg["parent"]:
        die(f"--name {name} is the parent this fine-tune starts from; it would overwrite it: choose another "
            f"--name (e.g. --name {cfg['domain']})")
    run_dir = os.path.join(cfg["out_dir"], name)
    # (--overwrite would lose the study's model; a --resume of one names the setting that differs from its run's)
    resumes = cfg["resume"] and os.path.exists(os.path.join(run_dir, "ckpt.pt"))
    if name in MAKES and STUDY_DOMAIN[name] != cfg["domain"] and not resumes:
        die(f"--name {name} is the folder of the study's {name} model ({MAKES[name]}); a {cfg['domain']} run "
            f"would replace it: choose another --name (e.g. --name {cfg['domain']}_2)")
    check_model_folder("--name", name)
    env = setup_devices(cfg)
    # a merge's folder is merge.py's (as a train.py folder is refused by merge.py): trained over, even with
    # --overwrite, its merge.json would stay beside another model, and every fix the readers name dead-ends
    if os.path.lexists(os.path.join(run_dir, "merge.json")):
        die(f"--name {name}: {run_dir} holds a merge (merge.py's merge.json); training would replace it; choose "
            f"another --name (e.g. --name {cfg['domain']}_2)")
    run = None
    try:  # the one place the DDP process group is torn down, however the run ends
        with lock_dir(run_dir, f"train.py --name {name}") if env.master else nullcontext():
            run = open_run(cfg, env, name, os.path.join(run_dir, "ckpt.pt"))
            if run.finished:
                return run.val_loss
            build_model(run)
            load_data(run)
            make_schedule(run)
            print_plan(run)
            if not train_loop(run):
                return None  # --stop_iter
            return finish(run)
    finally:
        if env.ddp:
            # on a normal end the ranks leave together (after an error none waits: the other ranks may never
            # get here; torchrun stops them). The group ends here, not at exit: gloo's threads still drop
            # the last collectives' tensors, which takes the GIL, and a thread asking for it while the
            # interpreter exits aborts the process. DDP, which holds the group, goes first (the group
            # ended by it would wait for those threads while holding the GIL: a deadlock);
            # destroy_process_group ends it with the GIL released
            if sys.exc_info()[0] is None:
                torch.distributed.barrier()
            if run is not None:
                run.model = None
            torch.distributed.destroy_process_group()


# -----------------------------------------------------------------------------
# the steps of main(), in order

def setup_devices(cfg):
    """DDP when launched by torchrun (one process per GPU, as nanoGPT does, or CPU processes with
    --device=cpu or no GPU), else one device."""
    env = SimpleNamespace(ddp=int(os.environ.get("RANK", -1)) != -1, rank=0, world=1)
    if env.ddp:
        from torch.distributed import init_process_group
        # imported before the group exists: torch.distributed.nn's functions take group.WORLD as a default
        # argument when first imported (DDP imports them), which kept the group alive past
        # destroy_process_group, into the interpreter's exit (see the end of main)
        importlib.import_module("torch.distributed.nn")
        env.rank, env.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        gpu = cfg["device"] != "cpu" and torch.cuda.is_available()
        init_process_group(backend="nccl" if gpu else "gloo")  # NCCL only runs on GPUs; gloo on CPUs
        env.device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if gpu else "cpu"
        if gpu:
            torch.cuda.set_device(env.device)
    else:
        env.device = pick_device(cfg["device"])
    env.master = env.rank == 0
    env.device_type = "cuda" if env.device.startswith("cuda") else "cpu"
    env.dtype = cfg["dtype"] if cfg["dtype"] != "auto" else ("bfloat16" if env.device_type == "cuda" else "float32")
    env.autocast = nullcontext() if env.dtype == "float32" else torch.autocast(env.device_type, dtype=torch.bfloat16)
    env.threads = set_threads(cfg["threads"], env.device_type)
    torch.manual_seed(cfg["seed"] + env.rank)
    if env.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return env


def run_how(cfg, name):
    """The command that trains this run again (model.train_command), with its settings (model.trained_with)."""
    return trained_with(train_command(cfg["domain"], name, cfg["parent"]), cfg)


def open_run(cfg, env, name, ckpt_path):
    """A fresh run, or the checkpoint to resume with the same settings (finished or not).
    A finished run with unchanged settings is left as it is (run.finished)."""
    run = SimpleNamespace(cfg=cfg, env=env, name=name, ckpt_path=ckpt_path, resume=None, finished=False,
                          val_loss=None)
    # a step's batch: batch_size x world sequences, every DDP process its share of one stream (next_batch); a
    # resume keeps it, however many processes share it (a DDP run continued, or found finished, by one)
    cfg["batch_global"] = cfg["batch_size"] * env.world
    if not os.path.exists(ckpt_path) or cfg["overwrite"]:
        return run
    if not cfg["resume"]:
        die(f"{ckpt_path} exists; add --resume to continue it or --overwrite to start over")
    ck = load_checkpoint(ckpt_path, "checkpoint to resume",
                         trained_with(MAKES[name], cfg) if name in MAKES else run_how(cfg, name))
    if "optimizer" not in ck:
        die(f"{ckpt_path} holds no training state (a merge?); it cannot be resumed, use --overwrite to train anew")
    was = batch_of(ck)
    if was != cfg["batch_global"]:
        fix = (f"give --batch_size {was // env.world}" if isinstance(was, int) and was % env.world == 0 else
               f"run it in a number of processes that divides {was}")
        die(f"--resume of {ckpt_path} with another batch: its steps take {was} sequences (--batch_size x "
            f"processes), this run's {cfg['batch_size']} x {env.world}; {fix}, or --overwrite to start over")
    check_resume(ck["config"], cfg, RESUME_FREE, ckpt_path)
    if ck.get("finished"):
        if env.master:
            print(f"{ckpt_path} is finished (iter {ck['iter_num']}, val loss "
                  f"{ck['val_loss'].get(cfg['domain'], float('nan')):.4f}); nothing to do")
        run.finished, run.val_loss = True, ck["val_loss"]
        if env.master:
            restore_metrics(run, ck)
    run.resume = ck
    return run


def batch_of(ck):
    """The sequences a checkpoint's steps take (batch_size x processes): saved as batch_global; in a run saved
    before it, from its loss curve's tokens (a DDP run's batch_size is each process's share), else batch_size."""
    c = ck["config"]
    if "batch_global" in c:
        return c["batch_global"]
    try:
        last = [h for h in ck.get("history") or [] if h.get("iter")][-1]
        return last["tokens"] // (last["iter"] * c["block_size"] * c["grad_accum"])
    except (IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return c.get("batch_size")


def restore_metrics(run, ck):
    """A finished run's metrics.json, rewritten from its checkpoint where it is missing, damaged or of another
    checkpoint (both hold the loss curve and the val losses; the speed of the run is not kept)."""
    path, digest = os.path.join(os.path.dirname(run.ckpt_path), "metrics.json"), sha256_file(run.ckpt_path)
    try:
        rec = read_json(path)  # of this checkpoint and shaped as finish() writes it (else the readers refuse it)
        ok = rec["checkpoint_sha256"] == digest and record_problem(rec, "train_metrics") is None
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:  # finish()'s record but the run's speed (its batch: open_run held it to this run's)
        cfg, data = run.cfg, ((ck.get("provenance") or {}).get("data") or {})
        atomic_write_json(path, stamp({"name": run.name, "domain": ck.get("domain"), "iters": ck["iter_num"],
                                       "val_loss": ck["val_loss"], "history": ck.get("history") or [],
                                       "tokens_per_step": cfg["batch_global"] * ck["model_args"]["block_size"]
                                       * cfg["grad_accum"], "params": sum(v.numel() for v in ck["model"].values()),
                                       "checkpoint": run.ckpt_path, "checkpoint_sha256": digest,
                                       "data_source": data.get("source"), "provenance": {
                                           **(ck.get("provenance") or {}), "tokenizer_hash": ck["tokenizer_hash"],
                                           "data_meta_sha256": data.get("meta_sha256")}}, "train_metrics"))
        print(f"{path} was missing, damaged or of another checkpoint: rewritten from {run.ckpt_path}")


def build_model(run):
    """The model and its lineage: the resumed checkpoint, the parent's exact weights (fine-tune), or fresh."""
    cfg, env, ck = run.cfg, run.env, run.resume
    run.tok_hash, run.lineage_name = None, run.name  # the tokenizer the data must have (None: data_dir's own)
    if ck is not None:
        model = model_from_checkpoint(ck, env.device, run.ckpt_path, run_how(cfg, run.name))
        run.parents, run.tok_hash = ck["parents"], ck["tokenizer_hash"]
        # a fine-tune finished from a parent since re-made would descend from weights no longer on disk
        # (analyze.py's lineage check would refuse it, after its SAEs were trained): refused now
        parent = os.path.join(cfg["out_dir"], cfg["parent"], "ckpt.pt")
        if cfg["domain"] != "base" and run.parents and os.path.isfile(parent) and \
                sha256_file(parent) != run.parents[0].get("hash"):
            die(f"'{cfg['parent']}' was re-made since {run.ckpt_path} began from it; start this fine-tune over "
                f"from the new one: {run_how(cfg, run.name)} --overwrite")
        if env.master:
            print(f"resuming {run.ckpt_path} from iter {ck['iter_num']}")
    elif cfg["domain"] != "base":
        path = os.path.join(cfg["out_dir"], cfg["parent"], "ckpt.pt")
        parent = load_checkpoint(path, f"parent checkpoint '{cfg['parent']}'",
                                 make_command(cfg["parent"], cfg["out_dir"]))
        check_finished(parent, path, cfg["parent"], cfg["allow_unfinished"])
        check_preset(parent, path, cfg["preset"], cfg["allow_other_preset"],
                     f"fine-tune with the {cfg['preset']} recipe")
        run.tok_hash, run.lineage_name = parent["tokenizer_hash"], cfg["parent"]
        model = model_from_checkpoint(parent, env.device, path,  # exactly the parent's weights
                                      command_of(cfg["parent"], parent))
        run.parents = [{"name": cfg["parent"], "hash": sha256_file(path)}]
    else:
        margs = ModelArgs(vocab_size=datalib.read_meta(cfg["data_dir"], cfg["domain"])["vocab_size"], **{k: cfg[k] for k in (
            "block_size", "d_model", "n_head", "n_kv_head", "d_mlp", "mlp", "rope_theta", "norm_eps")})
        check_step_memory(run, margs)  # before its weights are made
        model, run.parents = Transformer(margs).to(env.device), []
    check_step_memory(run, model.args)  # the batch a step takes, whichever way the model came
    # a checkpoint holds the weights and AdamW's two moments (float32); the old one stays until the new is in place
    check_free_space(os.path.dirname(run.ckpt_path), 2 * 3 * 4 * model.num_params() + (16 << 20),
                     "train.py's checkpoint")
    run.raw_model = run.model = model


def check_step_memory(run, margs):
    """One line when a training step cannot fit the device's free memory, by a lower bound: weights,
    gradients and AdamW's two moments in float32, and the activations the backward keeps of the MLP and
    the residual stream (2 bytes each, as under bf16). Past it a CPU run is killed without a word."""
    with torch.device("meta"):  # the parameter count without making the weights
        n = Transformer(margs).num_params()
    tokens = run.cfg["batch_size"] * margs.block_size
    need = 16 * n + 2 * tokens * (3 * margs.d_mlp + 4 * margs.d_model)
    check_free_memory(need, run.env.device, f"a training step ({n / 1e6:,.1f}M parameters, {tokens:,} tokens)",
                      "lower --batch_size (--grad_accum keeps the tokens of a step) or the model's sizes")


def load_data(run):
    """The token files, checked against the model (data.open_tokens: sizes, vocabulary, and the tokenizer
    of the resumed run or the parent; a fresh model: the tokenizer in data_dir), and the other prepared
    domains' val splits for the final evaluation."""
    cfg, who, vocab = run.cfg, run.lineage_name, run.raw_model.args.vocab_size
    def open_split(domain, split):
        return datalib.open_tokens(cfg["data_dir"], domain, split, run.tok_hash, vocab, who)
    meta = datalib.read_meta(cfg["data_dir"], cfg["domain"])
    others = [d for d in ("base", "lua", "tinystories") if d != cfg["domain"] and
              os.path.exists(os.path.join(cfg["data_dir"], d, "val.bin"))]
    val = {d: open_split(d, "val") for d in [cfg["domain"]] + others}
    # an evaluation needs a window of block_size + 1 tokens: found now, not at the first evaluation
    # (which would end the run before its first checkpoint); another domain's is left out, said so
    T = run.raw_model.args.block_size
    for d in [d for d, a in val.items() if len(a) <= T]:
        short = f"the {d} val split has {len(val[d]):,} tokens, fewer than one window of {T + 1}"
        if d == cfg["domain"]:
            die(f"{short}: the run could never be evaluated; give the corpus more validation text, then: "
                f"{datalib.remake_command(cfg['data_dir'], d)} --force")
        print(f"{short}: left out of the evaluations")
        del val[d]
    run.data = SimpleNamespace(
        meta=meta, tok_hash=meta["tokenizer_hash"], train=open_split(cfg["domain"], "train"), val=val,
        fingerprint=datalib.data_fingerprint(cfg["data_dir"], [cfg["domain"]]),  # which token files made the model
        tokens=datalib.tokens_sha256(cfg["data_dir"], [cfg["domain"]]))  # and the tokens it trains on


def make_schedule(run):
    """Steps (epochs over the training tokens unless --max_iters), optimizer, data order, step counters."""
    cfg, env, ck, model = run.cfg, run.env, run.resume, run.raw_model
    run.B, run.block = cfg["batch_size"], model.args.block_size
    run.tokens_per_iter = run.B * run.block * cfg["grad_accum"] * env.world
    if ck is not None:  # an unfinished run goes on with the tokens it began on, never others
        datalib.check_same_tokens(((ck.get("provenance") or {}).get("data") or {}).get("train_sha256"),
                                  cfg["data_dir"], [cfg["domain"]], run.ckpt_path,
                                  run_how(cfg, run.name))
        run.max_iters = ck["config"]["max_iters_resolved"]  # the schedule of the run being resumed
        # (its world size may differ from this one's; one process takes the most steps)
        most = cfg["max_iters"] or max(1, math.ceil(cfg["epochs"] * len(run.data.train) * env.world
                                                     / run.tokens_per_iter))
        if not (type(run.max_iters) is int and 0 < run.max_iters <= most and type(ck["iter_num"]) is int
                and 0 <= ck["iter_num"] <= run.max_iters):
            if ((ck.get("provenance") or {}).get("data") or {}).get("meta_sha256") != run.data.fingerprint:
                die(f"{run.ckpt_path} is at step {ck['iter_num']} of {run.max_iters}, more than the training tokens "
                    f"in {cfg['data_dir']} now give ({most}): the data was prepared again since; put the run's "
                    f"data back, or start over with --overwrite")
            die(f"{run.ckpt_path} is at step {ck['iter_num']} of {run.max_iters}, which its settings cannot give (at "
                f"most {most} steps): damaged or hand-made; start over with --overwrite")
    elif cfg["max_iters"] > 0:
        run.max_iters = cfg["max_iters"]
    else:
        run.max_iters = max(1, math.ceil(cfg["epochs"] * len(run.data.train) / run.tokens_per_iter))
    cfg["max_iters_resolved"] = run.max_iters
    # a warmup longer than the run would never reach the learning rate (the paper's fine-tune recipe
    # warms up for 500 steps): at most 10% of the steps
    run.warmup = min(cfg["warmup_iters"], run.max_iters // 10)
    run.optimizer = model.configure_optimizer(cfg["weight_decay"], cfg["lr"], (cfg["beta1"], cfg["beta2"]),
                                              env.device_type)
    # the data order, one stream for every DDP rank (next_batch takes its share): windows' generator,
    # saved for exact resumes, or epochs' count of windows drawn (set once iter_num is known)
    run.gen = torch.Generator().manual_seed(cfg["seed"])
    run.iter_num, run.best_val, run.history, run.loss_since = 0, float("inf"), [], [[0.0], 0]
    if ck is not None:
        try:  # whole by its checksum, but edited (and re-stamped): one line, not a crash in the first step
            run.optimizer.load_state_dict(ck["optimizer"])
            check_adam_state(run.optimizer)
            run.gen.set_state(ck["data_rng"][0])
            # the train loss since the curve's last point (an older train.py's checkpoints: at an evaluation)
            run.loss_since = ck.get("loss_since", [[0.0], 0])
            sums, n = run.loss_since
            if not (isinstance(sums, list) and sums and all(type(s) is float and math.isfinite(s) for s in sums)
                    and type(n) is int and 0 <= n <= ck["iter_num"]):
                raise ValueError(f"loss_since {run.loss_since!r} is not [each rank's sum, steps] of a finite train "
                                 f"loss")
        except Exception as e:
            misfit(run.ckpt_path, e, "training state", run_how(cfg, run.name))
        run.iter_num, run.best_val, run.history = ck["iter_num"], ck["best_val_loss"], ck.get("history", [])
        run.resume = None  # free the loaded tensors
    run.drawn = run.iter_num * cfg["grad_accum"] * cfg["batch_global"]  # before the batch in hand


def lr_at(run, it):
    return lr_schedule(it, run.cfg["lr"], run.warmup, run.max_iters, run.cfg["min_lr_frac"])


def print_plan(run):
    """What this run will do, before it does it: model, data, schedule, tokens and FLOPs."""
    cfg, env, margs = run.cfg, run.env, run.raw_model.args
    if not env.master:
        return
    what = f"fine-tuning {run.name} from {cfg['parent']}" if cfg["domain"] != "base" else f"pretraining {run.name}"
    print(f"preset {cfg['preset']}" + (" (no CUDA GPU: --preset paper for the DESIGN.md figures)"
                                        if cfg["preset"] == "tiny" and env.device_type == "cpu" else ""))
    print(f"{what} on {cfg['data_dir']}/{cfg['domain']} (source: {run.data.meta.get('source')}); device {env.device}, "
          f"{env.dtype}, world {env.world}, {env.threads} CPU threads")
    print(f"model: {run.raw_model.num_params() / 1e6:.2f}M params, d_model {margs.d_model}, heads {margs.n_head}/"
          f"{margs.n_kv_head}, d_mlp {margs.d_mlp} ({margs.mlp}), vocab {margs.vocab_size}, block {run.block}")
    print(f"data: {len(run.data.train):,} train / {len(run.data.val[cfg['domain']]):,} val tokens; {run.tokens_per_iter:,} tokens a step, "
          f"{run.max_iters} steps = {run.max_iters * run.tokens_per_iter / max(1, len(run.data.train)):.2f} epochs; "
          f"AdamW lr {cfg['lr']:g}, wd {cfg['weight_decay']:g}, betas ({cfg['beta1']}, {cfg['beta2']})")
    capped = f" (--warmup_iters {cfg['warmup_iters']} capped at 10% of the steps)" if run.warmup < cfg["warmup_iters"] else ""
    print(f"schedule: linear warmup over {run.warmup} steps{capped} to lr {cfg['lr']:g}, then cosine down to "
          f"{cfg['lr'] * cfg['min_lr_frac']:g} at step {run.max_iters}")
    steps = run.max_iters - run.iter_num
    tokens = steps * run.tokens_per_iter
    print(f"plan: {steps} steps from iter {run.iter_num}, {tokens:,} tokens, "
          f"{run.raw_model.flops_per_token() * tokens:.3g} training FLOPs; the time estimate follows step {ETA_STEPS + 1}")


def compile_or_eager(model, x, y, autocast, optimizer):
    """torch.compile, tried once on the first batch (forward and backward, gradients discarded; no RNG
    is drawn, so the run is the same either way). Where it cannot compile (e.g. Triton finds no C
    compiler to build its launcher) the eager model is returned with a one-line warning."""
    compiled = torch.compile(model)
    try:
        with autocast:
            _, loss = compiled(x, y)
        loss.backward()
    except Exception as e:  # noqa: BLE001 - any compiler failure: eager is always correct
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"warning: torch.compile failed ({type(e).__name__}: {first}); training without it "
              f"(--compile=false skips the attempt)")
        compiled = model
    optimizer.zero_grad(set_to_none=True)
    return compiled


class FiniteGuard:
    """Stops the run when a step's loss or gradient norm is not finite, without a host sync per step
    (an .item() each step would drain the GPU queue): flags on the device are updated every step and
    read only at log and evaluation time, and always before a checkpoint is written. A bad step's
    update does reach the weights in memory, but the run stops at the next check, before evaluating
    or saving anything, so a NaN never reaches a checkpoint: the last checkpoint on disk (if any) is
    the last good state. The flag is all-reduced so every DDP rank stops at the same check."""

    def __init__(self, device, iter_num):
        # sticky: some step was bad
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        # steps before the first bad one
        self.good = torch.zeros((), dtype=torch.long, device=device)
        # its loss and gradient norm
        self.first = torch.zeros(2, device=device)
        self.checked = iter_num                                           # iter of the last check

    def update(self, loss, gnorm):
        now = ~torch.isfinite(loss) | ~torch.isfinite(gnorm)
        self.first = torch.where(now & ~self.bad, torch.stack((loss.float(), gnorm.float())),
                                 self.first)
        self.bad |= now
        self.good += (~self.bad).long()

    def check(self, iter_num, ddp, ckpt_path):
        flag = self.bad.float()
        if ddp:
            torch.distributed.all_reduce(flag)
        if flag.item():  # the host sync, once per log or evaluation
            loss, gnorm = self.first.tolist()
            die(f"loss {loss:.4g}, gradient norm {gnorm:.4g} at iter "
                f"{self.checked + int(self.good)}: not finite; stopped before saving. The last "
                f"good checkpoint {ckpt_path} is kept (if any): lower --lr and --overwrite")
        self.checked = iter_num
        self.good.zero_()


def evaluate(run, domains):
    """Validation loss on each domain: its own val split, plus the other prepared domains at the end
    (the first eval_iters whole batches of consecutive windows, world x B each under DDP: the same
    text every time, and one process's with the whole batch; every rank evaluates it)."""
    model, T, n = run.raw_model, run.block, run.B * run.env.world * run.cfg["eval_iters"]
    rows = fast.head_rows(model, run.B * T) if run.cfg["fast"] else None
    windows = {d: datalib.sample_windows({d: run.data.val[d]}, n, T + 1, "consecutive")
               for d in domains}
    return {d: eval_loss(model, windows[d], run.B, run.env.device, run.env.autocast, rows)
            for d in domains}


def save(run, val_losses, finished, loss_since=None):
    """The checkpoint (rank 0). loss_since: the train loss [each rank's sum, steps] since the loss curve's last
    point (none, [[0.0], 0], at an evaluation: it just recorded one)."""
    if not run.env.master:
        return
    cfg, tok = run.cfg, run.data.tok_hash
    save_checkpoint(
        run.ckpt_path, run.raw_model, run.raw_model.args, finished=finished, config=cfg, name=run.name,
        domain=cfg["domain"], iter_num=run.iter_num, best_val_loss=run.best_val, val_loss=val_losses,
        tokenizer_hash=tok, parents=run.parents, optimizer=run.optimizer.state_dict(),
        data_rng=[run.pending_state], history=run.history, loss_since=loss_since or [[0.0], 0],
        provenance=provenance(cfg, data={"source": run.data.meta.get("source"), "tokenizer_hash": tok,
                                         "meta_sha256": run.data.fingerprint, "train_sha256": run.data.tokens},
                                   parents=run.parents))


def train_step(run, x, y):
    """One optimizer step over grad_accum micro-batches; returns the next batch (fetched while the
    device works). The step's loss is added to run.loss_acc and checked, with the gradient norm, by
    run.guard, both on the device (no host sync)."""
    cfg, model = run.cfg, run.model
    for g in run.optimizer.param_groups:
        g["lr"] = lr_at(run, run.iter_num)
    run.loss_acc.zero_()
    for micro in range(cfg["grad_accum"]):
        if run.env.ddp:  # sync gradients on the last micro-step only
            model.require_backward_grad_sync = micro == cfg["grad_accum"] - 1
        with run.env.autocast:
            _, loss = model(x, y)
            loss = loss / cfg["grad_accum"]
        # the data RNG before the batch in hand: what a resume restarts from
        run.pending_state = run.gen.get_state()
        x, y = next_batch(run)
        loss.backward()
        run.loss_acc += loss.detach()
    gnorm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), cfg["grad_clip"] if cfg["grad_clip"] > 0 else float("inf"))
    run.guard.update(run.loss_acc, gnorm)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.iter_num += 1
    return x, y


def next_batch(run):
    """The next batch (x, y), B windows each: every rank draws the same world x B windows from the
    one data stream and keeps its own B: DDP's mean gradient is one process's over them all."""
    B, env = run.B, run.env
    if run.cfg["sampler"] == "epochs":
        x, y = datalib.epoch_batch(run.data.train, run.drawn, B * env.world, run.block, env.device,
                                   run.cfg["seed"])
        run.drawn += B * env.world
    else:
        x, y = datalib.get_batch(run.data.train, B * env.world, run.block, env.device, run.gen)
    r = env.rank * B
    return x[r:r + B], y[r:r + B]


def start_loop(run):
    """The model as it trains (compiled, DDP-wrapped), the first batch, and the loop's counters."""
    cfg, env = run.cfg, run.env
    run.raw_model.train()
    if cfg["fast"]:  # the loss through fast.py's chunked LM head where it pays (CPU float32 training)
        run.model = fast.ChunkedHead(run.raw_model)
    run.pending_state = run.gen.get_state()
    x, y = next_batch(run)
    if cfg["compile"] and env.device_type == "cuda":
        if env.master:
            print("compiling the model (torch.compile)...")
        run.model = compile_or_eager(run.model, x, y, env.autocast, run.optimizer)
    # compiled before DDP wraps it (as nanoGPT orders them), but traced outside DDP by the trial step, so
    # dynamo does not split the graph at DDP's buckets: with one layer (a bucket or two of gradients)
    # that lost overlap of communication and compute is small
    if env.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [int(env.device.split(":")[1])] if env.device_type == "cuda" else None  # CPU processes: none
        run.model = DDP(run.model, device_ids=ids)
    run.guard = FiniteGuard(env.device, run.iter_num)
    run.loss_acc = torch.zeros((), device=env.device)
    # the train loss since the loss curve's last point (a run stopped between points resumes with its own): each
    # rank its own sum, so record_loss's all-reduce adds what an unstopped run's would; under another number of
    # processes (a DDP run continued by one) every rank takes their mean, as record_loss's is
    sums = run.loss_since[0]
    run.train_sum = torch.tensor(sums[env.rank] if len(sums) == env.world else sum(sums) / len(sums),
                                 device=env.device)
    run.train_n = run.loss_since[1]
    run.start_iter, run.tokens_run, run.t_start = run.iter_num, 0, time.time()
    return x, y


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def sync_time(run):
    if run.env.device_type == "cuda":
        torch.cuda.synchronize()
    return time.time()


def train_loop(run):
    """Train to max_iters with evaluation + checkpoint every eval_interval; False when --stop_iter stopped it."""
    cfg, env = run.cfg, run.env
    if 0 < cfg["stop_iter"] <= run.iter_num < run.max_iters:  # resumed where --stop_iter already stopped it
        if env.master:
            print(f"at iter {run.iter_num}, --stop_iter {cfg['stop_iter']}: nothing to train; continue with --resume")
        return False
    x, y = start_loop(run)
    t0, last_logged = time.time(), run.iter_num
    while run.iter_num < run.max_iters:
        x, y = train_step(run, x, y)
        run.tokens_run += run.tokens_per_iter
        run.train_sum += run.loss_acc
        run.train_n += 1
        it, done = run.iter_num, run.iter_num - run.start_iter
        if env.master and done == 1:
            t_eta = sync_time(run)  # the first step may include compiling: time the next ones
        if env.master and done == ETA_STEPS + 1 and it < run.max_iters:
            per_step = (sync_time(run) - t_eta) / ETA_STEPS
            print(f"time estimate: {per_step * 1000:.1f} ms a step, about {duration(per_step * (run.max_iters - it))} "
                  f"for the remaining {run.max_iters - it} steps (evaluations not counted)")
        if it % cfg["log_interval"] == 0:
            run.guard.check(it, env.ddp, run.ckpt_path)
            if env.master:
                dt = (time.time() - t0) / max(1, it - last_logged)
                log_step(run, dt)
                t0, last_logged = time.time(), it
        last = it == run.max_iters
        stopping = cfg["stop_iter"] > 0 and it >= cfg["stop_iter"]
        if it % cfg["eval_interval"] == 0 or last:
            evaluate_and_save(run)
            t0 = time.time()  # do not count evaluation in the step time
        elif it % cfg["log_interval"] == 0:
            record_loss(run)  # the loss curve gets its training points between evaluations too
        if stopping and not last:
            if it % cfg["eval_interval"]:  # saved as the run stands: an unstopped run evaluates no more
                stop_and_save(run)
            if env.master:
                print(f"stopping at iter {it} (--stop_iter); continue with --resume")
            return False
    return True


def log_step(run, dt):
    tps = run.tokens_per_iter / dt
    mfu = run.raw_model.flops_per_token() * tps / run.env.world / run.cfg["peak_flops"]
    print(f"iter {run.iter_num}/{run.max_iters}: loss {run.loss_acc.item():.4f}, {dt * 1000:.1f}ms, "
          f"{tps / 1e3:.1f}k tok/s, lr {lr_at(run, run.iter_num - 1):.2e}" +
          (f", mfu {mfu * 100:.1f}%" if run.env.device_type == "cuda" else ""))  # MFU vs a GPU peak means nothing on a CPU


def record_loss(run, val_loss=None):
    """One point of metrics.json's loss curve: the mean train loss since the last point (and the val loss
    at evaluations, None between them)."""
    if run.env.ddp:  # every rank's loss: the mean over the whole batch
        torch.distributed.all_reduce(run.train_sum)
        run.train_sum /= run.env.world
    run.history.append({"iter": run.iter_num, "train_loss": (run.train_sum / max(1, run.train_n)).item(),
                        "val_loss": val_loss, "lr": lr_at(run, run.iter_num - 1),
                        "tokens": run.iter_num * run.tokens_per_iter})
    run.train_sum.zero_()
    run.train_n = 0


def evaluate_and_save(run):
    """Check the steps since the last check were finite, evaluate, record the loss curve, checkpoint."""
    dom = run.cfg["domain"]
    run.guard.check(run.iter_num, run.env.ddp, run.ckpt_path)
    val_losses = evaluate(run, [dom])
    run.best_val = min(run.best_val, val_losses[dom])
    record_loss(run, val_losses[dom])
    if run.env.master:
        print(f"iter {run.iter_num}: val loss {val_losses[dom]:.4f} ({dom})")
    save(run, val_losses, finished=False)
    return val_losses


def stop_and_save(run):
    """--stop_iter between evaluations: a checkpoint of the steps so far, neither evaluated (val_loss {}) nor
    a point of the loss curve, which an unstopped run would not have; it carries the train loss since the
    curve's last point (each rank's sum: float sums in another order would round otherwise) for the resume's
    next point."""
    run.guard.check(run.iter_num, run.env.ddp, run.ckpt_path)
    sums = [run.train_sum.clone() for _ in range(run.env.world)]
    if run.env.ddp:
        torch.distributed.all_gather(sums, run.train_sum)
    save(run, {}, finished=False, loss_since=[[s.item() for s in sums], run.train_n])


def finish(run):
    """Validation loss on every prepared domain, the finished checkpoint, then metrics.json."""
    cfg, env = run.cfg, run.env
    val_losses = evaluate(run, list(run.data.val))
    elapsed = time.time() - run.t_start
    save(run, val_losses, finished=True)
    if env.master:
        tps = run.tokens_run / max(elapsed, 1e-9)  # evaluations included
        mfu = run.raw_model.flops_per_token() * tps / env.world / cfg["peak_flops"] if env.device_type == "cuda" else None
        metrics = {"name": run.name, "domain": cfg["domain"], "iters": run.iter_num, "val_loss": val_losses,
                   "history": run.history, "tokens_per_step": run.tokens_per_iter, "tokens_this_run": run.tokens_run,
                   "seconds_this_run": round(elapsed, 2), "tokens_per_s": round(tps),
                   "mfu": mfu,  # fraction of --peak_flops over the run; None on a CPU (a GPU peak means nothing there)
                   "peak_gpu_mib": peak_gpu_mib(env.device),
                   "params": run.raw_model.num_params(), "checkpoint": run.ckpt_path,
                   "checkpoint_sha256": sha256_file(run.ckpt_path), "data_source": run.data.meta.get("source"),
                   "provenance": provenance(cfg, tokenizer_hash=run.data.tok_hash, parents=run.parents,
                                            data_meta_sha256=run.data.fingerprint)}
        atomic_write_json(os.path.join(os.path.dirname(run.ckpt_path), "metrics.json"),
                          stamp(metrics, "train_metrics"))
        print("val loss: " + ", ".join(f"{d} {v:.4f}" for d, v in val_losses.items()) +
              f"  ({elapsed:.0f}s) -> {run.ckpt_path}")
    return val_losses


if __name__ == "__main__":
    cli(main)
