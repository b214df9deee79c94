"""ONNX Runtime CPU throughput of top-M graphs, raw and after each graph pass, against budget 1.0 and
PyTorch eager, all timed side by side in one process.

    python benchmarks/ort_speed.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5,1.0] [--batches 1,8]

For every budget the checkpoint is exported once (dynamic form, `adaret export --no-optimize`), then
optimised cumulatively, one pass group at a time, up to the whole `ort-cpu` pipeline (the ablation).
Budget 1.0 through the same steps is the full-model baseline for each variant, so a ratio compares like
with like. PyTorch eager full is the HF encoder + the same head in eval mode, on torch's default threads.

Sessions use all of ONNX Runtime's graph optimisations and intra-op threads = cores. `--spinning off`
(the default here) stops idle intra-op workers from busy-waiting: on a 2-vCPU machine a spinning worker
competes with the thread that runs the graph's sequential small ops. Compare results/ort_speed.md with
results/ort_speed_spinning_on.md (`--spinning on --budgets 0.4`). Both graphs of a ratio always share
the setting. Inputs are seq-512 random token ids without padding (K depends only on the length, so
content does not matter). Timing is interleaved (benchmarks/common.py), with an untimed call first in each
turn so that no runner pays for the previous one's spinning threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, interleaved_medians, machine, scratch_directory, write_results

from adaret.export import ExportConfig, run_export
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.graph_passes.pipeline import TARGET_PASSES, optimize
from adaret.training.checkpoint import RetentionCheckpoint

_STEPS = [
    ("+fold/cleanup", ["fold-constants", "cleanup"]),
    ("+order-restore", ["order-restore-elimination"]),
    ("+ort-fusions", ["ort-fusions", "last-layer-pruning"]),
    ("+packed-attention", ["packed-attention"]),
    ("+row-gather", ["row-gather"]),
    ("+row-scatter", ["row-scatter"]),
    ("+split-skip-layernorm (all)", ["split-skip-layernorm", "cleanup"]),
]
VARIANTS = {"raw": []}
for _label, _passes in _STEPS:
    VARIANTS[_label] = [*list(VARIANTS.values())[-1], *_passes]
assert VARIANTS["+split-skip-layernorm (all)"] == list(TARGET_PASSES["ort-cpu"]), "last variant != pipeline"


def build_graphs(checkpoint: str, budgets: list[float], work: Path) -> tuple[dict, dict, dict]:
    paths, export_seconds, parity = {}, {}, {}
    for budget in budgets:
        started = time.perf_counter()
        result = run_export(ExportConfig(budget=budget, checkpoint=checkpoint, out=str(work / f"b{budget}")))
        export_seconds[budget] = round(time.perf_counter() - started, 1)
        raw = result.graphs[0].path
        parity[budget] = result.graphs[0].parity.as_dict()
        for variant, passes in VARIANTS.items():
            path = raw if not passes else raw.with_name(f"model.{len(passes)}.onnx")
            if passes:
                optimize(raw, path, passes=passes)
            paths[(variant, budget)] = path
    return paths, export_seconds, parity


def torch_eager_runner(checkpoint: str, feeds: dict):
    model = RetentionCheckpoint.from_pretrained(checkpoint).model.eval()
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def run():
        with torch.inference_mode():
            return model(**inputs, mode="full").logits

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--budgets", default="0.3,0.4,0.5,1.0")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--spinning", choices=("off", "on"), default="off",
                        help="ONNX Runtime intra-op workers busy-wait between ops (on) or sleep (off)")
    parser.add_argument("--name", default="ort_speed")
    args = parser.parse_args()
    budgets = sorted({float(b) for b in args.budgets.split(",")} | {1.0})
    with scratch_directory("adaret-ort-speed-") as work:
        paths, export_seconds, parity = build_graphs(args.checkpoint, budgets, work)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if args.spinning == "on" else "0")
        sessions = {key: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                    for key, p in paths.items()}
        rows = time_batches(sessions, args)
    payload = {"command": "python " + " ".join(sys.argv), "seq_len": args.seq_len, "machine": machine(),
               "spinning": args.spinning, "rounds": args.rounds,
               "export_plus_parity_seconds": export_seconds, "parity": parity, "rows": rows}
    write_results(args.name, payload, render(payload))


def time_batches(sessions: dict, args: argparse.Namespace) -> list[dict]:
    """Median latency of every graph and of PyTorch eager at each batch size, interleaved within a batch size."""
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = np.random.default_rng(0).integers(1000, 30000, size=(batch, args.seq_len), dtype=np.int64)
        ids[:, 0] = 101
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        runners = {key: (lambda s=s, f=feeds: s.run(None, f)) for key, s in sessions.items()}
        runners[("pytorch-eager", 1.0)] = torch_eager_runner(args.checkpoint, feeds)
        medians = interleaved_medians(runners, rounds=args.rounds, per_round=5 if batch == 1 else 1)
        eager = medians[("pytorch-eager", 1.0)]
        for (variant, budget), seconds in medians.items():
            full = medians.get((variant, 1.0), seconds)
            rows.append({"batch": batch, "variant": variant, "budget": budget, "median_ms": round(1000 * seconds, 1),
                         "sequences_per_s": round(batch / seconds, 2), "speedup_vs_same_variant_1.0":
                         round(full / seconds, 2), "speedup_vs_pytorch_eager_full": round(eager / seconds, 2)})
    return rows


def render(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"# ONNX Runtime CPU throughput at seq {payload['seq_len']}: budgets x graph passes", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(m)}; onnxruntime {m['onnxruntime']}, torch {m['torch']}.", "",
             f"ONNX Runtime intra-op spinning: {payload['spinning']}. Speedups are ratios of medians measured in "
             f"the same run ({payload['rounds']} interleaved rounds; batch 1 takes 5 calls a round, batch 8 one).",
             "",
             "| batch | graph | budget | median ms | seq/s | vs same graph at 1.0 | vs PyTorch eager full |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['batch']} | {r['variant']} | {r['budget']} | {r['median_ms']} | {r['sequences_per_s']} | "
                     f"{r['speedup_vs_same_variant_1.0']}x | {r['speedup_vs_pytorch_eager_full']}x |")
    lines += ["", "Export + parity seconds per budget (no passes): "
              + ", ".join(f"{b}: {s}s" for b, s in payload["export_plus_parity_seconds"].items()), "",
              "Parity of each export, ONNX Runtime vs the PyTorch hard top-M reference (batches 1 and 8, lengths "
              "8, 37, 128, 255, 512, random right-padding):", ""]
    for budget, report in payload["parity"].items():
        lines.append(f"- budget {budget}: max |logit diff| {report['max_abs_diff']:.2e} (tolerance "
                     f"{report['tolerance']:.0e}), kept positions identical: {report['positions_identical']}, "
                     f"{len(report['cases'])} cases")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
