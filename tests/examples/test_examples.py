"""Acceptance 4: every notebook and script in examples/ runs without error on the embedded model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_examples_exist_and_pair_up():
    assert NOTEBOOKS and SCRIPTS
    unpaired = [nb.name for nb in NOTEBOOKS if not nb.with_suffix(".py").exists()]
    assert not unpaired, f"notebooks without a matching script: {unpaired}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, smollm2_dir, tmp_path):
    """Runs in a fresh python3 kernel, as Jupyter would; any cell error fails the test."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    assert printed.strip(), "the notebook printed nothing"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_runs(path, smollm2_dir, tmp_path):
    """Each script takes --max-new-tokens; a small value keeps the run short."""
    proc = subprocess.run([sys.executable, str(path), "--max-new-tokens", "16"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip()
