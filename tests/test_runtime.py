"""adaret.runtime on tiny exports: PyTorch parity on texts, bucketing and padding, bad input, torch-free import."""

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from conftest import run_with_imports_blocked
from hypothesis import given, settings
from hypothesis import strategies as st

import adaret.runtime as rt
from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.core.padding import bucket_widths, pad_batch, plan_batches
from adaret.export import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.modeling import KeepSchedule
from adaret.runtime.options import select_providers, session_options
from adaret.training.checkpoint import RetentionCheckpoint

TEXTS = [
    "Shares in the bank fell sharply after the results.",
    "The film won three awards at the festival on Sunday night, including best director.",
    "Parliament will vote on the bill next week.",
    "A late goal sealed the cup for the visitors.",
    "The new phone has a faster chip and a better camera, the company said in a statement on Tuesday.",
    "Oil prices rose.",
    "The minister said the government had no plans to raise taxes before the election, despite pressure.",
]


@dataclass(frozen=True)
class Exported:
    dir: Path
    graph: Path  # the plain graph; rt.load(dir) picks the optimised one beside it
    schedule: KeepSchedule


def _exported(result, name: str) -> Exported:
    graph = result.config.out_dir / name
    numerators = ExportMetadata.from_model(onnx.load(str(graph), load_external_data=False)).schedule["numerators"]
    return Exported(result.config.out_dir, graph, KeepSchedule(tuple(numerators)))


@pytest.fixture(scope="module")
def dynamic_export(tiny_dynamic_export) -> Exported:
    return _exported(tiny_dynamic_export, "model.onnx")


@pytest.fixture(scope="module")
def static_export(tiny_static_export) -> Exported:
    return _exported(tiny_static_export, "model_seq32.onnx")


@pytest.fixture(scope="module")
def session(dynamic_export):
    return rt.load(dynamic_export.dir)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager").model


def _torch_logits(model, schedule, feeds) -> np.ndarray:
    with torch.no_grad():
        tensors = [torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids")]
        return model(*tensors, mode="hard", schedule=schedule).logits.numpy()


def test_load_reads_the_artifact(session, dynamic_export):
    assert session.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert session.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert session.budget == 0.5 and session.static_lengths == []
    assert session.max_length == 128  # the tiny model's positions, from the graph's metadata
    assert session.source.name == dynamic_export.dir.name
    assert session.metadata.optimized_for == "ort-cpu"  # the graph-pass output, preferred over model.onnx
    assert rt.load(dynamic_export.graph).metadata.optimized_for is None
    assert rt.load(dynamic_export.dir, max_length=64).max_length == 64
    assert rt.load(dynamic_export.dir, max_length=4096).max_length == 128  # a request cannot exceed the model
    assert "CPUExecutionProvider" in session.providers


def test_classify_matches_pytorch_on_the_same_inputs(session, dynamic_export, reference):
    """Each text's logits equal PyTorch hard top-M on the exact padded batch the runtime built."""
    predictions = session.classify(TEXTS, batch_size=3)
    for batch, feeds in session.batches(session.encode(TEXTS), batch_size=3):
        want = _torch_logits(reference, dynamic_export.schedule, feeds)
        for row, index in enumerate(batch.indices):
            shifted = np.exp(want[row] - want[row].max())
            assert np.abs(predictions[index].probabilities - shifted / shifted.sum()).max() < 1e-5
            assert predictions[index].label == session.label_names[int(want[row].argmax())]
    assert all(abs(float(p.probabilities.sum()) - 1.0) < 1e-5 for p in predictions)
    assert set(predictions[0].scores) == set(session.label_names)


def test_a_texts_answer_does_not_depend_on_its_batch(session):
    together = session.classify(TEXTS, batch_size=4)
    alone = [session.classify([text])[0] for text in TEXTS]
    reversed_order = session.classify(TEXTS[::-1], batch_size=2)[::-1]
    for a, b, c in zip(together, alone, reversed_order, strict=True):
        assert np.abs(a.probabilities - b.probabilities).max() < 1e-5
        assert np.abs(a.probabilities - c.probabilities).max() < 1e-5


def test_batches_pad_each_text_to_its_own_bucket(session):
    encoded = session.encode(TEXTS)
    seen = []
    for batch, feeds in session.batches(encoded, batch_size=2):
        assert len(batch.indices) <= 2 and feeds["input_ids"].shape == (len(batch.indices), batch.width)
        for row, index in enumerate(batch.indices):
            ids = encoded.ids[index]
            assert batch.width == min(w for w in session.widths if w >= len(ids))
            assert feeds["input_ids"][row, :len(ids)].tolist() == ids
            assert feeds["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (batch.width - len(ids))
            assert not feeds["input_ids"][row, len(ids):].any() and not feeds["token_type_ids"].any()
        seen += batch.indices
    assert sorted(seen) == list(range(len(TEXTS)))


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 512), min_size=1, max_size=40), batch_size=st.integers(1, 9),
       multiple=st.sampled_from([8, 32, 64]))
def test_plan_batches_covers_every_text_once_in_the_smallest_bucket(lengths, batch_size, multiple):
    widths = bucket_widths(512, pad_multiple=multiple)
    plan = plan_batches(lengths, widths, batch_size)
    assert sorted(i for b in plan for i in b.indices) == list(range(len(lengths)))
    for batch in plan:
        assert 1 <= len(batch.indices) <= batch_size
        assert all(batch.width == min(w for w in widths if w >= lengths[i]) for i in batch.indices)
    assert widths[-1] == 512 and bucket_widths(100, (64, 32)) == [32, 64]


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 512), min_size=1, max_size=40), batch_size=st.integers(1, 9),
       max_tokens=st.integers(1, 2048))
def test_a_token_cap_bounds_each_batch_but_keeps_the_plan(lengths, batch_size, max_tokens):
    widths = bucket_widths(512)
    capped, uncapped = plan_batches(lengths, widths, batch_size, max_tokens), plan_batches(lengths, widths, batch_size)
    assert sorted(i for b in capped for i in b.indices) == list(range(len(lengths)))
    for batch in capped:
        assert len(batch.indices) == 1 or len(batch.indices) * batch.width <= max_tokens
        assert len(batch.indices) <= batch_size
    # The same texts in the same buckets, in the same order: only the cuts between runs move.
    assert [(i, b.width) for b in capped for i in b.indices] == [(i, b.width) for b in uncapped for i in b.indices]


@pytest.mark.parametrize("bad", [0, -5])
def test_a_token_cap_below_one_is_refused(bad):
    with pytest.raises(AdaretError, match="max tokens per batch"):
        plan_batches([3], [32], 4, bad)


def test_a_token_cap_does_not_change_answers(session):
    plain = session.classify(TEXTS, batch_size=8)
    for cap in (1, 40, 100):
        capped = session.classify(TEXTS, batch_size=8, max_tokens=cap)
        for a, b in zip(plain, capped, strict=True):
            assert a.label == b.label and np.abs(a.probabilities - b.probabilities).max() < 1e-5


def test_pad_batch_layout():
    feeds = pad_batch([[101, 7, 102], [101, 102]], 4, pad_id=0)
    assert feeds["input_ids"].tolist() == [[101, 7, 102, 0], [101, 102, 0, 0]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert all(a.dtype == np.int64 for a in feeds.values())


def test_static_buckets_pad_to_the_bucket(static_export, reference, tiny_checkpoint):
    session = rt.load(static_export.dir)
    assert session.static_lengths == [32, 64] and session.widths == [32, 64] and session.max_length == 64
    generator = np.random.default_rng(0)
    ids = generator.integers(1000, 30000, size=(2, 20), dtype=np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    got = session.run(input_ids=ids, attention_mask=mask)["logits"]
    padded = pad_batch([row.tolist() for row in ids], 32, pad_id=0)  # what the bucket-32 graph must have seen
    assert np.abs(got - _torch_logits(reference, static_export.schedule, padded)).max() < 1e-4
    for batch, feeds in session.batches(session.encode(TEXTS), batch_size=8):
        assert batch.width in (32, 64)
        want = _torch_logits(reference, static_export.schedule, feeds)
        assert np.abs(session.run(**feeds)["logits"] - want).max() < 1e-4
    with pytest.raises(AdaretError, match="exceeds the model's maximum of 64"):
        session.run(input_ids=np.ones((1, 65), dtype=np.int64))


def test_long_text_is_truncated_with_a_warning(session):
    long_text = "word " * 400
    with pytest.warns(rt.TruncationWarning, match="truncated to the first 128"):
        first, second = session.classify([long_text, TEXTS[0]])
    assert first.truncated and not second.truncated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session.classify(TEXTS[:1])  # short texts: no warning


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input_ids": np.ones((2, 8), dtype=np.float32)}, "integer array"),
    ({"input_ids": np.ones(8, dtype=np.int64)}, "rank 2"),
    ({"input_ids": np.ones((1, 2, 8), dtype=np.int64)}, "rank 2"),
    ({"input_ids": np.ones((2, 8), dtype=np.int64), "attention_mask": np.ones((2, 7), dtype=np.int64)},
     "attention_mask has shape"),
    ({"input_ids": np.ones((0, 8), dtype=np.int64)}, "empty dimension"),
    ({"input_ids": np.ones((1, 200), dtype=np.int64)}, "exceeds the model's maximum of 128"),
    ({"input_ids": np.full((1, 8), 10**6, dtype=np.int64)}, r"ids must be in \[0, 30522\), the model.s vocabulary"),
    ({"input_ids": None}, "needs input_ids"),
])
def test_run_rejects_bad_arrays(session, kwargs, message):
    with pytest.raises(AdaretError, match=message):
        session.run(**kwargs)


def test_run_accepts_other_integer_types_and_defaults(session):
    ids = np.array([[101, 2054, 102]], dtype=np.int32)
    full = session.run(input_ids=ids.astype(np.int64), attention_mask=np.ones((1, 3), dtype=np.int64),
                       token_type_ids=np.zeros((1, 3), dtype=np.int64))["logits"]
    assert np.array_equal(session.run(input_ids=ids)["logits"], full)
    assert np.array_equal(session.run(input_ids=ids.tolist())["logits"], full)


@pytest.mark.parametrize(("texts", "message"), [([], "empty list"), ("one text", "list of texts"),
                                                ([b"bytes"], "takes strings")])
def test_classify_rejects_bad_texts(session, texts, message):
    with pytest.raises(AdaretError, match=message):
        session.classify(texts)


def test_corrupt_truncated_and_missing_files_give_clear_errors(dynamic_export, tmp_path):
    source = dynamic_export.graph
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model" * 100)
    for path in (truncated, garbage):
        with pytest.raises(AdaretError, match="not a valid ONNX model"):
            rt.load(path)
    with pytest.raises(AdaretError, match="does not exist"):
        rt.load(tmp_path / "absent.onnx")
    with pytest.raises(AdaretError, match=r"expected a \.onnx graph or a \.plan"):
        rt.load(garbage.rename(tmp_path / "model.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaretError, match=r"holds no model\.onnx"):
        rt.load(tmp_path / "empty")


def test_graph_without_tokenizer_runs_arrays_but_not_texts(dynamic_export, tmp_path):
    lone = tmp_path / "model.onnx"
    shutil.copyfile(dynamic_export.graph, lone)
    session = rt.load(lone)
    assert session.run(input_ids=np.array([[101, 2054, 102]]))["logits"].shape == (1, 5)
    with pytest.raises(AdaretError, match=r"no tokenizer\.json"):
        session.classify(["text"])


def test_providers_and_session_options():
    assert select_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers([]) == ["CPUExecutionProvider"]
    assert session_options().enable_cpu_mem_arena is False  # the measured default (docs/runtime.md)
    assert session_options("arena").enable_cpu_mem_arena is True
    assert session_options(threads=3).intra_op_num_threads == 3
    with pytest.raises(AdaretError, match="unknown memory mode"):
        session_options("huge-pages")


def test_plan_path_without_sidecar_is_a_clear_error(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not an engine")
    with pytest.raises(AdaretError, match="no sidecar"):
        rt.load(plan)


def test_plan_with_a_sidecar_but_no_tensorrt_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not an engine")
    sidecar = {"tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H100", "compute_capability": "9.0",
               "precision": "fp16", "target": "datacenter", "device_memory_bytes": [1024], "onnx_sha256": "0" * 64,
               "onnx_file": "model_seq64.onnx", "profiles": [{"seq_len": 64, "inputs": {
                   "input_ids": {"min": [1, 64], "opt": [8, 64], "max": [32, 64]}}}]}
    (tmp_path / "model.plan.json").write_text(json.dumps(sidecar))
    with pytest.raises(AdaretError, match="tensorrt is not installed"):
        rt.load(plan)


def test_plan_path_goes_through_the_engines_plan_runner(dynamic_export, monkeypatch, tmp_path):
    """Wiring only: a stand-in TrtPlanRunner (backed by ONNX Runtime) behind a .plan path; no TensorRT result."""
    import adaret.engines.trt_session as trt_session

    onnx_runner = rt.load(dynamic_export.dir).runners[None]

    class StandIn:
        def __init__(self, path):
            meta = onnx_runner.metadata
            self.sidecar = SimpleNamespace(budget=meta.budget, training_budget=meta.training_budget, seq_len=None,
                                           schedule=meta.schedule, keep_counts=meta.keep_counts,
                                           checkpoint_sha256=meta.checkpoint_sha256, label_names=meta.label_names,
                                           input_names=meta.input_names, output_names=meta.output_names,
                                           task=meta.task, question_answering=meta.question_answering,
                                           device_memory_bytes=[0])
            self.input_names, self.output_names = list(onnx_runner.input_specs), onnx_runner.output_names

        def run(self, feeds):
            return onnx_runner.infer(feeds)

    monkeypatch.setattr(trt_session, "TrtPlanRunner", StandIn)
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"stand-in")
    shutil.copyfile(dynamic_export.dir / "tokenizer.json", tmp_path / "tokenizer.json")
    session = rt.load(plan)
    assert session.providers == ["TensorRT"] and session.label_names[0] == "business"
    assert session.classify(TEXTS[:2])[0].label in session.label_names


RUNTIME_WITHOUT_TORCH = """
    import adaret.runtime
    session = adaret.runtime.load(sys.argv[1])
    print(session.classify(["Shares fell on the stock market."])[0].label)
"""

def test_runtime_imports_and_runs_with_torch_unimportable(dynamic_export):
    done = run_with_imports_blocked(RUNTIME_WITHOUT_TORCH, str(dynamic_export.dir))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in {"business", "entertainment", "politics", "sports", "tech"}


ONNX_TOOLS_WITHOUT_TORCH = textwrap.dedent("""
    import sys

    class Block:
        BLOCKED = ("torch", "transformers")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked: an ONNX-to-ONNX step must not need it")
            return None

    sys.meta_path.insert(0, Block())
    from adaret.cli import main
    code = main(sys.argv[1:])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in Block.BLOCKED)
    print("HEAVY", heavy if heavy else "none")
    sys.exit(code)
""")


@pytest.mark.parametrize("command", ["optimize", "build-check"])
def test_onnx_only_commands_run_with_torch_unimportable(dynamic_export, tmp_path, command):
    """``adaret optimize`` and ``adaret build --check`` read and write ONNX only: torch must never load."""
    graph = str(dynamic_export.dir / "model.onnx")
    args = ["optimize", graph, "-o", str(tmp_path / "model.opt.onnx")] if command == "optimize" else \
        ["build", graph, "--check", "--target", "datacenter"]
    done = subprocess.run([sys.executable, "-c", ONNX_TOOLS_WITHOUT_TORCH, *args], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parent)
    assert done.stdout.rstrip().endswith("HEAVY none"), done.stdout[-1000:] + done.stderr[-2000:]
    if command == "optimize":
        assert done.returncode == 0 and (tmp_path / "model.opt.onnx").is_file()
    else:  # the dynamic graph is not TensorRT-ready (exit 1); what matters is that the lint ran without torch
        assert done.returncode in (0, 1) and "ready for TensorRT" in done.stdout


def test_classify_command(dynamic_export, capsys):
    from adaret.cli import main

    assert main(["classify", str(dynamic_export.dir), TEXTS[0], "--json"]) == 0
    assert '"label"' in capsys.readouterr().out
    assert main(["classify", str(dynamic_export.dir)]) == 1
    assert "empty list" in capsys.readouterr().err


@pytest.mark.tensorrt
def test_tensorrt_plan_matches_onnx_runtime(static_export, tmp_path):
    """Needs tensorrt and a GPU: build a plan for the 64 bucket and compare it with ONNX Runtime on texts."""
    pytest.importorskip("tensorrt")
    from adaret.cli import main

    plan = tmp_path / "model.plan"
    assert main(["build", str(static_export.dir / "model_seq64.onnx"), "-o", str(plan)]) == 0
    shutil.copyfile(static_export.dir / "tokenizer.json", tmp_path / "tokenizer.json")
    ort_session, trt_session = rt.load(static_export.dir / "model_seq64.onnx"), rt.load(plan)
    for _, feeds in ort_session.batches(ort_session.encode(TEXTS), batch_size=4):
        diff = np.abs(ort_session.run(**feeds)["logits"] - trt_session.run(**feeds)["logits"]).max()
        assert diff < 5e-2


@pytest.mark.slow
def test_bundled_adapter_matches_pytorch_on_bbc_news(tmp_path):
    """The real adapter (about a minute): export at 0.4, classify eval articles, compare with PyTorch hard top-M."""
    from adaret.export.pipeline import DEFAULT_CHECKPOINT
    from adaret.training.data import load_splits

    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        pytest.skip("the bundled adapter is not in place")
    config = ExportConfig(budget=0.4, out=str(tmp_path), parity_lengths=(64,), parity_batches=(1,))
    result = run_export(config, optimize)
    session = rt.load(tmp_path)
    split = load_splits("bbc-news", seed=0).eval
    picks = [(i * len(split)) // 16 for i in range(16)]
    texts = [split.texts[i] for i in picks]
    model = RetentionCheckpoint.from_pretrained(DEFAULT_CHECKPOINT, attn_implementation="eager").model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rt.TruncationWarning)  # most articles exceed 512 tokens
        predictions = session.classify(texts)
        for _, feeds in session.batches(session.encode(texts), batch_size=8):
            want = _torch_logits(model, result.schedule, feeds)
            assert np.abs(session.run(**feeds)["logits"] - want).max() < 1e-3
    correct = sum(p.label == split.label_names[split.labels[i]] for p, i in zip(predictions, picks, strict=True))
    assert correct >= 12, correct  # the adapter is ~95% accurate at budget 0.4
