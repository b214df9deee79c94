"""`adaret build -o`, `validate --out`, `bench --out` never replace an existing output without --overwrite (issue 18).

Each command claims its outputs before any work: the tests stop the work at its first step (TensorRT's import, the
checkpoint's load) and check that a refusal came first, in one line, with every existing file untouched; and that
with --overwrite the claim lets the command through to that first step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from adaret.cli import main
from adaret.core.errors import AdaretError

REACHED = "stopped where the work starts"


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


def _refused(code: int, err: str, *words: str) -> bool:
    return code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err and all(w in err for w in words)


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _stop(*args, **kwargs):
    raise AdaretError(REACHED)


def _must_not_start(*args, **kwargs):
    raise AssertionError("the work started before the output was claimed")


# --------------------------------------------------------------------------------------------------- build -o


@pytest.fixture
def build_dir(tmp_path, monkeypatch) -> Path:
    import adaret.engines.environment as environment

    monkeypatch.setattr(environment, "import_tensorrt", _must_not_start)
    (tmp_path / "model_seq128.onnx").write_bytes(b"not read before the claim")
    return tmp_path


@pytest.mark.parametrize("existing", ["m.plan", "m.plan.json", "m.plan.layers.json"])
def test_build_refuses_an_existing_plan_or_companion_before_tensorrt(build_dir, existing, capsys):
    (build_dir / existing).write_text("an earlier build\n")
    before = _snapshot(build_dir)
    code, err = _run(["build", str(build_dir / "model_seq128.onnx"), "-o", str(build_dir / "m.plan")], capsys)
    assert _refused(code, err, existing, "already exists", "--overwrite"), err
    assert _snapshot(build_dir) == before


def test_build_overwrite_gets_through_the_claim(build_dir, capsys, monkeypatch):
    import adaret.engines.environment as environment

    monkeypatch.setattr(environment, "import_tensorrt", _stop)
    (build_dir / "m.plan").write_text("an earlier build\n")
    before = _snapshot(build_dir)
    code, err = _run(["build", str(build_dir / "model_seq128.onnx"), "-o", str(build_dir / "m.plan"),
                      "--overwrite"], capsys)
    assert _refused(code, err, REACHED), err
    assert _snapshot(build_dir) == before  # the build failed: the old plan stays


def test_build_refuses_a_directory_as_the_plan(build_dir, capsys):
    (build_dir / "plans").mkdir()
    code, err = _run(["build", str(build_dir / "model_seq128.onnx"), "-o", str(build_dir / "plans"),
                      "--overwrite"], capsys)
    assert _refused(code, err, "is a directory, not a file"), err


# --------------------------------------------------------------------------------------------------- validate --out


@pytest.fixture
def report_dir(tmp_path, monkeypatch) -> Path:
    import adaret.validation.report as report

    monkeypatch.setattr(report, "load_checkpoint", _must_not_start)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("last week's report\n")
    (out / "notes.txt").write_text("mine\n")
    return out


def _validate(out: Path, *extra: str) -> list[str]:
    return ["validate", "--onnx", "model.onnx", "--no-memory", "--out", str(out), *extra]


def test_validate_refuses_a_non_empty_out_before_any_work(report_dir, capsys):
    before = _snapshot(report_dir)
    code, err = _run(_validate(report_dir), capsys)
    assert _refused(code, err, str(report_dir), "is not empty", "--overwrite"), err
    assert _snapshot(report_dir) == before


def test_validate_overwrite_replaces_only_its_own_files(report_dir, capsys, monkeypatch):
    import adaret.validation.report as report

    def validated(config, out: Path) -> dict:
        (out / "report.md").write_text("this run\n")
        return {"checks": [], "passed": True}

    monkeypatch.setattr(report, "_validate", validated)
    code = main(_validate(report_dir, "--overwrite"))
    assert code == 0, capsys.readouterr().err
    assert (report_dir / "report.md").read_text() == "this run\n"
    assert (report_dir / "notes.txt").read_text() == "mine\n"


def test_validate_refuses_a_file_as_out(tmp_path, capsys, monkeypatch):
    import adaret.validation.report as report

    monkeypatch.setattr(report, "load_checkpoint", _must_not_start)
    a_file = tmp_path / "report"
    a_file.write_text("x\n")
    code, err = _run(_validate(a_file, "--overwrite"), capsys)
    assert _refused(code, err, "is a file, not a directory"), err
    assert a_file.read_text() == "x\n"


# --------------------------------------------------------------------------------------------------- bench --out


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    import adaret.validation.bench as bench

    monkeypatch.setattr(bench, "load_checkpoint", _must_not_start)
    out = tmp_path / "results"
    out.mkdir()
    (out / "frontier.json").write_text("{}\n")  # another benchmark's results: never in the way
    return out


@pytest.mark.parametrize("existing", ["bench.json", "bench.md"])
def test_bench_refuses_existing_results_before_any_work(results_dir, existing, capsys):
    (results_dir / existing).write_text("an earlier run\n")
    before = _snapshot(results_dir)
    code, err = _run(["bench", "--out", str(results_dir)], capsys)
    assert _refused(code, err, existing, "already exists", "--overwrite"), err
    assert _snapshot(results_dir) == before


def test_bench_claims_only_its_own_results(results_dir, capsys, monkeypatch):
    import adaret.validation.bench as bench

    monkeypatch.setattr(bench, "load_checkpoint", _stop)
    (results_dir / "bench.json").write_text("an earlier run\n")
    before = _snapshot(results_dir)
    for extra in (["--name", "other"], ["--overwrite"]):  # another stem, or the same one replaced
        code, err = _run(["bench", "--out", str(results_dir), *extra], capsys)
        assert _refused(code, err, REACHED), (extra, err)
    assert _snapshot(results_dir) == before
