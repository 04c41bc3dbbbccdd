"""House rules that keep the layout readable: data flows one way between the packages, and the
``ofa`` command starts without loading torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _top(name: str) -> str:
    """The package a module name belongs to: ``ofa.pipeline.cli`` -> ``pipeline``, ``numpy.linalg`` -> ``numpy``."""
    parts = name.split(".")
    return parts[1] if parts[0] == "ofa" and len(parts) > 1 else parts[0]


def _imported_packages(package: str) -> dict[str, set[str]]:
    """Packages (ofa's by sub-package name) each module of ``package`` imports, at module level or inside functions."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(_top(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(_top(node.module))
        out[str(path.relative_to(REPO))] = names
    return out


@pytest.mark.parametrize("package,forbidden", [("ingest", {"pipeline", "model"}), ("model", {"ingest", "pipeline"})])
def test_packages_import_only_downstream(package, forbidden):
    """ingest/ writes the contract and never imports the reader or the model; model/ has no I/O deps."""
    found = {path: sorted(names & forbidden) for path, names in _imported_packages(package).items() if names & forbidden}
    assert found == {}
    assert len(_imported_packages(package)) > 3  # the scan saw the package's modules


def test_the_scan_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The check above would catch the deferred import that once sat in ingest/job.py."""
    pkg = tmp_path / "ingest"
    pkg.mkdir()
    (pkg / "job.py").write_text("def versions():\n    from ofa.pipeline.cli import package_version\n    return package_version()\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _imported_packages("ingest") == {"ingest/job.py": {"pipeline"}}


def test_ingest_imports_nothing_from_pipeline_at_run_time():
    code = ("import importlib, pkgutil, sys, ofa.ingest as ingest\n"
            "for m in pkgutil.walk_packages(ingest.__path__, 'ofa.ingest.'): importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ofa.pipeline', 'ofa.model'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["ingest", "--help"], ["manifest", "verify", "--help"],
                                  ["train", "--help"], ["eval", "geobench", "--help"], ["model", "info", "--help"],
                                  ["embed", "--help"], ["demo", "--help"]])
def test_command_help_loads_no_heavy_library(argv):
    """``ofa ... --help`` builds the whole parser without importing torch (or the ingest stack)."""
    code = ("import sys\nfrom ofa.pipeline.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = ('torch', 'numpy', 'rasterio', 'dask', 'pystac_client', 'webdataset', 's3fs', 'accelerate')\n"
            "print('LOADED', sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "usage: ofa" in out
    assert out.strip().splitlines()[-1] == "LOADED []"


#: the package folders, installed as ``ofa.<folder>``
PACKAGES = ("ingest", "pipeline", "model", "infra")


def _module_files() -> dict[str, Path]:
    """``ofa.x.y`` -> its file, for every module of the package folders (``__init__.py``: the package itself)."""
    out = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(("ofa", *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> set[str]:
    """The ofa modules one import statement loads: ``from P import n`` is ``P.n`` when that is a module,
    else ``P``; ``import a.b.c`` is ``a.b.c``; relative imports are resolved against ``package``."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & set(modules)
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
    found = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found & set(modules)


def import_graph() -> dict[str, set[str]]:
    """ofa module -> the ofa modules it imports, at module level or inside functions."""
    modules = _module_files()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, package, modules)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None when it has none."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle():
    """The modules of ofa import each other in one direction, counting the imports inside functions."""
    graph = import_graph()
    assert find_cycle(graph) is None
    assert len(graph) > 60 and sum(map(len, graph.values())) > 100   # the scan saw the package and its imports
    assert {"ofa.ingest.formats", "ofa.ingest.plans"} <= graph["ofa.ingest.items"]   # ... and resolved them
    assert "ofa.pipeline.embed.job" in graph["ofa.pipeline.embed"]   # ``from . import job`` inside a function


def test_the_cycle_check_sees_hidden_cycles(tmp_path, monkeypatch):
    """A cycle through ``from ofa.pkg import module`` and a relative import inside a function is found."""
    pkg = tmp_path / "ingest"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ofa.ingest import b\nfrom ofa.ingest.c import C\n")
    (pkg / "b.py").write_text("def later():\n    from .a import thing\n    return thing\n")
    (pkg / "c.py").write_text("import json\nC = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = import_graph()
    assert graph == {"ofa.ingest": set(), "ofa.ingest.a": {"ofa.ingest.b", "ofa.ingest.c"},
                     "ofa.ingest.b": {"ofa.ingest.a"}, "ofa.ingest.c": set()}
    assert find_cycle(graph) == ["ofa.ingest.a", "ofa.ingest.b", "ofa.ingest.a"]
    (pkg / "b.py").write_text("from ofa.ingest.c import C\n")
    assert find_cycle(import_graph()) is None


MAX_FUNCTION_LINES = 80
#: functions known to be longer, being split elsewhere; empty it as they land
LONG_FUNCTIONS_ALLOWED: set[str] = set()


def _long_functions(package: str, limit: int) -> dict[str, int]:
    """``{"path::name": lines}`` of the functions and methods (nested ones too) of ``package`` over ``limit``."""
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out[f"{path.relative_to(REPO)}::{node.name}"] = lines
    return out


@pytest.mark.parametrize("package", ["ingest", "pipeline", "model"])
def test_no_function_over_80_lines(package):
    """Each stage reads top to bottom: a function fits a screen (signature to last line, docstring included)."""
    long = {k: v for k, v in _long_functions(package, MAX_FUNCTION_LINES).items() if k not in LONG_FUNCTIONS_ALLOWED}
    assert long == {}
    assert _long_functions(package, 1)  # the scan saw functions


def test_the_length_check_measures_whole_functions(tmp_path, monkeypatch):
    """A method of 81 lines (def line + 80 statements) is named; a short function is not."""
    pkg = tmp_path / "ingest"
    pkg.mkdir()
    statements = "".join(f"        x{i} = {i}\n" for i in range(80))
    (pkg / "a.py").write_text(f"class A:\n    def long(self):\n{statements}\n\ndef short():\n    return 1\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _long_functions("ingest", MAX_FUNCTION_LINES) == {"ingest/a.py::long": 81}


def test_pyproject_installs_every_package_folder_under_ofa():
    """``[tool.setuptools] packages`` lists each folder with an ``__init__.py`` as ``ofa.<path>``."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"ofa." + ".".join(p.parent.relative_to(REPO).parts)
               for top in ("ingest", "pipeline", "model", "infra") for p in (REPO / top).rglob("__init__.py")}
    assert listed == folders


def test_one_import_package_outside_the_checkout(tmp_path):
    """Installed, ofa is ``ofa.*`` only: a user's own ``model`` or ``pipeline`` module is not shadowed."""
    code = ("import importlib.util as u, ofa.model, ofa.ingest, ofa.pipeline.cli, ofa.infra\n"
            "print([n for n in ('model', 'pipeline', 'ingest', 'infra') if u.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"
