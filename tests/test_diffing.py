"""diffing.py: the crosscoder's loss, BatchTopK and decoder-norm rule on known answers; latent scaling and the
cross-application's firing change on constructed cases; a planted two-model case (shared features, features
removed in the child, features added in it) that a trained crosscoder and the cross-applied SAEs recover; and
one end-to-end run on a tiny pipeline, folded into analyze.py's results.json."""
import json
import os
import re
import shutil
import types

import numpy as np
import pytest
import torch

import analyze
import common
import diffing
import sae as saelib
from helpers import one_thread  # noqa: F401 (autouse)


def hand_crosscoder(arch, W_enc, W_dec, k=1):
    """A crosscoder with the given weights (M, d, L) and (M, L, d), zero biases, scale 1."""
    W_enc, W_dec = torch.as_tensor(W_enc, dtype=torch.float32), torch.as_tensor(W_dec, dtype=torch.float32)
    M, d, L = W_enc.shape
    cc = diffing.Crosscoder(M, d, L, arch, k)
    with torch.no_grad():
        cc.W_enc.copy_(W_enc)
        cc.W_dec.copy_(W_dec)
    return cc


def test_l1_loss_is_the_error_summed_over_models_plus_the_decoder_norm_weighted_l1():
    # one token, x^0 = (1, 0), x^1 = (0, 2); one latent read from model 0: f = 1
    W_enc = [[[1.0], [0.0]], [[0.0], [0.0]]]
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    # decoders (1, 0) and (0, 1): the child's error is (0, 1), so mse 1; l1 0.5 x f 1 x (1 + 1) = 1
    cc = hand_crosscoder("l1", W_enc, [[[1.0, 0.0]], [[0.0, 1.0]]])
    loss, mse, f = diffing.crosscoder_loss(cc, x, l1_coeff=0.5)
    assert f.tolist() == [[1.0]] and mse.item() == pytest.approx(1.0) and loss.item() == pytest.approx(2.0)
    # decoders (1, 0) and (0, 2): exact, mse 0; the L1 weighs f by the norms' sum 3: 0.5 x 3 = 1.5
    cc = hand_crosscoder("l1", W_enc, [[[1.0, 0.0]], [[0.0, 2.0]]])
    loss, mse, _ = diffing.crosscoder_loss(cc, x, l1_coeff=0.5)
    assert mse.item() == pytest.approx(0.0) and loss.item() == pytest.approx(1.5)
    # with a second token that is all zeros (f = 0, exact): the means over tokens halve both terms
    cc = hand_crosscoder("l1", W_enc, [[[1.0, 0.0]], [[0.0, 1.0]]])
    loss2, mse2, _ = diffing.crosscoder_loss(cc, torch.cat([x, torch.zeros_like(x)]), l1_coeff=0.5)
    assert mse2.item() == pytest.approx(0.5) and loss2.item() == pytest.approx(1.0)


def test_batchtopk_loss_with_auxk_and_its_gradients_match_a_direct_computation():
    """crosscoder_loss (batchtopk, dead latents): the MSE summed over models plus aux_coeff x AuxK, the top
    aux_k dead latents' reconstruction of the residual over its variance, computed here from the definitions
    (each model's encoder product summed, BatchTopK over the batch's norm-weighted scores); the same loss and
    gradients to float32 rounding."""
    import copy
    N, M, d, L, k, aux_k = 24, 2, 6, 20, 3, 4
    cc = diffing.init_crosscoder(M, d, L, "batchtopk", k, seed=1, b_dec=torch.randn(M, d) * 0.1)
    with torch.no_grad():
        cc.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    ref = copy.deepcopy(cc)
    x = torch.randn(N, M, d, generator=torch.Generator().manual_seed(3))
    dead = torch.arange(L) % 3 == 0
    loss, mse, f = diffing.crosscoder_loss(cc, x, dead=dead, aux_k=aux_k, aux_coeff=0.5)
    loss.backward()
    pre = sum((x[:, m] - ref.b_dec[m]) @ ref.W_enc[m] for m in range(M)) + ref.b_enc            # (N, L)
    score = pre.relu() * ref.W_dec.norm(dim=-1).sum(0)
    cut = score.flatten().sort(descending=True).values[k * N - 1]                             # k x N kept
    f_ref = pre.relu() * (score >= cut)
    x_hat = torch.stack([f_ref @ ref.W_dec[m] + ref.b_dec[m] for m in range(M)], 1)         # (N, M, d)
    mse_ref = (x_hat - x).pow(2).sum((1, 2)).mean()
    masked = pre.masked_fill(~dead, float("-inf"))
    kth = masked.sort(dim=-1, descending=True).values[:, aux_k - 1:aux_k]
    f_aux = (masked >= kth).float() * pre.relu() * dead
    e = (x - x_hat).detach().flatten(1)
    e_hat = torch.stack([f_aux @ ref.W_dec[m] for m in range(M)], 1).flatten(1)
    aux = (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean()
    loss_ref = mse_ref + 0.5 * aux
    loss_ref.backward()
    assert torch.allclose(f, f_ref.detach()) and mse.item() == pytest.approx(mse_ref.item(), rel=1e-5)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-5) and aux.item() > 0
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(cc, name).grad, getattr(ref, name).grad, rtol=1e-4, atol=1e-6), name


def test_batchtopk_keeps_the_k_times_batch_largest_norm_weighted_scores_and_sets_a_threshold():
    # norms' sums per latent: 1, 2, 1 (model 0: 1, 1, 0.5; model 1: 0, 1, 0.5)
    W_dec = [[[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 1.0], [0.0, 0.5]]]
    cc = hand_crosscoder("batchtopk", np.zeros((2, 2, 3)), W_dec, k=1)
    pre = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.4, 2.0]])   # scores [[3, 2, 0], [1, 2.8, 2]]
    f = cc.activate(pre, train=True)                          # the 1 x 2 largest: 3 and 2.8
    assert torch.allclose(f, torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.4, 0.0]]))
    assert cc.threshold.item() == pytest.approx(2.8)          # the smallest kept score (the EMA's first value)
    assert torch.allclose(cc.activate(pre), torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))   # score > 2.8 only


def test_relative_decoder_norm_and_its_classes():
    d = diffing.relative_norm([1.0, 1.0, 0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 1.0, 0.5, 1.0, 0.0])
    assert d[:5].tolist() == pytest.approx([0.5, 0.0, 1.0, 0.25, 0.75]) and torch.isnan(d[5])
    # cut-offs: < 0.1 parent-only, > 0.9 child-only, [0.4, 0.6] shared, between them mixed; dead or NaN: dead
    cls = diffing.latent_classes([0.05, 0.1, 0.4, 0.45, 0.6, 0.7, 0.9, 0.95, 0.5, float("nan")],
                                 [False] * 8 + [True, False])
    assert "".join(cls) == "pmsssmmcxx"
    got = diffing.class_counts(list("ssspcmx"))
    assert got["counts"] == {"shared": 3, "parent-only": 1, "child-only": 1, "mixed": 1} and got["dead"] == 1
    assert got["fractions"]["shared"] == 0.5


def test_firing_change_counts_stopped_and_started_features():
    own = [0.1, 0.1, 0.1, 0.0, 0.001, 0.0]
    other = [0.1, 0.005, 0.0, 0.2, 0.02, 0.0]
    got = diffing.firing_change(own, other, ratio=10)
    assert got["live"] == 4 and got["stopped"] == 2 and got["started"] == 2   # 1, 2 stop; 3 (was silent), 4 start
    assert got["stopped_frac"] == 0.5


def scaling_case(parent_has_it):
    """Two models in 4 dimensions; latent 0 shared (direction e0 in both), latent 1 child-only by its decoder
    (e1 in the child, 0 in the parent). The parent's activations hold a_1 e1 too when parent_has_it."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4000, 2, generator=g) * (torch.rand(4000, 2, generator=g) < 0.3)
    e = torch.eye(4)
    x = torch.stack([a[:, :1] * e[0] + (a[:, 1:] * e[1] if parent_has_it else 0), a[:, :1] * e[0] + a[:, 1:] * e[1]], 1)
    W_dec = torch.stack([torch.stack([e[0], 0 * e[1]]), torch.stack([e[0], e[1]])])      # (M, L, d)
    W_enc = torch.stack([torch.zeros(4, 2), torch.stack([e[0], e[1]], 1)])               # read from the child
    cc = hand_crosscoder("l1", W_enc, W_dec)
    x_hat, f = cc(x)
    sums = diffing.ScalingSums(cc, [1], [1])
    sums.update(x, x_hat, f)
    return sums.result(0.5)


def test_latent_scaling_tells_a_genuine_child_only_latent_from_a_spurious_one():
    genuine, spurious = scaling_case(False), scaling_case(True)
    assert genuine["nu_eps"][0] == pytest.approx(0.0, abs=1e-6) and genuine["spurious"] == [False]
    # complete shrinkage: the parent still holds the direction, in its error: nu_eps = 1
    assert spurious["nu_eps"][0] == pytest.approx(1.0, abs=1e-6) and spurious["spurious"] == [True]


@pytest.mark.parametrize("parent_x, parent_dec, nu_eps, nu_r", [
    ([1, 0, 0], [1, 0, 0], 0.0, 1.0),     # latent 1 rebuilds a e0 in the parent exactly: its error holds none of it
    ([1, 0, 0], [0, 0, 1], 1.0, 0.0),     # the parent's a e0 left in its error, latent 1 writes e2 (orthogonal)
    ([0, 0, 1], [0, 0, 1], 0.0, 0.0),     # the parent holds a e2 only: nothing of e0 in its error or its rebuild
    ([1, 0, 0], [0.5, 0, 1], 0.5, 0.5),   # latent 1 writes 0.5 a e0 (+ a e2): half rebuilt, half left in the error
])
def test_latent_scaling_ratios_on_a_hand_made_case(parent_x, parent_dec, nu_eps, nu_r):
    """Three tokens, a = 1, 2, 0; the child's x^c = a e0, the parent's x^p = a parent_x (d = 3). Latent 0 is
    child-only (decoder e0 in the child, 0 in the parent); latent 1 parent-only (decoder parent_dec in the
    parent, 0 in the child); both read a from the child (f_0 = f_1 = a). By hand, with sum_t f_0^2 = 5 and
    d = e0: in the child x_hat^c = a e0 = x^c, so beta_eps = sum_t a <e0, 0 + a e0> / 5 = 1 and beta_r =
    sum_t a <e0, a e0> / 5 = 1; in the parent eps^p = x^p - a parent_dec and r^p = a parent_dec, so
    nu_eps = <e0, parent_x - parent_dec> and nu_r = <e0, parent_dec> (the table's numbers)."""
    e0 = [1.0, 0.0, 0.0]
    W_enc = torch.zeros(2, 3, 2)
    W_enc[1, :, 0] = W_enc[1, :, 1] = torch.tensor(e0)
    W_dec = torch.tensor([[[0.0, 0.0, 0.0], parent_dec], [e0, [0.0, 0.0, 0.0]]])     # (M, L, d)
    cc = hand_crosscoder("l1", W_enc, W_dec)
    a = torch.tensor([1.0, 2.0, 0.0])[:, None]
    x = torch.stack([a * torch.tensor(parent_x, dtype=torch.float32), a * torch.tensor(e0)], 1)
    x_hat, f = cc(x)
    assert f.tolist() == [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]
    sums = diffing.ScalingSums(cc, [0], [1])
    sums.update(x, x_hat, f)
    got = sums.result(0.5)
    assert got["nu_eps"] == pytest.approx([nu_eps], abs=1e-6) and got["nu_r"] == pytest.approx([nu_r], abs=1e-6)
    assert got["spurious"] == [max(nu_eps, nu_r) >= 0.5] and got["fired"] == [True]


# -----------------------------------------------------------------------------
# the planted two-model case

N_SHARED, N_REMOVED, N_ADDED, D = 8, 4, 4, 32


def planted(n=16384, seed=0):
    """Activations of a parent and a child on the same n tokens: sparse codes (each feature on with
    probability 0.06, magnitude 1-3) times orthonormal directions; shared features (the same code and
    direction in both), features removed in the child (parent only) and added in it (child only)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g))[0][:N_SHARED + N_REMOVED + N_ADDED]   # (16, D) rows
    n_f = len(Q)
    codes = (torch.rand(n, n_f, generator=g) < 0.06) * (1 + 2 * torch.rand(n, n_f, generator=g))
    par = torch.arange(n_f) < N_SHARED + N_REMOVED
    chi = (torch.arange(n_f) < N_SHARED) | (torch.arange(n_f) >= N_SHARED + N_REMOVED)
    x_p = (codes * par) @ Q + 0.01 * torch.randn(n, D, generator=g)
    x_c = (codes * chi) @ Q + 0.01 * torch.randn(n, D, generator=g)
    return torch.stack([x_p, x_c], 1), codes, Q, par, chi


def ideal_sae(Q, mask):
    """An SAE whose features are the given directions (encoder = decoder transpose, a small threshold)."""
    s = saelib.SAE(D, len(Q), "relu")
    with torch.no_grad():
        s.W_dec.copy_(Q * mask[:, None])
        s.W_enc.copy_(Q.T)
        s.b_enc.fill_(-0.3)
    return s


def test_cross_applied_saes_find_the_removed_and_added_features():
    x, codes, Q, par, chi = planted()
    rate = {}
    for name, mask in (("parent", par), ("child", chi)):
        s = ideal_sae(Q, mask)
        rate[name] = [(s.encode(x[:, m]) > 0).double().mean(0).numpy() for m in (0, 1)]
    # each SAE's own features (the parent's: shared then removed; the child's: shared then added), on its own
    # model and on the other: the shared ones keep their rate, the other model lacks the rest entirely
    for name, mask, own_m, n_gone in (("parent", par, 0, N_REMOVED), ("child", chi, 1, N_ADDED)):
        own, other = rate[name][own_m][mask.numpy()], rate[name][1 - own_m][mask.numpy()]
        got = diffing.firing_change(own, other, 10)
        assert (got["live"], got["stopped"], got["started"]) == (N_SHARED + n_gone, n_gone, 0), (name, got)
        assert got["stopped_frac"] == round(n_gone / (N_SHARED + n_gone), 5)
        # which ones: none of the shared features stops (their rates agree), every removed / added one does
        shared = diffing.firing_change(own[:N_SHARED], other[:N_SHARED], 10)
        assert shared["stopped"] == 0 and shared["median_log10_ratio"] == pytest.approx(0.0, abs=0.05), (name, shared)
        gone = diffing.firing_change(own[N_SHARED:], other[N_SHARED:], 10)
        assert gone["stopped"] == gone["live"] == n_gone and gone["median_log10_ratio"] is None, (name, gone)


def train_planted(arch, x, steps=1500, seed=0, L=24):
    scale = torch.full((2,), 1.0)
    # k 1: about the planted L0 (0.96 a token); at k 2 the spare budget let some latents pair a removed feature's
    # parent direction with an added feature's child direction ("mixed"), which reconstructs as well
    cc = diffing.init_crosscoder(2, D, L, arch, 1, seed, x.mean(0), scale)
    opt = torch.optim.Adam(cc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    since = torch.zeros(L, dtype=torch.long)
    for i in range(steps):
        for group in opt.param_groups:                          # linearly to 0 over the second half
            group["lr"] = 1e-2 * min(1.0, 2 * (1 - i / steps))
        batch = x[torch.randint(len(x), (256,), generator=g)]
        loss, _, f = diffing.crosscoder_loss(cc, batch, l1_coeff=0.3 if arch == "l1" else 0.0, dead=since >= 50,
                                             aux_k=8, aux_coeff=1 / 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        since = (since + 1).masked_fill((f > 0).any(0), 0)
    return cc.eval()


@pytest.mark.parametrize("arch", ["batchtopk", "l1"])
def test_a_crosscoder_recovers_shared_removed_and_added_features(arch):
    x, codes, Q, par, chi = planted()
    torch.manual_seed(0)
    cc = train_planted(arch, x)
    with torch.no_grad():
        x_hat, f = cc(x)
        norms = cc.dec_norms()
    fvu = [((x_hat[:, m] - x[:, m]) ** 2).sum() / ((x[:, m] - x[:, m].mean(0)) ** 2).sum() for m in (0, 1)]
    assert max(fvu) < 0.1
    delta = diffing.relative_norm(norms[0], norms[1])
    classes = diffing.latent_classes(delta.numpy(), (f > 0).sum(0).numpy() == 0)
    # each planted feature's best latent by correlation with its code, and that latent's class
    acc = analyze.CorrAccumulator(codes.shape[1], cc.n_latents)
    acc.update(codes, f)
    r = analyze.pearson(acc)
    best_r, best = r.max(1)
    want = "s" * N_SHARED + "p" * N_REMOVED + "c" * N_ADDED
    assert (best_r > 0.9).all() and "".join(classes[best.numpy()]) == want, (best_r, classes[best.numpy()], delta[best])


# -----------------------------------------------------------------------------
# end to end on a tiny pipeline (test_analyze's study: base, lua = luastories = base's copy, tinystories another)

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from test_analyze import make_study
    root = str(tmp_path_factory.mktemp("diffing"))
    data_dir, out_dir = make_study(root)
    for d in ("base", "lua", "tinystories"):                  # the val tokens as a train split too
        folder = os.path.join(data_dir, d)
        ids = np.fromfile(os.path.join(folder, "val.bin"), dtype=np.uint16)
        ids.tofile(os.path.join(folder, "train.bin"))
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        meta["splits"]["train"] = {"tokens": len(ids)}
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(meta, f)
    # --threads 1: with 0 (the cores free now, which a loaded machine changes between runs) a rerun's float sums, and
    # the records the tests compare bit for bit, could differ from these
    args = ["--preset=tiny", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--device=cpu", "--total_acts=2048",
            "--seqs_per_batch=8", "--tokens_per_seq=8", "--buffer_batches=4", "--eval_seqs=8", "--eval_batch=8",
            "--edges=base->lua,base->tinystories", "--expansion=2", "--k=4", "--n_tokens=2048",  # test_analyze.run's
            "--threads=1"]
    res = diffing.main(args)
    return data_dir, out_dir, res, args


def test_diffing_end_to_end_and_folded_into_the_results(pipeline, capsys):
    data_dir, out_dir, res, args = pipeline
    assert set(res["edges"]) == {"base->lua", "base->tinystories"}
    e = res["edges"]["base->lua"]
    # lua is base's copy and its SAE base's: cross-applied, everything is as on its own model
    ca = e["cross_application"]
    assert ca["on_child"]["parent_sae"]["fvu"] == pytest.approx(ca["on_parent"]["parent_sae"]["fvu"])
    assert e["firing"]["parent_sae"]["stopped"] == 0 and e["firing"]["parent_sae"]["rate_own"] == \
        e["firing"]["parent_sae"]["rate_other"]
    for s in ("0", "1"):
        cc = e["crosscoder"]["seeds"][s]
        assert len(cc["classes"]) == 128 and sum(cc["counts"].values()) == cc["live"] == sum(cc["delta_hist"]["counts"])
    assert len(e["match"]["parent"]["latent"]) == 96 and e["crosscoder"]["null"]["seeds"] == [0, 1]
    with open(os.path.join(out_dir, "diffing", "diffing.json")) as f:
        assert json.load(f)["kind"] == "diffing"
    # a second run finds its crosscoders current and does not retrain them: the files are not rewritten (a
    # retrained crosscoder is the same, seeded, so only the files' times and the output can tell); --overwrite does
    folder = os.path.join(out_dir, "diffing")
    files = sorted(f for f in os.listdir(folder) if f.startswith("cc_") and f.endswith(".pt"))
    assert len(files) == 4

    def mtimes():
        return [os.stat(os.path.join(folder, f)).st_mtime_ns for f in files]
    before = mtimes()
    record = os.path.join(folder, "diffing.json")
    was = open(record, "rb").read()
    capsys.readouterr()
    assert diffing.main(args)["edges"] == json.loads(was)["edges"]    # all current: nothing measured
    assert "diffing.json is current" in capsys.readouterr().out and open(record, "rb").read() == was
    os.remove(record)                                                 # measured again, from the same crosscoders
    again = diffing.main(args)
    printed = capsys.readouterr().out
    assert mtimes() == before and printed.count("crosscoders up to date") == 2 and " steps of " not in printed
    first = e["crosscoder"]["seeds"]["0"]["classes"]
    assert again["edges"]["base->lua"]["crosscoder"]["seeds"]["0"]["classes"] == first
    diffing.main(args + ["--threads=1", "--match_threshold=0.7"])    # a setting diffing.json holds: measured
    assert "is current" not in capsys.readouterr().out and open(record, "rb").read() != was
    diffing.main(args + ["--overwrite"])
    printed = capsys.readouterr().out
    assert all(a != b for a, b in zip(mtimes(), before)) and "up to date" not in printed
    was = open(record, "rb").read()
    auto = [] if torch.cuda.is_available() else ["--device=auto"]    # auto is the cpu run here
    diffing.main(args + auto)                                         # --overwrite is not a setting it holds
    assert "diffing.json is current" in capsys.readouterr().out and open(record, "rb").read() == was
    # analyze.py joins it with its statuses
    out = analyze_run(data_dir, out_dir)                  # on the same token set (--n_tokens): joined
    assert "stale" not in out["diffing"], out["diffing"]
    d = out["diffing"]
    assert set(d["edges"]) == {"base->lua", "base->tinystories"}
    row = d["edges"]["base->lua"]
    n_live = out["edges"]["base->lua"]["counts"]["parent_live"]
    assert sum(sum(v.values()) for v in row["agreement"]["parent"].values()) == n_live
    assert row["correlation"]["persisting_frac"] == out["edges"]["base->lua"]["persisting_frac"]
    assert d["fire_ratio"] == diffing.config["fire_ratio"]        # the report names the factor it counted by


def test_bad_inputs_are_one_line_errors(pipeline):
    from helpers import assert_one_line_error, run_script
    data_dir, out_dir, _, _ = pipeline
    assert_one_line_error(run_script("diffing.py", f"--out_dir={out_dir}", f"--data_dir={data_dir}",
                                     "--edges=lua->base"), "not an edge of the study")
    assert_one_line_error(run_script("diffing.py", "--arch=relu"), "arch")
    assert_one_line_error(run_script("diffing.py", f"--out_dir={out_dir}x", f"--data_dir={data_dir}",
                                     "--preset=tiny", "--device=cpu"), "no ")


def copied_out(out_dir, tmp_path):
    import shutil
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2, ignore=shutil.ignore_patterns(".lock"))
    return out2


def test_a_run_of_one_edge_keeps_the_other_edges_records(pipeline, tmp_path, capsys):
    """The fix an edge's error names (diffing.py --edges 'p->c' --overwrite) rewrites diffing.json: the other
    edges' records stay where the earlier run had these settings, SAEs and token set, and go where it did not."""
    _, out_dir, res, args = pipeline
    out2 = copied_out(out_dir, tmp_path)
    one = [a for a in args if not a.startswith(("--out_dir=", "--edges="))] + [f"--out_dir={out2}", "--edges=base->lua"]
    path = os.path.join(out2, "diffing", "diffing.json")
    before = json.load(open(path))
    capsys.readouterr()
    diffing.main(one + ["--overwrite"])
    assert "kept from" in capsys.readouterr().out
    after = json.load(open(path))
    assert list(after["edges"]) == ["base->lua", "base->tinystories"] and after["sae_hashes"] == before["sae_hashes"]
    assert after["edges"]["base->tinystories"] == before["edges"]["base->tinystories"]
    diffing.main(one + ["--overwrite", "--lr=1e-3"])                        # other settings: not kept
    assert list(json.load(open(path))["edges"]) == ["base->lua"] and "kept from" not in capsys.readouterr().out
    # a setting that changes only the measuring (the crosscoders current): the other edges' records were made
    # with the earlier value (their spurious counts with the earlier cut), so they go too
    out3 = str(tmp_path / "out3")
    shutil.copytree(out_dir, out3, ignore=shutil.ignore_patterns(".lock"))
    path3 = os.path.join(out3, "diffing", "diffing.json")
    diffing.main([a.replace(out2, out3) for a in one] + ["--scaling_cut=0.3"])
    assert list(json.load(open(path3))["edges"]) == ["base->lua"] and "kept from" not in capsys.readouterr().out


def test_a_run_stopped_in_a_later_edge_keeps_the_edges_it_measured(pipeline, tmp_path, monkeypatch, capsys):
    """partial.json holds the edges measured so far: a run stopped while measuring the second edge, run again,
    measures only that one, and its diffing.json equals an unstopped run's; partial.json is then removed. One
    made with another setting is not used."""
    _, out_dir, res, args = pipeline
    out2 = copied_out(out_dir, tmp_path)
    args = [a for a in args if not a.startswith("--out_dir=")] + [f"--out_dir={out2}"]
    folder = os.path.join(out2, "diffing")
    os.remove(os.path.join(folder, "diffing.json"))
    measure, calls = diffing.edge_record, []

    def stopped_at_second(*a, **k):
        calls.append(a[4:6])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(*a, **k)
    monkeypatch.setattr(diffing, "edge_record", stopped_at_second)
    for extra in ([], ["--match_threshold=0.7"]):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            diffing.main(args)
        part = json.load(open(os.path.join(folder, "partial.json")))
        assert list(part["edges"]) == ["base->lua"] and not os.path.exists(os.path.join(folder, "diffing.json"))
        calls.clear()
        monkeypatch.setattr(diffing, "edge_record", lambda *a, **k: calls.append(a[4:6]) or measure(*a, **k))
        got = diffing.main(args + extra)
        monkeypatch.setattr(diffing, "edge_record", stopped_at_second)
        assert calls == ([("base", "tinystories")] if not extra else [("base", "lua"), ("base", "tinystories")])
        assert ("measured by a run that stopped later, kept" in capsys.readouterr().out) == (not extra)
        assert not os.path.exists(os.path.join(folder, "partial.json"))
        if not extra:
            def measured(edges):
                return {k: {f: v for f, v in e.items() if f != "seconds"} for k, e in edges.items()}
            assert list(got["edges"]) == list(res["edges"]) and measured(got["edges"]) == measured(res["edges"])
        os.remove(os.path.join(folder, "diffing.json"))


def test_a_crosscoder_file_under_another_seeds_name_is_refused(pipeline, tmp_path):
    import shutil
    from helpers import assert_one_line_error, run_script
    data_dir, out_dir, _, args = pipeline
    out2 = copied_out(out_dir, tmp_path)
    s0 = os.path.join(out2, "diffing", "cc_base_lua_s0.pt")
    shutil.copyfile(os.path.join(out2, "diffing", "cc_base_lua_s1.pt"), s0)   # whole, current, but seed 1's
    # as the user runs it: exit 2, one line naming the file and the command (--overwrite once)
    proc = run_script("diffing.py", *[a for a in args if not a.startswith("--out_dir=")], f"--out_dir={out2}",
                      timeout=300)
    assert_one_line_error(proc, "seed 1, not base->lua seed 0")
    # (common.cli adds this run's settings after `python diffing.py`: --data_dir, --out_dir, --preset)
    line = proc.stderr.strip()
    assert s0 in line and "remake it: python diffing.py --" in line and line.endswith(" --overwrite")
    assert line.count("--overwrite") == 1, line


@pytest.mark.parametrize("edit", ["n_latents", "missing_key", "both"])
def test_a_crosscoder_file_whose_args_do_not_fit_is_refused(pipeline, tmp_path, edit):
    import common
    data_dir, out_dir, _, args = pipeline
    out2 = copied_out(out_dir, tmp_path)
    path = os.path.join(out2, "diffing", "cc_base_lua_s0.pt")
    ck = torch.load(path, weights_only=True)
    if edit in ("n_latents", "both"):                  # the args say 100 latents, the weights hold 128
        ck["crosscoder_args"]["n_latents"] = 100
    if edit in ("missing_key", "both"):
        del ck["crosscoder"]["b_enc"]
    if edit == "both":                                 # consistent with each other, not with this run's models
        ck["crosscoder"] = diffing.Crosscoder(**ck["crosscoder_args"]).state_dict()
    common.atomic_torch_save(common.stamp(ck, "crosscoder"), path)   # a valid checksum: edited, then re-stamped
    with pytest.raises(common.UserError) as e:
        diffing.main([a for a in args if not a.startswith("--out_dir=")] + [f"--out_dir={out2}"])
    msg = str(e.value)
    assert msg.startswith("error: ") and "\n" not in msg and e.value.code == msg
    assert f"{path} does not fit the crosscoder" in msg
    assert msg.endswith("remake it: python diffing.py --edges 'base->lua' --overwrite")


def analyze_run(data_dir, out_dir, *extra):
    from test_analyze import run
    return run(data_dir, out_dir, *extra)


@pytest.mark.parametrize("case", ["other_sae", "other_tokens", "other_seed", "damaged", "truncated", "flipped"])
def test_a_diffing_json_of_other_saes_or_tokens_or_damaged_is_named_not_joined(pipeline, tmp_path, case):
    """Named in results.json (and the report), never joined; the analysis is written all the same. (Edited
    records are stamped again, as a whole one of other SAEs or a hand-made one would be; flipped: a value
    changed under its checksum.)"""
    import common
    data_dir, out_dir, _, _ = pipeline
    out2 = copied_out(out_dir, tmp_path)
    path = os.path.join(out2, "diffing", "diffing.json")
    with open(path) as f:
        d = json.load(f)
    if case == "other_sae":
        d["sae_hashes"]["lua"] = "0" * 16                   # as if lua's SAE had been retrained since
    if case == "damaged":
        m = d["edges"]["base->lua"]["match"]["parent"]
        m["latent"][0], m["r"][0] = 10 ** 6, 0.99                          # no such latent
    if case in ("other_sae", "damaged"):
        d = common.stamp(d, "diffing")
    if case == "flipped":
        d["edges"]["base->lua"]["match"]["parent"]["r"][0] = 0.5
    with open(path, "w") as f:
        text = json.dumps(d)
        f.write(text[:len(text) // 2] if case == "truncated" else text)
    extra = {"other_tokens": ["--n_tokens=4096"], "other_seed": ["--seed=3"]}.get(case, [])
    why = analyze_run(data_dir, out2, *extra)["diffing"]["stale"]
    if case == "other_seed":  # a token set diffing.py cannot draw (it has no --seed): the fix is the analysis'
        assert re.search(r"default token set, not on this analysis' \(its --seed differ\); "
                         r"run python analyze\.py .*without --seed", why), why
        assert "--n_tokens" not in why and "diffing.py (current" not in why
        return
    assert re.search({"other_sae": r"other SAEs \(lua\)", "other_tokens": r"another token set .*--n_tokens",
                      "damaged": r"damaged or of another shape \(IndexError",
                      "truncated": r"damaged: the file is not readable JSON",
                      "flipped": r"damaged: .*do not match the checksum"}[case], why), why
    assert re.search(r"re-run python diffing\.py .*current crosscoders are loaded", why) and "--overwrite" not in why


def test_a_crosscoder_of_another_model_names_only_the_fix_that_works():
    """Settings changed: give them back, or --overwrite; a model made anew (no setting brings it back) or no
    record of what it was made from: --overwrite only."""
    how = "python diffing.py --edges 'base->lua'"
    now = {"models": {"base": "a", "lua": "c"}, "settings": {"lr": 2e-3}}
    cases = [("c", 4e-3, "--lr 0.004 -> 0.002", True), ("b", 2e-3, "lua is another model now", False),
             ("b", 4e-3, "--lr 0.004 -> 0.002; lua is another model now", False)]
    for lua, lr, why, keep in cases:
        with pytest.raises(common.UserError) as e:
            diffing.check_inputs("cc.pt", {"models": {"base": "a", "lua": lua}, "settings": {"lr": lr}}, now, how)
        keep = "give its settings to keep it, or " if keep else ""
        assert e.value.msg == f"cc.pt was made from other settings or models ({why}): {keep}replace it: " \
                              f"{how} --overwrite"


def test_a_damaged_crosscoder_file_names_the_runs_seeds(tmp_path):
    """The fix for an edge's damaged state or crosscoder starts the edge over with the run's seeds: without
    --seeds 0,2 it would train seeds 0 and 1, not the run's seed 2."""
    path = str(tmp_path / "cc_base_lua.state.pt")
    with open(path, "wb") as f:
        f.write(b"not a torch file")
    for load, seeds, flag in ((diffing.load_state, [0, 2], " --seeds 0,2"),
                              (diffing.load_current, [0, 1], "")):
        args = ((path, "base", "lua", {}, seeds) if load is diffing.load_state else
                (path, 0, "base", "lua", {}, 64, seeds))
        with pytest.raises(common.UserError) as e:
            load(*args)
        assert e.value.msg.endswith(f"remake it: python diffing.py --edges 'base->lua'{flag} --overwrite"), e.value.msg


def test_a_stopped_edge_resumes_exactly_and_its_state_is_checked(pipeline, tmp_path, capsys):
    """--stop_step stops an edge's training with its state saved (every seed's crosscoder, Adam state and
    steps without firing, and where the stream is: mid-buffer here, AuxK on); a second run continues it and
    its crosscoders are bit for bit those of a run never stopped; the state file is then removed. A state or
    crosscoders of other settings are refused, and --overwrite starts over; a damaged state is a line naming
    the fix. With
    --stop_step no edge is measured before every edge is trained."""
    from helpers import assert_one_line_error, run_script
    data_dir, out_dir, _, args = pipeline
    keep = [a for a in args if not a.startswith(("--out_dir", "--edges"))]
    one = keep + ["--edges=base->lua", "--dead_acts=256", "--ckpt_interval=5"]   # 32 steps of 64, buffers of 4
    outs = {}
    for name in ("whole", "stopped"):
        outs[name] = str(tmp_path / name)
        shutil.copytree(out_dir, outs[name], ignore=shutil.ignore_patterns(".lock", "diffing"))
    whole = diffing.main(one + [f"--out_dir={outs['whole']}"])
    folder = os.path.join(outs["stopped"], "diffing")
    state = os.path.join(folder, "cc_base_lua.state.pt")
    assert diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=13"]) is None
    st = torch.load(state, weights_only=True)
    assert (st["step"], st["chunk"], st["pos"], sorted(st["crosscoders"])) == (13, 3, 64, [0, 1])
    assert not any(f.startswith("cc_base_lua_s") for f in os.listdir(folder))
    assert diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=13"]) is None    # already there: no step
    assert torch.load(state, weights_only=True)["step"] == 13
    capsys.readouterr()
    resumed = diffing.main(one + [f"--out_dir={outs['stopped']}"])
    assert "resumed at step 13" in capsys.readouterr().out and not os.path.exists(state)
    for s in (0, 1):
        a, b = (torch.load(os.path.join(o, "diffing", f"cc_base_lua_s{s}.pt"), weights_only=True)["crosscoder"]
                for o in outs.values())
        assert all(torch.equal(a[k], b[k]) for k in a), s
    assert resumed["edges"]["base->lua"]["crosscoder"] == whole["edges"]["base->lua"]["crosscoder"]
    # with --stop_step every edge trains before any is measured: no pass over base->lua (current) is wasted
    capsys.readouterr()
    two = [a for a in one if not a.startswith("--edges")] + ["--edges=base->lua,base->tinystories"]
    assert diffing.main(two + [f"--out_dir={outs['stopped']}", "--stop_step=3"]) is None
    printed = capsys.readouterr().out
    assert "base->lua: crosscoders up to date" in printed and "stopping at step 3" in printed
    assert "parent SAE FVU" not in printed
    # a state or finished crosscoders of other settings: refused, never trained over; --overwrite starts over
    diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=7", "--overwrite"])
    assert not any(f.startswith("cc_base_lua_s") for f in os.listdir(folder))   # replaced: the old ones gone
    for path, extra in ((state, []), (os.path.join(outs["whole"], "diffing", "cc_base_lua_s0.pt"),
                                      [f"--out_dir={outs['whole']}"])):
        with pytest.raises(common.UserError, match=re.escape(path) + r" was made from other settings or models "
                           r"\(--lr 0\.004 -> 0\.002\): give its settings to keep it, or replace it: python "
                           r"diffing\.py --edges 'base->lua' --overwrite"):
            diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=9", "--lr=2e-3", *extra])
    with pytest.raises(common.UserError, match=r"trains seeds 0,1, not 0,1,2: give --seeds 0,1 to continue it"):
        diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=9", "--seeds=0,1,2"])
    assert torch.load(state, weights_only=True)["step"] == 7
    capsys.readouterr()
    diffing.main(one + [f"--out_dir={outs['stopped']}", "--stop_step=9", "--lr=2e-3", "--overwrite"])
    assert "resumed" not in capsys.readouterr().out and torch.load(state, weights_only=True)["step"] == 9
    whole_state = open(state, "rb").read()
    for edit, why in ((lambda st: st.update(step=10 ** 6), "step 1000000 of 32"),
                      (lambda st: st.update(pos=-10 ** 9), "position -1000000000"),
                      (lambda st: st["crosscoders"][0]["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
                       r"exp_avg has shape \(3,\)")):                      # edited, then re-stamped: one line each
        st = torch.load(state, weights_only=True)
        edit(st)
        common.atomic_torch_save(common.stamp(st, "crosscoder_state"), state)
        with pytest.raises(common.UserError, match=r"state\.pt does not fit the crosscoder state .*" + why
                           + r".*--edges 'base->lua' --overwrite"):
            diffing.main(one + [f"--out_dir={outs['stopped']}", "--lr=2e-3"])
        open(state, "wb").write(whole_state)
    with open(state, "r+b") as f:                                          # damaged: one line, this edge's fix
        f.seek(os.path.getsize(state) // 2)
        f.write(b"\0" * 64)
    assert_one_line_error(run_script("diffing.py", *one, f"--out_dir={outs['stopped']}", "--lr=2e-3"),
                          "--edges 'base->lua' --overwrite")


def test_firing_change_at_exactly_the_ratio():
    """A rate that falls by exactly `ratio` has stopped; one that rises by exactly `ratio` has started."""
    out = diffing.firing_change([0.5, 0.125, 0.5], [0.125, 0.5, 0.25], 4.0)
    assert out["stopped"] == 1 and out["started"] == 1 and out["live"] == 3


def test_batchtopk_threshold_is_an_ema_of_the_smallest_kept_score():
    """The first batch sets the inference threshold to its smallest kept score; every later batch moves it by
    1% towards that batch's (0.99 old + 0.01 new), so one batch cannot reset it."""
    W_dec = [[[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 1.0], [0.0, 0.5]]]   # norms' sums 1, 2, 1
    cc = hand_crosscoder("batchtopk", np.zeros((2, 2, 3)), W_dec, k=1)
    cc.activate(torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.4, 2.0]]), train=True)   # kept scores 3, 2.8
    assert cc.threshold.item() == pytest.approx(2.8)
    cc.activate(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]]), train=True)   # scores 1, 0.5: both kept, min 0.5
    assert cc.threshold.item() == pytest.approx(0.99 * 2.8 + 0.01 * 0.5)
    cc.activate(torch.zeros(2, 3), train=True)                                  # nothing positive kept: unchanged
    assert cc.threshold.item() == pytest.approx(0.99 * 2.8 + 0.01 * 0.5)


def test_crosscoder_record_counts_classes_spurious_and_genuine_exclusives_known_answer():
    """Four latents by their decoder norms (parent, child): (1, 1) shared, (1, 0) parent-only, (0, 1) and (0, 2)
    child-only, and a dead one; latent scaling calls the parent-only one and the first child-only one spurious:
    spurious {parent-only 1, child-only 1}, genuine {parent-only 0, child-only 1}; FVU per model from the sums."""
    e = torch.eye(2)
    W_dec = torch.stack([torch.stack([e[0], e[0], 0 * e[0], 0 * e[0], e[1]]),
                         torch.stack([e[1], 0 * e[1], e[1], 2 * e[1], e[1]])])          # (M, L, d)
    cc = hand_crosscoder("l1", torch.zeros(2, 2, 5), W_dec)
    dead = np.array([False, False, False, False, True])
    scaling = types.SimpleNamespace(result=lambda cut: {"latent": [1, 2, 3], "nu_eps": [0.9, 0.1, 0.6],
                                                        "nu_r": [0.0, 0.0, 0.0], "spurious": [True, False, True],
                                                        "fired": [True, True, False]})
    # 4 tokens; model 0: x = (1, 0), (-1, 0), (1, 0), (-1, 0): variance sum 4, sse 1 -> FVU 0.25; model 1: sse 2 -> 0.5
    sums = {"sse": torch.tensor([1.0, 2.0], dtype=torch.float64), "sx": torch.zeros(2, 2, dtype=torch.float64),
            "sxx": torch.tensor([4.0, 4.0], dtype=torch.float64)}
    rate = np.array([0.5, 0.25, 0.25, 0.0, 0.0])
    rec = diffing.crosscoder_record({"scaling_cut": 0.5}, cc, sums, 4, dead, rate, scaling, threshold=False)
    assert rec["classes"] == "spccx" and rec["live"] == 4 and rec["dead"] == 1
    assert rec["counts"] == {"shared": 1, "parent-only": 1, "child-only": 2, "mixed": 0}
    # latent 3 is called spurious but never fired: not counted
    assert rec["spurious"] == {"parent-only": 1, "child-only": 0}
    assert rec["genuine"] == {"parent-only": 0, "child-only": 2}
    assert rec["fvu"] == {"parent": 0.25, "child": 0.5} and rec["l0"] == 1.0
    assert rec["delta"][:4] == [0.5, 0.0, 1.0, 1.0] and sum(rec["delta_hist"]["counts"]) == 4
    assert rec["threshold"] is None


def test_cross_application_reads_the_other_models_activations_and_the_null_counts_live_latents(pipeline):
    """base->tinystories (another random model): the parent SAE's firing on the child's activations is not its
    firing on its own; the crosscoder null's fraction is of seed 0's live latents."""
    e = pipeline[2]["edges"]["base->tinystories"]
    for side in ("parent_sae", "child_sae"):
        f = e["firing"][side]
        assert f["rate_own"] != f["rate_other"], side
        assert f["live"] == sum(r > 0 for r in f["rate_own"])
    null, s0 = e["crosscoder"]["null"], e["crosscoder"]["seeds"]["0"]
    assert null["live"] == s0["live"] and 0 < null["live"] < len(s0["classes"]) + 1
    assert null["found_again_frac"] == round(null["found_again"] / null["live"], 5)


def test_edge_record_on_hand_made_activations_known_answer(monkeypatch):
    """edge_record on 8 tokens whose MLP activations are given by hand (helpers.table_model): parent (a_t, b_t),
    child (0, e_t), with a = 1..8, b firing on the last token only, e = 3 1 4 1 5 9 2 6. Crosscoder seed 0:
    latent 0 reads a (decoders in both: shared), 1 reads e (child-only), 2 reads b (parent-only, firing once:
    live), 3 never fires. Seed 1: latent 0 reads e (child-only), 1 and 2 never fire, 3 reads a (shared).
    The null: seed 0's latents 0 and 1 are found again (r = 1) as seed 1's 3 and 0, in the same classes (s = s,
    c = c; the same index would compare s with c, c with x), latent 2 not (r < 0.8 with a and e): 2 of 3 live, 2
    of 2 alike; seed 1's latent 3 is live though seed 0's latent 3 is dead (each seed its own dead mask).
    SAE features: the parent's f2 = relu(x1 - 2) is dead on the parent (b <= 1) though it fires on the child:
    it gets no latent. Firing on the other model, FVU per model: by hand below."""
    from helpers import hand_sae, table_model
    a, b, e = list(range(1, 9)), [0] * 7 + [1], [3, 1, 4, 1, 5, 9, 2, 6]
    study = types.SimpleNamespace(
        model={"base": table_model([[x, y] for x, y in zip(a, b)]), "lua": table_model([[0, y] for y in e])},
        sae={("base", 0): hand_sae([[1, 0, 0], [0, 1, 1]], [0, 0, -2]),     # f0 = x0, f1 = x1, f2 = relu(x1 - 2)
             ("lua", 0): hand_sae([[0, 1], [1, 0]], [0, -2])},              # g0 = x1, g1 = relu(x0 - 2)
        d_mlp=2)
    # W_enc (model, dim, latent), W_dec (model, latent, dim)
    W0 = hand_crosscoder("l1", [[[1, 0, 0, 0], [0, 0, 1, 0]], [[0, 0, 0, 0], [0, 1, 0, 0]]],
                         [[[1, 0], [0, 0], [0, 1], [1, 0]], [[1, 0], [0, 1], [0, 0], [1, 0]]])
    W1 = hand_crosscoder("l1", [[[0, 0, 0, 1], [0, 0, 0, 0]], [[0, 0, 0, 0], [1, 0, 0, 0]]],
                         [[[0, 0], [1, 0], [1, 0], [1, 0]], [[0, 1], [1, 0], [1, 0], [1, 0]]])
    with torch.no_grad():
        W0.b_enc[3] = W1.b_enc[1] = W1.b_enc[2] = -1.0
    monkeypatch.setattr(diffing, "cross_application", lambda *args: {})   # sae.evaluate's, tested on its own
    cfg = {"sae_seed": 0, "fast": False, "match_threshold": 0.8, "fire_ratio": 10.0, "arch": "l1", "scaling_cut": 0.5}
    rec = diffing.edge_record(cfg, {"skip_first": 0, "batch_size": 1}, study, torch.arange(8).view(2, 4),
                              "base", "lua", {0: W0, 1: W1}, "cpu")
    assert rec["tokens"] == 8
    cc = rec["crosscoder"]
    assert cc["seeds"]["0"]["classes"] == "scpx" and cc["seeds"]["1"]["classes"] == "cxxs"
    assert cc["null"] == {"seeds": [0, 1], "threshold": 0.8, "live": 3, "found_again": 2, "found_again_frac": 0.66667,
                          "same_class": 2, "same_class_frac": 1.0}
    assert rec["match"]["parent"]["latent"] == [0, 2, -1] and rec["match"]["child"]["latent"] == [1, -1]
    # seed 0 rebuilds the parent exactly; on the child it adds a to dim 0: sse sum a^2 = 204 over the child's
    # variance sum e^2 - 8 mean(e)^2 = 173 - 120.125
    assert cc["seeds"]["0"]["fvu"] == {"parent": 0.0, "child": round(204 / 52.875, 5)}
    # the parent SAE on the child's activations (0, e): f0 never, f1 always, f2 on 5 of 8; own rates 1, 1/8, 0
    p = rec["firing"]["parent_sae"]
    assert p["rate_own"] == [1.0, 0.125, 0.0] and p["rate_other"] == [0.0, 1.0, 0.625]
    assert (p["live"], p["stopped"], p["started"]) == (2, 1, 1)
    c = rec["firing"]["child_sae"]
    assert c["rate_own"] == [1.0, 0.0] and c["rate_other"] == [0.125, 0.75] and (c["live"], c["stopped"], c["started"]) == (1, 0, 1)


def test_batchtopk_inference_keeps_latents_whose_norm_weighted_score_passes_the_threshold():
    """Outside training a latent is kept where its score f_i sum_m ||W_dec,i^m|| passes the threshold, not f_i:
    threshold 2.8; latent 1 (norms' sum 2) at f = 2 scores 4 (kept, though f < 2.8); latent 2 (sum 1) at f = 2.5
    scores 2.5 (dropped); latent 0 (sum 1) at f = 2.9 scores 2.9 (kept)."""
    W_dec = [[[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 1.0], [0.0, 0.5]]]   # norms' sums 1, 2, 1
    cc = hand_crosscoder("batchtopk", np.zeros((2, 2, 3)), W_dec, k=1)
    with torch.no_grad():
        cc.threshold.fill_(2.8)
    f = cc.activate(torch.tensor([[0.0, 2.0, 2.5], [2.9, 0.0, 0.0]]))
    assert torch.equal(f, torch.tensor([[0.0, 2.0, 0.0], [2.9, 0.0, 0.0]]))
