"""INT8 QDQ vs fp32 retained model on ONNX Runtime CPU: accuracy, token-selection agreement, throughput, size.

    python benchmarks/int8.py [--checkpoint DIR] [--budget 0.4] [--samples 512] [--max-examples N] [--method percentile]

The checkpoint is exported once at the budget with kept positions (dynamic form; `model.onnx` and the ort-cpu
graph-pass output `model.opt.onnx`). `adaret calibrate` quantises both: `model.int8.onnx` from the raw export
(the TensorRT-compatible file) and `model.opt.int8.onnx` from the fused graph (ONNX Runtime only).
Accuracy and agreement: BBC News held-out split (seed 0), truncated to --seq-len, fp32 and INT8 of the same
graph side by side. Throughput: batch --batch of held-out texts padded to --seq-len, all four sessions timed in
interleaved rounds in one process (ORT defaults: all optimisations, intra-op threads = cores).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, write_results

from adaret.calibration.quantize import DEFAULT_METHODS, QuantizeConfig, quantize
from adaret.calibration.reader import encode_batches
from adaret.calibration.verify import compare, session
from adaret.export import ExportConfig, run_export
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.training.data import load_splits

TARGETS = {"accuracy_ratio": 0.99, "token_agreement": 0.99, "speedup": 1.5}


def build(args, work: Path) -> dict[str, Path]:
    result = run_export(ExportConfig(budget=args.budget, checkpoint=args.checkpoint, out=str(work),
                                     with_positions=True, parity_batches=(1,), parity_lengths=(37, 512)))
    raw, opt = result.graphs[0].path, result.graphs[0].optimized.output
    paths = {"fp32": raw, "fp32 opt": opt}
    for name, source in (("int8", raw), ("int8 opt", opt)):
        out = source.with_name(source.name.removesuffix(".onnx") + ".int8.onnx")
        quantize(QuantizeConfig(checkpoint=args.checkpoint, onnx=str(source), output=str(out), data="bbc-news",
                                samples=args.samples, method=args.method, max_length=args.seq_len))
        paths[name] = out
    return paths


def accuracy(paths: dict[str, Path], texts, labels, tokenizer, seq_len: int) -> dict:
    out = {}
    for fp32, int8 in (("fp32", "int8"), ("fp32 opt", "int8 opt")):
        agreement = compare(paths[fp32], paths[int8], texts, labels, tokenizer, max_length=seq_len)
        out[int8] = agreement.as_dict()
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
             f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores (shared), onnxruntime "
             f"{payload['machine']['onnxruntime']}", "",
             f"Calibration: {payload['samples']} BBC News training texts, {payload['method']}; evaluation: "
             f"{payload['examples']} held-out texts.", "",
             "| INT8 graph | fp32 acc | INT8 acc | ratio (target >= 0.99) | prediction agreement | "
             "token agreement (target >= 0.99) | flip rate | max abs logit diff |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, a in acc.items():
        lines.append(f"| {name} | {a['accuracy_fp32']:.4f} | {a['accuracy_int8']:.4f} | {a['accuracy_ratio']:.4f} | "
                     f"{a['prediction_agreement']:.4f} | {a['token_agreement']:.4f} | {a['flip_rate']:.4f} | "
                     f"{a['max_abs_logit_diff']:.3f} |")
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
    paths = build(args, Path(tempfile.mkdtemp(prefix="adaret-int8-")))
    acc = accuracy(paths, texts, labels, tokenizer, args.seq_len)
    speed = throughput(paths, texts, tokenizer, args.batch, args.seq_len, args.rounds)
    base = speed["fp32 opt"]["seconds_per_batch"]
    payload = {
        "command": "python benchmarks/int8.py " + shlex.join(sys.argv[1:]), "machine": machine(),
        "budget": args.budget, "seq_len": args.seq_len, "batch": args.batch, "samples": args.samples,
        "method": args.method, "examples": len(texts), "accuracy": acc, "throughput": speed,
        "speedups": {f"{n} vs fp32 opt": base / t["seconds_per_batch"] for n, t in speed.items() if n != "fp32 opt"},
        "sizes_bytes": {name: path.stat().st_size for name, path in paths.items()}, "targets": TARGETS,
    }
    write_results(args.name, payload, markdown(payload))


if __name__ == "__main__":
    main()
