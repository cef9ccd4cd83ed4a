"""The objects a workload is made of, built by pure functions from plain arguments.

A workload is one Pod plus, when it has private files (the kernel's connection file, a
job's payload), one Secret of the same name holding them, mounted read-only at the files'
folder; the config's workspace volume (a PVC or any volume source) at the same path as the
server's root, with the user's sub-path; and, unless the admin turns it off, one
NetworkPolicy that lets only the given peers reach the pod's ports. Nothing here reads a
file, a socket or the cluster: the backend resolves the namespace and this server's
address, then calls these.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import PurePosixPath
from typing import Any

import kubernetes.client

from ... import ownership
from ...config import ExecutionConfig, KubernetesSettings
from ...imagecontract import IMAGE_GID, IMAGE_HOME, IMAGE_UID
from ...workspace import WorkspacePlan
from ..base import BackendError, WorkloadSpec
from ..logfiles import TOKEN_FILE

CONTAINER = "kernel"
DEFAULT_UID, DEFAULT_GID = IMAGE_UID, IMAGE_GID  # the base images' user
SECRET_LIMIT = 1024 * 1024  # the API server refuses Secrets whose data is bigger
OWNER_LABEL = ownership.OWNER
TOKEN_ANNOTATION = ownership.PREFIX + "files-token"  # on the Secret, never the Pod
POD_LABEL = ownership.PREFIX + "pod"  # the pod's own name: its NetworkPolicy selects it
READ_ONLY_HOME = IMAGE_HOME  # HOME of the base images, when the workload's env sets none
MANAGED_BY = {"app.kubernetes.io/managed-by": "dss-containers"}
WORKSPACE_VOLUME = "workspace"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --------------------------------------------------------------------------- names


def label_value(value: str) -> str:
    """A valid label value (63 chars of ``[A-Za-z0-9-_.]``, alphanumeric ends) for any string."""
    if _LABEL_VALUE.match(value) and len(value) <= 63:
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def label_values(labels: dict[str, str]) -> dict[str, str]:
    """The workload's labels with every value made valid."""
    return {k: label_value(v) for k, v in labels.items()}


def on_registry(image: str, registry: str | None) -> str:
    """``dss-containers/base-default:x`` -> ``<registry>/dss-containers/base-default:x``.

    An image that already names a registry host (a first part with a dot, a colon or
    ``localhost``) is left alone.
    """
    if not registry:
        return image
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{registry.rstrip('/')}/{image}"


def mount_roots(files: dict[str, bytes]) -> dict[str, list[tuple[str, str]]]:
    """{outermost folder: [(file path, path relative to it)]} for private files.

    ``/a/x`` and ``/a/lib/y`` share the mount ``/a`` (item ``lib/y``): a Secret mounted
    inside another read-only mount would need a mount point the runtime cannot create.
    """
    parents = sorted({PurePosixPath(p).parent for p in files}, key=lambda f: len(f.parts))
    roots: list[PurePosixPath] = []
    for folder in parents:
        if not any(folder == r or r in folder.parents for r in roots):
            roots.append(folder)
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(files):
        root = next(r for r in roots if PurePosixPath(path).is_relative_to(r))
        out.setdefault(str(root), []).append((path, str(PurePosixPath(path).relative_to(root))))
    return out


def token_path(files: dict[str, bytes]) -> str:
    """Where the files-to-log token goes: with the private files, in their first mount."""
    return f"{min(mount_roots(files))}/{TOKEN_FILE}"


def _secret_keys(files: dict[str, bytes]) -> dict[str, str]:
    """File path -> its key in the Secret (paths are not valid keys)."""
    return {path: f"file-{i}" for i, path in enumerate(sorted(files))}


# --------------------------------------------------------------------------- pod


def pod_manifest(config: ExecutionConfig, spec: WorkloadSpec, namespace: str) -> dict[str, Any]:
    """The Pod, as a dict the client serializes; ``pod_patch`` merged in and checked."""
    settings = config.kubernetes
    volumes, mounts = _volumes(config, settings, spec)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": {
                **settings.labels,
                **label_values(spec.labels),
                POD_LABEL: label_value(spec.name),
            },
            "annotations": dict(settings.annotations),
        },
        "spec": _pod_spec(
            settings, _container(config, settings, spec, mounts), volumes, _workspace(spec)
        ),
    }
    if not settings.pod_patch:
        return pod
    pod = merge_patch(pod, copy.deepcopy(settings.pod_patch))
    problems = check_model(pod, "V1Pod", "pod")
    if problems:
        raise BackendError(
            f"execution config {config.name!r}: kubernetes.pod_patch makes an "
            f"invalid pod: {'; '.join(problems)}"
        )
    return pod


def _volumes(
    config: ExecutionConfig, settings: KubernetesSettings, spec: WorkloadSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the container's mounts): private files, scratch space, shared memory."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    keys = _secret_keys(spec.files)
    for i, (folder, files) in enumerate(sorted(mount_roots(spec.files).items())):
        # one read-only mount per outermost folder: nothing is mounted inside another
        items = [{"key": keys[p], "path": rel} for p, rel in files]
        secret = {"secretName": spec.name, "items": items, "defaultMode": 0o440}
        volumes.append({"name": f"private-{i}", "secret": secret})
        mounts.append({"name": f"private-{i}", "mountPath": folder, "readOnly": True})
    plan = _workspace(spec)
    if plan is not None:
        volumes.append(workspace_volume(config, plan))
        mounts.append(workspace_mount(plan))
    for i, path in enumerate(spec.scratch_dirs):  # a job's working-folder snapshot
        volumes.append({"name": f"scratch-{i}", "emptyDir": {}})
        mounts.append({"name": f"scratch-{i}", "mountPath": path})
    if config.read_only_root:  # writable scratch: /tmp and HOME
        home = spec.env.get("HOME") or config.env.get("HOME") or READ_ONLY_HOME
        scratch = [("tmp", "/tmp")]
        if plan is None or not _inside(home, plan.root):  # else HOME is the user's already
            scratch.append(("home", home))
        for volume, path in scratch:
            volumes.append({"name": volume, "emptyDir": {}})
            mounts.append({"name": volume, "mountPath": path})
    if settings.shm_size:
        memory = {"medium": "Memory", "sizeLimit": settings.shm_size}
        volumes.append({"name": "dshm", "emptyDir": memory})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _workspace(spec: WorkloadSpec) -> WorkspacePlan | None:
    """The workspace plan when it mounts a volume (a plan with a notice mounts nothing)."""
    plan = spec.workspace
    return plan if plan is not None and plan.mounted and plan.volume else None


def _inside(path: str, root: str | None) -> bool:
    return root is not None and (path.rstrip("/") + "/").startswith(root.rstrip("/") + "/")


def workspace_volume(config: ExecutionConfig, plan: WorkspacePlan) -> dict[str, Any]:
    """The workspace as a pod volume: ``{"claim": name}`` is a PersistentVolumeClaim, any
    other mapping a volume source as the admin wrote it (``nfs``, ``csi``...), checked."""
    assert plan.volume is not None
    source = {k: copy.deepcopy(v) for k, v in plan.volume.items() if k != "name"}
    if "claim" in source:
        volume = {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": source["claim"]}}
    else:
        volume = {"name": WORKSPACE_VOLUME, **source}
    problems = check_model(volume, "V1Volume", "workspace.volume")
    if problems or len(volume) != 2:
        problems = problems or ["workspace.volume: expected exactly one volume source"]
        raise BackendError(
            f"execution config {config.name!r}: {'; '.join(problems)} (a claim name such as "
            "home-${user}, or one volume source such as {nfs: {server: ..., path: ...}})"
        )
    return volume


def workspace_mount(plan: WorkspacePlan) -> dict[str, Any]:
    """The workspace mounted at the server's root path, the user's sub-path of the volume."""
    assert plan.root is not None
    mount: dict[str, Any] = {"name": WORKSPACE_VOLUME, "mountPath": plan.root}
    if plan.sub_path:
        sub = PurePosixPath(plan.sub_path)
        if sub.is_absolute() or ".." in sub.parts:
            raise BackendError(
                f"workspace.sub_path {plan.sub_path!r}: expected a relative path without '..'"
            )
        mount["subPath"] = str(sub)
    if plan.read_only:
        mount["readOnly"] = True
    return mount


def _container(
    config: ExecutionConfig,
    settings: KubernetesSettings,
    spec: WorkloadSpec,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if config.read_only_root:
        security["readOnlyRootFilesystem"] = True
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": on_registry(spec.image, config.registry),
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(spec.command),
        "env": [{"name": k, "value": v} for k, v in spec.env.items()],
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in spec.ports],
        "resources": copy.deepcopy(settings.resources),
        "volumeMounts": mounts,
        "securityContext": security,
    }
    plan = _workspace(spec)
    working_dir = spec.working_dir or (plan.working_dir if plan is not None else None)
    if working_dir:
        container["workingDir"] = working_dir
    return container


def _pod_spec(
    settings: KubernetesSettings,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    workspace: WorkspacePlan | None = None,
) -> dict[str, Any]:
    """The pod's spec. With a workspace volume it still runs as the image's user (the
    server's uid means nothing on the cluster's volumes); ``fsGroup`` makes the volume the
    image group's, changed only when its root is not (a big home is not re-owned at each
    start)."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.grace_seconds,
        "automountServiceAccountToken": bool(settings.service_account),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": DEFAULT_UID,
            "runAsGroup": DEFAULT_GID,
            "fsGroup": DEFAULT_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if workspace is not None:
        pod_spec["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    placement = {
        "nodeSelector": settings.node_selector,
        "tolerations": list(settings.tolerations),
        "affinity": settings.affinity,
        "serviceAccountName": settings.service_account,
    }
    pod_spec.update({k: copy.deepcopy(v) for k, v in placement.items() if v})
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return pod_spec


def merge_patch(base: Any, patch: Any) -> Any:
    """Deep-merge ``patch`` into ``base``: mappings merge, ``containers`` merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge_patch(base.get(key), value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        by_name = {x["name"]: x for x in base}
        merged = [merge_patch(by_name[x["name"]], x) if x["name"] in by_name else x for x in patch]
        patched = {x["name"] for x in patch}
        return [x for x in base if x["name"] not in patched] + merged
    return patch


#: how the client's models name their field types: ``List[V1Container]`` and
#: ``Dict[str, str]`` (older clients: ``list[...]`` and ``dict(str, str)``)
_LIST_TYPE = re.compile(r"^[Ll]ist\[(.+)\]$")
_DICT_TYPE = re.compile(r"^[Dd]ict[\[(][^,]+, (.+)[\])]$")


def check_model(data: Any, model: str, where: str) -> list[str]:
    """Unknown fields and wrong shapes in ``data`` against a kubernetes client model."""
    if match := _LIST_TYPE.match(model):
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        inner = match.group(1)
        return [p for i, item in enumerate(data) for p in check_model(item, inner, f"{where}[{i}]")]
    if match := _DICT_TYPE.match(model):
        if not isinstance(data, dict):
            return [f"{where}: expected a mapping"]
        inner = match.group(1)
        return [p for key, item in data.items() for p in check_model(item, inner, f"{where}.{key}")]
    cls = getattr(kubernetes.client, model, None)
    if cls is None:  # a primitive (str, int, bool, object, datetime)
        return _check_primitive(data, model, where)
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping ({model})"]
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    problems: list[str] = []
    for key, value in data.items():
        if key not in by_json:
            problems.append(f"{where}: unknown field {key!r}")
        else:
            problems += check_model(value, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def _check_primitive(data: Any, model: str, where: str) -> list[str]:
    if model in ("int", "bool") and not isinstance(data, (int, bool)):
        return [f"{where}: expected {model}, got {type(data).__name__}"]
    if model == "str" and isinstance(data, (dict, list)):
        return [f"{where}: expected a string"]
    return []


# --------------------------------------------------------------------------- the rest


def secret_manifest(spec: WorkloadSpec, namespace: str) -> dict[str, Any]:
    """The Secret holding the workload's private files (and, as an annotation, the token its
    files come back in the log with, for another process that reads them back)."""
    keys = _secret_keys(spec.files)
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": namespace,
        "labels": label_values(spec.labels),
    }
    tokens = [c.decode() for p, c in spec.files.items() if p.endswith(f"/{TOKEN_FILE}")]
    if tokens:
        metadata["annotations"] = {TOKEN_ANNOTATION: tokens[0]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {keys[p]: base64.b64encode(c).decode() for p, c in spec.files.items()},
    }


def policy_peers(
    allow_from: tuple[str | dict[str, Any], ...], server_address: str | None
) -> list[dict[str, Any]]:
    """NetworkPolicyPeers: the admin's ``allow_from`` (a CIDR string becomes an ipBlock),
    else this server's address alone."""
    if allow_from:
        return [
            {"ipBlock": {"cidr": p}} if isinstance(p, str) else copy.deepcopy(p) for p in allow_from
        ]
    if not server_address:
        raise ValueError("no allow_from and no server address: the policy would admit no one")
    prefix = 128 if ":" in server_address else 32
    return [{"ipBlock": {"cidr": f"{server_address}/{prefix}"}}]


def network_policy_manifest(
    spec: WorkloadSpec, namespace: str, peers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Ingress to the pod only on its ports, only from ``peers``; a pod without ports (a
    job) takes no ingress at all."""
    ports = [{"protocol": "TCP", "port": p} for p in spec.ports]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": label_values(spec.labels),
        },
        "spec": {
            "podSelector": {"matchLabels": {POD_LABEL: label_value(spec.name)}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": ports}] if ports else [],
        },
    }


def namespace_manifests(settings: KubernetesSettings, namespace: str) -> list[dict[str, Any]]:
    """The namespace and, when the admin asks for them, its ResourceQuota and LimitRange."""
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": dict(MANAGED_BY)},
        }
    ]
    meta = {"name": "dss-containers", "namespace": namespace}
    if settings.namespace_quota:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": dict(meta),
                "spec": {"hard": dict(settings.namespace_quota)},
            }
        )
    if settings.namespace_limits:
        limits = {"type": "Container", **copy.deepcopy(settings.namespace_limits)}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": dict(meta),
                "spec": {"limits": [limits]},
            }
        )
    return out


def owned_by(pod_name: str, pod_uid: str) -> dict[str, Any]:
    """The patch that hands an object to the pod: the cluster's garbage collector removes it
    with the pod."""
    owner = {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}
    return {"metadata": {"ownerReferences": [owner]}}
