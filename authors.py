"""
The authors' four released models, converted into this project's checkpoints, so that sae.py and
analyze.py can study the very models of the paper instead of our own retrained ones.

    python data.py --source hf --tokenizer authors --data_dir data_authors  # their tokenizer and val tokens first
    python authors.py --data_dir data_authors --out_dir out_authors  # -> out_authors/{base,lua,tinystories,luastories}/
    python authors.py --data_dir data_authors --out_dir out_authors --models lua --overwrite  # lua alone, again

The models (Hugging Face hub, MistralForCausalLM): nilq/baby-python-mistral-1L-tiny-base and its two
fine-tunes -lua-ft and -TinyStories-ft, and nilq/baby-python-1L-mistral-lua-stories-slerp, their
SLERP merge (stored in float16). Each is fetched once, at the commit `main` has at the first download,
recorded and reused (PINNED_MODELS can pin one; none is pinned yet) with data.py's downloader (resumed,
checked before it is kept, one line without network), read without any new dependency (safetensors
is an 8-byte header length, a JSON header and raw bytes; pytorch_model.bin only with
torch.load(weights_only=True)), checked field by field against what model.py builds, and written with
model.save_checkpoint in float32 with the lineage analyze.py checks (lua and tinystories: parent base;
luastories: parents lua and tinystories). In a study of these models, a fix that remakes one names this
script (remake_command, through model.load_model and analyze.py's lineage check), never train.py or merge.py.

Two conventions differ from transformers' Mistral, and the conversion absorbs both:
- RoPE: transformers rotates the two halves of each head (dims i and i + head_dim/2 form a pair),
  model.py's apply_rope interleaved pairs (2i, 2i+1). The rows of q_proj and k_proj are reordered
  per head (rope_rows); q.k is unchanged because q and k move alike. tests/test_authors.py compares
  our logits with transformers' on the same weights: that is the proof.
- tie_word_embeddings: model.py's LM head is untied; a tied checkpoint (none of the authors' four)
  would get a copy of the embedding as its head, the same function.
At the end each model's loss on its own val split is printed beside its model card's eval loss.
"""
import os
import shlex

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common

import numpy as np
import torch

import data
import fast
from common import die
from model import ModelArgs, Transformer, eval_loss, load_checkpoint, load_model, save_checkpoint

config = {
    "data_dir": "data",       # the authors' tokenizer and val tokens (data.py --tokenizer authors); downloads: raw/hf/
    "out_dir": "out",         # writes out_dir/{base,lua,tinystories,luastories}/ckpt.pt
    "block_size": 256,        # context of the converted models: the authors trained at 256 tokens
    "tokenizer_hash": "",     # the authors' tokenizer's hash; "": the tokenizer in data_dir
    "eval_batches": 20,       # card check: val batches per model and domain (0: skip the check)
    "batch_size": 16,         # sequences of block_size tokens per eval batch
    "device": "auto",         # auto: cuda when available, else cpu
    "threads": 0,             # CPU threads; 0: the cores free now (common.set_threads)
    "fast": True,             # fast.py's evaluation: the LM head a cache-sized block of tokens at a time on a CPU
    "overwrite": False,       # replace a checkpoint made otherwise (train.py's, another commit or setting)
    "models": ["base", "lua", "tinystories", "luastories"],  # which to convert (a child needs its parents' converted)
}
# the authors' models are paper-sized whatever the preset: it only scales the card check
PRESETS = {"paper": {}, "tiny": {"eval_batches": 4}}
CHECKS = {"block_size": ">=2", "eval_batches": ">=0", "batch_size": ">=1", "threads": ">=0",
          "models": ("base", "lua", "tinystories", "luastories")}

# our name -> hub repo; the names are the ones sae.py (MODEL_DATA) and analyze.py expect
MODELS = {"base": "nilq/baby-python-mistral-1L-tiny-base",
          "lua": "nilq/baby-python-mistral-1L-tiny-lua-ft",
          "tinystories": "nilq/baby-python-mistral-1L-tiny-TinyStories-ft",
          "luastories": "nilq/baby-python-1L-mistral-lua-stories-slerp"}
# full commit shas to read, as data.PINNED's (sha, date): none, as their shas could not be looked up
# where this was written (no network); the commit `main` has at the first download is then used and
# recorded in <data_dir>/raw/hf/<repo>/REVISION and each checkpoint's provenance. (data.PINNED pins the
# base repo's tokenizer at an early training commit: its weights there are not the final ones.)
PINNED_MODELS = {repo: (None, None) for repo in MODELS.values()}
DOMAIN = {"base": "base", "lua": "lua", "tinystories": "tinystories", "luastories": None}
PARENTS = {"base": [], "lua": ["base"], "tinystories": ["base"], "luastories": ["lua", "tinystories"]}
EVAL_DOMAINS = {"base": ["base"], "lua": ["lua"], "tinystories": ["tinystories"], "luastories": ["lua", "tinystories"]}
CARD_LOSS = {"base": 3.1027, "lua": 2.4518, "tinystories": 2.0442}  # the model cards' eval loss
# the weight files a repo may hold, in the order they are preferred (the merge has an index and one shard)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
MAKE_TOKENIZER = "python data.py --tokenizer authors --data_dir {}"


def remake_command(out_dir, name, made=None):
    """The command that converts model `name` into out_dir again, alone (--models; with --overwrite where the
    caller needs it) and as the study's were: the data_dir, preset, block_size and tokenizer_hash that `made`,
    the config a checkpoint of authors.py records, holds (another block size or tokenizer would be another
    conversion, and its children's lineage would no longer hold)."""
    made = made if isinstance(made, dict) else {}
    cmd = f"python authors.py --models {name} --out_dir {shlex.quote(out_dir)}"
    for k, v in common.recorded_settings(made, ("data_dir", "preset", "tokenizer_hash")).items():
        cmd += f" --{k} {shlex.quote(v)}"
    T = made.get("block_size")
    return cmd + (f" --block_size {T}" if type(T) is int and T != config["block_size"] else "")


def make_tokenizer(data_dir):
    """The command that makes the authors' tokenizer and tokens in data_dir: where its records say they were
    made for the authors' models, data.py's own remake command (their --source and preset kept: the plain
    command would re-make them from the built-in sample), else MAKE_TOKENIZER."""
    cmd = data.remake_command(data_dir)
    return cmd if " --tokenizer authors" in cmd else MAKE_TOKENIZER.format(shlex.quote(data_dir))


# -----------------------------------------------------------------------------
# reading a MistralForCausalLM folder (config.json + weights) into model.py's Transformer

# transformers' name -> model.py's name; layer 0 only, as model.py holds one layer
NAMES = {"model.embed_tokens.weight": "tok_emb.weight",
         "model.layers.0.input_layernorm.weight": "attn_norm.weight",
         "model.layers.0.self_attn.q_proj.weight": "attn.wq.weight",
         "model.layers.0.self_attn.k_proj.weight": "attn.wk.weight",
         "model.layers.0.self_attn.v_proj.weight": "attn.wv.weight",
         "model.layers.0.self_attn.o_proj.weight": "attn.wo.weight",
         "model.layers.0.post_attention_layernorm.weight": "mlp_norm.weight",
         "model.layers.0.mlp.gate_proj.weight": "mlp.gate.weight",
         "model.layers.0.mlp.up_proj.weight": "mlp.up.weight",
         "model.layers.0.mlp.down_proj.weight": "mlp.down.weight",
         "model.norm.weight": "norm_f.weight",
         "lm_head.weight": "lm_head.weight"}
# MistralConfig's defaults, for the fields a config.json leaves out (as transformers reads it)
HF_DEFAULTS = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": None, "hidden_act": "silu",
               "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
               "sliding_window": 4096, "tie_word_embeddings": False}
# safetensors dtypes read, as numpy dtypes of their raw bytes (bfloat16: the top half of a float32)
READ_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def read_safetensors(path):
    """{name: float32 tensor} of a safetensors file: data.safetensors_header checks the header
    (JSON, every tensor inside the file, sizes = shape x dtype), then each tensor's bytes."""
    try:
        header, start = data.safetensors_header(path)
    except (OSError, ValueError) as e:
        die(f"{path} is not a valid safetensors file ({e}); delete it and run again to fetch it")
    out = {}
    with open(path, "rb") as f:
        for name, e in header.items():
            if e["dtype"] not in READ_DTYPES:
                die(f"{path}: tensor {name} is {e['dtype']}; weights are read as F32, F16, BF16")
            begin, end = e["data_offsets"]
            f.seek(start + begin)
            raw = np.frombuffer(f.read(end - begin), dtype=READ_DTYPES[e["dtype"]])
            if e["dtype"] == "BF16":  # bfloat16 is float32 without its low 16 bits: shift them back
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            out[name] = torch.from_numpy(raw.astype(np.float32)).reshape(e["shape"])
    return out


def read_weights(folder):
    """transformers' state dict of a model folder, float32: model.safetensors, or the shards that
    model.safetensors.index.json names, or pytorch_model.bin (the first of these that is there)."""
    have = [f for f in WEIGHT_FILES if os.path.exists(os.path.join(folder, f))]
    if not have:
        die(f"no {', '.join(WEIGHT_FILES)} in {folder}; fetch the model (python authors.py)")
    path = os.path.join(folder, have[0])
    if have[0] == "model.safetensors":
        return read_safetensors(path)
    if have[0].endswith(".index.json"):
        shards = index_shards(path)
        sd = {k: v for shard in sorted(set(shards.values()))
              for k, v in read_safetensors(os.path.join(folder, shard)).items()}
        lost = [k for k in shards if k not in sd]
        if lost:
            die(f"{path} lists {lost[0]}, which its shard {shards[lost[0]]} does not hold; "
                f"delete the folder's files and run again")
        return sd
    try:  # weights_only: a pickle could run code; only tensors and plain containers load
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, or not a tensors-only pickle
        die(f"cannot read {path} ({type(e).__name__}: {e}); delete it and run again to fetch it")
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        die(f"{path} is not a state dict of tensors; delete it and run again to fetch it anew")
    return {k: v.float() for k, v in sd.items()}


def index_shards(path):
    """{tensor name: shard file} of a model.safetensors.index.json."""
    try:
        shards = common.read_json(path)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        die(f"{path} has no weight_map ({type(e).__name__}: {e}); delete it and run again")
    if not isinstance(shards, dict) or not all(isinstance(s, str) and "/" not in s
                                               for s in shards.values()):
        die(f"{path}: its weight_map does not map names to shard files; delete it and run again")
    return shards


def read_config(folder, block_size):
    """(ModelArgs, tied) from a folder's config.json, every field checked against what model.py
    builds (one line naming the field otherwise); tied: tie_word_embeddings."""
    path = os.path.join(folder, "config.json")
    try:
        hf = common.read_json(path)
    except (OSError, ValueError) as e:
        die(f"cannot read {path} ({type(e).__name__}: {e}); delete it and run again to fetch it")
    if not isinstance(hf, dict):
        die(f"{path} is not a JSON object; delete it and run again")
    return model_args_from_config(hf, block_size, path), bool(hf.get("tie_word_embeddings", False))


def model_args_from_config(hf, block_size, where):
    def get(key):
        return hf.get(key, HF_DEFAULTS[key])

    def number(key, value, kind):
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            die(f"{where}: {key} is {value!r}, not a positive number; the file is damaged")
        return value
    arch = hf.get("architectures") or ["MistralForCausalLM"]
    if hf.get("model_type") != "mistral" or "MistralForCausalLM" not in arch:
        die(f"{where}: model_type {hf.get('model_type')!r}, architectures {arch}: not a "
            f"MistralForCausalLM; convert one of the authors' Mistral models")
    d, heads, layers, d_mlp, vocab, n_pos = (number(k, get(k), int) for k in (
        "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
        "vocab_size", "max_position_embeddings"))
    # None: one key/value head per query head
    kv = number("num_key_value_heads", get("num_key_value_heads") or heads, int)
    if layers != 1:
        die(f"{where}: num_hidden_layers is {layers}, but model.py builds one layer; "
            f"convert a 1-layer model (the authors' four are)")
    if heads % kv:
        die(f"{where}: num_key_value_heads {kv} does not divide num_attention_heads {heads}")
    if d % heads or (d // heads) % 2:
        die(f"{where}: hidden_size {d} / num_attention_heads {heads} is not a whole even head size "
            f"(RoPE rotates pairs)")
    if get("head_dim") not in (None, d // heads):
        die(f"{where}: head_dim {get('head_dim')} is not hidden_size / num_attention_heads = "
            f"{d // heads}, which model.py assumes")
    if get("hidden_act") not in ("silu", "swish"):
        die(f"{where}: hidden_act {get('hidden_act')!r}; model.py's SwiGLU MLP uses silu")
    # RoPE: rope_theta (transformers 4) or rope_parameters (transformers 5); plain, no scaling
    rope, scaling = hf.get("rope_parameters") or {}, hf.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        die(f"{where}: RoPE type {kind!r}; model.py has plain RoPE only (no scaling)")
    theta = hf.get("rope_theta", rope.get("rope_theta", HF_DEFAULTS["rope_theta"]))
    theta = number("rope_theta", theta, (int, float))
    eps = number("rms_norm_eps", get("rms_norm_eps"), (int, float))
    if not isinstance(get("tie_word_embeddings"), bool):
        die(f"{where}: tie_word_embeddings is {get('tie_word_embeddings')!r}, not true or false")
    window = get("sliding_window")  # model.py attends to the whole context: the window must hold it
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < block_size):
        die(f"{where}: sliding_window {window!r} is shorter than --block_size {block_size}; "
            f"use a --block_size of at most the window")
    if n_pos < block_size:
        die(f"{where}: max_position_embeddings {n_pos} < --block_size {block_size}; "
            f"use --block_size {n_pos} or less")
    return ModelArgs(vocab_size=vocab, block_size=block_size, d_model=d, n_head=heads, n_kv_head=kv,
                     d_mlp=d_mlp, mlp="swiglu", rope_theta=float(theta), norm_eps=float(eps))


def rope_rows(w, head_dim):
    """Reorder q_proj / k_proj rows (n_heads * head_dim, d_model) for model.py's rotary pairs:
    within each head ours[2i] = hf[i], ours[2i+1] = hf[i + head_dim/2] (transformers pairs i with
    i + head_dim/2, apply_rope pairs 2i with 2i+1; both turn pair i by frequency i's angle)."""
    rows, d = w.shape
    # (heads, 2 halves, hd/2, d) -> (heads, hd/2, 2, d): our row 2i + half = hf row half * hd/2 + i
    return w.view(rows // head_dim, 2, head_dim // 2, d).transpose(1, 2).reshape(rows, d)


def ours_from_hf(sd, model, tied, where):
    """model.py's state dict from transformers' one: names mapped (NAMES), shapes checked against
    `model` (a Transformer built from config.json), float32, q and k rows in apply_rope's order."""
    # older transformers saved the rotary frequencies too: a buffer model.py computes itself
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    if tied and "model.embed_tokens.weight" in sd:  # untied here: the head gets a copy
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    for k in sd:
        if k not in NAMES:
            die(f"{where}: unexpected tensor {k}; model.py builds one Mistral layer, no biases: "
                f"convert one of the authors' models")
    want, out = model.state_dict(), {}
    for hf_name, name in NAMES.items():
        if hf_name not in sd:
            die(f"{where}: no tensor {hf_name}; the weights are incomplete, delete them, run again")
        w = sd[hf_name].float()
        if tuple(w.shape) != tuple(want[name].shape):
            die(f"{where}: {hf_name} has shape {tuple(w.shape)} but config.json implies "
                f"{tuple(want[name].shape)}; the config and the weights do not belong together")
        rotated = name in ("attn.wq.weight", "attn.wk.weight")
        out[name] = rope_rows(w, model.attn.head_dim) if rotated else w
    return out


def load_hf(folder, block_size=256):
    """A Transformer (float32, eval mode) from a MistralForCausalLM folder in the hub's format."""
    args, tied = read_config(folder, block_size)
    model = Transformer(args)
    model.load_state_dict(ours_from_hf(read_weights(folder), model, tied, folder))
    return model.eval()


# -----------------------------------------------------------------------------
# fetching from the hub (data.py's downloader: resumed, checked before it is kept, one line offline)

def hub_model(data_dir, repo):
    """(commit sha, folder of its files, the hub's model info): the commit from data.hub_revision (PINNED_MODELS'
    pin, or the commit `main` has at the first download, recorded in <data_dir>/raw/hf/<repo>/REVISION and
    reused), the info (it lists the repo's files) fetched once into that commit's folder."""
    sha = data.hub_revision(data_dir, repo, kind="models", pins=PINNED_MODELS)
    folder = os.path.join(data_dir, "raw", "hf", repo, sha)
    info_path = os.path.join(folder, "info.json")
    # (kept there by hub_revision when it resolved it; None: cut short or edited on disk since, fetched anew
    # on the next run)
    info = data._read_json_or_none(data.download(f"{data.HF}/api/models/{repo}/revision/{sha}", info_path, "json",
                                                 data.hub_headers()))
    if info is None or info.get("sha") != sha:
        os.remove(info_path)
        die(f"the hub's answer for {repo} at {sha} names another commit, or none; run again")
    return sha, folder, info


def fetch(data_dir, repo, sha, paths):
    """Download repo's `paths` at commit sha (data.hub_file: a finished file is kept); returns paths."""
    for p in paths:
        kind = "json" if p.endswith(".json") else "safetensors" if p.endswith(".safetensors") else "bin"
        data.hub_file(data_dir, repo, p, kind, "models", sha)
    return paths


def fetch_weights(data_dir, repo, sha, folder, info):
    """Fetch the weight files of a repo (the first of WEIGHT_FILES its file list holds, and the shards an
    index names); returns their paths."""
    names = {s.get("rfilename") for s in info.get("siblings") or [] if isinstance(s, dict)}
    pick = next((f for f in WEIGHT_FILES if f in names), None)
    if pick is None:
        die(f"{repo} at {sha} holds none of {', '.join(WEIGHT_FILES)} (its files: {', '.join(sorted(names))}); "
            f"pin a commit with its weights in authors.py's PINNED_MODELS")
    fetch(data_dir, repo, sha, [pick])
    if pick.endswith(".index.json"):
        return [pick] + fetch(data_dir, repo, sha, sorted(set(index_shards(os.path.join(folder, pick)).values())))
    return [pick]


# -----------------------------------------------------------------------------

def authors_tokenizer_hash(data_dir, vocab_size):
    """The hash of the tokenizer in data_dir, checked to be the authors' (its vocabulary the models')."""
    make = make_tokenizer(data_dir)
    try:
        tok_hash, info = data.tokenizer_hash(data_dir), data._tok_info(data_dir)
    except common.UserError:  # none, or a damaged one
        die(f"the authors' models need the authors' tokenizer in {data_dir}, which has no readable one; "
            f"run first: {make}")
    if info.get("name") != "authors" or info["vocab_size"] != vocab_size:  # (a paper BPE has 32,000 tokens too)
        die(f"the tokenizer in {data_dir} ({info.get('name')}, {info['vocab_size']} tokens) is not the authors' "
            f"({vocab_size} tokens); run first: {make} (or pass the --data_dir it is in)")
    return tok_hash


def up_to_date(path, made_from, overwrite, how=None):
    """True when path holds this very conversion (nothing to do). A checkpoint made otherwise (trained by
    train.py, another commit, block size, tokenizer or parent) is replaced only with --overwrite. how: the
    command that converts it alone (remake_command), for one that cannot be read."""
    if not os.path.exists(path) or overwrite:
        return False
    if load_checkpoint(path, how=how).get("provenance", {}).get("hub") == made_from:
        print(f"{path}: converted from {made_from['repo']} at {made_from['sha'][:12]}; nothing to do")
        return True
    die(f"{path} exists but was not converted from {made_from['repo']} at {made_from['sha'][:12]} with these "
        f"settings (trained by train.py, or another commit, block_size, tokenizer or parent); pass --overwrite "
        f"to replace it, or choose another --out_dir")


def main(argv=None):
    cfg = common.parse_config(dict(config), argv, PRESETS, common.default_preset(), checks=CHECKS)
    device = common.pick_device(cfg["device"])
    threads = common.set_threads(cfg["threads"], device)
    out_dir, data_dir, T = cfg["out_dir"], cfg["data_dir"], cfg["block_size"]
    todo = [m for m in MODELS if m in cfg["models"]]  # (parents first)
    if not todo:
        die(f"--models is empty; name the models to convert, e.g. --models {','.join(MODELS)}")
    print(f"authors: the authors' {', '.join(todo)} -> {out_dir}/, block_size {T}, device {device} ({threads} CPU "
          f"threads)")
    tok = cfg["tokenizer_hash"] or None  # else the one in data_dir, checked against base's vocabulary
    for name in todo:
        for p in PARENTS[name]:  # a parent not converted in this run must be there already: its hash is the lineage
            if p not in todo and not os.path.isfile(os.path.join(out_dir, p, "ckpt.pt")):
                die(f"no {os.path.join(out_dir, p, 'ckpt.pt')}, {name}'s parent; convert it first: "
                    f"{remake_command(out_dir, p, cfg)}")
    for name in todo:
        repo = MODELS[name]
        sha, folder, info = hub_model(data_dir, repo)
        fetch(data_dir, repo, sha, ["config.json"])  # small: checks the tokenizer before the weights come
        args, _ = read_config(folder, T)
        tok = tok or authors_tokenizer_hash(data_dir, args.vocab_size)
        parents = [{"name": p, "hash": common.sha256_file(os.path.join(out_dir, p, "ckpt.pt"))} for p in PARENTS[name]]
        made_from = {"repo": repo, "sha": sha, "block_size": T, "tokenizer_hash": tok, "parents": parents}
        path = os.path.join(out_dir, name, "ckpt.pt")
        with common.lock_dir(os.path.dirname(path), "authors.py"):
            if up_to_date(path, made_from, cfg["overwrite"], remake_command(out_dir, name, cfg)):
                continue
            files = ["config.json"] + fetch_weights(data_dir, repo, sha, folder, info)
            model = load_hf(folder, T)
            hashes = {f: common.sha256_file(os.path.join(folder, f)) for f in files}
            save_checkpoint(path, model, model.args, finished=True, name=name, domain=DOMAIN[name], iter_num=0,
                            tokenizer_hash=tok, parents=parents, config=dict(cfg),
                            provenance=common.provenance(cfg, hub=made_from, files=hashes))
            print(f"{path}: {repo} at {sha[:12]}, {model.num_params() / 1e6:.1f}M parameters (float32)")
    if cfg["eval_batches"] == 0:
        return
    # the card check: each model's loss on its own val split beside its card's eval loss
    n = cfg["eval_batches"] * cfg["batch_size"]
    print(f"card check: val loss over {n} consecutive windows of {T} tokens per domain (card: the model card's)")
    for name in todo:
        model, ckpt = load_model(out_dir, name, device)
        rows = fast.head_rows(model, cfg["batch_size"] * T) if cfg["fast"] else None
        for dom in EVAL_DOMAINS[name]:
            if not os.path.exists(os.path.join(data_dir, dom, "val.bin")):
                print(f"  {name:12s} on {dom:12s} skipped: no {data_dir}/{dom}/val.bin "
                      f"(made by {make_tokenizer(data_dir)})")
                continue
            toks = data.open_tokens(data_dir, dom, "val", ckpt["tokenizer_hash"], model.args.vocab_size, name)
            loss = eval_loss(model, data.sample_windows(toks, n, T + 1, "consecutive"), cfg["batch_size"], device,
                             rows=rows)
            card = CARD_LOSS.get(name) if dom == DOMAIN[name] else None
            print(f"  {name:12s} on {dom:12s} {loss:.4f}" + (f"   card {card:.4f}" if card else "   (no card value)"))


if __name__ == "__main__":
    common.cli(main)
