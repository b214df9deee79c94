"""Thresholds, defaults and settings of `adaret validate` (a light module: the CLI parser reads them on every call)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adaret import __version__
from adaret.core.errors import AdaretError
from adaret.core.machine import machine, versions
from adaret.core.outputs import output_dir
from adaret.validation.markdown import onnxruntime_rows

DEFAULT_BUDGETS = (0.3, 0.4, 0.5, 1.0)
# ONNX Runtime against PyTorch, both fp32, on real text: differences are ~1e-5 unless a near-tie flips one token's
# rank, which moves a logit by ~1e-2; 1e-3 fails on any systematic disagreement and tolerates float reordering.
DEFAULT_PARITY_TOLERANCE = 1e-3
DEFAULT_TRT_TOLERANCE = 5e-2  # an fp16 engine against fp32 PyTorch
# The paper's claim: keeping 30-50% of tokens preserves >= 95% of full-model performance.
DEFAULT_ACCURACY_FLOOR = 0.95


# Keyword-only: each task adds its own fields after these, so a position would mean different fields in each.
@dataclass(kw_only=True)
class ReportSettings:
    """What ``adaret validate`` takes for either task (``ValidationConfig``, ``QaValidationConfig``)."""

    checkpoint: str | None = None
    onnx: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    data: str | None = None
    budgets: tuple[float, ...] | None = None
    out: str = "out/validate"
    max_examples: int | None = None
    batch_size: int = 8
    threads: int | None = None
    device: str = "cpu"
    parity_tolerance: float = DEFAULT_PARITY_TOLERANCE
    accuracy_floor: float = DEFAULT_ACCURACY_FLOOR
    memory: bool = True
    command: str = ""
    overwrite: bool = False  # write into a non-empty ``out``, replacing only this command's files

    def check_numbers(self) -> None:
        """Refuse numbers no run can use, before any work (library callers bypass the command line's types)."""
        if self.batch_size < 1:
            raise AdaretError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.accuracy_floor <= 1.0:
            raise AdaretError(f"--accuracy-floor must lie in [0, 1], got {self.accuracy_floor}")

    def report_header(self, *, task: str, checkpoint: Path | str, checkpoint_sha256: str, data: str) -> dict:
        """The fields every validation report opens with: what ran, on which checkpoint and data, and where."""
        import torch  # here, not at the top: the CLI parser imports this module on every call

        return {"adaret_version": __version__, "task": task, "command": self.command, "checkpoint": str(checkpoint),
                "checkpoint_sha256": checkpoint_sha256, "data": data, "batch_size": self.batch_size,
                "device": self.device, "threads": self.threads or torch.get_num_threads(), "machine": machine(),
                "versions": versions()}

    def run_in_out(self, validate: Callable[[Path], dict]) -> dict:
        """``validate(out)`` at ``threads``, in ``out`` claimed first: claimed before any checkpoint, export or
        measurement, so that a non-empty ``--out`` fails in a second."""
        import torch  # here, not at the top: the CLI parser imports this module on every call

        if self.threads:
            torch.set_num_threads(self.threads)
        with output_dir(self.out, overwrite=self.overwrite, what="report directory") as claim:
            return validate(claim.path)

    def row_checks(self, rows: list[dict], per_row: Callable[[dict, str], list[dict]], metric: str,
                   key: str) -> list[dict]:
        """For every ONNX Runtime row (``rows[0]`` is the full model): ``per_row(row, name)``'s checks, then the
        accuracy floor on ``row[key]`` (named ``metric``) for a retained budget."""
        full, checks = rows[0], []
        for row, name in onnxruntime_rows(rows):
            checks += per_row(row, name)
            if row["budget"] < 1.0:
                checks.append(self.floor_check(name, metric, row[key], full[key], digits=2))
        return checks

    def floor_check(self, target: str, metric: str, value: float, full: float, digits: int) -> dict:
        """``--accuracy-floor`` for a retained model: its ``metric`` at least that fraction of the full model's."""
        floor = self.accuracy_floor * full
        return {"check": f"{metric.lower()}_floor", "target": target, "passed": value >= floor,
                "detail": f"{metric} {value:.{digits}f} vs floor {floor:.{digits}f} ({self.accuracy_floor:.0%} of "
                          f"full {full:.{digits}f})"}



def concluded(report: dict, checks: list[dict]) -> dict:
    """``report`` with its ``checks`` and the verdict: passed when every check passed."""
    report["checks"] = checks
    report["passed"] = all(check["passed"] for check in checks)
    return report


def resolve_target(settings: ReportSettings, target: str | None, *, task: str, is_checkpoint: Callable[[Path], bool],
                   check_export: Callable[[Path], None] | None = None) -> tuple[Path, Path | None]:
    """(checkpoint directory, export or None when the export is to be made here) for a task validated from
    EXPORT_OR_CHECKPOINT (question answering, summarization); every refusal is one cheap line.

    ``task`` names the task in messages; ``is_checkpoint`` tells its checkpoints; ``check_export`` refuses a path
    that is neither such a checkpoint nor the task's export.
    """
    if settings.onnx or settings.plans:
        raise AdaretError(f"--onnx and --plan are for classification; give the {task} export as "
                          "EXPORT_OR_CHECKPOINT (and its --checkpoint)")
    given = target or settings.checkpoint
    if given is None:
        raise AdaretError(f"give EXPORT_OR_CHECKPOINT: a {task} export (with --checkpoint) or checkpoint")
    path = Path(given)
    if not path.exists():
        raise AdaretError(f"{path} does not exist")
    if is_checkpoint(path):
        if settings.checkpoint and target and Path(settings.checkpoint).resolve() != path.resolve():
            raise AdaretError(f"{path} is a checkpoint; give it as EXPORT_OR_CHECKPOINT or --checkpoint, not both")
        return path, None
    if check_export is not None:
        check_export(path)
    if settings.budgets:
        raise AdaretError(f"{path} is an export at its own budget; --budgets applies to a checkpoint, not both")
    if not settings.checkpoint:
        raise AdaretError(f"{path} is an export: give --checkpoint, the {task} checkpoint it was exported from (the "
                          "PyTorch rows run it)")
    return Path(settings.checkpoint), path
