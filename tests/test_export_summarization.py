"""Summarization export: three graphs in Optimum's layout, checked by greedy generation against PyTorch.

A tiny random encoder-decoder (4 + 4 layers, hidden 32) whose gates are spread (no near-ties) and whose end token
is biased so that some documents stop early and others run to the step limit. One export at budget 0.4 is shared by
the module; the command line exports the same checkpoint at 1.0 (no TopK).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FRACTIONS, SPECIAL

from adaret.cli import main
from adaret.core.errors import AdaretError, ParityError
from adaret.core.io_spec import decoder_cache_names
from adaret.core.metadata import ExportMetadata
from adaret.core.ort_sessions import make_session
from adaret.core.outputs import read_manifest
from adaret.core.seq2seq_graphs import (
    DECODER_GRAPH,
    DECODER_WITH_PAST_GRAPH,
    ENCODER_GRAPH,
    GRAPH_NAMES,
    SETTINGS_NAME,
    Seq2SeqGraphs,
    SummarizationSettings,
)
from adaret.export import ExportConfig, run_export
from adaret.export import seq2seq as s2s
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint

LAYERS = 4

def dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def io(path: Path) -> tuple[dict[str, onnx.ValueInfoProto], dict[str, onnx.ValueInfoProto]]:
    graph = onnx.load(path, load_external_data=False).graph
    return {v.name: v for v in graph.input}, {v.name: v for v in graph.output}


def test_encoder_graph_names_types_and_dynamic_axes(summarizer_export):
    inputs, outputs = io(summarizer_export.out_dir / ENCODER_GRAPH)
    assert list(inputs) == ["input_ids", "attention_mask"]  # no token types: a chunk is one segment
    assert all(dims(v)[0] and isinstance(dims(v)[0], str) and isinstance(dims(v)[1], str) for v in inputs.values())
    assert list(outputs) == ["encoder_hidden_states", "encoder_attention_mask"]
    states, mask = outputs.values()
    assert states.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert mask.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert isinstance(dims(states)[0], str) and isinstance(dims(states)[1], str) and dims(states)[2] == 32
    ops = {node.op_type for node in onnx.load(summarizer_export.out_dir / ENCODER_GRAPH).graph.node}
    assert "TopK" in ops


def test_decoder_graphs_have_optimum_cache_names_and_dynamic_axes(summarizer_export):
    inputs, outputs = io(summarizer_export.out_dir / DECODER_GRAPH)
    assert list(inputs) == ["input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    assert list(outputs) == ["logits", *decoder_cache_names(LAYERS, "present")]
    assert dims(inputs["input_ids"]) == ["batch", "steps"]
    assert dims(inputs["encoder_hidden_states"]) == ["batch", "memory", 32]
    assert dims(outputs["logits"]) == ["batch", "steps", 30522]
    assert dims(outputs["present.0.encoder.key"]) == ["batch", 4, "memory", 8]
    assert inputs["encoder_attention_mask"].type.tensor_type.elem_type == onnx.TensorProto.INT64

    inputs, outputs = io(summarizer_export.out_dir / DECODER_WITH_PAST_GRAPH)
    assert list(inputs) == ["input_ids", "encoder_attention_mask",
                            *decoder_cache_names(LAYERS, "past_key_values")]
    assert list(outputs) == ["logits", *decoder_cache_names(LAYERS, "present", encoder=False)]
    assert dims(inputs["past_key_values.3.decoder.value"]) == ["batch", 4, "past", 8]
    assert dims(inputs["past_key_values.3.encoder.value"]) == ["batch", 4, "memory", 8]
    assert dims(outputs["present.3.decoder.value"])[2] != "past"  # the past grows by the steps


def test_metadata_settings_report_and_manifest(summarizer_export, summarizer_checkpoint):
    out = summarizer_export.out_dir
    meta = ExportMetadata.from_model(onnx.load(out / ENCODER_GRAPH, load_external_data=False))
    assert (meta.task, meta.budget, meta.form) == ("summarization", 0.4, "dynamic")
    assert meta.checkpoint_sha256 == Seq2SeqCheckpoint.from_pretrained(summarizer_checkpoint, "eager").sha256
    assert meta.schedule["measured"] == FRACTIONS and meta.keep_counts["64"] == [64, 26, 10, 4]
    settings = SummarizationSettings.read(out)
    assert json.loads(meta.extra["summarization"]) == asdict(settings)
    assert (settings.chunk_length, settings.max_source_tokens, settings.max_target_tokens) == (64, 200, 14)
    assert (settings.start_id, settings.end_id, settings.pad_id) == (101, 102, 0)
    assert (settings.num_layers, settings.num_heads, settings.head_size) == (4, 4, 8)
    report = json.loads((out / "export_report.json").read_text())
    assert report["task"] == "summarization" and report["parity"]["passed"] and report["graph_passes"] is None
    assert [g["path"] for g in report["graphs"]] == list(GRAPH_NAMES) and all(g["size_bytes"] > 0
                                                                             for g in report["graphs"])
    assert set(read_manifest(out)) >= {*GRAPH_NAMES, SETTINGS_NAME, "tokenizer.json", "export_report.json"}


def test_parity_covers_batches_lengths_padding_and_chunks(summarizer_export):
    parity = summarizer_export.parity
    assert parity.passed and parity.tokens_equal and parity.masks_equal
    assert parity.logits_max_abs_diff <= 1e-4 and parity.encoder_max_abs_diff <= 1e-4
    cases = {case.name: case for case in parity.cases}
    assert {case.documents for case in parity.cases} >= {1, 3, 8}
    assert cases["single-odd"].width % 2 == 1
    assert cases["ragged-multi-chunk"].padding_rows > 0 and cases["ragged-multi-chunk"].rows > 3
    assert cases["real-text"].rows > cases["real-text"].documents  # the text fills more than one chunk
    assert {case.steps for case in parity.cases} != {1}  # generation ran past the first step


def open_graphs(directory: Path) -> Seq2SeqGraphs:
    return Seq2SeqGraphs(*(make_session(directory / name) for name in GRAPH_NAMES), num_layers=LAYERS)


def gate(summarizer_checkpoint: Path, graphs: Seq2SeqGraphs, tolerance: float = 1e-4):
    checkpoint = Seq2SeqCheckpoint.from_pretrained(summarizer_checkpoint, "eager")
    schedule = checkpoint.info.keep_schedule.rescaled(0.4)
    return s2s.check_summarization_parity(checkpoint.model, schedule, graphs, s2s.parity_documents(checkpoint),
                                          SPECIAL, max_new_tokens=8, tolerance=tolerance)


def test_a_broken_decoder_fails_the_gate(summarizer_export, summarizer_checkpoint, tmp_path):
    """A cache step with one weight matrix off by noise of 1e-2 gives the same first step and wrong later ones
    (noise, not a constant: a LayerNorm after the embeddings would remove a constant shift)."""
    model = onnx.load(summarizer_export.out_dir / DECODER_WITH_PAST_GRAPH)
    weight = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)
    noise = np.random.default_rng(0).normal(0, 1e-2, size=tuple(weight.dims)).astype(np.float32)
    values = onnx.numpy_helper.to_array(weight) + noise
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, tmp_path / DECODER_WITH_PAST_GRAPH)
    for name in (ENCODER_GRAPH, DECODER_GRAPH):
        (tmp_path / name).write_bytes((summarizer_export.out_dir / name).read_bytes())
    real = open_graphs(summarizer_export.out_dir)
    assert gate(summarizer_checkpoint, real).passed  # the check itself passes on the real graphs
    broken = gate(summarizer_checkpoint, open_graphs(tmp_path))
    assert not broken.passed and broken.logits_max_abs_diff > 1e-4


def test_a_tolerance_below_the_noise_fails_the_gate_and_writes_nothing(summarizer_export, summarizer_checkpoint,
                                                                       tmp_path, monkeypatch):
    assert not gate(summarizer_checkpoint, open_graphs(summarizer_export.out_dir), tolerance=1e-9).passed
    # skip the exporter: its time
    exported = {name: onnx.load(summarizer_export.out_dir / name) for name in GRAPH_NAMES}
    monkeypatch.setattr(s2s, "_export_graphs", lambda *args: exported)
    out = tmp_path / "refused"
    with pytest.raises(ParityError, match=r"ONNX Runtime disagrees with PyTorch \(max \|logit diff\|") as raised:
        s2s.run_summarization_export(ExportConfig(budget=0.4, checkpoint=str(summarizer_checkpoint), out=str(out),
                                                  tolerance=1e-9))
    assert "\n" not in str(raised.value)
    assert not out.exists()


def test_cli_exports_a_summarization_checkpoint_without_task_at_budget_one(summarizer_checkpoint, tmp_path, capsys):
    out = tmp_path / "b1"
    assert main(["export", "--budget", "1.0", "--checkpoint", str(summarizer_checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "summarization, budget 1" in printed and "greedy tokens identical" in printed
    assert "TopK" not in {node.op_type for node in onnx.load(out / ENCODER_GRAPH).graph.node}
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["passed"] and report["keep_counts"]["64"] == [64] * 4
    assert SummarizationSettings.read(out).budget == 1.0


@pytest.mark.parametrize("flags, message", [
    (["--static"], "--static is not supported for summarization"),
    (["--with-positions"], "--with-positions is not supported"),
    (["--scorer", "random"], "--scorer random is not supported"),
])
def test_unsupported_flags_are_one_line(summarizer_checkpoint, tmp_path, capsys, flags, message):
    assert main(["export", "--budget", "0.4", "--checkpoint", str(summarizer_checkpoint), "--out", str(tmp_path / "x"),
                 *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_task_and_checkpoint_must_agree(summarizer_checkpoint, tiny_checkpoint, tmp_path):
    with pytest.raises(AdaretError, match="not a summarization checkpoint"):
        s2s.run_summarization_export(ExportConfig(budget=0.4, checkpoint=str(tiny_checkpoint), task="summarization",
                                                  out=str(tmp_path / "a")))
    with pytest.raises(AdaretError, match="is a summarization checkpoint: export it with --task summarization"):
        run_export(ExportConfig(budget=0.4, checkpoint=str(summarizer_checkpoint), out=str(tmp_path / "b")))


def test_gates_with_a_position_prior_export_with_parity(tokenizer, tmp_path):
    """``adaret train --task summarization --gate-positions``: the prior is part of every gate's score in the encoder
    graph. A steep prior, so that it moves the choice: without it the same weights keep other tokens."""
    import torch
    from conftest import save_tiny_summarizer, tiny_summarizer

    model = tiny_summarizer(gate_positions=True)
    with torch.no_grad():
        for gate in model.gates.values():
            gate.position_weights.copy_(torch.tensor([-6.0, 4.0]))
    checkpoint = save_tiny_summarizer(tmp_path / "ckpt", tokenizer, model=model)
    result = s2s.run_summarization_export(ExportConfig(budget=0.4, checkpoint=str(checkpoint), out=str(tmp_path / "b")))
    assert result.parity.passed and result.parity.tokens_equal and result.parity.masks_equal
    assert result.parity.encoder_max_abs_diff <= 1e-4

    schedule = Seq2SeqCheckpoint.from_pretrained(checkpoint, "eager").info.keep_schedule.rescaled(0.4)
    ids = torch.randint(1000, 30000, (2, 64), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = SPECIAL["start"]
    mask = torch.ones_like(ids)
    with_prior = model.encode(ids, mask, mode="hard", schedule=schedule).kept_positions
    without = tiny_summarizer().encode(ids, mask, mode="hard", schedule=schedule).kept_positions
    assert with_prior.keys() == without.keys()
    assert any(not torch.equal(with_prior[layer], without[layer]) for layer in with_prior)
