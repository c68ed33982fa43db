"""The notebooks in ``notebooks/`` run top to bottom in smoke mode (``KDEFECT_SMOKE=1``).

Each notebook is executed in a fresh Jupyter kernel (nbclient, the engine
nbmake uses) with the working directory in a temporary folder, so runs and
exports never land in the repository. A cell that raises fails the test with
the cell's traceback. KolektorSDD is read from ``$KDEFECT_DATA_DIR`` when set,
else from the shared archive beside the repository; the KSDD notebook is
skipped when neither exists (it would download 100 MB).

``pytest --nbmake notebooks`` runs them too (with ``KDEFECT_SMOKE=1`` and
``KDEFECT_DATA_DIR`` set by hand).
"""

import json
import os
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KSDD_ZIP = SHARED / "datasets" / "KolektorSDD.zip"
CELL_TIMEOUT = 1200  # seconds per cell; smoke runs take a small fraction of it
MAX_NOTEBOOK_BYTES = 100_000  # stored notebooks are sources only


def _ids(path):
    return path.stem


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_kolektorsdd.ipynb",
        "03_export_and_deploy.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} has stored outputs; clear them before committing"
    )
    parameters = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert "KDEFECT_SMOKE" in "".join(parameters[0]["source"])


@pytest.fixture(scope="session")
def kernel_path(tmp_path_factory):
    """A Jupyter data folder whose ``python3`` kernel is this interpreter (not another install's)."""
    from ipykernel import kernelspec
    data = tmp_path_factory.mktemp("jupyter")
    kernelspec.write_kernel_spec(path=data / "kernels" / "python3")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_smoke_mode(path, tmp_path, tmp_path_factory, monkeypatch, kernel_path):
    import nbclient
    import nbformat

    jupyter_path = [str(kernel_path)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(jupyter_path))  # searched before user and system kernels
    monkeypatch.setenv("KDEFECT_SMOKE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as for a user
    if "kolektorsdd" in path.name and not os.environ.get("KDEFECT_DATA_DIR"):
        assert KSDD_ZIP.is_file(), f"KolektorSDD not available: set KDEFECT_DATA_DIR (no archive at {KSDD_ZIP})"
        monkeypatch.setenv("KDEFECT_DATA_DIR", str(KSDD_ZIP))
    if not os.environ.get("KDEFECT_CACHE_DIR"):  # extract archives into a temporary cache
        monkeypatch.setenv("KDEFECT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kdefect-cache"))

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed\n{err}", pytrace=False)
