""""Open in Colab" / "Open in Kaggle" badges for every notebook, from one setting in pyproject.toml.

    python scripts/badges.py                      # write the blocks from [tool.tableqa] github/branch
    python scripts/badges.py OWNER/REPO [--branch B]  # set the public copy (saved in pyproject.toml)
    python scripts/badges.py ""                   # clear it: back to the "open by hand" text
    python scripts/badges.py --check              # exit 1 naming each notebook that is out of date
    python scripts/badges.py --readme             # print the README badges to paste

The block lives in the first markdown cell of each notebooks/*.ipynb, between the lines
`<!-- badges -->` and `<!-- /badges -->` (inserted at the top of the cell if absent); README.md's
block is replaced too when README.md has those markers. With a slug set, the install cell of
00_setup.ipynb also gets `https://github.com/OWNER/REPO.git` as its default PROJECT_URL.
Notebooks are written with clean_notebooks.dump, so they stay clean. Needs Python >= 3.11 (tomllib).
"""
import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_notebooks import dump  # noqa: E402  (the project's notebook format)

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- badges -->", "<!-- /badges -->"
SLUG = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
BRANCH = re.compile(r"[A-Za-z0-9._/-]+")
URL_LINE = re.compile(r'(PROJECT_URL = os\.environ\.get\("TABLEQA_PROJECT_URL", )"[^"]*"')
COLAB = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{}/blob/{}/notebooks/{})"
KAGGLE = "[![Open In Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/{}/blob/{}/notebooks/{})"
RUN_FOLDER = ('On Colab/Kaggle set the run folder to storage that survives a disconnect: '
              '`OVERRIDES = {"root": "/content/drive/MyDrive/tableqa"}` (after mounting Drive) or '
              '`{"root": "/kaggle/working/tableqa"}`; training resumes from the last complete checkpoint there.')
NO_SLUG = ("Colab and Kaggle links appear here once the maintainer of the public copy runs "
           "`python scripts/badges.py OWNER/REPO`; until then open this notebook by hand "
           "(Colab: *File > Open notebook > GitHub*; Kaggle: *File > Import notebook*).")


def validate(slug: str, branch: str) -> None:
    """Raise ValueError unless slug is "" or OWNER/REPO and branch is a plain branch name."""
    if slug and not SLUG.fullmatch(slug):
        raise ValueError(f"bad GitHub slug {slug!r}: expected OWNER/REPO, e.g. alice/tableqa "
                         "(the owner and repository name only, no URL, no spaces)")
    if not BRANCH.fullmatch(branch):
        raise ValueError(f"bad branch {branch!r}: expected a branch name such as main")


def read_settings(pyproject: Path) -> tuple[str, str]:
    table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("tableqa", {})
    return table.get("github", ""), table.get("branch", "main")


def write_settings(pyproject: Path, slug: str, branch: str) -> None:
    """Rewrite the github/branch lines of [tool.tableqa] in place, keeping their comments."""
    lines, section = pyproject.read_text().splitlines(keepends=True), None
    for i, line in enumerate(lines):
        if m := re.match(r"\s*\[([^\]]+)\]", line):
            section = m.group(1).strip()
        elif section == "tool.tableqa":
            for key, value in (("github", slug), ("branch", branch)):
                lines[i] = re.sub(rf'^(\s*{key}\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{value}"', lines[i])
    text = "".join(lines)
    table = tomllib.loads(text).get("tool", {}).get("tableqa", {})
    if (table.get("github"), table.get("branch")) != (slug, branch):
        raise SystemExit(f'{pyproject}: needs a [tool.tableqa] table with lines github = "..." and branch = "..."')
    pyproject.write_text(text)


def badges(slug: str, branch: str, name: str) -> list[str]:
    return [COLAB.format(slug, branch, name), KAGGLE.format(slug, branch, name)]


def notebook_block(slug: str, branch: str, name: str) -> str:
    body = badges(slug, branch, name) if slug else [NO_SLUG]
    return "\n".join([START, *body, "", RUN_FOLDER, END])


def put_block(text: str, block: str) -> str:
    """Replace the marked block in text, or put it at the top followed by a blank line."""
    start, end = text.find(START), text.find(END)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(END):]
    return block + "\n\n" + text


def update_notebook(nb: dict, slug: str, branch: str, name: str) -> dict:
    nb = json.loads(json.dumps(nb))
    cell = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if cell is None:
        raise SystemExit(f"{name}: no markdown cell to hold the badges")
    text = put_block("".join(cell["source"]), notebook_block(slug, branch, name))
    cell["source"] = re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # lines ending in "\n" but the last
    url = f"https://github.com/{slug}.git" if slug else ""
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["source"] = [URL_LINE.sub(lambda m: f'{m.group(1)}"{url}"', line) for line in c["source"]]
    return nb


def readme_block(slug: str, branch: str) -> str:
    """The README's badge block (empty between its markers without a slug)."""
    return "\n".join([START, *(badges(slug, branch, "00_setup.ipynb") if slug else []), END])


def sync(root: Path, slug: str, branch: str, check: bool = False) -> list[Path]:
    """Bring every notebook (and README.md if it has the markers) up to date; return those that
    were (check=False: are now) out of date. With check=True nothing is written."""
    stale = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        new = update_notebook(nb, slug, branch, path.name)
        if new != nb:
            stale.append(path)
            if not check:
                path.write_text(dump(new))
    readme = root / "README.md"
    if readme.exists() and START in (text := readme.read_text()) and END in text:
        new = put_block(text, readme_block(slug, branch))
        if new != text:
            stale.append(readme)
            if not check:
                readme.write_text(new)
    return stale


def main(argv=None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slug", nargs="?", help='OWNER/REPO of the public GitHub copy ("" clears it)')
    parser.add_argument("--branch")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything is stale")
    parser.add_argument("--readme", action="store_true", help="print the README badges")
    args = parser.parse_args(argv)
    pyproject = root / "pyproject.toml"
    slug, branch = read_settings(pyproject)
    slug = (slug if args.slug is None else args.slug).strip()
    branch = args.branch or branch
    try:
        validate(slug, branch)
    except ValueError as e:
        sys.exit(f"badges.py: {e}")
    if args.readme:
        if not slug:
            sys.exit("badges.py: no slug set: run `python scripts/badges.py OWNER/REPO` first")
        print(readme_block(slug, branch))
        return 0
    if (args.slug is not None or args.branch) and not args.check:
        write_settings(pyproject, slug, branch)
    stale = sync(root, slug, branch, check=args.check)
    for path in stale:
        rel = path.relative_to(root)
        print(f"{rel}: badges out of date (run `python scripts/badges.py`)" if args.check else f"updated {rel}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
