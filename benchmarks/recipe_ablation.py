"""What each change to the training recipe buys, measured one at a time on the same data and seed.

    python benchmarks/recipe_ablation.py [--datasets political-speeches,squad-articles] [--seed 0]

Variants, each trained from scratch at budget 0.4 and evaluated on the held-out split at 0.3 and 0.4:
- ``one epoch, no re-fit``: the recipe before this benchmark: as many SGDA steps as one epoch gives
  (``--min-steps 0``) and the full model's head kept (``--no-refit-head``);
- ``min steps, no re-fit``: the default step floor, the full model's head kept;
- ``default``: the default recipe (step floor and head re-fit on the deployed rule).
The head re-fit alone is also visible in ``generalisation.md`` (``hard_reference_head``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, scratch_directory, write_results

from adaret.training.batching import Encoded
from adaret.training.data import load_splits
from adaret.training.evaluate import accuracy
from adaret.training.trainer import TrainConfig, train

VARIANTS = {
    "one epoch, no re-fit": {"min_steps": 0, "refit_head": False},
    "min steps, no re-fit": {"refit_head": False},
    "default": {},
}


def run_variant(dataset: str, seed: int, overrides: dict) -> dict:
    with scratch_directory("adaret-ablation-") as work:
        checkpoint = train(TrainConfig(out=str(work / "ckpt"), data=dataset, seed=seed, **overrides))
    metrics = checkpoint.info.metrics
    eval_set = Encoded(load_splits(dataset, seed=seed).eval, checkpoint.tokenizer, 512)
    row = {"steps": metrics["sgda_steps"], "accuracy_full": metrics["accuracy_full"],
           "accuracy_relaxed": metrics["accuracy_relaxed"], "achieved_budget": metrics["achieved_budget"],
           "train_seconds": metrics["train_seconds"], "convergence_notes": metrics["convergence_notes"]}
    for budget in (0.3, 0.4):
        schedule = checkpoint.info.keep_schedule.rescaled(budget)
        row[f"hard_{budget:g}"] = accuracy(checkpoint.model, eval_set, mode="hard", schedule=schedule)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="political-speeches,squad-articles")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {dataset: {name: run_variant(dataset, args.seed, overrides) for name, overrides in VARIANTS.items()}
               for dataset in args.datasets.split(",")}
    lines = ["| data set | variant | steps | full | relaxed | achieved budget | hard @0.4 (% full) | "
             "hard @0.3 (% full) |", "| --- " * 8 + "|"]
    for dataset, variants in results.items():
        for name, r in variants.items():
            full = r["accuracy_full"]
            lines.append(f"| {dataset} | {name} | {r['steps']} | {full:.3f} | {r['accuracy_relaxed']:.3f} | "
                         f"{r['achieved_budget']:.3f} | {r['hard_0.4']:.3f} ({100 * r['hard_0.4'] / full:.1f}%) | "
                         f"{r['hard_0.3']:.3f} ({100 * r['hard_0.3'] / full:.1f}%) |")
    command = "python benchmarks/recipe_ablation.py " + " ".join(sys.argv[1:])
    markdown = (f"# Recipe ablation\n\n`{command.strip()}`\n\nSeed {args.seed}, budget 0.4.\n\n"
                + "\n".join(lines) + "\n")
    write_results("recipe_ablation", {"command": command.strip(), "machine": machine(), "seed": args.seed,
                                      "results": results}, markdown)


if __name__ == "__main__":
    main()
