"""`adaret validate` on the tiny checkpoint: report files and fields, the parity gate, bad input."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from adaret.cli import main
from adaret.core.machine import describe
from adaret.core.metadata import ExportMetadata

ROOT = Path(__file__).resolve().parent.parent
ROW_FIELDS = ("accuracy", "agreement_with_full", "max_abs_logit_diff_vs_full", "latency_p50_ms", "latency_p95_ms",
              "throughput_per_s", "peak_memory_mib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def graph(tiny_dynamic_export) -> Path:
    return tiny_dynamic_export.config.out_dir / "model.opt.onnx"  # what export deploys for ONNX Runtime CPU


@pytest.fixture(scope="module")
def validated(tiny_checkpoint, graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    code = main(["validate", "--checkpoint", str(tiny_checkpoint), "--onnx", str(graph), "--max-examples", "10",
                 "--batch-size", "4", "--out", str(out), "--accuracy-floor", "0", "--threads", "2"])
    return code, out, json.loads((out / "report.json").read_text())


def test_validate_writes_every_file_with_the_required_fields(validated, capsys):
    code, out, report = validated
    assert code == 0 and report["passed"]
    for name in ("accuracy_vs_budget.png", "latency_vs_budget.png", "kept_tokens_per_layer.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and (out / name).stat().st_size > 10_000
    assert report["eval_examples"] == 10 and report["data"].startswith("bbc-news")
    rows = {(r["backend"], r["budget"]): r for r in [report["full"], *report["rows"]]}
    assert set(rows) == {("pytorch-full", 1.0), ("pytorch-hard", 0.5), ("onnxruntime", 0.5)}
    for row in rows.values():
        assert all(row.get(name) is not None for name in ROW_FIELDS), row
        assert row["peak_memory_mib"] > 0 and row["latency_p95_ms"] >= row["latency_p50_ms"] > 0
    deployed = rows["onnxruntime", 0.5]
    assert deployed["max_abs_logit_diff_vs_reference"] < 1e-4 and deployed["agreement_with_reference"] == 1.0
    assert deployed["peak_memory_mib_arena"] > 0
    assert rows["pytorch-full", 1.0]["max_abs_logit_diff_vs_full"] == 0.0
    assert {c["check"] for c in report["checks"]} == {"parity", "accuracy_floor"}
    assert report["keep_counts_at_max_length"]["0.5"][0] == report["max_length"] == 128
    assert {"torch", "onnxruntime", "tokenizers"} <= set(report["versions"]) and report["machine"]["cores"]
    assert report["task"] == "sequence-classification" and isinstance(report["machine"]["isa"], list)
    markdown = (out / "report.md").read_text()
    assert f"Machine: {describe(report['machine'])}." in markdown
    assert "PASSED" in markdown and "| onnxruntime | 0.5 |" in markdown and "![accuracy]" in markdown


def test_validate_fails_when_the_graph_disagrees_with_pytorch(tiny_checkpoint, graph, tmp_path, capsys):
    """A graph with a shifted classifier bias (metadata intact) must fail the parity gate with exit 1."""
    model = onnx.load(str(graph))
    bias = next(t for t in model.graph.initializer if t.name.endswith("head.bias"))
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.5), bias.name))
    tampered = tmp_path / "model.onnx"
    onnx.save(model, str(tampered))
    shutil.copyfile(graph.parent / "tokenizer.json", tmp_path / "tokenizer.json")
    code = main(["validate", "--checkpoint", str(tiny_checkpoint), "--onnx", str(tampered), "--max-examples", "4",
                 "--out", str(tmp_path / "report"), "--no-memory", "--accuracy-floor", "0"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 1 and not report["passed"]
    assert "FAIL parity onnxruntime@0.5" in capsys.readouterr().out


def test_validate_bad_inputs_give_one_line(tiny_checkpoint, graph, tmp_path, capsys):
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(graph))
    ExportMetadata.from_model(model).updated(checkpoint_sha256="0" * 64).write_to(model)
    onnx.save(model, str(foreign))
    ck = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "r"), "--no-memory"]
    cases = [
        ([*ck, "--onnx", str(graph), "--budgets", "0.4"], "not both"),
        ([*ck, "--onnx", str(tmp_path / "absent.onnx")], "does not exist"),
        ([*ck, "--onnx", str(foreign)], "another checkpoint"),
        ([*ck, "--onnx", str(graph), "--accuracy-floor", "1.5"], "--accuracy-floor"),
        (["--checkpoint", str(tmp_path / "nope"), "--onnx", str(graph)], "does not exist"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*ck, "--onnx", str(graph), "--device", "cuda"], "no CUDA device"))
    for args, message in cases:
        code = main(["validate", *args])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and message in err, (args, err)
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--max-examples", "0"])
    assert exc.value.code == 2


def _gpu_reference():
    spec = importlib.util.spec_from_file_location("gpu_reference", ROOT / "benchmarks" / "gpu_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_reference_says_no_cuda_and_has_a_cpu_smoke_mode(tiny_checkpoint, tmp_path, capsys):
    gpu_reference = _gpu_reference()
    if not torch.cuda.is_available():
        assert gpu_reference.main([]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    args = ["--device", "cpu", "--quick", "--checkpoint", str(tiny_checkpoint), "--budgets", "1.0,0.4",
            "--out", str(tmp_path)]
    assert gpu_reference.main(args) == 0
    payload = json.loads((tmp_path / "gpu_reference_smoke.json").read_text())
    assert {(r["batch"], r["budget"]) for r in payload["rows"]} == {(1, 1.0), (1, 0.4), (2, 1.0), (2, 0.4)}
    assert all(r["median_ms"] > 0 for r in payload["rows"]) and payload["card"].startswith("none")


@pytest.mark.slow
def test_validate_default_exports_one_graph_per_budget(tiny_checkpoint, tmp_path):
    out = tmp_path / "report"
    code = main(["validate", "--checkpoint", str(tiny_checkpoint), "--budgets", "0.4,1.0", "--max-examples", "8",
                 "--out", str(out), "--accuracy-floor", "0", "--no-memory"])
    report = json.loads((out / "report.json").read_text())
    assert code == 0 and {r["budget"] for r in report["rows"] if r["backend"] == "onnxruntime"} == {0.4, 1.0}
    assert (out / "exports" / "b0.4" / "model.onnx").is_file()


@pytest.mark.slow
def test_bench_end_to_end_on_a_small_setting(tiny_checkpoint, tmp_path):
    script = str(ROOT / "benchmarks" / "run.py")
    done = subprocess.run([sys.executable, script, "--checkpoint", str(tiny_checkpoint), "--budgets", "0.5",
                           "--max-examples", "8", "--seq-len", "64", "--rounds", "1", "--memory-trials", "1",
                           "--out", str(tmp_path), "--name", "smoke"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads((tmp_path / "smoke.json").read_text())
    configs = {(r["config"], r["budget"], r["memory_mode"]) for r in payload["rows"]}
    assert configs == {("pytorch-full", 1.0, "-"), ("pytorch-retained", 0.5, "-"),
                       *{(name, budget, mode) for name, budget in (("onnxruntime-full", 1.0),
                                                                   ("onnxruntime-retained", 0.5))
                         for mode in ("no-arena", "arena")}}
    assert "Optimum is not installed" in payload["baseline"] and payload["command"].startswith("python benchmarks")
    assert all(r["median_ms"] > 0 and r["peak_memory_mib"] is not None for r in payload["rows"])
    assert "Versions:" in (tmp_path / "smoke.md").read_text()


@pytest.mark.gpu
def test_validate_with_the_pytorch_reference_on_cuda(tiny_checkpoint, graph, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out = tmp_path / "report"
    assert main(["validate", "--checkpoint", str(tiny_checkpoint), "--onnx", str(graph), "--device", "cuda",
                 "--max-examples", "8", "--out", str(out), "--accuracy-floor", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["full"]["memory_method"] == "torch.cuda.max_memory_allocated"
