"""Tokenisation and batching for the training and evaluation loops."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from adaret.training.data import TextDataset


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

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        order = list(range(len(self.ids)))
        if shuffle:
            random.Random(seed).shuffle(order)
        else:  # similar lengths together: less padding, and hard-mode K is computed from the padded length
            order.sort(key=lambda i: len(self.ids[i]))
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start:start + batch_size])

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
