"""The short human summary printed after an export."""

from __future__ import annotations

from adaret.export.pipeline import ExportResult


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"


def print_summary(result: ExportResult) -> None:
    config = result.config
    fractions = " ".join(f"{f:.3f}" for f in result.schedule.fractions)
    print(f"budget {config.budget:g} (trained at {result.training_budget:g}); keep fractions per layer: {fractions}")
    for note in result.notes:
        print(f"note: {note}")
    for graph in result.graphs:
        form = "dynamic" if graph.seq_len is None else f"static seq {graph.seq_len}"
        print(f"\n{graph.path}  [{form}, {_size(graph.size_bytes)}, exported and checked in {graph.seconds:.1f}s]")
        for n, counts in graph.keep_counts.items():
            print(f"  K per layer at n={n}: {counts}  ({sum(counts) / (len(counts) * n):.3f} of n*L)")
        main_ops = {op: graph.op_counts.get(op, 0) for op in ("TopK", "GatherElements", "MatMul", "Softmax")}
        print(f"  ops: {sum(graph.op_counts.values())} nodes; " + ", ".join(f"{k} {v}" for k, v in main_ops.items()))
        parity = graph.parity
        shapes = sorted({(c.batch, c.seq_len) for c in parity.cases})
        print(f"  parity vs PyTorch: max |logit diff| {parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.0e}), "
              f"kept positions {parity.positions_verdict} "
              f"over {len(shapes)} (batch, seq) shapes with random padding")
        if graph.optimized is not None:
            opt = graph.optimized
            print(f"  graph passes ({opt.target}), each checked against the exported graph:")
            for report in opt.reports:
                print(f"    {report.line()}")
            print(f"  -> {opt.output}  [{opt.nodes_before} -> {opt.nodes_after} nodes, "
                  f"{_size(opt.output.stat().st_size)}]  (deploy this one)")
    print(f"\nreport: {result.report_path}")
