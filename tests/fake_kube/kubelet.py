"""The fake cluster's scheduler and nodes (one, and those the fake autoscaler adds; all on
the local Docker engine): it runs each pod's one container with the pod's limits and
security context and reports what a real kubelet reports: Unschedulable (node selector; a
``FailedScheduling`` Event, and the autoscaler's verdict when it is on), the binding
(``spec.nodeName`` on the first node whose labels match, a ``Scheduled`` Event, the
container waiting in ContainerCreating), ErrImageNeverPull / ErrImagePull,
CreateContainerConfigError (a pod that must run as non-root whose user would be root),
Running with a podIP, and termination (OOMKilled, exit codes). The security context is
applied as the runtime would: user and group (container over pod over image),
capabilities dropped and added, privileged, no-new-privileges, read-only root, an
Unconfined seccomp profile. Each pod gets its own loopback address as podIP and publishes
its container ports there, so nothing leaves 127/8; a ``hostNetwork`` pod shares the host's
network (podIP 127.0.0.1). On an HTTPS cluster each pod gets what :mod:`.podidentity`
gives (the service-account token, ``ca.crt``, ``KUBERNETES_SERVICE_HOST``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import tempfile
from typing import Any

import docker
import docker.errors
from kubernetes.utils.quantity import parse_quantity

from . import events
from .autoscaler import Autoscaler
from .claims import ClaimError, ClaimFolders, unschedulable_message
from .pulls import ImagePulls
from .store import Store, now

FAKE_LABEL = "fake-kube.test/pod"
SCHEDULER = "default-scheduler"


def unschedulable(nodes: int) -> str:
    """The scheduler's message for a pod whose node selector no node matches."""
    return (
        f"0/{nodes} nodes are available: {nodes} node(s) didn't match Pod's node "
        f"affinity/selector. preemption: 0/{nodes} nodes are available: {nodes} Preemption "
        "is not helpful for scheduling."
    )


UNSCHEDULABLE = unschedulable(1)


def container_name(ns: str, name: str) -> str:
    return f"fake-kube-{ns}-{name}"


def container_status(c: dict[str, Any], state: dict[str, Any], ready: bool = False) -> list:
    return [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": ready,
            "state": state,
        }
    ]


def image_failure(c: dict[str, Any]) -> dict[str, Any]:
    """The waiting state of a container whose image is not on the node."""
    if c.get("imagePullPolicy", "IfNotPresent") == "Never":
        reason = "ErrImageNeverPull"
        message = f'Container image "{c["image"]}" is not present with pull policy of Never'
    else:
        reason = "ErrImagePull"
        message = f'failed to pull and unpack image "{c["image"]}": the fake cluster pulls nothing'
    return {"waiting": {"reason": reason, "message": message}}


class Kubelet:
    """Runs pods on Docker; writes their status into the store."""

    def __init__(
        self,
        store: Store,
        docker_client: docker.DockerClient,
        instance: str,
        ip_base: int,
        node_labels: dict[str, str],
        reported: dict[str, float],
    ):
        self.store, self.docker, self.instance = store, docker_client, instance
        self.node_labels = node_labels
        #: the nodes' labels (the first one is ``node_labels``; the autoscaler adds more)
        self.nodes = [node_labels]
        #: may this pod go to the node with these labels besides its node selector (its
        #: pin and the node's taints: :meth:`.nodes.Nodes.fits`)
        self.fits: Any = lambda pod, node: True
        self.autoscaler = Autoscaler()
        #: images whose pull takes time (off unless a test holds one; :mod:`.pulls`)
        self.pulls = ImagePulls()
        self.reported = reported  # pod name -> loop time of its failure report
        self._ips = (f"127.0.{ip_base}.{i}" for i in range(2, 250))
        self._dirs: list[str] = []
        #: the node's storage for PersistentVolumeClaims (see :mod:`.claims`)
        self.claims = ClaimFolders(tempfile.mkdtemp(prefix="fake-kube-pvcs-"))
        self._dirs.append(self.claims.root)
        store.on_change.append(self.claims.changed)
        self.tasks: set[asyncio.Task[Any]] = set()
        #: the pods' API credentials (:mod:`.podidentity`), on an HTTPS cluster only
        self.identity: Any = None

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def report(self, name: str) -> None:
        self.reported[name] = asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ a pod's life

    async def run_pod(self, ns: str, name: str) -> None:
        pod = self.store.objects["pods"][(ns, name)]
        c = pod["spec"]["containers"][0]
        node = await self._schedule(ns, name)
        if node is None or not await self._claims_there(ns, name, pod):
            return
        scheduled = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]
        creating = container_status(c, {"waiting": {"reason": "ContainerCreating"}})
        message = f"Successfully assigned {ns}/{name} to {node}"
        await events.record(self.store, pod, "Scheduled", message, SCHEDULER)
        await self.store.bind(
            ns, name, node, conditions=scheduled, hostIP="127.0.0.1", containerStatuses=creating
        )
        try:
            image = await asyncio.to_thread(self.docker.images.get, c["image"])
        except docker.errors.ImageNotFound:
            statuses = container_status(c, image_failure(c))
            await self.store.update_status(ns, name, containerStatuses=statuses)
            self.report(name)
            return
        await self.pulls.pull(self.store, pod, c, int(image.attrs.get("Size") or 0))
        if (ns, name) not in self.store.objects["pods"]:
            return
        security = effective_security(pod, c, (image.attrs.get("Config") or {}).get("User") or "")
        if isinstance(security, str):
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": security}}
            await self.store.update_status(ns, name, containerStatuses=container_status(c, waiting))
            self.report(name)
            return
        ip = "127.0.0.1" if pod["spec"].get("hostNetwork") is True else next(self._ips)
        try:
            container = await asyncio.to_thread(self._run_container, ns, name, pod, ip, security)
        except ClaimError as exc:
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            await self.store.update_status(ns, name, containerStatuses=container_status(c, waiting))
            self.report(name)
            return
        except docker.errors.APIError as exc:
            waiting = {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            statuses = container_status(c, waiting)
            await self.store.update_status(ns, name, containerStatuses=statuses)
            return
        started = now()
        await self.store.update_status(
            ns,
            name,
            phase="Running",
            podIP=ip,
            podIPs=[{"ip": ip}],
            startTime=started,
            conditions=[*scheduled, {"type": "Ready", "status": "True"}],
            containerStatuses=container_status(c, {"running": {"startedAt": started}}, True),
        )
        await self._until_exit(ns, name, c, container, started, scheduled)

    async def _schedule(self, ns: str, name: str) -> str | None:
        """The node the pod goes to; None while none matches its node selector and no
        node comes (``FailedScheduling``, the autoscaler's verdict, ``Unschedulable``)."""
        while (pod := self.store.objects["pods"].get((ns, name))) is not None:
            selector = pod["spec"].get("nodeSelector") or {}
            for node in self.nodes:
                if all(node.get(k) == v for k, v in selector.items()) and self.fits(pod, node):
                    return node["kubernetes.io/hostname"]
            message = unschedulable(len(self.nodes))
            await events.record(self.store, pod, "FailedScheduling", message, SCHEDULER, "Warning")
            group = None
            if self.autoscaler.enabled:
                group = await self.autoscaler.scale_up(self.store, pod)
            await self._unschedulable(ns, name, message)
            if group is None:
                return None
            self.nodes.append(await self.autoscaler.new_node(group))
        return None

    async def _claims_there(self, ns: str, name: str, pod: dict[str, Any]) -> bool:
        """Wait, as the scheduler retries, until every claim the pod names exists (the pod
        Unschedulable meanwhile); False once the pod is gone."""
        reported = None
        while (message := unschedulable_message(self.store, ns, pod)) is not None:
            if (ns, name) not in self.store.objects["pods"]:
                return False
            if message != reported:
                await self._unschedulable(ns, name, message)
                reported = message
            async with self.store.changed:
                await self.store.changed.wait()
        return (ns, name) in self.store.objects["pods"]

    async def _unschedulable(self, ns: str, name: str, message: str = UNSCHEDULABLE) -> None:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": now(),
        }
        await self.store.update_status(ns, name, conditions=[condition])
        self.report(name)

    async def _until_exit(
        self,
        ns: str,
        name: str,
        c: dict[str, Any],
        container: Any,
        started: str,
        scheduled: list[dict[str, Any]],
    ) -> None:
        result = await asyncio.to_thread(_wait, container)
        if (ns, name) not in self.store.objects["pods"]:
            return
        try:
            attrs = await asyncio.to_thread(self.docker.api.inspect_container, container.id)
        except docker.errors.NotFound:  # removed by a delete (or the cluster's stop) meanwhile
            return
        state = attrs["State"]
        code = int(state.get("ExitCode", result))
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        terminated = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now(),
            }
        }
        await self.store.update_status(
            ns,
            name,
            phase="Succeeded" if code == 0 else "Failed",
            conditions=[*scheduled, {"type": "Ready", "status": "False"}],
            containerStatuses=container_status(c, terminated),
        )
        self.report(name)

    async def terminate(self, ns: str, name: str, grace: int) -> None:
        """Stop the pod's container (with ``grace`` seconds), then drop the pod."""
        cname = container_name(ns, name)

        def stop_and_remove() -> None:
            try:
                container = self.docker.containers.get(cname)
            except docker.errors.NotFound:
                return
            with contextlib.suppress(docker.errors.APIError):
                if grace > 0:
                    container.stop(timeout=grace)
                container.remove(force=True)

        await asyncio.to_thread(stop_and_remove)
        obj = self.store.objects["pods"].get((ns, name))
        if obj is not None:
            await self.store.put("pods", obj, "DELETED")

    def container(self, ns: str, name: str) -> Any:
        """The pod's container (docker.errors.NotFound before it runs or once removed)."""
        return self.docker.containers.get(container_name(ns, name))

    def remove_all(self) -> None:
        """Remove every container this kubelet made, and the Secrets' folders."""
        for container in self.docker.containers.list(
            all=True, filters={"label": f"{FAKE_LABEL}-cluster={self.instance}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ the container

    def _run_container(
        self, ns: str, name: str, pod: dict[str, Any], ip: str, security: dict[str, Any]
    ) -> Any:
        spec = pod["spec"]
        c = spec["containers"][0]
        sec = spec.get("securityContext") or {}
        uid, gid = security["uid"], security["gid"]
        fs_group = sec.get("fsGroup")
        kwargs = _limits(c)
        binds: dict[str, dict[str, str]] = {}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            volume = volumes[m["name"]]
            if "secret" in volume:
                folder = self._secret_folder(ns, volume["secret"], fs_group)
                binds[folder] = {"bind": m["mountPath"], "mode": "ro"}
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]
                folder = self.claims.mount_source(
                    ns, claim["claimName"], m.get("subPath"), fs_group, m["name"]
                )
                read_only = m.get("readOnly") or claim.get("readOnly")
                binds[folder] = {"bind": m["mountPath"], "mode": "ro" if read_only else "rw"}
            elif volume.get("emptyDir", {}).get("medium") == "Memory" and m["mountPath"] == (
                "/dev/shm"
            ):
                kwargs["shm_size"] = int(parse_quantity(volume["emptyDir"]["sizeLimit"]))
            elif "emptyDir" in volume:  # a real emptyDir is world-writable (0777); the
                # engine ignores the mode over some image folders: the pod's user owns it
                group = fs_group if fs_group is not None else gid
                owner = f"uid={uid if isinstance(uid, int) else 0},"
                owner += f"gid={group if isinstance(group, int) else 0}"
                kwargs.setdefault("tmpfs", {})[m["mountPath"]] = (
                    f"rw,nosuid,nodev,{owner},mode=1777"
                )
        environment = {e["name"]: e.get("value", "") for e in c.get("env") or []}
        if self.identity is not None:
            mounts, env = self.identity.for_pod(pod)
            binds.update(mounts)
            environment = {**env, **environment}
        if spec.get("hostNetwork") is True:
            kwargs["network_mode"] = "host"
        csec = c.get("securityContext") or {}
        if csec.get("readOnlyRootFilesystem"):
            kwargs["read_only"] = True
        capabilities = csec.get("capabilities") or {}
        options = ["no-new-privileges"] if csec.get("allowPrivilegeEscalation") is False else []
        if security["seccomp"] == "Unconfined":
            options.append("seccomp=unconfined")
        return self.docker.containers.run(
            c["image"],
            entrypoint=c.get("command"),
            command=c.get("args"),
            name=container_name(ns, name),
            hostname=name[:63],
            environment=environment,
            user=f"{uid}:{gid}" if gid is not None else str(uid),
            group_add=[str(fs_group)] if fs_group is not None else None,
            working_dir=c.get("workingDir"),
            ports=None
            if spec.get("hostNetwork") is True
            else {
                f"{p['containerPort']}/tcp": (ip, p["containerPort"]) for p in c.get("ports") or []
            },
            volumes=binds,
            cap_drop=capabilities.get("drop") or None,
            cap_add=capabilities.get("add") or None,
            privileged=csec.get("privileged") is True,
            security_opt=options or None,
            labels={
                FAKE_LABEL: pod["metadata"]["uid"],
                f"{FAKE_LABEL}-cluster": self.instance,
            },
            init=True,
            detach=True,
            **kwargs,
        )

    def _secret_folder(self, ns: str, volume: dict[str, Any], fs_group: int | None) -> str:
        """A Secret volume's files written to a host folder, as the kubelet projects them."""
        secret = self.store.objects["secrets"][(ns, volume["secretName"])]
        folder = tempfile.mkdtemp(prefix="fake-kube-secret-")
        self._dirs.append(folder)
        mode = volume.get("defaultMode", 0o644)
        items = volume.get("items") or [{"key": k, "path": k} for k in secret.get("data", {})]
        for item in items:
            path = os.path.join(folder, item["path"])
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "wb") as f:
                f.write(base64.b64decode(secret["data"][item["key"]]))
            os.chown(path, 0, fs_group if fs_group is not None else 0)
            os.chmod(path, mode)
        os.chmod(folder, 0o755)
        return folder


def effective_security(pod: dict[str, Any], c: dict[str, Any], image_user: str) -> dict | str:
    """{uid, gid, seccomp} the container runs with (container settings over the pod's over
    the image's user), or the kubelet's refusal when runAsNonRoot cannot hold."""
    pod_sc, c_sc = pod["spec"].get("securityContext") or {}, c.get("securityContext") or {}

    def pick(field: str) -> Any:
        return c_sc.get(field, pod_sc.get(field))

    user, _, group = image_user.partition(":")
    uid = pick("runAsUser")
    gid = pick("runAsGroup")
    where = f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
    where += f'({pod["metadata"]["uid"]})", container: {c["name"]})'
    if uid is None:
        if user and not user.isdigit():
            if pick("runAsNonRoot"):
                return (
                    f"container has runAsNonRoot and image has non-numeric user ({user}), "
                    f"cannot verify user is non-root {where}"
                )
            uid = user
        else:
            uid = int(user or 0)
        if gid is None and group:
            gid = int(group) if group.isdigit() else group
    if pick("runAsNonRoot") and uid in (0, "root"):
        if pick("runAsUser") is not None:
            return f"container's runAsUser breaks non-root policy {where}"
        return f"container has runAsNonRoot and image will run as root {where}"
    seccomp = (pick("seccompProfile") or {}).get("type", "RuntimeDefault")
    return {"uid": uid, "gid": gid, "seccomp": seccomp}


def _limits(c: dict[str, Any]) -> dict[str, Any]:
    """The container's limits as docker run arguments."""
    limits = (c.get("resources") or {}).get("limits") or {}
    kwargs: dict[str, Any] = {}
    if "memory" in limits:
        kwargs["mem_limit"] = kwargs["memswap_limit"] = int(parse_quantity(limits["memory"]))
    if "cpu" in limits:
        kwargs["nano_cpus"] = int(parse_quantity(limits["cpu"]) * 10**9)
    return kwargs


def _wait(container: Any) -> int:
    try:
        return int(container.wait().get("StatusCode", -1))
    except (docker.errors.APIError, OSError):
        return -1
