"""`adaret validate --task question-answering` and benchmarks/qa_baselines.py on a tiny random QA checkpoint.

What is checked is the plumbing and the parity, not accuracy (the tiny model is random): the three rows exist,
ONNX Runtime answers as PyTorch hard top-M does, the speed and memory table is there, and bad input is one line.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from test_export_qa import save_qa_checkpoint
from tokenizers import Tokenizer

from adaret.cli import main
from adaret.core.qa_windows import NO_OFFSET, make_windows

ROOT = Path(__file__).resolve().parent.parent
CITIES = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Athens", "Dublin", "Oslo", "Prague"]
FILLER = "The weather was mild that spring, and the markets in the old town were calm and busy. "


def squad_file(path: Path, contexts: int = 12) -> Path:
    """Contexts from one to several windows long (the tiny checkpoint's windows hold 96 tokens)."""
    articles = []
    for i in range(contexts):
        city = CITIES[i % len(CITIES)]
        context = f"Report {i}. {FILLER * (i % 4)}The meeting of {1990 + i} was held in {city}. {FILLER * (i % 3)}"
        qas = [{"id": f"q{i}-city", "question": f"Where was the meeting of {1990 + i} held?",
                "answers": [{"text": city, "answer_start": context.index(city)}]},
               {"id": f"q{i}-year", "question": f"When was the meeting in {city}?",
                "answers": [{"text": str(1990 + i), "answer_start": context.index(str(1990 + i))}]}]
        articles.append({"title": f"a{i}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory, tokenizer) -> Path:
    return save_qa_checkpoint(tmp_path_factory.mktemp("qa") / "ckpt", tokenizer)


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory) -> Path:
    return squad_file(tmp_path_factory.mktemp("qa-data") / "squad.json")


@pytest.fixture(scope="module")
def validated(qa_checkpoint, qa_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("qa-validate")
    code = main(["validate", "--task", "question-answering", str(qa_checkpoint), "--data", str(qa_data),
                 "--max-examples", "20", "--out", str(out), "--overwrite", "--accuracy-floor", "0",
                 "--threads", "1"])
    return code, out, json.loads((out / "report.json").read_text())


def test_three_rows_scored_on_the_same_sample(validated):
    code, out, report = validated
    assert code == 0 and report["passed"], report["checks"]
    assert report["task"] == "question-answering" and report["questions"] == 20 and report["seed"] == 0
    assert report["windows"] > report["questions"]  # the long contexts span several windows
    rows = {(r["backend"], r["budget"]): r for r in report["rows"]}
    assert set(rows) == {("pytorch-full", 1.0), ("pytorch-hard", 0.4), ("onnxruntime", 0.4)}
    for row in rows.values():
        assert 0.0 <= row["exact_match"] <= row["f1"] <= 100.0 and row["questions_per_s"] > 0
    assert rows["pytorch-full", 1.0]["agreement_with_full"] == 1.0
    assert {c["check"] for c in report["checks"]} == {"runtime_windows", "agreement", "f1_floor"}
    markdown = (out / "report.md").read_text()
    assert "PASSED" in markdown and "| onnxruntime | 0.4 | learned |" in markdown


def test_onnxruntime_answers_as_pytorch_hard(validated):
    """Near-ties aside the graph keeps the tokens PyTorch keeps and picks the same span: on the tiny model, all."""
    deployed = next(r for r in validated[2]["rows"] if r["backend"] == "onnxruntime")
    assert deployed["agreement_with_reference"] >= 0.95
    assert deployed["agreement_with_reference"] == 1.0 and not validated[2]["disagreements"]
    assert deployed["max_abs_logit_diff_vs_reference"] < 1e-4 and deployed["windows_over_tolerance"] == 0
    assert deployed["runtime_matches_graph_logits"] == 1.0
    hard = next(r for r in validated[2]["rows"] if r["backend"] == "pytorch-hard")
    assert (deployed["exact_match"], deployed["f1"]) == (hard["exact_match"], hard["f1"])


def test_speed_and_memory_table(validated):
    speed = validated[2]["speed"]
    assert {(r["config"], r["budget"], r["batch"]) for r in speed} == {
        (config, budget, batch) for config, budget in (("onnxruntime-full", 1.0), ("onnxruntime-retained", 0.4))
        for batch in (1, 8)}
    for row in speed:
        assert row["seq_len"] == 96 and row["p95_ms"] >= row["median_ms"] > 0
        assert row["peak_memory_mib"] > 0 and row["peak_memory_mib_arena"] > 0
    assert all("speedup_vs_full" in r for r in speed if r["config"] == "onnxruntime-retained")


def test_an_export_is_validated_against_its_checkpoint(validated, qa_checkpoint, qa_data, tmp_path):
    """The full export the first run made: an export target, no new export (budget 1.0 is its own baseline)."""
    export = validated[1] / "exports" / "b1"
    out = tmp_path / "report"
    code = main(["validate", "--task", "question-answering", str(export), "--checkpoint", str(qa_checkpoint),
                 "--data", str(qa_data), "--max-examples", "6", "--seed", "3", "--out", str(out), "--no-memory"])
    report = json.loads((out / "report.json").read_text())
    assert code == 0 and report["questions"] == 6 and report["seed"] == 3
    assert {(r["backend"], r["budget"]) for r in report["rows"]} == {
        ("pytorch-full", 1.0), ("pytorch-hard", 1.0), ("onnxruntime", 1.0)}
    assert {r["config"] for r in report["speed"]} == {"onnxruntime-full"}
    assert "peak_memory_mib" not in report["speed"][0]


def test_bad_input_is_one_line(validated, qa_checkpoint, qa_data, tiny_checkpoint, tmp_path, capsys):
    export = str(validated[1] / "exports" / "b0.4")
    qa = ["validate", "--task", "question-answering"]
    fresh = ["--out", str(tmp_path / "r"), "--no-memory"]
    cases = [
        ([*qa, str(tmp_path / "absent"), *fresh], "does not exist"),
        ([*qa, *fresh], "give EXPORT_OR_CHECKPOINT"),
        ([*qa, export, *fresh], "give --checkpoint"),
        ([*qa, export, "--checkpoint", str(qa_checkpoint), "--budgets", "0.3", *fresh], "not both"),
        ([*qa, export, "--checkpoint", str(qa_checkpoint), "--onnx", export, *fresh], "--onnx and --plan"),
        ([*qa, str(tiny_checkpoint), *fresh], "trained for sequence-classification"),
        ([*qa, str(qa_checkpoint), "--data", "bbc-news", *fresh], "classification set"),
        ([*qa, str(qa_checkpoint), "--data", str(tmp_path / "none.json"), *fresh], "does not exist"),
        ([*qa, str(qa_checkpoint), "--out", str(validated[1])], "not empty"),
        (["validate", str(qa_checkpoint), *fresh], "for --task question-answering"),
    ]
    for args, message in cases:
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and message in err, (args, err)


def _baselines():
    spec = importlib.util.spec_from_file_location("qa_baselines", ROOT / "benchmarks" / "qa_baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("budget", [0.3, 0.4, 0.05])
def test_truncation_keeps_the_question_and_a_context_prefix(qa_data, minilm_dir, budget):
    examples = json.loads(qa_data.read_text())["data"]
    pairs = [(qa["question"], a["paragraphs"][0]["context"]) for a in examples for qa in a["paragraphs"][0]["qas"]]
    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    windows = make_windows(tokenizer, [q for q, _ in pairs], [c for _, c in pairs], max_length=96, doc_stride=32,
                           max_query_length=24)
    cut = _baselines().truncated(windows, budget)
    assert len(cut) == len(windows) and list(cut.example_index) == list(windows.example_index)
    for ids, types, offsets, original, original_types in zip(cut.input_ids, cut.token_type_ids, cut.offsets,
                                                             windows.input_ids, windows.token_type_ids, strict=True):
        question = original_types.index(1)
        assert len(ids) == max(math.ceil(budget * len(original)), question + 2)
        assert ids[:-1] == original[:len(ids) - 1] and ids[-1] == original[-1]  # a prefix, then the closing [SEP]
        assert types[:question] == [0] * question and offsets[-1, 0] == NO_OFFSET


@pytest.mark.slow
def test_baselines_benchmark_smoke(qa_checkpoint, tmp_path):
    """Seven tiny exports (dynamo tracing dominates): about a minute on an idle 2-core machine."""
    out = tmp_path / "qa_baselines"
    assert _baselines().main(["--checkpoint", str(qa_checkpoint), "--max-examples", "20", "--rounds", "1",
                              "--out", str(out)]) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    methods = {(r["method"], r["budget"]) for r in payload["rows"]}
    assert methods == {(m, b) for m in ("learned", "significance", "random", "truncation") for b in (0.3, 0.4)} | {
        ("full", 1.0)}
    assert payload["questions"] == 20 and payload["checkpoint"] == qa_checkpoint.name
    assert "/" not in payload["command"].split("--checkpoint")[1].split()[0]
    assert {(r["budget"], r["batch"]) for r in payload["latency"]} == {(0.4, 1), (1.0, 1), (0.4, 8), (1.0, 8)}
    assert all(r["cost"] < 1.0 for r in payload["rows"] if r["budget"] < 1.0)
    assert (tmp_path / "qa_baselines.md").read_text().startswith("# SQuAD v1.1")
