"""What runs without TensorRT around the plan runner: import hygiene, feed validation, GPU discovery, the CLI's
and the GPU check script's behaviour when TensorRT is absent."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaret.core.errors import AdaretError
from adaret.engines.environment import parse_nvidia_smi, tensorrt_available
from adaret.engines.profiles import parse_profile_spec, profile_for_graph
from adaret.engines.sidecar import EngineSidecar, write_sidecar
from adaret.engines.trt_session import TrtPlanRunner, validate_feeds

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["input_ids", "attention_mask"]
needs_no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")


def test_runtime_modules_import_without_torch_onnx_or_tensorrt():
    code = ("import sys, adaret.engines, adaret.engines.sidecar, adaret.engines.trt_session, adaret.engines.cli\n"
            "heavy = ('torch', 'transformers', 'onnx', 'onnx_ir', 'tensorrt', 'polygraphy', 'onnxruntime')\n"
            "print([m for m in heavy if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def _profile():
    return profile_for_graph({name: ["batch", 64] for name in NAMES}, parse_profile_spec("1x64,4x64,8x64"))


def test_feeds_inside_the_profile_pass_and_others_are_refused_clearly():
    ok = {name: np.zeros((4, 64), np.int64) for name in NAMES}
    validate_feeds(NAMES, _profile(), ok)
    with pytest.raises(AdaretError, match="missing input\\(s\\) attention_mask"):
        validate_feeds(NAMES, _profile(), {"input_ids": ok["input_ids"]})
    with pytest.raises(AdaretError, match=r"shape \(16, 64\), outside .*\(1, 64\)\.\.\(8, 64\)"):
        validate_feeds(NAMES, _profile(), {name: np.zeros((16, 64), np.int64) for name in NAMES})
    with pytest.raises(AdaretError, match="outside"):
        validate_feeds(NAMES, _profile(), {name: np.zeros((4, 65), np.int64) for name in NAMES})


def test_nvidia_smi_rows_are_parsed():
    text = "NVIDIA H100 80GB HBM3, 9.0\nNVIDIA A10, 8.6\n\nNo devices were found\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.name, g.compute_capability) for g in gpus] == [("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA A10", "8.6")]


def _sidecar(tmp_path) -> Path:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")
    write_sidecar(plan, EngineSidecar("10.3.0", "NVIDIA A10", "8.6", "fp16", "datacenter", [_profile()], [1024],
                                      "0" * 64, "model_seq64.onnx",
                                      plan_sha256=hashlib.sha256(plan.read_bytes()).hexdigest()))
    return plan


def test_runner_without_a_sidecar_says_so(tmp_path):
    (tmp_path / "model.plan").write_bytes(b"x")
    with pytest.raises(AdaretError, match="has no sidecar"):
        TrtPlanRunner(tmp_path / "model.plan")


def test_runner_refuses_a_sidecar_from_another_build(tmp_path):
    from adaret.engines.sidecar import load_sidecar

    plan = _sidecar(tmp_path)
    sidecar = load_sidecar(plan)
    sidecar.plan_sha256 = hashlib.sha256(b"an earlier build").hexdigest()
    write_sidecar(plan, sidecar)
    with pytest.raises(AdaretError, match="does not match its sidecar"):
        TrtPlanRunner(plan)


@needs_no_tensorrt
def test_runner_without_tensorrt_says_so(tmp_path):
    with pytest.raises(AdaretError, match="tensorrt is not installed"):
        TrtPlanRunner(_sidecar(tmp_path))


class _PolygraphyStandIn:
    """The parts of Polygraphy's TrtRunner the adapter touches, for wiring only (no TensorRT result): int32 inputs,
    and one host output buffer reused across calls, as Polygraphy does."""

    def __init__(self):
        from polygraphy.common import TensorMetadata
        from polygraphy.datatype import DataType

        self.is_active, self.fed = False, []
        self.metadata = TensorMetadata()
        for name in NAMES:
            self.metadata.add(name, DataType.INT32, (-1, 64))
        self.engine = type("Engine", (), {"num_io_tensors": 3, "get_tensor_name": lambda _, i: [*NAMES, "logits"][i]})()
        self.buffer = np.zeros((4, 2), np.float32)

    def activate(self):
        self.is_active = True

    def deactivate(self):
        self.is_active = False

    def get_input_metadata(self, use_numpy_dtypes=None):
        return self.metadata

    def infer(self, feed_dict, check_inputs=True):
        self.fed.append(feed_dict)
        self.buffer += 1
        return {"logits": self.buffer}


def test_plan_runner_adapts_polygraphy_to_the_runtime_interface(tmp_path, monkeypatch):
    import adaret.engines.trt_session as trt_session
    from adaret.engines.sidecar import load_sidecar

    plan, stand_in = _sidecar(tmp_path), _PolygraphyStandIn()
    monkeypatch.setattr(trt_session, "plan_runner", lambda path, device=0: (load_sidecar(path), stand_in))
    with TrtPlanRunner(plan) as runner:
        assert stand_in.is_active and runner.input_names == NAMES and runner.output_names == ["logits"]
        feeds = {name: np.ones((4, 64), np.int64) for name in NAMES}
        first, second = runner.run(feeds)["logits"], runner.run(feeds)["logits"]
        assert first[0, 0] == 1 and second[0, 0] == 2  # copied out of Polygraphy's reused buffer
        assert all(array.dtype == np.int32 and array.flags.c_contiguous for array in stand_in.fed[0].values())
        with pytest.raises(AdaretError, match="outside the plan's profile"):
            runner.run({name: np.ones((16, 64), np.int64) for name in NAMES})
        assert len(stand_in.fed) == 2  # refused before Polygraphy saw it
    assert not stand_in.is_active


def test_polygraphy_errors_become_one_line():
    from polygraphy.exception import PolygraphyException

    from adaret.engines.trt_session import polygraphy_call

    def fail():
        raise PolygraphyException("Could not deserialize engine. See log for details.\nsecond line")

    with pytest.raises(AdaretError, match=r"^TensorRT could not load m\.plan: Could not deserialize engine[^\n]*$"):
        polygraphy_call(fail, "TensorRT could not load m.plan")
    assert polygraphy_call(lambda x, y=0: x + y, "unused", 1, y=2) == 3


def _cli(args, capsys):
    from adaret.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@needs_no_tensorrt
def test_build_and_compare_without_tensorrt_fail_in_one_line(tmp_path, capsys):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"")
    code, _, err = _cli(["build", str(onnx_path), "-o", str(tmp_path / "m.plan")], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "tensorrt is not installed" in err
    assert not (tmp_path / "m.plan").exists()


def test_build_arguments_are_checked_before_anything_runs(tmp_path, capsys):
    code, _, err = _cli(["build", str(tmp_path / "m.onnx")], capsys)
    assert code == 1 and "-o model.plan" in err and len(err.splitlines()) == 1
    code, _, err = _cli(["build", "--check", str(tmp_path / "missing.onnx")], capsys)
    assert code == 1 and "does not exist" in err
    with pytest.raises(SystemExit) as exc:
        _cli(["build", "--check", "m.onnx", "--profiles", "8x512,1x512"], capsys)
    assert exc.value.code == 2 and "profiles take one shape or three" in capsys.readouterr().err


def test_gpu_check_script_does_not_pretend_without_tensorrt(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trt_check.py")], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    if tensorrt_available():
        pytest.skip("TensorRT is installed: the script runs for real (tensorrt-marked tests cover it)")
    assert result.stdout.startswith("not run: tensorrt not installed")
    assert not list(tmp_path.iterdir())
    assert not any(p.name.startswith("trt_check") for p in (ROOT / "benchmarks" / "results").iterdir())

