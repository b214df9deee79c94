"""Training a summarizer whose decoder reads the retained memory of a gated encoder (``adaret.modeling.seq2seq``).

Three stages, as for classification, with the decoder in the head's part:

1. Full model: the decoder (and the encoder backbone, unless frozen) trained by teacher forcing on the full memory,
   no retention, for ``decoder_epochs + refit_epochs``. This is "the full model trained the same way", kept as the
   reference: its decoder takes as many steps as the deployed one does in stages 1 and 3 together. The deployed
   decoder starts from its snapshot after ``decoder_epochs``.
2. Gate training by SGDA (``adaret.training.sgda``): the Lagrangian with the token cross-entropy on the relaxed
   compact memory as the task loss, the decoder frozen (dropout off). Checkpoint selection runs the deployed hard
   top-M rule at the budget on a validation slice of the training split and scores its teacher-forced next-token
   accuracy.
3. Decoder re-fit on the deployed memory: the gates fixed, the hard top-M memory at the budget, the decoder trained
   on it, so that it reads what the exported encoder computes.

The held-out metrics are ROUGE-1/2/L of greedy summaries: the full model (reference decoder, full memory) against
the deployed rule (re-fitted decoder, hard memory at the budget).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from adaret.core.chunks import document_chunks, pad_chunks, plain_tokenizer
from adaret.core.detokenize import clean_spacing
from adaret.core.summaries import SummaryPair, rouge_scores
from adaret.modeling import KeepSchedule, layer_keep_fractions
from adaret.modeling.scorers import TokenScorer
from adaret.modeling.seq2seq import Memory, RetentionSeq2Seq
from adaret.training.batching import length_grouped
from adaret.training.seq2seq_checkpoint import ChunkSettings
from adaret.training.sgda import ValidationPoint, run_sgda

IGNORE_INDEX = -100  # a padded target position: no loss


@dataclass(frozen=True)
class SpecialTokens:
    start: int  # the decoder's first input ([CLS])
    end: int  # what ends a summary ([SEP])
    pad: int

    @classmethod
    def of(cls, tokenizer) -> SpecialTokens:
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)


@dataclass
class SummaryBatch:
    input_ids: torch.Tensor  # [batch, chunks, chunk tokens]
    chunk_mask: torch.Tensor  # [batch, chunks, chunk tokens]
    decoder_input_ids: torch.Tensor  # [batch, target]: start, y_1 .. y_{T-1}
    labels: torch.Tensor  # [batch, target]: y_1 .. end, IGNORE_INDEX on padding
    indices: torch.Tensor

    @property
    def attention_mask(self) -> torch.Tensor:
        """Every document's real tokens, chunk after chunk [batch, chunks * chunk tokens]: what the budget counts."""
        return self.chunk_mask.flatten(1)

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.chunk_mask,
                "decoder_input_ids": self.decoder_input_ids}


class SummaryData:
    """Pairs tokenized once (documents into chunks, summaries into [CLS] ... [SEP]), batched many times."""

    def __init__(self, pairs: Sequence[SummaryPair], tokenizer, settings: ChunkSettings, special: SpecialTokens,
                 device: torch.device | str = "cpu"):
        self.pairs = list(pairs)
        self.special = special
        self.device = torch.device(device)  # where batches are made: the model's device
        plain = plain_tokenizer(tokenizer.backend_tokenizer)
        self.documents = document_chunks(plain, [p.text for p in self.pairs], chunk_length=settings.chunk_length,
                                         max_source_tokens=settings.max_source_tokens, cls_id=special.start,
                                         sep_id=special.end)
        body = settings.max_target_tokens - 2
        self.targets = [[special.start, *e.ids[:body], special.end]
                        for e in plain.encode_batch([p.summary for p in self.pairs], add_special_tokens=False)]

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices: Sequence[int]) -> SummaryData:
        other = copy.copy(self)
        other.pairs = [self.pairs[i] for i in indices]
        other.documents = [self.documents[i] for i in indices]
        other.targets = [self.targets[i] for i in indices]
        return other

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[SummaryBatch]:
        sizes = [sum(len(c) for c in doc) for doc in self.documents]
        for rows in length_grouped(sizes, batch_size, shuffle=shuffle, seed=seed):
            yield self.batch(rows)

    def deployed_batches(self, batch_size: int) -> Iterator[SummaryBatch]:
        """Batches of documents whose rows have one width (their longest chunk): what the hard top-M rule sees at
        deployment. K_l follows a row's padded width, and the runtime pads each document to its own longest chunk;
        padded to a longer neighbour, a document would keep more tokens than the deployed graph keeps for it."""
        by_width: dict[int, list[int]] = {}
        for index, doc in enumerate(self.documents):
            by_width.setdefault(max(len(chunk) for chunk in doc), []).append(index)
        for rows in by_width.values():
            for start in range(0, len(rows), batch_size):
                yield self.batch(rows[start:start + batch_size])

    def batch(self, rows: Sequence[int]) -> SummaryBatch:
        ids, mask = pad_chunks([self.documents[i] for i in rows], self.special.pad)
        width = max(len(self.targets[i]) for i in rows) - 1
        decoder_inputs = torch.full((len(rows), width), self.special.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for row, index in enumerate(rows):
            target = torch.tensor(self.targets[index])
            decoder_inputs[row, :len(target) - 1] = target[:-1]
            labels[row, :len(target) - 1] = target[1:]
        return SummaryBatch(*(t.to(self.device) for t in (torch.from_numpy(ids), torch.from_numpy(mask),
                                                           decoder_inputs, labels)), torch.tensor(list(rows)))


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


# --- stage 1 and 3: the decoder by teacher forcing -------------------------------------------------------------


def train_decoder(model: RetentionSeq2Seq, data: SummaryData, *, epochs: float, lr: float, batch_size: int, seed: int,
                  mode: str, schedule: KeepSchedule | None = None, encoder_lr: float | None = None,
                  snapshot_epochs: float | None = None, desc: str = "decoder",
                  scorer: TokenScorer | None = None) -> nn.Module | None:
    """Teacher forcing on ``mode``'s memory ("full", or "hard" at ``schedule``); the gates stay fixed. The encoder
    backbone learns too when ``encoder_lr`` is given (only on the full memory: hard top-M has no gradient to it).
    ``scorer``: what ranks the tokens in hard mode instead of the gates (the baselines of a benchmark).

    ``snapshot_epochs``: also return a copy of the decoder as it was after that many epochs (None: return None).
    """
    params = [{"params": list(model.decoder.parameters()), "lr": lr}]
    train_encoder = encoder_lr is not None and mode == "full"
    if train_encoder:
        params.append({"params": list(model.encoder.parameters()), "lr": encoder_lr})
    model.decoder.requires_grad_(True)
    # A fixed encoder gives every document the same memory in every epoch: encode each once.
    memories = None if train_encoder else MemoryCache(model, data, batch_size, mode, schedule, scorer)
    optimizer = torch.optim.AdamW(params, weight_decay=0.01)
    per_epoch = math.ceil(len(data) / batch_size)
    steps = max(1, math.ceil(epochs * per_epoch))
    snapshot_step = None if snapshot_epochs is None else max(1, math.ceil(snapshot_epochs * per_epoch))
    snapshot = None
    losses: list[float] = []
    bar = tqdm(total=steps, desc=desc, dynamic_ncols=True)
    epoch = 0
    while len(losses) < steps:
        for batch in data.batches(batch_size, shuffle=True, seed=seed * 7919 + epoch):
            model.train()
            if not train_encoder:
                model.retention.eval()
            if memories is None:
                memory = model.encode(batch.input_ids, batch.chunk_mask, mode=mode, schedule=schedule, scorer=scorer)
            else:
                memory = memories.batch(batch.indices.tolist())
            logits = model.decode_memory(batch.decoder_input_ids, memory)
            loss = token_loss(logits, batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == snapshot_step:
                snapshot = copy.deepcopy(model.decoder).requires_grad_(False)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
            bar.update()
            if len(losses) >= steps:
                break
        epoch += 1
    bar.close()
    model.eval()
    return snapshot


class MemoryCache:
    """Every document's memory under a fixed encoder, encoded once (float16: half the RAM; the decoder's input
    then differs from the float32 memory by the rounding of a half, far below what teacher forcing notices)."""

    def __init__(self, model: RetentionSeq2Seq, data: SummaryData, batch_size: int, mode: str,
                 schedule: KeepSchedule | None, scorer: TokenScorer | None = None):
        self.states: dict[int, torch.Tensor] = {}
        self.device = data.device
        model.eval()
        with torch.no_grad():
            batches = data.deployed_batches(batch_size) if mode == "hard" else data.batches(batch_size)
            for batch in tqdm(list(batches), desc="encode memory", dynamic_ncols=True, leave=False):
                memory = model.encode(batch.input_ids, batch.chunk_mask, mode=mode, schedule=schedule, scorer=scorer)
                for row, index in enumerate(batch.indices.tolist()):
                    kept = memory.mask[row] > 0
                    self.states[index] = memory.states[row][kept].to("cpu", torch.float16)

    def batch(self, rows: Sequence[int]) -> Memory:
        """The rows' memories padded to the longest: states [batch, memory, hidden], mask 1 on real slots."""
        longest = max(len(self.states[i]) for i in rows)
        hidden = self.states[rows[0]].shape[-1]
        states = torch.zeros(len(rows), longest, hidden)
        mask = torch.zeros(len(rows), longest)
        for row, index in enumerate(rows):
            count = len(self.states[index])
            states[row, :count] = self.states[index].float()
            mask[row, :count] = 1.0
        return Memory(states.to(self.device), mask.to(self.device))


# --- stage 2: gates by SGDA ------------------------------------------------------------------------------------


class SummarizationTask:
    """SGDA's task: token cross-entropy on the relaxed memory; the deployed rule's next-token accuracy."""

    def __init__(self, config, validation: SummaryData):
        self.config, self.validation = config, validation
        self.full_predictions: list[torch.Tensor] | None = None

    def loss(self, out, batch: SummaryBatch) -> torch.Tensor:
        return token_loss(out.logits, batch.labels)

    @torch.no_grad()
    def evaluate(self, model: RetentionSeq2Seq, step: int) -> ValidationPoint:
        model.eval()
        fractions = relaxed_keep_fractions(model, self.validation, self.config.batch_size)
        schedule = KeepSchedule.from_fractions(fractions).rescaled(self.config.budget)
        if self.full_predictions is None:
            self.full_predictions = self._predictions(model, "full", None)
        correct = agree = total = 0
        for batch, full in zip(self._batches(), self.full_predictions, strict=True):
            predicted = model(**batch.inputs, mode="hard", schedule=schedule).logits.argmax(-1)
            real = batch.labels != IGNORE_INDEX
            correct += int(((predicted == batch.labels) & real).sum())
            agree += int(((predicted == full) & real).sum())
            total += int(real.sum())
        return ValidationPoint(step, sum(fractions) / len(fractions), correct / max(total, 1), agree / max(total, 1))

    def _batches(self) -> Iterator[SummaryBatch]:
        return self.validation.deployed_batches(self.config.batch_size)

    def _predictions(self, model: RetentionSeq2Seq, mode: str, schedule) -> list[torch.Tensor]:
        return [model(**b.inputs, mode=mode, schedule=schedule).logits.argmax(-1) for b in self._batches()]


@torch.no_grad()
def relaxed_keep_fractions(model: RetentionSeq2Seq, data: SummaryData, batch_size: int) -> list[float]:
    """Per-layer keep fractions of the deterministic gates on ``data`` (the schedule calibration measures)."""
    model.eval()
    sums, count = None, 0
    for batch in data.batches(batch_size):
        memory = model.encode(batch.input_ids, batch.chunk_mask, mode="relaxed")
        fractions = layer_keep_fractions(memory.expected_masks, batch.attention_mask.float()) * len(batch.indices)
        sums = fractions if sums is None else sums + fractions
        count += len(batch.indices)
    return [float(f) for f in sums / max(count, 1)]


def train_gates(model: RetentionSeq2Seq, train: SummaryData, validation: SummaryData, config):
    """Stage 2 (see the module docstring): the decoder is frozen, so ``run_sgda`` trains the gates only."""
    model.decoder.requires_grad_(False)
    return run_sgda(model, train, config, SummarizationTask(config, validation))


# --- held-out evaluation ---------------------------------------------------------------------------------------


@torch.no_grad()
def generate_summaries(model: RetentionSeq2Seq, data: SummaryData, tokenizer, *, batch_size: int, mode: str,
                       schedule: KeepSchedule | None, max_new_tokens: int, desc: str = "generate",
                       scorer: TokenScorer | None = None) -> list[str]:
    """Greedy summaries of every document, in data order."""
    model.eval()
    summaries: dict[int, str] = {}
    special = data.special
    batches = data.deployed_batches(batch_size) if mode == "hard" else data.batches(batch_size)
    for batch in tqdm(list(batches), desc=desc, dynamic_ncols=True, leave=False):
        tokens = model.generate(batch.input_ids, batch.chunk_mask, start_id=special.start, end_id=special.end,
                                max_new_tokens=max_new_tokens, mode=mode, schedule=schedule, scorer=scorer)
        for index, row in zip(batch.indices.tolist(), tokens.tolist(), strict=True):
            summaries[index] = clean_spacing(tokenizer.decode(_until_end(row, special.end),
                                                              skip_special_tokens=True))
    return [summaries[i] for i in range(len(data))]


def _until_end(tokens: list[int], end: int) -> list[int]:
    return tokens[:tokens.index(end)] if end in tokens else tokens


def rouge_of(model: RetentionSeq2Seq, data: SummaryData, tokenizer, *, batch_size: int, mode: str,
             schedule: KeepSchedule | None, max_new_tokens: int, desc: str,
             scorer: TokenScorer | None = None) -> dict[str, float]:
    predictions = generate_summaries(model, data, tokenizer, batch_size=batch_size, mode=mode, schedule=schedule,
                                     max_new_tokens=max_new_tokens, desc=desc, scorer=scorer)
    return rouge_scores(predictions, [p.summary for p in data.pairs]) | {"examples": len(data)}


def random_subset(pairs: list[SummaryPair], limit: int | None, seed: int) -> list[SummaryPair]:
    if limit is None or limit >= len(pairs):
        return pairs
    return random.Random(seed).sample(pairs, limit)
