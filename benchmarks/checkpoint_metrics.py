"""What trained checkpoints recorded about themselves, side by side: their command and held-out summary.

    python benchmarks/checkpoint_metrics.py CK [CK ...] --name NAME [--model-name MPNET]

``adaret train`` stores its command line and its held-out metrics in every checkpoint (``adaret_checkpoint.json``).
This script measures nothing itself: it tabulates those records, so that a comparison of training runs (for example
a frozen against a fine-tuned backbone) sits in ``benchmarks/results`` with the commands that produced it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import training_command, write_results

from adaret.training.checkpoint import RetentionCheckpoint


def record(directory: str, model_name: str) -> dict:
    info = RetentionCheckpoint.from_pretrained(directory).info
    metrics = info.metrics
    return {"command": training_command(info.training.get("command", ""), model_name),
            "freeze_backbone": info.training.get("freeze_backbone"),
            "train_examples": metrics["train_examples"], "eval_examples": metrics["eval_examples"],
            "sgda_steps": metrics["sgda_steps"], "selected_step": metrics["selected_step"],
            "accuracy_full": metrics["accuracy_full"], "accuracy_relaxed": metrics["accuracy_relaxed"],
            "accuracy_hard": metrics["accuracy_hard"], "hard_over_full": metrics["hard_over_full"],
            "achieved_budget": metrics["achieved_budget"], "seconds_per_stage": metrics.get("seconds_per_stage"),
            "keep_fractions": info.schedule["keep_fractions"], "notes": metrics.get("convergence_notes", [])}


def render(rows: list[dict]) -> str:
    lines = ["# Training runs, as their checkpoints recorded them", "",
             "`python benchmarks/checkpoint_metrics.py CK ...`. Accuracies are each run's held-out summary at its "
             "training budget; \"full\" is the run's own reference (with a fine-tuned backbone: that backbone at "
             "budget 1.0 with the reference head).", "",
             "| command | frozen | train / held-out texts | SGDA steps (gates from) | full | relaxed | hard top-M | "
             "% of full | achieved budget | seconds per stage | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r["seconds_per_stage"] or {}).items())
        lines.append(f"| `{r['command']}` | {r['freeze_backbone']} | {r['train_examples']} / {r['eval_examples']} | "
                     f"{r['sgda_steps']} ({r['selected_step'] or 'final'}) | {r['accuracy_full']:.4f} | "
                     f"{r['accuracy_relaxed']:.4f} | {r['accuracy_hard']:.4f} | {100 * r['hard_over_full']:.1f}% | "
                     f"{r['achieved_budget']:.3f} | {stages} | {'; '.join(r['notes']) or 'converged'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-name", default="MPNET", help="placeholder for the --model directory in commands")
    args = parser.parse_args()
    rows = [record(c, args.model_name) for c in args.checkpoints]
    payload = {"command": f"python benchmarks/checkpoint_metrics.py {' '.join(['CK'] * len(rows))} --name {args.name}",
               "runs": rows}
    write_results(args.name, payload, render(rows))


if __name__ == "__main__":
    main()
