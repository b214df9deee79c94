"""Package attributes that import their module on first use, so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def by_module(names: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """``{module: names it defines}`` turned into the ``{name: module}`` table ``lazy_attributes`` reads."""
    return {name: module for module, defined in names.items() for name in defined}


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves ``name`` from ``exports[name]`` (a module path) when first read."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
