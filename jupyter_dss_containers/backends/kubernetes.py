"""The Kubernetes backend: workloads as pods, through the official ``kubernetes`` client.

A workload is one Pod plus one Secret of the same name holding its private files (the
kernel's connection file), mounted read-only at the files' folder and deleted with it.
The Jupyter server dials the pod at its IP (``status.podIP``): it must run inside the
cluster network or have a route to it (no port-forward). Readiness comes from a watch on
the pod, which also reports what the cluster knows as soon as it knows it (quota,
Unschedulable, image pull errors, OOM-kill). Kubernetes has no signal API: kernels on
this backend interrupt by message (``interrupt_mode: message``), and SIGTERM / SIGKILL map
to deleting the pod with or without a grace period.

Every client call blocks, so each runs in a worker thread; watches run in their own pool
so that many pods starting at once never starve the default executor.

Jobs: the pod's output is followed through the log API (stdout and stderr come merged, so
all of it is reported as stdout). Files cannot be copied out of a finished pod, so each
pod gets a random token (a private file with the others, named by
``DSS_FILES_TO_LOG_FILE``; never in the pod spec) and the job runner frames its result into
the log with it (see :mod:`.logfiles`); the token is not a credential, only a nonce that
output the job prints cannot match by accident. Private files (a job's payload) travel in
the Secret, which holds at most 1 MiB.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import os
import random
import re
import secrets
import signal as signals
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import kubernetes.client
import kubernetes.config
import kubernetes.watch
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

from ..config import ExecutionConfig, expand_user, format_size
from .base import (
    Backend,
    BackendError,
    BackendUnavailable,
    ImageMissing,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)
from .logfiles import TOKEN_FILE, TOKEN_FILE_ENV, DamagedFiles, LogFiles, under

CONTAINER = "kernel"
DEFAULT_UID, DEFAULT_GID = 1000, 100
START_TIMEOUT = 120
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds for each API call other than watches
OUTAGE_LIMIT = 30  # seconds a watch retries a failing API server before the start fails
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
_WATCH_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dss-kube-watch")
_CLIENTS: dict[tuple[Any, ...], kubernetes.client.ApiClient] = {}
_CLIENTS_LOCK = threading.Lock()
_IMAGE_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
_START_FAILURES = (
    *_IMAGE_FAILURES,
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
SECRET_LIMIT = 1024 * 1024  # the API server refuses Secrets whose data is bigger
OWNER_LABEL = "dss-containers.jupyter.org/owner"  # ownership.OWNER (no import: no cycle)
TOKEN_ANNOTATION = "dss-containers.jupyter.org/files-token"  # on the Secret, never the Pod
POD_LABEL = "dss-containers.jupyter.org/pod"  # the pod's own name: its NetworkPolicy selects it
READ_ONLY_HOME = "/home/jovyan"  # HOME of the base images, when the workload's env sets none
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --------------------------------------------------------------------------- manifests


def label_value(value: str) -> str:
    """A valid label value (63 chars of ``[A-Za-z0-9-_.]``, alphanumeric ends) for any string."""
    if _LABEL_VALUE.match(value) and len(value) <= 63:
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def _mount_roots(files: dict[str, bytes]) -> dict[str, list[tuple[str, str]]]:
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


def check_model(data: Any, model: str, where: str) -> list[str]:
    """Unknown fields and wrong shapes in ``data`` against a kubernetes client model."""
    problems: list[str] = []
    if model.startswith("list["):
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        for i, item in enumerate(data):
            problems += check_model(item, model[5:-1], f"{where}[{i}]")
        return problems
    if model.startswith("dict("):
        if not isinstance(data, dict):
            return [f"{where}: expected a mapping"]
        inner = model[5:-1].split(", ", 1)[1]
        for key, item in data.items():
            problems += check_model(item, inner, f"{where}.{key}")
        return problems
    cls = getattr(kubernetes.client, model, None)
    if cls is None:  # a primitive (str, int, bool, object, datetime)
        if model in ("int", "bool") and not isinstance(data, (int, bool)):
            return [f"{where}: expected {model}, got {type(data).__name__}"]
        if model == "str" and isinstance(data, (dict, list)):
            return [f"{where}: expected a string"]
        return []
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping ({model})"]
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, value in data.items():
        if key not in by_json:
            problems.append(f"{where}: unknown field {key!r}")
        else:
            problems += check_model(value, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


class KubernetesSettings:
    """The ``kubernetes`` section of a config, with defaults."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.context: str | None = data.get("context")
        self.kubeconfig: str | None = data.get("kubeconfig")
        self.in_cluster: bool = data.get("in_cluster", False)
        self.namespace_template: str = data.get("namespace", "default")
        self.create_namespace: bool = data.get("create_namespace", False)
        self.resources: dict[str, dict[str, str]] = {
            k: {n: str(q) for n, q in v.items()} for k, v in data.get("resources", {}).items()
        }
        self.image_pull_policy: str = data.get("image_pull_policy", "IfNotPresent")
        self.grace_seconds: int = data.get("termination_grace_seconds", 5)
        policy = data.get("network_policy", {})
        #: a NetworkPolicy per pod, on unless turned off (a CNI that does not enforce them
        #: ignores them; one that does keeps other pods off the kernel ports)
        self.network_policy: bool = policy.get("enabled", True)
        #: CIDRs or NetworkPolicyPeers; empty: the address this server reaches the cluster from
        self.allow_from: list[Any] = policy.get("allow_from", [])

    def namespace(self, user: str) -> str:
        return expand_user(self.namespace_template, user)


class KubernetesBackend(Backend):
    """Pods in the cluster and namespace a config names."""

    read_only_files = True  # files come from a Secret volume

    def __init__(self, config: ExecutionConfig):
        super().__init__(config)
        self.settings = KubernetesSettings(config.kubernetes)
        #: where list(), check() and cleanup look: the namespace of this process's user
        self.namespace = self.settings.namespace(process_identity_name())
        self._namespaces_ready: set[str] = set()
        self._client: kubernetes.client.ApiClient | None = None
        self._tokens: dict[str, str] = {}  # workload id -> its files-to-log token
        self._followed: dict[str, LogFiles] = {}  # workload id -> its log, once followed
        self._server_address: str | None = None

    # ------------------------------------------------------------------ client

    def api_client(self) -> kubernetes.client.ApiClient:
        """A cached client per (kubeconfig, context): configs naming one cluster share it."""
        s = self.settings
        key = ("in-cluster",) if s.in_cluster else (s.kubeconfig, s.context)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
        if client is not None:
            return client
        try:
            configuration = kubernetes.client.Configuration()
            if s.in_cluster:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            else:
                kubernetes.config.load_kube_config(
                    config_file=os.path.expanduser(s.kubeconfig) if s.kubeconfig else None,
                    context=s.context,
                    client_configuration=configuration,
                )
            configuration.retries = 1  # urllib3 retries 3 times by default: 4 timeouts in a row
            client = kubernetes.client.ApiClient(configuration)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise BackendUnavailable(f"{self._where()}: cannot load kube config: {exc}") from None
        with _CLIENTS_LOCK:
            _CLIENTS[key] = client
        return client

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client())

    async def _networking(self) -> kubernetes.client.NetworkingV1Api:
        await self._core()
        return kubernetes.client.NetworkingV1Api(self._client)

    def server_address(self) -> str:
        """The address this server reaches the cluster from (the source address the kernel
        sees on a routed, un-NATed network; in the cluster, this server's pod IP)."""
        if self._server_address is None:
            url = urlparse(self.api_client().configuration.host)
            try:
                family, _, _, _, address = socket.getaddrinfo(
                    url.hostname, url.port or 443, type=socket.SOCK_DGRAM
                )[0]
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect(address)  # UDP: no packet sent, only a route chosen
                    self._server_address = probe.getsockname()[0]
            except OSError as exc:
                raise BackendError(
                    f"{self._where()}: cannot tell this server's address for the kernel pods' "
                    f"NetworkPolicy ({exc}); set kubernetes.network_policy.allow_from"
                ) from None
        return self._server_address

    async def _core(self) -> kubernetes.client.CoreV1Api:
        """The core API; the first call reads the kubeconfig in a thread, not on the loop."""
        if self._client is None:
            self._client = await asyncio.to_thread(self.api_client)
        return kubernetes.client.CoreV1Api(self._client)

    def _where(self) -> str:
        s = self.settings
        return "Kubernetes " + (
            "in-cluster" if s.in_cluster else f"context {s.context or '(current)'}"
        )

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread; a 404 stays an ApiException."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)  # a silent cluster fails fast
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise
            raise BackendError(f"{self._where()}: {api_message(exc)}") from None
        except (OSError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise BackendUnavailable(f"{self._where()}: cluster unreachable: {exc}") from None
        except Exception as exc:  # urllib3's MaxRetryError and friends
            if type(exc).__module__.startswith("urllib3"):
                reason = getattr(exc, "reason", None) or exc
                text = str(reason.args[-1] if getattr(reason, "args", None) else reason)
                raise BackendUnavailable(f"{self._where()}: cluster unreachable: {text}") from None
            raise

    # ------------------------------------------------------------------ manifests

    def namespace_of(self, spec: WorkloadSpec) -> str:
        """The namespace with ``${user}`` expanded to the workload's owner."""
        owner = spec.labels.get(OWNER_LABEL)
        return self.settings.namespace(owner) if owner else self.namespace

    def pod_manifest(self, spec: WorkloadSpec) -> dict[str, Any]:
        """The Pod, as a dict the client serializes; ``pod_patch`` merged in and checked."""
        s, data = self.settings, self.settings.data
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
        keys = {path: f"file-{i}" for i, path in enumerate(sorted(spec.files))}
        for i, (folder, files) in enumerate(sorted(_mount_roots(spec.files).items())):
            # one read-only mount per outermost folder: nothing is mounted inside another
            items = [{"key": keys[p], "path": rel} for p, rel in files]
            volumes.append(
                {
                    "name": f"private-{i}",
                    "secret": {"secretName": spec.name, "items": items, "defaultMode": 0o440},
                }
            )
            mounts.append({"name": f"private-{i}", "mountPath": folder, "readOnly": True})
        if self.config.read_only_root:  # writable scratch: /tmp and HOME
            home = spec.env.get("HOME") or self.config.env.get("HOME") or READ_ONLY_HOME
            for volume, path in (("tmp", "/tmp"), ("home", home)):
                volumes.append({"name": volume, "emptyDir": {}})
                mounts.append({"name": volume, "mountPath": path})
        if data.get("shm_size"):
            volumes.append(
                {
                    "name": "dshm",
                    "emptyDir": {"medium": "Memory", "sizeLimit": str(data["shm_size"])},
                }
            )
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": on_registry(spec.image, self.config.registry),
            "imagePullPolicy": s.image_pull_policy,
            "command": list(spec.command),
            "env": [{"name": k, "value": v} for k, v in spec.env.items()],
            "ports": [{"containerPort": p, "protocol": "TCP"} for p in spec.ports],
            "resources": s.resources,
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        if self.config.read_only_root:
            container["securityContext"]["readOnlyRootFilesystem"] = True
        if spec.working_dir:
            container["workingDir"] = spec.working_dir
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": s.grace_seconds,
            "automountServiceAccountToken": bool(data.get("service_account")),
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
        for key, field in (
            ("node_selector", "nodeSelector"),
            ("tolerations", "tolerations"),
            ("affinity", "affinity"),
            ("service_account", "serviceAccountName"),
        ):
            if data.get(key):
                pod_spec[field] = data[key]
        if data.get("image_pull_secrets"):
            pod_spec["imagePullSecrets"] = [{"name": n} for n in data["image_pull_secrets"]]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "namespace": self.namespace_of(spec),
                "labels": {
                    **data.get("labels", {}),
                    **self._labels(spec.labels),
                    POD_LABEL: label_value(spec.name),
                },
                "annotations": dict(data.get("annotations", {})),
            },
            "spec": pod_spec,
        }
        if data.get("pod_patch"):
            pod = merge_patch(pod, data["pod_patch"])
            problems = check_model(pod, "V1Pod", "pod")
            if problems:
                raise BackendError(
                    f"execution config {self.config.name!r}: kubernetes.pod_patch makes an "
                    f"invalid pod: {'; '.join(problems)}"
                )
        return pod

    def secret_manifest(self, spec: WorkloadSpec) -> dict[str, Any]:
        import base64

        keys = {path: f"file-{i}" for i, path in enumerate(sorted(spec.files))}
        metadata = {
            "name": spec.name,
            "namespace": self.namespace_of(spec),
            "labels": self._labels(spec.labels),
        }
        tokens = [c.decode() for p, c in spec.files.items() if p.endswith(f"/{TOKEN_FILE}")]
        if tokens:  # for another process that reads this pod's framed files back
            metadata["annotations"] = {TOKEN_ANNOTATION: tokens[0]}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {keys[p]: base64.b64encode(c).decode() for p, c in spec.files.items()},
        }

    def network_policy_manifest(
        self, spec: WorkloadSpec, server_address: str | None = None
    ) -> dict[str, Any]:
        """Ingress to the pod only on its ports, only from ``allow_from`` (default: this
        server's address); a pod without ports (a job) takes no ingress at all."""
        peers = [
            {"ipBlock": {"cidr": p}} if isinstance(p, str) else p for p in self.settings.allow_from
        ]
        if not peers:
            address = server_address or self.server_address()
            peers = [{"ipBlock": {"cidr": f"{address}/{128 if ':' in address else 32}"}}]
        ports = [{"protocol": "TCP", "port": p} for p in spec.ports]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": spec.name,
                "namespace": self.namespace_of(spec),
                "labels": self._labels(spec.labels),
            },
            "spec": {
                "podSelector": {"matchLabels": {POD_LABEL: label_value(spec.name)}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": peers, "ports": ports}] if ports else [],
            },
        }

    @staticmethod
    def _labels(labels: dict[str, str]) -> dict[str, str]:
        return {k: label_value(v) for k, v in labels.items()}

    def namespace_manifests(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace and, when the admin asks for them, its ResourceQuota and LimitRange."""
        data = self.settings.data
        out: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "dss-containers"},
                },
            }
        ]
        meta = {"name": "dss-containers", "namespace": namespace}
        if data.get("namespace_quota"):
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": meta,
                    "spec": {"hard": {k: str(v) for k, v in data["namespace_quota"].items()}},
                }
            )
        if data.get("namespace_limits"):
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "LimitRange",
                    "metadata": meta,
                    "spec": {"limits": [{"type": "Container", **data["namespace_limits"]}]},
                }
            )
        return out

    # ------------------------------------------------------------------ interface

    def target_key(self) -> tuple[str, ...]:
        s = self.settings
        return (
            "kubernetes",
            str(s.in_cluster),
            s.kubeconfig or "",
            s.context or "",
            self.namespace,
        )

    async def _ensure_namespace(self, namespace: str) -> None:
        if namespace in self._namespaces_ready or not self.settings.create_namespace:
            return
        core = await self._core()
        try:
            await self._call(core.read_namespace, namespace)
        except ApiException:
            manifests = self.namespace_manifests(namespace)
            try:
                await self._call(core.create_namespace, manifests[0])
            except BackendError as exc:
                if "already exists" not in str(exc):
                    raise
            else:  # only the creator applies the admin's policy
                for manifest in manifests[1:]:
                    create = getattr(core, f"create_namespaced_{_snake(manifest['kind'])}")
                    await self._call(create, namespace, manifest)
        self._namespaces_ready.add(namespace)

    async def create(self, spec: WorkloadSpec) -> Workload:
        size = sum(len(data) for data in spec.files.values())
        if size > SECRET_LIMIT:
            raise BackendError(
                f"execution config {self.config.name!r}: the workload's private files (a "
                f"job's code and inputs) are {format_size(size)}, over the "
                f"{format_size(SECRET_LIMIT)} a Kubernetes Secret can hold; pass big inputs "
                "through shared storage instead"
            )
        namespace = self.namespace_of(spec)
        token = secrets.token_hex(16)
        if spec.files:  # the token goes with the private files, its path in the env
            path = f"{min(_mount_roots(spec.files))}/{TOKEN_FILE}"
            spec = dataclasses.replace(
                spec,
                files={**spec.files, path: token.encode()},
                env={**spec.env, TOKEN_FILE_ENV: path},
            )
        pod_manifest = self.pod_manifest(spec)
        await self._ensure_namespace(namespace)
        core = await self._core()
        policy = self.settings.network_policy
        address = None
        if policy and not self.settings.allow_from:  # resolves the API host: not on the loop
            address = await asyncio.to_thread(self.server_address)
        if spec.files:
            await self._call(core.create_namespaced_secret, namespace, self.secret_manifest(spec))
        try:
            if policy:  # before the pod: its ports are never open to all
                manifest = self.network_policy_manifest(spec, address)
                networking = await self._networking()
                try:
                    await self._call(
                        networking.create_namespaced_network_policy, namespace, manifest
                    )
                except BackendError as exc:
                    if "forbidden" not in str(exc).lower():
                        raise
                    raise BackendError(
                        f"{exc}; grant the server 'create' on networkpolicies in {namespace}, "
                        f"or set kubernetes.network_policy.enabled: false in execution config "
                        f"{self.config.name!r} (kernel ports are then open to the namespace)"
                    ) from None
            pod = await self._call(core.create_namespaced_pod, namespace, pod_manifest)
        except (BackendError, ApiException):
            await self._delete_secret(spec.name, namespace)
            await self._delete_network_policy(spec.name, namespace)
            raise
        workload_id = f"{namespace}/{spec.name}"
        try:
            # the cluster's garbage collector removes the Secret and the policy with the Pod
            owner = {"apiVersion": "v1", "kind": "Pod", "name": spec.name, "uid": pod.metadata.uid}
            owned = {"metadata": {"ownerReferences": [owner]}}
            if spec.files:
                await self._call(core.patch_namespaced_secret, spec.name, namespace, owned)
            if policy:
                await self._call(
                    (await self._networking()).patch_namespaced_network_policy,
                    spec.name,
                    namespace,
                    owned,
                )
            await asyncio.get_running_loop().run_in_executor(
                _WATCH_POOL, self._wait_running, namespace, spec.name, pod.metadata.resource_version
            )
        except BaseException:
            await asyncio.shield(self.remove(workload_id))
            raise
        self._tokens[workload_id] = token
        return Workload(id=workload_id, name=spec.name, labels=spec.labels, image=spec.image)

    def _wait_running(self, namespace: str, name: str, resource_version: str) -> None:
        """Watch the pod until it runs; raise with the cluster's reason when it cannot.

        The watch survives the API server: a dropped connection or a 5xx is retried with
        backoff from the last resourceVersion seen (events in between are replayed); 410
        Gone re-lists the pod, judges it as it is now, and watches on from the list's
        resourceVersion. Only an outage longer than OUTAGE_LIMIT fails the start.
        """
        deadline = time.monotonic() + START_TIMEOUT
        core = self.core()
        retry = Backoff()
        version: str | None = resource_version
        while time.monotonic() < deadline:
            try:
                if version is None:  # re-list: the pod as it is now, and where to go on from
                    pods = core.list_namespaced_pod(
                        namespace,
                        field_selector=f"metadata.name={name}",
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                    if not pods.items:
                        raise BackendError(f"pod {namespace}/{name} was deleted while starting")
                    if _started(pods.items[0], namespace, name):
                        return
                    version = pods.metadata.resource_version
                watch = kubernetes.watch.Watch()
                try:
                    for event in watch.stream(
                        core.list_namespaced_pod,
                        namespace,
                        field_selector=f"metadata.name={name}",
                        resource_version=version,
                        timeout_seconds=max(1, int(deadline - time.monotonic())),
                    ):
                        retry.reset()
                        pod = event["object"]
                        version = pod.metadata.resource_version
                        if event["type"] == "DELETED":
                            raise BackendError(f"pod {namespace}/{name} was deleted while starting")
                        if _started(pod, namespace, name):
                            return
                finally:
                    watch.stop()
            except ApiException as exc:
                if exc.status == 410:  # resource version too old: re-list
                    version = None
                    continue
                if exc.status not in TRANSIENT_STATUSES:
                    raise BackendError(f"{self._where()}: {api_message(exc)}") from None
                retry.wait(f"{self._where()}: {api_message(exc)}")
            except Exception as exc:  # a dropped connection (urllib3 errors, OSError)
                if not (isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3")):
                    raise
                retry.wait(f"{self._where()}: watching pod {namespace}/{name}: {exc!r}")
        raise BackendError(f"pod {namespace}/{name} was not running after {START_TIMEOUT} s")

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        namespace, name = workload_id.split("/", 1)
        try:
            pod = await self._call((await self._core()).read_namespaced_pod, name, namespace)
        except ApiException:
            raise BackendError(f"pod {workload_id} is gone") from None
        if not pod.status.pod_ip:
            raise BackendError(f"pod {workload_id} has no IP (phase {pod.status.phase})")
        return pod.status.pod_ip, {p: p for p in ports}

    async def status(self, workload_id: str) -> WorkloadStatus:
        namespace, name = workload_id.split("/", 1)
        try:
            pod = await self._call((await self._core()).read_namespaced_pod, name, namespace)
        except ApiException:
            return WorkloadStatus("missing", exit_code=-1, reason="the pod was deleted")
        state, reason = pod_state(pod)
        if state == "running" or (state == "pending" and not reason):
            return WorkloadStatus(state)
        terminated = _terminated(pod)
        code = terminated.exit_code if terminated is not None else -1
        return WorkloadStatus(
            "exited",
            code,
            reason,
            oom_killed=terminated is not None and terminated.reason == "OOMKilled",
        )

    async def signal(self, workload_id: str, signum: int) -> None:
        """SIGTERM and SIGKILL delete the pod (with and without grace); others cannot be sent."""
        if signum == signals.SIGKILL:
            await self._delete_pod(workload_id, 0)
        elif signum == signals.SIGTERM:
            await self._delete_pod(workload_id, self.settings.grace_seconds)
        else:
            raise BackendError(
                f"{self._where()}: Kubernetes cannot send signal {signum} to a pod; "
                "kernels on Kubernetes interrupt by message (interrupt_mode: message)"
            )

    async def stop(self, workload_id: str, grace_seconds: float) -> None:
        await self._delete_pod(workload_id, int(grace_seconds))

    async def _delete_pod(self, workload_id: str, grace: int) -> None:
        namespace, name = workload_id.split("/", 1)
        with contextlib.suppress(ApiException):
            await self._call(
                (await self._core()).delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace,
            )

    async def _delete_secret(self, name: str, namespace: str) -> None:
        with contextlib.suppress(ApiException):
            await self._call((await self._core()).delete_namespaced_secret, name, namespace)

    async def _delete_network_policy(self, name: str, namespace: str) -> None:
        with contextlib.suppress(ApiException):
            await self._call(
                (await self._networking()).delete_namespaced_network_policy, name, namespace
            )

    async def remove(self, workload_id: str) -> None:
        namespace, name = workload_id.split("/", 1)
        self._tokens.pop(workload_id, None)
        self._followed.pop(workload_id, None)
        await self._delete_pod(workload_id, 0)
        await self._delete_secret(name, namespace)
        await self._delete_network_policy(name, namespace)

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        namespace, name = workload_id.split("/", 1)
        try:
            return await self._call(
                (await self._core()).read_namespaced_pod_log, name, namespace, tail_lines=tail
            )
        except (ApiException, BackendError):
            return ""

    async def _token(self, workload_id: str) -> str:
        """The pod's files-to-log token (from its Secret when another process made it)."""
        if workload_id in self._tokens:
            return self._tokens[workload_id]
        namespace, name = workload_id.split("/", 1)
        try:
            secret = await self._call((await self._core()).read_namespaced_secret, name, namespace)
        except ApiException:
            raise BackendError(f"pod {workload_id} has no Secret (any more)") from None
        token = (secret.metadata.annotations or {}).get(TOKEN_ANNOTATION)
        if not token:
            raise BackendError(f"pod {workload_id} was not started to hand files back")
        self._tokens[workload_id] = token
        return token

    async def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        """The pod's log, followed in a daemon thread until the container exits (merged:
        all of it is reported as stdout); the framed result files are kept, not shown."""
        namespace, name = workload_id.split("/", 1)
        frames = LogFiles(await self._token(workload_id))
        core = await self._core()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        def pump() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            try:
                response = core.read_namespaced_pod_log(
                    name,
                    namespace,
                    container=CONTAINER,
                    follow=True,
                    _preload_content=False,  # no timeout: a job may be quiet for hours
                )
                try:
                    for chunk in response.stream(64 * 1024, decode_content=True):
                        if text := decoder.decode(chunk):
                            loop.call_soon_threadsafe(queue.put_nowait, text)
                finally:
                    response.release_conn()
            except Exception as exc:  # a deleted pod's output (404, dropped connection) ends
                dropped = isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3")
                if not dropped and not (isinstance(exc, ApiException) and exc.status == 404):
                    with contextlib.suppress(RuntimeError):  # the loop closed
                        loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed (process exit)
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name=f"logs-{name}", daemon=True).start()
        while (item := await queue.get()) is not None:
            if isinstance(item, ApiException):
                raise BackendError(f"{self._where()}: {api_message(item)}")
            if isinstance(item, BaseException):
                raise BackendError(f"{self._where()}: following pod {workload_id}: {item!r}")
            if shown := frames.feed(item):
                yield "stdout", shown
        if rest := frames.flush():
            yield "stdout", rest
        self._followed[workload_id] = frames

    async def read_files(self, workload_id: str, path: str) -> dict[str, bytes]:
        """The files the workload framed into its log (followed, or read now) under ``path``."""
        frames = self._followed.get(workload_id)
        if frames is None or not frames.complete:
            namespace, name = workload_id.split("/", 1)
            frames = LogFiles(await self._token(workload_id))
            try:
                text = await self._call(
                    (await self._core()).read_namespaced_pod_log,
                    name,
                    namespace,
                    container=CONTAINER,
                )
            except ApiException:
                return {}
            frames.feed(text or "")
        try:
            return under(frames.files(), path)
        except DamagedFiles as exc:
            raise BackendError(
                f"pod {workload_id}: {exc}; results over the kubelet's log size limit "
                "(containerLogMaxSize, 10 MiB by default) do not come back on Kubernetes"
            ) from None

    async def stats(self, workload_id: str) -> WorkloadStats:
        """Usage from the metrics API (metrics-server; none without it), the limit from the
        pod spec."""
        namespace, name = workload_id.split("/", 1)
        try:
            pod = await self._call((await self._core()).read_namespaced_pod, name, namespace)
        except ApiException:
            return WorkloadStats(None, None, None)
        cpu_percent = memory = None
        metrics = kubernetes.client.CustomObjectsApi(self.api_client())
        try:
            found = await self._call(
                metrics.get_namespaced_custom_object,
                "metrics.k8s.io",
                "v1beta1",
                namespace,
                "pods",
                name,
            )
        except (ApiException, BackendError):  # no metrics-server, or no sample yet
            found = {}
        for container in found.get("containers") or []:
            if container.get("name") == CONTAINER:
                usage = container.get("usage") or {}
                cpu_percent = round(float(parse_quantity(usage.get("cpu", "0"))) * 100, 1)
                memory = int(parse_quantity(usage.get("memory", "0")))
        return WorkloadStats(cpu_percent, memory, _memory_limit(pod))

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        """Pods with the labels, and Secrets and NetworkPolicies of ours whose pod is gone
        (so that they are reaped)."""
        selector = ",".join(f"{k}={v}" for k, v in self._labels(labels).items())
        core = await self._core()
        pods = await self._call(core.list_namespaced_pod, self.namespace, label_selector=selector)
        secrets = await self._call(
            core.list_namespaced_secret, self.namespace, label_selector=selector
        )
        leftovers = {s.metadata.name: s for s in secrets.items}
        if self.settings.network_policy:
            policies = await self._call(
                (await self._networking()).list_namespaced_network_policy,
                self.namespace,
                label_selector=selector,
            )
            leftovers.update({p.metadata.name: p for p in policies.items})
        out = [
            Workload(
                id=f"{self.namespace}/{p.metadata.name}",
                name=p.metadata.name,
                labels=p.metadata.labels or {},
                image=p.spec.containers[0].image,
                state=pod_state(p)[0],
                started_at=str(p.metadata.creation_timestamp),
            )
            for p in pods.items
        ]
        names = {p.metadata.name for p in pods.items}
        out += [
            Workload(
                id=f"{self.namespace}/{s.metadata.name}",
                name=s.metadata.name,
                labels=s.metadata.labels or {},
                state="missing",
            )
            for s in leftovers.values()
            if s.metadata.name not in names
        ]
        return out

    async def check(self) -> dict[str, str]:
        """Cluster reachable, namespace there (or creatable), pods and secrets creatable."""
        client = await asyncio.to_thread(self.api_client)
        version = await self._call(kubernetes.client.VersionApi(client).get_code)
        try:
            await self._call((await self._core()).read_namespace, self.namespace)
            needed = [("create", "pods"), ("create", "secrets"), ("delete", "pods")]
        except ApiException as exc:
            if exc.status != 404 or not self.settings.create_namespace:
                raise BackendError(
                    f"{self._where()}: namespace {self.namespace} does not exist"
                    + ("" if exc.status == 404 else f" or cannot be read ({exc.reason})")
                ) from None
            needed = [("create", "namespaces"), ("create", "pods"), ("create", "secrets")]
        if self.settings.network_policy:
            needed.append(("create", "networkpolicies"))
        auth = kubernetes.client.AuthorizationV1Api(client)
        denied = []
        for verb, resource in needed:
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "verb": verb,
                        "resource": resource,
                        **({"group": "networking.k8s.io"} if resource == "networkpolicies" else {}),
                        **({} if resource == "namespaces" else {"namespace": self.namespace}),
                    }
                },
            }
            answer = await self._call(auth.create_self_subject_access_review, review)
            if not answer.status.allowed:
                denied.append(f"{verb} {resource}")
        if denied:
            raise BackendError(
                f"{self._where()}, namespace {self.namespace}: not allowed to {', '.join(denied)}"
            )
        return {
            "daemon": f"{client.configuration.host} (namespace {self.namespace})",
            "engine": "kubernetes",
            "version": version.git_version,
            "api_version": f"{version.major}.{version.minor}",
        }


# --------------------------------------------------------------------------- pod state


def pod_state(pod: Any) -> tuple[str, str | None]:
    """("pending" | "running" | "exited", the cluster's reason when it will not run)."""
    status = pod.status
    for condition in status.conditions or ():
        if (condition.type, condition.status, condition.reason) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return "pending", f"Unschedulable: {condition.message}"
    for cs in status.container_statuses or ():
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in _START_FAILURES:
            return "exited", f"{waiting.reason}: {waiting.message or cs.image}"
    terminated = _terminated(pod)
    if terminated is not None or status.phase in ("Succeeded", "Failed"):
        if terminated is not None and terminated.reason == "OOMKilled":
            limit = _memory_limit(pod)
            text = f"memory limit {format_size(limit)}" if limit else "no memory limit set"
            return "exited", f"OOM-killed ({text})"
        code = terminated.exit_code if terminated is not None else -1
        reason = f"exited with code {code}"
        if terminated is not None and terminated.message:
            reason += f": {terminated.message}"
        elif code == 137:
            reason += " (killed by SIGKILL)"
        return "exited", reason
    if pod.metadata.deletion_timestamp is not None:
        return "exited", "the pod is being deleted"
    if status.phase == "Running":
        return "running", None
    return "pending", None


def _started(pod: Any, namespace: str, name: str) -> bool:
    """True once the pod runs; raises with the cluster's reason when it will not."""
    state, reason = pod_state(pod)
    if state == "running":
        return True
    if state == "exited" or reason:
        cls = ImageMissing if reason and _is_image_failure(pod) else BackendError
        raise cls(f"pod {namespace}/{name}: {reason}")
    return False


class Backoff:
    """Exponential waits with jitter between retries of a failing API server (in a thread)."""

    def __init__(self, first: float = 0.1, cap: float = 2.0, limit: float = OUTAGE_LIMIT):
        self.first, self.cap, self.limit = first, cap, limit
        self.reset()

    def reset(self) -> None:
        self.delay, self.failing_since = self.first, None

    def wait(self, error: str) -> None:
        """Sleep before the next try; raise with ``error`` once the outage is too long."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.limit:
            raise BackendError(f"{error} (still failing after {self.limit:.0f} s)")
        time.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.cap, self.delay * 2)


def _terminated(pod: Any) -> Any:
    for cs in pod.status.container_statuses or ():
        if cs.state and cs.state.terminated is not None:
            return cs.state.terminated
    return None


def _is_image_failure(pod: Any) -> bool:
    return any(
        cs.state and cs.state.waiting and cs.state.waiting.reason in _IMAGE_FAILURES
        for cs in pod.status.container_statuses or ()
    )


def _memory_limit(pod: Any) -> int | None:
    limits = (pod.spec.containers[0].resources.limits or {}) if pod.spec.containers else {}
    return int(parse_quantity(limits["memory"])) if "memory" in limits else None


def api_message(exc: ApiException) -> str:
    """The API server's own message (e.g. the quota it would exceed), not the HTTP dump."""
    import json

    try:
        body = json.loads(exc.body or "")
        return body.get("message") or f"{exc.status} {exc.reason}"
    except (ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", kind).lower()


def process_identity_name() -> str:
    """Whose namespace ``list`` and ``check`` look in: this process's user, as in permissions.

    (Workloads themselves go to their owner's namespace, read from the owner label.)
    """
    import getpass

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
