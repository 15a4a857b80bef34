"""Shared test fixtures' building blocks (imported by the test files; tests/ is on sys.path under pytest)."""
import hashlib
import json
import os

import numpy as np
import pytest


def write_tokenizer(data_dir):
    """A byte-level tokenizer (256 byte tokens + <|endoftext|> = 257) in data.py's files (tokenizer.json +
    bpe.tiktoken); returns its hash."""
    import base64

    import data as datalib
    from common import atomic_write_json
    tdir = os.path.join(data_dir, "tokenizer")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "bpe.tiktoken"), "w") as f:
        f.writelines(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    atomic_write_json(os.path.join(tdir, "tokenizer.json"), {"name": "bytes257", "vocab_size": 257,
                                                             "pattern": datalib.PATTERN,
                                                             "special_tokens": {datalib.EOT: 256}})
    return datalib.tokenizer_hash(data_dir)


def write_domain(data_dir, domain, seed, vocab, tok_hash="tok-A", n=6000, noise=0.1):
    """A learnable token stream in data.py's layout: each token mostly follows from the previous one by a
    domain rule (a fraction `noise` random), split 90/10 into train.bin / val.bin, with a meta.json."""
    rng = np.random.default_rng(seed)
    mult = {"base": 5, "lua": 7, "tinystories": 11}[domain]
    toks = np.empty(n, dtype=np.uint16)
    toks[0] = 1
    for i in range(1, n):
        toks[i] = rng.integers(vocab) if rng.random() < noise else (toks[i - 1] * mult + 3) % vocab
    d = os.path.join(data_dir, domain)
    os.makedirs(d, exist_ok=True)
    toks[: n * 9 // 10].tofile(os.path.join(d, "train.bin"))
    toks[n * 9 // 10:].tofile(os.path.join(d, "val.bin"))
    split = {"train": toks[: n * 9 // 10], "val": toks[n * 9 // 10:]}  # with their checksums, as data.py writes them
    meta = {"domain": domain, "source": "test", "vocab_size": vocab, "dtype": "uint16", "tokenizer_hash": tok_hash,
            "splits": {s: {"tokens": len(a), "sha256": hashlib.sha256(a.tobytes()).hexdigest(), "max_id": int(a.max())}
                       for s, a in split.items()}}
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f)


def chat_server(respond):
    """An OpenAI-compatible chat-completions stub on 127.0.0.1 (a thread; port 0), for tests that must not touch
    the internet. respond(path, headers, body) -> (status, extra headers, reply); a str reply becomes the
    assistant message of a chat-completions answer, a bytes reply is sent as it is. Returns (server, api base);
    stop it with server.shutdown(); server.server_close()."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            code, headers, reply = respond(self.path, dict(self.headers), body)
            if isinstance(reply, str):
                reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
            data = reply if isinstance(reply, bytes) else reply.encode()
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_port}/v1"


def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung LLM server).
    Returns (close, api base, accepted): accepted is the list of accepted sockets, close() stops it."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted, stop = [], threading.Event()

    def loop():
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:  # the timeout, or the socket closed by close()
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join()
        for s in accepted:
            s.close()
        srv.close()
    return close, f"http://127.0.0.1:{srv.getsockname()[1]}/v1", accepted


def free_port():
    """A port on 127.0.0.1 with nothing listening (for "server unreachable" cases)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, timeout=120, env=None, cwd=None):
    """`python <script> args...` from the repository as a user runs it: CompletedProcess with text output."""
    import subprocess
    import sys
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd or REPO)


def assert_one_line_error(proc, pattern=None, status=2):
    """The bad-input contract: exit `status`, exactly one line on stderr and it starts with `error:`
    (matching `pattern`, a regex, when given), and no traceback anywhere."""
    import re
    lines = proc.stderr.splitlines()
    why = f"exit {proc.returncode}\n--- stderr:\n{proc.stderr[-3000:]}\n--- stdout:\n{proc.stdout[-1500:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, why
    assert proc.returncode == status, why
    assert len(lines) == 1 and lines[0].startswith("error: "), why
    if pattern is not None:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in: {lines[0]}"


# -----------------------------------------------------------------------------
# many commands at once: `python <script> args` run in forks of one interpreter that has already imported
# torch and the scripts' modules. Each case behaves as its own `python <script>.py` would (a fresh process
# image: runpy runs the script as __main__, exit status and stderr by the interpreter's rules: SystemExit's
# code, a traceback and status 1 for anything else), but costs ~0.1 s of CPU instead of the ~1.6 s that
# starting Python and importing torch take. CLI_TEST_PROCESSES=1 runs every command as a real process instead.

_LAUNCHER = r'''
import json, os, runpy, sys, traceback
sys.path.insert(0, REPO)
import numpy, torch, requests, tiktoken                     # the expensive imports, done once
for name in ("common", "model", "data", "train", "merge", "sae", "analyze", "explain"):
    try:
        __import__(name)
    except Exception:                                       # a broken module: each case shows its own traceback
        sys.modules.pop(name, None)
jobs = json.load(sys.stdin)
running, results, todo = {}, {}, list(enumerate(jobs))
while todo or running:
    while todo and len(running) < PARALLEL:
        i, job = todo.pop(0)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                out = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                err = os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(out, 1)
                os.dup2(err, 2)
                os.environ.update(job["env"])
                os.chdir(job["cwd"])
                sys.argv = [job["argv"][0], *job["argv"][1:]]
                sys.path[0] = os.path.dirname(os.path.abspath(job["argv"][0]))
                try:
                    runpy.run_path(job["argv"][0], run_name="__main__")
                    code = 0
                except SystemExit as e:
                    if e.code is None:
                        code = 0
                    elif isinstance(e.code, int):
                        code = e.code
                    else:
                        print(e.code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code & 0xFF)
        running[pid] = i
    pid, status = os.wait()
    results[running.pop(pid)] = os.waitstatus_to_exitcode(status)
json.dump([results[i] for i in range(len(jobs))], sys.stdout)
'''


def run_scripts(commands, folder, parallel=4, env=None, timeout=600):
    """Run each command (a list: script path relative to the repository, then its arguments) as
    `python <script> args`, `parallel` at a time; returns a CompletedProcess for each, in order.
    folder: where the captured output goes."""
    import json
    import subprocess
    import sys
    full_env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    if os.environ.get("CLI_TEST_PROCESSES"):
        return [run_script(c[0], *c[1:], timeout=timeout, env=full_env) for c in commands]
    os.makedirs(folder, exist_ok=True)
    jobs = [{"argv": [os.path.join(REPO, c[0]), *map(str, c[1:])], "env": full_env, "cwd": REPO,
             "out": os.path.join(folder, f"{i}.out"), "err": os.path.join(folder, f"{i}.err")}
            for i, c in enumerate(commands)]
    code = f"REPO = {REPO!r}\nPARALLEL = {int(parallel)}\n" + _LAUNCHER
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **full_env}, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"the launcher failed: {proc.stderr[-3000:]}")
    out = []
    for job, status in zip(jobs, json.loads(proc.stdout)):
        with open(job["out"], encoding="utf-8", errors="replace") as f_out, \
                open(job["err"], encoding="utf-8", errors="replace") as f_err:
            out.append(subprocess.CompletedProcess(job["argv"], status, f_out.read(), f_err.read()))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Every shape in the SAE tests is tiny: one thread is fastest and does not spin on a shared, busy CPU
    (a test module takes it with `from helpers import one_thread`)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_sae(arch="relu", d=16, n=48, k=5, seed=0):
    """A seeded SAE whose biases are random too (an SAE as training leaves it, not as it starts)."""
    import torch

    import sae
    s = sae.init_sae(d, n, arch, k, seed)
    with torch.no_grad():
        s.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
        s.b_dec.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed + 2))
    return s


def table_model(table, block_size=8):
    """A tiny model.Transformer whose MLP activation of token t is table[t] (vocab x d_mlp, given by hand):
    the plain harvest path (sae.mlp_activations with use_fast off) reads model.mlp_acts, so a stage run on
    it sees exactly these activations; the rest of the model (its LM head for logit effects) is a real one."""
    import torch

    from model import ModelArgs, Transformer

    class Table(Transformer):
        def mlp_acts(self, idx):
            return self.table[idx]
    table = torch.as_tensor(table, dtype=torch.float32)
    torch.manual_seed(0)
    m = Table(ModelArgs(vocab_size=len(table), block_size=block_size, d_model=8, n_head=2, n_kv_head=1,
                        d_mlp=table.shape[1]))
    m.register_buffer("table", table)
    return m.eval()


def hand_sae(W_enc, b_enc, W_dec=None):
    """A ReLU SAE with the given encoder (d_in, F) and bias (F,), b_dec 0, decoder W_enc^T unless given."""
    import torch

    import sae
    W_enc = torch.as_tensor(W_enc, dtype=torch.float32)
    s = sae.SAE(W_enc.shape[0], W_enc.shape[1], "relu")
    with torch.no_grad():
        s.W_enc.copy_(W_enc)
        s.b_enc.copy_(torch.as_tensor(b_enc, dtype=torch.float32))
        s.W_dec.copy_(W_enc.T if W_dec is None else torch.as_tensor(W_dec, dtype=torch.float32))
    return s
