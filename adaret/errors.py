"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class AdaretError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class ParityError(AdaretError):
    """An exported or optimised graph disagrees with the PyTorch reference."""
