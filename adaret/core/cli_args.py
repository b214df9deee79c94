"""What every stage's command line shares: subcommand registration, argument types (one rule, one message), and
config dataclasses as flags."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """Subcommand ``name``: ``summary`` in the command list, ``description`` atop its --help.

    ``description`` may be a triple-quoted paragraph: its line breaks and indentation fold to single spaces, as
    --help shows it anyway.
    """
    return sub.add_parser(name, help=summary, description=" ".join(description.split()))


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


def seq_lens_value(text: str) -> tuple[int, ...]:
    """Comma-separated sequence lengths, such as ``128,256,512``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sequence lengths must be integers like 128,256,512, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one sequence length")
    return values


def fraction_value(text: str) -> float:
    """A fraction in (0, 1]."""
    value = _finite(text, "a fraction in (0, 1]")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value:g}")
    return value


def finite_float_or_off(text: str) -> float | None:
    """A finite number, where a negative one turns the setting off (None)."""
    value = finite_float(text)
    return value if value >= 0 else None


# Dataclass fields as command-line flags: a config's field metadata says how its flag reads, so the library's
# defaults are the command line's by construction (no second list of defaults to drift).

CLI_METADATA = "adaret.cli"


@dataclass(frozen=True)
class Flag:
    """How one config field reads on the command line; what is left unset follows from the field.

    ``name`` defaults to ``--field-name`` and ``type`` to that of the default (int, float, else text). A bool that
    defaults to False is a switch; one that defaults to True gets ``--name/--no-name``, or, where ``negative``
    names the flag that turns it off, that pair. A field without a default is a required flag.
    """

    help: str
    name: str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None
    metavar: str | None = None
    required: bool = False
    negative: str | None = None
    negative_help: str | None = None


def flag(help: str, **how: Any) -> dict[str, Flag]:
    """``field(metadata=...)`` for a config field that is a command-line flag (``how``: see ``Flag``)."""
    return {CLI_METADATA: Flag(help, **how)}


def not_a_flag(why: str) -> dict[str, str | None]:
    """``field(metadata=...)`` for a config field that library callers set but the command line does not."""
    return {CLI_METADATA: None, "why_not_a_flag": why}


def flag_fields(cls: type) -> list[tuple[dataclasses.Field, Flag]]:
    """The fields of config dataclass ``cls`` that are flags; every field must say whether it is one."""
    flags = []
    for f in dataclasses.fields(cls):
        if CLI_METADATA not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} says nothing of the command line: give it "
                            "metadata=flag(...) or metadata=not_a_flag(...)")
        if f.metadata[CLI_METADATA] is not None:
            flags.append((f, f.metadata[CLI_METADATA]))
    return flags


def add_dataclass_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                            exclude: Collection[str] = ()) -> None:
    """One flag per flag field of config dataclass ``cls`` (except ``exclude``), defaulting to the field's default,
    its value stored under the field's name."""
    for f, spec in flag_fields(cls):
        if f.name not in exclude:
            _add_flag(parser, f.name, _field_default(f), spec)


def dataclass_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values parsed for ``cls``'s flag fields, as keyword arguments for ``cls``."""
    return {f.name: getattr(args, f.name) for f, _ in flag_fields(cls) if hasattr(args, f.name)}


_REQUIRED = object()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _REQUIRED


def _add_flag(parser: Any, dest: str, default: Any, spec: Flag) -> None:
    option = spec.name or "--" + dest.replace("_", "-")
    if isinstance(default, bool) or (default is None and spec.negative is not None):
        _add_switch(parser, option, dest, default, spec)
        return
    required = spec.required or default is _REQUIRED
    how: dict[str, Any] = {"dest": dest, "help": spec.help if required else _with_default(spec.help, default),
                           "type": spec.type or _type_of(default), "choices": spec.choices,
                           "metavar": spec.metavar or (None if spec.choices else _metavar(option))}
    how.update({"required": True} if required else {"default": default})
    parser.add_argument(option, **{key: value for key, value in how.items() if value is not None})


def _add_switch(parser: Any, option: str, dest: str, default: bool | None, spec: Flag) -> None:
    """``default`` None: neither of a named pair was given, and the library decides (a default that depends on
    what is not known when the flags are parsed)."""
    if default is False:
        parser.add_argument(option, dest=dest, action="store_true", help=spec.help)
    elif spec.negative is None:
        parser.add_argument(option, dest=dest, action=argparse.BooleanOptionalAction, default=True,
                            help=_with_default(spec.help, default))
    else:  # a named opposite reads better than --no-<name> (--fine-tune-backbone, not --no-freeze-backbone)
        pair = parser.add_mutually_exclusive_group()
        pair.add_argument(option, dest=dest, action="store_true", default=default, help=spec.help)
        pair.add_argument(spec.negative, dest=dest, action="store_false", default=default, help=spec.negative_help)


def _type_of(default: Any) -> Callable[[str], Any] | None:
    return type(default) if isinstance(default, int | float) else None


def _metavar(option: str) -> str:
    """Named after the flag, not the field (``--lr LR``, not ``--lr LR_PRIMAL``)."""
    return option.lstrip("-").replace("-", "_").upper()


def _with_default(help: str, default: Any) -> str:
    """The help, closed by the default where it says none itself (None means "not set": nothing to show)."""
    return help if default is None or "default" in help else f"{help} (default: %(default)s)"
