"""fast.py against its plain twins: every speed-up gives what the plain code of the core scripts
gives, bit for bit or to the rounding stated with each test; and a small pipeline end to end with
--fast=false and --fast=true reaches the same tracking counts."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import one_thread, random_sae  # noqa: F401 (one_thread: an autouse fixture)

import analyze
import fast
import sae as S
from model import ModelArgs, Transformer


def make(**kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(**(dict(vocab_size=97, block_size=16, d_model=32, n_head=4, n_kv_head=2, d_mlp=48)
                                    | kw))).eval()


def hp(dead=None, n=48):
    return SimpleNamespace(l1_coeff=0.7, dead=torch.zeros(n, dtype=torch.bool) if dead is None else dead, aux_k=8,
                           aux_coeff=0.5)


# -----------------------------------------------------------------------------
# model: the chunked LM head, the forward at a few positions with keys and values looked up

def test_chunked_head_loss_equals_the_plain_loss_with_gradients():
    # CPU training takes the loss through LMHeadCrossEntropy (no (B, T, vocab) logits held): the plain
    # head's loss and gradients to float32 rounding (its sums run in another order), ignored targets included
    m = make().train()
    idx, tgt = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    tgt[1, 5:] = -1
    logits, chunked = fast.ChunkedHead(m)(idx, tgt)
    assert logits is None
    chunked.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    logits, plain = m(idx, tgt)
    plain.backward()
    assert logits.shape == (3, 16, 97) and chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for n, p in m.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():                                                   # without gradients: the plain forward
        assert torch.equal(fast.ChunkedHead(m)(idx, tgt)[0], m(idx, tgt)[0])
    h, w, t = torch.randn(10, 8), torch.randn(97, 8), torch.randint(0, 97, (10,))
    for rows in (1, 3, 10):                                                 # chunking does not matter
        assert fast.LMHeadCrossEntropy.apply(h, w, t, rows).item() == pytest.approx(
            torch.nn.functional.cross_entropy(h @ w.t(), t).item(), rel=1e-6)


def test_eval_loss_in_head_rows_is_the_plain_loss():
    from model import eval_loss
    m = make()
    wins = torch.randint(0, 97, (7, 17), generator=torch.Generator().manual_seed(0))
    plain = eval_loss(m, wins, batch_size=3)
    assert fast.head_rows(m, 3 * 16) >= 256                                 # CPU: cache-sized blocks, >= 256 rows
    for rows in (5, 16, fast.head_rows(m, 3 * 16)):                          # blocks that cut across windows
        assert eval_loss(m, wins, batch_size=3, rows=rows) == pytest.approx(plain, rel=1e-6)


def test_looked_up_keys_and_values_give_the_plain_trunk():
    # float32 rounding: the positions-only attention masks where the plain one is causal
    m = make()
    idx = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([[1, 5, 15], [2, 3, 4], [0, 9, 12]])
    kv = fast.token_kv(m)                                                   # (vocab, keys and values)
    assert kv.shape == (97, 2 * m.args.n_kv_head * m.args.d_model // m.args.n_head)
    with pytest.raises(AssertionError, match="inference"):                 # no gradient would reach wk, wv through it
        fast.trunk(m, idx, pos, kv)
    rows = torch.arange(3)[:, None]
    with torch.no_grad():
        resid, h = m.trunk(idx)
        for kv_ in (None, kv):
            assert all(torch.equal(a, b) for a, b in zip(fast.trunk(m, idx, None, kv_), (resid, h))) or kv_ is not None
            got = fast.trunk(m, idx, pos, kv_)
            assert torch.allclose(got[0], resid[rows, pos], atol=1e-6)
            assert torch.allclose(got[1], h[rows, pos], atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast.trunk(m, idx, None, kv), (resid, h)))
        m.attn.wv.weight.mul_(2)                           # a table made from other weights gives another result
        assert not torch.allclose(m.trunk(idx)[1][rows, pos], fast.trunk(m, idx, pos, kv)[1], atol=1e-4)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_mlp_activations_fast_is_the_plain_path(n_kv_head):
    m = make(n_kv_head=n_kv_head)
    wins = torch.randint(0, 97, (10, 16), generator=torch.Generator().manual_seed(1))
    pos = torch.randint(1, 16, (10, 5), generator=torch.Generator().manual_seed(2))
    for kw in (dict(skip_first=1), dict(positions=pos)):
        plain = list(S.mlp_activations(m, wins, 4, "cpu", **kw))
        quick = list(S.mlp_activations(m, wins.numpy(), 4, "cpu", use_fast=True, **kw))
        assert [s for s, _ in plain] == [s for s, _ in quick] == [0, 4, 8]
        assert torch.allclose(torch.cat([a for _, a in plain]), torch.cat([a for _, a in quick]), atol=1e-6)


# -----------------------------------------------------------------------------
# the SAE step: PreAt, the sparse step, the bf16 selection, the bit tricks

@pytest.mark.parametrize("arch,dead", [("relu", False), ("topk", True)])
def test_dense_step_is_the_plain_step(arch, dead):
    """fast.sae_loss's dense step (PreAt: b_dec's gradient as a matvec, not autograd's (N, F) x (F, d_in)
    product) gives sae.sae_loss's loss and autograd's gradients of it, to float32 rounding."""
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).relu() * 2
    ours, ref = random_sae(arch), random_sae(arch)
    h = hp((torch.arange(48) % 3 == 0) if dead else None)
    loss, mse, f = fast.sae_loss(ours, x, h)
    loss_ref, mse_ref, f_ref = S.sae_loss(ref, x, h)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6) and torch.equal(f.detach(), f_ref.detach())
    loss.backward()
    loss_ref.backward()
    assert ours.b_dec.grad.abs().max() > 1e-3                               # the gradient that changed path
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("arch,dead", [("relu", False), ("topk", False), ("topk", True)])
def test_sparse_step_is_the_plain_step(arch, dead):
    """The sparse step (decoder and backward products on the active latents only; with AuxK on dead
    latents too) gives the plain step's loss, f and gradients, to float32 rounding."""
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).relu() * 2
    plain, sparse = random_sae(arch), random_sae(arch)
    with torch.no_grad():                                                   # a few % active, as after warm-up
        for s in (plain, sparse):
            s.b_enc.sub_(1.0)
    x[:4] = plain.b_dec.detach()                                            # four tokens with no active latent
    h = hp((torch.arange(48) % 3 == 0) if dead else None)                   # a third of the latents dead
    loss_p, mse_p, f_p = S.sae_loss(plain, x, h)
    loss_s, mse_s, f_s = fast.sae_loss(sparse, x, h, sparse=True)
    assert 0 < (f_p > 0).float().mean() < 0.5 and torch.equal(f_p.detach(), f_s.to_dense())
    assert (f_p[:4] == 0).all() and (f_p == 0).all(0).any()                 # empty rows and columns included
    assert mse_p.item() == pytest.approx(mse_s.item(), rel=1e-5)
    if arch == "relu" or dead:  # (with no dead latent AuxK is a constant without gradient, which fast skips)
        assert loss_p.item() == pytest.approx(loss_s.item(), rel=1e-5)
    fired_p, n_p = S.firing(f_p.detach())
    fired_s, n_s = fast.csr_firing(f_s)
    assert torch.equal(fired_p, fired_s) and int(n_p) == n_s
    loss_p.backward()
    loss_s.backward()
    for (name, p), q in zip(plain.named_parameters(), sparse.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


def test_loss_for_takes_the_sparse_step_below_the_density_switch():
    # below 15% of the latents and 320 a token on a CPU: tiny's switch (2,048 latents) is the density's, the
    # paper's (16,384) the count's; CUDA: no switch measured yet
    for device, density, n, sparse in (("cpu", 0.01, 2048, True), ("cpu", 0.149, 2048, True),
                                       ("cpu", fast.SPARSE_BELOW["cpu"], 2048, False), ("cpu", 0.019, 16384, True),
                                       ("cpu", 0.02, 16384, False), ("cuda", 0.01, 2048, False)):
        fn = fast.loss_for(device, density, True, n)
        assert fn.func is fast.sae_loss and fn.keywords == {"sparse": sparse, "select_bf16": sparse}


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_bf16_selection_changes_only_near_threshold_latents(arch):
    """select_bf16: the active latents come from a bf16 product, their values are exact: every value
    used equals the float32 pre-activation, and the latents picked differently from the float32
    step are only those within bf16 rounding of the threshold; loss and gradients stay close."""
    x = torch.randn(400, 64, generator=torch.Generator().manual_seed(1)).relu() * 2
    exact, approx = random_sae(arch, d=64, n=256, k=12), random_sae(arch, d=64, n=256, k=12)
    with torch.no_grad():
        for s in (exact, approx):
            s.b_enc.sub_(1.5)
    h = hp(n=256)
    loss_e, _, f_e = fast.sae_loss(exact, x, h, sparse=True)
    loss_a, _, f_a = fast.sae_loss(approx, x, h, sparse=True, select_bf16=True)
    fe, fa = f_e.to_dense(), f_a.to_dense()
    with torch.no_grad():
        pre = exact.pre_acts(x)
    both = (fe > 0) & (fa > 0)
    assert torch.allclose(fa[fa > 0], pre[fa > 0], rtol=1e-5, atol=1e-6)       # values: exact float32
    differ = (fe > 0) != (fa > 0)
    assert differ.float().mean() < 0.01 and both.sum() > 0.9 * (fe > 0).sum()
    if arch == "relu":  # only near-zero pre-activations can be picked differently
        assert differ.sum() == 0 or pre[differ].abs().max() < 0.02 * pre.abs().max()
    assert loss_a.item() == pytest.approx(loss_e.item(), rel=1e-2)
    loss_e.backward()
    loss_a.backward()
    for (name, p), q in zip(exact.named_parameters(), approx.parameters()):
        assert (p.grad - q.grad).norm() < 0.05 * p.grad.norm(), name


def test_encode_features_is_encode_at_those_features():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([5, 0, 47, 12])
    for arch in ("relu", "topk"):
        sae = random_sae(arch)
        want = sae.encode(x)[:, idx]
        assert (want > 0).any() and (want == 0).any()
        assert torch.allclose(fast.encode_features(sae, x, idx), want, atol=1e-6)


def test_relu_support_is_the_positive_entries_in_row_major_order():
    # the sparse step's selection on the CPU (numpy's comparison; a bf16 value read as int16): the same
    # entries as > 0 in float32, row-major, for signed zeros, subnormal, huge and infinite values
    special = torch.tensor([0.0, -0.0, 1e-38, -1e-38, 3e38, -3e38, float("inf"), float("-inf"), 1.0, -1.0])
    values = torch.cat([special, torch.randn(1990, generator=torch.Generator().manual_seed(0))])
    for dtype in (torch.float32, torch.bfloat16):
        for width in (8, 10):
            pre = values.to(dtype).view(-1, width)
            rows, cols = fast.support(S.ReLU(0, width), pre)
            want_rows, want_cols = (pre.float() > 0).nonzero(as_tuple=True)
            assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)
            assert [(int(r), int(c)) for r, c in zip(rows[:4], cols[:4])] == [divmod(i, width) for i in (2, 4, 6, 8)]


def test_topk_support_is_the_plain_topk_entries():
    pre = torch.randn(50, 40, generator=torch.Generator().manual_seed(5)) - 0.8
    act = S.TopK(6, 40)
    rows, cols = fast.support(act, pre)
    want_rows, want_cols = (act(pre) > 0).nonzero(as_tuple=True)
    assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)


def test_nonzero_flat_and_stable_order_match_torch():
    # the numpy paths (CPU): nonzero entries of any sign (analyze.py's shifted features), row-major; a
    # stable order by key, ties kept in place, through int16 radix sort (n <= 2^15) or torch's sort
    g = torch.Generator().manual_seed(3)
    a = torch.randn(50, 40, generator=g).mul(torch.rand(50, 40, generator=g) < 0.1)
    a[0, 0], a[0, 1] = -0.0, -2.0
    assert torch.equal(fast.nonzero_flat(a), a.flatten().nonzero().squeeze(1))
    assert torch.equal(fast.nonzero_flat(a, positive=True), (a.flatten() > 0).nonzero().squeeze(1))
    keys = torch.randint(0, 300, (5000,), generator=torch.Generator().manual_seed(4))
    want = torch.sort(keys, stable=True).indices
    assert torch.equal(fast.stable_order(keys, 300), want) and torch.equal(fast.stable_order(keys, 2 ** 16), want)


def test_sae_evaluation_in_head_rows_is_the_plain_evaluation(monkeypatch):
    # the LM head a block of rows at a time (fast.head_rows; here 7 rows, cutting across windows): the
    # plain metrics to float64 summation rounding
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=64, block_size=32, d_model=32, n_head=4, n_kv_head=2, d_mlp=32)).eval()
    with torch.no_grad():  # at init the MLP hardly moves the logits (CE recovered ill-conditioned); make it matter
        model.mlp.down.weight.mul_(30)
        model.lm_head.weight.mul_(10)
    wins = torch.randint(0, 64, (6, 33), generator=torch.Generator().manual_seed(1))
    saes = [random_sae("relu", d=32, n=64), random_sae("topk", d=32, n=64)]
    plain = S.evaluate(model, saes, wins, skip=1, batch=4)
    monkeypatch.setattr(fast, "head_rows", lambda model, n: 7)
    chunked = S.evaluate(model, saes, wins, skip=1, batch=4, use_fast=True)
    for a, b in zip(chunked, plain):  # CE recovered divides by ce_zero - ce_clean, amplifying the CEs' rounding
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4 if k == "ce_recovered" else 1e-6,
                                                                  abs=1e-9) for k in a if k != "density_hist")
        assert a["density_hist"] == b["density_hist"]


def test_seed_pool_only_on_a_cpu_with_threads_for_several_seeds():
    assert fast.seed_pool("cuda", 2, 4) is None and fast.seed_pool("cpu", 1, 4) is None
    assert fast.seed_pool("cpu", 2, 1) is None
    pool = fast.seed_pool("cpu", 3, 2)
    assert pool._max_workers == 2 and pool.submit(torch.get_num_threads).result() == 1  # one core each
    pool.shutdown()


# --- the SAE step on a GPU: the seeds as one stack, bf16 products; the harvest's draws

def stack_and_each(arch, n_seeds=2, device="cpu"):
    """Seeded SAEs with their runs twice: one set to train as a fast.SeedStack, one seed by seed."""
    cfg = dict(S.config, lr=1e-2)
    runs = [S.new_run(s, random_sae(arch, seed=s).to(device), cfg, 48, device) for s in range(n_seeds)]
    each = [S.new_run(s, random_sae(arch, seed=s).to(device), cfg, 48, device) for s in range(n_seeds)]
    return runs, each


DEVICES = ["cpu"] + ["cuda"] * torch.cuda.is_available()    # (the GPU machine runs the stack's steps on CUDA too)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch,dead", [("relu", False), ("topk", True)])
def test_a_stack_of_seeds_steps_each_seed_as_its_own_step(arch, dead, device):
    """fast.SeedStack + stack_loss: every seed's step in one set of batched products and one Adam gives
    each seed's own dense step (fast.sae_loss) to float32 rounding (1e-6 after 5 steps; CUDA's float32
    reductions in another order: 1e-5); each seed's SAE and Adam state are views of the stack (what
    sae.py does to a seed is done to the stack)."""
    runs, each = stack_and_each(arch, device=device)
    stack = fast.SeedStack(runs)
    atol = 1e-6 if device == "cpu" else 1e-5
    x = (torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).relu() * 2).to(device)
    masks = torch.stack([(torch.arange(48) % (3 + j) == 0) & dead for j in range(2)]).to(device)  # AuxK: dead
    for _ in range(5):
        loss, mse, f = S.train_step(stack, stack.opt, x, 1e-2, hp(masks[:, None]), fast.stack_loss)
        for j, r in enumerate(each):
            loss_j, mse_j, f_j = S.train_step(r["sae"], r["opt"], x, 1e-2, hp(masks[j]), fast.sae_loss)
            assert loss[j].item() == pytest.approx(loss_j.item(), rel=1e-5) and mse.shape == (2,)
            assert ((f[j] > 0) == (f_j > 0)).all() and torch.allclose(f[j], f_j, atol=10 * atol)
    for r, e in zip(runs, each):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.allclose(getattr(r["sae"], name), getattr(e["sae"], name), atol=atol), name
        mine, theirs = r["opt"].state_dict()["state"], e["opt"].state_dict()["state"]
        assert all(torch.allclose(mine[i][k], theirs[i][k], atol=atol) for i in theirs for k in theirs[i])
        assert mine[0]["step"].item() == 5
    with torch.no_grad():                                   # views: a seed's resampling writes the stack
        runs[1]["sae"].W_dec[3] = 0.5
        runs[1]["opt"].state[runs[1]["sae"].W_dec]["exp_avg"][3] = 0.0
    assert (stack.W_dec[1, 3] == 0.5).all() and (stack.opt.state[stack.W_dec]["exp_avg"][1, 3] == 0).all()


def test_a_stack_takes_a_resumed_adam_state_and_refuses_seeds_at_different_steps():
    runs, each = stack_and_each("relu")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    for r, e in zip(runs, each):                            # two steps each, then on as a stack
        for _ in range(2):
            S.train_step(r["sae"], r["opt"], x, 1e-2, hp(), fast.sae_loss)
            S.train_step(e["sae"], e["opt"], x, 1e-2, hp(), fast.sae_loss)
    stack = fast.SeedStack(runs)
    S.train_step(stack, stack.opt, x, 1e-2, hp(), fast.stack_loss)
    for e in each:
        S.train_step(e["sae"], e["opt"], x, 1e-2, hp(), fast.sae_loss)
    for r, e in zip(runs, each):
        assert torch.allclose(r["sae"].W_enc, e["sae"].W_enc, atol=1e-6)
        assert r["opt"].state_dict()["state"][0]["step"].item() == 3
    S.train_step(each[0]["sae"], each[0]["opt"], x, 1e-2, hp(), fast.sae_loss)
    with pytest.raises(SystemExit, match="different steps"):
        fast.SeedStack(each)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_bf16_stack_step_stays_within_bf16_rounding_of_float32(arch, device):
    """stack_bf16: the products' inputs and outputs (pre, f, x_hat) rounded to bf16 (8 bits of mantissa),
    float32 accumulation and master weights: the loss within 1% of the float32 step's, the latents picked the same but for
    those within rounding of the threshold, every gradient within 3% (relative norm)."""
    runs32, _ = stack_and_each(arch, device=device)
    runs16, _ = stack_and_each(arch, device=device)
    s32, s16 = fast.SeedStack(runs32), fast.SeedStack(runs16, torch.bfloat16)
    x = (torch.randn(400, 16, generator=torch.Generator().manual_seed(1)).relu() * 2).to(device)
    h = hp(torch.stack([torch.arange(48) % 3 == 0] * 2)[:, None].to(device))
    (l32, m32, f32), (l16, m16, f16) = fast.stack_loss(s32, x, h), fast.stack_loss(s16, x, h)
    assert f16.dtype == torch.bfloat16 and l16.dtype == m16.dtype == torch.float32
    assert torch.allclose(l16, l32, rtol=1e-2) and torch.allclose(m16, m32, rtol=1e-2)
    assert ((f16 > 0) != (f32 > 0)).float().mean() < 0.01
    l32.sum().backward()
    l16.sum().backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        g32, g16 = getattr(s32, name).grad, getattr(s16, name).grad
        assert g16.dtype == torch.float32 and (g16 - g32).norm() < 0.03 * g32.norm(), name


@pytest.mark.parametrize("way,threads", [("each", 1), ("each", 2), ("stack", 1)])
def test_seed_steps_give_the_plain_loop_of_train_seeds(way, threads):
    """fast.SeedSteps, train_seeds' fast twin, against its plain loop (each seed's train_step with
    sae.sae_loss, then sae.firing): per seed the same latents fired and active entries, the loss to float32
    rounding, parameters within 1e-6 after 5 steps; each run's density (the sparse switch) kept either way.
    "each", a few % of the latents active, takes the sparse step from the second step on (threads 2: in a pool)."""
    runs, plain = stack_and_each("relu")
    for r in runs + plain:                                                  # a few % active, as after warm-up
        with torch.no_grad():
            r["sae"].b_enc.sub_(2.0)
    steps = fast.SeedSteps(way, "cpu", False, 2, threads, S.train_step, S.firing)
    steps.start(runs)
    assert (steps.pool is not None) == (threads == 2) and (steps.stack is not None) == (way == "stack")
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).relu() * 2
    sparse = []
    real = fast.sparse_loss
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "sparse_loss", lambda *a: sparse.append(1) or real(*a))
        for _ in range(5):
            outs = steps(runs, x, 1e-2, [hp(), hp()])
            for r, p, (loss, mse, fired, n_active) in zip(runs, plain, outs):
                loss_p, mse_p, f_p = S.train_step(p["sae"], p["opt"], x, 1e-2, hp())
                fired_p, n_p = S.firing(f_p)
                assert torch.equal(fired, fired_p) and int(n_active) == int(n_p) > 0
                assert loss.item() == pytest.approx(loss_p.item(), rel=1e-5)
                assert r["density"] == int(n_p) / (200 * 48)                    # the next step's switch
    assert len(sparse) == (8 if way == "each" else 0)                      # 2 seeds x steps 2-5
    for r, p in zip(runs, plain):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.allclose(getattr(r["sae"], name), getattr(p["sae"], name), atol=1e-6), name


def test_sae_py_trains_a_stack_like_each_seed_and_resumes_it_exactly(tmp_path, monkeypatch):
    """sae.py --sae_step stack: the whole loop (resampling, evaluation, saving) on the stack gives each
    seed's dense steps (--sae_step each, the sparse step switched off) to float32 rounding; stopped and
    resumed it gives the uninterrupted run bit for bit, and a run begun seed by seed continues as a stack
    and one begun as a stack continues seed by seed (each seed with its own Adam step count)."""
    import test_sae as T
    data = str(tmp_path / "data")
    for i, d in enumerate(("base", "lua", "tinystories")):
        T.write_domain(data, d, seed=i)
    monkeypatch.setattr(fast, "SPARSE_BELOW", {})             # each: the dense step, the stack's twin
    KILL = ["--l1_coeff=50", "--l1_warmup_frac=0", "--lr=0.03"]  # a strong L1 kills latents: resampling runs
    runs = {"each": ["--sae_step=each"], "stack": ["--sae_step=stack"],
            "stopped": ["--sae_step=stack", "--stop_step=10"], "switched": ["--sae_step=each", "--stop_step=10"],
            "unstacked": ["--sae_step=stack", "--stop_step=10"]}
    for name, extra in runs.items():
        T.write_model(str(tmp_path / name), "base", seed=0)
        T.run((data, None), "--model=base", "--seeds=0,1", "--threads=1", *KILL, *extra,
              out=str(tmp_path / name))
    for name, step in (("stopped", "stack"), ("switched", "stack"), ("unstacked", "each")):
        T.run((data, None), "--model=base", "--seeds=0,1", "--threads=1", *KILL, f"--sae_step={step}",
              "--resume", out=str(tmp_path / name))
    got = {name: T.state(str(tmp_path / name), "base")["seeds"] for name in runs}
    assert got["stack"][1]["n_resampled"] > 0
    assert torch.equal(got["each"][0]["last_fired"], got["stack"][0]["last_fired"])
    for s in (0, 1):
        for k, w in got["each"][s]["sae"].items():
            assert torch.allclose(got["stack"][s]["sae"][k], w, atol=1e-6), k
            assert torch.equal(got["stopped"][s]["sae"][k], got["stack"][s]["sae"][k]), k
            assert torch.allclose(got["switched"][s]["sae"][k], w, atol=1e-6), k
            assert torch.allclose(got["unstacked"][s]["sae"][k], w, atol=1e-6), k
        assert all(st["step"].item() == 24 for st in got["unstacked"][s]["optimizer"]["state"].values())
        assert got["stack"][s]["metrics"]["fvu"] == pytest.approx(got["each"][s]["metrics"]["fvu"], rel=1e-5)
    size = {n: os.path.getsize(str(tmp_path / n / "sae_base" / S.STATE_FILE)) for n in ("each", "stack")}
    assert size["stack"] < 1.05 * size["each"]        # the stack's storage saved once, not once per seed
    with pytest.raises(SystemExit, match="drop it, or drop --fast=false"):
        T.run((data, None), "--model=base", "--sae_step=stack", "--fast=false", "--overwrite",
              out=str(tmp_path / "each"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the GPU machine runs it)")
def test_sae_py_on_cuda_trains_the_cpus_saes_to_bf16_rounding(tmp_path, monkeypatch):
    """sae.py's defaults on CUDA (the seeds as one bf16 stack, the draws made ahead, the harvest's batch,
    TF32 elsewhere): the run finishes and its SAEs' metrics are the CPU's float32 stack's to within bf16's
    and TF32's rounding (BENCHMARKS.md's bands: FVU within 0.005, L0 within 2%; here 5%, a short run)."""
    import test_sae as T
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # sae.py sets it: not for later tests
    data = str(tmp_path / "data")
    T.write_domain(data, "base", seed=0)
    got = {}
    for device, step in (("cpu", "stack"), ("cuda", "auto")):
        T.write_model(str(tmp_path / device), "base", seed=0)
        got[device] = T.run((data, None), "--model=base", "--seeds=0,1", "--threads=1", f"--device={device}",
                            f"--sae_step={step}", "--harvest_batch=0", out=str(tmp_path / device))["seeds"]
    for s in ("0", "1"):
        a, b = got["cpu"][s], got["cuda"][s]
        assert abs(a["fvu"] - b["fvu"]) < 0.005 and abs(a["l0"] - b["l0"]) < 0.05 * a["l0"], (s, a, b)


def test_pick_sae_step_stacks_on_cuda_and_steps_each_seed_on_a_cpu():
    assert fast.pick_sae_step("auto", "cuda:0", True) == "stack_bf16"
    assert fast.pick_sae_step("auto", "cuda", False) == "stack"
    assert fast.pick_sae_step("auto", "cpu", True) == "each" and fast.pick_sae_step("stack", "cpu", True) == "stack"


@pytest.mark.parametrize("mix", ["equal", "tokens"])
def test_fast_windows_are_the_plain_windows_bit_for_bit(mix):
    rng = np.random.default_rng(0)
    arrays = {d: rng.integers(0, 60000, n).astype(np.uint16) for d, n in (("a", 5000), ("b", 300), ("c", 2000))}
    for T in (1, 33, 300):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert torch.equal(S.stream_windows(arrays, 1001, T, g1, mix),
                           S.stream_windows(arrays, 1001, T, g2, mix, use_fast=True))
        assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))   # the generator left alike
    with pytest.raises(SystemExit, match="fewer than one window of 301"):
        S.stream_windows(arrays, 4, 301, torch.Generator(), mix, use_fast=True)


def test_prefetch_gives_each_buffers_draws_and_asks_for_the_next_ahead():
    asked = []

    def make(c):
        asked.append(c)
        return c * 10
    pre = fast.Prefetch(make, last=6)
    pre.ahead(0)
    assert [pre.get(c) for c in (0, 1, 2, 5, 6)] == [0, 10, 20, 50, 60]
    pre.pool.shutdown(wait=True)
    assert sorted(asked) == [0, 1, 2, 3, 5, 6]              # ahead: 0, 1, 2, 3 (unused: 5 was asked), 6; none past 6


def test_sae_py_with_the_draws_made_ahead_trains_the_same_saes_bit_for_bit(tmp_path, monkeypatch):
    import test_sae as T
    data = str(tmp_path / "data")
    T.write_domain(data, "base", seed=0)
    made, started = [], []

    def ahead(self, c, real=fast.Prefetch.ahead):
        real(self, c)
        started.extend(self.started)
    monkeypatch.setattr(fast.Prefetch, "get", lambda self, c, real=fast.Prefetch.get: made.append(c) or real(self, c))
    monkeypatch.setattr(fast.Prefetch, "ahead", ahead)
    for ahead in (False, True):
        monkeypatch.setattr(fast.Prefetch, "pays", staticmethod(lambda device: ahead))
        T.write_model(str(tmp_path / str(ahead)), "base", seed=0)
        T.run((data, None), "--model=base", "--seeds=0", "--threads=1", out=str(tmp_path / str(ahead)))
    assert made == [1, 2, 3, 4, 5]                            # 24 steps, buffers of 4; buffer 0 made at the start
    assert started == [1, 2, 3, 4, 5]                         # each drawn ahead, the first too; none past the last
    a, b = (T.state(str(tmp_path / str(ahead)), "base")["seeds"][0]["sae"] for ahead in (False, True))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the GPU machine runs it)")
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_sparse_step_on_cuda_is_the_dense_step(arch, monkeypatch):
    """The sparse step's products (embedding bags, sampled products) on CUDA: the dense step's loss
    and gradients to float32 rounding, as on the CPU (TF32 off: the dense products in float32 too)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = (torch.randn(200, 16, generator=torch.Generator().manual_seed(0)).relu() * 2).cuda()
    dense, sparse = random_sae(arch).cuda(), random_sae(arch).cuda()
    with torch.no_grad():
        for s in (dense, sparse):
            s.b_enc.sub_(1.0)
    h = hp((torch.arange(48) % 3 == 0).cuda())
    loss_d, _, f_d = fast.sae_loss(dense, x, h)
    loss_s, _, f_s = fast.sae_loss(sparse, x, h, sparse=True)
    assert torch.equal(f_d.detach(), f_s.to_dense()) and loss_d.item() == pytest.approx(loss_s.item(), rel=1e-5)
    loss_d.backward()
    loss_s.backward()
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


# --- correlation and matching (analyze.py)

def sparse_feats(rng, n, f, density=0.2):
    return (rng.random((n, f)) < density) * rng.exponential(1.0, (n, f))


def streamed(acc, x, y, chunk):
    for i in range(0, len(x), chunk):
        acc.update(torch.as_tensor(x[i:i + chunk]), torch.as_tensor(y[i:i + chunk]))
    return analyze.pearson(acc).numpy()


def fast_corr(x, y, chunk, mm_dtype=torch.float64, sparse=False):
    return streamed(fast.CorrAccumulator(x.shape[1], y.shape[1], mm_dtype=mm_dtype, sparse=sparse), x, y, chunk)


def plain_corr(x, y, chunk):
    return streamed(analyze.CorrAccumulator(x.shape[1], y.shape[1]), x, y, chunk)


def sae_like(rng, n=3000, f=48):
    """Parent and child features as SAEs give them: sparse (1-5% active), children partly copies of
    parents (rescaled, noised), a few dense features far from zero, a dead and a constant one."""
    x = sparse_feats(rng, n, f, rng.uniform(0.01, 0.05, f))
    y = np.concatenate([2 * x[:, :f // 2] + 0.1 * sparse_feats(rng, n, f // 2, 0.02),
                        sparse_feats(rng, n, f // 2 - 4, 0.03), 3 + rng.normal(size=(n, 2)),
                        np.zeros((n, 1)), np.full((n, 1), 0.7)], 1)
    x[:, -2:] = 5 + rng.normal(size=(n, 2))
    return x, y


# float64 products: both exact to rounding (1e-10); float32 dense products (analyze.py's): 1e-5
@pytest.mark.parametrize("mm_dtype,sparse,atol", [(torch.float64, False, 1e-10), (torch.float64, True, 1e-10),
                                                  (torch.float32, False, 1e-5), (torch.float32, True, 1e-5)])
def test_fast_correlation_equals_the_plain_twin(mm_dtype, sparse, atol):
    x, y = sae_like(np.random.default_rng(10))
    want = plain_corr(x, y, 3000)
    for chunk in (50, 256, 3000):                      # the first 1,024 rows are held back for the shift
        got = fast_corr(x, y, chunk, mm_dtype, sparse)
        np.testing.assert_allclose(got, want, atol=atol)
        assert (got[:, -2:] == 0).all() and (want[:, -2:] == 0).all()       # dead, constant: 0 in both
    # as analyze.py makes it (float32, sparse where it pays), on float32 features as the SAEs give them
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    got = streamed(fast.CorrAccumulator(48, 48), x32, y32, 256)
    np.testing.assert_allclose(got, plain_corr(x32, y32, 256), atol=1e-5)


def test_dense_products_in_blocks_of_rows_equal_one_product():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(600, 4)), sparse_feats(rng, 600, 5)], 1)
    y = np.concatenate([x[:, :3] @ rng.normal(size=(3, 3)) + 0.5 * rng.normal(size=(600, 3)),
                        sparse_feats(rng, 600, 4)], 1)
    want = np.corrcoef(x.T, y.T)[:x.shape[1], x.shape[1]:]
    with pytest.MonkeyPatch.context() as mp:  # x^T y made and added two rows at a time (PRODUCT_BYTES)
        mp.setattr(fast, "PRODUCT_BYTES", 2 * 4 * y.shape[1])
        assert fast.product_rows(y.shape[1]) == 2
        np.testing.assert_allclose(fast_corr(x, y, 64), want, atol=1e-10)
    # float32 products per chunk (the default) stay within 1e-5 of the exact answer
    got = fast_corr(x.astype(np.float32), y.astype(np.float32), 64, torch.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_shift_keeps_float32_exact_for_features_far_from_zero():
    # a feature of mean 1000 and std 1: E[x^2] - E[x]^2 without the shift loses every digit in float32
    rng = np.random.default_rng(1)
    x = 1000 + rng.normal(size=(2000, 3))
    y = x[:, :2] + 0.3 * rng.normal(size=(2000, 2))
    want = np.corrcoef(x.T, y.T)[:3, 3:]
    got = fast_corr(x.astype(np.float32), y.astype(np.float32), 256, torch.float32)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_float32_is_precise_when_a_sparse_feature_fires_hard_on_the_first_row():
    """A sparse feature's first value 30 SD above its mean: shifting by the first row (the old rule) made
    every other value an outlier and float32 sums cancelled (r off by ~1e-3); the median shift keeps
    float32 within 1e-5 of the exact answer."""
    rng = np.random.default_rng(6)
    n = 20000
    x = sparse_feats(rng, n, 6, density=0.02)
    y = np.concatenate([x[:, :3] + 0.05 * sparse_feats(rng, n, 3, 0.02), sparse_feats(rng, n, 3, 0.02)], 1)
    x[0], y[0] = 40.0, 40.0                                                    # outliers on the first token
    want = np.corrcoef(x.T, y.T)[:6, 6:]
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    for sparse in (False, True):
        got = fast_corr(x32, y32, 512, torch.float32, sparse=sparse)
        np.testing.assert_allclose(got, want, atol=1e-5)
    first_row = fast.CorrAccumulator(6, 6, mm_dtype=torch.float32, warmup=1)        # shift = the first row, as before
    for i in range(0, n, 512):
        first_row.cx, first_row.cy = torch.as_tensor(x32[0]), torch.as_tensor(y32[0])
        first_row.shift_x = first_row.shift_y = True
        first_row._add(torch.as_tensor(x32[i:i + 512]), torch.as_tensor(y32[i:i + 512]))
    assert np.abs(analyze.pearson(first_row).numpy() - want).max() > 1e-4                 # the defect this fixes


def test_sparse_products_equal_the_dense_reference(monkeypatch):
    monkeypatch.setattr(fast, "PAIR_ROWS", 7)                                 # many blocks of co-active pairs
    rng = np.random.default_rng(7)
    x = np.concatenate([sparse_feats(rng, 900, 40, 0.02), 5 + rng.normal(size=(900, 2))], 1)   # two dense features
    y = np.concatenate([x[:, :10] * 2 + sparse_feats(rng, 900, 10, 0.01), sparse_feats(rng, 900, 30, 0.05)], 1)
    for chunk in (1, 100, 900):
        sparse, dense = fast_corr(x, y, chunk, sparse=True), fast_corr(x, y, chunk, sparse=False)
        np.testing.assert_allclose(sparse, dense, atol=1e-12)
    np.testing.assert_allclose(fast_corr(x, y, 128, sparse=True), np.corrcoef(x.T, y.T)[:42, 42:], atol=1e-10)
    np.testing.assert_allclose(fast_corr(x, y, 128, sparse=True), plain_corr(x, y, 128), atol=1e-12)   # the twin


def test_dense_chunks_take_the_dense_path_without_extracting_entries(monkeypatch):
    """The sparse accumulator estimates a chunk's co-active pairs from its first rows' active counts
    and extracts the entries (GBs for a dense chunk at the paper's widths) only where it pays."""
    calls = []
    real = fast.entries
    monkeypatch.setattr(fast, "entries", lambda a, by_feature=False: calls.append(len(a)) or real(a, by_feature))
    rng = np.random.default_rng(4)
    dense_x, dense_y = rng.random((400, 60)), rng.random((400, 50))               # every feature active
    sparse_x, sparse_y = sparse_feats(rng, 400, 60, 0.02), sparse_feats(rng, 400, 50, 0.02)
    for x, y, extracts in ((dense_x, dense_y, False), (sparse_x, sparse_y, True)):
        calls.clear()
        got = fast_corr(x, y, 200, sparse=True)
        assert bool(calls) == extracts
        np.testing.assert_allclose(got, fast_corr(x, y, 200, sparse=False), atol=1e-12)


def test_coactive_add_is_x_transpose_y():
    rng = np.random.default_rng(11)
    x, y = torch.as_tensor(sparse_feats(rng, 50, 7, 0.3)), torch.as_tensor(sparse_feats(rng, 50, 12, 0.3))
    x[3], y[3] = 1.5, torch.arange(1.0, 13.0)              # a token whose 12 active y features fill two slots
    assert fast.SLOT < 12
    for pair_rows in (1, 3, fast.PAIR_ROWS):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fast, "PAIR_ROWS", pair_rows)
            out = torch.zeros(7, 12, dtype=torch.float64)
            fast.coactive_add(out, fast.entries(x, by_feature=True), fast.entries(y), len(x))
            torch.testing.assert_close(out, x.T @ y, rtol=0, atol=1e-12)


def test_components_label_the_connected_parts_of_the_candidate_graph():
    pairs = np.array([[0, 0], [1, 0], [1, 1], [2, 2], [3, 3], [4, 3], [4, 4]])   # {0,1}x{0,1}, {2}x{2}, {3,4}x{3,4}
    label = fast.components(pairs, 5)
    groups = {}
    for k, lab in enumerate(label):
        groups.setdefault(int(lab), []).append(k)
    assert sorted(groups.values()) == [[0, 1, 2], [3], [4, 5, 6]]


def candidate_graph(rng, n=60, density=0.05):
    """Candidate pairs at r >= 0.5 of an (n, n) random r, as classify() gives them: many small components."""
    r = np.where(rng.random((n, n)) < density, rng.uniform(0.5, 1.0, (n, n)), 0.0)
    pairs = np.argwhere(r >= 0.5)
    return pairs, r[pairs[:, 0], pairs[:, 1]]


def fast_matching(pairs, weights, n_rows):
    return fast.max_weight_matching(pairs, weights, n_rows, analyze.linear_sum_assignment, analyze.greedy_matching)


def test_fast_max_weight_matching_equals_the_plain_twin():
    """Component by component (fast) or once on the whole matrix (plain): the same matching (real
    weights: a unique optimum), in the same order; equal summed weight to 1e-9 in any case."""
    rng = np.random.default_rng(12)
    for density in (0.01, 0.03, 0.08):
        for _ in range(5):
            pairs, w = candidate_graph(rng, density=density)
            got, gw, n_greedy = fast_matching(pairs, w, 60)
            want, ww, _ = analyze.max_weight_matching(pairs, w)
            assert n_greedy == 0 and gw.sum() == pytest.approx(ww.sum(), abs=1e-9)
            assert got.tolist() == want.tolist() and gw.tolist() == ww.tolist()
    empty = np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    assert len(fast_matching(*empty, 3)[0]) == 0 and len(analyze.max_weight_matching(*empty)[0]) == 0


def test_a_component_over_hungarian_max_is_matched_greedily_and_counted(monkeypatch):
    # one 2 x 2 component where greedy is wrong (0.9 first leaves 0.1; the best is 0.8 + 0.8), and a star
    pairs = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [5, 7], [6, 7]])
    w = np.array([0.9, 0.8, 0.8, 0.1, 0.6, 0.7])
    monkeypatch.setattr(fast, "HUNGARIAN_MAX", 1)
    got, gw, n_greedy = fast_matching(pairs, w, 7)
    assert n_greedy == 1 and sorted(map(tuple, got.tolist())) == [(0, 0), (1, 1), (6, 7)]
    assert gw.sum() == pytest.approx(1.7) and analyze.max_weight_matching(pairs, w)[1].sum() == pytest.approx(2.3)


# -----------------------------------------------------------------------------
# a small pipeline end to end: the SAEs trained and the study analysed with --fast=false and --fast=true

def small_study(root):
    """data/ (a byte-level tokenizer, three domains of byte text with a random tail) and out/ with four
    related tiny models: base, lua and tinystories trained from it for a few steps, luastories merged."""
    import os

    import merge
    import train
    from helpers import write_tokenizer
    data_dir, out_dir = os.path.join(root, "data"), os.path.join(root, "out")
    th = write_tokenizer(data_dir)
    texts = {"base": "def main(x):\n    return x + 1  # the cat and the dog\n",
             "lua": "local t = {} for i = 1, 10 do t[i] = i * 2 end\n",
             "tinystories": "Once upon a time, a dog ran home.\n"}
    rng = np.random.default_rng(0)
    for d, text in texts.items():
        ids = np.asarray((list(text.encode()) + [256]) * 400, dtype=np.uint16)
        noisy = rng.random(len(ids)) < 0.15                                   # some unpredictable bytes
        ids[noisy] = rng.integers(0, 256, int(noisy.sum()))
        n = len(ids)
        os.makedirs(os.path.join(data_dir, d), exist_ok=True)
        ids[: n * 9 // 10].tofile(os.path.join(data_dir, d, "train.bin"))
        ids[n * 9 // 10:].tofile(os.path.join(data_dir, d, "val.bin"))
        from common import atomic_write_json
        atomic_write_json(os.path.join(data_dir, d, "meta.json"), {
            "domain": d, "source": "test", "dtype": "uint16", "vocab_size": 257, "tokenizer_hash": th,
            "splits": {"train": {"tokens": n * 9 // 10}, "val": {"tokens": n - n * 9 // 10}}})
    io = [f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--device=cpu", "--threads=1"]
    shape = ["--block_size=32", "--d_model=32", "--n_head=4", "--n_kv_head=2", "--d_mlp=32", "--batch_size=8",
             "--eval_interval=20", "--eval_iters=2", "--log_interval=20"]
    train.main(["--preset=tiny", "--domain=base", "--max_iters=40", *shape, *io])
    for d in ("lua", "tinystories"):
        train.main(["--preset=tiny", f"--domain={d}", "--max_iters=20", "--lr=3e-3", *shape, *io])
    merge.main(["--preset=tiny", "--eval_batches=1", "--batch_size=4", *io])
    return data_dir, out_dir, io


def test_a_small_pipeline_tracks_the_same_features_with_fast_on_and_off(tmp_path):
    """Every SAE trained and the study analysed twice, plain and fast. The fast path's products round
    differently (float32), and training compounds that over its steps, so the SAEs are not bit-identical:
    the test asks that every SAE's metrics agree to 2% and that each edge's and null's counts of
    persisting, disappearing and emerging features agree within 5% of the features (a feature whose best
    r sits near the threshold may flip; how many do depends on the CPU's kernels, whose rounding differs
    from one processor to another: 3% held on one, 4 of 122 features flipped on another)."""
    import shutil

    import analyze
    data_dir, out_dir, io = small_study(str(tmp_path))
    res = {}
    for use_fast in (False, True):
        out = str(tmp_path / f"out_{use_fast}")
        shutil.copytree(out_dir, out)
        here = [a if not a.startswith("--out_dir") else f"--out_dir={out}" for a in io] + [f"--fast={use_fast}"]
        metrics = {m: S.main(["--preset=tiny", f"--model={m}", "--seeds=0,1", "--expansion=4", "--seqs_per_batch=16",
                              "--tokens_per_seq=8", "--total_acts=12288", "--buffer_batches=8", "--eval_seqs=16",
                              "--log_interval=48", "--resample_every=40", "--dead_window=2048", "--l1_coeff=0.5",
                              "--health_at=0", *here])
                   for m in ("base", "lua", "tinystories", "luastories")}
        res[use_fast] = metrics, analyze.main(["--preset=tiny", "--n_tokens=4096", "--min_tokens=1024",
                                               "--batch_size=16", "--n_select=1", "--ctx_window=12", *here])
    (m_plain, plain), (m_fast, quick) = res[False], res[True]
    for m in m_plain:
        for s in ("0", "1"):
            for k in ("fvu", "l0", "ce_recovered"):
                assert m_fast[m]["seeds"][s][k] == pytest.approx(m_plain[m]["seeds"][s][k], rel=0.02), (m, s, k)
    assert plain["provenance"]["config"]["fast"] is False and quick["provenance"]["config"]["fast"] is True
    for group in ("edges", "null"):
        assert plain[group].keys() == quick[group].keys() and plain[group]
        for name, e in plain[group].items():
            c, q = e["counts"], quick[group][name]["counts"]
            n = max(c["parent_live"], c["child_live"])
            for k in ("persisting", "disappearing", "emerging", "parent_live", "child_live"):
                assert abs(c[k] - q[k]) <= 0.05 * n, (group, name, k, c[k], q[k])


def test_topk_support_drops_non_positive_entries_of_the_top_k():
    pre = torch.tensor([[3.0, -1.0, 0.0, 2.0], [-2.0, -1.0, -3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    rows, cols = fast.top_support(pre, 2)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 3), (1, 3)]


def test_fast_windows_at_a_start_exactly_on_a_domain_boundary():
    """mix tokens: a draw u that lands exactly on the first start of the second domain takes that window."""
    a, b = np.arange(10), 100 + np.arange(12)
    T = 4                                                        # starts: 7 in a, 9 in b, 16 in all (u * 16 exact)
    u = torch.tensor([0.0, 7 / 16, 6 / 16, 15 / 16], dtype=torch.float64)
    got = fast.windows_at([a, b], u, T, "tokens")
    assert got.tolist() == [[0, 1, 2, 3], [100, 101, 102, 103], [6, 7, 8, 9], [108, 109, 110, 111]]
