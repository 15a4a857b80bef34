"""merge.py: SLERP with mergekit's semantics (known answers, endpoints, symmetry, the linear
fallback, dtypes), per-parameter t, task-vector mode, the merged checkpoint, the sweep, and the
one-line errors for every bad input."""
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch

import data as datalib
import fast
import merge
from common import atomic_torch_save, sha256_file, stamp
from model import ModelArgs, Transformer, eval_loss, load_model, save_checkpoint

V = 64
ARGS = ModelArgs(vocab_size=V, block_size=16, d_model=16, n_head=2, n_kv_head=1, d_mlp=32)
EVAL = ["--eval_batches=2", "--batch_size=4"]


def val_loss(net, tokens):
    """merge.py's evaluation (EVAL: 2 batches of 4 consecutive windows, the LM head in fast.head_rows blocks)."""
    T = net.args.block_size
    return eval_loss(net, datalib.sample_windows(tokens, 8, T + 1, "consecutive"), 4, rows=fast.head_rows(net, 4 * T))


def bits(x):
    """The raw bits of a tensor, so comparisons see signed zeros and NaN payloads."""
    return x.contiguous().view({torch.float32: torch.int32, torch.bfloat16: torch.int16,
                                torch.float16: torch.int16}[x.dtype])


# -----------------------------------------------------------------------------
# slerp on tensors

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("colinear", [False, True])
def test_endpoints_return_the_inputs_bitwise(dtype, colinear):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=g)
    b = a + 1e-4 * torch.randn(7, 5, generator=g) if colinear else torch.randn(7, 5, generator=g)
    # signed zeros must survive too, each where the other input is positive: the path's 1*(-0.0) + 0*(+x)
    # gives +0.0 (with -0.0 in both, 0*(-0.0) is -0.0 and the sum keeps the sign: the check could not fail)
    a[0, 0], b[0, 0] = -0.0, 1e-4
    a[0, 1], b[0, 1] = 1e-4, -0.0
    a, b = a.to(dtype), b.to(dtype)
    r0, info = merge.slerp(a, b, 0.0)
    r1, _ = merge.slerp(a, b, 1.0)
    assert info["linear"] == colinear
    assert r0.dtype == dtype and torch.equal(bits(r0), bits(a))
    assert r1.dtype == dtype and torch.equal(bits(r1), bits(b))


def test_slerp_of_a_tensor_with_itself_is_itself():
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    for t in (0.1, 0.58, 0.9):
        r, info = merge.slerp(x, x, t)
        assert info["linear"] and info["angle_deg"] < 0.1
        torch.testing.assert_close(r, x, rtol=1e-6, atol=1e-7)


def test_slerp_is_symmetric_in_a_b_and_t():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(300, generator=g), torch.randn(300, generator=g)
    for t in (0.2, 0.58, 0.75):
        r1, i1 = merge.slerp(a, b, t)
        r2, i2 = merge.slerp(b, a, 1 - t)
        assert not i1["linear"] and i1["angle_deg"] == pytest.approx(i2["angle_deg"])
        torch.testing.assert_close(r1, r2, rtol=1e-5, atol=1e-6)


def test_orthogonal_unit_vectors_stay_on_the_sphere_at_the_expected_angle():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(50, generator=g)
    a /= a.norm()
    b = torch.randn(50, generator=g)
    b -= (b @ a) * a
    b /= b.norm()
    for t in (0.1, 0.5, 0.58, 0.9):
        r, info = merge.slerp(a, b, t)
        assert info["angle_deg"] == pytest.approx(90.0, abs=1e-4)
        assert r.norm().item() == pytest.approx(1.0, abs=1e-5)
        assert math.acos(min(1.0, (r @ a).item())) == pytest.approx(t * math.pi / 2, abs=1e-4)


def test_known_answers_on_2d_vectors():
    r, info = merge.slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5)
    torch.testing.assert_close(r, torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert not info["linear"] and info["angle_deg"] == pytest.approx(90.0)
    # the raw tensors are interpolated, not the normalised copies: norms 2 and 4 at 90 degrees
    r, _ = merge.slerp(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0]), 0.5)
    torch.testing.assert_close(r, torch.tensor([2.0, 4.0]) / math.sqrt(2))
    # 60 degrees apart, t = 0.5 -> the unit vector at 30 degrees
    r, _ = merge.slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2]), 0.5)
    torch.testing.assert_close(r, torch.tensor([math.sqrt(3) / 2, 0.5]))
    # 120 degrees apart (cos -1/2), t = 0.5 -> the unit vector at 60 degrees
    r, info = merge.slerp(torch.tensor([1.0, 0.0]), torch.tensor([-0.5, math.sqrt(3) / 2]), 0.5)
    torch.testing.assert_close(r, torch.tensor([0.5, math.sqrt(3) / 2]))
    assert info["angle_deg"] == pytest.approx(120.0) and info["cos"] == pytest.approx(-0.5)


def test_nearly_colinear_inputs_take_the_flagged_linear_path():
    a = torch.tensor([1.0, 0.0])
    for deg, linear in ((1.0, True), (2.5, False)):  # cos(1 deg) = 0.99985 > 0.9995 > cos(2.5 deg) = 0.99905
        b = 3.0 * torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg))])
        r, info = merge.slerp(a, b, 0.3)
        assert info["linear"] is linear and info["angle_deg"] == pytest.approx(deg, abs=1e-3)
        if linear:
            torch.testing.assert_close(r, 0.7 * a + 0.3 * b)
        else:  # slerp of the raw vectors differs from the linear blend
            assert (r - (0.7 * a + 0.3 * b)).abs().max() > 1e-4
    # anti-colinear also falls back (mergekit compares |cos|)
    assert merge.slerp(a, -2 * a, 0.5)[1]["linear"]


def test_dot_threshold_1_slerps_all_but_cos_1_which_takes_the_limit_the_lerp():
    # --dot_threshold 1 passes CHECKS ([0, 1]): no |cos| is above it, so every tensor slerps; one whose cos
    # is exactly 1 (equal inputs, or a few ulps apart) has slerp weights sin(0)/sin(0), 0/0, whose limit at
    # theta -> 0 is the lerp (was: ZeroDivisionError, a traceback from python merge.py --dot_threshold 1)
    x = torch.tensor([3.0, 4.0])                                                 # |x|^2 = 25 exactly
    for y in (x.clone(), 2.0 * x):
        r, info = merge.slerp(x, y, 0.3, dot_threshold=1.0)
        assert info["cos"] == 1.0 and info["linear"]
        torch.testing.assert_close(r, 0.7 * x + 0.3 * y)
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(5))  # cos 1 or a hair below: lerp either way
    torch.testing.assert_close(merge.slerp(x, x.clone(), 0.3, dot_threshold=1.0)[0], x)
    # 1 degree: the default lerps it (the test above), dot_threshold 1 slerps it
    a, b = torch.tensor([1.0, 0.0]), 3.0 * torch.tensor([math.cos(math.radians(1)), math.sin(math.radians(1))])
    r, info = merge.slerp(a, b, 0.3, dot_threshold=1.0)
    assert not info["linear"] and (r - (0.7 * a + 0.3 * b)).abs().max() > 1e-5


def test_dtype_is_kept():
    g = torch.Generator().manual_seed(4)
    for dt in (torch.bfloat16, torch.float16):
        a, b = torch.randn(8, 8, generator=g).to(dt), torch.randn(8, 8, generator=g).to(dt)
        r, _ = merge.slerp(a, b, 0.58)
        ref, _ = merge.slerp(a.float(), b.float(), 0.58)  # computed in float32, rounded once
        assert r.dtype == dt and torch.equal(r, ref.to(dt))


# -----------------------------------------------------------------------------
# state dicts, t rules, task vectors

def state(seed, args=ARGS):
    torch.manual_seed(seed)
    return Transformer(args).state_dict()


def finetune(sd, seed, scale):
    """A stand-in fine-tune: every tensor moved by independent Gaussian noise of std `scale`."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sd.items()}


def test_t_rules_first_match_wins_and_fall_back_to_t():
    sd_a, sd_b = state(0), state(1)
    out, info = merge.merge_state_dicts(sd_a, sd_b, 0.5, "attn.w[qk]*=0.0,attn=0.25,mlp=1")
    assert info["attn.wq.weight"]["t"] == 0.0 and info["attn.wq.weight"]["rule"] == "attn.w[qk]*"
    assert info["attn.wv.weight"]["t"] == 0.25 and info["attn_norm.weight"]["t"] == 0.25  # substring
    assert info["mlp.up.weight"]["t"] == 1.0 and info["mlp_norm.weight"]["t"] == 1.0
    assert info["lm_head.weight"]["t"] == 0.5 and info["lm_head.weight"]["rule"] is None
    assert torch.equal(out["attn.wq.weight"], sd_a["attn.wq.weight"])
    assert torch.equal(out["mlp.down.weight"], sd_b["mlp.down.weight"])
    ref, _ = merge.slerp(sd_a["lm_head.weight"], sd_b["lm_head.weight"], 0.5)
    assert torch.equal(out["lm_head.weight"], ref)
    # a pattern with [ only is a glob too (whole name): w[qk] picks wq and wk, not wv
    _, info = merge.merge_state_dicts(sd_a, sd_b, 0.5, "attn.w[qk].weight=0.25")
    assert [info[f"attn.w{c}.weight"]["t"] for c in "qkv"] == [0.25, 0.25, 0.5]


def test_integer_tensors_are_kept_as_they_are_and_must_agree():
    """A non-float tensor (a step counter, 2^24 + 1: float32 cannot hold it) is copied from a, never interpolated
    (float32 would round it to 2^24), its info without a path; one that differs between a and b is refused."""
    w = torch.tensor([1.0, 2.0])
    n = torch.tensor([2 ** 24 + 1, 7])
    out, info = merge.merge_state_dicts({"w": w, "n": n}, {"w": 2 * w, "n": n.clone()}, 0.58)
    assert out["n"].dtype == torch.int64 and out["n"].tolist() == [2 ** 24 + 1, 7]
    assert info["n"] == {"t": 0.58, "rule": None, "linear": None}
    with pytest.raises(SystemExit, match="differ in the non-float tensor n"):
        merge.merge_state_dicts({"w": w, "n": n}, {"w": 2 * w, "n": n + 1}, 0.58)


def test_task_mode_interpolates_the_deltas_from_the_parent():
    p = state(0)
    sd_a, sd_b = finetune(p, 1, 3e-4), finetune(p, 2, 3e-4)  # small moves, as a fine-tune makes
    plain, info_plain = merge.merge_state_dicts(sd_a, sd_b, 0.4)
    task, info_task = merge.merge_state_dicts(sd_a, sd_b, 0.4, parent=p)
    k = "mlp.up.weight"
    # fine-tunes of one parent are nearly colinear (plain lerps), their deltas are not (task slerps)
    assert info_plain[k]["linear"] and not info_task[k]["linear"]
    ref, _ = merge.slerp(sd_a[k] - p[k], sd_b[k] - p[k], 0.4)
    torch.testing.assert_close(task[k], p[k] + ref)
    assert not torch.allclose(task[k], plain[k], atol=1e-5)
    e0, _ = merge.merge_state_dicts(sd_a, sd_b, 0.0, parent=p)
    assert all(torch.equal(e0[n], sd_a[n]) for n in p)
    e1, _ = merge.merge_state_dicts(sd_a, sd_b, 1.0, parent=p)
    assert all(torch.equal(e1[n], sd_b[n]) for n in p)
    # t = 1 is b bit for bit even where parent + (b - parent) is not: b = 1e-10 next to a parent weight 1.0
    # (1e-10 - 1 rounds to -1 in float32, and 1 + -1 = 0)
    one = {"w": torch.tensor([1.0, 3.0])}
    e1, _ = merge.merge_state_dicts({"w": torch.tensor([0.5, 2.0])}, {"w": torch.tensor([1e-10, 3.5])}, 1.0, parent=one)
    assert torch.equal(e1["w"], torch.tensor([1e-10, 3.5]))


# -----------------------------------------------------------------------------
# checkpoints, the command line, the sweep

def write_ckpt(out_dir, name, sd, args=ARGS, parents=(), tok="tok-A", domain=None, finished=True):
    path = save_checkpoint(os.path.join(out_dir, name, "ckpt.pt"), sd, args, finished=finished, name=name,
                           domain=domain or name, iter_num=1, tokenizer_hash=tok, parents=list(parents))
    return {"name": name, "hash": sha256_file(path)}


def write_val(data_dir, domain, seed, n=600):
    d = os.path.join(data_dir, domain)
    os.makedirs(d, exist_ok=True)
    toks = np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)
    toks.tofile(os.path.join(d, "val.bin"))
    toks.tofile(os.path.join(d, "train.bin"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"domain": domain, "source": "test", "vocab_size": V, "dtype": "uint16", "tokenizer_hash": "tok-A",
                   "splits": {"train": {"tokens": n}, "val": {"tokens": n}}}, f)
    return toks


@pytest.fixture
def world(tmp_path):
    """base, and lua / tinystories "fine-tuned" from it (random deltas), with val tokens."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    p = state(0)
    base = write_ckpt(out, "base", p)
    write_ckpt(out, "lua", finetune(p, 1, 0.01), parents=[base])  # matrices slerp, norm gains lerp
    write_ckpt(out, "tinystories", finetune(p, 2, 0.01), parents=[base])
    toks = {d: write_val(data, d, i) for i, d in enumerate(("lua", "tinystories"))}
    return data, out, toks


def run(world, *args):
    data, out, _ = world
    return merge.main([f"--data_dir={data}", f"--out_dir={out}", "--device=cpu", "--preset=tiny", *EVAL, *args])


def test_default_merge_writes_a_loadable_checkpoint_with_provenance(world):
    data, out, toks = world
    run(world)
    net, ck = load_model(out, "luastories")
    logits, _ = net(torch.zeros(1, 5, dtype=torch.long))
    assert logits.shape == (1, 5, V) and torch.isfinite(logits).all()
    assert "optimizer" not in ck and ck["name"] == "luastories" and ck["domain"] is None
    assert ck["finished"] is True                                  # a merge is complete when written
    assert ck["parents"] == [{"name": n, "hash": sha256_file(os.path.join(out, n, "ckpt.pt"))} for n in ("lua", "tinystories")]
    m = ck["merge"]
    assert (m["a"], m["b"], m["t"], m["mode"], m["parent"]) == ("lua", "tinystories", 0.58, "slerp", None)
    assert set(m["angles"]) == set(ck["model"]) and m["fell_back_linear"] == sum(
        a < math.degrees(math.acos(0.9995)) for a in m["angles"].values())
    for d in ("lua", "tinystories"):
        assert ck["val_loss"][d] == pytest.approx(val_loss(net, toks[d]))
    js = json.load(open(os.path.join(out, "luastories", "merge.json")))
    assert js["checkpoint"]["hash"] == sha256_file(os.path.join(out, "luastories", "ckpt.pt"))
    assert set(js["tensors"]) == set(ck["model"]) and js["provenance"]["config"]["t"] == 0.58
    # (the report's table of final losses reads a merge's from merge.json)
    assert js["val_loss"] == ck["val_loss"] and set(js["val_loss"]) == {"lua", "tinystories"}


def test_task_mode_merge_from_the_command_line(world, capsys):
    data, out, _ = world
    run(world, "--mode=task", "--out=ls_task", "--t=0.3", "--eval_batches=0")
    ck = torch.load(os.path.join(out, "ls_task", "ckpt.pt"), weights_only=False)
    assert ck["merge"]["mode"] == "task" and ck["merge"]["fell_back_linear"] == 0
    assert ck["merge"]["parent"]["hash"] == sha256_file(os.path.join(out, "base", "ckpt.pt"))
    p, a, b = (torch.load(os.path.join(out, n, "ckpt.pt"), weights_only=False)["model"] for n in ("base", "lua", "tinystories"))
    k = "attn.wo.weight"
    torch.testing.assert_close(ck["model"][k], p[k] + merge.slerp(a[k] - p[k], b[k] - p[k], 0.3)[0])
    # with --t_rules (tuples in memory, lists in merge.json): a rerun finds it made from these settings
    rules = ["--mode=task", "--out=ls_rules", "--t=0.3", "--t_rules=mlp*=0.6", "--eval_batches=0"]
    run(world, *rules)
    capsys.readouterr()
    run(world, *rules)
    assert "nothing to do" in capsys.readouterr().out


def test_a_damaged_sweeps_fix_remakes_that_sweep(world):
    # its fix names the sweep's own grid and inputs: 'python merge.py --sweep' would sweep lua x tinystories
    # over the default grid, another sweep than the one lost
    out = world[1]
    run(world, "--sweep", "--grid=0,1", "--a=tinystories", "--b=lua")
    path = os.path.join(out, "merge_sweep.json")
    open(path, "r+").truncate(100)
    with pytest.raises(SystemExit, match=r"python merge\.py --sweep --grid 0\.0,1\.0 --a tinystories --b lua "
                                         r"--mode slerp --dot_threshold 0\.9995 --overwrite"):
        run(world, "--sweep", "--grid=0,1", "--a=tinystories", "--b=lua")


def test_sweep_writes_eleven_points_with_the_parents_losses_at_the_ends(world, capsys):
    data, out, toks = world
    run(world, "--sweep")
    js = json.load(open(os.path.join(out, "merge_sweep.json")))
    assert len(js["t"]) == 11 and js["t"][0] == 0.0 and js["t"][-1] == 1.0
    assert js["a"]["hash"] == sha256_file(os.path.join(out, "lua", "ckpt.pt"))
    for name, i in (("lua", 0), ("tinystories", -1)):  # t=0 is model a, t=1 model b, exactly
        net, _ = load_model(out, name)
        for d in ("lua", "tinystories"):
            assert js["loss"][d][i] == val_loss(net, toks[d])
    la, lb = js["loss"]["lua"], js["loss"]["tinystories"]
    assert js["crossing_t"] == merge.crossing(js["t"], la, lb)
    assert js["paper"]["t"][0] == 0.0 and js["paper"]["lua"][0] == 2.45  # paper's t=1 (lua) is our t=0
    assert "paper" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out, "luastories"))  # the sweep writes no checkpoint


def test_crossing_and_paper_conversion_known_answers():
    assert merge.crossing([0, 0.5, 1], [1.0, 2.0, 3.0], [3.0, 2.5, 1.0]) == pytest.approx(0.5 + 0.5 * 0.5 / 2.5)
    assert merge.crossing([0, 0.5, 1], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == 0.5
    assert merge.crossing([0, 1], [1.0, 1.5], [2.0, 3.0]) is None
    p = merge.paper_sweep_in_our_t("lua", "tinystories")  # a = lua: our t = 1 - paper t
    assert p["t"] == [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    assert p["lua"] == [2.45, 2.60, 3.02, 3.36, 3.76, 4.73, 5.84] and p["tinystories"][0] == 4.22
    assert merge.paper_sweep_in_our_t("tinystories", "lua")["lua"][0] == 5.84
    assert merge.paper_sweep_in_our_t("lua", "python") is None


# -----------------------------------------------------------------------------
# bad input: one line, nothing written

def corrupt(out, name, fn):
    """A checkpoint written whole (its checksum matches) but changed as fn says: what a checksum cannot catch."""
    path = os.path.join(out, name, "ckpt.pt")
    ck = torch.load(path, weights_only=True)
    fn(ck)
    atomic_torch_save(stamp(ck, "model"), path)


def set_(ck, key, value):
    ck[key] = value


@pytest.mark.parametrize("change, message", [
    (lambda ck: ck["model_args"].update(d_mlp=48), "different architectures"),
    (lambda ck: set_(ck, "tokenizer_hash", "tok-B"), "different tokenizers"),
    (lambda ck: ck["model"].update({"extra.weight": torch.zeros(2)}), "different parameter names"),
    (lambda ck: ck["model"].update({"norm_f.weight": torch.ones(17)}), "shape of norm_f.weight"),
    (lambda ck: ck["model"]["mlp.up.weight"].__setitem__((0, 0), float("nan")), "NaN or inf in mlp.up.weight"),
    (lambda ck: ck["model"]["tok_emb.weight"].__setitem__((1, 1), float("inf")), "NaN or inf in tok_emb.weight"),
])
def test_incompatible_or_broken_inputs_are_refused(world, change, message):
    out = world[1]
    corrupt(out, "tinystories", change)
    with pytest.raises(SystemExit, match=message):
        run(world)
    assert not os.path.exists(os.path.join(out, "luastories"))


@pytest.mark.parametrize("args, message", [
    (["--t=1.5"], r"--t must be in \[0, 1\], got 1.5"),
    (["--t=-0.1"], r"--t must be in \[0, 1\]"),
    (["--t=nan"], "--t must be a finite number"),
    (["--t_rules=attn=2"], r"--t_rules attn = 2.0 is outside \[0, 1\]"),
    (["--t_rules=attn"], "is not PATTERN=T"),
    (["--t_rules=atn=0.3"], "matches no parameter"),
    (["--grid=0,1.2"], r"--grid must be in \[0, 1\], got 1.2"),
    (["--mode=ties"], "--mode must be one of slerp, task; got 'ties'"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
    (["--out=lua"], "would overwrite an input"),
    (["--b=lua"], "both 'lua'"),
    (["--a=python"], r"no 'python' model checkpoint .*python train\.py --domain DOMAIN --name python$"),  # a variant
])
def test_bad_arguments_are_refused(world, args, message):
    with pytest.raises(SystemExit, match=message):
        run(world, *args)
    assert not os.path.exists(os.path.join(world[1], "luastories"))


def test_missing_checkpoint_names_the_command(world):
    out = world[1]
    os.remove(os.path.join(out, "lua", "ckpt.pt"))
    with pytest.raises(SystemExit, match="make it with: python train.py --domain lua"):
        run(world)


def test_task_mode_refuses_a_parent_that_is_not_the_common_parent(world):
    out = world[1]
    write_ckpt(out, "other", state(9))
    with pytest.raises(SystemExit, match="--parent other .* is not a parent of lua"):
        run(world, "--mode=task", "--parent=other")
    assert not os.path.exists(os.path.join(out, "luastories"))



def test_rerun_is_a_noop_and_other_inputs_need_overwrite(world, capsys):
    data, out, _ = world
    run(world)
    path = os.path.join(out, "luastories", "ckpt.pt")
    before = sha256_file(path)
    run(world)                                                     # same inputs and t: nothing to do
    assert "nothing to do" in capsys.readouterr().out and sha256_file(path) == before
    record = os.path.join(out, "luastories", "merge.json")
    made_from = json.load(open(record))["made_from"]
    open(record, "w").write("{}")                                  # damaged: rewritten from the checkpoint, kept
    run(world)
    assert "rewritten from" in capsys.readouterr().out and sha256_file(path) == before
    assert json.load(open(record))["made_from"] == made_from
    run(world)
    assert "nothing to do" in capsys.readouterr().out
    os.remove(record)                                              # missing: rewritten from the checkpoint too
    run(world)
    assert "rewritten from" in capsys.readouterr().out and sha256_file(path) == before
    assert json.load(open(record))["made_from"] == made_from
    for text, why in (("[1, 2]", r"merge\.json is a list, not a merge record"),
                      ('{"made_from": ', r"merge\.json is not readable JSON")):
        open(record, "w").write(text)               # damaged, and the checkpoint was made with another t: one line
        with pytest.raises(SystemExit, match=why + r".*--overwrite"):
            run(world, "--t=0.3")
    run(world)                                                     # rewritten again for the default t
    capsys.readouterr()
    for field, value in (("made_from", {}), ("checkpoint", "x"), ("checkpoint", {"hash": 5})):
        rec = json.load(open(record))                  # edited: the checkpoint says it was made so, and stays
        rec[field] = value
        json.dump(rec, open(record, "w"))
        run(world)
        assert "rewritten from" in capsys.readouterr().out and sha256_file(path) == before
        assert json.load(open(record))["made_from"] == made_from
    os.remove(record)                  # missing, and the checkpoint was made with another t: kept, one line
    with pytest.raises(SystemExit, match=r"luastories/ckpt\.pt exists but was made from other inputs .*--overwrite"):
        run(world, "--t=0.3")
    assert sha256_file(path) == before
    run(world)
    with pytest.raises(SystemExit, match="made from other inputs or settings; add --overwrite"):
        run(world, "--t=0.3")
    at_half = path + ".t05"
    shutil.copy(path, at_half)
    run(world, "--t=0.3", "--overwrite")
    assert torch.load(path, weights_only=False)["merge"]["t"] == 0.3
    os.replace(at_half, path)                          # another merge in its place: merge.json's record says so
    with pytest.raises(SystemExit, match=r"luastories/ckpt\.pt is not the merge .*merge\.json records .*--overwrite"):
        run(world, "--t=0.3")
    os.remove(path)
    os.mkdir(path)                                                 # a folder in its place: one line too
    with pytest.raises(SystemExit, match=r"luastories/ckpt\.pt is not the merge .*merge\.json records .*--overwrite"):
        run(world, "--t=0.3")
    os.rmdir(path)                                                 # a deleted checkpoint is made again
    run(world, "--t=0.3")
    assert torch.load(path, weights_only=False)["merge"]["t"] == 0.3
    write_val(data, "lua", 0)                                      # data of another tokenizer
    meta = json.load(open(os.path.join(data, "lua", "meta.json")))
    meta["tokenizer_hash"] = "tok-B"
    json.dump(meta, open(os.path.join(data, "lua", "meta.json"), "w"))
    with pytest.raises(SystemExit, match="was prepared with tokenizer tok-B but model 'lua' uses tok-A"):
        run(world, "--out=other")


def test_merge_json_rebuilt_from_the_checkpoint_is_the_one_the_merge_wrote(world, capsys):
    """Lost after the checkpoint was written (a kill between the two files), or damaged, merge.json is rewritten
    from the checkpoint's record: byte for byte the merge's, its per-tensor cos, angle and path included."""
    out = world[1]
    args = ("--mode=task", "--out=ls_task", "--t=0.3", "--t_rules=mlp*=0.6")
    run(world, *args)
    record = os.path.join(out, "ls_task", "merge.json")
    written = open(record).read()
    tensors = json.loads(written)["tensors"]
    assert tensors["mlp.up.weight"]["t"] == 0.6 and tensors["attn.wo.weight"]["linear"] is False
    for damage in (lambda: os.remove(record), lambda: open(record, "w").write(written[:100])):
        damage()
        run(world, *args)
        assert "rewritten from" in capsys.readouterr().out
        assert open(record).read() == written
    ck = torch.load(os.path.join(out, "ls_task", "ckpt.pt"), weights_only=True)
    del ck["merge"]["tensors"]                          # a merge of an older merge.py kept no per-tensor record
    atomic_torch_save(stamp(ck, "model"), os.path.join(out, "ls_task", "ckpt.pt"))
    os.remove(record)
    run(world, *args)
    rebuilt = json.load(open(record))
    assert rebuilt["tensors"] == {} and rebuilt["made_from"] == json.loads(written)["made_from"]


def test_a_variant_merges_fix_command_remakes_that_merge(world):
    """A damaged variant merge's fix, wherever it is printed (merge.py run again for it or given it as an input,
    model.load_model as sae.py and analyze.py load it, train.py fine-tuning from it), names every setting that
    made it, from its merge.json or its checkpoint: run as printed, it remakes the same merge, bit for bit
    (--out alone merged lua and tinystories at t 0.58). With neither kept, the settings to give are named."""
    import re
    import shlex

    import train
    data, out, _ = world
    made = ("--out=ls_var", "--a=tinystories", "--b=lua", "--t=0.3", "--mode=task", "--t_rules=mlp*=0.6",
            "--dot_threshold=0.99")
    run(world, *made)
    path, record = os.path.join(out, "ls_var", "ckpt.pt"), os.path.join(out, "ls_var", "merge.json")
    good = torch.load(path, weights_only=True)
    fine_tune = ["--preset=tiny", f"--data_dir={data}", f"--out_dir={out}", "--domain=lua", "--name=ft",
                 "--parent=ls_var", "--device=cpu"]
    fixes = []

    def fix(call):
        with pytest.raises(SystemExit) as e:
            call()
        fixes.append(re.search(r"(python merge\.py .*) --overwrite$", str(e.value)).group(1))
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[:len(whole) // 2])          # unloadable: the settings from merge.json
    fix(lambda: run(world, *made))
    fix(lambda: run(world, "--a=ls_var", "--b=lua", "--out=x", "--allow_unrelated"))
    fix(lambda: load_model(out, "ls_var"))
    fix(lambda: train.main(fine_tune))
    os.remove(record)                                  # whole, but its weights do not fit its args: from the checkpoint
    atomic_torch_save(stamp({**good, "model_args": {**good["model_args"], "d_mlp": 48}}, "model"), path)
    fix(lambda: load_model(out, "ls_var"))
    fix(lambda: train.main(fine_tune))
    assert set(fixes) == {"python merge.py --out ls_var --a tinystories --b lua --t 0.3 --mode task --parent base "
                          "--t_rules 'mlp*=0.6' --dot_threshold 0.99"}
    run(world, *shlex.split(fixes[0])[2:], "--overwrite")                   # run as printed
    again = torch.load(path, weights_only=True)
    assert again["merge"] == good["merge"] and again["val_loss"] == good["val_loss"]
    assert all(torch.equal(again["model"][k], w) for k, w in good["model"].items())
    os.remove(path)                                    # the checkpoint gone, merge.json kept: that merge alone
    with pytest.raises(SystemExit, match=r"make it with: python merge\.py --out ls_var --a tinystories --b lua "
                                         r"--t 0\.3 --mode task --parent base --t_rules 'mlp\*=0\.6' "
                                         r"--dot_threshold 0\.99$"):
        load_model(out, "ls_var")
    shutil.rmtree(os.path.join(out, "ls_var"))
    with pytest.raises(SystemExit, match=r"make it with: python train\.py --domain DOMAIN --name ls_var \(or python "
                                         r"merge\.py --out ls_var --a A --b B --t T --mode MODE\)$"):
        load_model(out, "ls_var")


def test_the_fix_for_a_damaged_luastories_keeps_the_settings_its_whole_merge_json_records(world):
    """luastories made with settings (reproduce.sh may pass them): the fix for its damaged checkpoint remakes that
    merge, not the defaults' (python merge.py would merge at t 0.58); a merge.json edited since it was written
    (its checksum no longer holds) is no record of them: the study's plain command."""
    out = world[1]
    run(world, "--t=0.3", "--eval_batches=0")
    path = os.path.join(out, "luastories", "ckpt.pt")
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(SystemExit, match=r"remake it: python merge\.py --out luastories --a lua --b tinystories "
                                         r"--t 0\.3 --mode slerp --dot_threshold 0\.9995 --overwrite$"):
        load_model(out, "luastories")
    record = os.path.join(out, "luastories", "merge.json")
    js = json.load(open(record))
    js["t"] = 0.7                                                   # edited by hand, not re-stamped
    json.dump(js, open(record, "w"))
    with pytest.raises(SystemExit, match=r"remake it: python merge\.py --overwrite$"):
        load_model(out, "luastories")


def test_merge_command_known_answers_parse_to_the_recorded_settings():
    import shlex

    from common import parse_config
    from model import merge_command
    rec = {"a": "lua", "b": "tinystories", "t": 0.58, "t_rules": [["attn.w[qk]*", 0.25], ["mlp", 1.0]],
           "mode": "slerp", "parent": None, "dot_threshold": 0.9995, "fell_back_linear": 3}
    cmd = merge_command("m", rec)
    assert cmd == ("python merge.py --out m --a lua --b tinystories --t 0.58 --mode slerp "
                   "--t_rules 'attn.w[qk]*=0.25,mlp=1.0' --dot_threshold 0.9995")     # (no --parent: slerp has none)
    cfg = parse_config(dict(merge.config), shlex.split(cmd)[2:], merge.PRESETS, "tiny", checks=merge.CHECKS)
    assert {k: cfg[k] for k in ("out", "a", "b", "t", "mode", "dot_threshold")} == {"out": "m", **{
        k: rec[k] for k in ("a", "b", "t", "mode", "dot_threshold")}}
    assert merge.parse_t_rules(cfg["t_rules"]) == [tuple(r) for r in rec["t_rules"]]
    task = {**rec, "t_rules": [], "mode": "task", "parent": {"name": "base2", "hash": "h"}}
    assert merge_command("m", task).endswith("--t 0.58 --mode task --parent base2 --dot_threshold 0.9995")
    assert merge_command("luastories", {}) == "python merge.py"          # none recorded: the study's own
    sweep = merge_command("m", {**task, "t_rules": [["mlp", 1.0]]}, grid=[0.0, 0.25, 1.0])  # a sweep's: no --out, --t
    assert sweep == ("python merge.py --sweep --grid 0.0,0.25,1.0 --a lua --b tinystories --mode task --parent base2 "
                     "--t_rules mlp=1.0 --dot_threshold 0.9995")
    cfg = parse_config(dict(merge.config), shlex.split(sweep)[2:], merge.PRESETS, "tiny", checks=merge.CHECKS)
    assert (cfg["sweep"], cfg["grid"], cfg["parent"], cfg["t_rules"]) == (True, [0.0, 0.25, 1.0], "base2", "mlp=1.0")
    assert merge_command("m", {"a": "lua"}) == "python merge.py --out m --a A --b B --t T --mode MODE"


def test_unfinished_input_is_refused_unless_allowed(world, capsys):
    # issue 12.5: a fine-tune stopped early (or killed) is not silently merged
    out = world[1]
    base = {"name": "base", "hash": sha256_file(os.path.join(out, "base", "ckpt.pt"))}
    write_ckpt(out, "lua", finetune(state(0), 1, 0.01), parents=[base], finished=False)
    with pytest.raises(SystemExit, match=r"lua/ckpt.pt is unfinished .*--resume, or pass --allow_unfinished"):
        run(world)
    assert not os.path.exists(os.path.join(out, "luastories"))
    run(world, "--allow_unfinished")
    assert re.search(r"^  lua +stored val_loss none$", capsys.readouterr().out, re.M)  # (stopped before evaluating)
    assert torch.load(os.path.join(out, "luastories", "ckpt.pt"), weights_only=False)["finished"]


def test_models_without_a_common_parent_are_refused_unless_allowed(world, capsys):
    # issue 12.7: two models trained apart have unaligned weights; their merge means nothing
    out = world[1]
    write_ckpt(out, "other", state(7), domain="tinystories")                 # trained from scratch, no parent
    with pytest.raises(SystemExit, match="lua and other share no parent.*--allow_unrelated"):
        run(world, "--b=other", "--out=x")
    assert not os.path.exists(os.path.join(out, "x", "ckpt.pt"))
    run(world, "--b=other", "--out=x", "--allow_unrelated")
    assert "warning: lua and other share no parent" in capsys.readouterr().out
    assert os.path.exists(os.path.join(out, "x", "ckpt.pt"))
    run(world, "--a=base", "--b=lua", "--out=y", "--eval_batches=0")          # a model and its own parent: related


def test_a_live_merge_into_the_same_folder_is_refused(world):
    # issue 12.4: the output folder is locked while a merge writes it
    import json as js
    import socket
    out = world[1]
    os.makedirs(os.path.join(out, "luastories"))
    with open(os.path.join(out, "luastories", ".lock"), "w") as f:  # held by a live process: this one
        js.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": "merge.py"}, f)
    with pytest.raises(SystemExit, match=r"luastories is in use by merge.py in process \d+"):
        run(world)
    assert not os.path.exists(os.path.join(out, "luastories", "ckpt.pt"))


def test_too_little_disk_space_is_refused_before_merging(world, monkeypatch):
    # issue 12.14: fail before the work, not at the first write
    import common
    monkeypatch.setattr(common, "_disk_free", lambda path: 1000)
    with pytest.raises(SystemExit, match="merge.py's output needs about .* MB .* but only 0 MB are free"):
        run(world)
    assert not os.path.exists(os.path.join(world[1], "luastories", "ckpt.pt"))


def test_cos_of_large_nearly_colinear_tensors_matches_float64():
    # issue 11: on a 32,000 x 512 pair (the paper's embedding / LM head) float32 reductions gave cos 1.0012
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32000, 512, generator=g)
    b = a + 0.01 * torch.randn(32000, 512, generator=g)       # a fine-tune: nearly colinear
    A, B = a.numpy().astype(np.float64).ravel(), b.numpy().astype(np.float64).ravel()
    na, nb = np.sqrt(A @ A), np.sqrt(B @ B)
    ref = float(A @ B / (na * nb))                            # independent float64 reference
    _, info = merge.slerp(a, b, 0.5)
    assert abs(info["cos"] - ref) < 1e-9
    assert info["norm_a"] == pytest.approx(na, rel=1e-12) and info["norm_b"] == pytest.approx(nb, rel=1e-12)
    assert info["angle_deg"] == pytest.approx(math.degrees(math.acos(ref)), abs=1e-6)
