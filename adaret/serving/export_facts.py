"""What a Triton model configuration needs to know about an export, read from the graph and its metadata.

Nothing here is written by hand per model: names, dtypes and widths come from the loaded ``adaret.runtime``
Session (the graph's inputs and outputs, ``adaret.*`` metadata, the tokenizer beside it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.io_spec import CLASSIFICATION, LOGITS, QUESTION_ANSWERING
from adaret.runtime.session import Session, load, model_files

SERVED_TASKS = (CLASSIFICATION.task, QUESTION_ANSWERING.task)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
PLAN_NAME = re.compile(r"model_seq(\d+)\.plan")


@dataclass(frozen=True)
class ExportFacts:
    """One classification or question-answering export, as Triton sees it."""

    source: Path
    session: Session
    task: str  # adaret.core.io_spec's task name
    output_names: list[str]  # the graph's outputs: logits, or start_logits and end_logits
    graphs: dict[int | None, Path]  # bucket length (None: the dynamic graph) -> the file the Session runs
    plans: dict[int, Path]  # bucket length -> TensorRT plan (an export directory's model_seq<N>.plan, or a .plan)
    input_names: list[str]
    input_dtypes: dict[str, np.dtype]
    num_labels: int  # -1 where neither the graph nor its metadata fixes it
    label_names: list[str]
    max_length: int
    pad_id: int
    has_tokenizer: bool

    @property
    def static_lengths(self) -> list[int]:
        return sorted(k for k in self.graphs if k is not None)


def read_export(path: str | Path) -> ExportFacts:
    """Load ``path`` (an export directory, a ``.onnx`` or a ``.plan``) and check that it can be served."""
    source = Path(path)
    session = load(source)  # checks the manifest, the metadata and the label count
    task = session.metadata.task
    if task not in SERVED_TASKS:
        raise AdaretError(f"{source} is a {task} export; serving supports {' and '.join(SERVED_TASKS)} exports "
                          "(summarize with adaret.runtime or `adaret summarize`)")
    fixed_batch = session.input_specs["input_ids"].shape[0]
    if fixed_batch is not None:
        raise AdaretError(f"{source} was exported for a fixed batch of {fixed_batch}; Triton's dynamic batching "
                          "needs a dynamic batch axis (re-export without --batch)")
    files = model_files(source)  # the files load() ran, in its order: the repository holds exactly those
    graphs: dict[int | None, Path] = {}
    plans: dict[int, Path] = {}
    for file, (length, _runner) in zip(files, session.runners.items(), strict=True):
        (plans if file.suffix == ".plan" else graphs)[length] = file  # type: ignore[index]
    if source.is_dir():
        for plan in source.glob("model_seq*.plan"):  # built by `export --static --engine` beside the graphs
            if (match := PLAN_NAME.fullmatch(plan.name)) and int(match[1]) in graphs:
                plans[int(match[1])] = plan
    width = (next(iter(session.runners.values())).output_shapes.get(LOGITS) or (None,))[-1]  # None for a plan
    labels = session.label_names
    return ExportFacts(
        source=source, session=session, task=task, output_names=list(session.output_names), graphs=graphs,
        plans=plans, input_names=session.input_names,
        input_dtypes={name: spec.dtype for name, spec in session.input_specs.items()},
        num_labels=int(width or len(labels) or -1), label_names=labels, max_length=session.max_length,
        pad_id=session.encoder.pad_id if session.encoder else 0, has_tokenizer=session.encoder is not None)


def check_model_name(name: str) -> str:
    """A Triton model name is a directory name in the repository (and part of the request URL)."""
    if not MODEL_NAME.fullmatch(name):
        raise AdaretError(f"model name {name!r} must be 1-63 letters, digits, '_', '.' or '-', starting with a "
                          "letter or digit")
    return name

