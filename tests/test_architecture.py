"""Meta-tests of the engine's shape: no import cycle (imports inside functions counted), the
README's layout matches the folders, and every hook is documented and used by a test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pluggy

from cgan_kit.plugin_api import hookspecs

from conftest import ROOT

ENGINE = ROOT / "cgan_kit"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each engine module and the engine modules it imports, anywhere in its body."""
    modules = {module_name(path): path for path in ENGINE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from cgan_kit.x import y` imports cgan_kit.x, and cgan_kit.x.y where that is a module.
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_engine_has_no_import_cycle_even_counting_imports_inside_functions():
    graph = imports()
    assert len(graph) > 30 and graph["cgan_kit.training.loop"]  # it did read the modules
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_engine_folders_import_each_other_in_one_direction():
    """Between folders too: plugin_api <- config <- runs <- inference <- outputs <- loggers <- training <- cli."""
    order = ["plugin_api", "config", "runs", "inference", "outputs", "loggers", "training", "cli"]
    for module, targets in imports().items():
        layer = module.split(".")[1] if module.count(".") else None
        if layer not in order:
            continue
        for target in targets:
            other = target.split(".")[1] if target.count(".") else None
            if other in order:
                assert order.index(other) <= order.index(layer), f"{module} imports {target}"


def test_the_cycle_check_can_fail():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_the_readme_layout_names_every_engine_folder_and_nothing_else():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"^  (\w+)/", block, re.M))
    folders = {path.parent.name for path in ENGINE.glob("*/__init__.py")}
    assert named == folders
    shared = set(re.findall(r"(\w+\.py)", block))
    assert shared == {path.name for path in ENGINE.glob("*.py")} - {"__init__.py", "__main__.py"}
    for top in re.findall(r"^(\w+)/", block, re.M):
        assert (ROOT / top).is_dir(), top


def hooks() -> list[str]:
    marker = pluggy.HookspecMarker(hookspecs.PROJECT).project_name + "_spec"
    return sorted(name for name, value in vars(hookspecs).items() if hasattr(value, marker))


def test_every_hook_is_documented_and_used_by_a_test():
    """datasette's rule: a hook nobody documents or exercises is a hook that breaks unnoticed."""
    found = hooks()
    assert "register_methods" in found and "register_loggers" in found and len(found) == 11
    docs = (ROOT / "docs" / "plugins.md").read_text()
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py")
                      if path.name != "test_architecture.py")
    examples = "\n".join(path.read_text() for path in (ROOT / "examples").rglob("*.py"))
    builtin = "\n".join(path.read_text() for path in (ROOT / "plugins").rglob("*.py"))
    for hook in found:
        assert f"`{hook}(" in docs, f"{hook} is not documented in docs/plugins.md"
        # Used by a test: implemented in a test, or by an example or built-in plugin the tests drive.
        assert f"def {hook}(" in tests + examples + builtin, f"no plugin implements {hook}"
        assert hook in tests or any(f"def {hook}(" in (examples + builtin) for _ in [0]), hook
