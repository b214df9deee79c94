"""benchmarks/summarization_baselines.py: the cuts, the cost accounting, and one run of every method on a tiny
summarizer (the numbers are noise; the test checks that each method runs through the same protocol)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import save_tiny_summarizer

from adaret.modeling import KeepSchedule

ROOT = Path(__file__).resolve().parents[1]
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("summarization_baselines",
                                                  ROOT / "benchmarks" / "summarization_baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _document(lengths):
    """Chunks of the given content lengths, content tokens numbered 1000, 1001, ... across the document."""
    chunks, token = [], 1000
    for n in lengths:
        chunks.append([CLS, *range(token, token + n), SEP])
        token += n
    return chunks


def _content(chunks):
    return [t for chunk in chunks for t in chunk[1:-1]]


@pytest.mark.parametrize("lengths", [[62, 62, 17], [5], [62]])
@pytest.mark.parametrize("fraction", [0.4, 0.3, 0.77])
def test_head_cut_keeps_the_first_ceil_b_n_tokens_and_rechunks(bench, lengths, fraction):
    doc = _document(lengths)
    cut = bench.cut_document(doc, fraction, "head", chunk_length=64)
    n = sum(lengths)
    assert _content(cut) == _content(doc)[:math.ceil(fraction * n)]
    assert all(c[0] == CLS and c[-1] == SEP and len(c) <= 64 for c in cut)


def test_head_tail_cut_takes_half_from_each_end(bench):
    doc = _document([62, 62, 17])  # 141 content tokens; 0.4 keeps 57: 29 from the start, 28 from the end
    kept = _content(bench.cut_document(doc, 0.4, "head+tail", chunk_length=64))
    content = _content(doc)
    assert kept == content[:29] + content[-28:]


def test_costs_count_padded_rows_and_the_last_layers_k(bench):
    class Data:
        def __init__(self):
            self.documents = [_document([62, 10]), _document([20])]  # rows of width 64 (two) and 22 (one)

    schedule = KeepSchedule.from_fractions([1.0, 0.5, 0.25])
    full = bench.encoder_cost(Data(), None, 3)
    assert full == 3 * (64 * 2 + 22)
    assert bench.encoder_cost(Data(), schedule, 3) == 2 * sum(schedule.keep_counts(64)) + sum(schedule.keep_counts(22))
    # memory: the last layer's K of the padded width, at most the row's real tokens
    assert bench.memory_slots(Data(), None) == 64 + 12 + 22
    assert bench.memory_slots(Data(), schedule) == 16 + 12 + 6


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """The tiny summarizer with a training record that names a user's JSONL, as ``adaret train`` writes one."""
    work = tmp_path_factory.mktemp("s2s-baselines")
    words = ["budget", "retention", "token", "layer", "memory", "decoder", "encoder", "summary", "chunk", "gate"]
    with open(work / "pairs.jsonl", "w") as handle:
        for n in range(60):
            text = " ".join(words[(n + k) % len(words)] for k in range(20 + 7 * (n % 9)))
            handle.write(json.dumps({"text": f"document {n}: {text}", "summary": f"{words[n % 10]} summary"}) + "\n")
    training = {"budget": 0.4, "data": str(work / "pairs.jsonl"), "seed": 0, "batch_size": 8, "refit_epochs": 0.5,
                "lr_finetune": 1e-4, "max_train_samples": None, "max_eval_samples": None}
    return save_tiny_summarizer(work / "ckpt", tokenizer, training, with_reference=True)


def test_every_method_runs_and_reports_its_costs(bench, tiny_checkpoint):
    args = bench.parse_args(["--checkpoint", str(tiny_checkpoint), "--max-eval", "6", "--max-train", "16"])
    run = bench.Bench(args)
    rows = [row for method in bench.METHODS for row in bench.run_method(run, method)]
    by_method = {(r["method"], r["protocol"]): r for r in rows}
    assert set(by_method) == {("full", "as trained"), ("full", "re-fitted"), ("learned", "as trained"),
                              ("learned", "re-fitted"), ("head", "as trained"), ("head", "re-fitted"),
                              ("head+tail", "re-fitted"), ("head-equal-cache", "re-fitted"),
                              ("random", "re-fitted"), ("significance", "re-fitted")}
    full, learned = by_method["full", "as trained"], by_method["learned", "as trained"]
    assert full["encoder_cost"] == 1.0 and full["memory_share"] == 1.0
    assert learned["encoder_cost"] < 0.6 and learned["memory_share"] < 0.5
    assert by_method["learned", "re-fitted"]["encoder_cost"] == learned["encoder_cost"]
    # truncation at the budget reads that share of the tokens in every layer; it can cost less than the budget,
    # since a cut document also sheds the padding of its short last chunk
    head = by_method["head", "re-fitted"]
    assert head["fraction"] == 0.4 and 0.25 < head["encoder_cost"] <= 0.45
    # the equal-cache cut reads as many memory slots as the learned memory holds (rounding per document aside)
    assert by_method["head-equal-cache", "re-fitted"]["memory_share"] == pytest.approx(learned["memory_share"],
                                                                                       abs=0.05)
    # the heuristics use the learned schedule: the same costs as learned
    for name in ("random", "significance"):
        assert by_method[name, "re-fitted"]["encoder_cost"] == learned["encoder_cost"]
    assert all(len(r["rougeL_each"]) == 6 for r in rows)
    markdown = bench.render({"command": "c", "machine": {"cpu": "x", "cores": 2}, "data": "pairs.jsonl",
                             "budget": 0.4, "training_budget": 0.4, "schedule": [1.0], "test_documents": 6,
                             "max_new_tokens": 13, "refit_epochs": 0.5, "train_documents": 16, "rows": rows})
    assert markdown.count("\n| ") == len(rows) + 2  # header, rule, one line per row


def test_an_unknown_method_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--checkpoint", "x", "--methods", "full,lead-3"])
    assert "unknown method(s) lead-3" in capsys.readouterr().err


def test_a_refit_does_not_depend_on_what_ran_before(bench, tiny_checkpoint):
    import torch

    run = bench.Bench(bench.parse_args(["--checkpoint", str(tiny_checkpoint), "--max-eval", "4", "--max-train", "16"]))
    first = {k: v.clone() for k, v in run.refit(run.train_set, "full").state_dict().items()}
    torch.rand(1000)  # another method drew random numbers in between
    second = run.refit(run.train_set, "full").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
