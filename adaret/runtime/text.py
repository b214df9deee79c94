"""Tokenisation with the tokenizer that travels with the artifact, and batches planned by length bucket.

Padding policy. In a retained graph, K_l = max(2, ceil(f_l * n)) follows the padded length n, so how a text is
padded changes which tokens survive. Each text is therefore padded to a fixed bucket width chosen from its
own length alone (the graph's bucket for a static graph; the next multiple of ``pad_multiple`` for a
dynamic one), never to the longest text in its batch: a text gets the same answer whichever texts share
its batch, and in whatever order they come.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from adaret.errors import AdaretError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
DEFAULT_MAX_LENGTH = 512


class TruncationWarning(UserWarning):
    """Some texts were longer than the model accepts and were cut to its maximum length."""


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    truncated: list[bool]


class TextEncoder:
    """A ``tokenizers`` tokenizer read from ``tokenizer.json`` (no transformers), truncating to a max length."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int = 0, model_max_length: int | None = None):
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()  # padding is ours: per bucket, not per batch
        self.pad_id = pad_id
        self.model_max_length = model_max_length

    @classmethod
    def from_dir(cls, directory: str | Path) -> TextEncoder:
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise AdaretError(f"no {TOKENIZER_FILE} next to the model in {directory}: export copies it there; "
                              "copy it from the checkpoint directory")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise AdaretError(f"cannot read {path.name} in {directory}: {exc}") from None
        config = _read_json(directory / TOKENIZER_CONFIG_FILE)
        pad_token = config.get("pad_token")
        pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        max_length = config.get("model_max_length")
        # transformers writes a huge sentinel when a tokenizer has no limit of its own
        usable = isinstance(max_length, int) and 0 < max_length < 1_000_000
        return cls(tokenizer, pad_id or 0, max_length if usable else None)

    def encode(self, texts: Sequence[str], max_length: int) -> Encoded:
        """Token ids per text (with special tokens), truncated to ``max_length``; warns when any was cut."""
        self.tokenizer.enable_truncation(max_length)
        encodings = self.tokenizer.encode_batch(list(texts))
        truncated = [bool(e.overflowing) for e in encodings]
        if any(truncated):
            warnings.warn(f"{sum(truncated)} of {len(texts)} text(s) exceed {max_length} tokens and were "
                          f"truncated to the first {max_length}", TruncationWarning, stacklevel=3)
        return Encoded([e.ids for e in encodings], truncated)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaretError(f"cannot read {path.name}: {exc}") from None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class PlannedBatch:
    indices: list[int]  # positions of these texts in the caller's list
    width: int  # padded sequence length


def bucket_widths(max_length: int, static_lengths: Sequence[int] = (), pad_multiple: int = 32) -> list[int]:
    """The padded lengths texts may take: a static graph's buckets, else multiples of ``pad_multiple``."""
    if static_lengths:
        return sorted(set(static_lengths))
    widths = list(range(pad_multiple, max_length, pad_multiple))
    return [*widths, max_length]


def plan_batches(lengths: Sequence[int], widths: Sequence[int], batch_size: int) -> list[PlannedBatch]:
    """Group texts by the smallest width that holds them, then cut each group into batches of ``batch_size``."""
    if batch_size < 1:
        raise AdaretError(f"batch size must be >= 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        width = next((w for w in widths if w >= length), None)
        if width is None:
            raise AdaretError(f"a text of {length} tokens is longer than the largest bucket ({max(widths)})")
        groups.setdefault(width, []).append(index)
    return [PlannedBatch(members[start:start + batch_size], width)
            for width, members in sorted(groups.items())
            for start in range(0, len(members), batch_size)]


def padded_batches(encoded: Encoded, widths: Sequence[int], batch_size: int,
                   pad_id: int) -> Iterator[tuple[PlannedBatch, dict[str, np.ndarray]]]:
    """Bucketed and padded feeds for every text, batch by batch."""
    for batch in plan_batches([len(ids) for ids in encoded.ids], widths, batch_size):
        yield batch, pad_batch([encoded.ids[i] for i in batch.indices], batch.width, pad_id)


def pad_batch(ids: Sequence[Sequence[int]], width: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded input_ids, attention_mask and token_type_ids (single-segment texts) of shape [batch, width]."""
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, tokens in enumerate(ids):
        input_ids[row, :len(tokens)] = tokens
        attention_mask[row, :len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
