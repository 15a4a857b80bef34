"""Tests for data.py: tokenizer (trainer, rank file, tiktoken agreement), downloader (against a
local HTTP server), the three sources, outputs and the API. CPU only, no internet, seconds."""
import gzip
import http.server
import json
import os
import random
import re
import sys
import threading
import zipfile

import numpy as np
import pytest
import tiktoken
import tiktoken.load
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402

SMALL = ["--preset", "tiny", "--vocab_size", "500", "--sample_kb", "40", "--threads", "2"]

# text the round-trip / agreement tests use: prose, code, numbers, whitespace runs, unicode
VARIED = [
    "Hello, world! It's a test; we'll see what they've done -- or haven't.  Double  spaces.",
    "def f(x_y, _z=None):\n    return {'a': [1, 2, 3]}  # comment\n\n\n\tif x: pass\n",
    "local t = {}\nfor i = 1, #t do\n  t[i] = t[i] .. \"x\" -- lua\nend\nreturn M\n",
    "1234567890 3.14159 1e-9 0xFF 100,000 2024-11-25",
    "Ünïcödé façade naïve; 日本語のテキスト; 中文字符; Ελληνικά; русский текст; עברית",
    "emoji 😀🎉 and 🐍 mixed in text",
    "   leading and trailing   \n\n  \r\n\t\t tabs\n",
    "__init__ self.__dict__ snake_case_name camelCaseName CONSTANT_NAME",
]
# only for the lossless round trip: characters the two regex engines classify differently
ODD = ["e\u0301 combining acute, a\u0308 umlaut", "family 👨\u200d👩\u200d👧 and ❤️ with VS16",
       "x² superscript, ½ fraction, foo‿bar", "\x00\x01\x1c control \x7f bytes", "عَرَبِيّ  हिन्दी"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the internet: every URL points to a closed local port unless a test
    points it at its own server; downloads retry fast."""
    for k in data.URLS:
        monkeypatch.setitem(data.URLS, k, "http://127.0.0.1:9/blocked")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(data, "BACKOFF_S", 0.001)
    monkeypatch.setattr(data, "RETRIES", 4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    data.main(["--domain", "all", "--data_dir", str(d)] + SMALL)
    return str(d)


def one_line_error(excinfo):
    msg = str(excinfo.value)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


# -----------------------------------------------------------------------------
# tokenizer


def test_roundtrip(built):
    enc = data.load_tokenizer(built)
    eot = data.eot_id(enc)
    assert eot == enc.n_vocab - 1 == 499
    for text in VARIED + ODD + ["", " ", "\n"]:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text
        assert eot not in ids
    # the special token: one id when allowed, ordinary text otherwise
    text = VARIED[0] + data.EOT + VARIED[1]
    ids = enc.encode(text, allowed_special={data.EOT})
    assert ids.count(eot) == 1 and enc.decode(ids) == text
    assert eot not in enc.encode_ordinary(text) and enc.decode(enc.encode_ordinary(text)) == text


def reference_encode(text, ranks, pattern):
    """Plain BPE: within each regex chunk, repeatedly merge the adjacent pair of lowest rank."""
    out = []
    for chunk in re.findall(pattern, text):
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        while len(parts) > 1:
            rank, i = min((ranks.get(a + b, float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        out += [ranks[p] for p in parts]
    return out


def test_tiktoken_matches_reference_bpe(built, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no caching: read the file itself
    path = os.path.join(built, "tokenizer", "bpe.tiktoken")
    ranks = tiktoken.load.load_tiktoken_bpe(path)  # the rank file is in tiktoken's own format
    assert sorted(ranks.values()) == list(range(len(ranks))) and len(ranks) == 499
    enc = data.load_tokenizer(built)
    rng = random.Random(0)
    texts = VARIED + [data.gen_prose(rng), data.gen_story(rng), data.gen_lua(rng),
                      open(data.__file__, encoding="utf-8").read()[:20000]]
    for text in texts:
        assert enc.encode_ordinary(text) == reference_encode(text, ranks, data.PATTERN)


def test_python_and_tiktoken_split_alike():
    """Training splits with Python's re, encoding with tiktoken's regex engine: same chunks on
    ordinary text. A rank table holding every chunk whole makes tiktoken emit one token per chunk."""
    rng = random.Random(1)
    text = "\n".join(VARIED + [data.gen_prose(rng), data.gen_story(rng), data.gen_lua(rng)])
    chunks = re.findall(data.PATTERN, text)
    ranks = {bytes([i]): i for i in range(256)}
    for c in chunks:
        ranks.setdefault(c.encode(), len(ranks))
    enc = tiktoken.Encoding("probe", pat_str=data.PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)] == [c.encode() for c in chunks]


def test_bpe_trainer_known_merges():
    # the classic example: hug x10, pug x5, pun x12, bun x4, hugs x5
    texts = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    ranks = data.train_bpe(texts, 256 + 3 + 1, log=lambda *a: None)
    assert [b for b, r in sorted(ranks.items(), key=lambda kv: kv[1])][256:] == [b"ug", b"un", b"hug"]
    assert all(ranks[bytes([i])] == i for i in range(256))
    # overlapping pairs, and ties broken by the lower token ids
    assert data.train_bpe(["aaaa"], 259, log=lambda *a: None)[b"aaaa"] == 257
    r = data.train_bpe(["cd", "ab"], 259, log=lambda *a: None)
    assert (r[b"ab"], r[b"cd"]) == (256, 257)
    # the pattern splits first: no merge across a space-led word boundary, and it stops when pairs run out
    r = data.train_bpe(["ab ab"], 400, log=lambda *a: None)
    assert set(r) - {bytes([i]) for i in range(256)} == {b"ab", b" ab"}


def test_tokenizer_files(built):
    info = data.read_json(os.path.join(built, "tokenizer", "tokenizer.json"))
    assert info["vocab_size"] == 500 and info["special_tokens"] == {data.EOT: 499}
    assert info["hash"] == data.tokenizer_hash(built) and "base mix" in info["trained_on"]
    assert info["pattern"] == data.PATTERN


# -----------------------------------------------------------------------------
# outputs and API


def test_sample_outputs(built, capsys):
    enc = data.load_tokenizer(built)
    for domain in data.DOMAINS:
        meta = data.read_meta(built, domain)
        assert meta["source"] == "sample" and "smoke-scale demo" in meta["note"]
        assert meta["dtype"] == "uint16" and meta["tokenizer_hash"] == data.tokenizer_hash(built)
        for split in ("train", "val"):
            toks = data.load_tokens(built, domain, split)
            s = meta["splits"][split]
            assert len(toks) == s["tokens"] and s["documents"] > 0 and s["bytes"] > 0
            assert int((toks == data.eot_id(enc)).sum()) == s["documents"] and toks[-1] == data.eot_id(enc)
    base = data.read_meta(built, "base")["mix"]["train"]
    assert abs(base["babylm_words"] - base["python_words"]) / base["python_words"] < 0.02


def test_domains_are_distinct(built):
    """The sample domains must differ clearly: little shared vocabulary between prose and Lua."""
    rng = random.Random(3)
    words = {g: set(re.findall(r"[a-z_]+", " ".join(g(rng) for _ in range(50))))
             for g in (data.gen_prose, data.gen_story, data.gen_lua)}
    for a, b in [(data.gen_prose, data.gen_lua), (data.gen_story, data.gen_lua), (data.gen_prose, data.gen_story)]:
        jac = len(words[a] & words[b]) / len(words[a] | words[b])
        assert jac < 0.3, (a.__name__, b.__name__, jac)
    assert len(words[data.gen_prose]) > 300 and len(words[data.gen_lua]) > 100


def test_sample_is_deterministic(tmp_path):
    cfg = dict(data.config, sample_kb=30, val_frac=0.1, seed=5)
    for domain in ("babylm", "python", "tinystories", "lua"):
        a, b = data.sample_docs(domain, cfg), data.sample_docs(domain, cfg)
        assert a == b and a[0] and a[1] and not set(a[0]) & set(a[1])
    for d in ("x", "y"):
        data.main(["--domain", "all", "--data_dir", str(tmp_path / d), "--vocab_size", "300", "--sample_kb", "20"])
    for rel in ["tokenizer/bpe.tiktoken"] + [f"{dom}/{s}.bin" for dom in data.DOMAINS for s in ("train", "val")]:
        assert (tmp_path / "x" / rel).read_bytes() == (tmp_path / "y" / rel).read_bytes(), rel


def write_corpus(folder, domain, docs_by_split):
    os.makedirs(folder / domain, exist_ok=True)
    for split, docs in docs_by_split.items():
        (folder / domain / f"{split}.txt").write_text("".join(d + "\n<|endoftext|>\n" for d in docs), encoding="utf-8")


def test_local_source(tmp_path):
    corp, rng, docs = tmp_path / "corpora", random.Random(7), {}
    gens = {"babylm": data.gen_prose, "tinystories": data.gen_story, "lua": data.gen_lua,
            "python": lambda r: f"def f{r.randint(0, 99)}(x):\n    return x * {r.randint(2, 9)}"}
    for domain, g in gens.items():
        docs[domain] = {"train": [g(rng) for _ in range(60)], "valid": [g(rng) for _ in range(8)]}
        write_corpus(corp, domain, docs[domain])
    out = tmp_path / "out"
    data.main(["--domain", "all", "--source", f"local:{corp}", "--data_dir", str(out), "--vocab_size", "300"])
    enc = data.load_tokenizer(str(out))
    for domain in gens:
        meta = data.read_meta(str(out), domain)
        assert meta["source"] == f"local:{corp}" and "note" not in meta
        for split, name in (("train", "train"), ("val", "valid")):
            toks = data.load_tokens(str(out), domain, split)
            text = enc.decode(toks.tolist())  # EOT decodes to its text: the documents come back exactly
            assert text.split(data.EOT)[:-1] == docs[domain][name]
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "lua", "--source", f"local:{tmp_path / 'nowhere'}", "--data_dir", str(out)])
    one_line_error(e)


def test_idempotent_rerun_and_tokenizer_change(tmp_path, capsys):
    d = str(tmp_path)
    args = ["--domain", "all", "--data_dir", d, "--vocab_size", "300", "--sample_kb", "20"]
    data.main(args)
    files = [os.path.join(d, dom, f) for dom in data.DOMAINS for f in ("train.bin", "val.bin", "meta.json")]
    files.append(os.path.join(d, "tokenizer", "bpe.tiktoken"))
    before = {f: os.stat(f).st_mtime_ns for f in files}
    capsys.readouterr()
    data.main(args)
    out = capsys.readouterr().out
    assert out.count("is up to date") == 5 and "training" not in out
    assert {f: os.stat(f).st_mtime_ns for f in files} == before
    # a new tokenizer (here: another vocabulary) re-encodes what is prepared, and load_tokens
    # refuses token files made with the old one
    data.main(["--domain", "babylm", "--data_dir", d, "--vocab_size", "320", "--sample_kb", "20"])
    assert data.read_meta(d, "babylm")["vocab_size"] == 320
    assert data.load_tokens(d, "babylm", "train").max() < 320
    with pytest.raises(SystemExit) as e:
        data.load_tokens(d, "lua", "train")
    assert "python data.py --domain lua" in one_line_error(e)
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", d, "--vocab_size", "320", "--sample_kb", "20"])
    assert "re-encoding" in capsys.readouterr().out and len(data.load_tokens(d, "lua", "train")) > 0


def test_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "klingon", "--data_dir", str(tmp_path)])
    msg = one_line_error(e)
    assert all(dom in msg for dom in data.DOMAINS + ("all",))
    for bad in (["--source", "ftp"], ["--tokenizer", "nope"]):
        with pytest.raises(SystemExit) as e:
            data.main(["--domain", "lua", "--data_dir", str(tmp_path)] + bad)
        one_line_error(e)
    with pytest.raises(SystemExit) as e:
        data.load_tokenizer(str(tmp_path / "none"))
    assert "python data.py --domain all" in one_line_error(e)
    with pytest.raises(SystemExit) as e:
        data.load_tokens(str(tmp_path / "none"), "lua", "train")
    assert "python data.py --domain lua" in one_line_error(e)


def test_get_batch():
    tokens = np.arange(5000, dtype=np.uint16)
    x, y = data.get_batch(tokens, 8, 32, "cpu", torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = data.get_batch(tokens, 8, 32, "cpu", torch.Generator().manual_seed(0))
    x3, _ = data.get_batch(tokens, 8, 32, "cpu", torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    with pytest.raises(SystemExit):
        data.get_batch(tokens[:10], 2, 32, "cpu", torch.Generator())


def test_helpers():
    bab = [" ".join(["w"] * n) for n in (10, 20, 30, 40, 50, 60)]
    py = ["x = 1"] * 30  # 90 words
    mix, share = data.mix_base(bab, py, seed=0, split="train")
    assert share["cut"] == "babylm" and share["python_words"] == 90 and 90 <= share["babylm_words"] < 150
    assert mix == data.mix_base(bab, py, seed=0, split="train")[0]
    docs = data.chunk_lines("a\nb\n\n" + "\n".join(["line %d" % i for i in range(2000)]), 3, 500)
    assert docs[0] == "a\nb" and all(len(d) <= 520 for d in docs)
    text = data.sample_corpus_text(sample_kb=10)  # bench.py's input: one string is fine for the trainer
    assert "def " in text and len(data.train_bpe(text, 300, log=lambda *a: None)) == 299
    tr, va = data.hash_split([f"doc {i}" for i in range(1000)], 0.1)
    assert 50 < len(va) < 150 and len(tr) + len(va) == 1000 and data.hash_split(tr + va, 0.1)[1] == va


# -----------------------------------------------------------------------------
# downloads, against a local server


class Server:
    """Serves self.files; self.plan[path] lists what to do to the next requests of that path:
    'cut' (stop half way), '503', '401', '403', 'ignore_range' (answer 200 with the whole file)."""

    def __init__(self):
        self.files, self.plan, self.log = {}, {}, []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                srv.log.append((path, dict(self.headers)))
                todo = srv.plan.get(path, [])
                act = todo.pop(0) if todo else None
                if act in ("503", "401", "403") or path not in srv.files:
                    self.send_response(int(act) if act else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, start, rng = srv.files[path], 0, self.headers.get("Range")
                if rng and act != "ignore_range":
                    start = int(re.match(r"bytes=(\d+)-$", rng).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                part = body[start:]
                self.wfile.write(part[:len(part) // 2] if act == "cut" else part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def blob(n, seed=0):
    return random.Random(seed).randbytes(n)


def test_download_resumes_after_a_cut(server, tmp_path):
    server.files["/big.bin"] = payload = blob(1_000_000)
    server.plan["/big.bin"] = ["cut"]
    path = data.download(server.url + "/big.bin", str(tmp_path / "big.bin"))
    assert open(path, "rb").read() == payload and not os.path.exists(path + ".part")
    assert len(server.log) == 2 and "Range" not in server.log[0][1]
    start = int(server.log[1][1]["Range"][6:-1])
    assert 0 < start <= 500_000  # resumed where the cut left it, not from the start


def test_download_server_ignoring_range_restarts(server, tmp_path, capsys):
    server.files["/f.txt"] = payload = blob(200_000, 1)
    target = tmp_path / "f.txt"
    (tmp_path / "f.txt.part").write_bytes(b"X" * 1000)  # stale partial bytes must not survive
    server.plan["/f.txt"] = ["ignore_range"]
    data.download(server.url + "/f.txt", str(target))
    assert target.read_bytes() == payload and server.log[0][1]["Range"] == "bytes=1000-"
    assert "ignored the range" in capsys.readouterr().out


def test_download_retries_on_503_and_gives_up(server, tmp_path):
    server.files["/r.txt"] = payload = blob(5000, 2)
    server.plan["/r.txt"] = ["503", "503"]
    assert open(data.download(server.url + "/r.txt", str(tmp_path / "r.txt")), "rb").read() == payload
    assert len(server.log) == 3
    server.plan["/r.txt"] = ["503"] * 10
    with pytest.raises(SystemExit) as e:
        data.download(server.url + "/r.txt", str(tmp_path / "r2.txt"))
    assert "failed after 4 tries" in one_line_error(e)


@pytest.mark.parametrize("status", ["401", "403"])
def test_download_access_denied_message(server, tmp_path, status):
    server.files["/gated.json"] = b"{}"
    server.plan["/gated.json"] = [status]
    with pytest.raises(SystemExit) as e:
        data.download(server.url + "/gated.json", str(tmp_path / "g.json"), denied=data.STACK_DENIED)
    msg = one_line_error(e)
    assert f"HTTP {status}" in msg and "HF_TOKEN" in msg and "accept its terms" in msg
    assert len(server.log) == 1  # no retries on a refusal


def test_download_skips_complete_file(server, tmp_path):
    (tmp_path / "done.txt").write_text("already here")
    assert data.download(server.url + "/done.txt", str(tmp_path / "done.txt")) == str(tmp_path / "done.txt")
    assert server.log == []


def test_download_prefix_of_gzip_json_lines(server, tmp_path):
    rng = random.Random(4)
    rows = [{"content": "".join(rng.choice("abcdefghij \n") for _ in range(300)) + f"#{i}"} for i in range(2000)]
    server.files["/shard.json.gz"] = gz = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    limit = len(gz) // 3
    path = data.download(server.url + "/shard.json.gz", str(tmp_path / "shard.json.gz"), max_bytes=limit)
    assert os.path.getsize(path) == limit and open(path, "rb").read() == gz[:limit]
    got = data.json_records(data.read_text(path, limit), "content")
    assert 0 < len(got) < len(rows) and got == [r["content"].strip("\n") for r in rows[:len(got)]]
    n = len(server.log)
    data.download(server.url + "/shard.json.gz", path, max_bytes=limit)
    assert len(server.log) == n  # complete at that size: no new request


def zip_bytes(members):
    buf = __import__("io").BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def serve_hf(server, monkeypatch):
    """The upstream files in their real formats, made from the sample generators."""
    rng = random.Random(11)
    train_stories = [data.gen_story(rng) for _ in range(150)]
    stories = lambda n: "".join(data.gen_story(rng) + "\n<|endoftext|>\n" for _ in range(n))  # noqa: E731
    prose = lambda n: "\n\n".join(data.gen_prose(rng) for _ in range(n))  # noqa: E731
    jsonl = lambda field, n, g: "".join(json.dumps({field: g(rng), "size": 1}) + "\n" for _ in range(n)).encode()  # noqa: E731
    pyfile = lambda r: "\n".join(f"def f{i}_{r.randint(0, 999)}(a, b):\n    return a + b * {i}\n" for i in range(8))  # noqa: E731
    files = {
        "/ts/train.txt": "".join(s + "\n<|endoftext|>\n" for s in train_stories).encode(),
        "/ts/valid.txt": stories(20).encode(),
        "/osf/10M": zip_bytes({"train_10M/childes.train": prose(40), "train_10M/simple_wiki.train": prose(40),
                               "__MACOSX/train_10M/._childes.train": "\x00\x05junk"}),
        "/osf/dev": zip_bytes({"dev/childes.dev": prose(10), "dev/simple_wiki.dev": prose(10)}),
        "/stack/python.json": jsonl("content", 200, pyfile), "/stack/lua.json": jsonl("content", 60, data.gen_lua),
        "/cp/tree": json.dumps([{"type": "file", "path": "README.md"},
                                {"type": "file", "path": "file-000000000002.json.gz"},
                                {"type": "file", "path": "file-000000000001.json.gz"}]).encode(),
        "/cp/file-000000000001.json.gz": gzip.compress(jsonl("content", 150, pyfile)),
        "/cp/file-000000000002.json.gz": gzip.compress(jsonl("content", 150, pyfile)),
        "/cpft/lua.jsonl": jsonl("new_contents", 60, data.gen_lua),
    }
    server.files.update(files)
    urls = {"tinystories_train": "/ts/train.txt", "tinystories_val": "/ts/valid.txt", "babylm_10M": "/osf/10M",
            "babylm_dev": "/osf/dev", "stack_python": "/stack/python.json", "stack_lua": "/stack/lua.json",
            "codeparrot_tree": "/cp/tree", "codeparrot_file": "/cp/{path}", "commitpackft_lua": "/cpft/lua.jsonl"}
    for k, v in urls.items():
        monkeypatch.setitem(data.URLS, k, server.url + v)
    return train_stories


def test_hf_source_end_to_end(server, tmp_path, monkeypatch, capsys):
    serve_hf(server, monkeypatch)
    args = ["--source", "hf", "--domain", "all", "--vocab_size", "400", "--max_mb", "0", "--threads", "2"]
    # with a token: The Stack, with the token sent
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    d1 = str(tmp_path / "with_token")
    data.main(args + ["--data_dir", d1])
    stack_reqs = [h for p, h in server.log if p.startswith("/stack/")]
    assert len(stack_reqs) == 2 and all(h["Authorization"] == "Bearer hf_test" for h in stack_reqs)
    for domain in data.DOMAINS:
        meta = data.read_meta(d1, domain)
        assert meta["source"] == "hf" and meta["splits"]["train"]["tokens"] > 0 and meta["splits"]["val"]["documents"] > 0
    assert data.read_meta(d1, "python")["upstream"] == "bigcode/the-stack-smol"
    assert data.read_meta(d1, "babylm")["splits"]["train"]["documents"] >= 2  # junk zip member skipped
    assert "\x00" not in data.load_tokenizer(d1).decode(data.load_tokens(d1, "babylm", "train").tolist())
    # without: the ungated fallbacks, said so
    monkeypatch.delenv("HF_TOKEN")
    server.log.clear()
    d2 = str(tmp_path / "no_token")
    capsys.readouterr()
    data.main(args + ["--data_dir", d2])
    out = capsys.readouterr().out
    assert "no HF_TOKEN" in out and not any(p.startswith("/stack/") for p, _ in server.log)
    assert data.read_meta(d2, "python")["upstream"].startswith("codeparrot/codeparrot-clean")
    assert data.read_meta(d2, "lua")["upstream"].startswith("bigcode/commitpackft")
    shards = [p for p, _ in server.log if p.startswith("/cp/file-")]
    assert shards[0].endswith("01.json.gz")  # in name order, as many as needed to match BabyLM's words
    # a re-run downloads nothing and rebuilds nothing
    server.log.clear()
    data.main(args + ["--data_dir", d2])
    assert server.log == [] and capsys.readouterr().out.count("is up to date") == 5


def test_hf_source_prefixes(server, tmp_path, monkeypatch):
    """--max_mb: only the first bytes of each large file; cut stories and lines are dropped."""
    stories = serve_hf(server, monkeypatch)
    d = str(tmp_path)
    data.main(["--source", "hf", "--domain", "tinystories", "--vocab_size", "300", "--max_mb", "0.02", "--data_dir", d])
    assert os.path.getsize(os.path.join(d, "raw", "hf", "TinyStoriesV2-GPT4-train.first0.02MB.txt")) == 20000
    got = data.load_tokenizer(d).decode(data.load_tokens(d, "tinystories", "train").tolist()).split(data.EOT)[:-1]
    assert 0 < len(got) < len(stories) and got == stories[:len(got)]
    # the tokenizer needed the base mix: Python came from prefixes of the gzipped shards
    assert os.path.exists(os.path.join(d, "raw", "hf", "codeparrot.first0.02MB-file-000000000001.json.gz"))
    assert len(data.load_tokenizer(d).encode_ordinary("def")) == 1  # a token learnt from that Python
