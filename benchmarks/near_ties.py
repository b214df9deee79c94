"""How often ONNX Runtime and PyTorch keep different tokens, and what that does to the logits.

    python benchmarks/near_ties.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5] [--draws 1000] [--texts 200]

Both backends compute the gate scores in fp32, but with different kernels, so scores agree to about 1e-6.
When two tokens' scores at the K_l boundary are closer than that, the two backends can keep different ones,
and every later layer then sees different tokens. This measures the rate on random (batch, length, padding)
draws and on real held-out text padded as the runtime pads it, per budget, from the exported dynamic graph
with its kept positions: rows whose kept sets differ at any layer, the logit difference on the rows that
agree and on those that do not, and the closest boundary gap behind each disagreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_results

from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.ort_sessions import make_session
from adaret.core.padding import bucket_widths, padded_batches
from adaret.export import ExportConfig, TopMInference, run_export
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--budgets", default="0.3,0.4,0.5")
    parser.add_argument("--draws", type=int, default=1000, help="random (batch, length, padding) draws per budget")
    parser.add_argument("--texts", type=int, default=200, help="held-out texts of the checkpoint's data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="near_ties")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = RetentionCheckpoint.from_pretrained(args.checkpoint, attn_implementation="eager")
    texts = real_feeds(checkpoint, args.texts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaret-near-ties-") as work:
        for budget in (float(b) for b in args.budgets.split(",")):
            rows.append(measure(checkpoint, budget, Path(work), args.draws, texts, args.seed))
            print(json.dumps(rows[-1]), flush=True)
    payload = {"command": "python benchmarks/near_ties.py " + " ".join(sys.argv[1:]), "machine": machine(),
               "checkpoint": Path(args.checkpoint).name, "rows": rows}
    write_results(args.out, payload, render(payload))


def real_feeds(checkpoint: RetentionCheckpoint, count: int) -> list[dict[str, np.ndarray]]:
    """Held-out texts, padded to the runtime's bucket widths (K_l follows the padded length)."""
    if count == 0:
        return []
    training = checkpoint.info.training
    split = load_splits(training.get("data", "bbc-news"), seed=int(training.get("seed", 0))).eval
    texts = split.texts[:count]
    max_length = checkpoint.model.encoder.max_positions
    ids = checkpoint.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return [feeds for _, feeds in padded_batches(ids, bucket_widths(max_length), 8,
                                                 checkpoint.tokenizer.pad_token_id or 0)]


def measure(checkpoint: RetentionCheckpoint, budget: float, work: Path, draws: int,
            texts: list[dict[str, np.ndarray]], seed: int) -> dict:
    result = run_export(ExportConfig(budget=budget, checkpoint=str(checkpoint.path), out=str(work / f"b{budget:g}"),
                                     with_positions=True, parity_batches=(1,), parity_lengths=(37,)))
    graph = result.graphs[0].path
    session = make_session(graph, threads=1)
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    reference = TopMInference(checkpoint.model, result.schedule, with_positions=True).eval()
    vocab = model_vocabulary(checkpoint.model, checkpoint.tokenizer)
    rng = np.random.default_rng(seed)
    max_length = checkpoint.model.encoder.max_positions
    random_feeds = (dummy_inputs(int(rng.integers(1, 9)), int(rng.integers(8, max_length + 1)), vocab, rng,
                                 names=inputs) for _ in range(draws))
    started = time.perf_counter()
    out = {"budget": budget, "random": compare(session, names, reference, random_feeds, inputs),
           "real_text": compare(session, names, reference, iter(texts), inputs)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


@torch.no_grad()
def compare(session, names: list[str], reference: TopMInference, feeds_iter, inputs: list[str]) -> dict:
    rows = differing = 0
    agree_diff = disagree_diff = 0.0
    for feeds in feeds_iter:
        feeds = {name: feeds[name] for name in inputs}
        got = dict(zip(names, session.run(names, feeds), strict=True))
        want = dict(zip(reference.output_names, (t.numpy() for t in reference(*(torch.from_numpy(v) for v in
                                                                                  feeds.values()))), strict=True))
        lengths = feeds["attention_mask"].sum(1)
        diff = np.abs(got["logits"] - want["logits"]).max(axis=1)
        for row in range(len(lengths)):
            same = all(set(got[n][row].tolist()) == set(want[n][row].tolist()) for n in names[1:])
            rows += 1
            if same:
                agree_diff = max(agree_diff, float(diff[row]))
            else:
                differing += 1
                disagree_diff = max(disagree_diff, float(diff[row]))
    return {"rows": rows, "rows_with_different_kept_sets": differing,
            "max_logit_diff_where_kept_sets_agree": agree_diff,
            "max_logit_diff_where_they_differ": disagree_diff if differing else None}


def render(payload: dict) -> str:
    lines = ["# Kept-set agreement between ONNX Runtime and PyTorch", "", f"`{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}. Checkpoint: {payload['checkpoint']}; dynamic graph with "
             "kept positions, ONNX Runtime CPU (1 thread) against the PyTorch hard top-M reference.", "",
             "| budget | inputs | rows | rows with different kept sets | max logit diff (agreeing rows) | "
             "max logit diff (differing rows) |", "| --- | --- | --- | --- | --- | --- |"]
    for row in payload["rows"]:
        for kind, label in (("random", "random draws"), ("real_text", "held-out text")):
            r = row[kind]
            differ = r["max_logit_diff_where_they_differ"]
            lines.append(f"| {row['budget']:g} | {label} | {r['rows']} | {r['rows_with_different_kept_sets']} | "
                         f"{r['max_logit_diff_where_kept_sets_agree']:.1e} | "
                         f"{'-' if differ is None else f'{differ:.2e}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
