"""deploy/k8s without a cluster: every manifest (base, the Secret template, both overlays as
rendered) validates against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict) or, for
KEDA objects, against KEDA's CRD schema shipped in deploy/k8s/schemas/keda (strict: unknown fields
fail, as the API server's strict field validation would). The overlays are rendered with the small
renderer in kustomize_lite.py and, where kubectl is installed, compared with `kubectl kustomize`.
Then the rendered objects are cross-checked against the code: commands, settings, ports, probes,
queues, references between objects, and the settings that keep scale-down from killing busy workers.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    REPO,
    check_health_command,
    listen_port,
    parse_cli,
    parse_dockerfile,
    serves_get,
    settings_from,
    unknown_env_names,
)
from kustomize_lite import key, render

from harmonia.cli import SERVICE_PORTS
from harmonia.config import DEFAULT_QUEUES
from harmonia.engines.registry import BUILTIN
from harmonia.jobs.queue import NAMESPACE

K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
KEDA = K8S / "schemas" / "keda"
#: the newest Kubernetes release kubernetes-validate ships schemas for (asserted below)
K8S_VERSION = "1.37.0"
NAMESPACE_NAME = "harmonia"
#: image repository -> the Dockerfile it is built from
IMAGES = {
    "harmonia-orchestrator": "containers/orchestrator/Dockerfile",
    "harmonia-jen1": "containers/jen1/Dockerfile",
    "harmonia-musicgen": "containers/musicgen/Dockerfile",
    "harmonia-musicgen-gpu": "containers/musicgen/Dockerfile.gpu",
    "harmonia-diffusers": "containers/diffusers/Dockerfile",
    "harmonia-diffusers-gpu": "containers/diffusers/Dockerfile.gpu",
    "harmonia-diffsinger": "containers/diffsinger/Dockerfile",
    "harmonia-ollama": "containers/ollama/Dockerfile",
}
WORKLOADS = ("Deployment", "StatefulSet")


# --- loading and validating ------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_files() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    folder = BASE if name == "base" else OVERLAYS[name]
    return tuple(render(folder))


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema for `kind`, made strict: an object schema that lists its properties
    rejects others (the API server would prune them, or reject them under strict field validation)."""
    for path in KEDA.glob("*.yaml"):
        crd = load(path)[0]
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
            return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    raise LookupError(f"no KEDA CRD for {kind}")


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        for value in schema.values():
            _strict(value)
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for item in schema:
            _strict(item)
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raise if `doc` is not a valid object of its kind."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)
        meta = doc["metadata"]
        extra = set(meta) - {"name", "namespace", "labels", "annotations"}
        if extra or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]):
            raise jsonschema.ValidationError(f"bad metadata {meta}")
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- the schemas themselves ------------------------------------------------------------------------


def test_kubernetes_version_is_the_newest_shipped() -> None:
    from kubernetes_validate.utils import latest_version

    assert K8S_VERSION.rsplit(".", 1)[0] == latest_version().rsplit(".", 1)[0]


def test_keda_crds_are_shipped_with_their_source() -> None:
    readme = (KEDA / "README.md").read_text()
    for kind, file in (("ScaledObject", "keda.sh_scaledobjects.yaml"),
                       ("TriggerAuthentication", "keda.sh_triggerauthentications.yaml")):  # fmt: skip
        crd = load(KEDA / file)[0]
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "keda.sh"
        assert crd["spec"]["names"]["kind"] == kind
        version = crd["metadata"]["labels"]["app.kubernetes.io/version"]
        assert file in readme and version in readme, f"README must cite {file} (KEDA {version})"
    assert re.search(r"\b[0-9a-f]{40}\b", readme), "README must name the source commit"


def test_validators_reject_mistakes() -> None:
    """The checks below can fail: a misspelt field, a wrong type, a missing required field."""
    deployment = next(d for d in load(BASE / "jen1.yaml") if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 960
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    scaled = next(d for d in load(BASE / "keda.yaml") if d["kind"] == "ScaledObject")
    for mutate in (
        lambda s: s["spec"].__setitem__("cooldownPeriods", 960),  # unknown field
        lambda s: s["spec"]["triggers"][0]["metadata"].__setitem__("listLength", 4),  # must be a string
        lambda s: s["spec"].pop("scaleTargetRef"),  # required
        lambda s: s["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].__setitem__(
            "stabilizationWindowSeconds", 7200
        ),  # above the API's 3600 maximum
    ):
        broken = copy.deepcopy(scaled)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


@pytest.mark.parametrize("path", base_files(), ids=lambda p: p.name)
def test_base_manifests_validate(path: Path) -> None:
    docs = load(path)
    assert docs, path
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("name", ["base", "cpu", "gpu"])
def test_rendered_manifests_validate(name: str) -> None:
    docs = rendered(name)
    assert len({key(d) for d in docs}) == len(docs), "duplicate objects"
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE_NAME, key(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "harmonia", key(doc)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: Python renderer only")
@pytest.mark.parametrize("name", ["base", "cpu", "gpu"])
def test_renderer_matches_kubectl_kustomize(name: str) -> None:
    folder = BASE if name == "base" else OVERLAYS[name]
    kubectl = shutil.which("kubectl")
    assert kubectl
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    theirs = {key(d): d for d in yaml.safe_load_all(out) if d}
    ours = {key(d): d for d in rendered(name)}
    assert ours == theirs


def test_secret_is_a_template_only() -> None:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert "secret.template.yaml" not in listed
    assert not [d for name in ("base", "cpu", "gpu") for d in rendered(name) if d["kind"] == "Secret"]
    secret = load(BASE / "secret.template.yaml")[0]
    assert set(secret["stringData"].values()) == {"REPLACE-ME"}


# --- cross-checks against the code -----------------------------------------------------------------


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def secret_keys() -> set[str]:
    return set(load(BASE / "secret.template.yaml")[0]["stringData"])


def container_env(container: dict[str, Any], docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (secrets as placeholders), checking
    every reference on the way: ConfigMap/Secret keys exist, $(VAR) names are defined earlier."""
    configmaps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            for ref in re.findall(r"\$\((\w+)\)", item["value"]):
                assert ref in env, f"{item['name']} uses $({ref}) before it is defined"
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
        else:
            ref = source["secretKeyRef"]
            assert ref["name"] == "harmonia-secrets" and ref["key"] in secret_keys(), ref
            env[item["name"]] = "secret"
    return env


def harmonia_containers(docs: tuple[dict[str, Any], ...]):
    """(workload, container, invocation, environment incl. the image's ENV) for Harmonia images."""
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            repo, _, _ = container["image"].partition(":")
            if repo not in IMAGES:
                continue
            dockerfile = parse_dockerfile(REPO / IMAGES[repo])
            assert "command" not in container, "the image's ENTRYPOINT (harmonia) must stay"
            env = {**dockerfile.final_env(), **container_env(container, docs)}
            yield doc, container, parse_cli(container["args"]), env


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_containers_run_real_commands_with_real_settings(name: str) -> None:
    docs = rendered(name)
    seen = set()
    for doc, container, inv, env in harmonia_containers(docs):
        where = f"{name}:{doc['metadata']['name']}/{container['name']}"
        seen.add(doc["metadata"]["name"])
        assert not unknown_env_names(env), f"{where}: not Settings fields: {unknown_env_names(env)}"
        settings_from(env)
        port = listen_port(inv, env)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert list(ports.values()) == ([] if port is None else [port]), where
        probes = {
            k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container
        }
        assert "readinessProbe" in probes, f"{where}: no readiness probe"
        assert "livenessProbe" in probes, f"{where}: no liveness probe (a wedged process is never restarted)"
        if port is not None:
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        for kind, probe in probes.items():
            if "httpGet" in probe:
                target = probe["httpGet"]["port"]
                assert ports.get(target, target) == port, f"{where}: {kind} port"
                assert serves_get(inv, probe["httpGet"]["path"]), f"{where}: {kind} path is no route"
            else:
                problems = check_health_command(
                    probe["exec"]["command"], inv, env, liveness=kind == "livenessProbe"
                )
                assert not problems, f"{where}: {kind}: {problems}"
        if port is not None and "HARMONIA_API_KEYS" not in env:
            # without keys a non-loopback bind is refused unless explicitly allowed
            assert settings_from(env).allow_open_remote, f"{where}: would refuse to bind 0.0.0.0"
    assert seen >= {"harmonia-orchestrator", "harmonia-jen1", "harmonia-musicgen", "harmonia-diffsinger",
                    "harmonia-ollama", "harmonia-musicgen-worker", "harmonia-diffsinger-worker",
                    "harmonia-acestep", "harmonia-acestep-worker", "harmonia-stable-audio",
                    "harmonia-stable-audio-worker"}  # fmt: skip


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_gateway_uses_the_secret_keys_and_shared_artifacts(name: str) -> None:
    docs = rendered(name)
    mounts_of: dict[str, str] = {}
    for doc, container, inv, env in harmonia_containers(docs):
        if inv.command == "gateway":
            api = next(e for e in container["env"] if e["name"] == "HARMONIA_API_KEYS")
            assert api["valueFrom"]["secretKeyRef"]["key"] == "api-keys"
        if inv.command in ("gateway", "worker"):
            volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["HARMONIA_DATA_DIR"])
            mounts_of[doc["metadata"]["name"]] = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert set(mounts_of.values()) == {"harmonia-artifacts"}, mounts_of
    pvc = by_kind(docs, "PersistentVolumeClaim")["harmonia-artifacts"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_references_between_objects_resolve(name: str) -> None:
    docs = rendered(name)
    pvcs = by_kind(docs, "PersistentVolumeClaim")
    pods = {}
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
            volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
            volumes |= {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
            for v in spec["template"]["spec"].get("volumes", []):
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in pvcs, v
            for c in spec["template"]["spec"]["containers"]:
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, (doc["metadata"]["name"], m)
                container_env(c, docs)  # ConfigMap/Secret keys and $(VAR) order
            pods[doc["metadata"]["name"]] = spec["template"]
    services = by_kind(docs, "Service")
    for svc in services.values():
        selected = [
            t for t in pods.values() if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, svc["metadata"]["name"]
        names = {p["name"] for c in selected[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)
    ingress = by_kind(docs, "Ingress")["harmonia"]
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/", "Prefix")]
    backend = paths[0]["backend"]["service"]
    assert backend["name"] == "harmonia-orchestrator"
    assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}


# --- KEDA and graceful scale-down --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_keda_scales_every_worker_queue_on_its_dramatiq_list(name: str) -> None:
    docs = rendered(name)
    deployments = by_kind(docs, "Deployment")
    auths = by_kind(docs, "TriggerAuthentication")
    for auth in auths.values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == "harmonia-secrets" and ref["key"] in secret_keys(), ref
    consumed: dict[str, str] = {}
    workers = {
        doc["metadata"]["name"]: (container, inv, env)
        for doc, container, inv, env in harmonia_containers(docs)
        if inv.command == "worker"
    }
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == set(workers), "every worker Deployment has a ScaledObject, and only those"
    for so in scaled.values():
        target = so["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        container, inv, env = workers[target["name"]]
        assert target["envSourceContainerName"] == container["name"]
        assert "replicas" not in deployments[target["name"]]["spec"], "KEDA owns the replica count"
        lists = set()
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis"
            assert trigger["authenticationRef"]["name"] in auths
            assert "password" not in meta, "the password comes from the TriggerAuthentication"
            assert meta["addressFromEnv"] in env, "KEDA reads the address from the container's env"
            assert re.fullmatch(r"[\w.-]+:\d+", env[meta["addressFromEnv"]])
            assert int(meta["listLength"]) >= 1 and int(meta["activationListLength"]) >= 0
            queue = meta["listName"].removeprefix(f"{NAMESPACE}:")
            assert meta["listName"] == f"{NAMESPACE}:{queue}"
            lists.add(queue)
        assert lists == set(inv.queues), f"{so['metadata']['name']}: triggers {lists} != queues {inv.queues}"
        for queue in lists:
            assert queue not in consumed, f"queue {queue} scaled twice"
            consumed[queue] = target["name"]
    assert set(consumed) == set(DEFAULT_QUEUES) == {spec.queue for spec in BUILTIN}


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_scale_down_does_not_kill_busy_workers(name: str) -> None:
    """A worker told to stop (SIGTERM) finishes its running jobs for up to shutdown_timeout_s; the
    pod must get longer than that before SIGKILL, and no job may run longer than the drain."""
    docs = rendered(name)
    deployments = by_kind(docs, "Deployment")
    workers = {
        d["metadata"]["name"]: (c, env)
        for d, c, inv, env in harmonia_containers(docs)
        if inv.command == "worker"
    }
    for so in by_kind(docs, "ScaledObject").values():
        target = so["spec"]["scaleTargetRef"]["name"]
        container, env = workers[target]
        settings = settings_from(env)
        pod = deployments[target]["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert settings.shutdown_timeout_s >= settings.max_job_timeout_s, target
        assert grace >= settings.shutdown_timeout_s + 30, f"{target}: SIGKILL before the drain ends"
        # the drain starts on SIGTERM itself; a preStop hook would only delay it
        assert "lifecycle" not in container, target
        spec = so["spec"]
        assert spec["cooldownPeriod"] >= settings.max_job_timeout_s, "scale-to-zero before a job could end"
        down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300
        assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's CEL rule


def test_gpu_overlay_puts_musicgen_on_a_gpu_and_cpu_does_not() -> None:
    def gpus(doc: dict[str, Any]) -> int:
        return sum(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            for c in doc["spec"]["template"]["spec"]["containers"]
        )

    cpu, gpu = rendered("cpu"), rendered("gpu")
    assert not [d for d in cpu if d["kind"] in WORKLOADS and gpus(d)]
    for doc, container, _, env in harmonia_containers(gpu):
        if doc["metadata"]["name"] in ("harmonia-musicgen", "harmonia-musicgen-worker"):
            assert gpus(doc) == 1 and container["image"].startswith("harmonia-musicgen-gpu:")
            assert settings_from(env).musicgen.device == "cuda"
    for doc, container, _, env in harmonia_containers(cpu):
        if doc["metadata"]["name"].startswith("harmonia-musicgen"):
            assert settings_from(env).musicgen.device == "cpu"
            assert container["image"].startswith("harmonia-musicgen:")


def test_gpu_overlay_gives_the_diffusion_services_a_gpu_and_their_workers_forward() -> None:
    def gpus(doc: dict[str, Any]) -> int:
        return sum(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            for c in doc["spec"]["template"]["spec"]["containers"]
        )

    for overlay in ("cpu", "gpu"):
        for doc, container, inv, env in harmonia_containers(rendered(overlay)):
            name = doc["metadata"]["name"]
            if name not in ("harmonia-acestep", "harmonia-stable-audio") and not name.endswith(
                ("acestep-worker", "stable-audio-worker")
            ):
                continue
            settings = settings_from(env)
            model = "acestep" if "acestep" in name else "stable-audio"
            group = getattr(settings, model.replace("-", "_"))
            if inv.command == "serve":
                on_gpu = overlay == "gpu"
                assert gpus(doc) == (1 if on_gpu else 0) and group.device == ("cuda" if on_gpu else "cpu"), (
                    name
                )
                image = "harmonia-diffusers-gpu:" if on_gpu else "harmonia-diffusers:"
                assert container["image"].startswith(image), name
            else:  # the worker forwards each job to its model's service
                assert gpus(doc) == 0 and inv.queues == [model], name
                url = getattr(settings, f"{model.replace('-', '_')}_url")
                assert url == f"http://harmonia-{model}:{SERVICE_PORTS[model]}", name
