"""What the deployment tests check files against: the real `harmonia` CLI (its typer app), the
`Settings` fields, the HTTP routes each process serves, and a small Dockerfile reader.

Everything here reads the code as it is, so a renamed option, setting or route breaks the
deployment tests instead of a deployment.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import typer.main
from pydantic import BaseModel

from harmonia import cli
from harmonia.config import Settings

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
#: service -> its Dockerfiles (relative to the repo root)
DOCKERFILES = {
    "orchestrator": ["containers/orchestrator/Dockerfile"],
    "jen1": ["containers/jen1/Dockerfile"],
    "musicgen": ["containers/musicgen/Dockerfile", "containers/musicgen/Dockerfile.gpu"],
    "diffusers": ["containers/diffusers/Dockerfile", "containers/diffusers/Dockerfile.gpu"],
    "diffsinger": ["containers/diffsinger/Dockerfile"],
    "ollama": ["containers/ollama/Dockerfile"],
}
#: archival Dockerfiles: checked like the others, never built by CI
LEGACY_DOCKERFILES = {"legacy-worker": ["legacy/Dockerfile.worker"]}
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)", re.IGNORECASE)


# --- the CLI ---------------------------------------------------------------------------------------


class CliError(Exception):
    """A command line the `harmonia` CLI would reject."""


@cache
def cli_group() -> Any:
    """The click group typer builds from `harmonia.cli.app` (typer vendors its own click)."""
    group = typer.main.get_command(cli.app)
    if not hasattr(group, "commands"):
        raise TypeError("harmonia.cli.app is not a command group")
    return group


def console_scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


@dataclass(frozen=True)
class Invocation:
    """A parsed `harmonia ...` command line."""

    command: str
    params: dict[str, Any]

    @property
    def queues(self) -> list[str]:
        raw = self.params.get("queues") or ""
        return [q.strip() for q in raw.split(",") if q.strip()]


def parse_cli(argv: list[str]) -> Invocation:
    """Parse `argv` (without the leading `harmonia`) with the real click command: an unknown
    command, option or bad value raises CliError, as the container would fail to start."""
    name, command, rest = resolve_command(argv)
    try:
        ctx = command.make_context(name, list(rest))
    except Exception as exc:  # typer's vendored click raises its own UsageError subclasses
        raise CliError(f"harmonia {' '.join(argv)}: {exc}") from exc
    return Invocation(name, dict(ctx.params))


def resolve_command(argv: list[str]) -> tuple[str, Any, list[str]]:
    """(name, click command, remaining args), descending into sub-groups (`harmonia legacy ...`)."""
    if not argv:
        raise CliError("empty command")
    group: Any = cli_group()
    name, *rest = argv
    while True:
        command = group.commands.get(name)
        if command is None:
            raise CliError(f"no such harmonia command: {' '.join(argv[: len(argv) - len(rest)])!r}")
        if not hasattr(command, "commands"):
            return name, command, rest
        if not rest:
            raise CliError(f"harmonia {' '.join(argv)}: a sub-command is needed")
        group, (name, *rest) = command, rest


def cli_envvars() -> set[str]:
    """Environment variables the CLI itself reads (typer `envvar=`), outside Settings."""
    found: set[str] = set()
    for command in cli_group().commands.values():
        for param in command.params:
            names = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
            found.update(n for n in names if n)
    return found


# --- settings --------------------------------------------------------------------------------------


def setting_for_env(name: str) -> str | None:
    """The Settings field path (`musicgen.device`) a HARMONIA_* variable sets, or None if none."""
    if not name.startswith("HARMONIA_"):
        return None
    parts = name.removeprefix("HARMONIA_").lower().split("__")
    model: type[BaseModel] = Settings
    path = []
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return None
        path.append(part)
        if i < len(parts) - 1:
            sub = info.annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return None
            model = sub
    return ".".join(path)


def unknown_env_names(names: Mapping[str, Any] | list[str]) -> list[str]:
    """HARMONIA_* names that are neither a Settings field nor a CLI envvar."""
    allowed = cli_envvars()
    return sorted(
        n for n in names if n.startswith("HARMONIA_") and n not in allowed and not setting_for_env(n)
    )


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with exactly these HARMONIA_* variables (others removed) for the block."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("HARMONIA_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: str(v) for k, v in env.items() if k.startswith("HARMONIA_")})
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("HARMONIA_")]:
            del os.environ[key]
        os.environ.update(saved)


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings as a process with this environment builds them (raises ValidationError if invalid)."""
    with environment(env):
        return Settings()


# --- what a command serves -------------------------------------------------------------------------


def listen_port(inv: Invocation, env: Mapping[str, str]) -> int | None:
    """The TCP port the process listens on: None for processes without HTTP (workers)."""
    if inv.command == "gateway":
        return int(inv.params["port"] or settings_from(env).port)
    if inv.command == "serve":
        engine = inv.params["engine"]
        if engine not in cli.SERVICE_PORTS:
            raise CliError(f"unknown service {engine!r}")
        return int(inv.params["port"] or cli.SERVICE_PORTS[engine])
    if inv.command == "worker":
        return None
    raise AssertionError(f"`harmonia {inv.command}` is not a long-running service command")


@cache
def _app_for(kind: str) -> Any:
    from fastapi.testclient import TestClient

    url = "redis://127.0.0.1:1/0"  # refused at once: nothing listens there
    settings = Settings(redis_url=url)
    if kind == "gateway":
        import redis
        import redis.asyncio

        from harmonia.gateway import create_app

        app = create_app(settings, redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url))
    elif kind == "ollama":
        from harmonia.services.ollama import build_llm_app

        app = build_llm_app(settings)
    else:
        # the model service's routes do not depend on the engine; the noop engine needs no model
        from harmonia.engines.noop import NoopEngine
        from harmonia.services.model import create_model_app

        app = create_model_app(NoopEngine(), settings)
    # no lifespan (no `with`): nothing loads, and routes answer from their handlers
    return TestClient(app, raise_server_exceptions=False)


def serves_get(inv: Invocation, path: str) -> bool:
    """Whether the process `inv` starts routes GET `path` (any status but 404 from the router)."""
    kind = "gateway" if inv.command == "gateway" else inv.params.get("engine")
    if inv.command == "serve" and kind not in cli.SERVICE_PORTS:
        return False
    if inv.command not in ("gateway", "serve"):
        return False
    response = _app_for(kind).get(path)
    return response.status_code != 404


def gateway_paths() -> set[str]:
    """The gateway's documented routes (OpenAPI paths, e.g. `/job/{job_id}`)."""
    return set(_app_for("gateway").app.openapi()["paths"])


WORKER_PING = re.compile(r"redis\.Redis\.from_url\(Settings\(\)\.redis_url")
URL_IN_CODE = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)")


def check_health_command(
    test: list[str], inv: Invocation, env: Mapping[str, str], *, liveness: bool = False
) -> list[str]:
    """Problems with a health-check command for the process `inv` (an empty list = fine).

    HTTP services: `python -c` opening http://127.0.0.1:<its port><a real GET route>.
    Workers: `harmonia probe worker` (the worker's own liveness file), or, for readiness only,
    `python -c` pinging the Redis that Settings() reads from the environment (a liveness check that
    pings Redis would restart every worker during a Redis outage)."""
    problems: list[str] = []
    worker = inv.command == "worker"
    if test[:1] == ["harmonia"]:
        probe = parse_cli(test[1:])  # a real command line of the CLI, or CliError
        if (probe.command, probe.params.get("process")) != ("probe", "worker") or not worker:
            return [f"`{' '.join(test)}` is not the worker probe of a worker"]
        return []
    if liveness and worker:
        return [f"a worker's liveness check must be `harmonia probe worker`, not {test}"]
    if test[:2] != ["python", "-c"] or len(test) != 3:
        return [f"health check is not `python -c CODE`: {test}"]
    code = test[2]
    try:
        compile(code, "<healthcheck>", "exec")
    except SyntaxError as exc:
        return [f"health check code does not compile: {exc}"]
    port = listen_port(inv, env)
    if port is None:
        if not WORKER_PING.search(code):
            problems.append("worker health check does not ping Settings().redis_url")
        return problems
    match = URL_IN_CODE.search(code)
    if not match:
        return [f"no local URL in health check {code!r}"]
    if int(match.group(1)) != port:
        problems.append(f"health check port {match.group(1)} != listen port {port}")
    if not serves_get(inv, match.group(2)):
        problems.append(f"health check path {match.group(2)} is not a route of `harmonia {inv.command}`")
    return problems


# --- Dockerfiles -----------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def exec_form(arg: str) -> list[str]:
    import json

    arg = arg.strip()
    if not arg.startswith("["):
        raise ValueError(f"not exec (JSON) form: {arg}")
    value = json.loads(arg)
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"not a list of strings: {arg}")
    return value


def parse_env(arg: str) -> dict[str, str]:
    """`ENV k=v k2="v 2"` (the legacy `ENV k v` form is rejected: ambiguous)."""
    out: dict[str, str] = {}
    for token in shlex.split(arg):
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"ENV without '=': {arg}")
        out[key] = value
    return out


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def final_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for arg in self.final.all("ENV"):
            env.update(parse_env(arg))
        return env


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        raise ValueError(f"{path}: dangling line continuation")
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value).replace("$" + key, value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if op != "ARG":
                raise ValueError(f"{path}: {op} before FROM")
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((op, rest))
    return Dockerfile(path, args, stages)


def copy_sources(arg: str) -> tuple[dict[str, str], list[str], str]:
    """`COPY [--flag=v ...] SRC... DEST` -> (flags, sources, dest)."""
    words = shlex.split(arg)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore) -> [(is_exclude, regex)], in file order (the last match wins)."""
    out = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        out.append((not negate, re.compile(regex + r"\Z")))
    return out


def in_build_context(rel: str) -> bool:
    """Whether `rel` (a path relative to the repo root) is sent to the Docker build: like Docker,
    a pattern matching a path or any of its parent folders applies, and the last match wins."""
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for exclude, regex in dockerignore_patterns():
        if any(regex.match(c) for c in candidates):
            included = not exclude
    return included
