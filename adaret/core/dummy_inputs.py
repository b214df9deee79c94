"""Random encoder inputs for parity checks, probes and timing, built from the artifact's own vocabulary.

The special ids and the vocabulary size come from the tokenizer that travels with the checkpoint or the
export (recorded in the graph's metadata as ``vocabulary``), never from BERT's constants: RoBERTa's CLS is
0 and its vocabulary 50265 rows, so BERT's 101/102/30522 would index past its embedding table.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.io_spec import ATTENTION_MASK, INPUT_IDS, INPUT_NAMES, TOKEN_TYPE_IDS

_PAD_TOKENS = ("[PAD]", "<pad>")


@dataclass(frozen=True)
class Vocabulary:
    """What random inputs need from a tokenizer: its size and the ids that frame and pad a text."""

    size: int
    cls_id: int
    sep_id: int
    pad_id: int

    @classmethod
    def from_tokenizer_file(cls, path: str | Path) -> Vocabulary:
        """Read ``tokenizer.json``: the ids its post-processor puts around an empty text are CLS and SEP."""
        from tokenizers import Tokenizer

        with _tokenizer_errors(f"cannot read tokenizer {Path(path).name}"):
            tokenizer = Tokenizer.from_file(str(path))
        return cls.from_tokenizer(tokenizer, source=Path(path).name)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, source: str = "the tokenizer") -> Vocabulary:
        """From a ``tokenizers.Tokenizer`` (left unchanged)."""
        from tokenizers import Tokenizer

        with _tokenizer_errors(f"cannot use tokenizer {source}"):
            tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: padding and truncation are switched off
            tokenizer.no_padding()  # a tokenizer.json may pad every text to a fixed length
            tokenizer.no_truncation()
            framed = tokenizer.encode("").ids
            pad = next((tokenizer.token_to_id(t) for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None), 0)
            size = tokenizer.get_vocab_size()
        if len(framed) < 2:
            raise AdaretError(f"{source} adds no [CLS]/[SEP] around a text")
        return cls(size, framed[0], framed[-1], pad).checked(source)

    @classmethod
    def from_directory(cls, directory: str | Path) -> Vocabulary | None:
        path = Path(directory) / "tokenizer.json"
        return cls.from_tokenizer_file(path) if path.is_file() else None

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> Vocabulary:
        try:
            vocab = cls(**{k: int(values[k]) for k in ("size", "cls_id", "sep_id", "pad_id")})
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise AdaretError(f"malformed vocabulary record {json.dumps(values)[:80]}") from None
        return vocab.checked("the vocabulary record")

    def checked(self, source: str) -> Vocabulary:
        """Refuse special ids outside the vocabulary: random inputs built from them would index past the embedding
        table, a failure far from its cause."""
        if self.size < 1:
            raise AdaretError(f"{source}: vocabulary size {self.size} is not positive")
        for name in ("cls_id", "sep_id", "pad_id"):
            value = getattr(self, name)
            if not 0 <= value < self.size:
                raise AdaretError(f"{source}: {name} {value} lies outside the vocabulary of {self.size} tokens")
        return self

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def first_word_id(self) -> int:
        """The first id above the special ones: random text never contains a stray CLS, SEP or padding id."""
        return min(max(self.cls_id, self.sep_id, self.pad_id) + 1, self.size - 1)


@contextlib.contextmanager
def _tokenizer_errors(what: str) -> Iterator[None]:
    """The tokenizers library's errors as one line of AdaretError: it raises bare Exceptions for unreadable files,
    and a Rust panic (pyo3's PanicException, a BaseException) for some malformed ones."""
    try:
        yield
    except Exception as exc:
        raise AdaretError(f"{what}: {_one_line(exc)}") from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise AdaretError(f"{what}: the tokenizers library failed on it ({_one_line(exc)})") from None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def dummy_inputs(batch: int, seq_len: int, vocab: Vocabulary, generator: np.random.Generator, *,
                 padded: bool = True, names: Sequence[str] = INPUT_NAMES,
                 segments: bool = False) -> dict[str, np.ndarray]:
    """Random tokens with CLS first and SEP last in each row.

    ``padded``: each row gets a random length in [2, seq_len] (right padding, at least one full row), the
    mix a parity check needs; otherwise every row is full length, the worst case a timing needs.
    ``segments``: a question-answering pair: each row's first tokens (a random number, at least CLS) have token
    type 0, the rest of its real tokens type 1; otherwise every token type is 0.
    """
    ids = generator.integers(vocab.first_word_id, vocab.size, size=(batch, seq_len), dtype=np.int64)
    lengths = generator.integers(2, seq_len + 1, size=batch) if padded else np.full(batch, seq_len)
    lengths[generator.integers(0, batch)] = seq_len
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = vocab.cls_id
    ids[np.arange(batch), lengths - 1] = vocab.sep_id
    ids = np.where(mask == 1, ids, vocab.pad_id)
    types = np.zeros_like(ids)
    if segments:
        question = generator.integers(1, np.maximum(lengths // 2, 1) + 1)
        types = ((np.arange(seq_len)[None, :] >= question[:, None]) & (mask == 1)).astype(np.int64)
    feeds = {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: types}
    return {name: feeds[name] for name in names}
