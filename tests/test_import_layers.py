"""The package's imports point down only, as docs/architecture.md draws them: no import circles
(counting imports inside functions too), serving knows no task and no ONNX building, the ONNX layer
knows no engine, the built-in plugins are imported by nothing above them, and the contracts sit on
nothing but the bottom modules. Read from the source with ast: nothing is imported to check it."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "seqpipe"
ENGINE = (
    "seqpipe.cli",
    "seqpipe.run",
    "seqpipe.training",
    "seqpipe.assembly",
    "seqpipe.tuning",
    "seqpipe.exports",
    "seqpipe.launch",
)


def _modules() -> dict[str, set[str]]:
    """Each seqpipe module and the seqpipe modules it imports anywhere in its code."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_circles():
    graph = _modules()
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_every_import_points_down_a_layer():
    graph = _modules()
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if _under(module, "seqpipe.serving") and _under(target, "seqpipe.builtin", "seqpipe.onnx", *ENGINE):
                wrong.append(f"{module} -> {target} (serving knows no task, no ONNX building, no engine)")
            if _under(module, "seqpipe.onnx") and _under(target, "seqpipe.builtin", *ENGINE):
                wrong.append(f"{module} -> {target} (the ONNX layer knows no engine and no built-in plugin)")
            if _under(target, "seqpipe.builtin") and not _under(module, "seqpipe.builtin"):
                wrong.append(f"{module} -> {target} (built-in plugins are found by name, as a third party's are)")
            if module == "seqpipe.contracts" and target not in (
                "seqpipe",
                "seqpipe.errors",
                "seqpipe.signature",
                "seqpipe.batching",
            ):
                wrong.append(f"{module} -> {target} (the contracts sit at the bottom)")
    assert wrong == []
