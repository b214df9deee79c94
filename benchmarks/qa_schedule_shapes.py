"""Does the learned keep schedule matter, or would any schedule of the same budget do? Question answering.

    python benchmarks/qa_schedule_shapes.py --checkpoint CK [--budgets 0.4,0.3] [--max-examples 400] [--seed 1]

One trained question-answering checkpoint, the deployed hard top-M rule with its own gates ranking the tokens,
and the per-layer keep fractions replaced by hand-made shapes of the same mean (the budget):

- learned: the checkpoint's measured schedule rescaled to the budget (what export deploys);
- flat: the first layer full, every later layer the same fraction;
- two full layers: the first two layers full, the rest flat;
- linear: fractions falling linearly with depth ([1, .8, .6, .4, .2, .1] rescaled by the same power rule).

SQuAD EM and F1 on a seeded sample of dev questions (PyTorch, hard mode). Only the schedule changes between rows:
the weights, the gates' ranking and the windows are the same.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, machine, write_results

from adaret.modeling import KeepSchedule
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.question_answering import SpanData, WindowSettings, load_qa_splits, sample, span_scores

COMMAND = "python benchmarks/qa_schedule_shapes.py"
LINEAR = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)


def shapes(learned: KeepSchedule, budget: float, layers: int) -> dict[str, KeepSchedule]:
    """Every shape at ``budget``; a shape that cannot reach it (a fraction above 1 or below 0) is left out."""
    found = {"learned": learned.rescaled(budget)}
    flat = (layers * budget - 1) / (layers - 1)
    if 0 < flat <= 1:
        found["flat"] = KeepSchedule.from_fractions([1.0] + [flat] * (layers - 1))
    rest = (layers * budget - 2) / (layers - 2)
    if 0 < rest <= 1:
        found["two full layers"] = KeepSchedule.from_fractions([1.0, 1.0] + [rest] * (layers - 2))
    if len(LINEAR) == layers:
        found["linear"] = KeepSchedule.from_fractions(list(LINEAR)).rescaled(budget)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a question-answering checkpoint")
    parser.add_argument("--budgets", default="0.4,0.3")
    parser.add_argument("--max-examples", type=int, default=400, help="dev questions, a seeded sample")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--name", default="qa_schedule_shapes")
    args = parser.parse_args(argv)
    checkpoint = RetentionCheckpoint.from_pretrained(args.checkpoint)
    training = checkpoint.info.training
    settings = WindowSettings(training["max_length"], training["doc_stride"], training["max_query_length"],
                              training["max_answer_length"])
    _, held_out, name = load_qa_splits(training["data"], int(training["seed"]))
    data = SpanData(sample(held_out, args.max_examples, args.seed), checkpoint.tokenizer, settings)
    model = checkpoint.model.eval()
    started = time.perf_counter()
    full, _ = span_scores(model, data, args.batch_size, mode="full", desc="full")
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for shape, schedule in shapes(checkpoint.info.keep_schedule, budget, model.num_layers).items():
            scores, _ = span_scores(model, data, args.batch_size, mode="hard", schedule=schedule, desc=shape)
            rows.append({"budget": budget, "shape": shape, "fractions": [round(f, 4) for f in schedule.fractions],
                         "exact_match": scores["exact_match"], "f1": scores["f1"],
                         "f1_share_of_full": scores["f1"] / full["f1"]})
            print(rows[-1], flush=True)
    payload = {"command": f"{COMMAND} " + shlex.join(sys.argv[1:]), "machine": machine(), "data": name,
               "questions": len(data.examples), "full": full, "rows": rows,
               "seconds": round(time.perf_counter() - started, 1)}
    write_results(args.name, payload, render(payload))
    return 0


def render(payload: dict) -> str:
    full = payload["full"]
    lines = ["# Question answering: the learned keep schedule against hand-made shapes of the same budget", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}. {payload['data']}, {payload['questions']} dev questions; "
             f"the checkpoint's weights without retention (its final weights, not the stage-1 full model): EM "
             f"{full['exact_match']:.2f}, F1 {full['f1']:.2f}. The same weights and gates in every row; only the "
             "per-layer keep fractions change.", "",
             "| budget | shape | keep fractions (layers 1-6) | EM | F1 | % of full F1 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['budget']:g} | {r['shape']} | {', '.join(f'{f:.3f}' for f in r['fractions'])} | "
                     f"{r['exact_match']:.2f} | {r['f1']:.2f} | {100 * r['f1_share_of_full']:.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
