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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import training_command, write_results

from adaret.training.checkpoint import CONFIG_NAME, RetentionCheckpoint
from adaret.training.seq2seq_checkpoint import is_seq2seq_checkpoint


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


def summarization_record(directory: str, model_name: str) -> dict:
    """A summarization checkpoint's record, read from its config without building the model (its sha256 is checked
    when it is loaded, not here: nothing is computed from its weights)."""
    info = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    metrics = info["metrics"]
    return {"task": "summarization", "command": training_command(info["training"].get("command", ""), model_name),
            "gate_positions": info["retention"].get("gate_positions", False),
            "train_examples": metrics["train_examples"], "eval_examples": metrics["eval_examples"],
            "sgda_steps": metrics["sgda_steps"], "selected_step": metrics["selected_step"],
            "rouge_full": metrics["rouge_full"], "rouge_hard": metrics["rouge_hard"],
            "rougeL_hard_over_full": metrics["rougeL_hard_over_full"], "achieved_budget": metrics["achieved_budget"],
            "deployed_schedule": metrics["deployed_schedule"], "seconds_per_stage": metrics.get("seconds_per_stage"),
            "notes": metrics.get("convergence_notes", [])}


def question_answering_record(directory: str, model_name: str) -> dict:
    """A question-answering checkpoint's record, read from its config (as for summarization)."""
    info = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    metrics = info["metrics"]
    keys = ("train_questions", "eval_questions", "finetune_steps", "sgda_steps", "hard_finetune_steps", "selected_step",
            "f1_full", "f1_full_final_weights", "f1_hard_before_stage3", "f1_hard", "exact_match_hard",
            "hard_over_full", "achieved_budget", "seconds_per_stage")
    return {"task": "question-answering", "gate_question": info["retention"].get("gate_question", False),
            "command": training_command(info["training"].get("command", ""), model_name),
            "keep_fractions": info["schedule"]["keep_fractions"], "notes": metrics.get("convergence_notes", []),
            **{key: metrics.get(key) for key in keys}}


def render_question_answering(rows: list[dict]) -> list[str]:
    lines = ["## Question answering", "",
             "SQuAD F1 on each run's held-out dev questions: \"full\" is the stage-1 model; \"hard\" the deployed "
             "hard top-M rule at the budget, before and after stage 3 (fine-tuning through it); \"schedule\" is "
             "the relaxed gates' own, which the deployed rule rescales to the budget.", "",
             "| command | train / held-out questions | steps: full / SGDA (gates from) / hard | "
             "F1 full (final weights) | F1 hard before stage 3 | F1 hard | EM hard | % of full F1 | achieved budget | "
             "schedule | seconds per stage | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r["seconds_per_stage"] or {}).items())
        schedule = ", ".join(f"{f:.2f}" for f in r["keep_fractions"])
        lines.append(f"| `{r['command']}` | {r['train_questions']} / {r['eval_questions']} | {r['finetune_steps']} / "
                     f"{r['sgda_steps']} ({r['selected_step'] or 'final'}) / {r['hard_finetune_steps']} | "
                     f"{r['f1_full']:.2f} ({r['f1_full_final_weights']:.2f}) | {r['f1_hard_before_stage3']:.2f} | "
                     f"{r['f1_hard']:.2f} | {r['exact_match_hard']:.2f} | {100 * r['hard_over_full']:.1f}% | "
                     f"{r['achieved_budget']:.3f} | {schedule} | {stages} | {'; '.join(r['notes']) or 'converged'} |")
    return lines


def _rouge(scores: dict) -> str:
    return " / ".join(f"{scores[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL"))


def render_summarization(rows: list[dict]) -> list[str]:
    lines = ["## Summarization", "",
             "ROUGE-1/2/L (F, x100) of greedy summaries on each run's held-out split: \"full\" is the reference "
             "decoder on the full memory, \"at the budget\" the re-fitted decoder on the deployed hard top-M "
             "memory.", "",
             "| command | train / held-out documents | SGDA steps (gates from) | ROUGE full | ROUGE at the budget | "
             "ROUGE-L % of full | achieved budget | deployed schedule | seconds per stage | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in (r["seconds_per_stage"] or {}).items())
        schedule = ", ".join(f"{f:.2f}" for f in r["deployed_schedule"])
        lines.append(f"| `{r['command']}` | {r['train_examples']} / {r['eval_examples']} | "
                     f"{r['sgda_steps']} ({r['selected_step'] or 'final'}) | {_rouge(r['rouge_full'])} | "
                     f"{_rouge(r['rouge_hard'])} | {100 * r['rougeL_hard_over_full']:.1f}% | "
                     f"{r['achieved_budget']:.3f} | {schedule} | {stages} | {'; '.join(r['notes']) or 'converged'} |")
    return lines


def render(rows: list[dict]) -> str:
    sections = []
    for task, table in (("classification", render_classification), ("question-answering", render_question_answering),
                        ("summarization", render_summarization)):
        chosen = [r for r in rows if r.get("task", "classification") == task]
        sections += [table(chosen)] if chosen else []
    lines = ["# Training runs, as their checkpoints recorded them", "",
             "`python benchmarks/checkpoint_metrics.py CK ...`. Each run's held-out summary at its training budget."]
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"


def render_classification(rows: list[dict]) -> list[str]:
    lines = ["Accuracies: \"full\" is the run's own reference (with a fine-tuned backbone: that backbone at "
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
    return lines


def _reader(directory: str):
    if is_seq2seq_checkpoint(directory):
        return summarization_record
    task = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))["retention"].get("task")
    return question_answering_record if task == "question-answering" else record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-name", default="MPNET", help="placeholder for the --model directory in commands")
    args = parser.parse_args()
    rows = [_reader(c)(c, args.model_name) for c in args.checkpoints]
    payload = {"command": f"python benchmarks/checkpoint_metrics.py {' '.join(['CK'] * len(rows))} --name {args.name}",
               "runs": rows}
    write_results(args.name, payload, render(rows))


if __name__ == "__main__":
    main()
