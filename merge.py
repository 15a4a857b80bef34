"""
Merge the two fine-tunes into one model by spherical linear interpolation (SLERP), as the paper
does with mergekit, and sweep the interpolation weight.

  python merge.py                  # the paper's merge: --a lua --b tinystories --t 0.58 -> out/luastories/
  python merge.py --mode task --out luastories_task  # SLERP of the deltas (a - base, b - base), added to base
  python merge.py --sweep          # val loss on both domains at t = 0, 0.1, ..., 1 -> out/merge_sweep.json

Convention (mergekit with base_model = a): t = 0 gives model a, t = 1 gives model b; the paper merged
with base_model = lua, t = 0.58. The paper's sweep figure runs the other way (0 = tinystories,
1 = lua); --sweep converts it before printing it beside ours.

SLERP of one tensor, mergekit's semantics: flatten both, cos = <a/|a|, b/|b|>, theta = arccos(cos);
when |cos| > 0.9995 (mergekit DOT_THRESHOLD) fall back to linear interpolation (1-t) a + t b, else
sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b, always of the raw (unnormalised) tensors,
computed in float32 and cast back to the input dtype; the norms and cos are reduced in float64 (in
float32 they are off by ~1e-3 on the 16M-element embedding and LM head). t = 0 and t = 1 return
copies of the inputs.
Two fine-tunes of one base are often nearly colinear, so tensors can silently take the linear path:
each tensor's angle and path is printed and recorded. --mode task interpolates the deltas from the
common parent instead (task vectors), whose angles are far from 0.

Per-parameter t (--t_rules): comma-separated PATTERN=T items, e.g. --t_rules "attn=0.3,mlp=0.7".
A parameter (names like attn.wq.weight, mlp.up.weight, tok_emb.weight, lm_head.weight) takes the T
of the FIRST pattern that matches it; a pattern containing * ? or [ is an fnmatch glob over the whole
name, any other pattern matches as a substring. Parameters no pattern matches take --t. A pattern
that matches no parameter is an error (a typo would otherwise be ignored silently). In --sweep
the grid value takes the place of --t; the rules still apply.
"""
import fnmatch
import json
import math
import os
from types import SimpleNamespace

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common

import torch

import fast
from model import (check_finished, clean_key, eval_loss, load_checkpoint, make_command, merge_command, model_from_checkpoint,
                   save_checkpoint)

config = {
    "a": "lua",               # model at t = 0 (mergekit's base_model): out_dir/<a>/ckpt.pt
    "b": "tinystories",       # model at t = 1
    "t": 0.58,                # weight of b (paper: 0.58 with base_model = lua)
    "t_rules": "",            # per-parameter t: "PATTERN=T,..." first match wins, else --t
    "mode": "slerp",          # slerp: of the weights (paper) | task: of the deltas from --parent
    "parent": "base",         # common parent of a and b, used by --mode task
    "out": "luastories",      # writes out_dir/<out>/ckpt.pt and merge.json
    "dot_threshold": 0.9995,  # mergekit DOT_THRESHOLD: lerp when |cos| is above it
    "sweep": False,           # evaluate every t of --grid on both domains instead of writing a merge
    "grid": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],  # the sweep's values of t
    "eval_batches": 8,        # validation batches per domain and model (0: merge without evaluating)
    "batch_size": 16,         # sequences of block_size tokens per eval batch
    "out_dir": "out",         # where the models are, and the merge goes
    "data_dir": "data",       # validation tokens (made by data.py)
    "device": "auto",         # auto: cuda when available, else cpu
    "threads": 0,             # CPU threads; 0: the cores free now (common.set_threads)
    "fast": True,             # fast.py's evaluation: the LM head a cache-sized block of tokens at a time on a CPU
    "allow_unfinished": False,  # merge a model whose training did not finish (stopped early or killed)
    "allow_unrelated": False,   # merge two models with no common parent (their weights are not aligned)
    "overwrite": False,       # replace an output made from other inputs or settings (same ones: a no-op)
}
PRESETS = {"tiny": {"eval_batches": 8, "batch_size": 16},
           "paper": {"eval_batches": 50, "batch_size": 64}}
CHECKS = {"t": "[0,1]", "grid": "[0,1]", "mode": ("slerp", "task"), "dot_threshold": "[0,1]",
          "eval_batches": ">=0", "batch_size": ">=1", "threads": ">=0"}

# DESIGN.md: the paper's sweep. Its t is the weight of lua (0 = tinystories, 1 = lua).
PAPER_SWEEP = {"t_lua": [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0],
               "tinystories": [2.04, 2.18, 2.49, 2.70, 2.95, 3.53, 4.22],
               "lua": [5.84, 4.73, 3.76, 3.36, 3.02, 2.60, 2.45]}


def check_t(t, what="--t"):
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        common.die(f"{what} = {t} is outside [0, 1] (0 gives model a, 1 gives model b)")


def slerp(a, b, t, eps=1e-8, dot_threshold=0.9995):
    """Spherical interpolation of two same-shape tensors -> (tensor in a's dtype, info dict).

    info: cos and angle_deg between the flattened tensors, linear (True when |cos| > dot_threshold,
    or the angle is 0, and the result is the linear interpolation), norm_a, norm_b."""
    if a.shape != b.shape:
        common.die(f"cannot interpolate tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a32, b32 = a.detach().float().flatten(), b.detach().float().flatten()  # (N,)
    # norms and dot product in float64: a float32 reduction over the 16M-element embedding / LM head
    # is off by ~1e-3 and gives cos > 1 for two nearly colinear fine-tunes (wrong path, wrong angle)
    a64, b64 = a32.double(), b32.double()
    na, nb = torch.linalg.vector_norm(a64).item(), torch.linalg.vector_norm(b64).item()
    # cos = <a/|a|, b/|b|>; mergekit's normalize() leaves a near-zero vector as it is
    cos = torch.dot(a64, b64).item() / ((na if na > eps else 1.0) * (nb if nb > eps else 1.0))
    del a64, b64
    theta = math.acos(max(-1.0, min(1.0, cos)))
    # mergekit: lerp when nearly colinear (either sign); and at theta 0 (cos 1, only reached with
    # --dot_threshold 1), where the slerp weights are 0/0 and their limit is the lerp's
    linear = abs(cos) > dot_threshold or theta == 0.0
    info = {"cos": cos, "angle_deg": math.degrees(theta), "linear": linear, "norm_a": na,
            "norm_b": nb}
    if t == 0:  # the endpoints are the inputs, bit for bit (signed zeros included)
        return a.detach().clone(), info
    if t == 1:
        return b.detach().to(a.dtype, copy=True), info
    if linear:
        out = (1 - t) * a32 + t * b32
    else:
        s = math.sin(theta)
        out = (math.sin((1 - t) * theta) / s) * a32 + (math.sin(t * theta) / s) * b32
    return out.view(a.shape).to(a.dtype), info


def parse_t_rules(text):
    """'attn=0.3,mlp=0.7' -> [('attn', 0.3), ('mlp', 0.7)], order kept (first match wins)."""
    rules = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        pat, sep, val = item.rpartition("=")
        try:
            t = float(val)
        except ValueError:
            t = None
        if not sep or not pat.strip() or t is None:
            common.die(f"--t_rules item {item!r} is not PATTERN=T (e.g. --t_rules \"attn=0.3,mlp=0.7\")")
        check_t(t, f"--t_rules {pat.strip()}")
        rules.append((pat.strip(), t))
    return rules


def rule_matches(name, pattern):
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def check_rules(rules, names):
    """Each rule's t in [0, 1] and its pattern matching some parameter name (a typo would be ignored silently)."""
    for pat, tr in rules:
        check_t(tr, f"t_rules {pat}")
        if not any(rule_matches(n, pat) for n in names):
            common.die(f"t_rules pattern {pat!r} matches no parameter; names are like {', '.join(list(names)[:4])}")


def check_state_dicts(sds):
    """sds {label: state_dict}: same parameter names and shapes, every value finite, else one-line error."""
    (la, ref), *rest = sds.items()
    for lb, sd in rest:
        if set(sd) != set(ref):
            diff = sorted(set(sd) ^ set(ref))
            common.die(f"{la} and {lb} have different parameter names ({', '.join(diff[:4])}); merge models of one architecture")
        for k, v in ref.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                common.die(f"{la} and {lb} differ in the shape of {k}: {tuple(v.shape)} vs {tuple(sd[k].shape)}")
    for label, sd in sds.items():
        for k, v in sd.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                common.die(f"{label} has NaN or inf in {k}; re-train or restore that checkpoint")


def merge_state_dicts(sd_a, sd_b, t, t_rules=None, parent=None, dot_threshold=0.9995):
    """SLERP every tensor of sd_a towards sd_b -> (merged state dict, {name: info}).

    t_rules: "PATTERN=T,..." or [(pattern, t)], first match wins, else t (see the module docstring).
    parent: a state dict; given, interpolates the task vectors (a - parent, b - parent) and adds the
    result back to parent (info then describes the angle between the task vectors)."""
    check_t(t)
    rules = (parse_t_rules(t_rules) if isinstance(t_rules, str)
             else [(p, float(x)) for p, x in (t_rules or [])])
    check_rules(rules, sd_a)
    check_state_dicts({"a": sd_a, "b": sd_b, **({"parent": parent} if parent is not None else {})})
    out, infos = {}, {}
    for name, wa in sd_a.items():
        tn, rule = next(((x, p) for p, x in rules if rule_matches(name, p)), (t, None))
        wb = sd_b[name]
        # integer buffers (none in our model): must agree, kept as is
        if not wa.is_floating_point():
            if not torch.equal(wa, wb):
                common.die(f"a and b differ in the non-float tensor {name}; cannot interpolate it")
            out[name], infos[name] = wa.clone(), {"t": tn, "rule": rule, "linear": None}
            continue
        if parent is None:
            w, info = slerp(wa, wb, tn, dot_threshold=dot_threshold)
        else:
            p = parent[name].float()
            # task vectors
            d, info = slerp(wa.float() - p, wb.float() - p, tn, dot_threshold=dot_threshold)
            w = (wa.clone() if tn == 0 else wb.to(wa.dtype, copy=True) if tn == 1
                 else (p + d).to(wa.dtype))
        out[name], infos[name] = w, {"t": tn, "rule": rule, **info}
    return out, infos


def load_models(out_dir, a, b, parent=None, allow_unfinished=False, allow_unrelated=False):
    """Load and check the checkpoints to merge -> {"a"|"b"|"parent": {"name", "hash", "domain", "ckpt"}}.

    Dies with one line when one is missing (naming the command that makes it), unfinished (unless
    allow_unfinished), unrelated (no common parent, unless allow_unrelated), or when they differ in
    architecture, tokenizer, parameter names or shapes, hold NaN/inf, or parent is not both's parent."""
    names = {"a": a, "b": b, **({"parent": parent} if parent else {})}
    if a == b:
        common.die(f"--a and --b are both {a!r}; merge two different models")
    out = {}
    for role, name in names.items():
        how = make_command(name, out_dir)
        path = os.path.join(out_dir, name, "ckpt.pt")
        ckpt = load_checkpoint(path, f"'{name}' model checkpoint", how)
        check_finished(ckpt, path, name, allow_unfinished)
        # strip torch.compile / DDP prefixes, as model_from_checkpoint does
        ckpt["model"] = {clean_key(k): v for k, v in ckpt["model"].items()}
        out[role] = {"name": name, "hash": common.sha256_file(path), "domain": ckpt.get("domain"), "ckpt": ckpt}
    ref = out["a"]["ckpt"]
    for role in names:
        c = out[role]["ckpt"]
        diff = [k for k in sorted(set(c["model_args"]) | set(ref["model_args"]))
                if c["model_args"].get(k) != ref["model_args"].get(k)]
        if diff:
            shown = ", ".join(f"{k} {ref['model_args'].get(k)} vs {c['model_args'].get(k)}" for k in diff)
            common.die(f"{a} and {names[role]} have different architectures ({shown}); merge fine-tunes of one base")
        if c.get("tokenizer_hash") != ref.get("tokenizer_hash"):
            common.die(f"{a} and {names[role]} were trained with different tokenizers "
                       f"({ref.get('tokenizer_hash')} vs {c.get('tokenizer_hash')}); re-train them on one data_dir")
    check_state_dicts({names[r]: out[r]["ckpt"]["model"] for r in names})
    check_related(out, allow_unrelated)
    if parent:
        for role in ("a", "b"):
            hashes = [p.get("hash") for p in out[role]["ckpt"].get("parents", [])]
            if out["parent"]["hash"] not in hashes:
                common.die(f"--parent {parent} (hash {out['parent']['hash']}) is not a parent of {names[role]} "
                           f"(its parents: {hashes or 'none'}); pass the checkpoint both were fine-tuned from")
    return out


def check_related(models, allow_unrelated):
    """SLERP assumes a and b are fine-tunes of one model (or one is the other's parent): two models
    trained apart have unaligned weights, and their interpolation means nothing, so it is refused."""
    def lineage(model):  # its own hash and its parents'
        return {model["hash"]} | {p.get("hash") for p in model["ckpt"].get("parents", []) if p.get("hash")}
    a, b = models["a"], models["b"]
    if lineage(a) & lineage(b):
        return
    parents = {x["name"]: [p.get("name") for p in x["ckpt"].get("parents", [])] for x in (a, b)}
    if not allow_unrelated:
        common.die(f"{a['name']} and {b['name']} share no parent (parents: {parents}); their weights are not aligned, "
                   f"so their merge means nothing; merge fine-tunes of one base, or pass --allow_unrelated")
    print(f"warning: {a['name']} and {b['name']} share no parent (parents: {parents}); merging anyway (--allow_unrelated)")


def print_angles(infos, threshold, hint="", show_t=True):
    """One line per tensor (angle, path) and the summary line; returns how many fell back to linear."""
    for name, i in infos.items():
        t = f"t={i['t']:.3f}  " if show_t else ""
        if i["linear"] is None:
            print(f"  {name:24s} {t}(not floating point, copied)")
            continue
        path = f"LINEAR (|cos| > {threshold})" if i["linear"] else "slerp"
        print(f"  {name:24s} {t}angle {i['angle_deg']:8.4f} deg  cos {i['cos']:+.6f}  {path}")
    n = sum(bool(i["linear"]) for i in infos.values())
    print(f"fell back to linear interpolation on {n}/{len(infos)} tensors" + (hint if n else ""))
    return n


def crossing(ts, loss_a, loss_b):
    """First t where loss_a - loss_b changes sign, linearly interpolated between grid points; None if never."""
    d = [x - y for x, y in zip(loss_a, loss_b)]
    for i in range(len(ts)):
        if d[i] == 0:
            return ts[i]
        if i + 1 < len(ts) and d[i] * d[i + 1] < 0:
            return ts[i] + (ts[i + 1] - ts[i]) * d[i] / (d[i] - d[i + 1])
    return None


def paper_sweep_in_our_t(dom_a, dom_b):
    """The paper's sweep as {"t": our t (weight of b), domain: losses}, or None unless a, b are lua, tinystories."""
    if {dom_a, dom_b} != {"lua", "tinystories"}:
        return None
    ts = [w if dom_b == "lua" else 1.0 - w for w in PAPER_SWEEP["t_lua"]]
    order = sorted(range(len(ts)), key=ts.__getitem__)
    return {"t": [round(ts[i], 6) for i in order], **{d: [PAPER_SWEEP[d][i] for i in order] for d in (dom_a, dom_b)}}


def main(argv=None):
    cfg = common.parse_config(dict(config), argv, PRESETS, common.default_preset(), checks=CHECKS)
    run = plan(cfg)
    # one merge (or sweep) at a time writes these files: the lock is taken first, so a second run into the
    # folder is refused at once, not after loading (the first may have written and gone by then)
    with common.lock_dir(run.lock_dir, "merge.py" + " --sweep" * cfg["sweep"]):
        models = load_models(cfg["out_dir"], cfg["a"], cfg["b"], run.parent, cfg["allow_unfinished"],
                             cfg["allow_unrelated"])
        check_rules(run.rules, models["a"]["ckpt"]["model"])
        windows = load_eval_windows(cfg, models)  # before merging: a missing file fails before anything is written
        inputs = {r: {"name": models[r]["name"], "hash": models[r]["hash"]} for r in models}
        # an output made from these very inputs and settings is kept; one made from others needs --overwrite
        made_from = {"inputs": inputs, "mode": cfg["mode"], "t_rules": run.rules, "dot_threshold": cfg["dot_threshold"],
                     "t": run.grid if cfg["sweep"] else cfg["t"]}
        if up_to_date(cfg, run, made_from):
            return
        n_params = sum(v.numel() for v in models["a"]["ckpt"]["model"].values())
        # what it writes: a sweep a JSON of a few KB; a merge its checkpoint (the weights, the old one kept until
        # the new one is in place) and merge.json
        common.check_free_space(cfg["out_dir"], (1 << 20) if cfg["sweep"] else 2 * 4 * n_params + (1 << 20),
                                "merge.py's output")
        net = model_from_checkpoint(models["a"]["ckpt"], run.device)

        rows = fast.head_rows(net, cfg["batch_size"] * net.args.block_size) if cfg["fast"] else None

        def evaluate(sd):
            net.load_state_dict(sd)
            return {d: eval_loss(net, wins, cfg["batch_size"], run.device, rows=rows) for d, wins in windows.items()}

        if cfg["sweep"]:
            return sweep(cfg, run, models, evaluate, made_from, inputs)
        return write_merge(cfg, run, models, evaluate if windows else None, made_from, inputs)


def plan(cfg):
    """The settings checked against each other, the output paths, and the start-up line."""
    run = SimpleNamespace(device=common.pick_device(cfg["device"]), rules=parse_t_rules(cfg["t_rules"]),
                          grid=sorted(set(cfg["grid"])), parent=cfg["parent"] if cfg["mode"] == "task" else None)
    run.threads = common.set_threads(cfg["threads"], run.device)
    if not cfg["sweep"]:
        check_out(cfg)
    if cfg["sweep"] and (cfg["eval_batches"] < 1 or not run.grid):
        common.die("--sweep needs --eval_batches >= 1 and a non-empty --grid")
    run.lock_dir = cfg["out_dir"] if cfg["sweep"] else os.path.join(cfg["out_dir"], cfg["out"])
    run.out_path = (os.path.join(cfg["out_dir"], "merge_sweep.json") if cfg["sweep"]
                    else os.path.join(cfg["out_dir"], cfg["out"], "merge.json"))
    run.ckpt_path = os.path.join(cfg["out_dir"], cfg["out"], "ckpt.pt")
    run.hint = "" if run.parent else "; --mode task interpolates the deltas from --parent instead"
    grid = run.grid
    what = f"t {grid[0]}..{grid[-1]} ({len(grid)} points)" if cfg["sweep"] else f"t {cfg['t']}"
    print(f"merge: preset {cfg['preset']}, device {run.device} ({run.threads} CPU threads), a={cfg['a']} (t=0) b={cfg['b']} (t=1), {what}, "
          f"mode {cfg['mode']}" + (f" (parent {run.parent})" if run.parent else "") + f", rules {run.rules or 'none'}, "
          f"eval {cfg['eval_batches']}x{cfg['batch_size']} seqs/domain")
    return run


def check_out(cfg):
    """--out is a new folder under out_dir, or one an earlier merge made: never an input (--a, --b, --parent,
    whatever --mode), a model train.py made (its metrics.json), another stage's folder, or a path elsewhere."""
    out = cfg["out"]
    if out in (cfg["a"], cfg["b"], cfg["parent"]):
        common.die(f"--out {out} would overwrite an input checkpoint; choose another name (e.g. --out merged)")
    common.check_model_folder("--out", out, "; e.g. --out merged")
    if os.path.exists(os.path.join(cfg["out_dir"], out, "metrics.json")):
        common.die(f"--out {out}: {os.path.join(cfg['out_dir'], out)} holds a model train.py made; a merge would "
                   f"replace it; choose another name (e.g. --out merged)")


def load_eval_windows(cfg, models):
    """{domain: the evaluation's val windows} of a's and b's domains (eval_batches x batch_size consecutive
    windows, the same for every merge), checked against the models' tokenizer ({} without evaluation)."""
    if cfg["eval_batches"] == 0:
        return {}
    import data  # only the evaluation needs the data code
    ca = models["a"]["ckpt"]
    doms = list(dict.fromkeys(models[r]["domain"] or models[r]["name"] for r in ("a", "b")))
    T = ca["model_args"]["block_size"]
    return {d: data.sample_windows(data.open_tokens(cfg["data_dir"], d, "val", ca.get("tokenizer_hash"),
                                                    ca["model_args"]["vocab_size"], models["a"]["name"]),
                                   cfg["eval_batches"] * cfg["batch_size"], T + 1, "consecutive") for d in doms}


def up_to_date(cfg, run, made_from):
    """True when the output exists and was made from these inputs and settings (nothing to do). Where
    merge.json is missing, damaged or disagrees with the checkpoint, the checkpoint's own record (whole by
    its checksum) decides: made so, merge.json is rewritten from it; made otherwise, nothing is replaced
    without --overwrite."""
    # the fix remakes this merge (or sweep): every setting that made it (--out alone: the default inputs and t)
    kind = "sweep" if cfg["sweep"] else "merge"
    how = merge_command(cfg["out"], {**cfg, "t_rules": run.rules}, run.grid if cfg["sweep"] else None) + " --overwrite"
    made_otherwise = "exists but was made from other inputs or settings; add --overwrite to replace it"
    if not cfg["sweep"] and not cfg["overwrite"] and not os.path.lexists(run.out_path) and \
            os.path.isfile(run.ckpt_path):  # merge.json lost
        if record_from_checkpoint(run, made_from, how):
            return True
        common.die(f"{run.ckpt_path} {made_otherwise}")
    if not (os.path.exists(run.out_path) and (cfg["sweep"] or os.path.exists(run.ckpt_path))) or cfg["overwrite"]:
        return False
    try:
        record = common.read_record(run.out_path, kind, how)
    except common.UserError:  # merge.json damaged: rewritten from a checkpoint that says it was made so
        try:  # (another stage's record in its place is named, never overwritten)
            another = common.read_json(run.out_path).get("kind") not in (None, "merge")
        except (OSError, ValueError, AttributeError):
            another = False
        if cfg["sweep"] or another or not record_from_checkpoint(run, made_from, how):
            raise
        return True
    same = plain(record["made_from"]) == plain(made_from)
    held = record.get("checkpoint")  # the merge's checkpoint, as it was written ({path, hash})
    held = held.get("hash") if isinstance(held, dict) else "not a record"
    if same and (cfg["sweep"] or held is None or (os.path.isfile(run.ckpt_path)  # (not a folder in its place)
                                                  and common.sha256_file(run.ckpt_path) == held)):
        print(f"{run.out_path} was made from these inputs and settings; nothing to do")
        return True
    if not cfg["sweep"] and os.path.isfile(run.ckpt_path) and record_from_checkpoint(run, made_from, how):
        return True  # merge.json edited or damaged, the checkpoint made so: remaking it would cost its SAEs
    if same:
        common.die(f"{run.ckpt_path} is not the merge {run.out_path} records (replaced or damaged since); "
                   f"remake it: {how}")
    common.die(f"{run.out_path} {made_otherwise}")


def plain(x):
    """x as JSON gives it back (tuples become lists): what a record read from disk is compared in."""
    return json.loads(json.dumps(x))


def record_from_checkpoint(run, made_from, how):
    """merge.json rewritten from the merge's checkpoint (whole by its checksum) when the checkpoint's own
    record says it was made from these inputs and settings: remaking the merge would give the weights a new
    file hash, and every SAE of it would then need retraining. False when it says otherwise."""
    ck = load_checkpoint(run.ckpt_path, "merge", how, again="")  # (how names --overwrite already)
    rec = ck.get("merge") or {}
    inputs = made_from["inputs"]
    if plain([ck.get("parents"), rec.get("parent"), [rec.get(k) for k in ("mode", "t_rules", "dot_threshold", "t")]]) \
            != plain([[inputs["a"], inputs["b"]], inputs.get("parent"),
                      [made_from[k] for k in ("mode", "t_rules", "dot_threshold", "t")]]):
        return False
    # a checkpoint of an older merge.py kept no per-tensor record: {} (recomputed, it would describe this code's
    # interpolation, not necessarily the one that made the weights)
    write_record(run, {**rec, "tensors": rec.get("tensors", {})}, made_from, ck.get("val_loss") or {},
                 ck["parents"], ck.get("provenance") or {})
    print(f"{run.out_path} was missing or damaged; rewritten from {run.ckpt_path}, which was made from these inputs "
          f"and settings")
    return True


def sweep(cfg, run, models, evaluate, made_from, inputs):
    """Val loss on both domains at every t of the grid -> merge_sweep.json (no checkpoint)."""
    ca, cb, grid = models["a"]["ckpt"], models["b"]["ckpt"], run.grid
    sd_p = models["parent"]["ckpt"]["model"] if run.parent else None
    doms = list(dict.fromkeys(models[r]["domain"] or models[r]["name"] for r in ("a", "b")))
    losses = {d: [] for d in doms}
    for i, t in enumerate(grid):
        sd, infos = merge_state_dicts(ca["model"], cb["model"], t, run.rules, sd_p, cfg["dot_threshold"])
        if i == 0:
            print_angles(infos, cfg["dot_threshold"], run.hint, show_t=bool(run.rules))  # angles do not depend on t
        for d, v in evaluate(sd).items():
            losses[d].append(v)
        print(f"sweep {i + 1}/{len(grid)}: t={t:.3f} " + " ".join(f"{d} {losses[d][-1]:.4f}" for d in doms))
    cross = crossing(grid, losses[doms[0]], losses[doms[-1]]) if len(doms) == 2 else None
    paper = paper_sweep_in_our_t(*doms) if len(doms) == 2 else None
    paper_cross = crossing(paper["t"], paper[doms[0]], paper[doms[1]]) if paper else None
    print_sweep(cfg, grid, doms, losses, paper, cross, paper_cross)
    common.atomic_write_json(run.out_path, common.stamp({
        "made_from": made_from, "t": grid, "loss": losses, "domains": doms, "a": inputs["a"], "b": inputs["b"],
        "mode": cfg["mode"], "parent": inputs.get("parent"), "t_rules": run.rules, "crossing_t": cross,
        "paper": paper and {**paper, "crossing_t": paper_cross, "note": "paper's t (weight of lua) converted to ours (weight of b)"},
        "provenance": common.provenance(cfg, inputs=inputs)}, "sweep"))
    print(f"wrote {run.out_path}")


def print_sweep(cfg, grid, doms, losses, paper, cross, paper_cross):
    if paper:
        print(f"paper figures converted to our t (weight of {cfg['b']}); the paper's own t is the weight of lua")
    print(f"{'t':>6s} " + " ".join(f"{d:>12s}" for d in doms) + ("".join(f" {'paper ' + d:>18s}" for d in doms) if paper else ""))
    for i, t in enumerate(grid):
        row = f"{t:6.3f} " + " ".join(f"{losses[d][i]:12.4f}" for d in doms)
        j = next((j for j, pt in enumerate(paper["t"]) if abs(pt - t) < 1e-6), None) if paper else None
        if paper:
            row += "".join(f" {paper[d][j]:18.2f}" if j is not None else f" {'':18s}" for d in doms)
        print(row)
    print(f"losses cross at t = {cross if cross is None else round(cross, 4)} (ours)"
          + (f", {paper_cross:.4f} (paper, in our t)" if paper else ""))


def write_merge(cfg, run, models, evaluate, made_from, inputs):
    """The merged model at --t -> out_dir/<out>/ckpt.pt (finished: a merge is complete when written), then merge.json."""
    ca, cb = models["a"]["ckpt"], models["b"]["ckpt"]
    sd_p = models["parent"]["ckpt"]["model"] if run.parent else None
    sd, infos = merge_state_dicts(ca["model"], cb["model"], cfg["t"], run.rules, sd_p, cfg["dot_threshold"])
    n_lin = print_angles(infos, cfg["dot_threshold"], run.hint)
    val = evaluate(sd) if evaluate else {}
    for r in ("a", "b"):  # (a checkpoint saved at a --stop_iter between evaluations has none)
        stored = models[r]["ckpt"].get("val_loss")
        stored = " ".join(f"{d} {v:.4f}" for d, v in stored.items() if isinstance(v, (int, float))) \
            if isinstance(stored, dict) else ""
        print(f"  {models[r]['name']:12s} stored val_loss {stored or 'none'}")
    print(f"  {cfg['out']:12s} val_loss " + (" ".join(f"{d} {v:.4f}" for d, v in val.items())
                                             or "not measured (--eval_batches 0)"))
    # the per-tensor record (cos, angle, path) in the checkpoint too: merge.json rebuilt from it is this one
    record = {"a": cfg["a"], "b": cfg["b"], "t": cfg["t"], "t_rules": run.rules, "mode": cfg["mode"],
              "parent": inputs.get("parent"), "dot_threshold": cfg["dot_threshold"], "fell_back_linear": n_lin,
              "angles": {k: i.get("angle_deg") for k, i in infos.items()}, "tensors": infos}
    prov = common.provenance(cfg, inputs=inputs)
    save_checkpoint(run.ckpt_path, sd, ca["model_args"], finished=True, config=cfg, name=cfg["out"], domain=None,
                    iter_num=0, tokenizer_hash=ca.get("tokenizer_hash"), parents=[inputs["a"], inputs["b"]],
                    val_loss=val, provenance=prov, merge=record)
    # written last: its made_from vouches for the checkpoint
    write_record(run, record, made_from, val, [inputs["a"], inputs["b"]], prov)
    print(f"wrote {run.ckpt_path} and merge.json")


def write_record(run, record, made_from, val, parents, prov):
    """merge.json: the checkpoint's merge record and what it was made from. The one writer (write_merge, and
    record_from_checkpoint from the checkpoint's fields), so a rebuilt merge.json is the merge's own."""
    common.atomic_write_json(run.out_path, common.stamp({
        **record, "made_from": made_from, "val_loss": val,
        "checkpoint": {"path": run.ckpt_path, "hash": common.sha256_file(run.ckpt_path)},
        "parents": parents, "provenance": prov}, "merge"))


if __name__ == "__main__":
    common.cli(main)
