"""A small kustomize renderer for the subset of kustomize that deploy/k8s uses, so the overlays
render in the test suite on machines without kubectl (test_k8s.py also compares its output with
`kubectl kustomize` wherever kubectl is on PATH, so the two cannot drift apart unnoticed).

Supported `kustomization.yaml` fields: `apiVersion`, `kind`, `resources` (YAML files, or folders
holding a kustomization.yaml, rendered first), `namespace`, `labels` (`pairs` on metadata only:
`includeSelectors`/`includeTemplates` must be false or absent), `images` (`name`, `newName`,
`newTag`) and `patches` (`path` or inline `patch`; a strategic-merge patch for built-in kinds, or
JSON 6902 operations `add`/`replace`/`remove` with a `target`). Any other field raises
`Unsupported`, so the renderer never silently produces something kustomize would not.

Order, as kustomize applies it within one kustomization: resources (each base fully rendered),
then patches, then the namespace, labels and images transformers.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"}  # fmt: skip
#: strategic-merge keys of the built-in list fields the patches touch (from the Kubernetes API's
#: patchMergeKey); any other list in a patch replaces the original list, as in kustomize
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
BUILTIN_GROUPS = {"", "apps", "batch", "networking.k8s.io", "policy", "autoscaling"}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources `kustomize build folder` produces (order aside)."""
    kfile = folder / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise Unsupported(f"{kfile}: unsupported fields {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in spec.get("patches", []):
        _apply_patch(folder, patch, resources)
    if "namespace" in spec:
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise Unsupported("labels with includeSelectors/includeTemplates")
        for res in resources:
            res["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for res in resources:
            _set_images(res, image)
    return resources


def key(res: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = res["metadata"]
    return (res["apiVersion"], res["kind"], meta.get("namespace", ""), meta["name"])


# --- patches ---------------------------------------------------------------------------------------


def _apply_patch(folder: Path, entry: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    if set(entry) - {"path", "patch", "target"}:
        raise Unsupported(f"patch options {sorted(set(entry) - {'path', 'patch', 'target'})}")
    text = (folder / entry["path"]).read_text() if "path" in entry else entry["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):  # JSON 6902
        targets = [r for r in resources if _matches(r, entry.get("target") or {})]
        if len(targets) != 1:
            raise Unsupported(f"JSON patch target {entry.get('target')} matches {len(targets)} resources")
        for op in body:
            _json6902(targets[0], op)
        return
    if entry.get("target"):
        raise Unsupported("strategic-merge patches with a target selector")
    matches = [
        r for r in resources
        if r["kind"] == body["kind"] and r["metadata"]["name"] == body["metadata"]["name"]
    ]  # fmt: skip
    if len(matches) != 1:
        raise Unsupported(f"patch for {body['kind']}/{body['metadata']['name']} matches {len(matches)}")
    group = matches[0]["apiVersion"].rpartition("/")[0]
    if group not in BUILTIN_GROUPS:
        raise Unsupported(f"strategic-merge patch of the custom kind {body['kind']}")
    merged = _smp(matches[0], body)
    matches[0].clear()
    matches[0].update(merged)


def _matches(res: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = res["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": res["kind"], "name": res["metadata"]["name"]}
    extra = set(target) - set(wanted)
    if extra:
        raise Unsupported(f"patch target fields {sorted(extra)}")
    return all(wanted[k] == v for k, v in target.items())


def _smp(original: Any, patch: Any, field: str = "") -> Any:
    if isinstance(original, dict) and isinstance(patch, dict):
        out = dict(original)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        mk = MERGE_KEYS[field]
        by_key = {item[mk]: item for item in original}
        # kustomize (kyaml) emits the patch's items first, in patch order, then the untouched rest
        merged = [
            _smp(by_key[item[mk]], item) if item[mk] in by_key else copy.deepcopy(item) for item in patch
        ]
        patched = {item[mk] for item in patch}
        return merged + [item for item in original if item[mk] not in patched]
    return copy.deepcopy(patch)


def _json6902(res: dict[str, Any], op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = res
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[index] = op["value"]
        elif kind == "remove":
            del parent[index]
        else:
            raise Unsupported(f"JSON patch op {kind}")
        return
    if kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise KeyError(f"replace of missing {op['path']}")
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    else:
        raise Unsupported(f"JSON patch op {kind}")


# --- images ----------------------------------------------------------------------------------------


def _pod_spec(res: dict[str, Any]) -> dict[str, Any] | None:
    spec = res.get("spec") or {}
    if res["kind"] == "Pod":
        return spec
    template = spec.get("template") or {}
    return template.get("spec")


def _set_images(res: dict[str, Any], image: dict[str, Any]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"image options {sorted(set(image) - {'name', 'newName', 'newTag'})}")
    pod = _pod_spec(res)
    if not pod:
        return
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        ref = container["image"]
        name, tag = ref, None
        if ":" in ref.rpartition("/")[2]:
            name, _, tag = ref.rpartition(":")
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        container["image"] = f"{name}:{tag}" if tag else name
