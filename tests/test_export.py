"""Export of the tiny checkpoint: parity, K per layer, graph forms, metadata, bad input, atomicity."""

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import BERT_VOCAB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaret.core import graph_facts as gf
from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.errors import ParityError
from adaret.core.metadata import ExportMetadata
from adaret.export import ExportConfig, TopMInference, run_export
from adaret.export.parity import check_parity
from adaret.modeling import DENOMINATOR, MIN_KEEP, KeepSchedule
from adaret.training.checkpoint import RetentionCheckpoint, checkpoint_sha256

MAX_POSITIONS = 128  # the tiny model's


@pytest.fixture(scope="module")
def dynamic_export(tiny_positions_export):
    return tiny_positions_export


@pytest.fixture(scope="module")
def static_export(tiny_static_positions_export):
    return tiny_static_positions_export


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, dynamic_export) -> TopMInference:
    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    return TopMInference(checkpoint.model, dynamic_export.schedule, with_positions=True).eval()


@pytest.fixture(scope="module")
def dynamic_session(dynamic_export) -> ort.InferenceSession:
    return ort.InferenceSession(str(dynamic_export.graphs[0].path), providers=["CPUExecutionProvider"])


def _keep_counts(schedule: KeepSchedule, n: int) -> list[int]:
    """The keep rule by exact rational arithmetic: max(2, ceil(f_l * n)) for a gated layer, n for a full one."""
    return [n if k == DENOMINATOR else max(MIN_KEEP, int(-(-Fraction(k, DENOMINATOR) * n // 1)))
            for k in schedule.numerators]


def test_export_records_every_parity_case_it_checked(dynamic_export, static_export):
    """The parity gate's record, not its verdict (run_export raises when it fails): every configured (batch,
    length) was run, each within tolerance with identical kept positions, and the report holds the same cases."""
    dynamic = dynamic_export.graphs[0].parity.cases
    assert sorted((c.batch, c.seq_len) for c in dynamic) == [(b, n) for b in (1, 8) for n in (8, 37, 101, 128)]
    for graph in static_export.graphs:
        assert {(c.batch, c.seq_len) for c in graph.parity.cases} == {(1, graph.seq_len), (8, graph.seq_len)}
    for graph in [*dynamic_export.graphs, *static_export.graphs]:
        assert all(c.positions_identical and 0.0 <= c.max_abs_diff <= 1e-4 for c in graph.parity.cases)
    report = json.loads(dynamic_export.report_path.read_text())
    recorded = report["graphs"][0]["parity"]["cases"]
    assert [(c["batch"], c["seq_len"], c["max_abs_diff"]) for c in recorded] == \
        [(c.batch, c.seq_len, c.max_abs_diff) for c in dynamic]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 5), seq_len=st.integers(2, MAX_POSITIONS), seed=st.integers(0, 2**31))
def test_ort_matches_pytorch_on_random_inputs(reference, dynamic_export, dynamic_session, batch, seq_len, seed):
    report = check_parity(reference, dynamic_export.graphs[0].path, [(batch, seq_len)], BERT_VOCAB, seed=seed,
                          session=dynamic_session)
    assert report.positions_identical
    assert report.max_abs_diff <= 1e-4


def test_dynamic_k_is_floored_exact_ceil_for_many_lengths(dynamic_export, dynamic_session):
    schedule = dynamic_export.schedule
    names = [o.name for o in dynamic_session.get_outputs()]
    pruned = [int(n.removeprefix("kept_positions_l")) - 1 for n in names[1:]]
    # The last layer keeps ceil(f * n) = 1 for the shortest lengths: there the graph must apply the floor of 2.
    assert any(-(-schedule.numerators[layer] * 3 // DENOMINATOR) == 1 for layer in pruned)
    generator = np.random.default_rng(0)
    for n in sorted({2, 3, 4, 5, 6, 7, *range(2, MAX_POSITIONS + 1, 3), MAX_POSITIONS}):
        outputs = dynamic_session.run(None, dummy_inputs(2, n, BERT_VOCAB, generator))
        widths = [o.shape[1] for o in outputs[1:]]
        assert widths == [_keep_counts(schedule, n)[layer] for layer in pruned], n
        assert min(widths) >= MIN_KEEP, n


def test_static_graph_has_constant_k_and_only_runs_at_its_bucket(static_export):
    for graph in static_export.graphs:
        model = onnx.load(str(graph.path))
        constants = {i.name for i in model.graph.initializer}
        constants |= {o for node in model.graph.node if node.op_type == "Constant" for o in node.output}
        topk = [node for node in model.graph.node if node.op_type == "TopK"]
        assert topk and all(node.input[1] in constants for node in topk)
        assert max(max(v) for v in graph.keep_counts.values()) < 3840
        session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
        feeds = dummy_inputs(2, graph.seq_len, BERT_VOCAB, np.random.default_rng(1))
        outputs = session.run(None, feeds)
        assert [o.shape[1] for o in outputs[1:]] == [k for k in _keep_counts(static_export.schedule, graph.seq_len)
                                                     if k < graph.seq_len]
        with pytest.raises(Exception, match=r"(?i)dimension|shape"):
            session.run(None, dummy_inputs(2, graph.seq_len + 1, BERT_VOCAB, np.random.default_rng(2)))


def test_cls_kept_and_no_padding_kept_while_real_tokens_remain(dynamic_session):
    generator = np.random.default_rng(3)
    for n in (9, 50, 127):
        feeds = dummy_inputs(4, n, BERT_VOCAB, generator)
        lengths = feeds["attention_mask"].sum(1)
        for kept in dynamic_session.run(None, feeds)[1:]:
            assert (kept[:, 0] == 0).all()
            for row in range(4):
                real = int((kept[row] < lengths[row]).sum())
                assert real == min(kept.shape[1], int(lengths[row])) or real == kept.shape[1]


def test_metadata_round_trips(dynamic_export, tiny_checkpoint):
    meta = ExportMetadata.from_model(onnx.load(str(dynamic_export.graphs[0].path)))
    assert meta.budget == 0.5 and meta.training_budget == 0.4
    assert meta.schedule["numerators"] == list(dynamic_export.schedule.numerators)
    assert meta.checkpoint_sha256 == checkpoint_sha256(tiny_checkpoint)
    assert meta.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert meta.form == "dynamic" and meta.seq_len is None and meta.opset >= 18
    assert meta.task == "sequence-classification"
    assert meta.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta.vocabulary == BERT_VOCAB.as_dict() == {"size": 30522, "cls_id": 101, "sep_id": 102, "pad_id": 0}
    assert "K_l = max(2, (num_l * n + 9999) // 10000) for a gated layer with num_l < 10000" in meta.keep_rule


def test_default_export_has_only_logits_and_no_training_ops(tiny_dynamic_export):
    model = onnx.load(str(tiny_dynamic_export.graphs[0].path))
    assert [o.name for o in model.graph.output] == ["logits"]
    ops = {node.op_type for node in model.graph.node}
    assert "TopK" in ops and not ops & {"RandomUniform", "RandomUniformLike", "Dropout", "RandomNormal"}
    out = tiny_dynamic_export.config.out_dir
    assert {"tokenizer.json", "export_report.json", "model.onnx"} <= {p.name for p in out.iterdir()}


def test_budget_one_exports_the_plain_encoder(tiny_checkpoint, tmp_path):
    result = run_export(ExportConfig(budget=1.0, checkpoint=str(tiny_checkpoint), out=str(tmp_path),
                                     parity_lengths=(20,), parity_batches=(3,)))
    model = onnx.load(str(result.graphs[0].path))
    assert "TopK" not in {node.op_type for node in model.graph.node}
    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    feeds = dummy_inputs(3, 20, BERT_VOCAB, np.random.default_rng(4))
    got = ort.InferenceSession(str(result.graphs[0].path)).run(None, feeds)[0]
    with torch.no_grad():
        ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        full = checkpoint.model(ids, mask, mode="full").logits.numpy()
    assert np.abs(got - full).max() < 1e-4


def test_parity_failure_leaves_no_file(tiny_checkpoint, tmp_path, monkeypatch):
    import adaret.export.pipeline as pipeline

    def broken_parity(*args, **kwargs):
        report = check_parity(*args, **kwargs)
        report.cases[0].max_abs_diff = 1.0
        return report

    monkeypatch.setattr(pipeline, "check_parity", broken_parity)
    with pytest.raises(ParityError, match="disagrees"):
        run_export(ExportConfig(budget=0.4, checkpoint=str(tiny_checkpoint), out=str(tmp_path / "o"),
                                parity_lengths=(16,), parity_batches=(1,)))
    assert not (tmp_path / "o").exists()  # not even the directory: the export created it, and removed it again


def test_schedule_that_rounds_to_zero_is_clamped_with_a_note(tmp_path, tokenizer):
    from tests.conftest import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path / "steep", tokenizer, fractions=(1.0, 0.3, 0.0, 0.0))
    result = run_export(ExportConfig(budget=0.27, checkpoint=str(path), out=str(tmp_path / "o"),
                                     parity_lengths=(16,), parity_batches=(1,)))
    assert any("clamped" in note for note in result.notes)
    assert min(result.schedule.keep_counts(2)) == MIN_KEEP


def test_a_checkpoint_trained_on_short_texts_is_deployed_at_that_length(tmp_path, tokenizer):
    """Trained with --max-length 48: the runtime reads 48 tokens, as training and validation did, not the
    encoder's 128 (features the head never saw, at more cost than was measured)."""
    import adaret.runtime
    from tests.conftest import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path / "short", tokenizer, max_length=48)
    assert RetentionCheckpoint.from_pretrained(path).max_length == 48
    dynamic = run_export(ExportConfig(budget=0.4, checkpoint=str(path), out=str(tmp_path / "dynamic"),
                                      parity_lengths=(16, 48), parity_batches=(2,)))
    assert ExportMetadata.from_model(onnx.load(str(dynamic.graphs[0].path))).max_positions == 48
    session = adaret.runtime.load(tmp_path / "dynamic")
    assert session.max_length == 48
    with pytest.warns(adaret.runtime.TruncationWarning, match="first 48"):
        assert session.classify(["word " * 200])[0].truncated
    static = run_export(ExportConfig(budget=0.4, checkpoint=str(path), out=str(tmp_path / "static"), static=True,
                                     parity_batches=(1,)))
    assert [graph.seq_len for graph in static.graphs] == [48]  # the default buckets stop at the trained length


def test_gates_with_a_position_prior_export_with_parity(tmp_path, tokenizer):
    """--gate-positions adds a term in each token's relative position to the gate scores; the parity gate (fresh
    inputs, right padding, odd lengths) holds only if the graph computes it from the real length as PyTorch does."""
    from tests.conftest import make_tiny_model, random_batch, save_tiny_checkpoint

    model = make_tiny_model(gate_positions=True)
    with torch.no_grad():
        for gate in model.gates.values():  # strong enough to outrank the tiny model's content scores
            gate.position_weights.copy_(torch.tensor([-20.0, 15.0]))
    ids, mask = random_batch(3, 37, seed=5)
    schedule = KeepSchedule.from_fractions([1.0, 0.6, 0.35, 0.2])
    with_prior = model(ids, mask, mode="hard", schedule=schedule).kept_positions
    # the same seed without the prior: the same backbone and content scorers (the prior draws no random numbers)
    without = make_tiny_model()(ids, mask, mode="hard", schedule=schedule).kept_positions
    assert any(not torch.equal(with_prior[layer], without[layer]) for layer in with_prior)
    path = save_tiny_checkpoint(tmp_path / "positions", tokenizer, model=model)
    result = run_export(ExportConfig(budget=0.4, checkpoint=str(path), out=str(tmp_path / "o"),
                                     parity_lengths=(9, 37, 64), parity_batches=(1, 3)))
    assert result.graphs and RetentionCheckpoint.from_pretrained(path).model.config.gate_positions
    # The prior's arithmetic (the real length's ReduceSum, the Div into r) is on every score path, so INT8 and
    # TensorRT keep it in fp32 with the rest of the scores.
    graph = gf.load_model(result.graphs[0].path)
    for topk in (node for node in gf.nodes(graph) if gf.is_score_topk(node)):
        assert {"ReduceSum", "Div"} <= {node.op_type for node in gf.score_path(topk)}


@pytest.mark.parametrize("max_length, buckets", [(512, (128, 256, 512)), (384, (128, 256, 384)), (64, (64,)),
                                                 (128, (128,))])
def test_default_buckets_end_at_the_deployed_length(max_length, buckets):
    from adaret.export.pipeline import with_default_seq_lens

    assert with_default_seq_lens(ExportConfig(), max_length).seq_lens == buckets
    assert with_default_seq_lens(ExportConfig(seq_lens=(96,)), max_length).seq_lens == (96,)


def _export_cli(args, capsys):
    from adaret.cli import main

    code = main(["export", *args])
    return code, capsys.readouterr().err.strip()


def test_export_bad_inputs_give_one_line(tiny_checkpoint, tmp_path, capsys):
    import json
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    (corrupt / "config.json").write_text("{")
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_checkpoint, tampered)
    config = json.loads((tampered / "config.json").read_text())
    config["weights_sha256"] = "0" * 64
    (tampered / "config.json").write_text(json.dumps(config))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ck = str(tiny_checkpoint)
    cases = [
        (["--budget", "0.4", "--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (["--budget", "0.4", "--checkpoint", str(corrupt)], "config.json is not valid JSON"),
        (["--budget", "0.4", "--checkpoint", str(tampered)], "sha256"),
        (["--budget", "0.4", "--checkpoint", ck, "--seq-len", "1"], "outside [2, 128]"),
        (["--budget", "0.4", "--checkpoint", ck, "--seq-len", "64,4096"], "outside [2, 128]"),
        (["--budget", "0.4", "--checkpoint", ck, "--out", str(blocker / "sub")], "cannot create output"),
        (["--budget", "0.4", "--checkpoint", ck, "--opset", "17"], "opset 17"),
        (["--budget", "0.4", "--checkpoint", ck, "--engine", "datacenter"], "needs --static"),
    ]
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        cases.append((["--budget", "0.4", "--checkpoint", ck, "--static", "--engine", "jetson-orin"],
                      "needs the tensorrt package"))
    for args, message in cases:
        code, err = _export_cli(args, capsys)
        assert code != 0 and len(err.splitlines()) == 1 and message in err, (args, err)


@pytest.mark.parametrize("budget", ["0", "1.01", "half"])
def test_export_rejects_bad_budget(budget, capsys):
    from adaret.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["export", "--budget", budget])
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and len(err.splitlines()) == 1 and "budget" in err


@pytest.mark.slow  # `make demo` runs the same command on every fresh set-up; here it would cost half a minute
def test_demo_command_from_the_repository(tmp_path):
    """`python export.py --budget 0.4` on the bundled adapter: the `make demo` path (about 40 s)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(root / "export.py"), "--budget", "0.4", "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parity vs PyTorch" in result.stdout and "identical" in result.stdout
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
