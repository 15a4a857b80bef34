"""Shared test fixtures' building blocks (imported by the test files; tests/ is on sys.path under pytest)."""
import json
import os

import numpy as np


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
    meta = {"domain": domain, "source": "test", "vocab_size": vocab, "dtype": "uint16", "tokenizer_hash": tok_hash,
            "tokens": {"train": n * 9 // 10, "val": n - n * 9 // 10}}
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
