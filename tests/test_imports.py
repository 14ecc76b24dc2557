"""The package's import graph: every module imports in a fresh interpreter; no import cycle, at
module level or through imports inside functions; no module imports from a layer above its own
(:data:`LAYERS`, the data flow: data -> members -> engine -> export -> inference -> batch and
serving -> report -> jobs -> cli, with settings, io, errors, labels and the registries at the
bottom); the command line's parser stays free of torch, predicting free of scikit-learn; and the
backends are defined once."""

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


def imports_of(name: str, path: Path, modules: dict[str, Path], inside_functions: bool = False) -> set[str]:
    """The emitlab modules that ``name`` imports, with the packages they pass through: its
    top-level ``import`` and ``from ... import`` statements (also inside top-level ``try``/``if``/
    ``with``, never inside ``if TYPE_CHECKING``), and with ``inside_functions`` also those inside
    functions and classes (run later, at a call, but an import all the same)."""
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
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                visit(node.body)
            elif inside_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    return imports_of(name, path, modules)


def import_graph(inside_functions: bool = False) -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules, inside_functions) for name, path in modules.items()}


#: The layers, lowest first: a module may import from its own layer and those below, never above.
LAYERS = (
    ("core", ("emitlab", "emitlab.errors", "emitlab.labels", "emitlab.io", "emitlab.settings",
              "emitlab.settings_cli", "emitlab.devices", "emitlab.runs", "emitlab.registry", "emitlab.scoring")),
    ("data", ("emitlab.data",)),
    ("members", ("emitlab.members",)),
    ("engine", ("emitlab.engine",)),
    ("export", ("emitlab.export",)),
    ("inference", ("emitlab.inference",)),
    ("batch, serving", ("emitlab.batch", "emitlab.serving")),
    ("report", ("emitlab.report",)),
    ("jobs", ("emitlab.jobs", "emitlab.distill")),
    ("cli", ("emitlab.cli",)),
)


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module`` (the longest prefix that names it)."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix != "emitlab":
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        assert module == "emitlab", f"{module} is in no layer: add it to LAYERS"
        return 0
    return best[0]


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
    assert "emitlab.members" in graph["emitlab.engine.crossfit"]
    assert graph["emitlab.settings"] == {"emitlab.errors", "emitlab.registry"}  # cheap: the parser reads it
    assert graph["emitlab.registry"] == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_through_imports_inside_functions():
    graph = import_graph(inside_functions=True)
    assert graph["emitlab.members.transformer.member"] >= {"emitlab.members.transformer.model"}  # seen inside fit
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_every_module_is_in_a_layer_and_imports_nothing_above_it():
    graph = import_graph(inside_functions=True)
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
              for name, deps in sorted(graph.items()) for dep in sorted(deps) if layer_of(dep) > layer_of(name)]
    assert upward == [], "\n".join(upward)


def test_the_layer_check_sees_an_import_from_above(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from emitlab.jobs import run_engine\n")
    modules = module_names()
    assert imports_of("emitlab.data.mod", path, modules) == set()
    assert imports_of("emitlab.data.mod", path, modules, inside_functions=True) == {"emitlab.jobs"}
    assert layer_of("emitlab.jobs") > layer_of("emitlab.data.loading")


def test_builtin_registry_entries_point_at_their_layer():
    """The registries (core) name their built-ins as strings, imported at first use: each names a
    module of the layer that owns that kind, and resolves to a class of that name."""
    from emitlab.registry import BACKENDS, COMBINERS, MEMBERS

    owners = {"member": "members", "combiner": "engine", "backend": "members"}
    for registry in (MEMBERS, COMBINERS, BACKENDS):
        for name in registry.builtin:
            cls = registry.get(name)
            assert LAYERS[layer_of(cls.__module__)][0] == owners[registry.kind], (registry.kind, name)
            if registry.kind != "backend":
                assert cls.kind == name
            else:
                assert cls.name == name


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in module_names() if not n.endswith(".__main__"))  # __main__ runs the CLI
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


def test_predict_does_not_import_scikit_learn(tiny_ensemble_export, tmp_path):
    """`emitlab predict` with a whole ensemble (TF-IDF, lexicon and transformer folds, a combiner,
    a decoder) never imports scikit-learn: fitting needs it, predicting does not (its import is a
    sizeable part of every start-up)."""
    code = ("import sys\n"
            "from emitlab.cli import main\n"
            f"rc = main(['-q', 'predict', '--model', {str(tiny_ensemble_export)!r}, 'Che bella giornata!', "
            f"'Ho paura del buio', '--output', {str(tmp_path / 'out.jsonl')!r}])\n"
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')[:3])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "0 []"
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_backends_are_defined_once():
    from emitlab.cli import build_parser
    from emitlab.inference import onnx_export
    from emitlab.registry import BACKENDS

    assert list(BACKENDS) == ["torch", "onnx", "onnx-int8"]
    assert set(onnx_export.BACKEND_FILES) == set(BACKENDS) - {"torch"}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("predict", "serve"):
        backend = next(a for a in sub.choices[command]._actions if a.dest == "backend")
        assert list(backend.choices) == list(BACKENDS), command
    # no other module spells the list out
    for name, path in module_names().items():
        text = path.read_text()
        assert '"torch", "onnx"' not in text and "'torch', 'onnx'" not in text, name
