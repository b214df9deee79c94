"""``export.py --budget auto``: the paired bound, the bisection, the monotonicity check, one end-to-end auto
export on the tiny checkpoint, and the one-line errors."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from adaret.cli import main
from adaret.core.metadata import ExportMetadata
from adaret.export import ExportConfig
from adaret.modeling import DENOMINATOR, KeepSchedule
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.validation import auto_budget as ab
from adaret.validation.auto_budget import (
    AutoBudgetConfig,
    Point,
    accuracy_point,
    budget_grid,
    monotonicity_notes,
    paired_lower_bound,
    run_auto_export,
    search_largest,
    search_smallest,
)
from tests.conftest import LABELS

ROOT = Path(__file__).resolve().parent.parent
TEXTS = 500
WORDS = ("market", "shares", "profit", "film", "actor", "music", "election", "minister", "vote", "match", "goal",
         "team", "phone", "software", "chip", "bank", "growth", "stage", "award", "policy", "league", "player",
         "network", "data", "court", "tax", "season", "album")


# --- the paired bound --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("candidate", "reference", "m", "expected"), [
    # d = [.5, .5, -.5, -.5]: mean 0, sd sqrt(1/3): bound -1.645 * 0.57735 / 2
    ([1, 1, 0, 0], [1, 1, 1, 1], 0.5, -0.474871),
    # identical answers, 50 of 100 right, m = 0.9: d = 0.1 on 50 examples, 0 on 50; sd = sqrt(0.25 / 99)
    ([1] * 50 + [0] * 50, [1] * 50 + [0] * 50, 0.9, 0.05 - 1.645 * math.sqrt(0.25 / 99) / 10),
    # 995 of 1000 where the reference has all: ratio 0.995 >= 0.99, shown at N = 1000
    ([1] * 995 + [0] * 5, [1] * 1000, 0.99, 0.005 - 1.645 * math.sqrt((995 * 0.005**2 + 5 * 0.995**2) / 999)
     / math.sqrt(1000)),
])
def test_paired_bound_on_known_inputs(candidate, reference, m, expected):
    assert paired_lower_bound(candidate, reference, m) == pytest.approx(expected, abs=1e-6)


def test_bound_passes_and_fails_where_it_must():
    # zero variance: identical answers at m = 1 give d = 0 everywhere, which meets the floor exactly
    assert accuracy_point(0.5, np.ones(10, bool), np.ones(10, bool), 1.0).passed
    # a ratio at the floor is not shown on 4 examples (the point estimate alone would accept it) ...
    small = accuracy_point(0.5, np.array([1, 1, 1, 0], bool), np.ones(4, bool), 0.75)
    assert small.metrics["ratio"] == pytest.approx(0.75) and not small.passed
    # ... but a ratio of 0.995 against a floor of 0.99 is, on 1000
    large = accuracy_point(0.5, np.array([True] * 995 + [False] * 5), np.ones(1000, bool), 0.99)
    assert large.passed and large.metrics["lower_bound"] > 0
    # better than the reference on some examples: the pairing counts those too
    better = accuracy_point(0.5, np.ones(40, bool), np.array([True] * 30 + [False] * 10), 1.0)
    assert better.passed and better.metrics["ratio"] > 1
    with pytest.raises(ValueError):
        paired_lower_bound([1], [1], 0.9)
    with pytest.raises(ValueError):
        paired_lower_bound([1, 0], [1, 0, 1], 0.9)


# --- grid, bisection and monotonicity ----------------------------------------------------------------------


@pytest.mark.parametrize("floor", [0.0, 1 / 6, 0.25, 0.5, 5 / 6, 1.0])
@pytest.mark.parametrize("step", [0.01, 0.05])
def test_grid_lies_strictly_above_the_floor_and_ends_at_one(floor, step):
    grid = budget_grid(floor, step)
    assert grid == sorted(set(grid)) and grid[-1] == 1.0
    assert all(b > floor for b in grid) or grid == [1.0]
    assert grid[0] - 0.01 <= floor + 1e-9 or grid == [1.0]  # the smallest reachable 0.01 point leads
    assert all(round(b / step, 6).is_integer() for b in grid[1:])


def _synthetic_measure(accuracy_at, n=400, fail_at=(), calls=None):
    """Per-example correctness for an accuracy curve: the first round(n * acc) examples right, against a
    reference that gets every example right; ``fail_at`` budgets are forced to fail."""
    reference = np.ones(n, bool)

    def measure(budget):
        if calls is not None:
            calls.append(budget)
        correct = np.arange(n) < round(n * accuracy_at(budget))
        point = accuracy_point(budget, correct, reference, 0.99)
        return Point(budget, False, point.metrics) if budget in fail_at else point

    return measure


CURVES = {
    "saturating": lambda b: min(1.0, 0.8 + 0.5 * b),
    "linear": lambda b: b,
    "only-full": lambda b: 1.0 if b >= 1.0 else 0.9,
    "flat": lambda b: 1.0,
}


@pytest.mark.parametrize("curve", CURVES)
def test_bisection_finds_the_smallest_passing_grid_point(curve):
    grid = budget_grid(0.0, 0.01)
    assert len(grid) == 100
    expected = next(b for b in grid if _synthetic_measure(CURVES[curve])(b).passed)  # by scanning every point
    calls: list[float] = []
    search = search_smallest(grid, _synthetic_measure(CURVES[curve], calls=calls))
    assert search.chosen == expected
    assert len(calls) <= 8 and len(calls) == len(search.points)
    assert not search.notes
    passed = [p.budget for p in search.points if p.passed]
    assert min(passed) == expected and all(p.budget < expected for p in search.points if not p.passed)
    checks = [p for p in search.points if p.role == "check"]
    assert all(p.budget > expected for p in checks) and len(checks) <= 1


def test_a_failure_above_the_choice_gives_a_monotonicity_note():
    grid = budget_grid(0.0, 0.01)
    curve = CURVES["saturating"]
    plain = search_smallest(grid, _synthetic_measure(curve))
    check = next(p.budget for p in plain.points if p.role == "check")
    bumpy = search_smallest(grid, _synthetic_measure(curve, fail_at={check}))
    assert bumpy.chosen == plain.chosen  # the bisection never visits the check point
    assert len(bumpy.notes) == 1 and "not monotone" in bumpy.notes[0] and f"{check:g}" in bumpy.notes[0]


def test_monotonicity_notes_in_both_directions():
    def points(flags):
        return [Point(b, ok) for b, ok in flags]

    assert monotonicity_notes(points([(0.3, False), (0.5, True), (0.9, True)]), passes_upward=True) == []
    assert monotonicity_notes(points([(0.3, True), (0.5, False)]), passes_upward=True)
    # latency: small budgets should pass, large ones fail
    assert monotonicity_notes(points([(0.3, True), (0.5, True), (0.9, False)]), passes_upward=False) == []
    notes = monotonicity_notes(points([(0.3, False), (0.5, True), (0.9, False)]), passes_upward=False)
    assert len(notes) == 1 and "0.3" in notes[0] and "0.5" in notes[0]


@pytest.mark.parametrize("limit", [5.0, 40.0, 1000.0])
def test_latency_search_finds_the_largest_budget_under_the_limit(limit):
    grid = budget_grid(1 / 6, 0.05)

    def latency(b):
        return 10 + 90 * b  # ms, rising with the budget

    calls: list[float] = []

    def measure(b):
        calls.append(b)
        return Point(b, latency(b) <= limit, {"latency_ms": latency(b)})

    search = search_largest(grid, measure)
    fitting = [b for b in grid if latency(b) <= limit]
    assert search.chosen == (max(fitting) if fitting else None)
    assert len(calls) <= 6 and not search.notes


# --- end to end on the tiny checkpoint ---------------------------------------------------------------------


def _texts(count: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60))) for _ in range(count)]


def _full_logits(checkpoint: RetentionCheckpoint, texts: list[str]) -> torch.Tensor:
    full = KeepSchedule((DENOMINATOR,) * checkpoint.model.num_layers)
    rows = []
    with torch.no_grad():
        for text in texts:
            inputs = checkpoint.tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
            rows.append(checkpoint.model(inputs["input_ids"], inputs["attention_mask"], mode="hard",
                                         schedule=full).logits[0])
    return torch.stack(rows)


@pytest.fixture(scope="module")
def sensitive_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with its head's bias centred on these texts: the random head otherwise gives one
    label to every text, whatever retention keeps, and the search would have nothing to find."""
    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    with torch.no_grad():
        checkpoint.model.head.bias -= _full_logits(checkpoint, _texts(TEXTS)).mean(0)
    return checkpoint.save_pretrained(tmp_path_factory.mktemp("sensitive") / "ckpt")


@pytest.fixture(scope="module")
def labelled_data(sensitive_checkpoint, tmp_path_factory) -> Path:
    """Texts labelled with the model's own full-model answers (the full model is then always right, and
    retention costs accuracy wherever it changes an answer), plus one text for each label it never gives, so
    that the file has all the checkpoint's labels."""
    checkpoint = RetentionCheckpoint.from_pretrained(sensitive_checkpoint, attn_implementation="eager")
    texts = _texts(TEXTS)
    predicted = _full_logits(checkpoint, texts).argmax(1).tolist()
    rows = [{"text": text, "label": LABELS[p]} for text, p in zip(texts, predicted, strict=True)]
    rows += [{"text": f"extra {name}", "label": name} for name in sorted(set(LABELS) - {r["label"] for r in rows})]
    path = tmp_path_factory.mktemp("data") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def auto_export(sensitive_checkpoint, labelled_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    config = ExportConfig(budget=1.0, checkpoint=str(sensitive_checkpoint), out=str(out), seq_lens=(64, 128),
                          parity_batches=(2,), parity_lengths=(8, 37))
    return run_auto_export(config, AutoBudgetConfig(min_accuracy=0.95, data=str(labelled_data)))


def test_auto_export_records_its_decision(auto_export, sensitive_checkpoint):
    decision = auto_export.config.budget_search
    chosen = decision["chosen_budget"]
    assert auto_export.config.budget == chosen
    points = decision["points"]
    assert any(p["budget"] == chosen and p["passed"] for p in points)
    assert all(not p["passed"] for p in points if p["budget"] < chosen)  # the smallest measured pass
    assert not all(p["passed"] for p in points), "the fixture should make small budgets cost accuracy"
    assert decision["mode"] == "accuracy" and decision["target"] == {"min_accuracy": 0.95}
    assert decision["data"]["validation_examples"] >= 2 and decision["held_out"]["examples"] >= 2
    assert isinstance(decision["held_out"]["holds"], bool)

    meta = ExportMetadata.from_model(onnx.load(str(auto_export.graphs[0].path)))
    assert meta.budget == chosen
    assert meta.budget_search == json.loads(json.dumps(decision))
    report = json.loads(auto_export.report_path.read_text())
    assert report["budget"] == chosen and report["budget_search"] == json.loads(json.dumps(decision))
    assert set(decision["notes"]) <= set(report["notes"])

    measured = RetentionCheckpoint.from_pretrained(sensitive_checkpoint).info.keep_schedule
    assert auto_export.schedule == measured.rescaled(chosen)


def test_search_points_agree_with_the_exported_graph(auto_export, sensitive_checkpoint, labelled_data):
    """The chosen budget's PyTorch accuracy, re-measured here through the runtime on the exported graph."""
    from adaret.runtime import load

    decision = auto_export.config.budget_search
    checkpoint = RetentionCheckpoint.from_pretrained(sensitive_checkpoint, attn_implementation="eager")
    validation, _, _ = ab.validation_halves(checkpoint, AutoBudgetConfig(min_accuracy=0.95, data=str(labelled_data)))
    session = load(auto_export.config.out_dir)
    predicted = [p.index for p in session.classify(validation.texts)]
    chosen_point = next(p for p in decision["points"] if p["budget"] == decision["chosen_budget"])
    assert float(np.mean(np.array(predicted) == validation.labels)) == pytest.approx(chosen_point["accuracy"])


@pytest.mark.parametrize("scorer", ["learned", "significance"])
def test_the_evaluator_answers_as_the_whole_top_m_module(sensitive_checkpoint, labelled_data, scorer):
    """The search reuses the layers before the first gate across budgets (not for a scorer that reads attention):
    its answers must be those of the deployed module run whole on the same batches."""
    from adaret.export.inference import TopMInference
    from adaret.export.pipeline import token_scorer

    checkpoint = RetentionCheckpoint.from_pretrained(sensitive_checkpoint, attn_implementation="eager")
    config = ExportConfig(budget=1.0, checkpoint=str(sensitive_checkpoint), scorer=scorer)
    validation, _, _ = ab.validation_halves(checkpoint, AutoBudgetConfig(min_accuracy=0.9, data=str(labelled_data)))
    evaluator = ab.HardEvaluator(checkpoint, config, validation)
    assert evaluator.reuses_prefix is (scorer == "learned")
    for budget in (0.3, 0.6, 1.0):
        schedule = checkpoint.info.keep_schedule.rescaled(budget)
        module = TopMInference(checkpoint.model, schedule, scorer=token_scorer(scorer, checkpoint)).eval()
        expected = np.empty(len(validation.labels), dtype=np.int64)
        with torch.no_grad():
            for batch, feeds in evaluator.batches:
                tensors = {name: torch.from_numpy(feeds[name]) for name in module.input_names}
                expected[batch.indices] = module(**tensors).argmax(1).numpy()
        assert np.array_equal(evaluator.correct(schedule), expected == validation.labels)


def test_the_search_and_validate_read_the_fold_the_checkpoint_held_out(sensitive_checkpoint, labelled_data):
    """A checkpoint trained with --eval-fold k was selected on the other folds: measuring it on fold 0 would
    score texts it was trained on."""
    from adaret.training.data import load_splits
    from adaret.validation.evaluate import load_eval_set

    checkpoint = RetentionCheckpoint.from_pretrained(sensitive_checkpoint)
    auto = AutoBudgetConfig(min_accuracy=0.9, data=str(labelled_data), max_examples=10_000)
    seed = checkpoint.info.eval_split["seed"]
    held_out_texts = []
    for fold in (0, 3):
        checkpoint.info.training["eval_fold"] = fold
        expected = sorted(load_splits(str(labelled_data), seed=seed, eval_fold=fold).eval.texts)
        validation, held_out, _ = ab.validation_halves(checkpoint, auto)
        assert sorted(validation.texts + held_out.texts) == expected
        assert sorted(load_eval_set(checkpoint, str(labelled_data)).texts) == expected
        held_out_texts.append(expected)
    assert held_out_texts[0] != held_out_texts[1]


# --- one-line errors ---------------------------------------------------------------------------------------


def _cli(args, capsys):
    code = main(["export", *args])
    return code, capsys.readouterr().err.strip()


def test_auto_budget_errors_are_one_line(tiny_checkpoint, labelled_data, tmp_path, capsys):
    wrong_labels = tmp_path / "wrong.jsonl"
    wrong_labels.write_text("".join(json.dumps({"text": f"text {i}", "label": f"class{i % 2}"}) + "\n"
                                    for i in range(40)))
    ck = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")]
    data = ["--data", str(labelled_data)]
    cases = [
        (["--budget", "auto", *ck], "exactly one target"),
        (["--budget", "auto", "--min-accuracy", "0.9", "--max-latency-ms", "5", *ck], "exactly one target"),
        (["--budget", "auto", "--min-accuracy", "1.5", *ck, *data], "(0, 1]"),
        (["--budget", "auto", "--min-accuracy", "0", *ck, *data], "(0, 1]"),
        (["--budget", "auto", "--max-latency-ms", "-1", *ck], "must be > 0"),
        (["--budget", "0.5", "--min-accuracy", "0.9", *ck], "only applies to --budget auto"),
        (["--budget", "auto", "--min-accuracy", "0.9", *ck], "records no training data source"),
        (["--budget", "auto", "--min-accuracy", "0.9", *ck, "--data", str(wrong_labels)], "are not the checkpoint's"),
        (["--budget", "auto", "--min-accuracy", "0.9", *ck, "--data", str(tmp_path / "nope.jsonl")], "does not exist"),
    ]
    for args, message in cases:
        code, err = _cli(args, capsys)
        assert code == 1 and len(err.splitlines()) == 1 and message in err, (args, err)
    assert not (tmp_path / "o").exists()


def test_a_floor_no_budget_meets_says_what_budget_one_reached(tiny_checkpoint, labelled_data, tmp_path, capsys,
                                                              monkeypatch):
    """One right answer in the validation half, at every budget: not even 1.0 shows a floor of 0.9."""
    def one_right(self, schedule):
        return np.arange(len(self.labels)) == 0

    monkeypatch.setattr(ab.HardEvaluator, "correct", one_right)
    code, err = _cli(["--budget", "auto", "--min-accuracy", "0.9", "--checkpoint", str(tiny_checkpoint),
                      "--data", str(labelled_data), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "budget 1.0 reaches only" in err, err
    assert not (tmp_path / "o").exists()


def test_a_latency_no_budget_meets_says_what_it_measured(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    measured = []

    def slow(self, budget):
        measured.append(budget)
        return 100.0 + budget

    monkeypatch.setattr(ab.LatencyProbe, "__call__", slow)
    code, err = _cli(["--budget", "auto", "--max-latency-ms", "50", "--batch", "2", "--seq-len", "64",
                      "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    smallest = min(measured)
    assert smallest == budget_grid(0.25, 0.05)[0] and f"{100 + smallest:.1f} ms" in err, err


def test_latency_mode_exports_the_largest_budget_under_the_limit(tiny_checkpoint, tmp_path, monkeypatch):
    """The search on a stand-in latency (rising with the budget), the export for real."""
    def latency(self, budget):
        return 10.0 + 20.0 * budget

    monkeypatch.setattr(ab.LatencyProbe, "__call__", latency)
    config = ExportConfig(budget=1.0, checkpoint=str(tiny_checkpoint), out=str(tmp_path / "o"), seq_lens=(64,),
                          batch=4, parity_batches=(2,), parity_lengths=(8, 37))
    result = run_auto_export(config, AutoBudgetConfig(max_latency_ms=25.0))
    decision = result.config.budget_search
    fitting = [b for b in budget_grid(0.25, 0.05) if latency(None, b) <= 25.0]
    assert decision["chosen_budget"] == max(fitting) == result.config.budget
    assert decision["target"] == {"max_latency_ms": 25.0, "batch": 4, "seq_len": 64}
    assert all(p["passed"] == (p["latency_ms"] <= 25.0) for p in decision["points"])
    graph = onnx.load(str(result.graphs[0].path))
    assert ExportMetadata.from_model(graph).budget == max(fitting)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # --batch only set the measured shape


def test_latency_probe_times_a_real_graph(tiny_checkpoint, tmp_path):
    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    config = ExportConfig(budget=1.0, checkpoint=str(tiny_checkpoint), static=True)
    probe = ab.LatencyProbe(checkpoint, config, batch=2, seq_len=64, work=tmp_path)
    latency = probe(0.5)
    assert 0 < latency < 10_000 and (tmp_path / "b0.5.onnx").is_file()


def test_help_explains_the_auto_budget():
    result = subprocess.run([sys.executable, str(ROOT / "export.py"), "--help"], capture_output=True, text=True,
                            check=True)
    for flag in ("auto", "--min-accuracy", "--max-latency-ms", "--data", "--max-examples"):
        assert flag in result.stdout


def test_auto_is_not_a_training_budget(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--budget", "auto", "--out", str(tmp_path / "c")])
    assert exc.value.code == 2 and "budget" in capsys.readouterr().err

