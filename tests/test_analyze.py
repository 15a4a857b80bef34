"""analyze.py: the streamed correlation against numpy.corrcoef (any chunk size, constant and dead
features), classification, matching and families on constructed cases, the token set, the running
top-k, an end-to-end run on tiny random models and SAEs, the --explain hook, and the one-line errors."""
import json
import os
import re
import sys
import types

import helpers
import numpy as np
import pytest
import torch

import analyze
import fast
import report
import data as datalib
import sae as saelib
from common import atomic_torch_save, atomic_write_json, json_checksum, sha256_file, stamp
from model import ModelArgs, Transformer, save_checkpoint


def corr(x, y, chunk, use_fast=False):
    """r streamed in chunks of rows: analyze.CorrAccumulator, or (use_fast) fast.CorrAccumulator as
    analyze.py makes it (float32 dense products, co-active products where they are less work)."""
    acc = (fast.CorrAccumulator if use_fast else analyze.CorrAccumulator)(x.shape[1], y.shape[1])
    for i in range(0, len(x), chunk):
        acc.update(torch.as_tensor(x[i:i + chunk]), torch.as_tensor(y[i:i + chunk]))
    return analyze.pearson(acc).numpy()


def sparse_feats(rng, n, f, density=0.2):
    return (rng.random((n, f)) < density) * rng.exponential(1.0, (n, f))


# -----------------------------------------------------------------------------
# streamed correlation

# the plain accumulator's float64 sums are exact to ~1e-12; the fast one's float32 dense products to ~1e-6
ATOL = {False: 1e-10, True: 1e-5}


@pytest.mark.parametrize("use_fast", [False, True])
def test_streamed_correlation_equals_numpy_corrcoef_for_any_chunk_size(use_fast):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(600, 4)), sparse_feats(rng, 600, 5)], 1)
    y = np.concatenate([x[:, :3] @ rng.normal(size=(3, 3)) + 0.5 * rng.normal(size=(600, 3)), sparse_feats(rng, 600, 4)], 1)
    want = np.corrcoef(x.T, y.T)[:x.shape[1], x.shape[1]:]
    for chunk in (1, 7, 64, 600):
        np.testing.assert_allclose(corr(x, y, chunk, use_fast), want, atol=ATOL[use_fast])


@pytest.mark.parametrize("use_fast", [False, True])
def test_constant_and_dead_features_have_r_zero_not_nan(use_fast):
    rng = np.random.default_rng(2)
    x = sparse_feats(rng, 300, 4)
    x[:, 1] = 0.0     # dead
    x[:, 2] = 3.5     # constant
    y = np.concatenate([x[:, :1], np.zeros((300, 1)), np.full((300, 1), 0.1), sparse_feats(rng, 300, 2)], 1)
    for chunk in (1, 50, 300):
        r = corr(x, y, chunk, use_fast)
        assert np.isfinite(r).all()
        assert (r[[1, 2]] == 0).all() and (r[:, [1, 2]] == 0).all()
        assert r[0, 0] == pytest.approx(1.0)
        keep_x, keep_y = [0, 3], [0, 3, 4]
        np.testing.assert_allclose(r[np.ix_(keep_x, keep_y)],
                                   np.corrcoef(x[:, keep_x].T, y[:, keep_y].T)[:2, 2:], atol=ATOL[use_fast])


@pytest.mark.parametrize("use_fast", [False, True])
def test_too_few_tokens_is_a_one_line_error(use_fast):
    acc = (fast.CorrAccumulator if use_fast else analyze.CorrAccumulator)(2, 2)
    acc.update(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(SystemExit, match="cannot estimate a correlation"):
        analyze.pearson(acc)


# -----------------------------------------------------------------------------
# classification, matching, families

def constructed_edge():
    """Parent features p0..p5 (p5 dead); the child copies p0 (index 0), scales p1 (index 2), permutes
    p2 -> 3 and p3 -> 4, drops p4, adds a new feature (index 1) and a dead one (index 5)."""
    rng = np.random.default_rng(3)
    p = sparse_feats(rng, 2000, 6)
    p[:, 5] = 0
    c = np.stack([p[:, 0], sparse_feats(rng, 2000, 1)[:, 0], 2 * p[:, 1], p[:, 2], p[:, 3], np.zeros(2000)], 1)
    return p, c


def test_agreement_of_statuses_with_their_latents_classes_known_answer():
    # parent side: persists with a shared latent (agrees), persists with a parent-only one, disappears with a
    # parent-only one (agrees), disappears with a shared one at r below DIFF_MATCH (unmatched), dead, no latent
    classes = ["s", "p", "c", "m"]
    status, latent = ["p", "p", "d", "d", "x", "p"], [0, 1, 1, 0, 2, -1]
    r = [0.9, 0.8, 0.95, analyze.DIFF_MATCH - 0.01, 0.9, 0.0]
    got, table = analyze.agreement(status, latent, r, classes, "pd")
    assert got == ["s", "p", "p", "u", "c", "u"]
    assert table == {"p": {"s": 1, "p": 1, "c": 0, "m": 0, "x": 0, "u": 1},
                     "d": {"s": 0, "p": 1, "c": 0, "m": 0, "x": 0, "u": 1}}
    assert sum(table[st][analyze.DIFF_AGREE[st]] for st in table) == 2          # the two that agree
    assert analyze.DIFF_AGREE == {"p": "s", "d": "p", "m": "s", "e": "c"}     # persists/matched: shared; ...
    with pytest.raises(ValueError, match="6 statuses, 5 latents"):              # a record of another shape
        analyze.agreement(status, latent[:5], r, classes, "pd")


def test_level_strings_are_one_base36_digit_a_token_of_the_rows_max():
    acts = torch.tensor([[0.0, 0.5, 1.0, 1e-6], [2.0, 0.0, 4.0, 4.0]])
    top = torch.tensor([1.0, 4.0])                                       # each row's feature's max
    # ceil(35 a / max): 0 stays 0 (not firing), the max is z (35), a tiny activation is 1, never 0
    assert analyze.level_strings(acts, top) == ["0iz1", "i0zz"]   # ceil(17.5) = 18 = i


def test_example_rule_needs_enough_firings_and_a_max_above_a_share_of_the_median():
    stats = {("m", 0): {"nnz": torch.tensor([30, 30, 5, 0, 50]), "max": torch.tensor([1.0, 0.05, 2.0, 0.0, 3.0])}}
    study = types.SimpleNamespace(models=["m"])
    allowed, floor = analyze.example_rule({"sae_seed": 0, "min_fires": 20, "min_act_frac": 0.1}, study, stats)
    assert floor["m"] == pytest.approx(0.15)                             # 0.1 x the median max of the live 4: 1.5
    assert allowed["m"].tolist() == [True, False, False, False, True]    # too weak; too few firings; dead


def test_classify_copied_permuted_removed_new_and_dead_features():
    p, c = constructed_edge()
    r = corr(p, c, 500)
    out = analyze.classify(r, (p > 0).sum(0) == 0, (c > 0).sum(0) == 0, 0.8)
    assert out["parent_best"][:4].tolist() == [0, 2, 3, 4]                  # copies, found at their new index
    np.testing.assert_allclose(out["parent_best_r"][:4], 1.0, atol=1e-12)
    assert np.nonzero(out["persisting"])[0].tolist() == [0, 1, 2, 3]
    assert np.nonzero(out["disappearing"])[0].tolist() == [4]               # removed
    assert np.nonzero(out["emerging"])[0].tolist() == [1]                   # new
    assert out["parent_best"][5] == -1 and out["child_best"][5] == -1       # dead: no partner
    assert out["counts"] == {"parent_live": 5, "parent_dead": 1, "child_live": 5, "child_dead": 1, "persisting": 4,
                             "disappearing": 1, "emerging": 1, "child_matched": 4, "pairs": 4}
    assert sorted(map(tuple, out["pairs"].tolist())) == [(0, 0), (1, 2), (2, 3), (3, 4)]


def test_dead_features_are_never_matched_even_at_a_low_threshold():
    r = np.array([[0.9, 0.0], [0.0, 0.0]])
    out = analyze.classify(r, np.array([False, True]), np.array([False, True]), 0.01)
    assert out["counts"]["disappearing"] == 0 and out["counts"]["emerging"] == 0
    assert out["counts"]["parent_dead"] == 1 and out["counts"]["child_dead"] == 1 and out["counts"]["pairs"] == 1


def one_to_one(r, threshold):
    """greedy_matching on the pairs classify() finds at the threshold (as analyze.main runs it)."""
    c = cls_from(r, thr=threshold)
    return analyze.greedy_matching(c["pairs"], c["pair_r"])


def test_one_to_one_matching_is_one_to_one_greedy_and_maximal():
    r = np.array([[0.95, 0.90, 0.1], [0.85, 0.2, 0.3], [0.1, 0.88, 0.82]])
    pairs, vals = one_to_one(r, 0.8)
    assert pairs.tolist() == [[0, 0], [2, 1]] and vals.tolist() == [0.95, 0.88]   # (1, 0) lost to (0, 0)
    rng = np.random.default_rng(4)
    for _ in range(20):
        r = rng.random((30, 25))
        pairs, vals = one_to_one(r, 0.7)
        assert len(set(pairs[:, 0])) == len(pairs) and len(set(pairs[:, 1])) == len(pairs)
        assert (vals >= 0.7).all() and (np.diff(vals) <= 0).all()
        free = r >= 0.7
        free[pairs[:, 0], :] = False
        free[:, pairs[:, 1]] = False
        assert not free.any()                                                 # maximal: no pair left to add


def cls_from(r, dead_p=None, dead_c=None, thr=0.8):
    r = np.asarray(r, dtype=float)
    dp = np.zeros(r.shape[0], bool) if dead_p is None else np.asarray(dead_p)
    dc = np.zeros(r.shape[1], bool) if dead_c is None else np.asarray(dead_c)
    return analyze.classify(r, dp, dc, thr)


def test_families_on_a_constructed_tree():
    # base b0..b5 (b5 dead); lua l0..l4, tinystories t0..t4, luastories L0..L5
    bl = np.zeros((6, 5)); bl[0, 0] = bl[2, 2] = bl[3, 3] = 1          # b0->l0, b2->l2, b3->l3; l4 new in lua
    bt = np.zeros((6, 5)); bt[1, 1] = bt[2, 2] = 1                     # b1->t1, b2->t2; t0, t3, t4 new
    lL = np.zeros((5, 6)); lL[0, 0] = lL[2, 2] = lL[4, 4] = 1          # l0->L0, l2->L2, l4->L4 (l3 lost)
    tL = np.zeros((5, 6)); tL[1, 1] = tL[2, 2] = tL[3, 3] = 1          # t1->L1, t2->L2, t3->L3
    dead_b = np.array([0, 0, 0, 0, 0, 1], bool)
    cls = {"base->lua": cls_from(bl, dead_b), "base->tinystories": cls_from(bt, dead_b),
           "lua->luastories": cls_from(lL), "tinystories->luastories": cls_from(tL)}
    counts, code, _ = analyze.families(cls)
    assert counts["base_live"] == 5
    assert counts["fine_tunes"] == {"both": 1, "lua_only": 2, "tinystories_only": 1, "neither": 1}
    assert counts["reach"] == {"both": 1, "lua_only": 1, "tinystories_only": 1, "neither": 0}
    assert counts["paths"] == {"both": 1, "lua_only": 1, "tinystories_only": 1, "neither": 2}
    assert counts["new_lua"] == {"n": 2, "reach": 1}                   # l1, l4; l4 reaches
    assert counts["new_tinystories"] == {"n": 3, "reach": 1}           # t0, t3, t4; t3 reaches
    assert counts["new_luastories"] == 1                               # L5
    assert code.tolist() == [1 + 4, 2 + 8, 1 + 2 + 4 + 8, 1, 0, -1]


# -----------------------------------------------------------------------------
# token set, running top-k, windows, logit effects

def test_token_set_is_seeded_shared_out_and_made_of_distinct_windows():
    arrays = {"a": np.arange(1000) % 65000, "b": 5000 + np.arange(160), "c": np.arange(3)}
    s1, n1 = datalib.sample_windows(arrays, 400 // 16, 16, "tiles", 7, with_counts=True)   # as analyze draws it
    s2 = datalib.sample_windows(arrays, 400 // 16, 16, "tiles", 7)
    s3 = datalib.sample_windows(arrays, 400 // 16, 16, "tiles", 8)
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    assert n1 == {"a": 9, "b": 8, "c": 0}                               # 25 windows asked: b has 10, c none
    assert s1.shape == (17, 16) and len({tuple(r) for r in s1}) == 17
    assert all((np.diff(r) == 1).all() for r in s1)                     # contiguous windows of the arrays


def test_running_topk_equals_the_global_topk_of_sequence_maxima():
    rng = np.random.default_rng(5)
    T, Fn, n_seq = 8, 6, 50
    f = torch.tensor(sparse_feats(rng, n_seq * T, Fn, 0.05), dtype=torch.float32)
    st = analyze.stats_init(Fn, 5, "cpu")
    for s in range(0, n_seq, 7):
        b = min(7, n_seq - s)
        analyze.stats_update(st, f[s * T:(s + b) * T], s, b)
    smax = f.view(n_seq, T, Fn).amax(1)
    want = smax.topk(5, dim=0)
    torch.testing.assert_close(st["top_v"], want.values)
    assert torch.equal(smax.gather(0, st["top_i"]), st["top_v"])
    assert torch.equal(st["nnz"], (f > 0).sum(0).double())


def test_window_start_keeps_the_max_inside():
    for t in range(32):
        s = analyze.window_start(t, 32, 12)
        assert 0 <= s <= 20 and s <= t < s + 12
    assert analyze.window_start(20, 32, 12) == 11                        # 3/4 of the window before the max


def test_logit_effects_follow_w_out_norm_gain_and_lm_head():
    torch.manual_seed(0)
    m = Transformer(ModelArgs(vocab_size=50, block_size=8, d_model=16, n_head=2, n_kv_head=1, d_mlp=24))
    with torch.no_grad():
        m.norm_f.weight.uniform_(0.5, 2.0)
    d = torch.randn(3, 24)
    ti, tv, bi, bv = analyze.logit_effects(m, d, n=4)
    full = (d @ m.mlp.down.weight.T * m.norm_f.weight) @ m.lm_head.weight.T   # (3, 50)
    for k in range(3):
        order = torch.argsort(full[k], descending=True)
        assert ti[k].tolist() == order[:4].tolist() and bi[k].tolist() == order.flip(0)[:4].tolist()
        np.testing.assert_allclose(tv[k], full[k, order[:4]].detach().numpy(), rtol=1e-5)
        # the suppressed tokens' values are their (negative) logit effects, most negative first
        np.testing.assert_allclose(bv[k], full[k, order.flip(0)[:4]].detach().numpy(), rtol=1e-5)
        assert (bv[k] < 0).all() and (np.diff(bv[k]) >= 0).all()


def test_json_for_script_cannot_close_the_script_or_inject_html():
    nasty = {"t": "</script><script>alert(1)</script>", "u": "a & b \u2028 <!--"}
    s = report.json_for_script(nasty)
    assert not set("<>&\u2028") & set(s) and json.loads(s) == nasty


# -----------------------------------------------------------------------------
# end to end on tiny random models, SAEs and token files

ARGS = ModelArgs(vocab_size=257, block_size=16, d_model=32, n_head=4, n_kv_head=2, d_mlp=64)
N_FEAT, N_DEAD = 96, 5


def make_study(root, null_models=("base", "lua", "tinystories"), val_tokens=1500, source="sample"):
    """data/ with val splits of bytes of text, out/ with four models (lua and luastories are exact copies
    of base, tinystories another random model) and their SAEs (lua's and luastories' copy base's, with
    N_DEAD dead features), seed-1 SAEs for null_models, and a merge sweep."""
    data_dir, out_dir = os.path.join(root, "data"), os.path.join(root, "out")
    th = helpers.write_tokenizer(data_dir)
    texts = {"base": "def main():\n    return 'ok' # the <b>cat</b> & \"dog\" </script>\n",
             "lua": "local t = {} for i = 1, 10 do t[i] = i end\n", "tinystories": "Once upon a time, a dog ran.\n"}
    for d, text in texts.items():
        ids = (list(text.encode()) + [256]) * (val_tokens // (len(text) + 1) + 1)
        os.makedirs(os.path.join(data_dir, d), exist_ok=True)
        np.asarray(ids[:val_tokens], dtype=np.uint16).tofile(os.path.join(data_dir, d, "val.bin"))
        atomic_write_json(os.path.join(data_dir, d, "meta.json"), {"domain": d, "source": source, "dtype": "uint16",
                                                                   "vocab_size": 257, "tokenizer_hash": th,
                                                                   "splits": {"train": {"tokens": 0}, "val": {"tokens": val_tokens}}})
    torch.manual_seed(0)
    base = Transformer(ARGS).state_dict()
    states = {"base": base, "lua": base, "tinystories": Transformer(ARGS).state_dict(), "luastories": base}
    lineage = {"base": [], "lua": ["base"], "tinystories": ["base"], "luastories": ["lua", "tinystories"]}
    for name, state in states.items():
        parents = [{"name": p, "hash": sha256_file(os.path.join(out_dir, p, "ckpt.pt"))} for p in lineage[name]]
        save_checkpoint(os.path.join(out_dir, name, "ckpt.pt"), state, ARGS, finished=True, name=name,
                        domain=None if name == "luastories" else name, tokenizer_hash=th, parents=parents)  # (a merge)
        ck = torch.load(os.path.join(out_dir, name, "ckpt.pt"), weights_only=False)
        for seed in (0, 1):
            if seed == 1 and name not in null_models:
                continue
            init_seed = (0 if name in ("base", "lua", "luastories") else 1) if seed == 0 else 10 + seed
            write_sae(out_dir, name, seed, ck, saelib.init_sae(ARGS.d_mlp, N_FEAT, "relu", 0, init_seed))
    atomic_write_json(os.path.join(out_dir, "merge_sweep.json"), {  # the fields merge.py writes, no kind: an older one
        "made_from": {}, "t": [0, 0.5, 1], "loss": {"lua": [1.0, 2.0, 3.0], "tinystories": [3.0, 2.0, 1.0]}, "a": {"name": "lua"},
        "b": {"name": "tinystories"}, "crossing_t": 0.5})
    return data_dir, out_dir


def write_sae(out_dir, name, seed, model_ckpt, sae, d_in=None):
    with torch.no_grad():
        sae.b_enc[:N_DEAD] = -1e4                                             # dead on any input
    path = saelib.sae_path(out_dir, name, seed)
    atomic_torch_save({"sae": sae.state_dict(), "sae_args": saelib.sae_args(sae), "finished": True, "seed": seed,
                       "step": 1, "total_steps": 1, "model_name": name,
                       "model_hash": sha256_file(os.path.join(out_dir, name, "ckpt.pt")),
                       "model_fingerprint": saelib.model_fingerprint(model_ckpt),
                       "tokenizer_hash": model_ckpt["tokenizer_hash"], "config": {}, "metrics": {"fvu": 0.25, "l0": 9.0},
                       "provenance": {}}, path)


def share_features(out_dir, models, n):
    """Give each model's seed-1 SAE the first n features of its seed-0 SAE (past the dead ones), as two
    seeds of one model share some: a null that finds features again (random SAEs rarely do)."""
    for m in models:
        s0, _ = saelib.load_sae(out_dir, m, seed=0, device="cpu")
        s1, _ = saelib.load_sae(out_dir, m, seed=1, device="cpu")
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec"):
                a, b = getattr(s0, name), getattr(s1, name)
                if name == "W_enc":
                    b[:, N_DEAD:N_DEAD + n] = a[:, N_DEAD:N_DEAD + n]
                else:
                    b[N_DEAD:N_DEAD + n] = a[N_DEAD:N_DEAD + n]
        ck = torch.load(os.path.join(out_dir, m, "ckpt.pt"), weights_only=False)
        write_sae(out_dir, m, 1, ck, s1)


def run(data_dir, out_dir, *extra):
    return analyze.main(["--preset=tiny", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--device=cpu",
                         "--n_tokens=2048", "--min_tokens=1024", "--batch_size=16", "--n_select=2", "--ctx_window=12",
                         *extra])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data_dir, out_dir = make_study(str(root))
    res = run(data_dir, out_dir)
    return data_dir, out_dir, res


def test_end_to_end_results_and_report(study):
    data_dir, out_dir, res = study
    disk = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    for k in ("threshold", "token_set", "models", "edges", "null", "null_missing", "families", "density", "selection",
              "provenance"):
        assert k in disk
    assert list(disk["edges"]) == ["base->lua", "base->tinystories", "lua->luastories", "tinystories->luastories",
                                   "base->luastories"]
    ts = disk["token_set"]
    assert ts["n_tokens"] == 128 * (16 - 1) and ts["per_domain"] == {"base": 43, "lua": 43, "tinystories": 42} and ts["smoke_scale_demo"]
    # lua is base with base's SAE: every live feature persists onto itself with r = 1, nothing else happens
    e = disk["edges"]["base->lua"]
    live = e["counts"]["parent_live"]
    assert e["counts"]["parent_dead"] == N_DEAD and live == N_FEAT - N_DEAD
    assert e["counts"]["persisting"] == live and e["counts"]["disappearing"] == 0 and e["counts"]["emerging"] == 0
    assert e["parent_best"]["feature"][N_DEAD:] == list(range(N_DEAD, N_FEAT)) and min(e["parent_best"]["r"][N_DEAD:]) >= 0.9999
    assert e["parent_best"]["feature"][:N_DEAD] == [-1] * N_DEAD
    assert e["one_to_one"]["n"] == live and e["one_to_one"]["mean_cos"] == pytest.approx(1.0)
    assert e["null_parent_persisting_frac"] == disk["null"]["base"]["persisting_frac"]
    assert e["null_child_persisting_frac"] == disk["null"]["lua"]["persisting_frac"]
    assert disk["edges"]["lua->luastories"]["null_child_persisting_frac"] is None   # no seed-1 SAE for luastories
    assert disk["null_missing"] == ["luastories"] and set(disk["null"]) == {"base", "lua", "tinystories"}
    f = disk["families"]["counts"]
    assert f["base_live"] == live and f["fine_tunes"]["both"] + f["fine_tunes"]["lua_only"] == live
    assert f["reach"]["both"] + f["reach"]["lua_only"] == live                     # lua and luastories are base
    assert len(disk["density"]["base"]) == N_FEAT and sum(d == 0 for d in disk["density"]["base"]) == N_DEAD
    assert set(disk["provenance"]["saes"]["base"]) == {"s0", "s1"} and disk["provenance"]["token_set_seed"] == 0
    # the report: offline, escaped, labelled as a smoke-scale demo, with every section
    page = open(os.path.join(out_dir, "analysis", "report.html"), encoding="utf-8").read()
    assert not re.search(r"\b(src|href|action)\s*=\s*[\"']?(https?:|//)", page) and not re.search(r"\bsrc\s*=", page)
    assert "@import" not in page and "url(" not in page and "fetch(" not in page      # offline: loads nothing
    assert "Smoke-scale demo" in page and "base-&gt;lua" in page and "Merge sweep" in page
    assert page.count("<svg") >= 1 + 5 + 3 + 1                                     # flow, 5 + 3 histograms, sweep
    blob = page.split('id="data">')[1].split("</script>")[0]
    assert "<" not in blob and ">" not in blob
    data = json.load(open(os.path.join(out_dir, "analysis", "pages.json")))
    assert data["pages"] and all(len(p["top"]) <= 8 for p in data["pages"].values())
    m, i = disk["selection"]["base->lua"]["persisting"][0]
    assert data["pages"][f"{m}/{i}"]["trail"] and len(data["pages"][f"{m}/{i}"]["pos"]) == 10
    # stability curves, one-to-one rates and density bands for every edge and null
    for group in (disk["edges"], disk["null"]):
        for name, e in group.items():
            st = e["stability"]
            assert st["thresholds"] == analyze.THRESHOLDS and len(st["parent"]) == len(st["thresholds"])
            for curve in ("parent", "child", "parent_weighted", "child_weighted", "one_to_one_r", "one_to_one_cos"):
                assert all(0 <= v <= 1 for v in st[curve]) and (np.diff(st[curve]) <= 1e-12).all()   # falls with t
            at = st["thresholds"].index(0.8)
            assert st["parent"][at] == pytest.approx(e["persisting_frac"], abs=1e-5)
            bands = e["density_bands"]
            assert sum(b["parent_live"] for b in bands.values()) == e["counts"]["parent_live"]
            assert sum(b["persisting"] for b in bands.values()) == e["counts"]["persisting"]
    assert e["stability"]["cos_rule"]["cos"] == 0.7
    ebl = disk["edges"]["base->lua"]                          # lua is base: everything matched at every cut
    assert ebl["stability"]["parent"] == [1.0] * 10 and ebl["stability"]["one_to_one_cos"][-1] == 1.0
    assert ebl["stability"]["vs_null"]["null"] == "base" and len(ebl["stability"]["vs_null"]["ratio"]) == 10
    # examples: distinct per edge, with a reason each, and every one has contexts and a histogram
    seen = set()
    for name, s in disk["selection"].items():
        for cat, picks in s.items():
            for (m, i), why in zip(picks, disk["selection_reasons"][name][cat]):
                assert (m, i) not in seen and "density group" in why and "threshold" in why
                seen.add((m, i))
                p = data["pages"][f"{m}/{i}"]
                assert p["top"] and sum(p["hist"]["counts"]) > 0 and any(q["ctx"] for q in p["intervals"])
    for p in data["pages"].values():                          # each interval's contexts: drawn from inside it
        for q in p["intervals"]:
            for ids, acts, k in q["ctx"]:
                assert len(ids) == len(acts) == 12 and q["lo"] * 0.99 - 1e-6 <= acts[k] <= q["hi"] * 1.01 + 1e-6


def test_report_rerenders_alone_from_the_saved_files(study, tmp_path):
    """report.py rebuilds report.html from results.json + pages.json without recomputing anything: the same page
    (but for the folder its commands name: the one it is in now)."""
    import shutil
    _, out_dir, _ = study
    out2 = str(tmp_path / "out")
    shutil.copytree(os.path.join(out_dir, "analysis"), os.path.join(out2, "analysis"))
    shutil.copy(os.path.join(out_dir, "merge_sweep.json"), out2)
    before = open(os.path.join(out2, "analysis", "report.html"), encoding="utf-8").read()
    os.remove(os.path.join(out2, "analysis", "report.html"))
    report.main([f"--out_dir={out2}"])
    again = open(os.path.join(out2, "analysis", "report.html"), encoding="utf-8").read()
    assert f"--out_dir={out2} " in again and again.replace(f"--out_dir={out2} ", f"--out_dir={out_dir} ") == before
    with pytest.raises(SystemExit, match="run the analysis first: python analyze.py"):
        report.main([f"--out_dir={tmp_path / 'nothing'}"])


def test_temp_files_a_killed_run_left_in_the_feature_folder_are_removed(study, tmp_path):
    """A kill -9 while a side file was written leaves features/.<model>.js.<random>.tmp: the next run removes it, as
    it removes those beside results.json (the folder is the analysis' own)."""
    import shutil
    data_dir, out_dir, _ = study
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2)
    adir = os.path.join(out2, "analysis")
    stale = [os.path.join(adir, ".results.json.deadbeef.tmp"), os.path.join(adir, report.SIDE, ".base.js.deadbeef.tmp")]
    for path in stale:
        open(path, "w").write("half a file")
    run(data_dir, out2)                                                      # current: the page re-rendered
    assert [p for p in stale if os.path.exists(p)] == []


def test_a_current_analysis_is_not_recomputed_and_any_change_remakes_it(study, tmp_path, capsys):
    """A second run with the same inputs, settings and code re-renders the page and recomputes nothing (a
    finished ./reproduce.sh run again); a setting that changes the findings, an input added or removed, a side
    file of another run or of another model (swapped), a damaged pages.json or --overwrite makes the analysis anew."""
    import shutil
    data_dir, out_dir, first = study
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2)
    adir = os.path.join(out2, "analysis")
    results = os.path.join(adir, "results.json")
    before = open(results, "rb").read()
    os.remove(os.path.join(adir, "report.html"))
    auto = [] if torch.cuda.is_available() else ["--device=auto"]  # auto is the cpu run here: the same run
    for same in ([], ["--threads=2", "--memory_gb=1", *auto], [f"--seq_len={first['provenance']['config']['seq_len']}"]):
        res = run(data_dir, out2, *same)
        assert res["run"] == first["run"] and open(results, "rb").read() == before, same
        assert "is current" in capsys.readouterr().out and os.path.isfile(os.path.join(adir, "report.html"))

    def remade(*extra):
        old = json.load(open(results))["run"]
        res = run(data_dir, out2, *extra)
        assert res["run"] != old and json.load(open(results))["run"] == res["run"]
        assert "is current" not in capsys.readouterr().out
        return res
    assert remade("--threshold=0.7")["threshold"] == 0.7
    assert remade()["threshold"] == 0.8                                      # and back
    os.remove(os.path.join(out2, "merge_sweep.json"))                        # an input gone
    assert remade()["provenance"]["merge_sweep"] is None
    side = os.path.join(adir, report.SIDE, "lua.js")
    text = open(side).read()
    open(side, "w").write(text.replace(json.load(open(results))["run"], "0" * 16))   # another run's side file
    remade()
    shutil.copy(os.path.join(adir, report.SIDE, "base.js"), side)          # another model's, of this run
    remade()
    text = open(side, encoding="utf-8").read()
    mid = next(i for i in range(len(text) // 2, len(text)) if text[i] in "12345678")
    open(side, "w", encoding="utf-8").write(text[:mid] + "9" + text[mid + 1:])  # a digit edited, its run id kept
    remade()
    pages = os.path.join(adir, "pages.json")
    open(pages, "w").write(open(pages).read()[:-40])                         # cut short
    remade()
    remade("--overwrite")


def test_a_current_analysis_is_checked_against_the_saes_context_and_its_files_not_waited_on(study, tmp_path, capsys):
    """A run given --skip_first 0 is not current for a run that leaves it to the SAEs (1 here), though its
    saved config holds a value, not 'unset'; a stage's record the page cannot show is its own line at once
    (recomputing would end in it); a pipe in place of a side file is refused, never waited on."""
    import shutil
    import signal
    data_dir, out_dir, _ = study
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2)
    assert run(data_dir, out2, "--skip_first=0")["token_set"]["skip_first"] == 0
    assert run(data_dir, out2)["token_set"]["skip_first"] == 1               # made anew, not "current"
    capsys.readouterr()
    run(data_dir, out2)
    assert "is current" in capsys.readouterr().out
    results = os.path.join(out2, "analysis", "results.json")
    before = open(results, "rb").read()
    atomic_write_json(os.path.join(out2, "base", "metrics.json"), {"kind": "train_metrics", "format": 2})
    with pytest.raises(SystemExit, match=r"base/metrics\.json is train\.py's metrics without a valid val_loss"):
        run(data_dir, out2)
    assert "chunk 1/" not in capsys.readouterr().out and open(results, "rb").read() == before
    os.remove(os.path.join(out2, "base", "metrics.json"))
    side = os.path.join(out2, "analysis", report.SIDE, "lua.js")
    os.remove(side)
    os.mkfifo(side)

    def waited(*_):
        raise AssertionError("analyze.py waits on a pipe in place of a side file")
    old = signal.signal(signal.SIGALRM, waited)
    signal.alarm(60)
    try:
        with pytest.raises(SystemExit, match=r"features/lua\.js is not a file but a folder, a device or a pipe"):
            run(data_dir, out2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_records_of_another_kind_or_shape_are_one_line_naming_them(study, tmp_path):
    """What report.py reads (issue 26): results, pages, the stages' metrics, merge records and the sweep, each
    checked for its kind and fields; a part deeper down that is not what its writer makes is one line too."""
    import shutil
    _, out_dir, _ = study
    res = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    assert (res["kind"], res["format"]) == ("results", 2) and res["checksum"] == json_checksum(res)
    flipped = json.dumps({**res, "threshold": res["threshold"] / 2})     # a value changed on disk, not the checksum
    res = {**{k: v for k, v in res.items() if k != "checksum"}, "format": 1}  # (below: made before checksums)
    broken = {**res, "edges": {n: {k: v for k, v in e.items() if k != "parent_best"} for n, e in res["edges"].items()}}
    train_rec = {"kind": "train_metrics", "format": 1, "name": "base", "val_loss": {"base": 2.5}, "history": []}
    sae_rec = {"kind": "sae_metrics", "format": 1, "model": "lua", "seeds": {}, "history": []}
    cases = [  # (file, its content, the message)
        ("analysis/results.json", "[]", r"results\.json is a list, not analyze\.py's results; remake it: python analyze"),
        ("analysis/results.json", flipped, r"results\.json is damaged: its contents do not match the checksum"),
        ("analysis/results.json", '{"kind": "results", "format": 1}', r"is analyze\.py's results without a valid edges"),
        ("analysis/results.json", json.dumps(broken), r"not shaped as its writer makes it \(KeyError: 'parent_best'\)"),
        ("analysis/pages.json", json.dumps(res), r"pages\.json is analyze\.py's results, not analyze\.py's feature pages"),
        ("analysis/pages.json", '{"pages": ', r"pages\.json is not readable JSON"),
        ("base/metrics.json", "[1]", r"base/metrics\.json is a list, not train\.py's metrics; remake it: python train\.py "
                                     r"--domain base --resume"),
        ("base/metrics.json", '{"kind": "train_metrics", "format": 1, "name": "lua", "val_loss": {}}',
         r"base/metrics\.json is the record of 'lua', not 'base': copied or swapped\?"),
        ("luastories/metrics.json", '{"kind": "train_metrics", "format": 1, "name": "lua", "val_loss": {}}',
         r"luastories/metrics\.json is the record of 'lua', not 'luastories'.*remake it: python merge\.py --out "
         r"luastories$"),                                    # (a merge's folder: its record is merge.json)
        ("sae_lua/metrics.json", '{"kind": "sae_metrics", "format": 1, "model": "base", "seeds": {}, "history": []}',
         r"sae_lua/metrics\.json is the record of 'base', not 'lua'"),
        ("sae_lua/metrics.json", '{"kind": "merge", "format": 1, "made_from": {}, "t": 0.5}',
         r"sae_lua/metrics\.json is a merge record, not sae\.py's metrics; remake it: python sae\.py --model lua"),
        ("luastories/merge.json", '{"t": 0.5}', r"luastories/merge\.json is a dict of no known kind \(fields: t\)"),
        ("merge_sweep.json", '{"kind": "sweep", "format": 1, "made_from": {}, "t": "all", "loss": {}}',
         r"merge_sweep\.json is a merge sweep without a valid t"),
        ("merge_sweep.json", '{"kind": "sweep", "format": 7, "made_from": {}, "t": [], "loss": {}}', r"is a merge sweep of format 7, written by newer code"),
        # whole records with an inner value of the wrong type: named with the stage's own fix (a finished run
        # rewrites such a record from its checkpoint or state), not the analysis' re-run, which cannot mend it
        ("base/metrics.json", json.dumps({**train_rec, "val_loss": {"lua": "x"}}),
         r"base/metrics\.json is train\.py's metrics with a val_loss that is not a number: damaged or hand-made; "
         r"remake it: python train\.py --domain base --resume$"),
        ("base/metrics.json", json.dumps({**train_rec, "history": [1, 2]}),
         r"base/metrics\.json is train\.py's metrics with a history that is not a list of loss points"),
        ("sae_lua/metrics.json", json.dumps({**sae_rec, "history": [1, 2]}),
         r"sae_lua/metrics\.json is sae\.py's metrics with a history .*remake it: python sae\.py --model lua "
         r"--resume$"),
        ("sae_lua/metrics.json", json.dumps({**sae_rec, "seeds": {"0": "x"}}),
         r"sae_lua/metrics\.json is sae\.py's metrics with seeds that are not each seed's metrics"),
        ("luastories/merge.json", '{"kind": "merge", "format": 1, "made_from": {}, "t": 0.5, "checkpoint": "x"}',
         r"luastories/merge\.json is a merge record with a checkpoint that is not .*python merge\.py --out luastories"),
        ("analysis/results.json", json.dumps({**res, "threshold": 10 ** 400}),
         r"not shaped as its writer makes it \(OverflowError: int too large to convert to float\)"),
        ("analysis/results.json", "[" * 200_000,
         r"results\.json is not readable JSON \(ValueError: .*nested too deeply"),
    ]
    for i, (rel, text, pattern) in enumerate(cases):
        out2 = str(tmp_path / str(i))
        shutil.copytree(os.path.join(out_dir, "analysis"), os.path.join(out2, "analysis"))
        shutil.copy(os.path.join(out_dir, "merge_sweep.json"), out2)
        os.makedirs(os.path.dirname(os.path.join(out2, rel)), exist_ok=True)
        with open(os.path.join(out2, rel), "w") as f:
            f.write(text)
        with pytest.raises(SystemExit) as e:
            report.write_report(out2)
        msg = str(e.value)
        assert msg.startswith("error: ") and "\n" not in msg and re.search(pattern, msg), (rel, msg)
    # a fine-tune trained under another --name, its folder renamed: its record names the checkpoint beside it
    os.makedirs(tmp_path / "renamed" / "lua")
    (tmp_path / "renamed" / "lua" / "ckpt.pt").write_bytes(b"the checkpoint's bytes")
    rec = {"kind": "train_metrics", "format": 1, "name": "lua_plain", "val_loss": {},
           "checkpoint_sha256": sha256_file(str(tmp_path / "renamed" / "lua" / "ckpt.pt"))}
    (tmp_path / "renamed" / "lua" / "metrics.json").write_text(json.dumps(rec))
    assert report.read_stage(str(tmp_path / "renamed"), "lua", "metrics.json", "train_metrics")["name"] == "lua_plain"
    # a stray metrics.json beside a merge's merge.json is not read: the merge's record is
    out2 = str(tmp_path / "stray")
    shutil.copytree(os.path.join(out_dir, "analysis"), os.path.join(out2, "analysis"))
    os.makedirs(os.path.join(out2, "luastories"))
    for name, text in (("merge.json", '{"kind": "merge", "format": 1, "made_from": {}, "t": 0.5}'),
                       ("metrics.json", '{"kind": "train_metrics", "format": 1, "name": "lua", "val_loss": {}}')):
        with open(os.path.join(out2, "luastories", name), "w") as f:
            f.write(text)
    assert os.path.exists(report.write_report(out2))


def test_report_alone_names_its_fixes_with_the_folders_and_preset_the_study_was_made_with(study, tmp_path):
    """report.py takes only --out_dir; a fix it prints (python sae.py, python analyze.py) must still read the
    study's --data_dir and preset, which its records' provenance holds: without them it would read data/."""
    import shutil
    data_dir, out_dir, _ = study
    for i, (rel, fix) in enumerate((
            ("sae_lua/metrics.json", "python sae.py --data_dir={} --out_dir={} --preset={} --model lua --resume"),
            ("analysis/results.json", "python analyze.py --data_dir={} --preset={} --out_dir {} --overwrite"))):
        out2 = str(tmp_path / f"out{i}")
        shutil.copytree(os.path.join(out_dir, "analysis"), os.path.join(out2, "analysis"))
        os.makedirs(os.path.dirname(os.path.join(out2, rel)), exist_ok=True)
        with open(os.path.join(out2, rel), "w") as f:
            f.write("{")                                                # damaged: not JSON
        preset = json.load(open(os.path.join(out2, "analysis", "pages.json")))["provenance"]["config"]["preset"]
        want = fix.format(*((data_dir, out2, preset) if "sae" in fix else (data_dir, preset, out2)))
        proc = helpers.run_script("report.py", f"--out_dir={out2}")
        helpers.assert_one_line_error(proc, re.escape(f"remake it: {want}") + "$")


def test_a_damaged_sae_setting_names_the_command_that_remakes_that_seed():
    """A third seed's file (analyze.py's spread_seed) is remade only by a run whose --seeds hold it."""
    study = types.SimpleNamespace(sae={("lua", 0): None, ("lua", 2): None}, block_size=16, info={
        "lua": {"sae0": {"config": {"seq_len": 16}}, "sae2": {"config": {"seq_len": "16"}}}})
    with pytest.raises(SystemExit, match=r"sae_s2\.pt says it was trained with --seq_len '16': damaged or hand-made; "
                                         r"remake it: python sae\.py --model lua --seeds 0,1,2 --overwrite$"):
        analyze.sae_context({"seq_len": 0, "skip_first": -1, "out_dir": "out"}, study)


def test_saes_of_different_kinds_are_named_in_the_report(study):
    """A TopK SAE for one model beside ReLU ones (README's sae.py --arch topk example, then analyze.py): the
    tracking compares them as they are, and the SAE section says so."""
    _, out_dir, _ = study
    res = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    assert {v["sae_kind"] for v in res["models"].values()} == {"relu"}
    assert analyze.sae_kind({"arch": "topk", "k": 32}) == "topk k 32" and analyze.sae_kind({"arch": "relu"}) == "relu"
    assert "differ in kind" not in report.section_saes(res, out_dir)
    res["models"]["lua"]["sae_kind"] = "topk k 32"
    html = report.section_saes(res, out_dir)
    assert "These SAEs differ in kind</b> (base relu, lua topk k 32, tinystories relu" in html
    assert "<td>96 topk k 32</td>" in html


def test_each_features_status_is_saved_by_python_and_agrees_with_the_counts(study):
    """Each feature's status per edge is classify()'s, saved in results.json (one letter per feature): the
    report shows it as saved and never re-derives it from r."""
    _, out_dir, _ = study
    res = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    assert res["status_legend"] == {"p": "persists", "d": "disappears", "m": "matched", "e": "emerges", "x": "dead"}
    for name, e in res["edges"].items():
        st = e["status"]
        dens = np.array(res["density"][e["parent"]])
        assert [s == "x" for s in st["parent"]] == (dens == 0).tolist()
        assert st["parent"].count("p") == e["counts"]["persisting"] and st["parent"].count("d") == e["counts"]["disappearing"]
        assert st["child"].count("e") == e["counts"]["emerging"] and st["child"].count("m") == e["counts"]["child_matched"]
        r = np.array(e["parent_best"]["r"])                                 # plain rounding now: no `_r` round-down
        assert ((r >= res["threshold"]) == np.array([s == "p" for s in st["parent"]])).sum() >= len(r) - 2


def test_pairs_streamed_in_several_passes_give_the_same_results(study, tmp_path, monkeypatch):
    """When the sums do not fit the memory budget, the pairs are streamed one group per pass (the feature
    statistics in the first): the same results as one pass."""
    import shutil
    data_dir, out_dir, _ = study
    one = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2)
    monkeypatch.setattr(analyze, "plan_groups", lambda cfg, study, device: ([[p] for p in study.pairs], 0))
    many = run(data_dir, out2, "--overwrite")
    assert many["stream_passes"] == len(one["edges"]) + len(one["null"]) > 1
    for group in ("edges", "null"):
        for name, e in one[group].items():
            for k in ("counts", "parent_best", "child_best", "stability", "density_bands", "status"):
                assert many[group][name][k] == e[k], (name, k)
    assert many["density"] == one["density"] and many["selection"] == one["selection"]


def test_fast_false_runs_the_plain_path_with_the_same_results(study, tmp_path):
    """--fast=false (the plain correlation and matching) classifies every pair as the fast path does:
    its r differs by float32 rounding only (~1e-7), far below the 1e-4 that results.json keeps."""
    import shutil
    data_dir, out_dir, _ = study
    one = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    out2 = str(tmp_path / "out")
    shutil.copytree(out_dir, out2)
    plain = run(data_dir, out2, "--fast=false")
    assert plain["provenance"]["config"]["fast"] is False and one["provenance"]["config"]["fast"] is True
    for group in ("edges", "null"):
        for name, e in one[group].items():
            for k in ("counts", "stability", "density_bands", "status"):
                assert plain[group][name][k] == e[k], (name, k)
            for side in ("parent_best", "child_best"):
                assert plain[group][name][side]["feature"] == e[side]["feature"]
                np.testing.assert_allclose(plain[group][name][side]["r"], e[side]["r"], atol=1.1e-4)
    assert plain["density"] == one["density"] and plain["families"] == one["families"]
    # the examples are picked by r: among features with r equal to rounding (here copies, r = 1) either may be
    assert {n: {k: len(v) for k, v in s.items()} for n, s in plain["selection"].items()} == \
        {n: {k: len(v) for k, v in s.items()} for n, s in one["selection"].items()}


def test_a_third_sae_seed_gives_the_null_a_seed_to_seed_spread(tmp_path):
    data_dir, out_dir = make_study(str(tmp_path), null_models=("base",))
    ck = torch.load(os.path.join(out_dir, "base", "ckpt.pt"), weights_only=False)
    write_sae(out_dir, "base", 2, ck, saelib.init_sae(ARGS.d_mlp, N_FEAT, "relu", 0, 12))
    res = run(data_dir, out_dir, "--models=base,lua")
    spread, null = res["null_spread"]["base"], res["null"]["base"]["stability"]["parent"]
    assert spread["seed_pairs"] == 3 and set(res["null_spread"]) == {"base"} and set(res["null"]) == {"base"}
    assert all(lo <= v <= hi for lo, v, hi in zip(spread["min"], null, spread["max"]))
    assert res["edges"]["base->lua"]["stability"]["vs_null"]["spread"] == spread
    assert set(res["provenance"]["saes"]["base"]) == {"s0", "s1", "s2"}


def test_the_token_set_takes_the_saes_context_and_saes_of_different_ones_are_one_line(tmp_path):
    """SAEs trained on 8-token windows from position 0 (sae.py --seq_len 8 --skip_first 0, as the authors'
    24-token blocks) are tracked on 8-token windows from position 0; SAEs of different contexts are named."""
    data_dir, out_dir = make_study(str(tmp_path), null_models=("base",))
    def set_context(model, seed, **ctx):
        path = saelib.sae_path(out_dir, model, seed)
        ck = torch.load(path, weights_only=False)
        ck["config"] = dict(ck["config"], **ctx)
        atomic_torch_save(ck, path)
    for m, seed in (("base", 0), ("base", 1), ("lua", 0)):
        set_context(m, seed, seq_len=8, skip_first=0)
    res = run(data_dir, out_dir, "--models=base,lua")
    ts = res["token_set"]
    assert (ts["block_size"], ts["skip_first"]) == (8, 0) and ts["n_tokens"] == ts["n_seq"] * 8 == 2048
    set_context("lua", 0, seq_len=16)
    with pytest.raises(SystemExit, match=r"different --seq_len \(8: base seed 0, base seed 1; 16: lua seed 0\)"):
        run(data_dir, out_dir, "--models=base,lua")
    res = run(data_dir, out_dir, "--models=base,lua", "--seq_len=16", "--skip_first=1")
    assert (res["token_set"]["block_size"], res["token_set"]["skip_first"]) == (16, 1)


def test_printed_edge_table(tmp_path, capsys):
    data_dir, out_dir = make_study(str(tmp_path), null_models=("base",))
    run(data_dir, out_dir, "--models=base,lua")
    out = capsys.readouterr().out
    assert re.search(r"base->lua\s+91\s+91\s+91 \(100%\)\s+0\s+0\s+5/5\s+\d+%", out)
    assert "no seed-1 SAE for lua" in out and "report.html" in out


def test_explain_hook_gets_contexts_and_its_answers_reach_the_report(study, tmp_path, monkeypatch):
    data_dir, out_dir, _ = study
    seen = {}

    def explain_features(features, cfg):
        seen["features"], seen["cfg"] = features, cfg
        return {f["key"]: {"explanation": f"fires on <{f['key']}>", "score": 0.5} for f in features}

    monkeypatch.setitem(sys.modules, "explain", types.SimpleNamespace(
        explain_features=explain_features, check_key=lambda cfg: None, check_reachable=lambda cfg: None))
    out2 = str(tmp_path / "out")
    import shutil
    shutil.copytree(out_dir, out2)
    res = run(data_dir, out2, "--explain", "--llm_model=m1", "--n_random=4")
    feats = seen["features"]
    assert feats and seen["cfg"]["llm_model"] == "m1" and "api_base" not in seen["cfg"]
    for f in feats:
        assert f["key"] == f"{f['model']}/{f['feature']}" and 0 < len(f["top"]) <= 20 and len(f["random"]) == 4
        for c in f["top"] + f["random"]:
            assert len(c["tokens"]) == len(c["acts"]) == 12 and all(isinstance(t, str) for t in c["tokens"])
        maxes = [max(c["acts"]) for c in f["top"]]
        assert maxes == sorted(maxes, reverse=True) and maxes[0] > 0
    assert res["explanations"][feats[0]["key"]]["score"] == 0.5
    page = open(os.path.join(out2, "analysis", "report.html"), encoding="utf-8").read()
    assert "fires on \\u003c" in page                                          # escaped in the embedded JSON
    # the analysis run again without --explain (./reproduce.sh after it): current, the explanations kept
    again = run(data_dir, out2, "--n_random=4")
    assert again["run"] == res["run"] and again["explanations"] == res["explanations"]
    assert open(os.path.join(out2, "analysis", "report.html"), encoding="utf-8").read() == page


def test_explain_end_to_end_with_a_local_llm_stub(study, tmp_path, monkeypatch):
    """The real explain.py against an OpenAI-compatible stub on 127.0.0.1: explanations and scores land
    in results.json and on the report's feature pages."""
    def respond(path, headers, body):
        msgs = body["messages"]
        if "predict" in msgs[0]["content"]:       # simulation: 10 on tokens holding a digit, 0 elsewhere
            toks = re.findall(r"^(\d+)\t(.*)$", msgs[-1]["content"], flags=re.M)
            return 200, {}, "\n".join(f"{i}\t{10 if re.search(r'[0-9]', tok) else 0}" for i, tok in toks)
        return 200, {}, "digits and numbers"

    srv, api_base = helpers.chat_server(respond)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    data_dir, out_dir, _ = study
    out2 = str(tmp_path / "out")
    import shutil
    shutil.copytree(out_dir, out2)
    try:
        res = run(data_dir, out2, "--explain", f"--api_base={api_base}", "--llm_model=stub")
    finally:
        srv.shutdown()
        srv.server_close()
    ex = res["explanations"]
    assert ex and all(v["explanation"] == "digits and numbers" for v in ex.values())
    scores = [v["score"] for v in ex.values() if v["score"] is not None]
    assert scores and all(-1.0 <= s <= 1.0 for s in scores)
    disk = json.load(open(os.path.join(out2, "analysis", "results.json")))
    assert disk["explanations"] == json.loads(json.dumps(ex))
    page = open(os.path.join(out2, "analysis", "report.html"), encoding="utf-8").read()
    assert "digits and numbers" in page


# -----------------------------------------------------------------------------
# errors

def resave(path, **changes):
    """Re-write a model checkpoint with some fields changed (through the one checkpoint writer)."""
    ck = torch.load(path, weights_only=False)
    ck.update(changes)
    save_checkpoint(path, ck.pop("model"), ck.pop("model_args"), **ck)


def test_a_token_set_too_small_names_what_makes_it_large_enough(tmp_path):
    """Fewer evaluation tokens than --min_tokens: where --n_tokens asked for too few, the --n_tokens that gives
    enough (run with it, the analysis goes on); where the val splits hold too few, data.py with the setting that
    makes them larger (data.grow_fix: here, val splits made by hand, the settings to raise)."""
    data_dir, out_dir = make_study(str(tmp_path))
    with pytest.raises(SystemExit, match=r"fewer than the 1024 needed to estimate a correlation; give --n_tokens 1104$"):
        run(data_dir, out_dir, "--n_tokens=256")
    assert run(data_dir, out_dir, "--n_tokens=1104")["token_set"]["n_tokens"] >= 1024
    data_dir, out_dir = make_study(str(tmp_path / "short"), val_tokens=200)
    with pytest.raises(SystemExit) as e:
        run(data_dir, out_dir)
    assert str(e.value).endswith(f"needed to estimate a correlation; the base val split holds the fewest; make "
                                 f"{data_dir} again with more text: python data.py --domain all --data_dir {data_dir} "
                                 "with a larger --sample_kb (the sample) or --max_mb (--source hf), or --val_frac")
    # --n_tokens not a multiple of the window (260 asks for 16 windows of 16): the splits hold those, --n_tokens grows
    with pytest.raises(SystemExit, match=r"needed to estimate a correlation; give --n_tokens 1104$"):
        run(data_dir, out_dir, "--n_tokens=260")
    # lua's val split the shortest (6 windows of 16; base and tinystories 12), with the sample's settings recorded:
    # lua grows, by the share that holds its third of the 69 windows needed (23 x 16 tokens, at 4 bytes a token
    # with no bytes recorded: 2944 bytes, 14% of 20 KB, less than --val_frac 0.1 doubled)
    ids = np.fromfile(os.path.join(data_dir, "lua", "val.bin"), dtype=np.uint16)[:100]
    ids.tofile(os.path.join(data_dir, "lua", "val.bin"))
    meta = json.load(open(os.path.join(data_dir, "lua", "meta.json")))
    meta["splits"]["val"]["tokens"] = 100
    meta["provenance"] = {"config": {"source": "sample", "preset": "tiny", "tokenizer": "bpe", "sample_kb": 20,
                                     "val_frac": 0.1}}
    atomic_write_json(os.path.join(data_dir, "lua", "meta.json"), meta)
    with pytest.raises(SystemExit) as e:
        run(data_dir, out_dir)
    assert "(base: 12 windows of 16, lua: 6 windows of 16, tinystories: 12 windows of 16)" in str(e.value)
    assert re.search(r"needed to estimate a correlation; the lua val split holds the fewest; make it larger: python "
                     r"data\.py .*--sample_kb 20 --val_frac 0\.2 \(this retrains", str(e.value)), str(e.value)


def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
    data_dir, out_dir = make_study(str(tmp_path))
    resave(os.path.join(out_dir, "tinystories", "ckpt.pt"), iter_num=7)     # tinystories re-made since the merge
    with pytest.raises(SystemExit, match=r"'luastories' was not made from the current 'tinystories'.*merge.py --overwrite"):
        run(data_dir, out_dir)
    data_dir, out_dir = make_study(str(tmp_path / "fresh"))
    with pytest.raises(SystemExit, match=r"needed to estimate a correlation; give --n_tokens 1104$"):
        run(data_dir, out_dir, "--n_tokens=256")
    with pytest.raises(SystemExit, match=r"--threshold must be in \(0, 1\]"):
        run(data_dir, out_dir, "--threshold=0")
    monkeypatch.setitem(sys.modules, "explain", None)                       # as if explain.py were absent
    with pytest.raises(SystemExit, match="--explain needs explain.py"):
        run(data_dir, out_dir, "--explain")
    monkeypatch.delitem(sys.modules, "explain")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit, match="set OPENAI_API_KEY"):
        run(data_dir, out_dir, "--explain")
    assert "chunk 1/" not in capsys.readouterr().out                       # said before the long pass, not after it
    monkeypatch.undo()

    os.rename(saelib.sae_path(out_dir, "tinystories", 0), str(tmp_path / "keep.pt"))
    with pytest.raises(SystemExit, match="python sae.py --model tinystories"):
        run(data_dir, out_dir)
    os.rename(str(tmp_path / "keep.pt"), saelib.sae_path(out_dir, "tinystories", 0))

    ck = torch.load(os.path.join(out_dir, "lua", "ckpt.pt"), weights_only=False)
    write_sae(out_dir, "lua", 0, ck, saelib.init_sae(32, 64, "relu", 0, 3))
    with pytest.raises(SystemExit, match="takes 32-wide inputs but model 'lua' has d_mlp 64"):
        run(data_dir, out_dir)

    resave(os.path.join(out_dir, "lua", "ckpt.pt"), tokenizer_hash="0123456789abcdef")
    with pytest.raises(SystemExit, match="different tokenizers"):
        run(data_dir, out_dir)

    os.remove(os.path.join(out_dir, "luastories", "ckpt.pt"))
    with pytest.raises(SystemExit, match="python merge.py"):
        run(data_dir, out_dir)


def test_swapped_edited_or_misplaced_files_are_one_line_errors_before_the_pass(tmp_path, capsys):
    """Files that are whole but not what their name says, or not files at all: each is one line naming it,
    said before the streaming pass (never a traceback, a hang, or a wrong result)."""
    import shutil
    data_dir, out_dir = make_study(str(tmp_path / "clean"))
    tok = os.path.join(data_dir, "tokenizer")
    info = json.load(open(os.path.join(tok, "tokenizer.json")))
    atomic_write_json(os.path.join(tok, "tokenizer.json"), {**info, "hash": datalib.tokenizer_hash(data_dir)})  # as data.py
    sae0, sae1 = (saelib.sae_path(out_dir, "lua", s) for s in (0, 1))

    def swap(a, b):
        os.rename(a, a + ".x"), os.rename(b, a), os.rename(a + ".x", b)

    def restamp(path, edit):  # whole by its checksum, but not what it describes
        ck = torch.load(path, weights_only=True)
        edit(ck)
        atomic_torch_save(stamp(ck, ck["kind"]) if "checksum" in ck else ck, path)

    def rank_lines(d):  # two ranks' strings exchanged: still a valid rank file, decoding two ids wrongly
        path = os.path.join(d, "tokenizer", "bpe.tiktoken")
        lines = open(path).read().splitlines(keepends=True)
        lines[97], lines[98] = lines[98].replace(" 98", " 97"), lines[97].replace(" 97", " 98")
        open(path, "w").write("".join(lines))

    cases = [  # (what is done to a copy of data/ and out/, the one line)
        (lambda d, o: swap(sae0.replace(out_dir, o), sae1.replace(out_dir, o)), r"sae_s0\.pt holds the SAE of seed 1, "
         r"not seed 0: renamed or copied\? .*python sae\.py --model lua --overwrite"),
        (lambda d, o: shutil.copy(sae0.replace(out_dir, o), sae1.replace(out_dir, o)), r"holds the SAE of seed 0, not seed 1"),
        (lambda d, o: restamp(sae0.replace(out_dir, o), lambda c: c["sae_args"].update(n_features=32)),
         r"sae_s0\.pt does not fit the SAE it describes \(RuntimeError: size mismatch"),
        (lambda d, o: restamp(os.path.join(o, "lua", "ckpt.pt"), lambda c: c["model_args"].update(d_mlp=32)),
         r"lua/ckpt\.pt does not fit the model it describes \(RuntimeError.*python train\.py --domain lua --overwrite"),
        (lambda d, o: rank_lines(d), r"bpe\.tiktoken is damaged: it does not match the hash"),
        (lambda d, o: swap(os.path.join(d, "lua"), os.path.join(d, "tinystories")),
         r"lua/meta\.json is the meta\.json of domain 'tinystories', not 'lua': folders swapped\?"),
        (lambda d, o: (os.remove(os.path.join(d, "base", "meta.json")), os.mkfifo(os.path.join(d, "base", "meta.json"))),
         r"base/meta\.json is damaged"),                                     # a pipe: refused, not waited on
        (lambda d, o: os.symlink("/dev/zero", os.path.join(o, "lua", "ckpt.pt.z")) or
         os.replace(os.path.join(o, "lua", "ckpt.pt.z"), os.path.join(o, "lua", "ckpt.pt")),
         r"lua/ckpt\.pt is not a file but a folder, a device or a pipe"),    # never read without end
        (lambda d, o: os.makedirs(os.path.join(o, "analysis", "results.json")),
         r"results\.json is not a file but a folder.*move it away"),
        (lambda d, o: os.makedirs(os.path.join(o, "analysis", "features", "lua.js")),
         r"features/lua\.js is not a file but a folder"),
    ]
    for i, (damage, pattern) in enumerate(cases):
        d, o = str(tmp_path / f"d{i}"), str(tmp_path / f"o{i}")
        shutil.copytree(data_dir, d, symlinks=True), shutil.copytree(out_dir, o, symlinks=True)
        damage(d, o)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            run(d, o)
        msg = str(e.value)
        assert msg.startswith("error: ") and "\n" not in msg and re.search(pattern, msg), (i, msg)
        assert "chunk 1/" not in capsys.readouterr().out, i                    # before the long pass
    run(data_dir, out_dir)  # the clean copy passes


def test_val_data_of_another_tokenizer_is_a_one_line_error(tmp_path):
    data_dir, out_dir = make_study(str(tmp_path))
    meta_path = os.path.join(data_dir, "lua", "meta.json")
    meta = json.load(open(meta_path))
    atomic_write_json(meta_path, {**meta, "tokenizer_hash": "0123456789abcdef"})
    with pytest.raises(SystemExit, match=r"data/lua was prepared with tokenizer 0123456789abcdef.*pass the --data_dir"):
        run(data_dir, out_dir)


# -----------------------------------------------------------------------------
# one-to-one matching: the Hungarian method

def test_linear_sum_assignment_equals_brute_force():
    import itertools
    rng = np.random.default_rng(8)
    for n, m in [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5), (2, 7)]:
        for k in range(10):  # real costs, then small integers: many ties, many equal paths
            cost = rng.normal(size=(n, m)) if k % 2 else rng.integers(-2, 3, size=(n, m)).astype(float)
            rows, cols = analyze.linear_sum_assignment(cost)
            assert len(rows) == min(n, m) and len(set(cols)) == len(cols) and len(set(rows)) == len(rows)
            if n <= m:
                best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
            else:
                best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
            assert cost[rows, cols].sum() == pytest.approx(best)


def max_weight_matching(pairs, weights, n_rows, use_fast):
    """analyze.py's maximum-weight matching: the plain one, or (use_fast) fast.py's by components."""
    if use_fast:
        return fast.max_weight_matching(pairs, weights, n_rows, analyze.linear_sum_assignment, analyze.greedy_matching)
    return analyze.max_weight_matching(pairs, weights)


@pytest.mark.parametrize("use_fast", [False, True])
def test_max_weight_matching_beats_greedy_where_greedy_is_wrong(use_fast):
    # greedy takes (0, 0) = 0.9 and is left with (1, 1) = 0.1; the best matching is (0, 1) + (1, 0) = 1.6
    pairs = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [5, 7]])
    w = np.array([0.9, 0.8, 0.8, 0.1, 0.6])
    got, gw, n_greedy = max_weight_matching(pairs, w, 6, use_fast)
    assert sorted(map(tuple, got.tolist())) == [(0, 1), (1, 0), (5, 7)] and gw.sum() == pytest.approx(2.2)
    assert n_greedy == 0 and (np.diff(gw) <= 0).all()
    rng = np.random.default_rng(9)                                     # never worse than greedy, always one-to-one
    for _ in range(10):
        r = rng.random((25, 20))
        c = cls_from(r, thr=0.75)
        got, gw, _ = max_weight_matching(c["pairs"], c["pair_r"], 25, use_fast)
        greedy, greedy_w = analyze.greedy_matching(c["pairs"], c["pair_r"])
        assert len(set(got[:, 0])) == len(got) == len(set(got[:, 1])) and gw.sum() >= greedy_w.sum() - 1e-12


# -----------------------------------------------------------------------------
# device memory: the plan made before the long pass

def paper_like_study(n_features=16384, d_mlp=1024, block_size=256):
    """A Study with the paper preset's shapes, its weights on the meta device (sizes without memory)."""
    models = ["base", "lua", "tinystories", "luastories"]
    net = {m: torch.nn.Linear(d_mlp, 32000 * 1024 // d_mlp, bias=False, device="meta") for m in models}
    sae = {}
    for m in models:
        for seed in (0, 1):
            s = torch.nn.Module()
            s.W_enc = torch.nn.Parameter(torch.empty(d_mlp, n_features, device="meta"))
            s.W_dec = torch.nn.Parameter(torch.empty(n_features, d_mlp, device="meta"))
            s.n_features = n_features
            sae[(m, seed)] = s
    edges = [(f"{p}->{c}", p, c) for p, c in analyze.EDGES]
    pairs = [(n, (p, 0), (c, 0)) for n, p, c in edges] + [(m, (m, 0), (m, 1)) for m in models]
    return analyze.Study(models, edges, net, sae, {}, models, [], [], pairs, d_mlp, block_size, "tok")


def test_the_paper_preset_is_planned_under_8_gb_and_an_impossible_plan_is_one_line(monkeypatch):
    study = paper_like_study()
    cfg = dict(analyze.config, **analyze.PRESETS["paper"], seq_len=256, skip_first=1)
    monkeypatch.setattr(analyze.common, "device_free_bytes", lambda device: 80 * 2 ** 30)  # an 80 GB card
    groups, need = analyze.plan_groups(cfg, study, "cuda")
    assert need <= 8 * 2 ** 30 and sum(len(g) for g in groups) == len(study.pairs) == 9
    f = 16384
    assert need >= 8 * f * f + 10 * f * f                        # one pair's float64 sums + classify's temporaries
    one = analyze.memory_need([(f, f)], 16 * 255, 1024, 4, [f] * 8, 0)
    two = analyze.memory_need([(f, f), (f, f)], 16 * 255, 1024, 4, [f] * 8, 0)
    assert two - one >= 8 * f * f                                                       # a second pair's sums at least
    groups, _ = analyze.plan_groups(dict(cfg, memory_gb=0), study, "cuda")             # the whole card: one pass
    assert len(groups) == 1
    monkeypatch.setattr(analyze.common, "device_free_bytes", lambda device: 6 * 2 ** 30)   # a 6 GB card
    with pytest.raises(SystemExit, match=r"needs \d+\.\d GB of cuda memory for one pair of SAEs, more than 6\.0 GB free "
                                         r"on cuda; use a smaller --batch_size.*--device cpu"):
        analyze.plan_groups(cfg, study, "cuda")
    monkeypatch.setattr(analyze.common, "device_free_bytes", lambda device: 80 * 2 ** 30)
    with pytest.raises(SystemExit, match=r"more than --memory_gb 2"):
        analyze.plan_groups(dict(cfg, memory_gb=2.0), study, "cuda")


# -----------------------------------------------------------------------------
# known answers that pin the counts, curves and null reading (mutation audit)

def unequal_edge():
    """5 parents (P4 dead) x 4 children (C3 dead): live counts differ on the two sides, one pair exactly at the
    threshold, a live parent whose live partners are all negative (its best is one of them, never the dead child)."""
    r = np.array([[0.8, 0.5, 0.1, 0.0],
                  [0.25, 0.75, 0.3, 0.0],
                  [-0.2, -0.1, -0.3, 0.0],
                  [0.1, 0.2, 0.05, 0.0],
                  [0.0, 0.0, 0.0, 0.0]])
    return analyze.classify(r, np.array([0, 0, 0, 0, 1], bool), np.array([0, 0, 0, 1], bool), 0.8)


def test_classify_known_answers_with_unequal_live_counts_and_a_pair_at_the_threshold():
    c = unequal_edge()
    assert c["counts"] == {"parent_live": 4, "parent_dead": 1, "child_live": 3, "child_dead": 1, "persisting": 1,
                           "disappearing": 3, "emerging": 2, "child_matched": 1, "pairs": 1}
    assert c["persisting"].tolist() == [True, False, False, False, False]       # r = threshold persists (r >= t)
    assert c["parent_best"].tolist() == [0, 1, 1, 1, -1]
    assert c["parent_best_r"].tolist() == [0.8, 0.75, -0.1, 0.2, 0.0]
    assert c["child_best"].tolist() == [0, 1, 1, -1]
    assert c["child_best_r"].tolist() == [0.8, 0.75, 0.3, 0.0]
    assert c["emerging"].tolist() == [False, True, True, False]


def test_stability_curves_known_answers():
    c = unequal_edge()
    dens_p = np.array([0.5, 0.25, 0.125, 0.125, 0.9])      # the dead parent's density must weigh nothing
    dens_c = np.array([0.5, 0.25, 0.25, 0.7])
    st = analyze.stability(c, dens_p, dens_c, np.array([0.8, 0.75]), np.array([0.9, 0.7, 0.6]))
    at = {t: k for k, t in enumerate(st["thresholds"])}
    assert [st["parent"][at[t]] for t in (0.5, 0.75, 0.8, 0.85)] == [0.5, 0.5, 0.25, 0.0]    # of 4 live parents
    assert [st["child"][at[t]] for t in (0.5, 0.8, 0.85)] == [0.66667, 0.33333, 0.0]         # of 3 live children
    assert [st["parent_weighted"][at[t]] for t in (0.5, 0.8)] == [0.75, 0.5]
    assert [st["child_weighted"][at[t]] for t in (0.5, 0.8)] == [0.75, 0.5]
    assert [st["one_to_one_r"][at[t]] for t in (0.5, 0.8)] == [0.5, 0.25]
    assert [st["one_to_one_cos"][at[t]] for t in (0.5, 0.7, 0.9, 0.95)] == [0.75, 0.5, 0.25, 0.0]
    assert st["cos_rule"] == {"cos": 0.7, "matched": 2, "rate": 0.5}


def test_an_edge_is_read_against_its_parents_null_as_edge_over_null():
    study = types.SimpleNamespace(spread=[], nulls=["base", "tinystories"], pairs=[],
                                  edges=[("base->lua", "base", "lua"), ("lua->luastories", "lua", "luastories")])
    records = {"base->lua": {"stability": {"parent": [0.6, 0.3, 0.2]}, "persisting_frac": 0.3},
               "lua->luastories": {"stability": {"parent": [0.5, 0.5, 0.5]}, "persisting_frac": 0.5},
               "base": {"stability": {"parent": [0.3, 0.6, 0.0]}, "persisting_frac": 0.25},
               "tinystories": {"stability": {"parent": [0.9, 0.9, 0.9]}, "persisting_frac": 0.75}}
    edges, null, _ = analyze.vs_null(study, records)
    assert set(null) == {"base", "tinystories"} and set(edges) == {"base->lua", "lua->luastories"}
    e = edges["base->lua"]
    assert e["null_parent_persisting_frac"] == 0.25 and e["null_child_persisting_frac"] is None
    assert e["stability"]["vs_null"]["ratio"] == [2.0, 0.5, None] and e["stability"]["vs_null"]["null"] == "base"
    assert edges["lua->luastories"]["null_parent_persisting_frac"] is None
    assert "vs_null" not in edges["lua->luastories"]["stability"]


def test_decoder_cosines_known_answers_in_blocks_of_rows():
    g = torch.Generator().manual_seed(5)
    W_a = torch.randn(7, 3, generator=g) * torch.arange(1, 8)[:, None]     # rows of unequal norms
    W_b = torch.randn(5, 3, generator=g) * 3.0
    cos = (torch.nn.functional.normalize(W_a.double(), dim=1) @ torch.nn.functional.normalize(W_b.double(), dim=1).T).numpy()
    live_a, live_b = np.array([1, 1, 1, 0, 1, 1, 1], bool), np.array([1, 0, 1, 1, 1], bool)
    want = {(i, j) for i in range(7) for j in range(5) if cos[i, j] >= 0.3 and live_a[i] and live_b[j]}
    assert want and any(i >= 2 for i, _ in want)
    for rows in (2, 3, 4096):                                               # blocks past the first keep their row offset
        pairs, vals = analyze.decoder_cos_pairs(W_a, W_b, live_a, live_b, 0.3, rows=rows)
        assert {tuple(p) for p in pairs.tolist()} == want
        np.testing.assert_allclose(vals, cos[pairs[:, 0], pairs[:, 1]], atol=1e-6)
    i, j = np.array([0, 3, 6]), np.array([4, 0, 2])
    np.testing.assert_allclose(analyze.decoder_cos(W_a, W_b, i, j), cos[i, j], atol=1e-12)


def test_one_to_one_record_counts_hungarian_pairs_at_the_threshold():
    c = unequal_edge()                     # candidates >= 0.5: (0,0) 0.8, (0,1) 0.5, (1,1) 0.75
    sae_a, sae_b = saelib.init_sae(3, 5, "relu", 0, seed=1), saelib.init_sae(3, 4, "relu", 0, seed=2)
    rec, hung_r, _ = analyze.one_to_one_record(c, sae_a, sae_b, 0.8, use_fast=False)
    assert sorted(hung_r.tolist()) == [0.75, 0.8]
    assert rec["n"] == 1 and rec["hungarian_r"]["n"] == 1


def test_the_null_pairs_two_seeds_and_the_stream_counts_the_positions_past_skip_first(study):
    """The null baseline compares seed 0 with seed 1 (random, unrelated SAEs here: few features found
    again), never an SAE with itself; and every statistic is over the n_tokens positions >= skip_first."""
    data_dir, out_dir, _ = study
    disk = json.load(open(os.path.join(out_dir, "analysis", "results.json")))
    for m in ("base", "lua", "tinystories"):
        nul = disk["null"][m]
        assert nul["persisting_frac"] < 0.5 and min(nul["parent_best"]["r"][N_DEAD:]) < 0.9
    cfg, _ = analyze.settings(["--preset=tiny", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--device=cpu",
                               "--n_tokens=2048", "--min_tokens=1024", "--batch_size=16"])
    st = analyze.load_study(cfg, "cpu", analyze.input_hashes(cfg))
    seqs, token_set = analyze.draw_tokens(cfg, st)
    assert token_set["n_tokens"] == len(seqs) * (seqs.shape[1] - 1)           # skip_first 1, as the SAEs were trained
    for use_fast in (False, True):
        cfg["fast"] = use_fast
        acc, stats, _ = analyze.stream(cfg, st, seqs, "cpu", st.pairs[:1])
        n_rows = next(iter(acc.values())).sums()[0]
        assert n_rows == token_set["n_tokens"]
        assert all(int(s["nnz"].max()) <= token_set["n_tokens"] for s in stats.values())


def test_pair_record_fractions_histograms_and_many_to_many_truncation_known_answers():
    """pair_record on unequal_edge (4 live parents, 3 live children): emerging is a fraction of the child's live
    features; the best-r histograms count each live feature once (a negative best r in the first bin, a dead
    feature nowhere); the many-to-many list keeps the first max_pairs pairs in (parent, child) order and says
    whether it was cut."""
    c = unequal_edge()
    sae_a, sae_b = saelib.init_sae(3, 5, "relu", 0, seed=1), saelib.init_sae(3, 4, "relu", 0, seed=2)
    dens_p, dens_c = np.array([0.5, 0.25, 0.125, 0.125, 0.0]), np.array([0.5, 0.25, 0.25, 0.0])
    rec = analyze.pair_record(c, sae_a, sae_b, dens_p, dens_c, ("p", "c"), 0.8, 10, use_fast=False)
    assert rec["persisting_frac"] == 1 / 4 and rec["emerging_frac"] == 2 / 3
    hp, hc = rec["hist"]["parent"], rec["hist"]["child"]
    assert len(hp) == len(analyze.HIST_BINS) - 1 and sum(hp) == 4 and sum(hc) == 3
    assert hp[0] == 1 and hc[0] == 0           # P2's best r -0.1 clipped into the first bin; dead P4 / C3 not counted
    # at threshold 0.5 there are 3 pairs: (0, 0) 0.8, (0, 1) 0.5, (1, 1) 0.75 (row-major order)
    r = np.array([[0.8, 0.5, 0.1, 0.0], [0.25, 0.75, 0.3, 0.0], [-0.2, -0.1, -0.3, 0.0], [0.1, 0.2, 0.05, 0.0],
                  [0.0, 0.0, 0.0, 0.0]])                                   # unequal_edge's r
    c5 = analyze.classify(r, c["dead_parent"], c["dead_child"], 0.5)
    cos = analyze.decoder_cos(sae_a.W_dec, sae_b.W_dec, [0, 0, 1], [0, 1, 1])
    for max_pairs, want in ((2, [(0, 0, 0.8), (0, 1, 0.5)]), (3, [(0, 0, 0.8), (0, 1, 0.5), (1, 1, 0.75)])):
        many = analyze.pair_record(c5, sae_a, sae_b, dens_p, dens_c, ("p", "c"), 0.5, max_pairs,
                                   use_fast=False)["many_to_many"]
        assert many["n"] == 3 and many["truncated"] == (max_pairs < 3)
        assert [tuple(p[:3]) for p in many["pairs"]] == want
        assert [p[3] for p in many["pairs"]] == [round(float(q), 4) for q in cos[:max_pairs]]


def test_select_features_spreads_over_density_and_alternates_clearest_and_closest_known_answer():
    """n = 2 density groups per category: the first group's clearest case (farthest from the threshold on its
    side: highest r for persisting, lowest for disappearing / emerging), the second group's closest call."""
    thr = 0.8
    persisting = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    c = {"persisting": persisting, "disappearing": ~persisting,
         "parent_best_r": np.array([0.95, 0.82, 0.9, 0.81, 0.1, 0.7, 0.3, 0.79]),
         "emerging": np.array([1, 1, 1, 1], bool), "child_best_r": np.array([0.2, 0.5, 0.6, 0.0])}
    # parents 0-3 have densities in reverse index order: groups by density are {3, 2} and {1, 0}
    dens_p = np.array([0.4, 0.3, 0.2, 0.1, 0.05, 0.06, 0.07, 0.08])
    dens_c = np.array([0.1, 0.1, 0.2, 0.2])
    taken = set()
    got = analyze.select_features(c, 2, thr, dens_p, dens_c, ("base", "lua"), taken)
    picks = {cat: [(m, i) for m, i, _ in v] for cat, v in got.items()}
    # persisting {3: .81, 2: .9} clearest 2, {1: .82, 0: .95} closest 1; disappearing {4: .1, 5: .7} clearest 4,
    # {6: .3, 7: .79} closest 7; emerging {0: .2, 1: .5} clearest 0, {2: .6, 3: 0} closest 2
    assert picks == {"persisting": [("base", 2), ("base", 1)], "disappearing": [("base", 4), ("base", 7)],
                     "emerging": [("lua", 0), ("lua", 2)]}
    assert taken == {p for v in picks.values() for p in v}
    assert "the clearest case" in got["persisting"][0][2] and "the closest call" in got["persisting"][1][2]


def test_trail_follows_best_partners_at_or_above_the_threshold_both_ways():
    """a -> b -> c: a0's best in b is b1 (r 0.9), b1's best in c is c2 at r 0.5 (below 0.8: not followed); from
    c2 backwards: its best parent b1 (0.85), whose best parent is a0 (0.9)."""
    edges = [("a->b", "a", "b"), ("b->c", "b", "c")]
    cls = {"a->b": {"parent_best": np.array([1, -1]), "parent_best_r": np.array([0.9, 0.0]),
                    "child_best": np.array([-1, 0]), "child_best_r": np.array([0.0, 0.9])},
           "b->c": {"parent_best": np.array([-1, 2]), "parent_best_r": np.array([0.0, 0.5]),
                    "child_best": np.array([-1, -1, 1]), "child_best_r": np.array([0.0, 0.0, 0.85])}}
    assert analyze.trail("a", 0, edges, cls, 0.8) == [("b", 1, 0.9, "a->b")]
    assert analyze.trail("c", 2, edges, cls, 0.8) == [("b", 1, 0.85, "b->c"), ("a", 0, 0.9, "a->b")]
    assert analyze.trail("b", 1, edges, cls, 0.5) == [("a", 0, 0.9, "a->b"), ("c", 2, 0.5, "b->c")]


def table_study(tables, saes):
    """A Study of hand-made models (helpers.table_model: token t's MLP activation is tables[m][t]) and SAEs,
    with the edge base->lua and no nulls; the analysis settings for 2 windows of 4 tokens, plain path."""
    models = list(tables)
    study = analyze.Study(models=models, edges=[("base->lua", "base", "lua")],
                          model={m: helpers.table_model(t) for m, t in tables.items()},
                          sae={(m, 0): s for m, s in saes.items()}, info={}, nulls=[], null_missing=[], spread=[],
                          pairs=[("base->lua", ("base", 0), ("lua", 0))], d_mlp=2, block_size=8,
                          tokenizer_hash="")
    cfg = {**analyze.config, "seq_len": 4, "skip_first": 0, "batch_size": 1, "fast": False, "memory_gb": 1.0}
    return study, cfg, torch.arange(8).view(2, 4)


def test_a_feature_firing_once_is_live_and_one_never_firing_is_dead():
    """track on 8 hand-made tokens: base's f1 fires on one token only (b = 0 ... 0 1): it is live (density 1/8)
    and, with no lua feature at r >= 0.8 (a = 1..8 and e = 3 1 4 1 5 9 2 6 correlate < 0.6 with it), it
    disappears; f2 = relu(x1 - 2) never fires: dead, neither persisting nor disappearing. f0 = a persists (lua's
    g0 = a, r = 1); lua's g1 = e is emerging."""
    a, b, e = list(range(1, 9)), [0] * 7 + [1], [3, 1, 4, 1, 5, 9, 2, 6]
    study, cfg, seqs = table_study({"base": [[x, y] for x, y in zip(a, b)], "lua": [[x, y] for x, y in zip(a, e)]},
                                   {"base": helpers.hand_sae([[1, 0, 0], [0, 1, 1]], [0, 0, -2]),
                                    "lua": helpers.hand_sae([[1, 0], [0, 1]], [0, 0])})
    cls, found, dens, dead, _, _ = analyze.track(cfg, study, seqs, {"n_tokens": 8}, "cpu")
    assert dead[("base", 0)].tolist() == [False, False, True] and dens[("base", 0)].tolist() == [1.0, 0.125, 0.0]
    c = cls["base->lua"]
    assert c["persisting"].tolist() == [True, False, False] and c["disappearing"].tolist() == [False, True, False]
    assert c["emerging"].tolist() == [False, True]
    counts = found["edges"]["base->lua"]["counts"]
    assert (counts["parent_live"], counts["parent_dead"], counts["persisting"], counts["disappearing"]) == (2, 1, 1, 1)


def test_interval_samples_keep_at_most_n_per_interval_and_no_empty_slots():
    """feature_activity on hand-made activations (skip_first 1: positions 0 never count), 4 intervals, 2 samples
    each, 4 histogram bins. f0 fires once, on token 7 (sequence 1, position 3) at its max: one sample in the
    top interval and nothing else (the reservoir's other slots stay empty, never a sample). f1 (max 2) is 1 on
    token 1 (level 0.5: interval 1, bin 1) and 2 on tokens 2, 3, 6, 7 (interval 3, bin 3): 2 of those 4 drawn;
    its 2 on token 4 is at position 0, left out."""
    x0, x1 = [0] * 7 + [4], [0, 1, 2, 2, 2, 0, 2, 2]
    study, cfg, seqs = table_study({"base": list(zip(x0, x1)), "lua": [[0, 0]] * 8},
                                   {"base": helpers.hand_sae([[1, 0], [0, 1]], [0, 0]),
                                    "lua": helpers.hand_sae([[1, 0], [0, 1]], [0, 0])})
    cfg.update(skip_first=1, n_intervals=4, n_per_interval=2, hist_bins=4)
    stats = {("base", 0): {"max": torch.tensor([4.0, 2.0])}}
    got = analyze.feature_activity(cfg, study, seqs, {("base", 0), ("base", 1)}, stats, "cpu")
    assert got[("base", 0)] == {"max": 4.0, "hist": [0, 0, 0, 1], "samples": [[], [], [], [(1, 3)]]}
    f1 = got[("base", 1)]
    assert f1["hist"] == [0, 1, 0, 4] and f1["samples"][:3] == [[], [(0, 1)], []]
    top = f1["samples"][3]
    assert len(top) == 2 and len(set(top)) == 2 and set(top) <= {(0, 2), (0, 3), (1, 2), (1, 3)}


def test_side_file_partner_digits_are_the_partners_activations_over_the_partners_max():
    """browse_features on hand-made activations (windows of 4 tokens, one top context each): base's f0 is
    0 1 2 4 on sequence 0 (max 4): digits ceil(35 a / 4) = 0 9 18 35 = "09iz". Its best partner on base->lua is
    lua's f1 (parent_best), 3 0 6 0 there with lua's f1 max 6: "i0z0" (not over base's max, nor base's f1's
    activations), and the head names lua/1 with max 6. lua's features take their partners from child_best
    (base's f0 for both): lua's f1 over the same window shows base's f0's "09iz"."""
    base = [[0, 0], [1, 0], [2, 0], [4, 0], [0, 1], [0, 0], [0, 0], [0, 0]]
    lua = [[0, 3], [0, 0], [0, 6], [0, 0], [2, 0], [1, 0], [0, 0], [0, 0]]
    study, cfg, seqs = table_study({"base": base, "lua": lua}, {m: helpers.hand_sae([[1, 0], [0, 1]], [0, 0])
                                                                for m in ("base", "lua")})
    cfg.update(n_all_top=1, all_window=4, n_intervals=2, n_all_logits=2)
    stats = {("base", 0): {"top_v": torch.tensor([[4.0, 1.0]]), "top_i": torch.tensor([[0, 1]]),
                           "max": torch.tensor([4.0, 1.0]), "nnz": torch.tensor([3.0, 1.0])},
             ("lua", 0): {"top_v": torch.tensor([[2.0, 6.0]]), "top_i": torch.tensor([[1, 0]]),
                          "max": torch.tensor([2.0, 6.0]), "nnz": torch.tensor([2.0, 2.0])}}
    activity = {(m, i): {"max": 1.0, "hist": [0, 1], "samples": [[], []]} for m in ("base", "lua") for i in (0, 1)}
    cls = {"base->lua": {"parent_best": np.array([1, -1]), "child_best": np.array([0, 0])}}
    out = analyze.browse_features(cfg, study, cls, stats, activity, seqs, "cpu")
    f0 = out["base"]["f"][0]
    assert f0[2] == [[0, 0, "09iz", ["i0z0"]]] and f0[6] == [[0, 1, 6.0]]
    assert out["base"]["f"][1][6] == [None] and out["base"]["edges"] == ["base->lua"]
    lua1, lua0 = out["lua"]["f"][1], out["lua"]["f"][0]
    assert lua1[2] == [[0, 0, "i0z0", ["09iz"]]] and lua1[6] == [[0, 0, 4.0]]
    assert lua0[2] == [[1, 0, "zi00", ["0000"]]]   # base's f0 is silent on sequence 1


def test_every_live_feature_gets_its_activity_for_the_browser_one_firing_once_included():
    """collect_pages with no page features: the activity of every live feature (nnz > 0), so a feature firing on a
    single token has its histogram and samples too; a dead one has none."""
    x0, x1 = [0] * 7 + [4], [0, 1, 2, 2, 2, 0, 2, 2]
    study, cfg, seqs = table_study({"base": list(zip(x0, x1)), "lua": [[0, 0]] * 8},
                                   {m: helpers.hand_sae([[1, 0], [0, 1]], [0, 0]) for m in ("base", "lua")})
    cfg.update(n_intervals=2, n_per_interval=1, hist_bins=2)
    stats = {("base", 0): {"nnz": torch.tensor([1.0, 5.0]), "max": torch.tensor([4.0, 2.0])},
             ("lua", 0): {"nnz": torch.tensor([0.0, 0.0]), "max": torch.tensor([0.0, 0.0])}}
    _, activity, _, _ = analyze.collect_pages(cfg, study, stats, seqs, set(), "cpu")
    assert set(activity) == {("base", 0), ("base", 1)}
    assert activity[("base", 0)]["hist"] == [0, 1] and activity[("base", 0)]["samples"] == [[], [(1, 3)]]


def test_the_lineage_fix_remakes_a_stale_merge_with_the_settings_that_made_it():
    # luastories merged at t 0.3 (reproduce.sh passes merge.py its EXTRA settings) from a tinystories re-made
    # since: the fix names the merge's own settings (its checkpoint's record); 'python merge.py --overwrite' would
    # merge at the default t 0.58, another model than the study's
    rec = {"a": "lua", "b": "tinystories", "t": 0.3, "mode": "slerp", "parent": None, "dot_threshold": 0.9995}
    info = {"base": {"ckpt": {"domain": "base", "parents": []}, "model_hash": "b"},
            "lua": {"ckpt": {"domain": "lua", "parents": [{"name": "base", "hash": "b"}]}, "model_hash": "l"},
            "tinystories": {"ckpt": {"domain": "tinystories", "parents": [{"name": "base", "hash": "b"}]},
                            "model_hash": "t-now"},
            "luastories": {"ckpt": {"domain": None, "merge": rec, "parents": [{"name": "lua", "hash": "l"},
                                                                              {"name": "tinystories", "hash": "t-then"}]},
                           "model_hash": "m"}}
    edges = [(f"{p}->{c}", p, c) for p, c in analyze.EDGES]
    with pytest.raises(SystemExit, match=r"'luastories' was not made from the current 'tinystories' .*; re-make it: "
                                         r"python merge\.py --out luastories --a lua --b tinystories --t 0\.3 --mode "
                                         r"slerp --dot_threshold 0\.9995 --overwrite$"):
        analyze.check_lineage(info, edges, "out")
    info["tinystories"]["model_hash"] = "t-then"
    info["base"]["model_hash"] = "b-now"                                   # a fine-tune: train.py's, as before
    with pytest.raises(SystemExit, match=r"'lua' was not made .*; re-make it: python train\.py --domain lua "
                                         r"--overwrite$"):
        analyze.check_lineage(info, edges, "out")
