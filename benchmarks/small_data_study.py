"""Why does the default recipe miss 95% of full at 0.3 on the political speeches? Two candidates, measured.

    python benchmarks/small_data_study.py CHECKPOINT [CHECKPOINT ...] [--name small_data_study]

CHECKPOINTs are ``adaret train`` outputs of the default recipe (``benchmarks/generalisation.py`` trains them).
Nothing is retrained: each checkpoint's gates, schedule and reference head are re-used, and only what follows
gate training is varied, on the checkpoint's own data split (held-out = the split's eval part).

1. The head re-fit. The recipe re-fits the [CLS; mean] head on hard top-M features (AdamW, 300 full-batch
   epochs, distillation to the full model), starting from the full model's head. With 131 training speeches
   and 768 features that fit is free to over-fit, so alternatives are measured beside it: no re-fit, the re-fit
   pulled towards the full model's head by an L2 anchor ``a * ||W - W_ref||^2`` (a = 1e-3, 1e-2, 1e-1), and
   the variant that 5-fold cross-validation on the training rows picks among them.
2. The ranking and the schedule at the budget: the learned gates against a seeded random ranking, each on the
   learned schedule power-rescaled to the budget (the deployed rule) and on a uniform schedule (every gated
   layer the same fraction, same budget). The head is re-fitted the recipe's way for each.

Accuracies are % of the full model (the reference head on full features), on the held-out split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, machine, write_results

from adaret.modeling import KeepSchedule
from adaret.modeling.scorers import make_scorer
from adaret.training.batching import Encoded
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits
from adaret.training.head import distillation_loss, pooled_features
from adaret.training.trainer import TrainConfig, split_validation

BUDGETS = (0.3, 0.4, 0.5)
ANCHORS = (1e-3, 1e-2, 1e-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--name", default="small_data_study")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [study(Path(path)) for path in args.checkpoints]
    payload = {"command": "python benchmarks/small_data_study.py " + " ".join(
        ["CK"] * len(args.checkpoints) + sys.argv[1 + len(args.checkpoints):]), "machine": machine(), "runs": runs}
    write_results(args.name, payload, render(payload))


def study(path: Path) -> dict:
    checkpoint = RetentionCheckpoint.from_pretrained(path)
    model, training = checkpoint.model, checkpoint.info.training
    data, seed = training["data"], int(training["seed"])
    config = TrainConfig(out="unused", data=data, seed=seed)
    splits = load_splits(data, seed=seed)
    fit_part, _ = split_validation(splits.train, config)  # the rows the recipe fitted its head on
    train = Encoded(fit_part, checkpoint.tokenizer, config.max_length)
    held_out = Encoded(splits.eval, checkpoint.tokenizer, config.max_length)
    reference = checkpoint.reference_head
    labels = torch.tensor(train.labels), torch.tensor(held_out.labels)
    full = pooled_features(model, train, 8), pooled_features(model, held_out, 8)
    full_accuracy = _accuracy(reference, full[1], labels[1])
    teacher = reference(full[0]).detach()
    schedule = checkpoint.info.keep_schedule
    row = {"data": data, "seed": seed, "train_examples": len(train), "eval_examples": len(held_out),
           "accuracy_full": full_accuracy, "keep_fractions": schedule.fractions}

    def features(scorer_name: str, at_budget: Callable[[float], KeepSchedule]) -> dict:
        scorer = make_scorer(scorer_name, model, seed=seed)
        return {b: tuple(pooled_features(model, part, 8, mode="hard", schedule=at_budget(b), scorer=scorer)
                         for part in (train, held_out)) for b in BUDGETS}

    def percent(head: torch.nn.Linear, hard: dict) -> dict:
        return {f"{b:g}": 100 * _accuracy(head, hard[b][1], labels[1]) / full_accuracy for b in BUDGETS}

    learned = features("learned", schedule.rescaled)
    stacked = torch.cat([learned[b][0] for b in BUDGETS] + [full[0]])
    copies = len(BUDGETS) + 1
    heads = {"no re-fit": reference,
             "re-fit (the recipe)": refit(reference, stacked, labels[0].repeat(copies), teacher.repeat(copies, 1))}
    for anchor in ANCHORS:
        heads[f"re-fit, anchor {anchor:g}"] = refit(reference, stacked, labels[0].repeat(copies),
                                                    teacher.repeat(copies, 1), anchor=anchor)
    choice, cv_scores = cross_validated_choice(reference, learned, full[0], labels[0], teacher)
    row["head"] = {name: percent(head, learned) for name, head in heads.items()}
    row["head"]["chosen by 5-fold CV"] = row["head"][choice]
    row["cv"] = {"choice": choice, "scores": cv_scores}
    row["ranking"] = {"learned, power rescale (deployed)": row["head"]["re-fit (the recipe)"]}
    for name, scorer_name, at_budget in (("random, power rescale", "random", schedule.rescaled),
                                         ("learned, uniform schedule", "learned", partial_uniform(schedule)),
                                         ("random, uniform schedule", "random", partial_uniform(schedule))):
        hard = features(scorer_name, at_budget)
        x = torch.cat([hard[b][0] for b in BUDGETS] + [full[0]])
        row["ranking"][name] = percent(refit(reference, x, labels[0].repeat(copies), teacher.repeat(copies, 1)),
                                       hard)
    print(data, seed, row["head"], row["ranking"], flush=True)
    return row


def refit(reference: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, *,
          anchor: float = 0.0, epochs: int = 300, distill_weight: float = 1.0) -> torch.nn.Linear:
    """The recipe's re-fit (``adaret.training.head.fit_head``), plus ``anchor * ||theta - theta_ref||^2``."""
    head = torch.nn.Linear(reference.in_features, reference.out_features)
    head.load_state_dict(reference.state_dict())
    start = [p.detach().clone() for p in reference.parameters()]
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(epochs):
        loss = distillation_loss(head(x), y, teacher, distill_weight)
        if anchor:
            loss = loss + anchor * sum((p - p0).pow(2).sum() for p, p0 in zip(head.parameters(), start, strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head.requires_grad_(False)


def cross_validated_choice(reference: torch.nn.Linear, learned: dict, full_train: torch.Tensor,
                           labels: torch.Tensor, teacher: torch.Tensor, folds: int = 5) -> tuple[str, dict]:
    """The head variant with the best mean hard accuracy over BUDGETS on held-back training folds."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    parts = [order[i::folds] for i in range(folds)]
    variants = {"no re-fit": None, "re-fit (the recipe)": 0.0,
                **{f"re-fit, anchor {a:g}": a for a in ANCHORS[1:]}}
    scores = {}
    for name, anchor in variants.items():
        fold_scores = []
        for k, test in enumerate(parts):
            fit = torch.cat([p for j, p in enumerate(parts) if j != k])
            head = reference
            if anchor is not None:
                x = torch.cat([learned[b][0][fit] for b in BUDGETS] + [full_train[fit]])
                copies = len(BUDGETS) + 1
                head = refit(reference, x, labels[fit].repeat(copies), teacher[fit].repeat(copies, 1), anchor=anchor)
            fold_scores.append(statistics.fmean(_accuracy(head, learned[b][0][test], labels[test]) for b in BUDGETS))
        scores[name] = statistics.fmean(fold_scores)
    return max(scores, key=scores.get), scores


def partial_uniform(schedule: KeepSchedule) -> Callable[[float], KeepSchedule]:
    """Every gated layer keeps the same fraction; the always-full layers stay full; mean = the budget."""
    layers, full = len(schedule.numerators), schedule.full_layers
    return lambda b: KeepSchedule.from_fractions([1.0] * full + [(b * layers - full) / (layers - full)]
                                                 * (layers - full))


@torch.no_grad()
def _accuracy(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((head(x).argmax(-1) == y).float().mean())


def render(payload: dict) -> str:
    runs = payload["runs"]
    names = ", ".join(sorted({f"{r['data']} seed {r['seed']}" for r in runs}))
    lines = ["# Small data: the head re-fit and the ranking, measured after gate training", "",
             f"`{payload['command']}`", "", f"Machine: {describe(payload['machine'])}. "
             "% of full on the held-out split, mean [min-max] over the checkpoints of each data set "
             f"({names}).", ""]
    for section, title in (("head", "Head re-fit variants (learned gates, deployed schedule)"),
                           ("ranking", "Ranking and schedule variants (head re-fitted the recipe's way)")):
        lines += [f"## {title}", "", "| data set | variant | " + " | ".join(f"@{b:g}" for b in BUDGETS) + " |",
                  "| --- | --- |" + " --- |" * len(BUDGETS)]
        for data in dict.fromkeys(r["data"] for r in runs):
            rows = [r for r in runs if r["data"] == data]
            for variant in rows[0][section]:
                cells = [_spread([r[section][variant][f"{b:g}"] for r in rows]) for b in BUDGETS]
                lines.append(f"| {data} | {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Cross-validation's choice per checkpoint: " + "; ".join(
        f"{r['data']} seed {r['seed']}: {r['cv']['choice']}" for r in runs) + "."]
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    main()
