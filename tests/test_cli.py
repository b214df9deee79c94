"""Bad input to `adaret train` and `export.py`: one line on stderr, a non-zero exit, nothing half-written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaret.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(args))
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


@pytest.mark.parametrize("budget", ["1.5", "0", "-0.2", "abc"])
def test_train_rejects_bad_budget(budget, capsys, tmp_path):
    code, err = _run(["train", "--budget", budget, "--out", str(tmp_path / "c")], capsys)
    assert code != 0 and len(err.splitlines()) == 1 and "budget" in err
    assert not (tmp_path / "c").exists()


def _bad_sources(tmp_path):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\na,x\nb,x\nc,x\n")
    no_label = tmp_path / "nolabel.jsonl"
    no_label.write_text(json.dumps({"text": "a"}) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return [
        (["--data", "imdb"], "unknown dataset"),
        (["--data", str(tmp_path / "nope.csv")], "does not exist"),
        (["--data", str(broken)], "line 1 is not valid JSON"),
        (["--data", str(no_label)], "no 'label' column"),
        (["--data", str(one_class)], "at least 2"),
        (["--model", str(gpt)], "unsupported encoder"),
        (["--model", str(tmp_path / "missing-model")], "does not exist"),
        (["--max-length", "4096"], "exceeds the model's 512 positions; pass --max-length 512 or less"),
    ]


def test_train_bad_inputs_each_give_one_line(capsys, tmp_path):
    for extra, message in _bad_sources(tmp_path):
        out = tmp_path / "ckpt"
        code, err = _run(["train", "--out", str(out), *extra], capsys)
        assert code != 0, extra
        assert len(err.splitlines()) == 1 and message in err, (extra, err)
        assert not out.exists()


def test_help_explains_itself():
    result = subprocess.run([sys.executable, str(ROOT / "export.py"), "--help"], capture_output=True, text=True,
                            check=True)
    for flag in ("--budget", "--static", "--seq-len", "--checkpoint", "--with-positions", "--debug"):
        assert flag in result.stdout


def test_training_commands_on_a_runtime_only_install_give_one_line():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from adaret.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    for args in (["train", "--out", "unused"], ["export", "--budget", "0.4"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and "adaret[full]" in result.stderr, result.stderr


def _break_exporter(monkeypatch, where: str = "export_module", exc: Exception | None = None) -> None:
    import adaret.export.pipeline as pipeline

    def broken(*args, **kwargs):
        raise exc or RuntimeError("simulated exporter failure\nfollowed by pages of advice")

    monkeypatch.setattr(pipeline, where, broken)


def _export_args(checkpoint, out, *extra, budget="0.4"):
    return ["export", "--budget", budget, "--checkpoint", str(checkpoint), "--out", str(out), *extra]


def test_exporter_failure_is_one_line_naming_checkpoint_and_budget(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    _break_exporter(monkeypatch)
    code, err = _run(_export_args(tiny_checkpoint, tmp_path / "o"), capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("adaret export: error: the ONNX exporter failed on checkpoint ")
    assert str(tiny_checkpoint) in err and "at budget 0.4" in err
    assert "RuntimeError: simulated exporter failure" in err and "pages of advice" not in err
    assert "--debug" in err
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_debug_shows_the_exporter_traceback(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    _break_exporter(monkeypatch)
    code, err = _run(_export_args(tiny_checkpoint, tmp_path / "o", "--debug"), capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "RuntimeError: simulated exporter failure" in err
    assert "followed by pages of advice" in err  # the library's whole message, not only its first line
    assert err.splitlines()[-1].startswith("adaret export: error: the ONNX exporter failed on checkpoint ")


def test_other_library_failures_during_export_are_one_line_too(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    _break_exporter(monkeypatch, "check_parity", ValueError("[ONNXRuntimeError] : 10 : INVALID_GRAPH\ndetails"))
    code, err = _run(_export_args(tiny_checkpoint, tmp_path / "o"), capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"exporting checkpoint {tiny_checkpoint} at budget 0.4 failed: ValueError: [ONNXRuntimeError]" in err


def test_export_script_reports_an_exporter_failure_in_one_line(tiny_checkpoint, tmp_path):
    """The real `python export.py` process: nothing else (warnings, exporter chatter) reaches stderr."""
    code = ("import runpy, sys\n"
            "import adaret.export.pipeline as pipeline\n"
            "def broken(*args, **kwargs):\n"
            "    raise RuntimeError('simulated exporter failure')\n"
            "pipeline.export_module = broken\n"
            f"sys.argv = [{str(ROOT / 'export.py')!r}, *sys.argv[1:]]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    args = ["--budget", "0.4", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("adaret export: error: the ONNX exporter failed on checkpoint ")
    debug = subprocess.run([sys.executable, "-c", code, *args, "--debug"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_budget_below_the_reachable_floor_names_the_smallest_budget(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _run(_export_args(tiny_checkpoint, out, budget="0.1"), capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    # the tiny checkpoint never gates layer 1 of 4: budgets must be above 1/4
    assert "budget 0.1 is not reachable" in err and str(tiny_checkpoint) in err
    assert "smallest reachable budget is just above 0.250" in err and "--budget 0.26" in err
    assert not out.exists()

