"""The padding policy every stage shares: the runtime serves with it, calibration and validation measure with it.

In a retained graph, K_l = max(2, ceil(f_l * n)) follows the padded length n, so how a text is padded changes
which tokens survive. Each text is therefore padded to a fixed bucket width chosen from its own length alone
(the graph's bucket for a static graph; the next multiple of ``PAD_MULTIPLE`` for a dynamic one), never to
the longest text in its batch: a text gets the same answer whichever texts share its batch, and in whatever
order they come.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from adaret.core.errors import AdaretError

PAD_MULTIPLE = 32


@dataclass(frozen=True)
class PlannedBatch:
    indices: list[int]  # positions of these texts in the caller's list
    width: int  # padded sequence length


def bucket_widths(max_length: int, static_lengths: Sequence[int] = (), pad_multiple: int = PAD_MULTIPLE) -> list[int]:
    """The padded lengths texts may take: a static graph's buckets, else multiples of ``pad_multiple``."""
    if static_lengths:
        return sorted(set(static_lengths))
    widths = list(range(pad_multiple, max_length, pad_multiple))
    return [*widths, max_length]


def smallest_width(widths: Sequence[int], length: int) -> int:
    """The smallest bucket that holds ``length`` tokens."""
    width = next((w for w in sorted(widths) if w >= length), None)
    if width is None:
        raise AdaretError(f"a text of {length} tokens is longer than the largest bucket ({max(widths)})")
    return width


def rows_per_batch(width: int, batch_size: int, max_tokens: int | None = None) -> int:
    """How many rows of ``width`` tokens one run takes: ``batch_size``, or fewer where ``max_tokens`` caps the
    padded tokens per run (never fewer than one row).

    Why a token cap: on a CPU, a batch of long rows runs slower per row than the rows one at a time, because the
    attention scores of the whole batch ([rows, heads, width, width]) fall out of the caches; short rows still gain
    from batching. ``benchmarks/results/batch_tokens.md`` records the measurement behind ``adaret serve``'s default."""
    if batch_size < 1:
        raise AdaretError(f"batch size must be >= 1, got {batch_size}")
    if max_tokens is None:
        return batch_size
    if max_tokens < 1:
        raise AdaretError(f"max tokens per batch must be >= 1, got {max_tokens}")
    return max(1, min(batch_size, max_tokens // width))


def plan_batches(lengths: Sequence[int], widths: Sequence[int], batch_size: int,
                 max_tokens: int | None = None) -> list[PlannedBatch]:
    """Group texts by the smallest width that holds them, then cut each group into batches of ``batch_size`` rows
    (fewer where ``max_tokens`` caps the padded tokens of one batch)."""
    rows_per_batch(1, batch_size, max_tokens)  # check the arguments even when there is nothing to plan
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(smallest_width(widths, length), []).append(index)
    return [PlannedBatch(members[start:start + rows], width)
            for width, members in sorted(groups.items())
            for rows in [rows_per_batch(width, batch_size, max_tokens)]
            for start in range(0, len(members), rows)]


def padded_batches(ids: Sequence[Sequence[int]], widths: Sequence[int], batch_size: int, pad_id: int,
                   max_tokens: int | None = None) -> Iterator[tuple[PlannedBatch, dict[str, np.ndarray]]]:
    """Bucketed and padded feeds for every text, batch by batch."""
    for batch in plan_batches([len(row) for row in ids], widths, batch_size, max_tokens):
        yield batch, pad_batch([ids[i] for i in batch.indices], batch.width, pad_id)


def pad_batch(ids: Sequence[Sequence[int]], width: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded input_ids, attention_mask and token_type_ids (single-segment texts) of shape [batch, width]."""
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, tokens in enumerate(ids):
        input_ids[row, :len(tokens)] = tokens
        attention_mask[row, :len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
