"""Tokenisation with the tokenizer that travels with the artifact (``tokenizers``, no transformers).

How texts are then padded and batched is ``adaret.core.padding``, shared with calibration and validation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from adaret.core.errors import AdaretError
from adaret.core.text_files import parse_json, read_utf8

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
            raise AdaretError(f"cannot read {path.name} in {directory}: {' '.join(str(exc).split())[:300]}") from None
        config = _read_json(directory / TOKENIZER_CONFIG_FILE)
        pad_token = config.get("pad_token")
        pad_id = _token_id(tokenizer, pad_token, directory) if isinstance(pad_token, str) else None
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


def _token_id(tokenizer: Tokenizer, token: str, directory: Path) -> int | None:
    """JSON's \\ud800 escape reads as a lone surrogate, which the tokenizers binding cannot encode."""
    try:
        return tokenizer.token_to_id(token)
    except UnicodeEncodeError:
        raise AdaretError(f"{TOKENIZER_CONFIG_FILE} in {directory}: pad_token holds a lone surrogate, which is not "
                          "text; fix the file or copy it from the checkpoint directory") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = parse_json(read_utf8(path, path.name), path.name)
    return data if isinstance(data, dict) else {}
