"""The peak-memory workload of a summarization export (``adaret.runtime.memory``'s fresh-process protocol).

A module of its own, importing the runtime only: the child process that measures must not load torch, whose
import would sit in the baseline and whose thread pools are not what a deployment pays for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def summarize_workload(model: str, texts_file: str, batch_size: int, max_new_tokens: int | None = None,
                       memory: str | None = None, threads: int | None = None) -> Callable[[], object]:
    """``Summarizer.generate`` (greedy, natural stopping) over a JSON list of texts: what ``adaret summarize``
    does for a batch of documents, encoder, cross-attention cache and decoding steps included."""
    from adaret.runtime.summarize import Summarizer

    summarizer = Summarizer(model, memory=memory, threads=threads)
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    return lambda: summarizer.generate(texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
