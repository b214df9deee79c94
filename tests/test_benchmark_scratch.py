"""Benchmark helpers: work folders removed when the run ends (also on error) unless the user named one to keep;
the hand-made keep schedules of the shapes study."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("benchmark_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scratch_directory_is_removed_after_the_run(common):
    with common.scratch_directory("adaret-test-scratch-") as work:
        (work / "model.onnx").write_bytes(b"x" * 1024)
        assert work.is_dir()
    assert not work.exists()


def test_scratch_directory_is_removed_when_the_run_fails(common):
    with pytest.raises(RuntimeError), common.scratch_directory("adaret-test-scratch-") as work:
        (work / "model.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert not work.exists()


def test_a_named_work_folder_is_kept(common, tmp_path):
    keep = tmp_path / "exports"
    with common.scratch_directory("adaret-test-scratch-", keep=keep) as work:
        (work / "model.onnx").write_bytes(b"x")
    assert work == keep and (keep / "model.onnx").is_file()


def test_no_benchmark_leaks_a_temporary_folder():
    """mkdtemp without a cleanup left gigabytes per run behind; only the helper may call it."""
    offenders = [p.name for p in (ROOT / "benchmarks").glob("*.py")
                 if "mkdtemp(" in p.read_text() and p.name != "common.py"]
    assert offenders == []


def test_the_hand_made_schedule_shapes_spend_the_same_budget():
    spec = importlib.util.spec_from_file_location("qa_schedule_shapes", ROOT / "benchmarks" / "qa_schedule_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from adaret.modeling import KeepSchedule

    learned = KeepSchedule.from_fractions([1.0, 0.58, 0.52, 0.47, 0.12, 0.08])
    for budget in (0.5, 0.4, 0.3):
        found = module.shapes(learned, budget, 6)
        # two full layers already spend 2/6 of the budget: below 1/3 that shape does not exist
        assert set(found) == {"learned", "flat", "linear"} | ({"two full layers"} if budget > 1 / 3 else set())
        assert found["learned"] == learned.rescaled(budget)
        for schedule in found.values():
            assert schedule.budget == pytest.approx(budget, abs=1e-3)


def test_cross_validation_pools_folds_by_their_held_out_texts():
    spec = importlib.util.spec_from_file_location("generalisation", ROOT / "benchmarks" / "generalisation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(fold, examples, full, hard, seed=0):
        return {"dataset": "d", "seed": seed, "fold": fold, "eval_examples": examples, "accuracy_full": full,
                "budgets": {"0.3": {"hard": hard, "truncation": hard / 2}}}

    single = [run(0, 40, 0.9, 0.8)]
    assert module.cross_validation(single, [0.3]) == ""  # one fold: nothing pooled
    table = module.cross_validation([run(0, 40, 1.0, 0.5), run(1, 10, 0.5, 0.5)], [0.3])
    # full (40 * 1.0 + 10 * 0.5) / 50 = 0.9; hard (20 + 5) / 50 = 0.5 -> 55.6% of full; truncation half that
    assert "| d | 0 | 0,1 | 50 | 0.900 | 55.6% | 27.8% |" in table
    assert "| d | 0,1 |" not in table  # one seed: no row over seeds
    repeated = module.cross_validation([run(0, 40, 1.0, 0.5), run(1, 10, 0.5, 0.5),
                                        run(0, 30, 0.8, 0.8, seed=1), run(1, 20, 0.8, 0.4, seed=1)], [0.3])
    assert "| d | 1 | 0,1 | 50 | 0.800 | 80.0% | 40.0% |" in repeated
    # every run of both seeds: full (45 + 40) / 100 = 0.85; hard (25 + 24 + 8) / 100 = 0.57 -> 67.1% of full
    assert "| d | 0,1 | 0,1 | 100 | 0.850 | 67.1% | 33.5% |" in repeated


def test_frontier_folds_pool_every_held_out_text_once():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def row(budget, method, correct, cost, ms):
        return {"budget": budget, "method": method, "correct": correct, "accuracy": correct.count("1") / len(correct),
                "cost": cost, "latency_ms_b1": ms, "full_latency_ms_b1": 10.0, "latency_ms_b8": 8 * ms,
                "full_latency_ms_b8": 80.0}

    def run(fold, learned, random, full, cost, ms):
        return {"dataset": "d", "training": {"seed": 0, "eval_fold": fold, "budget": 0.4}, "keep_fractions": [1.0],
                "train_examples": 10, "eval_examples": len(full), "median_tokens": 100, "checkpoint_sha256": "x",
                "benchmark_seconds": 1.0, "rows": [row(0.4, "learned", learned, cost, ms),
                                                   row(0.4, "random", random, cost, ms + 1),
                                                   row(1.0, "learned", full, 1.0, 10.0)]}

    pooled = module.pooled([run(0, "110", "100", "111", 0.4, 4.0), run(1, "0", "1", "1", 0.5, 6.0)])
    at = {(r["budget"], r["method"]): r for r in pooled["rows"]}
    assert pooled["eval_examples"] == 4 and pooled["folds"] == [0, 1]
    assert at[(0.4, "learned")]["correct"] == "1100" and at[(0.4, "learned")]["accuracy"] == 0.5
    assert at[(0.4, "random")]["accuracy"] == 0.5 and at[(0.4, "learned")]["percent_of_full"] == 50.0
    assert at[(0.4, "learned")]["cost"] == pytest.approx((3 * 0.4 + 0.5) / 4)  # weighted by held-out texts
    assert at[(0.4, "random")]["latency_ms_b1"] == 6.0  # the mean of the folds' own measurements


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py"))
def test_every_benchmark_imports(script, monkeypatch):
    """A benchmark checks its own assumptions when it is imported (ort_speed.py: its pass steps add up to the
    ort-cpu pipeline); a pipeline change that breaks one shows here, not on the next recorded run."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    name = f"benchmark_{script.removesuffix('.py')}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None))


def test_a_recorded_training_command_loses_this_machines_paths(common):
    recorded = "/home/u/venv/bin/adaret train --model /data/models/mpnet --data x.tsv --seed 1 --out /tmp/ck"
    assert common.training_command(recorded) == "adaret train --model MPNET --data x.tsv --seed 1 --out CK"
    assert common.training_command("adaret train --data bbc-news", "M") == "adaret train --data bbc-news"
