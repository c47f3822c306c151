"""scripts/badges.py: Colab/Kaggle badges in every notebook from [tool.tableqa] github in pyproject.toml."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("badges", ROOT / "scripts" / "badges.py")
badges = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(badges)

PYPROJECT = '''[project]
name = "x"

[tool.tableqa]
github = ""   # "OWNER/REPO" of the public copy
branch = "main"
'''
README = "# Project\n\n<!-- badges -->\nold\n<!-- /badges -->\n\nText.\n"


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def snapshot(root):
    return {p.relative_to(root): p.read_text() for p in [*root.glob("notebooks/*.ipynb"), root / "README.md",
                                                          root / "pyproject.toml"]}


def first_markdown(path):
    nb = json.loads(path.read_text())
    return next(c for c in nb["cells"] if c["cell_type"] == "markdown")


def project_url_line(root):
    nb = json.loads((root / "notebooks" / "00_setup.ipynb").read_text())
    return next(l for c in nb["cells"] for l in c["source"] if l.startswith("PROJECT_URL = "))


def test_committed_notebooks_are_up_to_date(capsys):
    assert badges.main(["--check"]) == 0, capsys.readouterr().out


def test_slug_writes_links_is_idempotent_and_clears(copy, capsys):
    clean = snapshot(copy)
    assert badges.main(["alice/tableqa"], root=copy) == 0
    assert 'github = "alice/tableqa"   # "OWNER/REPO" of the public copy' in (copy / "pyproject.toml").read_text()
    books = sorted((copy / "notebooks").glob("*.ipynb"))
    assert len(books) == 6
    for book in books:
        cell = first_markdown(book)
        text = "".join(cell["source"])
        assert text.startswith("<!-- badges -->\n") and text.count("<!-- badges -->") == 1
        assert (f"(https://colab.research.google.com/github/alice/tableqa/blob/main/notebooks/{book.name})"
                in text)
        assert (f"(https://kaggle.com/kernels/welcome?src=https://github.com/alice/tableqa/blob/main/notebooks/"
                f"{book.name})" in text)
        assert badges.NO_SLUG not in text and badges.RUN_FOLDER in text
        assert all(l.endswith("\n") for l in cell["source"][:-1]) and not cell["source"][-1].endswith("\n")
    assert project_url_line(copy) == ('PROJECT_URL = os.environ.get("TABLEQA_PROJECT_URL", '
                                      '"https://github.com/alice/tableqa.git")  # git URL of this project, '
                                      'for Colab/Kaggle\n')
    readme = (copy / "README.md").read_text()
    assert "notebooks/00_setup.ipynb)\n<!-- /badges -->\n\nText.\n" in readme and "old" not in readme
    assert badges.main(["--check"], root=copy) == 0
    assert badges.main(["--readme"], root=copy) == 0
    assert "alice/tableqa/blob/main/notebooks/00_setup.ipynb" in capsys.readouterr().out

    written = snapshot(copy)
    assert badges.main([], root=copy) == 0
    assert snapshot(copy) == written  # idempotent

    assert badges.main(["--branch", "dev"], root=copy) == 0
    assert "/alice/tableqa/blob/dev/notebooks/02_tier_a.ipynb" in "".join(
        first_markdown(copy / "notebooks" / "02_tier_a.ipynb")["source"])

    assert badges.main(["", "--branch", "main"], root=copy) == 0  # clear the slug
    cleared = snapshot(copy)
    for name, text in clean.items():
        if name.suffix == ".ipynb":
            assert cleared[name] == text  # exactly the committed no-slug notebooks
    assert 'github = ""' in cleared[Path("pyproject.toml")]
    assert cleared[Path("README.md")] == "# Project\n\n<!-- badges -->\n<!-- /badges -->\n\nText.\n"


def test_check_names_the_stale_notebook(copy, capsys):
    (copy / "pyproject.toml").write_text(PYPROJECT.replace('github = ""', 'github = "alice/tableqa"'))
    assert badges.main(["--check"], root=copy) == 1
    out = capsys.readouterr().out
    assert "notebooks/03_merge.ipynb: badges out of date" in out
    assert "alice" not in (copy / "notebooks" / "03_merge.ipynb").read_text()  # --check writes nothing


def test_block_inserted_when_absent(copy):
    book = copy / "notebooks" / "01_preprocessing.ipynb"
    nb = json.loads(book.read_text())
    cell = first_markdown(book)
    body = "".join(cell["source"]).split("<!-- /badges -->\n\n", 1)[1]
    nb["cells"][nb["cells"].index(cell)]["source"] = [body]
    book.write_text(badges.dump(nb))
    assert badges.main(["--check"], root=copy) == 1
    assert badges.main([], root=copy) == 0
    assert "".join(first_markdown(book)["source"]) == badges.notebook_block("", "main", book.name) + "\n\n" + body


@pytest.mark.parametrize("slug", ["alice", "a/b/c", "has space/x", "https://github.com/alice/tableqa"])
def test_malformed_slug_is_rejected(copy, slug):
    before = snapshot(copy)
    with pytest.raises(SystemExit) as err:
        badges.main([slug], root=copy)
    assert "expected OWNER/REPO" in str(err.value) and repr(slug) in str(err.value)
    assert snapshot(copy) == before
