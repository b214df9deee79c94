"""Argument types shared by every stage's command line: one rule, one message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def budget_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"budget must lie in (0, 1], got {value}")
    return value


def export_budget_value(text: str) -> float | str:
    """An export budget: a number in (0, 1], or ``auto`` (chosen by --min-accuracy or --max-latency-ms)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return budget_value(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or the word auto)") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer type for argparse that refuses values below ``minimum``."""

    def value(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {number}")
        return number

    value.__name__ = f"int_at_least_{minimum}"
    return value


def _finite(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (nan and inf are refused)."""
    return _finite(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value:g}")
    return value


def tolerance_value(text: str) -> float:
    """A parity tolerance: the largest |logit difference| allowed, a finite number >= 0."""
    expected = "a finite number >= 0 (the largest |logit difference| allowed)"
    value = _finite(text, expected)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value:g}")
    return value


def newest_onnx_opset() -> int | None:
    """The newest ONNX opset the installed ``onnx`` knows (None where onnx is not installed)."""
    try:
        from onnx.defs import onnx_opset_version
    except ImportError:
        return None
    return int(onnx_opset_version())


def opset_value(text: str) -> int:
    """An ONNX opset no newer than the installed onnx knows (the export refuses ones older than it supports)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ONNX opset number, got {text!r}") from None
    newest = newest_onnx_opset()
    if newest is not None and value > newest:
        raise argparse.ArgumentTypeError(f"opset {value} is newer than the installed onnx supports (at most "
                                         f"{newest})")
    return value
