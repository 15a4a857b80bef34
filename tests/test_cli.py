"""Bad inputs, as a new user makes them (issue 12): each script is run as a command (`python
<script>.py ...`) on a tiny study made once in a temporary folder, and every bad input must be
refused with exit status 2 and exactly one line on stderr starting with `error:`, never a
traceback. Each case runs in its own copy of the study, so a case that is wrongly accepted cannot
change what the others see. The commands run in forks of one interpreter that has imported torch
once (helpers.run_scripts; CLI_TEST_PROCESSES=1 starts a real process for each instead)."""
import errno
import json
import os
import shutil
import socket

import helpers
import pytest

V = 257  # a byte tokenizer: 256 bytes + <|endoftext|>
MODEL = ["--block_size=16", "--d_model=32", "--n_head=4", "--n_kv_head=2", "--d_mlp=64", "--batch_size=8",
         "--log_interval=5", "--eval_iters=2", "--eval_interval=1000", "--warmup_iters=2", "--threads=1"]
SAE = ["--expansion=2", "--seqs_per_batch=8", "--tokens_per_seq=4", "--total_acts=384", "--buffer_batches=4",
       "--harvest_batch=16", "--eval_seqs=8", "--eval_batch=8", "--lr=3e-3", "--log_interval=8",
       "--eval_interval=1000", "--ckpt_interval=1000", "--dead_window=64", "--resample_every=6",
       "--health_at=0", "--device=cpu"]  # no early check: a few dozen steps on toy models are not what it checks
# what a printed fix names of MODEL's and SAE's settings (common.with_settings): those off the tiny preset that change
# what is made (not the log's, the evaluation's, threads or device); seq_len as sae.py resolved it (block_size 16)
MODEL_FIX = "--block_size 16 --d_model 32 --d_mlp 64 --batch_size 8 --warmup_iters 2"
SAE_FIX = ("--expansion 2 --resample_every 6 --dead_window 64 --lr 0.003 --seqs_per_batch 8 --tokens_per_seq 4 "
           "--seq_len 16 --total_acts 384 --buffer_batches 4 --eval_seqs 8")
ANALYZE = ["--models=base,lua", "--domains=base,lua", "--n_tokens=512", "--min_tokens=256", "--batch_size=16",
           "--n_select=2", "--ctx_window=8", "--device=cpu"]


def run_ok(commands, folder):
    for cmd, proc in zip(commands, helpers.run_scripts(commands, folder, parallel=3)):
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """data/ (byte tokenizer, three learnable domains), out/ (base, lua, tinystories, luastories, an unrelated
    'other', SAEs of base and lua), unfinished/ (a base stopped early). Made by the scripts themselves."""
    root = tmp_path_factory.mktemp("study")
    logs = str(tmp_path_factory.mktemp("study_logs"))
    data, out, unfinished = (str(root / n) for n in ("data", "out", "unfinished"))
    th = helpers.write_tokenizer(data)
    for i, d in enumerate(("base", "lua", "tinystories")):
        helpers.write_domain(data, d, seed=i, vocab=V, tok_hash=th, n=6000, noise=0.1)
    dirs = [f"--data_dir={data}", f"--out_dir={out}", "--preset=tiny"]
    run_ok([["train.py", "--domain=base", "--max_iters=20", "--lr=3e-3", *dirs, *MODEL],       # independent: at once
            ["train.py", "--domain=base", "--name=other", "--seed=7", "--max_iters=4", *dirs, *MODEL],
            ["train.py", "--domain=base", "--max_iters=10", "--stop_iter=3", f"--data_dir={data}",
             f"--out_dir={unfinished}", "--preset=tiny", *MODEL]], os.path.join(logs, "1"))
    run_ok([*[["train.py", f"--domain={d}", "--max_iters=4", *dirs, *MODEL] for d in ("lua", "tinystories")],
            ["sae.py", "--model=base", *dirs, *SAE]], os.path.join(logs, "2"))
    run_ok([["merge.py", *dirs, "--eval_batches=1", "--batch_size=4"], ["sae.py", "--model=lua", *dirs, *SAE]],
           os.path.join(logs, "3"))
    return root


# -----------------------------------------------------------------------------
# what each case does to its copy of the study before the command runs

def truncate(rel, size=lambda n: n // 2):
    def edit(ws):
        path = os.path.join(ws, rel)
        os.truncate(path, size(os.path.getsize(path)))
    return edit


def append_byte(rel):
    def edit(ws):
        with open(os.path.join(ws, rel), "ab") as f:
            f.write(b"\0")
    return edit


def edit_meta(domain, change):
    def edit(ws):
        path = os.path.join(ws, "data", domain, "meta.json")
        with open(path) as f:
            text = f.read()
        new = change(json.loads(text)) if callable(change) else change
        with open(path, "w") as f:
            f.write(new if isinstance(new, str) else json.dumps(new))
    return edit


def without(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


def edit_json(rel, **fields):
    """rel, a JSON record of the study, with fields set to values of the wrong type: whole JSON of the right
    outer shape, as a hand edit leaves it."""
    def edit(ws):
        path = os.path.join(ws, rel)
        with open(path) as f:
            obj = json.load(f)
        with open(path, "w") as f:
            json.dump({**obj, **fields}, f)
    return edit


DEEP = "[" * 200_000  # valid JSON's start, nested past what the parser's recursion holds


def remove(rel):
    return lambda ws: os.remove(os.path.join(ws, rel))


def live_lock(rel):
    """A lock held by a live process (this one) on an output folder, as a concurrent run would hold it."""
    def edit(ws):
        os.makedirs(os.path.join(ws, rel), exist_ok=True)
        with open(os.path.join(ws, rel, ".lock"), "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": "train.py --domain base",
                       "since": "2026-01-01T00:00:00+0000"}, f)
    return edit


def bad_corpus(ws):
    """A local corpus (data.py's local:DIR layout) whose babylm text has a byte that is not UTF-8."""
    for d in ("babylm", "python", "lua", "tinystories"):
        os.makedirs(os.path.join(ws, "corpus", d))
        for name in ("train.txt", "valid.txt"):
            with open(os.path.join(ws, "corpus", d, name), "wb") as f:
                f.write(b"Some text in plain words.\n\nAnother document here.\n" * 20)
    with open(os.path.join(ws, "corpus", "babylm", "train.txt"), "ab") as f:
        f.write(b"caf\xe9 au lait\n")


def readonly_out(ws):
    """An out dir that cannot be written: chmod 555, or, for root (whom permissions do not stop), a path in
    sysfs, where nobody can create a folder."""
    if os.geteuid() != 0:
        os.makedirs(os.path.join(ws, "ro"))
        os.chmod(os.path.join(ws, "ro"), 0o555)
        return os.path.join(ws, "ro")
    try:
        os.makedirs("/sys/robust-test-readonly/out")
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "/sys/robust-test-readonly/out"
    pytest.skip("no read-only folder to try here")


class Payload:
    """A pickled object whose loading runs code: it would create the marker file {ws}/PWNED."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def payload(rel):
    """rel replaced by a torch file holding a Payload where the weights were."""
    def edit(ws):
        import torch
        torch.save({"model": {"w": Payload(os.path.join(ws, "PWNED"))}, "model_args": {}}, os.path.join(ws, rel))
    return edit


def flip(rel):
    """Bytes flipped inside the largest tensor's data of a torch file: it still loads, its checksum does not match."""
    def edit(ws):
        import torch
        path = os.path.join(ws, rel)
        obj, tensors = torch.load(path, weights_only=True), []

        def walk(o):
            if isinstance(o, torch.Tensor):
                tensors.append(o)
            for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):
                walk(v)
        walk(obj)
        raw = max(tensors, key=lambda t: t.numel()).contiguous().view(torch.uint8).numpy().tobytes()
        with open(path, "rb") as f:
            data = bytearray(f.read())
        at = data.find(raw) + len(raw) // 2
        assert data.find(raw) >= 0
        data[at:at + 8] = bytes(b ^ 0x5A for b in data[at:at + 8])
        with open(path, "wb") as f:
            f.write(data)
    return edit


def put(rel, make):
    """rel replaced by what make(ws) returns: bytes or text written as they are, anything else torch.save'd."""
    def edit(ws):
        obj, path = make(ws), os.path.join(ws, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(obj, (bytes, str)):
            with open(path, "wb") as f:
                f.write(obj if isinstance(obj, bytes) else obj.encode())
        else:
            import torch
            torch.save(obj, path)
    return edit


def copy(src, dst):
    return put(dst, lambda ws: open(os.path.join(ws, src), "rb").read())


def tokens_at(rel, value, at=100, n=20):
    """n token ids of a token file (uint16) set to value, in place: in range (garbage) or out of the vocabulary."""
    def edit(ws):
        import numpy as np
        a = np.memmap(os.path.join(ws, rel), dtype=np.uint16, mode="r+")
        a[at:at + n] = value
        a.flush()
    return edit


def both(*edits):
    return lambda ws: [e(ws) for e in edits]


def lock_of(rel, kind):
    """rel/.lock as something that is no lock of a live run: a folder, a JSON list, garbage text, a lock file
    with pid 0 (kill(0) would ask about the whole process group), or (reused) the lock of this live process
    with another start time: its pid was reused, so the lock is stale and the run goes ahead."""
    def edit(ws):
        path = os.path.join(ws, rel, ".lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "dir":
            os.makedirs(os.path.join(path, "x"))
            return
        text = {"list": "[1, 2]", "garbage": "lorem ipsum \x01",
                "pid0": json.dumps({"pid": 0, "host": socket.gethostname()}),
                "reused": json.dumps({"pid": os.getpid(), "start": 1, "host": socket.gethostname(),
                                      "command": "train.py --domain base", "since": "2026-01-01T00:00:00+0000"})}[kind]
        with open(path, "w") as f:
            f.write(text)
        if kind == "garbage":  # older than the 5 s a lock may take to be written
            os.utime(path, (1, 1))
    return edit


def swap(a, b):
    """Two folders of the study swapped (each checkpoint still says which model it is)."""
    def edit(ws):
        pa, pb = os.path.join(ws, a), os.path.join(ws, b)
        os.rename(pa, pa + ".swap")
        os.rename(pb, pa)
        os.rename(pa + ".swap", pb)
    return edit


def copied_in(src, dst, name):
    """Another run's model copied into a study folder: src's checkpoint under the run name `name`, re-stamped."""
    def edit(ws):
        import torch
        from common import atomic_torch_save, stamp
        ck = torch.load(os.path.join(ws, src, "ckpt.pt"), weights_only=False)
        ck["name"] = name
        atomic_torch_save(stamp(ck, "model"), os.path.join(ws, dst, "ckpt.pt"))
    return edit


TRAIN, SAE_RUN, MERGE = "train.py", "sae.py", "merge.py"
D, O, U = "--data_dir={ws}/data", "--out_dir={ws}/out", "--out_dir={ws}/unfinished"
FRESH = "--out_dir={ws}/fresh"  # an empty out dir: a wrongly accepted run would train, not stop at "exists"
BASE = [TRAIN, "--domain=base", D, FRESH, "--preset=tiny", *MODEL, "--max_iters=3"]
LUA2 = [TRAIN, "--domain=lua", "--name=lua2", D, O, "--preset=tiny", *MODEL, "--max_iters=3"]  # a fine-tune of base
SAE_TS = [SAE_RUN, "--model=tinystories", D, O, "--preset=tiny", *SAE]
SAE_LUA_RESUME = [SAE_RUN, "--model=lua", D, O, "--preset=tiny", *SAE, "--resume"]
# a finished SAE run stands without its training state; with metrics.json gone, --resume must read it
NEEDS_STATE = remove("out/sae_lua/metrics.json")
MERGE_M2 = [MERGE, D, O, "--preset=tiny", "--out=m2", "--eval_batches=1", "--batch_size=4"]
MERGE_AGAIN = [MERGE, D, O, "--preset=tiny", "--eval_batches=1", "--batch_size=4"]  # the study's own merge, again
LUA_RESUME = [TRAIN, "--domain=lua", D, O, "--preset=tiny", *MODEL, "--max_iters=4", "--resume"]  # finished: kept
# case: (the record its stage must find damaged and rewrite whole, its kind)
REWRITTEN = {**{f"damaged-sae-metrics-{k}": ("out/sae_lua/metrics.json", "sae_metrics")
                for k in ("seeds-text", "seeds-a-list", "history-ints", "nested-deep")},
             "damaged-merge-record-checkpoint-text": ("out/luastories/merge.json", "merge"),
             **{f"damaged-train-metrics-{k}": ("out/lua/metrics.json", "train_metrics")
                for k in ("val-loss-text", "history-ints")}}
ANALYZE_RUN = ["analyze.py", D, O, "--preset=tiny", *ANALYZE]

# (id, argv, edit of the copy or None, regex the error line must match)
CASES = [
    # train.py: settings
    ("train-epochs-0", [*BASE[:-1], "--epochs=0"], None, r"epochs"),
    ("train-max_iters-neg", [*BASE[:-1], "--max_iters=-5", "--epochs=0"], None, r"max_iters|epochs"),
    ("train-warmup-neg", [*BASE, "--warmup_iters=-5"], None, r"warmup_iters"),
    ("train-lr-nan", [*BASE, "--lr=nan"], None, r"--lr"),
    ("train-lr-neg", [*BASE, "--lr=-1"], None, r"--lr"),
    ("train-n_head-0", [*BASE, "--n_head=0"], None, r"n_head"),
    ("train-block_size-0", [*BASE, "--block_size=0"], None, r"block_size"),
    ("train-batch_size-0", [*BASE, "--batch_size=0"], None, r"batch_size"),
    ("train-out_dir-empty", [TRAIN, "--domain=base", D, "--out_dir=", "--preset=tiny", *MODEL], None,
     r"--out_dir is empty \(the current folder\); give a folder"),
    ("train-unknown-domain", [*BASE[:1], "--domain=python3", *BASE[2:]], None, r"domain.*python3|python3.*domain"),
    ("train-unknown-option", [*BASE, "--learning_rate=1"], None, r"unknown option --learning_rate"),
    ("train-not-an-int", [*BASE, "--max_iters=ten"], None, r"max_iters.*integer|integer.*max_iters"),
    # train.py: data
    ("train-truncated-bin", BASE, truncate("data/base/train.bin"), r"train\.bin"),
    ("train-odd-byte-bin", BASE, append_byte("data/base/train.bin"), r"train\.bin"),
    ("train-meta-not-json", BASE, edit_meta("base", '{"domain": "base", '), r"meta\.json"),
    ("train-meta-no-tokenizer-hash", BASE, edit_meta("base", without("tokenizer_hash")), r"meta\.json"),
    ("train-meta-bad-dtype", BASE, edit_meta("base", lambda m: {**m, "dtype": "float32"}), r"meta\.json|dtype"),
    ("train-meta-smaller-vocab", BASE, edit_meta("base", lambda m: {**m, "vocab_size": 32}), r"vocab"),
    ("train-no-bpe-tiktoken", BASE, remove("data/tokenizer/bpe.tiktoken"), r"bpe\.tiktoken"),
    # train.py: outputs and parents
    ("train-out-locked", [TRAIN, "--domain=base", D, FRESH, "--preset=tiny", *MODEL, "--max_iters=3"],
     live_lock("fresh/base"), r"in use|lock"),
    ("train-readonly-out", [TRAIN, "--domain=base", D, "--out_dir={ro}", "--preset=tiny", *MODEL, "--max_iters=3"],
     None, r"writ|read-only|permi"),
    ("train-unfinished-parent", [TRAIN, "--domain=lua", D, U, "--preset=tiny", *MODEL, "--max_iters=3"], None,
     r"unfinished|allow_unfinished"),
    ("train-resume-finished-changed-lr", [TRAIN, "--domain=lua", D, O, "--preset=tiny", *MODEL, "--max_iters=4",
                                          "--resume", "--lr=0.1"], None, r"other settings|lr"),
    ("train-exists-no-resume", [TRAIN, "--domain=lua", D, O, "--preset=tiny", *MODEL, "--max_iters=4"], None,
     r"exists|--resume"),
    # --resume with --overwrite: refused, never the overwrite (the finished lua, its merge and SAEs, lost)
    ("train-resume-and-overwrite", [*LUA_RESUME, "--overwrite"], None, r"--resume .* --overwrite .* give one"),
    # a merge's folder trained over (--overwrite as train.py's own hint said) left merge.json beside a trained
    # model: merge.py then refused the folder and analyze.py named merge.py --overwrite, a dead end
    ("train-over-a-merge", [TRAIN, "--domain=base", "--name=m3", D, O, "--preset=tiny", *MODEL, "--max_iters=3",
                            "--overwrite"], lambda ws: shutil.copytree(os.path.join(ws, "out", "luastories"),
                                                                       os.path.join(ws, "out", "m3")),
     r"--name m3: .* holds a merge"),
    ("train-over-the-study-merge", [TRAIN, "--domain=base", "--name=luastories", D, O, "--preset=tiny", *MODEL,
                                    "--max_iters=3", "--overwrite"], None, r"--name luastories is the folder of"),
    ("sae-resume-and-overwrite", [*SAE_LUA_RESUME, "--overwrite"], None, r"--resume .* --overwrite .* give one"),
    # sae.py
    ("sae-l1-nan", [SAE_RUN, "--model=base", D, FRESH, "--preset=tiny", *SAE, "--l1_coeff=nan"], None, r"l1_coeff"),
    ("sae-lr-nan", [SAE_RUN, "--model=base", D, O, "--preset=tiny", *SAE, "--lr=nan", "--overwrite"], None, r"--lr"),
    ("sae-lr-neg", [SAE_RUN, "--model=base", D, O, "--preset=tiny", *SAE, "--lr=-1", "--overwrite"], None, r"--lr"),
    ("sae-truncated-bin", [SAE_RUN, "--model=base", D, O, "--preset=tiny", *SAE, "--overwrite"],
     truncate("data/base/train.bin"), r"train\.bin"),
    ("sae-unfinished-model", [SAE_RUN, "--model=base", D, U, "--preset=tiny", *SAE], None,
     r"unfinished|allow_unfinished"),
    ("sae-unknown-model", [SAE_RUN, "--model=gpt5", D, O, "--preset=tiny", *SAE], None, r"gpt5"),
    ("sae-resume-changed-lr", [SAE_RUN, "--model=lua", D, O, "--preset=tiny", *SAE[:8], "--lr=0.1", *SAE[9:],
                               "--resume"], None, r"other settings|lr"),
    ("sae-seeds-twice", [SAE_RUN, "--model=base", D, FRESH, "--preset=tiny", *SAE, "--seeds=0,0"], None, r"seeds"),
    ("sae-expansion-0", [SAE_RUN, "--model=base", D, FRESH, "--preset=tiny", *SAE, "--expansion=0"], None,
     r"expansion"),
    ("sae-arch-unknown", [SAE_RUN, "--model=base", D, FRESH, "--preset=tiny", *SAE, "--arch=gelu"], None, r"arch"),
    ("sae-seq-len-too-long", [SAE_RUN, "--model=tinystories", D, O, "--preset=tiny", *SAE, "--seq_len=999"], None,
     r"seq_len|block_size"),
    # merge.py
    ("merge-unrelated", [MERGE, D, O, "--preset=tiny", "--a=lua", "--b=other", "--out=mixed"], None,
     r"common parent|unrelated"),
    ("merge-t-above-1", [MERGE, D, O, "--preset=tiny", "--t=1.5", "--out=m2"], None, r"--t|\bt\b"),
    ("merge-t-negative", [MERGE, D, O, "--preset=tiny", "--t=-0.1", "--out=m2"], None, r"--t|\bt\b"),
    ("merge-t-nan", [MERGE, D, O, "--preset=tiny", "--t=nan", "--out=m2"], None, r"--t|\bt\b"),
    ("merge-missing-model", [MERGE, D, O, "--preset=tiny", "--b=nosuch", "--out=m2"], None, r"nosuch"),
    ("merge-unknown-option", [MERGE, D, O, "--preset=tiny", "--alpha=0.5"], None, r"unknown option --alpha"),
    ("merge-bad-t-rules", [MERGE, D, O, "--preset=tiny", "--t_rules=attn:0.3", "--out=m2"], None, r"t_rules"),
    ("merge-t-rules-above-1", [MERGE, D, O, "--preset=tiny", "--t_rules=attn=2", "--out=m2"], None, r"t_rules|\[0, 1\]"),
    # data.py
    ("data-val_frac-1.5", ["data.py", "--domain=all", "--data_dir={ws}/newdata", "--threads=0", "--val_frac=1.5"],
     None, r"val_frac"),
    ("data-unknown-domain", ["data.py", "--domain=klingon", "--data_dir={ws}/newdata"], None, r"klingon"),
    ("data-unknown-source", ["data.py", "--domain=all", "--source=ftp", "--data_dir={ws}/newdata"], None, r"source"),
    ("data-not-utf8", ["data.py", "--domain=all", "--source=local:{ws}/corpus", "--data_dir={ws}/newdata",
                       "--vocab_size=300"], bad_corpus, r"babylm.train\.txt.*UTF-8|UTF-8.*babylm.train\.txt"),
    ("data-vocab-below-bytes", ["data.py", "--domain=all", "--data_dir={ws}/newdata", "--vocab_size=100"], None,
     r"vocab_size"),
    # analyze.py
    ("analyze-threshold-1.5", ["analyze.py", D, O, "--preset=tiny", *ANALYZE, "--threshold=1.5"], None, r"threshold"),
    ("analyze-unknown-model", ["analyze.py", D, O, "--preset=tiny", *ANALYZE[1:], "--models=base,gpt5"], None,
     r"gpt5"),
    ("analyze-explain-failing", ["analyze.py", D, O, "--preset=tiny", *ANALYZE, "--explain",
                                 "--api_base={llm}"], None, r"explain.*HTTP 400|HTTP 400.*explain"),
    ("analyze-threshold-nan", ["analyze.py", D, O, "--preset=tiny", *ANALYZE, "--threshold=nan"], None, r"threshold"),
    ("analyze-n_tokens-0", ["analyze.py", D, O, "--preset=tiny", *ANALYZE[:2], "--n_tokens=0", *ANALYZE[3:]], None,
     r"n_tokens"),
    ("analyze-no-sae", ["analyze.py", D, O, "--preset=tiny", "--models=base,tinystories",
                        "--domains=base,tinystories", *ANALYZE[2:]], None, r"sae|SAE"),
    # explain.py
    ("explain-read_timeout-0", ["explain.py", "--features_json={ws}/f.json", "--read_timeout=0"], None, r"read_timeout"),
    ("explain-max_failures-0", ["explain.py", "--features_json={ws}/f.json", "--max_failures=0"], None, r"max_failures"),
    ("explain-timeout-nan", ["explain.py", "--features_json={ws}/f.json", "--connect_timeout=nan"], None,
     r"connect_timeout"),
    ("explain-bad-format", ["explain.py", "--features_json={ws}/f.json", "--explain_format=xml"], None,
     r"explain_format"),
    ("explain-no-features-file", ["explain.py", "--features_json={ws}/nosuch.json"], None, r"nosuch\.json"),
    ("explain-features-not-json", ["explain.py", "--features_json={ws}/data/base/train.bin"], None, r"train\.bin"),
    ("explain-features-a-folder", ["explain.py", "--features_json={ws}/data"], None,
     r"cannot read .*data \(.*\); give --features_json a JSON file"),
] + [
    # files (issue 26): data only, never code (nothing may create {ws}/PWNED); whole (checksums); of the kind the
    # reader wants. The message names the file.
    ("train-parent-pickle-payload", LUA2, payload("out/base/ckpt.pt"), r"base/ckpt\.pt .*nothing in it was run"),
    ("train-resume-pickle-payload", [TRAIN, "--domain=lua", D, O, "--preset=tiny", *MODEL, "--max_iters=4", "--resume"],
     payload("out/lua/ckpt.pt"),
     rf"lua/ckpt\.pt .*nothing in it was run.*train\.py .*--domain lua {MODEL_FIX} --max_iters 4 --overwrite$"),
    ("sae-model-pickle-payload", SAE_TS, payload("out/tinystories/ckpt.pt"), r"tinystories/ckpt\.pt .*nothing in it"),
    ("sae-state-pickle-payload", SAE_LUA_RESUME, both(NEEDS_STATE, payload("out/sae_lua/train_state.pt")),
     r"train_state\.pt .*nothing in it"),
    ("merge-pickle-payload", MERGE_M2, payload("out/tinystories/ckpt.pt"), r"tinystories/ckpt\.pt .*nothing in it"),
    ("analyze-model-pickle-payload", ANALYZE_RUN, payload("out/lua/ckpt.pt"), r"lua/ckpt\.pt .*nothing in it"),
    ("analyze-sae-pickle-payload", ANALYZE_RUN, payload("out/sae_base/sae_s0.pt"), r"sae_s0\.pt .*nothing in it"),
    ("train-parent-flipped-bytes", LUA2, flip("out/base/ckpt.pt"), r"base/ckpt\.pt is damaged.*train\.py .*--domain base"),
    ("train-resume-flipped-bytes", [TRAIN, "--domain=base", D, U, "--preset=tiny", *MODEL, "--max_iters=10", "--resume"],
     flip("unfinished/base/ckpt.pt"), r"base/ckpt\.pt is damaged"),
    ("sae-state-flipped-bytes", SAE_LUA_RESUME, both(NEEDS_STATE, flip("out/sae_lua/train_state.pt")),
     r"train_state\.pt is damaged"),
    ("merge-flipped-bytes", MERGE_M2, flip("out/lua/ckpt.pt"), r"lua/ckpt\.pt is damaged.*train\.py .*--domain lua"),
    ("analyze-sae-flipped-bytes", ANALYZE_RUN, flip("out/sae_base/sae_s0.pt"), r"sae_s0\.pt is damaged.*sae\.py"),
    ("train-bin-in-range-garbage", BASE, tokens_at("data/base/train.bin", 5), r"train\.bin is damaged.*data\.py"),
    ("train-bin-out-of-vocab", BASE, tokens_at("data/base/train.bin", V + 40), r"train\.bin holds token id 297"),
    ("train-bin-out-of-vocab-no-checksum", BASE, both(edit_meta("base", lambda m: {**m, "splits": {
        s: {"tokens": v["tokens"]} for s, v in m["splits"].items()}}), tokens_at("data/base/train.bin", V)),
     r"train\.bin holds token id 257"),
    ("sae-val-bin-garbage", [SAE_RUN, "--model=base", D, O, "--preset=tiny", *SAE, "--overwrite"],
     tokens_at("data/base/val.bin", 7), r"val\.bin is damaged"),
    ("analyze-val-bin-garbage", ANALYZE_RUN, tokens_at("data/lua/val.bin", 9), r"lua/val\.bin is damaged"),
    ("train-parent-bare-tensor", LUA2, put("out/base/ckpt.pt", lambda ws: __import__("torch").zeros(3)),
     r"base/ckpt\.pt is a bare tensor, not a model checkpoint"),
    ("sae-model-is-an-sae", SAE_TS, copy("out/sae_base/sae_s0.pt", "out/tinystories/ckpt.pt"),
     r"tinystories/ckpt\.pt is an SAE, not a model checkpoint"),
    ("merge-model-is-a-training-state", MERGE_M2, copy("out/sae_lua/train_state.pt", "out/tinystories/ckpt.pt"),
     r"tinystories/ckpt\.pt is an SAE training state, not a model checkpoint"),
    ("analyze-sae-is-a-model", ANALYZE_RUN, copy("out/base/ckpt.pt", "out/sae_base/sae_s0.pt"),
     r"sae_s0\.pt is a model checkpoint, not an SAE"),
    ("sae-state-is-an-sae", SAE_LUA_RESUME,
     both(NEEDS_STATE, copy("out/sae_lua/sae_s0.pt", "out/sae_lua/train_state.pt")),
     r"train_state\.pt is an SAE, not an SAE training state"),
    ("sweep-record-garbage", [MERGE, D, O, "--preset=tiny", "--sweep", "--eval_batches=1", "--batch_size=4", "--grid=0,1"],
     put("out/merge_sweep.json", lambda ws: '{"t": "all"}'), r"merge_sweep\.json is a dict of no known kind"),
    ("report-results-a-list", ["report.py", O], both(put("out/analysis/results.json", lambda ws: "[]"),
                                                     put("out/analysis/pages.json", lambda ws: "{}")),
     r"results\.json is a list, not analyze\.py's results"),
    ("report-results-are-pages", ["report.py", O], both(
        put("out/analysis/results.json", lambda ws: '{"kind": "pages", "format": 1, "pages": {}, "tok": []}'),
        put("out/analysis/pages.json", lambda ws: "{}")), r"results\.json is analyze\.py's feature pages, not"),
]

# issue 26, points 4-8: each family's cases; a pattern None is a case whose right answer is a correct run (exit 0)
SWEEP = [MERGE, D, O, "--preset=tiny", "--sweep", "--eval_batches=1", "--batch_size=4", "--grid=0,1"]
DATA_NEW = ["data.py", "--domain=all", "--data_dir={ws}/newdata", "--vocab_size=300", "--sample_kb=20", "--threads=1"]
WRITERS = {"train": (BASE, "fresh/base"), "sae": (SAE_TS, "out/sae_tinystories"), "merge": (MERGE_M2, "out/m2"),
           "sweep": (SWEEP, "out"), "analyze": (ANALYZE_RUN, "out/analysis"), "data": (DATA_NEW, "newdata"),
           "report": (["report.py", O], "out/analysis")}
LOCK_WORDS = {"dir": r"\.lock is a folder", "list": r"\.lock is not a lock file", "garbage": r"\.lock is not a lock file",
              "pid0": r"\.lock is not a lock file", "reused": None}
LUA2_PAPER = [a if a != "--preset=tiny" else "--preset=paper" for a in LUA2]
FIX_DIRS = r"--data_dir=\S+/data --out_dir=\S+/{} --preset=tiny"  # a printed fix keeps the user's folders and preset
FAMILIES = {
    "concurrent": [(f"concurrent-{w}-lock-{k}", argv, lock_of(rel, k), LOCK_WORDS[k]) for w, (argv, rel) in WRITERS.items()
                   for k in ("dir", "list", "garbage")]
    + [(f"concurrent-{w}-lock-reused-pid", WRITERS[w][0], lock_of(WRITERS[w][1], "reused"), None)
       for w in ("train", "sae", "merge", "sweep", "data")]
    + [("concurrent-train-lock-pid-0", BASE, lock_of("fresh/base", "pid0"), LOCK_WORDS["pid0"]),
       ("concurrent-report-locked", ["report.py", O], live_lock("out/analysis"), r"in use"),
       ("concurrent-merge-locked-before-loading", [*MERGE_M2, "--b=nosuch"], live_lock("out/m2"), r"in use"),
       ("concurrent-sweep-locked-before-loading", [*SWEEP, "--b=nosuch"], live_lock("out"), r"in use")],
    "hostile": [
        ("hostile-merge-out-base", [*MERGE_M2, "--out=base"], None, r"--out base would overwrite an input"),
        ("hostile-merge-out-trained-model", [*MERGE_M2, "--out=other"], None, r"holds a model train\.py made"),
        ("hostile-merge-out-sae-folder", [*MERGE_M2, "--out=sae_base"], None, r"plain folder name"),
        ("hostile-merge-out-analysis", [*MERGE_M2, "--out=analysis"], None, r"plain folder name"),
        ("hostile-merge-out-diffing", [*MERGE_M2, "--out=diffing"], None, r"not another stage's folder"),
        ("hostile-merge-out-path", [*MERGE_M2, "--out=../escape"], None, r"plain folder name"),
        ("hostile-merge-out-dot", [*MERGE_M2, "--out=."], None, r"plain folder name"),
        ("hostile-train-name-is-parent", [*LUA2, "--name=base", "--overwrite"], None, r"parent this fine-tune starts"),
        ("hostile-train-name-sae-folder", [*LUA2, "--name=sae_lua"], None, r"plain folder name"),
        ("hostile-train-name-another-study-model", [*LUA2, "--name=tinystories", "--overwrite"], None,
         r"--name tinystories is the folder of the study's tinystories model .* choose another --name \(e\.g\. --name lua_2\)$"),
        ("hostile-train-name-another-study-model-resume", [*LUA2, "--name=tinystories", "--resume"],
         remove("out/tinystories/ckpt.pt"), r"--name tinystories is the folder of"),  # nothing to resume there
        ("hostile-train-name-path", [*LUA2, "--name=../x"], None, r"plain folder name"),
        ("hostile-train-data-dir-is-out-dir", [TRAIN, "--domain=lua", D, "--out_dir={ws}/data/", "--preset=tiny",
                                              *MODEL], None, r"--data_dir and --out_dir are both"),
        ("hostile-sae-data-dir-is-out-dir", [SAE_RUN, "--model=base", "--data_dir={ws}/out", O, "--preset=tiny",
                                            *SAE], None, r"--data_dir and --out_dir are both"),
        ("hostile-explain-drip", ["explain.py", "--features_json={ws}/f3.json", "--api_base={drip}",
                                  "--answer_timeout=2", "--read_timeout=10", "--cache_dir={ws}/c"], None,
         r"did not end within 2 s"),
        ("hostile-explain-chunks-forever", ["explain.py", "--features_json={ws}/f3.json", "--api_base={forever}",
                                            "--answer_timeout=20", "--cache_dir={ws}/c"], None,
         r"ran past 4 MB|did not end within"),
        ("hostile-explain-slow-headers", ["explain.py", "--features_json={ws}/f3.json", "--api_base={slowhead}",
                                          "--answer_timeout=2", "--read_timeout=10", "--cache_dir={ws}/c"], None,
         r"did not end within 2 s"),
        ("hostile-merge-task-parent-payload", [*MERGE_M2, "--mode=task"], payload("out/base/ckpt.pt"),
         r"base/ckpt\.pt .*nothing in it"),
        ("hostile-train-resume-unfinished-payload", [TRAIN, "--domain=base", D, U, "--preset=tiny", *MODEL,
                                                     "--max_iters=10", "--resume"], payload("unfinished/base/ckpt.pt"),
         r"base/ckpt\.pt .*nothing in it"),
        ("hostile-sae-resume-model-payload", SAE_LUA_RESUME, payload("out/lua/ckpt.pt"), r"lua/ckpt\.pt .*nothing in it"),
        ("hostile-analyze-sae-lua-payload", ANALYZE_RUN, payload("out/sae_lua/sae_s0.pt"), r"sae_s0\.pt .*nothing in it"),
        ("hostile-sweep-payload", SWEEP, payload("out/lua/ckpt.pt"), r"lua/ckpt\.pt .*nothing in it"),
    ],
    "swapped": [
        ("swapped-merge-fine-tunes", MERGE_M2, swap("out/lua", "out/tinystories"), r"holds the model '(tinystories|lua)'"),
        ("swapped-sweep-fine-tunes", SWEEP, swap("out/lua", "out/tinystories"), r"holds the model '(tinystories|lua)'"),
        ("swapped-sae-model", SAE_TS, swap("out/lua", "out/tinystories"), r"tinystories/ckpt\.pt holds the model 'lua'"),
        ("swapped-train-parent", LUA2, swap("out/base", "out/lua"), r"base/ckpt\.pt holds the model 'lua'"),
        ("swapped-merge-another-runs-copy", MERGE_M2, copied_in("out/tinystories", "out/lua", "ts_alt"),
         r"lua/ckpt\.pt holds the model 'ts_alt' \(domain tinystories\), not 'lua'"),
        ("swapped-sae-merge-copied-in", SAE_TS, copied_in("out/luastories", "out/tinystories", "m2"),
         r"tinystories/ckpt\.pt holds the model 'm2' \(a merge\), not 'tinystories'"),
        ("swapped-analyze-models", ANALYZE_RUN, swap("out/base", "out/lua"), r"holds the model '(base|lua)'"),
        # a seed file copied in from another model's SAEs: its own run's training state remakes it, no retraining
        ("swapped-analyze-sae-file", ANALYZE_RUN, copy("out/sae_base/sae_s0.pt", "out/sae_lua/sae_s0.pt"),
         rf"sae_lua/sae_s0\.pt holds an SAE of model 'base', not 'lua'.* python sae\.py .*--model lua {SAE_FIX} "
         r"--resume$"),
        ("swapped-train-preset-of-parent", LUA2_PAPER, None, r"--preset paper differs from the preset tiny"),
        ("swapped-train-preset-allowed", [*LUA2_PAPER, "--allow_other_preset"], None, None),
    ],
    "damaged": [
        ("damaged-merged-model-flipped", [SAE_RUN, "--model=luastories", D, O, "--preset=tiny", *SAE],
         flip("out/luastories/ckpt.pt"), r"luastories/ckpt\.pt is damaged.*merge\.py"),
        ("damaged-sae-state-truncated", SAE_LUA_RESUME, both(NEEDS_STATE, truncate("out/sae_lua/train_state.pt")),
         rf"train_state\.pt .*remake it: python sae\.py .* --model lua {SAE_FIX} --overwrite$"),
        ("damaged-merge-record-other-kind", [MERGE, D, O, "--preset=tiny", "--eval_batches=1", "--batch_size=4"],
         put("out/luastories/merge.json", lambda ws: '{"kind": "results", "format": 1}'),
         r"merge\.json is analyze\.py's results, not a merge record"),
        ("damaged-sweep-record-a-list", SWEEP, put("out/merge_sweep.json", lambda ws: "[]"), r"merge_sweep\.json is a list"),
        ("damaged-analyze-sae-lua-flipped", ANALYZE_RUN, flip("out/sae_lua/sae_s0.pt"), r"sae_lua/sae_s0\.pt is damaged"),
        ("damaged-merge-b-flipped", MERGE_M2, flip("out/tinystories/ckpt.pt"), r"tinystories/ckpt\.pt is damaged"),
        ("damaged-sweep-a-flipped", SWEEP, flip("out/lua/ckpt.pt"), r"lua/ckpt\.pt is damaged"),
        ("damaged-merge-val-bin-garbage", MERGE_M2, tokens_at("data/tinystories/val.bin", 3),
         r"tinystories/val\.bin is damaged"),
        ("damaged-finetune-bin-out-of-vocab", LUA2, tokens_at("data/lua/train.bin", V + 5), r"lua/train\.bin holds token id"),
        ("damaged-merge-a-truncated", MERGE_M2, truncate("out/lua/ckpt.pt"),  # (the settings: its metrics.json's)
         rf"lua/ckpt\.pt .*remake it: python train\.py .* --domain lua {MODEL_FIX} --max_iters 4 --overwrite$"),
        # inner values of the wrong type in whole JSON: one line naming the file and its fix, or (a stage's own
        # record of a finished run, REWRITTEN) the record rewritten from the run's checkpoint or state
        ("damaged-meta-split-a-list", SAE_LUA_RESUME, edit_meta("lua", lambda m: {**m, "splits": {**m["splits"],
                                                                                                  "train": [1]}}),
         r"lua/meta\.json is damaged \(no token count for the train split\); re-make it: python data\.py"),
        ("damaged-tokenizer-format-a-list", MERGE_M2, edit_json("data/tokenizer/tokenizer.json", format=[]),
         r"tokenizer\.json is damaged .*re-make it: python data\.py .*--domain all"),
        ("damaged-meta-nested-deep", BASE, put("data/base/meta.json", lambda ws: DEEP),
         r"base/meta\.json is damaged \(not readable JSON\)"),
        ("damaged-results-nested-deep", ["report.py", O], both(put("out/analysis/results.json", lambda ws: DEEP),
                                                               put("out/analysis/pages.json", lambda ws: "{}")),
         r"results\.json is not readable JSON \(ValueError: .*nested too deeply"),
        ("damaged-sae-metrics-seeds-text", SAE_LUA_RESUME, edit_json("out/sae_lua/metrics.json",
                                                                     seeds={"0": "x", "1": "y"}), None),
        ("damaged-sae-metrics-seeds-a-list", SAE_LUA_RESUME, edit_json("out/sae_lua/metrics.json", seeds=["0", "1"]),
         None),
        ("damaged-sae-metrics-history-ints", SAE_LUA_RESUME, edit_json("out/sae_lua/metrics.json", history=[1, 2]),
         None),
        ("damaged-sae-metrics-nested-deep", SAE_LUA_RESUME, put("out/sae_lua/metrics.json", lambda ws: DEEP), None),
        ("damaged-merge-record-checkpoint-text", MERGE_AGAIN, edit_json("out/luastories/merge.json", checkpoint="x"),
         None),
        ("damaged-train-metrics-val-loss-text", LUA_RESUME, edit_json("out/lua/metrics.json", val_loss={"lua": "x"}),
         None),
        ("damaged-train-metrics-history-ints", LUA_RESUME, edit_json("out/lua/metrics.json", history=[1, 2]), None),
    ],
    "environment": [(f"environment-{s}-device-{d}", [*argv, f"--device={d}"], None, rf"--device '{d}' is not one")
                    for s, argv, d in (("train", BASE, "foo"), ("train", BASE, "mps"), ("sae", SAE_TS, "meta"),
                                       ("merge", MERGE_M2, "mps"), ("sweep", SWEEP, "foo"),
                                       ("analyze", ANALYZE_RUN[:-1], "meta"))]
    + [("environment-sae-aux_k-above-features", [*SAE_TS, "--arch=topk", "--k=4", "--aux_k=1000"], None,
        r"--aux_k 1000 .* 128 features"),
       ("environment-sae-resample_every-beyond-run", [*SAE_TS, "--resample_every=500"], None,
        r"--resample_every 500 is beyond the resampling window .* or 0 for no resampling"),
       ("environment-train-d_mlp-huge", [*BASE, "--d_mlp=1e12"], None, r"needs at least .* GB of cpu memory"),
       ("environment-train-max_iters-past-2-53", [*BASE, "--max_iters=1e60"], None, r"--max_iters .* too large"),
       ("environment-train-batch_size-huge", [*BASE, "--batch_size=1e15"], None, r"needs at least .* GB of cpu memory"),
       ("environment-sae-seqs_per_batch-huge", [*SAE_TS, "--seqs_per_batch=1e15", "--resample_every=0"], None,
        r"out of memory|too large"),
       ("environment-fix-keeps-folders-unfinished-parent", [TRAIN, "--domain=lua", D, U, "--preset=tiny", *MODEL,
                                                            "--max_iters=3"], None,
        r"python train\.py " + FIX_DIRS.format("unfinished") + rf" --domain base {MODEL_FIX} --max_iters 10 --resume"),
       ("environment-fix-keeps-folders-sae-unfinished", [SAE_RUN, "--model=base", D, U, "--preset=tiny", *SAE], None,
        r"python train\.py " + FIX_DIRS.format("unfinished") + rf" --domain base {MODEL_FIX} --max_iters 10 --resume"),
       ("environment-fix-keeps-folders-damaged-parent", LUA2, flip("out/base/ckpt.pt"),
        r"python train\.py " + FIX_DIRS.format("out") + r" --domain base --block_size 16 --d_model 32 --d_mlp 64 "
        r"--batch_size 8 --lr 0\.003 --warmup_iters 2 --max_iters 20 --overwrite"),  # (its metrics.json's settings)
       ("environment-fix-keeps-folders-no-sae", ["analyze.py", D, O, "--preset=tiny", "--models=base,tinystories",
                                                 "--domains=base,tinystories", *ANALYZE[2:]], None,
        r"python sae\.py " + FIX_DIRS.format("out") + r" --model tinystories"),
       # report.py and model.py take no --preset (report.py no --data_dir): the study's records give them
       ("environment-fix-keeps-folders-report-no-analysis", ["report.py", O], None,
        r"run the analysis first: python analyze\.py --data_dir=\S+/data --preset=tiny --out_dir \S+/out$"),
       ("environment-fix-keeps-folders-report-results", ["report.py", O], both(
           put("out/analysis/results.json", lambda ws: "[]"), put("out/analysis/pages.json", lambda ws: "{}")),
        r"remake it: python analyze\.py --data_dir=\S+/data --preset=tiny --out_dir \S+/out --overwrite$"),
       ("environment-fix-keeps-folders-model-py", ["model.py", D, O, "--model=lua"], flip("out/lua/ckpt.pt"),
        r"remake it: python train\.py " + FIX_DIRS.format("out") + rf" --domain lua {MODEL_FIX} --max_iters 4 "
        r"--overwrite$"),
       # a variant (train.py --name) is remade under its --name; --domain lua2 is no domain
       ("environment-fix-names-a-variant-merge-input", [*MERGE_M2, "--a=lua2"], None,
        r"no 'lua2' model checkpoint .*: python train\.py " + FIX_DIRS.format("out") + r" --domain DOMAIN --name lua2$"),
       ("environment-fix-names-a-variant-parent", [*LUA2, "--parent=base2"], None,
        r"no parent checkpoint 'base2' .*: python train\.py " + FIX_DIRS.format("out") + r" --domain DOMAIN --name base2$"),
       # a fine-tune of another parent than base is remade from that parent, not from base
       ("environment-fix-keeps-the-parent", [TRAIN, "--domain=lua", "--name=lua4", "--parent=other", D, O, "--preset=tiny",
                                             *MODEL, "--max_iters=3", "--resume"],
        both(copy("out/lua/ckpt.pt", "out/lua4/ckpt.pt"), flip("out/lua4/ckpt.pt")),
        rf"lua4/ckpt\.pt is damaged.* --domain lua --name lua4 --parent other {MODEL_FIX} --max_iters 3 --overwrite$")],
}
CASES += [case for cases in FAMILIES.values() for case in cases]


@pytest.fixture(scope="module")
def refusing_llm():
    """An LLM endpoint that refuses every request (HTTP 400: not retried), for analyze.py --explain."""
    srv, base = helpers.chat_server(lambda path, headers, body: (400, {}, b'{"error": "no"}'))
    yield base
    srv.shutdown()
    srv.server_close()


def hostile_server(kind):
    """An LLM endpoint that never finishes an answer: `drip` sends a 200 with a long body a byte every half
    second, `forever` chunks of 64 KB without end, `slowhead` its status line a byte every half second. Each
    connection's thread ends when the client hangs up. Returns (server, base url)."""
    import socketserver
    import threading
    import time

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            try:
                if kind == "slowhead":
                    for b in head * 1000:
                        self.request.sendall(bytes([b]))
                        time.sleep(0.5)
                elif kind == "drip":
                    self.request.sendall(head + b"Content-Length: 100000\r\n\r\n")
                    for _ in range(100000):
                        self.request.sendall(b" ")
                        time.sleep(0.5)
                else:
                    self.request.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                    while True:
                        self.request.sendall(b"10000\r\n" + b" " * 65536 + b"\r\n")
            except OSError:
                pass  # the client hung up

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


@pytest.fixture(scope="module")
def hostile_llms():
    servers = {k: hostile_server(k) for k in ("drip", "forever", "slowhead")}
    yield {k: base for k, (_, base) in servers.items()}
    for srv, _ in servers.values():
        srv.shutdown()
        srv.server_close()


def prepare(study, tmp, case, llm, hostile=None):
    """The case's own copy of the study, edited; returns (workspace, command)."""
    name, argv, edit, pattern = case
    ws = os.path.join(tmp, name)
    shutil.copytree(study, ws, symlinks=True)
    with open(os.path.join(ws, "f.json"), "w") as f:
        json.dump([{"key": "base/1", "top": [], "random": []}], f)
    with open(os.path.join(ws, "f3.json"), "w") as f:  # a feature with contexts: explain.py asks the server
        json.dump([{"key": "base/1", "top": [{"tokens": ["a", "b"], "acts": [0.0, float(i)]} for i in range(1, 5)],
                    "random": []}], f)
    subs = {"ws": ws, "llm": llm, **(hostile or {})}
    if "{ro}" in " ".join(argv):
        subs["ro"] = readonly_out(ws)
    if edit is not None:
        edit(ws)
    return ws, [a.format(**subs) for a in argv]


def test_the_table_is_big_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    assert sum(map(len, FAMILIES.values())) >= 60  # issue 26: the cases of points 4-7 and more of their families


@pytest.fixture(scope="module")
def outcomes(study, refusing_llm, hostile_llms, tmp_path_factory):
    """Every case run once, four at a time: {name: (workspace, CompletedProcess) or the skip}. CLI_CASES=REGEX
    runs only the cases whose names it matches (the others are skipped)."""
    import re
    tmp = str(tmp_path_factory.mktemp("cases"))
    ready, got, only = {}, {}, os.environ.get("CLI_CASES", "")
    for case in CASES:
        if not re.search(only, case[0]):
            got[case[0]] = pytest.skip.Exception(f"not in CLI_CASES={only}")
            continue
        try:
            ready[case[0]] = prepare(str(study), tmp, case, refusing_llm, hostile_llms)
        except pytest.skip.Exception as e:
            got[case[0]] = e
    procs = helpers.run_scripts([cmd for _, cmd in ready.values()], os.path.join(tmp, "logs"), parallel=4,
                                env={"NO_PROXY": "127.0.0.1,localhost", "OPENAI_API_KEY": ""})
    got.update({name: (ws, proc) for (name, (ws, _)), proc in zip(ready.items(), procs)})
    return got


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(outcomes, case):
    got = outcomes[case[0]]
    if isinstance(got, pytest.skip.Exception):
        pytest.skip(str(got))
    ws, proc = got
    if case[3] is None:  # the right answer is a correct run
        assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    else:
        helpers.assert_one_line_error(proc, case[3])
    assert not os.path.exists(os.path.join(ws, "PWNED")), "code from a file ran"
    if case[0] == "analyze-explain-failing":           # the analysis is written all the same
        assert os.path.exists(os.path.join(ws, "out", "analysis", "results.json"))
    if case[0] == "train-out-locked":                   # the holder is named; its lock is left alone
        assert str(os.getpid()) in proc.stderr and os.path.exists(os.path.join(ws, "fresh", "base", ".lock"))
    if case[0] in REWRITTEN:                            # rewritten whole, as its readers take it
        import common
        rel, kind = REWRITTEN[case[0]]
        assert "rewrit" in proc.stdout and common.record_problem(common.read_json(os.path.join(ws, rel)), kind) is None


# -----------------------------------------------------------------------------
# reproduce.sh's extra settings (issue 11): each goes to every stage that has the key, and only there

def fake_python(tmp_path):
    """A stand-in for python: `--help` lists a few keys per script, a stage's call is logged and succeeds,
    and `python -` (reproduce.sh's stage table) is the real one."""
    import sys
    stub = tmp_path / "python"
    stub.write_text(f"""#!/bin/sh
case "$*" in *--help*)
  case $1 in train.py) echo "  --compile=True      torch.compile"; echo "  --max_iters=0";;
             sae.py) echo "  --total_acts=1000   activations";;
             merge.py) echo "  --dot_threshold=0.9995";; esac; exit 0;; esac
[ "$1" = "-" ] && exec {sys.executable} "$@"
echo "$*" >> {tmp_path}/calls
""")
    stub.chmod(0o755)
    return {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data"),
            "JOBS": "1"}


def test_reproduce_passes_extra_settings_to_the_stages_that_take_them(tmp_path):
    import subprocess
    env = {**fake_python(tmp_path), "EXTRA": "--compile=false --dot_threshold=0.9"}
    out = tmp_path / "out"                                    # what earlier runs of the stages left: their metrics
    for name, metrics in {"base/metrics.json": {"tokens_per_s": 5000, "mfu": 0.4, "peak_gpu_mib": 4535.1},
                          "sae_lua/metrics.json": {"history": [{"step": 1, "act_per_s": 100.0},
                                                               {"step": 2, "eval": {}}, {"step": 3, "act_per_s": 300.0}]},
                          "analysis/results.json": {"stream_seconds": 2.0, "token_set": {"n_tokens": 4096}}}.items():
        os.makedirs(os.path.dirname(out / name), exist_ok=True)
        (out / name).write_text(json.dumps(metrics))
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh"), "--total-acts=500"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 11                                   # data, 3 x train, merge, sweep, 4 x sae, analyze
    # JOBS=1: one at a time, in the fixed order; the fine-tunes and SAEs resume (a finished one is skipped)
    assert [" ".join(c.split()[:3]) for c in calls] == [
        "data.py --domain all", "train.py --domain base", "train.py --domain lua", "train.py --domain tinystories",
        "sae.py --model base", "merge.py --preset=tiny --data_dir=" + str(tmp_path / "data"), "sae.py --model lua",
        "sae.py --model tinystories", "sae.py --model luastories", "merge.py --sweep --preset=tiny",
        "analyze.py --preset=tiny --data_dir=" + str(tmp_path / "data")]
    assert all(("--resume" in c.split()) == (c.split()[0] in ("train.py", "sae.py")) for c in calls)
    assert not any("--threads=" in c for c in calls)
    for call in calls:
        script = call.split()[0]
        assert ("--compile=false" in call) == (script == "train.py"), call
        assert ("--total-acts=500" in call) == (script == "sae.py"), call
        assert ("--dot_threshold=0.9" in call) == (script == "merge.py"), call
    # the stage table: reproduce.sh's wall times, each stage's throughput and MFU from its metrics
    table = json.loads((out / "analysis" / "stages.json").read_text())["stages"]
    rows = {r["stage"]: r for r in table}
    assert len(table) == 11 and all(r["wall_s"] >= 0 for r in table)
    assert "merge: luastories = SLERP(lua, tinystories, t=0.58 --dot_threshold=0.9)" in rows   # t: the default
    assert (rows["train base"]["rate"], rows["train base"]["unit"], rows["train base"]["mfu"]) == (5000, "tokens/s", 0.4)
    assert rows["sae for lua"]["rate"] == 200.0 and rows["sae for lua"]["unit"] == "activations/s"
    analysis = [r for name, r in rows.items() if name.startswith("analysis")][0]
    assert analysis["rate"] == 2048.0 and "up to date" in analysis["note"]   # made before this run
    assert rows["train lua"]["rate"] is None
    assert rows["train base"]["peak_gpu_mib"] == 4535.1 and rows["sae for lua"]["peak_gpu_mib"] is None  # a CPU run: none
    md = (out / "analysis" / "stages.md").read_text()
    assert "| train base |" in md and "5,000 tokens/s | 40.0% | 4,535 |" in md and md in proc.stdout


def test_reproduce_stage_table_leaves_out_values_that_are_not_numbers(tmp_path):
    # metrics of the right outer shape holding text, lists or non-dict history entries (hand-edited): the
    # closing table leaves those values out and says so; it is written all the same, never a traceback
    import subprocess
    out = tmp_path / "out"
    for name, metrics in {"base/metrics.json": {"tokens_per_s": "x", "mfu": [1], "peak_gpu_mib": {"a": 1}},
                          "lua/metrics.json": [1, 2],
                          "sae_base/metrics.json": {"history": [1, "x", {"step": 1, "act_per_s": "fast"}]},
                          "sae_lua/metrics.json": {"history": {"act_per_s": 3}, "mfu": True},
                          "sae_tinystories/metrics.json": {"history": [{"act_per_s": 100.0}, None]},
                          "analysis/results.json": {"stream_seconds": 2.0, "token_set": {"n_tokens": "many"},
                                                    "stream_passes": "two"}}.items():
        os.makedirs(os.path.dirname(out / name), exist_ok=True)
        (out / name).write_text(json.dumps(metrics))
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")], env=fake_python(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = {r["stage"]: r for r in json.loads((out / "analysis" / "stages.json").read_text())["stages"]}
    assert (rows["train base"]["rate"], rows["train base"]["mfu"], rows["train base"]["peak_gpu_mib"]) == (None,) * 3
    assert "tokens_per_s, mfu, peak_gpu_mib not a number" in rows["train base"]["note"]
    assert "is not a stage's record" in rows["train lua"]["note"]
    assert rows["sae for base"]["rate"] is None and "history, act_per_s not a number" in rows["sae for base"]["note"]
    assert rows["sae for lua"]["rate"] is None and "history, mfu not a number" in rows["sae for lua"]["note"]
    assert rows["sae for tinystories"]["rate"] == 100.0
    analysis = [r for name, r in rows.items() if name.startswith("analysis")][0]
    assert analysis["rate"] is None and "n_tokens, stream_passes not a number" in analysis["note"]
    assert "| train base |" in (out / "analysis" / "stages.md").read_text()


def test_reproduce_with_the_authors_models_runs_no_lm_stage_of_ours(tmp_path):
    """MODELS=authors (issue 25): the data with the authors' tokenizer, their four models fetched and
    converted by authors.py, then the four SAEs and the analysis; no training, no merge, no sweep."""
    import subprocess
    script = os.path.join(helpers.REPO, "reproduce.sh")
    proc = subprocess.run([script], env={**fake_python(tmp_path), "MODELS": "authors"}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    data = str(tmp_path / "data")
    assert [" ".join(c.split()[:3]) for c in calls] == [
        "data.py --domain all", f"authors.py --preset=tiny --data_dir={data}", "sae.py --model base",
        "sae.py --model lua", "sae.py --model tinystories", "sae.py --model luastories",
        f"analyze.py --preset=tiny --data_dir={data}"]
    assert calls[0].endswith("--tokenizer authors") and all("--resume" in c for c in calls if c.startswith("sae.py"))
    bad = subprocess.run([script], env={**fake_python(tmp_path), "MODELS": "theirs"}, capture_output=True, text=True,
                         timeout=60)
    helpers.assert_one_line_error(bad, r"MODELS=theirs: ours .* or authors")


def stage_log_python(tmp_path, fail="", slow=(), plan=""):
    """A stand-in for python that logs each stage's start and end (one line each, appended: the order is
    the order of events), with `train.py --domain lua` waiting until the tinystories fine-tune has
    started (so it only ends if the two run side by side); the stage whose arguments contain `fail`
    exits 3 at once, those whose arguments contain one of `slow` take a second. `python -` (the plan and
    the stage table) is the real one; with `plan` ("slots threads GPUs", as common.stage_jobs prints it)
    the plan is that, and each start line ends with the stage's CUDA_VISIBLE_DEVICES."""
    import sys
    stub = tmp_path / "python"
    stub.write_text(f"""#!/bin/sh
if [ "$1" = "-" ]; then
  script=$(cat)
  case "$script" in *stage_jobs*) [ -n "{plan}" ] && echo "{plan}" && exit 0;; esac
  printf '%s\\n' "$script" | {sys.executable} "$@"
  exit $?
fi
case "$*" in *--help*) echo "  --threads=0"; exit 0;; esac
log={tmp_path}/events
echo "start $*{' gpu=${CUDA_VISIBLE_DEVICES:-}' if plan else ''}" >> $log
echo "running $*"
case "$*" in *"{fail or '@never@'}"*) echo "error: no luck" >&2; exit 3;; esac
case "$*" in *"--domain lua "*)
  i=0; until grep -q "start train.py --domain tinystories" $log; do i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.05; done;;
esac
case "$*" in {'|'.join(f'*"{s}"*' for s in slow) or '@never@'}) sleep 1;; *) sleep 0.1;; esac
echo "end $*" >> $log
""")
    stub.chmod(0o755)
    return {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data"), "JOBS": "2"}


def test_reproduce_runs_independent_stages_side_by_side_and_dependent_ones_after(tmp_path):
    import subprocess
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")],
                          env=stage_log_python(tmp_path, slow=("--domain tinystories", "merge.py --preset")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    def stage_of(args):  # data, base, lua, tinystories, merge, sweep, sae <model>, analysis
        script, rest = args[0], args[1:]
        return {"data.py": "data", "analyze.py": "analysis"}.get(script) or \
            ("sweep" if "--sweep" in rest else "merge") * (script == "merge.py") or \
            ("sae " * (script == "sae.py")) + rest[rest.index("--model" if script == "sae.py" else "--domain") + 1]
    order, running, most, threads = [], set(), 0, {}
    for line in (tmp_path / "events").read_text().splitlines():
        kind, *args = line.split()
        stage = stage_of(args)
        threads[stage] = [a for a in args if a.startswith("--threads=")]
        order.append((kind, stage))
        running = running | {stage} if kind == "start" else running - {stage}
        most = max(most, len(running))
    assert len(order) == 22 and not running and most == 2   # 11 stages, never more than 2 at once

    def at(kind, stage):
        return order.index((kind, stage))
    later = ("lua", "tinystories", "merge", "sweep", "sae base", "sae lua", "sae tinystories", "sae luastories")
    assert at("start", "tinystories") < at("end", "lua")     # the fine-tunes side by side (lua waits for it)
    assert at("end", "data") < at("start", "base") and at("end", "base") < min(at("start", s) for s in later)
    # each stage once a slot is free and the ones it needs have ended: the base SAE beside the (slow)
    # tinystories fine-tune; the luastories SAE after the (slow) merge, not in the slot that frees first
    assert at("start", "sae base") < at("end", "tinystories")
    assert max(at("end", "lua"), at("end", "tinystories")) < min(at("start", "merge"), at("start", "sweep"))
    assert at("end", "lua") < at("start", "sae lua") and at("end", "tinystories") < at("start", "sae tinystories")
    assert at("end", "merge") < at("start", "sae luastories")
    assert max(at("end", s) for s in later) < at("start", "analysis")
    # side by side: a thread count of their own (half the free cores); alone: the stage's default
    assert all(threads[s] and threads[s] == threads["lua"] for s in later)
    assert not any(threads[s] for s in ("data", "base", "analysis"))
    # the lines of stages side by side are tagged with the stage, a stage alone prints as it is
    lines = proc.stdout.splitlines()
    assert any(x.startswith("[sae for lua] running sae.py --model lua ") for x in lines)
    assert any(x.startswith("running train.py --domain base ") for x in lines)
    assert "| side by side, --threads=" in (tmp_path / "out" / "analysis" / "stages.md").read_text()


def test_reproduce_gives_each_stage_side_by_side_a_gpu_of_its_own(tmp_path):
    # four GPUs (torch's 0-3 are CUDA_VISIBLE_DEVICES' 3,5,6,7, a space and all): four stages at once, never
    # two on one GPU, each seeing only its own; the stages alone (data, base, the analysis) see them all
    import subprocess
    env = {**stage_log_python(tmp_path, slow=("--domain tinystories", "merge.py --preset"), plan="4 2 4"),
           "JOBS": "auto", "CUDA_VISIBLE_DEVICES": "3,5, 6,7"}
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 at once (JOBS=auto) with --threads=2 each on GPUs 3 5 6 7" in proc.stdout
    on, most, seen = {}, 0, {}
    for line in (tmp_path / "events").read_text().splitlines():
        kind, *args = line.split()
        if kind == "start":
            key, gpu = " ".join(args[:3]), line.rsplit(" gpu=", 1)[1]
            seen[key] = gpu
            assert gpu not in on.values(), (key, gpu, on)            # a GPU of its own
            on[key] = gpu
            most = max(most, len(on))
        else:
            del on[" ".join(args[:3])]
    assert most >= 3                                                  # the fine-tunes and the base SAE at once
    alone = {k: g for k, g in seen.items() if k.split()[0] in ("data.py", "analyze.py") or "--domain base" in k}
    assert len(alone) == 3 and set(alone.values()) == {"3,5, 6,7"}
    assert len(seen) == 11 and all(g in ("3", "5", "6", "7") for k, g in seen.items() if k not in alone)
    assert "| side by side, --threads=2, GPU " in (tmp_path / "out" / "analysis" / "stages.md").read_text()


def test_reproduce_keeps_an_extra_threads_setting_for_the_stages_side_by_side(tmp_path):
    import subprocess
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh"), "--threads=1"], env=stage_log_python(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    starts = [x for x in (tmp_path / "events").read_text().splitlines() if x.startswith("start ")]
    assert len(starts) == 11 and all(x.split().count("--threads=1") == x.count("--threads=") == 1 for x in starts)
    assert any(x.startswith("[sae for lua] running sae.py") for x in proc.stdout.splitlines())  # still side by side


def test_reproduce_stops_after_a_failed_stage_once_its_neighbour_has_finished(tmp_path):
    import subprocess
    env = stage_log_python(tmp_path, fail="--model lua", slow=("--model base",))
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("reproduce.sh: stage 'sae for lua' failed (exit 3)")
    assert "[sae for lua] error: no luck" in proc.stderr.splitlines()  # its error, tagged, on stderr
    events = (tmp_path / "events").read_text()
    assert "end sae.py --model base" in events                # the stage beside it finished its work
    assert "start" not in events.split("start sae.py --model lua")[1]  # and nothing started after the failure
    assert "analyze.py" not in events


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_reproduce_refuses_a_bad_jobs_setting(tmp_path, jobs):
    import subprocess
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")], env={**fake_python(tmp_path), "JOBS": jobs},
                          capture_output=True, text=True, timeout=60)
    helpers.assert_one_line_error(proc, r"JOBS=")
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize("extra, pattern", [("--no_such_key=1", r"no stage takes --no_such_key"),
                                            ("compile=false", r"--key=value"),
                                            ("--out_dir=elsewhere", r"OUT=")])
def test_reproduce_refuses_bad_extra_settings_in_one_line(tmp_path, extra, pattern):
    import subprocess
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh"), extra], env=fake_python(tmp_path),
                          capture_output=True, text=True, timeout=60)
    helpers.assert_one_line_error(proc, pattern)
    assert not (tmp_path / "calls").exists()                  # before any stage ran


def test_reproduce_checks_extra_values_by_the_stages_own_rules_before_any_stage(tmp_path):
    """A bad value for the analysis (the last stage) was found only after every other stage had run."""
    import subprocess
    import sys
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data")}
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh"), "--threshold=2"], env=env,
                          capture_output=True, text=True, timeout=300)
    helpers.assert_one_line_error(proc, r"analyze\.py: --threshold must be in \(0, 1\], got 2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_reproduce_checks_an_extra_device_before_any_stage(tmp_path):
    """--device=cuda where torch sees no GPU was found by the first training stage, after the data stage."""
    import subprocess
    import sys

    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: --device=cuda is a good setting")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data")}
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh"), "--device=cuda"], env=env,
                          capture_output=True, text=True, timeout=300)
    helpers.assert_one_line_error(proc, r"--device cuda asked for, but torch sees no CUDA GPU; use --device cpu$")
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


# issue 26, point 5: reproduce.sh's environment, checked up front in one line (a table of the environment family)
@pytest.mark.parametrize("setting, pattern", [
    ({"SOURCE": "ftp"}, r"SOURCE=ftp: sample .*local:DIR or hf"),
    ({"SOURCE": "local:/no/such/corpus"}, r"SOURCE=local:/no/such/corpus: no folder"),
    ({"PRESET": "huge"}, r"PRESET=huge: tiny .* or paper"),
    ({"JOBS": "99999999999999999999"}, r"JOBS=9+: .*at most 64"),
    ({"JOBS": "65"}, r"JOBS=65: .*at most 64"),
    ({"OUT": "{file}"}, r"OUT=\S+ is a file, not a folder"),
    ({"DATA": "{out}"}, r"DATA and OUT are both"),
    ({"PYTHON": "/no/such/python"}, r"PYTHON=/no/such/python: no such command"),
    ({"PYTHON": "/bin/false"}, r"PYTHON=/bin/false does not run as Python"),
], ids=["source-bogus", "source-local-missing", "preset-bogus", "jobs-huge", "jobs-65", "out-a-file", "data-is-out",
        "python-missing", "python-not-python"])
def test_reproduce_checks_its_environment_up_front(tmp_path, setting, pattern):
    import subprocess
    env = fake_python(tmp_path)
    (tmp_path / "a_file").write_text("x")
    env.update({k: v.format(file=tmp_path / "a_file", out=env["OUT"]) for k, v in setting.items()})
    proc = subprocess.run([os.path.join(helpers.REPO, "reproduce.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    helpers.assert_one_line_error(proc, pattern)
    assert not (tmp_path / "calls").exists()                  # no stage ran


def sleeping_stage(tmp_path):
    """A stand-in for python whose every stage is a real Python process that imports common (as every stage
    does) and then sleeps, writing its pid first; `python -` is the real one."""
    import sys
    stub = tmp_path / "python"
    stub.write_text(f"""#!/bin/sh
[ "$1" = "-" ] && exec {sys.executable} "$@"
case "$*" in *--help*) exit 0;; esac
exec {sys.executable} -c "import sys; sys.path.insert(0, '{helpers.REPO}'); import common, os, time; \\
open('{tmp_path}/pid.tmp', 'w').write(str(os.getpid())); os.replace('{tmp_path}/pid.tmp', '{tmp_path}/pid'); time.sleep(120)"
""")
    stub.chmod(0o755)
    return {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data"), "JOBS": "1"}


def wait_for(check, timeout=20.0):
    import time
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie (ended, not yet reaped by its new parent) is gone too
        return f.read().rpartition(")")[2].split()[0] == "Z"


def test_a_stage_ends_when_reproduce_is_killed_with_sigkill(tmp_path):
    """kill -9 of reproduce.sh gives it no chance to stop its stages: each notices on its own (common.watch_driver)."""
    import signal
    import subprocess
    driver = subprocess.Popen([os.path.join(helpers.REPO, "reproduce.sh")], env=sleeping_stage(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (tmp_path / "pid").exists()), "the stage did not start"
        stage = int((tmp_path / "pid").read_text())
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: gone(stage), timeout=5.0), "the stage outlived its driver"
    finally:
        driver.kill()
        if (tmp_path / "pid").exists() and not gone(int((tmp_path / "pid").read_text())):
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)


def test_a_stage_ends_when_its_driver_is_gone_even_when_it_is_not_its_parent(tmp_path):
    """The polling half of common.watch_driver: a stage started by a process other than the driver (a pipeline's
    subshell, say) still ends within about a second of the driver's end."""
    import subprocess
    import sys
    driver = subprocess.Popen(["sleep", "60"])
    code = "import common, time; print('up', flush=True); time.sleep(60)"
    stage = subprocess.Popen([sys.executable, "-c", code], cwd=helpers.REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "REPRODUCE_PID": str(driver.pid), "REPRODUCE_START": ""})
    try:
        assert stage.stdout.readline().strip() == "up"
        driver.kill()
        driver.wait()
        assert stage.wait(timeout=5) != 0
    finally:
        driver.kill()
        stage.kill()
