"""The per-service Dockerfiles (containers/<service>/), checked without a Docker engine: every COPY
source exists and is in the build context, the entrypoint and command are real `harmonia` CLI
commands, the exposed port and the HEALTHCHECK match what that command serves, only the service's
extras are installed, the final stage runs as a non-root user, and no secret is baked in."""

from __future__ import annotations

import re
import tomllib

import pytest
from deploy_support import (
    DOCKERFILES,
    LEGACY_DOCKERFILES,
    REPO,
    SECRETISH,
    check_health_command,
    copy_sources,
    exec_form,
    in_build_context,
    listen_port,
    parse_cli,
    parse_dockerfile,
    parse_env,
    settings_from,
    unknown_env_names,
)

ALL = [(service, path) for group in (DOCKERFILES, LEGACY_DOCKERFILES) for service, paths in group.items()
       for path in paths]  # fmt: skip
IDS = [path.removeprefix("containers/") for _, path in ALL]
#: service -> the pyproject extras its image installs (the platform alone = no extras)
EXTRAS = {
    "orchestrator": set(),
    "jen1": set(),
    "ollama": set(),
    "musicgen": {"musicgen"},
    "diffusers": {"diffusers"},
    "diffsinger": {"diffsinger"},
    "legacy-worker": {"musicgen", "diffsinger"},  # the old one image with everything
}
#: torch images -> the settings groups whose device the image sets (cpu in the CPU image, cuda in the GPU one)
DEVICES = {"musicgen": ["MUSICGEN"], "diffusers": ["ACESTEP", "STABLE_AUDIO"]}
#: service -> the `harmonia` command its image runs by default
COMMAND = {
    "orchestrator": "gateway",
    "jen1": "worker",
    "musicgen": "serve",
    "diffusers": "serve",
    "diffsinger": "serve",
    "ollama": "serve",
    "legacy-worker": "worker",
}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(params=ALL, ids=IDS)
def image(request: pytest.FixtureRequest):
    service, rel = request.param
    return service, rel, parse_dockerfile(REPO / rel)


def test_every_service_has_its_dockerfiles_and_a_readme() -> None:
    for service, paths in DOCKERFILES.items():
        for rel in paths:
            assert (REPO / rel).is_file(), rel
        readme = (REPO / "containers" / service / "README.md").read_text()
        # a README says how to build and run, and names the port / environment it documents
        assert "docker build -f containers/" in readme and "docker run" in readme, service
        assert "HARMONIA_" in readme, service


def test_the_legacy_worker_image_is_marked_deprecated_and_points_at_containers() -> None:
    for paths in LEGACY_DOCKERFILES.values():
        for rel in paths:
            head = (REPO / rel).read_text().splitlines()[:5]
            assert head[1].startswith("# DEPRECATED:"), rel
            assert any("containers/" in line for line in head), rel


def test_multi_stage_non_root(image) -> None:
    _, rel, df = image
    assert len(df.stages) >= 2, f"{rel}: build and runtime stages expected"
    users = df.final.all("USER")
    assert users, f"{rel}: the final stage sets no USER (would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{rel}: runs as {user}"
    # the venv is built in an earlier stage and copied; no compiler or pip cache in the final image
    assert any(copy_sources(a)[0].get("from") for a in df.final.all("COPY")), rel


def test_copy_sources_exist_in_the_build_context(image) -> None:
    _, rel, df = image
    names = {s.name for s in df.stages if s.name}
    seen = 0
    for stage in df.stages:
        for arg in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = copy_sources(arg)
            if "from" in flags:
                assert flags["from"] in names, f"{rel}: COPY --from={flags['from']} names no stage"
                continue
            for src in sources:
                assert (REPO / src).exists(), f"{rel}: COPY source {src} does not exist"
                assert in_build_context(src), f"{rel}: COPY source {src} is excluded by .dockerignore"
                seen += 1
    assert seen >= 2, f"{rel}: expected the package sources to be copied"
    assert not [a for s in df.stages for a in s.all("ADD")], f"{rel}: use COPY, not ADD"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for rel in ("pyproject.toml", "README.md", "src/harmonia/cli.py", "src/harmonia/gateway/app.py"):
        assert in_build_context(rel), rel
    for rel in (".git/config", ".venv/bin/python", "data/valkey/appendonly.aof", "tests/conftest.py",
                ".env", "src/harmonia/__pycache__/cli.cpython-311.pyc", "bench/results/x.json"):  # fmt: skip
        assert not in_build_context(rel), rel


def test_entrypoint_and_cmd_are_real_cli_commands(image) -> None:
    service, rel, df = image
    entry = exec_form(df.final.all("ENTRYPOINT")[-1])
    assert entry == ["harmonia"] and "harmonia" in pyproject()["project"]["scripts"], rel
    inv = parse_cli(exec_form(df.final.all("CMD")[-1]))
    assert inv.command == COMMAND[service], rel
    env = df.final_env()
    if service == "jen1":
        assert set(inv.queues) == {"jen1", "render", "noop", "ollama"}
    port = listen_port(inv, env)
    exposed = [int(p.split("/")[0]) for arg in df.final.all("EXPOSE") for p in arg.split()]
    assert exposed == ([] if port is None else [port]), f"{rel}: EXPOSE {exposed} but it listens on {port}"
    if port is not None and inv.command == "serve":
        from harmonia.cli import SERVICE_PORTS

        assert port == SERVICE_PORTS[inv.params["engine"]], f"{rel}: not the CLI's default port"


def test_healthcheck_hits_a_real_route_on_the_served_port(image) -> None:
    _, rel, df = image
    checks = df.final.all("HEALTHCHECK")
    assert len(checks) == 1, f"{rel}: one HEALTHCHECK expected"
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0])
    assert match, f"{rel}: HEALTHCHECK must use CMD in exec form"
    inv = parse_cli(exec_form(df.final.all("CMD")[-1]))
    problems = check_health_command(exec_form(match.group(1)), inv, df.final_env(), liveness=True)
    assert not problems, f"{rel}: {problems}"


def test_env_names_are_settings_and_parse(image) -> None:
    _, rel, df = image
    env = df.final_env()
    assert not unknown_env_names(env), f"{rel}: not Settings fields: {unknown_env_names(env)}"
    settings_from(env)  # values parse (ValidationError otherwise)
    declared = set(df.args)
    for stage in df.stages:
        declared.update(a.partition("=")[0] for a in stage.all("ARG"))
        for arg in stage.all("ENV"):
            declared.update(parse_env(arg))
    baked = sorted(k for k in declared if SECRETISH.search(k))
    assert not baked, f"{rel}: secrets must come at run time, not ENV/ARG: {baked}"


def test_only_the_services_extras_are_installed(image) -> None:
    service, rel, df = image
    project = pyproject()
    installs = [arg for stage in df.stages for arg in stage.all("RUN") if "pip install" in arg]
    text = " ".join(installs)
    extras = set()
    for group in re.findall(r"""["']?\.\[([a-z0-9,_-]+)\]["']?""", text):
        extras.update(group.split(","))
    assert extras == EXTRAS[service], f"{rel}: installs extras {extras}"
    assert extras <= set(project["project"]["optional-dependencies"]), rel
    assert re.search(r"pip install (\"?\.\[|\.\s|\.$|\. &&)", text), (
        f"{rel}: the package itself is not installed"
    )
    # tinysoundfont: the version scripts/install pins, without its playback-only dependencies
    found = re.search(r"tinysoundfont==([\d.]+)", (REPO / "scripts/install").read_text())
    assert found, "scripts/install pins tinysoundfont"
    pinned = found.group(1)
    assert f'pip install --no-deps "tinysoundfont=={pinned}"' in text, rel
    torch_pin = next(
        d for d in project["project"]["optional-dependencies"]["musicgen"] if d.startswith("torch==")
    )
    if service in DEVICES or {"musicgen", "diffusers"} & extras:  # a torch image
        assert f'"{torch_pin}"' in text, f"{rel}: torch must be {torch_pin}"
        device = "cuda" if rel.endswith(".gpu") else "cpu"
        for group in DEVICES.get(service, []):
            assert df.final_env().get(f"HARMONIA_{group}__DEVICE") == device, (rel, group)
        if rel.endswith(".gpu"):
            assert df.stages[0].base.startswith(("nvidia/cuda:", "pytorch/pytorch:")), rel
        else:
            assert "--index-url https://download.pytorch.org/whl/cpu" in text, f"{rel}: CPU torch expected"
    else:
        assert "torch" not in text and "onnxruntime" not in text, rel


def test_state_lives_on_volumes(image) -> None:
    service, rel, df = image
    volumes = set()
    for arg in df.final.all("VOLUME"):
        volumes.update(exec_form(arg))
    env = df.final_env()
    inv = parse_cli(exec_form(df.final.all("CMD")[-1]))
    if inv.command in ("gateway", "worker") or service in ("musicgen", "diffusers", "diffsinger"):
        # artifacts: the gateway serves what workers (incl. the musicgen/diffsinger queue workers) write
        assert env.get("HARMONIA_DATA_DIR") in volumes, f"{rel}: HARMONIA_DATA_DIR is not a volume"
    if service in ("musicgen", "diffusers"):
        assert env["HF_HOME"].startswith("/models/") and "/models" in volumes, rel
    if service == "diffsinger":
        assert env["HARMONIA_DIFFSINGER__VOICEBANK"] in volumes, rel
