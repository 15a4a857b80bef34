"""kill -9 in the middle of a run (issue 12): train.py and sae.py are killed as soon as their first
checkpoint is on disk; every file left must load, the next run must clean up after the dead one
(no temp files, no lock), and `--resume` must end bit-identical to a run that was never
interrupted. Also: killing reproduce.sh stops the stage it is running."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import helpers
import pytest
import torch

V = 64
MODEL = ["--preset=tiny", "--block_size=16", "--d_model=32", "--n_head=4", "--n_kv_head=2", "--d_mlp=64",
         "--batch_size=8", "--log_interval=50", "--eval_iters=2", "--warmup_iters=2", "--lr=3e-3", "--threads=1"]
TRAIN = ["--domain=base", "--max_iters=150", "--eval_interval=10", *MODEL]
SAE = ["--preset=tiny", "--model=base", "--expansion=2", "--seqs_per_batch=8", "--tokens_per_seq=4",
       "--total_acts=4800", "--buffer_batches=4", "--harvest_batch=16", "--eval_seqs=8", "--eval_batch=8",
       "--lr=3e-3", "--log_interval=50", "--eval_interval=1000", "--ckpt_interval=10", "--dead_window=64",
       "--resample_every=30", "--health_at=0", "--device=cpu", "--threads=1"]


@pytest.fixture
def data(tmp_path):
    for i, d in enumerate(("base", "lua", "tinystories")):
        helpers.write_domain(str(tmp_path / "data"), d, seed=i, vocab=V, n=6000, noise=0.1)
    return str(tmp_path / "data")


def start(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, os.path.join(helpers.REPO, script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=helpers.REPO)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def kill_when(proc, ready, timeout=240):
    """SIGKILL proc as soon as ready() is true (polled every 5 ms); False if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.communicate()
            return False
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    return True


def check_loadable(folder):
    """Every file a killed run left in folder loads: checkpoints with torch.load, JSON with json.load;
    the only others allowed are the dead run's lock and temp files of an unfinished atomic write."""
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True) + \
            glob.glob(os.path.join(folder, "**", ".*"), recursive=True):
        name = os.path.basename(path)
        if os.path.isdir(path) or name == ".lock" or (name.startswith(".") and name.endswith(".tmp")):
            continue
        if name.endswith(".pt"):
            torch.load(path, weights_only=False, map_location="cpu")
        elif name.endswith(".json"):
            with open(path) as f:
                json.load(f)
        else:
            raise AssertionError(f"unexpected file left by the killed run: {path}")


def leftovers(folder):
    return sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", ".*"), recursive=True)
                  if p.endswith(".tmp") or os.path.basename(p) == ".lock")


def same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_killed_mid_run_resumes_bit_identical(data, tmp_path):
    out = str(tmp_path / "out")
    dirs = [f"--data_dir={data}", f"--out_dir={out}"]
    straight = start("train.py", *TRAIN, *dirs, "--name=straight")
    victim = start("train.py", *TRAIN, *dirs, "--name=split")
    ckpt = os.path.join(out, "split", "ckpt.pt")
    killed = kill_when(victim, lambda: os.path.exists(ckpt))
    finish(straight)
    assert killed, "the run ended before its first checkpoint; make it longer"
    check_loadable(os.path.join(out, "split"))
    ck = torch.load(ckpt, weights_only=False)
    assert not ck["finished"] and 0 < ck["iter_num"] < 150
    # a save the kill interrupted leaves a temp file: the next run must remove it
    stale = os.path.join(out, "split", ".ckpt.pt.deadbeef.tmp")
    with open(stale, "wb") as f:
        f.write(b"half a checkpoint")
    finish(start("train.py", *TRAIN, *dirs, "--name=split", "--resume"))
    assert leftovers(out) == []
    a = torch.load(os.path.join(out, "straight", "ckpt.pt"), weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert b["finished"] and b["iter_num"] == a["iter_num"] == 150
    same_state(a["model"], b["model"])


def test_sae_killed_mid_run_resumes_bit_identical(data, tmp_path):
    out_a, out_b = str(tmp_path / "a"), str(tmp_path / "b")
    finish(start("train.py", "--domain=base", "--max_iters=20", "--eval_interval=1000", *MODEL,
                 f"--data_dir={data}", f"--out_dir={out_a}"))
    os.makedirs(os.path.join(out_b, "base"))
    for name in os.listdir(os.path.join(out_a, "base")):            # the same model in a second out dir
        if not name.startswith("."):
            os.link(os.path.join(out_a, "base", name), os.path.join(out_b, "base", name))
    straight = start("sae.py", *SAE, f"--data_dir={data}", f"--out_dir={out_a}")
    victim = start("sae.py", *SAE, f"--data_dir={data}", f"--out_dir={out_b}")
    sae_dir = os.path.join(out_b, "sae_base")
    killed = kill_when(victim, lambda: os.path.exists(os.path.join(sae_dir, "sae_s1.pt")))
    finish(straight)
    assert killed, "the run ended before its first checkpoint; make it longer"
    check_loadable(sae_dir)
    with open(os.path.join(sae_dir, ".sae_s0.pt.deadbeef.tmp"), "wb") as f:   # as a kill during a save leaves
        f.write(b"half an SAE")
    finish(start("sae.py", *SAE, f"--data_dir={data}", f"--out_dir={out_b}", "--resume"))
    assert leftovers(out_b) == []
    for seed in (0, 1):
        a = torch.load(os.path.join(out_a, "sae_base", f"sae_s{seed}.pt"), weights_only=False)
        b = torch.load(os.path.join(sae_dir, f"sae_s{seed}.pt"), weights_only=False)
        assert a["finished"] and b["finished"] and a["step"] == b["step"]
        same_state(a["sae"], b["sae"])
    with open(os.path.join(sae_dir, "metrics.json")) as f:                # both seeds reported
        got = json.load(f)
    assert set(got["seeds"]) == {"0", "1"}
    with open(os.path.join(out_a, "sae_base", "metrics.json")) as f:   # and the same training log (the kill fell
        want = json.load(f)                                              # between two of its lines: saves every 10
    timeless = lambda h: [{k: v for k, v in e.items() if k != "act_per_s"} for e in h]  # noqa: E731 (steps, logs 50)
    assert timeless(got["history"]) == timeless(want["history"])


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("side_by_side", [False, True])
def test_killing_reproduce_sh_stops_its_stages(tmp_path, sig, status, side_by_side):
    # a stand-in for python that records its pid and sleeps: a stage reproduce.sh is running (side by
    # side: the earlier stages end at once, the SAE stages sleep, two of them at once; `python -` is real)
    stub = tmp_path / "python"
    # (`python -` is real in both: reproduce.sh's check of PYTHON runs it before any stage)
    which = ('case "$1" in -) exec %s "$@";; sae.py) ;; *) exit 0;; esac\n' if side_by_side else
             'case "$1" in -) exec %s "$@";; esac\n') % sys.executable
    stub.write_text(f"#!/bin/sh\n{which}echo $$ >> {tmp_path}/pids\nexec sleep 60\n")
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data"), "JOBS": "2"}
    # SIGINT at its default in the child: a shell cannot trap a signal it was started with ignored, as a test
    # run started in the background (nohup, `&` without job control) passes SIGINT on
    proc = subprocess.Popen([os.path.join(helpers.REPO, "reproduce.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids, n = tmp_path / "pids", 2 if side_by_side else 1
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == n):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    children = [int(p) for p in pids.read_text().split()]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("reproduce.sh: stopped by SIG")
    if side_by_side:
        assert "'sae for base'" in last and "'sae for lua'" in last  # both named
    else:
        assert "during 'data: tokenizer and token files (sample)'" in last
    for child in children:
        assert not os.path.exists(f"/proc/{child}"), "a stage's process outlived reproduce.sh"
    assert len(pids.read_text().split()) == n  # and no later stage was started
