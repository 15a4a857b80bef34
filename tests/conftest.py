"""One CPU thread count for every test run in this process. A script's --threads 0 takes the cores free at
that moment (common.free_cores), and float sums differ in their last bits between thread counts: two runs a
test compares bit for bit (a resumed run against an unstopped one, a rerun against the first, a module's
fixture's run against a test's) would then depend on the machine's load between them. Tests that start a
script in another process pass --threads.

The pin is session-wide, so module-scoped fixtures (test_analyze's study, made before any function-scoped
fixture) take it too; and torch's thread count is 1 at the start and the end of every test, so what a
script's set_threads left (in a test, or in a module's fixture made between two tests) is not what the next
test computes with, whichever tests ran before it."""
import functools

import pytest

import common


@pytest.fixture(scope="session", autouse=True)
def one_free_core():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "free_cores", functools.wraps(common.free_cores)(lambda sample_s=0.1: 1))
        try:
            import torch
            torch.set_num_threads(1)  # the session's first module fixture too
        except ImportError:
            pass
        yield


@pytest.fixture(autouse=True)
def one_thread_count(one_free_core):
    try:
        import torch
    except ImportError:  # data.py's tests run without torch (Python 3.10 in CI)
        yield
        return
    torch.set_num_threads(1)  # a module's fixture may have run a script just now (test_diffing's pipeline: 1)
    yield
    torch.set_num_threads(1)  # what a script's set_threads left is not the next test's
