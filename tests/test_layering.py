"""The library's layering, read from the source: ``nanodet/`` never imports ``executor/``, the
config layer imports no evaluation, the model and the data pipeline import no layer built on
them (``LAYERS``), and no module of ``nanodet/`` imports itself back through
others, whether the imports are at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "nanodet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, absolute, wherever the import statement is (for
    ``from a import b``: both ``a`` and ``a.b``, which may be a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*parts, node.module] if node.module else parts)
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_the_library_never_imports_the_executor():
    for name, path in _modules().items():
        assert not any(m == "executor" or m.startswith("executor.") for m in _imports(path)), name


def test_the_config_layer_imports_no_evaluation():
    assert not any(m.startswith("nanodet.evaluation") for m in _imports(PACKAGE / "config.py"))


def test_no_module_imports_itself_back():
    """Packages' ``__init__`` files (which re-export their modules) are left out: a circle goes
    through modules."""
    modules = {name: path for name, path in _modules().items() if path.name != "__init__.py"}
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    for start in graph:
        seen, stack = set(), [(start, (start,))]
        while stack:
            module, chain = stack.pop()
            for target in graph[module]:
                assert target != start, "import circle: " + " -> ".join((*chain, start))
                if target not in seen:
                    seen.add(target)
                    stack.append((target, (*chain, target)))


LAYERS = {
    # the architecture knows nothing of how weights are read, what runs it, or what it is used for
    "nanodet.model": ("weights", "inference", "mining", "pictures", "engine", "data", "deploy"),
    # the data pipeline feeds a trainer without knowing it
    "nanodet.data": ("engine", "inference", "mining", "pictures", "weights", "deploy"),
}


def test_each_layer_imports_only_the_layers_below_it():
    for name, path in _modules().items():
        for layer, above in LAYERS.items():
            if name == layer or name.startswith(layer + "."):
                wrong = {m for m in _imports(path) for a in above if m.startswith(f"nanodet.{a}")}
                assert not wrong, f"{name} imports {sorted(wrong)}"
