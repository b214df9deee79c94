"""INT8 QDQ of a retained graph: it runs, agrees with fp32 on real text, keeps the TopK score path in float,
follows TensorRT's Q/DQ rules, records how it was made, and rejects bad input with one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import graph_at, save_tiny_checkpoint

from adaret.calibration.checkpoint import QuantizeConfig, quantize
from adaret.calibration.int8 import graph as qgraph
from adaret.calibration.int8.quantize import modelopt_available
from adaret.calibration.int8.record import CalibrationRecord, record_path, scales_sha256
from adaret.calibration.int8.verify import compare, session
from adaret.cli import main
from adaret.core import graph_facts as gf
from adaret.core.metadata import ExportMetadata
from adaret.engines.lint import lint_model
from adaret.training.data import load_splits

SEQ = 64


@pytest.fixture(scope="module")
def fp32_graph(tiny_static_positions_export):
    """The static --with-positions graph (dynamic batch) that TensorRT would get."""
    return graph_at(tiny_static_positions_export, SEQ).path


@pytest.fixture(scope="module")
def int8(fp32_graph, tiny_checkpoint, tmp_path_factory):
    config = QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(fp32_graph),
                            output=str(tmp_path_factory.mktemp("int8") / "model.int8.onnx"), data="bbc-news",
                            samples=16, method="minmax", progress=False)
    return quantize(config)


@pytest.fixture(scope="module")
def bbc_slice():
    held_out = load_splits("bbc-news", seed=0).eval
    picks = list(range(0, len(held_out), len(held_out) // 24))[:24]  # every class, not one label block
    return [held_out.texts[i] for i in picks], [held_out.labels[i] for i in picks]


def test_quantized_graph_runs_and_agrees_with_fp32_on_real_text(fp32_graph, int8, bbc_slice, tokenizer):
    texts, labels = bbc_slice
    agreement = compare(fp32_graph, int8.output, texts, labels, tokenizer, max_length=SEQ, seq_len=SEQ)
    assert agreement.examples == len(texts)
    assert agreement.prediction_agreement >= 0.95
    assert agreement.accuracy_int8 >= agreement.accuracy_fp32 - 1 / len(texts)  # at most one flipped prediction
    assert agreement.token_agreement is not None and agreement.token_agreement >= 0.97
    assert agreement.max_abs_logit_diff < 0.5


def test_topk_inputs_stay_float_and_no_qdq_on_the_score_path(fp32_graph, int8):
    model = qgraph.load(int8.output)
    topks = [n for n in gf.nodes(model) if n.op_type == "TopK"]
    assert topks and any(gf.is_score_topk(n) for n in topks)
    for topk in topks:
        assert gf.dtype_name(topk.inputs[0]) in ("FLOAT", "INT64")
        for node in (topk, *gf.score_path(topk)) if gf.is_score_topk(topk) else (topk,):
            producers = [v.producer() for v in node.inputs if v is not None and v.producer() is not None]
            assert all(p.op_type not in ("DequantizeLinear", "QuantizeLinear") for p in producers), node.name
    # The score path was planned on the fp32 graph; every one of its nodes is excluded, by name.
    planned = qgraph.plan_quantization(qgraph.load(fp32_graph))
    assert set(gf.score_path_node_names(qgraph.load(fp32_graph))) <= {
        name for name, reason in planned.exclude.items() if reason == "score-path"}
    assert planned.exclude and "head" in planned.reasons()


def test_qdq_follows_tensorrt_rules(int8):
    report = lint_model(int8.output, precision="int8-qdq")
    qdq_rules = {f.rule for f in report.findings if f.rule.startswith("qdq")}
    assert not qdq_rules, report.table()
    assert report.passed, report.table()
    model = onnx.load(str(int8.output))
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = onnx.numpy_helper.to_array(inits[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any()  # symmetric INT8, as TensorRT requires
            consumers = [n for n in model.graph.node if any(o in n.input for o in node.output)]
            if node.op_type == "DequantizeLinear":
                assert all(n.op_type == "MatMul" for n in consumers)  # Q/DQ only on GEMM inputs


def test_build_check_cli_accepts_the_int8_graph(int8, capsys):
    assert main(["build", "--check", str(int8.output), "--precision", "int8-qdq"]) == 0, capsys.readouterr().out


def test_record_makes_the_run_reproducible(int8, fp32_graph, tiny_checkpoint, tmp_path):
    record = CalibrationRecord.read(record_path(int8.output))
    assert record.scales_sha256 == scales_sha256(int8.output)
    assert record.data["samples"] == 16 and record.data["dataset"] == "bbc-news" and record.method == "minmax"
    assert record.versions["onnxruntime"] and record.quantization["tensorrt_input"]
    assert int8.cache_path.is_file()
    again = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(fp32_graph),
                                    output=str(tmp_path / "again.onnx"), data="bbc-news", samples=16,
                                    method="minmax", progress=False))
    assert again.record.scales_sha256 == record.scales_sha256
    assert again.record.data["texts_sha256"] == record.data["texts_sha256"]
    meta = ExportMetadata.from_props(gf.load_model(int8.output).metadata_props)
    assert meta.quantization.startswith("int8-qdq") and meta.checkpoint_sha256 == record.checkpoint_sha256


def _calibrate(args, capsys):
    code = main(["calibrate", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_inputs_give_one_line(int8, fp32_graph, tiny_checkpoint, tokenizer, tmp_path, capsys):
    base = ["--checkpoint", str(tiny_checkpoint), "--data", "bbc-news", "--samples", "8"]
    other = save_tiny_checkpoint(tmp_path / "other", tokenizer, fractions=(1.0, 0.5, 0.3, 0.2))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = {
        "already quantized": [*base, "--onnx", str(int8.output), "-o", str(tmp_path / "x.onnx")],
        "another checkpoint": ["--checkpoint", str(other), "--data", "bbc-news", "--samples", "8",
                               "--onnx", str(fp32_graph), "-o", str(tmp_path / "x.onnx")],
        "too few for calibration": [*base[:-1], "2", "--onnx", str(fp32_graph), "-o", str(tmp_path / "x.onnx")],
        "cannot create output directory": [*base, "--onnx", str(fp32_graph), "-o", str(blocker / "m.onnx")],
        "needs --onnx": base,
        "does not exist": [*base, "--onnx", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx")],
        "would overwrite": [*base, "--onnx", str(fp32_graph), "-o", str(fp32_graph)],
        "--smooth-alpha must be in (0, 1]": [*base, "--onnx", str(fp32_graph), "-o", str(tmp_path / "x.onnx"),
                                            "--smooth-alpha", "0"],
        "--target-agreement must be in (0, 1]": [*base, "--onnx", str(fp32_graph), "-o", str(tmp_path / "x.onnx"),
                                                "--target-agreement", "1.5"],
    }
    for expected, args in cases.items():
        code, err = _calibrate(args, capsys)
        assert code == 1 and expected in err and len(err.splitlines()) == 1, (expected, err)
    assert not (tmp_path / "x.onnx").exists()


def test_mismatched_tokenizer_is_rejected(fp32_graph):
    class BigTokenizer:
        def __len__(self):
            return 10**6

    from adaret.calibration.int8.quantize import _check_vocab
    from adaret.core.errors import AdaretError

    with pytest.raises(AdaretError, match="tokenizer and model do not match"):
        _check_vocab(qgraph.load(fp32_graph), BigTokenizer(), "model.onnx", fp32_graph.parent)


def test_fused_ort_graph_is_marked_ort_only(tiny_checkpoint, tiny_dynamic_export, tmp_path):
    fused = tiny_dynamic_export.graphs[0].optimized.output
    plan = qgraph.plan_quantization(qgraph.load(fused))
    assert plan.custom_ops and not plan.tensorrt_input
    done = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(fused), output=str(tmp_path / "f.onnx"),
                                   samples=8, method="minmax", progress=False))
    assert done.notes and not done.record.quantization["tensorrt_input"]
    out = session(done.output).run(["logits"], _feeds(2, SEQ))[0]
    assert np.isfinite(out).all()


def _feeds(batch, seq):
    ids = np.full((batch, seq), 1000, dtype=np.int64)
    ids[:, 0] = 101
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


@pytest.mark.skipif(not modelopt_available(), reason="nvidia-modelopt is not installed")
def test_modelopt_backend(fp32_graph, tiny_checkpoint, tmp_path):
    done = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(fp32_graph),
                                   output=str(tmp_path / "mo.onnx"), samples=8, method="entropy", backend="modelopt",
                                   progress=False))
    assert not lint_model(done.output, precision="int8-qdq").rules().intersection({"qdq-topk"})


def test_modelopt_backend_missing_is_one_line(fp32_graph, tiny_checkpoint, tmp_path, capsys):
    if modelopt_available():
        pytest.skip("nvidia-modelopt is installed")
    code, err = _calibrate(["--checkpoint", str(tiny_checkpoint), "--samples", "8", "--onnx", str(fp32_graph),
                            "-o", str(tmp_path / "m.onnx"), "--backend", "modelopt"], capsys)
    assert code == 1 and "needs nvidia-modelopt" in err


def test_record_is_plain_json(int8):
    assert json.loads(record_path(int8.output).read_text())["format"] == "adaret-calibration-record"


def test_the_default_method_follows_the_backend():
    def config(**kwargs):
        return QuantizeConfig(checkpoint="c", onnx="m.onnx", output="o.onnx", **kwargs)

    assert config().method == "percentile"
    assert config(backend="modelopt").method == "entropy"
    assert config(method="minmax", backend="modelopt").method == "minmax"
