"""CLI contract through Typer's runner and the console entry: exit 0 on success, 2 + one error line on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modalbridge.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_train_success_prints_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MODALBRIDGE_RUN_DIR", raising=False)
    res = runner.invoke(app, ["train", str(ROOT / "configs/test/toy.yaml"), f"run_root={tmp_path}",
                              "trainer.max_epochs=1", "trainer.progress=false", "logger.backends=[csv]"])
    assert res.exit_code == 0, res.output
    run_dir = Path(res.stdout.split("run dir:")[1].split()[0])
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_train_bad_inputs(tmp_path):
    cases = [
        (["train", str(tmp_path / "missing.yaml")], "config file not found"),
        (["train", str(ROOT / "configs/test/toy.yaml"), "optim.lrr=1"], "did you mean 'lr'"),
        (["train", str(ROOT / "configs/test/toy.yaml"), "trainer.max_epochs=many"], "expected an integer"),
        (["train", "--resume", str(tmp_path)], "cannot resume"),
        (["train"], "give a CONFIG.yaml"),
    ]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("task: toy_regression\n")
    cases.append((["train", str(ROOT / "configs/test/toy.yaml"), "--resume", str(tmp_path / "run")], "drop "))
    for args, msg in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in _error_line(res)


def test_console_entry_usage_errors_are_one_line():
    for args in (["nosuch"], ["train", "--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "modalbridge", *args], capture_output=True, text=True)
        assert proc.returncode == 2
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "modalbridge", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip()


def test_console_entry_passes_exit_codes_and_abort(monkeypatch, capsys):
    import typer

    from modalbridge import cli

    def fake_app(exc):
        def run(standalone_mode):
            raise exc
        return run

    for exc, code in ((typer.Exit(3), 3), (typer.Abort(), 130)):
        monkeypatch.setattr(cli, "app", fake_app(exc))
        monkeypatch.setattr(sys, "argv", ["modalbridge", "x"])
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == code
    assert capsys.readouterr().err.strip() == "error: aborted"


@pytest.mark.parametrize("script", ["gan_quality.py", "gan_prompt_check.py"])
def test_research_scripts_report_a_bad_path_in_one_line(script, tmp_path):
    """scripts/ run through errors.script_main: a missing judge panel is one error line and exit 2, not a traceback."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--judges", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"error: judge panel not found: {tmp_path / 'nope' / 'panel.json'}"


@pytest.mark.parametrize("script, flag, name, message", [
    ("compare_mappers.py", "--config", "nope.yaml", "config file not found"),
    ("eval_openclipart.py", "--config", "nope.yaml", "config file not found"),
    ("eval_caption_fashion.py", "--model", "nope", "model path not found"),
    ("check_dev_prompts.py", "--tsv", "nope.tsv", "prompt file not found"),
])
def test_every_script_reports_a_missing_input_in_one_line(script, flag, name, message, tmp_path):
    """The other scripts/ run through errors.script_main too: one error line and exit 2, not a traceback."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / script), flag, str(tmp_path / name)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("warning:")]
    assert lines == [f"error: {message}: {tmp_path / name}"], res.stderr


def test_script_main_exit_codes(capsys):
    from modalbridge.errors import UserError, script_main

    def raises(exc):
        def main():
            raise exc
        return main

    for main, code in [(raises(UserError("bad\n input")), 2), (raises(SystemExit("no candidate")), 2),
                       (raises(SystemExit(2)), 2), (lambda: 3, 3), (lambda: None, 0)]:
        with pytest.raises(SystemExit) as e:
            script_main(main)
        assert e.value.code == code
    assert capsys.readouterr().err.splitlines() == ["error: bad input", "error: no candidate"]
