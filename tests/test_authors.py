"""Tests for authors.py: safetensors read by hand-built files (float32, float16, bfloat16), every bad
checkpoint one line, the rotary reordering, and fetch + convert from a local fake hub: the lineage,
the re-run that does nothing, and our logits against transformers' MistralForCausalLM (when
installed). CPU only, no internet, seconds."""
import hashlib
import http.server
import json
import os
import socket
import threading

import numpy as np
import pytest
import torch

import authors
import common
import data
import model
from helpers import write_domain

SHA = "0123456789abcdef0123456789abcdef01234567"
# a tiny MistralForCausalLM config.json, as transformers 4 writes it
TINY = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 11, "hidden_size": 8,
        "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "hidden_act": "silu", "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "float32"}
RUN = ["--block_size", "16", "--tokenizer_hash", "tok-A", "--eval_batches", "2", "--batch_size", "2",
       "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches the internet: the hub is a closed local port unless a test serves its own."""
    monkeypatch.setattr(data, "HF", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(data, "BACKOFF_S", 0.001)
    monkeypatch.setattr(data, "RETRIES", 2)


def one_line_error(excinfo):
    msg = str(excinfo.value)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


def write_safetensors(path, tensors, edit=None, pad_to=None):
    """tensors {name: (dtype, numpy array of its raw values)} -> a safetensors file, built by hand.
    edit(header) may damage the header; pad_to: the header's length in bytes (spaces pad it)."""
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    if edit:
        edit(header)
    head = json.dumps(header).encode()
    head += b" " * ((pad_to or len(head)) - len(head))
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def hf_tensors(cfg, seed=0):
    """Random float32 weights of a MistralForCausalLM with config `cfg`, named as transformers names them."""
    rng = np.random.default_rng(seed)
    V, d, m = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    hd = d // cfg["num_attention_heads"]
    q, kv, p = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, "model.layers.0."
    shapes = {"model.embed_tokens.weight": (V, d), p + "input_layernorm.weight": (d,),
              p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
              p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
              p + "post_attention_layernorm.weight": (d,), p + "mlp.gate_proj.weight": (m, d),
              p + "mlp.up_proj.weight": (m, d), p + "mlp.down_proj.weight": (d, m), "model.norm.weight": (d,),
              "lm_head.weight": (V, d)}
    return {n: ("F32", rng.standard_normal(s).astype(np.float32)) for n, s in shapes.items()}


def make_folder(folder, cfg=TINY, tensors=None, drop=(), edit=None):
    """A model folder in the hub's format: config.json and model.safetensors."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    tensors = {k: v for k, v in (tensors or hf_tensors(cfg)).items() if k not in drop}
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors, edit)
    return str(folder)


# -----------------------------------------------------------------------------
# reading

def test_safetensors_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal(4).astype(np.float16)
    bf16 = (rng.standard_normal((2, 3)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # top halves
    path = str(tmp_path / "t.safetensors")
    write_safetensors(path, {"a": ("F32", f32), "b": ("F16", f16), "c": ("BF16", bf16),
                             "s": ("F32", np.array(2.5, np.float32)), "e": ("F32", np.zeros((0, 4), np.float32))})
    got = authors.read_safetensors(path)
    assert all(v.dtype == torch.float32 for v in got.values())
    assert torch.equal(got["a"], torch.from_numpy(f32))
    assert torch.equal(got["b"], torch.from_numpy(f16.astype(np.float32)))
    assert torch.equal(got["c"], torch.from_numpy(bf16.view(np.int16)).view(torch.bfloat16).float())
    assert got["s"].shape == () and got["s"].item() == 2.5 and got["e"].shape == (0, 4)
    assert data.safetensors_problem(path) is None


def test_download_check_takes_a_header_length_that_reads_as_html(tmp_path):
    """A header of 0x13c bytes starts the file with b"<\\x01": a safetensors file, not an HTML page."""
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, {"a": ("F32", np.ones(3, np.float32))}, pad_to=0x13C)
    with open(path, "rb") as f:
        assert f.read(1) == b"<"
    data.check_download(path, "safetensors", "http://x/w.safetensors")
    assert os.path.exists(path)


def test_rope_rows_turn_halves_into_pairs():
    """transformers' rotate_half on a head vector == apply_rope on the vector in rope_rows' order."""
    hd, T = 8, 5
    cos, sin = model.rope_cache(T, hd, 10000.0)                        # (T, hd/2)
    x = torch.randn(2, 3, T, hd)                                        # (B, H, T, hd), transformers' order
    c, s = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)         # repeated over the halves
    hf = x * c + torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1) * s
    order = authors.rope_rows(torch.arange(hd, dtype=torch.float32)[:, None], hd)[:, 0].long()
    assert order.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.allclose(model.apply_rope(x[..., order], cos, sin), hf[..., order], atol=1e-6)


def test_load_hf_maps_every_tensor(tmp_path):
    tensors = hf_tensors(TINY)
    net = authors.load_hf(make_folder(tmp_path / "m", tensors=tensors), block_size=16)
    assert not net.training and net.args.n_kv_head == 1 and net.args.block_size == 16
    sd = net.state_dict()
    for hf_name, name in authors.NAMES.items():
        want = torch.from_numpy(tensors[hf_name][1])
        if name in ("attn.wq.weight", "attn.wk.weight"):
            want = authors.rope_rows(want, 4)
        assert torch.equal(sd[name], want), name
    # the same weights as pytorch_model.bin; a tied model's head is a copy of its embedding
    folder = make_folder(tmp_path / "bin")
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, (_, v) in tensors.items()}, os.path.join(folder, "pytorch_model.bin"))
    from_bin = authors.load_hf(folder, 16).state_dict()
    assert all(torch.equal(from_bin[k], v) for k, v in sd.items())
    tied = authors.load_hf(make_folder(tmp_path / "t", {**TINY, "tie_word_embeddings": True}, tensors,
                                       drop=("lm_head.weight",)), 16)
    assert torch.equal(tied.lm_head.weight, tied.tok_emb.weight)


def test_a_window_and_positions_of_exactly_block_size_are_enough_and_old_rotary_buffers_are_dropped(tmp_path):
    """sliding_window and max_position_embeddings equal to --block_size hold the whole context: converted; one less
    is refused. An older transformers saved the rotary frequencies (rotary_emb.inv_freq), which model.py computes:
    dropped, the weights as without them."""
    args = authors.model_args_from_config({**TINY, "sliding_window": 16, "max_position_embeddings": 16}, 16, "cfg")
    assert (args.block_size, args.d_model, args.n_head, args.n_kv_head, args.d_mlp) == (16, 8, 2, 1, 12)
    for key in ("sliding_window", "max_position_embeddings"):
        with pytest.raises(SystemExit, match=f"cfg: {key} 15"):
            authors.model_args_from_config({**TINY, key: 15}, 16, "cfg")
    tensors = hf_tensors(TINY)
    plain = authors.load_hf(make_folder(tmp_path / "plain", tensors=tensors), 16).state_dict()
    old = {**tensors, "model.layers.0.self_attn.rotary_emb.inv_freq": ("F32", np.ones(2, np.float32))}
    got = authors.load_hf(make_folder(tmp_path / "old", tensors=old), 16).state_dict()
    assert got.keys() == plain.keys() and all(torch.equal(got[k], v) for k, v in plain.items())


def test_remake_command_known_answers():
    """The command that converts one model again keeps the study's folders, preset and tokenizer, and a block size
    other than the default (the default's --block_size would be noise); a record without them gives the plain one."""
    made = {"data_dir": "data authors", "preset": "paper", "tokenizer_hash": "tok-A", "block_size": 16, "lr": 1.0}
    assert authors.remake_command("out a", "lua", made) == ("python authors.py --models lua --out_dir 'out a' "
                                                            "--data_dir 'data authors' --preset paper "
                                                            "--tokenizer_hash tok-A --block_size 16")
    assert authors.remake_command("o", "base", {**made, "block_size": authors.config["block_size"]}).endswith(
        "--tokenizer_hash tok-A")
    assert authors.remake_command("o", "base", {"data_dir": " ", "preset": None, "block_size": True}) == \
        "python authors.py --models base --out_dir o"
    assert authors.remake_command("o", "luastories", "not a record") == \
        "python authors.py --models luastories --out_dir o"


def past_end(h):
    h["lm_head.weight"]["data_offsets"] = [v + 10_000 for v in h["lm_head.weight"]["data_offsets"]]


def truncate(folder):
    path = os.path.join(folder, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)


def break_json(folder):  # the header's first byte: its length stays, its JSON breaks
    path = os.path.join(folder, "model.safetensors")
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\xff")


BAD = {  # case: (config changes, tensors dropped, header edit, file damage, words the message holds)
    "two_layers": ({"num_hidden_layers": 2}, (), None, None, "num_hidden_layers is 2"),
    "missing": ({}, ("model.layers.0.mlp.up_proj.weight",), None, None,
                "no tensor model.layers.0.mlp.up_proj.weight"),
    "truncated": ({}, (), None, truncate, "model.safetensors is not a valid safetensors file"),
    "past_end": ({}, (), past_end, None, "tensor 'lm_head.weight' at bytes"),
    "vocab": ({"vocab_size": 12}, (), None, None,
              "model.embed_tokens.weight has shape (11, 8) but config.json implies (12, 8)"),
    "dtype": ({}, (), lambda h: h["model.norm.weight"].update(dtype="X9"), None, "unknown dtype 'X9'"),
    "dtype_list": ({}, (), lambda h: h["model.norm.weight"].update(dtype=["F32"]), None, "unknown dtype ['F32']"),
    "int_dtype": ({}, (), lambda h: h["model.norm.weight"].update(dtype="I32"), None, "read as F32, F16, BF16"),
    "not_json": ({}, (), None, break_json, "a header that is not JSON"),
    "kv_heads": ({"num_key_value_heads": 3}, (), None, None, "num_key_value_heads 3 does not divide"),
    "window": ({"sliding_window": 8}, (), None, None, "sliding_window 8 is shorter than --block_size 16"),
    "positions": ({"max_position_embeddings": 8}, (), None, None, "max_position_embeddings 8 < --block_size 16"),
    "act": ({"hidden_act": "gelu"}, (), None, None, "hidden_act 'gelu'"),
    "llama": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, (), None, None,
              "not a MistralForCausalLM"),
    "head_dim": ({"head_dim": 8}, (), None, None, "head_dim 8 is not hidden_size / num_attention_heads = 4"),
    "scaling": ({"rope_scaling": {"type": "linear", "factor": 2.0}}, (), None, None, "RoPE type 'linear'"),
    "odd_head": ({"hidden_size": 6}, (), None, None, "hidden_size 6 / num_attention_heads 2 is not a whole even head"),
    "zero": ({"intermediate_size": 0}, (), None, None, "intermediate_size is 0, not a positive number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_one_line(tmp_path, case):
    change, drop, edit, damage, words = BAD[case]
    folder = make_folder(tmp_path / "m", {**TINY, **change}, hf_tensors(TINY), drop, edit)
    if damage:
        damage(folder)
    with pytest.raises(SystemExit) as e:
        authors.load_hf(folder, block_size=16)
    msg = one_line_error(e)
    assert words in msg and folder in msg, msg


# -----------------------------------------------------------------------------
# fetching and converting, from a local fake hub

class FakeHub:
    """Answers like the hub for models: /api/models/<repo>/revision/<main or SHA> (the commit and the file
    list) and /<repo>/resolve/<SHA>/<path> (the file). self.repos[repo] = {path: bytes}."""

    def __init__(self, repos):
        self.repos, self.log = repos, []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.log.append(self.path)
                for repo, files in hub.repos.items():
                    if self.path in (f"/api/models/{repo}/revision/main", f"/api/models/{repo}/revision/{SHA}"):
                        info = {"id": repo, "sha": SHA, "siblings": [{"rfilename": p} for p in files]}
                        return self.reply(json.dumps(info).encode())
                    prefix = f"/{repo}/resolve/{SHA}/"
                    if self.path.startswith(prefix) and self.path[len(prefix):] in files:
                        return self.reply(files[self.path[len(prefix):]])
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def reply(self, body):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def serve(monkeypatch):
    """serve({name: model folder}) puts each folder's files on a fake hub under that model's repo name."""
    hubs = []

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def start(folders):
        repos = {authors.MODELS[name]: {f: read(os.path.join(folder, f)) for f in os.listdir(folder)}
                 for name, folder in folders.items()}
        hubs.append(FakeHub(repos))
        monkeypatch.setattr(data, "HF", hubs[-1].url)
        return hubs[-1]
    yield start
    for h in hubs:
        h.httpd.shutdown()
        h.httpd.server_close()


def as_index(folder):
    """The merge's layout on the hub: model.safetensors.index.json and one shard."""
    shard = "model-00001-of-00001.safetensors"
    os.replace(os.path.join(folder, "model.safetensors"), os.path.join(folder, shard))
    names = data.safetensors_header(os.path.join(folder, shard))[0]
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"mergekit_version": "0.0.4"}, "weight_map": {n: shard for n in names}}, f)


@pytest.mark.parametrize("edit, words", [
    (lambda wm: wm.update({"model.norm.weight": "../elsewhere.safetensors"}), "its weight_map does not map names to "
                                                                               "shard files"),
    (lambda wm: wm.update({"model.layers.0.extra.weight": "model-00001-of-00001.safetensors"}),
     "lists model.layers.0.extra.weight, which its shard model-00001-of-00001.safetensors does not hold"),
])
def test_a_sharded_models_index_that_does_not_fit_its_shards_is_one_line(tmp_path, edit, words):
    """model.safetensors.index.json names its shards by file name in the folder (no path out of it), and each
    tensor it lists must be in the shard it names."""
    folder = make_folder(tmp_path / "m")
    as_index(folder)
    assert authors.read_weights(folder).keys() == set(hf_tensors(TINY))     # as it is: read
    path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(path))
    edit(index["weight_map"])
    json.dump(index, open(path, "w"))
    with pytest.raises(SystemExit) as e:
        authors.read_weights(folder)
    assert words in one_line_error(e) and path in str(e.value)


@pytest.mark.parametrize("models", ["", ","])
def test_an_empty_models_list_is_one_line_not_a_run_that_converts_nothing(tmp_path, models):
    with pytest.raises(SystemExit) as e:
        authors.main(["--data_dir", str(tmp_path / "d"), "--out_dir", str(tmp_path / "o"), "--models", models] + RUN)
    assert one_line_error(e) == ("error: --models is empty; name the models to convert, e.g. --models "
                                 "base,lua,tinystories,luastories")


def hub_study(tmp_path, serve, data="data", out="out", sharded=()):
    """The four models on a local hub (sharded: those served as an index of shards) and their domains' tokens:
    (folders, hub, data_dir, out_dir)."""
    folders = {name: make_folder(tmp_path / "hf" / name, tensors=hf_tensors(TINY, i))
               for i, name in enumerate(authors.MODELS)}
    for name in sharded:
        as_index(folders[name])
    hub = serve(folders)
    d, o = str(tmp_path / data), str(tmp_path / out)
    for i, dom in enumerate(("base", "lua", "tinystories")):
        write_domain(d, dom, i, vocab=11, tok_hash="tok-A", n=2000)
    return folders, hub, d, o


def test_fetch_convert_lineage_and_rerun(tmp_path, serve, capsys):
    folders, hub, d, o = hub_study(tmp_path, serve, sharded=["luastories"])
    authors.main(["--data_dir", d, "--out_dir", o] + RUN)
    out = capsys.readouterr().out
    for name, repo in authors.MODELS.items():
        with open(os.path.join(d, "raw", "hf", repo, "REVISION")) as f:
            assert f.read().strip() == SHA
        net, ck = model.load_model(o, name)
        ref = authors.load_hf(folders[name], 16)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
        assert ck["finished"] and ck["iter_num"] == 0 and ck["tokenizer_hash"] == "tok-A"
        assert ck["domain"] == authors.DOMAIN[name]
        assert ck["provenance"]["hub"]["repo"] == repo and ck["provenance"]["hub"]["sha"] == SHA
        assert [p["name"] for p in ck["parents"]] == authors.PARENTS[name]
        for p in ck["parents"]:
            assert p["hash"] == common.sha256_file(os.path.join(o, p["name"], "ckpt.pt"))
    assert "card 3.1027" in out and "card 2.4518" in out and "card 2.0442" in out
    assert out.count("(no card value)") == 2  # luastories on lua and on tinystories
    # a second run finds every conversion done and asks the hub nothing
    n = len(hub.log)
    authors.main(["--data_dir", d, "--out_dir", o] + RUN + ["--eval_batches", "0"])
    assert capsys.readouterr().out.count("nothing to do") == 4 and len(hub.log) == n
    # a checkpoint made otherwise (here: with another tokenizer) is replaced only with --overwrite
    with pytest.raises(SystemExit) as e:
        authors.main(["--data_dir", d, "--out_dir", o] + RUN + ["--tokenizer_hash", "tok-B"])
    assert "--overwrite" in one_line_error(e)
    # without --tokenizer_hash, the tokenizer in data_dir is needed: one line naming the command that makes it
    with pytest.raises(SystemExit) as e:
        authors.main(["--data_dir", d, "--out_dir", str(tmp_path / "o2"), "--block_size", "16", "--eval_batches", "0"])
    assert "python data.py --tokenizer authors" in one_line_error(e)


def test_models_named_in_any_order_convert_parents_first_and_a_damaged_one_names_its_own_conversion(tmp_path, serve):
    """--models luastories,lua,tinystories,base converts base first (a child's lineage is its parents' hashes) and
    card-checks only the models named; a checkpoint there that cannot be read names the command that converts it
    alone, with --overwrite."""
    folders, _, d, o = hub_study(tmp_path, serve)
    authors.main(["--data_dir", d, "--out_dir", o, "--models", "base"] + RUN)   # alone: no other model checked
    assert os.listdir(o) == ["base"]
    authors.main(["--data_dir", d, "--out_dir", o, "--models", "luastories,lua,tinystories,base"] + RUN)
    for name in authors.MODELS:
        ck = model.load_checkpoint(os.path.join(o, name, "ckpt.pt"))
        for p in ck["parents"]:
            assert p["hash"] == common.sha256_file(os.path.join(o, p["name"], "ckpt.pt")), (name, p)
    path = os.path.join(o, "lua", "ckpt.pt")
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(SystemExit) as e:
        authors.main(["--data_dir", d, "--out_dir", o] + RUN)
    assert one_line_error(e).endswith(f"remake it: python authors.py --models lua --out_dir {o} --data_dir {d} "
                                      f"--preset {common.default_preset()} --tokenizer_hash tok-A --block_size 16 "
                                      "--overwrite")


def test_the_tokenizer_fix_keeps_the_source_the_tokens_were_made_from(tmp_path):
    """A data_dir prepared for the authors' models from the hub, its tokenizer lost: the fix keeps --source hf
    and the preset (the plain python data.py --tokenizer authors would re-make the tokens from the sample)."""
    d = str(tmp_path / "data")
    write_domain(d, "base", 0, vocab=11, tok_hash="tok-A", n=2000)
    path = os.path.join(d, "base", "meta.json")
    with open(path) as f:
        meta = json.load(f)
    meta["provenance"] = {"config": {"source": "hf", "preset": "paper", "tokenizer": "authors"}}
    with open(path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(SystemExit) as e:
        authors.authors_tokenizer_hash(d, 11)
    assert one_line_error(e).endswith(f"run first: python data.py --domain all --data_dir {d} --source hf "
                                      "--preset paper --tokenizer authors")
    os.remove(path)                                                     # no record: the plain command
    with pytest.raises(SystemExit) as e:
        authors.authors_tokenizer_hash(d, 11)
    assert one_line_error(e).endswith(f"run first: python data.py --tokenizer authors --data_dir {d}")


def test_offline_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def no_dns(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(data, "HF", "https://huggingface.co")
    with pytest.raises(SystemExit) as e:
        common.cli(lambda: authors.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "o")] + RUN))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "name resolution failed" in err


def test_logits_match_transformers(tmp_path, serve, capsys):
    """The proof of the conversion (names, rotary order, GQA, norms): our logits == transformers'."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.MistralConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                        sliding_window=None)
    refs, folders = {}, {}
    for i, name in enumerate(authors.MODELS):
        torch.manual_seed(i)
        hf = transformers.MistralForCausalLM(hf_cfg).eval()
        with torch.no_grad():  # weights far from the init's 0.02, so that a wrong rotary order shows
            for n, p in hf.named_parameters():
                p.copy_(1 + 0.2 * torch.randn_like(p) if n.endswith("norm.weight") else 0.2 * torch.randn_like(p))
        if name == "luastories":  # stored in float16, as the authors' merge is
            hf = hf.half()
        folders[name] = str(tmp_path / "hf" / name)
        hf.save_pretrained(folders[name])
        # the reference in float32: a fresh model (half() rounds its rotary frequencies too) with these weights
        refs[name] = transformers.MistralForCausalLM(hf_cfg).eval()
        refs[name].load_state_dict(hf.float().state_dict())
    as_index(folders["luastories"])
    serve(folders)
    d, o = str(tmp_path / "data"), str(tmp_path / "out")
    authors.main(["--data_dir", d, "--out_dir", o, "--block_size", "32", "--tokenizer_hash", "tok-A",
                  "--eval_batches", "0", "--device", "cpu", "--threads", "1"])
    idx = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for name in authors.MODELS:
        net, _ = model.load_model(o, name)
        with torch.no_grad():
            diff = (net(idx)[0] - refs[name](input_ids=idx).logits).abs().max().item()
        assert diff < 1e-5, (name, diff)
        worst = max(worst, diff)
    print(f"max |our logits - transformers' logits| over the 4 models: {worst:.2e}")
    # the test can fail: without the rotary reordering the logits differ
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(authors, "rope_rows", lambda w, head_dim: w)
        plain = authors.load_hf(os.path.join(d, "raw", "hf", authors.MODELS["base"], SHA), 32)
        with torch.no_grad():
            assert (plain(idx)[0] - refs["base"](input_ids=idx).logits).abs().max().item() > 1e-2


@pytest.mark.parametrize("text", ['{"sha": "', "[1, 2]"])
def test_a_damaged_cached_model_info_is_one_line_and_removed(tmp_path, monkeypatch, capsys, text):
    """The hub's model info kept on disk (raw/hf/<repo>/<sha>/info.json), cut short or not the hub's answer: one
    line and exit 2 (never a JSON traceback), and the file removed, so that a run with the network fetches it anew."""
    sha, repo = "0123456789abcdef" * 2 + "01234567", authors.MODELS["base"]
    folder = tmp_path / "raw" / "hf" / repo / sha
    folder.mkdir(parents=True)
    (folder.parent / "REVISION").write_text(sha + "\n")
    (folder / "info.json").write_text(text)
    monkeypatch.setattr(data, "HF", "http://127.0.0.1:9")  # no request is made: the file is there
    with pytest.raises(SystemExit) as e:
        common.cli(lambda: authors.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "o")] + RUN))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "names another commit, or none; run again" in err, err
    assert not (folder / "info.json").exists()


def printed_command(msg, after):
    """The arguments of the command a one-line error prints after `after` (up to its end), checked to be authors.py's."""
    import shlex
    words = shlex.split(msg.split(after, 1)[1])
    assert words[:2] == ["python", "authors.py"], msg
    return words[2:]


def test_the_fixes_of_a_study_of_the_authors_models_name_authors_py_and_work(tmp_path, serve, monkeypatch):
    """In a study of the authors' models (converted by authors.py, never trained), a model removed, damaged or made
    stale is remade by authors.py: each fix line names it (that model alone, the study's folders and the settings
    of the conversion: --block_size, --tokenizer_hash), not train.py or merge.py, and running it as printed (here
    against the local hub) remakes the model, its weights the authors' again."""
    import analyze
    folders, _, d, o = hub_study(tmp_path, serve, "data_authors", "out_authors")
    authors.main(["--data_dir", d, "--out_dir", o] + RUN)

    def same_weights(name):
        net, _ = model.load_model(o, name)
        ref = authors.load_hf(folders[name], 16)
        return all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))

    def lineage():
        info = {m: {"ckpt": model.load_checkpoint(os.path.join(o, m, "ckpt.pt")),
                    "model_hash": common.sha256_file(os.path.join(o, m, "ckpt.pt"))} for m in authors.MODELS}
        analyze.check_lineage(info, [(f"{p}->{c}", p, c) for p, c in analyze.EDGES], o)

    # removed: the fix converts it again (and only it: the others are left as they are)
    os.remove(os.path.join(o, "lua", "ckpt.pt"))
    kept = common.sha256_file(os.path.join(o, "tinystories", "ckpt.pt"))
    with pytest.raises(SystemExit) as e:
        model.load_model(o, "lua")
    msg = one_line_error(e)
    assert "train.py" not in msg and msg.endswith(f"make it with: python authors.py --models lua --out_dir {o} "
                                                  f"--data_dir {d} --preset {common.default_preset()} "
                                                  "--tokenizer_hash tok-A --block_size 16"), msg
    authors.main(printed_command(msg, "make it with: "))
    assert same_weights("lua") and common.sha256_file(os.path.join(o, "tinystories", "ckpt.pt")) == kept
    # luastories was made from the lua that was removed: the lineage check names authors.py, not merge.py
    with pytest.raises(SystemExit) as e:
        lineage()
    msg = one_line_error(e)
    assert "merge.py" not in msg and "re-make it: python authors.py --models luastories " in msg and \
        msg.endswith(" --overwrite"), msg
    authors.main(printed_command(msg, "re-make it: "))
    lineage()
    assert same_weights("luastories")
    # damaged: the fix replaces it (--overwrite); a swapped folder: the same command
    path = os.path.join(o, "base", "ckpt.pt")
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(SystemExit) as e:
        model.load_model(o, "base")
    msg = one_line_error(e)
    assert "train.py" not in msg and "remake it: python authors.py --models base " in msg and \
        msg.endswith(" --overwrite"), msg
    authors.main(printed_command(msg, "remake it: "))
    assert same_weights("base")
    os.replace(os.path.join(o, "tinystories", "ckpt.pt"), path)
    with pytest.raises(SystemExit) as e:
        model.load_model(o, "base")
    msg = one_line_error(e)
    assert "train.py" not in msg and "remake it: python authors.py --models base " in msg, msg
    authors.main(printed_command(msg, "remake it: "))
    assert same_weights("base")
    # weights that do not fit the checkpoint's own args (edited, re-stamped): the same command
    ck = torch.load(path, weights_only=True)
    ck["model"]["norm_f.weight"] = torch.ones(3)
    common.atomic_torch_save(common.stamp(ck, "model"), path)
    with pytest.raises(SystemExit) as e:
        model.load_model(o, "base")
    msg = one_line_error(e)
    assert "does not fit the model" in msg and "train.py" not in msg and \
        "remake it: python authors.py --models base " in msg and msg.endswith(" --overwrite"), msg
    authors.main(printed_command(msg, "remake it: "))
    assert same_weights("base")
    # with no model of the authors' in the study, train.py's command as before
    for m in ("base", "lua", "luastories"):
        os.remove(os.path.join(o, m, "ckpt.pt"))
    with pytest.raises(SystemExit, match=r"make it with: python train\.py --domain lua$"):
        model.load_model(o, "lua")
    # converting a child alone needs its parents there (their hashes are its lineage): one line naming theirs
    with pytest.raises(SystemExit) as e:
        authors.main(["--data_dir", d, "--out_dir", o, "--models", "lua"] + RUN)
    assert f"no {os.path.join(o, 'base', 'ckpt.pt')}, lua's parent; convert it first: python authors.py --models " \
           "base " in one_line_error(e)
