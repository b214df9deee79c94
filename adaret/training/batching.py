"""Tokenisation and batching for the training and evaluation loops."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from adaret.training.data import TextDataset

LENGTH_GROUP = 32  # batches per length-sorted window when shuffling


def length_grouped(lengths: list[int], batch_size: int, *, shuffle: bool = False, seed: int = 0) -> list[list[int]]:
    """Example indices cut into batches of similar lengths: less padding, and hard-mode K is computed from the
    padded length.

    Shuffled, the order is random but grouped by length (as ``group_by_length`` in transformers): the
    shuffled examples are cut into windows of ``LENGTH_GROUP`` batches, each window is sorted by length
    and cut into batches, and the batches are shuffled. On texts of mixed lengths a random batch pads
    every row to its longest member, which more than doubled the cost of a training step.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lengths.__getitem__)
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * LENGTH_GROUP
    groups = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        groups.extend(chunk[s:s + batch_size] for s in range(0, len(chunk), batch_size))
    rng.shuffle(groups)
    return groups


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor  # positions of the examples in their dataset

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}


class Encoded:
    """A dataset tokenised once, batched many times with padding to the longest member of each batch."""

    def __init__(self, dataset: TextDataset, tokenizer, max_length: int):
        encoded = tokenizer(dataset.texts, truncation=True, max_length=max_length)
        self.ids: list[list[int]] = encoded["input_ids"]
        self.labels = dataset.labels
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, count: int) -> Encoded:
        """The first ``count`` examples, sharing the tokenisation."""
        part = object.__new__(Encoded)
        part.ids, part.labels, part.pad_id = self.ids[:count], self.labels[:count], self.pad_id
        return part

    def truncated(self, budget: float, sep_id: int, *, keep_tail: bool = False) -> Encoded:
        """What a user would do instead of retention: a tokenizer-side cut to ``K = max(2, ceil(b * n))`` tokens.

        The cut keeps [CLS] and ends in [SEP], so K - 2 content tokens survive: the first K - 2 (head), or
        the first ceil((K - 2) / 2) and the last floor((K - 2) / 2) (``keep_tail``: head+tail). The full
        model then runs on K tokens in every layer, the same cost as a retention budget of b.
        """
        cut = object.__new__(Encoded)
        cut.labels, cut.pad_id, cut.ids = self.labels, self.pad_id, []
        for ids in self.ids:
            keep = max(2, math.ceil(budget * len(ids)))
            if keep >= len(ids):
                cut.ids.append(ids)
                continue
            content = keep - 2
            head = -(-content // 2) if keep_tail else content
            tail = ids[len(ids) - 1 - (content - head):len(ids) - 1] if content > head else []
            cut.ids.append([*ids[:1 + head], *tail, sep_id])
        return cut

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Batches of similar lengths (``length_grouped``), collated with padding to each batch's longest."""
        lengths = [len(ids) for ids in self.ids]
        yield from (self.collate(group) for group in length_grouped(lengths, batch_size, shuffle=shuffle, seed=seed))

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.ids) // batch_size)

    def collate(self, indices: list[int]) -> Batch:
        width = max(len(self.ids[i]) for i in indices)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids[row, :len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[row, :len(self.ids[i])] = 1
        labels = torch.tensor([self.labels[i] for i in indices])
        return Batch(ids, mask, torch.zeros_like(ids), labels, torch.tensor(indices))
