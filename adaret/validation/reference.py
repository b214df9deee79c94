"""The PyTorch reference as a runner (same ``infer(feeds)`` interface as the runtime's), and its memory workloads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from adaret.core.errors import AdaretError
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import DEFAULT_CHECKPOINT
from adaret.modeling import KeepSchedule, RetentionModel
from adaret.training.checkpoint import RetentionCheckpoint


def resolve_checkpoint(path: str | Path | None) -> Path:
    return Path(path) if path else DEFAULT_CHECKPOINT


def load_checkpoint(path: str | Path | None, attn_implementation: str = "eager") -> RetentionCheckpoint:
    # eager attention by default: it is what export traced, so logit differences measure the backend only
    return RetentionCheckpoint.from_pretrained(resolve_checkpoint(path), attn_implementation=attn_implementation)


def device_for(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise AdaretError("no CUDA device: torch.cuda.is_available() is False (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise AdaretError(f"unknown device {name!r}: use cpu or cuda")
    return torch.device(name)


class TorchRunner:
    """``RetentionModel`` in ``full`` mode, or ``hard`` top-M at a schedule, behind ``infer(feeds)``."""

    def __init__(self, model: RetentionModel, schedule: KeepSchedule | None = None, device: str = "cpu"):
        self.device = device_for(device)
        self.model = model.to(self.device).eval()
        self.schedule = schedule
        self.mode = "full" if schedule is None else "hard"
        self.output_names = ["logits"]

    @torch.inference_mode()
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
                   for name, value in feeds.items()}
        out = self.model(tensors["input_ids"], tensors["attention_mask"], tensors.get("token_type_ids"),
                         mode=self.mode, schedule=self.schedule)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {"logits": out.logits.float().cpu().numpy()}


def schedule_at(checkpoint: RetentionCheckpoint, budget: float) -> KeepSchedule | None:
    """The deployment schedule at ``budget`` (None at 1.0: the plain encoder), as export computes it."""
    if budget >= 1.0:
        return None
    try:
        return checkpoint.info.keep_schedule.rescaled(budget)
    except ValueError as exc:
        raise AdaretError(str(exc)) from None


def torch_workload(checkpoint: str, numerators: list[int] | None, batch: int, seq_len: int,
                   threads: int | None = None, attn_implementation: str = "sdpa") -> Callable[[], object]:
    """Memory workload (see ``adaret.runtime.memory``): one CPU forward of the checkpoint, full
    (``numerators=None``) or hard top-M at that keep schedule."""
    from adaret.runtime.memory import synthetic_feeds

    if threads:
        torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint, attn_implementation)
    runner = TorchRunner(loaded.model, KeepSchedule(tuple(numerators)) if numerators else None)
    feeds = synthetic_feeds(batch, seq_len, model_vocabulary(loaded.model, loaded.tokenizer))
    return lambda: runner.infer(feeds)


def cuda_peak_bytes(run: Callable[[], object]) -> int:
    """Peak CUDA memory that ``run`` allocates above what was allocated before it (weights, inputs)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before

