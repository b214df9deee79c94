"""The memory helper measures something real: a known allocation shows up, nothing shows up for nothing."""

import sys

import pytest

from adaret.core.errors import AdaretError
from adaret.runtime.memory import measure_peak_rss

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="exact peak reset needs /proc (Linux)")


def test_a_known_allocation_shows_up_and_nothing_else_does():
    idle = measure_peak_rss("adaret.runtime.memory:allocate_workload", {"mib": 0})
    known = measure_peak_rss("adaret.runtime.memory:allocate_workload", {"mib": 160}, repeats=2)
    assert idle.method == known.method == "clear_refs"
    assert idle.peak_delta_mib < 8
    assert 150 <= known.peak_delta_mib - idle.peak_delta_mib <= 175  # the same 160 MiB, reused on the repeat
    assert known.baseline_rss_bytes > 0 and known.as_dict()["peak_delta_bytes"] == known.peak_delta_bytes


def test_the_load_peak_is_not_counted(tmp_path):
    """A big allocation freed during load would mask the workload under plain ru_maxrss; the reset removes it."""
    module = tmp_path / "load_spike.py"
    module.write_text("def workload():\n"
                      "    spike = b'x' * (300 * 2**20)\n"
                      "    del spike\n"
                      "    return lambda: b'y' * (40 * 2**20)\n")
    measured = measure_peak_rss("load_spike:workload", env={"PYTHONPATH": str(tmp_path)})
    assert 35 <= measured.peak_delta_mib <= 60


def test_a_failing_workload_is_a_clear_error():
    with pytest.raises(AdaretError, match="memory measurement of no_such_module:f failed"):
        measure_peak_rss("no_such_module:f")
