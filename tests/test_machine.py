"""The one machine description every recorded result carries (adaret.core.machine)."""

from __future__ import annotations

from adaret.core import machine as core_machine

CPUINFO = """processor\t: 0
model name\t: Some CPU 9000
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
processor\t: 1
model name\t: Some CPU 9000
flags\t\t: fpu sse2
"""


def test_the_first_cores_isa_extensions_are_named(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    monkeypatch.setattr(core_machine, "Path", lambda _: info)
    found = core_machine.machine()
    assert found["cpu"] == "Some CPU 9000" and found["isa"] == ["AVX2", "AVX-512", "AVX512-VNNI"]
    assert core_machine.describe(found) == f"Some CPU 9000, {found['cores']} cores (AVX2, AVX-512, AVX512-VNNI)"


def test_without_cpuinfo_the_description_says_the_isa_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(core_machine, "Path", lambda _: tmp_path / "missing")
    found = core_machine.machine()
    assert found["isa"] == [] and found["cpu"]
    assert core_machine.describe(found).endswith("(ISA not recorded)")
    assert core_machine.describe({"cpu": "old", "cores": 2}) == "old, 2 cores (ISA not recorded)"  # older records


def test_versions_name_missing_libraries():
    found = core_machine.versions(("numpy", "surely-not-a-real-package"))
    assert found["surely-not-a-real-package"] == "not installed" and found["numpy"][0].isdigit()
