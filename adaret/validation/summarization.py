"""``adaret validate --task summarization``: ROUGE of PyTorch full, PyTorch hard top-M and the deployed export on
the same fixed random sample of held-out documents, and the export's speed and memory against the full model.

Rows, each scored with ROUGE-1/2/L (rouge-score, Porter-stemmed; ``adaret.core.summaries``), with a 95% bootstrap
interval for ROUGE-L and ROUGE-L as a fraction of pytorch-full:
- pytorch-full: the reference decoder (the full model trained the same way) on the full memory, ``mode="full"``;
- pytorch-hard@b: the deployed decoder on the hard top-M memory at the export's own schedule, documents batched by
  ``SummaryData.deployed_batches`` so that every row has the width (hence the K per layer) the runtime gives it;
- onnxruntime@b: the export through ``Summarizer.generate`` (greedy), the path a deployment takes. Its tokens are
  compared with pytorch-hard's: the fraction of documents whose greedy token sequences are identical.

Every row decodes its tokens with the runtime's tokenizer (special tokens skipped), so a difference in a summary is
a difference in tokens. The PyTorch rows use the checkpoint's settings (chunks, special tokens, summary length),
which the export copied.

Speed and memory: the export at b against the same checkpoint exported at 1.0, on a fixed sample of
``--batch-size`` evaluated documents (one batch), in interleaved rounds (medians):
- encoder: ``Summarizer.memory`` for the batch (every chunk row, memories assembled);
- decoder: one ``decoder_with_past`` step at the batch (one token for each document), over a fixed number of steps
  that ignore the end token, so both models do the same number of steps;
- fixed steps: memory, first step and the same fixed steps: end to end with equal work;
- summarize: ``Summarizer.summarize`` with its own stopping, and the tokens each generated;
- the cross-attention cache: the bytes of the ``present.*.encoder.*`` arrays ``decoder_model`` returns;
- peak memory: RSS above the loaded model of a fresh process running summarize on the batch
  (``adaret.runtime.memory``), with the runtime's defaults (CPU arena off) and with ONNX Runtime's arena.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from adaret.core.chunks import document_chunks
from adaret.core.detokenize import clean_spacing
from adaret.core.errors import AdaretError
from adaret.core.io_spec import SUMMARIZATION
from adaret.core.seq2seq_graphs import SETTINGS_NAME, LayerCache, Seq2SeqGraphs, is_summarization_export
from adaret.core.summaries import SummaryPair, load_summary_splits, rouge_bootstrap_interval, rouge_scores
from adaret.core.timing import SETTLE_BELOW_S, interleaved_seconds
from adaret.export.config import ExportConfig
from adaret.export.seq2seq import run_summarization_export
from adaret.modeling import KeepSchedule
from adaret.modeling.seq2seq import MemoryDecoder, RetentionSeq2Seq
from adaret.runtime.summarize import Summarizer
from adaret.training.seq2seq_checkpoint import CONFIG_NAME, FORMAT, Seq2SeqCheckpoint, is_seq2seq_checkpoint
from adaret.training.summarization import SpecialTokens, SummaryData
from adaret.validation import plots
from adaret.validation.defaults import ReportSettings, concluded, resolve_target
from adaret.validation.evaluate import memory_mib
from adaret.validation.markdown import report_closing, report_opening, table, write_report
from adaret.validation.reference import device_for

DEFAULT_DOCUMENTS = 300  # more than the test split of bbc-headlines (~220) or aclsum (100): all of either
# Equal greedy tokens need every step's argmax to agree. ONNX Runtime and PyTorch differ by float reordering
# (~1e-5 in a logit), which flips a document only where two logits (or two tokens' gate scores) nearly tie; over a
# few dozen greedy steps that is a few documents in a hundred. A systematic difference (another schedule, other
# chunks, a cache bug) changes nearly every document within its first steps, far below this floor.
AGREEMENT_FLOOR = 0.90
TIMING_ROUNDS = 3
DECODER_STEPS = 32  # fixed decoding steps timed per batch (fewer where the decoder's positions end sooner)
BOOTSTRAP_SAMPLES = 1000
DISAGREEMENTS_SHOWN = 5
TIMED = ("encoder", "decoder", "fixed", "summarize")
MEMORY_WORKLOAD = "adaret.validation.summarize_workload:summarize_workload"


@dataclass(kw_only=True)
class SummarizationValidationConfig(ReportSettings):
    """For summarization, ``data`` is bbc-headlines, aclsum or a .jsonl/.json/.csv/.tsv file (default: the
    checkpoint's own data; its test split either way), ``budgets`` the exports made from a checkpoint target
    (default: its training budget), ``max_examples`` DEFAULT_DOCUMENTS unless set; ``onnx`` and ``plans``
    (classification's) are refused."""

    target: str | None = None  # a summarization export directory or a summarization checkpoint
    seed: int = 0
    full_export: str | None = None  # the checkpoint exported at 1.0 (the speed baseline); made in out if None
    text_column: str = "text"
    summary_column: str = "summary"
    rounds: int = TIMING_ROUNDS


@dataclass
class Deployed:
    """One summarization export and the schedule its encoder graph keeps (the PyTorch reference uses it)."""

    budget: float
    path: Path
    summarizer: Summarizer
    schedule: KeepSchedule


@dataclass
class Generation:
    """One backend's greedy summaries of the sample: token ids before the end token, and the decoded text."""

    tokens: list[list[int]]
    summaries: list[str]
    seconds: float


def run_summarization_validation(config: SummarizationValidationConfig) -> dict:
    """Every comparison, report.json, report.md and plots in ``config.out``; returns the report
    (``report["passed"]``)."""
    checkpoint_dir, export = _resolve_target(config)
    return config.run_in_out(partial(_validate, config, checkpoint_dir, export))


def _validate(config: SummarizationValidationConfig, checkpoint_dir: Path, export: Path | None, out: Path) -> dict:
    checkpoint = Seq2SeqCheckpoint.from_pretrained(checkpoint_dir, attn_implementation="eager")  # as exported
    data_name, pairs = evaluation_pairs(checkpoint, config)
    deployed = _exports(config, checkpoint, checkpoint_dir, export, out)
    full_export = _full_export(config, checkpoint, checkpoint_dir, deployed, out)
    settings = deployed[0].summarizer.settings
    rows, disagreements = accuracy_rows(config, checkpoint, deployed, pairs)
    timing_texts = [pairs[i].text for i in _sample(len(pairs), config.batch_size, config.seed)]
    report = {
        **config.report_header(task=SUMMARIZATION.task, checkpoint=checkpoint_dir, checkpoint_sha256=checkpoint.sha256,
                               data=data_name),
        "documents": len(pairs), "seed": config.seed, "full_reference": _reference_note(checkpoint),
        "chunk_settings": {"chunk_length": settings.chunk_length, "max_source_tokens": settings.max_source_tokens,
                           "max_target_tokens": settings.max_target_tokens},
        "max_new_tokens": settings.default_max_new_tokens,
        "thresholds": {"accuracy_floor": config.accuracy_floor, "agreement_floor": AGREEMENT_FLOOR},
        "rows": rows, "disagreements": disagreements,
        "speed": speed_rows(config, [full_export, *[d for d in deployed if d.budget < 1.0]], timing_texts),
    }
    report["speed_settings"] = {"documents": len(timing_texts), "decoder_steps": _decoder_steps(full_export),
                                "rounds": config.rounds}
    _write(concluded(report, _checks(config, rows)), out)
    return report


# --- inputs ----------------------------------------------------------------------------------------------------

def _resolve_target(config: SummarizationValidationConfig) -> tuple[Path, Path | None]:
    """(checkpoint directory, export or None when the export is to be made here); every refusal is cheap."""
    _check_numbers(config)
    checkpoint, export = resolve_target(config, config.target, task="summarization",
                                        is_checkpoint=is_seq2seq_checkpoint, check_export=_check_export)
    if export is not None and not is_seq2seq_checkpoint(checkpoint):
        raise AdaretError(f"--checkpoint {checkpoint}: {_not_summarization(checkpoint)}")
    return checkpoint, export


def _check_export(path: Path) -> None:
    if not is_summarization_export(path):
        raise AdaretError(_not_summarization(path))


def _not_summarization(path: Path) -> str:
    if (path / CONFIG_NAME).is_file():
        return (f"{path} is not a summarization checkpoint (its {CONFIG_NAME} is not format {FORMAT!r}); "
                "--task summarization needs a checkpoint of adaret train --task summarization, or its export")
    return (f"{path} is not a summarization export (no {SETTINGS_NAME}) nor a summarization checkpoint; "
            "--task summarization needs adaret export --task summarization's directory, or its checkpoint")


def _check_numbers(config: SummarizationValidationConfig) -> None:
    config.check_numbers()
    if config.max_examples is not None and config.max_examples < 1:
        raise AdaretError(f"--max-examples must be >= 1, got {config.max_examples}")
    if config.rounds < 1:
        raise AdaretError(f"timing rounds must be >= 1, got {config.rounds}")
    if config.full_export is not None and not is_summarization_export(Path(config.full_export)):
        raise AdaretError(f"--full-export {config.full_export}: {_not_summarization(Path(config.full_export))}")
    device_for(config.device)  # no CUDA device: said now, not after the exports


def evaluation_pairs(checkpoint: Seq2SeqCheckpoint,
                     config: SummarizationValidationConfig) -> tuple[str, list[SummaryPair]]:
    """(name, a fixed random sample of the test split in split order): of ``config.data``, or by default of the
    data the checkpoint was trained on; split with the checkpoint's seed, so its own data keeps its held-out part."""
    training = checkpoint.info.training
    source = config.data or training.get("data")
    if not source:
        raise AdaretError(f"checkpoint {checkpoint.path} records no training data; give --data bbc-headlines, "
                          "aclsum or a .jsonl/.json/.csv/.tsv file with text and summary fields")
    text_column = config.text_column if config.data else training.get("text_column") or "text"
    splits = load_summary_splits(str(source), seed=int(training.get("seed", 0)), text_column=text_column,
                                 summary_column=config.summary_column)
    chosen = _sample(len(splits.test), config.max_examples or DEFAULT_DOCUMENTS, config.seed)
    return f"{splits.name} (test split)", [splits.test[i] for i in chosen]


def _sample(population: int, count: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(population), min(count, population)))


def _reference_note(checkpoint: Seq2SeqCheckpoint) -> str:
    if checkpoint.reference_decoder is not None:
        return "reference decoder: the full model trained the same way"
    return "the deployed decoder (the checkpoint has no reference_decoder.safetensors)"


# --- the exports under test ------------------------------------------------------------------------------------

def _exports(config: SummarizationValidationConfig, checkpoint: Seq2SeqCheckpoint, checkpoint_dir: Path,
             export: Path | None, out: Path) -> list[Deployed]:
    if export is not None:
        return [open_export(export, checkpoint, config.threads)]
    budgets = dict.fromkeys(config.budgets or (float(checkpoint.info.training.get("budget", 0.4)),))
    return [open_export(export_at(checkpoint_dir, b, out), checkpoint, config.threads) for b in budgets]


def _full_export(config: SummarizationValidationConfig, checkpoint: Seq2SeqCheckpoint, checkpoint_dir: Path,
                 deployed: list[Deployed], out: Path) -> Deployed:
    """The speed baseline: the same checkpoint exported at 1.0 (no TopK), through the same export."""
    found = next((d for d in deployed if d.budget >= 1.0), None)
    if found is not None:
        return found
    if config.full_export is None:
        return open_export(export_at(checkpoint_dir, 1.0, out), checkpoint, config.threads)
    full = open_export(Path(config.full_export), checkpoint, config.threads)
    if full.budget < 1.0:
        raise AdaretError(f"--full-export {full.path} is an export at budget {full.budget:g}; the speed baseline is "
                          "the checkpoint exported at 1.0")
    return full


def export_at(checkpoint_dir: Path, budget: float, out: Path) -> Path:
    """``adaret export --task summarization`` (its parity gate included) into ``out/exports/b<budget>``."""
    config = ExportConfig(task=SUMMARIZATION.task, budget=budget, checkpoint=str(checkpoint_dir),
                          out=str(out / "exports" / f"b{budget:g}"),
                          overwrite=True)  # the command's own exports: a re-run into the same --out replaces them
    return run_summarization_export(config).out_dir


def open_export(path: Path, checkpoint: Seq2SeqCheckpoint, threads: int | None = None) -> Deployed:
    summarizer = Summarizer(path, threads=threads)  # refuses, in one line, anything but a summarization export
    meta = summarizer.metadata
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != checkpoint.sha256:
        raise AdaretError(f"{path} was exported from another checkpoint than {checkpoint.path} (checkpoint sha256 "
                          "differs); pass the matching --checkpoint")
    numerators = (meta.schedule or {}).get("numerators")
    # The graph's own schedule, so that the reference keeps exactly the tokens the graph keeps.
    schedule = (KeepSchedule(tuple(numerators)) if numerators
                else KeepSchedule.from_fractions([1.0] * checkpoint.model.num_layers))
    return Deployed(meta.budget, path, summarizer, schedule)


# --- generation ------------------------------------------------------------------------------------------------

def until_end(tokens: Sequence[int], end: int) -> list[int]:
    tokens = list(tokens)
    return tokens[:tokens.index(end)] if end in tokens else tokens


@contextmanager
def _decoder(model: RetentionSeq2Seq, decoder: MemoryDecoder | None) -> Iterator[None]:
    """The model with ``decoder`` in place of its own (the full reference), restored afterwards."""
    if decoder is None:
        yield
        return
    saved, model.decoder = model.decoder, decoder
    try:
        yield
    finally:
        model.decoder = saved


@torch.inference_mode()
def torch_generation(model: RetentionSeq2Seq, data: SummaryData, *, mode: str, schedule: KeepSchedule | None,
                     max_new_tokens: int, batch_size: int, device: str = "cpu", desc: str = "generate") -> Generation:
    """Greedy ``RetentionSeq2Seq.generate`` over every document: in hard mode on the runtime's row widths
    (``deployed_batches``); returns token ids before the end token, in data order (summaries left empty)."""
    target = device_for(device)
    model.to(target).eval()
    end = data.special.end
    batches = data.deployed_batches(batch_size) if mode == "hard" else data.batches(batch_size)
    tokens: list[list[int]] = [[] for _ in range(len(data))]
    seconds = 0.0
    for batch in tqdm(list(batches), desc=desc, dynamic_ncols=True, leave=False):
        started = time.perf_counter()
        out = model.generate(batch.input_ids.to(target), batch.chunk_mask.to(target), start_id=data.special.start,
                             end_id=end, max_new_tokens=max_new_tokens, mode=mode, schedule=schedule)
        seconds += time.perf_counter() - started
        for index, row in zip(batch.indices.tolist(), out.tolist(), strict=True):
            tokens[index] = until_end(row, end)
    return Generation(tokens, [], seconds)


def runtime_generation(deployed: Deployed, texts: Sequence[str], *, max_new_tokens: int,
                       batch_size: int) -> Generation:
    """``Summarizer.generate`` (greedy) end to end: chunking, encoder, decoding, timed as a user would see it."""
    summarizer = deployed.summarizer
    started = time.perf_counter()
    found = summarizer.generate(texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return Generation([h.tokens for h in found], [summarizer.decode(h) for h in found], seconds)


# --- the accuracy rows -----------------------------------------------------------------------------------------

def accuracy_rows(config: SummarizationValidationConfig, checkpoint: Seq2SeqCheckpoint, deployed: list[Deployed],
                  pairs: list[SummaryPair]) -> tuple[list[dict], list[dict]]:
    model = checkpoint.model
    data = SummaryData(pairs, checkpoint.tokenizer, checkpoint.info.chunk_settings,
                       SpecialTokens(**checkpoint.info.special_tokens))
    runtime_tokenizer = deployed[0].summarizer.tokenizer
    steps = deployed[0].summarizer.settings.default_max_new_tokens
    references = [p.summary for p in pairs]
    texts = [p.text for p in pairs]
    common = {"max_new_tokens": steps, "batch_size": config.batch_size, "device": config.device}
    with _decoder(model, checkpoint.reference_decoder):
        full = _decoded(torch_generation(model, data, mode="full", schedule=None, desc="pytorch-full", **common),
                        runtime_tokenizer)
    rows = [_row("pytorch-full", 1.0, full, references, config.seed)]
    disagreements: list[dict] = []
    for export in deployed:
        hard = _decoded(torch_generation(model, data, mode="hard", schedule=export.schedule,
                                         desc=f"pytorch-hard@{export.budget:g}", **common), runtime_tokenizer)
        rows.append(_row("pytorch-hard", export.budget, hard, references, config.seed, rows[0]))
        ours = runtime_generation(export, texts, max_new_tokens=steps, batch_size=config.batch_size)
        rows.append(_row("onnxruntime", export.budget, ours, references, config.seed, rows[0], hard)
                    | {"model": str(export.path), "providers": export.summarizer.graphs.encoder.get_providers()})
        disagreements += _disagreements(export.budget, ours, hard, pairs)
    return rows, disagreements


def _decoded(generation: Generation, tokenizer) -> Generation:
    """The runtime's decoding for every row, so that summaries differ only where tokens do."""
    generation.summaries = [clean_spacing(tokenizer.decode(t, skip_special_tokens=True)) for t in generation.tokens]
    return generation


def _row(backend: str, budget: float, generation: Generation, references: list[str], seed: int,
         full: dict | None = None, reference: Generation | None = None) -> dict:
    scores = rouge_scores(generation.summaries, references)
    low, high = rouge_bootstrap_interval(generation.summaries, references, "rougeL", BOOTSTRAP_SAMPLES, seed)
    full_l = full["rougeL"] if full else scores["rougeL"]
    row = {"backend": backend, "budget": budget,
           **{metric: round(scores[metric], 2) for metric in ("rouge1", "rouge2", "rougeL")},
           "rougeL_ci95": [round(low, 2), round(high, 2)],
           "rougeL_vs_full": round(scores["rougeL"] / full_l, 4) if full_l > 0 else None,
           "mean_summary_tokens": round(float(np.mean([len(t) for t in generation.tokens])), 2),
           "seconds": round(generation.seconds, 2),
           "documents_per_s": round(len(references) / max(generation.seconds, 1e-9), 3)}
    if reference is not None:
        row["token_agreement_with_reference"] = token_agreement(generation.tokens, reference.tokens)
    return row


def token_agreement(tokens: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> float:
    """The fraction of documents whose greedy token sequences are identical."""
    same = sum(list(a) == list(b) for a, b in zip(tokens, reference, strict=True))
    return round(same / max(len(tokens), 1), 4)


def _disagreements(budget: float, ours: Generation, reference: Generation, pairs: list[SummaryPair]) -> list[dict]:
    """The first documents whose tokens differ from pytorch-hard's, with both summaries and the first step that
    differs (a late first difference is a near-tie; a first-step one on many documents is systematic)."""
    shown = []
    for pair, a, b, text_a, text_b in zip(pairs, ours.tokens, reference.tokens, ours.summaries, reference.summaries,
                                         strict=True):
        if a != b:
            step = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            shown.append({"budget": budget, "id": pair.id, "first_different_step": step,
                          "onnxruntime": text_a, "pytorch_hard": text_b})
        if len(shown) == DISAGREEMENTS_SHOWN:
            break
    return shown


# --- speed and memory ------------------------------------------------------------------------------------------

@dataclass
class DecoderState:
    """After ``decoder_model``: the first logits, the self-attention cache and the cross-attention cache."""

    memory_mask: np.ndarray
    logits: np.ndarray
    self_cache: list[LayerCache]
    cross_cache: list[LayerCache]


def start_decoding(graphs: Seq2SeqGraphs, memory: np.ndarray, memory_mask: np.ndarray,
                   start_id: int) -> DecoderState:
    start = np.full((memory.shape[0], 1), start_id, dtype=np.int64)
    logits, self_cache, cross_cache = graphs.first_step(start, memory_mask, memory)
    return DecoderState(memory_mask, logits, self_cache, cross_cache)


def run_steps(graphs: Seq2SeqGraphs, state: DecoderState, steps: int) -> np.ndarray:
    """``steps`` greedy ``decoder_with_past`` steps after ``state`` that never stop at the end token (a fixed amount
    of work, equal for any two models); ``state`` is left as it was. Returns the tokens fed [batch, steps]."""
    logits, self_cache = state.logits, state.self_cache
    fed = []
    for _ in range(steps):
        tokens = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        fed.append(tokens)
        logits, self_cache = graphs.next_step(tokens, state.memory_mask, self_cache, state.cross_cache)
    return np.concatenate(fed, axis=1) if fed else np.zeros((state.logits.shape[0], 0), dtype=np.int64)


def cross_cache_bytes(cross_cache: Sequence[LayerCache]) -> int:
    """Bytes of the cross-attention cache as the decoder holds it: every layer's key and value arrays."""
    return int(sum(key.nbytes + value.nbytes for key, value in cross_cache))


def runtime_documents(summarizer: Summarizer, texts: Sequence[str]) -> list[list[list[int]]]:
    """The chunk rows ``Summarizer.generate`` cuts for ``texts``."""
    s = summarizer.settings
    return document_chunks(summarizer.tokenizer, list(texts), chunk_length=s.chunk_length,
                           max_source_tokens=s.max_source_tokens, cls_id=s.start_id, sep_id=s.end_id)


def _decoder_steps(export: Deployed) -> int:
    return min(DECODER_STEPS, export.summarizer.settings.max_new_tokens_limit)


def speed_rows(config: SummarizationValidationConfig, exports: list[Deployed], texts: list[str]) -> list[dict]:
    """Encoder, decoder step, fixed-step and summarize time, cross-attention cache and peak memory of each export on
    one batch of ``texts``; the first export is the full model."""
    steps = _decoder_steps(exports[0])
    workloads, facts = {}, {}
    for export in exports:
        documents = runtime_documents(export.summarizer, texts)
        workloads[export.budget], facts[export.budget] = timed_workloads(export.summarizer, documents, texts, steps)
    # Measurement-major order: the two models' runs of one measurement sit side by side in every round.
    calls = {(kind, budget): workloads[budget][kind] for kind in TIMED for budget in workloads}
    samples = interleaved_seconds(calls, config.rounds, settle_below_s=SETTLE_BELOW_S)
    rows = []
    for export in exports:
        median = {kind: float(np.median(samples[(kind, export.budget)])) for kind in TIMED}
        rows.append(_speed_row(config, export, facts[export.budget], median, steps, texts))
    _against_full(rows)
    return rows


def timed_workloads(summarizer: Summarizer, documents: list[list[list[int]]], texts: list[str],
                    steps: int) -> tuple[dict[str, Callable[[], object]], dict]:
    """The ``TIMED`` calls of one export on one batch, and what they compute (rows, memory tokens, cross-attention
    cache bytes, the tokens summarize generates): encoder, decoder and fixed steps on ``documents`` (chunk rows),
    summarize on ``texts``, which it cuts itself."""
    state = start_decoding(summarizer.graphs, *summarizer.memory(documents), summarizer.settings.start_id)
    graphs, start = summarizer.graphs, summarizer.settings.start_id
    calls = {"encoder": lambda: summarizer.memory(documents),
             "decoder": lambda: run_steps(graphs, state, steps),
             "fixed": lambda: run_steps(graphs, start_decoding(graphs, *summarizer.memory(documents), start), steps),
             "summarize": lambda: summarizer.summarize(texts, batch_size=len(texts))}
    return calls, _facts(summarizer, documents, state, texts)


def _facts(summarizer: Summarizer, documents: list, state: DecoderState, texts: list[str]) -> dict:
    found = summarizer.generate(texts, batch_size=len(texts))  # natural stopping: the tokens summarize generates
    return {"documents": len(documents), "encoder_rows": sum(len(d) for d in documents),
            "memory_tokens": int(state.memory_mask.shape[1]),
            "memory_tokens_mean": round(float(state.memory_mask.sum(1).mean()), 1),
            "cross_cache_bytes": cross_cache_bytes(state.cross_cache),
            "summarize_tokens": sum(len(h.tokens) + h.finished for h in found)}


def _speed_row(config: SummarizationValidationConfig, export: Deployed, facts: dict, median: dict, steps: int,
               texts: list[str]) -> dict:
    row = {"config": "onnxruntime-full" if export.budget >= 1.0 else "onnxruntime-retained", "budget": export.budget,
           **facts, "cross_cache_mib": round(facts["cross_cache_bytes"] / 2**20, 2),
           "encoder_ms": round(1000 * median["encoder"], 2),
           "decoder_step_ms": round(1000 * median["decoder"] / max(steps, 1), 3),
           "fixed_steps_ms": round(1000 * median["fixed"], 2),
           "summarize_ms": round(1000 * median["summarize"], 2)}
    if config.memory:
        row |= summarize_memory(export.path, texts, config.batch_size, config.threads)
    return row


def summarize_memory(export: Path, texts: list[str], batch_size: int, threads: int | None) -> dict:
    """Peak RSS above the loaded export of a fresh process summarizing ``texts``: the runtime's default options
    (CPU arena off) and ONNX Runtime's arena."""
    with tempfile.TemporaryDirectory(prefix="adaret-summarize-memory-") as work:
        texts_file = Path(work) / "texts.json"
        texts_file.write_text(json.dumps(list(texts)), encoding="utf-8")
        kwargs = {"model": str(export), "texts_file": str(texts_file), "batch_size": batch_size, "threads": threads}
        default = memory_mib(MEMORY_WORKLOAD, kwargs)
        arena = memory_mib(MEMORY_WORKLOAD, kwargs | {"memory": "arena"})
    return {"peak_memory_mib": default["peak_mib"], "peak_memory_mib_arena": arena["peak_mib"],
            "memory_method": "peak RSS delta, " + default["method"]}


def _against_full(rows: list[dict]) -> None:
    full = rows[0]
    for row in rows[1:]:
        for name, key in (("encoder_speedup", "encoder_ms"), ("decoder_speedup", "decoder_step_ms"),
                          ("fixed_steps_speedup", "fixed_steps_ms"), ("summarize_speedup", "summarize_ms")):
            row[name] = round(full[key] / row[key], 3) if row[key] > 0 else None
        row["cross_cache_reduction"] = round(1 - row["cross_cache_bytes"] / full["cross_cache_bytes"], 4)
        if row.get("peak_memory_mib") and full.get("peak_memory_mib"):
            row["memory_change"] = round(row["peak_memory_mib"] / full["peak_memory_mib"] - 1, 3)


# --- checks and the report -------------------------------------------------------------------------------------

def _checks(config: SummarizationValidationConfig, rows: list[dict]) -> list[dict]:
    def per_row(row: dict, name: str) -> list[dict]:
        agreement = row["token_agreement_with_reference"]
        return [{"check": "token_agreement", "target": name, "passed": agreement >= AGREEMENT_FLOOR,
                 "detail": f"the same greedy tokens as pytorch-hard on {agreement:.2%} of documents (floor "
                           f"{AGREEMENT_FLOOR:.0%})"}]

    return config.row_checks(rows, per_row, "ROUGE-L", "rougeL")


def _write(report: dict, out: Path) -> None:
    plots.rouge_bars(report["rows"], report["thresholds"]["accuracy_floor"], out / "rouge.png")
    plots.summarization_speed(report["speed"], report["batch_size"], out / "speed.png")
    write_report(report, out / "report.json", out / "report.md", markdown(report))


ACCURACY_COLUMNS = ("backend", "budget", "rouge1", "rouge2", "rougeL", "rougeL_ci95", "rougeL_vs_full",
                    "token_agreement_with_reference", "mean_summary_tokens", "documents_per_s")
SPEED_COLUMNS = ("config", "budget", "encoder_rows", "memory_tokens", "cross_cache_mib", "cross_cache_reduction",
                 "encoder_ms", "encoder_speedup", "decoder_step_ms", "decoder_speedup", "fixed_steps_ms",
                 "fixed_steps_speedup", "summarize_tokens", "summarize_ms", "summarize_speedup", "peak_memory_mib",
                 "peak_memory_mib_arena", "memory_change")


def markdown(report: dict) -> str:
    timing = report["speed_settings"]
    chunks = ", ".join(f"{k} {v}" for k, v in report["chunk_settings"].items())
    lines = report_opening(report, "adaret validation report: summarization",
                           f"; {report['data']}: {report['documents']} documents (random sample, seed "
                           f"{report['seed']}); {chunks}; greedy, at most {report['max_new_tokens']} new tokens; batch "
                           f"{report['batch_size']}, device {report['device']}, {report['threads']} threads. "
                           f"pytorch-full: {report['full_reference']}.")
    lines += ["## ROUGE", "", *table(report["rows"], ACCURACY_COLUMNS), "",
             "ROUGE F-measures in percent (rouge-score, Porter stemmer); `rougeL_ci95`: 95% bootstrap interval "
             "of the mean over documents; `rougeL_vs_full`: ROUGE-L over pytorch-full's. Token agreement: the "
             "fraction of documents whose greedy tokens equal pytorch-hard's at the export's schedule (documents "
             "batched at the runtime's row widths). onnxruntime is `Summarizer.generate`, timed end to end "
             "(chunking included); the PyTorch rows time `generate` only.", "",
             "## ONNX Runtime speed and memory", "", *table(report["speed"], SPEED_COLUMNS), "",
             f"One batch of {timing['documents']} evaluated documents; medians of {timing['rounds']} interleaved "
             "rounds. encoder: `Summarizer.memory` (every chunk row). decoder_step: one `decoder_with_past` call, "
             f"one token for each document, over {timing['decoder_steps']} steps that ignore the end token. "
             "fixed_steps: memory + first step + the same steps (equal work for both models). summarize: "
             "`Summarizer.summarize` with its own stopping (`summarize_tokens` generated, end tokens included). "
             "Cross-attention cache: bytes of the `present.*.encoder.*` arrays `decoder_model` returns. Peak memory: "
             "MiB of peak RSS above the loaded export, a fresh process summarizing the batch; runtime defaults (CPU "
             "arena off) and ONNX Runtime's arena. Speed-ups and changes are against onnxruntime-full (budget 1.0).",
             "", "## Checks", ""]
    lines += report_closing(report, "Documents where onnxruntime and pytorch-hard differ", lambda d: (
        f"b{d['budget']:g} {d['id']} (from step {d['first_different_step']}): onnxruntime {d['onnxruntime']!r}, "
        f"pytorch-hard {d['pytorch_hard']!r}"))
    return "\n".join(lines)
