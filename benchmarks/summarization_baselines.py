"""Summarization against what a user would do instead at the same cost: cut the document, or rank by a heuristic.

    python benchmarks/summarization_baselines.py --checkpoint CK [--budget 0.4] [--max-eval N] [--methods ...]

One trained summarization checkpoint (``adaret train --task summarization``), its own data set and split (read from
the checkpoint's training record), greedy ROUGE on the test split. Methods:

- full: the reference decoder on the full memory ("the full model trained the same way");
- learned: the deployed decoder on the compact memory of the hard top-M rule at the budget (what the export runs);
- head: every document cut to its first ceil(b * n) tokens (n: its tokens up to the checkpoint's source limit),
  encoded in full. The encoder does the same work as the learned schedule at budget b (b * n tokens through each of
  the L layers, against the learned schedule's sum_l K_l = b * L * n);
- head+tail: half of those tokens from the start, half from the end;
- head (equal cache): cut to the share of tokens the learned memory keeps (its last layer's keep fraction), so the
  decoder's cross-attention cache, the decoder-side cost, equals the learned one's; the encoder then does less;
- random, significance: the learned schedule with the tokens ranked by a fixed random table or by PoWER-BERT
  attention significance (``adaret.modeling.scorers``) instead of the gates.

Decoder protocol (the same head protocol for every method): each baseline's decoder starts from the reference decoder
and is re-fitted on its own memory for the checkpoint's ``refit_epochs``, with its learning rate, batch size and seed.
The deployed decoder had ``decoder_epochs`` on the full memory and then ``refit_epochs`` on its memory; the
reference, which the baselines start from, had ``decoder_epochs + refit_epochs`` on the full memory. The baselines
therefore get ``refit_epochs`` more training than the learned method: the comparison leans their way. "head, as is"
(the reference decoder on the cut memory, not re-fitted) is what a user gets without re-training.

Costs are counted as the deployed graphs run: each document's chunks padded to its own longest chunk, K_l from that
width. Encoder cost: token-layers against full. Cache: memory slots (real tokens the decoder reads) against full.
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, machine, write_results

from adaret.core.chunks import chunk_ids
from adaret.core.summaries import load_summary_splits, rouge_bootstrap_interval, rouge_per_example, rouge_scores
from adaret.export.pipeline import deployment_schedule
from adaret.modeling import KeepSchedule
from adaret.modeling.scorers import make_scorer
from adaret.training import summarization as s2s
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint

METHODS = ("full", "learned", "head", "head+tail", "head-equal-cache", "random", "significance")
COMMAND = "python benchmarks/summarization_baselines.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a summarization checkpoint directory")
    p.add_argument("--budget", type=float, default=None, help="default: the budget the checkpoint was trained at")
    p.add_argument("--max-eval", type=int, default=None,
                   help="test documents, a seeded sample (default: the checkpoint's own evaluation set)")
    p.add_argument("--max-train", type=int, default=None,
                   help="training documents the baselines are re-fitted on, a seeded sample (default: the checkpoint's "
                        "own training set; fewer only for a quick look, since it handicaps the baselines)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--name", default="summarization_baselines", help="results stem in benchmarks/results")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args


# --- the cut documents ------------------------------------------------------------------------------------------


def cut_document(chunks: Sequence[Sequence[int]], fraction: float, where: str, chunk_length: int) -> list[list[int]]:
    """A document's chunks ([CLS] piece [SEP] each) with only ceil(fraction * n) of its n content tokens left:
    the first ones ("head"), or half from the start and half from the end ("head+tail"); then chunked again."""
    content = [token for chunk in chunks for token in chunk[1:-1]]
    keep = min(len(content), max(1, math.ceil(fraction * len(content))))
    if where == "head":
        kept = content[:keep]
    elif where == "head+tail":
        front = math.ceil(keep / 2)
        kept = content[:front] + content[len(content) - (keep - front):]
    else:
        raise ValueError(f"unknown cut {where!r}")
    cls_id, sep_id = chunks[0][0], chunks[0][-1]
    return chunk_ids(kept, chunk_length=chunk_length, max_source_tokens=len(kept), cls_id=cls_id, sep_id=sep_id)


def cut_data(data: s2s.SummaryData, fraction: float, where: str, chunk_length: int) -> s2s.SummaryData:
    other = copy.copy(data)
    other.documents = [cut_document(doc, fraction, where, chunk_length) for doc in data.documents]
    return other


# --- costs as the deployed graphs count them --------------------------------------------------------------------


def encoder_cost(data: s2s.SummaryData, schedule: KeepSchedule | None, layers: int) -> int:
    """Token-layers the encoder runs: every chunk row padded to its document's longest chunk, K_l of that width."""
    total = 0
    for doc in data.documents:
        width = max(len(chunk) for chunk in doc)
        per_row = width * layers if schedule is None else sum(schedule.keep_counts(width))
        total += per_row * len(doc)
    return total


def memory_slots(data: s2s.SummaryData, schedule: KeepSchedule | None) -> int:
    """Real tokens the decoder cross-attends to: every real token, or the last layer's K of each padded row (at most
    the row's real tokens: padding is ranked last)."""
    total = 0
    for doc in data.documents:
        width = max(len(chunk) for chunk in doc)
        last = width if schedule is None else schedule.keep_counts(width)[-1]
        total += sum(min(last, len(chunk)) for chunk in doc)
    return total


# --- one run ----------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace):
        # eager attention: the significance scorer reads the attention probabilities, which SDPA never forms; every
        # method runs with it, so that none differs from another by the attention kernel
        self.checkpoint = Seq2SeqCheckpoint.from_pretrained(args.checkpoint, attn_implementation="eager")
        info = self.checkpoint.info
        self.training = info.training
        self.budget = float(args.budget if args.budget is not None else self.training["budget"])
        self.schedule, _ = deployment_schedule(self.checkpoint, self.budget, Path(args.checkpoint))
        self.settings = info.chunk_settings
        self.model = self.checkpoint.model.eval()
        self.deployed_decoder = self.model.decoder
        self.reference = self.checkpoint.reference_decoder
        special = s2s.SpecialTokens(**info.special_tokens)
        seed = int(self.training["seed"])
        splits = load_summary_splits(self.training["data"], seed=seed,
                                     text_column=self.training.get("text_column", "text"),
                                     summary_column=self.training.get("summary_column", "summary"))
        tokenizer = self.checkpoint.tokenizer

        def data(pairs, limit):
            return s2s.SummaryData(s2s.random_subset(pairs, limit, seed), tokenizer, self.settings, special)

        self.train_set = data(splits.train, args.max_train or self.training.get("max_train_samples"))
        self.test_set = data(splits.test, args.max_eval or self.training.get("max_eval_samples"))
        self.generation = {"batch_size": int(self.training["batch_size"]),
                           "max_new_tokens": self.settings.max_target_tokens - 1}

    @property
    def layers(self) -> int:
        return len(self.schedule.numerators)

    def rouge(self, decoder, data: s2s.SummaryData, mode: str, schedule=None, scorer=None, label: str = "") -> dict:
        self.model.decoder = decoder
        predictions = s2s.generate_summaries(self.model, data, self.checkpoint.tokenizer, mode=mode,
                                             schedule=schedule, scorer=scorer, desc=f"ROUGE {label}",
                                             **self.generation)
        references = [p.summary for p in data.pairs]
        low, high = rouge_bootstrap_interval(predictions, references, "rougeL")
        per_example = [round(float(v), 3) for v in rouge_per_example(predictions, references)["rougeL"]]
        return rouge_scores(predictions, references) | {"rougeL_interval": [low, high], "rougeL_each": per_example,
                                                        "first_predictions": predictions[:3]}

    def refit(self, data: s2s.SummaryData, mode: str, schedule=None, scorer=None, label: str = "", start=None):
        """A copy of ``start`` (default: the reference decoder) trained ``refit_epochs`` more on a method's memory,
        with the recipe's learning rate, batch size and seed."""
        self.model.decoder = copy.deepcopy(start or self.reference).requires_grad_(True)
        # every re-fit draws the same dropout masks, so that a row does not depend on the rows run before it
        torch.manual_seed(int(self.training["seed"]) + 1)
        s2s.train_decoder(self.model, data, epochs=float(self.training["refit_epochs"]),
                          lr=float(self.training["lr_finetune"]), batch_size=int(self.training["batch_size"]),
                          seed=int(self.training["seed"]) + 1, mode=mode, schedule=schedule, scorer=scorer,
                          desc=f"re-fit {label}")
        return self.model.decoder.requires_grad_(False)

    def costs(self, data: s2s.SummaryData, schedule: KeepSchedule | None) -> dict:
        full_data = self.test_set
        return {"encoder_cost": encoder_cost(data, schedule, self.layers) / encoder_cost(full_data, None, self.layers),
                "memory_share": memory_slots(data, schedule) / memory_slots(full_data, None)}


def run_method(bench: Bench, method: str) -> list[dict]:
    """The rows of one method: its ROUGE on the test split and its costs. ``protocol`` "as trained": the
    checkpoint's decoders as they are; "re-fitted": every decoder after the same number of training steps
    (``decoder_epochs + 2 * refit_epochs``), the last ``refit_epochs`` on the method's own memory."""
    started = time.perf_counter()
    test, schedule = bench.test_set, bench.schedule
    if method == "full":
        decoder = bench.refit(bench.train_set, "full", label="full")
        rows = [{"method": "full", "protocol": "as trained"} | bench.rouge(bench.reference, test, "full", label="full"),
                {"method": "full", "protocol": "re-fitted"} | bench.rouge(decoder, test, "full", label="full re-fit")]
        rows = [row | bench.costs(test, None) for row in rows]
    elif method == "learned":
        decoder = bench.refit(bench.train_set, "hard", schedule, label="learned", start=bench.deployed_decoder)
        rows = [{"method": "learned", "protocol": "as trained"}
                | bench.rouge(bench.deployed_decoder, test, "hard", schedule, label="learned"),
                {"method": "learned", "protocol": "re-fitted"}
                | bench.rouge(decoder, test, "hard", schedule, label="learned re-fit")]
        rows = [row | bench.costs(test, schedule) for row in rows]
    elif method in ("random", "significance"):
        scorer = make_scorer(method, bench.model.retention, seed=int(bench.training["seed"]))
        decoder = bench.refit(bench.train_set, "hard", schedule, scorer, label=method)
        rows = [{"method": method, "protocol": "re-fitted"}
                | bench.rouge(decoder, test, "hard", schedule, scorer, label=method) | bench.costs(test, schedule)]
    else:
        rows = _cut_rows(bench, method)
    for row in rows:
        row["seconds"] = round(time.perf_counter() - started, 1)
    return rows


def _cut_rows(bench: Bench, method: str) -> list[dict]:
    chunk_length = bench.settings.chunk_length
    where = "head+tail" if method == "head+tail" else "head"
    fraction = bench.budget
    if method == "head-equal-cache":
        fraction = memory_slots(bench.test_set, bench.schedule) / memory_slots(bench.test_set, None)
    train, test = (cut_data(d, fraction, where, chunk_length) for d in (bench.train_set, bench.test_set))
    label = f"{method} {fraction:.3f}"
    rows = []
    if method == "head":  # what a user gets by cutting the input of the full model, without training
        rows.append({"method": method, "protocol": "as trained", "fraction": fraction}
                    | bench.rouge(bench.reference, test, "full", label=f"{label} as is") | bench.costs(test, None))
    decoder = bench.refit(train, "full", label=label)
    rows.append({"method": method, "protocol": "re-fitted", "fraction": fraction}
                | bench.rouge(decoder, test, "full", label=label) | bench.costs(test, None))
    return rows


# --- report -----------------------------------------------------------------------------------------------------


def paired_difference(row: dict, other: dict, samples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean ROUGE-L of ``row`` minus ``other`` on the same documents, with its 95% paired-bootstrap interval."""
    difference = np.asarray(row["rougeL_each"]) - np.asarray(other["rougeL_each"])
    draws = np.random.default_rng(seed).integers(0, len(difference), size=(samples, len(difference)))
    low, high = np.percentile(difference[draws].mean(axis=1), [2.5, 97.5])
    return float(difference.mean()), float(low), float(high)


def render(payload: dict) -> str:
    rows = payload["rows"]
    anchor = {(r["method"], r["protocol"]): r for r in rows if r["method"] in ("full", "learned")}
    lines = [f"# Summarization at budget {payload['budget']:g} against what a user would do instead "
             f"({payload['data']})", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}. Checkpoint trained at {payload['training_budget']:g}; "
             f"deployed schedule {payload['schedule']}. {payload['test_documents']} test documents, greedy, "
             f"at most {payload['max_new_tokens']} new tokens; baseline decoders re-fitted on "
             f"{payload['train_documents']} training documents.", "",
             "Protocols: **as trained** is the checkpoint's decoders as they are (and, for the head cut, the full "
             "model's decoder reading the cut document, what a user gets without training). **re-fitted** gives "
             f"every decoder the same number of steps: each is trained {payload['refit_epochs']:g} more epoch(s) "
             "on its own memory (full and learned from their checkpoint decoders, the baselines from the "
             "reference decoder). Rows are compared within a protocol: '% of full' against that protocol's full "
             "row, and the last column is the learned row of that protocol minus this row, with a paired 95% "
             "bootstrap interval over the test documents.", "",
             "| protocol | method | fraction of tokens read | encoder token-layers (share of full) | cross-attention "
             "memory (share of full) | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-L 95% CI | ROUGE-L % of full | "
             "learned minus this, ROUGE-L (paired 95% CI) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda row: row["protocol"]):
        fraction = f"{r['fraction']:.3f}" if "fraction" in r else "-"
        low, high = r["rougeL_interval"]
        full, learned = anchor.get(("full", r["protocol"])), anchor.get(("learned", r["protocol"]))
        versus = "-"
        if learned is not None and r is not learned:
            mean, d_low, d_high = paired_difference(learned, r)
            versus = f"{mean:+.2f} [{d_low:+.2f}, {d_high:+.2f}]"
        share = _share(r["rougeL"], full["rougeL"]) if full else "-"
        lines.append(f"| {r['protocol']} | {r['method']} | {fraction} | {r['encoder_cost']:.3f} | "
                     f"{r['memory_share']:.3f} | {r['rouge1']:.2f} | {r['rouge2']:.2f} | {r['rougeL']:.2f} | "
                     f"[{low:.2f}, {high:.2f}] | {share} | {versus} |")
    return "\n".join(lines) + "\n"


def _share(value: float, full: float) -> str:
    return f"{100 * value / full:.1f}%" if full > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    rows = []
    for method in args.methods:
        rows += run_method(bench, method)
        print(rows[-1], flush=True)
    payload = {"command": COMMAND + " " + shlex.join(a for a in sys.argv[1:]), "machine": machine(),
               "data": bench.training["data"], "budget": bench.budget,
               "training_budget": float(bench.training["budget"]),
               "schedule": [round(f, 4) for f in bench.schedule.fractions], "test_documents": len(bench.test_set),
               "max_new_tokens": bench.generation["max_new_tokens"],
               "refit_epochs": float(bench.training["refit_epochs"]), "train_documents": len(bench.train_set),
               "rows": rows}
    if any(r["method"] == "full" for r in rows):  # the table is relative to full
        write_results(args.name, payload, render(payload))
    else:
        print("no 'full' row: nothing written (the table is relative to full)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
