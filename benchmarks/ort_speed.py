"""ONNX Runtime CPU throughput of top-M graphs, raw and after each graph pass, against budget 1.0 and
PyTorch eager, all timed side by side in one process.

    python benchmarks/ort_speed.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5,1.0] [--batches 1,8]

For every budget the checkpoint is exported once (dynamic form, `adaret export --no-optimize`), then
optimised cumulatively: raw -> +fold/cleanup -> +order-restore elimination -> +ORT fusions (the
`ort-cpu` pipeline). Budget 1.0 through the same steps is the full-model baseline for each variant, so a
ratio compares like with like. PyTorch eager full is the HF encoder + the same head in eval mode.
Sessions use ONNX Runtime's defaults (all graph optimisations, intra-op threads = cores). Inputs are
seq-512 random token ids without padding (K depends only on the length, so content does not matter).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, write_results

from adaret.export import ExportConfig, run_export
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.graph_passes.pipeline import optimize
from adaret.training.checkpoint import RetentionCheckpoint

VARIANTS = {
    "raw": [],
    "+fold/cleanup": ["fold-constants", "cleanup"],
    "+order-restore": ["fold-constants", "cleanup", "order-restore-elimination"],
    "+ort-fusions (all)": ["fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "cleanup"],
}


def build_graphs(checkpoint: str, budgets: list[float], work: Path) -> tuple[dict, dict, dict]:
    paths, export_seconds, parity = {}, {}, {}
    for budget in budgets:
        started = time.perf_counter()
        result = run_export(ExportConfig(budget=budget, checkpoint=checkpoint, out=str(work / f"b{budget}"),
                                         optimize=False))
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="ort_speed")
    args = parser.parse_args()
    budgets = sorted({float(b) for b in args.budgets.split(",")} | {1.0})
    paths, export_seconds, parity = build_graphs(args.checkpoint, budgets,
                                                 Path(tempfile.mkdtemp(prefix="adaret-bench-")))
    sessions = {key: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for key, p in paths.items()}
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = np.random.default_rng(0).integers(1000, 30000, size=(batch, args.seq_len), dtype=np.int64)
        ids[:, 0] = 101
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        runners = {key: (lambda s=s, f=feeds: s.run(None, f)) for key, s in sessions.items()}
        runners[("pytorch-eager", 1.0)] = torch_eager_runner(args.checkpoint, feeds)
        medians = interleaved_medians(runners, rounds=args.rounds, per_round=3 if batch == 1 else 1)
        eager = medians[("pytorch-eager", 1.0)]
        for (variant, budget), seconds in medians.items():
            full = medians.get((variant, 1.0), seconds)
            rows.append({"batch": batch, "variant": variant, "budget": budget, "median_ms": round(1000 * seconds, 1),
                         "sequences_per_s": round(batch / seconds, 2), "speedup_vs_same_variant_1.0":
                         round(full / seconds, 2), "speedup_vs_pytorch_eager_full": round(eager / seconds, 2)})
    payload = {"command": "python " + " ".join(sys.argv), "seq_len": args.seq_len, "machine": machine(),
               "export_plus_parity_seconds": export_seconds, "parity": parity, "rows": rows}
    json_path, md_path = write_results(args.name, payload, render(payload))
    print(render(payload))
    print(f"wrote {json_path} and {md_path}")


def render(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"# ONNX Runtime CPU throughput at seq {payload['seq_len']}: budgets x graph passes", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}, torch {m['torch']}.", "",
             "Speedups are ratios of medians measured in the same run (interleaved rounds).", "",
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
