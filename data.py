"""
data.py: the study's corpora -> a byte-level BPE tokenizer -> token files for training.

  python data.py --domain all                                   # built-in sample (smoke-scale demo)
  python data.py --domain all --source local:/path/to/corpora  # plain-text corpora on disk
  python data.py --domain all --source hf --preset paper        # the authors' datasets, downloaded
  python data.py --domain all --source hf --preset paper --dry_run  # what that would fetch and make (footers only)

Domains: babylm, python, tinystories, lua, and `base`, the pre-training mix (all of BabyLM plus
Python matched to the same number of words, as in the paper; `--source hf`: nilq/baby-python whole,
the authors' own mix). For each, writes
<data_dir>/<domain>/{train,val}.bin (token ids; every document followed by <|endoftext|>) and
meta.json (sizes, settings, sources, tokenizer hash). The tokenizer is trained on the base mix train
split, shared by every model, and lives in <data_dir>/tokenizer/. `--source hf` reads the datasets
the authors trained on (nilq/baby-python, roneneldan/TinyStories, nilq/small-lua-stack) at pinned
commits of the Hugging Face hub; it needs pyarrow (requirements-hf.txt), nothing else does. A BabyLM row
there is one line: runs of consecutive rows become documents of up to --group_kb KB of running text.
`--tokenizer authors` encodes with the authors' own 32,000-token tokenizer instead (the tokenizer.json
of their base model on the hub, read with the `tokenizers` package: requirements-authors.txt), every
document then STARTING with <s> as their models saw it: the token files their models can be studied on.

Text streams: documents flow from the files to the tokenizer trainer and to the token files in
bounded batches; no domain is held whole, and nothing is encoded twice (base's tokens are copied
from babylm's and python's token files, in the mix's order). Other scripts import from here: DOMAINS,
EOT, load_tokenizer, eot_id, doc_sep, tokenizer_hash, read_meta, data_fingerprint, open_tokens (THE check that
token files are whole and match a model's tokenizer), sample_windows (the evaluation and analysis
windows) and get_batch / epoch_batch (the training batches). The sample corpus itself is made in sample_corpus.py.
"""
import array
import base64
import functools
import hashlib
import heapq
import io
import json
import math
import mmap
import os
import platform
import random
import re
import shlex
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
from common import (GIVEN, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text, check_free_space,
                    check_regular, cli, default_preset, die, free_cores, lock_dir, parse_config, provenance, read_json,
                    sha256_bytes, sha256_file)

import numpy as np
import tiktoken

import sample_corpus
from sample_corpus import hash_frac

# -----------------------------------------------------------------------------
# configuration: commented defaults, then --preset, then the command line (common.parse_config)
config = dict(
    domain="all",        # which domain to prepare: babylm | python | tinystories | lua | base | all
    source="sample",     # sample (built-in demo) | local:DIR (DIR/<domain>/train.txt, valid.txt; documents each followed by a line <|endoftext|>) | hf (download)
    data_dir="data",     # outputs: <data_dir>/<domain>/, <data_dir>/tokenizer/, downloads in <data_dir>/raw/
    tokenizer="bpe",     # bpe: ours, trained on the base mix | gpt2: tiktoken's GPT-2 | authors: their models' (hub)
    vocab_size=4096,     # bpe: merges + 256 bytes + 1 (<|endoftext|> takes the last id); authors: its file's 32,000
    max_mb=20.0,         # hf: read at most max_mb MB of text per domain (val: max_mb x val_frac); 0 = all
    group_kb=16.0,       # hf: runs of consecutive BabyLM rows (a line each) joined into documents of up to this many KB
                         # (the authors cut their blocks from the rows in stored order: running text); a 256-token
                         # window is ~1 KB, so ~1 - 1/group_kb of the windows (16: ~94%) lie inside one such run,
                         # not across shuffled lines; 0 = a row each
    dry_run=False,       # hf: resolve the commits, read the parquet footers and first row groups by Range requests,
                         # and say what the run would download and make; nothing is written but the hub's answers
                         # (file lists) in raw/
    bpe_mb=100.0,        # bpe: train on about this many MB of the base mix train split (a hash-chosen sample); 0 = all
    sample_kb=500,       # sample: KB of train text per domain
    val_frac=0.1,        # held-out share: sample size; the split by hash of a dataset that has no val split
    seed=1337,           # sample generators and the base-mix selection
    threads=0,           # tiktoken encoding threads; 0 = the cores free now (common.free_cores)
    force=False,         # re-encode even when meta.json says a domain is up to date (tokenizer: only if stale)
)
presets = {"tiny": dict(vocab_size=4096, max_mb=20.0),
           "paper": dict(vocab_size=32000, max_mb=0.0)}
DOMAINS = ("babylm", "python", "tinystories", "lua", "base")
checks = {"domain": DOMAINS + ("all",), "tokenizer": ("bpe", "gpt2", "authors"), "vocab_size": "(257, 4294967296]",
          "max_mb": ">=0", "group_kb": ">=0", "bpe_mb": ">=0", "sample_kb": ">0", "val_frac": "(0,1)", "threads": ">=0"}
# --preset paper expects at least these many tokens per domain (train split): a run that got far fewer
# is not the paper's study, and says so loudly (e.g. Lua from a small fallback, or max_mb left on)
EXPECTED_TOKENS = {"paper": {"babylm": 50e6, "python": 50e6, "base": 100e6, "tinystories": 200e6, "lua": 500e6}}

EOT = "<|endoftext|>"
SAMPLE_NOTE = ("sample: a smoke-scale demo corpus made by data.py (generated English prose, stories and "
               "Lua; Python from this interpreter's standard library), not the study's data")
# Pre-tokenisation, GPT-4-like. Python's `re` has no \p{..} classes, so a letter is [^\W\d_];
# the same pattern runs in Python (training) and in tiktoken's Rust fancy-regex (encoding). The
# two agree on ordinary text; they differ only on characters whose class differs between the
# engines (combining marks after a letter, joiners, superscript digits), where chunks split
# differently: still lossless, just merges that training saw in slightly other contexts.
# PATTERN is what tiktoken gets (and what the tokenizer hash covers); RE_PATTERN, the same without
# possessive quantifiers, is what Python's `re` gets: `re` knows `?+` / `++` only from Python 3.11.
PATTERN = "|".join([
    r"'(?i:[sdmt]|ll|ve|re)",              # English contractions
    r"(?:[^\r\n\w]|_)?+[^\W\d_]+",         # a word, with at most one leading space/symbol
    r"\d{1,3}",                            # numbers in groups of up to three digits
    r" ?(?:[^\s\w]|_)++[\r\n]*",           # punctuation / operators
    r"\s*[\r\n]",                          # newlines (with the whitespace before them)
    r"\s+(?!\S)",                          # whitespace, leaving one space for the next word
    r"\s+",
])
# Dropping the possessive marks changes no match here: the optional leading symbol can never be a
# letter, so giving it back cannot let a word match; and the [\r\n]* after a punctuation run cannot
# fail, so a greedy run is never backtracked into. tests/test_data.py checks both split alike.
RE_PATTERN = PATTERN.replace(")?+", ")?").replace(")++", ")+")
# --source hf: the datasets the authors trained on, at pinned commits of the Hugging Face hub. PINNED
# holds (commit sha, date pinned). baby-python: its "Upload dataset" commit of 2024-03-16, the one that
# added the parquet files (its card: train 10,695,758 rows / 1.22 GB of text, validation 1,037,288 /
# 118 MB; the one later commit on main is titled "Update README.md"). small-lua-stack: its "Upload
# dataset" commit of 2024-02-28, as the hub's pages abbreviate it (its full sha could not be looked up
# where this was written: no network); the hub resolves the prefix at the first download, and the full
# sha, checked to start with it, is recorded in <data_dir>/raw/hf/<repo>/REVISION and meta.json.
HF = os.environ.get("HF_ENDPOINT", "https://huggingface.co")  # tests point this at a local server
PINNED = {"nilq/baby-python": ("2b8e08a55375e38eeefbe5b01ab09a0c36447ce5", "2026-11-25"),
          "roneneldan/TinyStories": ("f54c09fd23315a6f9c86f9dc80f725de7d8f9c64", "2026-11-25"),
          "nilq/small-lua-stack": ("5c9180d", "2026-11-25")}
# --tokenizer authors: the tokenizer.json of the authors' base model repo, not of mistralai/Mistral-7B-v0.1
# whose tokenizer they started from: the model repo's copy is the file their four models were trained
# and released with (saved by their run, tokenizers 0.15.2), while Mistral's repo is gated (terms + HF_TOKEN)
# and its tokenizer files were revised after the authors' run. The pin is the commit that added the
# tokenizer files ("Training in progress, step 5000", 2024-03-16); the hub's pages of later commits name it
# as tokenizer.json's last change. Only tokenizer.json is read at this commit, never the weights.
AUTHORS_REPO, AUTHORS_FILE, AUTHORS_BOS = "nilq/baby-python-mistral-1L-tiny-base", "tokenizer.json", "<s>"
PINNED[AUTHORS_REPO] = ("8c8e66ae410cd9133cdb4d94fa257b1d541e38ff", "2026-12-06")
# which dataset, text column and splits each domain reads. nilq/baby-python is the authors' base mix:
# all of BabyLM 100M plus Python from The Stack matched to it by words; its `type` column says which
# a row is (a type naming python -> python, any other -> babylm). TinyStories: the train/validation
# parquet files that datasets.load_dataset reads. small-lua-stack (all the Lua of The Stack, about
# 559k files) has train-*-of-00006 and validation-* parquet files. A dataset without a val split
# would be split by document hash (val_frac).
HF_DATA = {"babylm": ("nilq/baby-python", "content"), "python": ("nilq/baby-python", "content"),
           "tinystories": ("roneneldan/TinyStories", "text"), "lua": ("nilq/small-lua-stack", "content")}
HF_SPLITS = {"train": ("train",), "val": ("validation", "valid", "val")}
RETRIES, BACKOFF_S, TIMEOUT_S = 6, 2.0, (10, 60)  # downloads: tries, first back-off (doubles), connect/read timeouts


# -----------------------------------------------------------------------------
# the API other scripts use: the tokenizer, the token files and their checks, token windows


def _tok_dir(data_dir):
    return os.path.join(data_dir, "tokenizer")


def made_with(data_dir, domain="all"):
    """The settings data.py recorded in a domain's meta.json (else another domain's): {} where none did (made by
    hand, or before meta.json kept them)."""
    for d in ([domain] if domain in DOMAINS else []) + list(DOMAINS):
        made = ((_read_json_or_none(os.path.join(data_dir, d, "meta.json"), ("provenance",)) or {})
                .get("provenance") or {})
        made = made.get("config") if isinstance(made, dict) else None
        if isinstance(made, dict) and made.get("preset") in presets:
            return made
    return {}


def remake_command(data_dir, domain="all"):
    """The command that remakes a domain as data_dir holds it: the source, preset, tokenizer and settings its
    meta.json records (else another domain's), or the tokenizer's kind; the defaults (the sample, this
    machine's preset, our BPE) would replace it."""
    cmd = f"python data.py --domain {domain} --data_dir {shlex.quote(data_dir)}"
    made = made_with(data_dir, domain)
    if made:
        usual = {**config, **presets[made["preset"]]}
        keys = ("source", "preset", "tokenizer", "vocab_size", "max_mb", "group_kb", "bpe_mb", "sample_kb",
                "val_frac", "seed")
        return cmd + "".join(f" --{k} {shlex.quote(str(made[k]))}" for k in keys
                             if k in made and (k == "preset" or made[k] != usual.get(k)))
    spec = (_read_json_or_none(os.path.join(_tok_dir(data_dir), "tokenizer.json"), ("spec",)) or {"spec": {}})["spec"]
    tok = spec.get("tokenizer", "bpe") if isinstance(spec, dict) else "bpe"
    return cmd + ("" if tok == "bpe" else f" --tokenizer {tok}")


def grow_fix(data_dir, domain, split, need):
    """What makes the `split` of `domain` in data_dir hold at least `need` tokens, as the clause of a message: the
    data.py command (remake_command: its recorded settings kept) with the setting that makes that split larger,
    sized from what its meta.json records (its bytes a token, and the settings it was made with) to about twice
    `need`: the sample's --val_frac or --sample_kb, the hub's --val_frac or --max_mb. Where no setting of data.py
    can (a local corpus: its files; the hub's whole split), what to change instead. Our BPE is trained on the base
    mix these settings make: then the clause says that it is retrained, and with it every model on data_dir."""
    made, meta = made_with(data_dir, domain), _read_json_or_none(os.path.join(data_dir, domain, "meta.json")) or {}
    splits = meta.get("splits") if isinstance(meta.get("splits"), dict) else {}
    src, val = made.get("source"), made.get("val_frac")
    retrain = made.get("tokenizer", "bpe") == "bpe"
    if isinstance(src, str) and src.startswith("local:"):
        folder, name = src[len("local:"):], "train.txt" if split == "train" else "valid.txt"
        files = " and ".join(os.path.join(folder, d, name) for d in (("babylm", "python") if domain == "base"
                                                                      else (domain,)))
        return (f"add text to {files} (no setting of data.py makes a local corpus larger), then run "
                f"{remake_command(data_dir)}" + (f" (this retrains the tokenizer, trained on that text: every model "
                                                 f"on {data_dir} must then be trained again)"
                                                 if retrain and domain in MIX_SIDES + ("base",) else ""))
    # the setting that sizes the text, and its unit in bytes: train holds that much, val that much x --val_frac
    key, unit = {"sample": ("sample_kb", 1024), "hf": ("max_mb", 1e6)}.get(src, (None, None))
    size = made.get(key)
    if src == "hf" and size == 0:
        return (f"{data_dir}/{domain}/{split}.bin holds all of its dataset's {split} split (--max_mb 0), and no "
                "setting of data.py makes it larger")

    def up(x):  # a setting's value, rounded up to two significant digits
        e = 10 ** (math.floor(math.log10(x)) - 1)
        return float(f"{math.ceil(x / e) * e:.6g}")
    grow = math.ceil if src == "sample" else up  # (sample_kb: an integer)
    change = None
    try:  # (a damaged or hand-made record's NaN, infinity, 0 or integer past a float: the fix below, unsized)
        ratios = [sp["bytes"] / sp["tokens"] for sp in (splits.get(split), *splits.values()) if isinstance(sp, dict)
                  and all(isinstance(sp.get(k), (int, float)) and sp[k] > 0 for k in ("bytes", "tokens"))]
        want = 2 * need * (ratios[0] if ratios else 4.0)  # bytes of text: twice what one window needs, as a margin
        if key and isinstance(size, int if src == "sample" else (int, float)) and isinstance(val, float):
            if split == "train":
                change = {key: grow(max(2 * size, want / unit))}
            else:  # a larger share of the text, up to half of it; past that more text too
                frac = up(max(2 * val, want / (size * unit)))
                change = ({"val_frac": frac} if frac <= 0.5 else
                          {key: grow(max(size, want / (0.5 * unit))), "val_frac": 0.5})
    except (ArithmeticError, ValueError):
        change = None
    if change is None:  # no record of how it was made (made by hand, or before meta.json kept its settings)
        return (f"make {data_dir} again with more text: {remake_command(data_dir)} with a larger --sample_kb (the "
                f"sample) or --max_mb (--source hf)" + (", or --val_frac" if split == "val" else ""))
    cmd = remake_command(data_dir)
    cmd = re.sub(r" --(" + "|".join(change) + r") \S+", "", cmd) + "".join(f" --{k} {v:g}" if isinstance(v, float)
                                                                      else f" --{k} {v}" for k, v in change.items())
    return (f"make it larger: {cmd}" + (f" (this retrains the tokenizer, trained on the base mix these settings "
                                        f"make: every model on {data_dir} must then be trained again)" if retrain else ""))


def too_short(a, name, T):
    """The one line for the token array `a` (open_tokens': its file says which split of which domain in which data
    folder; name: the caller's for it), shorter than one window of T tokens, with grow_fix's fix."""
    path = getattr(a, "filename", None)
    if not isinstance(path, str):  # not a split's file (a caller's own array)
        label = f"domain '{name}'" if isinstance(name, str) else "a token array"
        die(f"{label} has {len(a):,} tokens, fewer than one window of {T}; give it at least {T} tokens")
    folder, split = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
    data_dir, domain = os.path.dirname(folder), os.path.basename(folder)
    given = GIVEN.get("data_dir")
    if given and os.path.realpath(given) == os.path.realpath(data_dir):  # as the user wrote it
        data_dir = given
    die(f"the {split} split of domain '{domain}' ({os.path.join(data_dir, domain, split + '.bin')}) has {len(a):,} "
        f"tokens, fewer than one window of {T}; {grow_fix(data_dir, domain, split, T)}")


def _read_ranks(path):
    # the tiktoken rank format (base64 token, space, rank) parsed here: tiktoken's own
    # load_tiktoken_bpe caches files by path, which would hide a retrained tokenizer
    with open(path, "rb") as f:
        return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in f if ln.strip())}


# tokenizer.json is our record of the tokenizer; its "format" (none: tiktoken, as in records made before
# formats) names the file beside it that decides the ids, and the key the record needs for that format
TOK_FORMATS = {"tiktoken": ("bpe.tiktoken", "pattern"),   # bpe, gpt2: a tiktoken rank file
               "tokenizers": ("authors.json", "bos")}     # authors: the hub's tokenizer.json, byte for byte


def _tok_format(info):
    return info.get("format", "tiktoken")


def _tok_record_ok(info):
    """Whether a tokenizer.json read as JSON has the shape data.py writes: a format of TOK_FORMATS with that
    format's key, and the name, vocab_size, special tokens, hash and spec of their types. A record of another
    shape (a list for the format, text for a count) is damaged, as an unreadable one is."""
    if not isinstance(info, dict) or not isinstance(_tok_format(info), str) or _tok_format(info) not in TOK_FORMATS:
        return False
    special = info.get("special_tokens")
    return (isinstance(info.get("name"), str) and type(info.get("vocab_size")) is int and isinstance(special, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in special.items())
            and isinstance(info.get(TOK_FORMATS[_tok_format(info)][1]), str)
            and isinstance(info.get("hash", ""), str) and isinstance(info.get("spec", {}), dict))


def _tok_info(data_dir):
    """tokenizer.json, checked complete and with the file that decides the ids beside it (one-line errors otherwise)."""
    tdir = _tok_dir(data_dir)
    path = os.path.join(tdir, "tokenizer.json")
    if not os.path.exists(path):
        die(f"no tokenizer in {tdir}; run: {remake_command(data_dir)}")
    info = _read_json_or_none(path, ("name", "vocab_size", "special_tokens"))
    if info is None or not _tok_record_ok(info):
        die(f"{path} is damaged (not JSON, or keys missing or of the wrong type); "
            f"re-make it: {remake_command(data_dir)}")
    ids_file = os.path.join(tdir, TOK_FORMATS[_tok_format(info)][0])
    if not os.path.exists(ids_file):
        what = "the rank file" if _tok_format(info) == "tiktoken" else "the hub's tokenizer file"
        die(f"no {ids_file} beside {path} ({what} is part of the tokenizer); re-make it: {remake_command(data_dir)}")
    return info


def _read_json_or_none(path, keys=()):
    """A JSON object holding `keys`, or None when the file is missing, damaged or incomplete."""
    try:
        obj = read_json(path)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and all(k in obj for k in keys) else None


def load_tokenizer(data_dir="data", want=None):
    """data_dir's tokenizer: a tiktoken.Encoding, or for the authors' one a TokenizersEncoding (the same API).
    The file that decides the ids must match the hash tokenizer.json recorded for it (a damaged or edited
    rank file would decode ids to the wrong strings), and `want`, where given: the hash of the tokenizer
    the caller's models were trained with."""
    info, tdir = _tok_info(data_dir), _tok_dir(data_dir)
    ids_file = os.path.join(tdir, TOK_FORMATS[_tok_format(info)][0])
    got = _ids_hash(tdir, info)
    if got != info.get("hash", got):  # (records made before the hash was kept have none)
        die(f"{ids_file} is damaged: it does not match the hash {tdir}/tokenizer.json recorded for it (or it was "
            f"edited); re-make it: {remake_command(data_dir)}")
    if want is not None and got != want:
        die(f"the tokenizer in {tdir} ({got}) is not the one the models were trained with ({want}); give the "
            f"--data_dir they were made from")
    if _tok_format(info) == "tokenizers":
        return TokenizersEncoding(ids_file, info, remake_command(data_dir))
    try:
        ranks = _read_ranks(ids_file)
        return tiktoken.Encoding(name=info["name"], pat_str=info["pattern"], mergeable_ranks=ranks,
                                 special_tokens=info["special_tokens"], explicit_n_vocab=info["vocab_size"])
    except Exception as e:  # a record without a hash: the rank file unchecked until read
        die(f"{ids_file} is damaged ({type(e).__name__}: {str(e)[:120]}); re-make it: {remake_command(data_dir)}")


def _hash(rank_file_bytes, pattern, special_tokens):
    return sha256_bytes(rank_file_bytes + b"\0" + json.dumps([pattern, special_tokens], sort_keys=True).encode())


def tokenizer_hash(data_dir="data"):
    """Hash of what decides the token ids: the rank file, the pattern and the special tokens (tiktoken), or
    the bytes of the hub's tokenizer file (authors)."""
    return _ids_hash(_tok_dir(data_dir), _tok_info(data_dir))


def _counts_fit(tdir, info):
    """Whether tokenizer.json's vocab_size is its rank file's tokens plus its special tokens (the hash covers
    neither count; the authors' tokenizer file is checked by its hash alone)."""
    if _tok_format(info) != "tiktoken":
        return True
    with open(os.path.join(tdir, TOK_FORMATS["tiktoken"][0]), "rb") as f:
        n = sum(1 for ln in f if ln.strip())
    return info.get("vocab_size") == n + len(info.get("special_tokens") or {})


def _ids_hash(tdir, info):
    """tokenizer_hash from the files in tdir as `info` (a record) describes them; None when they are missing."""
    path = os.path.join(tdir, TOK_FORMATS.get(_tok_format(info), ("?",))[0])
    if not os.path.exists(path):
        return None
    if _tok_format(info) == "tokenizers":
        return sha256_file(path)
    with open(path, "rb") as f:
        return _hash(f.read(), info.get("pattern"), info.get("special_tokens"))


def eot_id(enc):
    return enc.encode_single_token(EOT)


def doc_sep(enc):
    """(id, first): the token between documents in the token files, and whether it comes first in every
    document (the authors' <s>: their models saw each document start with it) or last (EOT: our own
    tokenizers end every document with it). encode_split writes it where it belongs, doc_spans reads it."""
    bos = getattr(enc, "bos_id", None)
    return (bos, True) if bos is not None else (eot_id(enc), False)


def import_tokenizers():
    try:
        import tokenizers
        return tokenizers
    except ImportError:
        die("--tokenizer authors reads the authors' tokenizer with the `tokenizers` package, which is not installed: "
            "pip install -r requirements-authors.txt")


class TokenizersEncoding:
    """A Hugging Face `tokenizers` file (the authors' SentencePiece-style BPE: "\u2581" for a space, <0xNN>
    tokens for the bytes of characters outside the vocabulary) behind the part of tiktoken.Encoding's API
    that the scripts use. Its documents START with `bos` (<s>): doc_sep reads bos_id."""

    def __init__(self, path, info, fix):
        try:
            self._tok = import_tokenizers().Tokenizer.from_file(path)
        except Exception as e:  # the Rust library raises a plain Exception for any file it cannot read
            die(f"{path} is damaged ({' '.join(str(e).split())}); re-make it: {fix}")
        # a literal "<s>" inside a document stays text, as "<|endoftext|>" does in tiktoken's
        # encode_ordinary: the id of <s> then marks document starts only (the hub's default would make it
        # id 1, splitting that document in two; every other text is encoded as the hub's tokenizer does)
        self._tok.encode_special_tokens = True
        self.name, self.bos, self.n_vocab = info["name"], info["bos"], self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id = self._tok.token_to_id(self.bos)
        if self.bos_id is None:
            die(f"{path} has no token {self.bos} to start documents with; re-make it: {fix}")

    def encode_ordinary(self, text):
        return self._tok.encode(text, add_special_tokens=False).ids  # without <s>: encode_split places it

    def encode_ordinary_batch(self, texts, num_threads=8):
        os.environ.setdefault("RAYON_NUM_THREADS", str(num_threads))  # tokenizers' own pool, sized at first use
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_single_token(self, text):
        i = self._tok.token_to_id(text)
        if i is None:
            raise KeyError(text)  # as tiktoken does (this tokenizer has no <|endoftext|>)
        return i

    def decode_single_token_bytes(self, i):
        """A token's bytes: a byte token <0xNN> is that byte; in any other piece "\u2581" is a space."""
        piece = self._tok.id_to_token(int(i)) if 0 <= int(i) < self.n_vocab else None
        if piece is None:
            raise KeyError(i)
        byte = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        return bytes([int(byte.group(1), 16)]) if byte else piece.replace("\u2581", " ").encode("utf-8")

    def decode(self, ids):
        """The text of token ids: each document as the hub's decoder gives it back (which drops the space the
        tokenizer puts before a document's first word), the documents joined by their <s>."""
        ids = [int(i) for i in ids]
        cuts = [-1] + [k for k, t in enumerate(ids) if t == self.bos_id] + [len(ids)]
        return self.bos.join(self._tok.decode(ids[a + 1:b], skip_special_tokens=False) for a, b in zip(cuts, cuts[1:]))


DTYPES = ("uint16", "uint32")  # token file dtypes: uint16 while the vocabulary fits


def meta_problem(meta):
    """Why a domain's meta.json cannot describe its token files (None when it can)."""
    if meta is None:
        return "not readable JSON"
    missing = [k for k in ("dtype", "vocab_size", "tokenizer_hash", "splits") if k not in meta]
    if missing:
        return f"no {', '.join(missing)}"
    if meta["dtype"] not in DTYPES:
        return f"dtype {meta['dtype']!r} is not one of {', '.join(DTYPES)}"
    if type(meta["vocab_size"]) is not int or not 0 < meta["vocab_size"] <= np.iinfo(meta["dtype"]).max + 1:
        return f"vocab_size {meta['vocab_size']!r} does not fit dtype {meta['dtype']}"
    if not isinstance(meta["tokenizer_hash"], str):
        return f"tokenizer_hash {meta['tokenizer_hash']!r} is not a hash"
    for s in ("train", "val"):
        # every inner value checked for its type too: a list where a split's dict belongs is a damaged file
        split = meta["splits"].get(s) if isinstance(meta["splits"], dict) else None
        n = split.get("tokens") if isinstance(split, dict) else None
        if type(n) is not int or n < 0:
            return f"no token count for the {s} split"
        sha = meta["splits"][s].get("sha256")  # absent in token files made before checksums (check_tokens)
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            return f"the {s} split's sha256 {sha!r} is not a sha256"
    return None


def read_meta(data_dir, domain):
    """A domain's meta.json, checked complete (one-line error naming the fix otherwise)."""
    path = os.path.join(data_dir, domain, "meta.json")
    if not os.path.exists(path):
        die(f"no {path}; run: {remake_command(data_dir, domain)}")
    meta = _read_json_or_none(path)
    why = meta_problem(meta)
    if why:
        die(f"{path} is damaged ({why}); re-make it: {remake_command(data_dir, domain)}")
    if meta.get("domain", domain) != domain:  # (records made before the field: none)
        die(f"{path} is the meta.json of domain '{meta['domain']}', not '{domain}': folders swapped? put each "
            f"domain back in its own folder, or re-make it: {remake_command(data_dir, domain)} --force")
    return meta


def data_fingerprint(data_dir, domains):
    """{domain: hash of its meta.json}: which token files an output was made from (meta.json holds the
    source files' hashes, the settings, the token counts and the tokenizer hash)."""
    return {d: sha256_file(os.path.join(data_dir, d, "meta.json")) for d in domains}


def tokens_sha256(data_dir, domains, split="train"):
    """{domain: sha256 of its split's token bytes} as meta.json records them (None: made before checksums):
    the tokens a run reads, recorded with it so that a resume can tell they are still the same (a meta.json
    rewritten over the same tokens compares equal)."""
    return {d: read_meta(data_dir, d)["splits"][split].get("sha256") for d in domains}


def check_same_tokens(saved, data_dir, domains, path, fix):
    """A resumed run trains on the tokens it began on: saved (tokens_sha256 when it began; not a dict: a run
    saved before the record, not checked) against data_dir's now. One line naming the fix otherwise."""
    if not isinstance(saved, dict):
        return
    now = tokens_sha256(data_dir, domains)  # (None: begun on token files without checksums, which data.py adds)
    changed = [d for d in domains if saved.get(d) is not None and saved.get(d) != now[d]]
    if changed:
        die(f"{path} began on other {', '.join(changed)} tokens than {data_dir} holds now (prepared again since); "
            f"put the run's data back, or start over: {fix} --overwrite")


def open_tokens(data_dir, domain, split, tok_hash=None, vocab_size=None, who=None):
    """A domain's train or val tokens as a read-only memmap, after THE one data check: meta.json
    readable and complete, the file holding exactly the tokens meta.json counts, its vocabulary no
    larger than the model's (vocab_size) and its tokenizer the model's (tok_hash; None: the tokenizer
    now in data_dir, when there is one), its contents those meta.json vouches for (check_tokens: the sha256
    and every id in the vocabulary). who: the model's name, for the messages."""
    if split not in ("train", "val"):
        die(f"split must be train or val, got {split!r}")
    meta, fix = read_meta(data_dir, domain), remake_command(data_dir, domain)
    path = os.path.join(data_dir, domain, f"{split}.bin")
    if not os.path.exists(path):
        die(f"no {path}; run: {fix}")
    if not os.path.isfile(path):  # a folder, a device or a pipe in its place
        die(f"{path} is not a file but a folder, a device or a pipe; remove it and re-make it: {fix} --force")
    dtype, n_tok = np.dtype(meta["dtype"]), meta["splits"][split]["tokens"]
    if os.path.getsize(path) != n_tok * dtype.itemsize:
        die(f"{path} has {os.path.getsize(path):,} bytes but meta.json says {n_tok:,} {dtype.name} tokens "
            f"({n_tok * dtype.itemsize:,} bytes): truncated or replaced; re-make it: {fix} --force")
    model = f"model '{who}'" if who else "the model"
    if vocab_size is not None and meta["vocab_size"] > vocab_size:
        die(f"{data_dir}/{domain} has a vocabulary of {meta['vocab_size']}, more than {model}'s {vocab_size}; "
            f"pass the --data_dir the model was trained on")
    if tok_hash is not None and meta["tokenizer_hash"] != tok_hash:
        die(f"{data_dir}/{domain} was prepared with tokenizer {meta['tokenizer_hash']} but {model} uses {tok_hash}; "
            f"pass the --data_dir the model was trained on")
    if os.path.exists(os.path.join(_tok_dir(data_dir), "tokenizer.json")):  # the tokenizer beside the data
        if tok_hash is None and meta["tokenizer_hash"] != tokenizer_hash(data_dir):
            die(f"{path} was encoded with another tokenizer than the one in {_tok_dir(data_dir)}; run: {fix}")
        info = _tok_info(data_dir)
        if meta["vocab_size"] != info["vocab_size"]:
            bad = "meta.json" if _counts_fit(_tok_dir(data_dir), info) else "tokenizer/tokenizer.json"
            die(f"{data_dir}/{domain}/meta.json says vocab_size {meta['vocab_size']} but the tokenizer in "
                f"{_tok_dir(data_dir)} has {info['vocab_size']}: the {bad} is damaged; re-make it: {fix}"
                + (" --force" if bad == "meta.json" else ""))
    check_tokens(path, meta, split, fix)
    if n_tok == 0:  # numpy cannot map an empty file: an empty array that names its file as a memmap does
        empty = np.zeros(0, dtype=dtype).view(NoTokens)
        empty.filename = os.path.abspath(path)
        return empty
    return np.memmap(path, dtype=dtype, mode="r")


class NoTokens(np.ndarray):
    """An empty split (open_tokens), which names its file (filename, as np.memmap does) for too_short's message."""


def scan_tokens(path, dtype, block=1 << 24):
    """(sha256 hex, largest id; -1 when empty) of a token file in one pass, a block at a time: what
    meta.json records for each split (prepare) and what check_tokens compares (~1.2 s a GB, DESIGN.md)."""
    h, top = hashlib.sha256(), -1
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype).max()))
    return h.hexdigest(), top


def check_tokens(path, meta, split, fix):
    """A token file's contents against its meta.json: every id below vocab_size, and the bytes' sha256
    where meta.json has one (token files made before checksums: the ids only). The pass is made once: the
    verdict is kept beside the file (.<split>.bin.checked), keyed by the file's size, times and inode
    (which any write changes) and by what it was checked against; an unchanged file costs a stat."""
    want, vocab, st = meta["splits"][split].get("sha256"), meta["vocab_size"], os.stat(path)
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
           "sha256": want, "vocab_size": vocab}
    side = os.path.join(os.path.dirname(path), f".{split}.bin.checked")
    if _read_json_or_none(side) == key:
        return
    got, top = scan_tokens(path, meta["dtype"])
    if top >= vocab:
        die(f"{path} holds token id {top}, outside the vocabulary of {vocab} ids in meta.json: damaged, or not "
            f"encoded with this tokenizer; re-make it: {fix} --force")
    if want is not None and got != want:
        die(f"{path} is damaged: its bytes do not match the sha256 in meta.json; re-make it: {fix} --force")
    if time.time_ns() - st.st_mtime_ns < 2e9:  # written just now: a change within the same clock tick would
        return                                 # not show in its times (git's "racily clean"); no verdict yet
    try:  # a read-only data_dir: no verdict kept, the file is checked again at its next open
        with open(f"{side}.{os.getpid()}.tmp", "w") as f:
            json.dump(key, f)
        os.replace(f"{side}.{os.getpid()}.tmp", side)
    except OSError:
        pass


SCHEMES = ("spread", "tiles", "consecutive")


def sample_windows(arrays, n, T, scheme, rng=None, offset=0, with_counts=False):
    """The window sampler of the evaluations and the analysis (the training batches: epoch_batch, or
    get_batch with --sampler windows; the SAE harvest: sae.stream_windows): (n, T) int64 token
    windows, equal shares per domain (the first n % k domains one more) when `arrays` holds k token
    arrays (a list, or a dict {domain: array}; a single array is one domain). Schemes, each
    reproducing the sampler a stage used before, RNG call for call:
      spread       evenly spaced starts from the first token to the last window (deterministic);
                   the SAE's held-out evaluation windows
      tiles        distinct aligned non-overlapping windows at multiples of T, chosen at random and
                   sorted (rng: a numpy Generator or a seed); a short domain gives what it has
      consecutive  windows i = offset, offset+1, ... at stride T-1 (each window's last token is the
                   next one's first: x/y pairs that cover the array once); n=None: all of them
    with_counts: also return {domain (or index): windows drawn}."""
    names, arrays = (list(arrays), list(arrays.values())) if isinstance(arrays, dict) else \
        (None, list(arrays) if isinstance(arrays, (list, tuple)) else [arrays])
    names = names or list(range(len(arrays)))
    if scheme not in SCHEMES:
        raise ValueError(f"unknown window scheme {scheme!r}; one of {SCHEMES}")  # a programming error
    if scheme == "tiles" and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    starts = []
    for d, (name, a) in enumerate(zip(names, arrays)):
        want = None if n is None else n // len(arrays) + (d < n % len(arrays))
        if scheme != "tiles" and len(a) < T:
            too_short(a, name, T)
        starts.append(_starts(a, want, T, scheme, rng, offset))
    wins = cut_windows(arrays, starts, T)
    return (wins, {name: len(s) for name, s in zip(names, starts)}) if with_counts else wins


def _starts(a, want, T, scheme, rng, offset):
    """Window starts in one token array for sample_windows."""
    if scheme == "spread":
        return np.linspace(0, len(a) - T, want).astype(np.int64).tolist()
    if scheme == "tiles":
        avail = len(a) // T
        return [i * T for i in np.sort(rng.choice(avail, size=min(want, avail), replace=False))] if avail else []
    avail = (len(a) - 1) // (T - 1) - offset  # consecutive
    return [(offset + i) * (T - 1) for i in range(max(0, avail if want is None else min(want, avail)))]


def cut_windows(arrays, starts_per_domain, T):
    """(n, T) int64 windows: for each domain's array, one window of T tokens per start."""
    rows = [np.asarray(a[s:s + T], dtype=np.int64) for a, starts in zip(arrays, starts_per_domain) for s in starts]
    return np.stack(rows) if rows else np.zeros((0, T), dtype=np.int64)


def get_batch(tokens, batch_size, block_size, device, generator):
    """batch_size random windows of a token array (uniform starts, drawn from generator), as
    nanoGPT draws them: x (B, block_size) int64 and y, the same windows shifted by one token (the
    next-token targets)."""
    import torch
    if len(tokens) <= block_size:
        die(f"only {len(tokens)} tokens, fewer than block_size+1 = {block_size + 1}")
    ix = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
    return windows_at(tokens, ix, block_size, device)


def epoch_batch(tokens, first, batch_size, block_size, device, seed):
    """Windows first .. first + batch_size - 1 of the epoch order, as the authors' trainer (HF's,
    on the text grouped into blocks) reads the data: the tokens cut into (len - 1) // block_size
    blocks of block_size targets, every block once an epoch, in an order shuffled anew each epoch
    (seeded by seed and the epoch). A function of the window number alone: a resume needs only the
    count. x, y as get_batch's."""
    n = (len(tokens) - 1) // block_size
    if n < 1:
        die(f"only {len(tokens)} tokens, fewer than block_size+1 = {block_size + 1}")
    k = np.arange(first, first + batch_size)  # the windows' numbers: epoch k // n, its block k % n
    epoch = k // n
    blocks = np.concatenate([epoch_order(seed, e, n)[k[epoch == e] % n] for e in np.unique(epoch)])
    return windows_at(tokens, (blocks * block_size).tolist(), block_size, device)


@functools.lru_cache(maxsize=2)  # a batch may span two epochs
def epoch_order(seed, epoch, n_blocks):
    """The blocks in one epoch's order: (n_blocks,) int64, a permutation seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


def windows_at(tokens, starts, block_size, device):
    """x (B, block_size) int64: the windows at `starts`; y: the same windows one token on."""
    import torch
    x = torch.stack([torch.from_numpy(tokens[i:i + block_size].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(tokens[i + 1:i + 1 + block_size].astype(np.int64))
                     for i in starts])
    if str(device).startswith("cuda"):  # pinned host memory lets the copy overlap with compute
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# small text helpers


def n_words(docs):  # "words" as the paper counts them for the mix: whitespace-separated
    return sum(len(d.split()) for d in docs)


def n_bytes(docs):
    return sum(len(d.encode("utf-8")) for d in docs)


def split_eot(text):
    """Documents of a text in the corpora format (each followed by a line `<|endoftext|>`)."""
    return [d.strip("\n") for d in re.split(r"^<\|endoftext\|>$", text, flags=re.M) if d.strip()]


def batched(docs, max_docs=1 << 16, max_bytes=1 << 20):
    """Lists of consecutive documents, at most max_docs and about max_bytes (of characters) each: the chunks
    that encode_split hands its threads (a document longer than max_bytes makes a chunk alone)."""
    batch, size = [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if len(batch) >= max_docs or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# -----------------------------------------------------------------------------
# downloads: resumable (.part + Range / If-Range on the ETag, Content-Range checked), retried with
# back-off, validated before the final rename (an HTML error page never becomes a data file),
# skipped when done. No network (a name that does not resolve) fails at once, not after the retries.


def _requests():
    try:
        import requests
        return requests
    except ImportError:
        die("--source hf needs requests and pyarrow: pip install -r requirements-hf.txt")


def offline_cause(err):
    """'name resolution failed' / 'network unreachable' when a connection error means no network."""
    import errno
    import socket
    seen = err
    while seen is not None:
        if isinstance(seen, socket.gaierror) or "NameResolution" in type(seen).__name__ \
                or "Name or service not known" in str(seen) or "Temporary failure in name resolution" in str(seen):
            return "name resolution failed"
        if isinstance(seen, OSError) and seen.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable"
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None  # urllib3 wraps so
        seen = seen.__cause__ or seen.__context__ or inner
    return None


def check_download(path, kind, url):
    """Refuse (and delete) a downloaded file that is not what `kind` says: 'parquet', 'json' or 'safetensors'
    (any other kind: not an HTML page)."""
    with open(path, "rb") as f:
        head = f.read(512)
    problem = None
    if kind == "safetensors":  # binary from byte 0: its header length may well read as "<", so checked alone
        problem = safetensors_problem(path)
    elif head.lstrip()[:1] == b"<":
        problem = "an HTML/XML page (an error or login page?) instead of data"
    elif kind == "json":
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except ValueError as e:
            problem = f"not valid JSON ({e})"
    elif kind == "parquet":
        problem = parquet_problem(path)
    if problem:
        os.remove(path)
        die(f"download of {url} gave {problem}; deleted it. Check the URL / HF_TOKEN and run again")


def parquet_problem(path):
    pq = import_pyarrow()
    if os.path.getsize(path) < 12:
        return "a file too short to be parquet"
    with open(path, "rb") as f:
        start = f.read(4)
        f.seek(-4, os.SEEK_END)
        end = f.read(4)
    if start != b"PAR1" or end != b"PAR1":
        return "not a parquet file (no PAR1 marks)"
    try:
        pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises several types for a damaged footer
        return f"a damaged parquet file ({e})"
    return None


# safetensors (the hub's model weights): an 8-byte little-endian header length n, n bytes of JSON
# {name: {"dtype", "shape", "data_offsets": [begin, end]}, optional "__metadata__"}, then the tensors'
# raw little-endian bytes, offsets counted from the end of the header, covering the rest of the file.
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_header(path):
    """({tensor name: {"dtype", "shape", "data_offsets"}}, byte where the data starts) of a safetensors file,
    every entry checked to lie inside the file and to have the size its shape and dtype imply.
    ValueError naming the problem otherwise (authors.py reads the tensors; downloads are checked here)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if len(head) < 8 or 8 + n > size:
            raise ValueError(f"a header of {n:,} bytes in a file of {size:,}: truncated")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"a header that is not JSON ({e})")
    if not isinstance(header, dict):
        raise ValueError("a header that is not a JSON object")
    header.pop("__metadata__", None)
    room, end = size - 8 - n, 0  # bytes of tensor data; where the last tensor ends
    for name, e in header.items():
        ok = isinstance(e, dict) and isinstance(e.get("shape"), list) and isinstance(e.get("data_offsets"), list)
        ok = ok and len(e["data_offsets"]) == 2 and all(isinstance(v, int) and v >= 0
                                                        for v in e["shape"] + e["data_offsets"])
        if not ok:
            raise ValueError(f"tensor {name!r}: no dtype, shape and data_offsets [begin, end] of integers")
        if not isinstance(e.get("dtype"), str) or e["dtype"] not in SAFETENSORS_BYTES:  # (a list is unhashable)
            raise ValueError(f"tensor {name!r} has the unknown dtype {e.get('dtype')!r}")
        begin, stop = e["data_offsets"]
        if not begin <= stop <= room:
            raise ValueError(f"tensor {name!r} at bytes [{begin:,}, {stop:,}) of {room:,} bytes of data: truncated")
        if stop - begin != int(np.prod(e["shape"], dtype=object)) * SAFETENSORS_BYTES[e["dtype"]]:
            raise ValueError(f"tensor {name!r}: {stop - begin:,} bytes for shape {e['shape']} of {e['dtype']}")
        end = max(end, stop)
    if end != room:
        raise ValueError(f"{room - end:,} bytes after the last tensor")
    return header, 8 + n


def safetensors_problem(path):
    try:
        safetensors_header(path)
    except ValueError as e:
        return f"a damaged safetensors file ({e})"
    return None


def import_pyarrow():
    try:
        import pyarrow.parquet as pq
        return pq
    except ImportError:
        die("--source hf reads parquet with pyarrow, which is not installed: pip install -r requirements-hf.txt")


def download(url, path, kind, headers=None, denied=None, next_page=None):
    """Fetch url to path and check it is `kind` data. A finished file is only ever the result of a
    complete, checked transfer (renamed from .part), so an existing path means done. next_page: a
    list that receives the URL of the response's `Link: <...>; rel="next"` (None when there is none)."""
    requests = _requests()
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    part = path + ".part"
    got = retried(url, os.path.basename(path), lambda: fetch_once(requests, url, part, headers or {}, denied))
    check_download(part, kind, url)
    if next_page is not None:
        links = requests.utils.parse_header_links(got.get("Link", "")) if got.get("Link") else []
        next_page.append(next((lk["url"] for lk in links if lk.get("rel") == "next"), None))
    os.replace(part, path)
    for extra in (part + ".etag",):
        if os.path.exists(extra):
            os.remove(extra)
    return path


def retried(url, name, once):
    """once() (a request), tried again with back-off after a network error, a cut or an HTTP 429/5xx (IOError);
    no network (a name that does not resolve) is one line at once."""
    requests = _requests()
    import urllib3  # comes with requests
    last = None
    for attempt in range(RETRIES):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            return once()
        except (requests.RequestException, urllib3.exceptions.HTTPError, IOError) as e:
            cause = offline_cause(e)
            if cause:
                die(f"cannot reach {url.split('/')[2]} ({cause}): no network here? the hub's datasets, models and "
                    "tokenizer need the internet (once); offline, use --source sample or local:DIR and our own models")
            last = e
            print(f"  {name}: {type(e).__name__}: {e}; try {attempt + 2} of {RETRIES}"
                  if attempt + 1 < RETRIES else f"  {name}: {e}")
    die(f"download of {url} failed after {RETRIES} tries: {last}")


def refused(status, url, denied=None):
    if status in (401, 403):
        die((denied or "access denied (HTTP {status}) for {url}; if the repo is gated, accept its terms on "
             "the hub and set HF_TOKEN to a read token").format(status=status, url=url))


def fetch_once(requests, url, part, headers, denied):
    """One request; appends to part; returns the response headers once part is complete. A resumed
    request carries If-Range with the ETag of the bytes we hold: a changed file comes back whole (200)."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    etag = open(part + ".etag").read() if have and os.path.exists(part + ".etag") else None
    h = {"Accept-Encoding": "identity", **headers}  # sizes must be the file's own bytes
    if have and etag:
        h.update({"Range": f"bytes={have}-", "If-Range": etag})
    elif have:  # bytes of unknown version: start over
        have = 0
    with requests.get(url, headers=h, stream=True, timeout=TIMEOUT_S) as r:
        refused(r.status_code, url, denied)
        if r.status_code == 416 and have:  # nothing after what we hold: the .part is whole
            return {}
        if r.status_code == 429 or r.status_code >= 500:
            raise IOError(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            die(f"download of {url} failed: HTTP {r.status_code}")
        if r.status_code == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
            if not have or not m or int(m.group(1)) != have:  # not the bytes we asked for: start over
                os.remove(part)
                raise IOError(f"asked for the bytes from {have}, got Content-Range {r.headers.get('Content-Range')!r}")
            total = None if m.group(3) == "*" else int(m.group(3))
        else:
            have = 0
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            if r.headers.get("ETag"):  # what a resume will ask If-Range about
                atomic_write_text(part + ".etag", r.headers["ETag"])
            elif os.path.exists(part + ".etag"):
                os.remove(part + ".etag")
        got = stream_to(r, part, have)
    if total is not None and got != total:
        raise IOError(f"got {got:,} of {total:,} bytes")
    return r.headers


def stream_to(r, part, have):
    """Append the response body to part; returns the size part reaches. A progress line every ~10 s."""
    got, t0, t_print = have, time.time(), time.time()
    with open(part, "ab" if have else "wb") as f:
        for block in r.raw.stream(1 << 16, decode_content=False):
            f.write(block)
            got += len(block)
            if time.time() - t_print > 10:
                t_print = time.time()
                rate = (got - have) / 1e6 / (t_print - t0)
                print(f"  {os.path.basename(part)[:-5]}: {got / 1e6:,.1f} MB, {rate:.1f} MB/s")
    return got


# -----------------------------------------------------------------------------
# the hub: a dataset's commit, its file list (tree API) at that commit, and its files


def hub_revision(data_dir, repo, kind="datasets", pins=None):
    """The commit to read: PINNED's full sha; for a pin given as an abbreviated sha (as the hub's pages
    show commits; the hub resolves prefixes) or no pin (`main`), the full sha the hub resolves it to at
    the first download, checked against the pin, recorded in <data_dir>/raw/hf/<repo>/REVISION and reused.
    kind: the hub's name for the repo's kind, "datasets" or "models" (the authors' tokenizer). pins: the
    table of pins to read ({repo: (sha or None, date)}), PINNED by default (authors.py has its own: the
    base model's weights are not read at its tokenizer's commit)."""
    pin = (PINNED if pins is None else pins).get(repo, (None, None))[0]
    if pin and len(pin) == 40:
        return pin
    rec = os.path.join(data_dir, "raw", "hf", repo, "REVISION")
    if os.path.exists(rec):
        try:  # a file on disk: anything but a full sha (a folder, binary, a path) is damaged, never used
            check_regular(rec)
            with open(rec, encoding="ascii") as f:
                sha = f.read(100).strip()
        except (OSError, UnicodeDecodeError):
            sha = None
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40}", sha)):
            die(f"{rec} is damaged (not a commit sha); delete it and run again")
    else:
        info = _read_json_or_none(download(f"{HF}/api/{kind}/{repo}/revision/{pin or 'main'}", rec + ".json",
                                           "json", hub_headers()))  # (None: cut short or edited on disk)
        sha = info.get("sha") if info else None
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40}", sha)):
            die(f"the hub's answer for {repo} holds no commit sha; delete {rec}.json and run again")
        kept = os.path.join(data_dir, "raw", "hf", repo, sha, "info.json")  # the hub's answer at that commit
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        os.replace(rec + ".json", kept)
        if not pin or sha.startswith(pin):
            atomic_write_text(rec, sha + "\n")
            print(f"  {repo}: " + (f"pinned commit {pin} is {sha} (recorded in {rec})" if pin else
                                   f"not pinned; using its current commit {sha} from now on (recorded in {rec})"))
    if pin and not sha.startswith(pin):
        die(f"{repo}: the commit {sha} (from the hub, or recorded in {rec}) is not the pinned {pin}; "
            f"delete {rec} if it is stale, or pin the commit you mean")
    return sha


def hub_headers():
    token = os.environ.get("HF_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def hub_parquet_files(data_dir, repo, split):
    """Paths of a dataset's parquet files of one split (names as the datasets library matches them:
    `<split>-*.parquet`, `<split>/...`) at its pinned commit, in name order."""
    tree = hub_tree(data_dir, repo, hub_revision(data_dir, repo))
    files = sorted(f["path"] for f in tree if isinstance(f, dict) and f.get("type") == "file"
                   and f.get("path", "").endswith(".parquet"))
    return [p for p in files if any(os.path.basename(p).startswith(name + "-") or name in p.split("/")[:-1]
                                    for name in HF_SPLITS[split])]


def hub_tree(data_dir, repo, sha):
    """Every entry of the dataset at the commit (tree API, all its pages: the hub pages long listings
    with `Link: rel="next"`), kept beside the downloads so that later runs ask nothing."""
    path = os.path.join(data_dir, "raw", "hf", repo, sha, "tree.json")
    if not os.path.exists(path):
        url, entries, page = f"{HF}/api/datasets/{repo}/tree/{sha}?recursive=true", [], 0
        while url:
            page_path, nxt = f"{path}.page{page}", []
            if os.path.exists(page_path):  # a page left by an interrupted run: its next link is unknown
                os.remove(page_path)
            got = read_json(download(url, page_path, "json", hub_headers(), next_page=nxt))
            if not isinstance(got, list):
                die(f"the hub's file list of {repo} is not a list; delete {os.path.dirname(path)} and run again")
            entries += got
            os.remove(page_path)
            url, page = nxt[0], page + 1
        atomic_write_json(path, entries)
    try:
        entries = read_json(path)
    except (OSError, ValueError):  # cut short or edited on disk since
        entries = None
    if not isinstance(entries, list):
        die(f"{path} is damaged (not the hub's JSON list of files); delete it and run again")
    return entries


def hub_file(data_dir, repo, path, kind="parquet", repo_type="datasets", sha=None):
    """A file of a hub repo at commit sha (None: hub_revision's), fetched once into
    <data_dir>/raw/hf/<repo>/<sha>/<path> and checked as `kind` (download)."""
    sha = sha or hub_revision(data_dir, repo, repo_type)
    where = "datasets/" if repo_type == "datasets" else ""  # a model repo's files: no /models/ in the path
    return download(f"{HF}/{where}{repo}/resolve/{sha}/{path}", os.path.join(data_dir, "raw", "hf", repo, sha, path),
                    kind, hub_headers())


# -----------------------------------------------------------------------------
# a look before the downloads: a parquet file's footer (its row groups, their sizes, each column's min and max per
# row group) and a few column chunks, read from the hub by HTTP Range requests. nilq/baby-python's `type` values
# are checked so before its ~600 MB are fetched, and --dry_run describes a whole run so.


class NoRanges(Exception):
    """The hub answered a Range request with something other than the part asked for (HTTP 206)."""


def fetch_range(url, start, end):
    """Bytes [start, end) of a file of the hub: one Range request, retried as downloads are."""
    requests = _requests()

    def once():
        h = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}", **hub_headers()}
        with requests.get(url, headers=h, stream=True, timeout=TIMEOUT_S) as r:
            refused(r.status_code, url)
            if r.status_code == 429 or r.status_code >= 500:
                raise IOError(f"HTTP {r.status_code}")
            if r.status_code != 206:  # a 200 would bring the whole file: closed unread
                raise NoRanges(f"HTTP {r.status_code} to a Range request for {url}")
            m = re.match(r"bytes (\d+)-(\d+)/", r.headers.get("Content-Range", ""))
            if not m or (int(m.group(1)), int(m.group(2))) != (start, end - 1):
                raise IOError(f"asked for bytes {start}-{end - 1}, got Content-Range "
                              f"{r.headers.get('Content-Range')!r}")
            body = r.content
        if len(body) != end - start:
            raise IOError(f"got {len(body):,} of {end - start:,} bytes")
        return body
    return retried(url, os.path.basename(url), once)


class HubRange(io.RawIOBase):
    """A file of the hub as a seekable, read-only file for pyarrow: a read fetches the bytes asked for (at least
    `block` of them, so that a footer comes in one or two requests) by fetch_range, and keeps them."""

    def __init__(self, url, size, block=1 << 16):
        super().__init__()
        self.url, self.size, self.block, self.pos, self.held = url, size, block, 0, []  # held: (offset, bytes)
        self.fetched, self.requests = 0, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=os.SEEK_SET):
        self.pos = (offset, self.pos + offset, self.size + offset)[whence]
        return self.pos

    def readinto(self, buf):
        lo = self.pos
        hi = max(lo, min(lo + len(buf), self.size))
        if hi == lo:
            return 0
        got = next((b[lo - at:hi - at] for at, b in self.held if at <= lo and hi <= at + len(b)), None)
        if got is None:
            got = fetch_range(self.url, lo, min(self.size, max(hi, lo + self.block)))
            self.held.append((lo, got))
            self.fetched, self.requests = self.fetched + len(got), self.requests + 1
            got = got[:hi - lo]
        buf[:hi - lo] = got
        self.pos = hi
        return hi - lo


def hub_parquet(data_dir, repo, path):
    """(pyarrow ParquetFile, size, HubRange or None) of a dataset's parquet file at its commit: the downloaded copy
    when there is one, else the hub's, of which only what pyarrow reads travels (Range requests)."""
    pq = import_pyarrow()
    sha = hub_revision(data_dir, repo)
    local = os.path.join(data_dir, "raw", "hf", repo, sha, path)
    if os.path.exists(local):
        return pq.ParquetFile(local), os.path.getsize(local), None
    entry = next((f for f in hub_tree(data_dir, repo, sha) if isinstance(f, dict) and f.get("path") == path), {})
    size = (entry.get("lfs") or {}).get("size") or entry.get("size")
    if not isinstance(size, int):
        die(f"the hub's file list of {repo} gives no size for {path}; delete {os.path.dirname(local)} and run again")
    remote = HubRange(f"{HF}/datasets/{repo}/resolve/{sha}/{path}", size)
    try:
        return pq.ParquetFile(remote), size, remote
    except NoRanges:
        raise
    except Exception as e:  # pyarrow raises several types for a damaged footer
        die(f"{repo}/{path} at {sha} has no readable parquet footer ({e}); pin a commit in data.py's PINNED")


def has_columns(pf, want, repo, path):
    missing = [c for c in want if c not in pf.schema_arrow.names]
    if missing:
        die(f"{repo}/{path} has no column {', '.join(missing)} (it has {', '.join(pf.schema_arrow.names)}); "
            f"the dataset changed: pin the commit in data.py's PINNED")


def file_types(pf, repo, path):
    """{`type` value: its rows in the file's first row group}, plus every value the footer names as a row group's
    min or max (0 rows when only there). Rows in stored order keep a type together, so the footer names them all;
    shuffled rows mix them, so the first row group holds them all: either way a value that goes to python shows."""
    has_columns(pf, ["type"], repo, path)
    md = pf.metadata
    col = [md.schema.column(j).path for j in range(md.num_columns)].index("type")
    seen = Counter()
    for r in range(md.num_row_groups):
        st = md.row_group(r).column(col).statistics
        if st is not None and st.has_min_max:
            seen.update({str(st.min): 0, str(st.max): 0})
    if md.num_row_groups:
        seen.update(str(v) for v in pf.read_row_group(0, columns=["type"]).column(0).to_pylist() if v is not None)
    return seen


def no_python(repo, seen):
    """Stop when none of the `type` values seen goes to python: the run would download everything and then find no
    Python rows (type_domain's rule is a guess made offline: the values were not known where it was written)."""
    if seen and not any(type_domain(v) == "python" for v in seen):
        die(f"{repo}: none of its `type` values {sorted(seen)} (its train files' footers and first row groups) goes "
            f"to python; data.type_domain maps them to domains: adapt it, or pin the commit it was written for")


_TYPES_CHECKED = set()  # (data_dir, repo): checked once a process


def check_types(data_dir, repo):
    """Before any of the dataset is downloaded: does one of its `type` values go to python? (footers and first row
    groups by Range requests: a few MB, where reading the rows takes ~600 MB of downloads first)."""
    sha = hub_revision(data_dir, repo)
    paths = hub_parquet_files(data_dir, repo, "train")
    if (data_dir, repo) in _TYPES_CHECKED or all(os.path.exists(os.path.join(data_dir, "raw", "hf", repo, sha, p))
                                                  for p in paths):
        return  # downloaded: hf_docs sees the values as it reads
    seen = Counter()
    try:
        for path in paths:
            seen.update(file_types(hub_parquet(data_dir, repo, path)[0], repo, path))
    except NoRanges as e:
        print(f"  {repo}: the hub gave no part of a file ({e}); its `type` values are checked as it is read")
        return
    no_python(repo, seen)
    _TYPES_CHECKED.add((data_dir, repo))


# -----------------------------------------------------------------------------
# sources: the documents of one domain and split, one at a time, in a fixed order (several passes
# over a source see the same documents: counting words, training the tokenizer, encoding)


def iter_docs(cfg, domain, split):
    src = cfg["source"]
    if src == "sample":
        yield from sample_split(domain, cfg["sample_kb"], cfg["val_frac"], cfg["seed"])[split]
    elif src.startswith("local:"):
        yield from local_file_docs(local_path(src[len("local:"):], domain, split))
    else:
        yield from hf_docs(cfg, domain, split)


def source_info(cfg, domain):
    """What meta.json says about where a domain's text came from."""
    src = cfg["source"]
    if src == "sample":
        return sample_split(domain, cfg["sample_kb"], cfg["val_frac"], cfg["seed"])["info"]
    if src.startswith("local:"):
        return {"dir": os.path.abspath(src[len("local:"):])}
    repo = HF_DATA[domain][0]
    return {"upstream": repo, "revision": hub_revision(cfg["data_dir"], repo), "pinned": PINNED[repo][0] is not None}


_SAMPLE = {}


def sample_split(domain, sample_kb, val_frac, seed):
    """The built-in sample of a domain (small by design: kept in memory, made once per process)."""
    key = (domain, sample_kb, val_frac, seed)
    if key not in _SAMPLE:
        tr, va, info = sample_corpus.sample_docs(domain, sample_kb, val_frac, seed)
        _SAMPLE[key] = {"train": tr, "val": va, "info": info}
    return _SAMPLE[key]


def local_path(folder, domain, split):
    names = ("train.txt",) if split == "train" else ("valid.txt", "val.txt")
    for n in names:
        if os.path.exists(os.path.join(folder, domain, n)):
            return os.path.join(folder, domain, n)
    die(f"no {os.path.join(folder, domain, names[0])} (local:DIR wants DIR/<domain>/train.txt and valid.txt)")


def text_blocks(path, block=1 << 20):
    """(text, last) for each block of a UTF-8 file, newlines as text mode reads them; a byte that is not
    UTF-8 -> one line naming its offset (a folder or a pipe in the file's place: OSError, as open's)."""
    import codecs
    import io
    dec = codecs.getincrementaldecoder("utf-8")()
    text_dec = io.IncrementalNewlineDecoder(dec, translate=True)
    pos = 0
    check_regular(path)  # (a pipe's open would wait for a writer)
    with open(path, "rb") as f:
        while True:
            raw = f.read(block)
            held = len(dec.getstate()[0])  # bytes of a character cut by the previous block
            try:
                text = text_dec.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                byte = e.object[e.start] if e.start < len(e.object) else 0
                die(f"{path} is not UTF-8: byte 0x{byte:02x} at offset {pos - held + e.start:,} ({e.reason}); "
                    f"convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")
            pos += len(raw)
            yield text, not raw
            if not raw:
                return


def check_utf8(path, block=1 << 24):
    """text_blocks' check before anything is made (a tokenizer trained, a domain's files replaced)."""
    for _ in text_blocks(path, block):
        pass


def local_file_docs(path, block=1 << 20):
    """Documents of a file in the corpora format (each followed by a line `<|endoftext|>`), read in
    blocks (text_blocks)."""
    doc, rest = [], ""
    for text, last in text_blocks(path, block):
        lines = (rest + text).split("\n")
        rest = lines.pop() if not last else ""
        for line in lines:
            if line == EOT:
                yield from _finished(doc)
                doc = []
            else:
                doc.append(line)
    yield from _finished(doc)


def _finished(lines):
    text = "\n".join(lines).strip("\n")
    if text.strip():
        yield text


def hf_docs(cfg, domain, split):
    """Rows of the domain's dataset at its pinned commit, read a row group at a time (pyarrow); BabyLM's
    (one line each) joined into runs of group_kb KB; at most max_mb MB of text (val: max_mb x val_frac).
    A dataset without a val split is split by hash (of the documents: after the grouping)."""
    repo = HF_DATA[domain][0]
    own = bool(hub_parquet_files(cfg["data_dir"], repo, "val"))
    limit = cfg["max_mb"] * 1e6 * (1 if split == "train" else cfg["val_frac"])
    size, kinds = 0, set()
    rows = parquet_rows(cfg["data_dir"], domain, split if own else "train")
    if domain == "babylm" and cfg["group_kb"]:
        rows = grouped_rows(rows, cfg["group_kb"] * 1e3)
    for text, kind in rows:
        if len(kinds) < 20:
            kinds.add(kind)
        if not text or not text.strip() or (kind is not None and type_domain(kind) != domain):
            continue
        if not own and (hash_frac(text) < cfg["val_frac"]) != (split == "val"):
            continue
        yield text
        size += len(text.encode("utf-8"))
        if limit and size >= limit:
            return
    if not size and kinds - {None}:  # the `type` values are not the ones type_domain knows
        die(f"{repo}: no {split} rows for {domain} among the `type` values {sorted(map(str, kinds - {None}))}; "
            f"data.type_domain maps them to domains: adapt it, or pin the commit it was written for")


def parquet_rows(data_dir, domain, split):
    """(text, type or None) of every row of the domain's dataset's parquet files of a split, in order."""
    pq = import_pyarrow()
    repo, column = HF_DATA[domain]
    paths = hub_parquet_files(data_dir, repo, split)
    if not paths:
        die(f"{repo} at commit {hub_revision(data_dir, repo)} has no parquet files of its {split} split "
            f"(see {os.path.join(data_dir, 'raw', 'hf', repo)}); pin a commit that has them in data.py's PINNED")
    want = [column] + (["type"] if repo == "nilq/baby-python" else [])
    if "type" in want:
        check_types(data_dir, repo)
    for path in paths:
        pf = pq.ParquetFile(hub_file(data_dir, repo, path))
        has_columns(pf, want, repo, path)
        for rows in pf.iter_batches(batch_size=1024, columns=want):  # a bounded batch of rows at a time
            texts = rows.column(0).to_pylist()
            yield from zip(texts, rows.column(1).to_pylist() if len(want) > 1 else [None] * len(texts))


def type_domain(kind):
    """nilq/baby-python's `type` column -> our domain."""
    return "python" if "python" in str(kind).lower() else "babylm"


def grouped_rows(rows, bound):
    """(text, type) rows, each run of consecutive BabyLM rows of one `type` joined by newlines into documents of
    up to `bound` bytes (a longer row is a document alone); blank rows are left out, other rows pass unchanged.
    A BabyLM row of nilq/baby-python is one line (~9 words): the authors tokenized the rows in stored order and
    cut blocks from that stream, so their windows held running text, not lines the base mix's shuffle brought
    together."""
    lines, size, run = [], 0, None
    for text, kind in rows:
        if type_domain(kind) != "babylm":
            if lines:
                yield "\n".join(lines), run
                lines, size = [], 0
            yield text, kind
            continue
        if not text or not text.strip():
            continue
        n = len(text.encode("utf-8"))
        if lines and (kind != run or size + 1 + n > bound):
            yield "\n".join(lines), run
            lines, size = [], 0
        lines.append(text)
        size, run = size + n + (len(lines) > 1), kind
    if lines:
        yield "\n".join(lines), run


# -----------------------------------------------------------------------------
# the base mix: all of the side with fewer words plus a seeded random selection of the other with
# as many, shuffled. Planned from per-document word counts; its tokens are copied from the babylm
# and python token files (nothing is encoded twice, no text is held).


def doc_counts(cfg, domain, split, memo):
    """(words, bytes) of every document of a domain and split, as uint32 arrays (one streaming pass)."""
    if (domain, split) not in memo:
        words, size = array.array("I"), array.array("I")  # 4 bytes each a document (C unsigned int), not Python ints
        for d in iter_docs(cfg, domain, split):
            words.append(len(d.split()))
            size.append(len(d.encode("utf-8")))
        if not words:
            die(f"{domain}: no {split} documents from source {cfg['source']}")
        memo[(domain, split)] = (np.frombuffer(words, dtype=np.uint32), np.frombuffer(size, dtype=np.uint32))
    return memo[(domain, split)]


def mix_plan(words_bab, words_py, seed, split, match=True):
    """The base mix: (domains, indices), int arrays naming each document in the mix's order (domain
    0 babylm, 1 python), and the word shares. Python's `random` drives the choice and the order.
    match: the side with more words is cut to the other's count (two corpora made into the paper's
    mix); False: both kept whole (nilq/baby-python is that mix already, matched by its authors)."""
    wb, wp = int(words_bab.sum()), int(words_py.sum())
    small, big = ("python", "babylm") if wb >= wp else ("babylm", "python")
    big_words = words_bab if big == "babylm" else words_py
    n_small = len(words_py) if small == "python" else len(words_bab)
    rng, target = random.Random(f"{seed}-base-{split}"), min(wb, wp)
    # the big side in the order of rng.sample(range(n), n), drawn the same way (Python's sample with k = n is
    # a shuffle read backwards, and one draw more, randbelow(1)), in an int64 array instead of lists of ints
    perm = array.array("q", range(len(big_words)))
    rng.shuffle(perm)
    if len(perm):
        rng.randrange(1)
    perm = np.frombuffer(perm, dtype=np.int64)[::-1]
    # its documents in that order while the words taken so far are fewer than the small side's
    taken = np.cumsum(big_words[perm], dtype=np.int64)
    n_pick = int(np.searchsorted(taken - big_words[perm], target, side="left")) if match else len(perm)
    picked, w = perm[:n_pick], int(taken[n_pick - 1]) if n_pick else 0
    code = {"babylm": 0, "python": 1}
    doms = np.concatenate([np.full(n_small, code[small], dtype=np.int8), np.full(n_pick, code[big], dtype=np.int8)])
    idx = np.concatenate([np.arange(n_small, dtype=np.int64), picked])
    order = array.array("q", range(len(idx)))  # 8 bytes a document, not a list of Python ints
    rng.shuffle(order)  # the same permutation as shuffling the documents themselves
    order = np.frombuffer(order, dtype=np.int64)
    share = {"babylm_words": min(wb, wp) if big == "python" else w,
             "python_words": min(wb, wp) if big == "babylm" else w, "cut": big if match else None,
             "cut_kept_docs": f"{n_pick}/{len(big_words)}"}
    tot = share["babylm_words"] + share["python_words"]
    print(f"  base {split}: babylm {share['babylm_words']:,} words ({share['babylm_words'] / max(tot, 1):.1%}), "
          f"python {share['python_words']:,} ({share['python_words'] / max(tot, 1):.1%}); "
          + (f"{big} cut to {n_pick}/{len(big_words)} documents" if match else "both whole (the dataset's mix)"))
    return (doms[order], idx[order]), share


MIX_SIDES = ("babylm", "python")  # domain codes of mix_plan


def base_plan(cfg, split, memo):
    key = ("base-plan", split)
    if key not in memo:
        memo[key] = mix_plan(doc_counts(cfg, "babylm", split, memo)[0], doc_counts(cfg, "python", split, memo)[0],
                             cfg["seed"], split, match=cfg["source"] != "hf")
    return memo[key]


def base_train_docs(cfg, memo, sample_frac=1.0):
    """The base mix train split's documents (order: babylm's, then python's), or a hash-chosen share."""
    doms, idx = base_plan(cfg, "train", memo)[0]
    for code, dom in enumerate(MIX_SIDES):
        chosen = np.zeros(len(doc_counts(cfg, dom, "train", memo)[0]), dtype=bool)
        chosen[idx[doms == code]] = True
        for i, d in enumerate(iter_docs(cfg, dom, "train")):
            if chosen[i] and (sample_frac >= 1 or hash_frac(d) < sample_frac):
                yield d


def sample_corpus_text(**overrides):
    """The built-in sample's base mix train split as one string (for benchmarks of the trainer)."""
    return "\n".join(base_train_docs(dict(config, source="sample", **overrides), {}))


def settings_of(domain, cfg):
    """What a domain's text depends on: equal settings (and tokenizer) mean the outputs are current."""
    s = {"source": cfg["source"], "val_frac": cfg["val_frac"]}
    if domain == "base":
        s["seed"] = cfg["seed"]
    if cfg["source"] == "sample":
        s.update(sample_kb=cfg["sample_kb"], seed=cfg["seed"], python=platform.python_version())
    elif cfg["source"] == "hf":
        repos = sorted({HF_DATA[d][0] for d in (("babylm", "python") if domain == "base" else (domain,))})
        s.update(max_mb=cfg["max_mb"], revisions={r: hub_revision(cfg["data_dir"], r) for r in repos})
        if domain in ("babylm", "base"):
            s["group_kb"] = cfg["group_kb"]
        if domain == "base":  # both sides whole: nilq/baby-python is the authors' mix (mix_plan)
            s["mix"] = "whole"
    elif cfg["source"].startswith("local:"):
        folder, parts = cfg["source"][len("local:"):], ("babylm", "python") if domain == "base" else (domain,)
        try:
            s["files"] = {f"{p}/{n}": sha256_file(os.path.join(folder, p, n)) for p in parts
                          for n in ("train.txt", "valid.txt", "val.txt") if os.path.exists(os.path.join(folder, p, n))}
        except OSError as e:
            not_a_text_file(cfg["source"], e)
    return s


def not_a_text_file(source, e):
    """One line for an OSError met reading a local corpus file: a folder, a pipe or an unreadable file where a
    text file belongs."""
    die(f"--source {source}: {e.filename or source} cannot be read as a text file ({e.strerror}); "
        f"each domain needs <domain>/train.txt and valid.txt, plain files")


# -----------------------------------------------------------------------------
# the BPE trainer


def train_bpe(texts, vocab_size, pattern=RE_PATTERN, log=print):
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


def build_tokenizer(cfg, memo, spec):
    tdir = _tok_dir(cfg["data_dir"])
    t0 = time.time()
    if cfg["tokenizer"] == "gpt2":
        try:
            gpt2 = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken fetches its files on first use
            die(f"--tokenizer gpt2: tiktoken could not load GPT-2's ranks (network needed the first time): {e}")
        ranks, pattern, trained, mb = gpt2._mergeable_ranks, gpt2._pat_str, "OpenAI GPT-2 (tiktoken)", 0.0
    else:
        ranks, trained, mb = bpe_on_base(cfg, memo)
        pattern = PATTERN
    secs, n = time.time() - t0, len(ranks)
    rank_file = "".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in sorted(ranks.items(), key=lambda kv: kv[1]))
    info = {"name": f"{cfg['tokenizer']}{n + 1}", "vocab_size": n + 1, "n_ranks": n, "pattern": pattern,
            "special_tokens": {EOT: n}, "trained_on": trained, "spec": spec, "train_seconds": round(secs, 2)}
    info["hash"] = _hash(rank_file.encode(), pattern, info["special_tokens"])
    if cfg["tokenizer"] == "bpe":
        info["train_mb_per_s"] = round(mb / max(secs, 1e-9), 3)
        print(f"tokenizer: {n + 1} tokens in {secs:.1f} s ({info['train_mb_per_s']:.2f} MB/s), hash {info['hash']}")
    info["provenance"] = provenance(cfg)
    atomic_write_text(os.path.join(tdir, "bpe.tiktoken"), rank_file)
    atomic_write_json(os.path.join(tdir, "tokenizer.json"), info)


def bpe_on_base(cfg, memo):
    """Train the BPE on the base mix train split (streamed), or on a hash-chosen share of about
    bpe_mb MB of it: the trainer's memory grows with the distinct chunks of the text it sees."""
    doms, idx = base_plan(cfg, "train", memo)[0]
    total = sum(int(doc_counts(cfg, d, "train", memo)[1][idx[doms == code]].sum()) for code, d in enumerate(MIX_SIDES))
    frac = min(1.0, cfg["bpe_mb"] * 1e6 / total) if cfg["bpe_mb"] > 0 else 1.0
    mb, what = total / 1e6, "the base mix train split"
    if frac < 1:
        what = f"a hash-chosen {frac:.1%} of the base mix train split (--bpe_mb {cfg['bpe_mb']:g} of {mb:.0f} MB)"
        mb *= frac
    print(f"training a {cfg['vocab_size']}-token byte-level BPE on {what} ({mb:.1f} MB)")
    ranks = train_bpe(base_train_docs(cfg, memo, frac), cfg["vocab_size"])
    trained = (f"base mix train split, {len(idx):,} documents, {total / 1e6:.2f} MB, source {cfg['source']}"
               + (f"; a {frac:.2%} sample by document hash" if frac < 1 else ""))
    return ranks, trained, mb


def authors_tokenizer(cfg, spec):
    """The authors' tokenizer: their base model's tokenizer.json at the pinned commit, kept byte for byte as
    <data_dir>/tokenizer/authors.json (it decides the ids), with our record tokenizer.json beside it."""
    repo, sha, name = spec["repo"], spec["sha"], spec["file"]
    src = hub_file(cfg["data_dir"], repo, name, "json", "models", sha)
    with open(src, "rb") as f:
        raw = f.read()
    try:
        tok = import_tokenizers().Tokenizer.from_str(raw.decode("utf-8"))
        problem = None if tok.token_to_id(AUTHORS_BOS) is not None else f"no token {AUTHORS_BOS}"
    except Exception as e:  # JSON, but not a tokenizer: the Rust library raises a plain Exception
        problem = " ".join(str(e).split())
    if problem:
        os.remove(src)  # as check_download does: a bad file is never kept as if done
        die(f"{src} (from {repo} at {sha}) is not a tokenizer the tokenizers package reads ({problem}); deleted it. "
            f"Check the URL and data.py's PINNED[{repo!r}], then run again")
    n = tok.get_vocab_size(with_added_tokens=True)
    info = {"name": "authors", "format": "tokenizers", "vocab_size": n, "bos": AUTHORS_BOS,
            "bos_id": tok.token_to_id(AUTHORS_BOS), "documents": f"each starts with {AUTHORS_BOS}, as the authors' did",
            "special_tokens": {t.content: i for i, t in sorted(tok.get_added_tokens_decoder().items()) if t.special},
            "hub": {"repo": repo, "sha": sha, "file": name, "pinned": PINNED[repo][0] is not None},
            "spec": spec, "hash": sha256_bytes(raw), "provenance": provenance(cfg)}
    tdir = _tok_dir(cfg["data_dir"])
    atomic_write_bytes(os.path.join(tdir, TOK_FORMATS["tokenizers"][0]), raw)  # first: the record vouches for it
    atomic_write_json(os.path.join(tdir, "tokenizer.json"), info)
    print(f"tokenizer: the authors' {n:,} tokens ({repo} at {sha}), hash {info['hash']}")


def ensure_tokenizer(cfg, memo):
    """The tokenizer belongs to the base mix: (re)train it when missing, damaged or made from other settings.
    The authors' one is fetched instead (when missing, damaged or of another commit)."""
    spec = {"tokenizer": cfg["tokenizer"]}
    if cfg["tokenizer"] == "bpe":
        spec.update(vocab_size=cfg["vocab_size"], pattern=PATTERN, base=settings_of("base", cfg))
        if cfg["bpe_mb"] > 0:
            spec["bpe_mb"] = cfg["bpe_mb"]
    elif cfg["tokenizer"] == "authors":
        spec.update(repo=AUTHORS_REPO, sha=hub_revision(cfg["data_dir"], AUTHORS_REPO, "models"), file=AUTHORS_FILE)
    tdir = _tok_dir(cfg["data_dir"])
    old = _read_json_or_none(os.path.join(tdir, "tokenizer.json"), ("spec", "hash"))
    old = old if old is not None and _tok_record_ok(old) else None  # of the wrong shape: damaged
    if old is not None and old["spec"] == spec and _ids_hash(tdir, old) == old["hash"] and _counts_fit(tdir, old):
        return
    redo = "fetching the tokenizer again" if cfg["tokenizer"] == "authors" else "retraining the tokenizer"
    if old is not None:
        print(f"the tokenizer in {tdir} was made with other settings, or a file of it is missing or changed; {redo} "
              "(domains encoded with the old one are re-encoded when next prepared)")
    elif os.path.exists(os.path.join(tdir, "tokenizer.json")):
        print(f"{tdir}/tokenizer.json is damaged; {redo}")
    if cfg["tokenizer"] == "authors":
        authors_tokenizer(cfg, spec)
    else:
        build_tokenizer(cfg, memo, spec)


# -----------------------------------------------------------------------------
# encoding a domain: documents -> token ids, each document followed by EOT (or, with the authors'
# tokenizer, preceded by <s>: doc_sep), streamed to the file


def encode_split(enc, docs, path, dtype, threads, what):
    """Encode documents into path, chunk by chunk (batched) on `threads` threads, in order; ids go from the
    tokenizer into numpy arrays, never a Python int each. Held at once: at most 2 x threads + 1 chunks of
    ~1 MB of text and their ids (a document longer than that is a chunk of its own), whatever the corpus.
    Returns {documents, bytes, words, tokens}."""
    (sep, first), st = doc_sep(enc), {"documents": 0, "bytes": 0, "words": 0, "tokens": 0}
    to_numpy = getattr(enc, "encode_to_numpy", None)  # tiktoken: ids straight into a uint32 array
    sep_ids = np.array([sep], dtype=dtype)

    def encode(chunk):  # (n,) ids of a chunk's documents, each with its separator
        if to_numpy and not first and not any(EOT in d for d in chunk):
            # one call for the chunk: the special token between documents cuts the text there, and each piece
            # is pre-tokenised and merged on its own, so these are the ids of each document alone + EOT's id
            return to_numpy(EOT.join(chunk) + EOT, allowed_special={EOT}, disallowed_special=()).astype(dtype)
        # a document holding the text <|endoftext|> (kept as text: encode_ordinary), or a tokenizer without
        # encode_to_numpy (the authors': a list per document, each made an array at once)
        each = [to_numpy(d, disallowed_special=()) for d in chunk] if to_numpy else \
            enc.encode_ordinary_batch(chunk, num_threads=threads)
        each = [np.asarray(ids, dtype=dtype) for ids in each]
        return np.concatenate([a for ids in each for a in ((sep_ids, ids) if first else (ids, sep_ids))])

    def write(f):
        ahead = deque()  # (documents, bytes, words, the future ids) of the chunks in flight, oldest first

        def drain(keep):
            while len(ahead) > keep:
                n_doc, n_b, n_w, job = ahead.popleft()
                ids = job.result()
                f.write(ids.tobytes())
                st["documents"] += n_doc
                st["bytes"] += n_b
                st["words"] += n_w
                st["tokens"] += len(ids)
        with ThreadPoolExecutor(threads) as pool:
            for chunk in batched(docs):
                ahead.append((len(chunk), n_bytes(chunk), n_words(chunk), pool.submit(encode, chunk)))
                drain(2 * threads)
            drain(0)
        if not st["documents"]:
            die(f"{what}: no documents from this source")
    atomic_write(path, write)
    return st


def doc_spans(tokens, sep, first=False, step=1 << 20):
    """Token offsets (starts, ends) of every document of a token file: each ends with the separator sep
    (EOT), or with first=True starts with it (the authors' <s>): the arguments are doc_sep(enc). Both are
    views of one array of the n + 1 bounds, uint32 while they fit (4 bytes a document); the file is read a
    step at a time."""
    kind = np.uint32 if len(tokens) < 2 ** 32 else np.int64
    # a document runs from its <s> to the next one's, or from the end of the one before to just after its EOT
    bounds = [] if first else [np.zeros(1, dtype=kind)]
    for i in range(0, len(tokens), step):
        bounds.append((np.flatnonzero(np.asarray(tokens[i:i + step]) == sep) + (i if first else i + 1)).astype(kind))
        drop_pages(tokens)
    bounds = np.concatenate(bounds + ([np.full(1, len(tokens), dtype=kind)] if first else []))
    return bounds[:-1], bounds[1:]


def drop_pages(tokens):
    """Unmap from this process the pages of a token file's memmap read so far (they stay in the page cache):
    reading whole files through a map would otherwise add them to its resident memory, which then grows
    with the corpus. Nothing for an array in memory."""
    mm = getattr(tokens, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def assemble_base(cfg, split, memo, enc, dtype):
    """base/<split>.bin: the planned documents' tokens, copied from babylm's and python's token files,
    4096 documents at a time. Held: the plan, the documents' bounds (doc_spans) and one block."""
    (doms, idx), share = base_plan(cfg, split, memo)
    parts = [open_tokens(cfg["data_dir"], d, split) for d in MIX_SIDES]
    spans = [doc_spans(p, *doc_sep(enc)) for p in parts]
    counts = [doc_counts(cfg, d, split, memo) for d in MIX_SIDES]
    if any(len(sp[0]) != len(c[0]) for sp, c in zip(spans, counts)):
        die(f"{cfg['data_dir']}/babylm or python changed while base was built; run data.py again")
    st = {"documents": len(idx), "bytes": sum(int(c[1][idx[doms == k]].sum()) for k, c in enumerate(counts)),
          "words": sum(int(c[0][idx[doms == k]].sum()) for k, c in enumerate(counts)), "tokens": 0}

    def write(f):
        flat = [np.asarray(p) for p in parts]  # plain views: slicing a np.memmap costs more than the copy
        for lo in range(0, len(idx), 4096):
            d, i = doms[lo:lo + 4096], idx[lo:lo + 4096]
            a, b = np.empty(len(d), dtype=np.int64), np.empty(len(d), dtype=np.int64)
            for k, (starts, ends) in enumerate(spans):
                a[d == k], b[d == k] = starts[i[d == k]], ends[i[d == k]]
            block = np.concatenate([flat[k][s:e] for k, s, e in zip(d.tolist(), a.tolist(), b.tolist())]).astype(dtype)
            f.write(block.tobytes())
            st["tokens"] += len(block)
            for p in parts:
                drop_pages(p)
    atomic_write(os.path.join(cfg["data_dir"], "base", f"{split}.bin"), write)
    return st, share


def current_meta(ddir, settings, tok_hash, force):
    """meta.json of a domain whose token files are complete and made from these settings with this
    tokenizer (None: the domain must be (re)built; a damaged meta.json is said so and rebuilt)."""
    mpath = os.path.join(ddir, "meta.json")
    if not os.path.exists(mpath) or force:
        return None
    old = _read_json_or_none(mpath)
    why = meta_problem(old)
    if why:
        print(f"{mpath} is damaged ({why}); rebuilding {os.path.basename(ddir)}")
        return None
    if old.get("domain", os.path.basename(ddir)) != os.path.basename(ddir):  # folders swapped or copied
        print(f"{mpath} is the meta.json of domain '{old['domain']}'; rebuilding {os.path.basename(ddir)}")
        return None
    bins_ok = all(os.path.exists(os.path.join(ddir, f"{s}.bin")) and os.path.getsize(os.path.join(ddir, f"{s}.bin"))
                  == old["splits"][s]["tokens"] * np.dtype(old["dtype"]).itemsize for s in ("train", "val"))
    if old.get("settings") != settings or not bins_ok:
        return None
    if old["tokenizer_hash"] != tok_hash:
        print(f"{ddir}: the tokenizer changed; re-encoding")
        return None
    if any("sha256" not in old["splits"][s] for s in ("train", "val")):  # made before token checksums: add them
        for s in ("train", "val"):
            old["splits"][s]["sha256"], old["splits"][s]["max_id"] = scan_tokens(os.path.join(ddir, f"{s}.bin"),
                                                                                 old["dtype"])
        atomic_write_json(mpath, old)
        print(f"{mpath}: added the token files' checksums (made before data.py wrote them)")
    print(f"{ddir} is up to date ({old['splits']['train']['tokens']:,} train tokens); --force rebuilds it")
    return old


def prepare(domain, cfg, memo, enc, tok_hash):
    """A domain's token files and meta.json (kept when current)."""
    ddir = os.path.join(cfg["data_dir"], domain)
    settings = settings_of(domain, cfg)
    old = current_meta(ddir, settings, tok_hash, cfg["force"])
    if old is not None:
        return old
    dtype = np.uint16 if enc.n_vocab <= 2 ** 16 else np.uint32
    os.makedirs(ddir, exist_ok=True)
    if os.path.exists(os.path.join(ddir, "meta.json")):  # from now on it would describe other files
        os.remove(os.path.join(ddir, "meta.json"))
    splits, info, t0 = {}, {}, time.time()
    for split in ("train", "val"):
        if domain == "base":
            splits[split], info.setdefault("mix", {})[split] = assemble_base(cfg, split, memo, enc, dtype)
        else:
            splits[split] = encode_split(enc, iter_docs(cfg, domain, split), os.path.join(ddir, f"{split}.bin"),
                                         dtype, cfg["threads"], f"{domain} {split}")
        # the checksum open_tokens checks the file against: one pass over the file just written (in the page
        # cache; ~1% of the encoding), one function for both writers, the same as the check's
        splits[split]["sha256"], splits[split]["max_id"] = scan_tokens(os.path.join(ddir, f"{split}.bin"), dtype)
    info.update({"babylm": source_info(cfg, "babylm"), "python": source_info(cfg, "python")} if domain == "base"
                else source_info(cfg, domain))
    secs, (sep, first), tok = time.time() - t0, doc_sep(enc), _tok_info(cfg["data_dir"])
    report_domain(ddir, splits, secs)
    meta = {"domain": domain, "source": cfg["source"], "settings": settings, "splits": splits,
            "dtype": np.dtype(dtype).name, "vocab_size": enc.n_vocab, ("bos_id" if first else "eot_id"): sep,
            "tokenizer": {k: tok[k] for k in ("name", "hub") if k in tok},  # the hub's repo and commit: authors
            "tokenizer_hash": tok_hash, "encode_seconds": round(secs, 2), **info}
    if cfg["source"] == "sample":
        meta["note"] = SAMPLE_NOTE
    meta["provenance"] = provenance(cfg, tokenizer_hash=tok_hash)
    atomic_write_json(os.path.join(ddir, "meta.json"), meta)
    return meta


def report_domain(ddir, splits, secs):
    tr, va = splits["train"], splits["val"]
    mb, ntok = (tr["bytes"] + va["bytes"]) / 1e6, tr["tokens"] + va["tokens"]
    print(f"{ddir}: {tr['documents']:,} + {va['documents']:,} documents, {tr['tokens']:,} train + {va['tokens']:,} val "
          f"tokens ({mb / max(ntok, 1) * 1e6:.2f} bytes/token), {mb / max(secs, 1e-9):.1f} MB/s")


# -----------------------------------------------------------------------------
# main: settings -> source check -> tokenizer -> each domain's token files -> what the run got


def check_source(cfg):
    src = cfg["source"]
    if not (src in ("sample", "hf") or src.startswith("local:")):
        die(f"unknown --source {src!r}; use sample, local:DIR or hf")
    if src.startswith("local:"):
        if not os.path.isdir(src[len("local:"):]):
            die(f"--source {src}: no such directory")
        # each domain's two files before any is read (base is made from babylm and python): a missing one named
        # first, then each checked to be UTF-8, so a rebuild never stops halfway (its tokenizer replaced) on one
        for path in [local_path(src[len("local:"):], d, split) for d in domains_to_prepare(cfg) if d != "base"
                     for split in ("train", "val")]:
            try:
                check_utf8(path)
            except OSError as e:
                not_a_text_file(src, e)
    def same(a, b):  # (local:./c is local:c)
        return a == b or (a.startswith("local:") and b.startswith("local:")
                          and os.path.realpath(a[6:]) == os.path.realpath(b[6:]))
    for d in DOMAINS if not (cfg["force"] or cfg["dry_run"]) else ():  # another source would replace them
        made = (_read_json_or_none(os.path.join(cfg["data_dir"], d, "meta.json"), ("source",)) or {}).get("source")
        if isinstance(made, str) and not same(made, src):
            die(f"{cfg['data_dir']}/{d} was made from --source {made}: this run (--source {src}) would replace it and "
                f"the tokenizer, and the models trained on them would no longer fit; give --source {made}, another "
                f"--data_dir, or --force to replace them")
    if cfg["dry_run"] and src != "hf":
        die(f"--dry_run looks at the hub's datasets before a download: use it with --source hf, not {src}")
    if src == "hf":
        import_pyarrow()
        _requests()
    if src == "sample":
        print(SAMPLE_NOTE)


def room_needed(cfg):
    """Bytes the token files of this run take at most (checked up front): a token per 2 bytes of text at most
    (our BPE averages ~4 bytes a token), 2 bytes a token (4 above 65,536 ids), train and val, every domain
    (base a copy of its two parts). The text: sample_kb per domain; local: the corpus files' sizes; hf: max_mb
    per domain, or with max_mb 0 the paper's expected tokens. The downloads of --source hf come on top
    (--dry_run says their sizes)."""
    per_token = 2 if cfg["vocab_size"] <= 2 ** 16 and cfg["tokenizer"] != "authors" else 4
    n = len(domains_to_prepare(cfg)) + 2  # base repeats babylm and python
    src = cfg["source"]
    if src == "sample":
        text = n * cfg["sample_kb"] * 1e3 * (1 + cfg["val_frac"])
    elif src.startswith("local:"):
        text = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src[len("local:"):]) for f in fs) * 2
    elif cfg["max_mb"]:
        text = n * cfg["max_mb"] * 1e6 * (1 + cfg["val_frac"])
    else:
        return int(2 * sum(EXPECTED_TOKENS["paper"].values()) * (1 + cfg["val_frac"]) * per_token)
    return int(text / 2 * per_token) + (1 << 20)


def domains_to_prepare(cfg):
    """The asked-for domains; base needs babylm's and python's token files (it is copied from them)."""
    asked = DOMAINS if cfg["domain"] == "all" else (cfg["domain"],)
    return [d for d in DOMAINS if d in asked or ("base" in asked and d in ("babylm", "python"))]


def summarize(cfg, metas):
    """The mix and sizes this run got, per domain and split; loud when far below what the preset expects."""
    print(f"{'domain':12s} {'split':5s} {'documents':>11s} {'words':>14s} {'tokens':>14s}")
    for domain, meta in metas.items():
        for split in ("train", "val"):
            s = meta["splits"][split]
            print(f"{domain:12s} {split:5s} {s['documents']:11,} {s['words']:14,} {s['tokens']:14,}")
    for domain, floor in EXPECTED_TOKENS.get(cfg["preset"], {}).items():
        got = metas[domain]["splits"]["train"]["tokens"] if domain in metas else None
        if got is not None and got < floor:
            print(f"WARNING: {domain} has only {got / 1e6:.1f}M train tokens, far below the ~{floor / 1e6:.0f}M+ that "
                  f"--preset {cfg['preset']} expects: this is not the paper's data (source {cfg['source']}"
                  + (f", --max_mb {cfg['max_mb']:g}" if cfg["max_mb"] and cfg["source"] == "hf" else "") + ")")


def first_rows(pf, want, most_mb=16):
    """(text, type or None) rows of a parquet file's first row group, the `want` columns only; None when they are
    over most_mb MB (compressed): a dataset written in one big row group is not read whole to be looked at."""
    md = pf.metadata
    if not md.num_row_groups:
        return []
    cols, rg = [md.schema.column(j).path for j in range(md.num_columns)], md.row_group(0)
    if sum(rg.column(cols.index(c)).total_compressed_size for c in want) > most_mb * 1e6:
        return None
    t = pf.read_row_group(0, columns=want)
    texts = t.column(0).to_pylist()
    return list(zip(texts, t.column(1).to_pylist() if len(want) > 1 else [None] * len(texts)))


def dry_run(cfg):
    """--dry_run: what a run would download and make, told from the hub's file lists, each parquet file's footer
    and first row group (Range requests, the columns read only). No token file is written, no file downloaded
    whole; the hub's answers (commit, file lists) are kept in <data_dir>/raw/hf as a run keeps them."""
    dd, domains = cfg["data_dir"], domains_to_prepare(cfg)
    reads = [d for d in MIX_SIDES + ("tinystories", "lua") if d in domains or (cfg["tokenizer"] == "bpe"
                                                                               and d in MIX_SIDES)]
    print("dry run: the hub's datasets as a run would read them (footers and first row groups, by Range requests)")
    todo, here, fetched, asked = [0, 0], 0, 0, 0
    for repo in dict.fromkeys(HF_DATA[d][0] for d in reads):
        doms = [d for d in reads if HF_DATA[d][0] == repo]
        want = [HF_DATA[doms[0]][1]] + (["type"] if repo == "nilq/baby-python" else [])
        sha = hub_revision(dd, repo)
        print(f"{repo} at {sha}" + ("" if PINNED.get(repo, (None,))[0] else " (not pinned: its main now)")
              + f", for {', '.join(doms)}")
        kinds, firsts = Counter(), []
        for split in ("train", "val"):
            paths = hub_parquet_files(dd, repo, split)
            if not paths:
                print(f"  {split}: no parquet files" + (f"; val is split from train by document hash (--val_frac "
                                                         f"{cfg['val_frac']:g})" if split == "val" else ""))
                continue
            lines, rows, text, size = [], 0, 0, 0
            for path in paths:
                try:
                    pf, n, remote = hub_parquet(dd, repo, path)
                except NoRanges as e:
                    die(f"{repo}: the hub gave no part of {path} ({e}); --dry_run reads footers by Range requests")
                has_columns(pf, want, repo, path)
                md = pf.metadata
                col = [md.schema.column(j).path for j in range(md.num_columns)].index(want[0])
                chars = sum(md.row_group(r).column(col).total_uncompressed_size for r in range(md.num_row_groups))
                chars = max(0, chars - 4 * md.num_rows)  # a stored string: 4 bytes of length, then its bytes
                if split == "train" and "type" in want:
                    kinds.update(file_types(pf, repo, path))
                first = first_rows(pf, want)
                if split == "train" and first:
                    firsts.append(first)
                lines.append(f"    {path}: {n / 1e6:,.1f} MB" + (" (downloaded)" if remote is None else "")
                             + f", {md.num_rows:,} rows in {md.num_row_groups:,} row groups, ~{chars / 1e6:,.1f} MB "
                             + "of text" + ("" if first is not None else " (its first row group: too big to look at)"))
                rows, text, size = rows + md.num_rows, text + chars, size + n
                if remote is None:
                    here += n
                else:
                    todo, fetched, asked = [todo[0] + 1, todo[1] + n], fetched + remote.fetched, asked + remote.requests
            print(f"  {split}: {len(paths)} file{'s' * (len(paths) > 1)}, {size / 1e6:,.1f} MB; {rows:,} rows, "
                  f"~{text / 1e6:,.1f} MB of text")
            print("\n".join(lines))
        if "type" in want:
            print("  `type` values (the train files' footers; rows: in their first row groups): " + ", ".join(
                f"{v!r} ({f'{k:,} rows' if k else 'a footer'}) -> {type_domain(v)}" for v, k in sorted(kinds.items())))
            bab = [t for first in firsts for t, k in first if t and t.strip() and type_domain(k) == "babylm"]
            print("  its first BabyLM rows: " + " | ".join(repr(t[:60]) for t in bab[:3]))
            if cfg["group_kb"] and "babylm" in doms:
                docs = [t for first in firsts for t, k in grouped_rows(first, cfg["group_kb"] * 1e3)
                        if type_domain(k) == "babylm"]
                print(f"  babylm: runs of consecutive rows joined into documents of up to {cfg['group_kb']:g} KB "
                      f"(--group_kb): the first row groups' {len(bab):,} BabyLM rows make {len(docs):,} documents "
                      f"of {n_bytes(docs) / max(len(docs), 1) / 1e3:.1f} KB on average")
            elif "babylm" in doms:
                print("  babylm: --group_kb 0: every row is a document")
            no_python(repo, kinds)
        else:
            print("  a row is a document (blank rows left out)")
    limit = (f"; --max_mb {cfg['max_mb']:g}: at most {cfg['max_mb']:g} MB of text a domain (val "
             f"{cfg['max_mb'] * cfg['val_frac']:g}), the files fetched in order only as far as that takes it"
             if cfg["max_mb"] else "")
    print(f"a run downloads {todo[0]} files, {todo[1] / 1e6:,.1f} MB ({here / 1e6:,.1f} MB here already){limit}")
    tok = {"bpe": f"trains a {cfg['vocab_size']}-token BPE on the base mix train split"
                  + (f" (at most ~{cfg['bpe_mb']:g} MB of it, chosen by document hash)" if cfg["bpe_mb"] else ""),
           "gpt2": "uses GPT-2's tokenizer", "authors": f"fetches the authors' tokenizer ({AUTHORS_REPO})"}
    print(f"then {tok[cfg['tokenizer']]}, and writes {', '.join(domains)} to {dd}/<domain>/{{train,val}}.bin")
    print(f"this look read {fetched / 1e3:,.1f} KB in {asked} Range requests; nothing was downloaded whole or encoded")


def main(argv=None):
    cfg = parse_config(dict(config), argv, presets, default_preset(), checks=checks)
    cfg["threads"] = cfg["threads"] or free_cores()  # not common.set_threads, which imports torch: data.py needs none
    print(f"preset: {cfg['preset']}" + (" (no CUDA here)" if cfg["preset"] == "tiny" else "")
          + f", {cfg['threads']} encoding threads")
    check_source(cfg)
    if cfg["dry_run"]:
        return dry_run(cfg)
    check_free_space(cfg["data_dir"], room_needed(cfg), "data.py's token files")
    if cfg["tokenizer"] == "authors":
        import_tokenizers()  # before any download
    with lock_dir(cfg["data_dir"], "data.py", subfolders=True):  # also removes temp files a killed run left
        memo = {}  # per-document word and byte counts, and the base mix plans, made once per run
        ensure_tokenizer(cfg, memo)
        enc, tok_hash = load_tokenizer(cfg["data_dir"]), tokenizer_hash(cfg["data_dir"])
        # the authors' file decides their vocabulary; a --vocab_size other than the preset's (which cannot
        # be told from one not given) and the file's was meant for something this run will not do
        given = cfg["vocab_size"] != presets[cfg["preset"]]["vocab_size"]
        if cfg["tokenizer"] == "authors" and given and cfg["vocab_size"] != enc.n_vocab:
            die(f"--vocab_size {cfg['vocab_size']} sizes our own BPE; the authors' tokenizer has {enc.n_vocab:,} "
                "tokens (its file decides): drop --vocab_size")
        metas = {d: prepare(d, cfg, memo, enc, tok_hash) for d in domains_to_prepare(cfg)}
    summarize(cfg, metas)
    if cfg["source"] == "sample":
        print("done. Reminder: " + SAMPLE_NOTE)


if __name__ == "__main__":
    cli(main)
