"""
Speed and memory figures, each against a named peer run in the same process on the same shapes.
Not a test: it prints numbers. Optional peers (pip install -r requirements-bench.txt) are
skipped with a note when missing.

    python bench.py                      # everything, CPU-sized
    python bench.py --only=train,bpe     # some parts: train, bpe, sae, corr
    python bench.py --shapes=paper       # the DESIGN.md shapes (use a GPU)

train : our Transformer's training step (fwd + bwd + AdamW) in tokens/s vs a one-layer
        transformers.MistralForCausalLM with identical shapes (the authors' architecture).
bpe   : data.py's BPE trainer in MB/s of training text.
sae   : sae.py's training step in activations/s vs SAELens's standard SAE training step.
corr  : analyze.py's streamed correlation in tokens/s and peak memory vs all activations
        in memory + numpy.corrcoef.
"""
import multiprocessing as mp
import os
import resource
import time

import numpy as np
import torch

from common import parse_config, pick_device

config = dict(
    only="train,bpe,sae,corr",
    shapes="tiny",      # tiny (CPU) | paper (DESIGN.md)
    device="auto",
    steps=10,           # timed steps per measurement (after 3 warm-up steps)
    threads=0,          # > 0: torch.set_num_threads
    corpora="../shared/corpora",  # bpe: real text samples (layout of shared/corpora), if present
    corr_tokens=50_000, # corr: tokens (2048 x 2048 features; the naive way holds them all)
)

SHAPES = {
    "tiny": dict(vocab_size=4096, block_size=128, d_model=128, n_head=4, n_kv_head=2, d_mlp=256, batch=32),
    "paper": dict(vocab_size=32000, block_size=256, d_model=512, n_head=16, n_kv_head=8, d_mlp=1024, batch=64),
}


def timeit(step, steps, device):
    for _ in range(3):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def bench_train(cfg, device):
    from model import ModelArgs, Transformer
    s = SHAPES[cfg["shapes"]]
    B, T = s["batch"] if device != "cpu" or cfg["shapes"] == "tiny" else 8, s["block_size"]
    margs = ModelArgs(**{k: v for k, v in s.items() if k != "batch"})
    idx = torch.randint(0, s["vocab_size"], (B, T + 1), device=device)
    x, y = idx[:, :-1], idx[:, 1:]
    dtype_ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                 else torch.autocast("cpu", enabled=False))

    def make_step(model, loss_fn):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))

        def step():
            with dtype_ctx:
                loss = loss_fn(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    torch.manual_seed(0)
    ours = Transformer(margs).to(device)
    results = {"ours (model.Transformer)": (ours.num_params(), make_step(ours, lambda m: m(x, y)[1]))}
    try:
        from transformers import MistralConfig, MistralForCausalLM
        hf_cfg = MistralConfig(vocab_size=margs.vocab_size, hidden_size=margs.d_model, intermediate_size=margs.d_mlp,
                               num_hidden_layers=1, num_attention_heads=margs.n_head, num_key_value_heads=margs.n_kv_head,
                               max_position_embeddings=T, rope_theta=margs.rope_theta, rms_norm_eps=margs.norm_eps,
                               tie_word_embeddings=False, sliding_window=None, attn_implementation="sdpa")
        peer = MistralForCausalLM(hf_cfg).to(device)
        n_peer = sum(p.numel() for p in peer.parameters())
        results["peer (transformers MistralForCausalLM, 1 layer)"] = (
            n_peer, make_step(peer, lambda m: m(input_ids=x, labels=idx[:, :T].clone()).loss))
    except ImportError:
        print("  (transformers not installed: pip install -r requirements-bench.txt for the peer)")
    print(f"train step, {cfg['shapes']} shapes: batch {B} x {T} tokens, vocab {margs.vocab_size}, "
          f"d_model {margs.d_model}, d_mlp {margs.d_mlp}, heads {margs.n_head}/{margs.n_kv_head}, device {device}")
    tps = {}
    for name, (n_params, step) in results.items():
        dt = timeit(step, cfg["steps"], device)
        tps[name] = B * T / dt
        print(f"  {name:50s} {n_params / 1e6:7.2f}M params  {dt * 1000:8.1f} ms/step  {tps[name] / 1e3:9.1f}k tok/s")
    if len(tps) == 2:
        a, b = tps.values()
        print(f"  ratio ours / peer: {a / b:.2f}x")


def bench_bpe(cfg, device):
    """BPE training speed on the base mix: the real text samples when --corpora has them, else the built-in sample."""
    import data
    files = [os.path.join(cfg["corpora"], d, "train.txt") for d in ("babylm", "python")]
    if all(os.path.exists(f) for f in files):
        texts = [d for f in files for d in data.split_eot(open(f, encoding="utf-8").read())]
        what = f"{cfg['corpora']} babylm + python train"
    else:
        texts, what = [data.sample_corpus_text()], "the built-in sample corpus"
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    for vocab in (4096, 32000):
        t0 = time.perf_counter()
        data.train_bpe(texts, vocab, log=lambda *a: None)
        dt = time.perf_counter() - t0
        print(f"bpe trainer: {mb:.1f} MB of {what}, vocab {vocab}: {dt:.1f} s = {mb / dt:.2f} MB/s")


# --- sae: our SAE training step vs SAELens's standard SAE on the same shapes and batch
def bench_sae(cfg, device):
    import sae as S
    d_in, n_feat, batch = {"tiny": (256, 2048, 3072), "paper": (1024, 16384, 3072)}[cfg["shapes"]]
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, d_in, generator=g).relu() * 2).to(device)  # non-negative-ish, like MLP activations
    print(f"sae step, {cfg['shapes']} shapes: {d_in} -> {n_feat} features, batch {batch} activations, device {device}")
    results = {}
    for arch in ("relu", "topk"):
        ours = S.init_sae(d_in, n_feat, arch, 32, seed=0).to(device)
        opt = torch.optim.Adam(ours.parameters(), lr=1e-4, betas=(0.9, 0.9999))
        dead = torch.zeros(n_feat, dtype=torch.bool, device=device)
        dead[: n_feat // 10] = True  # AuxK on 10% dead latents, so the topk step includes its extra cost
        results[f"ours (sae.py {arch}: unit-norm decoder{', AuxK' if arch == 'topk' else ', L1'})"] = (
            lambda s=ours, o=opt: S.train_step(s, o, x, 1e-4, l1_coeff=5.0, dead_mask=dead, aux_k=d_in // 2, aux_coeff=1 / 32))
    try:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
        peer = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=n_feat, device=device, l1_coefficient=5.0))
        popt = torch.optim.Adam(peer.parameters(), lr=1e-4, betas=(0.9, 0.9999))

        def peer_step():
            out = peer.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": 5.0}, dead_neuron_mask=None,
                                                            n_training_steps=0, is_logging_step=False))
            popt.zero_grad(set_to_none=True)
            out.loss.backward()
            popt.step()
        results["peer (SAELens StandardTrainingSAE: decoder-norm-weighted L1)"] = peer_step
    except ImportError:
        print("  (sae-lens not installed: pip install -r requirements-bench.txt for the peer)")
    aps = {}
    for name, step in results.items():
        dt = timeit(step, cfg["steps"], device)
        aps[name] = batch / dt
        print(f"  {name:62s} {dt * 1000:8.1f} ms/step  {aps[name] / 1e3:9.1f}k act/s")
    if len(aps) == 3:
        relu, _, peer = aps.values()
        print(f"  ratio ours relu / peer: {relu / peer:.2f}x")


# --- corr: analyze.py's streamed correlation vs all activations in memory + numpy.corrcoef
# Each method runs in a fresh process so its peak resident memory (ru_maxrss) is its own; on CUDA the
# streamed side also reports torch.cuda.max_memory_allocated.
def _corr_data(seed, n, n_feat, density):
    """Sparse non-negative 'feature activations' x and y (y shares part of x), made per chunk."""
    g = torch.Generator().manual_seed(seed)
    mask = lambda: (torch.rand(n, n_feat, generator=g) < density).float()
    x = torch.rand(n, n_feat, generator=g) * mask()
    y = x[:, torch.randperm(n_feat, generator=g)] * mask() + torch.rand(n, n_feat, generator=g) * mask()
    return x, y


def _corr_worker(how, n_feat, n_tokens, chunk, density, device, q):
    import analyze
    try:  # the resident size now (the peak so far can be higher, left by imports): the baseline of the peak
        with open("/proc/self/statm") as f:
            rss0 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if how == "streamed":
        acc = analyze.CorrAccumulator(n_feat, n_feat, device)
        for i, s in enumerate(range(0, n_tokens, chunk)):
            x, y = _corr_data(i, min(chunk, n_tokens - s), n_feat, density)
            acc.update(x.to(device), y.to(device))
        r = acc.finalize().cpu().numpy()
    else:  # every activation in memory (float32, as a harvest would hold them), then numpy.corrcoef
        parts = [_corr_data(i, min(chunk, n_tokens - s), n_feat, density) for i, s in enumerate(range(0, n_tokens, chunk))]
        x = torch.cat([p[0] for p in parts]).numpy()
        y = torch.cat([p[1] for p in parts]).numpy()
        del parts
        r = np.nan_to_num(np.corrcoef(x.T, y.T)[:n_feat, n_feat:])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    q.put((dt, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, gpu, r[:64, :64]))


def bench_corr(device="cpu", n_feat=2048, n_tokens=100_000, chunk=8192, density=0.02):
    ctx, out = mp.get_context("spawn"), {}
    for how in ("streamed", "naive"):
        q = ctx.Queue()
        p = ctx.Process(target=_corr_worker, args=(how, n_feat, n_tokens, chunk, density,
                                                    device if how == "streamed" else "cpu", q))
        p.start()
        out[how] = q.get()
        p.join()
    (ts, ms, gs, rs), (tn, mn, _, rn) = out["streamed"], out["naive"]
    print(f"corr {n_feat} x {n_feat} features, {n_tokens:,} tokens: streamed ({device}) {n_tokens / ts:,.0f} tok/s, "
          f"peak +{ms:,.0f} MiB RSS" + (f", {gs:,.0f} MiB GPU" if gs is not None else "") +
          f" | naive (numpy.corrcoef) {n_tokens / tn:,.0f} tok/s, peak +{mn:,.0f} MiB RSS"
          f" | max |r diff| {np.abs(rs - rn).max():.1e}")


if __name__ == "__main__":
    cfg = parse_config(dict(config))
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    parts = {"train": bench_train, "bpe": bench_bpe, "sae": bench_sae,
             "corr": lambda c, d: bench_corr(d, n_feat=2048, n_tokens=c["corr_tokens"])}
    for part in cfg["only"].split(","):
        if part in parts:
            parts[part](cfg, device)
        else:
            print(f"{part}: not in this benchmark yet")
