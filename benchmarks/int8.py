"""INT8 QDQ vs fp32 retained model on ONNX Runtime CPU: accuracy, token-selection agreement, throughput, size.

    python benchmarks/int8.py [--checkpoint DIR] [--budget 0.4] [--samples 512] [--max-examples N] [--method percentile]

The checkpoint is exported once at the budget with kept positions (dynamic form): `model.onnx`, the ort-cpu
graph-pass output `model.opt.onnx` (the fastest fp32 graph, the speed reference) and the ort-cpu-int8 output
`model.int8src.onnx` (the same passes with Q/K/V unpacked). `adaret calibrate` with its defaults (SmoothQuant,
agreement search) quantises `model.onnx` into `int8` (the TensorRT-compatible file) and `model.int8src.onnx`
into `int8 opt` (ONNX Runtime only); `int8 opt, no search` is the latter with every planned MatMul in INT8.
Accuracy and agreement: BBC News held-out split (seed 0), truncated to --seq-len, each INT8 graph against the
fp32 graph it was made from. Throughput: batch --batch of held-out texts padded to --seq-len, every session
timed in interleaved rounds in one process (ORT defaults: all optimisations, intra-op threads = cores).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, interleaved_medians, machine, scratch_directory, write_results

from adaret.calibration.checkpoint import QuantizeConfig, quantize
from adaret.calibration.int8.quantize import DEFAULT_METHODS
from adaret.calibration.int8.reader import encode_batches
from adaret.calibration.int8.verify import compare, session
from adaret.export import ExportConfig, run_export
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.graph_passes.pipeline import optimize
from adaret.training.data import load_splits

TARGETS = {"accuracy_ratio": 0.99, "token_agreement": 0.99, "speedup": 1.5}


QUANTISED = {  # INT8 graph: (fp32 source, adaret calibrate options beyond the defaults)
    "int8": ("fp32", {}),
    "int8 opt": ("fp32 int8src", {}),
    "int8 opt, no search": ("fp32 int8src", {"target_agreement": None}),
}


def build(args, work: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    result = run_export(ExportConfig(budget=args.budget, checkpoint=args.checkpoint, out=str(work),
                                     with_positions=True, parity_batches=(1,), parity_lengths=(37, 512)), optimize)
    raw = result.graphs[0].path
    int8src = optimize(raw, raw.with_name("model.int8src.onnx"), target="ort-cpu-int8").output
    paths = {"fp32": raw, "fp32 opt": result.graphs[0].optimized.output, "fp32 int8src": int8src}
    searches = {}
    for name, (source, options) in QUANTISED.items():
        out = work / (name.replace(",", "").replace(" ", "-") + ".onnx")
        done = quantize(QuantizeConfig(checkpoint=args.checkpoint, onnx=str(paths[source]), output=str(out),
                                data="bbc-news", samples=args.samples, method=args.method, max_length=args.seq_len,
                                **options))
        paths[name] = out
        if done.search:
            searches[name] = {"calibration_texts": done.search.texts, "all_int8": done.search.agreement_all_int8,
                              "agreement": done.search.agreement, "lower_bound": done.search.agreement_lower,
                              "fp32_matmuls": done.search.restored}
    return paths, searches


def accuracy(paths: dict[str, Path], texts, labels, tokenizer, seq_len: int) -> dict:
    out = {}
    for int8, (fp32, _) in QUANTISED.items():
        agreement = compare(paths[fp32], paths[int8], texts, labels, tokenizer, max_length=seq_len)
        out[int8] = agreement.as_dict() | {"fp32_graph": fp32}
    return out


def throughput(paths: dict[str, Path], texts, tokenizer, batch: int, seq_len: int, rounds: int) -> dict:
    feeds = next(encode_batches(texts[:batch], tokenizer, batch_size=batch, max_length=seq_len, seq_len=seq_len))
    runners = {}
    for name, path in paths.items():
        sess = session(path)
        runners[name] = lambda sess=sess: sess.run(["logits"], feeds)
    medians = interleaved_medians(runners, rounds=rounds, per_round=2, warmup=1)
    return {name: {"seconds_per_batch": s, "sequences_per_second": batch / s} for name, s in medians.items()}


def markdown(payload: dict) -> str:
    acc, speed, sizes = payload["accuracy"], payload["throughput"], payload["sizes_bytes"]
    lines = [f"# INT8 QDQ vs fp32 retained (ORT CPU, budget {payload['budget']}, seq {payload['seq_len']})", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}, shared; onnxruntime "
             f"{payload['machine']['onnxruntime']}", "",
             f"Calibration: {payload['samples']} BBC News training texts, {payload['method']}; evaluation: "
             f"{payload['examples']} held-out texts.", "",
             "| INT8 graph | from | fp32 acc | INT8 acc | ratio (target >= 0.99) | prediction agreement | "
             "token agreement (target >= 0.99) | flip rate | max abs logit diff |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, a in acc.items():
        lines.append(f"| {name} | {a['fp32_graph']} | {a['accuracy_fp32']:.4f} | {a['accuracy_int8']:.4f} | "
                     f"{a['accuracy_ratio']:.4f} | "
                     f"{a['prediction_agreement']:.4f} | {a['token_agreement']:.4f} | {a['flip_rate']:.4f} | "
                     f"{a['max_abs_logit_diff']:.3f} |")
    lines += ["", "Agreement search on the calibration texts (`adaret calibrate --target-agreement 0.99`):", ""]
    for name, found in payload["agreement_search"].items():
        lines.append(f"- {name}: {found['all_int8']:.4f} with every planned MatMul in INT8; {found['agreement']:.4f} "
                     f"(95% lower bound {found['lower_bound']:.4f}) with {', '.join(found['fp32_matmuls']) or 'none'} "
                     f"back in fp32 ({found['calibration_texts']} texts)")
    lines += ["", f"Throughput at batch {payload['batch']} x {payload['seq_len']} (median of interleaved rounds):", "",
              "| graph | s / batch | seq / s | size (MiB) |", "| --- | --- | --- | --- |"]
    for name, t in speed.items():
        lines.append(f"| {name} | {t['seconds_per_batch']:.3f} | {t['sequences_per_second']:.2f} | "
                     f"{sizes[name] / 2**20:.1f} |")
    lines += ["", "Speed-ups (target >= 1.5x): " + ", ".join(f"{k} {v:.2f}x" for k, v in payload["speedups"].items()),
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--budget", type=float, default=0.4)
    parser.add_argument("--samples", type=int, default=512, help="calibration texts")
    parser.add_argument("--method", default=None, choices=["entropy", "minmax", "percentile"],
                        help="default: adaret calibrate's (percentile for the ORT backend)")
    parser.add_argument("--max-examples", type=int, default=None, help="held-out texts for accuracy (default all)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="int8")
    args = parser.parse_args()
    args.method = args.method or DEFAULT_METHODS["ort"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, local_files_only=True)
    held_out = load_splits("bbc-news", seed=0).eval
    order = np.random.default_rng(0).permutation(len(held_out))[: args.max_examples or len(held_out)]
    texts, labels = [held_out.texts[i] for i in order], [held_out.labels[i] for i in order]
    with scratch_directory("adaret-int8-") as work:
        paths, searches = build(args, work)
        acc = accuracy(paths, texts, labels, tokenizer, args.seq_len)
        speed = throughput(paths, texts, tokenizer, args.batch, args.seq_len, args.rounds)
        sizes = {name: path.stat().st_size for name, path in paths.items()}  # before the work folder goes
    base = speed["fp32 opt"]["seconds_per_batch"]
    payload = {
        "command": "python benchmarks/int8.py " + shlex.join(sys.argv[1:]), "machine": machine(),
        "budget": args.budget, "seq_len": args.seq_len, "batch": args.batch, "samples": args.samples,
        "method": args.method, "examples": len(texts), "accuracy": acc,
        "agreement_search": searches, "throughput": speed,
        "speedups": {f"{n} vs fp32 opt": base / t["seconds_per_batch"] for n, t in speed.items() if n != "fp32 opt"},
        "sizes_bytes": sizes, "targets": TARGETS,
    }
    write_results(args.name, payload, markdown(payload))


if __name__ == "__main__":
    main()
