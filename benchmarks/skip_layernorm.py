"""ONNX Runtime CPU: the fused SkipLayerNormalization kernel against the ops it replaces.

    python benchmarks/skip_layernorm.py [--rows 512,182] [--hidden 384] [--threads 1,2] [--calls 500]

Each graph is one op (or Add + Add + LayerNormalization) on (1, rows, hidden) float32, with ONNX Runtime's
graph optimisations off so that the session runs exactly these nodes, and intra-op spinning off. The two
graphs are timed side by side in interleaved rounds. This is the measurement behind the ort-cpu pipeline's
`split-skip-layernorm` pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, interleaved_medians, machine, write_results


def build(kind: str, rows: int, hidden: int) -> bytes:
    def io(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, rows, hidden])

    weights = [helper.make_tensor(name, TensorProto.FLOAT, [hidden], np.full(hidden, value))
               for name, value in (("gamma", 1.0), ("beta", 0.0), ("bias", 0.1))]
    if kind == "SkipLayerNormalization":
        nodes = [helper.make_node(kind, ["x", "skip", "gamma", "beta", "bias"], ["y"], domain="com.microsoft",
                                  epsilon=1e-12)]
    else:
        nodes = [helper.make_node("Add", ["x", "skip"], ["summed"]), helper.make_node("Add", ["summed", "bias"], ["s"]),
                 helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    graph = helper.make_graph(nodes, kind, [io("x"), io("skip")], [io("y")], initializer=weights)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


KINDS = ("SkipLayerNormalization", "Add + Add + LayerNormalization")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="512,182")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per graph, over 10 rounds")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows_out = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for rows in [int(r) for r in args.rows.split(",")]:
            feeds = {n: rng.standard_normal((1, rows, args.hidden), dtype=np.float32) for n in ("x", "skip")}
            sessions = {kind: session(build(kind, rows, args.hidden), threads) for kind in KINDS}
            runners = {kind: (lambda s=s, f=feeds: s.run(None, f)) for kind, s in sessions.items()}
            medians = interleaved_medians(runners, rounds=10, per_round=max(1, args.calls // 10))
            fused, split = (medians[k] * 1e6 for k in KINDS)
            rows_out.append({"threads": threads, "rows": rows, "fused_us": round(fused), "split_us": round(split),
                             "fused_over_split": round(fused / split, 2)})
    payload = {"command": "python " + " ".join(sys.argv), "hidden": args.hidden, "machine": machine(),
               "rows": rows_out}
    write_results("skip_layernorm", payload, render(payload))


def render(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"# SkipLayerNormalization vs Add + Add + LayerNormalization, ORT CPU, hidden {payload['hidden']}", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(m)}; onnxruntime {m['onnxruntime']}. Median us per call, "
             "interleaved rounds, graph optimisations off, spinning off.", "",
             "| threads | shape | SkipLayerNormalization us | Add + Add + LayerNormalization us | fused / split |",
             "| --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['threads']} | (1, {r['rows']}, {payload['hidden']}) | {r['fused_us']} | {r['split_us']} | "
                     f"{r['fused_over_split']}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
