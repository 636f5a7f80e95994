"""The shape of the house, checked: which package may import which, modules that stay small, and
package docstrings that name every module (they named 7 of 19 once, found in review)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("ipc", "supervisor", "worker")
MODULES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
#: What each layer may import of ours (the first matching prefix decides).
MAY_IMPORT = {
    "ipc.contract": ("ipc.contract",),
    "ipc": ("ipc",),
    "supervisor": ("ipc", "supervisor"),
    "worker": ("ipc", "worker"),
}


def dotted(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    """The modules of ours ``path`` imports, relative imports resolved."""
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join([*base, node.module] if node.module else base))
    return {name for name in found if name.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: dotted(path) or path.name)
def test_each_layer_imports_only_those_below_it(path):
    module = dotted(path)
    allowed = next(rule for prefix, rule in MAY_IMPORT.items() if module == prefix or module.startswith(prefix + "."))
    wrong = sorted(name for name in imports(path) if not name.startswith(allowed))
    assert not wrong, f"{module} imports {wrong}; it may import only {allowed}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: dotted(path) or path.name)
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    most = 300 if path.name == "pool.py" else 400
    assert lines <= most, f"{dotted(path)} has {lines} lines: it holds two ideas"


PACKAGE_FOLDERS = sorted({path.parent for path in MODULES})


@pytest.mark.parametrize("folder", PACKAGE_FOLDERS, ids=lambda folder: dotted(folder / "__init__.py"))
def test_a_packages_docstring_names_every_module_and_sub_package(folder):
    docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    names = [path.stem for path in folder.glob("*.py") if path.stem != "__init__"]
    names += [sub.name for sub in folder.iterdir() if (sub / "__init__.py").exists()]
    missing = sorted(name for name in names if f"``{name}``" not in docstring and f":mod:`.{name}`" not in docstring)
    assert not missing, f"{dotted(folder / '__init__.py')}'s docstring does not name {missing}"
