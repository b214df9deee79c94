"""Does the default recipe hold on data it was never tuned on? Trained with the defaults, several seeds.

    python benchmarks/generalisation.py [--datasets squad-articles,rotten-tomatoes,political-speeches,bbc-news,
                                                    squad-articles-50]
                                        [--seeds 0,1,2] [--folds 0] [--budget 0.4] [--eval-budgets 0.3,0.4,0.5]
                                        [--model DIR] [--max-train-samples N] [--dual-restarts]
                                        [--distill-weight W] [--budget-slack D] [--scorer mlp] [--gate-positions]

For every (data set, seed) it runs ``adaret train --data D --budget 0.4 --seed S`` with every other setting
at its default, then measures on the held-out split:
- full: the backbone with the head fitted on its full features (the reference);
- relaxed: the deterministic gates, and the budget they spend;
- hard: the deployed top-M rule, with the learned schedule rescaled to each evaluation budget;
- truncation, what a user would do instead at the same cost: the full model on the first ceil(b * n)
  tokens of each text (the last one replaced by [SEP]). It gets the same head protocol as retention: the
  reference head re-fitted, with the same distillation, on the truncated training texts at that budget.
Costs are per text, from its real length n, exactly as each rule computes them: (1/L) sum_l K_l / n for
retention (K_l = max(2, ceil(f_l * n)) on gated layers) and ceil(b * n) / n for truncation.

``--folds 0,1,2,3,4`` cross-validates: fold k holds out the k-th fifth of the data (``adaret train --eval-fold k``),
so the five folds of one seed hold out every text exactly once, and the report adds accuracies pooled over them.
On a small data set that is five times the held-out texts of one split.

Each finished run is appended to results/<name>.json at once, and a rerun skips the runs already there,
so a long benchmark can be resumed. The summary table is the mean and the spread (min to max) over seeds.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, describe, machine, scratch_directory, write_results

from adaret.core.cli_args import add_dataclass_arguments, flag_fields
from adaret.modeling import KeepSchedule
from adaret.training.batching import Encoded
from adaret.training.data import load_splits, squad_article_paragraphs
from adaret.training.evaluate import accuracy
from adaret.training.head import fit_head, pooled_features
from adaret.training.trainer import TrainConfig, run_training

DATASETS = ("squad-articles", "rotten-tomatoes", "political-speeches", "bbc-news", "squad-articles-50")
COMMAND = "python benchmarks/generalisation.py"


def retention_cost(schedule: KeepSchedule, lengths: list[int]) -> float:
    per_text = [sum(min(k, n) for k in schedule.keep_counts(n)) / (n * len(schedule.numerators)) for n in lengths]
    return statistics.fmean(per_text)


def truncation_cost(budget: float, lengths: list[int]) -> float:
    return statistics.fmean(min(n, max(2, math.ceil(budget * n))) / n for n in lengths)


def squad_articles(count: int, path: Path) -> Path:
    """``count`` labels: SQuAD training paragraphs by article, for the ``count`` articles with the most paragraphs
    (50: 4,321 paragraphs, 73-149 per article; 200: 12,357, 40-149). Written as a user's JSONL file (``text``,
    ``label``), so that training reads it through the same path as a user's own data."""
    data = squad_article_paragraphs(count)
    with path.open("w", encoding="utf-8") as handle:
        for text, label in zip(data.texts, data.labels, strict=True):
            handle.write(json.dumps({"text": text, "label": data.label_names[label]}) + "\n")
    return path


# TrainConfig settings this benchmark takes on its command line, to measure a recipe variant against the defaults.
VARIANTS = ("model", "max_train_samples", "dual_restarts", "distill_weight", "budget_slack", "scorer",
            "gate_positions")

# Data sets this benchmark builds as files: many labels, and (200) a larger training split.
FILE_DATASETS = {f"squad-articles-{count}": partial(squad_articles, count) for count in (50, 200)}


def run_one(dataset: str, seed: int, fold: int, budget: float, eval_budgets: list[float],
            overrides: dict[str, object]) -> dict:
    """``overrides``: the ``VARIANTS`` settings of TrainConfig that the command line moved off their defaults."""
    with scratch_directory("adaret-generalisation-") as work:
        data = str(FILE_DATASETS[dataset](work / f"{dataset}.jsonl")) if dataset in FILE_DATASETS else dataset
        return _run_one(dataset, data, seed, fold, budget, eval_budgets, work / "ckpt", overrides)


def _option_value(name: str, value: object) -> str:
    """How a TrainConfig setting reads on the recorded command line: a flag alone, a model by its directory's name,
    a setting turned off (None: --budget-slack) as the negative value that turns it off."""
    if value is True:
        return ""
    if value is None:
        return " -1"
    return f" {Path(str(value)).name}" if name == "model" else f" {value}"


def _run_one(dataset: str, data: str, seed: int, fold: int, budget: float, eval_budgets: list[float],
             out: Path, overrides: dict[str, object]) -> dict:
    started = time.perf_counter()
    config = TrainConfig(out=str(out), data=data, budget=budget, seed=seed, eval_fold=fold, **overrides)
    folded = f" --eval-fold {fold}" if fold else ""
    options = "".join(f" --{k.replace('_', '-')}{_option_value(k, v)}" for k, v in overrides.items())
    run = run_training(config, command=f"adaret train --data {dataset} --budget {budget} --seed {seed}{folded}"
                                       f"{options} --out CK")
    checkpoint, train_set, teacher = run.checkpoint, run.train_set, run.teacher
    metrics, model, tokenizer = checkpoint.info.metrics, checkpoint.model, checkpoint.tokenizer
    eval_set = Encoded(load_splits(data, seed=seed, eval_fold=fold).eval, tokenizer, config.max_length)
    lengths = [len(ids) for ids in eval_set.ids]
    learned = checkpoint.info.keep_schedule
    row = {"dataset": dataset, "seed": seed, "fold": fold, "train_examples": metrics["train_examples"],
           "backbone": checkpoint.info.base_model.get("name"),
           "eval_examples": len(eval_set), "median_tokens": statistics.median(lengths),
           "accuracy_full": metrics["accuracy_full"], "accuracy_relaxed": metrics["accuracy_relaxed"],
           "achieved_budget": metrics["achieved_budget"], "sgda_steps": metrics["sgda_steps"],
           "train_seconds": metrics["train_seconds"], "seconds_per_stage": metrics["seconds_per_stage"],
           "convergence_notes": metrics["convergence_notes"], "selected_step": metrics["selected_step"],
           "validation_history": metrics["validation_history"],
           "keep_fractions": checkpoint.info.schedule["keep_fractions"], "budgets": {}}
    teacher_head = checkpoint.reference_head
    for b in eval_budgets:
        schedule = learned.rescaled(b)
        hard = accuracy(model, eval_set, mode="hard", schedule=schedule, batch_size=config.batch_size)
        row["budgets"][f"{b:g}"] = {
            "hard": hard, "hard_cost": retention_cost(schedule, lengths),
            "hard_reference_head": _with_head(model, teacher_head, partial(
                accuracy, model, eval_set, mode="hard", schedule=schedule, batch_size=config.batch_size)),
            **_truncation(model, teacher_head, teacher, train_set, eval_set, b, tokenizer.sep_token_id, config),
            "truncation_cost": truncation_cost(b, lengths)}
    row["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    return row


def _with_head(model, head, measure):
    deployed, model.head = model.head, head
    try:
        return measure()
    finally:
        model.head = deployed


def _truncation(model, reference_head, teacher, train_set: Encoded, eval_set: Encoded, budget: float, sep_id: int,
                config: TrainConfig) -> dict:
    """Truncation with the reference head as is, and with it re-fitted on truncated training texts."""
    head = copy.deepcopy(reference_head)
    cut_eval = eval_set.truncated(budget, sep_id)

    def measure() -> dict:
        as_is = accuracy(model, cut_eval, mode="full", batch_size=config.batch_size)
        features = pooled_features(model, train_set.truncated(budget, sep_id), config.batch_size,
                                   desc=f"truncation features @{budget:g}")
        fit_head(model.head, features, torch.tensor(train_set.labels), epochs=config.head_epochs, teacher=teacher,
                 distill_weight=config.distill_weight)
        return {"truncation": accuracy(model, cut_eval, mode="full", batch_size=config.batch_size),
                "truncation_reference_head": as_is}

    return _with_head(model, head, measure)


def summarise(runs: list[dict], eval_budgets: list[float]) -> str:
    lines = ["| data set | runs | median tokens | full | relaxed | achieved budget | steps | train s |"
             + "".join(f" hard @{b:g} (% full) | trunc @{b:g} (% full) |" for b in eval_budgets),
             "| --- " * (8 + 2 * len(eval_budgets)) + "|"]
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        rows = [r for r in runs if r["dataset"] == dataset]
        cells = [dataset, str(len(rows)), f"{statistics.median(r['median_tokens'] for r in rows):g}",
                 _spread([r["accuracy_full"] for r in rows]), _spread([r["accuracy_relaxed"] for r in rows]),
                 _spread([r["achieved_budget"] for r in rows]), f"{rows[0]['sgda_steps']}",
                 f"{statistics.fmean(r['train_seconds'] for r in rows):.0f}"]
        for b in eval_budgets:
            for key in ("hard", "truncation"):
                ratios = [100 * r["budgets"][f"{b:g}"][key] / r["accuracy_full"] for r in rows]
                cells.append(_spread(ratios, 1) + "%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def details(runs: list[dict], eval_budgets: list[float]) -> str:
    """Per run: steps, selection, budget, time, convergence notes, and the head re-fit ablation."""
    lines = ["| data set | seed | steps | gates from step | achieved budget | train s | "
             + "".join(f"hard @{b:g} / without re-fit / trunc. as is (% full) | " for b in eval_budgets)
             + "retention cost @0.4 | truncation cost @0.4 | notes |",
             "| --- " * (9 + len(eval_budgets)) + "|"]
    for r in runs:
        seed = f"{r['seed']} (fold {r['fold']})" if r.get("fold") else str(r["seed"])
        cells = [r["dataset"], seed, str(r["sgda_steps"]), str(r["selected_step"]),
                 f"{r['achieved_budget']:.3f}", f"{r['train_seconds']:.0f}"]
        for b in eval_budgets:
            v = r["budgets"][f"{b:g}"]
            cells.append(" / ".join(f"{100 * v[k] / r['accuracy_full']:.1f}"
                                    for k in ("hard", "hard_reference_head", "truncation_reference_head")))
        at = r["budgets"].get("0.4", {})
        cells += [f"{at.get('hard_cost', float('nan')):.3f}", f"{at.get('truncation_cost', float('nan')):.3f}",
                  "; ".join(r["convergence_notes"]) or "converged"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _key(run: dict) -> tuple[str, int, int]:
    return run["dataset"], run["seed"], run.get("fold", 0)


def cross_validation(runs: list[dict], eval_budgets: list[float]) -> str:
    """Accuracies pooled over the folds of each (data set, seed) that has more than one: every held-out text of
    every fold counts once, so the ratio rests on all of them rather than on one fifth."""
    groups: dict[tuple[str, int | str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["seed"]), []).append(r)
    groups = {k: v for k, v in groups.items() if len({_key(r) for r in v}) > 1}
    if not groups:
        return ""
    # Repeated cross-validation: a data set cross-validated with several seeds also gets one row over all of them,
    # each text then counted once per seed (the seeds differ in the split and in training).
    for dataset in {d for d, _ in groups}:
        seeds = sorted(seed for d, seed in groups if d == dataset)
        if len(seeds) > 1:
            groups[(dataset, ",".join(map(str, seeds)))] = [r for seed in seeds for r in groups[(dataset, seed)]]
    lines = ["\n## Cross-validation\n", "Pooled over folds: each accuracy weighted by its fold's held-out texts; "
             "% of full is pooled accuracy over pooled full accuracy. A row with several seeds pools every run of "
             "those seeds (repeated cross-validation: each text counts once per seed).\n",
             "| data set | seed | folds | held-out texts | full |"
             + "".join(f" hard @{b:g} (% full) | trunc @{b:g} (% full) |" for b in eval_budgets),
             "| --- " * (5 + 2 * len(eval_budgets)) + "|"]
    for (dataset, seed), rows in groups.items():
        count = sum(r["eval_examples"] for r in rows)
        full = _pooled(rows, [r["accuracy_full"] for r in rows])
        folds = ",".join(str(f) for f in sorted({r.get("fold", 0) for r in rows}))
        cells = [dataset, str(seed), folds, str(count),
                 f"{full:.3f}"]
        for b in eval_budgets:
            for key in ("hard", "truncation"):
                cells.append(f"{100 * _pooled(rows, [r['budgets'][f'{b:g}'][key] for r in rows]) / full:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pooled(rows: list[dict], accuracies: list[float]) -> float:
    return sum(a * r["eval_examples"] for a, r in zip(accuracies, rows, strict=True)) / sum(
        r["eval_examples"] for r in rows)


def _spread(values: list[float], digits: int = 3) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", default="0", help="eval folds per seed (0-4); 0,1,2,3,4 cross-validates")
    parser.add_argument("--budget", type=float, default=0.4)
    parser.add_argument("--eval-budgets", default="0.3,0.4,0.5")
    # The recipe variants are adaret train's own flags, declared once in TrainConfig (same parsing, same defaults).
    add_dataclass_arguments(parser.add_argument_group("recipe variants (as for adaret train)"), TrainConfig,
                            exclude={f.name for f, _ in flag_fields(TrainConfig)} - set(VARIANTS))
    parser.add_argument("--name", default="generalisation")
    parser.add_argument("--merge", default="",
                        help="comma-separated result names whose runs are added to this one (runs split over "
                             "several processes with --name, then gathered)")
    args = parser.parse_args()
    eval_budgets = [float(b) for b in args.eval_budgets.split(",")]
    path = RESULTS / f"{args.name}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    defaults = TrainConfig(out="")  # only read for its defaults
    overrides = {name: getattr(args, name) for name in VARIANTS if getattr(args, name) != getattr(defaults, name)}
    # the backbone by its directory's name: a machine's paths do not belong in a recorded command
    argv = [Path(a).name if a == args.model else a for a in sys.argv[1:]]
    payload |= {"command": COMMAND + " " + " ".join(argv), "machine": machine(), "budget": args.budget}
    for other in filter(None, args.merge.split(",")):
        done = {_key(r) for r in payload["runs"]}
        extra = json.loads((RESULTS / f"{other}.json").read_text())["runs"]
        payload["runs"] += [r for r in extra if _key(r) not in done]
    folds = [int(f) for f in args.folds.split(",")]
    for seed in [int(s) for s in args.seeds.split(",")]:  # every data set once before any gets a second seed
        for fold, dataset in itertools.product(folds, args.datasets.split(",")):
            if any(_key(r) == (dataset, seed, fold) for r in payload["runs"]):
                continue
            payload["runs"].append(run_one(dataset, seed, fold, args.budget, eval_budgets, overrides))
            path.write_text(json.dumps(payload, indent=2) + "\n")
    table = summarise(payload["runs"], eval_budgets)
    markdown = (f"# Generalisation of the default recipe\n\n`{payload['command']}`\n\n"
                f"Machine: {describe(payload['machine'])}. Mean over runs (seeds, and folds where cross-validated), "
                "[min-max] in brackets. Retention trained at budget "
                f"{args.budget:g}; other budgets rescale its schedule. Truncation: first ceil(b*n) tokens, head "
                "re-fitted the same way.\n\n" + table + cross_validation(payload["runs"], eval_budgets)
                + "\n## Runs\n\n" + details(payload["runs"], eval_budgets))
    write_results(args.name, payload, markdown)


if __name__ == "__main__":
    main()
