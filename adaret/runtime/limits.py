"""What the runtime accepts as a text, checked before the tokenizer sees it (pure Python: the command line uses it
before anything heavy is imported).

- A text is a ``str`` of Unicode scalar values: a lone surrogate (what ``surrogateescape`` makes of bytes that are
  not UTF-8, or a broken ``\\ud800`` escape) has no UTF-8 form, and the Rust tokenizer refuses it with a bare
  TypeError.
- A text is at most ``max_chars`` characters. The tokenizer reads a whole text before truncating it to the model's
  length, so an unbounded text costs unbounded time; a classifier reads at most a few hundred tokens of it anyway.
  ``DEFAULT_MAX_CHARS`` is far above any text a model reads and still bounds that time.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from adaret.core.errors import AdaretError

DEFAULT_MAX_CHARS = 1_000_000


def check_max_chars(max_chars: int) -> int:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise AdaretError(f"max_chars must be a positive integer, got {max_chars!r}")
    return max_chars


def check_text(text: str, max_chars: int, name: str) -> str:
    """``text`` if it is within ``max_chars`` and valid Unicode, else a one-line error that names it (``name``:
    ``texts[3]``, ``line 7 of texts.txt``)."""
    if len(text) > max_chars:
        raise AdaretError(f"{name} has {len(text):,} characters, more than the limit of {max_chars:,} (max_chars); "
                          "split the text, or raise the limit")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdaretError(f"{name} holds a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}), "
                          "which is not valid Unicode: decode its bytes as UTF-8 (errors='replace' to keep going)") \
            from None
    return text


def check_positive(name: str, value: int) -> None:
    """A one-line error unless ``value`` is a positive integer (a bool is not one; numpy integers are, through
    ``numbers.Integral``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise AdaretError(f"{name} must be a positive integer, got {value!r}")


def check_texts(texts: Sequence[str], max_chars: int, method: str) -> list[str]:
    """``texts`` as a list, each checked by ``check_text``; ``method`` (``classify()``) names the caller in the
    one-line errors for a bare string, an empty list or a non-string item."""
    if isinstance(texts, str):
        raise AdaretError(f"{method} takes a list of texts; wrap a single text in a list")
    texts = list(texts)
    if not texts:
        raise AdaretError(f"{method} got an empty list of texts")
    bad = next((type(t).__name__ for t in texts if not isinstance(t, str)), None)
    if bad:
        raise AdaretError(f"{method} takes strings, got a {bad}")
    return [check_text(text, max_chars, f"texts[{i}]") for i, text in enumerate(texts)]
