"""Tests for data.py: tokenizer (trainer, rank file, tiktoken agreement), downloader (against a
local HTTP server), the three sources, outputs and the API. CPU only, no internet, seconds."""
import functools
import hashlib
import http.server
import json
import os
import random
import re
import sys
import threading

import numpy as np
import pytest
import tiktoken
import tiktoken.load

try:
    import torch
except ImportError:  # data.py runs without torch (a Python 3.10 with only the data dependencies):
    torch = None       # every test but the three that draw torch batches runs there
needs_torch = pytest.mark.skipif(torch is None, reason="draws batches with torch, which is not installed")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import sample_corpus  # noqa: E402
from sample_corpus import gen_lua, gen_prose, gen_story  # noqa: E402

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
    """No test may reach the internet: the hub is a closed local port unless a test points it at
    its own server; downloads retry fast."""
    monkeypatch.setattr(data, "HF", "http://127.0.0.1:9")
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
    texts = VARIED + [gen_prose(rng), gen_story(rng), gen_lua(rng),
                      open(data.__file__, encoding="utf-8").read()[:20000]]
    for text in texts:
        assert enc.encode_ordinary(text) == reference_encode(text, ranks, data.RE_PATTERN)


def test_python_and_tiktoken_split_alike():
    """Training splits with Python's re, encoding with tiktoken's regex engine: same chunks on
    ordinary text. A rank table holding every chunk whole makes tiktoken emit one token per chunk."""
    rng = random.Random(1)
    text = "\n".join(VARIED + [gen_prose(rng), gen_story(rng), gen_lua(rng)])
    chunks = re.findall(data.RE_PATTERN, text)
    ranks = {bytes([i]): i for i in range(256)}
    for c in chunks:
        ranks.setdefault(c.encode(), len(ranks))
    enc = tiktoken.Encoding("probe", pat_str=data.PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)] == [c.encode() for c in chunks]


def test_pretokenizer_chunks_known_answer():
    """Each alternative of the pattern on one line, by hand: contractions of any case ('T, 's) split off a word;
    digits in groups of three; a word takes its one leading space; punctuation takes the newlines after it;
    a run of spaces leaves its last one to the next word. tiktoken's PATTERN cuts the same chunks."""
    text = "O'Toole's 12345 apples,  go!\n\n  x"
    want = ["O", "'T", "oole", "'s", " ", "123", "45", " apples", ",", " ", " go", "!\n\n", " ", " x"]
    assert re.findall(data.RE_PATTERN, text) == want
    ranks = {bytes([i]): i for i in range(256)}
    for c in want:
        ranks.setdefault(c.encode(), len(ranks))
    enc = tiktoken.Encoding("chunks", pat_str=data.PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(t).decode() for t in enc.encode_ordinary(text)] == want


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
            toks = data.open_tokens(built, domain, split)
            s = meta["splits"][split]
            assert len(toks) == s["tokens"] and s["documents"] > 0 and s["bytes"] > 0
            assert int((toks == data.eot_id(enc)).sum()) == s["documents"] and toks[-1] == data.eot_id(enc)
    base = data.read_meta(built, "base")["mix"]["train"]
    assert abs(base["babylm_words"] - base["python_words"]) / base["python_words"] < 0.02


def test_domains_are_distinct(built):
    """The sample domains must differ clearly: little shared vocabulary between prose and Lua."""
    rng = random.Random(3)
    words = {g: set(re.findall(r"[a-z_]+", " ".join(g(rng) for _ in range(50))))
             for g in (gen_prose, gen_story, gen_lua)}
    for a, b in [(gen_prose, gen_lua), (gen_story, gen_lua), (gen_prose, gen_story)]:
        jac = len(words[a] & words[b]) / len(words[a] | words[b])
        assert jac < 0.3, (a.__name__, b.__name__, jac)
    assert len(words[gen_prose]) > 300 and len(words[gen_lua]) > 100


def test_sample_is_deterministic(tmp_path):
    for domain in ("babylm", "python", "tinystories", "lua"):
        a, b = sample_corpus.sample_docs(domain, 30, 0.1, 5), sample_corpus.sample_docs(domain, 30, 0.1, 5)
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
    gens = {"babylm": gen_prose, "tinystories": gen_story, "lua": gen_lua,
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
            toks = data.open_tokens(str(out), domain, split)
            text = enc.decode(toks.tolist())  # EOT decodes to its text: the documents come back exactly
            assert text.split(data.EOT)[:-1] == docs[domain][name]
    # base: the planned documents, whole and in the plan's order
    (doms, idx), _ = data.mix_plan(*[np.array([len(d.split()) for d in docs[s]["train"]]) for s in data.MIX_SIDES],
                                   seed=data.config["seed"], split="train")
    base = enc.decode(data.open_tokens(str(out), "base", "train").tolist()).split(data.EOT)[:-1]
    assert base == [docs[data.MIX_SIDES[k]]["train"][i] for k, i in zip(doms.tolist(), idx.tolist())]
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "lua", "--source", f"local:{tmp_path / 'nowhere'}", "--data_dir", str(out)])
    one_line_error(e)
    # the fix a damaged file names remakes it as it was made (the defaults would make the sample instead) ...
    with open(os.path.join(out, "lua", "val.bin"), "r+b") as f:
        f.write(b"\xff\xff")
    with pytest.raises(SystemExit) as e:
        data.open_tokens(str(out), "lua", "val")
    assert f"python data.py --domain lua --data_dir {out} --source local:{corp} --preset tiny --vocab_size 300 " \
           "--force" in one_line_error(e)
    # ... and a run from another source (here the default: the sample) replaces nothing without --force
    before = data.sha256_file(os.path.join(out, "base", "train.bin"))
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "all", "--data_dir", str(out), "--vocab_size", "300"])
    assert f"was made from --source local:{corp}: this run (--source sample) would replace it" in one_line_error(e)
    assert data.sha256_file(os.path.join(out, "base", "train.bin")) == before
    data.main(["--domain", "all", "--data_dir", str(out), "--vocab_size", "300", "--sample_kb", "20", "--force"])
    assert data.read_meta(str(out), "lua")["source"] == "sample"


def test_a_local_corpus_file_that_is_a_folder_is_one_line(tmp_path):
    corp = tmp_path / "c"
    for domain in ("babylm", "python", "tinystories", "lua"):
        write_corpus(corp, domain, {"train": ["one two three"] * 5, "valid": ["one two"]})
    os.remove(corp / "lua" / "train.txt")
    os.mkdir(corp / "lua" / "train.txt")
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "all", "--source", f"local:{corp}", "--data_dir", str(tmp_path / "out")])
    assert "lua/train.txt cannot be read as a text file" in one_line_error(e)
    os.rmdir(corp / "lua" / "train.txt")
    os.mkfifo(corp / "lua" / "train.txt")   # a pipe: refused before its open would wait for a writer
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "all", "--source", f"local:{corp}", "--data_dir", str(tmp_path / "out")])
    assert "lua/train.txt cannot be read as a text file" in one_line_error(e)


def test_a_local_domain_missing_is_named_before_any_domain_is_made(tmp_path):
    corp = tmp_path / "c"
    for domain in ("babylm", "python", "tinystories"):
        write_corpus(corp, domain, {"train": ["one two three"] * 5, "valid": ["one two"]})
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "all", "--source", f"local:{corp}", "--data_dir", str(tmp_path / "out")])
    assert f"no {corp}/lua/train.txt (local:DIR wants DIR/<domain>/train.txt and valid.txt)" in one_line_error(e)
    assert not os.path.exists(tmp_path / "out")                        # not after the tokenizer and three domains
    data.main(["--domain", "tinystories", "--source", f"local:{corp}", "--data_dir", str(tmp_path / "out"),
               "--vocab_size", "300"])                                 # a domain that is there is made


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
    # a new tokenizer (here: another vocabulary) re-encodes what is prepared, and open_tokens
    # refuses token files made with the old one
    data.main(["--domain", "babylm", "--data_dir", d, "--vocab_size", "320", "--sample_kb", "20"])
    assert data.read_meta(d, "babylm")["vocab_size"] == 320
    assert data.open_tokens(d, "babylm", "train").max() < 320
    with pytest.raises(SystemExit) as e:
        data.open_tokens(d, "lua", "train")
    assert "python data.py --domain lua" in one_line_error(e)
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", d, "--vocab_size", "320", "--sample_kb", "20"])
    assert "re-encoding" in capsys.readouterr().out and len(data.open_tokens(d, "lua", "train")) > 0


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
        data.open_tokens(str(tmp_path / "none"), "lua", "train")
    assert "python data.py --domain lua" in one_line_error(e)


@needs_torch
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


@needs_torch
def test_epoch_batch_reads_every_block_once_an_epoch_in_a_new_order():
    tokens = np.arange(1000, dtype=np.uint16)       # 999 targets: 31 blocks of 32, the last 31 unread
    n, T = 31, 32
    x, y = data.epoch_batch(tokens, 0, 2 * n + 5, T, "cpu", seed=3)  # two epochs and a part of the third
    assert x.shape == y.shape == (2 * n + 5, T) and x.dtype == torch.int64 and torch.equal(y, x + 1)
    starts = x[:, 0].tolist()
    assert all(s % T == 0 and s + T + 1 <= len(tokens) for s in starts)
    assert sorted(starts[:n]) == sorted(starts[n:2 * n]) == list(range(0, n * T, T))  # each block once
    assert starts[:n] != starts[n:2 * n] and len(set(starts[2 * n:])) == 5     # reshuffled each epoch
    # window k is a function of k: any cut of the stream into batches gives the same windows
    parts = [data.epoch_batch(tokens, lo, hi - lo, T, "cpu", seed=3)[0] for lo, hi in ((0, 7), (7, 40), (40, 67))]
    assert torch.equal(torch.cat(parts), x)
    assert data.epoch_batch(tokens, 0, n, T, "cpu", seed=4)[0][:, 0].tolist() != starts[:n]
    with pytest.raises(SystemExit, match="fewer than block_size"):
        data.epoch_batch(tokens[:32], 0, 1, T, "cpu", seed=0)


@needs_torch
def test_epoch_batch_with_tokens_a_multiple_of_the_block_reads_only_whole_windows():
    """32 tokens, block 8: 31 targets make 3 blocks (starts 0, 8, 16); a block at 24 would need a target at
    token 32, past the end. Epoch 1 is windows 0-2, epoch 2 windows 3-5, each a permutation of the 3 blocks."""
    tokens = np.arange(32, dtype=np.uint16)
    x, y = data.epoch_batch(tokens, 0, 6, 8, "cpu", seed=0)
    starts = x[:, 0].tolist()
    assert sorted(starts[:3]) == sorted(starts[3:]) == [0, 8, 16] and torch.equal(y, x + 1)


def test_helpers():
    bab = np.array([10, 20, 30, 40, 50, 60])
    py = np.array([3] * 30)  # 90 words
    (doms, idx), share = data.mix_plan(bab, py, seed=0, split="train")
    assert share["cut"] == "babylm" and share["python_words"] == 90 and 90 <= share["babylm_words"] < 150
    again = data.mix_plan(bab, py, seed=0, split="train")[0]
    assert np.array_equal(doms, again[0]) and np.array_equal(idx, again[1])
    assert sorted(idx[doms == 1].tolist()) == list(range(30))  # all of the smaller side (python)
    assert bab[idx[doms == 0]].sum() == share["babylm_words"] and doms[:30].tolist() != [1] * 30  # shuffled
    (doms, idx), share = data.mix_plan(bab, py, seed=0, split="train", match=False)  # both whole, shuffled
    assert sorted(idx[doms == 0].tolist()) == list(range(6)) and sorted(idx[doms == 1].tolist()) == list(range(30))
    assert share["cut"] is None and (share["babylm_words"], share["python_words"]) == (210, 90)
    text = data.sample_corpus_text(sample_kb=10)  # bench.py's input: one string is fine for the trainer
    assert "def " in text and len(data.train_bpe(text, 300, log=lambda *a: None)) == 299
    fracs = [data.hash_frac(f"doc {i}") for i in range(1000)]  # the split by hash of a dataset without val
    assert 50 < sum(f < 0.1 for f in fracs) < 150 and fracs == [data.hash_frac(f"doc {i}") for i in range(1000)]
    assert [len(b) for b in data.batched(iter(["x" * 10] * 7), max_docs=3)] == [3, 3, 1]
    assert [len(b) for b in data.batched(iter(["x" * 10] * 7), max_bytes=25)] == [3, 3, 1]


def test_a_document_ends_only_at_a_line_that_is_the_end_of_text_mark_alone(tmp_path):
    """The mark inside a line, or with more on its line, is text; only a line of the mark alone ends a document
    (the streaming reader agrees)."""
    text = "a <|endoftext|> b\n<|endoftext|>\n\n<|endoftext|>x\nc\n<|endoftext|>\n"
    want = ["a <|endoftext|> b", "<|endoftext|>x\nc"]
    assert data.split_eot(text) == want
    (tmp_path / "f.txt").write_text(text, encoding="utf-8")
    assert list(data.local_file_docs(str(tmp_path / "f.txt"))) == want


def test_local_reader_matches_split_eot_across_blocks(tmp_path):
    """The streaming reader gives split_eot's documents, whatever the block boundaries; newlines as text mode."""
    rng = random.Random(2)
    docs = [gen_lua(rng) if i % 2 else "\n\n" + gen_prose(rng) + "\n" for i in range(30)] + ["   ", "last ü"]
    text = "".join(d + "\n<|endoftext|>\n" for d in docs) + "tail without a mark\r\nand a CR line\rend"
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode("utf-8"))
    want = data.split_eot(open(path, encoding="utf-8").read())
    for block in (1, 7, 100, 1 << 20):
        assert list(data.local_file_docs(str(path), block)) == want


def test_token_files_hold_each_document_encoded_alone(built, tmp_path, monkeypatch):
    """encode_split hands a thread a chunk of documents at a time, tiktoken encoding it in one call into an array:
    the file still holds each document's ids as encode_ordinary gives them for it alone, then EOT, in order, with
    the same counts, whatever the chunks and threads; a text <|endoftext|> inside a document stays text."""
    enc, rng, batched = data.load_tokenizer(built), random.Random(3), data.batched
    docs = VARIED + ODD + ["ends in spaces   ", "\n\n  ", f"a literal {data.EOT} inside", data.EOT, "x" * 3000,
                           gen_lua(rng)] + [gen_story(rng) for _ in range(40)]
    want = [t for d in docs for t in enc.encode_ordinary(d) + [data.eot_id(enc)]]
    for max_bytes, threads in ((1 << 20, 2), (300, 1), (300, 3), (1, 2)):
        monkeypatch.setattr(data, "batched", functools.partial(batched, max_bytes=max_bytes))
        path = tmp_path / f"{max_bytes}-{threads}.bin"
        st = data.encode_split(enc, iter(docs), str(path), np.uint16, threads, "test")
        assert np.fromfile(path, dtype=np.uint16).tolist() == want
        assert st == {"documents": len(docs), "bytes": sum(len(d.encode()) for d in docs),
                      "words": sum(len(d.split()) for d in docs), "tokens": len(want)}


def test_mix_plan_draws_as_the_former_lists_did(capsys):
    """The base mix, drawn into arrays, is the one the former code drew with rng.sample(range(n), n) and a
    shuffled list of ints (kept here): the same corpus and seed keep giving the same base token files."""
    def former(bab, py, seed, split):
        wb, wp = int(bab.sum()), int(py.sum())
        (n_small, code_small), (big, code_big) = ((len(py), 1), (bab, 0)) if wb >= wp else ((len(bab), 0), (py, 1))
        rng, picked, w = random.Random(f"{seed}-base-{split}"), [], 0
        for i in rng.sample(range(len(big)), len(big)):
            if w >= min(wb, wp):
                break
            picked.append(i)
            w += int(big[i])
        doms, idx, order = [code_small] * n_small + [code_big] * len(picked), list(range(n_small)) + picked, \
            list(range(n_small + len(picked)))
        rng.shuffle(order)
        return [doms[o] for o in order], [idx[o] for o in order], w
    rng = np.random.default_rng(0)
    for trial in range(120):
        nb, npy = (int(rng.integers(1, 40)), int(rng.integers(1, 40))) if trial < 110 else (20_000, 300)
        bab, py = rng.integers(0, 30, nb).astype(np.uint32), rng.integers(0, 300, npy).astype(np.uint32)
        if trial % 5 == 0:
            bab[rng.random(nb) < 0.5] = 0  # documents without words
        (doms, idx), share = data.mix_plan(bab, py, trial, "train")
        d, i, w = former(bab, py, trial, "train")
        assert doms.tolist() == d and idx.tolist() == i and w == share[f"{share['cut']}_words"]
    capsys.readouterr()


def test_doc_spans_across_read_steps():
    t = np.array([5, 1, 7, 7, 1, 1, 9, 1, 4], dtype=np.uint16)  # separator 1; the 4 after the last EOT is no document
    for step in (1, 2, 3, 100):
        assert [x.tolist() for x in data.doc_spans(t, 1, step=step)] == [[0, 2, 5, 6], [2, 5, 6, 8]]
        assert [x.tolist() for x in data.doc_spans(t, 1, True, step=step)] == [[1, 4, 5, 7], [4, 5, 7, 9]]
    assert [x.tolist() for x in data.doc_spans(t[:0], 1)] == [x.tolist() for x in data.doc_spans(t[:0], 1, True)] == [[], []]


# -----------------------------------------------------------------------------
# the hub, served by a local server: revision and tree API, resolve redirects, Range / If-Range,
# gated files, cut connections, HTML error pages. No test reaches the internet.

TS_SHA = "f54c09fd23315a6f9c86f9dc80f725de7d8f9c64"  # TinyStories: pinned in data.PINNED
BP_SHA = "2b8e08a55375e38eeefbe5b01ab09a0c36447ce5"  # baby-python: pinned in data.PINNED
LUA_SHA = "5c9180d" + "c" * 33  # small-lua-stack: pinned by its abbreviated sha, which the hub resolves
SHAS = {"nilq/baby-python": BP_SHA, "roneneldan/TinyStories": TS_SHA, "nilq/small-lua-stack": LUA_SHA}


class Hub:
    """Answers like the Hugging Face hub. self.repos[repo] = {path: bytes}; self.gated: repos that
    answer 401 (no token) / 403 (a token without access); self.plan[path] lists what to do to the
    next requests of that path: 'cut' (half the body, then close), '503', 'html' (an HTML error page
    with status 200), 'bad_range' (206 with a Content-Range that is not the one asked for)."""

    def __init__(self):
        self.repos, self.gated, self.plan, self.log, self.page_size = {}, set(), {}, [], None
        self.models = set()  # repos in self.repos that are model repos: no /datasets/ in their URLs
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.log.append((self.path, dict(self.headers)))
                todo = hub.plan.get(self.path.split("?")[0], [])
                act = todo.pop(0) if todo else None
                if act == "503":
                    return self.reply(503, b"")
                if act == "html":
                    return self.reply(200, b"<!DOCTYPE html><html><body>Internal error, try later</body></html>",
                                      {"Content-Type": "text/html"})
                route = hub.route(self.path)
                if route is None:
                    return self.reply(404, b"")
                kind, repo, rest = route
                if kind == "revision":
                    return self.reply(200, json.dumps({"id": repo, "sha": SHAS[repo]}).encode())
                if kind == "tree":  # paged like the hub's: Link: <...&cursor=N>; rel="next"
                    files = [{"type": "file", "path": p, "size": len(b), "oid": "x"} for p, b in hub.repos[repo].items()]
                    entries = [{"type": "directory", "path": "data"}] + files
                    at = int(re.search(r"cursor=(\d+)", self.path).group(1)) if "cursor=" in self.path else 0
                    size = hub.page_size or len(entries)
                    more = {"Link": f'<{hub.url}{self.path.split("&cursor=")[0]}&cursor={at + size}>; rel="next"'} \
                        if at + size < len(entries) else {}
                    return self.reply(200, json.dumps(entries[at:at + size]).encode(), more)
                if kind == "resolve":
                    if repo in hub.gated:
                        return self.reply(403 if self.headers.get("Authorization") else 401, b"")
                    return self.reply(302, b"", {"Location": f"{hub.url}/cdn/{repo}/{rest}"})
                self.send_file(hub.repos[repo][rest], act)

            def reply(self, status, body, headers=None):
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def send_file(self, body, act):
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start, end, ranged, rng = 0, len(body), False, self.headers.get("Range")
                if rng and self.headers.get("If-Range", etag) == etag:  # bytes=A- (a resume) or bytes=A-B (a part)
                    m = re.match(r"bytes=(\d+)-(\d*)$", rng)
                    start, end = int(m.group(1)), min(len(body), int(m.group(2)) + 1) if m.group(2) else len(body)
                    ranged = start > 0 or bool(m.group(2))
                if start >= len(body) and start:
                    return self.reply(416, b"")
                self.send_response(206 if ranged else 200)
                if ranged:
                    first = start + 1 if act == "bad_range" else start
                    self.send_header("Content-Range", f"bytes {first}-{end - 1}/{len(body)}")
                self.send_header("Content-Length", str(end - start))
                self.send_header("ETag", etag)
                self.end_headers()
                part = body[start:end]
                self.wfile.write(part[:len(part) // 2] if act == "cut" else part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def route(self, path):
        path = path.split("?")[0]
        for repo in self.repos:
            sha = SHAS[repo]
            api, res = ("models", "") if repo in self.models else ("datasets", "datasets/")
            for kind, prefix in (("revision", f"/api/{api}/{repo}/revision/"),
                                 ("tree", f"/api/{api}/{repo}/tree/{sha}"),
                                 ("resolve", f"/{res}{repo}/resolve/{sha}/"), ("cdn", f"/cdn/{repo}/{sha}/")):
                if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                    rest = path[len(prefix):]
                    if kind == "cdn":
                        if rest not in self.repos[repo]:
                            return None
                        return kind, repo, rest
                    return kind, repo, (sha + "/" + rest if kind == "resolve" else rest)
        return None


@pytest.fixture
def hub(monkeypatch):
    h = Hub()
    monkeypatch.setattr(data, "HF", h.url)
    yield h
    h.httpd.shutdown()
    h.httpd.server_close()


def parquet_bytes(columns, row_group_size=40):
    import io
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=row_group_size)
    return buf.getvalue()


def serve_datasets(hub, lua_val=True):
    """The authors' three datasets in their layout, small, made from the sample generators.
    Returns {domain: {split: [documents in order]}} as data.py should read them. lua_val=False: a
    small-lua-stack with no validation file (data.py then splits it by document hash)."""
    rng = random.Random(11)
    pyfile = lambda: "\n".join(f"def f{i}_{rng.randint(0, 999)}(a, b):\n    return a + b * {i}\n" for i in range(6))  # noqa: E731
    want = {d: {"train": [], "val": []} for d in ("babylm", "python", "tinystories", "lua")}
    bp = {}
    for name, split, n in (("train-00000-of-00002", "train", 120), ("train-00001-of-00002", "train", 90),
                           ("validation-00000-of-00001", "val", 40)):
        rows = [(gen_prose(rng), "BabyLM") if i % 3 else (pyfile(), "python") for i in range(n)]
        rows.insert(5, ("   ", "BabyLM"))  # blank rows are skipped
        bp[f"data/{name}.parquet"] = parquet_bytes({"content": [r[0] for r in rows], "type": [r[1] for r in rows]})
        run = []  # BabyLM: each run of consecutive rows is one document (under --group_kb's 16 KB: rows < 1 KB)
        for text, kind in rows + [("", "python")]:
            if kind == "python" and run:
                want["babylm"][split].append("\n".join(run))
                run = []
            if text.strip():
                (want["python"][split] if kind == "python" else run).append(text)
    stories = {s: [gen_story(rng) for _ in range(n)] for s, n in (("train", 150), ("val", 30))}
    lua = [gen_lua(rng) for _ in range(80)]
    want["tinystories"] = stories
    hub.repos["nilq/baby-python"] = {**bp, "README.md": b"# baby-python"}
    hub.repos["roneneldan/TinyStories"] = {
        "data/train-00000-of-00001.parquet": parquet_bytes({"text": stories["train"]}),
        "data/validation-00000-of-00001.parquet": parquet_bytes({"text": stories["val"]}),
        "TinyStoriesV2-GPT4-train.txt": b"not read"}
    if lua_val:  # as on the hub: train-0000k-of-00006 and validation-00000-of-00001 (here 2 + 1)
        want["lua"] = {"train": lua[:70], "val": lua[70:]}
        hub.repos["nilq/small-lua-stack"] = {
            "data/train-00000-of-00002.parquet": parquet_bytes({"content": lua[:40], "size": [len(x) for x in lua[:40]]}),
            "data/train-00001-of-00002.parquet": parquet_bytes({"content": lua[40:70], "size": [len(x) for x in lua[40:70]]}),
            "data/validation-00000-of-00001.parquet": parquet_bytes({"content": lua[70:], "size": [len(x) for x in lua[70:]]})}
    else:
        want["lua"] = {"train": [d for d in lua if data.hash_frac(d) >= 0.1], "val": [d for d in lua if data.hash_frac(d) < 0.1]}
        hub.repos["nilq/small-lua-stack"] = {"data/train-00000-of-00001.parquet": parquet_bytes({"content": lua})}
    return want


HF_ARGS = ["--source", "hf", "--domain", "all", "--vocab_size", "400", "--max_mb", "0", "--threads", "1"]


def decoded_docs(d, domain, split):
    return data.load_tokenizer(d).decode(data.open_tokens(d, domain, split).tolist()).split(data.EOT)[:-1]


def test_hf_source_end_to_end(hub, tmp_path, monkeypatch, capsys):
    want = serve_datasets(hub)
    hub.page_size = 2  # the file lists come in pages of two entries
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    d = str(tmp_path / "d")
    data.main(HF_ARGS + ["--data_dir", d])
    for domain in ("babylm", "python", "tinystories", "lua"):
        for split in ("train", "val"):
            assert decoded_docs(d, domain, split) == want[domain][split], (domain, split)
    assert data.read_meta(d, "lua")["upstream"] == "nilq/small-lua-stack"
    for domain, sha in (("tinystories", TS_SHA), ("babylm", BP_SHA), ("python", BP_SHA), ("lua", LUA_SHA)):
        assert data.read_meta(d, domain)["revision"] == sha and data.read_meta(d, domain)["pinned"]
    assert open(os.path.join(d, "raw", "hf", "nilq", "small-lua-stack", "REVISION")).read().strip() == LUA_SHA
    asked = [p for p, _ in hub.log if "/revision/" in p]  # full shas are never asked; the prefix once
    assert asked == ["/api/datasets/nilq/small-lua-stack/revision/5c9180d"]
    assert len([p for p, _ in hub.log if "/small-lua-stack/tree/" in p]) == 2  # 3 files + 1 folder: two pages
    assert len([p for p, _ in hub.log if "/baby-python/tree/" in p]) == 3  # 4 files + 1 folder: three pages
    assert not any(p.endswith(".txt") for p, _ in hub.log)  # only the parquet files of the splits
    assert all(h.get("Authorization") == "Bearer hf_test" for p, h in hub.log if "/resolve/" in p)
    # base: nilq/baby-python whole (the authors' mix, not matched again), every document's tokens copied
    # from babylm / python, in a shuffled order
    base, mix = data.read_meta(d, "base"), data.read_meta(d, "base")["mix"]["train"]
    got = decoded_docs(d, "base", "train")
    assert sorted(got) == sorted(want["babylm"]["train"] + want["python"]["train"]) and mix["cut"] is None
    assert base["splits"]["train"]["documents"] == len(got) and got != want["babylm"]["train"] + want["python"]["train"]
    out = capsys.readouterr().out
    assert "documents" in out and "tokens" in out and f"pinned commit 5c9180d is {LUA_SHA}" in out
    # a re-run asks the hub nothing and rebuilds nothing
    hub.log.clear()
    data.main(HF_ARGS + ["--data_dir", d])
    assert hub.log == [] and capsys.readouterr().out.count("is up to date") == 5


def test_hf_revision_unpinned_resolves_main_and_a_wrong_prefix_is_refused(hub, tmp_path, monkeypatch, capsys):
    serve_datasets(hub)
    d = str(tmp_path / "d")
    monkeypatch.setitem(data.PINNED, "nilq/small-lua-stack", (None, "2026-11-25"))
    assert data.hub_revision(d, "nilq/small-lua-stack") == LUA_SHA                # main, resolved and recorded
    assert hub.log[-1][0] == "/api/datasets/nilq/small-lua-stack/revision/main" and "not pinned" in capsys.readouterr().out
    hub.log.clear()
    assert data.hub_revision(d, "nilq/small-lua-stack") == LUA_SHA and hub.log == []  # the record is reused
    monkeypatch.setitem(data.PINNED, "nilq/small-lua-stack", ("5c9180e", "2026-11-25"))
    with pytest.raises(SystemExit) as e:                                            # the record is not the pin
        data.hub_revision(d, "nilq/small-lua-stack")
    assert "not the pinned 5c9180e" in str(e.value.code) and "delete" in str(e.value.code)
    os.remove(os.path.join(d, "raw", "hf", "nilq", "small-lua-stack", "REVISION"))
    with pytest.raises(SystemExit) as e:                                            # nor what the hub answers
        data.hub_revision(d, "nilq/small-lua-stack")
    assert "not the pinned 5c9180e" in str(e.value.code)
    rec = os.path.join(d, "raw", "hf", "nilq", "small-lua-stack", "REVISION")
    assert not os.path.exists(rec)
    for damage in ("5c9180e/../../x\n", b"\xff\xfe", None):  # a path past the pin's prefix, binary, a folder
        if damage is None:
            os.mkdir(rec)
        else:
            open(rec, "wb").write(damage if isinstance(damage, bytes) else damage.encode())
        with pytest.raises(SystemExit) as e:
            data.hub_revision(d, "nilq/small-lua-stack")
        assert "REVISION is damaged (not a commit sha); delete it" in one_line_error(e)
        os.rmdir(rec) if damage is None else os.remove(rec)
    # the hub's answers kept on disk and cut short since: one line naming the file, and deleting it mends it
    monkeypatch.setitem(data.PINNED, "nilq/small-lua-stack", (None, "2026-11-25"))
    open(rec + ".json", "w").write('{"sha": "' + LUA_SHA[:10])
    with pytest.raises(SystemExit) as e:
        data.hub_revision(d, "nilq/small-lua-stack")
    assert f"holds no commit sha; delete {rec}.json and run again" in one_line_error(e)
    os.remove(rec + ".json")
    assert data.hub_revision(d, "nilq/small-lua-stack") == LUA_SHA
    tree = data.hub_tree(d, "nilq/small-lua-stack", LUA_SHA)
    kept = os.path.join(d, "raw", "hf", "nilq", "small-lua-stack", LUA_SHA, "tree.json")
    open(kept, "w").write(json.dumps(tree)[:-5])
    with pytest.raises(SystemExit) as e:
        data.hub_tree(d, "nilq/small-lua-stack", LUA_SHA)
    assert f"{kept} is damaged (not the hub's JSON list of files); delete it" in one_line_error(e)
    os.remove(kept)
    assert data.hub_tree(d, "nilq/small-lua-stack", LUA_SHA) == tree and tree


def test_hf_dataset_without_val_split_is_split_by_hash(hub, tmp_path):
    want = serve_datasets(hub, lua_val=False)
    d = str(tmp_path / "d")
    data.main(HF_ARGS[:-4] + ["--max_mb", "0", "--domain", "lua", "--data_dir", d, "--vocab_size", "300"])
    for split in ("train", "val"):
        assert decoded_docs(d, "lua", split) == want["lua"][split] and want["lua"][split]


def test_hf_max_mb_reads_a_prefix(hub, tmp_path):
    want = serve_datasets(hub)
    d = str(tmp_path / "d")
    data.main(HF_ARGS[:-4] + ["--max_mb", "0.01", "--domain", "tinystories", "--data_dir", d, "--vocab_size", "300"])
    got = decoded_docs(d, "tinystories", "train")
    assert 0 < len(got) < len(want["tinystories"]["train"]) and got == want["tinystories"]["train"][:len(got)]
    assert sum(len(x.encode()) for x in got[:-1]) < 10_000 <= sum(len(x.encode()) for x in got)


def test_download_resumes_after_a_cut_with_if_range(hub, tmp_path):
    hub.repos["nilq/small-lua-stack"] = {"f.parquet": parquet_bytes({"content": ["x" * 1000] * 500})}
    url = f"{hub.url}/cdn/nilq/small-lua-stack/{SHAS['nilq/small-lua-stack']}/f.parquet"
    hub.plan["/cdn/nilq/small-lua-stack/" + SHAS["nilq/small-lua-stack"] + "/f.parquet"] = ["cut"]
    path = data.download(url, str(tmp_path / "f.parquet"), "parquet")
    assert open(path, "rb").read() == hub.repos["nilq/small-lua-stack"]["f.parquet"]
    assert not os.path.exists(path + ".part") and not os.path.exists(path + ".part.etag")
    (first, h1), (_, h2) = hub.log
    assert "Range" not in h1 and h2["If-Range"].startswith('"') and 0 < int(h2["Range"][6:-1]) < len(open(path, "rb").read())


def test_download_changed_file_is_not_stitched(hub, tmp_path, monkeypatch):
    """If the file changes between the cut and the resume, If-Range brings it back whole."""
    key = "/cdn/nilq/small-lua-stack/" + SHAS["nilq/small-lua-stack"] + "/f.parquet"
    old, new = parquet_bytes({"content": ["a" * 900] * 400}), parquet_bytes({"content": ["b" * 900] * 400})
    hub.repos["nilq/small-lua-stack"] = {"f.parquet": old}
    hub.plan[key] = ["cut"]
    real = data.fetch_once

    def swap_after_first(*a):  # the upstream file is replaced after the first (cut) request
        try:
            return real(*a)
        finally:
            hub.repos["nilq/small-lua-stack"]["f.parquet"] = new
    monkeypatch.setattr(data, "fetch_once", swap_after_first)
    path = data.download(hub.url + key, str(tmp_path / "f.parquet"), "parquet")
    assert open(path, "rb").read() == new and hub.log[1][1].get("If-Range")


def test_download_checks_content_range(hub, tmp_path):
    key = "/cdn/nilq/small-lua-stack/" + SHAS["nilq/small-lua-stack"] + "/f.parquet"
    hub.repos["nilq/small-lua-stack"] = {"f.parquet": parquet_bytes({"content": ["z" * 700] * 300})}
    hub.plan[key] = ["cut", "bad_range"]
    path = data.download(hub.url + key, str(tmp_path / "f.parquet"), "parquet")
    assert open(path, "rb").read() == hub.repos["nilq/small-lua-stack"]["f.parquet"]
    assert len(hub.log) == 3 and "Range" not in hub.log[2][1]  # the wrong range was thrown away, then a clean start


def test_html_error_page_is_rejected_and_deleted(hub, tmp_path):
    want = serve_datasets(hub)
    key = f"/cdn/roneneldan/TinyStories/{TS_SHA}/data/validation-00000-of-00001.parquet"
    hub.plan[key] = ["html"]
    d = str(tmp_path / "d")
    args = HF_ARGS[:-4] + ["--domain", "tinystories", "--data_dir", d, "--vocab_size", "300", "--max_mb", "0"]
    with pytest.raises(SystemExit) as e:
        data.main(args)
    msg = one_line_error(e)
    assert "HTML" in msg and "deleted" in msg
    raw = os.path.join(d, "raw", "hf", "roneneldan", "TinyStories", TS_SHA, "data")
    assert not [f for f in os.listdir(raw) if f.startswith("validation")]  # neither the file nor a .part
    data.main(args)  # the next run downloads it properly
    assert decoded_docs(d, "tinystories", "val") == want["tinystories"]["val"]


def test_dataset_without_parquet_files_is_one_line(hub, tmp_path):
    serve_datasets(hub)
    hub.repos["roneneldan/TinyStories"] = {"TinyStoriesV2-GPT4-train.txt": b"x"}  # another layout at that commit
    with pytest.raises(SystemExit) as e:
        data.main(HF_ARGS + ["--domain", "tinystories", "--data_dir", str(tmp_path), "--vocab_size", "300"])
    msg = one_line_error(e)
    assert "roneneldan/TinyStories" in msg and TS_SHA in msg and "no parquet files" in msg and "PINNED" in msg


def test_unknown_type_values_are_one_line(hub, tmp_path):
    """Code rows labelled without "python": one line naming the values, from the footers and first row groups
    (Range requests), before any file is downloaded; the check after reading still stands for downloaded files."""
    serve_datasets(hub)
    rows = {"content": ["some prose here"] * 60 + ["def f():\n    pass"] * 30, "type": ["prose"] * 60 + ["code"] * 30}
    wiki = parquet_bytes({"content": ["x"], "type": ["wiki"]})
    hub.repos["nilq/baby-python"] = {"data/train-00000-of-00002.parquet": parquet_bytes(rows),
                                     "data/train-00001-of-00002.parquet": wiki,
                                     "data/validation-00000-of-00001.parquet": parquet_bytes(rows)}
    d = str(tmp_path / "d")
    with pytest.raises(SystemExit) as e:
        data.main(HF_ARGS + ["--domain", "lua", "--data_dir", d, "--vocab_size", "300"])
    msg = one_line_error(e)  # 'code' is in no first row group: the footer's statistics name it
    assert "['code', 'prose', 'wiki']" in msg and "goes to python" in msg and "type_domain" in msg
    parts = [(p, h) for p, h in hub.log if "baby-python" in p and p.endswith(".parquet")]
    assert parts and all(re.fullmatch(r"bytes=\d+-\d+", h.get("Range", "")) for p, h in parts)
    assert not [f for _, _, fs in os.walk(os.path.join(d, "raw")) for f in fs if ".parquet" in f]
    for name in ("train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"):  # downloaded
        data.hub_file(d, "nilq/baby-python", f"data/{name}.parquet")
    with pytest.raises(SystemExit) as e:
        data.main(HF_ARGS + ["--domain", "lua", "--data_dir", d, "--vocab_size", "300"])
    msg = one_line_error(e)
    assert "no train rows for python" in msg and "'code'" in msg and "'prose'" in msg and "type_domain" in msg


def serve_lines(hub):
    """nilq/baby-python as it is stored: BabyLM one line a row (here two sub-corpora, by `type`), then Python
    files; the first row groups hold no Python (the footers' statistics show it). Returns {split: rows}."""
    rng = random.Random(5)
    words = gen_prose(rng).split()
    line = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))  # noqa: E731
    pyfile = lambda i: f"def f{i}(a):\n    return a * {i}\n"  # noqa: E731
    rows = {"train": [(line(), "childes") for _ in range(50)] + [(" ", "childes")]
            + [(line(), "gutenberg") for _ in range(25)] + [("long " * 100, "gutenberg")]
            + [(line(), "gutenberg") for _ in range(25)] + [(pyfile(i), "python") for i in range(10)],
            "val": [(line(), "childes") for _ in range(20)] + [(pyfile(i), "python") for i in range(3)]}
    hub.repos["nilq/baby-python"] = {
        f"data/{name}-00000-of-00001.parquet": parquet_bytes({"content": [t for t, _ in rows[s]],
                                                              "type": [k for _, k in rows[s]]})
        for name, s in (("train", "train"), ("validation", "val"))}
    return rows


def test_babylm_lines_grouped_into_runs_of_running_text(hub, tmp_path, capsys):
    """--group_kb: consecutive BabyLM rows of one `type`, in stored order, joined into documents of up to
    group_kb KB (greedily; a longer row alone); 0: a row each; Python files untouched; a change re-encodes."""
    rows = serve_lines(hub)
    d = str(tmp_path / "d")
    args = HF_ARGS[:-4] + ["--max_mb", "0", "--domain", "base", "--data_dir", d, "--vocab_size", "300"]
    data.main(args + ["--group_kb", "0.3"])
    for split in ("train", "val"):
        lines = [(t, k) for t, k in rows[split] if k != "python" and t.strip()]
        docs = decoded_docs(d, "babylm", split)
        assert [x for doc in docs for x in doc.split("\n")] == [t for t, _ in lines]  # all, in stored order
        kinds, at = [], 0
        for doc in docs:
            n = doc.count("\n") + 1
            kinds.append({k for _, k in lines[at:at + n]})
            at += n
            assert len(doc.encode()) <= 300 or n == 1
        assert all(len(k) == 1 for k in kinds)  # never across a change of `type`
        for (a, ka), (b, kb) in zip(zip(docs, kinds), zip(docs[1:], kinds[1:])):  # as full as the bound allows
            assert ka != kb or len(a.encode()) + 1 + len(b.split("\n")[0].encode()) > 300
        assert max(doc.count("\n") for doc in docs) >= 3
        assert decoded_docs(d, "python", split) == [t for t, k in rows[split] if k == "python"]
    assert [m["settings"]["group_kb"] for m in (data.read_meta(d, "babylm"), data.read_meta(d, "base"))] == [0.3] * 2
    assert "group_kb" not in data.read_meta(d, "python")["settings"]
    capsys.readouterr()
    data.main(args + ["--group_kb", "0"])
    out = capsys.readouterr().out
    assert "retraining the tokenizer" in out and f"{d}/babylm is up to date" not in out
    for split in ("train", "val"):
        assert decoded_docs(d, "babylm", split) == [t for t, k in rows[split] if k != "python" and t.strip()]
        assert decoded_docs(d, "python", split) == [t for t, k in rows[split] if k == "python"]


def test_dry_run_reads_footers_by_range_requests_only(hub, tmp_path, capsys):
    serve_datasets(hub)
    d = str(tmp_path / "d")
    data.main(HF_ARGS + ["--data_dir", d, "--dry_run"])
    out = capsys.readouterr().out
    assert f"nilq/baby-python at {BP_SHA}, for babylm, python" in out and f"nilq/small-lua-stack at {LUA_SHA}" in out
    assert "train: 2 files" in out and "212 rows" in out and "validation-00000-of-00001.parquet" in out
    assert re.search(r"'BabyLM' \([\d,]+ rows\) -> babylm, 'python' \([\d,]+ rows\) -> python", out)
    assert "documents of up to 16 KB (--group_kb)" in out and "a run downloads 8 files" in out
    assert re.search(r"read [\d.,]+ KB in \d+ Range requests; nothing was downloaded whole", out)
    files = [p for p, _ in hub.log if "/resolve/" in p or "/cdn/" in p]
    assert files and all(re.fullmatch(r"bytes=\d+-\d+", h.get("Range", "")) for p, h in hub.log if p in files)
    assert not any(p.endswith(".txt") for p in files)
    kept = [f for _, _, fs in os.walk(d) for f in fs]
    assert kept and all(f in ("REVISION", "info.json", "tree.json") for f in kept), kept  # the hub's answers only
    with pytest.raises(SystemExit) as e:
        data.main(["--data_dir", d, "--dry_run"])
    assert "use it with --source hf" in one_line_error(e)


@pytest.mark.parametrize("token", [None, "hf_nope"])
def test_gated_file_is_one_line_naming_hf_token(hub, tmp_path, monkeypatch, token):
    serve_datasets(hub)
    hub.gated.add("nilq/small-lua-stack")
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(SystemExit) as e:
        data.main(HF_ARGS[:-4] + ["--domain", "lua", "--data_dir", str(tmp_path), "--vocab_size", "300"])
    msg = one_line_error(e)
    assert ("HTTP 403" if token else "HTTP 401") in msg and "HF_TOKEN" in msg
    assert len([p for p, _ in hub.log if "small-lua-stack/resolve/" in p]) == 1  # no retries on a refusal


def test_download_retries_on_503_and_gives_up(hub, tmp_path):
    key = "/cdn/nilq/small-lua-stack/" + SHAS["nilq/small-lua-stack"] + "/f.parquet"
    hub.repos["nilq/small-lua-stack"] = {"f.parquet": parquet_bytes({"content": ["q"] * 10})}
    hub.plan[key] = ["503", "503"]
    assert open(data.download(hub.url + key, str(tmp_path / "a.parquet"), "parquet"), "rb").read() == \
        hub.repos["nilq/small-lua-stack"]["f.parquet"]
    assert len(hub.log) == 3
    hub.plan[key] = ["503"] * 10
    with pytest.raises(SystemExit) as e:
        data.download(hub.url + key, str(tmp_path / "b.parquet"), "parquet")
    assert "failed after 4 tries" in one_line_error(e)
    n = len(hub.log)
    data.download(hub.url + key, str(tmp_path / "a.parquet"), "parquet")  # complete: no request
    assert len(hub.log) == n


def test_offline_fails_at_once_in_one_line(tmp_path, monkeypatch):
    """No network: a name that does not resolve is final at once: no back-off, no retries."""
    import socket
    calls, sleeps = [], []

    def no_dns(*a, **k):
        calls.append(a[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(data.time, "sleep", lambda s: sleeps.append(s))
    monkeypatch.setattr(data, "HF", "https://huggingface.co")
    with pytest.raises(SystemExit) as e:
        data.main(HF_ARGS + ["--domain", "lua", "--data_dir", str(tmp_path), "--vocab_size", "300"])
    msg = one_line_error(e)
    assert "huggingface.co" in msg and "name resolution failed" in msg and "--source sample" in msg
    assert len(calls) == 1 and sleeps == []


def test_hf_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SystemExit) as e:
        data.main(["--source", "hf", "--data_dir", str(tmp_path)])
    assert "pip install -r requirements-hf.txt" in one_line_error(e)


def test_core_path_never_imports_pyarrow_or_requests(tmp_path):
    import subprocess
    code = ("import sys, data; data.main(['--domain', 'lua', '--data_dir', sys.argv[1], '--vocab_size', '300', "
            "'--sample_kb', '10', '--threads', '1']); bad = [m for m in ('pyarrow', 'requests') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=os.path.dirname(data.__file__),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_bpe_mb_trains_on_a_hash_chosen_sample(tmp_path, capsys):
    """--bpe_mb bounds the tokenizer trainer's input (its memory grows with the distinct chunks it sees)."""
    args = ["--domain", "lua", "--vocab_size", "300", "--sample_kb", "40", "--threads", "1"]
    data.main(args + ["--data_dir", str(tmp_path / "all"), "--bpe_mb", "0"])
    capsys.readouterr()
    data.main(args + ["--data_dir", str(tmp_path / "some"), "--bpe_mb", "0.02"])
    out = capsys.readouterr().out
    assert re.search(r"training a 300-token byte-level BPE on a hash-chosen \d+\.\d% of the base mix", out)
    some = data.read_json(str(tmp_path / "some" / "tokenizer" / "tokenizer.json"))
    assert "sample by document hash" in some["trained_on"] and some["spec"]["bpe_mb"] == 0.02
    assert some["hash"] != data.tokenizer_hash(str(tmp_path / "all"))
    data.main(args + ["--data_dir", str(tmp_path / "again"), "--bpe_mb", "0.02"])  # the same sample every time
    assert data.tokenizer_hash(str(tmp_path / "again")) == some["hash"]


def test_paper_preset_warns_loudly_when_a_domain_is_small(tmp_path, capsys):
    data.main(["--preset", "paper", "--domain", "lua", "--data_dir", str(tmp_path), "--vocab_size", "300",
               "--sample_kb", "10", "--threads", "1"])
    out = capsys.readouterr().out
    assert "WARNING: lua has only" in out and "500M" in out and "not the paper's data" in out
    assert re.search(r"lua\s+train\s+[\d,]+\s+[\d,]+\s+[\d,]+", out)  # the mix and sizes table


# -----------------------------------------------------------------------------
# Python 3.10: the pattern `re` gets


def test_re_pattern_has_no_possessive_quantifiers_and_splits_like_tiktoken():
    """Python 3.10's `re` rejects `?+` / `++` ("multiple repeat"): RE_PATTERN, exactly as train_bpe
    hands it to re.compile, must not use them, and must split like tiktoken's PATTERN on varied text."""
    assert "?+" not in data.RE_PATTERN and "++" not in data.RE_PATTERN and "*+" not in data.RE_PATTERN
    assert data.train_bpe.__defaults__[0] == data.RE_PATTERN  # what the trainer compiles
    rx = re.compile(data.RE_PATTERN)
    rng = random.Random(5)
    texts = VARIED + ODD[3:4] + [gen_prose(rng) for _ in range(5)] + [gen_lua(rng) for _ in range(5)] + \
        [gen_story(rng), "x = a++ + b?? ... !!! ;; \n\n  _foo?bar +=1 'll 'S 'Ve ?!+\r\n", "  \t\n a\n\n\n b"]
    if sys.version_info >= (3, 11):  # where `re` knows possessives: the two patterns are the same regex
        for t in texts:
            assert rx.findall(t) == re.findall(data.PATTERN, t)
    ranks = {bytes([i]): i for i in range(256)}
    chunks = [c for t in texts for c in rx.findall(t)]
    for c in chunks:
        ranks.setdefault(c.encode(), len(ranks))
    enc = tiktoken.Encoding("probe310", pat_str=data.PATTERN, mergeable_ranks=ranks, special_tokens={})
    for t in texts:
        assert [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary(t)] == [c.encode() for c in rx.findall(t)]


# -----------------------------------------------------------------------------
# open_tokens: THE data check (issue 12 items 3 and 12)


@pytest.fixture
def small_built(tmp_path):
    d = str(tmp_path / "d")
    data.main(["--domain", "lua", "--data_dir", d, "--vocab_size", "300", "--sample_kb", "20", "--threads", "1"])
    return d


def test_swapped_domain_folders_are_refused_when_read_and_rebuilt_by_data_py(small_built, capsys):
    args = ["--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20", "--threads", "1"]
    data.main(["--domain", "tinystories", *args])
    want = {d: data.read_meta(small_built, d)["splits"]["val"]["sha256"] for d in ("lua", "tinystories")}
    lua, ts = (os.path.join(small_built, d) for d in ("lua", "tinystories"))
    os.rename(lua, lua + ".x"), os.rename(ts, lua), os.rename(lua + ".x", ts)
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "val")
    assert "meta.json of domain 'tinystories', not 'lua': folders swapped?" in one_line_error(e)
    capsys.readouterr()
    data.main(["--domain", "lua", *args]), data.main(["--domain", "tinystories", *args])
    assert capsys.readouterr().out.count("rebuilding") == 2
    assert {d: data.read_meta(small_built, d)["splits"]["val"]["sha256"] for d in ("lua", "tinystories")} == want


def test_a_resume_compares_the_tokens_it_began_on(small_built):
    now = data.tokens_sha256(small_built, ["lua"])
    assert len(now["lua"]) == 64
    data.check_same_tokens(now, small_built, ["lua"], "ck.pt", "fix")                  # the same tokens
    data.check_same_tokens({"lua": None}, small_built, ["lua"], "ck.pt", "fix")        # begun before checksums
    data.check_same_tokens(None, small_built, ["lua"], "ck.pt", "fix")                 # saved before the record
    with pytest.raises(SystemExit) as e:
        data.check_same_tokens({"lua": "0" * 64}, small_built, ["lua"], "ck.pt", "python x.py")
    assert "ck.pt began on other lua tokens than" in one_line_error(e) and "python x.py --overwrite" in str(e.value)


def test_open_tokens_accepts_good_data(small_built):
    th, meta = data.tokenizer_hash(small_built), data.read_meta(small_built, "lua")
    toks = data.open_tokens(small_built, "lua", "train", tok_hash=th, vocab_size=300, who="lua")
    assert isinstance(toks, np.memmap) and len(toks) == meta["splits"]["train"]["tokens"] > 0


def test_truncated_token_file_is_refused(small_built):
    path = os.path.join(small_built, "lua", "train.bin")
    size = os.path.getsize(path)
    for new in (size // 2, size - 1):  # half the tokens; an odd byte count (numpy used to raise)
        os.truncate(path, new)
        with pytest.raises(SystemExit) as e:
            data.open_tokens(small_built, "lua", "train")
        msg = one_line_error(e)
        assert f"{new:,} bytes" in msg and "truncated" in msg and "python data.py --domain lua" in msg


def test_token_files_are_checked_against_their_checksum_and_the_vocabulary(small_built, monkeypatch):
    """meta.json holds each split's sha256 and largest id (issue 26); open_tokens checks the file against them
    once and keeps the verdict beside it: in-range garbage or an id outside the vocabulary is one line."""
    import time
    path, meta = os.path.join(small_built, "lua", "train.bin"), data.read_meta(small_built, "lua")
    toks = np.fromfile(path, dtype=meta["dtype"])
    assert meta["splits"]["train"]["sha256"] == hashlib.sha256(toks.tobytes()).hexdigest()
    assert meta["splits"]["train"]["max_id"] == toks.max() < meta["vocab_size"]
    os.utime(path, (time.time() - 10,) * 2)  # written a while ago (a verdict on a file written this instant is not kept)
    scans, scan = [], data.scan_tokens
    monkeypatch.setattr(data, "scan_tokens", lambda *a: scans.append(a) or scan(*a))
    for _ in range(3):
        data.open_tokens(small_built, "lua", "train")
    assert len(scans) == 1 and os.path.exists(os.path.join(small_built, "lua", ".train.bin.checked"))
    for value, words in [((int(toks[10]) + 1) % meta["vocab_size"], "is damaged: its bytes do not match the sha256"),
                         (meta["vocab_size"] + 3, f"holds token id {meta['vocab_size'] + 3}, outside the vocabulary")]:
        a = np.memmap(path, dtype=meta["dtype"], mode="r+")
        a[10:20] = value
        a.flush()
        del a
        with pytest.raises(SystemExit) as e:
            data.open_tokens(small_built, "lua", "train")
        msg = one_line_error(e)
        assert path in msg and words in msg and "python data.py --domain lua" in msg and "--force" in msg


def test_token_files_made_before_checksums_are_id_checked_and_get_them_from_data_py(small_built, capsys):
    path, meta = os.path.join(small_built, "lua", "val.bin"), data.read_meta(small_built, "lua")
    edit_meta(small_built, "lua", lambda m: [m["splits"][s].pop(k) for s in ("train", "val") for k in ("sha256", "max_id")])
    a = np.memmap(path, dtype=meta["dtype"], mode="r+")
    first = int(a[0])
    a[0] = meta["vocab_size"]
    a.flush()
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "val")
    assert f"holds token id {meta['vocab_size']}" in one_line_error(e)
    a[0] = first
    a.flush()
    del a
    data.open_tokens(small_built, "lua", "val")
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20", "--threads", "1"])
    assert "added the token files' checksums" in capsys.readouterr().out
    assert data.read_meta(small_built, "lua")["splits"] == meta["splits"]


def edit_meta(d, domain, change):
    path = os.path.join(d, domain, "meta.json")
    meta = json.load(open(path))
    change(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("damage,words", [
    ("bad json", "not readable JSON"), ("no tokenizer_hash", "no tokenizer_hash"),
    ("dtype", "dtype 'int7'"), ("vocab too big for dtype", "does not fit dtype"), ("no splits", "no splits"),
    # whole JSON with an inner value of the wrong type (it used to stop open_tokens and data.py with a traceback)
    ("a split a list", "no token count for the train split"), ("tokens as text", "no token count for the val split"),
    ("tokenizer_hash a list", "tokenizer_hash [1] is not a hash")])
def test_damaged_meta_is_one_line_and_data_py_rebuilds_it(small_built, damage, words, capsys):
    path = os.path.join(small_built, "lua", "meta.json")
    if damage == "bad json":
        open(path, "w").write('{"dtype": "uint16", "splits": {')
    else:
        edit_meta(small_built, "lua", {"no tokenizer_hash": lambda m: m.pop("tokenizer_hash"),
                                       "dtype": lambda m: m.update(dtype="int7"),
                                       "vocab too big for dtype": lambda m: m.update(vocab_size=70000),
                                       "no splits": lambda m: m.pop("splits"),
                                       "a split a list": lambda m: m["splits"].update(train=[1]),
                                       "tokens as text": lambda m: m["splits"]["val"].update(tokens="12"),
                                       "tokenizer_hash a list": lambda m: m.update(tokenizer_hash=[1])}[damage])
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "train")
    msg = one_line_error(e)
    assert words in msg and "meta.json is damaged" in msg and "python data.py --domain lua" in msg
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20"])
    assert "is damaged" in capsys.readouterr().out
    assert len(data.open_tokens(small_built, "lua", "val")) == data.read_meta(small_built, "lua")["splits"]["val"]["tokens"]


def test_model_vocab_and_tokenizer_mismatch(small_built):
    th = data.tokenizer_hash(small_built)
    edit_meta(small_built, "lua", lambda m: m.update(vocab_size=32))  # lowered by hand: tokens go beyond it
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "val")
    assert "vocab_size 32 but the tokenizer" in one_line_error(e)
    edit_meta(small_built, "lua", lambda m: m.update(vocab_size=300))
    with pytest.raises(SystemExit) as e:  # the model's vocabulary is smaller than the data's
        data.open_tokens(small_built, "lua", "val", tok_hash=th, vocab_size=256, who="lua")
    msg = one_line_error(e)
    assert "vocabulary of 300" in msg and "model 'lua'" in msg and "--data_dir" in msg
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "val", tok_hash="0123abcd", vocab_size=300, who="base")
    msg = one_line_error(e)
    assert f"tokenizer {th}" in msg and "model 'base' uses 0123abcd" in msg and "--data_dir the model was trained on" in msg
    for bad in (lambda: data.open_tokens(small_built, "lua", "test"), lambda: data.open_tokens(small_built, "base", "val")):
        with pytest.raises(SystemExit) as e:
            bad()
        one_line_error(e)


def test_missing_rank_file_is_one_line_and_rebuilt(small_built, capsys):
    os.remove(os.path.join(small_built, "tokenizer", "bpe.tiktoken"))
    for f in (data.load_tokenizer, data.tokenizer_hash):
        with pytest.raises(SystemExit) as e:
            f(small_built)
        msg = one_line_error(e)
        assert "bpe.tiktoken" in msg and "python data.py --domain all" in msg
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20"])
    assert "retraining" in capsys.readouterr().out and data.load_tokenizer(small_built).n_vocab == 300


def test_damaged_tokenizer_json_is_one_line_and_rebuilt(small_built, capsys):
    th = data.tokenizer_hash(small_built)
    open(os.path.join(small_built, "tokenizer", "tokenizer.json"), "w").write('{"name": "bpe300", "vocab')
    with pytest.raises(SystemExit) as e:
        data.load_tokenizer(small_built)
    assert "tokenizer.json is damaged" in one_line_error(e)
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20"])
    out = capsys.readouterr().out
    assert "tokenizer.json is damaged; retraining" in out and "is up to date" in out  # same tokenizer: no re-encoding
    assert data.tokenizer_hash(small_built) == th
    # whole JSON with the hash intact, but a vocab_size its rank file does not hold (the hash covers no count)
    path = os.path.join(small_built, "tokenizer", "tokenizer.json")
    info = json.load(open(path))
    json.dump({**info, "vocab_size": 5000}, open(path, "w"))
    with pytest.raises(SystemExit) as e:
        data.open_tokens(small_built, "lua", "val")
    assert "the tokenizer/tokenizer.json is damaged; re-make it: python data.py --domain lua" in one_line_error(e)
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20"])
    out = capsys.readouterr().out
    assert "retraining the tokenizer" in out and "is up to date" in out
    assert json.load(open(path))["vocab_size"] == info["vocab_size"] and data.tokenizer_hash(small_built) == th


@pytest.mark.parametrize("field,value", [("format", []), ("format", {"a": 1}), ("vocab_size", "300"),
                                         ("special_tokens", [1]), ("pattern", 5), ("hash", ["x"])])
def test_tokenizer_json_of_the_wrong_shape_is_damaged_and_rebuilt(small_built, field, value, capsys):
    # whole JSON, its fields of the wrong type (a list for the format used to be an unhashable-type traceback)
    th, path = data.tokenizer_hash(small_built), os.path.join(small_built, "tokenizer", "tokenizer.json")
    json.dump({**json.load(open(path)), field: value}, open(path, "w"))
    for f in (data.load_tokenizer, data.tokenizer_hash):
        with pytest.raises(SystemExit) as e:
            f(small_built)
        assert "tokenizer.json is damaged" in one_line_error(e) and "python data.py --domain all" in one_line_error(e)
    capsys.readouterr()
    data.main(["--domain", "lua", "--data_dir", small_built, "--vocab_size", "300", "--sample_kb", "20"])
    out = capsys.readouterr().out
    assert "tokenizer.json is damaged; retraining" in out and "is up to date" in out
    assert data.tokenizer_hash(small_built) == th


def test_non_utf8_local_corpus_names_file_and_offset(tmp_path):
    corp = tmp_path / "corpora"
    for domain in ("babylm", "python"):
        write_corpus(corp, domain, {"train": ["some text here"] * 5, "valid": ["more text"] * 2})
    bad = corp / "python" / "train.txt"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:40] + b"caf\xe9" + raw[40:])  # latin-1 e-acute
    with pytest.raises(SystemExit) as e:
        data.main(["--domain", "python", "--source", f"local:{corp}", "--data_dir", str(tmp_path / "out"),
                   "--vocab_size", "300"])
    msg = one_line_error(e)
    assert str(bad) in msg and "offset 43" in msg and "0xe9" in msg and "UTF-8" in msg


def test_a_rebuild_from_a_source_not_utf8_changes_nothing(tmp_path):
    """A domain rebuilt from an edited source with a byte that is not UTF-8 (here in its val text, read after
    the tokenizer is trained and the train split encoded) is refused before anything is made: the tokenizer,
    token files and meta.json stay as they were, usable. The byte is named at its offset past a block's end."""
    corp, out = tmp_path / "corpora", tmp_path / "out"
    for domain in ("babylm", "python"):
        write_corpus(corp, domain, {"train": ["def f(x): return x"] * 40, "valid": ["return x"] * 8})
    args = ["--domain", "python", "--source", f"local:{corp}", "--data_dir", str(out), "--vocab_size", "300"]
    data.main(args)

    def files():
        return {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, fs in os.walk(out) for f in fs
                if f != ".lock"}
    before = files()
    assert {"meta.json", "train.bin", "val.bin"} <= {os.path.basename(f) for f in before}
    write_corpus(corp, "python", {"train": ["def g(y): return y"] * 40, "valid": ["return y"] * 8})
    val = corp / "python" / "valid.txt"
    good = val.read_bytes()
    val.write_bytes(good + b"caf\xe9\n")
    for extra in ([], ["--force"]):
        with pytest.raises(SystemExit) as e:
            data.main(args + extra)
        assert f"{val} is not UTF-8: byte 0xe9 at offset {len(good) + 3:,}" in one_line_error(e)
        assert files() == before
    with pytest.raises(SystemExit) as e:  # across the blocks check_utf8 reads: the same offset
        data.check_utf8(str(val), block=7)
    assert f"byte 0xe9 at offset {len(good) + 3:,}" in one_line_error(e)
    wide = tmp_path / "wide.txt"  # characters of 2 and 3 bytes cut by every block size
    wide.write_bytes("é☃".encode() * 4 + b"\xff")
    for block in (1, 2, 3, 7):
        with pytest.raises(SystemExit) as e:
            data.check_utf8(str(wide), block=block)
        assert "byte 0xff at offset 20" in one_line_error(e), block
    wide.write_bytes("é☃".encode() * 4)
    data.check_utf8(str(wide), block=2)  # (whole: nothing to say)


@pytest.mark.parametrize("bad", [["--val_frac", "1.5"], ["--val_frac", "0"], ["--val_frac", "nan"], ["--threads", "-1"],
                                 ["--vocab_size", "100"], ["--sample_kb", "0"], ["--domain", "klingon"]])
def test_bad_settings_refused_at_parse_time(tmp_path, bad):
    with pytest.raises(SystemExit) as e:
        data.main(["--data_dir", str(tmp_path / "never")] + bad)
    assert f"--{bad[0][2:]}" in one_line_error(e)
    assert not os.path.exists(tmp_path / "never")  # refused before anything was made


def test_threads_zero_means_automatic(tmp_path, capsys):
    data.main(["--domain", "lua", "--data_dir", str(tmp_path), "--vocab_size", "300", "--sample_kb", "10", "--threads", "0"])
    line = [ln for ln in capsys.readouterr().out.splitlines() if "encoding threads" in ln][0]
    assert int(re.search(r"(\d+) encoding threads", line).group(1)) >= 1


def test_help_lists_every_key_with_its_comment(capsys):
    with pytest.raises(SystemExit) as e:
        data.main(["-h"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    for key in data.config:
        assert f"--{key}" in out
    assert "held-out share" in out and "encoding threads" in out


# -----------------------------------------------------------------------------
# sample_windows: THE window sampler, reproducing each stage's former sampler exactly


def old_get_batch_windows(tokens, batch_size, block_size, generator):  # data.get_batch before
    ix = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
    return np.stack([np.asarray(tokens[i:i + block_size + 1], dtype=np.int64) for i in ix])


def old_eval_windows(arrays, n_seqs, seq_len):  # sae.eval_windows before
    starts = [np.linspace(0, len(a) - seq_len - 1, n_seqs // len(arrays) + (d < n_seqs % len(arrays))).astype(np.int64).tolist()
              for d, a in enumerate(arrays)]
    return np.stack([np.asarray(a[s:s + seq_len + 1], dtype=np.int64) for a, st in zip(arrays, starts) for s in st])


def old_draw_token_set(arrays, n_tokens, T, seed):  # analyze.draw_token_set before
    rng = np.random.default_rng(seed)
    n_seq, names = n_tokens // T, list(arrays)
    rows, drawn = [], {}
    for d, name in enumerate(names):
        want, avail = n_seq // len(names) + (d < n_seq % len(names)), len(arrays[name]) // T
        pick = np.sort(rng.choice(avail, size=min(want, avail), replace=False)) if avail else []
        rows += [np.asarray(arrays[name][i * T:(i + 1) * T], dtype=np.int64) for i in pick]
        drawn[name] = len(pick)
    return (np.stack(rows) if rows else np.zeros((0, T), dtype=np.int64)), drawn


def old_eval_loss_windows(tokens, T, batch_size, max_batches):  # model.eval_loss's windows, batch by batch
    n_win = (len(tokens) - 1) // T
    if max_batches is not None:
        n_win = min(n_win, max_batches * batch_size)
    for start in range(0, n_win, batch_size):
        w = np.arange(start, min(start + batch_size, n_win)) * T
        yield np.stack([np.asarray(tokens[i:i + T + 1], dtype=np.int64) for i in w])


@needs_torch
def test_sample_windows_reproduces_the_former_samplers():
    rng = np.random.default_rng(0)
    arrs = {"a": rng.integers(0, 60000, 5003).astype(np.uint16), "b": rng.integers(0, 60000, 777).astype(np.uint16),
            "c": rng.integers(0, 60000, 40).astype(np.uint16)}
    one = arrs["a"]
    # get_batch: the same torch.randint call, and the generator left in the same state
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        x, y = data.get_batch(one, 16, 64, "cpu", g1)
        ref = torch.from_numpy(old_get_batch_windows(one, 16, 64, g2))
        assert torch.equal(x, ref[:, :-1]) and torch.equal(y, ref[:, 1:])
    assert torch.equal(torch.randint(10 ** 6, (4,), generator=g1), torch.randint(10 ** 6, (4,), generator=g2))
    # spread (sae.eval_windows), with uneven shares over three domains
    two = [arrs["a"], arrs["b"]]
    for n in (1, 7, 32):
        assert np.array_equal(data.sample_windows(two, n, 33, "spread"), old_eval_windows(two, n, 32))
    # tiles (analyze.draw_token_set): seeded, distinct, a short domain gives what it has
    for n_tok, T in ((64 * 40, 64), (10 ** 6, 50), (300, 16)):
        ref, drawn = old_draw_token_set(arrs, n_tok, T, seed=11)
        got, counts = data.sample_windows(arrs, n_tok // T, T, "tiles", 11, with_counts=True)
        assert np.array_equal(got, ref) and counts == drawn
        got2 = data.sample_windows(arrs, n_tok // T, T, "tiles", np.random.default_rng(11))
        assert np.array_equal(got2, ref)
    # consecutive (model.eval_loss), batch by batch via offset
    for T, bs, mb in ((64, 8, None), (64, 8, 3), (100, 7, None)):
        n_win = (len(one) - 1) // T if mb is None else min((len(one) - 1) // T, mb * bs)
        got = [data.sample_windows(one, min(bs, n_win - s), T + 1, "consecutive", offset=s) for s in range(0, n_win, bs)]
        ref = list(old_eval_loss_windows(one, T, bs, mb))
        assert len(got) == len(ref) and all(np.array_equal(a, b) for a, b in zip(got, ref))
        at_once = data.sample_windows(one, None if mb is None else mb * bs, T + 1, "consecutive")  # model.eval_loss's
        assert np.array_equal(at_once, np.concatenate(ref))
    assert len(data.sample_windows(one, None, 65, "consecutive")) == (len(one) - 1) // 64


@needs_torch
def test_sample_windows_too_short_is_one_line():
    for scheme in ("spread", "consecutive"):
        with pytest.raises(SystemExit) as e:
            data.sample_windows({"lua": np.arange(10, dtype=np.uint16)}, 4, 11, scheme, torch.Generator())
        assert "domain 'lua' has 10 tokens" in one_line_error(e)
    got = data.sample_windows([np.arange(10, dtype=np.uint16)], 4, 11, "tiles", 0)
    assert got.shape == (0, 11)


# -----------------------------------------------------------------------------
# --tokenizer authors: the tokenizer.json of the authors' base model repo, read with the `tokenizers`
# package; every document STARTS with <s>. A small tokenizer laid out like theirs is trained here and
# served by the local hub as that model repo.

AUTHORS = data.AUTHORS_REPO
SHAS[AUTHORS] = data.PINNED[AUTHORS][0]
META = "\u2581"  # SentencePiece's space
# documents that try the tokenizer: leading and trailing spaces, characters outside its vocabulary
# (byte fallback), control bytes, and a literal <s> that must stay text (data.TokenizersEncoding)
EDGE = ["  indented start, and trailing spaces  ", "tabs\tand\nnew lines\n\n  x = 1", "emoji 😀🎉 ünïcödé ½ 日本語",
        "control \x01\x7f bytes", "literal <s> and </s> and <unk> in the text"]


@functools.lru_cache(maxsize=None)
def sp_tokenizer_json(vocab_size=420):
    """A tokenizer laid out like the authors' (Mistral's): <unk> <s> </s> as ids 0-2, the 256 byte tokens
    <0x00>..<0xFF> (byte fallback) as 3-258, then BPE pieces with META for a space; a normalizer that puts
    META before the text and for every space, no pre-tokenizer, <s> put first by the post-processor, and
    the decoder that undoes it all. Trained on ASCII text: other characters fall back to bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    rng, specials = random.Random(4), ["<unk>", "<s>", "</s>"]
    texts = [g(rng) for _ in range(40) for g in (gen_prose, gen_story, gen_lua)]
    probe = Tokenizer(models.BPE(unk_token="<unk>"))
    probe.pre_tokenizer = pre_tokenizers.Metaspace()  # learn META-led pieces, as SentencePiece does
    probe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                         show_progress=False))
    learned = json.loads(probe.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for piece in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(specials)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(META), normalizers.Replace(" ", META)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence([decoders.Replace(META, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok.to_str()


@pytest.fixture
def authors_hub(hub):
    pytest.importorskip("tokenizers")
    hub.models.add(AUTHORS)
    hub.repos[AUTHORS] = {"tokenizer.json": sp_tokenizer_json().encode()}
    return hub


def authors_corpus(folder):
    """local:DIR corpora whose documents include EDGE and ODD; returns {domain: {split: documents}}."""
    rng, docs = random.Random(8), {}
    gens = {"babylm": gen_prose, "tinystories": gen_story, "lua": gen_lua,
            "python": lambda r: f"def f{r.randint(0, 99)}(x):\n    return x * {r.randint(2, 9)}"}
    for k, (domain, g) in enumerate(gens.items()):
        docs[domain] = {"train": [g(rng) for _ in range(20)] + EDGE[k:] + ODD[k:], "valid": [g(rng) for _ in range(3)]}
        write_corpus(folder, domain, docs[domain])
    return docs


def authors_run(d, corp, *extra):
    data.main(["--tokenizer=authors", f"--source=local:{corp}", "--domain=all", f"--data_dir={d}", "--threads=1",
               *extra])


def test_authors_tokenizer_end_to_end(authors_hub, tmp_path, capsys):
    from tokenizers import Tokenizer
    docs, d = authors_corpus(tmp_path / "corpora"), str(tmp_path / "d")
    authors_run(d, tmp_path / "corpora")
    hub_file = authors_hub.repos[AUTHORS]["tokenizer.json"]
    assert [p for p, _ in authors_hub.log] == [f"/{AUTHORS}/resolve/{SHAS[AUTHORS]}/tokenizer.json",
                                               f"/cdn/{AUTHORS}/{SHAS[AUTHORS]}/tokenizer.json"]  # pinned: no lookup
    tok, enc = Tokenizer.from_str(hub_file.decode()), data.load_tokenizer(d)
    assert (tmp_path / "d" / "tokenizer" / "authors.json").read_bytes() == hub_file  # kept byte for byte
    info = data.read_json(os.path.join(d, "tokenizer", "tokenizer.json"))
    assert info["name"] == "authors" and info["format"] == "tokenizers" and info["bos"] == "<s>" and info["bos_id"] == 1
    assert info["vocab_size"] == enc.n_vocab == tok.get_vocab_size() and info["special_tokens"]["</s>"] == 2
    assert info["hash"] == data.tokenizer_hash(d) == hashlib.sha256(hub_file).hexdigest()[:16]
    assert info["hub"] == {"repo": AUTHORS, "sha": SHAS[AUTHORS], "file": "tokenizer.json", "pinned": True}
    assert data.doc_sep(enc) == (1, True)
    for domain in ("babylm", "python", "tinystories", "lua"):
        meta = data.read_meta(d, domain)
        assert meta["tokenizer"] == {"name": "authors", "hub": info["hub"]} and meta["bos_id"] == 1
        assert "eot_id" not in meta and meta["dtype"] == "uint16" and meta["tokenizer_hash"] == info["hash"]
        for split, name in (("train", "train"), ("val", "valid")):
            toks, want = data.open_tokens(d, domain, split), docs[domain][name]
            starts, ends = data.doc_spans(toks, *data.doc_sep(enc))
            assert len(starts) == len(want) == meta["splits"][split]["documents"] and ends[-1] == len(toks)
            for s, e, doc in zip(starts, ends, want):
                span = toks[s:e].tolist()
                assert span[0] == 1 and 1 not in span[1:]            # <s> opens each document, only there
                assert tok.decode(span[1:]) == doc                    # tokenizers' own decode: the text, exactly
                assert enc.decode(span) == "<s>" + doc                # the adapter's
                if "<s>" not in doc:                                  # the hub tokenizer's own encoding, <s> first
                    assert span == tok.encode(doc).ids
            assert enc.decode(toks.tolist()) == "".join("<s>" + x for x in want)
    # base: whole documents copied, each starting at its <s>
    base = data.open_tokens(d, "base", "train")
    got = [tok.decode(base[s + 1:e].tolist()) for s, e in zip(*data.doc_spans(base, 1, True))]
    everything = docs["babylm"]["train"] + docs["python"]["train"]
    assert base[0] == 1 and len(got) == data.read_meta(d, "base")["splits"]["train"]["documents"]
    assert all(doc in everything for doc in got) and EDGE[-1] in got  # the literal <s> did not split it
    # a re-run asks the hub nothing and rebuilds nothing
    authors_hub.log.clear()
    capsys.readouterr()
    authors_run(d, tmp_path / "corpora")
    assert authors_hub.log == [] and capsys.readouterr().out.count("is up to date") == 5


def test_authors_token_bytes_and_round_trip(authors_hub, tmp_path):
    from tokenizers import Tokenizer
    authors_corpus(tmp_path / "corpora")
    d = str(tmp_path / "d")
    authors_run(d, tmp_path / "corpora", "--domain=lua")
    enc, vocab = data.load_tokenizer(d), Tokenizer.from_str(sp_tokenizer_json()).get_vocab()
    for text in VARIED + ODD + EDGE:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text and 1 not in ids
        # token bytes, joined: the text with the one space the tokenizer puts in front
        assert b"".join(enc.decode_single_token_bytes(i) for i in ids) == b" " + text.encode()
    assert enc.decode_single_token_bytes(vocab["<0x0A>"]) == b"\n" and enc.decode_single_token_bytes(3) == b"\x00"
    word = next(p for p in vocab if p.startswith(META) and len(p) > 2)
    assert enc.decode_single_token_bytes(vocab[word]) == (" " + word[1:]).encode()
    emoji = enc.encode_ordinary("😀")  # META, then the 4 byte tokens of a character the vocabulary lacks
    assert emoji == [vocab[META]] + [3 + b for b in "😀".encode()]
    assert b"".join(enc.decode_single_token_bytes(i) for i in emoji) == " 😀".encode()
    assert enc.decode_single_token_bytes(1) == b"<s>" and enc.encode_single_token("<s>") == 1
    for bad in (enc.n_vocab, -1):
        with pytest.raises(KeyError):
            enc.decode_single_token_bytes(bad)
    with pytest.raises(KeyError):
        data.eot_id(enc)  # no <|endoftext|> in this tokenizer: doc_sep gives <s> instead


@needs_torch
def test_authors_token_strings_for_the_report(authors_hub, tmp_path):
    import analyze
    authors_corpus(tmp_path / "corpora")
    authors_run(str(tmp_path / "d"), tmp_path / "corpora", "--domain=lua")
    enc = data.load_tokenizer(str(tmp_path / "d"))
    ids = enc.encode_ordinary("local x\n") + [1, 3 + 0xF0, enc.n_vocab + 5]
    strings = analyze.token_strings(enc, ids)
    assert "".join(strings[i] for i in enc.encode_ordinary("local x\n")) == " local x\n"
    assert strings[1] == "<s>" and strings[3 + 0xF0] == "\ufffd" and strings[enc.n_vocab + 5] == f"<{enc.n_vocab + 5}>"


def test_authors_revision_unpinned_resolves_main_and_is_recorded(authors_hub, tmp_path, monkeypatch):
    authors_corpus(tmp_path / "corpora")
    d = str(tmp_path / "d")
    monkeypatch.setitem(data.PINNED, AUTHORS, (None, "2026-12-06"))
    authors_run(d, tmp_path / "corpora", "--domain=lua")
    assert authors_hub.log[0][0] == f"/api/models/{AUTHORS}/revision/main"
    assert open(os.path.join(d, "raw", "hf", AUTHORS, "REVISION")).read().strip() == SHAS[AUTHORS]
    assert data.read_meta(d, "lua")["tokenizer"]["hub"] == {"repo": AUTHORS, "sha": SHAS[AUTHORS],
                                                            "file": "tokenizer.json", "pinned": False}


def test_authors_bad_inputs_are_one_line(authors_hub, tmp_path, monkeypatch, capsys):
    authors_corpus(tmp_path / "corpora")
    good, raw = authors_hub.repos[AUTHORS]["tokenizer.json"], tmp_path / "d" / "raw" / "hf" / AUTHORS / SHAS[AUTHORS]
    for served, words in ((good[:len(good) // 2], ("not valid JSON", "deleted")),
                          (b'{"version": "1.0", "model": {"type": "Nothing"}}', ("not a tokenizer", "PINNED"))):
        authors_hub.repos[AUTHORS]["tokenizer.json"] = served
        with pytest.raises(SystemExit) as e:
            authors_run(str(tmp_path / "d"), tmp_path / "corpora", "--domain=lua")
        msg = one_line_error(e)
        assert all(w in msg for w in words) and AUTHORS in msg
        assert not [f for f in os.listdir(raw) if f in ("tokenizer.json", "tokenizer.json.part")]  # nothing bad kept
    authors_hub.repos[AUTHORS]["tokenizer.json"] = good
    with pytest.raises(SystemExit) as e:  # --vocab_size is our BPE's
        authors_run(str(tmp_path / "d"), tmp_path / "corpora", "--domain=lua", "--vocab_size=500")
    assert "--vocab_size 500" in one_line_error(e) and "drop --vocab_size" in str(e.value)
    authors_run(str(tmp_path / "d"), tmp_path / "corpora", "--domain=lua")
    # a damaged authors.json beside a good record: refused in one line naming the fix, which fetches it again
    path = tmp_path / "d" / "tokenizer" / "authors.json"
    path.write_bytes(good[:100])
    with pytest.raises(SystemExit) as e:
        data.load_tokenizer(str(tmp_path / "d"))
    assert "authors.json is damaged" in one_line_error(e) and "--tokenizer authors" in str(e.value)
    authors_hub.log.clear()
    capsys.readouterr()
    authors_run(str(tmp_path / "d"), tmp_path / "corpora", "--domain=lua")
    assert "fetching the tokenizer again" in capsys.readouterr().out and path.read_bytes() == good
    assert authors_hub.log == []  # from the download kept in raw/
    # without the tokenizers package: one line naming the requirements file, before any download
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(SystemExit) as e:
        authors_run(str(tmp_path / "e"), tmp_path / "corpora", "--domain=lua")
    assert "pip install -r requirements-authors.txt" in one_line_error(e) and authors_hub.log == []
    with pytest.raises(SystemExit) as e:
        data.load_tokenizer(str(tmp_path / "d"))
    assert "pip install -r requirements-authors.txt" in one_line_error(e)


def test_consecutive_windows_cover_an_array_whose_length_is_a_multiple_of_the_stride():
    """T = 5 (stride 4) over 12 tokens: windows at 0 and 4 (the last ends at token 8); one at 8 would run past the end."""
    a = np.arange(12)
    w = data.sample_windows(a, None, 5, "consecutive")
    assert w.tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    assert data.sample_windows(np.arange(13), None, 5, "consecutive").tolist()[-1] == [8, 9, 10, 11, 12]
    # from window 1 on: the windows left after the offset, none past the end
    assert data.sample_windows(np.arange(13), None, 5, "consecutive", offset=1).tolist() == [[4, 5, 6, 7, 8],
                                                                                             [8, 9, 10, 11, 12]]


def run_printed(msg, after, until=" (this retrains"):
    """Run the data.py command a one-line error prints after `after`, as printed (up to `until`)."""
    import shlex
    words = shlex.split(msg.split(after, 1)[1].split(until)[0].split(";")[0])
    assert words[:2] == ["python", "data.py"], msg
    data.main(words[2:])


def test_a_split_shorter_than_one_window_names_the_setting_that_makes_it_larger(tmp_path):
    """A split with fewer tokens than one window (here: the sample with --val_frac 0.01, a val split of a few
    hundred bytes): the line names the data.py setting that makes that split larger, sized from what meta.json
    records, with the study's --data_dir and other settings; run as printed, it holds the window. The same for a
    train split. It says that our BPE, trained on the base mix these settings make, is retrained with them."""
    d = str(tmp_path / "small data")
    data.main(["--domain", "all", "--data_dir", d, "--vocab_size", "300", "--sample_kb", "20", "--val_frac", "0.01",
               "--threads", "1"])
    val = data.open_tokens(d, "lua", "val")
    T = len(val) + 1
    with pytest.raises(SystemExit) as e:
        data.sample_windows({"lua": val}, 8, T, "consecutive")
    msg = one_line_error(e)
    assert msg.startswith(f"error: the val split of domain 'lua' ({os.path.join(d, 'lua', 'val.bin')}) has "
                          f"{len(val):,} tokens, fewer than one window of {T}; make it larger: python data.py "
                          f"--domain all --data_dir '{d}' "), msg
    assert re.search(r" --vocab_size 300 --sample_kb 20 --val_frac 0\.\d+", msg) and "--val_frac 0.01" not in msg
    assert msg.endswith(f"(this retrains the tokenizer, trained on the base mix these settings make: every model on "
                        f"{d} must then be trained again)")
    tokenizer = data.tokenizer_hash(d)
    run_printed(msg, "make it larger: ")
    assert len(data.open_tokens(d, "lua", "val")) >= T and data.tokenizer_hash(d) != tokenizer  # (retrained)
    assert data.sample_windows({"lua": data.open_tokens(d, "lua", "val")}, 8, T, "consecutive").shape[1] == T
    train = data.open_tokens(d, "tinystories", "train")
    T = len(train) + 1
    with pytest.raises(SystemExit) as e:
        data.sample_windows([train], 2, T, "spread")
    msg = one_line_error(e)
    assert "the train split of domain 'tinystories'" in msg and re.search(r"--vocab_size 300 --val_frac 0\.\d+ "
                                                                          r"--sample_kb \d+ \(this", msg), msg
    run_printed(msg, "make it larger: ")
    assert len(data.open_tokens(d, "tinystories", "train")) >= T


def test_the_fix_of_a_short_split_of_the_sample_known_answers(tmp_path, monkeypatch):
    """data.grow_fix for the sample, sized from meta.json (3 bytes a token): a val split grows by --val_frac (at
    least doubled), past a share of 0.5 by --sample_kb at 0.5; a train split by --sample_kb (at least doubled). The
    hub's train split doubles --max_mb at least. A domain whose meta.json keeps no settings takes another's (as
    data.remake_command does). A local corpus' lua text is not the BPE's (the base mix is): no retraining said.
    The split's file and the command name --data_dir as the user gave it."""
    d = str(tmp_path / "d")

    def meta(domain, config, tokenizer="bpe"):
        os.makedirs(os.path.join(d, domain), exist_ok=True)
        with open(os.path.join(d, domain, "meta.json"), "w") as f:
            json.dump({"domain": domain, "tokenizer": {"name": tokenizer}, **({"provenance": {"config": config}}
                                                                              if config else {}),
                       "splits": {"train": {"tokens": 10_000, "bytes": 30_000}, "val": {"tokens": 1000,
                                                                                     "bytes": 3000}}}, f)
    sample = {"source": "sample", "preset": "tiny", "vocab_size": 300, "sample_kb": 20, "val_frac": 0.1}
    meta("lua", sample)
    cmd = f"make it larger: python data.py --domain all --data_dir {d} --preset tiny --vocab_size 300"
    retrain = f" (this retrains the tokenizer, trained on the base mix these settings make: every model on {d} must " \
              "then be trained again)"
    # 257 tokens: 1542 bytes, 7.5% of 20 KB: the share doubled, 0.2
    assert data.grow_fix(d, "lua", "val", 257) == cmd + " --sample_kb 20 --val_frac 0.2" + retrain
    # 20,000 tokens: 120,000 bytes, past half of 20 KB: 235 KB at 0.5
    assert data.grow_fix(d, "lua", "val", 20_000) == cmd + " --sample_kb 235 --val_frac 0.5" + retrain
    assert data.grow_fix(d, "lua", "train", 20_000) == cmd + " --sample_kb 118" + retrain
    assert data.grow_fix(d, "lua", "train", 257) == cmd + " --sample_kb 40" + retrain
    hf = {"source": "hf", "preset": "tiny", "tokenizer": "authors", "max_mb": 1.0, "val_frac": 0.1}
    meta("lua", hf)
    assert data.grow_fix(d, "lua", "train", 257).endswith(" --tokenizer authors --max_mb 2")
    meta("lua", None)
    meta("base", hf)                                                  # lua's settings: base's
    assert data.grow_fix(d, "lua", "val", 257).endswith(" --tokenizer authors --max_mb 1.0 --val_frac 0.2")
    local = {"source": "local:/corpora", "preset": "tiny", "val_frac": 0.1}
    meta("lua", local)
    meta("base", local)
    assert data.grow_fix(d, "lua", "val", 257) == (f"add text to /corpora/lua/valid.txt (no setting of data.py makes a "
                                                   f"local corpus larger), then run python data.py --domain all "
                                                   f"--data_dir {d} --source local:/corpora --preset tiny")
    assert data.grow_fix(d, "base", "val", 257).endswith(" (this retrains the tokenizer, trained on that text: every "
                                                         f"model on {d} must then be trained again)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(data.GIVEN, "data_dir", "d")
    empty = np.zeros(0, np.uint16).view(data.NoTokens)
    empty.filename = os.path.abspath(os.path.join(d, "lua", "val.bin"))
    with pytest.raises(SystemExit) as e:
        data.sample_windows({"lua": empty}, 1, 4, "spread")
    assert one_line_error(e).startswith("error: the val split of domain 'lua' (d/lua/val.bin) has 0 tokens, fewer than "
                                        "one window of 4; add text to /corpora/lua/valid.txt (no setting of data.py "
                                        "makes a local corpus larger), then run python data.py --domain all "
                                        "--data_dir d "), str(e.value)


def test_the_fix_of_a_short_split_by_source(tmp_path):
    """Known answers of data.grow_fix from meta.json's records: the hub's --val_frac, then its --max_mb where a val
    share past 0.5 would be needed; no setting for the hub's whole split (--max_mb 0); a local corpus' files; an
    empty split (numpy maps no empty file) still names its file."""
    d = str(tmp_path / "d")

    def meta(config, tokens, nbytes, tokenizer="authors"):
        os.makedirs(os.path.join(d, "lua"), exist_ok=True)
        with open(os.path.join(d, "lua", "meta.json"), "w") as f:
            json.dump({"domain": "lua", "tokenizer": {"name": tokenizer}, "provenance": {"config": config},
                       "splits": {"train": {"tokens": 10 * tokens, "bytes": 10 * nbytes},
                                  "val": {"tokens": tokens, "bytes": nbytes}}}, f)
    hf = {"source": "hf", "preset": "tiny", "tokenizer": "authors", "max_mb": 1.0, "val_frac": 0.1}
    meta(hf, 100_000, 300_000)                    # 3 bytes a token; 0.1 MB of val text now
    # 257 tokens: 2 x 257 x 3 bytes = 1542 bytes, less than the doubled share: --val_frac 0.2
    assert data.grow_fix(d, "lua", "val", 257) == (f"make it larger: python data.py --domain all --data_dir {d} "
                                                   "--source hf --preset tiny --tokenizer authors --max_mb 1.0 --val_frac 0.2")
    # 200,000 tokens: 1.2 MB of text, past half of --max_mb 1: --max_mb 2.4 and --val_frac 0.5
    assert data.grow_fix(d, "lua", "val", 200_000).endswith(" --tokenizer authors --max_mb 2.4 --val_frac 0.5")
    assert data.grow_fix(d, "lua", "train", 1_000_000).endswith(" --tokenizer authors --max_mb 6")
    meta({**hf, "max_mb": 0.0}, 100, 300)
    assert data.grow_fix(d, "lua", "val", 257) == (f"{d}/lua/val.bin holds all of its dataset's val split "
                                                   "(--max_mb 0), and no setting of data.py makes it larger")
    meta({"source": "local:/corpora", "preset": "tiny", "val_frac": 0.1}, 100, 300, tokenizer="bpe4096")
    assert data.grow_fix(d, "lua", "val", 257).startswith("add text to /corpora/lua/valid.txt (no setting of data.py "
                                                          "makes a local corpus larger), then run python data.py")
    assert "/corpora/babylm/train.txt and /corpora/python/train.txt" in data.grow_fix(d, "base", "train", 257)
    empty = np.zeros(0, np.uint16).view(data.NoTokens)
    empty.filename = os.path.abspath(os.path.join(d, "lua", "val.bin"))
    with pytest.raises(SystemExit, match=r"the val split of domain 'lua' \(.*/d/lua/val\.bin\) has 0 tokens"):
        data.sample_windows({"lua": empty}, 1, 4, "spread")


@pytest.mark.parametrize("config, nbytes", [
    ({"source": "sample", "sample_kb": 20, "val_frac": float("nan")}, 300),
    ({"source": "sample", "sample_kb": 20, "val_frac": float("inf")}, 300),
    ({"source": "sample", "sample_kb": 10 ** 400, "val_frac": 0.1}, 300),            # past a float's range
    ({"source": "sample", "sample_kb": 0, "val_frac": 0.1}, 300),
    ({"source": "hf", "max_mb": 10 ** 400, "val_frac": 0.1}, 300),
    ({"source": "sample", "sample_kb": 20, "val_frac": 0.1}, 10 ** 400),               # its bytes a token
])
def test_a_short_splits_fix_from_a_hostile_meta_json_is_one_line(tmp_path, config, nbytes):
    """meta.json passes meta_problem (its token files are described), but the settings or byte counts that
    grow_fix sizes the fix from are not numbers a run of data.py records (NaN, infinity, 0, an integer past a
    float): the split too short for a window still gets one line, the fix without a size (no traceback)."""
    import helpers
    d = str(tmp_path / "d")
    helpers.write_domain(d, "lua", seed=0, vocab=64, n=100)                  # 10 val tokens
    path = os.path.join(d, "lua", "meta.json")
    meta = json.load(open(path))
    meta["provenance"] = {"config": {"preset": "tiny", **config}}
    meta["splits"]["val"]["bytes"] = nbytes
    with open(path, "w") as f:
        f.write(json.dumps(meta))                                   # (NaN and Infinity as Python's json writes them)
    with pytest.raises(SystemExit) as e:
        data.sample_windows({"lua": data.open_tokens(d, "lua", "val")}, 2, 17, "spread")
    msg = one_line_error(e)
    assert re.search(rf"fewer than one window of 17; make {re.escape(d)} again with more text: python data\.py .* with "
                     r"a larger --sample_kb \(the sample\) or --max_mb \(--source hf\), or --val_frac$", msg), msg
