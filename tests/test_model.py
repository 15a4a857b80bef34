"""Behaviour of the one-layer transformer: shapes, causality, MLP capture/replacement, GQA, RoPE."""
import math
import os
import re

import numpy as np
import pytest
import torch

from model import ModelArgs, Transformer, apply_rope, rope_cache

ARGS = dict(vocab_size=97, block_size=16, d_model=32, n_head=4, n_kv_head=2, d_mlp=48)


def make(**kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(**(ARGS | kw))).eval()


@pytest.mark.parametrize("mlp", ["swiglu", "gelu", "relu"])
def test_output_shapes_and_loss(mlp):
    m = make(mlp=mlp)
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 16, 97)
    assert m.mlp_acts(idx).shape == (3, 16, 48)
    # an untrained model with small init predicts nearly uniformly: CE close to ln(vocab)
    assert abs(loss.item() - math.log(97)) < 0.2
    logits2, loss2 = m(idx)
    assert loss2 is None and torch.equal(logits, logits2)


def test_untied_embeddings_and_no_biases():
    m = make()
    assert m.lm_head.weight.data_ptr() != m.tok_emb.weight.data_ptr()
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())


def test_causality():
    m = make()
    idx = torch.randint(0, 97, (2, 16))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 97
    a, _ = m(idx)
    b, _ = m(changed)
    assert torch.equal(a[:, :10], b[:, :10])              # no earlier logit moves
    assert not torch.allclose(a[:, 10:], b[:, 10:])       # later ones do


def test_trunk_and_head_capture_and_replace_the_mlp_activation():
    m = make()
    idx = torch.randint(0, 97, (2, 16))
    clean, _ = m(idx)
    resid, h = m.trunk(idx)
    assert torch.equal(h, m.mlp_acts(idx))                 # the activation the SAEs are trained on
    assert torch.equal(clean, m.head(resid, h))            # h put back in its place: identical logits
    zeroed = m.head(resid, torch.zeros_like(h))            # zero-ablation changes the output
    assert not torch.allclose(clean, zeroed)
    # zero-ablating h is the same as removing the MLP's write to the residual stream
    x = m.tok_emb(idx)
    x = x + m.attn(m.attn_norm(x), m.rope_cos, m.rope_sin)
    assert torch.allclose(zeroed, m.lm_head(m.norm_f(x)), atol=1e-6)


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = make(n_head=4, n_kv_head=2)
    mha = make(n_head=4, n_kv_head=4)
    sd = gqa.state_dict()
    hd = 32 // 4
    for w in ("wk", "wv"):  # kv head j serves query heads 2j, 2j+1
        W = sd[f"attn.{w}.weight"].view(2, hd, 32)
        sd[f"attn.{w}.weight"] = W.repeat_interleave(2, dim=0).reshape(4 * hd, 32)
    mha.load_state_dict(sd)
    idx = torch.randint(0, 97, (2, 16))
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


def test_rope_is_relative():
    # the score between a query at i and a key at j depends only on i - j
    cos, sin = rope_cache(32, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)
    def score(i, j):
        qs = q.expand(1, 1, 32, 8)
        ks = k.expand(1, 1, 32, 8)
        return (apply_rope(qs, cos, sin)[0, 0, i] @ apply_rope(ks, cos, sin)[0, 0, j]).item()
    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)
    assert score(0, 0) == pytest.approx((q @ k).item(), abs=1e-5)


def test_sequence_longer_than_block_is_a_clear_error():
    m = make()
    with pytest.raises(SystemExit, match="longer than the model's block_size"):
        m(torch.zeros(1, 17, dtype=torch.long))


# -----------------------------------------------------------------------------
# checkpoints: the one writer, the unfinished-flag refusal, and the evaluation loss

def test_save_checkpoint_round_trip_and_documented_keys(tmp_path):
    import os

    from model import CHECKPOINT_KEYS, load_model, save_checkpoint
    m = make()
    compiled_names = {"_orig_mod." + k: v for k, v in m.state_dict().items()}  # as torch.compile names them
    save_checkpoint(str(tmp_path / "x" / "ckpt.pt"), compiled_names, ModelArgs(**ARGS), finished=True, name="x",
                    domain="base", tokenizer_hash="tok", parents=[])
    net, ck = load_model(str(tmp_path), "x")
    assert set(ck) <= set(CHECKPOINT_KEYS) and ck["finished"] is True and ck["iter_num"] == 0
    idx = torch.randint(0, 97, (2, 16))
    assert torch.equal(net(idx)[0], m(idx)[0])
    with pytest.raises(KeyError, match="unknown keys \\['optimiser'\\]"):  # a typo is a programming error
        save_checkpoint(str(tmp_path / "y.pt"), m, m.args, finished=True, name="y", domain="base",
                        tokenizer_hash="tok", parents=[], optimiser={})
    with pytest.raises(KeyError, match="missing \\['tokenizer_hash'\\]"):
        save_checkpoint(str(tmp_path / "y.pt"), m, m.args, finished=True, name="y", domain="base", parents=[])
    assert not os.path.exists(tmp_path / "y.pt")


def test_unfinished_checkpoint_is_refused_unless_allowed(tmp_path):
    from common import atomic_torch_save
    from model import load_model, save_checkpoint
    m = make()
    path = str(tmp_path / "lua" / "ckpt.pt")
    save_checkpoint(path, m, m.args, finished=False, name="lua", domain="lua", iter_num=7, tokenizer_hash="t",
                    parents=[], optimizer={})
    with pytest.raises(SystemExit, match=r"lua/ckpt.pt is unfinished \(stopped at iter 7\); finish it with: "
                                         r"python train.py --domain lua --resume, or pass --allow_unfinished"):
        load_model(str(tmp_path), "lua")
    assert load_model(str(tmp_path), "lua", allow_unfinished=True)[1]["iter_num"] == 7
    save_checkpoint(str(tmp_path / "lua_long" / "ckpt.pt"), m, m.args, finished=False, name="lua_long",
                    domain="lua", iter_num=9, tokenizer_hash="t", parents=[], optimizer={})
    with pytest.raises(SystemExit, match=r"finish it with: python train.py --domain lua --name lua_long --resume"):
        load_model(str(tmp_path), "lua_long")   # a variant: its own domain and name
    # written before the flag existed: final when it holds no training state (a merge), else unfinished;
    # such a file predates kinds and checksums too, and loads as a model checkpoint (its fields say so)
    ck = torch.load(path, weights_only=True)
    for k in ("finished", "kind", "format", "checksum"):
        del ck[k]
    atomic_torch_save(ck, path)
    with pytest.raises(SystemExit, match="is unfinished"):
        load_model(str(tmp_path), "lua")
    del ck["optimizer"]
    atomic_torch_save(ck, path)
    load_model(str(tmp_path), "lua")


def test_eval_loss_is_the_mean_over_its_windows():
    import numpy as np

    from model import eval_loss
    m = make()
    tokens = np.random.default_rng(0).integers(0, 97, 16 * 7 + 5).astype(np.int64)
    wins = np.stack([tokens[i * 16:i * 16 + 17] for i in range(7)])      # 16 inputs, targets shifted by one
    want = [m(torch.from_numpy(w[None, :-1]), torch.from_numpy(w[None, 1:]))[1].item() for w in wins]
    assert eval_loss(m, wins, batch_size=3) == pytest.approx(sum(want) / 7, rel=1e-6)
    assert eval_loss(m, wins[:3], batch_size=3) == pytest.approx(sum(want[:3]) / 3, rel=1e-6)
    assert eval_loss(m, wins, batch_size=3, rows=5) == pytest.approx(sum(want) / 7, rel=1e-6)  # head in blocks


# -----------------------------------------------------------------------------
# checkpoint files: data only, whole, of the kind asked for (issue 26)

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls os.system
        return os.system, (f"touch {self.marker}",)


def one_line(e):
    msg = str(e.value)
    assert msg.startswith("error: ") and "\n" not in msg, msg
    return msg


def saved(tmp_path, name="base"):
    from model import save_checkpoint
    m = make()
    return save_checkpoint(str(tmp_path / name / "ckpt.pt"), m, m.args, finished=True, name=name, domain=name,
                           tokenizer_hash="tok", parents=[], val_loss={name: np.float64(2.5)},
                           provenance={"torch": torch.__version__})  # a numpy float and a TorchVersion: not data


def test_a_checkpoint_is_read_as_data_and_code_in_it_never_runs(tmp_path):
    from model import load_model
    marker, path = tmp_path / "PWNED", tmp_path / "base" / "ckpt.pt"
    path.parent.mkdir()
    torch.save({"model": {"w": Payload(marker)}, "model_args": {}}, path)
    with pytest.raises(SystemExit) as e:
        load_model(str(tmp_path), "base")
    msg = one_line(e)
    assert str(path) in msg and "nothing in it was run" in msg and "python train.py --domain base --overwrite" in msg
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: the unsafe load would have run it
    assert marker.exists()


def test_checkpoints_carry_kind_format_and_a_checksum_of_plain_data(tmp_path):
    from common import FORMAT, checksum
    from model import load_checkpoint, load_model
    path = saved(tmp_path)
    ck = torch.load(path, weights_only=True)  # loads as data: numpy scalars and torch.__version__ were made plain
    assert (ck["kind"], ck["format"], ck["checksum"]) == ("model", FORMAT, checksum(ck))
    assert type(ck["val_loss"]["base"]) is float and type(ck["provenance"]["torch"]) is str
    assert load_checkpoint(path)["checksum"] == ck["checksum"] and load_model(str(tmp_path), "base")[1]["name"] == "base"
    for change in (lambda c: c["model"]["norm_f.weight"].__setitem__(0, 1.5),    # a weight
                   lambda c: c["val_loss"].update(base=2.4),                      # a plain field
                   lambda c: c.update(iter_num=1)):
        c = torch.load(path, weights_only=True)
        change(c)
        assert checksum(c) != c["checksum"]


def test_damaged_or_foreign_checkpoint_files_are_one_line_naming_them(tmp_path):
    from model import load_model
    path = saved(tmp_path)
    good = open(path, "rb").read()
    raw = torch.load(path, weights_only=True)["model"]["tok_emb.weight"].numpy().tobytes()
    at = good.find(raw) + len(raw) // 2
    cases = {  # what the file holds -> the message
        "flipped bytes": (good[:at] + bytes(b ^ 0x5A for b in good[at:at + 8]) + good[at + 8:], r"is damaged: its contents"),
        "truncated": (good[:len(good) // 2], r"cannot load 'base' model checkpoint .* as data"),
        "not a torch file": (b"hello", r"cannot load"),
        "a bare tensor": (torch.zeros(3), r"is a bare tensor, not a model checkpoint"),
        "a list": ([1, 2], r"is a list, not a model checkpoint"),
        "an SAE": ({"kind": "sae", "format": 1, "sae": {}, "sae_args": {}}, r"is an SAE, not a model checkpoint"),
        "an SAE of before kinds": ({"sae": {}, "sae_args": {}}, r"is an SAE, not a model checkpoint"),
        "no known kind": ({"weights": {}}, r"is a dict of no known kind \(fields: weights\)"),
        "unknown kind": ({"kind": "tokenizer"}, r"is a file of unknown kind 'tokenizer'"),
        "a newer format": ({**torch.load(path, weights_only=True), "format": 9}, r"is a model checkpoint of format 9, written by newer code \(this code reads formats up to 2\); remake"),
        "kind without its fields": ({"kind": "model", "format": 1, "model": [], "model_args": {}},
                                    r"is a model checkpoint without a valid model"),
        "no checksum": ({k: v for k, v in torch.load(path, weights_only=True).items() if k != "checksum"}, "is damaged"),
    }
    for what, (content, pattern) in cases.items():
        if isinstance(content, bytes):
            with open(path, "wb") as f:
                f.write(content)
        else:
            torch.save(content, path)
        with pytest.raises(SystemExit) as e:
            load_model(str(tmp_path), "base")
        msg = one_line(e)
        assert path in msg and re.search(pattern, msg), (what, msg)
        assert "python train.py --domain base --overwrite" in msg, (what, msg)


def test_a_checkpoint_from_before_kinds_loads_with_its_kind_inferred(tmp_path):
    """Files of the version before kinds: no kind, format or checksum, and torch.__version__ kept as a
    TorchVersion (allowed: the one object that version wrote); they load as what their fields say."""
    from torch.torch_version import TorchVersion

    from model import load_model
    path = saved(tmp_path)
    ck = {k: v for k, v in torch.load(path, weights_only=True).items() if k not in ("kind", "format", "checksum")}
    ck["provenance"]["torch"] = TorchVersion(torch.__version__)
    torch.save(ck, path)
    net, loaded = load_model(str(tmp_path), "base")
    assert "kind" not in loaded and torch.equal(loaded["model"]["tok_emb.weight"], ck["model"]["tok_emb.weight"])


def test_generate_with_top_k_1_is_greedy_over_the_last_block_size_tokens():
    from model import generate
    m = make()
    prompt = torch.randint(0, 97, (2, 20))                     # longer than block_size 16: a sliding window
    got = generate(m, prompt, 6, temperature=0.7, top_k=1)
    want = prompt
    for _ in range(6):
        nxt = m(want[:, -16:])[0][:, -1].argmax(-1, keepdim=True)
        want = torch.cat([want, nxt], dim=1)
    assert torch.equal(got, want) and got.shape == (2, 26)


def test_generate_draws_from_the_softmax_of_the_tempered_top_k_logits():
    """One step for 40,000 copies of one context: every token drawn is among the top_k, and each one's
    frequency is its softmax(logits / temperature) over the top_k (within 5 standard errors)."""
    from model import generate
    m = make()
    with torch.no_grad():
        m.lm_head.weight.mul_(12)                                # logits spread over a few units
    ctx = torch.randint(0, 97, (1, 8))
    logits = m(ctx)[0][0, -1].detach()
    top = torch.topk(logits, 5).indices
    p = torch.softmax(logits[top] / 0.5, dim=0)
    assert p.max() < 0.9 and p.min() > 0.01                      # a distribution, not one sure token
    drawn = generate(m, ctx.expand(40_000, -1), 1, temperature=0.5, top_k=5,
                     generator=torch.Generator().manual_seed(0))[:, -1]
    assert set(drawn.tolist()) <= set(top.tolist())
    freq = torch.stack([(drawn == t).float().mean() for t in top])
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 40_000).sqrt() + 1e-9).all(), (freq, p)


def test_model_py_writes_a_models_continuations_of_a_prompt(tmp_path, capsys):
    """python model.py: the model's samples, each the prompt and its continuation; the same seed the same
    text; a document that ends (EOT drawn) is cut there and says so."""
    import helpers

    import model
    from model import ModelArgs, save_checkpoint
    data_dir, out_dir = str(tmp_path / "data"), str(tmp_path / "out")
    th = helpers.write_tokenizer(data_dir)
    net = make(vocab_size=257)

    def sample(*extra):
        save_checkpoint(os.path.join(out_dir, "lua", "ckpt.pt"), net, ModelArgs(**(ARGS | {"vocab_size": 257})),
                        finished=True, name="lua", domain="lua", tokenizer_hash=th, parents=[], iter_num=7)
        model.main([f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--model=lua", "--prompt=local x",
                    "--max_new_tokens=12", "--num_samples=2", "--device=cpu", *extra])
        return capsys.readouterr().out
    first = sample()
    assert first.startswith("lua: trained on lua (7 steps)") and first.count("--- sample") == 2
    texts = [t.split("\n", 1)[1] for t in first.split("--- sample ")[1:]]
    assert all(t.startswith("local x") for t in texts) and texts[0] != texts[1]
    assert sample() == first and sample("--seed=1") != first
    with torch.no_grad():  # a residual stream with one large positive coordinate, read by EOT's row only
        net.tok_emb.weight[:, 0] = 10.0
        net.lm_head.weight[256, 0] = 100.0
    ended = sample()
    assert ended.count("local x\n[end of the document]") == 2
    save_checkpoint(os.path.join(out_dir, "lua_plain", "ckpt.pt"), net, ModelArgs(**(ARGS | {"vocab_size": 257})),
                    finished=True, name="lua_plain", domain="lua", tokenizer_hash=th, parents=[])
    model.main([f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--model=lua_plain", "--num_samples=1"])
    assert capsys.readouterr().out.startswith("lua_plain: trained on lua, ")   # a variant's folder; no steps kept
    with pytest.raises(SystemExit, match="must be a plain folder name"):
        model.main([f"--out_dir={out_dir}", "--model=../lua"])
    with pytest.raises(SystemExit, match=r"no 'lua_long' model checkpoint at .*; make it with: python train.py "
                                         r"--domain DOMAIN --name lua_long \(or python merge.py --out lua_long --a A "
                                         r"--b B --t T --mode MODE\)$"):
        model.main([f"--out_dir={out_dir}", "--model=lua_long"])
    os.makedirs(os.path.join(out_dir, "lua_long"))
    with open(os.path.join(out_dir, "lua_long", "ckpt.pt"), "wb") as f:
        f.write(b"\x00not a checkpoint")                  # damaged, its domain unknown: the command to fill in
    with pytest.raises(SystemExit, match=r"remake it: python train.py --domain DOMAIN --name lua_long --overwrite$"):
        model.main([f"--out_dir={out_dir}", "--model=lua_long"])


# -----------------------------------------------------------------------------
# known answers for the blocks the study's numbers run through (mutation round 3)

def test_rmsnorm_known_answer_with_gain_and_eps():
    from model import RMSNorm
    norm = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.5]))
    # (3, 4): mean square (9 + 16) / 2 = 12.5, so x / sqrt(12.5) times the gains (2, 0.5)
    want = torch.tensor([3.0, 4.0]) / math.sqrt(12.5) * torch.tensor([2.0, 0.5])
    torch.testing.assert_close(norm(torch.tensor([[3.0, 4.0]])), want[None])
    # eps inside the root: (1e-3, 1e-3) has mean square 1e-6, + eps 1e-6 -> 1e-3 / sqrt(2e-6) = 1 / sqrt(2)
    norm = RMSNorm(2, eps=1e-6)
    torch.testing.assert_close(norm(torch.full((1, 2), 1e-3)), torch.full((1, 2), 2 ** -0.5))
    assert torch.equal(norm(torch.zeros(1, 2)), torch.zeros(1, 2))   # a zero vector stays 0, never NaN


def test_rope_known_answer_rotates_each_pair_by_position_times_its_frequency():
    # head_dim 4, theta 100: pair frequencies 100^(-0/4) = 1 and 100^(-2/4) = 0.1; position t turns
    # (1, 0) to (cos a, sin a) with a = t x frequency (counter-clockwise), and position 0 not at all
    cos, sin = rope_cache(3, 4, 100.0)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).expand(1, 1, 3, 4)
    want = torch.tensor([[math.cos(t), math.sin(t), math.cos(0.1 * t), math.sin(0.1 * t)] for t in range(3)])
    torch.testing.assert_close(apply_rope(x, cos, sin)[0, 0], want)
    # the second component of a pair: (0, 1) turns to (-sin a, cos a)
    y = torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(1, 1, 3, 4)
    torch.testing.assert_close(apply_rope(y, cos, sin)[0, 0, 2, :2], torch.tensor([-math.sin(2), math.cos(2)]))


def test_command_of_names_what_made_the_loaded_model():
    # the fix for a variant's weights that do not fit its args: a fine-tune of another parent than base is
    # remade with that --parent (without it train.py starts from base), a merge with its record's settings
    from model import command_of
    ft = {"domain": "lua", "parents": [{"name": "base2", "hash": "h"}]}
    assert command_of("lua2", ft) == "python train.py --domain lua --name lua2 --parent base2"
    assert command_of("lua3", {**ft, "parents": [{"name": "base", "hash": "h"}]}) == \
        "python train.py --domain lua --name lua3"
    assert command_of("base2", {"domain": "base", "parents": []}) == "python train.py --domain base --name base2"
    assert command_of("lua4", {"domain": "lua", "parents": "hand-made"}) == "python train.py --domain lua --name lua4"
    assert command_of("lua", ft) == "python train.py --domain lua"                  # the study's own (MAKES)
    merged = {"domain": None, "merge": {"a": "lua", "b": "tinystories", "t": 0.5, "mode": "slerp",
                                        "parent": None, "dot_threshold": 0.9995}}
    assert command_of("m", merged) == ("python merge.py --out m --a lua --b tinystories --t 0.5 --mode slerp "
                                       "--dot_threshold 0.9995")


def test_a_merge_record_with_numbers_past_a_float_names_the_settings_to_fill_in(tmp_path):
    # a hostile or damaged merge.json (whole by its checksum) or checkpoint record whose t, threshold or rule
    # holds an integer past a float's range: the fix asks for the settings, never an OverflowError traceback
    from common import atomic_write_json, stamp
    from model import command_of, load_model, merge_command
    rec = {"a": "lua", "b": "tinystories", "t": 0.5, "mode": "slerp", "parent": None, "dot_threshold": 0.9995}
    fill_in = "python merge.py --out m --a A --b B --t T --mode MODE"
    for bad in ({"t": 10 ** 400}, {"dot_threshold": 10 ** 400}, {"t_rules": [["mlp*", 10 ** 400]]}):
        assert merge_command("m", {**rec, **bad}) == fill_in
        assert command_of("m", {"domain": None, "merge": {**rec, **bad}}) == fill_in
    os.makedirs(tmp_path / "m")
    atomic_write_json(str(tmp_path / "m" / "merge.json"), stamp({**rec, "t": 10 ** 400, "made_from": {}}, "merge"))
    with pytest.raises(SystemExit, match=rf"no 'm' model checkpoint at .*; make it with: {re.escape(fill_in)}$"):
        load_model(str(tmp_path), "m")
