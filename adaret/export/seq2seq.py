"""Summarization export: a retention encoder and its memory decoder as three ONNX graphs, checked by generating.

``run_summarization_export(config)`` writes, atomically (``adaret.core.outputs``), the layout of Optimum's
encoder-decoder exports (``adaret.core.seq2seq_graphs`` lists every input and output):

- ``encoder_model.onnx``: the top-M encoder at the budget (``TopMInference``: the same TopK/Gather rule as
  classification, K_l from the row length), dynamic rows and sequence; it outputs the compact memory and its mask.
  Token types are not an input: training encodes every chunk as one segment (no token types).
- ``decoder_model.onnx``: the first decoder step(s); it computes the cross-attention cache from the memory once.
- ``decoder_with_past_model.onnx``: one step after a cache; it returns only the self-attention cache.
- ``summarization.json``: what the runtime needs beside the graphs (``SummarizationSettings``), also recorded on
  the encoder graph as ``adaret.summarization`` next to the usual ``adaret.*`` metadata; ``export_report.json``;
  the tokenizer; ``manifest.json`` last.

The memory mask enters the decoder as the additive bias ``memory_bias`` (0 for a kept token, -1e4 for padding).

The gate: greedy generation through ONNX Runtime (``Seq2SeqGraphs.greedy``, the runtime's own loop) on random
documents (several batch sizes, odd lengths, ragged padding, multi-chunk documents whose padding-only rows the
runtime drops) and real text must give ``RetentionSeq2Seq.generate``'s tokens, logits within the tolerance at every
step (against teacher forcing on the reference tokens), and the same encoder memory (states within the tolerance
where kept, masks equal). Otherwise nothing is written (``ParityError``).

Not supported for summarization (one-line errors): ``--static``, ``--with-positions``, ``--batch``, a ``--scorer``
other than the learned gates, ``--budget auto``. The graph passes are not run (``--target`` is ignored); the report
says so.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from adaret import __version__
from adaret.core.chunks import chunk_ids, document_chunks, pad_chunks, plain_tokenizer
from adaret.core.constants import MIN_OPSET
from adaret.core.errors import AdaretError, ExportError, ParityError, root_cause
from adaret.core.fileio import atomic_file
from adaret.core.io_spec import (
    ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES,
    INPUT_IDS,
    LOGITS,
    SUMMARIZATION,
    decoder_cache_names,
)
from adaret.core.metadata import ExportMetadata
from adaret.core.onnx_files import save_model
from adaret.core.ort_sessions import make_session
from adaret.core.outputs import EXPORT_GRAPH, output_dir
from adaret.core.reports import CaseReport, every, worst
from adaret.core.seq2seq_graphs import (
    DECODER_GRAPH,
    DECODER_WITH_PAST_GRAPH,
    ENCODER_GRAPH,
    GRAPH_NAMES,
    SETTINGS_NAME,
    Seq2SeqGraphs,
    SummarizationSettings,
    assemble_memory,
)
from adaret.export.config import DEFAULT_SEQ_LENS, ExportConfig
from adaret.export.inference import TopMInference
from adaret.export.onnx_export import export_module
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import REPORT_NAME, TOKENIZER_FILES, _copy_tokenizer, deployment_schedule, validate_config
from adaret.modeling import DENOMINATOR, MIN_KEEP, KeepSchedule
from adaret.modeling.seq2seq import MemoryDecoder, RetentionSeq2Seq, memory_bias
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint, is_seq2seq_checkpoint

PARITY_MAX_NEW_TOKENS = 16  # steps compared per parity case (fewer where the checkpoint's summaries are shorter)
PARITY_RANDOM_DOCUMENTS = 8  # documents in the random-length case (the largest batch of the gate)
# Real text for the gate: a tokenizer's output, not uniform random ids (its word pieces and their frequencies).
PARITY_TEXT = (
    "The city council voted on Tuesday to expand the tram network to the northern suburbs, ending a debate that "
    "has run for almost a decade. Supporters said the line would cut commuting times by a third and take thousands "
    "of cars off the ring road, while opponents warned that the cost, now estimated at 1.2 billion euros, had "
    "doubled since the first plans were drawn up. Construction is due to start next spring and the first trams "
    "should run in 2029. The mayor called the vote a turning point for the region; local shopkeepers, who fear "
    "years of road works outside their doors, asked for compensation while the streets are closed. A second "
    "phase, to the airport, will be decided after the next election."
)
GRAPH_PASSES_NOTE = ("graph passes not run: the ONNX Runtime passes are written for the single encoder graph; the "
                     "three summarization graphs are deployed as exported")


# --- the decoder graphs ---------------------------------------------------------------------------------------


class DecoderFirstStep(nn.Module):
    """``decoder_model.onnx``: logits for the first step(s), the self-attention cache, and the cross-attention
    cache computed from the memory (once per document)."""

    def __init__(self, decoder: MemoryDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cross = self.decoder.cross_cache(encoder_hidden_states)
        bias = memory_bias(encoder_attention_mask.to(torch.float32))  # int64 0/1 -> 0 or -1e4
        logits, present = self.decoder(input_ids, bias, cross)
        return (logits, *(t for own, other in zip(present, cross, strict=True) for t in (*own, *other)))


class DecoderNextStep(nn.Module):
    """``decoder_with_past_model.onnx``: logits after the cached steps and the self-attention cache including them;
    the cross-attention cache is read, not returned (Optimum's layout)."""

    def __init__(self, decoder: MemoryDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                past: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        layers = range(self.decoder.num_layers)
        own = [(past[4 * i], past[4 * i + 1]) for i in layers]
        cross = [(past[4 * i + 2], past[4 * i + 3]) for i in layers]
        logits, present = self.decoder(input_ids, memory_bias(encoder_attention_mask.to(torch.float32)), cross, own)
        return (logits, *(t for pair in present for t in pair))


def export_encoder(model: RetentionSeq2Seq, schedule: KeepSchedule, *, opset: int = MIN_OPSET) -> onnx.ModelProto:
    module = TopMInference(model.retention, schedule).eval()
    return export_module(module, seq_len=None, batch=None, max_positions=model.encoder.max_positions, opset=opset)


def export_decoder(decoder: MemoryDecoder, *, opset: int = MIN_OPSET) -> onnx.ModelProto:
    dims = _decoder_dims(decoder)
    hidden = decoder.num_heads * decoder.head_size
    example = (torch.full((2, 2), 1, dtype=torch.long), torch.ones((2, 7), dtype=torch.long), torch.randn(2, 7, hidden))
    shapes = ({0: dims["batch"], 1: dims["steps"]}, {0: dims["batch"], 1: dims["memory"]},
              {0: dims["batch"], 1: dims["memory"]})
    return _export(DecoderFirstStep(decoder), example, [INPUT_IDS, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN_STATES],
                   [LOGITS, *decoder_cache_names(decoder.num_layers, "present")], shapes, opset)


def export_decoder_with_past(decoder: MemoryDecoder, *, opset: int = MIN_OPSET) -> onnx.ModelProto:
    dims = _decoder_dims(decoder)
    names = decoder_cache_names(decoder.num_layers, "past_key_values")
    # distinct example lengths (past 3, memory 7), so that no axis is mistaken for another
    past = tuple(torch.randn(2, decoder.num_heads, 3 if ".decoder." in name else 7, decoder.head_size)
                 for name in names)
    cache_shapes = tuple({0: dims["batch"], 2: dims["past" if ".decoder." in name else "memory"]} for name in names)
    example = (torch.full((2, 2), 1, dtype=torch.long), torch.ones((2, 7), dtype=torch.long), past)
    shapes = ({0: dims["batch"], 1: dims["steps"]}, {0: dims["batch"], 1: dims["memory"]}, cache_shapes)
    return _export(DecoderNextStep(decoder), example, [INPUT_IDS, ENCODER_ATTENTION_MASK, *names],
                   [LOGITS, *decoder_cache_names(decoder.num_layers, "present", encoder=False)], shapes, opset)


def _decoder_dims(decoder: MemoryDecoder) -> dict[str, torch.export.Dim]:
    positions = int(decoder.lm.config.max_position_embeddings)
    return {"batch": torch.export.Dim("batch", min=1, max=4096),
            "steps": torch.export.Dim("steps", min=1, max=positions),
            "past": torch.export.Dim("past", min=1, max=positions - 1),
            "memory": torch.export.Dim("memory", min=1)}


def _export(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple, opset: int) -> onnx.ModelProto:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), example, dynamo=True, opset_version=opset, optimize=True,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, verbose=False, report=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    _check_names(model, input_names, output_names)
    return model


def _check_names(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> None:
    """The exporter may drop an unused input or rename a duplicated output; the runtime feeds these exact names."""
    found = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if found != (inputs, outputs):
        raise RuntimeError(f"the exported graph's inputs/outputs {found[0][:3]}/{found[1][:3]} are not the expected "
                           f"{inputs[:3]}/{outputs[:3]}")
    for value in model.graph.input:  # batch must stay dynamic in every input
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise RuntimeError(f"the exporter fixed the batch axis of {value.name} to {dim.dim_value}")


# --- the parity gate ------------------------------------------------------------------------------------------


@dataclass
class SummaryParityCase:
    """One batch of documents run both ways."""

    name: str
    documents: int
    rows: int  # encoder rows with a real token (what the runtime encodes)
    padding_rows: int  # all-padding chunk rows of the reference's [documents, chunks, width] batch
    width: int  # tokens per encoder row
    memory: int  # the longest document memory, in tokens
    steps: int  # generated steps compared
    encoder_max_abs_diff: float  # over kept real tokens
    masks_equal: bool
    logits_max_abs_diff: float  # every step, every document
    tokens_equal: bool


class SummaryParityReport(CaseReport[SummaryParityCase]):
    summary_fields = ("encoder_max_abs_diff", "logits_max_abs_diff", "masks_equal", "tokens_equal")

    encoder_max_abs_diff = worst("encoder_max_abs_diff")
    logits_max_abs_diff = worst("logits_max_abs_diff")
    masks_equal = every("masks_equal")
    tokens_equal = every("tokens_equal")

    @property
    def passed(self) -> bool:
        return (bool(self.cases) and self.masks_equal and self.tokens_equal
                and max(self.encoder_max_abs_diff, self.logits_max_abs_diff) <= self.tolerance)

    def line(self) -> str:
        return (f"max |logit diff| {self.logits_max_abs_diff:.2e}, max |memory diff| {self.encoder_max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}), memory masks {'equal' if self.masks_equal else 'DIFFERENT'}, "
                f"greedy tokens {'identical' if self.tokens_equal else 'DIFFERENT'}")


Documents = list[list[list[int]]]  # documents -> chunks -> token ids ([CLS] piece [SEP])


def parity_documents(checkpoint: Seq2SeqCheckpoint, texts: Sequence[str] = (PARITY_TEXT,), *,
                     seed: int = 0) -> dict[str, Documents]:
    """The gate's batches, cut as training cuts documents: one short odd-length document; three ragged ones (the
    longest the checkpoint reads, a tiny one, one just past a chunk: padding-only rows, odd last chunks);
    ``PARITY_RANDOM_DOCUMENTS`` of random lengths; and the real ``texts`` with one random document."""
    settings = checkpoint.info.chunk_settings
    special = checkpoint.info.special_tokens
    vocab = model_vocabulary(checkpoint.model.retention, checkpoint.tokenizer)
    rng = np.random.default_rng(seed)
    piece, longest = settings.chunk_length - 2, settings.max_source_tokens

    def documents(lengths: Sequence[int]) -> Documents:
        return [chunk_ids(rng.integers(vocab.first_word_id, vocab.size, size=int(n)).tolist(),
                          chunk_length=settings.chunk_length, max_source_tokens=longest, cls_id=special["start"],
                          sep_id=special["end"]) for n in lengths]

    tokenizer = plain_tokenizer(checkpoint.tokenizer.backend_tokenizer)
    real = document_chunks(tokenizer, list(texts), chunk_length=settings.chunk_length, max_source_tokens=longest,
                           cls_id=special["start"], sep_id=special["end"])
    return {
        "single-odd": documents([min(longest, piece // 2 | 1)]),
        "ragged-multi-chunk": documents([longest, 5, min(longest, piece + 7)]),
        "random-lengths": documents(rng.integers(1, longest + 1, size=PARITY_RANDOM_DOCUMENTS)),
        "real-text": real + documents([rng.integers(1, longest + 1)]),
    }


@torch.no_grad()
def check_summarization_parity(model: RetentionSeq2Seq, schedule: KeepSchedule, graphs: Seq2SeqGraphs,
                               cases: dict[str, Documents], special: dict[str, int], *, max_new_tokens: int,
                               tolerance: float) -> SummaryParityReport:
    """Each case through the graphs as the runtime runs it (real rows only, memories assembled per document) and
    through PyTorch on the padded [documents, chunks, width] batch training uses."""
    report = SummaryParityReport(tolerance)
    encoder = TopMInference(model.retention, schedule).eval()
    for name, documents in cases.items():
        ids, mask = pad_chunks(documents, special["pad"])
        real_rows = mask.any(-1)
        states, memory_mask = graphs.encode(ids[real_rows], mask[real_rows])
        want_states, want_mask = (t.numpy() for t in encoder(*map(torch.from_numpy, (ids[real_rows],
                                                                                     mask[real_rows]))))
        memory, memory_mask_docs = assemble_memory(states, memory_mask, [len(d) for d in documents])
        got = graphs.greedy(memory, memory_mask_docs, start_id=special["start"], end_id=special["end"],
                            max_new_tokens=max_new_tokens, keep_logits=True)
        want_tokens, want_logits = _reference_generation(model, schedule, ids, mask, special, max_new_tokens)
        tokens_equal = np.array_equal(got.tokens, want_tokens)
        steps = min(len(got.logits), want_logits.shape[1])
        logits_diff = _max_abs(np.stack(got.logits[:steps], axis=1), want_logits[:, :steps])
        masks_equal = np.array_equal(memory_mask, want_mask)
        kept = want_mask == 1
        encoder_diff = _max_abs(states[kept], want_states[kept]) if masks_equal else float("inf")
        report.cases.append(SummaryParityCase(name, len(documents), int(real_rows.sum()),
                                              int((~real_rows).sum()), ids.shape[2], memory.shape[1], steps,
                                              encoder_diff, masks_equal, logits_diff, tokens_equal))
    return report


def _reference_generation(model: RetentionSeq2Seq, schedule: KeepSchedule, ids: np.ndarray, mask: np.ndarray,
                          special: dict[str, int], max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``generate``'s tokens, and the logits of every step by teacher forcing on them (the same computation
    without the cache: a cache bug in the graphs shows as a logit difference)."""
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    tokens = model.generate(ids_t, mask_t, start_id=special["start"], end_id=special["end"],
                            max_new_tokens=max_new_tokens, mode="hard", schedule=schedule)
    start = torch.full((tokens.shape[0], 1), special["start"], dtype=torch.long)
    decoder_inputs = torch.cat([start, tokens[:, :-1]], dim=1)
    logits = model(ids_t, mask_t, decoder_inputs, mode="hard", schedule=schedule).logits
    return tokens.numpy(), logits.numpy()


def _max_abs(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0


def open_graphs(directory: Path, num_layers: int) -> Seq2SeqGraphs:
    return Seq2SeqGraphs(*(make_session(directory / name) for name in GRAPH_NAMES), num_layers=num_layers)


# --- the export -------------------------------------------------------------------------------------------------


@dataclass
class SummarizationExportResult:
    config: ExportConfig
    schedule: KeepSchedule
    training_budget: float | None
    checkpoint_sha256: str
    settings: SummarizationSettings
    keep_counts: dict[int, list[int]]  # K per encoder layer at a few row lengths
    parity: SummaryParityReport
    seconds: dict[str, float]  # per graph's export, the parity gate, and the total
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per graph
    notes: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    report_path: Path | None = None

    @property
    def graph_paths(self) -> list[Path]:
        return [self.out_dir / name for name in GRAPH_NAMES] if self.out_dir else []


def is_summarization_config(config: ExportConfig) -> bool:
    """``--task summarization``, or no ``--task`` and a summarization checkpoint."""
    if config.task is not None:
        return config.task == SUMMARIZATION.task
    return is_seq2seq_checkpoint(config.checkpoint_dir)


def run_summarization_export(config: ExportConfig, *,
                             parity_texts: Sequence[str] = (PARITY_TEXT,)) -> SummarizationExportResult:
    """Export the three graphs at ``config.budget``, check them by generating, publish them; raise on failure."""
    started = time.perf_counter()
    checkpoint_dir = config.checkpoint_dir
    _check_supported(config)
    checkpoint = Seq2SeqCheckpoint.from_pretrained(checkpoint_dir, attn_implementation="eager")
    model = checkpoint.model.eval()
    chunks = checkpoint.info.chunk_settings
    if chunks.chunk_length > model.encoder.max_positions:
        raise AdaretError(f"checkpoint {checkpoint_dir}: chunk_length {chunks.chunk_length} exceeds the encoder's "
                          f"{model.encoder.max_positions} positions")
    validate_config(config, model.encoder.max_positions)
    schedule, notes = deployment_schedule(checkpoint, config.budget, checkpoint_dir)  # before any output exists
    settings = _runtime_settings(checkpoint, config.budget)
    lengths = sorted({n for n in (config.seq_lens or DEFAULT_SEQ_LENS) if n <= chunks.chunk_length}
                     | {chunks.chunk_length})
    training = checkpoint.info.training.get("budget")
    result = SummarizationExportResult(config, schedule, None if training is None else float(training),
                                       checkpoint.sha256, settings, {n: schedule.keep_counts(n) for n in lengths},
                                       SummaryParityReport(config.tolerance), {},
                                       notes=[*notes, GRAPH_PASSES_NOTE])
    with output_dir(config.out_dir, overwrite=config.overwrite, what="export directory") as out:
        staged = out.staging("export")
        _copy_tokenizer(checkpoint_dir, staged)
        protos = _export_graphs(model, schedule, config, result.seconds)
        _metadata(checkpoint, result, protos[ENCODER_GRAPH]).write_to(protos[ENCODER_GRAPH])
        for name, proto in protos.items():
            save_model(proto, staged / name)
            result.sizes[name] = (staged / name).stat().st_size
        settings.write(staged)
        result.parity = _gate(checkpoint, schedule, staged, settings, parity_texts, config.tolerance, result.seconds)
        result.seconds["total"] = round(time.perf_counter() - started, 2)
        _write_report(result, staged)
        out.publish(staged, supersedes=_export_file, manifest=True)
    result.out_dir, result.report_path = config.out_dir, config.out_dir / REPORT_NAME
    return result


def _check_supported(config: ExportConfig) -> None:
    if not is_seq2seq_checkpoint(config.checkpoint_dir):
        raise AdaretError(f"--task summarization: {config.checkpoint_dir} is not a summarization checkpoint (its "
                          "config.json must have format adaret-summarization-checkpoint)")
    refused = {"--static": config.static, "--with-positions": config.with_positions,
               "--batch": config.batch is not None, f"--scorer {config.scorer}": config.scorer != "learned",
               "--budget auto": bool(config.budget_search)}
    flag = next((name for name, given in refused.items() if given), None)
    if flag is not None:
        raise AdaretError(f"{flag} is not supported for summarization exports (dynamic graphs, learned gates, "
                          "a numeric budget only)")


def _runtime_settings(checkpoint: Seq2SeqCheckpoint, budget: float) -> SummarizationSettings:
    decoder, chunks, special = checkpoint.model.decoder, checkpoint.info.chunk_settings, checkpoint.info.special_tokens
    return SummarizationSettings(
        chunk_length=chunks.chunk_length, max_source_tokens=chunks.max_source_tokens,
        max_target_tokens=chunks.max_target_tokens, start_id=int(special["start"]), end_id=int(special["end"]),
        pad_id=int(special["pad"]), num_layers=decoder.num_layers, num_heads=decoder.num_heads,
        head_size=decoder.head_size, decoder_max_positions=int(decoder.lm.config.max_position_embeddings),
        budget=float(budget))


def _export_graphs(model: RetentionSeq2Seq, schedule: KeepSchedule, config: ExportConfig,
                   seconds: dict[str, float]) -> dict[str, onnx.ModelProto]:
    exporters = {ENCODER_GRAPH: lambda: export_encoder(model, schedule, opset=config.opset),
                 DECODER_GRAPH: lambda: export_decoder(model.decoder, opset=config.opset),
                 DECODER_WITH_PAST_GRAPH: lambda: export_decoder_with_past(model.decoder, opset=config.opset)}
    protos = {}
    for name, export in exporters.items():
        started = time.perf_counter()
        try:
            protos[name] = export()
        except Exception as exc:  # torch.export / torch.onnx: pages of advice around one line that matters
            raise ExportError(f"the ONNX exporter failed on {name} of checkpoint {config.checkpoint_dir} at budget "
                              f"{config.budget:g}: {root_cause(exc)}") from exc
        seconds[name] = round(time.perf_counter() - started, 2)
    return protos


def _gate(checkpoint: Seq2SeqCheckpoint, schedule: KeepSchedule, directory: Path, settings: SummarizationSettings,
          texts: Sequence[str], tolerance: float, seconds: dict[str, float]) -> SummaryParityReport:
    started = time.perf_counter()
    graphs = open_graphs(directory, settings.num_layers)
    steps = min(PARITY_MAX_NEW_TOKENS, settings.default_max_new_tokens)
    report = check_summarization_parity(checkpoint.model, schedule, graphs, parity_documents(checkpoint, texts),
                                        checkpoint.info.special_tokens, max_new_tokens=steps, tolerance=tolerance)
    seconds["parity"] = round(time.perf_counter() - started, 2)
    if not report.passed:
        raise ParityError(f"summarization graphs: ONNX Runtime disagrees with PyTorch ({report.line()}); nothing "
                          "written")
    return report


def _export_file(name: str) -> bool:
    """A file an earlier export (of any task) wrote: replaced, or removed, by this one."""
    graph_data = name.removesuffix(".data") in GRAPH_NAMES
    return (name in (*GRAPH_NAMES, SETTINGS_NAME, REPORT_NAME, *TOKENIZER_FILES) or graph_data
            or bool(EXPORT_GRAPH.fullmatch(name)))


def _metadata(checkpoint: Seq2SeqCheckpoint, result: SummarizationExportResult,
              proto: onnx.ModelProto) -> ExportMetadata:
    model, schedule = checkpoint.model, result.schedule
    rule = (f"K_l = max({MIN_KEEP}, (num_l * n + {DENOMINATOR - 1}) // {DENOMINATOR}) for a gated layer with "
            f"num_l < {DENOMINATOR}, K_l = n otherwise; n = encoder row length")
    return ExportMetadata(
        version=__version__, budget=float(result.config.budget), training_budget=result.training_budget,
        schedule={"denominator": DENOMINATOR, "numerators": list(schedule.numerators),
                  "fractions": schedule.fractions, "measured": checkpoint.info.schedule["keep_fractions"]},
        form="dynamic", max_positions=model.encoder.max_positions, keep_rule=rule,
        keep_counts={str(n): counts for n, counts in result.keep_counts.items()},
        checkpoint_sha256=result.checkpoint_sha256, scorer="learned", task=SUMMARIZATION.task,
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), result.config.opset),
        input_names=[i.name for i in proto.graph.input], output_names=[o.name for o in proto.graph.output],
        vocabulary=model_vocabulary(model.retention, checkpoint.tokenizer).as_dict(),
        extra={"summarization": json.dumps(asdict(result.settings))},
    )


def _write_report(result: SummarizationExportResult, directory: Path) -> Path:
    report = {
        "adaret_version": __version__,
        "task": SUMMARIZATION.task,
        "budget": result.config.budget,
        "training_budget": result.training_budget,
        "schedule_fractions": result.schedule.fractions,
        "schedule_budget": result.schedule.budget,
        "checkpoint_sha256": result.checkpoint_sha256,
        "keep_counts": {str(n): counts for n, counts in result.keep_counts.items()},
        "settings": asdict(result.settings),
        "graphs": [{"path": name, "size_bytes": result.sizes[name], "seconds": result.seconds[name]}
                   for name in GRAPH_NAMES],
        "graph_passes": None,
        "parity": result.parity.as_dict(),
        "seconds": result.seconds,
        "notes": result.notes,
    }
    path = directory / REPORT_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


def summary_lines(result: SummarizationExportResult) -> list[str]:
    """What ``adaret export`` prints after a summarization export."""
    fractions = " ".join(f"{f:.3f}" for f in result.schedule.fractions)
    lines = [f"summarization, budget {result.config.budget:g}; keep fractions per encoder layer: {fractions}"]
    lines += [f"note: {note}" for note in result.notes]
    for n, counts in result.keep_counts.items():
        lines.append(f"  K per layer at chunk length {n}: {counts}  (memory: {counts[-1]} of {n} tokens per chunk)")
    for path in result.graph_paths:
        lines.append(f"{path}  [{result.sizes[path.name] / 2**20:.1f} MiB, exported in "
                     f"{result.seconds[path.name]:.1f}s]")
    cases = result.parity.cases
    lines.append(f"parity vs PyTorch (greedy generation, {len(cases)} batches, {sum(c.documents for c in cases)} "
                 f"documents, {result.seconds.get('parity', 0):.1f}s): {result.parity.line()}")
    lines.append(f"runtime settings: {result.out_dir / SETTINGS_NAME if result.out_dir else SETTINGS_NAME}")
    lines.append(f"report: {result.report_path}")
    return lines
