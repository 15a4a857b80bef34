"""
data.py: the study's corpora -> a byte-level BPE tokenizer -> token files for training.

  python data.py --domain all                                   # built-in sample (smoke-scale demo)
  python data.py --domain all --source local:../shared/corpora  # plain-text corpora on disk
  python data.py --domain all --source hf --preset paper        # the real datasets, downloaded

Domains: babylm, python, tinystories, lua, and `base`, the pre-training mix (all of BabyLM plus
Python matched to the same number of words, as in the paper). For each, writes
<data_dir>/<domain>/{train,val}.bin (token ids; every document followed by <|endoftext|>) and
meta.json. The tokenizer is trained on the base mix train split, shared by every model, and
lives in <data_dir>/tokenizer/. Other scripts import DOMAINS, EOT, load_tokenizer, eot_id,
tokenizer_hash, read_meta, load_tokens and get_batch from here.
"""
import base64
import hashlib
import heapq
import json
import math
import os
import platform
import random
import re
import time
import zipfile
from collections import Counter, defaultdict

import numpy as np
import tiktoken
import torch

from common import (atomic_write, atomic_write_json, atomic_write_text, default_preset, die, parse_config,
                    provenance, read_json, sha256_bytes, sha256_file)

# -----------------------------------------------------------------------------
# configuration: commented defaults, then --preset, then the command line (common.parse_config)
config = dict(
    domain="all",        # babylm | python | tinystories | lua | base | all
    source="sample",     # sample (built-in demo) | local:DIR (layout of shared/corpora) | hf (download)
    data_dir="data",     # outputs: <data_dir>/<domain>/, <data_dir>/tokenizer/, downloads in <data_dir>/raw/
    tokenizer="bpe",     # bpe: our own, trained on the base mix | gpt2: tiktoken's GPT-2 ranks (network once)
    vocab_size=4096,     # bpe: merges + 256 bytes + 1 (<|endoftext|> takes the last id)
    babylm="10M",        # hf: BabyLM 2024 training set, 10M (strict-small) or 100M (strict)
    max_mb=20.0,         # hf: keep only the first max_mb MB of each large non-zip file (0 = whole files)
    sample_kb=500,       # sample: KB of train text per domain
    val_frac=0.1,        # held-out share: sample size, code split by hash, cap on upstream val sets
    seed=1337,           # sample generators and the base-mix selection
    threads=os.cpu_count() or 1,  # tiktoken encoding threads
    force=False,         # re-encode even when meta.json says a domain is up to date (the tokenizer
                         # is retrained only when missing or made from other settings)
)
presets = {"tiny": dict(vocab_size=4096, babylm="10M", max_mb=20.0),
           "paper": dict(vocab_size=32000, babylm="100M", max_mb=0.0)}

DOMAINS = ("babylm", "python", "tinystories", "lua", "base")
EOT = "<|endoftext|>"
SAMPLE_NOTE = ("sample: a smoke-scale demo corpus made by data.py (generated English prose, stories and "
               "Lua; Python from this interpreter's standard library), not the study's data")
# Pre-tokenisation, GPT-4-like. Python's `re` has no \p{..} classes, so a letter is [^\W\d_];
# the same pattern runs in Python (training) and in tiktoken's Rust fancy-regex (encoding). The
# two agree on ordinary text; they differ only on characters whose class differs between the
# engines (combining marks after a letter, joiners, superscript digits), where chunks split
# differently: still lossless, just merges that training saw in slightly other contexts.
PATTERN = "|".join([
    r"'(?i:[sdmt]|ll|ve|re)",              # English contractions
    r"(?:[^\r\n\w]|_)?+[^\W\d_]+",         # a word, with at most one leading space/symbol
    r"\d{1,3}",                            # numbers in groups of up to three digits
    r" ?(?:[^\s\w]|_)++[\r\n]*",           # punctuation / operators
    r"\s*[\r\n]",                          # newlines (with the whitespace before them)
    r"\s+(?!\S)",                          # whitespace, leaving one space for the next word
    r"\s+",
])

# Every URL the hf source touches; tests point these at a local server.
URLS = {
    "tinystories_train": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt",
    "tinystories_val": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt",
    "babylm_10M": "https://osf.io/download/5mk3x/",    # train_10M.zip (strict-small)
    "babylm_100M": "https://osf.io/download/rduj2/",   # train_100M.zip (strict)
    "babylm_dev": "https://osf.io/download/m48ed/",    # dev.zip
    "stack_python": "https://huggingface.co/datasets/bigcode/the-stack-smol/resolve/main/data/python/data.json",
    "stack_lua": "https://huggingface.co/datasets/bigcode/the-stack-smol/resolve/main/data/lua/data.json",
    "codeparrot_tree": "https://huggingface.co/api/datasets/codeparrot/codeparrot-clean/tree/main?recursive=true",
    "codeparrot_file": "https://huggingface.co/datasets/codeparrot/codeparrot-clean/resolve/main/{path}",
    "commitpackft_lua": "https://huggingface.co/datasets/bigcode/commitpackft/resolve/main/data/lua/data.jsonl",
}
STACK_DENIED = ("bigcode/the-stack-smol refused access (HTTP {status}): accept its terms at "
                "https://huggingface.co/datasets/bigcode/the-stack-smol, then set HF_TOKEN to a read token "
                "of that account (https://huggingface.co/settings/tokens), or unset HF_TOKEN to use the ungated fallbacks")
RETRIES, BACKOFF_S, TIMEOUT_S = 6, 2.0, 60  # downloads: tries, first back-off (doubles), socket timeout

# -----------------------------------------------------------------------------
# the API other scripts use


def _tok_dir(data_dir):
    return os.path.join(data_dir, "tokenizer")


def _read_ranks(path):
    # the tiktoken rank format (base64 token, space, rank) parsed here: tiktoken's own
    # load_tiktoken_bpe caches files by path, which would hide a retrained tokenizer
    with open(path, "rb") as f:
        return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in f if ln.strip())}


def _tok_info(data_dir):
    path = os.path.join(_tok_dir(data_dir), "tokenizer.json")
    if not os.path.exists(path):
        die(f"no tokenizer in {_tok_dir(data_dir)}; run: python data.py --domain all --data_dir {data_dir}")
    return read_json(path)


def load_tokenizer(data_dir="data"):
    info = _tok_info(data_dir)
    ranks = _read_ranks(os.path.join(_tok_dir(data_dir), "bpe.tiktoken"))
    return tiktoken.Encoding(name=info["name"], pat_str=info["pattern"], mergeable_ranks=ranks,
                             special_tokens=info["special_tokens"], explicit_n_vocab=info["vocab_size"])


def _hash(rank_file_bytes, pattern, special_tokens):
    return sha256_bytes(rank_file_bytes + b"\0" + json.dumps([pattern, special_tokens], sort_keys=True).encode())


def tokenizer_hash(data_dir="data"):
    """Hash of the rank file, the pattern and the special tokens: what decides the token ids."""
    info = _tok_info(data_dir)
    with open(os.path.join(_tok_dir(data_dir), "bpe.tiktoken"), "rb") as f:
        return _hash(f.read(), info["pattern"], info["special_tokens"])


def eot_id(enc):
    return enc.encode_single_token(EOT)


def read_meta(data_dir, domain):
    path = os.path.join(data_dir, domain, "meta.json")
    if not os.path.exists(path):
        die(f"no {path}; run: python data.py --domain {domain} --data_dir {data_dir}")
    return read_json(path)


def data_fingerprint(data_dir, domains):
    """{domain: hash of its meta.json}: which token files an output was made from (meta.json holds the
    source files' hashes, the settings, the token counts and the tokenizer hash)."""
    return {d: sha256_file(os.path.join(data_dir, d, "meta.json")) for d in domains}


def load_tokens(data_dir, domain, split):
    if split not in ("train", "val"):
        die(f"split must be train or val, got {split!r}")
    meta = read_meta(data_dir, domain)
    path = os.path.join(data_dir, domain, f"{split}.bin")
    if not os.path.exists(path):
        die(f"no {path}; run: python data.py --domain {domain} --data_dir {data_dir}")
    if os.path.exists(os.path.join(_tok_dir(data_dir), "tokenizer.json")) and \
            meta["tokenizer_hash"] != tokenizer_hash(data_dir):
        die(f"{path} was encoded with another tokenizer; run: python data.py --domain {domain} --data_dir {data_dir}")
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def get_batch(tokens, batch_size, block_size, device, generator):
    """Random windows of block_size+1 tokens: x the first block_size, y the same shifted by one."""
    if len(tokens) <= block_size:
        die(f"only {len(tokens)} tokens, fewer than block_size+1 = {block_size + 1}")
    ix = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
    xy = torch.from_numpy(np.stack([np.asarray(tokens[i:i + block_size + 1], dtype=np.int64) for i in ix]))
    x, y = xy[:, :-1], xy[:, 1:]
    if str(device).startswith("cuda"):  # pinned host memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


# -----------------------------------------------------------------------------
# small text helpers


def n_words(docs):  # "words" as the paper counts them for the mix: whitespace-separated
    return sum(len(d.split()) for d in docs)


def n_bytes(docs):
    return sum(len(d.encode("utf-8")) for d in docs)


def split_eot(text):
    """Documents of a file in the corpora format (each followed by a line `<|endoftext|>`)."""
    return [d.strip("\n") for d in re.split(r"^<\|endoftext\|>$", text, flags=re.M) if d.strip()]


def hash_frac(text):  # a deterministic number in [0, 1) per document: the split of undivided datasets
    return int(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8], 16) / 2 ** 32


def hash_split(docs, val_frac):
    return ([d for d in docs if hash_frac(d) >= val_frac], [d for d in docs if hash_frac(d) < val_frac])


def cap(docs, max_bytes):
    """Every k-th document so that about max_bytes remain: an even thinning of an oversized val set."""
    k = math.ceil(n_bytes(docs) / max(max_bytes, 1))
    return docs[::k] if k > 1 else docs


def chunk_lines(text, min_chars=1000, max_chars=4000):
    """BabyLM files are one source per file, with no document marks: cut at blank lines once a
    document has min_chars, or at any line once it has max_chars (utterance-per-line sources)."""
    docs, cur, size = [], [], 0
    for line in text.splitlines():
        if (not line.strip() and size >= min_chars) or size >= max_chars:
            docs.append("\n".join(cur).strip("\n"))
            cur, size = [], 0
        if line.strip() or cur:
            cur.append(line)
            size += len(line) + 1
    docs.append("\n".join(cur).strip("\n"))
    return [d for d in docs if d.strip()]


# -----------------------------------------------------------------------------
# downloads: resumable (.part + HTTP Range), retried with back-off, size-checked, skipped when done


def download(url, path, max_bytes=0, headers=None, denied=None):
    """Fetch url to path (or only its first max_bytes bytes). A finished file is only ever the
    result of a complete transfer (renamed from .part), so an existing path means done."""
    import requests
    import urllib3
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    part, name, last = path + ".part", os.path.basename(path), None
    for attempt in range(RETRIES):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if max_bytes and have >= max_bytes:
            os.truncate(part, max_bytes)
            break
        h = {"Accept-Encoding": "identity", **(headers or {})}  # sizes must be the file's own bytes
        if have:
            h["Range"] = f"bytes={have}-"
        try:
            with requests.get(url, headers=h, stream=True, timeout=TIMEOUT_S) as r:
                if r.status_code in (401, 403):
                    die((denied or "access denied (HTTP {status}) for {url}").format(status=r.status_code, url=url))
                if r.status_code == 416 and have:  # nothing after what we hold: the .part is whole
                    break
                if r.status_code == 429 or r.status_code >= 500:
                    raise IOError(f"HTTP {r.status_code}")
                if r.status_code not in (200, 206):
                    die(f"download of {url} failed: HTTP {r.status_code}")
                if have and r.status_code == 200:
                    print(f"  {name}: server ignored the range request; starting over")
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                t0 = t_print = time.time()
                got = have
                with open(part, "ab" if have else "wb") as f:
                    for block in r.raw.stream(1 << 16, decode_content=False):
                        if max_bytes:
                            block = block[:max_bytes - got]
                        f.write(block)
                        got += len(block)
                        if time.time() - t_print > 5:  # a progress line only for long downloads
                            t_print = time.time()
                            of = f" / {(max_bytes or total) / 1e6:.1f}" if (max_bytes or total) else ""
                            print(f"  {name}: {got / 1e6:.1f}{of} MB, {(got - have) / 1e6 / (t_print - t0):.1f} MB/s")
                        if max_bytes and got >= max_bytes:
                            break
            if max_bytes and got >= max_bytes:
                break
            if total is not None and got != total:
                raise IOError(f"got {got} of {total} bytes")
            break
        except (requests.RequestException, urllib3.exceptions.HTTPError, IOError) as e:
            last = e
            print(f"  {name}: {type(e).__name__}: {e}; retry {attempt + 1}/{RETRIES - 1}")
    else:
        die(f"download of {url} failed after {RETRIES} tries: {last}")
    os.replace(part, path)
    return path


def read_text(path, max_bytes):
    """Text of a downloaded file. A prefix (the file holds max_bytes) is cut back to its last whole line."""
    with open(path, "rb") as f:
        data = f.read()
    cut = bool(max_bytes) and len(data) >= max_bytes
    if data[:2] == b"\x1f\x8b":  # gzip magic
        data = gunzip_tolerant(data)
    if cut:
        data = data[:data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace")


def gunzip_tolerant(data):
    """Decompress gzip (possibly several members), keeping whatever a truncated stream yields."""
    import zlib
    out = []
    while data:
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            out.append(d.decompress(data))
        except zlib.error:
            break
        data = d.unused_data if d.eof else b""
    return b"".join(out)


def json_records(text, field):
    text = text.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    return [r[field].strip("\n") for r in rows if (r.get(field) or "").strip()]


# -----------------------------------------------------------------------------
# sources: each returns (train_docs, val_docs, info)


def hf_docs(domain, cfg, cache):
    raw = os.path.join(cfg["data_dir"], "raw", "hf")
    mb = int(cfg["max_mb"] * 1e6)
    tag = f".first{cfg['max_mb']:g}MB" if mb else ""
    if domain == "tinystories":
        out = []
        for key, split in (("tinystories_train", "train"), ("tinystories_val", "valid")):
            path = download(URLS[key], f"{raw}/TinyStoriesV2-GPT4-{split}{tag}.txt", mb)
            text = read_text(path, mb)
            if mb and os.path.getsize(path) >= mb:  # a prefix: its last story may be cut short
                text = text[:text.rfind(EOT)]
            out.append(split_eot(text))
        return out[0], out[1], {"upstream": "roneneldan/TinyStories (V2-GPT4)"}
    if domain == "babylm":
        if cfg["babylm"] not in ("10M", "100M"):
            die(f"--babylm takes 10M or 100M, got {cfg['babylm']!r}")
        out = []
        for key, suffix in ((f"babylm_{cfg['babylm']}", ".train"), ("babylm_dev", ".dev")):
            z = zipfile.ZipFile(download(URLS[key], f"{raw}/{key}.zip"))  # zips are read whole: no prefix
            out.append([d for m in sorted(z.namelist()) if m.endswith(suffix) and "__MACOSX" not in m
                        for d in chunk_lines(z.read(m).decode("utf-8", "replace"))])
        return out[0], out[1], {"upstream": f"BabyLM 2024 train_{cfg['babylm']} + dev (OSF)"}
    lang = domain  # python or lua: The Stack (gated) or ungated fallbacks; no upstream split
    token = os.environ.get("HF_TOKEN")
    if token:
        path = download(URLS[f"stack_{lang}"], f"{raw}/the-stack-smol-{lang}{tag}.jsonl", mb,
                        {"Authorization": f"Bearer {token}"}, STACK_DENIED)
        docs, upstream = json_records(read_text(path, mb), "content"), "bigcode/the-stack-smol"
    elif lang == "lua":
        print("  no HF_TOKEN: Lua from the ungated bigcode/commitpackft instead of the-stack-smol")
        path = download(URLS["commitpackft_lua"], f"{raw}/commitpackft-lua{tag}.jsonl", mb)
        docs, upstream = json_records(read_text(path, mb), "new_contents"), "bigcode/commitpackft (fallback)"
    else:
        print("  no HF_TOKEN: Python from the ungated codeparrot/codeparrot-clean instead of the-stack-smol")
        # the shard list from the tree API, kept with the downloads so that re-runs see the same one
        tree = read_json(download(URLS["codeparrot_tree"], f"{raw}/codeparrot-tree.json"))
        shards = sorted(f["path"] for f in tree if f.get("path", "").endswith(".json.gz"))
        # shards in name order until Python has as many words as BabyLM train (the mix takes equal words)
        target, docs = n_words(get_docs("babylm", cfg, cache)[0]), []
        for s in shards:
            path = download(URLS["codeparrot_file"].format(path=s), f"{raw}/codeparrot{tag}-{s.replace('/', '_')}", mb)
            docs += json_records(read_text(path, mb), "content")
            if n_words(docs) >= target:
                break
        upstream = "codeparrot/codeparrot-clean (fallback)"
    tr, va = hash_split(docs, cfg["val_frac"])
    return tr, va, {"upstream": upstream}


def local_docs(domain, folder):
    out = []
    for names in (("train.txt",), ("valid.txt", "val.txt")):
        paths = [os.path.join(folder, domain, n) for n in names if os.path.exists(os.path.join(folder, domain, n))]
        if not paths:
            die(f"no {os.path.join(folder, domain, names[0])} (local:DIR wants DIR/<domain>/train.txt and valid.txt)")
        out.append(split_eot(open(paths[0], encoding="utf-8").read()))
    return out[0], out[1], {"dir": os.path.abspath(folder)}


def sample_docs(domain, cfg):
    """The built-in demo corpus: generated text (seeded) or, for Python, this interpreter's stdlib."""
    target = {"train": cfg["sample_kb"] * 1024, "val": int(cfg["sample_kb"] * 1024 * cfg["val_frac"])}
    if domain == "python":
        return stdlib_docs(target, cfg["val_frac"]) + ({"python": platform.python_version()},)
    gen = {"babylm": gen_prose, "tinystories": gen_story, "lua": gen_lua}[domain]
    out = []
    for split in ("train", "val"):
        rng, docs, size = random.Random(f"{cfg['seed']}-{domain}-{split}"), [], 0
        while size < target[split]:
            docs.append(gen(rng))
            size += len(docs[-1].encode())
        out.append(docs)
    return out[0], out[1], {}


def stdlib_docs(target, val_frac):
    root = os.path.dirname(os.__file__)
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("test", "tests", "idlelib", "site-packages", "__pycache__"))
        files += [os.path.relpath(os.path.join(d, n), root) for n in sorted(names) if n.endswith(".py")]
    docs, size = {"train": [], "val": []}, {"train": 0, "val": 0}
    for rel in sorted(files, key=lambda r: hashlib.sha256(r.encode()).hexdigest()):  # spread over the library
        split = "val" if hash_frac(rel) < val_frac else "train"
        if size[split] >= target[split]:
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read().strip("\n")
        if not text or len(text) > target["train"] / 16:  # no single file dominates
            continue
        docs[split].append(text)
        size[split] += len(text.encode())
    return docs["train"], docs["val"]


# --- generators for the sample. Word lists and templates written for this project.
NAMES = ("Anna Ben Clara David Elsa Felix Grace Henry Iris Jack Kate Leo Mia Noah Olive Peter Rosa Sam "
          "Tom Uma Victor Wendy Lily Max Zoe Oscar Ruby Hugo Nora Eli").split()
P_NOUN = ("house garden river city village forest window door letter book table kitchen morning evening "
           "winter summer road bridge market church school teacher doctor farmer soldier captain merchant "
           "king queen mother father brother sister friend neighbour stranger horse ship train station "
           "island mountain valley field lamp fire candle paper question answer story voice music picture "
           "journey storm harbour castle library office newspaper carriage servant painter sailor lawyer "
           "clock mirror staircase chimney orchard meadow cottage tower factory engine coast "
           "century language government history science argument promise secret memory silence").split()
P_ADJ = ("old young quiet bright dark small large heavy gentle strange silent careful curious narrow wide "
          "cold warm ancient distant familiar patient proud nervous wealthy poor grey golden crooked steep "
          "famous ordinary serious cheerful anxious weary elegant modest remarkable peculiar").split()
P_ADV = ("slowly quickly quietly suddenly carefully gently softly eagerly finally rarely almost perhaps "
          "certainly scarcely presently immediately").split()
P_VT = ("see:saw take:took find:found hold:held bring:brought build:built read:read write:wrote "
         "leave:left keep:kept open close watch carry follow remember answer visit describe examine "
         "notice mend paint sell:sold buy:bought forget:forgot").split()
P_VI = ("walk sleep:slept laugh smile wait arrive listen sing:sang travel return rest hurry hesitate "
         "whisper tremble wander disappear").split()
P_PREP = "across near behind beside under beyond through toward along inside".split()
P_CONJ = "because although when while after before until since".split()
P_PLACE = "Ashford Brookmere Carrow Dunwick Elmstead Farrowdale Greyhaven Holloway Kestrel Lindmoor".split()


def plural(n):
    return n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "es" if n[-1] in "sxh" else n + "s"


def past(v):
    if ":" in v:
        return v.split(":")[1]
    return v + "d" if v.endswith("e") else v[:-1] + "ied" if v.endswith("y") and v[-2] not in "aeiou" else v + "ed"


def gen_prose(rng):
    """babylm-like: narrative prose, dialogue, an encyclopedia entry, or child-directed speech."""
    c = rng.choice
    def lc(s): return s if s.split()[0] in NAMES else s[0].lower() + s[1:]  # noqa: E704
    def np_(): return f"the {c(P_ADJ) + ' ' if rng.random() < 0.5 else ''}{c(P_NOUN)}"  # noqa: E704
    def clause():
        vt = rng.random() < 0.6
        s = f"{c(NAMES) if rng.random() < 0.4 else np_().capitalize()} {past(c(P_VT if vt else P_VI))}"
        s += f" {np_()}" if vt else ""
        s += f" {c(P_PREP)} {np_()}" if rng.random() < 0.4 else ""
        return f"{c(P_ADV).capitalize()}, {lc(s)}" if rng.random() < 0.25 else s
    mode = rng.random()
    if mode < 0.15:  # child-directed speech: one utterance a line, spaced punctuation
        return "\n".join(c([f"look at the {c(P_NOUN)} .", f"do you want the {c(P_NOUN)} ?", "yes .", "no .",
                             f"where did the {c(P_NOUN)} go ?", f"that 's a {c(P_ADJ)} {c(P_NOUN)} .",
                             "what is that ?", f"can you say {c(P_NOUN)} ?", f"{c(NAMES).lower()} , come here .",
                             "good job !"]) for _ in range(rng.randint(6, 20)))
    if mode < 0.3:  # an encyclopedia entry
        place, year = c(P_PLACE), rng.randint(1200, 1990)
        sents = [f"= = = {place} = = =", f"{place} is a {c(P_ADJ)} town near the {c(P_NOUN)} of {c(P_PLACE)}.",
                 f"It was founded in {year} and had {rng.randint(2, 90) * 1000} people in {rng.randint(1900, 2020)}.",
                 f"The town is known for its {plural(c(P_NOUN))} and its {c(P_ADJ)} {c(P_NOUN)}.",
                 f"In {year + rng.randint(5, 300)}, a {c(P_NOUN)} was built {c(P_PREP)} the {c(P_NOUN)}."]
        return "\n".join(sents[:rng.randint(3, 5)])
    sents = []
    for _ in range(rng.randint(3, 12)):
        r = rng.random()
        if r < 0.2:
            q = c([f"Where is {np_()}?", f"Have you seen {np_()}?", f"It is {c(P_ADJ)}, is it not?",
                   f"I {c(['shall', 'must', 'cannot'])} {c(P_VT).split(':')[0]} {np_()}.", f"Did you know that {lc(clause())}?"])
            sents.append(f'"{q}" {c(["said", "asked", "replied", "whispered", "cried"])} {c(NAMES)}.')
        elif r < 0.35:
            sents.append(f"{np_().capitalize()} was {c(P_ADJ)} and {c(P_ADJ)}, and {plural(c(P_NOUN))} lay {c(P_PREP)} it.")
        elif r < 0.6:
            sents.append(f"{clause()} {c(P_CONJ)} {lc(clause())}.")
        else:
            sents.append(clause() + c([".", ".", ".", f"; {lc(clause())}.", f", and then {c(NAMES)} {past(c(P_VI))}."]))
    return " ".join(sents)


S_KIND = "girl boy cat dog bunny bird bear frog duck puppy kitten mouse fox".split()
S_ADJ = "little happy small kind shy brave silly curious sleepy".split()
S_PLACE = "park garden forest house farm beach school pond".split()
S_ACT = ["play with a ball", "draw pictures", "dance", "sing songs", "run in the grass", "build with blocks",
         "look at the clouds", "jump in puddles", "help mom", "read books", "swim in the pond", "climb trees"]
S_OBJ = "ball kite toy hat car doll box cake flower shell balloon blanket cookie stick".split()
S_COL = "red blue big shiny green yellow pink soft tiny".split()
S_FEEL = "sad scared angry worried upset lonely".split()
S_MORAL = ["sharing is caring", "it is good to be kind", "you should always tell the truth",
           "friends help each other", "it is okay to ask for help", "being brave is good", "we should say sorry"]


def gen_story(rng):
    """tinystories-like: a character, a place, a problem, a helper, a happy end and a moral."""
    c = rng.choice
    name, kind, helper = c(NAMES), c(S_KIND), c(["mom", "dad", "a wise owl", "a kind old man", "grandma"] + NAMES)
    he = {"girl": "she", "boy": "he"}.get(kind) or c(["he", "she"])
    his = {"he": "his", "she": "her"}[he]
    obj = f"{c(S_COL)} {c(S_OBJ)}"
    place = c(S_PLACE)
    s = [c([f"Once upon a time, there was a {c(S_ADJ)} {kind} named {name}.",
            f"One day, a {c(S_ADJ)} {kind} named {name} went to the {place}.",
            f"There was a {kind} called {name}."]),
         f"{he.capitalize()} loved to {c(S_ACT)}."]
    if rng.random() < 0.6:
        s.append(f"{name} had a {obj}. {he.capitalize()} liked it very much.")
    s.append(c([f"One day, {name} lost {his} {obj} in the {place}.",
                f"But the {obj} got stuck in a big tree.",
                f"Then it started to rain, and {name} could not {c(S_ACT)}.",
                f"{name} saw a {c(S_KIND)} who was {c(S_FEEL)}.",
                f"{name} wanted the {obj}, but {his} friend {c(NAMES)} had it."]))
    s.append(f"{name} felt {c(S_FEEL)}. {c(['', 'Big tears came out. ', ''])}")
    s.append(f'{helper[0].upper() + helper[1:]} said, "{c(["Do not worry", "Let me help you", "We can do it together", "Be brave"])}, {name}!"')
    s.append(c([f"They looked and looked, and at last they found the {obj}.",
                f"{name} and {helper} played together all day.",
                f"{name} said sorry, and they shared the {obj}.", f"{name} was brave and it was fine."]))
    s.append(f"{name} was very {c(['happy', 'glad', 'proud'])}. {c(['They smiled.', 'They hugged.', ''])}")
    if rng.random() < 0.7:
        s.append(c([f"From that day on, {name} knew that {c(S_MORAL)}.",
                    f"The moral of the story is: {c(S_MORAL)}."]))
    return " ".join(x.strip() for x in s if x.strip()).replace("  ", " ")


L_VERB = ("get set make parse load save find build update check count split join format render read "
           "write push pop add remove merge sort filter map reduce encode decode validate resolve").split()
L_NOUN = ("name value item node list key path user config buffer token line entry index size table "
           "field record cache queue stack result options message header body chunk state event handler").split()
L_MOD = "json utils parser lexer queue config logger http socket path template cache router".split()


def gen_lua(rng):
    """Lua source: a module with functions, tables, loops, string ops, a class and comments."""
    c = rng.choice
    camel = rng.random() < 0.5
    def ident(k=2):
        parts = [c(L_VERB)] + [c(L_NOUN) for _ in range(k - 1)]
        return parts[0] + "".join(p.capitalize() for p in parts[1:]) if camel else "_".join(parts)
    mod = c(L_MOD)
    M = c(["M", "_M", mod.capitalize(), mod])
    out = [f"-- {mod}.lua: {c(['helpers for', 'a small library of', 'functions that handle'])} "
           f"{plural(c(L_NOUN))} and {plural(c(L_NOUN))}", f"local {M} = {{}}"]
    for dep in rng.sample(L_MOD, rng.randint(0, 3)):
        out.append(f'local {dep} = require("{dep}")')
    const = c(L_NOUN).upper()
    out += [f"local MAX_{const} = {rng.choice([8, 16, 64, 100, 256, 1024])}", ""]

    def expr(vs):
        a, b = c(vs), c(vs)
        return c([f"{a} + {b}", f"{a} * {rng.randint(2, 9)}", f"#{a}", f'"{c(L_NOUN)}" .. tostring({a})',
                  f"string.format(\"%s=%d\", {a}, {b})", f"{a}:upper()", f"{a}:sub(1, {rng.randint(2, 12)})",
                  f"math.max({a}, {b})", f"{a} or {{}}", f'{a}:gsub("%s+", "")', f"({a} - 1) % MAX_{const}",
                  f"{a}[{b}]", f"select('#', {a})", f"tonumber({a}) or 0"])

    def block(vs, depth, ind):
        lines = []
        for _ in range(rng.randint(2, 5)):
            r, pad = rng.random(), "  " * ind
            if r < 0.25 or depth == 0:
                v = c([c(L_NOUN), plural(c(L_NOUN)), c(L_NOUN) + c(["_count", "Len", "2"])])
                lines.append(f"{pad}local {v} = {expr(vs)}")
                vs = vs + [v]
            elif r < 0.4:
                lines += [f"{pad}for i = 1, #{c(vs)} do"] + block(vs + ["i"], depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.55:
                lines += [f"{pad}for k, v in {c(['pairs', 'ipairs'])}({c(vs)}) do"] + \
                         block(vs + ["k", "v"], depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.7:
                lines += [f"{pad}if {c(vs)} {c(['==', '~=', '>', '<='])} {c(['nil', '0', 'true', c(vs)])} then"] + \
                         block(vs, depth - 1, ind + 1)
                if rng.random() < 0.5:
                    lines += [f"{pad}else"] + block(vs, depth - 1, ind + 1)
                lines.append(f"{pad}end")
            elif r < 0.8:
                lines.append(f"{pad}table.insert({c(vs)}, {expr(vs)})")
            elif r < 0.87:
                lines += [f"{pad}while {c(vs)} do"] + block(vs, depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.93:
                lines.append(f"{pad}-- {c(['TODO: handle', 'skip empty', 'normalise the', 'cache the'])} {c(L_NOUN)}")
            else:
                lines.append(f'{pad}print(("{c(L_VERB)} %s"):format({c(vs)}))')
        return lines

    for _ in range(rng.randint(2, 6)):
        params = rng.sample(L_NOUN, rng.randint(0, 3))
        fname = ident(rng.randint(1, 3))
        out.append(f"--- {c(L_VERB).capitalize()} the {c(L_NOUN)}{' of ' + params[0] if params else ''}.")
        out += [f"-- @param {p} {c(L_NOUN)}" for p in params]
        local = rng.random() < 0.3
        out.append(f"{'local function ' + fname if local else 'function ' + M + '.' + fname}({', '.join(params)})")
        out += block(params or ["self"], 2, 1) + [f"  return {c(params or ['nil'])}", "end", ""]
    if rng.random() < 0.4:
        cls = c(L_NOUN).capitalize()
        out += [f"local {cls} = {{}}", f"{cls}.__index = {cls}", "",
                f"function {cls}.new(opts)", f"  local self = setmetatable({{}}, {cls})",
                f"  self.{c(L_NOUN)} = opts.{c(L_NOUN)} or {rng.randint(0, 9)}", "  return self", "end", "",
                f"function {cls}:{ident()}()"] + block(["self"], 1, 1) + ["end", "", f"{M}.{cls} = {cls}"]
    out.append(f"\nreturn {M}")
    return "\n".join(out)


# -----------------------------------------------------------------------------
# the base mix and the document cache


def mix_base(bab, py, seed, split):
    """All of the side with fewer words, plus a seeded random selection of the other with as many."""
    wb, wp = n_words(bab), n_words(py)
    small, big, big_name = (py, bab, "babylm") if wb >= wp else (bab, py, "python")
    rng, target, picked, w = random.Random(f"{seed}-base-{split}"), min(wb, wp), [], 0
    for i in rng.sample(range(len(big)), len(big)):
        if w >= target:
            break
        picked.append(big[i])
        w += len(big[i].split())
    mix = small + picked
    rng.shuffle(mix)
    share = {"babylm_words": min(wb, wp) if big_name == "python" else w,
             "python_words": min(wb, wp) if big_name == "babylm" else w, "cut": big_name,
             "cut_kept_docs": f"{len(picked)}/{len(big)}"}
    tot = share["babylm_words"] + share["python_words"]
    print(f"  base {split}: babylm {share['babylm_words']:,} words ({share['babylm_words'] / max(tot, 1):.1%}), "
          f"python {share['python_words']:,} ({share['python_words'] / max(tot, 1):.1%}); "
          f"{big_name} cut to {len(picked)}/{len(big)} documents")
    return mix, share


def get_docs(domain, cfg, cache):
    if domain in cache:
        return cache[domain]
    t0, src = time.time(), cfg["source"]
    if domain == "base":
        (btr, bva, bi), (ptr, pva, pi) = get_docs("babylm", cfg, cache), get_docs("python", cfg, cache)
        tr, s_tr = mix_base(btr, ptr, cfg["seed"], "train")
        va, s_va = mix_base(bva, pva, cfg["seed"], "val")
        cache[domain] = (tr, va, {"mix": {"train": s_tr, "val": s_va}, "babylm": bi, "python": pi})
        return cache[domain]
    if src == "sample":
        res = sample_docs(domain, cfg)
    elif src.startswith("local:"):
        res = local_docs(domain, src[len("local:"):])
    elif src == "hf":
        res = hf_docs(domain, cfg, cache)
    else:
        die(f"unknown --source {src!r}; use sample, local:DIR or hf")
    if src == "hf":  # an upstream val set can dwarf a max_mb-limited train split: thin it evenly
        res = (res[0], cap(res[1], cfg["val_frac"] * n_bytes(res[0])), res[2])
    if not res[0] or not res[1]:
        die(f"{domain}: no {'train' if not res[0] else 'val'} documents from source {src}")
    print(f"  {domain}: {len(res[0]):,} train / {len(res[1]):,} val documents, "
          f"{n_bytes(res[0]) / 1e6:.2f} / {n_bytes(res[1]) / 1e6:.2f} MB ({time.time() - t0:.1f} s)")
    cache[domain] = res
    return res


def sample_corpus_text(**overrides):
    """The built-in sample's base mix train split as one string (for benchmarks of the trainer)."""
    return "\n".join(get_docs("base", dict(config, source="sample", **overrides), {})[0])


def settings_of(domain, cfg):
    """What a domain's text depends on: equal settings (and tokenizer) mean the outputs are current."""
    s = {"source": cfg["source"], "val_frac": cfg["val_frac"]}
    if domain == "base":
        s["seed"] = cfg["seed"]
    if cfg["source"] == "sample":
        s.update(sample_kb=cfg["sample_kb"], seed=cfg["seed"], python=platform.python_version())
    elif cfg["source"] == "hf":
        s.update(babylm=cfg["babylm"], max_mb=cfg["max_mb"], code="the-stack-smol" if os.environ.get("HF_TOKEN") else "fallbacks")
    elif cfg["source"].startswith("local:"):
        folder, parts = cfg["source"][len("local:"):], ("babylm", "python") if domain == "base" else (domain,)
        s["files"] = {f"{p}/{n}": sha256_file(os.path.join(folder, p, n)) for p in parts
                      for n in ("train.txt", "valid.txt", "val.txt") if os.path.exists(os.path.join(folder, p, n))}
    return s


# -----------------------------------------------------------------------------
# the BPE trainer


def train_bpe(texts, vocab_size, pattern=PATTERN, log=print):
    """Byte-level BPE. Returns {token bytes: rank}: the 256 bytes, then one token per merge, in order.
    Unique pre-tokenised chunks are counted once; after each merge only the chunks that hold the
    merged pair are rewritten, pair counts are updated from them, and the most frequent pair comes
    from a heap whose outdated entries are skipped when popped (ties: the lower token ids)."""
    t0 = time.time()
    rx, counts = re.compile(pattern), Counter()
    for text in [texts] if isinstance(texts, str) else texts:
        counts.update(rx.findall(text))
    words = [list(w.encode("utf-8")) for w in counts]
    freqs = list(counts.values())
    vocab = [bytes([i]) for i in range(256)]
    ranks = {b: i for i, b in enumerate(vocab)}
    pair_count, where = defaultdict(int), defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += freqs[i]
            where[p].add(i)
    heap = [(-n, p) for p, n in pair_count.items()]
    heapq.heapify(heap)
    n_merges, done = vocab_size - 1 - 256, 0
    log(f"  bpe: {len(words):,} unique chunks counted in {time.time() - t0:.1f} s; {n_merges:,} merges to go")
    while done < n_merges and heap:
        neg, p = heapq.heappop(heap)
        if pair_count.get(p, 0) != -neg:  # an outdated entry: the pair's count changed since it was pushed
            continue
        new_bytes = vocab[p[0]] + vocab[p[1]]
        new = ranks.get(new_bytes)
        if new is None:  # the same bytes can come from two different pairs; tiktoken needs them unique
            new = ranks[new_bytes] = len(vocab)
            vocab.append(new_bytes)
            done += 1
        changed = set()
        for i in where.pop(p):
            w, f, out, j = words[i], freqs[i], [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == p[0] and w[j + 1] == p[1]:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            for q in zip(w, w[1:]):
                pair_count[q] -= f
                changed.add(q)
            for q in zip(out, out[1:]):
                pair_count[q] += f
                changed.add(q)
                where[q].add(i)
            words[i] = out
        for q in changed:
            if pair_count[q] > 0:
                heapq.heappush(heap, (-pair_count[q], q))
            else:
                del pair_count[q]
        if done % max(n_merges // 10, 1) == 0 and new == len(vocab) - 1:
            log(f"  bpe: merge {done:,}/{n_merges:,} {new_bytes!r} x{-neg:,} ({time.time() - t0:.1f} s)")
    return ranks


def build_tokenizer(cfg, cache, spec):
    tdir = _tok_dir(cfg["data_dir"])
    t0 = time.time()
    if cfg["tokenizer"] == "gpt2":
        try:
            gpt2 = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken fetches its files on first use
            die(f"--tokenizer gpt2: tiktoken could not load GPT-2's ranks (network needed the first time): {e}")
        ranks, pattern, trained = gpt2._mergeable_ranks, gpt2._pat_str, "OpenAI GPT-2 (tiktoken)"
    elif cfg["tokenizer"] == "bpe":
        if not 257 < cfg["vocab_size"] <= 2 ** 32:
            die(f"--vocab_size must be more than 257, got {cfg['vocab_size']}")
        docs = get_docs("base", cfg, cache)[0]
        mb = n_bytes(docs) / 1e6
        print(f"training a {cfg['vocab_size']}-token byte-level BPE on the base mix train split ({mb:.1f} MB)")
        ranks, pattern = train_bpe(docs, cfg["vocab_size"]), PATTERN
        trained = f"base mix train split, {len(docs):,} documents, {mb:.2f} MB, source {cfg['source']}"
    else:
        die(f"--tokenizer takes bpe or gpt2, got {cfg['tokenizer']!r}")
    secs, n = time.time() - t0, len(ranks)
    rank_file = "".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in sorted(ranks.items(), key=lambda kv: kv[1]))
    info = {"name": f"{cfg['tokenizer']}{n + 1}", "vocab_size": n + 1, "n_ranks": n, "pattern": pattern,
            "special_tokens": {EOT: n}, "trained_on": trained, "spec": spec, "train_seconds": round(secs, 2)}
    info["hash"] = _hash(rank_file.encode(), pattern, info["special_tokens"])
    if cfg["tokenizer"] == "bpe":
        info["train_mb_per_s"] = round(n_bytes(get_docs("base", cfg, cache)[0]) / 1e6 / max(secs, 1e-9), 3)
        print(f"tokenizer: {n + 1} tokens in {secs:.1f} s ({info['train_mb_per_s']:.2f} MB/s), hash {info['hash']}")
    info["provenance"] = provenance(cfg)
    atomic_write_text(os.path.join(tdir, "bpe.tiktoken"), rank_file)
    atomic_write_json(os.path.join(tdir, "tokenizer.json"), info)


# -----------------------------------------------------------------------------
# encoding a domain


def encode_docs(enc, docs, path, dtype, threads):
    """Token ids of every document followed by EOT, streamed to path in batches (bounded memory)."""
    eot, n = eot_id(enc), [0]

    def write(f):
        for i in range(0, len(docs), 2048):
            flat = []
            for ids in enc.encode_ordinary_batch(docs[i:i + 2048], num_threads=threads):
                flat += ids
                flat.append(eot)
            f.write(np.asarray(flat, dtype=dtype).tobytes())
            n[0] += len(flat)
    atomic_write(path, write)
    return n[0]


def prepare(domain, cfg, cache, enc, tok_hash):
    ddir = os.path.join(cfg["data_dir"], domain)
    settings = settings_of(domain, cfg)
    mpath = os.path.join(ddir, "meta.json")
    if os.path.exists(mpath) and not cfg["force"]:
        old = read_json(mpath)
        bins_ok = all(os.path.exists(os.path.join(ddir, f"{s}.bin")) and os.path.getsize(os.path.join(ddir, f"{s}.bin"))
                      == old["splits"][s]["tokens"] * np.dtype(old["dtype"]).itemsize for s in ("train", "val"))
        if old.get("settings") == settings and bins_ok:
            if old.get("tokenizer_hash") == tok_hash:
                print(f"{ddir} is up to date ({old['splits']['train']['tokens']:,} train tokens); --force rebuilds it")
                return old
            print(f"{ddir}: the tokenizer changed; re-encoding")
    train, val, info = get_docs(domain, cfg, cache)
    dtype = np.uint16 if enc.n_vocab <= 2 ** 16 else np.uint32
    os.makedirs(ddir, exist_ok=True)
    splits, t0 = {}, time.time()
    for split, docs in (("train", train), ("val", val)):
        tokens = encode_docs(enc, docs, os.path.join(ddir, f"{split}.bin"), dtype, cfg["threads"])
        splits[split] = {"documents": len(docs), "bytes": n_bytes(docs), "words": n_words(docs), "tokens": tokens}
    secs = time.time() - t0
    mb, ntok = (splits["train"]["bytes"] + splits["val"]["bytes"]) / 1e6, splits["train"]["tokens"] + splits["val"]["tokens"]
    print(f"{ddir}: {splits['train']['tokens']:,} train + {splits['val']['tokens']:,} val tokens "
          f"({mb / max(ntok, 1) * 1e6:.2f} bytes/token), encoded at {mb / max(secs, 1e-9):.1f} MB/s, "
          f"{ntok / max(secs, 1e-9) / 1e6:.2f} M tokens/s")
    meta = {"domain": domain, "source": cfg["source"], "settings": settings, "splits": splits,
            "dtype": np.dtype(dtype).name, "vocab_size": enc.n_vocab, "eot_id": eot_id(enc),
            "tokenizer_hash": tok_hash, "encode_seconds": round(secs, 2), **info}
    if cfg["source"] == "sample":
        meta["note"] = SAMPLE_NOTE
    meta["provenance"] = provenance(cfg, tokenizer_hash=tok_hash)
    atomic_write_json(mpath, meta)
    return meta


def main(argv=None):
    cfg = parse_config(dict(config), argv, presets, default_preset())
    print(f"preset: {cfg['preset']}" + (" (no CUDA here)" if cfg["preset"] == "tiny" else ""))
    if cfg["domain"] not in DOMAINS + ("all",):
        die(f"unknown domain {cfg['domain']!r}; choose one of: {', '.join(DOMAINS + ('all',))}")
    src = cfg["source"]
    if not (src in ("sample", "hf") or src.startswith("local:")):
        die(f"unknown --source {src!r}; use sample, local:DIR or hf")
    if src.startswith("local:") and not os.path.isdir(src[len("local:"):]):
        die(f"--source {src}: no such directory")
    if src == "sample":
        print(SAMPLE_NOTE)
    cache = {}
    requested = DOMAINS if cfg["domain"] == "all" else (cfg["domain"],)
    # the tokenizer belongs to the base mix: (re)train it when missing or made from other settings
    spec = {"tokenizer": cfg["tokenizer"]}
    if cfg["tokenizer"] == "bpe":
        spec.update(vocab_size=cfg["vocab_size"], pattern=PATTERN, base=settings_of("base", cfg))
    tpath = os.path.join(_tok_dir(cfg["data_dir"]), "tokenizer.json")
    old = read_json(tpath).get("spec") if os.path.exists(tpath) else None
    if old != spec:
        if old is not None:
            print(f"the tokenizer in {_tok_dir(cfg['data_dir'])} was made with other settings; retraining "
                  "(domains encoded with the old one are re-encoded when next prepared)")
        build_tokenizer(cfg, cache, spec)
    enc, th = load_tokenizer(cfg["data_dir"]), tokenizer_hash(cfg["data_dir"])
    for domain in requested:
        prepare(domain, cfg, cache, enc, th)
    if src == "sample":
        print("done. Reminder: " + SAMPLE_NOTE)


if __name__ == "__main__":
    main()
