"""Argument types shared by every stage's command line: one rule, one message."""

from __future__ import annotations

import argparse


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
