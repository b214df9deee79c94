"""What keeps INT8 token choices close to fp32: SmoothQuant (exact in fp32), the kept positions read from the
score TopKs, the agreement search that puts sensitive MatMuls back in fp32, and the unpacked ort-cpu-int8 graph
whose Q/K/V projections can be quantised."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from adaret.calibration.checkpoint import QuantizeConfig, quantize
from adaret.calibration.int8 import graph as qgraph
from adaret.calibration.int8.reader import encode_batches
from adaret.calibration.int8.sensitivity import Agreement, AgreementProbe, _Gates, _Restorer, candidates, kept_positions
from adaret.calibration.int8.smoothing import smooth, smoothing_scales
from adaret.graph_passes.pipeline import optimize
from adaret.training.data import load_splits

SEQ = 64
LAYERS = 4


@pytest.fixture(scope="module")
def graphs(tiny_positions_export, tmp_path_factory):
    """The tiny checkpoint's dynamic export with kept positions: raw, ort-cpu and ort-cpu-int8."""
    raw = tiny_positions_export.graphs[0].path
    out = tmp_path_factory.mktemp("int8-acc")
    opt = optimize(raw, out / "model.opt.onnx", target="ort-cpu").output
    int8src = optimize(raw, out / "model.int8src.onnx", target="ort-cpu-int8").output
    return {"raw": raw, "opt": opt, "int8src": int8src}


@pytest.fixture(scope="module")
def batches(tokenizer):
    texts = load_splits("bbc-news", seed=0).eval.texts[:12]
    return list(encode_batches(texts, tokenizer, batch_size=4, max_length=SEQ))


def _outputs(path_or_proto, feeds):
    import onnxruntime as ort

    data = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_smoothing_scales_follow_the_formula():
    activation = np.array([4.0, 1.0, 0.0], dtype=np.float32)
    weights = [np.array([[1.0, -0.5], [2.0, 1.0], [0.0, 0.0]], dtype=np.float32),
               np.array([[0.5, 0.5], [-4.0, 1.0], [0.0, 0.0]], dtype=np.float32)]
    # alpha 0.5: sqrt(max|x_j|) / sqrt(max over both weights of |W_j.|); a dead channel gets the floor, not 0/0
    expected = np.array([np.sqrt(4.0) / np.sqrt(1.0), np.sqrt(1.0) / np.sqrt(4.0), 1.0], dtype=np.float32)
    np.testing.assert_allclose(smoothing_scales(activation, weights, 0.5), expected, rtol=1e-6)


def test_agreement_lower_bound_is_the_ratio_estimators():
    kept, shared = np.array([100.0, 50.0, 150.0, 100.0]), np.array([99.0, 50.0, 147.0, 98.0])
    value = 394.0 / 400.0
    residuals = shared - value * kept
    se = np.sqrt((residuals ** 2).sum() / (4 * 3 * 100.0 ** 2))
    measured = Agreement.of(kept, shared)
    assert measured.value == pytest.approx(value) and measured.lower == pytest.approx(value - 1.645 * se)
    assert Agreement.of(np.array([10.0, 10.0]), np.array([10.0, 10.0])) == Agreement(1.0, 1.0)


def test_smoothing_keeps_the_fp32_graph_exact(graphs, batches):
    model = qgraph.load(graphs["raw"])
    plan = qgraph.plan_quantization(model)
    report = smooth(model, plan.quantize, iter(batches), alpha=0.8)
    # Q, K and V read the same LayerNorm output, so they share one scale: 4 groups per layer, not 6
    assert len(plan.quantize) == 6 * LAYERS and len(report.groups) == 4 * LAYERS
    assert sorted(len(users) for users in report.groups.values()).count(3) == LAYERS
    assert report.largest_scale > 1.0  # something was actually rescaled
    smoothed = qgraph.ir.serde.serialize_model(model)
    assert sum(n.op_type == "Mul" and n.name.endswith(".smooth") for n in smoothed.graph.node) == 4 * LAYERS
    for feeds in batches:
        want, got = _outputs(graphs["raw"], feeds), _outputs(smoothed, feeds)
        # (x/s)(sW) = xW up to float rounding: logits move by ~1e-6, the kept tokens not at all
        np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4)
        for name in want:
            if name.startswith("kept_positions"):
                np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("graph", ["raw", "opt"])
def test_kept_positions_from_topk_indices_match_the_exported_positions(graphs, batches, graph):
    """raw re-sorts each kept set (a second TopK); opt had that removed and keeps score order."""
    model = qgraph.gf.load_model(graphs[graph])
    gates = _Gates.of(model)
    assert all(gates.sorted_after) if graph == "raw" else not any(gates.sorted_after)
    proto = onnx.load(str(graphs[graph]))
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in gates.index_outputs)
    for feeds in batches:
        outputs = _outputs(proto, feeds)
        composed = kept_positions([outputs[n] for n in gates.index_outputs], gates.sorted_after, SEQ)
        exported = [v for k, v in outputs.items() if k.startswith("kept_positions")]
        assert len(composed) == len(exported) == len(gates.index_outputs)
        for ours, theirs in zip(composed, exported, strict=True):
            np.testing.assert_array_equal(np.sort(ours, axis=1), np.sort(theirs, axis=1))


def test_every_candidate_back_in_fp32_restores_every_token_choice(graphs, batches, tiny_checkpoint, tmp_path):
    done = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(graphs["int8src"]),
                                   output=str(tmp_path / "q.onnx"), samples=16, method="minmax", max_length=SEQ,
                                   smooth_alpha=None, target_agreement=None, progress=False))
    fp32, int8 = onnx.load(str(graphs["int8src"])), onnx.load(str(done.output))
    probe = AgreementProbe(fp32, batches)
    names = candidates(fp32, done.plan.quantize)
    # The last layer runs after the last gate: its MatMuls cannot move a token choice and are not candidates.
    assert names and len(names) < len(done.plan.quantize)
    restorer = _Restorer(fp32, int8)
    assert probe.agreement(restorer.with_fp32(names)).value == 1.0
    assert probe.agreement(fp32) == Agreement(1.0, 1.0)


def test_search_reaches_the_target_and_records_what_it_restored(graphs, tiny_checkpoint, tmp_path):
    done = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(graphs["int8src"]),
                                   output=str(tmp_path / "q.onnx"), samples=16, method="minmax", max_length=SEQ,
                                   target_agreement=1.0, progress=False))
    search = done.search
    assert search is not None and search.texts == 16 and search.kept_positions > 0
    # The tiny random model at 16 texts flips some choices in INT8; the search must act and reach 1.0.
    assert search.agreement_all_int8 < 1.0 and search.restored and search.reached
    assert [name for name, reason in done.plan.exclude.items() if reason == "token-agreement"] == search.restored
    record = done.record.quantization
    assert record["agreement_search"]["restored"] == search.restored and record["agreement_search"]["reached"]
    quantized = onnx.load(str(done.output))
    producers = {o: n for n in quantized.graph.node for o in n.output}
    for node in quantized.graph.node:
        if node.name in search.restored:
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)


def test_the_unpacked_graph_quantises_qkv_with_uint8_activations(graphs, tiny_checkpoint, tmp_path):
    packed = qgraph.plan_quantization(qgraph.load(graphs["opt"]))
    unpacked = qgraph.plan_quantization(qgraph.load(graphs["int8src"]))
    assert "com.microsoft:Attention" in packed.custom_ops and "com.microsoft:Attention" not in unpacked.custom_ops
    # The tiny head mean-pools, so no layer is pruned to CLS and every layer's Q/K/V is packed in ort-cpu.
    assert packed.custom_ops["com.microsoft:Attention"] == LAYERS
    assert len(unpacked.quantize) == len(packed.quantize) + 3 * LAYERS
    done = quantize(QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx=str(graphs["int8src"]),
                                   output=str(tmp_path / "q.onnx"), samples=8, method="minmax", max_length=SEQ,
                                   target_agreement=None, progress=False))
    model = onnx.load(str(done.output))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    activation_zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points and all(z.dtype == np.uint8 and (z == 128).all() for z in activation_zero_points)
    assert done.record.quantization["activations"].startswith("uint8")


def test_calibrate_cli_reports_smoothing_and_the_search(graphs, tiny_checkpoint, tmp_path, capsys):
    from adaret.cli import main

    out = tmp_path / "cli.int8.onnx"
    code = main(["calibrate", "--no-progress", "--checkpoint", str(tiny_checkpoint), "--samples", "8",
                 "--max-length", str(SEQ), "--onnx", str(graphs["opt"]), "-o", str(out), "--target-agreement", "1.0"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file(), printed
    assert "SmoothQuant alpha 0.8" in printed and "token agreement on 8 calibration texts" in printed
    assert "95% lower bound" in printed and "packed Attention" in printed  # the note that points to ort-cpu-int8


def test_agreement_is_measured_on_the_runtime_padding(graphs, tokenizer):
    """K_l follows the padded length, so INT8 is calibrated and checked on the feeds the runtime serves."""
    import adaret.runtime as rt
    from adaret.calibration.int8.reader import encode_planned

    texts = [*load_splits("bbc-news", seed=0).eval.texts[:12], "Short one.", "Shares rose."]
    session = rt.load(graphs["raw"])
    with pytest.warns(rt.TruncationWarning):  # the bulletins are longer than the tiny model's 128 positions
        encoded = session.encode(texts)
    served = {tuple(batch.indices): feeds for batch, feeds in session.batches(encoded, batch_size=4)}
    measured = {tuple(indices): feeds for indices, feeds in
                encode_planned(texts, tokenizer, batch_size=4, max_length=session.max_length)}
    assert served.keys() == measured.keys() and len(served) > 1
    for key, feeds in served.items():
        for name, value in feeds.items():
            assert np.array_equal(measured[key][name], value), (key, name)
    assert {f["input_ids"].shape[1] for f in measured.values()} > {session.max_length}  # not one padded width
