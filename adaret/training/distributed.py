"""Multi-process gate training under torchrun: PyTorch DDP, gloo for CPU tensors and nccl for GPU tensors.

``torchrun --nproc-per-node N -m adaret.cli train ...`` starts N copies of ``adaret train``. Each finds its place
in the environment torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). A plain ``adaret
train`` sets none of them: every function here is then the identity or runs its argument, so single-process
training is the same computation as before.

What runs where:

- Gate training (SGDA) is data-parallel, and ``--batch-size`` is per process: one step consumes a global batch of
  ``batch_size * world_size`` examples. Every rank builds the same length-grouped global batches (same data, same
  seed) and takes rows ``rank, rank + W, rank + 2W, ...`` of each (``shard``). A ``DistributedSampler`` would not
  do: it deals the examples out at random, so the ranks' batches together form no batch a single process would
  see, and a W-process run could not equal a single process at W times the batch. Strided rows of the same batch
  do, and spread the batch's (sorted) lengths evenly over the ranks.
- DDP averages the gradients of the trained parameters (the gates; the head with --tune-head; the backbone when it
  is fine-tuned). The losses are means over rows, so each rank scales its loss by W times its share of the global
  batch's rows (``scaled``): DDP's average over ranks is then the gradient of the global batch's mean, also when the
  last batch of an epoch splits unevenly. A rank left without rows runs one row at weight zero, so that every rank
  joins every all-reduce.
- The budget estimate C is a mean over examples (``expected_budget``: each example's expected fraction of its own
  real tokens), so the global batch's C is the row-weighted mean of the ranks' C. It is all-reduced before the
  dual step (``global_mean``): every rank steps the multipliers with the same C and holds the same lambda and mu.
- What decides or writes runs on rank 0 alone and is broadcast (``from_main``): the validation evaluations that
  select the gates, the head fits, the held-out evaluation and the checkpoint write. Every rank thus takes the same
  decision and ends with the same parameters; the other ranks wait in the broadcast, then exit.
- Each rank draws its own Hard-Concrete noise (``seed_per_rank``), so a W-process run equals a single process at W
  times the batch in distribution; with the noise pinned, to float summation order (tests/test_distributed.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adaret.core.errors import AdaretError, root_cause

T = TypeVar("T")
B = TypeVar("B")
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# The other ranks wait in a broadcast while rank 0 alone fits the head and evaluates the held-out split: the
# collectives' default timeout (30 minutes for gloo, 10 for nccl) can be shorter than that on a large eval split.
WAIT = timedelta(hours=3)


def launched() -> bool:
    """Whether this process is one of several that torchrun started."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise AdaretError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}") from None
    if world <= 1:
        return False
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise AdaretError(f"WORLD_SIZE is {world} but {', '.join(missing)} not set: start multi-process training "
                          "with torchrun")
    return True


@contextmanager
def session() -> Iterator[None]:
    """The process group of a torchrun launch, for the block; nothing for a single process or an existing group."""
    if not launched() or dist.is_initialized():
        yield
        return
    _init()
    try:
        yield
        # Every rank leaves together: a rank that tears gloo down while a peer is still finishing the last
        # broadcast (rank 0 saving the checkpoint) was seen to abort in C++ at exit ("terminate called without an
        # active exception", SIGABRT), failing the launch after the work was done. Not on an error: the peer may
        # be gone, and the barrier would wait for it until the timeout.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _init() -> None:
    # Object collectives and barriers use gloo whenever a cpu backend is listed, so the mixed form serves both.
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend, timeout=WAIT)
    except (RuntimeError, ValueError) as exc:
        raise AdaretError(f"cannot join the process group at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
                          f"({root_cause(exc)})") from None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0] if not is_main() else value


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 alone, its result on every rank: one decision, taken once.

    A failure on rank 0 reaches the other ranks as one line, so they stop instead of waiting for a result.
    """
    if not is_distributed():
        return compute()
    if not is_main():
        status, value = broadcast_object(None)
        if status == "error":
            raise AdaretError(f"stopped: rank 0 failed ({value})")
        return value
    try:
        value = compute()
    except BaseException as exc:
        broadcast_object(("error", root_cause(exc)))
        raise
    broadcast_object(("ok", value))
    return value


@contextmanager
def on_main(context: Callable[[], Any]) -> Iterator[None]:
    """The block inside ``context()`` entered on rank 0 only (an output directory's claim); every rank stops if
    entering it failed there."""
    with ExitStack() as stack:

        def enter() -> None:
            stack.enter_context(context())

        from_main(enter)
        yield


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers of ``module``, in place on every rank."""
    if is_distributed():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def seed_per_rank(seed: int) -> None:
    """A random stream per rank for the Hard-Concrete noise: with one seed, every rank would draw the same noise
    for different examples."""
    if is_distributed():
        torch.manual_seed(seed * 65_537 + rank())


@contextmanager
def data_parallel(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in DDP over its parameters that require grad (itself when single-process).

    The wrapper is dropped after the block, and its gradient hooks with it, so that a later fit on rank 0 alone
    does not wait for the other ranks.
    """
    if not is_distributed():
        yield model
        return
    # The buffers are constants (position ids): broadcasting them before every forward would only cost time.
    wrapped = DistributedDataParallel(model, forward_sync_buffers=False)
    try:
        yield wrapped
    finally:
        del wrapped


def shard(batch: B) -> tuple[B, float]:
    """This rank's rows of a global batch (every W-th, from its rank), and their share of the batch's rows.

    ``batch`` is a dataclass of tensors whose first dimension is the row (``Batch``, ``SpanBatch``).
    """
    if not is_distributed():
        return batch, 1.0
    size = batch.attention_mask.shape[0]
    rows = list(range(rank(), size, world_size()))
    share = len(rows) / size
    index = torch.tensor(rows or [0])  # no rows: one at weight zero, so that this rank joins the all-reduce
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[index]
                                         for f in dataclasses.fields(batch)}), share


def scaled(loss: torch.Tensor, share: float) -> torch.Tensor:
    """A rank's mean ``loss`` over its rows, scaled so that DDP's average over ranks is the global batch's mean."""
    return loss * (share * world_size()) if is_distributed() else loss


def global_mean(value: torch.Tensor, share: float) -> torch.Tensor:
    """The global batch's mean of a per-rank mean ``value``: its value is the all-reduced, row-weighted mean, and its
    gradient this rank's part of it (``scaled``)."""
    if not is_distributed():
        return value
    total = value.detach() * share
    dist.all_reduce(total)
    return total + scaled(value - value.detach(), share)


def shard_rows(total: int) -> list[int]:
    """This rank's rows of a data set of ``total`` rows, for work split over ranks (``gather_rows``)."""
    return list(range(rank(), total, world_size()))


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's ``local`` rows (``shard_rows``) back in data-set order, [total, ...] on every rank."""
    if not is_distributed():
        return local
    world = world_size()
    padded = local.new_zeros((-(-total // world), *local.shape[1:]))  # all_gather needs one shape on every rank
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for source, part in enumerate(parts):
        out[source::world] = part[: len(range(source, total, world))]
    return out
