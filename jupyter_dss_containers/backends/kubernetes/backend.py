"""The Kubernetes backend: workloads as pods, through the official ``kubernetes`` client.

The I/O half of the package: it resolves the namespace (``${user}`` expanded to the
workload's owner) and this server's address, builds the objects with :mod:`.manifests`,
creates them and watches the pod (:mod:`.watch`). The Jupyter server dials the pod at its IP
(``status.podIP``): it must run inside the cluster network or have a route to it (no
port-forward). Kubernetes has no signal API: kernels on this backend interrupt by message
(``interrupt_mode: message``), and SIGTERM / SIGKILL map to deleting the pod with or
without a grace period.

Jobs: the pod's output is followed through the log API (:mod:`.logstream`; stdout and
stderr come merged, so all of it is reported as stdout). Files cannot be copied out of a
finished pod, so each pod gets a random token (a private file with the others, named by
``DSS_FILES_TO_LOG_FILE``; never in the pod spec) and the job runner frames its result into
the log with it (see :mod:`..logfiles`); the token is not a credential, only a nonce that
output the job prints cannot match by accident. Private files (a job's payload) travel in
the Secret, which holds at most 1 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import os
import re
import secrets
import signal as signals
from collections.abc import AsyncIterator, Callable
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from ...config import ExecutionConfig, format_size
from ..base import (
    Backend,
    BackendError,
    FilesTooLarge,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)
from ..logfiles import TOKEN_FILE_ENV, DamagedFiles, LogFiles, under
from ..pump import pumped
from . import client as kube
from . import manifests, prepuller
from .access import check_cluster
from .logstream import log_follower
from .manifests import CONTAINER, OWNER_LABEL, SECRET_LIMIT, TOKEN_ANNOTATION, label_values
from .podstate import container_usage, memory_limit, pod_state, workload_status
from .progress import StartProgress, progress_key
from .scheduling import NODE_WAIT
from .watch import START_TIMEOUT, wait_running


class KubernetesBackend(Backend):
    """Pods in the cluster and namespace a config names."""

    read_only_files = True  # files come from a Secret volume

    def __init__(self, config: ExecutionConfig):
        super().__init__(config)
        self.settings = config.kubernetes
        #: where list(), check() and cleanup look: the namespace of this process's user
        self.namespace = self.settings.namespace(process_identity_name())
        self._namespaces_ready: set[str] = set()
        self._client: kubernetes.client.ApiClient | None = None
        self._tokens: dict[str, str] = {}  # workload id -> its files-to-log token
        self._followed: dict[str, LogFiles] = {}  # workload id -> its log, once followed
        self._server_address: str | None = None
        self._progress = StartProgress()

    # ------------------------------------------------------------------ client

    def api_client(self) -> kubernetes.client.ApiClient:
        """The cluster's cached client (reads the kubeconfig: not on the event loop)."""
        return kube.api_client(self.settings)

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client())

    async def _api(self) -> kubernetes.client.ApiClient:
        """The client; the first call reads the kubeconfig in a thread, not on the loop."""
        if self._client is None:
            self._client = await asyncio.to_thread(self.api_client)
        return self._client

    async def _core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(await self._api())

    async def _networking(self) -> kubernetes.client.NetworkingV1Api:
        return kubernetes.client.NetworkingV1Api(await self._api())

    def _where(self) -> str:
        return kube.where(self.settings)

    async def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await kube.call(self._where(), func, *args, **kwargs)

    def server_address(self) -> str:
        """The address this server reaches the cluster from (blocking: it resolves the API
        host), which the kernel pods' NetworkPolicy lets in when no ``allow_from`` is set."""
        if self._server_address is None:
            try:
                host = self.api_client().configuration.host
                self._server_address = kube.route_source_address(host)
            except OSError as exc:
                raise BackendError(
                    f"{self._where()}: cannot tell this server's address for the kernel pods' "
                    f"NetworkPolicy ({exc}); set kubernetes.network_policy.allow_from"
                ) from None
        return self._server_address

    # ------------------------------------------------------------------ manifests

    def namespace_of(self, spec: WorkloadSpec) -> str:
        """The namespace with ``${user}`` expanded to the workload's owner."""
        owner = spec.labels.get(OWNER_LABEL)
        return self.settings.namespace(owner) if owner else self.namespace

    def pod_manifest(self, spec: WorkloadSpec) -> dict[str, Any]:
        return manifests.pod_manifest(self.config, spec, self.namespace_of(spec))

    def secret_manifest(self, spec: WorkloadSpec) -> dict[str, Any]:
        return manifests.secret_manifest(spec, self.namespace_of(spec))

    def network_policy_manifest(
        self, spec: WorkloadSpec, server_address: str | None = None
    ) -> dict[str, Any]:
        """The pod's NetworkPolicy; without ``allow_from`` nor ``server_address``, this
        probes this server's address (blocking)."""
        allow_from = self.settings.allow_from
        if not allow_from and server_address is None:
            server_address = self.server_address()
        peers = manifests.policy_peers(allow_from, server_address)
        return manifests.network_policy_manifest(spec, self.namespace_of(spec), peers)

    def namespace_manifests(self, namespace: str) -> list[dict[str, Any]]:
        return manifests.namespace_manifests(self.settings, namespace)

    # ------------------------------------------------------------------ create

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
            namespace_object, *policy = self.namespace_manifests(namespace)
            try:
                await self._call(core.create_namespace, namespace_object)
            except BackendError as exc:
                if "already exists" not in str(exc):
                    raise
            else:  # only the creator applies the admin's policy
                for manifest in policy:
                    create = getattr(core, f"create_namespaced_{_snake(manifest['kind'])}")
                    await self._call(create, namespace, manifest)
        self._namespaces_ready.add(namespace)

    def _check_size(self, spec: WorkloadSpec) -> None:
        size = sum(len(data) for data in spec.files.values())
        if size > SECRET_LIMIT:
            raise BackendError(
                f"execution config {self.config.name!r}: the workload's private files (a "
                f"job's code and inputs) are {format_size(size)}, over the "
                f"{format_size(SECRET_LIMIT)} a Kubernetes Secret can hold; pass big inputs "
                "through shared storage instead"
            )

    async def create(self, spec: WorkloadSpec) -> Workload:
        self._check_size(spec)
        namespace = self.namespace_of(spec)
        token = secrets.token_hex(16)
        if spec.files:  # the token goes with the private files, its path in the env
            path = manifests.token_path(spec.files)
            spec = dataclasses.replace(
                spec,
                files={**spec.files, path: token.encode()},
                env={**spec.env, TOKEN_FILE_ENV: path},
            )
        pod_manifest = self.pod_manifest(spec)
        await self._ensure_namespace(namespace)
        pod = await self._create_objects(spec, namespace, pod_manifest)
        workload_id = f"{namespace}/{spec.name}"
        key = progress_key(spec.labels, spec.name)
        report = self._progress.reporter(key)
        configured = self.settings.start_timeout
        waited = None
        try:
            await self._hand_to_pod(spec, namespace, pod.metadata.uid)
            waited = await asyncio.get_running_loop().run_in_executor(
                kube.WATCH_POOL,
                wait_running,
                self.core(),
                namespace,
                spec.name,
                pod.metadata.resource_version,
                self._where(),
                configured or spec.start_timeout or START_TIMEOUT,
                configured or NODE_WAIT,
                report,
            )
        except BaseException:
            await asyncio.shield(self.remove(workload_id))
            raise
        finally:
            self._progress.done(key, waited)
        self._tokens[workload_id] = token
        return Workload(id=workload_id, name=spec.name, labels=spec.labels, image=spec.image)

    async def _create_objects(
        self, spec: WorkloadSpec, namespace: str, pod_manifest: dict[str, Any]
    ) -> Any:
        """Secret, NetworkPolicy (before the pod: its ports are never open to all), Pod; on
        failure, what was made is deleted."""
        core = await self._core()
        policy = None
        if self.settings.network_policy:  # resolves the API host: not on the loop
            address = None
            if not self.settings.allow_from:
                address = await asyncio.to_thread(self.server_address)
            policy = self.network_policy_manifest(spec, address)
        if spec.files:
            await self._call(core.create_namespaced_secret, namespace, self.secret_manifest(spec))
        try:
            if policy is not None:
                await self._create_network_policy(namespace, policy)
            return await self._call(core.create_namespaced_pod, namespace, pod_manifest)
        except (BackendError, ApiException):
            await self._delete_secret(spec.name, namespace)
            await self._delete_network_policy(spec.name, namespace)
            raise

    async def _create_network_policy(self, namespace: str, manifest: dict[str, Any]) -> None:
        networking = await self._networking()
        try:
            await self._call(networking.create_namespaced_network_policy, namespace, manifest)
        except BackendError as exc:
            if "forbidden" not in str(exc).lower():
                raise
            raise BackendError(
                f"{exc}; grant the server 'create' on networkpolicies in {namespace}, "
                f"or set kubernetes.network_policy.enabled: false in execution config "
                f"{self.config.name!r} (kernel ports are then open to the namespace)"
            ) from None

    async def _hand_to_pod(self, spec: WorkloadSpec, namespace: str, pod_uid: str) -> None:
        """Make the Secret and the policy the pod's: the cluster's garbage collector removes
        them with it."""
        owned = manifests.owned_by(spec.name, pod_uid)
        if spec.files:
            core = await self._core()
            await self._call(core.patch_namespaced_secret, spec.name, namespace, owned)
        if self.settings.network_policy:
            networking = await self._networking()
            await self._call(
                networking.patch_namespaced_network_policy, spec.name, namespace, owned
            )

    def start_progress(self, key: str) -> tuple[str, str] | None:
        """(phase, message) of the start of kernel or job ``key`` while it is in progress:
        ``scheduling``, ``waiting-for-node`` ("waiting for a new node (TriggeredScaleUp:
        ...)"), ``starting``, ``running``."""
        return self._progress.phases.get(key)

    def infrastructure_wait(self, key: str) -> float:
        return self._progress.node_waited.pop(key, 0.0)

    # ------------------------------------------------------------------ lifecycle

    async def _read_pod(self, workload_id: str) -> Any:
        """The pod; ApiException (404) when it is gone."""
        namespace, name = workload_id.split("/", 1)
        return await self._call((await self._core()).read_namespaced_pod, name, namespace)

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        try:
            pod = await self._read_pod(workload_id)
        except ApiException:
            raise BackendError(f"pod {workload_id} is gone") from None
        if not pod.status.pod_ip:
            raise BackendError(f"pod {workload_id} has no IP (phase {pod.status.phase})")
        return pod.status.pod_ip, {p: p for p in ports}

    async def status(self, workload_id: str) -> WorkloadStatus:
        try:
            pod = await self._read_pod(workload_id)
        except ApiException:
            return WorkloadStatus("missing", exit_code=-1, reason="the pod was deleted")
        return workload_status(pod)

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
        core = await self._core()
        with contextlib.suppress(ApiException):
            await self._call(
                core.delete_namespaced_pod, name, namespace, grace_period_seconds=grace
            )

    async def _delete_secret(self, name: str, namespace: str) -> None:
        with contextlib.suppress(ApiException):
            await self._call((await self._core()).delete_namespaced_secret, name, namespace)

    async def _delete_network_policy(self, name: str, namespace: str) -> None:
        networking = await self._networking()
        with contextlib.suppress(ApiException):
            await self._call(networking.delete_namespaced_network_policy, name, namespace)

    async def remove(self, workload_id: str) -> None:
        if (daemon_set := prepuller.prepull.split_set_id(workload_id)) is not None:
            return await prepuller.delete_set(self, *daemon_set)
        namespace, name = workload_id.split("/", 1)
        self._tokens.pop(workload_id, None)
        self._followed.pop(workload_id, None)
        await self._delete_pod(workload_id, 0)
        await self._delete_secret(name, namespace)
        await self._delete_network_policy(name, namespace)

    # ------------------------------------------------------------------ output

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        namespace, name = workload_id.split("/", 1)
        core = await self._core()
        try:
            return await self._call(core.read_namespaced_pod_log, name, namespace, tail_lines=tail)
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
        follow = log_follower(await self._core(), namespace, name, self._where())
        async for text in pumped({f"logs-{name}": follow}):
            if shown := frames.feed(text):
                yield "stdout", shown
        if rest := frames.flush():
            yield "stdout", rest
        self._followed[workload_id] = frames

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        """The files the workload framed into its log (followed, or read now) under ``path``
        (the frame itself is bounded by ``LogFiles.limit``)."""
        frames = self._followed.get(workload_id)
        if frames is None or not frames.complete:
            namespace, name = workload_id.split("/", 1)
            frames = LogFiles(await self._token(workload_id))
            core = await self._core()
            try:
                text = await self._call(
                    core.read_namespaced_pod_log, name, namespace, container=CONTAINER
                )
            except ApiException:
                return {}
            frames.feed(text or "")
        try:
            found = under(frames.files(), path)
        except DamagedFiles as exc:
            raise BackendError(
                f"pod {workload_id}: {exc}; results over the kubelet's log size limit "
                "(containerLogMaxSize, 10 MiB by default) do not come back on Kubernetes"
            ) from None
        if limit is not None and sum(len(data) for data in found.values()) > limit:
            raise FilesTooLarge(f"{path} in pod {workload_id} is over {limit} bytes")
        return found

    async def stats(self, workload_id: str) -> WorkloadStats:
        """Usage from the metrics API (metrics-server; none without it), the limit from the
        pod spec."""
        namespace, name = workload_id.split("/", 1)
        try:
            pod = await self._read_pod(workload_id)
        except ApiException:
            return WorkloadStats(None, None, None)
        metrics = kubernetes.client.CustomObjectsApi(await self._api())
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
        cpu_percent, memory = container_usage(found)
        return WorkloadStats(cpu_percent, memory, memory_limit(pod))

    # ------------------------------------------------------------------ inventory

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        """Pods with the labels, Secrets and NetworkPolicies of ours whose pod is gone (so
        that they are reaped), and pre-pull DaemonSets (:mod:`.prepuller`)."""
        selector = ",".join(f"{k}={v}" for k, v in label_values(labels).items())
        core = await self._core()
        pods = await self._call(core.list_namespaced_pod, self.namespace, label_selector=selector)
        leftovers = await self._leftovers(selector)
        names = {p.metadata.name for p in pods.items}
        gone = [(n, found) for n, found in leftovers.items() if n not in names]
        return (
            [self._listed_pod(p) for p in pods.items]
            + [
                Workload(id=f"{self.namespace}/{n}", name=n, labels=found, state="missing")
                for n, found in gone
            ]
            + await prepuller.list_sets(self, labels)
        )

    async def _leftovers(self, selector: str) -> dict[str, dict[str, str]]:
        """Name -> labels of our Secrets and NetworkPolicies matching ``selector``."""
        core = await self._core()
        found = await self._call(
            core.list_namespaced_secret, self.namespace, label_selector=selector
        )
        items = list(found.items)
        if self.settings.network_policy:
            policies = await self._call(
                (await self._networking()).list_namespaced_network_policy,
                self.namespace,
                label_selector=selector,
            )
            items += policies.items
        return {i.metadata.name: i.metadata.labels or {} for i in items}

    def _listed_pod(self, pod: Any) -> Workload:
        return Workload(
            id=f"{self.namespace}/{pod.metadata.name}",
            name=pod.metadata.name,
            labels=pod.metadata.labels or {},
            image=pod.spec.containers[0].image,
            state=pod_state(pod)[0],
            started_at=str(pod.metadata.creation_timestamp),
        )

    async def check(self) -> dict[str, str]:
        """Cluster reachable, namespace there (or creatable), pods and secrets creatable."""
        return await check_cluster(await self._api(), self.settings, self.namespace)


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", kind).lower()


def process_identity_name() -> str:
    """Whose namespace ``list`` and ``check`` look in: this process's user, as in permissions.

    (Workloads themselves go to their owner's namespace, read from the owner label.)
    """
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
