"""The committed PTX must be what nvcc builds from native/src today."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lmdeploy_sdk.native import PTX_MODULES, SM90A_PTX_MODULES, build, driver
from lmdeploy_sdk.native import paged_attention as native_attention

# The arch-specific (sm_90a) modules and where they build: nowhere else.
SM90A_MODULES = list(SM90A_PTX_MODULES)


def test_the_wgmma_prefill_is_a_registered_sm90a_module():
    assert native_attention.WGMMA_PREFILL_MODULE in SM90A_PTX_MODULES


def test_committed_ptx_matches_sources():
    nvcc = build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed: cannot rebuild the PTX to compare")
    stale = build.stale_files(nvcc)
    assert not stale, f"stale PTX, run `python native/build.py`: {stale}"


def test_every_source_has_a_registered_module():
    assert sorted(p.stem for p in build.target_sources("")) == sorted(PTX_MODULES)
    assert sorted(p.stem for p in build.target_sources("sm90a")) == sorted(SM90A_MODULES)
    assert sorted(p.stem for p in build.sources()) == sorted([*PTX_MODULES, *SM90A_MODULES])
    for subdir in build.TARGETS:  # each target's build holds exactly its modules
        expected = SM90A_MODULES if subdir == "sm90a" else PTX_MODULES
        assert sorted(p.stem for p in (build.PTX_DIR / subdir).glob("*.ptx")) == sorted(expected), subdir


def test_sm90a_sources_build_only_for_compute_90a():
    assert build.TARGETS["sm90a"] == "compute_90a"
    assert build.targets_of(Path("paged_attention_prefill_sm90a.cu")) == ["sm90a"]
    assert build.targets_of(Path("paged_attention_prefill.cu")) == ["", "sm90"]
    assert build.ARCH_SPECIFIC_SUFFIX == driver.SM90A_MODULE_SUFFIX  # the driver finds them where they build
    assert build.ARCH_SPECIFIC_TARGET == driver.SM90A_PTX_SUBDIR
    with pytest.raises(ValueError, match="sm100"):
        build.target_sources("sm100")


def test_build_runs_nvcc_once_per_source_and_target(tmp_path, monkeypatch):
    calls = []

    class Done:
        returncode, stderr = 0, ""

    monkeypatch.setattr(build.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    build.build(tmp_path, nvcc="nvcc")
    built = sorted((c[c.index("-o") - 1], c[c.index("-o") - 2]) for c in calls)  # (source, -arch=...)
    expected = sorted(
        (src.name, f"-arch={build.TARGETS[sub]}") for sub in build.TARGETS for src in build.target_sources(sub)
    )
    assert built == expected
    assert ("paged_attention_prefill_sm90a.cu", "-arch=compute_90a") in built
    assert not any(name.endswith("_sm90a.cu") and arch != "-arch=compute_90a" for name, arch in built)


def test_package_ships_every_target():
    pyproject = tomllib.loads((build.NATIVE_DIR.parent / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["lmdeploy_sdk.native"]
    for subdir in build.TARGETS:
        assert str(Path("ptx") / subdir / "*.ptx") in shipped, subdir


def test_only_the_compute_90_builds_use_programmatic_dependent_launch():
    for module in PTX_MODULES:
        assert "griddepcontrol" not in (build.PTX_DIR / f"{module}.ptx").read_text(), module
        sm90 = (build.PTX_DIR / "sm90" / f"{module}.ptx").read_text()
        assert "griddepcontrol.wait" in sm90 and "griddepcontrol.launch_dependents" in sm90, module
    for module in SM90A_MODULES:
        sm90a = (build.PTX_DIR / "sm90a" / f"{module}.ptx").read_text()
        assert ".target sm_90a" in sm90a and "wgmma.mma_async" in sm90a, module
        assert "griddepcontrol.wait" in sm90a and "griddepcontrol.launch_dependents" in sm90a, module
