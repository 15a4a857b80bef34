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
import time

import torch

from common import parse_config, pick_device

config = dict(
    only="train,bpe,sae,corr",
    shapes="tiny",      # tiny (CPU) | paper (DESIGN.md)
    device="auto",
    steps=10,           # timed steps per measurement (after 3 warm-up steps)
    threads=0,          # > 0: torch.set_num_threads
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
    import data
    text = data.sample_corpus_text() if hasattr(data, "sample_corpus_text") else None
    if text is None:
        print("bpe: data.sample_corpus_text() not available")
        return
    mb = len(text.encode("utf-8")) / 1e6
    for vocab in (1024, 4096):
        t0 = time.perf_counter()
        data.train_bpe(text, vocab)
        dt = time.perf_counter() - t0
        print(f"bpe trainer: {mb:.2f} MB of built-in sample text, vocab {vocab}: {dt:.2f} s = {mb / dt:.2f} MB/s")


if __name__ == "__main__":
    cfg = parse_config(dict(config))
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    parts = {"train": bench_train, "bpe": bench_bpe}
    for part in cfg["only"].split(","):
        if part in parts:
            parts[part](cfg, device)
        else:
            print(f"{part}: not in this benchmark yet")
