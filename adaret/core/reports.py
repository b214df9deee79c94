"""A check run case by case against one tolerance: the shape every parity report shares.

A report holds its cases and states its aggregates declaratively, each one a fold over the cases:

    max_abs_diff = worst("max_abs_diff")            # the largest of the cases' values (0.0 with no cases)
    positions_identical = every("positions_identical")   # true when every case's value is true

``summary_fields`` names the aggregates that ``as_dict`` writes, before ``passed`` and the cases themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

CaseT = TypeVar("CaseT")


def worst(case_field: str) -> property:
    """A report property: the largest ``case_field`` over its cases, 0.0 when there are none."""
    return property(lambda report: max((getattr(case, case_field) for case in report.cases), default=0.0))


def every(case_field: str) -> property:
    """A report property: whether ``case_field`` holds in every case (vacuously true with none)."""
    return property(lambda report: all(getattr(case, case_field) for case in report.cases))


@dataclass
class CaseReport(Generic[CaseT]):
    tolerance: float
    cases: list[CaseT] = field(default_factory=list)
    summary_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def passed(self) -> bool:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, **{name: getattr(self, name) for name in self.summary_fields},
                "passed": self.passed, "cases": [asdict(case) for case in self.cases]}
