"""Question-answering export: the span graph's names, metadata and parity against the PyTorch top-M reference.

A tiny random BERT with a span head; parity covers batches 1, 3 and 8, odd lengths and random question segments
(``dummy_inputs(segments=True)``), dynamic and static, at the default 1e-4 on the logits of every real position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import BERT_VOCAB
from test_qa_model import tiny_qa_model

from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.io_spec import END_LOGITS, START_LOGITS
from adaret.core.metadata import QA_FIELDS, ExportMetadata
from adaret.core.ort_sessions import make_session
from adaret.engines.lint import lint_model
from adaret.export import ExportConfig, TopMInference, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.training.checkpoint import CheckpointInfo, RetentionCheckpoint

WINDOWS = {"max_length": 96, "doc_stride": 32, "max_query_length": 24, "max_answer_length": 30}
FRACTIONS = [1.0, 0.6, 0.35, 0.2]


def save_qa_checkpoint(path: Path, tokenizer, model=None) -> Path:
    model = model if model is not None else tiny_qa_model()
    config = model.encoder.config
    info = CheckpointInfo(
        base_model={"source": "tiny-random-bert", "model_type": "bert", "name": "tiny-random-bert",
                    "in_checkpoint": True, "weights_sha256": None,
                    "config": config.to_diff_dict() | {"model_type": "bert"}},
        retention={}, training={"budget": 0.4, "seed": 0, "task": "question-answering",
                                "question_answering": WINDOWS},
        schedule={"keep_fractions": FRACTIONS, "measured_on": "synthetic", "budget": sum(FRACTIONS) / 4},
    )
    RetentionCheckpoint(model, tokenizer, info).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory, tokenizer) -> Path:
    return save_qa_checkpoint(tmp_path_factory.mktemp("qa") / "ckpt", tokenizer)


@pytest.fixture(scope="module")
def qa_exports(qa_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("qa-export")
    dynamic = run_export(ExportConfig(budget=0.4, checkpoint=str(qa_checkpoint), out=str(out / "dynamic"),
                                      parity_batches=(1, 3, 8), parity_lengths=(5, 37, 96)), optimize)
    static = run_export(ExportConfig(budget=0.3, checkpoint=str(qa_checkpoint), out=str(out / "static"),
                                     static=True, seq_lens=(48, 96), parity_batches=(1, 3, 8)), optimize)
    return dynamic, static


def test_every_graph_passes_parity(qa_exports):
    for result in qa_exports:
        for graph in result.graphs:
            assert graph.parity.passed, graph.parity.as_dict()
            assert graph.parity.max_abs_diff <= 1e-4
            assert len(graph.parity.cases) >= 3


def test_span_outputs_and_metadata(qa_exports):
    for result in qa_exports:
        for graph in result.graphs:
            model = onnx.load(graph.path)
            assert [o.name for o in model.graph.output] == [START_LOGITS, END_LOGITS]
            assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
            meta = ExportMetadata.from_model(model)
            assert meta.task == "question-answering"
            assert meta.question_answering == WINDOWS and set(WINDOWS) == set(QA_FIELDS)
            assert meta.label_names == []
            ops = {n.op_type for n in model.graph.node}
            assert {"TopK", "GatherElements"} & ops or "Gather" in ops
            assert "ScatterElements" in ops or "ScatterND" in ops  # the restore of dropped states


def test_onnx_matches_pytorch_on_fresh_inputs(qa_exports, qa_checkpoint):
    """Beyond the export's own parity cases: another seed, and every row's logits at its real positions."""
    checkpoint = RetentionCheckpoint.from_pretrained(qa_checkpoint, attn_implementation="eager")
    dynamic = qa_exports[0].graphs[0]
    session = make_session(dynamic.path)
    generator = np.random.default_rng(7)
    module = TopMInference(checkpoint.model, qa_exports[0].schedule).eval()
    for batch, length in ((2, 7), (5, 63), (4, 96)):
        feeds = dummy_inputs(batch, length, BERT_VOCAB, generator, segments=True)
        start, end = session.run([START_LOGITS, END_LOGITS], feeds)
        with torch.no_grad():
            want_start, want_end = module(*(torch.from_numpy(v) for v in feeds.values()))
        real = feeds["attention_mask"] == 1
        assert np.abs(start - want_start.numpy())[real].max() <= 1e-4
        assert np.abs(end - want_end.numpy())[real].max() <= 1e-4


def test_graph_passes_run_on_the_span_graph(qa_exports):
    """ort-cpu (dynamic) and tensorrt (static) passes: each pass's parity is checked inside ``optimize``."""
    dynamic, static = qa_exports
    fused = dynamic.graphs[0].optimized
    applied = {r.name for r in fused.reports if r.modified}
    assert {"ort-fusions", "order-restore-elimination", "row-gather", "row-scatter"} <= applied
    assert fused.nodes_after < fused.nodes_before
    ops = [n.op_type for n in onnx.load(fused.output).graph.node]
    assert "Attention" in ops or "MultiHeadAttention" in ops
    # Every write-back of kept states (one per pruned layer, one after the last) became a row scatter.
    raw = [n.op_type for n in onnx.load(dynamic.graphs[0].path).graph.node]
    assert "ScatterElements" not in ops and ops.count("ScatterND") == raw.count("ScatterElements") >= 2
    for graph in static.graphs:
        assert graph.optimized.target == "tensorrt"
        assert all(r.max_abs_diff is None or r.max_abs_diff <= 1e-4 for r in graph.optimized.reports)


def test_tensorrt_lint_passes_the_static_span_graph(qa_exports):
    for graph in qa_exports[1].graphs:
        report = lint_model(graph.optimized.output)
        assert report.passed, report.table()


def test_a_gated_question_exports_with_parity(tokenizer, tmp_path):
    """``--gate-question``: no segment is forced in the graph, so the question's tokens are ranked like the
    context's; parity on random question segments as for the default."""
    checkpoint = save_qa_checkpoint(tmp_path / "ckpt", tokenizer, tiny_qa_model(gate_question=True))
    result = run_export(ExportConfig(budget=0.4, checkpoint=str(checkpoint), out=str(tmp_path / "out"),
                                     parity_batches=(1, 3), parity_lengths=(5, 37, 96)))
    graph = result.graphs[0]
    assert graph.parity.passed and graph.parity.max_abs_diff <= 1e-4, graph.parity.as_dict()
    assert RetentionCheckpoint.from_pretrained(checkpoint).model.config.gate_question
