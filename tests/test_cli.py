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
        (["--data", str(broken)], "malformed"),
        (["--data", str(no_label)], "no 'label' column"),
        (["--data", str(one_class)], "at least 2"),
        (["--model", str(gpt)], "unsupported encoder"),
        (["--model", str(tmp_path / "missing-model")], "does not exist"),
        (["--max-length", "4096"], "exceeds the model's 512 positions"),
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
    for flag in ("--budget", "--static", "--seq-len", "--checkpoint", "--with-positions"):
        assert flag in result.stdout


def test_training_commands_on_a_runtime_only_install_give_one_line():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from adaret.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    for args in (["train", "--out", "unused"], ["export", "--budget", "0.4"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and "adaret[full]" in result.stderr, result.stderr
