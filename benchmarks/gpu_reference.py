"""PyTorch CUDA reference: full against retained (hard top-M) at several budgets, batch 1/8/32, seq 512.

    python benchmarks/gpu_reference.py [--checkpoint DIR] [--budgets 1.0,0.5,0.4,0.3] [--batches 1,8,32]
                                       [--seq-len 512] [--warmup 10] [--iters 50]
    python benchmarks/gpu_reference.py --device cpu --quick --out smoke/   # smoke test of the code path

Latency is timed with CUDA events around each forward (median over --iters after --warmup runs); memory is
torch.cuda.max_memory_allocated during one forward minus what was allocated before it (weights and inputs),
so it is the activation memory the forward needs. Inputs are synthetic full-length rows (no padding). On
--device cpu the timing uses perf_counter and memory is not measured (see `adaret bench` for CPU memory).
Writes <out>/<name>.json and .md, naming the card.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from adaret.core.errors import AdaretError
from adaret.core.machine import machine, versions
from adaret.validation.reference import load_checkpoint, resolve_checkpoint, schedule_at

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled BBC News MiniLM-L6 adapter")
    parser.add_argument("--budgets", default="1.0,0.5,0.4,0.3")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: batches 1,2, seq 64 (or less), 1 warm-up and 3 timed runs")
    parser.add_argument("--out", default=str(RESULTS), help="results directory (default: benchmarks/results)")
    parser.add_argument("--name", default=None, help="file stem (default: gpu_reference, or gpu_reference_smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.seq_len, args.warmup, args.iters = "1,2", min(args.seq_len, 64), 1, 3
    args.name = args.name or ("gpu_reference" if args.device == "cuda" and not args.quick else "gpu_reference_smoke")
    return args


def synthetic(batch: int, seq_len: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq_len), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    return tuple(t.to(device) for t in (ids, torch.ones_like(ids), torch.zeros_like(ids)))


def time_ms(forward, device: torch.device, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        forward()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            forward()
            samples.append(1000 * (time.perf_counter() - began))
    return samples


def peak_activation_mib(forward) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    forward()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)


def measure(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, attn_implementation="sdpa")
    model = checkpoint.model.to(device).eval()
    seq_len = min(args.seq_len, int(model.encoder.config.max_position_embeddings))
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = synthetic(batch, seq_len, device)
        for budget in (float(b) for b in args.budgets.split(",")):
            schedule = schedule_at(checkpoint, budget)
            mode = "full" if schedule is None else "hard"

            @torch.inference_mode()
            def forward(schedule=schedule, mode=mode, inputs=inputs):
                return model(*inputs, mode=mode, schedule=schedule).logits

            samples = time_ms(forward, device, args.warmup, args.iters)
            row = {"batch": batch, "seq_len": seq_len, "budget": budget, "mode": mode,
                   "median_ms": round(statistics.median(samples), 3), "iters": len(samples),
                   "activation_peak_mib": peak_activation_mib(forward) if device.type == "cuda" else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:  # ratios against budget 1.0 at the same batch
        full = next((r for r in rows if r["batch"] == row["batch"] and r["budget"] == 1.0), None)
        if full and row is not full:
            row["speedup_vs_full"] = round(full["median_ms"] / row["median_ms"], 3)
            if row["activation_peak_mib"] and full["activation_peak_mib"]:
                row["memory_change"] = round(row["activation_peak_mib"] / full["activation_peak_mib"] - 1, 3)
    return rows


def write(args: argparse.Namespace, rows: list[dict]) -> tuple[Path, Path]:
    card = torch.cuda.get_device_name() if args.device == "cuda" else "none (CPU smoke run)"
    payload = {"command": "python benchmarks/gpu_reference.py " + shlex.join(sys.argv[1:]), "device": args.device,
               "card": card, "checkpoint": str(resolve_checkpoint(args.checkpoint)), "warmup": args.warmup,
               "quick": args.quick, "rows": rows, "machine": machine(), "versions": versions(),
               "cuda": torch.version.cuda}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{args.name}.json", out / f"{args.name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# PyTorch reference on {card}", "", f"Command: `{payload['command']}`", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}; median of {args.iters} runs after "
             f"{args.warmup} warm-up; activation peak = max_memory_allocated during one forward minus before it.", "",
             "| batch | budget | median ms | speed-up vs 1.0 | activation peak MiB | memory change |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['budget']} | {r['median_ms']} | {r.get('speedup_vs_full', '-')} | "
              f"{r['activation_peak_mib'] if r['activation_peak_mib'] is not None else '-'} | "
              f"{r.get('memory_change', '-')} |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_reference: no CUDA device (torch.cuda.is_available() is False); nothing measured. "
              "Use --device cpu --quick to exercise the code path.", file=sys.stderr)
        return 2
    try:
        json_path, md_path = write(args, measure(args))
    except AdaretError as exc:
        print(f"gpu_reference: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
