"""The pass framework: onnx-ir passes that state their precondition and report what they changed.

Each pass is an ``ir.passes.InPlacePass`` that holds configuration only (none of ours needs any). ``requires``
checks structural preconditions (violations are errors); ``applicability`` says why a well-formed graph
does not qualify (the pass then reports itself skipped, with the reason, and leaves the graph alone);
``rewrite`` does the work and returns a ``Rewrite``; ``ensures`` checks the pass's promise afterwards.
What a pass did travels in its ``GraphPassResult``, never in the pass object, so one pass instance can run
on many graphs, in any ``ir.passes.PassManager``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir


def op_histogram(model: ir.Model) -> collections.Counter:
    """Node counts by ``domain:op_type`` (empty domain for standard ONNX ops), over the main graph."""
    return collections.Counter(f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                               for n in model.graph)


def metadata(model: ir.Model, key: str, default: str | None = None) -> str | None:
    return model.metadata_props.get(f"adaret.{key}", default)


@dataclass(frozen=True)
class Rewrite:
    """What ``GraphPass.rewrite`` did: whether the graph changed, and pass-specific counts for the report."""

    modified: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphPassResult(ir.passes.PassResult):
    """``ir.passes.PassResult`` plus what the pass reports: its details, or why it did not apply."""

    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class PassReport:
    """What one pass did: node counts, ops removed and added by type, pass-specific details, parity.

    The pipeline measures all but the last two when the pass returns, and fills those in after the parity check.
    """

    name: str
    modified: bool
    nodes_before: int
    nodes_after: int
    removed: dict[str, int]
    added: dict[str, int]
    details: dict[str, Any]
    skipped: str | None  # why the pass did not apply
    max_abs_diff: float | None = None  # logits vs the unoptimised graph after this pass
    seconds: float = 0.0

    def line(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        change = ", ".join([*(f"-{v} {k}" for k, v in self.removed.items()),
                            *(f"+{v} {k}" for k, v in self.added.items())]) or "no change"
        extra = "".join(f"; {k} {v}" for k, v in self.details.items())
        parity = "" if self.max_abs_diff is None else f"; parity {self.max_abs_diff:.1e}"
        return f"{self.name}: {self.nodes_before} -> {self.nodes_after} nodes ({change}){extra}{parity}"


class GraphPass(ir.passes.InPlacePass):
    """Base class: subclasses implement ``rewrite`` (and optionally ``applicability``/``requires``/``ensures``)."""

    name = "pass"
    parity_tolerance: float | None = None  # None: the pipeline's tolerance (fp32 exactness)

    def applicability(self, model: ir.Model) -> str | None:
        """None when the pass applies to this graph, else the reason it does not."""
        return None

    def rewrite(self, model: ir.Model) -> Rewrite:
        raise NotImplementedError

    def call(self, model: ir.Model) -> GraphPassResult:
        skipped = self.applicability(model)
        if skipped is not None:
            return GraphPassResult(model, modified=False, skipped=skipped)
        done = self.rewrite(model)
        return GraphPassResult(model, modified=done.modified, details=dict(done.details))


class RulePass(GraphPass):
    """A pass whose work is a set of ``onnxscript.rewriter`` rules (``rules``): ``rewrite`` applies them and
    reports how many rewrites they made under ``counted``; ``ensures`` checks, with the very rules that did the
    work, that on a graph the pass applies to none matches any more (``left`` names what one would find)."""

    counted = "rewrites"
    left = "a node the pass rewrites"

    def rules(self) -> list:
        raise NotImplementedError

    def rewrite(self, model: ir.Model) -> Rewrite:
        done = apply_rules(model, self.rules())
        return Rewrite(done > 0, {self.counted: done})

    def ensures(self, model: ir.Model) -> None:
        if self.applicability(model) is None and rules_match(model, self.rules()):
            raise ir.passes.PostconditionError(f"{self.left} is left")


def expands_whole_rows(data: ir.Value, index: ir.Value, expanded: ir.Value) -> bool:
    """Whether ``expanded`` is a (B, K, 1) ``index`` broadcast along the feature axis of a (B, n, D) ``data``
    alone: an element-wise gather or scatter with it then moves whole D-rows, which the row passes rewrite."""
    data_shape, index_shape, expanded_shape = data.shape, index.shape, expanded.shape
    if data_shape is None or index_shape is None or expanded_shape is None:
        return False
    if not len(data_shape) == len(index_shape) == len(expanded_shape) == 3:
        return False
    return (index_shape[2] == 1 and expanded_shape[0] == index_shape[0] and expanded_shape[1] == index_shape[1]
            and isinstance(data_shape[2], int) and expanded_shape[2] == data_shape[2])


def apply_rules(model: ir.Model, rules: Sequence[Any]) -> int:
    """Apply ``onnxscript.rewriter`` rules to ``model`` in place; the number of rewrites they made."""
    from onnxscript.rewriter.pattern import RewriteRuleSet  # on use: onnxscript is slow to import

    return RewriteRuleSet(list(rules)).apply_to_model(model)


def rules_match(model: ir.Model, rules: Sequence[Any]) -> bool:
    """Whether any of ``rules`` would still rewrite a node of the main graph: for an ``ensures`` that states
    the pass's promise with the very rule that does the work."""
    return any(rule.match(model, model.graph, node, check_nodes_are_removable=rule.remove_nodes)
               for node in model.graph for rule in rules)


def diff_histograms(before: collections.Counter, after: collections.Counter) -> tuple[dict, dict]:
    removed = {k: before[k] - after.get(k, 0) for k in sorted(before) if before[k] > after.get(k, 0)}
    added = {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] > before.get(k, 0)}
    return removed, added
