"""Thread defaults (issue 14): the free cores at start, --threads / env overrides, re-counting in serve."""

import pytest
import torch
from typer.testing import CliRunner

from modalbridge import threads
from modalbridge.cli import app
from modalbridge.errors import UserError


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("MODALBRIDGE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)
    threads._auto = False


def test_free_cores_counts_other_runnable_processes(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    for others, free in [(0, 4), (1, 3), (3, 1), (9, 1)]:
        monkeypatch.setattr(threads, "runnable_others", lambda *a, o=others: o)
        assert threads.free_cores() == free
    monkeypatch.setattr(threads, "runnable_others", lambda *a: None)  # no /proc: all cores
    assert threads.free_cores() == 4


def test_runnable_others_reads_proc_loadavg():
    n = threads.runnable_others(samples=3, interval=0.0)
    assert n is None or 0 <= n < 10_000


def test_configure_auto_explicit_and_env(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 1)
    assert threads.configure() == 1 and threads._auto
    assert threads.configure(3) == 3 and not threads._auto
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.configure() == 2 and not threads._auto
    monkeypatch.setenv("MODALBRIDGE_THREADS", "1")  # ours wins over OpenMP's
    assert threads.configure() == 1
    monkeypatch.setenv("MODALBRIDGE_THREADS", "many")
    with pytest.raises(UserError, match="must be an integer"):
        threads.configure()
    for bad in (0, -1, True, 2.5, 10_000):
        with pytest.raises(UserError, match="--threads must be an integer"):
            threads.configure(bad)


def test_adapt_follows_the_load_only_in_auto_mode(monkeypatch):
    free = {"n": 2}
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: free["n"])
    threads.configure()
    assert torch.get_num_threads() == 2
    free["n"] = 1  # another job started
    assert threads.adapt() == 1
    threads.configure(2)  # fixed by the user: adapt leaves it alone
    assert threads.adapt() == 2


def test_cli_threads_option_and_its_error_line():
    runner = CliRunner()
    res = runner.invoke(app, ["classify", "a red dress", "--threads", "1"])
    assert res.exit_code == 0 and torch.get_num_threads() == 1, res.output
    res = runner.invoke(app, ["classify", "a red dress", "--threads", "0"])
    assert res.exit_code == 2
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines == ["error: --threads must be an integer in 1..1024, got 0"]
    for cmd in ("train", "extract", "draw", "classify", "caption", "evaluate", "serve"):
        assert "--threads" in runner.invoke(app, [cmd, "--help"]).stdout, cmd
