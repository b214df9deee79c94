"""Loading Hugging Face tokenizers, configs and backbones without ever running code shipped with them.

A model directory can name Python classes of its own in an ``auto_map`` (in ``config.json`` or
``tokenizer_config.json``). Transformers then offers to import the ``.py`` file next to it: it asks
"run the custom code? [y/N]" on a terminal (and stalls for a while without one), and a "y" executes the
file. Adaret never needs such code, so a directory that asks for it is refused with one line before
transformers reads it, and every load passes ``trust_remote_code=False`` and ``local_files_only=True``
as a second line of defence.

Transformers is imported inside the functions, so that importing the module (e.g. for
``refuse_remote_code``) costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError
from adaret.core.text_files import read_json_object

# The files whose ``auto_map`` transformers follows when it loads a tokenizer, a config or a model.
# AutoTokenizer reads config.json as well, so both are checked whatever is loaded.
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")


def _class_refs(value: Any) -> list[str]:
    """The ``module.Class`` references in one ``auto_map`` value (a string, or a [slow, fast] pair)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [ref for ref in value if isinstance(ref, str)]
    return []


def _code_file(class_ref: str) -> str:
    """The file a class reference would import: ``tokenization_x.XTokenizer`` -> ``tokenization_x.py``.

    A ``repo--module.Class`` reference names code in another repository; its module part is shown.
    """
    module = class_ref.split("--")[-1].rpartition(".")[0] or class_ref
    return f"{module.replace('.', '/')}.py"


def _auto_map_entries(auto_map: Any) -> list[tuple[str, str]]:
    """(key, class reference) pairs of an ``auto_map``: a dict, or the legacy [slow, fast] tokenizer list."""
    if isinstance(auto_map, dict):
        return [(str(key), ref) for key, value in auto_map.items() for ref in _class_refs(value)]
    return [("AutoTokenizer", ref) for ref in _class_refs(auto_map)]


def refuse_remote_code(directory: Path, what: str) -> None:
    """Raise one AdaretError line if loading ``what`` from ``directory`` would need code shipped with it.

    Any ``auto_map`` is refused, even one whose class transformers also knows: whether transformers would
    prefer the shipped code depends on its version, and a model adaret supports never needs one.
    """
    for name in REMOTE_CODE_FILES:
        file = directory / name
        if not file.exists():
            continue
        data = read_json_object(file)
        if "auto_map" not in data or not data["auto_map"]:
            continue
        entries = _auto_map_entries(data["auto_map"])
        key, target = entries[0] if entries else ("auto_map", repr(data["auto_map"]))
        code = f" ({_code_file(target)})" if entries else ""
        raise AdaretError(f"refusing to load the {what} in {directory}: {name} has auto_map[{key!r}] = "
                          f"{target!r}, custom code{code} that transformers would run; adaret never runs code "
                          f"shipped with a model (remove 'auto_map' from {name}, or use a model that transformers "
                          "implements)")


def _model_dir(path: str | Path, what: str) -> Path:
    """A local directory, checked for custom code.

    Only directories are accepted: with ``local_files_only`` a hub id would still resolve to the hub cache,
    whose files were not checked here.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise AdaretError(f"cannot load the {what}: {directory} is not a directory")
    refuse_remote_code(directory, what)
    return directory


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of a transformers error (they often span a page)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_tokenizer(path: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained`` on a local directory, without custom code."""
    return _from_pretrained("AutoTokenizer", path, "tokenizer")


def load_config(path: str | Path) -> Any:
    """``AutoConfig.from_pretrained`` on a local directory, without custom code."""
    return _from_pretrained("AutoConfig", path, "model config")


def load_backbone(path: str | Path, **kwargs: Any) -> Any:
    """``AutoModel.from_pretrained`` on a local directory, without custom code; ``kwargs`` go to transformers."""
    return _from_pretrained("AutoModel", path, "model", **kwargs)


def _from_pretrained(auto_class: str, path: str | Path, what: str, **kwargs: Any) -> Any:
    import transformers

    directory = _model_dir(path, what)
    try:
        return getattr(transformers, auto_class).from_pretrained(str(directory), trust_remote_code=False,
                                                                 local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise AdaretError(f"cannot load the {what} in {directory}: {_one_line(exc)}") from None
