"""The package layout of docs/architecture.md: modules readable in one sitting, layers without
back-edges (a module imports only its own layer or lower ones; nothing imports the CLI)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tableqa_helpers"
MAX_LINES = 400

# Bottom to top, as in docs/architecture.md. A module may import modules of its own layer or of
# lower ones, at the top of the file or inside a function alike.
LAYERS = [
    ["io"],
    ["offline"],  # stand-in model and synthetic tables: imports only io
    ["config", "hardware.cards", "hardware.presets", "hardware.estimate", "hardware.plan",
     "hardware", "__init__"],  # get_config applies the GPU plan, so the plan is configuration
    ["model"],
    ["data"],
    ["train"],
    ["merge", "infer"],
    ["evaluate"],
    ["browse", "plots"],
    ["env", "hardware.gpucheck"],
    ["cli", "__main__", "hardware.__main__"],
]


def layer_of(module: str) -> int:
    """The layer of a dotted module name inside the package (the longest listed prefix wins)."""
    best, length = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > length:
                best, length = i, len(name)
    if best is None:
        raise AssertionError(f"tableqa_helpers.{module} is in no layer of tests/test_layout.py "
                             f"(add it there and to docs/architecture.md)")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module inside the package) for every import of `source`, at any depth."""
    here = module.split(".") if module != "__init__" else []
    package = here if is_package else here[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None:  # from . import x: x is a module
                found += [(node.lineno, ".".join([*target, a.name])) for a in node.names]
            else:
                found.append((node.lineno, ".".join(target) or "__init__"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tableqa_helpers"):
            found.append((node.lineno, node.module.removeprefix("tableqa_helpers").strip(".")
                          or "__init__"))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("tableqa_helpers").strip(".") or "__init__")
                      for a in node.names if a.name.startswith("tableqa_helpers")]
    return found


def back_edges(source: str, module: str, is_package: bool = False) -> list[str]:
    mine = layer_of(module)
    out = []
    for line, target in imports(source, module, is_package):
        if target.split(".")[0] in ("cli", "__main__") and module not in ("__main__",):
            out.append(f"{module}:{line} imports {target} (nothing imports the command line)")
        elif layer_of(target) > mine:
            out.append(f"{module}:{line} imports {target} (layer {layer_of(target)} > {mine})")
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines (split it by concept)"


def test_no_import_goes_up_a_layer():
    problems = []
    for path in MODULES:
        problems += back_edges(path.read_text(encoding="utf-8"), module_name(path),
                               path.name == "__init__.py")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_back_edge():
    """A data module that imported training, or a helper that imported the CLI, is caught."""
    assert back_edges("def f():\n    from ..train import train_tier\n", "data.load") == [
        "data.load:2 imports train (layer 5 > 4)"]
    assert back_edges("from .cli import main\n", "infer")[0].startswith("infer:1 imports cli")
    assert back_edges("from .. import evaluate\n", "browse.records") == []
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("newthing")


def test_helpers_never_import_notebooks_tests_or_bench():
    for path in MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                assert name.split(".")[0] not in ("bench", "tests", "scripts", "notebooks"), \
                    f"{path.relative_to(PACKAGE)} imports {name}"
