"""Accuracy of hard top-M retention against the full model, on the checkpoint's own eval split.

    python benchmarks/retention_accuracy.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5,1.0]
                                            [--train-budgets 0.3,0.5]

For the checkpoint (default: the bundled BBC News adapter) it reports, on the held-out split it was
trained with: the full model (no retention), hard top-M at each budget with the learned schedule
rescaled, and the same schedule with *untrained* gates (random scorer weights) as a control for what the
learned token ranking adds. With --train-budgets it also trains a separate adapter at each of those
budgets (same recipe as the bundled one) and evaluates it at its own budget.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, scratch_directory, write_results

from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.training.batching import Encoded
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits
from adaret.training.evaluate import accuracy
from adaret.training.trainer import TrainConfig, train


def untrained_gates(model):
    control = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    for gate in control.gates.values():
        gate.scorer.weight.data = torch.randn(gate.scorer.weight.shape, generator=generator)
        gate.scorer.bias.data.zero_()
    return control


def evaluate_checkpoint(checkpoint: RetentionCheckpoint, budgets: list[float]) -> dict:
    training = checkpoint.info.training
    splits = load_splits(training["data"], seed=training["seed"])
    data = Encoded(splits.eval, checkpoint.tokenizer, training["max_length"])
    full = accuracy(checkpoint.model, data, mode="full")
    control_model = untrained_gates(checkpoint.model)
    rows = []
    for budget in budgets:
        schedule = checkpoint.info.keep_schedule.rescaled(budget)
        hard = accuracy(checkpoint.model, data, mode="hard", schedule=schedule)
        control = accuracy(control_model, data, mode="hard", schedule=schedule)
        rows.append({"budget": budget, "schedule": [round(f, 4) for f in schedule.fractions],
                     "accuracy_hard": round(hard, 4), "percent_of_full": round(100 * hard / full, 1),
                     "accuracy_untrained_gates": round(control, 4)})
    return {"eval_examples": len(data), "accuracy_full": round(full, 4), "training_budget": training["budget"],
            "learned_keep_fractions": [round(f, 4) for f in checkpoint.info.schedule["keep_fractions"]],
            "achieved_budget": checkpoint.info.metrics.get("achieved_budget"),
            "achieved_budget_train_ema": checkpoint.info.metrics.get("achieved_budget_train_ema"),
            "train_seconds": checkpoint.info.metrics.get("train_seconds"), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--budgets", default="0.3,0.4,0.5,1.0")
    parser.add_argument("--train-budgets", default="")
    parser.add_argument("--name", default="retention_accuracy")
    args = parser.parse_args()
    started = time.perf_counter()
    bundled = RetentionCheckpoint.from_pretrained(args.checkpoint)
    results = {"bundled": evaluate_checkpoint(bundled, [float(b) for b in args.budgets.split(",")])}
    for budget in [float(b) for b in args.train_budgets.split(",") if b]:
        with scratch_directory("adaret-retention-accuracy-") as work:
            config = TrainConfig(out=str(work / f"b{budget}"), budget=budget,
                                 freeze_backbone=True, seed=bundled.info.training["seed"])
            results[f"trained_at_{budget}"] = evaluate_checkpoint(train(config), [budget])
    payload = {"command": "python " + " ".join(sys.argv), "machine": machine(), "results": results,
               "seconds": round(time.perf_counter() - started, 1)}
    lines = ["# Hard top-M accuracy vs the full model (BBC News eval split, seq <= 512, frozen MiniLM-L6)", "",
             f"Command: `{payload['command']}`", ""]
    for name, result in results.items():
        lines += [f"## {name} (trained at budget {result['training_budget']})", "",
                  f"Full model accuracy: {result['accuracy_full']} on {result['eval_examples']} examples. "
                  f"Learned keep fractions: {result['learned_keep_fractions']}; achieved budget (eval) "
                  f"{result['achieved_budget']:.3f}, (train EMA) {result['achieved_budget_train_ema']:.3f}; "
                  f"training took {result['train_seconds']} s.", "",
                  "| budget | deployed schedule | hard top-M acc | % of full | untrained gates, same schedule |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['budget']} | {r['schedule']} | {r['accuracy_hard']} | {r['percent_of_full']}% | "
                  f"{r['accuracy_untrained_gates']} |" for r in result["rows"]]
        lines.append("")
    write_results(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
