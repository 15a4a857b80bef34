"""bench.py's own plumbing (its figures are never asserted): a part that fails leaves the others
their run and their figures, and the LM step falls back to eager when the compiled backward
fails."""
import json

import numpy as np
import pytest
import torch
from helpers import one_thread  # noqa: F401 (an autouse fixture)

import bench
import common


def test_a_failing_part_is_named_and_the_other_parts_still_run_and_are_saved(tmp_path, monkeypatch):
    ran, saved = [], []
    out = str(tmp_path / "bench.json")

    def fails(cfg, device):
        ran.append("bpe")
        raise RuntimeError("a kernel this device lacks")

    def works(cfg, device):
        ran.append("data")
        saved.append(json.load(open(out))["rows"][0]["ours"])  # the failed part's, saved already
        bench.row("data", "something", "1 MB/s")

    monkeypatch.setattr(bench, "ROWS", [])
    monkeypatch.setattr(bench, "bench_bpe", fails)
    monkeypatch.setattr(bench, "bench_data", works)
    with pytest.raises(common.UserError, match="bpe failed"):
        bench.main(["--only=bpe,data", "--device=cpu", f"--json_out={out}"])
    assert ran == ["bpe", "data"] and saved == ["FAILED (RuntimeError)"]
    rows = json.load(open(out))["rows"]
    assert [(r["part"], r["ours"]) for r in rows] == [("bpe", "FAILED (RuntimeError)"),
                                                      ("data", "1 MB/s")]


def test_the_lm_step_times_eager_when_the_compiled_backward_fails(monkeypatch, capsys):
    class Fails(torch.autograd.Function):  # a backward that cannot be lowered, at its first call
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("backward lowering failed")

    model = torch.nn.Linear(4, 1)
    compiled = lambda x: Fails.apply(model(x))  # noqa: E731
    monkeypatch.setattr(torch, "compile", lambda m: compiled)
    x = torch.randn(8, 4)
    step = bench.lm_step(model, lambda m: m(x).pow(2).mean(), "cpu",
                         lambda: torch.autocast("cpu", enabled=False), compile_=True)
    before = model.weight.detach().clone()
    step()
    step()
    assert "timing eager instead" in capsys.readouterr().out
    assert not torch.equal(model.weight, before)  # the eager steps trained


def test_the_plan_projects_without_the_crosscoder_when_its_step_fails(monkeypatch):
    def fails(cfg, device):
        raise RuntimeError("a kernel this device lacks")
    monkeypatch.setattr(bench, "ROWS", [])
    monkeypatch.setattr(bench, "bench_train", lambda *a, **k: 1e5)
    monkeypatch.setattr(bench, "sae_step_rates", lambda cfg, device: ({"each seed, dense": 1e4},
                                                                      "each seed, dense"))
    monkeypatch.setattr(bench, "crosscoder_rate", fails)
    monkeypatch.setattr(bench, "harvest_rates", lambda cfg, dev, hb, bf16: dict.fromkeys(hb, 1e3))
    monkeypatch.setattr(bench, "measure_forward_and_corr", lambda *a: (1e5, 1e3))
    cfg = common.parse_config(dict(bench.config), ["--device=cpu"], checks=bench.checks)
    bench.plan(cfg, "cpu")
    rows = {r["what"]: r["ours"] for r in bench.ROWS}
    assert rows["crosscoder step"] == "FAILED (RuntimeError)" and "total (projection)" in rows
    assert not any(w.startswith("diffing") for w in rows)


@pytest.mark.parametrize("only", ["", ",", "bogus"])
def test_an_empty_or_unknown_only_is_one_line_not_a_silent_run_of_nothing(only):
    with pytest.raises(common.UserError, match="--only: (no part named|unknown part 'bogus'); choose from peak"):
        bench.main([f"--only={only}", "--device=cpu"])


# -----------------------------------------------------------------------------
# the pure helpers behind the printed verdicts and warnings (known answers, no timing)

def test_a_goal_met_exactly_is_met_and_a_row_without_a_peer_has_no_verdict(monkeypatch):
    monkeypatch.setattr(bench, "ROWS", [])
    bench.row("train", "step", "1 tok/s", ratio=1.3, goal=1.3)
    bench.row("train", "step", "1 tok/s", ratio=1.2999, goal=1.3)
    bench.row("sae", "step", "1 act/s", goal=1.5)                      # no ratio: nothing to hold against the goal
    bench.row("corr", "pass", "1 tok/s", ratio=9.0, goal="a verdict of its own")
    assert [(r["ratio"], r["goal"]) for r in bench.ROWS] == [
        ("1.30x", ">= 1.3x: met"), ("1.30x", ">= 1.3x: NOT met"), ("", ""), ("9.00x", "a verdict of its own")]


def test_fmt_time_switches_units_at_a_minute_and_an_hour():
    assert [bench.fmt_time(s) for s in (59.4, 60, 3599, 3600, 5400, 90000)] == [
        "59 s", "1.0 min", "60.0 min", "1.0 h", "1.5 h", "25.0 h"]


def test_the_smoke_warnings_read_from_a_stages_output():
    assert bench.smoke_findings("merge: cos 0.9999 ... cos -0.5\ntokenizer: 32000 tokens\nwarmup 10\niter 20/20") == []
    found = bench.smoke_findings("Traceback (most recent call last):\n  ...\nmerge: cos 0.2 cos -1.0000004\n"
                                 "tokenizer: 31999 tokens\nwarmup over 20 steps\niter 10/20\niter 20/20")
    assert found == ["a traceback instead of a one-line error",
                     "merge: |cos| = 1.000000 > 1 (norms or dot products not in float64)",
                     "data: the BPE stopped at 31,999 tokens, not 32,000 (too little text: raise --smoke_mb)",
                     "train: warmup 20 >= the run's 20 steps: the lr never reaches its value"]


def test_the_peers_pearson_known_answers_and_zero_for_a_constant_column():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 3, generator=g, dtype=torch.float64), torch.rand(50, 2, generator=g, dtype=torch.float64)
    x[:, 2] = 4.0                                                      # constant: r is 0, not nan
    y[:, 1] = 2 * x[:, 0] + 1                                          # r = 1 with x's column 0
    r = bench.pearson_in_memory(x, y)
    want = np.corrcoef(x[:, :2].T.numpy(), y.T.numpy())[:2, 2:]
    assert torch.allclose(r[:2], torch.from_numpy(want), atol=1e-12) and r[0, 1].item() == pytest.approx(1.0)
    assert torch.equal(r[2], torch.zeros(2, dtype=torch.float64))
