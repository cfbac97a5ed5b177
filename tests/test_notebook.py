"""The walkthrough notebook runs top to bottom on the examples, so it cannot rot."""

import nbformat
import pytest
from nbclient import NotebookClient

import paths

NOTEBOOK = paths.ROOT / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_runs_and_draws(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # the image grid and the charts
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "06_caption edit" in text and "tasks; first:" in text
    assert "thumbnail: 200 image/jpeg" in text
    lineage = next(o for o in outputs if "text/html" in o.get("data", {}) and "item_id" in o["data"]["text/html"])
    assert "caption edit" in lineage["data"]["text/html"]
