"""Every notebook is committed twice: the executed .ipynb (for readers) and its jupytext .py twin
(for review). This test keeps the two in sync and checks the .ipynb was committed with outputs."""
import json
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = sorted(pathlib.Path(__file__).resolve().parents[1].joinpath("notebooks").glob("*.ipynb"))


def _code_cells(nb):
    return [c.source.strip() for c in nb.cells if c.cell_type == "code" and c.source.strip()]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_synced_py_twin(ipynb):
    twin = ipynb.with_suffix(".py")
    assert twin.exists(), f"{ipynb.name} has no paired {twin.name} (jupytext percent format)"
    assert _code_cells(jupytext.read(ipynb)) == _code_cells(jupytext.read(twin)), (
        f"{ipynb.name} and {twin.name} differ: run `jupytext --sync {ipynb}` and re-execute")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_with_outputs(ipynb):
    cells = [c for c in json.loads(ipynb.read_text())["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    executed = sum(1 for c in cells if c.get("outputs") or c.get("execution_count"))
    assert executed == len(cells), f"{ipynb.name}: {len(cells) - executed} code cells were not executed before commit"


def test_every_py_twin_has_a_notebook():
    folder = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
    lonely = [p.name for p in folder.glob("[0-9]*.py") if not p.with_suffix(".ipynb").exists()]
    assert not lonely, f"jupytext twins without an executed .ipynb: {lonely}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_figures_were_rendered(ipynb):
    """A notebook executed with MPLBACKEND=Agg saves no figures: readers on GitHub would see none."""
    nb = json.loads(ipynb.read_text())
    draws = any("plt." in "".join(c["source"]) or ".plot(" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    images = sum(1 for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images or not draws, f"{ipynb.name} draws figures but holds no image output: execute it without MPLBACKEND=Agg"
