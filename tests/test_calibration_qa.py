"""INT8 QDQ of a question-answering graph: calibrated on SQuAD-format questions cut into the export's windows and
padded as the runtime pads them, the span head and the TopK score path kept fp32, and fp32 vs INT8 measured on the
decoded answers (span agreement, EM/F1), the kept tokens and the start/end logits.

A tiny random BERT with a span head learns nothing, so EM/F1 are near 0: what is checked is that INT8 answers what
fp32 answers, through the torch-free runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import write_squad
from test_export_qa import WINDOWS, save_qa_checkpoint

import adaret.runtime as rt
from adaret.calibration.checkpoint import QuantizeConfig, quantize
from adaret.calibration.data import calibration_data, calibration_questions
from adaret.calibration.int8 import graph as qgraph
from adaret.calibration.int8.reader import QaSet
from adaret.calibration.int8.record import CalibrationRecord, record_path, scales_sha256
from adaret.calibration.int8.sensitivity import AgreementProbe, _Gates, kept_positions
from adaret.calibration.int8.verify import SpanAgreement, compare_answers
from adaret.cli import main
from adaret.core import graph_facts as gf
from adaret.core.errors import AdaretError
from adaret.core.io_spec import END_LOGITS, START_LOGITS
from adaret.core.metadata import ExportMetadata
from adaret.core.ort_sessions import make_session
from adaret.core.padding import plan_batches
from adaret.core.qa_windows import make_windows
from adaret.core.squad import read_squad
from adaret.engines.lint import lint_model
from adaret.export import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize

SAMPLES = 24
PLACES = ["Oslo", "Lima", "Quito", "Hanoi", "Accra", "Nairobi", "Havana", "Manila", "Ankara", "Lusaka", "Dakar", "Riga"]
FILLER = ("The river ran slowly past the old mill while traders counted their goods. Farmers brought grain, wool "
          "and timber to the square, and the clerks wrote every sale into long ledgers. ")


def squad_long(path: Path, contexts: int, offset: int = 0) -> Path:
    """A SQuAD-format file whose contexts take one to three windows of WINDOWS' 96 tokens (up to about 180 tokens),
    with the answer early in some and late in others."""
    paragraphs = []
    for i in range(offset, offset + contexts):
        place, year = PLACES[i % len(PLACES)], str(1900 + 7 * i)
        fact = f"In {year} the council of {place} opened a new bridge over the river. "
        context = FILLER * (i % 3) + fact + FILLER * (i // 3 % 3)
        paragraphs.append((context, [(f"c{i}-place", f"Where was a bridge opened in {year}?", place),
                                     (f"c{i}-year", f"When did {place} open a new bridge?", year)]))
    return write_squad(path, paragraphs)


@pytest.fixture(scope="module")
def qa(tmp_path_factory, tokenizer):
    """The tiny QA checkpoint, its dynamic --with-positions export and that export's ort-cpu-int8 graph."""
    root = tmp_path_factory.mktemp("qa-int8")
    checkpoint = save_qa_checkpoint(root / "ckpt", tokenizer)
    result = run_export(ExportConfig(budget=0.4, checkpoint=str(checkpoint), out=str(root / "export"),
                                     with_positions=True, parity_batches=(2,), parity_lengths=(16, 96)), None)
    raw = result.graphs[0].path
    int8src = optimize(raw, raw.parent / "model.int8src.onnx", target="ort-cpu-int8").output
    return {"checkpoint": checkpoint, "raw": raw, "int8src": int8src, "root": root}


@pytest.fixture(scope="module")
def calibration_file(qa):
    return squad_long(qa["root"] / "calib.json", contexts=16)


@pytest.fixture(scope="module")
def held_out(qa):
    return read_squad(squad_long(qa["root"] / "held_out.json", contexts=10, offset=100))


@pytest.fixture(scope="module")
def int8(qa, calibration_file):
    """model.onnx (the TensorRT input) in INT8, written beside the export's tokenizer so that the runtime loads it."""
    return quantize(QuantizeConfig(checkpoint=str(qa["checkpoint"]), onnx=str(qa["raw"]),
                                   output=str(qa["raw"].parent / "model.int8.onnx"), data=str(calibration_file),
                                   samples=SAMPLES, method="minmax", progress=False))


def test_the_int8_graph_answers_through_the_runtime_as_fp32_does(qa, int8, held_out, tokenizer):
    fp32, quantized = rt.load(qa["raw"]), rt.load(int8.output)
    example = held_out[0]
    best = quantized.answer(example.question, example.context)[0]
    assert best.text and example.context[best.start_char:best.end_char] == best.text
    questions, contexts = [e.question for e in held_out], [e.context for e in held_out]
    want = [spans[0].text for spans in fp32.answer_batch(questions, contexts)]
    got = [spans[0].text for spans in quantized.answer_batch(questions, contexts)]
    report = compare_answers(qa["raw"], int8.output, held_out, tokenizer)
    # compare_answers windows, pads and decodes as the runtime does, so it counts the same agreeing answers
    assert report.span_agreement == sum(a == b for a, b in zip(want, got, strict=True)) / len(held_out)
    assert report.span_agreement >= 0.9


def test_the_report_has_the_qa_agreement_fields(qa, int8, held_out, tokenizer):
    report = compare_answers(qa["raw"], int8.output, held_out, tokenizer)
    assert isinstance(report, SpanAgreement)
    assert report.questions == len(held_out) and report.windows > report.questions  # long contexts: several windows
    assert report.token_agreement is not None and report.token_agreement >= 0.97 and report.kept_positions > 0
    assert 0.0 <= report.max_abs_logit_diff < 0.5
    for name in ("exact_match_fp32", "f1_fp32", "exact_match_int8", "f1_int8"):
        assert 0.0 <= getattr(report, name) <= 100.0
    shown = report.as_dict()
    assert {"span_agreement", "flip_rate", "exact_match_int8", "f1_int8", "max_abs_logit_diff"} <= shown.keys()
    # The calibrate step measured the same fields on its calibration questions.
    measured = CalibrationRecord.read(record_path(int8.output)).quantization["calibration_agreement"]
    assert measured.keys() == shown.keys() and measured["questions"] == SAMPLES
    assert measured == int8.agreement.as_dict()
    print(f"\nheld-out: {report.summary()}\ncalibration: {int8.agreement.summary()}")


def test_windows_are_padded_exactly_as_the_runtime_pads_them(qa, held_out, tokenizer):
    session = rt.load(qa["raw"])
    data = QaSet.for_export(session.metadata, held_out, tokenizer, batch_size=4)
    assert data.widths == session.widths
    served = make_windows(session.encoder.tokenizer, [e.question for e in held_out], [e.context for e in held_out],
                          max_length=min(WINDOWS["max_length"], session.max_length),
                          doc_stride=WINDOWS["doc_stride"], max_query_length=WINDOWS["max_query_length"],
                          pad_id=session.encoder.pad_id)
    assert data.windows.input_ids == served.input_ids and data.windows.token_type_ids == served.token_type_ids
    planned = list(data.planned())
    runtime = plan_batches(served.lengths, session.widths, 4)
    assert [rows for rows, _ in planned] == [b.indices for b in runtime]
    for (_, feeds), batch in zip(planned, runtime, strict=True):
        for name, value in served.pad(batch.width, batch.indices).items():
            assert np.array_equal(feeds[name], value), name
    assert len({f["input_ids"].shape[1] for _, f in planned}) > 1  # bucket widths, not one padded length


def test_the_span_head_and_the_score_path_stay_fp32(qa, int8):
    planned = qgraph.plan_quantization(qgraph.load(qa["raw"]))
    heads = planned.reasons()["head"]
    assert len(heads) == 1  # one MatMul feeds both start and end logits
    model = qgraph.load(int8.output)
    head = next(n for n in gf.nodes(model) if n.name == heads[0])
    assert all(v.producer() is None or v.producer().op_type != "DequantizeLinear" for v in head.inputs if v)
    topks = [n for n in gf.nodes(model) if gf.is_score_topk(n)]
    assert len(topks) == len(int8.plan.score_topk) > 0
    for topk in topks:
        assert gf.dtype_name(topk.inputs[0]) == "FLOAT"
        for node in (topk, *gf.score_path(topk)):
            feeding = [v.producer() for v in node.inputs if v is not None and v.producer() is not None]
            assert all(p.op_type not in ("DequantizeLinear", "QuantizeLinear") for p in feeding), node.name
    assert set(gf.score_path_node_names(qgraph.load(qa["raw"]))) <= set(planned.reasons()["score-path"])
    report = lint_model(int8.output, precision="int8-qdq")
    assert not {f.rule for f in report.findings if f.rule.startswith("qdq")}, report.table()


def test_kept_positions_from_the_score_topks_match_the_exported_ones(qa, held_out, tokenizer):
    """The agreement search reads kept tokens from the TopK indices; in the QA graph they must be the exported
    kept_positions too (the restore scatter reads the same indices)."""
    gates = _Gates.of(gf.load_model(qa["raw"]))
    proto = onnx.load(str(qa["raw"]))
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in gates.index_outputs)
    session = rt.load(qa["raw"])
    probe = make_session(proto)
    data = QaSet.for_export(session.metadata, held_out, tokenizer, batch_size=4)
    for _, feeds in data.planned():
        outputs = dict(zip([o.name for o in probe.get_outputs()], probe.run(None, feeds), strict=True))
        composed = kept_positions([outputs[n] for n in gates.index_outputs], gates.sorted_after,
                                  feeds["input_ids"].shape[1])
        exported = [v for k, v in outputs.items() if k.startswith("kept_positions")]
        assert len(composed) == len(exported) > 0
        for ours, theirs in zip(composed, exported, strict=True):
            np.testing.assert_array_equal(np.sort(ours, axis=1), np.sort(theirs, axis=1))


def test_the_record_names_the_qa_data_and_reruns_the_same(qa, int8, calibration_file, tmp_path):
    record = CalibrationRecord.read(record_path(int8.output))
    data = record.data
    assert data["task"] == "question-answering" and data["split"] == "all" and data["samples"] == SAMPLES
    assert data["question_answering"] == WINDOWS and data["windows"] > SAMPLES
    assert list(data["files"]) == [calibration_file.name]  # a file name and its sha256, no machine path
    assert record.quantization["tensorrt_input"] and record.scales_sha256 == scales_sha256(int8.output)
    search = record.quantization["agreement_search"]
    assert search["texts"] == data["windows"] and search["examples"] == SAMPLES  # the bound clusters by question
    meta = ExportMetadata.from_props(gf.load_model(int8.output).metadata_props)
    assert meta.task == "question-answering" and meta.question_answering == WINDOWS
    assert meta.quantization.startswith("int8-qdq")
    again = quantize(QuantizeConfig(checkpoint=str(qa["checkpoint"]), onnx=str(qa["raw"]),
                                    output=str(tmp_path / "again.onnx"), data=str(calibration_file), samples=SAMPLES,
                                    method="minmax", progress=False))
    assert again.record.scales_sha256 == record.scales_sha256
    assert again.record.data["texts_sha256"] == data["texts_sha256"]


def test_the_ort_cpu_int8_route_through_the_command(qa, calibration_file, held_out, capsys):
    out = qa["int8src"].parent / "model.int8src.int8.onnx"
    code = main(["calibrate", "--no-progress", "--checkpoint", str(qa["checkpoint"]), "--data", str(calibration_file),
                 "--samples", "16", "--onnx", str(qa["int8src"]), "-o", str(out), "--target-agreement", "1.0"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file(), printed
    assert "16 questions of" in printed and "calibration windows of 16 questions" in printed
    assert "span agreement" in printed and "EM/F1 fp32" in printed
    record = CalibrationRecord.read(record_path(out))
    assert not record.quantization["tensorrt_input"] and record.quantization["activations"].startswith("uint8")
    assert record.quantization["agreement_search"]["reached"]
    session = rt.load(out)
    assert session.output_names[:2] == [START_LOGITS, END_LOGITS]
    assert session.answer(held_out[0].question, held_out[0].context)[0].text


def test_data_of_the_other_task_is_one_line(qa, capsys, tmp_path):
    code = main(["calibrate", "--no-progress", "--checkpoint", str(qa["checkpoint"]), "--data", "bbc-news",
                 "--samples", "8", "--onnx", str(qa["raw"]), "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "is classification data" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(AdaretError, match="squad is question-answering data"):
        calibration_data("sequence-classification", "squad", samples=8)


def test_question_splits_follow_training(calibration_file):
    """A SQuAD-format file's train/eval splits are question-answering training's: a tenth of its contexts, with all
    their questions, held out."""
    from adaret.training.question_answering import load_qa_splits

    every = calibration_questions(str(calibration_file), samples=32).examples
    assert [e.id for e in every] == [e.id for e in read_squad(calibration_file)]
    train, held, _ = load_qa_splits(str(calibration_file), seed=0)
    kept = calibration_questions(str(calibration_file), samples=len(train), split="train").examples
    assert [e.id for e in kept] == [e.id for e in train] and len(held) == 2
    with pytest.raises(AdaretError, match="too few calibration samples"):
        calibration_questions(str(calibration_file), samples=8, split="eval")


def test_the_search_bound_clusters_the_windows_of_a_question():
    """Windows of one question overlap, so their flips are one cluster of the lower bound, not independent rows."""
    probe = AgreementProbe.__new__(AgreementProbe)
    probe.batches = [{"attention_mask": np.ones((3, 4), dtype=np.int64)}]
    probe.reference = [[np.array([[0, 1], [0, 2], [1, 3]])]]
    candidate = [[np.array([[0, 1], [0, 3], [1, 3]])]]
    probe.examples = [[7, 7, 9]]  # rows 0 and 1 are two windows of one question
    kept, shared = probe._per_text(candidate)
    assert kept.tolist() == [4.0, 2.0] and shared.tolist() == [3.0, 2.0]
    probe.examples = None
    assert probe._per_text(candidate)[0].tolist() == [2.0, 2.0, 2.0]
