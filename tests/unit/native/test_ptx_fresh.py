"""The committed PTX must be what nvcc builds from native/src today."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.native import PTX_MODULES, build


def test_committed_ptx_matches_sources():
    nvcc = build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed: cannot rebuild the PTX to compare")
    stale = build.stale_files(nvcc)
    assert not stale, f"stale PTX, run `python native/build.py`: {stale}"


def test_every_source_has_a_registered_module():
    assert sorted(p.stem for p in build.sources()) == sorted(PTX_MODULES)
    for subdir in build.TARGETS:  # each target's build holds every module
        assert sorted(p.stem for p in (build.PTX_DIR / subdir).glob("*.ptx")) == sorted(PTX_MODULES)


def test_only_the_compute_90_build_uses_programmatic_dependent_launch():
    for module in PTX_MODULES:
        assert "griddepcontrol" not in (build.PTX_DIR / f"{module}.ptx").read_text(), module
        sm90 = (build.PTX_DIR / "sm90" / f"{module}.ptx").read_text()
        assert "griddepcontrol.wait" in sm90 and "griddepcontrol.launch_dependents" in sm90, module
