"""The schedule from the user's bug report (issue 12), exported at 0.2, 0.3 and 0.4 and checked on fixed
(batch, length, padding) cases: before the keep rule got its floor of 2 it broke torch.export's guards.

Kept apart from the drawn schedules of ``test_export_property`` so that the two run side by side under
pytest-xdist; the checks are the same function.
"""

from __future__ import annotations

import pytest
from test_export_property import _FIXED_CASES, _bug_report, _check_export_parity


@pytest.mark.parametrize("budget", [0.2, 0.3, 0.4])
def test_the_bug_report_schedule_exports_with_parity(budget):
    _check_export_parity(_bug_report(budget), _FIXED_CASES)
