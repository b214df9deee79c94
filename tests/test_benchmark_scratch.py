"""The benchmarks' work folders: removed when the run ends (also on error) unless the user named one to keep."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("benchmark_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scratch_directory_is_removed_after_the_run(common):
    with common.scratch_directory("adaret-test-scratch-") as work:
        (work / "model.onnx").write_bytes(b"x" * 1024)
        assert work.is_dir()
    assert not work.exists()


def test_scratch_directory_is_removed_when_the_run_fails(common):
    with pytest.raises(RuntimeError), common.scratch_directory("adaret-test-scratch-") as work:
        (work / "model.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert not work.exists()


def test_a_named_work_folder_is_kept(common, tmp_path):
    keep = tmp_path / "exports"
    with common.scratch_directory("adaret-test-scratch-", keep=keep) as work:
        (work / "model.onnx").write_bytes(b"x")
    assert work == keep and (keep / "model.onnx").is_file()


def test_no_benchmark_leaks_a_temporary_folder():
    """mkdtemp without a cleanup left gigabytes per run behind; only the helper may call it."""
    offenders = [p.name for p in (ROOT / "benchmarks").glob("*.py")
                 if "mkdtemp(" in p.read_text() and p.name != "common.py"]
    assert offenders == []
