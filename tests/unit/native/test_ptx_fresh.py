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
    assert sorted(p.stem for p in build.PTX_DIR.glob("*.ptx")) == sorted(PTX_MODULES)
