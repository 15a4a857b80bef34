"""common.py: the config layer (types, checks, presets and variants, --help), the command wrapper's
exit status, output-folder locks, early disk checks and atomic writes."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import common

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv, **kw):
    cfg = dict(lr=0.5, steps=10, arch="relu", seeds=[0, 1], flag=False, t=0.5)
    checks = {"lr": ">=0", "steps": ">0", "arch": ("relu", "topk"), "seeds": ">=0", "t": "[0,1]"}
    return common.parse_config(cfg, argv, checks=checks, **kw)


@pytest.mark.parametrize("argv, words", [
    (["--lr=nan"], "--lr must be a finite number"),
    (["--lr=inf"], "--lr must be a finite number"),
    (["--lr=-1"], "--lr must be >= 0"),
    (["--steps=0"], "--steps must be > 0"),
    (["--arch=gelu"], "--arch must be one of relu, topk"),
    (["--seeds=0,-1"], "--seeds must be >= 0"),
    (["--t=1.5"], "--t must be in [0, 1]"),
    (["--steps=2.5"], "--steps takes an integer"),
    (["--flag=maybe"], "--flag takes true or false"),
    (["--stpes=3"], "did you mean --steps?"),
    (["--lr"], "--lr needs a value"),
    (["lr=3"], "unexpected argument"),
])
def test_bad_values_are_refused_in_one_line(argv, words):
    with pytest.raises(common.UserError) as e:
        parse(argv)
    assert words in e.value.msg and "\n" not in e.value.msg


def test_good_values_convert_to_the_default_type():
    cfg = parse(["--lr", "0", "--steps=2e3", "--seeds=3,4", "--flag", "--t=1"])
    assert cfg == dict(lr=0.0, steps=2000, arch="relu", seeds=[3, 4], flag=True, t=1.0)


def test_check_rules_bounds_and_open_intervals():
    common.check_value("x", 0.999, "(0,1)")
    for bad in (0.0, 1.0):
        with pytest.raises(common.UserError):
            common.check_value("x", bad, "(0,1)")
    common.check_value("x", 1.0, "(0,1]")

    with pytest.raises(common.UserError):
        common.check_value("x", float("nan"), None)  # a number is always required to be finite


def test_presets_then_variant_then_command_line():
    presets = {"tiny": dict(lr=1.0, steps=5), "tiny/finetune": dict(lr=0.25), "paper": dict()}
    variant = lambda c: "finetune" if c["arch"] == "topk" else None  # noqa: E731
    assert parse(["--preset=tiny"], presets=presets, variant=variant)["lr"] == 1.0
    cfg = parse(["--preset=tiny", "--arch=topk"], presets=presets, variant=variant)
    assert cfg["lr"] == 0.25 and cfg["steps"] == 5 and cfg["preset"] == "tiny"
    assert parse(["--preset=tiny", "--arch=topk", "--lr=2"], presets=presets, variant=variant)["lr"] == 2.0
    with pytest.raises(common.UserError, match="unknown preset"):
        parse(["--preset=tiny/finetune"], presets=presets)
    with pytest.raises(common.UserError, match="has no presets .*drop --preset"):   # (report.py, bench.py)
        parse(["--preset=banana"])


def test_help_shows_the_chosen_presets_values_and_each_keys_comment(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(textwrap.dedent('''
        """Toy stage: does one thing.

        More words that --help leaves out."""
        import sys
        sys.path.insert(0, %r)
        import common

        config = dict(
            width=64,        # features per layer
            lr=0.1,          # learning rate
                             # (continued here)
            # system: a heading of the keys below, not part of lr's comment
            name="x",
        )
        PRESETS = {"paper": dict(width=1024), "tiny": dict(width=8)}

        def main():
            common.parse_config(dict(config), None, PRESETS, "paper", checks={"width": ">0"})

        if __name__ == "__main__":
            common.cli(main)
    ''' % HERE))
    for flag in ("-h", "--help"):
        out = subprocess.run([sys.executable, str(script), "--preset", "tiny", flag], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "Toy stage: does one thing." in out.stdout and "More words" not in out.stdout
        assert "--width=8" in out.stdout and "features per layer" in out.stdout  # tiny's value, not the default
        assert "learning rate (continued here)" in out.stdout and "system" not in out.stdout
    bad = subprocess.run([sys.executable, str(script), "--width=0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --width must be > 0, got 0"
    assert "Traceback" not in bad.stderr


def test_every_stage_script_answers_help(tmp_path):
    for name in ("data.py", "model.py", "train.py", "merge.py", "sae.py", "analyze.py", "explain.py", "authors.py",
                 "diffing.py", "report.py", "bench.py"):
        out = subprocess.run([sys.executable, os.path.join(HERE, name), "-h"], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0 and "usage: python " + name in out.stdout, (name, out.stderr[-500:])


def test_a_missing_package_is_one_line_naming_its_install(tmp_path):
    # a package that cannot be imported, as on a machine without it (PYTHONPATH puts a stand-in first)
    for name in ("tiktoken", "torch", "requests"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'raise ModuleNotFoundError("no {name}", name="{name}")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for name in ("data.py", "model.py", "train.py", "merge.py", "sae.py", "analyze.py", "explain.py", "authors.py",
                 "bench.py"):
        out = subprocess.run([sys.executable, os.path.join(HERE, name), "-h"], capture_output=True, text=True, env=env)
        want = {"data.py": "error: no module named 'tiktoken': pip install numpy tiktoken requests (or -r requirements-hf",
                "explain.py": "error: no module named 'requests': pip install numpy tiktoken requests"}.get(
            name, "error: no module named 'torch': install PyTorch (CPU: pip install torch==2.13.0; a GPU: the CUDA build")
        assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and out.stderr.startswith(want), (name, out.stderr)


@pytest.mark.parametrize("version, ok", [("2.4.1+cu121", False), ("1.13.1", False), ("2.5.1+cu124", True),
                                         ("2.11.0+cu130", True), ("2.13.0+cpu", True), ("3.0.0", True)])
def test_torch_older_than_the_floor_is_one_line_naming_the_install(version, ok):
    if ok:
        common.check_torch(version)
    else:
        with pytest.raises(common.UserError, match=r"torch .* is older than 2\.5, the oldest .*; install PyTorch"):
            common.check_torch(version)


def test_each_torch_script_stops_at_start_on_an_old_torch(tmp_path):
    # torch as an older release reports itself (sitecustomize runs before the script)
    (tmp_path / "sitecustomize.py").write_text("import torch\ntorch.__version__ = '2.4.1+cu121'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for name in ("train.py", "bench.py"):  # model.py checks, and fast.py (bench.py imports no model.py first)
        out = subprocess.run([sys.executable, os.path.join(HERE, name), "-h"], capture_output=True, text=True, env=env)
        assert out.returncode == 1 and out.stdout == "" and out.stderr.splitlines() == [
            f"error: torch 2.4.1+cu121 is older than 2.5, the oldest these scripts run on; {common.INSTALLS['torch']}"]


def test_a_closed_output_pipe_ends_a_script_quietly():
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line (`python data.py -h | head -0`)
    out = subprocess.run([sys.executable, os.path.join(HERE, "data.py"), "-h"], stdout=w, stderr=subprocess.PIPE,
                         text=True)
    os.close(w)
    assert out.returncode == 1 and out.stderr == ""
    # a broken pipe of another kind (a child's, a socket's) is not hidden
    code = "import common\ndef main():\n    raise BrokenPipeError(32, 'Broken pipe')\ncommon.cli(main)\n"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
    assert other.returncode == 1 and other.stderr.splitlines()[-1] == "BrokenPipeError: [Errno 32] Broken pipe"


def test_resume_guard_names_every_changed_setting():
    saved = {"lr": 0.1, "steps": 10, "log": 5}
    common.check_resume(saved, {"lr": 0.1, "steps": 10, "log": 7}, {"log"}, "ck.pt")
    with pytest.raises(common.UserError) as e:
        common.check_resume(saved, {"lr": 0.2, "steps": 11, "log": 5}, {"log"}, "ck.pt")
    assert "--lr 0.1 -> 0.2" in e.value.msg and "--steps 10 -> 11" in e.value.msg
    # a run saved before the `fast` setting existed ran the fast path: it resumes with fast on, not off
    common.check_resume(saved, {"lr": 0.1, "steps": 10, "log": 5, "fast": True}, {"log"}, "ck.pt")
    with pytest.raises(common.UserError, match=r"--fast True -> False"):
        common.check_resume(saved, {"lr": 0.1, "steps": 10, "log": 5, "fast": False}, {"log"}, "ck.pt")


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    d = tmp_path / "run"
    with common.lock_dir(str(d), "train.py"):
        lock = json.loads((d / ".lock").read_text())
        assert lock["pid"] == os.getpid()
        with pytest.raises(common.UserError, match=f"in use by train.py in process {os.getpid()}"):
            with common.lock_dir(str(d), "train.py"):
                pass
    assert not d.exists()  # made by the lock and left empty: removed with it
    with pytest.raises(common.UserError):
        with common.lock_dir(str(tmp_path / "new_out" / "luastories")):     # a new --out_dir too
            common.die("no models")
    assert sorted(os.listdir(tmp_path)) == []
    d.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (d / ".lock").write_text(json.dumps({"pid": dead.pid, "host": common.socket.gethostname(), "command": "x"}))
    (d / ".ckpt.pt.abc.tmp").write_bytes(b"half a file")
    (d / "ckpt.pt").write_bytes(b"kept")
    with common.lock_dir(str(d)):
        assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
    assert sorted(os.listdir(d)) == ["ckpt.pt"]  # the interrupted write's temp file is gone, the real file kept


def test_disk_checks_fail_early_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(common.UserError, match="only .* MB are free"):
        common.check_free_space(str(tmp_path / "new" / "dir"), 1 << 62, "training")
    common.check_free_space(str(tmp_path), 1, "training")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(common.UserError, match="cannot write in"):
        common.check_writable(str(f / "sub"))  # a file where a folder should be


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    common.atomic_write_bytes(path, b"old")

    def full(f):
        raise OSError(28, "No space left on device")
    with pytest.raises(common.UserError, match="disk is full"):
        common.atomic_write(path, full)
    monkeypatch.setattr(common, "_disk_free", lambda p: 0)

    def torch_full(f):  # torch.save on a full disk raises a RuntimeError, not an OSError
        raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")
    with pytest.raises(common.UserError, match="disk is full"):
        common.atomic_write(path, torch_full)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.pt"]


def test_cli_exit_status(tmp_path):
    code = ("import sys; sys.path.insert(0, %r); import common\n"
            "def main():\n    common.die('bad thing; fix it')\ncommon.cli(main)\n") % HERE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == "error: bad thing; fix it\n"
    # a name read from a record, with a newline and a terminal escape in it, stays one line of plain text
    code = code.replace("'bad thing; fix it'", "'no model x\\n\\x1b[2Jy; fix it'")  # (a newline, ESC [2J at run time)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == "error: no model x\\n\\x1b[2Jy; fix it\n"


def test_a_file_that_does_not_fit_is_named_but_out_of_memory_is_the_machines(tmp_path):
    """misfit: a file whose weights do not fit its args is one line naming it and --overwrite; running out of
    memory while loading a good file (resuming on a smaller GPU) must never tell the user to throw it away."""
    with pytest.raises(common.UserError, match=r"^error: f\.pt does not fit the model it describes \(ValueError: "
                                               r"size mismatch\): damaged or hand-made; remake it: python x\.py "
                                               r"--overwrite$"):
        common.misfit("f.pt", ValueError("size mismatch\nmore"), "model", "python x.py")
    for e in (MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
              RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")):
        with pytest.raises(type(e)) as got:
            common.misfit("f.pt", e, "model", "python x.py")
        assert got.value is e
    code = ("import sys; sys.path.insert(0, %r); import common\n"
            "def main():\n    raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
            "common.cli(main)\n") % HERE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: out of memory or past what a size can hold")


def test_an_overflow_is_not_called_out_of_memory():
    # a number past a float (an int of 10**400 in a JSON file read) is no memory the machine lacks: no advice to
    # lower the sizes or find a larger device; still one line and status 2
    code = ("import sys; sys.path.insert(0, %r); import common\n"
            "def main():\n    float(10 ** 400)\n"
            "common.cli(main)\n") % HERE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: a number too large to hold (int too large to convert to float)")
    assert "out of memory" not in out.stderr and "larger device" not in out.stderr


def test_json_nested_past_the_parsers_recursion_reads_as_damaged(tmp_path):
    # every reader's damaged-file path catches OSError and ValueError; a RecursionError slipped past them
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        common.read_json(str(path))
    with pytest.raises(common.UserError, match=r"deep\.json is not readable JSON \(ValueError: .*nested too deeply"):
        common.read_record(str(path), "results")


def test_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setattr(common, "free_cores", common.free_cores.__wrapped__)  # the real one, not conftest's pin
    try:
        assert common.set_threads(1) == 1 and torch.get_num_threads() == 1
        n = common.set_threads(0)
        assert 1 <= n <= (os.cpu_count() or 1)
        assert common.set_threads(3, "cuda") == n and torch.get_num_threads() == n  # a GPU run: left as it is
    finally:
        torch.set_num_threads(before)


def test_stage_jobs_plans_side_by_side_stages_two_on_a_cpu_one_per_gpu(monkeypatch):
    # reproduce.sh's JOBS: auto = 2 stages at once with half the free cores each on a CPU, one per GPU
    assert common.gpu_count("cpu") == common.gpu_count("cuda:1") == 0 == common.gpu_count("cuda:0")  # none to share
    monkeypatch.setattr(common, "gpu_count", lambda device: 0)
    for free, want in [(1, (1, 1, 0)), (2, (2, 1, 0)), (8, (2, 4, 0)), (9, (2, 4, 0))]:
        monkeypatch.setattr(common, "free_cores", lambda free=free: free)
        assert common.stage_jobs("auto", "cpu") == want
    assert common.stage_jobs("auto", "cuda:1") == (1, 9, 0)   # a GPU named: its stages one at a time
    assert common.stage_jobs("3", "cpu") == (3, 3, 0)        # JOBS given
    assert common.stage_jobs("auto", "cpu", threads=4) == (2, 4, 0)  # the user's --threads kept,
    assert common.stage_jobs("auto", "cpu", threads=5) == (1, 5, 0)  # two at once only where they fit
    for gpus, want in [(1, (1, 9, 1)), (4, (4, 2, 4))]:   # GPUs shared out: a stage each
        monkeypatch.setattr(common, "gpu_count", lambda device, gpus=gpus: gpus)
        assert common.stage_jobs("auto", "cuda") == want
    assert common.stage_jobs("2", "cuda") == (2, 4, 4)       # JOBS given: 2 at once, on the least busy GPUs
    assert common.cuda_possible("cuda") and not common.cuda_possible("cpu")


def test_stamp_makes_a_torch_file_plain_data_with_its_checksum(tmp_path):
    """What torch.load(weights_only=True) cannot read is converted at save time (issue 26); the checksum
    survives the round trip and changes with any value."""
    import dataclasses
    import types

    import numpy as np
    import torch

    @dataclasses.dataclass
    class Args:
        d: int = 4
    gen = torch.Generator().manual_seed(3)
    obj = {"f": np.float32(0.5), "i": np.int64(7), "a": np.arange(3), "args": Args(), "ns": types.SimpleNamespace(x=1),
           "rng": [gen], "v": torch.__version__, "t": (torch.ones(2, 3).T, torch.zeros(0), torch.tensor(2.0, dtype=torch.bfloat16)),
           "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99), "foreach": None}]}}
    st = common.stamp(obj, "sae_state")
    assert list(st)[:2] == ["kind", "format"] and list(st)[-1] == "checksum"
    assert (st["f"], st["i"], st["args"], st["ns"], type(st["v"])) == (0.5, 7, {"d": 4}, {"x": 1}, str)
    assert torch.equal(st["a"], torch.arange(3)) and torch.equal(st["rng"][0], gen.get_state())
    torch.save(st, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert common.checksum(back) == st["checksum"] == common.checksum(st)
    back["opt"]["param_groups"][0]["betas"] = (0.9, 0.999)
    assert common.checksum(back) != st["checksum"]
    w = torch.arange(6, dtype=torch.float32)                          # the same bytes read another way: not whole
    sums = {common.checksum({"w": x}) for x in (w, w.reshape(2, 3), w.reshape(3, 2), w.view(torch.int32))}
    assert len(sums) == 4
    with pytest.raises(TypeError, match="cannot hold a object"):     # anything else: a programming error, at save
        common.stamp({"x": object()}, "model")



def test_a_torch_file_of_every_checksummed_format_is_checked():
    """Torch files carry a checksum from format 1 on (format 2 added JSON's): a format-1 file whose weights were
    changed after stamping is damaged, as a format-2 one is; one made before any checksum (format 0) reads."""
    import torch
    for fmt in (1, 2):
        st = common.stamp({"model": {"w": torch.arange(4.0)}, "model_args": {"d": 4}}, "model")
        st["format"] = fmt
        st["checksum"] = common.checksum(st)
        assert common.check_file(st, "m.pt", "model") is st
        st["model"]["w"][0] = 9.0
        with pytest.raises(SystemExit, match="m.pt is damaged: its contents do not match the checksum"):
            common.check_file(st, "m.pt", "model")
    old = {"kind": "model", "format": 0, "model": {"w": torch.arange(4.0)}, "model_args": {"d": 4}}
    assert common.check_file(old, "m.pt", "model") is old


def test_a_json_record_carries_a_checksum_that_a_flipped_digit_or_an_edit_breaks(tmp_path):
    """A JSON record is stamped as JSON reads it back (numpy as numbers, tuples as lists, NaN kept), with the
    checksum of that; a digit flipped on disk, or a value edited, is damaged for every reader (check_file) and
    for the stage that asks whether its own record is current (record_problem). A record made before JSON
    checksums (format 1, none) still reads."""
    import numpy as np
    rec = common.stamp({"val_loss": {"lua": np.float32(0.5)}, "pair": (1, 2), "nan": float("nan"),
                        "history": [{"iter": 3, "train_loss": 4.25}]}, "train_metrics")
    assert list(rec)[:2] == ["kind", "format"] and rec["format"] == 2 and rec["pair"] == [1, 2]
    path = str(tmp_path / "metrics.json")
    common.atomic_write_json(path, rec)
    assert common.check_file(common.read_json(path), path, "train_metrics") is not None
    assert common.record_problem(common.read_json(path), "train_metrics") is None
    for old, new in (("4.25", "9.25"), ('"lua": 0.5', '"lua": 0.25')):
        text = open(path).read()
        open(path, "w").write(text.replace(old, new))
        with pytest.raises(SystemExit, match=r"metrics\.json is damaged: its contents do not match the checksum"):
            common.check_file(common.read_json(path), path, "train_metrics", "python train.py --domain lua")
        assert "damaged" in common.record_problem(common.read_json(path), "train_metrics")
        open(path, "w").write(text)
    odd = common.stamp({"val_loss": {}, "path": "/tmp/out_\udce9", "text": "caf\u00e9 \u2028"}, "train_metrics")
    common.atomic_write_json(path, odd)                 # a folder's undecodable byte, non-ASCII text: whole
    assert common.record_problem(common.read_json(path), "train_metrics") is None
    older = {k: v for k, v in rec.items() if k != "checksum"}
    older["format"] = 1
    assert common.record_problem(older, "train_metrics") is None
    stripped = {**older, "format": 2, "val_loss": {"lua": 0.01}}  # edited, its checksum dropped: not a finding
    assert common.record_problem(stripped, "train_metrics") == \
        "train.py's metrics of format 2 without the checksum written with it: damaged or hand-made"
    with pytest.raises(SystemExit, match=r"metrics\.json is train\.py's metrics of format 2 without the checksum"):
        common.check_file(stripped, path, "train_metrics", "python train.py --domain lua")
    newer = {**rec, "format": 3}                        # its checksum may be summed otherwise: a version, not damage
    with pytest.raises(SystemExit, match=r"metrics\.json is train\.py's metrics of format 3, written by newer code "
                                         r"\(this code reads formats up to 2\); remake it: python train\.py"):
        common.check_file(newer, path, "train_metrics", "python train.py --domain lua")
    for fmt in (-1, "2", 2.0, True):                     # no version writes these: not "newer code"
        got = common.record_problem({**rec, "format": fmt}, "train_metrics")
        assert got == f"train.py's metrics of format {fmt!r}, not one any version writes: damaged or hand-made"


def test_lock_removes_temp_files_a_killed_run_left_in_subfolders_only_when_asked(tmp_path):
    """data.py (the one writer of data_dir) clears its killed runs' temp files in every subfolder; a stage in
    out_dir does not touch the folders of other stages, which may be writing now."""
    for sub in (tmp_path / "d" / "base", tmp_path / "o" / "lua"):
        sub.mkdir(parents=True)
        (sub / ".train.bin.x1.tmp").write_text("half")
        (sub / "train.bin").write_text("whole")
    with common.lock_dir(str(tmp_path / "d"), "data.py", subfolders=True):
        pass
    with common.lock_dir(str(tmp_path / "o"), "merge.py --sweep"):
        pass
    assert sorted(os.listdir(tmp_path / "d" / "base")) == ["train.bin"]
    assert sorted(os.listdir(tmp_path / "o" / "lua")) == [".train.bin.x1.tmp", "train.bin"]
    # an out_dir inside data_dir: a stage's folder there, locked by its running stage, is left alone (its
    # temp file may be the atomic write going on now); an unlocked one is cleared as data.py's own
    for name, locked in (("run_now", True), ("done", False)):
        sub = tmp_path / "d" / "out" / name
        sub.mkdir(parents=True)
        (sub / ".ckpt.pt.x2.tmp").write_text("half")
        if locked:
            (sub / ".lock").write_text(json.dumps({"pid": os.getpid(), "start": common.proc_start(os.getpid()),
                                                   "host": common.socket.gethostname()}))
    with common.lock_dir(str(tmp_path / "d"), "data.py", subfolders=True):
        pass
    assert sorted(os.listdir(tmp_path / "d" / "out" / "run_now")) == [".ckpt.pt.x2.tmp", ".lock"]
    assert os.listdir(tmp_path / "d" / "out" / "done") == []


def test_lock_of_a_reused_pid_is_taken_over_and_wrong_kinds_are_one_line(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / ".lock").write_text(json.dumps({"pid": os.getpid(), "start": 1, "host": common.socket.gethostname()}))
    with common.lock_dir(str(d)):                              # our pid, another start time: a reused pid
        assert json.loads((d / ".lock").read_text())["start"] == common.proc_start(os.getpid())
    for text in ("[1, 2]", "not json", json.dumps({"pid": -1})):
        (d / ".lock").write_text(text)
        with pytest.raises(common.UserError, match="not a lock file"):
            with common.lock_dir(str(d)):
                pass
    (d / ".lock").unlink()
    (d / ".lock").mkdir()
    with pytest.raises(common.UserError, match="is a folder"):
        with common.lock_dir(str(d)):
            pass


def test_made_as_now_compares_settings_but_how_only_code_and_inputs(monkeypatch):
    cfg = {"lr": 0.1, "threads": 2, "seq_len": 0}
    rec = common.stamp({"edges": {}, "sae_hashes": {}, "provenance": common.provenance(cfg, inputs={"m": "ab"})},
                       "diffing")
    rec = json.loads(json.dumps(rec))                                        # as read back from disk
    now = {"inputs": {"m": "ab"}}
    assert common.made_as_now(rec, "diffing", cfg, ("threads",), now)
    assert common.made_as_now(rec, "diffing", {**cfg, "threads": 8}, ("threads",), now)    # how, not what
    assert not common.made_as_now(rec, "diffing", {**cfg, "lr": 0.2}, ("threads",), now)
    assert not common.made_as_now(rec, "diffing", cfg, ("threads",), {"inputs": {"m": "cd"}})
    assert common.made_as_now(rec, "diffing", {**cfg, "seq_len": 24}, ("threads",), now,
                              same=lambda k, v, saved: k == "seq_len" or saved.get(k) == v)   # the stage's rule
    assert not common.made_as_now([rec], "diffing", cfg, ("threads",), now)                  # another shape
    old = {k: v for k, v in rec.items() if k != "checksum"}                  # edited, its checksum dropped ...
    assert not common.made_as_now(old, "diffing", cfg, ("threads",), now)
    assert not common.made_as_now({**old, "format": 1}, "diffing", cfg, ("threads",), now)  # ... and called older
    monkeypatch.setattr(common, "_CODE_VERSION", {**common.code_version(), "source_sha256": "other"})
    assert not common.made_as_now(rec, "diffing", cfg, ("threads",), now)                    # other code


def test_keep_settings_gives_each_command_in_a_message_the_settings_it_does_not_name():
    # each `python X.py` gets the folders and preset it takes and does not name itself; a later command's own
    # --data_dir (up to the next command or ';') is not the earlier one's
    given = {"out_dir": "o", "data_dir": "d x", "preset": "paper"}
    msg = "re-run python diffing.py, then python analyze.py --data_dir=mine; or python report.py"
    assert common.keep_settings(msg, given) == (
        "re-run python diffing.py --data_dir='d x' --out_dir=o --preset=paper, then python analyze.py "
        "--out_dir=o --preset=paper --data_dir=mine; or python report.py --out_dir=o")
    assert common.keep_settings("python sae.py --model lua --out_dir=x", given) == \
        "python sae.py --data_dir='d x' --preset=paper --model lua --out_dir=x"


def test_with_settings_names_what_a_recorded_config_sets_off_the_defaults_of_its_preset(monkeypatch):
    """The fix that remakes a file names each setting its recorded config has off the script's defaults after the
    config's preset (and variant); not the free ones, fast, those the command names, nor a value of another type
    than the default's. Values as the command line takes them, quoted for the shell."""
    defaults = {"model": "base", "arch": "relu", "lr": 0.1, "steps": 10, "shuffle": True, "seeds": [0, 1],
                "note": "", "log": 5, "fast": True, "mix": "tokens", "preset": "paper"}
    presets = {"paper": {}, "tiny": {"lr": 0.5, "steps": 2}, "tiny/finetune": {"lr": 0.25}}
    variant = lambda c: "finetune" if c["arch"] == "topk" else "pretrain"  # noqa: E731
    monkeypatch.setattr(common, "GIVEN", {"preset": "tiny"})
    cmd, free = "python x.py --model lua", {"log"}
    tiny = {**defaults, "preset": "tiny", "lr": 0.5, "steps": 2, "mix": "equal"}
    assert common.with_settings(cmd, tiny, defaults, presets, free) == cmd + " --mix equal"
    made = {**tiny, "model": "other", "steps": 3, "shuffle": False, "seeds": [0, 2], "note": "a b", "log": 9,
            "fast": False, "lr": 1, "mix": "tokens"}
    assert common.with_settings(cmd, made, defaults, presets, free) == \
        cmd + " --lr 1 --steps 3 --shuffle false --seeds 0,2 --note 'a b'"
    assert common.with_settings(cmd, {**made, "steps": "3", "lr": None, "shuffle": 0}, defaults, presets, free) == \
        cmd + " --seeds 0,2 --note 'a b'"                                # hand-made types: left out
    # the variant's preset: topk's lr 0.25 is its default; a config saved before `mix` existed had equal shares
    topk = {k: v for k, v in tiny.items() if k != "mix"}
    assert common.with_settings(cmd, {**topk, "arch": "topk", "lr": 0.25}, defaults, presets, free, variant) == \
        cmd + " --arch topk --mix equal"
    assert common.with_settings(cmd, {**topk, "lr": 0.25}, defaults, presets, free, variant) == \
        cmd + " --lr 0.25 --mix equal"
    # the preset itself where the command would run another (this run's, or the machine's default without one)
    assert common.with_settings(cmd, {**defaults, "lr": 0.5}, defaults, presets, free) == \
        cmd + " --preset paper --lr 0.5"
    assert common.with_settings(cmd + " --preset=paper", {**defaults, "lr": 0.5}, defaults, presets, free) == \
        cmd + " --preset=paper --lr 0.5"
    for nothing in (None, {}, "a record", [1]):                          # nothing recorded: the command as it is
        assert common.with_settings(cmd, nothing, defaults, presets, free) == cmd
