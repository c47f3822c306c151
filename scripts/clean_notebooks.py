"""Keep notebooks clean: no outputs or execution counts (except cells marked NBVAL_CHECK_OUTPUT,
whose outputs nbval compares), normalised metadata.

    python scripts/clean_notebooks.py notebooks            # clean in place
    python scripts/clean_notebooks.py --check notebooks    # exit 1 and list dirty notebooks
    python scripts/clean_notebooks.py --adopt runs/tiny/notebooks notebooks
        # take the outputs of NBVAL_CHECK_OUTPUT cells from executed copies, then clean
"""
import argparse
import json
import sys
from pathlib import Path

MARK = "NBVAL_CHECK_OUTPUT"
METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}
CELL_KEYS = {"tags"}  # the only cell metadata kept


def keeps_output(cell) -> bool:
    return MARK in "".join(cell.get("source", ""))


def _strip_volatile(outputs):
    """Drop execution counts and per-run metadata from kept outputs."""
    out = []
    for o in outputs:
        o = dict(o)
        if "execution_count" in o:
            o["execution_count"] = 1
        o.pop("metadata", None) if o.get("output_type") == "stream" else None
        if "metadata" in o:
            o["metadata"] = {}
        out.append(o)
    return out


def clean(nb: dict) -> dict:
    nb = json.loads(json.dumps(nb))
    nb["metadata"] = METADATA
    for cell in nb["cells"]:
        cell.pop("id", None)
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_KEYS}
        if cell["cell_type"] == "code":
            keep = keeps_output(cell) and cell.get("outputs")
            # nbval treats a cell with outputs but no execution count as never run: give it 1
            cell["execution_count"] = 1 if keep else None
            cell["outputs"] = _strip_volatile(cell["outputs"]) if keep else []
    nb["nbformat"], nb["nbformat_minor"] = 4, 4
    return nb


def dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def adopt(source: dict, executed: dict) -> dict:
    """Copy the outputs of marked cells from an executed copy (matched by source text)."""
    by_source = {"".join(c.get("source", "")): c for c in executed["cells"] if c["cell_type"] == "code"}
    for cell in source["cells"]:
        if cell["cell_type"] == "code" and keeps_output(cell):
            run = by_source.get("".join(cell["source"]))
            if run is None:
                raise SystemExit(f"no executed cell matches:\n{''.join(cell['source'])[:200]}")
            cell["outputs"] = run.get("outputs", [])
    return source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--adopt", metavar="EXECUTED_DIR")
    args = parser.parse_args(argv)
    dirty = []
    for path in sorted(Path(args.folder).glob("*.ipynb")):
        text = path.read_text()
        nb = json.loads(text)
        if args.adopt:
            nb = adopt(nb, json.loads((Path(args.adopt) / path.name).read_text()))
        cleaned = dump(clean(nb))
        if args.check:
            if cleaned != text:
                dirty.append(str(path))
        elif cleaned != text:
            path.write_text(cleaned)
            print(f"cleaned {path}")
    if dirty:
        print("notebooks not clean (run `python scripts/clean_notebooks.py notebooks`):\n  " + "\n  ".join(dirty))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
