"""The reading path's size: each idea of the study, followed from its entry function through every
function it calls on the plain path (fast off), stays within the lines a learner reads in one sitting.
Lines are counted as written, docstrings included, blank and comment-only lines out.
`python tests/test_reading.py` prints the table."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# idea: (budget, [(file, qualified name)]): the entry first, then what it calls on the plain path
IDEAS = {
    "model forward": (150, [("model.py", n) for n in (   # with the modules it runs (their __init__s)
        "Transformer.forward", "Transformer.trunk", "Transformer.final", "RMSNorm.forward", "Attention.forward",
        "apply_rope", "MLP.hidden", "ModelArgs", "Transformer.__init__", "RMSNorm.__init__", "Attention.__init__",
        "MLP.__init__", "rope_cache")]),
    "one LM step": (100, [("train.py", "train_step"), ("train.py", "lr_at"), ("train.py", "lr_schedule"),
                          ("train.py", "FiniteGuard.update"), ("train.py", "next_batch"),
                          ("data.py", "get_batch"), ("data.py", "epoch_batch"), ("data.py", "epoch_order"),
                          ("data.py", "windows_at")]),
    "one SAE step (relu and topk)": (140, [("sae.py", n) for n in (
        "train_seeds", "train_step", "sae_loss", "firing", "SAE.__init__", "SAE.forward", "SAE.encode",
        "SAE.pre_acts", "SAE.activate", "SAE.decode",
        "ReLU.__init__", "ReLU.__call__", "ReLU.penalty", "TopK.__init__", "TopK.__call__", "TopK.penalty",
        "TopK.aux_hat", "TopK.aux_loss", "lr_at", "l1_at", "remove_parallel_grad",
        "normalize_decoder")]),
    "harvest": (70, [("sae.py", "harvest"), ("sae.py", "harvest_draws"), ("sae.py", "stream_windows"),
                     ("sae.py", "mlp_activations"), ("model.py", "Transformer.mlp_acts")]),
    "SAE metrics": (110, [("sae.py", n) for n in (
        "evaluate", "fvu_from_sums", "ce_recovered", "kl_div", "dead_fraction", "dense_fraction",
        "density_histogram")] + [("model.py", "Transformer.head")]),
    "streamed correlation": (80, [("analyze.py", "CorrAccumulator"), ("analyze.py", "pearson")]),
    "classification and null": (100, [("analyze.py", "classify"), ("analyze.py", "vs_null")]),
}
# the rest of the reading path: no budget, but held to nanoGPT's 100 characters a line like the ideas
ALSO_READ = ([("model.py", "eval_loss"), ("train.py", "FiniteGuard"), ("train.py", "evaluate"),
              ("sae.py", "SAE"), ("sae.py", "ReLU"), ("sae.py", "TopK")]
             + [("analyze.py", n) for n in ("CorrAccumulator", "classify", "vs_null", "families",
                                            "greedy_matching", "linear_sum_assignment", "max_weight_matching")]
             + [("merge.py", "slerp"), ("merge.py", "merge_state_dicts")])


def definitions(path):
    """{qualified name: ast node} of the functions of a file (methods as Class.name)."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        if isinstance(node, ast.ClassDef):
            out.update({f"{node.name}.{m.name}": m for m in node.body if isinstance(m, ast.FunctionDef)})
    return out


def source_of(path, name):
    """[(line number, line)] of a function as written, decorators and docstring included."""
    node = definitions(path)[name]
    src = open(os.path.join(ROOT, path)).read().split("\n")
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    return list(enumerate(src[start - 1:node.end_lineno], start))


def lines_of(path, name):
    """Lines of a function as written (decorators and docstring included), blank and comment-only out."""
    return sum(1 for _, line in source_of(path, name) if line.strip() and not line.strip().startswith("#"))


def too_long():
    """['file:line (n chars, function)'] of the reading path's lines over 100 characters."""
    read = sorted({fn for _, names in IDEAS.values() for fn in names} | set(ALSO_READ))
    return [f"{path}:{i} ({len(line)} chars, {name})" for path, name in read
            for i, line in source_of(path, name) if len(line) > 100]


def count(idea):
    return sum(lines_of(path, name) for path, name in IDEAS[idea][1])


def test_each_idea_reads_within_its_budget():
    over = {idea: (count(idea), budget) for idea, (budget, _) in IDEAS.items() if count(idea) > budget}
    assert not over, f"lines read (counted, budget): {over}"


def test_reading_path_lines_fit_100_characters():
    long = too_long()
    assert not long, f"lines over 100 characters on the reading path: {', '.join(long)}"


def test_the_counter_counts_code_not_blank_or_comment_lines(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text('@dec\ndef f(x):\n    """doc"""\n\n    # why\n    return x  # (B, T)\n\n\nclass C:\n'
                                   '    def g(self):\n        pass\n')
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert lines_of("m.py", "f") == 4 and lines_of("m.py", "C.g") == 2


if __name__ == "__main__":
    for idea, (budget, names) in IDEAS.items():
        print(f"{idea:32s} {count(idea):4d} lines (budget {budget}): {', '.join(n for _, n in names)}")
    print(f"lines over 100 characters on the reading path: {len(too_long())}")
