"""sae.py: metric known answers, the SAE's invariants (unit decoder rows, TopK, scale folding,
resampling, geometric median), feature recovery on synthetic data, and the training script end to
end on tiny random models: seeds share one stream, resumes continue exactly, one-line errors."""
import errno
import json
import math
import os
import re
import shutil
import socket
from types import SimpleNamespace

import numpy as np
import helpers
from helpers import one_thread, random_sae  # noqa: F401 (one_thread: an autouse fixture)
import pytest
import torch

import fast
import sae as S
from common import sha256_file
from model import ModelArgs, Transformer, save_checkpoint

V = 64
MARGS = dict(vocab_size=V, block_size=32, d_model=32, n_head=4, n_kv_head=2, d_mlp=32)
# a run of 24 steps x 32 activations; buffers of 4 batches, so resumes land inside a buffer. No early
# check (health_at): 24 steps on a random model are far from what it checks (test_early_check has its own)
RUN = ["--preset=tiny", "--expansion=2", "--seqs_per_batch=8", "--tokens_per_seq=4", "--total_acts=768",
       "--buffer_batches=4", "--harvest_batch=16", "--eval_seqs=12", "--eval_batch=6", "--lr=3e-3",
       "--log_interval=8", "--eval_interval=1000", "--ckpt_interval=1000", "--dead_window=64",
       "--resample_every=6", "--resample_until=0.8", "--health_at=0", "--device=cpu"]
# what a printed fix names of RUN's settings (common.with_settings): those off the tiny preset that change the SAEs
# (not the log, evaluation batch or device), and seq_len as the run resolved it (0: the model's block_size, 32)
FIX = ("--expansion 2 --resample_every 6 --resample_until 0.8 --dead_window 64 --lr 0.003 --seqs_per_batch 8 "
       "--tokens_per_seq 4 --seq_len 32 --total_acts 768 --buffer_batches 4 --eval_seqs 12")


def write_domain(data_dir, domain, seed, tok_hash="tok-A", n=4000):
    return helpers.write_domain(data_dir, domain, seed, V, tok_hash, n=n, noise=0.2)


def write_model(out_dir, name, seed, tok_hash="tok-A", finished=True, **over):
    torch.manual_seed(seed)
    args = ModelArgs(**{**MARGS, **over})
    path = save_checkpoint(os.path.join(out_dir, name, "ckpt.pt"), Transformer(args), args, finished=finished,
                           name=name, domain=name, tokenizer_hash=tok_hash, parents=[])
    return torch.load(path, weights_only=False)


@pytest.fixture
def dirs(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    for i, d in enumerate(("base", "lua", "tinystories")):
        write_domain(data, d, seed=i)
    for i, m in enumerate(("base", "lua")):
        write_model(out, m, seed=i)
    return data, out


def run(dirs, *args, out=None):
    return S.main([*RUN, f"--data_dir={dirs[0]}", f"--out_dir={out or dirs[1]}", *args])


def ck(out, model, seed):
    return torch.load(S.sae_path(out, model, seed), weights_only=False)


def state(out, model):
    return torch.load(os.path.join(out, f"sae_{model}", S.STATE_FILE), weights_only=False)


def fvu(x, x_hat):
    x, x_hat = x.double(), x_hat.double()
    return S.fvu_from_sums((x - x_hat).pow(2).sum(), x.sum(0), x.pow(2).sum(), len(x))


def hp(l1_coeff=0.0, dead=None, aux_k=0, aux_coeff=0.0):
    """The penalty settings of one SAE step (sae.train_seeds makes them)."""
    return SimpleNamespace(l1_coeff=l1_coeff, dead=dead, aux_k=aux_k, aux_coeff=aux_coeff)


# -----------------------------------------------------------------------------
# metrics: known answers

def test_fvu_known_answers_and_whole_set_accumulation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g) * torch.arange(1, 9) + 3.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-9)
    assert fvu(x, x.clone()) == 0.0
    # accumulating sums over uneven batches gives the whole-set value, not a mean of per-batch ratios
    x_hat = x + torch.randn(500, 8, generator=g) * (1 + 4 * (torch.arange(500) < 20))[:, None]  # bad on batch 1
    sse, sx, sq, n, ratios = 0.0, 0.0, 0.0, 0, []
    for a, b in ((0, 20), (20, 500)):
        xb, hb = x[a:b].double(), x_hat[a:b].double()
        sse, sx, sq, n = sse + (xb - hb).pow(2).sum(), sx + xb.sum(0), sq + xb.pow(2).sum(), n + b - a
        ratios.append(fvu(x[a:b], x_hat[a:b]))
    assert S.fvu_from_sums(sse, sx, sq, n) == pytest.approx(fvu(x, x_hat), rel=1e-9)
    assert abs(np.mean(ratios) - fvu(x, x_hat)) > 0.01


def test_sparsity_metrics_and_ce_formula():
    f = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.5, 1.0, 0.0]])
    fires = (f > 0).sum(0)                                   # [0, 2, 3, 0] of 3 tokens
    assert S.dead_fraction(fires) == 0.5
    assert S.dense_fraction(fires, 3) == 0.5 and S.dense_fraction(fires, 100) == 0.0
    h = S.density_histogram(torch.tensor([0, 1, 10, 100, 1000]), 1000)
    assert h["dead"] == 1 and sum(h["counts"]) == 4
    centers = np.array(h["log10_edges"][:-1]) + 0.125
    assert sorted(centers[np.array(h["counts"]) > 0].round(3).tolist()) == [-2.875, -1.875, -0.875, -0.125]
    assert S.ce_recovered(2.0, 2.0, 5.0) == 1.0 and S.ce_recovered(2.0, 5.0, 5.0) == 0.0
    assert S.ce_recovered(2.0, 3.0, 5.0) == pytest.approx(2 / 3)
    log_p = torch.log_softmax(torch.randn(4, 10, generator=torch.Generator().manual_seed(0)), -1)
    assert S.kl_div(log_p, log_p).item() == pytest.approx(0.0, abs=1e-6)
    assert all(S.kl_div(log_p[i], log_p[i].flip(-1)) > 0 for i in range(4))
    assert S.kl_div(log_p, log_p.flip(-1)).item() == pytest.approx(sum(S.kl_div(log_p[i], log_p[i].flip(-1)) for i in range(4)))
    two = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.75]]))
    assert S.kl_div(*two).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


def test_the_bf16_quality_check_flags_each_metric_outside_its_band():
    import bench
    ref = {"seeds": {"0": dict(fvu=0.250, l0=60.0, dead_frac=0.10, ce_recovered=0.900),
                     "1": dict(fvu=0.260, l0=50.0, dead_frac=0.13, ce_recovered=0.910)}}
    low = {"seeds": {"0": dict(fvu=0.254, l0=61.5, dead_frac=0.11, ce_recovered=0.894),   # L0 +2.5%, CE -0.006
                     "1": dict(fvu=0.266, l0=50.5, dead_frac=0.16, ce_recovered=0.912),   # FVU +0.006, dead +3 points
                     "7": dict(fvu=0.0, l0=0.0, dead_frac=0.0, ce_recovered=0.0)}}        # no float32 twin: not compared
    rows = bench.quality_rows(ref, low)
    assert [(seed, k) for seed, k, *_ in rows] == [(s, k) for s in "01" for k in ("fvu", "l0", "dead_frac", "ce_recovered")]
    outside = {(seed, k) for seed, k, *_, ok in rows if not ok}
    assert outside == {("0", "l0"), ("0", "ce_recovered"), ("1", "fvu"), ("1", "dead_frac")}
    band = {(seed, k): (d, b) for seed, k, a, lo, d, b, ok in rows}
    assert band["0", "l0"] == pytest.approx((1.5, 1.2)) and band["1", "l0"] == pytest.approx((0.5, 1.0))  # 2% of each
    assert band["1", "fvu"] == pytest.approx((0.006, 0.005)) and band["0", "fvu"] == pytest.approx((0.004, 0.005))
    assert bench.seed_spread(ref) == pytest.approx(dict(fvu=0.01, l0=10.0, dead_frac=0.03, ce_recovered=0.01))


def test_geometric_median_known_answers():
    pts = torch.tensor([[0.0], [1.0], [2.0], [10.0], [100.0]])
    assert S.geometric_median(pts).item() == pytest.approx(2.0, abs=1e-3)    # 1-D: the median
    tri = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = (3 - math.sqrt(3)) / 6                                              # Fermat point: 120 degree angles
    assert torch.allclose(S.geometric_median(tri), torch.tensor([t, t], dtype=torch.float64), atol=1e-4)
    cloud = torch.randn(400, 5, generator=torch.Generator().manual_seed(0))
    cloud[:20] += 1000.0                                                    # 5% far outliers barely move it
    assert S.geometric_median(cloud).norm() < 0.5 and cloud.mean(0).norm() > 40


def test_ce_recovered_is_one_for_identity_and_zero_for_zero_ablation():
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**MARGS)).eval()
    with torch.no_grad():  # at init the MLP hardly moves the logits; make it matter
        model.mlp.down.weight.mul_(30)
        model.lm_head.weight.mul_(10)
    wins = torch.randint(0, V, (6, MARGS["block_size"] + 1), generator=torch.Generator().manual_seed(1))
    d = MARGS["d_mlp"]
    ident = S.SAE(d, 2 * d, "relu")                                          # relu(x) - relu(-x) = x exactly
    zero = S.SAE(d, 2 * d, "relu")                                          # all weights 0: x_hat = 0
    with torch.no_grad():
        eye = torch.eye(d)
        ident.W_enc.copy_(torch.cat([eye, -eye], 1))
        ident.W_dec.copy_(torch.cat([eye, -eye], 0))
    m_id, m_zero = S.evaluate(model, [ident, zero], wins, skip=1, batch=4)
    assert m_id["ce_recovered"] == pytest.approx(1.0, abs=1e-6) and m_id["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m_id["fvu"] == pytest.approx(0.0, abs=1e-9) and m_id["ce_clean"] == m_id["ce_spliced"]
    assert m_zero["ce_recovered"] == pytest.approx(0.0, abs=1e-6) and m_zero["kl"] > 0
    assert m_zero["ce_spliced"] == pytest.approx(m_zero["ce_zero_ablation"], abs=1e-6)
    assert abs(m_zero["ce_zero_ablation"] - m_zero["ce_clean"]) > 0.01 and m_zero["kl"] > 0.1  # a real denominator
    assert m_id["eval_tokens"] == 6 * (MARGS["block_size"] - 1)
    tgt = wins[:, 1:].clone()
    tgt[:, :1] = -1                                # the model's own forward and loss: the clean CE
    with torch.no_grad():
        assert m_id["ce_clean"] == pytest.approx(model(wins[:, :-1], tgt)[1].item(), rel=1e-5)


# -----------------------------------------------------------------------------
# the SAE's invariants

def test_decoder_rows_stay_unit_norm_and_loss_falls():
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    sae = random_sae("relu")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    first = S.sae_loss(sae, x, hp(0.1))[0].item()
    for _ in range(30):
        S.train_step(sae, opt, x, 1e-2, hp(0.1))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-5)   # rows = feature directions
    assert S.sae_loss(sae, x, hp(0.1))[0].item() < 0.7 * first


def test_topk_has_exactly_k_active_latents():
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    sae = random_sae("topk", k=5)
    f = sae.encode(x)
    assert ((f > 0).sum(-1) <= 5).all()
    pre = sae.pre_acts(x)
    kth = pre.topk(5, dim=-1).values[:, -1:]
    assert torch.equal(f > 0, (pre >= kth) & (pre > 0))                      # the largest, when positive
    with torch.no_grad():
        sae.b_enc.fill_(100.0)                                              # every pre-activation positive
    assert ((sae.encode(x) > 0).sum(-1) == 5).all()


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_folded_sae_on_raw_x_equals_trained_sae_on_scaled_x(arch):
    sae, s = random_sae(arch), 3.7
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3)) * 0.4 + 0.2
    x_hat_s, f_s = sae(x * s)
    raw = S.fold_scale(sae, s)
    x_hat, f = raw(x)
    assert torch.allclose(x_hat, x_hat_s / s, atol=1e-5) and torch.allclose(f, f_s / s, atol=1e-5)
    assert torch.equal(f > 0, f_s > 0) and torch.allclose(raw.W_dec.norm(dim=1), torch.ones(48), atol=1e-6)


def test_resampling_revives_dead_latents():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(512, 16, generator=g)
    sae = random_sae("relu")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    S.train_step(sae, opt, pool, 1e-3, hp(0.1))                              # Adam now has state
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::4] = True
    with torch.no_grad():
        sae.b_enc[dead] = -1e3
    assert (sae.encode(pool)[:, dead] == 0).all()
    alive_before = sae.W_enc[:, ~dead].clone()
    assert S.resample_dead(sae, opt, dead, pool, torch.Generator().manual_seed(1)) == 12
    fires = (sae.encode(pool) > 0).sum(0)
    assert (fires[dead] > 0).all()                                          # every resampled latent fires again
    assert torch.equal(sae.W_enc[:, ~dead], alive_before)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-6)
    st = opt.state[sae.W_enc]
    assert (st["exp_avg"][:, dead] == 0).all() and (st["exp_avg_sq"][:, ~dead] != 0).any()


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_recovers_known_sparse_directions(arch):
    """Data = sparse non-negative combinations of 32 known unit directions in 16 dims; the SAE's
    decoder should contain most of them (max cosine > 0.9)."""
    g = torch.Generator().manual_seed(0)
    d, n_true, n_feat = 16, 32, 64
    true = torch.randn(n_true, d, generator=g)
    true /= true.norm(dim=1, keepdim=True)
    sae = S.init_sae(d, n_feat, arch, 3, seed=0)
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    last_fired = torch.zeros(n_feat, dtype=torch.long)
    for step in range(1500):
        on = torch.rand(256, n_true, generator=g) < 2.0 / n_true              # ~2 active per sample
        x = (on * (0.5 + torch.rand(256, n_true, generator=g))) @ true
        dead = (step - last_fired) >= 50
        _, _, f = S.train_step(sae, opt, x, 3e-3 * min(1.0, (1500 - step) / 300), hp(0.2, dead, 16, 1 / 32))
        last_fired[(f > 0).any(0)] = step + 1
        if arch == "relu" and step in (300, 600):
            S.resample_dead(sae, opt, (step - last_fired) >= 100, x, torch.Generator().manual_seed(step))
    cos = (true @ sae.W_dec.detach().T).max(dim=1).values
    frac = (cos > 0.9).float().mean().item()
    print(f"{arch}: {frac:.0%} of the true directions recovered (max cosine > 0.9)")
    assert frac >= 0.8


# -----------------------------------------------------------------------------
# the script end to end

def test_training_writes_raw_space_saes_that_reproduce_their_metrics(dirs):
    data, out = dirs
    m = run(dirs, "--model=lua", "--seeds=0,1")
    assert set(m["seeds"]) == {"0", "1"} and m["steps"] == 24 and m["activations"] == 768 and m["mfu"] is None  # CPU
    saved = json.load(open(os.path.join(out, "sae_lua", "metrics.json")))
    assert saved["seeds"]["0"]["fvu"] == m["seeds"]["0"]["fvu"] and saved["provenance"]["config"]["model"] == "lua"
    sae, ckpt = S.load_sae(out, "lua", seed=1)
    assert "train" not in ckpt and ckpt["model_name"] == "lua" and ckpt["seed"] == 1
    assert ckpt["model_hash"] == sha256_file(os.path.join(out, "lua", "ckpt.pt"))
    assert (sae.d_in, sae.n_features, sae.arch) == (32, 64, "relu")
    model, mckpt = S.load_model(out, "lua")
    S.check_sae_matches(ckpt, mckpt, model_hash=sha256_file(os.path.join(out, "lua", "ckpt.pt")))
    # the saved raw-space SAE, evaluated afresh on the same held-out windows, gives the logged metrics
    val = S.open_domains(data, ["base", "lua"], "val", mckpt, "lua")
    again = S.evaluate(model, [sae], S.eval_windows(val, 12, 32), skip=1, batch=6)[0]
    for k in ("fvu", "l0", "ce_recovered", "dead_frac", "kl"):
        assert again[k] == pytest.approx(ckpt["metrics"][k], rel=1e-5, abs=1e-7), k
    assert 0 < again["fvu"] < 1 and 0 < again["l0"] < 64 and again["eval_tokens"] == 12 * 31
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    # the training state of both seeds is in one file, at the SAE files' step
    st = state(out, "lua")
    assert st["finished"] and st["step"] == 24 and sorted(st["seeds"]) == [0, 1]
    # a rerun with --resume has nothing to do; without it, it refuses to overwrite
    assert run(dirs, "--model=lua", "--seeds=0,1", "--resume") is None
    with pytest.raises(SystemExit, match="exists; add --resume .* or --overwrite"):
        run(dirs, "--model=lua", "--seeds=0,1")


def old_harvest_windows(arrays, n_seq, T, g):  # sae.harvest's window starts before (rows domain-major)
    n_dom = len(arrays)
    u = torch.rand(n_seq, generator=g, dtype=torch.float64)
    dom = torch.arange(n_seq) % n_dom
    starts = [(u[dom == d] * (len(a) - T + 1)).long().tolist() for d, a in enumerate(arrays)]
    return np.stack([np.asarray(a[s:s + T], dtype=np.int64) for a, st in zip(arrays, starts) for s in st])


def test_stream_windows_are_the_former_harvest_windows():
    # window i from domain i % 3, one float64 draw first, the generator left where harvest left it
    rng = np.random.default_rng(0)
    three = {d: rng.integers(0, 60000, n).astype(np.uint16) for d, n in (("a", 5003), ("b", 777), ("c", 40))}
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for n in (7, 30):
        got = S.stream_windows(three, n, 33, g1)
        order = torch.cat([torch.arange(d, n, 3) for d in range(3)])          # the old rows were domain-major
        assert torch.equal(got[order], torch.from_numpy(old_harvest_windows(list(three.values()), n, 33, g2)))
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    with pytest.raises(SystemExit, match="domain 'c' has 40 tokens, fewer than one window of 41"):
        S.stream_windows(three, 6, 41, g1)


def test_mix_tokens_draws_each_window_from_all_starts_laid_end_to_end():
    # the authors' concatenated datasets: a domain's share is its share of the tokens. Token values name
    # their domain and offset, so a window's first token is its start
    arrays = {"a": np.arange(3033, dtype=np.uint16), "b": (10000 + np.arange(1033)).astype(np.uint16)}
    T, n = 34, 4000                                                       # 3000 + 1000 starts
    g, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = S.stream_windows(arrays, n, T, g, mix="tokens")
    pick = (torch.rand(n, generator=again, dtype=torch.float64) * 4000).long()  # the same draws
    want = torch.where(pick < 3000, pick, 10000 + pick - 3000)
    assert torch.equal(got[:, 0], want) and torch.equal(got[:, 1:] - got[:, :-1], torch.ones(n, T - 1).long())
    assert abs((got[:, 0] < 10000).float().mean().item() - 0.75) < 0.03
    # the held-out windows: shares by tokens (3033 : 1033 of 8 -> 6 : 2), spread over each domain
    ev = S.eval_windows(arrays, 8, T - 1, mix="tokens")
    assert ev[:, 0].tolist() == [0, 599, 1199, 1799, 2399, 2999, 10000, 10999]
    assert torch.equal(S.eval_windows(arrays, 8, T - 1), torch.from_numpy(   # equal: the sampler's own shares
        S.datalib.sample_windows(arrays, 8, T, "spread")))


def test_mlp_activations_is_the_model_forward_at_the_asked_positions():
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**MARGS)).eval()
    wins = torch.randint(0, V, (10, 32), generator=torch.Generator().manual_seed(1))
    full = model.mlp_acts(wins)                                               # (10, 32, d_mlp)
    got = list(S.mlp_activations(model, wins, 4, "cpu", skip_first=1))
    assert [s for s, _ in got] == [0, 4, 8] and torch.equal(torch.cat([a for _, a in got]), full[:, 1:])
    pos = torch.randint(1, 32, (10, 5), generator=torch.Generator().manual_seed(2))
    at = torch.cat([a for _, a in S.mlp_activations(model, wins.numpy(), 3, "cpu", positions=pos)])
    assert at.shape == (10, 5, 32) and torch.allclose(at, full[torch.arange(10)[:, None], pos], atol=1e-6)


@pytest.mark.parametrize("arch,use_fast", [("relu", True), ("topk", True), ("relu", False)])
def test_seeds_share_one_stream_and_resume_continues_exactly(dirs, tmp_path, arch, use_fast, monkeypatch):
    a, b, c = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")
    for o in (a, b, c):
        write_model(o, "base", seed=0)
    extra = [f"--arch={arch}", "--k=4", "--model=base", "--l1_coeff=50", "--l1_warmup_frac=0", "--lr=0.03",  # L1 kills latents
             "--threads=2", f"--fast={use_fast}"]  # fast: a pair of seeds steps in two threads of one core each
    sparse_steps = []
    real = fast.sparse_loss
    monkeypatch.setattr(fast, "sparse_loss", lambda *args: sparse_steps.append(1) or real(*args))
    pooled, real_setup = [], S.setup

    def setup(cfg):
        job = real_setup(cfg)
        pooled.append(job.fast_steps is not None and job.fast_steps.pool is not None)
        return job
    monkeypatch.setattr(S, "setup", setup)
    run(dirs, *extra, "--seeds=0,1", out=a)
    # fast: the compared runs take sparse steps, in threads; plain: neither
    assert (bool(sparse_steps), pooled) == ((True, [True]) if use_fast else (False, [False]))
    run(dirs, *extra, "--seeds=1", out=b)                     # seed 1 alone: the same stream, the same SAE
    w = lambda o, s: state(o, "base")["seeds"][s]["sae"]
    assert all(torch.equal(w(a, 1)[k], w(b, 1)[k]) for k in w(a, 1))
    assert not torch.equal(w(a, 0)["W_dec"], w(a, 1)["W_dec"])   # different seeds: different SAEs
    # interrupted at step 10 (inside the third buffer; relu resamples at step 18), then resumed
    assert run(dirs, *extra, "--seeds=0,1", "--stop_step=10", out=c) is None
    assert ck(c, "base", 0)["step"] == 10 and not ck(c, "base", 0)["finished"] and state(c, "base")["step"] == 10
    assert run(dirs, *extra, "--seeds=0,1", "--stop_step=10", "--resume", out=c) is None   # already there: no step
    assert state(c, "base")["step"] == 10
    run(dirs, *extra, "--seeds=0,1", "--resume", out=c)
    full, res = state(a, "base"), state(c, "base")
    assert res["finished"] and res["step"] == 24
    for s in (0, 1):
        assert all(torch.equal(full["seeds"][s]["sae"][k], res["seeds"][s]["sae"][k]) for k in full["seeds"][s]["sae"])
        assert all(torch.equal(ck(a, "base", s)["sae"][k], ck(c, "base", s)["sae"][k]) for k in ck(a, "base", s)["sae"])
        assert torch.equal(full["seeds"][s]["last_fired"], res["seeds"][s]["last_fired"])
        assert full["seeds"][s]["metrics"]["fvu"] == res["seeds"][s]["metrics"]["fvu"]
    if arch == "relu":
        assert full["seeds"][1]["n_resampled"] > 0       # the resampling path ran inside the compared span
    # the training log too: the stop at step 10 fell between two logs (every 8), whose sums the state keeps
    timeless = lambda h: [{k: v for k, v in e.items() if k != "act_per_s"} for e in h]  # noqa: E731
    assert [e["step"] for e in res["history"]] == [8, 16, 24, 24]
    assert timeless(full["history"]) == timeless(res["history"])
    with pytest.raises(SystemExit, match="trains seeds 0,1 together; resume with --seeds 0,1"):
        run(dirs, *extra, "--seeds=0", "--resume", out=c)
    with pytest.raises(SystemExit, match=f"other settings \\(--fast {use_fast} -> {not use_fast}\\)"):
        other = [e for e in extra if not e.startswith("--fast")] + [f"--fast={not use_fast}"]
        run(dirs, *other, "--seeds=0,1", "--resume", out=c)


def test_one_line_errors(dirs, tmp_path):
    data, out = dirs
    with pytest.raises(SystemExit, match="--model must be one of base, lua"):
        run(dirs, "--model=mistral")
    with pytest.raises(SystemExit, match="no 'tinystories' model checkpoint .*make it with: python train.py --domain tinystories"):
        run(dirs, "--model=tinystories")
    with pytest.raises(SystemExit, match=r"no SAE for 'lua' at .*sae_lua/sae_s0.pt; make it with: python sae.py --model lua"):
        S.load_sae(out, "lua")
    with pytest.raises(SystemExit, match="unknown model"):
        S.load_sae(out, "gpt2")
    # data prepared with another tokenizer than the model's
    write_domain(str(tmp_path / "data_b"), "base", seed=0, tok_hash="tok-B")
    with pytest.raises(SystemExit, match="tokenizer tok-B but model 'base' uses tok-A; pass the --data_dir the model"):
        S.main([*RUN, f"--data_dir={tmp_path / 'data_b'}", f"--out_dir={out}", "--model=base"])
    write_domain(str(tmp_path / "data_c"), "base", seed=0)                 # lua's data not prepared
    with pytest.raises(SystemExit, match="no .*data_c/lua/meta.json; run: python data.py --domain lua"):
        S.main([*RUN, f"--data_dir={tmp_path / 'data_c'}", f"--out_dir={out}", "--model=lua"])
    # an SAE checked against the wrong model: width, tokenizer, another version of the model
    run(dirs, "--model=base", "--seeds=0", "--total_acts=64", "--resample_every=0")
    _, sck = S.load_sae(out, "base")
    _, mck = S.load_model(out, "base")
    S.check_sae_matches(sck, mck)
    wide = write_model(str(tmp_path / "o2"), "base", seed=0, d_mlp=48)
    with pytest.raises(SystemExit, match="takes 32-wide inputs but model 'base' has d_mlp 48; retrain the SAE"):
        S.check_sae_matches(sck, wide)
    with pytest.raises(SystemExit, match="tokenizer"):
        S.check_sae_matches(sck, {**mck, "tokenizer_hash": "tok-B"})
    with pytest.raises(SystemExit, match="another version of that model .*retrain the SAE: python sae.py --model base"):
        S.check_sae_matches(sck, write_model(str(tmp_path / "o3"), "base", seed=5))
    with pytest.raises(SystemExit, match=r"x/sae_s0\.pt holds an SAE of model 'base', not 'lua': folders swapped\?"):
        S.check_sae_matches(sck, S.load_model(out, "lua")[1], path="x/sae_s0.pt")
    with pytest.raises(SystemExit, match="another version"):
        S.check_sae_matches(sck, mck, model_hash="0123456789abcdef")
    # resuming with other settings (a finished run too); resuming a retrained model; a loss that blows up
    with pytest.raises(SystemExit, match="--resume of .* with other settings .*--l1_coeff 1.5 -> 1.0"):
        run(dirs, "--model=base", "--seeds=0", "--total_acts=64", "--resample_every=0", "--resume", "--l1_coeff=1.0")
    write_model(out, "base", seed=9)
    with pytest.raises(SystemExit, match="another version of model 'base'; retrain with --overwrite"):
        run(dirs, "--model=base", "--seeds=0", "--total_acts=64", "--resample_every=0", "--resume")
    with pytest.raises(SystemExit, match="loss of seed 0 became (nan|inf) at step \\d+; stopped without saving, the last good checkpoint"):
        run(dirs, "--model=base", "--seeds=0", "--overwrite", "--lr=1e30", "--l1_coeff=0")
    assert S.load_sae(out, "base")[1]["model_hash"] == sck["model_hash"]   # the earlier SAE was not touched


# -----------------------------------------------------------------------------
# issue 12: bad inputs refused before any work, and no state a crash can break

@pytest.mark.parametrize("bad, msg", [("--l1_coeff=nan", "--l1_coeff must be a finite number"),
                                      ("--lr=-1", "--lr must be > 0"), ("--lr=nan", "--lr must be a finite"),
                                      ("--expansion=0", "--expansion must be >= 1"),
                                      ("--arch=gated", "--arch must be one of relu, topk"),
                                      ("--resample_until=1.5", "--resample_until must be in")])
def test_bad_settings_are_refused_when_parsed(dirs, bad, msg):
    with pytest.raises(SystemExit, match=msg):
        run(dirs, "--model=base", bad)
    assert not os.path.exists(os.path.join(dirs[1], "sae_base"))            # refused before any work


def test_a_resampling_period_beyond_the_run_is_refused_when_chosen_and_said_when_the_preset_set_it(dirs, capsys):
    with pytest.raises(SystemExit, match=r"--resample_every 500 is beyond .* step 19\), so nothing would be"):
        run(dirs, "--model=base", "--resample_every=500")                  # 24 steps x resample_until 0.8
    assert not os.path.exists(os.path.join(dirs[1], "sae_base"))
    S.main([a for a in RUN if not a.startswith("--resample_every")] + ["--model=base", f"--data_dir={dirs[0]}",
                                                                       f"--out_dir={dirs[1]}"])
    assert "note: --resample_every 200 is beyond" in capsys.readouterr().out   # the tiny preset's period
    assert os.path.exists(S.sae_path(dirs[1], "base", 0))


def test_truncated_token_file_is_refused(dirs):
    data, _ = dirs
    path = os.path.join(data, "base", "train.bin")
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(SystemExit, match=r"train\.bin has .* bytes but meta.json says .*truncated"):
        run(dirs, "--model=base")


def test_early_check_stops_a_far_off_run_saved_naming_the_setting(dirs):
    # 96 steps, the check at the first log past 10% (step 16). An L1 far too strong: every latent but a
    # few silenced, the reconstruction gone
    far = ["--model=base", "--seeds=0", "--total_acts=3072", "--l1_coeff=1000", "--lr=0.03"]
    with pytest.raises(SystemExit, match=r"early check at step 16 \(17% of the run\): seed 0 has L0 \d\.\d, FVU 1\.\d+, "
                       r"\d+% of latents silent .*lower --l1_coeff \(now 1000\) or --lr .*--resume --health_at 0"):
        run(dirs, *far, "--health_at=0.1")
    st = state(dirs[1], "base")
    assert st["step"] == 16 and not st["finished"]                            # saved: nothing lost
    assert st["log"] == {"last_logged": 16, "stats": None}  # with its last log line: a resume's next covers 17-24
    assert run(dirs, *far, "--resume")["steps"] == 96                         # trains on (--health_at 0)
    # the same run with the tiny preset's L1 passes
    assert run(dirs, *far[:3], "--health_at=0.1", "--overwrite")["steps"] == 96
    # no L1 at 8x: about half the 256 latents fire on every token, far above d_in 32 and a quarter of them (64)
    with pytest.raises(SystemExit, match=r"seed 0 has L0 \d{3}\.\d.*raise --l1_coeff \(now 0: too weak for 256"):
        run(dirs, "--model=lua", "--seeds=0", "--total_acts=3072", "--health_at=0.1", "--l1_coeff=0", "--expansion=8")
    # topk: the setting to change is k
    with pytest.raises(SystemExit, match=r"seed 0 has L0 1\.0, FVU 0\.\d+.*raise --k \(now 1\) or lower --lr"):
        run(dirs, "--model=lua", "--seeds=0", "--total_acts=3072", "--health_at=0.1", "--arch=topk", "--k=1",
            "--overwrite")


def test_a_run_resumed_between_two_logs_still_meets_the_early_check(dirs):
    # 96 steps, logs every 8: the check is due at step 10 (10%), so it runs at the log of step 16. A run stopped at
    # step 12 (saved past the check's step, before its log) and resumed meets it there, as one never stopped does
    far = ["--model=base", "--seeds=0", "--total_acts=3072", "--l1_coeff=1000", "--lr=0.03", "--health_at=0.1"]
    assert run(dirs, *far, "--stop_step=12") is None
    with pytest.raises(SystemExit, match=r"early check at step 16 \(17% of the run\): seed 0 has L0 .* silent since "
                       r"step 8 "):
        run(dirs, *far, "--resume")


def test_a_model_of_another_preset_is_refused_unless_allowed(dirs):
    # the scripts default to paper on a GPU, reproduce.sh to tiny: tiny SAEs of a paper model are refused
    torch.manual_seed(0)
    args = ModelArgs(**MARGS)
    save_checkpoint(os.path.join(dirs[1], "base", "ckpt.pt"), Transformer(args), args, finished=True, name="base",
                    domain="base", tokenizer_hash="tok-A", parents=[], config={"preset": "paper"})
    with pytest.raises(SystemExit, match=r"--preset tiny differs from the preset paper that .*base/ckpt.pt was made "
                                         r"with; give --preset paper, or --allow_other_preset"):
        run(dirs, "--model=base", "--seeds=0")
    assert not os.path.exists(S.sae_path(dirs[1], "base", 0))
    assert run(dirs, "--model=base", "--seeds=0", "--allow_other_preset")["steps"] == 24


def test_unfinished_model_is_refused_unless_allowed(dirs):
    write_model(dirs[1], "base", seed=0, finished=False)
    with pytest.raises(SystemExit, match="unfinished .*--allow_unfinished"):
        run(dirs, "--model=base", "--seeds=0")
    assert run(dirs, "--model=base", "--seeds=0", "--allow_unfinished")["steps"] == 24


def test_unwritable_or_full_out_dir_fails_before_the_long_pass(dirs, monkeypatch):
    blocker = os.path.join(dirs[1], "sae_base")                            # the SAE folder cannot be made
    with open(blocker, "w") as f:
        f.write("not a folder")
    with pytest.raises(SystemExit, match="cannot write in .*sae_base .*choose a writable folder"):
        run(dirs, "--model=base")
    os.remove(blocker)
    import common
    monkeypatch.setattr(common, "_disk_free", lambda path: 1000)           # a full disk
    with pytest.raises(SystemExit, match="the SAE checkpoints needs about .* MB .* only 0 MB are free"):
        run(dirs, "--model=base")
    assert not os.path.exists(os.path.join(dirs[1], "sae_base", S.STATE_FILE))


def fail_once(monkeypatch, suffix):
    """The next atomic write of a file ending in `suffix` fails as a full disk does."""
    real, left = S.atomic_torch_save, [1]

    def flaky(obj, path):
        if path.endswith(suffix) and left[0]:
            left[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(obj, path)
    monkeypatch.setattr(S, "atomic_torch_save", flaky)


@pytest.mark.parametrize("edit, message", [
    (lambda st: st["seeds"][0]["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)), r"exp_avg has shape \(3,\)"),
    (lambda st: st["seeds"][1].update(last_fired=torch.zeros(7, dtype=torch.long)), r"last_fired has shape \(7,\)"),
    (lambda st: st.update(step=10 ** 6), r"step 1000000 of 24"),
    (lambda st: st.update(scale=float("nan")), r"input scale nan"),
])
def test_a_resume_state_edited_and_re_stamped_is_one_line(dirs, edit, message):
    import common
    run(dirs, "--model=base", "--stop_step=10")
    path = os.path.join(dirs[1], "sae_base", S.STATE_FILE)
    st = torch.load(path, weights_only=True)
    edit(st)
    common.atomic_torch_save(common.stamp(st, "sae_state"), path)            # a valid checksum: edited, re-stamped
    with pytest.raises(SystemExit, match=r"train_state\.pt does not fit the SAE training state .*" + message) as e:
        run(dirs, "--model=base", "--resume")
    assert "\n" not in str(e.value)


def test_a_resume_on_other_tokens_is_refused_and_goes_on_with_its_own(dirs):
    """base's SAEs harvest base's tokens: prepared again with other tokens between the stop and the resume,
    the run is refused (it would go on from another stream); with its tokens back it goes on."""
    run(dirs, "--model=base", "--stop_step=10")
    write_domain(dirs[0], "base", seed=9)
    with pytest.raises(SystemExit, match=r"began on other base tokens than .* holds now .*sae.py --model base "
                                         + FIX + " --overwrite"):
        run(dirs, "--model=base", "--resume")
    write_domain(dirs[0], "base", seed=0)
    run(dirs, "--model=base", "--resume")
    assert ck(dirs[1], "base", 0)["finished"]


def test_a_finished_run_whose_training_state_is_damaged_or_gone_stands(dirs, capsys):
    """The state is needed only to train further: finished SAE files, on this model with these settings and
    listed in metrics.json, are the run's result (retraining a paper-sized SAE would take hours)."""
    run(dirs, "--model=base")
    run(dirs, "--model=lua")
    path = os.path.join(dirs[1], "sae_base", S.STATE_FILE)
    before = {s: sha256_file(S.sae_path(dirs[1], "base", s)) for s in (0, 1)}
    lua_state = os.path.join(dirs[1], "sae_lua", S.STATE_FILE)
    for damage in (lambda: os.truncate(path, 1000), lambda: shutil.copy(lua_state, path),  # damaged, another's,
                   lambda: os.remove(path)):                                               # then gone
        damage()
        capsys.readouterr()
        assert run(dirs, "--model=base", "--resume") is None
        assert "nothing to do (train_state.pt is missing, damaged or another run" in capsys.readouterr().out
        assert {s: sha256_file(S.sae_path(dirs[1], "base", s)) for s in (0, 1)} == before
        with pytest.raises(SystemExit, match=r"sae_s0\.pt with other settings \(--l1_coeff"):
            run(dirs, "--model=base", "--resume", "--l1_coeff=9")          # changed settings: still named
    os.remove(S.sae_path(dirs[1], "base", 1))                              # a seed's file gone too: no result
    with pytest.raises(SystemExit, match=r"no train_state\.pt to resume from"):
        run(dirs, "--model=base", "--resume")


def test_a_damaged_or_swapped_seed_file_is_rewritten_by_resume_from_the_training_state(dirs):
    run(dirs, "--model=base")
    p0, p1 = S.sae_path(dirs[1], "base", 0), S.sae_path(dirs[1], "base", 1)
    whole = {s: ck(dirs[1], "base", s) for s in (0, 1)}
    for damage, message in ((lambda: os.truncate(p0, 1000), r"cannot load SAE .*sae_s0\.pt as data"),
                            (lambda: shutil.copy(p1, p0), r"sae_s0\.pt holds the SAE of seed 1, not seed 0")):
        damage()
        with pytest.raises(SystemExit, match=message + rf".*remake it: python sae\.py --model base {FIX} --resume$"):
            S.load_sae(dirs[1], "base", 0)
        run(dirs, "--model=base", "--resume")                              # from train_state.pt, not retrained
        for s in (0, 1):
            again = S.load_sae(dirs[1], "base", s)[1]
            assert again["seed"] == s and all(torch.equal(whole[s]["sae"][k], again["sae"][k]) for k in again["sae"])
    # metrics.json rewritten, and only a bad seed file with it: a good one keeps its bytes (its hash is an
    # input of diffing.json and the analysis)
    before = [sha256_file(p) for p in (p0, p1)]
    os.remove(os.path.join(dirs[1], "sae_base", "metrics.json"))
    run(dirs, "--model=base", "--resume")
    assert [sha256_file(p) for p in (p0, p1)] == before
    os.truncate(p0, 1000)
    run(dirs, "--model=base", "--resume")
    assert sha256_file(p1) == before[1] and all(torch.equal(whole[0]["sae"][k], v)
                                                for k, v in ck(dirs[1], "base", 0)["sae"].items())
    os.remove(os.path.join(dirs[1], "sae_base", S.STATE_FILE))             # no state: only retraining remakes it
    os.truncate(p0, 1000)
    with pytest.raises(SystemExit, match=rf"remake it: python sae\.py --model base {FIX} --overwrite$"):
        S.load_sae(dirs[1], "base", 0)                                     # (the settings: its metrics.json's)


def test_the_fixes_name_the_seeds_the_run_or_the_file_needs(dirs):
    """A printed command that remakes SAEs trains the seeds in question: the run's own --seeds (without them
    python sae.py --model base --overwrite would train 0 and 1 and drop the run's seed 2), or the file's seed
    beside the study's 0 and 1."""
    args = ("--model=base", "--seeds=0,2", "--total_acts=64", "--resample_every=0")
    fix = FIX.replace("--resample_every 6", "--resample_every 0").replace("--total_acts 768", "--total_acts 64")
    run(dirs, *args)
    os.remove(os.path.join(dirs[1], "sae_base", "metrics.json"))      # the state is needed: it is read
    os.truncate(os.path.join(dirs[1], "sae_base", S.STATE_FILE), 1000)
    with pytest.raises(SystemExit, match=r"train_state\.pt as data .*remake it: python sae\.py --model base "
                                         rf"--seeds 0,2 {fix} --overwrite$"):
        run(dirs, *args, "--resume")
    _, sck = S.load_sae(dirs[1], "base", seed=2)
    _, mck = S.load_model(dirs[1], "base")
    with pytest.raises(SystemExit, match=rf"retrain the SAE: python sae\.py --model base --seeds 0,1,2 {fix} "
                                         r"--overwrite$"):
        S.check_sae_matches(sck, {**mck, "tokenizer_hash": "tok-B"})


def test_a_damaged_seed_files_fix_names_the_runs_settings_and_run_as_printed_remakes_that_sae(dirs):
    """An SAE trained off the defaults (TopK, --expansion 3, --k 4, and RUN's sizes), its seed file damaged and its
    training state gone: the fix names every setting that made it (its metrics.json's; not the log, evaluation
    batch or device) and, run as printed with only the folders, preset and device a command line keeps, makes an
    SAE of that shape and kind with the same settings (python sae.py --model base --overwrite would make a 16x
    ReLU SAE at the defaults)."""
    import shlex
    run(dirs, "--model=base", "--arch=topk", "--expansion=3", "--k=4")
    was = ck(dirs[1], "base", 0)["config"]
    os.remove(os.path.join(dirs[1], "sae_base", S.STATE_FILE))
    os.truncate(S.sae_path(dirs[1], "base", 0), 1000)
    with pytest.raises(SystemExit, match=r"cannot load SAE .*sae_s0\.pt as data") as e:
        S.load_sae(dirs[1], "base", 0)
    printed = re.search(r"remake it: (python sae\.py .*)$", str(e.value)).group(1)
    assert printed == ("python sae.py --model base --arch topk --expansion 3 --k 4 "
                       + FIX.replace("--expansion 2 ", "") + " --overwrite")
    S.main(["--preset=tiny", "--device=cpu", "--health_at=0", f"--data_dir={dirs[0]}", f"--out_dir={dirs[1]}",
            *shlex.split(printed)[2:]])
    sae, now = S.load_sae(dirs[1], "base", 0)
    assert (now["sae_args"]["arch"], now["sae_args"]["n_features"], now["sae_args"]["k"]) == ("topk", 3 * 32, 4)
    free = S.RESUME_FREE | {"overwrite"}
    assert {k: v for k, v in now["config"].items() if k not in free} == {k: v for k, v in was.items() if k not in free}
    # known answers: nothing named for the preset's values; a value off them named as the command line takes it
    bare = {**S.config, **S.PRESETS["tiny"], "preset": "tiny"}
    assert S.sae_how("base", 0, bare) == "python sae.py --model base"
    assert S.sae_how("base", 0, {**bare, "lr": 4e-3, "mix": "tokens", "l1_coeff": 2}) == \
        "python sae.py --model base --l1_coeff 2 --mix tokens"
    assert S.sae_how("base", 2, {**bare, "threads": 3, "fast": False, "eval_interval": 7, "data_dir": "d"}) == \
        "python sae.py --model base --seeds 0,1,2"                     # what changes nothing made is left out


def test_the_reports_fix_for_a_damaged_record_resumes_its_run_with_the_runs_settings(dirs):
    """report.py's fix for a finished run's damaged metrics.json is a --resume, which refuses settings other than
    the run's: it names them and the run's seeds (its training state's), and run as printed it rewrites it."""
    import shlex

    import report
    run(dirs, "--model=base", "--seeds=0,2")
    with open(os.path.join(dirs[1], "sae_base", "metrics.json"), "a") as f:
        f.write("x")
    with pytest.raises(SystemExit, match=r"metrics\.json is not readable JSON") as e:
        report.read_stage(dirs[1], "sae_base", "metrics.json", "sae_metrics")
    printed = re.search(r"remake it: (python sae\.py .*)$", str(e.value)).group(1)
    assert printed == f"python sae.py --model base --seeds 0,2 {FIX} --resume"
    S.main(["--preset=tiny", "--device=cpu", f"--data_dir={dirs[0]}", f"--out_dir={dirs[1]}",
            *shlex.split(printed)[2:]])
    assert set(report.read_stage(dirs[1], "sae_base", "metrics.json", "sae_metrics")["seeds"]) == {"0", "2"}


def test_a_failed_save_never_leaves_the_seeds_at_different_steps(dirs, tmp_path, monkeypatch):
    ref, out = str(tmp_path / "ref"), dirs[1]
    write_model(ref, "base", seed=0)
    run(dirs, "--model=base", out=ref)
    # the disk fills while seed 1's file is written at the --stop_step save: the state holds both seeds
    fail_once(monkeypatch, "sae_s1.pt")
    with pytest.raises(OSError):
        run(dirs, "--model=base", "--stop_step=10")
    assert state(out, "base")["step"] == 10 and not os.path.exists(S.sae_path(out, "base", 1))
    # ... and again at the final save: the state is finished, seed 1's file and metrics.json are missing
    fail_once(monkeypatch, "sae_s1.pt")
    with pytest.raises(OSError):
        run(dirs, "--model=base", "--resume")
    assert state(out, "base")["finished"] and not os.path.exists(os.path.join(out, "sae_base", "metrics.json"))
    m = run(dirs, "--model=base", "--resume")                              # rewrites the outputs from the state
    assert set(m["seeds"]) == {"0", "1"} and m["steps"] == 24
    for s in (0, 1):                                                       # as if nothing had happened
        a, b = ck(ref, "base", s), ck(out, "base", s)
        assert b["finished"] and all(torch.equal(a["sae"][k], b["sae"][k]) for k in a["sae"])
        assert a["metrics"]["fvu"] == b["metrics"]["fvu"]
    assert run(dirs, "--model=base", "--resume") is None                  # now complete: nothing to do


def test_stale_temp_files_are_removed_and_a_live_run_holds_the_folder(dirs):
    sae_dir = os.path.join(dirs[1], "sae_base")
    os.makedirs(sae_dir)
    stale = os.path.join(sae_dir, ".sae_s0.pt.deadbeef.tmp")                # a kill during a save leaves this
    with open(stale, "wb") as f:
        f.write(b"half an SAE")
    with open(os.path.join(sae_dir, ".lock"), "w") as f:                    # a live process (this one) holds it
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": "sae.py --model base"}, f)
    with pytest.raises(SystemExit, match=f"in use by .* process {os.getpid()}"):
        run(dirs, "--model=base", "--seeds=0")
    os.remove(os.path.join(sae_dir, ".lock"))
    run(dirs, "--model=base", "--seeds=0")
    assert not os.path.exists(stale) and not os.path.exists(os.path.join(sae_dir, ".lock"))


def test_no_two_saes_of_the_study_share_their_initialisation(dirs):
    """An edge compares a parent's and a child's seed-0 SAEs; the null compares seeds 0 and 1 of one model.
    If seed 0 meant the same random decoder for every model, the edge would share its start and the null
    would not: after one step, every pair of SAEs must still be far apart row by row."""
    for m in ("base", "lua"):
        run(dirs, f"--model={m}", "--total_acts=32", "--seeds=0,1", "--resample_every=0")
    dec = {(m, s): ck(dirs[1], m, s)["sae"]["W_dec"] for m in ("base", "lua") for s in (0, 1)}
    assert ck(dirs[1], "base", 0)["init_seed"] != ck(dirs[1], "lua", 0)["init_seed"]
    for a, b in ((("base", 0), ("lua", 0)), (("base", 0), ("base", 1)), (("lua", 0), ("lua", 1))):
        cos = torch.nn.functional.cosine_similarity(dec[a], dec[b], dim=1)  # row i of one vs row i of the other
        assert cos.abs().mean() < 0.5, (a, b, cos.abs().mean())


# -----------------------------------------------------------------------------
# known answers that pin the metrics' boundaries, the KL's direction, the stream and the schedules (mutation audit)

def test_dead_and_dense_fractions_at_their_boundaries():
    assert S.dead_fraction(torch.tensor([0, 1, 2, 0])) == 0.5                 # one firing is alive
    assert S.dense_fraction(torch.tensor([10, 11, 9, 0]), 100) == 0.25         # dense: more than 10% of tokens


def test_evaluate_kl_is_clean_against_spliced():
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**MARGS)).eval()
    with torch.no_grad():
        model.mlp.down.weight.mul_(30)
        model.lm_head.weight.mul_(10)
    wins = torch.randint(0, V, (4, MARGS["block_size"] + 1), generator=torch.Generator().manual_seed(1))
    zero = S.SAE(MARGS["d_mlp"], 2 * MARGS["d_mlp"], "relu")                    # x_hat = 0: the MLP ablated
    (m,) = S.evaluate(model, [zero], wins, skip=1, batch=4)
    with torch.no_grad():
        resid, h = model.trunk(wins[:, :-1])
        resid, h = resid[:, 1:].flatten(0, 1).double(), h[:, 1:].flatten(0, 1)
        log_p = torch.log_softmax(model.head(resid.float(), h).double(), -1)
        log_q = torch.log_softmax(model.head(resid.float(), torch.zeros_like(h)).double(), -1)
    want = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()               # KL(clean || spliced)
    backwards = (log_q.exp() * (log_q - log_p)).sum(-1).mean().item()
    assert abs(want - backwards) > 1e-3 * want                                 # the two directions differ here
    assert m["kl"] == pytest.approx(want, rel=1e-4)


def test_harvest_draws_skip_the_first_positions_and_differ_buffer_by_buffer():
    arrays = {"a": np.arange(500) % V, "b": (np.arange(300) * 7) % V}
    cfg = dict(data_seed=3, seq_len=12, tokens_per_seq=10, skip_first=2, buffer_batches=2, seqs_per_batch=3,
               mix="equal", fast=False)
    idx, pos, perm = S.harvest_draws(arrays, 0, cfg)
    assert idx.shape == (6, 12) and pos.shape == (6, 10) and sorted(perm.tolist()) == list(range(60))
    assert (pos.sort(dim=1).values == torch.arange(2, 12)).all()               # every kept position >= skip_first, once
    again = S.harvest_draws(arrays, 0, cfg)
    assert all(torch.equal(a, b) for a, b in zip((idx, pos, perm), again))    # a pure function of (data_seed, chunk)
    other = S.harvest_draws(arrays, 1, cfg)
    assert not torch.equal(idx, other[0]) and not torch.equal(pos, other[1])  # the next buffer: fresh windows


def test_a_harvest_buffer_is_the_activations_at_its_draws_in_the_drawn_shuffle():
    """harvest on a hand-made model (helpers.table_model: token t's activation is (t, 1)): row k of the buffer is
    the activation at the drawn window and position number perm[k] (window-major: n // tokens_per_seq), so the
    buffer's first column reads back exactly which token each row came from, shuffled by perm."""
    model = helpers.table_model([[t, 1.0] for t in range(V)], block_size=12)
    arrays = {"a": np.arange(500) % V, "b": (np.arange(300) * 7) % V}
    cfg = dict(data_seed=3, seq_len=12, tokens_per_seq=4, skip_first=2, buffer_batches=2, seqs_per_batch=3,
               mix="equal", fast=False, harvest_batch=4, fast_math=False)
    idx, pos, perm = S.harvest_draws(arrays, 0, cfg)
    buf = S.harvest(model, arrays, 0, cfg, "cpu")
    tokens = idx[torch.arange(6)[:, None], pos].reshape(-1)                    # (24,) in draw order
    assert buf.shape == (24, 2) and torch.equal(buf[:, 0].long(), tokens[perm]) and not torch.equal(perm, torch.arange(24))


def test_mix_tokens_a_draw_on_a_domain_boundary_takes_the_next_domains_first_window():
    """Each domain exactly one window long: one start each, u * 2 is 0 (a) or 1 (b's first start, the boundary);
    the plain loop and fast.windows_at take whole windows of a or of b, never a window running past a's end."""
    arrays = {"a": np.arange(4), "b": 100 + np.arange(4)}
    for use_fast in (False, True):
        got = S.stream_windows(arrays, 40, 4, torch.Generator().manual_seed(0), "tokens", use_fast)
        assert {tuple(w) for w in got.tolist()} == {(0, 1, 2, 3), (100, 101, 102, 103)}


def test_lr_decays_linearly_to_zero_over_the_last_fraction():
    job = SimpleNamespace(cfg={"lr": 1.0, "lr_decay_frac": 0.2}, total_steps=100)
    assert [S.lr_at(job, i) for i in (0, 80, 90, 99)] == pytest.approx([1.0, 1.0, 0.5, 0.05])


def test_l1_ramps_up_linearly_over_the_first_fraction():
    job = SimpleNamespace(cfg={"l1_coeff": 2.0, "l1_warmup_frac": 0.05}, total_steps=100)
    assert [S.l1_at(job, i) for i in (0, 1, 3, 4, 5, 99)] == pytest.approx([0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    job.cfg["l1_warmup_frac"] = 0.0                                             # no warm-up: the full weight at once
    assert S.l1_at(job, 0) == 2.0


def test_resampling_draws_inputs_in_proportion_to_their_squared_loss():
    """Anthropic's rule: an input is drawn with probability proportional to the square of its reconstruction
    loss. An SAE that reconstructs 0 has loss |x|^2: inputs of loss 1 and 2 are drawn 1 : 4 (not 1 : 2)."""
    d, n_feat = 4, 4000
    sae = S.SAE(d, n_feat, "relu")
    with torch.no_grad():
        sae.W_enc.zero_(), sae.b_enc.zero_(), sae.b_dec.zero_()                 # f = 0, x_hat = 0
    pool = torch.tensor([[1.0, 0, 0, 0], [0, 2 ** 0.5, 0, 0], [0, 0, 0, 0]])    # losses 1, 2, 0
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    dead = torch.ones(n_feat, dtype=torch.bool)
    assert S.resample_dead(sae, opt, dead, pool, torch.Generator().manual_seed(0)) == n_feat
    second = (sae.W_dec[:, 1] > 0.5).double().mean().item()                   # rows that are input 1's direction
    assert (sae.W_dec[:, 0] > 0.5).double().mean().item() + second == 1.0     # never the input of loss 0
    assert abs(second - 0.8) < 0.03                                          # 4/5 (sd 0.006); by the loss: 2/3


def test_resampled_encoder_columns_have_a_fifth_of_the_mean_alive_norm():
    pool = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    sae = random_sae("relu")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[:6] = True
    alive = sae.W_enc[:, ~dead].norm(dim=0).mean().item()
    S.resample_dead(sae, opt, dead, pool, torch.Generator().manual_seed(1))
    assert torch.allclose(sae.W_enc[:, dead].norm(dim=0), torch.full((6,), 0.2 * alive), rtol=1e-5)
    assert (sae.b_enc[dead] == 0).all()


def test_auxk_reconstructs_the_residual_from_dead_latents_only_over_its_variance_known_answer():
    """AuxK by hand: 2 tokens, decoder rows e0, e1, (e0 + e1)/sqrt 2, latent 0 live (masked out even though its
    pre-activation is the largest), aux_k 1: token 0 takes latent 1 (2 e1), token 1 latent 2 (3 (e0 + e1)/sqrt 2);
    the loss is ||e_hat - e||^2 over the residual's variance about its mean (not its raw second moment)."""
    sae = S.SAE(2, 3, "topk", 1)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2 ** -0.5, 2 ** -0.5]]))
    hp = SimpleNamespace(dead=torch.tensor([False, True, True]), aux_k=1, aux_coeff=0.5)
    pre = torch.tensor([[5.0, 2.0, 1.0], [5.0, -1.0, 3.0]])
    e_hat = sae.act.aux_hat(sae, pre, hp)
    s = 3 * 2 ** -0.5
    torch.testing.assert_close(e_hat, torch.tensor([[0.0, 2.0], [s, s]]))
    x, x_hat = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])   # e = (0, 2), (2, 3)
    sq = ((s - 2) ** 2 + (s - 3) ** 2) / 2                  # mean over tokens of ||e_hat - e||^2 (token 0: exact)
    var = (1.0 + 0.25 + 1.0 + 0.25) / 2                     # e's mean (1, 2.5): deviations (-1, -0.5), (1, 0.5)
    assert S.TopK.aux_loss(e_hat, x, x_hat).item() == pytest.approx(sq / var, rel=1e-6)


def test_a_latent_is_dead_after_dead_window_activations_without_firing(monkeypatch):
    """train_seeds' dead mask (AuxK's input) with B = 4 tokens a step and dead_window 8: latent 0 fires every step,
    latent 1 at step 0 only, latent 2 never. Dead once 8 activations (2 steps) have passed since it last fired:
    latent 2 from step 2, latent 1 from step 3."""
    seen = []

    def fake_step(sae, opt, x, lr, hp):
        seen.append(hp.dead.tolist())
        f = torch.zeros(len(x), 3)
        f[0, 0] = 1.0
        if len(seen) == 1:
            f[1, 1] = 1.0
        return torch.tensor(1.0), torch.tensor(1.0), f
    monkeypatch.setattr(S, "train_step", fake_step)
    cfg = {"dead_window": 8, "aux_coeff": 1 / 32, "lr": 1e-3, "lr_decay_frac": 0.2, "l1_coeff": 0.0,
           "l1_warmup_frac": 0.0}
    job = SimpleNamespace(cfg=cfg, step=0, B=4, stats=None, d_in=2, device="cpu", fast_steps=None, aux_k=1,
                          total_steps=10)
    run = {"sae": None, "opt": None, "last_fired": torch.zeros(3, dtype=torch.long),
           "bad_step": torch.tensor(-1), "bad_loss": torch.tensor(0.0)}
    for step in range(4):
        job.step = step
        S.train_seeds(job, [run], torch.ones(4, 2))
    assert seen == [[False, False, False], [False, False, False], [False, False, True], [False, True, True]]


def test_resampling_takes_the_latents_that_did_not_fire_in_the_last_resample_every_steps(monkeypatch):
    """At step 8 with resample_every 4 (steps 4-7 looked at): a latent that last fired at step 7 or at step 4 is
    alive, one that last fired at step 3 or never is resampled; the resampled ones count as fired now."""
    got = {}

    def fake_resample(sae, opt, dead, pool, generator):
        got["dead"] = dead.tolist()
        return int(dead.sum())
    monkeypatch.setattr(S, "resample_dead", fake_resample)
    job = SimpleNamespace(step=8, cfg={"resample_every": 4}, buf=torch.zeros(1, 2), scale=1.0, n_features=4)
    run = {"seed": 0, "sae": None, "opt": None, "n_resampled": 0, "bad_step": torch.tensor(-1),
           "bad_loss": torch.tensor(0.0), "last_fired": torch.tensor([8, 5, 4, 0])}  # fired at step 7, 4, 3, never
    S.resample(job, [run])
    assert got["dead"] == [False, False, True, True] and run["n_resampled"] == 2
    assert run["last_fired"].tolist() == [8, 5, 8, 8]


def test_relu_encoder_starts_as_the_decoder_transpose_times_two_d_in_over_n_features():
    """init_sae: the ReLU SAE's encoder is W_dec^T x min(1, 2 d_in / n_features) (near the identity at the start),
    TopK's W_dec^T itself."""
    for arch, d_in, n_f, gain in (("relu", 4, 16, 0.5), ("relu", 4, 6, 1.0), ("topk", 4, 16, 1.0)):
        sae = S.init_sae(d_in, n_f, arch, 2, seed=3)
        torch.testing.assert_close(sae.W_enc, sae.W_dec.T * gain)
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(n_f))


@pytest.mark.parametrize("n, val, fits", [(320, 32, 31), (60, 6, 5)])
def test_a_split_one_token_short_is_found_and_the_shortest_window_that_fits_is_offered(dirs, tmp_path, n, val, fits):
    """The boundaries of sae.short_splits: a val split of exactly --seq_len tokens is short (a window needs the next
    token too), and a --seq_len that leaves exactly --skip_first + --tokens_per_seq positions is still offered."""
    data = str(tmp_path / "short")
    write_domain(data, "base", seed=0, n=n)                    # the model's block: 32
    with pytest.raises(SystemExit) as e:
        run((data, dirs[1]), "--model=base", "--skip_first=1", "--tokens_per_seq=4")
    msg = str(e.value)
    assert f"the base val split ({os.path.join(data, 'base', 'val.bin')}) has {val} tokens, fewer than one window " \
           "of 33 (--seq_len 32, and the next token)" in msg, msg
    assert msg.endswith(f"; or harvest shorter windows: python sae.py --model base --seq_len {fits} "
                        "--tokens_per_seq 4 --skip_first 1"), msg


def test_a_split_shorter_than_one_window_names_what_makes_it_fit(dirs, tmp_path):
    """A val (or train) split with fewer tokens than one window of --seq_len + 1: the line names the data.py
    setting that makes it larger (data.grow_fix) and, as every split holds a shorter window, the --seq_len that fits
    (the seeds kept); run with it, the SAEs train on windows of that length."""
    data = str(tmp_path / "short")
    write_domain(data, "base", seed=0, n=300)                   # 270 train, 30 val tokens; the model's block: 32
    with pytest.raises(SystemExit) as e:
        run((data, dirs[1]), "--model=base", "--seeds=0,2")
    msg = str(e.value)
    assert msg.startswith(f"error: the base val split ({os.path.join(data, 'base', 'val.bin')}) has 30 tokens, fewer "
                          f"than one window of 33 (--seq_len 32, and the next token); make {data} again with more text: "
                          f"python data.py --domain all --data_dir {data}"), msg
    assert msg.endswith("; or harvest shorter windows: python sae.py --model base --seeds 0,2 --seq_len 29 "
                        "--tokens_per_seq 4"), msg                      # (as given: see the test below)
    run((data, dirs[1]), "--model=base", "--seeds=0,2", "--seq_len=29")
    assert ck(dirs[1], "base", 2)["config"]["seq_len"] == 29


def test_the_shorter_windows_fix_keeps_the_positions_it_was_sized_for(dirs, tmp_path):
    """The --seq_len fix of a split shorter than one window is offered where the shorter window still holds
    --tokens_per_seq positions past --skip_first: given on the command line (here --tokens_per_seq 4, under the
    preset's 24), the printed command names it, or run as printed (the preset's value) it fails that very check."""
    import shlex
    data = str(tmp_path / "short")
    write_domain(data, "base", seed=0, n=120)                   # 108 train, 12 val tokens; the model's block: 32
    with pytest.raises(SystemExit) as e:
        run((data, dirs[1]), "--model=base")
    printed = str(e.value).split("; or harvest shorter windows: ")[1]
    assert printed == "python sae.py --model base --seq_len 11 --tokens_per_seq 4", printed
    speed = [a for a in RUN if not a.startswith("--tokens_per_seq=")]  # the test's sizes, but the setting named
    S.main([*speed, f"--data_dir={data}", f"--out_dir={dirs[1]}", *shlex.split(printed)[2:]])
    assert ck(dirs[1], "base", 0)["config"]["seq_len"] == 11


def test_the_reports_commands_for_another_seed_run_as_printed(dirs):
    """report.html's notes name sae.py commands for a third seed (the null's spread) and for a missing null seed:
    the model's SAEs are trained already, and sae.py trains a model's seeds together from one training state, so
    run as printed (the test's sizes first) each must make the new seed, not stop at 'train_state.pt exists'."""
    import shlex

    import report
    run(dirs, "--model=base", "--seeds=0")
    res = {"provenance": {"config": {"sae_seed": 0, "null_seed": 1, "spread_seed": 2, "data_dir": dirs[0],
                                     "preset": "tiny"}},
           "models": {"base": {}}, "null_missing": ["base"], "edges": {}, "null": {}}
    note = report.section_edges(res, 0.8, res["provenance"]["config"], dirs[1])
    printed = re.search(r"make one with (python sae\.py .*?)(, which|\))", note).group(1)
    S.main([*RUN, *shlex.split(printed)[2:]])
    assert os.path.isfile(S.sae_path(dirs[1], "base", 1))
    printed = report.for_study(report.third_seed_commands(res), res, dirs[1])  # (as render_report names it)
    S.main([*RUN, *shlex.split(printed)[2:]])
    assert all(os.path.isfile(S.sae_path(dirs[1], "base", s)) for s in (0, 1, 2))
