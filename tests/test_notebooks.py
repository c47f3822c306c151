"""Notebooks are committed clean, thin, parameterised, and numbered in order."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_series_is_complete():
    assert [b.name[:2] for b in BOOKS] == ["00", "01", "02", "03", "04", "05"]


def test_notebooks_are_clean():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "clean_notebooks.py"), "--check",
                           str(ROOT / "notebooks")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("book", BOOKS, ids=lambda b: b.name)
def test_parameters_cell_and_thin_cells(book):
    nb = json.loads(book.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "TABLEQA_PROFILE" in "".join(code[0]["source"])
    for cell in code:
        lines = [l for l in "".join(cell["source"]).splitlines() if l.strip()]
        assert len(lines) <= 10, f"{book.name}: a cell of {len(lines)} lines; move logic to the package"
        assert "/content" not in "".join(cell["source"]).replace("/content/drive/MyDrive/tableqa", "")
