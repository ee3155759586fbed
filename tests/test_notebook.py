"""notebooks/explore.ipynb runs end to end on a lake the pipeline wrote."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore.ipynb"


@pytest.mark.slow
def test_explore_notebook_executes(pipeline_run, tmp_path: Path, monkeypatch) -> None:
    settings, _, _ = pipeline_run
    monkeypatch.setenv("GENRE_LAKE", settings.lake)
    monkeypatch.setenv("GENRE_REPORTS", settings.reports)
    monkeypatch.setenv("GENRE_SPARK__DRIVER_MEMORY", "1g")
    monkeypatch.setenv("GENRE_SPARK__MASTER", "local[2]")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=dict(os.environ))
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5, f"expected the notebook's plots, got {len(images)} images"
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 5
    nbformat.write(notebook, tmp_path / "explore.executed.ipynb")
