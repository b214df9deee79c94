"""Triton model repositories for an export: one model directory per model, ``<model>/config.pbtxt`` and
``<model>/1/`` holding what the backend loads.

- ``write_served_repository`` (``adaret serve``, into a fresh temporary directory): ``<name>`` (token arrays ->
  logits, or start and end logits) and ``<name>_text`` (texts -> label, probabilities; or question and context ->
  answer, score, start, end), both Python-backend models over an ``adaret.runtime`` Session.
- ``write_standalone_repository`` (``adaret triton-repo``): the graph on ONNX Runtime's backend (``<name>``, or
  ``<name>_seq<N>`` per static bucket), ``<name>_seq<N>_trt`` per TensorRT plan, a Python-backend tokenizer and
  label models that need only numpy and tokenizers, and ``<name>_text``, the ensemble text -> label. The directory
  is claimed like every adaret output (``adaret.core.outputs``) and each model directory is renamed into place
  complete. For a question-answering export it holds the graph models only: its text side (overlapping windows
  over a long context, the best span over all of them) is not a fixed pipeline of tensors that an ensemble can
  route, and is served by ``adaret serve``'s ``AnswerModel``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError
from adaret.core.fileio import STAGING_SUFFIX, fsync_path
from adaret.core.io_spec import CLASSIFICATION
from adaret.core.outputs import output_dir
from adaret.runtime.text import TOKENIZER_FILE
from adaret.serving import configs
from adaret.serving.configs import Batching
from adaret.serving.export_facts import ExportFacts
from adaret.serving.pbtxt import render

CONFIG_FILE = "config.pbtxt"
VERSION = "1"
# A served model's model.py only names its class: the code lives in adaret.serving.backend, where it is tested.
SERVED_MODEL_PY = "from adaret.serving.backend import {cls} as TritonPythonModel  # noqa: F401\n"


def write_served_repository(facts: ExportFacts, name: str, batching: Batching, directory: Path) -> list[str]:
    """The two ``adaret serve`` models, written into ``directory`` (a fresh directory); returns the model names."""
    if not facts.has_tokenizer:
        raise AdaretError(f"no {TOKENIZER_FILE} beside {facts.source}: {name}_text needs the tokenizer that export "
                          "writes next to the graph")
    export = str(facts.source.resolve())
    text_model = "TextModel" if facts.task == CLASSIFICATION.task else "AnswerModel"
    models = {name: (configs.served_logits_config(name, facts, batching, export), "LogitsModel"),
              f"{name}_text": (configs.served_text_config(f"{name}_text", facts, batching, export), text_model)}
    for model, (config, cls) in models.items():
        version = _model_dir(directory, model, config)
        (version / "model.py").write_text(SERVED_MODEL_PY.format(cls=cls))
    return list(models)


def write_standalone_repository(facts: ExportFacts, name: str, batching: Batching, out: Path, *,
                                overwrite: bool = False, gpu: bool = True) -> list[str]:
    """A repository for a datacenter Triton (see the module docstring); returns the model names written."""
    if not facts.has_tokenizer:
        raise AdaretError(f"no {TOKENIZER_FILE} beside {facts.source}: the tokenizer model needs the one export "
                          "writes next to the graph")
    with output_dir(out, overwrite=overwrite, what="model repository") as claim:
        staged = claim.staging("repository")
        models = _stage_standalone(facts, name, batching, staged, gpu)
        for model in models:  # each model directory appears complete, or not at all
            _replace_dir(staged / model, claim.path / model)
        fsync_path(claim.path, directory=True)
    return models


def _stage_standalone(facts: ExportFacts, name: str, batching: Batching, staged: Path, gpu: bool) -> list[str]:
    kind = configs.KIND_GPU if gpu else configs.KIND_CPU
    models: list[str] = []
    for length, graph in facts.graphs.items():
        model = name if length is None else f"{name}_seq{length}"
        version = _model_dir(staged, model, configs.onnx_config(model, facts, batching, length or -1, kind))
        _copy_graph(graph, version)
        models.append(model)
    for length, plan in sorted(facts.plans.items()):
        model = f"{name}_seq{length}_trt"
        version = _model_dir(staged, model, configs.plan_config(model, facts, batching, length))
        shutil.copyfile(plan, version / "model.plan")
        models.append(model)
    if facts.task != CLASSIFICATION.task:
        return models  # the text side (windows, span decoding) is adaret serve's AnswerModel: see the docstring
    # The ensemble's graph: the dynamic one, else the largest bucket (every text fits it), on TensorRT where a plan
    # for it was given. Its tokenizer pads to that bucket.
    width = max(facts.static_lengths) if facts.static_lengths else (
        max(facts.plans) if facts.plans and not facts.graphs else None)
    target = name if width is None else f"{name}_seq{width}" + ("_trt" if width in facts.plans else "")
    tokenizer, labels = f"{name}_tokenizer", f"{name}_labels"
    version = _model_dir(staged, tokenizer, configs.tokenizer_config(tokenizer, facts, batching, width))
    _copy_package_file("tokenizer_model.py", version / "model.py")
    shutil.copyfile(_tokenizer_file(facts), version / TOKENIZER_FILE)
    version = _model_dir(staged, labels, configs.labels_config(labels, facts, batching))
    _copy_package_file("labels_model.py", version / "model.py")
    _model_dir(staged, f"{name}_text", configs.ensemble_config(f"{name}_text", facts, batching, tokenizer, target,
                                                               labels))
    return [*models, tokenizer, labels, f"{name}_text"]


def _model_dir(root: Path, model: str, config: dict[str, Any]) -> Path:
    """``root/model/config.pbtxt`` and the (empty) version directory, which is returned."""
    version = root / model / VERSION
    version.mkdir(parents=True)
    (root / model / CONFIG_FILE).write_text(render(config), encoding="utf-8")
    return version


def _copy_graph(graph: Path, version: Path) -> None:
    """The graph as ``model.onnx`` (the name the backend loads), with its external-data file under the name the
    graph refers to."""
    shutil.copyfile(graph, version / "model.onnx")
    data = graph.with_name(graph.name + ".data")
    if data.is_file():
        shutil.copyfile(data, version / data.name)


def _tokenizer_file(facts: ExportFacts) -> Path:
    directory = facts.source if facts.source.is_dir() else facts.source.parent
    return directory / TOKENIZER_FILE


def _copy_package_file(name: str, target: Path) -> None:
    source = resources.files("adaret.serving.standalone").joinpath(name)
    target.write_bytes(source.read_bytes())


def _replace_dir(staged: Path, final: Path) -> None:
    """Move ``staged`` onto ``final``; a previous ``final`` is first renamed aside under a staging name, so that a
    killed run leaves either model directory whole (and the aside copy is cleaned up by the next claim)."""
    aside = None
    if final.exists():
        aside = final.with_name(f".{final.name}.{secrets.token_hex(4)}{STAGING_SUFFIX}")
        os.replace(final, aside)
    os.replace(staged, final)
    if aside is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(aside)
