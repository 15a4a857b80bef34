"""bench.py's own plumbing (its figures are never asserted): a part that fails leaves the others
their run and their figures, and the LM step falls back to eager when the compiled backward
fails."""
import json

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
