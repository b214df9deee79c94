"""User-facing errors: the CLI prints these as one line and exits non-zero."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class AdaretError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class ParityError(AdaretError):
    """An exported or optimised graph disagrees with the PyTorch reference."""


class ExportError(AdaretError):
    """The ONNX exporter (torch.export / torch.onnx) failed. The library's exception is kept as ``__cause__``, so
    ``--debug`` can show its traceback."""


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of the innermost explicit cause of ``exc``: one line, colour codes removed.

    Exporter errors wrap the real failure in pages of advice; its innermost cause is what names the problem.
    """
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
