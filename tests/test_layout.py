"""The package's rooms keep to their boundaries (docs/architecture.md): no import cycles, the
gateway never runs jobs, engines know no server or Redis code, model families reach each other only
through their public modules, and the shared music vocabulary knows no engine."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "harmonia"
#: a family's modules another family may import (its request model, or its engine for jen1's parts)
PUBLIC = {"input", "engine", "tasks", "client", "backends", "loader", "voicebank"}
SERVER_OR_REDIS = ("redis", "fastapi", "starlette", "uvicorn", "dramatiq", "sse_starlette", "harmonia.jobs",
                   "harmonia.gateway", "harmonia.services", "harmonia.asgi", "harmonia.worker")  # fmt: skip


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every import of every module (top level, in functions, under TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = found
    return graph


def _internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _packages_only(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges to a package itself (`from harmonia.engines import x` names module x too)."""
    packages = {m for m in graph if (SRC / m.replace(".", "/") / "__init__.py").exists()}
    return {m: {d for d in deps if d not in packages} for m, deps in graph.items()}


def test_no_import_cycles() -> None:
    graph = _packages_only(_internal(_imports()))
    assert _cycles(graph) == []


def test_the_gateway_never_runs_jobs() -> None:
    graph = _imports()
    runners = {"harmonia.jobs.runner", "harmonia.jobs.lease", "harmonia.jobs.reaper", "harmonia.worker"}
    for module, deps in graph.items():
        if module.startswith("harmonia.gateway"):
            assert not deps & runners, f"{module} imports {deps & runners}"


def test_engines_and_music_know_no_server_or_redis_code() -> None:
    for module, deps in _imports().items():
        if module.startswith(("harmonia.engines", "harmonia.music", "harmonia.audio")):
            bad = sorted(d for d in deps if d.startswith(SERVER_OR_REDIS))
            assert not bad, f"{module} imports {bad}"


def test_families_meet_only_through_public_modules_and_music_knows_no_engine() -> None:
    graph = _imports()
    for module, deps in graph.items():
        parts = module.split(".")
        if module.startswith("harmonia.music"):
            assert not [d for d in deps if d.startswith("harmonia.engines")], module
        if len(parts) < 4 or parts[1] != "engines":
            continue
        family = parts[2]
        for dep in deps:
            dparts = dep.split(".")
            if len(dparts) >= 4 and dparts[1] == "engines" and dparts[2] != family and dep in graph:
                assert dparts[3] in PUBLIC, f"{module} reaches into {dep}"


def test_modules_stay_readable() -> None:
    """Files stay under ~500 lines; the longer ones are named here with the reason."""
    reasons = {
        "harmonia.jobs.store": "the job record's Lua scripts and their Python side belong together",
        "harmonia.cli": "every command of the `harmonia` CLI in one file, each a few lines over a service",
    }
    long = {
        _module(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500 and _module(p) not in reasons
    }
    assert long == {}
