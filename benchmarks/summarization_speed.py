"""Summarization at the target configuration: ONNX Runtime, the export at budget 0.4 against the same checkpoint
exported at 1.0, measured side by side in one process.

    python benchmarks/summarization_speed.py [--checkpoint DIR] [--budget 0.4] [--documents 4] [--chunks 8]
                                             [--steps 32] [--rounds 3] [--threads 2]

Inputs: the first --documents aclsum test papers whose body text fills --chunks chunks, each cut to exactly --chunks
rows of the checkpoint's chunk length ([CLS] 510 tokens [SEP]: 8 x 512 = 4,096 encoder tokens per document at the
defaults), one batch. Both exports are made by ``run_summarization_export`` (its parity gate included).

Measured for each export (medians of interleaved rounds, the two exports of one measurement back to back):
(a) the cross-attention cache: bytes of the ``present.*.encoder.*`` arrays ``decoder_model`` returns;
(b) decoder: seconds per ``decoder_with_past`` step at the batch (one token for each document) over --steps steps
    that ignore the end token, so that both exports do the same steps;
(c) encoder: ``Summarizer.memory`` for the batch (every chunk row, memories assembled);
(d) end to end, fixed: memory + first step + --steps steps (equal work); and natural: ``Summarizer.summarize`` on the
    papers' texts with its own stopping (it cuts them with the checkpoint's own settings), with the tokens generated.

Targets (issue 16, for a trained checkpoint): cache >= 60% smaller, decoder >= 1.5x, encoder >= 2.0x, end to end
>= 1.8x faster. Without --checkpoint the model is UNTRAINED: the packaged all-MiniLM-L6-v2 encoder with random
gates (std 0.5) at a stated schedule and a decoder warm-started from the same weights (fresh cross-attention). Its
speed is that of a trained model of the same shape and schedule; its summaries are noise, and never stopping early,
its natural summarize runs to the step limit.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, describe, machine, scratch_directory, write_results

from adaret.core.chunks import chunk_ids
from adaret.core.summaries import load_summary_splits
from adaret.core.timing import SETTLE_BELOW_S, interleaved_seconds
from adaret.export import ExportConfig
from adaret.export.seq2seq import run_summarization_export
from adaret.modeling import RetentionConfig, RetentionModel, load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.modeling.seq2seq import RetentionSeq2Seq, warm_start_decoder
from adaret.runtime.summarize import Summarizer
from adaret.training.checkpoint import resolve_model_source
from adaret.training.config import PACKAGED_MODEL
from adaret.training.seq2seq_checkpoint import ChunkSettings, Seq2SeqCheckpoint, Seq2SeqInfo
from adaret.training.summarization import SpecialTokens
from adaret.validation import plots
from adaret.validation.summarization import TIMED, timed_workloads

UNTRAINED_SCHEDULE = (1.0, 0.6, 0.45, 0.35, 0.28, 0.2)  # keep fractions per encoder layer (mean 0.48)
GATE_STD = 0.5  # random gate weights spread enough that no two tokens tie
TARGETS = {"cross_cache_reduction": 0.60, "decoder_speedup": 1.5, "encoder_speedup": 2.0, "fixed_steps_speedup": 1.8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="summarization checkpoint (default: an UNTRAINED MiniLM-L6 encoder-decoder built here)")
    p.add_argument("--budget", type=float, default=0.4, help="retained budget (default: %(default)s)")
    p.add_argument("--documents", type=int, default=4, help="aclsum test papers, one batch (default: %(default)s)")
    p.add_argument("--chunks", type=int, default=8, help="chunk rows per document (default: %(default)s)")
    p.add_argument("--steps", type=int, default=32,
                   help="decoder steps timed, ignoring the end token (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    p.add_argument("--max-target-tokens", type=int, default=64,
                   help="untrained model only: summary tokens, start and end included; natural summarize "
                        "generates at most one less (default: %(default)s)")
    p.add_argument("--work", default=None, help="directory for the checkpoint and exports (default: a temporary one)")
    p.add_argument("--name", default="summarization_speed",
                   help="results stem in benchmarks/results: <name>.json, .md, .png (default: %(default)s)")
    return p.parse_args(argv)


def untrained_checkpoint(path: Path, chunk_length: int, source_tokens: int, max_target_tokens: int) -> Path:
    """All-MiniLM-L6-v2 as encoder (random gates, UNTRAINED_SCHEDULE recorded as measured) and as the warm start of
    the decoder; ``source_tokens`` read, so that the runtime cuts exactly the benchmark's rows."""
    model_dir = resolve_model_source(PACKAGED_MODEL)
    torch.manual_seed(0)
    encoder = load_encoder(model_dir, "eager")
    retention = RetentionModel(encoder, RetentionConfig(label_names=[], task="summarization"))
    for gate in retention.gates.values():
        torch.nn.init.normal_(gate.scorer.weight, std=GATE_STD)
    model = RetentionSeq2Seq(retention, warm_start_decoder(str(model_dir))).eval()
    tokenizer = load_tokenizer(model_dir)
    decoder_config = model.decoder.lm.config
    info = Seq2SeqInfo(
        encoder_config=encoder.config.to_diff_dict() | {"model_type": encoder.config.model_type},
        decoder_config=decoder_config.to_diff_dict() | {"model_type": decoder_config.model_type},
        retention={}, chunks=asdict(ChunkSettings(chunk_length, source_tokens, max_target_tokens)),
        special_tokens=asdict(SpecialTokens.of(tokenizer)),
        schedule={"keep_fractions": list(UNTRAINED_SCHEDULE), "measured_on": "stated (untrained benchmark model)"},
        training={"untrained": True, "budget": 0.4, "source_model": PACKAGED_MODEL})
    Seq2SeqCheckpoint(model, tokenizer, info).save_pretrained(path, overwrite=True)
    return path


def papers(summarizer: Summarizer, count: int, chunks: int) -> tuple[list[str], list[list[list[int]]]]:
    """The first ``count`` aclsum test papers long enough for ``chunks`` full rows: their texts, and their rows."""
    settings = summarizer.settings
    content = chunks * (settings.chunk_length - 2)
    texts, documents = [], []
    for pair in load_summary_splits("aclsum").test:
        ids = summarizer.tokenizer.encode(pair.text, add_special_tokens=False).ids
        if len(ids) >= content:
            texts.append(pair.text)
            documents.append(chunk_ids(ids, chunk_length=settings.chunk_length, max_source_tokens=content,
                                       cls_id=settings.start_id, sep_id=settings.end_id))
        if len(texts) == count:
            return texts, documents
    raise SystemExit(f"only {len(texts)} aclsum test papers have {content} tokens; lower --documents or --chunks")


def export(checkpoint: Path, budget: float, work: Path) -> tuple[Path, dict]:
    started = time.perf_counter()
    result = run_summarization_export(ExportConfig(task="summarization", budget=budget, checkpoint=str(checkpoint),
                                                   out=str(work / f"b{budget:g}"), overwrite=True))
    return result.out_dir, {"seconds": round(time.perf_counter() - started, 1), "parity": result.parity.line(),
                            "schedule_fractions": [round(f, 4) for f in result.schedule.fractions],
                            "keep_counts": result.keep_counts}


def interleaved(calls: dict, rounds: int) -> dict:
    """Seconds of every call in interleaved rounds (``adaret.core.timing``); a call shorter than
    ``SETTLE_BELOW_S`` gets settle calls first, so that it does not pay for the previous call's spinning workers."""
    with tqdm(total=len(calls) * rounds, desc="timing", dynamic_ncols=True) as bar:
        return interleaved_seconds(calls, rounds, settle_below_s=SETTLE_BELOW_S, on_call=bar.update)


def measure(summarizers: dict[float, Summarizer], texts: list[str], documents: list[list[list[int]]], steps: int,
            rounds: int) -> list[dict]:
    workloads, facts = {}, {}
    for budget, summarizer in summarizers.items():
        workloads[budget], facts[budget] = timed_workloads(summarizer, documents, texts, steps)
    samples = interleaved({(kind, b): workloads[b][kind] for kind in TIMED for b in workloads}, rounds)
    rows = []
    for budget in summarizers:
        median = {kind: sorted(samples[(kind, budget)])[len(samples[(kind, budget)]) // 2] for kind in TIMED}
        f = facts[budget]
        rows.append({"config": "onnxruntime-full" if budget >= 1.0 else "onnxruntime-retained", "budget": budget,
                     **f, "cross_cache_mib": round(f["cross_cache_bytes"] / 2**20, 2),
                     "encoder_ms": round(1000 * median["encoder"], 1),
                     "decoder_step_ms": round(1000 * median["decoder"] / steps, 3),
                     "fixed_steps_ms": round(1000 * median["fixed"], 1),
                     "summarize_ms": round(1000 * median["summarize"], 1),
                     "samples_s": {kind: [round(s, 4) for s in samples[(kind, budget)]] for kind in TIMED}})
    full = rows[0]
    for row in rows[1:]:
        for name, key in (("encoder_speedup", "encoder_ms"), ("decoder_speedup", "decoder_step_ms"),
                          ("fixed_steps_speedup", "fixed_steps_ms"), ("summarize_speedup", "summarize_ms")):
            row[name] = round(full[key] / row[key], 3)
        row["cross_cache_reduction"] = round(1 - row["cross_cache_bytes"] / full["cross_cache_bytes"], 4)
    return rows


def markdown(payload: dict) -> str:
    rows, retained = payload["rows"], payload["rows"][1]
    s = payload["settings"]
    columns = ("config", "budget", "encoder_rows", "memory_tokens", "cross_cache_mib", "encoder_ms",
               "decoder_step_ms", "fixed_steps_ms", "summarize_tokens", "summarize_ms")
    lines = [f"# Summarization speed: ONNX Runtime, budget {retained['budget']:g} vs 1.0", "",
             f"Command: `{payload['command']}`", "", f"Machine: {describe(payload['machine'])}; "
             f"onnxruntime {payload['machine']['onnxruntime']}, torch {payload['machine']['torch']}.", "",
             f"Model: {payload['model']}", "",
             f"{s['documents']} aclsum test papers x {s['chunks']} chunks of {s['chunk_length']} tokens "
             f"({s['documents'] * s['chunks'] * s['chunk_length']:,} encoder tokens), one batch; {s['threads']} "
             f"ONNX Runtime threads; medians of {s['rounds']} interleaved rounds; decoder over {s['steps']} steps "
             "that ignore the end token. Natural summarize: `Summarizer.summarize` on the full texts with its own "
             f"stopping (at most {s['natural_max_new_tokens']} new tokens).", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    lines += ["", "| measurement | ratio | target | met |", "| --- | --- | --- | --- |"]
    for key, target in TARGETS.items():
        value = retained[key]
        shown = f"{value:.1%} smaller" if key == "cross_cache_reduction" else f"{value:.2f}x"
        wanted = f">= {target:.0%} smaller" if key == "cross_cache_reduction" else f">= {target:g}x"
        lines.append(f"| {key} | {shown} | {wanted} | {'yes' if value >= target else 'NO'} |")
    lines.append(f"| summarize_speedup (natural stopping) | {retained['summarize_speedup']:.2f}x | - | - |")
    lines += ["", "Exports: " + "; ".join(f"b{b}: {e['seconds']} s, K per layer at {s['chunk_length']}: "
                                          f"{e['keep_counts'].get(s['chunk_length'])}, parity: {e['parity']}"
                                          for b, e in payload["exports"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with scratch_directory("adaret-s2s-speed-", keep=args.work) as work:
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        if checkpoint is None:
            print("building an UNTRAINED MiniLM-L6 encoder-decoder (random gates, stated schedule "
                  f"{list(UNTRAINED_SCHEDULE)}): speed only, its summaries are noise", flush=True)
            checkpoint = untrained_checkpoint(work / "untrained", 512, args.chunks * 510, args.max_target_tokens)
        exports = {}
        for budget in tqdm((1.0, args.budget), desc="exports", dynamic_ncols=True):
            exports[budget] = export(checkpoint, budget, work)
        summarizers = {b: Summarizer(path, threads=args.threads) for b, (path, _) in exports.items()}
        texts, rows = papers(summarizers[1.0], args.documents, args.chunks)  # both exports: one tokenizer
        rows = measure(summarizers, texts, rows, args.steps, args.rounds)
    settings = summarizers[1.0].settings
    payload = {
        "command": "python " + shlex.join(["benchmarks/summarization_speed.py", *(argv or sys.argv[1:])]),
        "model": (f"checkpoint {args.checkpoint}" if args.checkpoint else
                  f"UNTRAINED: {PACKAGED_MODEL} encoder with random gates (std {GATE_STD}) at the stated schedule "
                  f"{list(UNTRAINED_SCHEDULE)} and a decoder warm-started from it; speed only"),
        "settings": {"documents": args.documents, "chunks": args.chunks, "chunk_length": settings.chunk_length,
                     "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
                     "natural_max_new_tokens": settings.default_max_new_tokens,
                     "max_source_tokens": settings.max_source_tokens},
        "targets": TARGETS, "exports": {str(b): e for b, (_, e) in exports.items()}, "rows": rows,
        "machine": machine(),
    }
    write_results(args.name, payload, markdown(payload))
    plots.summarization_speed(rows, args.documents, RESULTS / f"{args.name}.png")
    print(f"wrote {args.name}.png in benchmarks/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
