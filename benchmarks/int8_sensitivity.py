"""Where INT8 moves token choices: SmoothQuant's strength, and each MatMul alone in INT8 (ORT CPU).

    python benchmarks/int8_sensitivity.py [--samples 64] [--max-examples 96] [--alphas none,0.5,0.8,1.0]

The checkpoint is exported at the budget and run through the ort-cpu-int8 passes. For each alpha ("none": no
SmoothQuant), `adaret calibrate --no-search` quantises every planned MatMul; token agreement and accuracy are
measured on held-out BBC News texts against the fp32 graph. Then, on the all-INT8 graph without SmoothQuant,
each MatMul before the last gate is measured alone in INT8 (every other one back in fp32, in memory): the share
of fp32 token choices it moves by itself. This is what the agreement search ranks, measured on held-out texts.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, machine, scratch_directory, write_results

from adaret.calibration.checkpoint import QuantizeConfig, quantize
from adaret.calibration.int8.reader import encode_batches
from adaret.calibration.int8.sensitivity import AgreementProbe, _Restorer, candidates
from adaret.calibration.int8.verify import compare
from adaret.export import ExportConfig, run_export
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.graph_passes.pipeline import optimize
from adaret.training.data import load_splits


def alpha_sweep(args, source: Path, work: Path, texts, labels, tokenizer):
    """Agreement and accuracy per alpha, and the quantize() result without SmoothQuant."""
    rows, plain = {}, None
    for alpha in args.alphas:
        done = quantize(QuantizeConfig(checkpoint=args.checkpoint, onnx=str(source),
                                       output=str(work / f"int8-alpha-{alpha}.onnx"), samples=args.samples,
                                       max_length=args.seq_len, target_agreement=None, progress=False,
                                       smooth_alpha=None if alpha == "none" else float(alpha)))
        rows[alpha] = compare(source, done.output, texts, labels, tokenizer, max_length=args.seq_len).as_dict()
        plain = done if alpha == "none" else plain
    return rows, plain


def single_matmuls(source: Path, plain, batches: list[dict]) -> dict[str, float]:
    """1 - agreement with only that MatMul in INT8, for each quantised MatMul before the last gate."""
    fp32 = onnx.load(str(source))
    probe, restorer = AgreementProbe(fp32, batches), _Restorer(fp32, onnx.load(str(plain.output)))
    names = candidates(fp32, plain.plan.quantize)
    return {name: 1.0 - probe.agreement(restorer.with_fp32([m for m in names if m != name])).value for name in names}


def markdown(payload: dict) -> str:
    lines = [f"# Where INT8 moves token choices (ORT CPU, budget {payload['budget']}, seq {payload['seq_len']})", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}, onnxruntime "
             f"{payload['machine']['onnxruntime']}", "",
             f"ort-cpu-int8 graph; `adaret calibrate --no-search`, percentile on {payload['samples']} training texts; "
             f"measured on {payload['examples']} held-out texts.", "",
             "| SmoothQuant alpha | token agreement | accuracy ratio |", "| --- | --- | --- |"]
    for alpha, row in payload["alphas"].items():
        lines.append(f"| {alpha} | {row['token_agreement']:.4f} | {row['accuracy_ratio']:.4f} |")
    lines += ["", "Each MatMul alone in INT8 (no SmoothQuant; every other MatMul before the last gate in fp32), in "
              "graph order: per layer Q, K, V, attention output, FFN input, FFN output.", "",
              "| MatMul | share of fp32 token choices it moves |", "| --- | --- |"]
    for name, flips in payload["single_matmul_flip_rate"].items():
        lines.append(f"| {name} | {flips:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--budget", type=float, default=0.4)
    parser.add_argument("--samples", type=int, default=64, help="calibration texts")
    parser.add_argument("--max-examples", type=int, default=96, help="held-out texts")
    parser.add_argument("--alphas", default="none,0.5,0.8,1.0", help="comma-separated; none = no SmoothQuant")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--name", default="int8_sensitivity")
    args = parser.parse_args()
    args.alphas = [a.strip() for a in args.alphas.split(",") if a.strip()]
    if "none" not in args.alphas:
        args.alphas.insert(0, "none")  # the per-MatMul table needs the graph without SmoothQuant
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, local_files_only=True)
    held_out = load_splits("bbc-news", seed=0).eval
    order = np.random.default_rng(0).permutation(len(held_out))[: args.max_examples]
    texts, labels = [held_out.texts[i] for i in order], [held_out.labels[i] for i in order]
    batches = list(encode_batches(texts, tokenizer, batch_size=8, max_length=args.seq_len))
    with scratch_directory("adaret-int8-sensitivity-") as work:
        raw = run_export(ExportConfig(budget=args.budget, checkpoint=args.checkpoint, out=str(work),
                                      with_positions=True, parity_batches=(1,), parity_lengths=(37,))).graphs[0].path
        source = optimize(raw, work / "model.int8src.onnx", target="ort-cpu-int8").output
        alphas, plain = alpha_sweep(args, source, work, texts, labels, tokenizer)
        flip_rate = single_matmuls(source, plain, batches)
    payload = {"command": "python benchmarks/int8_sensitivity.py " + shlex.join(sys.argv[1:]), "machine": machine(),
               "budget": args.budget, "seq_len": args.seq_len, "samples": args.samples, "examples": len(texts),
               "alphas": alphas, "single_matmul_flip_rate": flip_rate}
    write_results(args.name, payload, markdown(payload))


if __name__ == "__main__":
    main()
