"""Compile native/src/*.cu to the committed PTX in native/ptx/, with fixed flags.

    python native/build.py           # rebuild every PTX file
    python native/build.py --check   # rebuild into a temp dir; exit 1 if any committed file differs

PTX for compute_80 runs on every GPU from sm_80 on (the driver JIT-compiles it for
sm_90 and later), so one file per source serves A100, H100 and newer. A second build
for compute_90 (ptx/sm90/) adds programmatic dependent launch (griddepcontrol, see
pdl_wait in src/common.cuh); the driver loads it on sm_90 and newer. Sources named
*_sm90a.cu use Hopper-only instructions (wgmma) and build only for compute_90a
(ptx/sm90a/), which the driver loads on compute capability 9.0 exactly; they are not
built for the other two targets. nvcc is run from src/ with relative paths so the output
does not depend on the checkout location.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NATIVE_DIR = Path(__file__).resolve().parent
SRC_DIR = NATIVE_DIR / "src"
PTX_DIR = NATIVE_DIR / "ptx"
NVCC_FLAGS = ("-ptx", "-O3", "-std=c++17")
# PTX targets: subdirectory of ptx/ -> nvcc arch ("" is ptx/ itself)
TARGETS = {"": "compute_80", "sm90": "compute_90", "sm90a": "compute_90a"}
# Sources whose stem ends so are arch-specific: built for ARCH_SPECIFIC_TARGET only.
ARCH_SPECIFIC_SUFFIX = "_sm90a"
ARCH_SPECIFIC_TARGET = "sm90a"


class BuildError(RuntimeError):
    """nvcc is missing or rejected a source file."""


def find_nvcc() -> str | None:
    """Path of nvcc on PATH, else under CUDA_HOME-style default locations, else None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in (Path("/usr/local/cuda/bin/nvcc"),):
        if candidate.exists():
            return str(candidate)
    return None


def sources() -> list[Path]:
    return sorted(SRC_DIR.glob("*.cu"))


def targets_of(src: Path) -> list[str]:
    """The TARGETS subdirectories a source builds for: *_sm90a.cu only sm90a, the rest all others."""
    if src.stem.endswith(ARCH_SPECIFIC_SUFFIX):
        return [ARCH_SPECIFIC_TARGET]
    return [sub for sub in TARGETS if sub != ARCH_SPECIFIC_TARGET]


def target_sources(subdir: str) -> list[Path]:
    """The sources built into ptx/<subdir>."""
    if subdir not in TARGETS:
        raise ValueError(f"unknown PTX target {subdir!r}; targets are {sorted(TARGETS)}")
    return [src for src in sources() if subdir in targets_of(src)]


def build(out_dir: Path = PTX_DIR, nvcc: str | None = None) -> list[Path]:
    """Compile every source for each of its targets into out_dir[/<target>]/<stem>.ptx; returns the files written."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found on PATH (install the CUDA toolkit to rebuild the PTX)")
    written = []
    for subdir, arch in TARGETS.items():
        target_dir = out_dir / subdir
        target_dir.mkdir(parents=True, exist_ok=True)
        for src in target_sources(subdir):
            target = target_dir / f"{src.stem}.ptx"
            cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", src.name, "-o", str(target.resolve())]
            proc = subprocess.run(cmd, cwd=SRC_DIR, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError(f"nvcc failed on {src.name} for {arch}:\n{proc.stderr}")
            written.append(target)
    return written


def _ptx_files(root: Path) -> set[str]:
    """PTX files under root of every target, as paths relative to root."""
    return {str((Path(sub) / p.name)) for sub in TARGETS for p in (root / sub).glob("*.ptx")}


def stale_files(nvcc: str | None = None) -> list[str]:
    """Names of committed PTX files that differ from a fresh build (or are missing/extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), nvcc)
        fresh, committed = _ptx_files(Path(tmp)), _ptx_files(PTX_DIR)
        stale = sorted(committed ^ fresh)
        for name in sorted(committed & fresh):
            if not filecmp.cmp(Path(tmp) / name, PTX_DIR / name, shallow=False):
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed PTX is up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale PTX (run `python native/build.py`): " + ", ".join(stale))
            return 1
        print(f"PTX up to date ({len(sources())} sources)")
        return 0
    for path in build():
        print(f"wrote {path.relative_to(NATIVE_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
