"""train.py end to end on a tiny learnable token stream: loss falls, fine-tunes start from the
parent's exact weights, resumes continue exactly, and the user's mistakes get one-line errors."""
import json
import os

import helpers
import pytest
import torch

import train
from common import sha256_file

V = 64
MODEL = ["--block_size=16", "--d_model=32", "--n_head=4", "--n_kv_head=2", "--d_mlp=64",
         "--batch_size=8", "--log_interval=5", "--eval_iters=4", "--warmup_iters=2"]


def write_domain(data_dir, domain, seed, tok_hash="tok-A", n=6000):
    return helpers.write_domain(data_dir, domain, seed, V, tok_hash, n=n, noise=0.1)


@pytest.fixture
def dirs(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    for i, d in enumerate(("base", "lua", "tinystories")):
        write_domain(data, d, seed=i)
    return data, out


def run(dirs, *args):
    data, out = dirs
    return train.main(["--preset=tiny", f"--data_dir={data}", f"--out_dir={out}", *MODEL, *args])


def load(dirs, name):
    return torch.load(os.path.join(dirs[1], name, "ckpt.pt"), weights_only=False)


def test_pretraining_loss_falls_clearly(dirs):
    run(dirs, "--domain=base", "--max_iters=60", "--lr=3e-3", "--eval_interval=1000")
    ck = load(dirs, "base")
    assert ck["finished"] and ck["iter_num"] == 60 and ck["parents"] == []
    # uniform guessing is ln(64) = 4.16; the rule is 90% deterministic, so a model that learned it is far below
    assert ck["val_loss"]["base"] < 2.5
    m = json.load(open(os.path.join(dirs[1], "base", "metrics.json")))
    assert set(m["val_loss"]) == {"base", "lua", "tinystories"}
    assert m["checkpoint_sha256"] == sha256_file(os.path.join(dirs[1], "base", "ckpt.pt"))
    assert m["provenance"]["config"]["domain"] == "base"
    meta_hash = sha256_file(os.path.join(dirs[0], "base", "meta.json"))      # which token files made it
    assert m["provenance"]["data_meta_sha256"] == {"base": meta_hash}
    assert ck["provenance"]["data"]["meta_sha256"] == {"base": meta_hash}


def test_finetune_starts_from_parent_weights_and_learns_its_domain(dirs):
    run(dirs, "--domain=base", "--max_iters=30", "--lr=3e-3")
    base = load(dirs, "base")
    # lr 0: one step of AdamW (decay is scaled by lr) must leave every weight exactly the parent's
    run(dirs, "--domain=lua", "--name=lua0", "--max_iters=1", "--lr=0", "--warmup_iters=0")
    ft0 = load(dirs, "lua0")
    assert ft0["model"].keys() == base["model"].keys()
    assert all(torch.equal(ft0["model"][k], base["model"][k]) for k in base["model"])
    assert ft0["parents"] == [{"name": "base", "hash": sha256_file(os.path.join(dirs[1], "base", "ckpt.pt"))}]
    # a real fine-tune: lower loss on its own domain than the parent had
    run(dirs, "--domain=lua", "--max_iters=40", "--lr=3e-3")
    ft = load(dirs, "lua")
    assert ft["val_loss"]["lua"] < base["val_loss"]["lua"] - 0.3


def test_resumed_run_continues_exactly(dirs):
    run(dirs, "--domain=base", "--name=straight", "--max_iters=12", "--eval_interval=6")
    assert run(dirs, "--domain=base", "--name=split", "--max_iters=12", "--eval_interval=6", "--stop_iter=5") is None
    assert load(dirs, "split")["iter_num"] == 5 and not load(dirs, "split")["finished"]
    run(dirs, "--domain=base", "--name=split", "--max_iters=12", "--eval_interval=6", "--resume")
    a, b = load(dirs, "straight"), load(dirs, "split")
    assert b["iter_num"] == 12 and b["finished"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # a finished run is left alone by --resume
    before = sha256_file(os.path.join(dirs[1], "split", "ckpt.pt"))
    run(dirs, "--domain=base", "--name=split", "--resume")
    assert sha256_file(os.path.join(dirs[1], "split", "ckpt.pt")) == before


def test_errors_are_one_line(dirs, tmp_path):
    with pytest.raises(SystemExit, match="unknown domain 'python3'"):
        run(dirs, "--domain=python3")
    with pytest.raises(SystemExit, match=r"no parent checkpoint 'base'.*python train.py --domain base"):
        run(dirs, "--domain=lua")
    with pytest.raises(SystemExit, match="unknown option --learning_rate"):
        run(dirs, "--domain=base", "--learning_rate=1")
    with pytest.raises(SystemExit, match="takes an integer"):
        run(dirs, "--domain=base", "--max_iters=ten")
    run(dirs, "--domain=base", "--max_iters=4")
    with pytest.raises(SystemExit, match="exists; add --resume"):
        run(dirs, "--domain=base", "--max_iters=4")
    # data made with another tokenizer than the parent's
    write_domain(dirs[0], "tinystories", seed=5, tok_hash="tok-B")
    with pytest.raises(SystemExit, match="another tokenizer"):
        run(dirs, "--domain=tinystories")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dirs, monkeypatch):
    from model import Transformer
    forward, calls = Transformer.forward, {"n": 0}

    def poisoned(self, idx, targets=None, mlp_fn=None):  # the 6th training step's loss is NaN
        logits, loss = forward(self, idx, targets, mlp_fn)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 6:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(Transformer, "forward", poisoned)
    with pytest.raises(SystemExit, match="not finite; stopped before the step.*last good checkpoint"):
        run(dirs, "--domain=base", "--max_iters=10", "--eval_interval=2")
    ck = load(dirs, "base")
    assert ck["iter_num"] == 4 and not ck["finished"]                      # the checkpoint of iter 4 is kept
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_resume_refuses_other_settings(dirs):
    run(dirs, "--domain=base", "--max_iters=10", "--stop_iter=2")
    with pytest.raises(SystemExit, match=r"other settings \(lr 0.002 -> 0.1\)"):
        run(dirs, "--domain=base", "--max_iters=10", "--resume", "--lr=0.1")
    with pytest.raises(SystemExit, match=r"other settings \(domain 'base' -> 'lua'"):
        run(dirs, "--domain=lua", "--name=base", "--max_iters=10", "--resume")


def test_resume_with_gradient_accumulation_continues_exactly(dirs):
    common = ["--domain=base", "--max_iters=6", "--eval_interval=3", "--grad_accum=2"]
    run(dirs, *common, "--name=straight")
    run(dirs, *common, "--name=split", "--stop_iter=3")
    run(dirs, *common, "--name=split", "--resume")
    a, b = load(dirs, "straight"), load(dirs, "split")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_lr_schedule_known_values():
    f = lambda it: train.lr_schedule(it, 1.0, warmup=4, max_iters=14, min_lr_frac=0.1)
    assert f(0) == pytest.approx(1 / 5) and f(3) == pytest.approx(4 / 5)  # linear warmup
    assert f(4) == pytest.approx(1.0)                                      # peak when warmup ends
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)                          # cosine midpoint
    assert f(14) == pytest.approx(0.1) and f(20) == pytest.approx(0.1)     # floor at lr * min_lr_frac
    assert train.lr_schedule(50, 6e-4, 0, 100, 0.0) == pytest.approx(3e-4)  # the paper: no warmup, to 0
