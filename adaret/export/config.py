"""What an export is asked for: ``ExportConfig``, whose fields are also the ``adaret export`` flags.

Imports neither torch nor onnx, so that the command line can build its parser (and ``--help``) without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adaret.core.cli_args import (
    export_budget_value,
    flag,
    not_a_flag,
    opset_value,
    positive_int,
    seq_lens_value,
    tolerance_value,
)
from adaret.core.constants import DEFAULT_TOLERANCE, MIN_OPSET
from adaret.core.io_spec import TASKS

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "pretrained" / "bbc-news-minilm-l6-b0.4"
DEFAULT_SEQ_LENS = (128, 256, 512)
PARITY_BATCHES = (1, 8)
PARITY_LENGTHS = (8, 37, 128, 255, 512)
GRAPH_PASS_TARGETS = ("ort-cpu", "ort-cpu-int8", "ort-cuda", "tensorrt")  # adaret.graph_passes.cli.TARGETS
SCORERS = ("learned", "significance", "random")  # adaret.modeling.scorers


@dataclass
class ExportConfig:
    """What to export; each field's metadata is its ``adaret export`` flag (``adaret.core.cli_args.flag``)."""

    budget: float = field(default=0.4, metadata=flag(
        "deployment budget in (0, 1]: the mean fraction of tokens each layer keeps; the checkpoint's learned "
        "schedule is rescaled to it (1.0 gives the plain encoder). 'auto' chooses it: give --min-accuracy or "
        "--max-latency-ms", type=export_budget_value, required=True, metavar="B|auto"))
    checkpoint: str | None = field(default=None, metadata=flag(
        "retention checkpoint directory (default: the bundled BBC News MiniLM-L6 adapter)"))
    task: str | None = field(default=None, metadata=flag(
        "the task the checkpoint must have been trained for (default: whichever it was); a question-answering "
        "export outputs start_logits and end_logits", choices=tuple(TASKS)))
    out: str | None = field(default=None, metadata=flag(
        "output directory, new or empty unless --overwrite (default: out/export-b<budget>)"))
    seq_lens: tuple[int, ...] | None = field(default=None, metadata=flag(  # None: DEFAULT_SEQ_LENS up to the max
        "sequence buckets: one static graph each with --static; otherwise the lengths at which the summary shows "
        "K per layer (default: 128,256,512)", name="--seq-len", type=seq_lens_value, metavar="N[,N...]"))
    static: bool = field(default=False, metadata=flag(
        "one graph per bucket with constant K per layer (for TensorRT) instead of one graph with K computed from "
        "the input shape (for ONNX Runtime)"))
    batch: int | None = field(default=None, metadata=flag(
        "fix the batch size (default: dynamic batch)", type=positive_int))
    opset: int = field(default=MIN_OPSET, metadata=flag(
        f"ONNX opset, from {MIN_OPSET} up to the newest the installed onnx knows", type=opset_value))
    with_positions: bool = field(default=False, metadata=flag(
        "also output kept_positions_l<n>: the original positions each pruned layer keeps"))
    tolerance: float = field(default=DEFAULT_TOLERANCE, metadata=flag(
        "max |logit difference| ONNX Runtime vs PyTorch", type=tolerance_value))
    target: str | None = field(default=None, metadata=flag(
        "graph-pass target (default: ort-cpu for the dynamic graph, tensorrt for --static)",
        choices=GRAPH_PASS_TARGETS))
    parity_batches: tuple[int, ...] = field(default=PARITY_BATCHES, metadata=not_a_flag(
        "the parity check's shapes are the test suite's to narrow, not a deployment setting"))
    parity_lengths: tuple[int, ...] | None = field(default=None, metadata=not_a_flag(
        "the parity check's shapes are the test suite's to narrow, not a deployment setting"))
    scorer: str = field(default="learned", metadata=flag(
        "what ranks the tokens at each pruned layer: the learned gates (default), or, for comparison on the same "
        "schedule and graph, PoWER-BERT attention significance or a fixed random ranking (see docs/method.md)",
        choices=SCORERS))
    budget_search: dict | None = field(default=None, metadata=not_a_flag(
        "how --budget auto chose the budget, filled in by adaret.validation.auto_budget"))
    overwrite: bool = field(default=False, metadata=flag(
        "write into a non-empty --out: the export's files (and those of an earlier export there) are replaced, "
        "other files are kept"))

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("out") / f"export-b{self.budget:g}"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else DEFAULT_CHECKPOINT
