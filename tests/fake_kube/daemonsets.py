"""DaemonSets (apps/v1) and a controller that runs them as the real one does (the
kube-controller-manager's ``daemon`` controller, v1.31):

- at create, the API server's defaults (``updateStrategy`` RollingUpdate, maxUnavailable 1,
  ``revisionHistoryLimit`` 10, the template's ``restartPolicy`` Always, ...), ``generation``
  1 and a zero status, and its validation in its words (a selector that does not match the
  template's labels, a ``restartPolicy`` other than Always, no containers: 422);
- one pod per node that should run it: the template's ``nodeSelector`` and required node
  affinity match the node's labels, and its tolerations (with those the controller adds:
  ``not-ready``, ``unreachable``, the pressure taints, ``unschedulable``) tolerate the
  node's ``NoSchedule`` / ``NoExecute`` taints. Each pod is named ``<set>-xxxxx``, labelled
  with the template's labels plus ``controller-revision-hash`` and
  ``pod-template-generation``, owned by the set (``controller: true``, ``blockOwnerDeletion``)
  and pinned to its node by a ``metadata.name`` node-affinity field term; it is admitted as
  an API create would be (a refusal is a ``FailedCreate`` Event on the set) and run by the
  kubelet. A pod on a node that should not run it is deleted; a deleted pod is replaced;
- the status the controller writes: ``desiredNumberScheduled``, ``currentNumberScheduled``,
  ``numberMisscheduled``, ``numberReady``, ``updatedNumberScheduled``, ``numberAvailable``
  (``minReadySeconds`` 0), ``numberUnavailable`` (left out at 0), ``observedGeneration``.

Deleting a set deletes its pods through the garbage collector (:mod:`.garbage`), as
``propagationPolicy: Background`` does. Not modelled: rolling updates of a changed
template, ControllerRevisions, failed-pod backoff, ``minReadySeconds``, surge.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from . import events
from .admission import admit_pod
from .nodes import HOSTNAME, Nodes, pinned_node, taints_allow
from .store import Store, now

KIND = "daemonsets"
API_VERSION = "apps/v1"
COMPONENT = "daemonset-controller"
#: what the controller adds to every daemon pod (``util.AddOrUpdateDaemonPodTolerations``)
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
Delete = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


def _go_map(labels: dict[str, str]) -> str:
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return "map[string]string{" + inner + "}"


def refusal(name: str, obj: dict[str, Any]) -> str | None:
    """The 422 message for a DaemonSet the API server would refuse, else None."""
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    pod_spec = template.get("spec") or {}
    problems = []
    selector = spec.get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.append("spec.selector: Required value")
    elif any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        problems.append(
            f"spec.template.metadata.labels: Invalid value: {_go_map(labels)}: `selector` "
            "does not match template `labels`"
        )
    restart = pod_spec.get("restartPolicy", "Always")
    if restart != "Always":
        problems.append(
            f'spec.template.spec.restartPolicy: Unsupported value: "{restart}": supported '
            'values: "Always"'
        )
    if not pod_spec.get("containers"):
        problems.append("spec.template.spec.containers: Required value")
    if not problems:
        return None
    joined = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
    return f'DaemonSet.apps "{name}" is invalid: {joined}'


def admit(name: str, obj: dict[str, Any]) -> str | None:
    """The 422 message for a DaemonSet the API server refuses; else None, with its defaults
    set (in place), generation 1 and a zero status."""
    if refused := refusal(name, obj):
        return refused
    spec = obj["spec"]
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", 1)
        strategy["rollingUpdate"].setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    pod_spec = spec["template"]["spec"]
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("securityContext", {})
    for c in pod_spec["containers"]:
        latest = ":" not in c["image"].rsplit("/", 1)[-1] or c["image"].endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
    obj["metadata"]["generation"] = 1
    obj["status"] = {
        "currentNumberScheduled": 0,
        "desiredNumberScheduled": 0,
        "numberMisscheduled": 0,
        "numberReady": 0,
    }
    return None


def _expression_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def should_run(pod_spec: dict[str, Any], node: dict[str, str], taints: list) -> bool:
    """Whether a node should run the daemon pod (``nodeShouldRunDaemonPod``): node selector,
    required node affinity (any term, all its expressions), taints."""
    if any(node.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(
        all(_expression_holds(e, node) for e in t.get("matchExpressions") or [])
        and all(_expression_holds({**f, "key": HOSTNAME}, node) for f in t.get("matchFields") or [])
        for t in terms
    ):
        return False
    return taints_allow(taints, [*(pod_spec.get("tolerations") or []), *DAEMON_TOLERATIONS])


def template_hash(ds: dict[str, Any]) -> str:
    """A stable hash of the template (the real one names a ControllerRevision)."""
    text = json.dumps(ds["spec"]["template"], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def daemon_pod(ds: dict[str, Any], node: str) -> dict[str, Any]:
    """The pod the controller creates for ``node`` (before admission)."""
    meta, template = ds["metadata"], copy.deepcopy(ds["spec"]["template"])
    suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels["controller-revision-hash"] = template_hash(ds)
    labels["pod-template-generation"] = str(meta.get("generation", 1))
    spec = template["spec"]
    affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        ]
    }
    tolerations = spec.setdefault("tolerations", [])
    tolerations += [t for t in DAEMON_TOLERATIONS if t not in tolerations]
    owner = {
        "apiVersion": API_VERSION,
        "kind": "DaemonSet",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **{k: v for k, v in (template.get("metadata") or {}).items() if k != "labels"},
            "name": f"{meta['name']}-{suffix}",
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now(),
        },
        "spec": spec,
    }


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class DaemonSetController:
    """Keeps each DaemonSet's pods and status in step with the nodes (in the background,
    after every change to a set, one of its pods, or the nodes)."""

    def __init__(self, store: Store, kubelet: Any, nodes: Nodes, delete: Delete):
        self.store, self.kubelet, self.nodes, self.delete = store, kubelet, nodes, delete
        self._task: asyncio.Task[None] | None = None
        self._again = False
        nodes.on_add.append(self.schedule)

    def changed(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """A store hook: reconcile after a change to a set or to a pod a set owns."""
        if kind == KIND or (
            kind == "pods"
            and any(
                r.get("kind") == "DaemonSet" for r in obj["metadata"].get("ownerReferences") or []
            )
        ):
            self.schedule()

    def schedule(self) -> None:
        """Reconcile soon (once more if a pass runs); on the cluster's loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a node added before the cluster started
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            for (ns, name), ds in list(self.store.objects[KIND].items()):
                if not ds["metadata"].get("deletionTimestamp"):
                    await self.reconcile(ns, name)

    def _pods_of(self, ds: dict[str, Any]) -> list[dict[str, Any]]:
        uid = ds["metadata"]["uid"]
        return [
            p
            for p in self.store.pods(ds["metadata"]["namespace"])
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            and not p["metadata"].get("deletionTimestamp")
        ]

    async def reconcile(self, ns: str, name: str) -> None:
        """Create the missing daemon pods, delete the misplaced ones, write the status."""
        ds = self.store.objects[KIND].get((ns, name))
        if ds is None:
            return
        pod_spec = ds["spec"]["template"]["spec"]
        wanted = [
            n[HOSTNAME]
            for n in self.nodes.labels
            if should_run(pod_spec, n, self.nodes.taints.get(n[HOSTNAME], []))
        ]
        on_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self._pods_of(ds):
            on_node.setdefault(pinned_node(pod) or "", []).append(pod)
        for node, pods in on_node.items():
            if node not in wanted:
                for pod in pods:
                    await self.delete("pods", ns, pod["metadata"]["name"], pod)
        for node in wanted:
            if node not in on_node:
                await self._create(ds, node)
        await self._write_status(ns, name, wanted)

    async def _create(self, ds: dict[str, Any], node: str) -> None:
        ns = ds["metadata"]["namespace"]
        pod = daemon_pod(ds, node)
        refused = admit_pod(self.store, ns, pod) if ns in self.store.namespaces else "no namespace"
        if refused:
            message = f'Error creating: pods "{pod["metadata"]["name"]}" is forbidden: {refused}'
            await events.record(self.store, ds, "FailedCreate", message, COMPONENT, "Warning")
            return
        pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        await self.store.put("pods", pod, "ADDED")
        message = f"Created pod: {pod['metadata']['name']}"
        await events.record(self.store, ds, "SuccessfulCreate", message, COMPONENT)
        self.kubelet.spawn(self.kubelet.run_pod(ns, pod["metadata"]["name"]))

    async def _write_status(self, ns: str, name: str, wanted: list[str]) -> None:
        ds = self.store.objects[KIND].get((ns, name))
        if ds is None:
            return
        pods = self._pods_of(ds)
        nodes_with = {pinned_node(p) for p in pods}
        ready_on = {pinned_node(p) for p in pods if _ready(p)}
        desired = len(wanted)
        current = len([n for n in wanted if n in nodes_with])
        ready = len([n for n in wanted if n in ready_on])
        status: dict[str, Any] = {
            "currentNumberScheduled": current,
            "desiredNumberScheduled": desired,
            "numberMisscheduled": len([n for n in nodes_with if n not in wanted]),
            "numberReady": ready,
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        if current:
            status["updatedNumberScheduled"] = current
        if ready:
            status["numberAvailable"] = ready
        if desired - ready:
            status["numberUnavailable"] = desired - ready
        if ds.get("status") == status:
            return
        ds = copy.deepcopy(ds)
        ds["status"] = status
        await self.store.put(KIND, ds, "MODIFIED")
