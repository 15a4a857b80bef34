"""train.py end to end on a tiny learnable token stream: loss falls, fine-tunes start from the
parent's exact weights, resumes continue exactly, and the user's mistakes get one-line errors."""
import json
import math
import os
import re

import helpers
import pytest
import torch

import train
from common import atomic_torch_save, sha256_file, stamp

V = 64
MODEL = ["--block_size=16", "--d_model=32", "--n_head=4", "--n_kv_head=2", "--d_mlp=64",
         "--batch_size=8", "--log_interval=5", "--eval_iters=4", "--warmup_iters=2"]
# what a printed fix names of MODEL (model.trained_with): its settings off the tiny preset but the log's
MODEL_FIX = "--block_size 16 --d_model 32 --d_mlp 64 --batch_size 8 --warmup_iters 2"


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


@pytest.mark.parametrize("sampler", ["epochs", "windows"])
def test_resumed_run_continues_exactly(dirs, sampler):
    s = (f"--sampler={sampler}", "--max_iters=12", "--eval_interval=6")
    run(dirs, "--domain=base", "--name=straight", *s)
    assert run(dirs, "--domain=base", "--name=split", *s, "--stop_iter=5") is None
    assert load(dirs, "split")["iter_num"] == 5 and not load(dirs, "split")["finished"]
    assert run(dirs, "--domain=base", "--name=split", *s, "--stop_iter=5", "--resume") is None  # already there
    assert load(dirs, "split")["iter_num"] == 5
    run(dirs, "--domain=base", "--name=split", *s, "--resume")
    a, b = load(dirs, "straight"), load(dirs, "split")
    assert b["iter_num"] == 12 and b["finished"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # a finished run is left alone by --resume with its settings
    before = sha256_file(os.path.join(dirs[1], "split", "ckpt.pt"))
    run(dirs, "--domain=base", "--name=split", *s, "--resume")
    assert sha256_file(os.path.join(dirs[1], "split", "ckpt.pt")) == before
    if sampler == "windows":  # a run saved before --sampler existed drew random windows: named as the fix
        ck = load(dirs, "split")
        del ck["config"]["sampler"]
        atomic_torch_save(stamp(ck, "model"), os.path.join(dirs[1], "split", "ckpt.pt"))
        run(dirs, "--domain=base", "--name=split", *s, "--resume")
        with pytest.raises(SystemExit, match="--sampler 'windows' -> 'epochs'"):
            run(dirs, "--domain=base", "--name=split", "--max_iters=12", "--eval_interval=6", "--resume")


def test_a_resume_on_other_tokens_is_refused_and_goes_on_with_its_own(dirs):
    """Prepared again with other tokens (same size, same tokenizer) between a stop and the resume, a run is
    refused: it would train on two corpora. With its tokens back (meta.json rewritten) it goes on."""
    s = ("--domain=base", "--max_iters=12", "--eval_interval=6")
    run(dirs, *s, "--stop_iter=5")
    write_domain(dirs[0], "base", seed=7)
    with pytest.raises(SystemExit, match=r"began on other base tokens than .* holds now .*--domain base --name base "
                                         rf"{MODEL_FIX} --max_iters 12 --overwrite$"):
        run(dirs, *s, "--resume")
    write_domain(dirs[0], "base", seed=0)
    run(dirs, *s, "--resume")
    assert load(dirs, "base")["finished"]


def test_a_val_split_shorter_than_a_window_is_found_before_training(dirs, capsys):
    """A val split too short for one window (block 16 + 1) ended a run at its first evaluation, before any
    checkpoint: another domain's is now left out of the evaluations, the run's own refused before a step."""
    write_domain(dirs[0], "tinystories", seed=2, n=150)                       # 15 val tokens
    run(dirs, "--domain=base", "--max_iters=3")
    assert "the tinystories val split has 15 tokens" in capsys.readouterr().out
    assert load(dirs, "base")["finished"] and "tinystories" not in load(dirs, "base")["val_loss"]
    with pytest.raises(SystemExit, match=r"the tinystories val split has 15 tokens.*could never be evaluated"):
        run(dirs, "--domain=tinystories", "--max_iters=3")
    assert not os.path.exists(os.path.join(dirs[1], "tinystories", "ckpt.pt"))


def test_a_step_past_the_free_memory_is_refused_before_any_weight_is_made(dirs, monkeypatch):
    """Past the machine's memory a CPU run was killed by the kernel without a word (--batch_size=100000)."""
    import common
    monkeypatch.setattr(common, "device_free_bytes", lambda device: 2 ** 10)            # 1 KB free
    made = []
    monkeypatch.setattr(train.Transformer, "to", lambda self, *a, **k: made.append(1) or self)
    with pytest.raises(SystemExit, match=r"a training step \(0\.0M parameters, 128 tokens\) needs at least "
                                         r"[\d.]+ GB of cpu memory, more than the 0\.0 GB free; lower --batch_size"):
        run(dirs, "--domain=base", "--max_iters=3")
    assert not made and not os.path.exists(os.path.join(dirs[1], "base", "ckpt.pt"))
    monkeypatch.undo()
    monkeypatch.setattr(common, "device_free_bytes", lambda device: None)              # unknown: not checked
    run(dirs, "--domain=base", "--max_iters=3")
    assert load(dirs, "base")["finished"]


def test_errors_are_one_line(dirs, tmp_path):
    with pytest.raises(SystemExit, match="--domain must be one of base, lua, tinystories; got 'python3'"):
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
    with pytest.raises(SystemExit, match="tinystories was prepared with tokenizer tok-B but model 'base' uses tok-A"):
        run(dirs, "--domain=tinystories")


def poison_loss(monkeypatch, bad):
    """Make the loss of training step n (1-based) NaN wherever bad(n) is true (train.py trains through
    fast.ChunkedHead, fast being on by default)."""
    import fast
    forward, calls = fast.ChunkedHead.forward, {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if bad(calls["n"]):
                loss = loss * float("nan")
        return logits, loss
    monkeypatch.setattr(fast.ChunkedHead, "forward", poisoned)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dirs, monkeypatch):
    poison_loss(monkeypatch, lambda n: n >= 6)  # from the 6th training step on, the loss is NaN
    with pytest.raises(SystemExit, match="at iter 5: not finite; stopped before saving.*last good checkpoint"):
        run(dirs, "--domain=base", "--max_iters=10", "--eval_interval=2")
    ck = load(dirs, "base")
    assert ck["iter_num"] == 4 and not ck["finished"]                      # the checkpoint of iter 4 is kept
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_resume_refuses_other_settings(dirs):
    run(dirs, "--domain=base", "--max_iters=10", "--stop_iter=2")
    with pytest.raises(SystemExit, match=r"other settings \(--lr 0.002 -> 0.1\)"):
        run(dirs, "--domain=base", "--max_iters=10", "--resume", "--lr=0.1")
    with pytest.raises(SystemExit, match=r"other settings \(--domain 'base' -> 'lua'"):
        run(dirs, "--domain=lua", "--name=base", "--parent=nosuch", "--max_iters=10", "--resume")  # (not its own parent)
    with pytest.raises(SystemExit, match=r"other settings \(--fast True -> False\)"):  # the loss would round otherwise
        run(dirs, "--domain=base", "--max_iters=10", "--resume", "--fast=false")


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



# -----------------------------------------------------------------------------
# issue 12: bad settings refused where they are parsed, locked run folders, unfinished parents

@pytest.mark.parametrize("args, message", [
    (["--epochs=0"], "--epochs must be > 0, got 0"),                      # 12.1: trained one step
    (["--max_iters=-5", "--epochs=0"], "must be"),
    (["--max_iters=-5"], "--max_iters must be >= 0, got -5"),
    (["--warmup_iters=-5"], "--warmup_iters must be >= 0, got -5"),
    (["--lr=nan"], "--lr must be a finite number"),                        # 12.9: torch's traceback
    (["--lr=-1e-3"], "--lr must be >= 0"),
    (["--n_head=0"], "--n_head must be >= 1"),                             # 12.10: ZeroDivisionError
    (["--block_size=0"], "--block_size must be >= 1"),                     # 12.10: reshape error
    (["--n_head=3"], "--d_model 32 must be n_head \\(3\\) times an even head size"),
    (["--n_head=8", "--n_kv_head=3"], "--n_head 8 must be a multiple of --n_kv_head 3"),
    (["--d_model=36", "--n_head=4"], "even head size"),                    # RoPE rotates pairs of dimensions
    (["--min_lr_frac=1.5"], r"--min_lr_frac must be in \[0, 1\]"),
    (["--beta2=1"], "--beta2 must be in"),
    (["--dtype=float16"], "--dtype must be one of auto, float32, bfloat16"),
])
def test_bad_settings_are_refused_before_any_work(dirs, args, message):
    with pytest.raises(SystemExit, match=message):
        run(dirs, "--domain=base", *args)
    assert not os.path.exists(os.path.join(dirs[1], "base", "ckpt.pt"))


def test_a_second_run_on_a_locked_folder_is_refused(dirs):
    # 12.4: two runs on one out dir overwrote each other's work; a live holder of the lock is named
    import socket
    os.makedirs(os.path.join(dirs[1], "base"))
    with open(os.path.join(dirs[1], "base", ".lock"), "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": "train.py --domain base"}, f)
    with pytest.raises(SystemExit, match=r"out/base is in use by train.py --name base in process \d+"):
        run(dirs, "--domain=base", "--max_iters=2")
    assert not os.path.exists(os.path.join(dirs[1], "base", "ckpt.pt"))
    os.remove(os.path.join(dirs[1], "base", ".lock"))
    run(dirs, "--domain=base", "--max_iters=2")                       # the lock is released at the end
    assert not os.path.exists(os.path.join(dirs[1], "base", ".lock"))


def test_a_finetune_is_not_resumed_from_a_parent_re_made_since_it_began(dirs):
    run(dirs, "--domain=base", "--max_iters=4")
    assert run(dirs, "--domain=lua", "--max_iters=6", "--stop_iter=2") is None
    run(dirs, "--domain=base", "--max_iters=4", "--seed=7", "--overwrite")      # the parent re-made
    with pytest.raises(SystemExit, match=r"'base' was re-made since .*lua/ckpt\.pt began from it; start this "
                                         r"fine-tune over from the new one: python train\.py --domain lua "
                                         rf"--name lua {MODEL_FIX} --max_iters 6 --overwrite$"):
        run(dirs, "--domain=lua", "--max_iters=6", "--resume")
    run(dirs, "--domain=lua", "--max_iters=6", "--overwrite")
    assert load(dirs, "lua")["parents"][0]["hash"] == sha256_file(os.path.join(dirs[1], "base", "ckpt.pt"))


def test_an_unfinished_fine_tune_of_another_parent_is_finished_by_its_printed_command(dirs):
    # a fine-tune of base2 stopped early: the fix that finishes it names --parent base2 and the run's other
    # settings (without them the resume is refused, its settings having --parent base2, not base, and MODEL's
    # sizes); run as printed, with only the folders and preset a command line keeps, it finishes
    import shlex

    from model import load_model
    run(dirs, "--domain=base", "--name=base2", "--max_iters=4")
    run(dirs, "--domain=lua", "--name=lua2", "--parent=base2", "--max_iters=6", "--stop_iter=3")
    with pytest.raises(SystemExit) as e:
        load_model(dirs[1], "lua2")
    printed = re.search(r"finish it with: (python train\.py .*), or pass --allow_unfinished", str(e.value)).group(1)
    assert printed == f"python train.py --domain lua --name lua2 --parent base2 {MODEL_FIX} --max_iters 6 --resume"
    train.main(["--preset=tiny", f"--data_dir={dirs[0]}", f"--out_dir={dirs[1]}", *shlex.split(printed)[2:]])
    assert load(dirs, "lua2")["finished"]

def test_a_damaged_checkpoints_fix_names_its_runs_settings_and_run_as_printed_remakes_that_model(dirs):
    """A model trained off the defaults (MODEL's sizes, --mlp gelu, --lr, --max_iters), its checkpoint damaged:
    the fix names those settings (its metrics.json's, what is known of it; not the log's or evaluation's) and,
    run as printed with only the folders and preset a command line keeps, trains the same model again (python
    train.py --domain base --overwrite would train the tiny preset's 128-wide swiglu model for 2 epochs)."""
    import shlex

    from model import load_model
    run(dirs, "--domain=base", "--max_iters=6", "--lr=1e-3", "--mlp=gelu")
    was = load(dirs, "base")
    os.truncate(os.path.join(dirs[1], "base", "ckpt.pt"), 1000)
    with pytest.raises(SystemExit, match=r"cannot load 'base' model checkpoint .* as data") as e:
        load_model(dirs[1], "base")
    printed = re.search(r"remake it: (python train\.py .*)$", str(e.value)).group(1)
    assert printed == ("python train.py --domain base --block_size 16 --d_model 32 --d_mlp 64 --mlp gelu "
                       "--batch_size 8 --lr 0.001 --warmup_iters 2 --max_iters 6 --overwrite")
    train.main(["--preset=tiny", f"--data_dir={dirs[0]}", f"--out_dir={dirs[1]}", *shlex.split(printed)[2:]])
    now = load(dirs, "base")
    assert now["model_args"] == was["model_args"] and now["iter_num"] == was["iter_num"] == 6
    assert all(torch.equal(now["model"][k], v) for k, v in was["model"].items())


def test_the_reports_fix_for_a_damaged_record_resumes_its_run_with_the_runs_settings(dirs):
    """report.py's fix for a finished run's damaged metrics.json is a --resume, which refuses settings other than
    the run's: it names them (its checkpoint's), and run as printed it rewrites the record."""
    import shlex

    import report
    run(dirs, "--domain=base", "--max_iters=4", "--lr=1e-3")
    path = os.path.join(dirs[1], "base", "metrics.json")
    with open(path, "a") as f:
        f.write("x")
    with pytest.raises(SystemExit, match=r"metrics\.json is not readable JSON") as e:
        report.read_stage(dirs[1], "base", "metrics.json", "train_metrics")
    printed = re.search(r"remake it: (python train\.py .*)$", str(e.value)).group(1)
    assert printed == ("python train.py --domain base --block_size 16 --d_model 32 --d_mlp 64 --batch_size 8 "
                       "--lr 0.001 --warmup_iters 2 --max_iters 4 --resume")
    train.main(["--preset=tiny", f"--data_dir={dirs[0]}", f"--out_dir={dirs[1]}", *shlex.split(printed)[2:]])
    assert report.read_stage(dirs[1], "base", "metrics.json", "train_metrics")["iters"] == 4


def test_finetune_refuses_an_unfinished_parent_unless_allowed(dirs):
    # 12.5: a parent stopped early (the state a kill leaves) was used without a word
    run(dirs, "--domain=base", "--max_iters=10", "--stop_iter=3")
    with pytest.raises(SystemExit, match=r"base/ckpt.pt is unfinished \(stopped at iter 3\); finish it with: "
                                         rf"python train.py --domain base {MODEL_FIX} --max_iters 10 --resume, or "
                                         r"pass --allow_unfinished"):
        run(dirs, "--domain=lua", "--max_iters=2")
    run(dirs, "--domain=lua", "--max_iters=2", "--allow_unfinished")
    assert load(dirs, "lua")["finished"]
    from model import load_model
    with pytest.raises(SystemExit, match="is unfinished"):
        load_model(dirs[1], "base")


def test_resume_of_a_finished_run_with_changed_settings_is_refused(dirs):
    # 12.6: it said "nothing to do" and ignored the new lr
    run(dirs, "--domain=base", "--max_iters=4")
    with pytest.raises(SystemExit, match=r"other settings \(--lr 0.002 -> 0.1\)"):
        run(dirs, "--domain=base", "--max_iters=4", "--resume", "--lr=0.1")
    assert run(dirs, "--domain=base", "--max_iters=4", "--resume")["base"] == load(dirs, "base")["val_loss"]["base"]


@pytest.mark.parametrize("edit, message", [
    (lambda ck: ck["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)), r"does not fit the training state .*"
     r"exp_avg has shape \(3,\)"),                                             # a fused step would write out of bounds
    (lambda ck: ck.update(data_rng=[torch.zeros(5, dtype=torch.uint8)]), r"does not fit the training state"),
    (lambda ck: ck.update(iter_num=100), r"at step 100 of 8, which its settings cannot give"),
    (lambda ck: ck["config"].update(max_iters_resolved=10 ** 12), r"at step 3 of 1000000000000, which its settings"),
    (lambda ck: (ck["config"].update(max_iters_resolved=10 ** 12), ck["provenance"]["data"].update(meta_sha256="x")),
     r"more than the training tokens in .* now give \(8\): the data was prepared again since"),  # (data shrank)
    (lambda ck: ck.update(loss_since=[[float("nan")], 1]), r"does not fit the training state .*loss_since"),
    (lambda ck: ck.update(loss_since=[["4.0"], 1]), r"does not fit the training state .*loss_since"),
    (lambda ck: ck.update(loss_since=[[], 0]), r"does not fit the training state .*loss_since"),
    (lambda ck: ck.update(loss_since=[[4.0], 9]), r"does not fit the training state .*loss_since"),  # past iter_num
])
def test_a_resume_state_edited_and_re_stamped_is_one_line(dirs, edit, message):
    import common
    run(dirs, "--domain=base", "--max_iters=8", "--stop_iter=3")
    path = os.path.join(dirs[1], "base", "ckpt.pt")
    ck = torch.load(path, weights_only=True)
    edit(ck)
    common.atomic_torch_save(common.stamp(ck, "model"), path)                 # a valid checksum: edited, re-stamped
    with pytest.raises(SystemExit, match=message) as e:
        run(dirs, "--domain=base", "--max_iters=8", "--resume")
    assert "\n" not in str(e.value)


def test_a_finished_runs_damaged_or_swapped_metrics_json_is_rewritten_from_its_checkpoint(dirs, capsys):
    path = os.path.join(dirs[1], "base", "metrics.json")
    run(dirs, "--domain=base", "--max_iters=4")
    text = open(path).read()
    whole = json.loads(text)
    run(dirs, "--domain=lua", "--max_iters=2")
    for damage in (lambda: open(path, "w").write(text[:40]),                         # truncated
                   lambda: os.replace(os.path.join(dirs[1], "lua", "metrics.json"), path)):  # another run's
        damage()
        capsys.readouterr()
        run(dirs, "--domain=base", "--max_iters=4", "--resume")
        assert "rewritten from" in capsys.readouterr().out
        again = json.load(open(path))
        kept = ("name", "domain", "iters", "val_loss", "history", "checkpoint_sha256", "tokens_per_step", "params",
                "data_source")  # all but the run's speed
        assert {k: again[k] for k in kept} == {k: whole[k] for k in kept}
        assert again["provenance"]["data_meta_sha256"] == whole["provenance"]["data_meta_sha256"]
    run(dirs, "--domain=base", "--max_iters=4", "--resume")                        # whole: left as it is
    assert "rewritten" not in capsys.readouterr().out


def test_unwritable_out_dir_or_full_disk_fail_before_training(dirs, tmp_path, monkeypatch, capsys):
    # 12.14: failed only at the first write, after the training steps
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="cannot write in .*a_file/base"):
        run((dirs[0], str(blocker)), "--domain=base", "--max_iters=2")
    import common
    monkeypatch.setattr(common, "_disk_free", lambda path: 1000)
    with pytest.raises(SystemExit, match="train.py's checkpoint needs about .* but only 0 MB are free"):
        run(dirs, "--domain=base", "--max_iters=2")
    assert "iter 1" not in capsys.readouterr().out                     # refused before the first step


# -----------------------------------------------------------------------------
# issue 11 / 14: plan, loss curves, compile fallback

def test_plan_and_loss_history(dirs, capsys):
    run(dirs, "--domain=base", "--max_iters=12", "--eval_interval=5")
    out = capsys.readouterr().out
    assert "plan: 12 steps from iter 0, 1,536 tokens" in out and "time estimate:" in out
    hist = json.load(open(os.path.join(dirs[1], "base", "metrics.json")))["history"]
    assert [h["iter"] for h in hist] == [5, 10, 12] and [h["tokens"] for h in hist] == [640, 1280, 1536]
    assert hist[-1]["val_loss"] == load(dirs, "base")["val_loss"]["base"]
    assert all(h["train_loss"] > 0 and h["lr"] > 0 for h in hist)


def test_loss_curve_has_training_points_between_evaluations(dirs):
    # a short run with one evaluation at the end still gets a curve: a train-loss point per log interval
    run(dirs, "--domain=base", "--max_iters=8", "--eval_interval=6", "--log_interval=2")
    hist = json.load(open(os.path.join(dirs[1], "base", "metrics.json")))["history"]
    assert [h["iter"] for h in hist] == [2, 4, 6, 8]
    assert [h["val_loss"] is None for h in hist] == [True, True, False, False]
    assert all(h["train_loss"] > 0 for h in hist)


def test_history_survives_a_resume(dirs):
    run(dirs, "--domain=base", "--name=split", "--max_iters=12", "--eval_interval=5", "--stop_iter=5")
    run(dirs, "--domain=base", "--name=split", "--max_iters=12", "--eval_interval=5", "--resume")
    run(dirs, "--domain=base", "--name=straight", "--max_iters=12", "--eval_interval=5")
    a, b = (json.load(open(os.path.join(dirs[1], n, "metrics.json")))["history"] for n in ("straight", "split"))
    assert [h["iter"] for h in b] == [5, 10, 12]
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b]


def test_a_stop_at_an_evaluation_keeps_that_evaluation_in_its_checkpoint(dirs):
    """--stop_iter at an evaluation step: the checkpoint is the evaluation's (its val_loss, nothing of the
    train loss left over), not the between-evaluations one (val_loss {})."""
    run(dirs, "--domain=base", "--max_iters=12", "--eval_interval=5", "--stop_iter=5")
    ck = load(dirs, "base")
    assert ck["iter_num"] == 5 and not ck["finished"] and ck["loss_since"] == [[0.0], 0]
    assert set(ck["val_loss"]) == {"base"} and ck["val_loss"]["base"] == ck["history"][-1]["val_loss"]


def test_compile_failure_falls_back_to_eager(monkeypatch, capsys):
    # issue 11: torch.compile without a C compiler died at the first step
    from contextlib import nullcontext

    from model import ModelArgs, Transformer
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=V, block_size=16, d_model=32, n_head=4, n_kv_head=2, d_mlp=64))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")

    def broken_compile(m):
        def call(*a, **k):
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.\nmore")
        return call
    monkeypatch.setattr(torch, "compile", broken_compile)
    x = torch.randint(0, V, (2, 16))
    used = train.compile_or_eager(model, x, x, nullcontext(), opt)
    assert used is model and all(p.grad is None for p in model.parameters())
    assert capsys.readouterr().out.strip() == ("warning: torch.compile failed (RuntimeError: Failed to find C compiler. "
                                               "Please specify via CC environment variable.); training without it "
                                               "(--compile=false skips the attempt)")


def test_nan_between_checks_is_caught_at_the_next_check_before_any_save(dirs, monkeypatch):
    # no host sync per step: the flag is read at the next log line (iter 5), and nothing is saved
    poison_loss(monkeypatch, lambda n: n == 3)  # only the 3rd training step's loss is NaN
    with pytest.raises(SystemExit, match="loss nan, gradient norm nan at iter 2: not finite"):
        run(dirs, "--domain=base", "--max_iters=10", "--eval_interval=4")
    assert not os.path.exists(os.path.join(dirs[1], "base", "ckpt.pt"))


# -----------------------------------------------------------------------------
# phase B: the warmup fits the run; MFU in metrics.json

def test_warmup_longer_than_the_run_is_capped_at_a_tenth_and_printed(dirs, capsys):
    # issue 11: a fine-tune shorter than its warmup (paper: 500 steps) never reached its learning rate
    run(dirs, "--domain=base", "--max_iters=30", "--warmup_iters=500", "--lr=1e-3", "--eval_interval=4")
    out = capsys.readouterr().out
    assert ("schedule: linear warmup over 3 steps (--warmup_iters 500 capped at 10% of the steps) to lr 0.001, "
            "then cosine down to 0.0001 at step 30") in out
    hist = json.load(open(os.path.join(dirs[1], "base", "metrics.json")))["history"]
    assert hist[0]["iter"] == 4 and hist[0]["lr"] == pytest.approx(1e-3)      # step index 3 ran at the peak
    assert train.lr_schedule(3, 1e-3, 500, 30, 0.1) < 1e-5                     # (uncapped: still warming up)
    run(dirs, "--domain=base", "--name=short", "--max_iters=30", "--warmup_iters=2")
    assert "linear warmup over 2 steps to lr" in capsys.readouterr().out       # within 10%: as asked


def test_metrics_carry_mfu_none_on_cpu(dirs):
    run(dirs, "--domain=base", "--max_iters=3")
    m = json.load(open(os.path.join(dirs[1], "base", "metrics.json")))
    assert "mfu" in m and m["mfu"] is None and m["tokens_per_s"] > 0


# train.py run as its command line does (runpy, as __main__), with the names of the threads a rank has
# right after each destroy_process_group written out
THREADS_LEFT = """import os, runpy, sys
import torch.distributed as dist
def name(t):
    try:
        return open(f"/proc/self/task/{t}/comm").read().strip()
    except OSError:  # a thread that ended after the listing
        return "ended"
def destroy(*args, _destroy=dist.destroy_process_group, **kwargs):
    _destroy(*args, **kwargs)
    names = sorted(name(t) for t in os.listdir("/proc/self/task"))
    os.write(1, f"threads after destroy_process_group: {names}\\n".encode())  # one write: the ranks share the pipe
dist.destroy_process_group = destroy
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def torchrun(*args):
    """train.py under torchrun, two CPU processes (gloo): it succeeds, and each rank's destroy_process_group ends
    gloo's threads. One left past it was ended later: by DDP's reducer, holding the GIL that the thread may still
    need (a deadlock), or at the interpreter's exit (an abort, now and then: torch.distributed.nn, imported after
    the group was made, kept it)."""
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        driver = os.path.join(tmp, "threads_left.py")
        with open(driver, "w") as f:
            f.write(THREADS_LEFT)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               driver, os.path.join(helpers.REPO, "train.py"), *args], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=helpers.REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = re.findall(r"^threads after destroy_process_group: (.*)$", proc.stdout, re.M)
    assert len(left) == 2 and not any("gloo" in names for names in left), proc.stdout[-2000:]


def test_ddp_on_two_cpu_processes_is_one_process_with_the_whole_batch(dirs):
    """torchrun with two CPU processes (gloo): each rank takes its half of the one data stream's batch and
    DDP averages the gradients, so every step is the one-process step with the whole batch (16 windows),
    to float32 rounding (the mean over 16 windows summed in two halves), and the loss curve is the same.
    The DDP run, stopped at step 5 (between evaluations: it carries the ranks' mean train loss since the curve's
    point at 4), is continued by one process with the whole batch (reproduce.sh's resume of a base model
    pretrained under torchrun), and a batch other than 16 is refused."""
    data, out = dirs
    common = ["--preset=tiny", f"--data_dir={data}", *MODEL[:4], "--log_interval=2", "--eval_iters=2",
              "--warmup_iters=2", "--domain=base", "--max_iters=6", "--eval_interval=3", "--device=cpu", "--threads=1"]
    torchrun(*common, f"--out_dir={out}", "--name=ddp", "--batch_size=8", "--stop_iter=5")
    assert load(dirs, "ddp")["iter_num"] == 5 and load(dirs, "ddp")["loss_since"][1] == 1  # (one step since 4)
    ck = load(dirs, "ddp")
    del ck["config"]["batch_global"]                   # as saved before the key: the batch from the tokens
    ck["config"]["name"] = "old"
    old = os.path.join(out, "old", "ckpt.pt")
    os.makedirs(os.path.dirname(old))
    atomic_torch_save(stamp(ck, "model"), old)
    for name in ("ddp", "old"):
        with pytest.raises(SystemExit, match=r"its steps take 16 sequences .* this run's 8 x 1; give --batch_size 16"):
            train.main([*common, f"--out_dir={out}", f"--name={name}", "--batch_size=8", "--resume"])
        train.main([*common, f"--out_dir={out}", f"--name={name}", "--batch_size=16", "--resume"])
    assert all(torch.equal(w, load(dirs, "old")["model"][k]) for k, w in load(dirs, "ddp")["model"].items())
    train.main([*common, f"--out_dir={out}", "--name=one", "--batch_size=16"])
    ddp, one = load(dirs, "ddp"), load(dirs, "one")
    assert ddp["iter_num"] == one["iter_num"] == 6
    for k in one["model"]:
        torch.testing.assert_close(ddp["model"][k], one["model"][k], rtol=1e-4, atol=1e-5)
    h_ddp, h_one = ddp["history"], one["history"]
    assert [h["iter"] for h in h_ddp] == [h["iter"] for h in h_one] and len(h_one) >= 3
    for a, b in zip(h_ddp, h_one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert (a["val_loss"] is None) == (b["val_loss"] is None)
        assert a["val_loss"] is None or a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_a_ddp_run_stopped_between_evaluations_resumes_to_the_unstopped_ddp_runs_bits(dirs):
    """Two CPU processes (gloo), stopped at step 5 (between the loss curve's points at 4 and 6) and resumed by
    two: each rank resumes with its own train loss since the point at 4, so the point at 6, the ranks' sums added
    by record_loss's all-reduce, is the unstopped DDP run's bit for bit (resumed with the ranks' mean, M + l0 and
    M + l1 round otherwise than s0 + l0 and s1 + l1 on these steps), as are the weights."""
    data, out = dirs
    common = ["--preset=tiny", f"--data_dir={data}", f"--out_dir={out}", *MODEL[:5], "--batch_size=8",
              "--log_interval=4", "--eval_iters=2", "--warmup_iters=2", "--domain=base", "--max_iters=12",
              "--eval_interval=6", "--device=cpu", "--threads=1"]
    torchrun(*common, "--name=straight")
    torchrun(*common, "--name=split", "--stop_iter=5")
    torchrun(*common, "--name=split", "--resume")
    a, b = load(dirs, "straight"), load(dirs, "split")
    assert [h["iter"] for h in b["history"]] == [4, 6, 8, 12]
    assert a["history"] == b["history"] and a["best_val_loss"] == b["best_val_loss"]
    assert all(torch.equal(w, b["model"][k]) for k, w in a["model"].items())


def test_grad_accum_is_one_batch_of_the_same_windows_and_an_epoch_counts_its_tokens(dirs):
    """--grad_accum 2 of 4 windows is one step over the same 8 windows (the epoch order) as --batch_size 8: the same
    logged train loss (a mean, not a sum) and the same weights; and --epochs counts a step's tokens with its
    micro-steps (B x block x grad_accum), so both runs take the same number of steps."""
    data, out = dirs
    both = ["--domain=base", "--epochs=0.2", "--eval_interval=1000", "--log_interval=1", "--grad_clip=0"]
    run(dirs, *both, "--name=one", "--batch_size=8")
    run(dirs, *both, "--name=two", "--batch_size=4", "--grad_accum=2")
    a, b = load(dirs, "one"), load(dirs, "two")
    n_train = os.path.getsize(os.path.join(data, "base", "train.bin")) // 2      # uint16 tokens
    steps = math.ceil(0.2 * n_train / (8 * 16))                                    # 0.2 epochs of 8 x 16 tokens a step
    assert a["iter_num"] == b["iter_num"] == steps
    assert a["config"]["max_iters_resolved"] == b["config"]["max_iters_resolved"] == steps
    ha, hb = a["history"], b["history"]
    assert [h["iter"] for h in ha] == [h["iter"] for h in hb] and [h["tokens"] for h in ha] == [h["tokens"] for h in hb]
    for x, y in zip(ha, hb):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-3, atol=1e-5)


def test_validation_loss_is_the_mean_over_the_first_eval_iters_batches_of_consecutive_windows():
    """train.evaluate on a hand-made run: B 2, 2 processes, eval_iters 2 -> the first 2 x 2 x 2 = 8 windows of
    block_size + 1 = 9 tokens at stride 8 (window k is tokens 8k .. 8k + 8: the 8 inputs and their 8 next
    tokens), of each domain's own val split; the loss is the mean CE over those 8 x 8 predictions."""
    import types

    import numpy as np

    from model import ModelArgs, Transformer
    torch.manual_seed(0)
    m = Transformer(ModelArgs(vocab_size=V, block_size=8, d_model=16, n_head=2, n_kv_head=1, d_mlp=32)).eval()
    g = np.random.default_rng(0)
    val = {"lua": g.integers(0, V, 8 * 12 + 1).astype(np.uint16), "base": g.integers(0, V, 8 * 10 + 1).astype(np.uint16)}
    run = types.SimpleNamespace(raw_model=m, block=8, B=2, cfg={"eval_iters": 2, "fast": False}, data=types.SimpleNamespace(val=val),
                                env=types.SimpleNamespace(world=2, device="cpu", autocast=None))
    got = train.evaluate(run, ["lua", "base"])
    for d, a in val.items():
        w = torch.from_numpy(np.stack([a[8 * k:8 * k + 9].astype(np.int64) for k in range(8)]))
        want = m(w[:, :-1], w[:, 1:])[1].item()
        assert got[d] == pytest.approx(want, rel=1e-6), d


def test_a_stop_between_evaluations_resumes_to_the_unstopped_runs_metrics(dirs):
    """--stop_iter at steps that are no evaluation (7; 10, a log step) checkpoints there without evaluating or
    adding a point to the loss curve, carrying the train loss since its last point: resumed to the end, the run's
    metrics.json (but for this run's time and tokens) and checkpoint are the unstopped run's, bit for bit."""
    s = ("--domain=base", "--max_iters=18", "--eval_interval=6")
    other = (dirs[0], dirs[1] + "_straight")                   # the same --name in another out_dir
    run(other, *s)
    assert run(dirs, *s, "--stop_iter=7") is None
    ck = load(dirs, "base")
    assert ck["iter_num"] == 7 and not ck["finished"] and ck["val_loss"] == {}
    assert [h["iter"] for h in ck["history"]] == [5, 6]                  # no point at the stop
    assert run(dirs, *s, "--stop_iter=10", "--resume") is None
    assert load(dirs, "base")["iter_num"] == 10
    run(dirs, *s, "--resume")
    a, b = (json.load(open(os.path.join(d[1], "base", "metrics.json"))) for d in (other, dirs))
    assert [h["iter"] for h in b["history"]] == [5, 6, 10, 12, 15, 18]
    this_run = ("checkpoint", "checkpoint_sha256", "tokens_this_run", "seconds_this_run", "tokens_per_s",
                "provenance", "checksum")              # (where it is and when it was written: its checksums)
    assert {k: v for k, v in b.items() if k not in this_run} == {k: v for k, v in a.items() if k not in this_run}
    pa, pb = a["provenance"], b["provenance"]
    how = ("out_dir", "resume")                        # the settings but how this run was started
    assert {k: v for k, v in pa["config"].items() if k not in how} == \
        {k: v for k, v in pb["config"].items() if k not in how}
    assert {k: v for k, v in pa.items() if k not in ("config", "created")} == \
        {k: v for k, v in pb.items() if k not in ("config", "created")}
    ca, cb = load(other, "base"), load(dirs, "base")
    for k in ("history", "val_loss", "best_val_loss", "iter_num", "finished"):
        assert ca[k] == cb[k], k
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
