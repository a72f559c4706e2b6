"""Every notebook runs top to bottom: on the tiny model (fast), and the quickstart on the real one."""

import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, workdir: Path, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    """Execute a copy of the notebooks folder in ``workdir`` (so nothing is written to the repo)."""
    shutil.copytree(path.parent, workdir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.sqlite*", "exports", ".ipynb_checkpoints"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(workdir / path.name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def test_there_are_notebooks():
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_model(path, tmp_path, monkeypatch):
    nb = run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "tiny"}, monkeypatch)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_quickstart_runs_on_default_model(tmp_path, monkeypatch, default_model_cache):
    path = next(p for p in NOTEBOOKS if p.name == "01_quickstart.ipynb")
    t0 = time.time()
    run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "", "LF_WIDGETS_CACHE": str(default_model_cache)},
                 monkeypatch)
    print(f"quickstart on the default model: {time.time() - t0:.1f} s")
