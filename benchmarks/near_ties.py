"""How often ONNX Runtime and PyTorch keep different tokens, and what that does to the logits.

    python benchmarks/near_ties.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5] [--draws 1000] [--texts 200]

Both backends compute the gate scores in fp32, but with different kernels, so scores agree to about 1e-6.
When two tokens' scores at the K_l boundary are closer than that, the two backends can keep different ones,
and every later layer then sees different tokens. This measures the rate on random (batch, length, padding)
draws and on real held-out text padded as the runtime pads it, per budget, from the exported dynamic graph
with its kept positions: rows whose kept sets differ at any layer, the logit difference on the rows that
agree and on those that do not, and for each disagreement its gap (the largest distance of a swapped token's
PyTorch score from PyTorch's K_l boundary, at the first layer that differs) and whether that is a near-tie under
``adaret.core.comparison.NEAR_TIE_MARGIN``. A disagreement that is not a near-tie is a bug.

It also measures the backend score noise that the margin is chosen from: the largest |ONNX Runtime score -
PyTorch score| at the inputs of the score TopKs, over each layer whose candidates are the same on both sides
(read from a copy of the graph that outputs those inputs, ``with_ranking_scores``; that copy's logits and kept
positions are checked against the deployed graph's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_results

from adaret.core.comparison import NEAR_TIE_MARGIN, kept_set_disagreements, scores_by_position, with_ranking_scores
from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.ort_sessions import make_session
from adaret.core.padding import bucket_widths, padded_batches
from adaret.export import ExportConfig, TopMInference, run_export
from adaret.export.inference import ranking_scores_name
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
               "checkpoint": Path(args.checkpoint).name, "near_tie_margin": NEAR_TIE_MARGIN, "rows": rows}
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
    reference = TopMInference(checkpoint.model, result.schedule, with_positions=True, with_scores=True).eval()
    backend = Backend(graph, reference)
    vocab = model_vocabulary(checkpoint.model, checkpoint.tokenizer)
    rng = np.random.default_rng(seed)
    max_length = checkpoint.model.encoder.max_positions
    random_feeds = (dummy_inputs(int(rng.integers(1, 9)), int(rng.integers(8, max_length + 1)), vocab, rng,
                                 names=backend.inputs) for _ in range(draws))
    started = time.perf_counter()
    out = {"budget": budget, "random": compare(backend, reference, random_feeds),
           "real_text": compare(backend, reference, iter(texts))}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


class Backend:
    """The deployed graph, and a copy that also outputs the scores each TopK ranks."""

    def __init__(self, graph: Path, reference: TopMInference):
        self.session = make_session(graph, threads=1)
        self.names = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.kept = [n for n in self.names if n not in reference.io_spec.outputs]
        scored, self.score_names = with_ranking_scores(onnx.load(graph), self.kept)
        self.scored = make_session(scored, threads=1)

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool]:
        got = dict(zip(self.names, self.session.run(self.names, feeds), strict=True))
        everything = [*self.names, *self.score_names]
        scored = dict(zip(everything, self.scored.run(everything, feeds), strict=True))
        same = all(np.array_equal(got[n], scored[n]) for n in self.names)
        return got, scored, same


@torch.no_grad()
def compare(backend: Backend, reference: TopMInference, feeds_iter) -> dict:
    rows = differing = scored_graph_differs = 0
    agree_diff = disagree_diff = noise = score_range = 0.0
    disagreements = []
    kept = backend.kept
    layers = reference.pruned_layers
    for draw, feeds in enumerate(feeds_iter):
        feeds = {name: feeds[name] for name in backend.inputs}
        got, scored, same = backend.run(feeds)
        scored_graph_differs += not same
        want = dict(zip(reference.output_names, (t.numpy() for t in reference(*(torch.from_numpy(v) for v in
                                                                                  feeds.values()))), strict=True))
        seq_len = feeds["attention_mask"].shape[1]
        torch_scores = [want[ranking_scores_name(layer)] for layer in layers]
        found = kept_set_disagreements([got[n] for n in kept], [want[n] for n in kept],
                                       scores_by_position(torch_scores, [want[n] for n in kept], seq_len))
        diff = np.abs(got["logits"] - want["logits"]).max(axis=1)
        for row in range(len(diff)):
            rows += 1
            # noise: only at layers whose candidates are the same positions in the same order on both sides
            for index, name in enumerate(backend.score_names):
                if index and not all(np.array_equal(scored[n][row], want[n][row]) for n in kept[:index]):
                    break
                ours, theirs = scored[name][row], torch_scores[index][row]
                real = np.abs(theirs) < 1e3  # forced tokens and padding rank at +-1e4: exact on both sides
                noise = max(noise, float(np.abs(ours - theirs).max()))
                score_range = max(score_range, float(np.abs(theirs[real]).max(initial=0.0)))
            if row not in found:
                agree_diff = max(agree_diff, float(diff[row]))
                continue
            differing += 1
            disagree_diff = max(disagree_diff, float(diff[row]))
            d = found[row]
            disagreements.append({"draw": draw, "row": row, "batch": len(diff), "seq_len": seq_len,
                                  "kept_output": kept[d.layer], "swapped": list(d.swapped), "gap": d.gap,
                                  "near_tie": d.near_tie, "logit_diff": float(diff[row])})
    return {"rows": rows, "rows_with_different_kept_sets": differing,
            "near_ties": sum(d["near_tie"] for d in disagreements),
            "non_tie_disagreements": sum(not d["near_tie"] for d in disagreements),
            "max_logit_diff_where_kept_sets_agree": agree_diff,
            "max_logit_diff_where_they_differ": disagree_diff if differing else None,
            "max_backend_score_noise": noise, "max_abs_gate_score": score_range,
            "batches_where_scored_graph_differs": scored_graph_differs, "disagreements": disagreements}


def render(payload: dict) -> str:
    lines = ["# Kept-set agreement between ONNX Runtime and PyTorch", "", f"`{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}. Checkpoint: {payload['checkpoint']}; dynamic graph with "
             "kept positions, ONNX Runtime CPU (1 thread) against the PyTorch hard top-M reference. A near-tie: "
             f"every swapped token within {payload.get('near_tie_margin', NEAR_TIE_MARGIN):.0e} of the boundary "
             "score (docs/reliability.md).", "",
             "| budget | inputs | rows | rows with different kept sets | near-ties | other (bugs) | "
             "max logit diff (agreeing rows) | max logit diff (differing rows) | max score noise | max abs score |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    found = []
    for row in payload["rows"]:
        for kind, label in (("random", "random draws"), ("real_text", "held-out text")):
            r = row[kind]
            differ = r["max_logit_diff_where_they_differ"]
            noise = r.get("max_backend_score_noise")
            lines.append(f"| {row['budget']:g} | {label} | {r['rows']} | {r['rows_with_different_kept_sets']} | "
                         f"{r.get('near_ties', '-')} | {r.get('non_tie_disagreements', '-')} | "
                         f"{r['max_logit_diff_where_kept_sets_agree']:.1e} | "
                         f"{'-' if differ is None else f'{differ:.2e}'} | "
                         f"{'-' if not noise else f'{noise:.1e}'} | {r.get('max_abs_gate_score', 0):.1f} |")
            found += [(row["budget"], label, d) for d in r.get("disagreements", [])]
    if found:
        lines += ["", "Disagreements (draw and row within that budget's inputs; gap at the first differing layer):", "",
                  "| budget | inputs | draw | row | batch x length | layer | swapped positions | gap | near-tie | "
                  "logit diff |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {b:g} | {label} | {d['draw']} | {d['row']} | {d['batch']} x {d['seq_len']} | "
                  f"{d['kept_output']} | {d['swapped']} | {d['gap']:.1e} | {'yes' if d['near_tie'] else 'NO'} | "
                  f"{d['logit_diff']:.2e} |" for b, label, d in found]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
