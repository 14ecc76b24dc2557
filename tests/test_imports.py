"""The package's import graph: every module imports in a fresh interpreter, no module-level
import cycle, the command line's parser stays free of torch, and the backends are defined once."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import emitlab

PACKAGE = Path(emitlab.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    """``emitlab.x.y`` -> its file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The emitlab modules that importing ``name`` imports at once: its top-level ``import`` and
    ``from ... import`` statements (also inside top-level ``try``/``if``, not in functions,
    classes or ``if TYPE_CHECKING``), with the packages they pass through."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            candidate = ".".join(parts[:i])
            if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                found.add(candidate)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                add(target)
                for alias in node.names:  # ``from . import x`` imports the module x
                    add(f"{target}.{alias.name}")
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: module_level_imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_graph_walker_sees_imports_and_cycles():
    graph = import_graph()
    assert "emitlab.settings" in graph["emitlab.cli"] | graph["emitlab.settings_cli"]
    assert "emitlab.io" in graph["emitlab.runs"] and "emitlab.errors" in graph["emitlab.settings"]
    assert "emitlab.members" in graph["emitlab.crossfit"]
    assert graph["emitlab.settings"] == {"emitlab.errors"}  # cheap to import: the parser reads it
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(module_names())
    code = ("import importlib, json, sys\n"
            "failed = {}\n"
            f"for name in {names!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
            "print(json.dumps(failed))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {}


def test_the_parser_and_settings_do_not_import_torch():
    code = ("import sys\n"
            "import emitlab.cli, emitlab.settings, emitlab.settings_cli\n"
            "emitlab.cli.build_parser()\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'sklearn', 'onnxruntime') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == ""


def test_backends_are_defined_once():
    from emitlab import inference, onnx_export, settings
    from emitlab.cli import build_parser
    from emitlab.members import transformer

    assert settings.BACKENDS == ("torch", "onnx", "onnx-int8")
    assert inference.BACKENDS is settings.BACKENDS and transformer.BACKENDS is settings.BACKENDS
    assert onnx_export.BACKENDS is settings.BACKENDS
    from emitlab.serving import cli as serving_cli

    assert serving_cli.BACKENDS is settings.BACKENDS
    assert set(onnx_export.BACKEND_FILES) == set(settings.BACKENDS) - {"torch"}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("predict", "serve"):
        backend = next(a for a in sub.choices[command]._actions if a.dest == "backend")
        assert tuple(backend.choices) == settings.BACKENDS, command
    # no other module spells the list out
    for name, path in module_names().items():
        if name != "emitlab.settings":
            text = path.read_text()
            assert '"torch", "onnx"' not in text and "'torch', 'onnx'" not in text, name
