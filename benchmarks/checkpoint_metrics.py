"""What trained checkpoints recorded about themselves, side by side: their command and held-out summary.

    python benchmarks/checkpoint_metrics.py CK [CK ...] --name NAME [--model-name MPNET]

``adaret train`` stores its command line and its held-out metrics in every checkpoint (``adaret_checkpoint.json``).
This script measures nothing itself: it tabulates those records, so that a comparison of training runs (for example
a frozen against a fine-tuned backbone) sits in ``benchmarks/results`` with the commands that produced it.
Classification, question-answering and summarization checkpoints each get their own table (accuracy, SQuAD F1, or
ROUGE of greedy summaries).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import training_command, write_results

from adaret.core import io_spec
from adaret.training.checkpoint import CONFIG_NAME

# Each checkpoint's record is read from its config, without building the model: nothing here is computed from the
# weights (their sha256 is checked when a checkpoint is loaded for use).
CLASSIFICATION, QUESTION_ANSWERING = io_spec.CLASSIFICATION.task, io_spec.QUESTION_ANSWERING.task
SUMMARIZATION = io_spec.SUMMARIZATION.task


def record(directory: str, model_name: str) -> dict:
    info = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    metrics, retention = info["metrics"], info["retention"]
    task = retention.get("task", CLASSIFICATION)
    row = {"task": task, "command": training_command(info["training"].get("command", ""), model_name),
           "keep_fractions": info["schedule"]["keep_fractions"], "notes": metrics.get("convergence_notes", [])}
    keys = {CLASSIFICATION: ("train_examples", "eval_examples", "sgda_steps", "selected_step", "accuracy_full",
                             "accuracy_relaxed", "accuracy_hard", "hard_over_full"),
            QUESTION_ANSWERING: ("train_questions", "eval_questions", "finetune_steps", "sgda_steps",
                                 "hard_finetune_steps", "selected_step", "f1_full", "f1_full_final_weights",
                                 "f1_hard_before_stage3", "f1_hard", "exact_match_hard", "hard_over_full"),
            SUMMARIZATION: ("train_examples", "eval_examples", "sgda_steps", "selected_step", "rouge_full",
                            "rouge_hard", "rougeL_hard_over_full", "deployed_schedule")}[task]
    row |= {key: metrics.get(key) for key in (*keys, "achieved_budget", "seconds_per_stage")}
    if task == CLASSIFICATION:
        row["freeze_backbone"] = info["training"].get("freeze_backbone")
    else:
        row["gate_positions"] = retention.get("gate_positions", False)
        row["gate_question"] = retention.get("gate_question", False)
    return row


def _fractions(values: list[float]) -> str:
    return ", ".join(f"{f:.2f}" for f in values)


def _rouge(scores: dict) -> str:
    return " / ".join(f"{scores[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL"))


def _steps(r: dict) -> str:
    return f"{r['sgda_steps']} ({r['selected_step'] or 'final'})"


def _classification_cells(r: dict) -> list:
    return [r["freeze_backbone"], f"{r['train_examples']} / {r['eval_examples']}", _steps(r),
            f"{r['accuracy_full']:.4f}", f"{r['accuracy_relaxed']:.4f}", f"{r['accuracy_hard']:.4f}",
            f"{100 * r['hard_over_full']:.1f}%"]


def _question_answering_cells(r: dict) -> list:
    return [f"{r['train_questions']} / {r['eval_questions']}",
            f"{r['finetune_steps']} / {_steps(r)} / {r['hard_finetune_steps']}",
            f"{r['f1_full']:.2f} ({r['f1_full_final_weights']:.2f})", f"{r['f1_hard_before_stage3']:.2f}",
            f"{r['f1_hard']:.2f}", f"{r['exact_match_hard']:.2f}", f"{100 * r['hard_over_full']:.1f}%"]


def _summarization_cells(r: dict) -> list:
    return [f"{r['train_examples']} / {r['eval_examples']}", _steps(r), _rouge(r["rouge_full"]),
            _rouge(r["rouge_hard"]), f"{100 * r['rougeL_hard_over_full']:.1f}%"]


# Per task: the heading and its explanation, the task's own columns (between the command and the shared ones), and
# the cells that fill them.
TABLES: dict[str, tuple[list[str], list[str], Callable[[dict], list]]] = {
    CLASSIFICATION: (
        ["Accuracies: \"full\" is the run's own reference (with a fine-tuned backbone: that backbone at budget 1.0 "
         "with the reference head)."],
        ["frozen", "train / held-out texts", "SGDA steps (gates from)", "full", "relaxed", "hard top-M", "% of full"],
        _classification_cells),
    QUESTION_ANSWERING: (
        ["## Question answering", "",
         "SQuAD F1 on each run's held-out dev questions: \"full\" is the stage-1 model; \"hard\" the deployed hard "
         "top-M rule at the budget, before and after stage 3 (fine-tuning through it); \"schedule\" is the relaxed "
         "gates' own, which the deployed rule rescales to the budget."],
        ["train / held-out questions", "steps: full / SGDA (gates from) / hard", "F1 full (final weights)",
         "F1 hard before stage 3", "F1 hard", "EM hard", "% of full F1"],
        _question_answering_cells),
    SUMMARIZATION: (
        ["## Summarization", "",
         "ROUGE-1/2/L (F, x100) of greedy summaries on each run's held-out split: \"full\" is the reference decoder "
         "on the full memory, \"at the budget\" the re-fitted decoder on the deployed hard top-M memory; "
         "\"schedule\" is the deployed one."],
        ["train / held-out documents", "SGDA steps (gates from)", "ROUGE full", "ROUGE at the budget",
         "ROUGE-L % of full"],
        _summarization_cells),
}


def _table(task: str, rows: list[dict]) -> list[str]:
    intro, columns, cells = TABLES[task]
    shown_schedule = task != CLASSIFICATION
    header = ["command", *columns, "achieved budget", *(["schedule"] if shown_schedule else []),
              "seconds per stage", "notes"]
    lines = [*intro, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        schedule = _fractions(r["deployed_schedule"] if task == SUMMARIZATION else r["keep_fractions"])
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r["seconds_per_stage"] or {}).items())
        row = [f"`{r['command']}`", *cells(r), f"{r['achieved_budget']:.3f}", *([schedule] if shown_schedule else []),
               stages, "; ".join(r["notes"]) or "converged"]
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def render(rows: list[dict]) -> str:
    lines = ["# Training runs, as their checkpoints recorded them", "",
             "`python benchmarks/checkpoint_metrics.py CK ...`. Each run's held-out summary at its training budget."]
    for task in TABLES:
        chosen = [r for r in rows if r["task"] == task]
        lines += ["", *_table(task, chosen)] if chosen else []
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
