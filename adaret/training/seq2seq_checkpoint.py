"""Summarization checkpoints: ``config.json``, ``model.safetensors`` (encoder, gates and decoder), the tokenizer, and
``reference_decoder.safetensors``, the decoder of the full model trained the same way (the "% of full" reference).

The encoder backbone is always stored: summarization training may fine-tune it, and the decoder is new weights in
any case. The LM head shares its matrix with the decoder's word embeddings, so the weights are written with
``safetensors.torch.save_model``, which stores a shared tensor once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from transformers import AutoConfig, PreTrainedTokenizerBase

from adaret.core.errors import AdaretError, root_cause
from adaret.core.fileio import sha256_file
from adaret.core.text_files import parse_json, read_utf8
from adaret.modeling import RetentionConfig, RetentionModel
from adaret.modeling.encoders import ADAPTERS, check_backbone_config, encoder_from_config
from adaret.modeling.hf_loading import load_tokenizer
from adaret.modeling.seq2seq import MemoryDecoder, RetentionSeq2Seq, decoder_from_config

# The same file names as a classification checkpoint: publish_checkpoint writes and hashes them
from adaret.training.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointRecord,
    library_versions,
    publish_checkpoint,
)

FORMAT = "adaret-summarization-checkpoint"
REFERENCE_DECODER = "reference_decoder.safetensors"


@dataclass(frozen=True)
class ChunkSettings:
    """How a document becomes encoder rows and how long a summary may be; recorded in the checkpoint and export."""

    chunk_length: int = 512  # tokens per chunk, [CLS] and [SEP] included
    max_source_tokens: int = 512  # document tokens read (the rest is cut); more than chunk_length means chunks
    max_target_tokens: int = 32  # summary tokens trained on, [CLS] and [SEP] included

    def __post_init__(self) -> None:
        if self.chunk_length < 3 or self.max_source_tokens < 1 or self.max_target_tokens < 2:
            raise AdaretError(f"chunk settings out of range: {self}")


@dataclass(kw_only=True)
class Seq2SeqInfo(CheckpointRecord):
    """The JSON half of a summarization checkpoint."""

    encoder_config: dict[str, Any]  # the backbone's config (model_type included)
    decoder_config: dict[str, Any]
    retention: dict[str, Any]
    chunks: dict[str, Any]
    special_tokens: dict[str, int]  # start (decoder start, [CLS]), end ([SEP]), pad
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def chunk_settings(self) -> ChunkSettings:
        return ChunkSettings(**self.chunks)


@dataclass
class Seq2SeqCheckpoint:
    model: RetentionSeq2Seq
    tokenizer: PreTrainedTokenizerBase
    info: Seq2SeqInfo
    path: Path | None = None
    reference_decoder: MemoryDecoder | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: str = "sdpa") -> Seq2SeqCheckpoint:
        return load_seq2seq_checkpoint(Path(path), attn_implementation)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        path = Path(path)
        info = self.info
        info.retention = asdict(self.model.config)
        info.versions = info.versions or library_versions()
        publish_checkpoint(path, info, self.tokenizer, overwrite=overwrite, write_weights=self._write_weights)
        self.path = path
        return path

    def _write_weights(self, folder: Path) -> None:
        save_model(self.model, str(folder / WEIGHTS_NAME), metadata={"format": FORMAT})
        if self.reference_decoder is not None:
            save_model(self.reference_decoder, str(folder / REFERENCE_DECODER), metadata={"format": FORMAT})

    @property
    def sha256(self) -> str:
        if self.path is None:
            raise ValueError("checkpoint has not been saved")
        return sha256_file(self.path / WEIGHTS_NAME)


def is_seq2seq_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a summarization checkpoint (its config names this format)."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def build_model(info: Seq2SeqInfo, attn_implementation: str = "sdpa") -> RetentionSeq2Seq:
    """The (randomly initialised) model a checkpoint's config describes."""
    try:
        encoder = encoder_from_config(_config(info.encoder_config, "encoder_config"), attn_implementation)
        decoder = decoder_from_config(_config(info.decoder_config, "decoder_config"))
        return RetentionSeq2Seq(RetentionModel(encoder, RetentionConfig(**info.retention)), decoder)
    except (TypeError, ValueError, KeyError) as exc:  # KeyError: an unknown name, e.g. hidden_act ""
        raise AdaretError(f"the summarization config does not describe a model that can be built "
                          f"({root_cause(exc)})") from None


def _config(settings: dict[str, Any], where: str):
    settings = dict(settings)
    model_type = settings.pop("model_type", None)
    if model_type not in ADAPTERS:
        raise AdaretError(f"{where}: unsupported model type {model_type!r}")
    check_backbone_config(settings, where)
    try:
        return AutoConfig.for_model(model_type, **settings)
    except Exception as exc:  # transformers' own checks of the fields
        raise AdaretError(f"{where} is not a valid {model_type} config ({root_cause(exc)})") from None


def load_seq2seq_checkpoint(path: Path, attn_implementation: str = "sdpa") -> Seq2SeqCheckpoint:
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise AdaretError(f"checkpoint {path} is incomplete: no {name}")
    raw = parse_json(read_utf8(path / CONFIG_NAME, f"checkpoint {path}: {CONFIG_NAME}"),
                     f"checkpoint {path}: {CONFIG_NAME}")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise AdaretError(f"checkpoint {path}: not a summarization checkpoint (format {FORMAT!r} expected)")
    try:
        info = Seq2SeqInfo(**raw)
    except TypeError as exc:
        raise AdaretError(f"checkpoint {path}: {CONFIG_NAME} is not a valid summarization config "
                          f"({' '.join(str(exc).split())})") from None
    if sha256_file(path / WEIGHTS_NAME) != info.weights_sha256:
        raise AdaretError(f"checkpoint {path}: {WEIGHTS_NAME} does not match the sha256 in {CONFIG_NAME}")
    model = build_model(info, attn_implementation)
    _load_weights(model, path / WEIGHTS_NAME)
    reference = None
    if (path / REFERENCE_DECODER).is_file():
        reference = decoder_from_config(_config(info.decoder_config, "decoder_config"))
        _load_weights(reference, path / REFERENCE_DECODER)
        reference.eval().requires_grad_(False)
    return Seq2SeqCheckpoint(model.eval(), load_tokenizer(path), info, path, reference)


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    try:
        missing, unexpected = load_model(module, str(file), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise AdaretError(f"cannot read {file}: {str(exc).splitlines()[0]}") from None
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise AdaretError(f"{file}: {len(missing)} tensor(s) missing and {len(unexpected)} unexpected, e.g. {name}")
