"""INT8 post-training quantisation of a retained graph: QDQ that ONNX Runtime runs and TensorRT parses.

Flow: check the inputs (fp32 graph, matching checkpoint and tokenizer, writable output) -> plan which nodes
are quantised (``graph``) -> SmoothQuant the planned MatMuls (``smoothing``) -> collect activation ranges over
real task data, a few batches at a time -> save them as ONNX Runtime's calibration cache next to the model ->
``quantize_static`` from that cache -> if token agreement on the calibration examples is below the target, put the
most sensitive MatMuls back in fp32 and quantise again (``sensitivity``) -> fp32 vs INT8 on those examples
(``verify``) -> the calibration record (``record``).

The export's ``adaret.task`` picks the data (``adaret.calibration.int8.reader.calibration_set``): labelled texts
for classification, SQuAD questions cut into the export's windows for question answering.

The checkpoint is read by the caller's ``read_checkpoint`` (``adaret.calibration.checkpoint``): its config
checks and its tokenizer live with torch and transformers, which this package does not import.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from adaret.calibration.data import QuestionSet, calibration_data, check_batching, default_data, default_split
from adaret.calibration.int8 import graph as qgraph
from adaret.calibration.int8.defaults import SMOOTH_ALPHA, TARGET_AGREEMENT
from adaret.calibration.int8.reader import CalibrationReader, CalibrationSet, calibration_set
from adaret.calibration.int8.record import CalibrationRecord, record_path, scales_sha256
from adaret.calibration.int8.sensitivity import SEARCH_TEXTS, SearchReport, search
from adaret.calibration.int8.smoothing import SmoothReport, smooth
from adaret.calibration.int8.verify import Agreement, SpanAgreement
from adaret.core.errors import AdaretError
from adaret.core.fileio import STAGING_SUFFIX, sha256_file
from adaret.core.metadata import ExportMetadata
from adaret.core.outputs import output_file, refresh_manifest

METHODS = ("entropy", "minmax", "percentile")
BACKENDS = ("ort", "modelopt")
# Percentile for ORT: on BBC News at budget 0.4 it kept the most fp32 token choices, with and without the
# agreement search (99.25% and 98.85%; entropy and minmax 98.3% before the search), docs/calibration.md.
# ModelOpt offers no percentile.
DEFAULT_METHODS = {"ort": "percentile", "modelopt": "entropy"}
CACHE_SUFFIX = ".calib_cache.json"
PACKED_ATTENTION = "com.microsoft:Attention"
# Batches folded into the ranges/histograms per collect_data call. ORT's histogram calibrators keep every output
# of one call in memory (GBs at seq 512 and 512 samples) and stack them, which fails when batches are padded to
# different lengths; one batch per call bounds memory and lets each batch keep its own length.
CHUNK_BATCHES = 1


@dataclass
class QuantizeConfig:
    checkpoint: str
    onnx: str
    output: str
    data: str | None = None  # None: bbc-news for classification, squad for question answering
    samples: int = 512
    method: str | None = None  # None: DEFAULT_METHODS[backend]
    backend: str = "ort"
    split: str | None = None
    seed: int | None = None
    max_length: int | None = None  # classification: tokens per text; question answering: the runtime's length cap
    batch_size: int = 8
    smooth_alpha: float | None = SMOOTH_ALPHA  # SmoothQuant migration strength; None: no smoothing
    target_agreement: float | None = TARGET_AGREEMENT  # on the calibration texts (ORT backend); None: no search
    progress: bool = True
    command: str = ""
    overwrite: bool = False  # replace an existing ``output`` (and its calibration record and cache)

    def __post_init__(self) -> None:
        if self.method is None:
            self.method = DEFAULT_METHODS.get(self.backend, "entropy")
        if self.smooth_alpha is not None and not 0.0 < self.smooth_alpha <= 1.0:
            raise AdaretError(f"--smooth-alpha must be in (0, 1], got {self.smooth_alpha}")
        if self.target_agreement is not None and not 0.0 < self.target_agreement <= 1.0:
            raise AdaretError(f"--target-agreement must be in (0, 1], got {self.target_agreement}")
        check_batching(self.batch_size, self.max_length)


@dataclass
class QuantizeResult:
    output: Path
    record_path: Path
    record: CalibrationRecord
    plan: qgraph.QuantPlan
    cache_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    smoothing: SmoothReport | None = None
    search: SearchReport | None = None
    agreement: Agreement | SpanAgreement | None = None  # fp32 vs INT8 on the first SEARCH_TEXTS calibration examples


@dataclass(frozen=True)
class CheckpointParts:
    """What INT8 calibration reads from the checkpoint the graph was exported from (never its weights)."""

    info: dict[str, Any]  # config.json, checked as loading the checkpoint checks it
    # called as tokenizer(texts, truncation=True, max_length=n); has pad_token_id, len() and (for question answering)
    # the fast tokenizer's backend_tokenizer
    tokenizer: Any
    sha256: str


CheckpointReader = Callable[[Path], CheckpointParts]


@dataclass
class _Inputs:
    """What the checks resolved: the graph, the checkpoint's digest and the encoded calibration examples."""

    model: onnx.ModelProto
    checkpoint_sha256: str
    examples: CalibrationSet
    data: dict  # what the record says about them

    @cached_property
    def search_set(self) -> CalibrationSet:
        """The first SEARCH_TEXTS examples, encoded once for the agreement search and the fp32 vs INT8 check."""
        return self.examples.head(SEARCH_TEXTS)


def quantize(config: QuantizeConfig, read_checkpoint: CheckpointReader) -> QuantizeResult:
    """Quantise ``config.onnx``; ``read_checkpoint`` reads ``config.checkpoint`` once the graph has passed its
    checks (``adaret.calibration.checkpoint.quantize`` passes the reader that loads the tokenizer)."""
    if config.method not in METHODS:
        raise AdaretError(f"unknown calibration method {config.method!r}; use {', '.join(METHODS)}")
    if config.backend not in BACKENDS:
        raise AdaretError(f"unknown backend {config.backend!r}; use {', '.join(BACKENDS)}")
    output = Path(config.output)
    _check_output(Path(config.onnx), output)
    with output_file(output, overwrite=config.overwrite, what="output"):
        result = _quantize(config, output, read_checkpoint)
        refresh_manifest(output.parent, [output.name, result.record_path.name]
                         + ([result.cache_path.name] if result.cache_path else []))
    return result


def _quantize(config: QuantizeConfig, output: Path, read_checkpoint: CheckpointReader) -> QuantizeResult:
    ir_model = qgraph.load(_read_graph(Path(config.onnx)))
    qgraph.check_not_quantized(ir_model, config.onnx)
    plan = qgraph.plan_quantization(ir_model)
    inputs = _resolve_inputs(config, ir_model, read_checkpoint)
    notes = [] if plan.tensorrt_input else [
        f"the graph has ONNX Runtime fused ops ({', '.join(plan.custom_ops)}): the INT8 file runs on ONNX Runtime "
        "only; for TensorRT quantize a graph without them (model.onnx, or adaret optimize --target tensorrt)"]
    if PACKED_ATTENTION in plan.custom_ops:
        notes.append("packed Attention computes Q, K and V in fp32 inside one node; for a faster INT8 graph quantize "
                     "an `adaret optimize --target ort-cpu-int8` output instead")
    smoothing = None
    if config.smooth_alpha is not None:
        smoothing = smooth(ir_model, plan.quantize, _reader(inputs, config, "smoothing batches"),
                           config.smooth_alpha)
    named = qgraph.ir.serde.serialize_model(ir_model)
    search = None
    if config.backend == "modelopt":
        cache = None
        _quantize_modelopt(named, inputs, plan, config, output)
    else:
        cache, search = _quantize_ort(named, inputs, plan, config, output)
        if search is not None and not search.reached:
            notes.append(agreement_shortfall(search))
    agreement = inputs.search_set.agreement(inputs.model, output)
    record = _record(config, inputs, plan, output, cache, notes, smoothing, search, agreement)
    return QuantizeResult(output, record.write(record_path(output)), record, plan, cache, notes, smoothing, search,
                          agreement)


def agreement_shortfall(search: SearchReport) -> str:
    """The note for a search that missed its target: it states the number it compared with the target, the 95%
    lower bound, not the point estimate (which may well be above the target)."""
    return (f"token agreement on the calibration texts is {search.agreement:.4f}, but its 95% lower bound "
            f"{search.agreement_lower:.4f} is below the target {search.target} even with {len(search.restored)} "
            "MatMuls back in fp32")


# ------------------------------------------------------------------------------------------------- checks


def _check_output(source: Path, output: Path) -> None:
    if not source.is_file():
        raise AdaretError(f"ONNX model {source} does not exist")
    if output.resolve() == source.resolve():
        raise AdaretError(f"output {output} would overwrite the fp32 model; choose another -o")
    if output.suffix != ".onnx":
        raise AdaretError(f"output {output} should end in .onnx")
    if output.is_dir():
        raise AdaretError(f"output {output} is a directory, not a file")
    if output.exists() and not os.access(output, os.W_OK):
        raise AdaretError(f"output {output} is not writable")


def _read_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError/OSError/ValueError depending on the damage
        raise AdaretError(f"cannot read ONNX model {path}: {exc}") from None


def _resolve_inputs(config: QuantizeConfig, ir_model, read_checkpoint: CheckpointReader) -> _Inputs:
    checkpoint_dir = Path(config.checkpoint)
    checkpoint = read_checkpoint(checkpoint_dir)
    info, tokenizer, digest = checkpoint.info, checkpoint.tokenizer, checkpoint.sha256
    meta = ExportMetadata.from_props(ir_model.metadata_props, Path(config.onnx).name)
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != digest:
        raise AdaretError(f"{config.onnx} was exported from another checkpoint (metadata checkpoint_sha256 "
                          f"{meta.checkpoint_sha256[:12]}..., {checkpoint_dir} is {digest[:12]}...)")
    _check_vocab(ir_model, tokenizer, config.onnx, checkpoint_dir)
    labels = meta.label_names
    if labels and labels != list(info["retention"].get("label_names", labels)):
        raise AdaretError(f"{config.onnx} and {checkpoint_dir} have different label names")
    examples, data = _examples(config, ir_model, meta, tokenizer, info.get("training", {}))
    return _Inputs(qgraph.ir.serde.serialize_model(ir_model), digest, examples, data)


def _examples(config: QuantizeConfig, ir_model, meta: ExportMetadata, tokenizer,
              training: dict) -> tuple[CalibrationSet, dict]:
    """The calibration examples of the export's task, encoded for its input shape, and what the record says of
    them."""
    seed = int(training.get("seed", 0)) if config.seed is None else config.seed
    fold = int(training.get("eval_fold", 0)) if config.seed is None else 0  # the checkpoint's own split
    dims = qgraph.gf.input_dims(ir_model).get("input_ids", [])
    seq_len = dims[1] if len(dims) == 2 and isinstance(dims[1], int) else None
    batch_size = dims[0] if dims and isinstance(dims[0], int) else config.batch_size
    dataset = config.data or default_data(meta.task)
    split = config.split or default_split(dataset, meta.task)
    found = calibration_data(meta.task, dataset, samples=config.samples, split=split, seed=seed, eval_fold=fold)
    examples = calibration_set(meta, found, tokenizer, batch_size=batch_size, seq_len=seq_len,
                               max_length=_max_length(config, meta, training))
    data = {"task": meta.task, "dataset": dataset, "split": split, "seed": seed, "eval_fold": fold,
            "batch_size": batch_size,
            **examples.describe(), **({"files": found.files} if isinstance(found, QuestionSet) else {})}
    return examples, data


def _max_length(config: QuantizeConfig, meta: ExportMetadata, training: dict) -> int | None:
    """Classification: tokens per text, the checkpoint's training length by default, within the position table.
    Question answering: only a cap on the runtime's widths (the windows come from the export's settings)."""
    if meta.question_answering is not None:
        return config.max_length
    max_length = int(training.get("max_length", 512)) if config.max_length is None else config.max_length
    return min(max_length, meta.max_positions) if meta.max_positions else max_length


def _check_vocab(ir_model, tokenizer, onnx_label: str, checkpoint_dir: Path) -> None:
    rows = qgraph.gf.vocab_size(ir_model)
    if rows is not None and len(tokenizer) > rows:
        raise AdaretError(f"the tokenizer of {checkpoint_dir} has {len(tokenizer)} tokens but {onnx_label} embeds "
                          f"only {rows}: tokenizer and model do not match")


# ------------------------------------------------------------------------------------------------- ORT


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile}[method]


def ort_options(plan: qgraph.QuantPlan) -> dict:
    """quantize_static arguments for TensorRT-style QDQ: symmetric INT8, per-channel weights, inputs only.

    Activations are INT8 (zero point 0) in a TensorRT input. A graph with ONNX Runtime fused ops runs on ONNX
    Runtime only, and there they are UINT8 with zero point 128: the same 255 levels, in the type ONNX Runtime's
    x86 integer GEMMs take. ORT converts INT8 activations to that form itself, but only where one Q feeds one
    DQ, and its common-subexpression pass merges the Q/K/V projections' three Qs into one, which then stay
    fp32 MatMuls behind DequantizeLinear.
    """
    from onnxruntime.quantization import QuantFormat, QuantType

    activations = QuantType.QInt8 if plan.tensorrt_input else QuantType.QUInt8
    return dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=list(qgraph.QUANTIZED_OPS),
                nodes_to_quantize=plan.quantize, nodes_to_exclude=sorted(plan.exclude), per_channel=True,
                activation_type=activations, weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               # Q/DQ on GEMM inputs only; an output pair would sit before the float bias Add
                               "OpTypesToExcludeOutputQuantization": list(qgraph.QUANTIZED_OPS)})


def collect_ranges(model: onnx.ModelProto, batches: Iterator[dict], method: str, chunk: int = CHUNK_BATCHES):
    """Activation ranges of every MatMul input, folded in a few batches at a time (bounded memory)."""
    from onnxruntime.quantization import create_calibrator

    with tempfile.TemporaryDirectory(prefix="adaret-calib-") as tmp:
        source = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(source))  # not as external data: that would rewrite ``model`` in place
        calibrator = create_calibrator(source, list(qgraph.QUANTIZED_OPS),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method),
                                       providers=["CPUExecutionProvider"], extra_options={"symmetric": True})
        seen = 0
        while True:
            part = [feeds for _, feeds in zip(range(chunk), batches, strict=False)]
            if not part:
                break
            seen += len(part)
            with _quiet_ort():
                calibrator.collect_data(_ListReader(part))
        if not seen:
            raise AdaretError("no calibration data: the reader produced no batches")
        with _quiet_ort():
            return calibrator.compute_data()


@contextlib.contextmanager
def _quiet_ort():
    """ORT's calibrators print a line per batch and quantize_static warns about pre-processing on the root
    logger; both would break the progress bar and say nothing the record does not."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _ListReader:
    def __init__(self, items: list[dict]):
        self._items = iter(items)

    def get_next(self) -> dict | None:
        return next(self._items, None)


def _reader(inputs: _Inputs, config: QuantizeConfig, desc: str) -> Iterator[dict]:
    reader = CalibrationReader(inputs.examples, input_names=[i.name for i in inputs.model.graph.input],
                               progress=config.progress, desc=desc)
    return iter(reader.get_next, None)


def _quantize_ort(model: onnx.ModelProto, inputs: _Inputs, plan: qgraph.QuantPlan, config: QuantizeConfig,
                  output: Path) -> tuple[Path, SearchReport | None]:
    from onnxruntime.quantization import quantize_static, save_tensors_data

    ranges = collect_ranges(model, _reader(inputs, config, "calibration batches"), config.method)
    cache = output.with_name(output.name.removesuffix(".onnx") + CACHE_SUFFIX)
    report = None
    with _staging(output) as staged:
        save_tensors_data(ranges, staged / cache.name)

        def quantize_to(path: Path) -> onnx.ModelProto:
            with _quiet_ort():
                quantize_static(model, path, calibration_data_reader=None,
                                calibrate_method=_ort_method(config.method),
                                calibration_cache_path=staged / cache.name, **ort_options(plan))
            return _finish(path, inputs, config, plan)

        quantized = quantize_to(staged / output.name)
        if config.target_agreement is not None and plan.score_topk:  # without gates no token choice can flip
            report = _search(model, quantized, inputs, config, plan)
            if report.restored:
                quantize_to(staged / output.name)
        os.replace(staged / cache.name, cache)
        os.replace(staged / output.name, output)
    return cache, report


def _search(model: onnx.ModelProto, quantized: onnx.ModelProto, inputs: _Inputs, config: QuantizeConfig,
            plan: qgraph.QuantPlan) -> SearchReport:
    """Token agreement on the calibration examples; MatMuls it puts back in fp32 leave the plan with a reason."""
    subset = inputs.search_set
    planned = list(subset.planned())
    names = [i.name for i in inputs.model.graph.input]
    batches = [{name: feeds[name] for name in names} for _, feeds in planned]
    examples = [subset.example_of_rows(rows) for rows, _ in planned]
    report = search(inputs.model, quantized, plan.quantize, batches, config.target_agreement, quantized_from=model,
                    examples=examples)
    for name in report.restored:
        plan.quantize.remove(name)
        plan.exclude[name] = "token-agreement"
    return report


# ------------------------------------------------------------------------------------------------- ModelOpt


def modelopt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("modelopt") is not None


def _quantize_modelopt(model: onnx.ModelProto, inputs: _Inputs, plan: qgraph.QuantPlan, config: QuantizeConfig,
                       output: Path) -> None:
    """NVIDIA ModelOpt's ONNX PTQ (it also emits TensorRT-style QDQ); same data, same exclusions."""
    if not modelopt_available():
        raise AdaretError("--backend modelopt needs nvidia-modelopt (pip install adaret[gpu]); use --backend ort")
    from modelopt.onnx.quantization import quantize as mo_quantize

    if config.method == "percentile":
        raise AdaretError("--backend modelopt calibrates with entropy or minmax (its 'max'), not percentile")
    names = [i.name for i in inputs.model.graph.input]
    batches = [{name: feeds[name] for name in names} for feeds in inputs.examples.fixed_length()]
    calibration = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    with _staging(output) as staged:
        source = staged / "source.onnx"
        onnx.save_model(model, str(source))
        mo_quantize(onnx_path=str(source), quantize_mode="int8", calibration_data=calibration,
                    calibration_method="entropy" if config.method == "entropy" else "max",
                    nodes_to_exclude=sorted(plan.exclude), op_types_to_quantize=list(qgraph.QUANTIZED_OPS),
                    output_path=str(staged / output.name))
        _finish(staged / output.name, inputs, config, plan)
        os.replace(staged / output.name, output)


# ------------------------------------------------------------------------------------------------- output


class _staging:
    """A temporary directory next to the output: files move into place only when everything succeeded."""

    def __init__(self, output: Path):
        self.output = output

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.", suffix=STAGING_SUFFIX,
                                          dir=self.output.parent))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _finish(path: Path, inputs: _Inputs, config: QuantizeConfig, plan: qgraph.QuantPlan) -> onnx.ModelProto:
    """Keep non-quantised consumers in float, carry the export's metadata over and mark the file as INT8."""
    model = qgraph.gf.load_model(path)
    qgraph.restore_float_consumers(model, set(plan.quantize))
    quantized = qgraph.ir.serde.serialize_model(model)
    meta = ExportMetadata.from_model(inputs.model).updated(
        quantization=f"int8-qdq ({config.backend}, {config.method})", calibration_record=record_path(path).name)
    meta.write_to(quantized)
    onnx.save_model(quantized, str(path))
    return quantized


def _record(config: QuantizeConfig, inputs: _Inputs, plan: qgraph.QuantPlan, output: Path, cache: Path | None,
            notes: list[str], smoothing: SmoothReport | None, search: SearchReport | None,
            agreement: Agreement | SpanAgreement) -> CalibrationRecord:
    quantized = onnx.load(str(output))
    op_counts = {op: sum(n.op_type == op for n in quantized.graph.node)
                 for op in ("QuantizeLinear", "DequantizeLinear")}
    activations = "int8" if plan.tensorrt_input or config.backend != "ort" else "uint8 (zero point 128)"
    quantization = {"format": "QDQ", "activations": f"{activations} symmetric per-tensor",
                    "weights": "int8 symmetric per-channel",
                    "op_types": list(qgraph.QUANTIZED_OPS), "quantized_nodes": plan.quantize,
                    "excluded": plan.reasons(), "score_topk": plan.score_topk, "tensorrt_input": plan.tensorrt_input,
                    "qdq_nodes": op_counts,
                    "calibration_cache": cache.name if cache else None,
                    "calibration_cache_sha256": sha256_file(cache) if cache else None,
                    "smoothquant": asdict(smoothing) if smoothing else None,
                    "agreement_search": asdict(search) | {"reached": search.reached} if search else None,
                    # on calibration examples, not held out: how far INT8 moved the task's predictions
                    "calibration_agreement": agreement.as_dict()}
    return CalibrationRecord(
        model=output.name, source_model=Path(config.onnx).name, source_sha256=sha256_file(Path(config.onnx)),
        checkpoint_sha256=inputs.checkpoint_sha256, backend=config.backend, method=config.method, data=inputs.data,
        quantization=quantization, scales_sha256=scales_sha256(quantized), model_sha256=sha256_file(output),
        command=config.command, notes=notes)

