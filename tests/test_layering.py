"""Package layering, read from the source (every import statement, at module level or inside functions)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import edgefusion

ROOT = Path(edgefusion.__file__).parent


def _imports(package: str) -> list[tuple[str, str, list[str]]]:
    """(file, imported module, imported names) for every import in ``edgefusion/<package>/``."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(path.name, alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against the package
                    base = ["edgefusion", package][: 3 - node.level]
                    module = ".".join(base + ([module] if module else []))
                out.append((path.name, module, [a.name for a in node.names]))
    return out


def _touches(module: str, names: list[str], package: str) -> bool:
    target = f"edgefusion.{package}"
    return module == target or module.startswith(target + ".") or (
        module == "edgefusion" and package in names)


def test_latency_and_tiling_never_import_each_other():
    for package, other in (("latency", "tiling"), ("tiling", "latency")):
        found = _imports(package)
        assert found, package  # the walk sees the package's imports
        bad = [(f, m) for f, m, names in found if _touches(m, names, other)]
        assert not bad, f"edgefusion/{package}/ imports edgefusion.{other}: {bad}"


def test_graph_analysis_is_a_lower_layer():
    """graph/ (shapes, the NPU op graph) imports none of the stages that use it."""
    for f, m, names in _imports("graph"):
        for stage in ("latency", "tiling", "deploy", "quant", "export", "sensitivity", "cli"):
            assert not _touches(m, names, stage), (f, m)


def test_executors_are_a_lower_layer():
    """executors/ (where units of work run) knows no stage that uses it: only errors and itself."""
    found = _imports("executors")
    assert found
    for f, m, names in found:
        if m.startswith("edgefusion"):
            assert m == "edgefusion.errors" or m.startswith("edgefusion.executors"), (f, m)


def _packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def _package_deps() -> dict[str, set[str]]:
    """package -> the other edgefusion packages it imports."""
    pk = set(_packages())
    deps = {}
    for package in pk:
        deps[package] = {m.split(".")[1] for _, m, _ in _imports(package)
                         if m.startswith("edgefusion.") and m.split(".")[1] in pk} - {package}
    return deps


def _cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among packages, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(p: str) -> list[str] | None:
        state[p] = 1
        stack.append(p)
        for q in sorted(deps.get(p, ())):
            if state.get(q) == 1:
                return stack[stack.index(q):] + [q]
            if q not in state and (found := visit(q)):
                return found
        stack.pop()
        state[p] = 2
        return None

    for p in sorted(deps):
        if p not in state and (found := visit(p)):
            return found
    return None


def test_packages_import_downward_only():
    """No import cycle between packages: each one has a place in one order (export uses the profiler, never the
    reverse; the float ONNX export lives in models/, below every stage that uses it)."""
    deps = _package_deps()
    assert len(deps) >= 10 and deps["export"] >= {"quant", "sensitivity", "models"}
    assert _cycle(deps) is None, _cycle(deps)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one


def test_no_private_names_across_packages():
    """No package reads another package's private (_x) names."""
    for package in _packages():
        for f, m, names in _imports(package):
            if m.startswith("edgefusion.") and not m.startswith(f"edgefusion.{package}"):
                private = [n for n in names if n.startswith("_")]
                assert not private, (package, f, m, private)
                assert not any(part.startswith("_") for part in m.split(".")), (package, f, m)


def test_the_walk_would_see_a_violation(tmp_path, monkeypatch):
    """The check is not vacuous: a function-level import of the other package is found."""
    pkg = tmp_path / "edgefusion" / "latency"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("def f():\n    from edgefusion.tiling.planner import plan_attention_tiling\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "edgefusion")
    found = _imports("latency")
    assert any(_touches(m, names, "tiling") for _, m, names in found)
