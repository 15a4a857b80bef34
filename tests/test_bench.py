"""bench.py's own plumbing (its figures are never asserted): the LM step falls back to eager when
the compiled backward fails."""
import torch
from helpers import one_thread  # noqa: F401 (an autouse fixture)

import bench


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
