"""Kernel starts on an autoscaling cluster: the fake cluster (tests/fake_kube) with its fake
cluster-autoscaler, the backend reading the pod's Events as it would on GKE, EKS or AKS.

A kernel whose config's node selector matches no node waits while the autoscaler adds one
(and says so in ``GET kernels``), fails at once on a fixed cluster with the scheduler's
words, and fails at once with the autoscaler's words when no node group fits. Checked
against the fake only (the README's Kubernetes section says so); the Event formats are the
real scheduler's and cluster-autoscaler's.
"""

from __future__ import annotations

import asyncio
import json
import threading

import kubernetes.client
import kubernetes.config
import kubernetes_validate
import pytest
import yaml
from identity_provider import HeaderIdentityProvider
from jupyter_client import AsyncKernelManager
from kernels import config_in_use
from kubernetes.client.rest import ApiException

from jupyter_dss_containers.backends.kubernetes.scheduling import NODE_WAIT, judge
from jupyter_dss_containers.config import KubernetesSettings
from jupyter_dss_containers.provisioner import KernelStartError

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = pytest.mark.docker

USER = "alice"
SCHEDULER = (
    "Unschedulable: 0/1 nodes are available: 1 node(s) didn't match Pod's node "
    "affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful "
    "for scheduling."
)


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-as", docker_client, 9)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def autoscaler(fake):
    """The fake's autoscaler, off again after the test, the nodes it added gone."""
    yield fake.autoscaler
    fake.autoscaler.turn_off()
    del fake.kubelet.nodes[1:]


@pytest.fixture(scope="module")
def gpu_config(fake, workspace, base_image):
    """The config file's path; ``k8s-gpu``: pods that need a ``pool: gpu`` node, which
    the cluster does not have."""
    from fake_kube.server import write_kubeconfig

    kubeconfig = workspace / "kubeconfig-autoscale"
    write_kubeconfig(str(kubeconfig), {"fake-as": fake}, "fake-as")
    data = {
        "groups": {USER: ["analysts"]},
        "execution_configs": {
            "k8s-gpu": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": {
                    "kubeconfig": str(kubeconfig),
                    "context": "fake-as",
                    "namespace": "default",
                    "image_pull_policy": "Never",
                    "node_selector": {"pool": "gpu"},
                },
                "permissions": {"groups": ["*"]},
                "workspace": {"mount": "none"},
            }
        },
    }
    path = workspace / "kube-autoscale.yaml"
    with config_in_use(path, yaml.safe_dump(data)):
        yield path


def pod_events(fake, kernel_id: str) -> list[dict]:
    """The Events about the kernel's pod (the pod found by its kernel id label)."""
    from fake_kube.events import about

    (pod,) = [
        p
        for p in fake.pods("default")
        if p["metadata"]["labels"].get("dss-containers.jupyter.org/kernel-id") == kernel_id
    ]
    return about(fake.store, "default", pod["metadata"]["name"])


# --------------------------------------------------------------------------- on the server


@pytest.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def jp_server_config(gpu_config, monkeypatch):
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(gpu_config))
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_dss_containers": True},
            "kernel_spec_manager_class": (
                "jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager"
            ),
            "identity_provider_class": HeaderIdentityProvider,
        },
        # JupyterLab's pending kernels: POST /api/kernels answers while the kernel starts
        "AsyncMultiKernelManager": {"use_pending_kernels": True},
        "DSSContainersExtension": {"config_file": str(gpu_config), "reap_on_start": False},
        "JobService": {"store_dir": str(gpu_config.parent / "jobs-autoscale")},
    }


async def kernel_row(jp_fetch, kernel_id: str) -> dict | None:
    response = await jp_fetch(
        "dss-containers", "api", "kernels", headers={"X-Test-User": USER}, method="GET"
    )
    rows = [k for k in json.loads(response.body)["kernels"] if k["id"] == kernel_id]
    return rows[0] if rows else None


async def test_kernel_waits_for_the_node_the_autoscaler_adds_and_says_so(
    jp_fetch, jp_serverapp, fake, autoscaler
):
    """Guards: an Unschedulable pod with TriggeredScaleUp is not a failed start (it was,
    before), GET kernels shows the wait in the autoscaler's words, and the kernel is
    ready once the node joined."""
    from fake_kube.autoscaler import NodeGroup

    release = threading.Event()  # the node joins only once the wait has been seen
    autoscaler.turn_on(NodeGroup("pool-gpu", {"pool": "gpu"}, max_size=3), delay=0, release=release)
    response = await jp_fetch(
        "api",
        "kernels",
        method="POST",
        body=json.dumps({"name": "dss-k8s-gpu"}),
        headers={"X-Test-User": USER},
    )
    kernel_id = json.loads(response.body)["id"]
    try:
        row = None
        for _ in range(600):
            row = await kernel_row(jp_fetch, kernel_id)
            if row is not None and (row["phase"] == "waiting-for-node" or row["exit_reason"]):
                break
            await asyncio.sleep(0.1)
        assert row is not None and row["phase"] == "waiting-for-node", row
        assert row["state"] == "starting"
        assert row["message"] == (
            "waiting for a new node (TriggeredScaleUp: pod triggered scale-up: "
            "[{pool-gpu 0->1 (max: 3)}])"
        )
        release.set()
        manager = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        await asyncio.wait_for(manager.ready, 120)  # its first kernel_info reply
        row = await kernel_row(jp_fetch, kernel_id)
        assert row["state"] == "running" and row["phase"] == "ready", row
        reasons = [(e["reason"], e["source"]["component"]) for e in pod_events(fake, kernel_id)]
        assert reasons == [
            ("FailedScheduling", "default-scheduler"),
            ("TriggeredScaleUp", "cluster-autoscaler"),
            ("Scheduled", "default-scheduler"),
        ]
        (pod,) = [
            p
            for p in fake.pods("default")
            if p["metadata"]["name"] == row["workload_id"].split("/")[1]
        ]
        assert pod["spec"]["nodeName"] == "pool-gpu-1"
    finally:
        release.set()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", headers={"X-Test-User": USER})


# --------------------------------------------------------------------------- plain starts


async def test_without_an_autoscaler_the_start_fails_with_the_schedulers_words(
    gpu_config, fake, autoscaler
):
    """Guards the fail-fast on a fixed cluster: no autoscaler event, no waiting (a start
    that waited here would hang to its timeout and say only that)."""
    km = AsyncKernelManager(kernel_name="dss-k8s-gpu")
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel()
    assert SCHEDULER in str(info.value), info.value
    assert "not running after" not in str(info.value)


@pytest.mark.parametrize(
    "group, expected",
    [
        (
            ("pool-cpu", {"pool": "cpu"}, 3),
            "NotTriggerScaleUp: pod didn't trigger scale-up: 1 node(s) didn't match Pod's "
            "node affinity/selector",
        ),
        (
            ("pool-gpu", {"pool": "gpu"}, 0),
            "NotTriggerScaleUp: pod didn't trigger scale-up: 1 max node group size reached",
        ),
    ],
)
async def test_not_trigger_scale_up_fails_with_the_autoscalers_words(
    gpu_config, fake, autoscaler, group, expected
):
    """Guards: NotTriggerScaleUp is a refusal (no node will come), quoted to the user with
    the scheduler's message."""
    from fake_kube.autoscaler import NodeGroup

    name, labels, size = group
    autoscaler.turn_on(NodeGroup(name, labels, max_size=size))
    km = AsyncKernelManager(kernel_name="dss-k8s-gpu")
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel()
    assert expected in str(info.value), info.value
    assert SCHEDULER in str(info.value)


# --------------------------------------------------------------------------- the fake's Events


async def test_events_list_by_field_selector_as_the_apiserver_allows(fake, workspace):
    """Guards the fake's Events: selected by involvedObject.name, reason and source as the
    real apiserver allows, aggregated (count) as the recorder does, a field it does not
    allow answered 400; and each Event valid against the 1.31 schema."""
    from fake_kube import events
    from fake_kube.server import write_kubeconfig

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ev-pod", "namespace": "ev-ns", "uid": "u-1"},
    }
    other = {**pod, "metadata": {**pod["metadata"], "name": "ev-other", "uid": "u-2"}}
    fake.call(events.record, fake.store, pod, "FailedScheduling", "no", "default-scheduler")
    fake.call(events.record, fake.store, pod, "FailedScheduling", "no", "default-scheduler")
    fake.call(events.record, fake.store, other, "TriggeredScaleUp", "up", "cluster-autoscaler")
    path = str(workspace / "kubeconfig-events")
    write_kubeconfig(path, {"fake-as": fake}, "fake-as")
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(path))
    found = core.list_namespaced_event("ev-ns", field_selector="involvedObject.name=ev-pod")
    (event,) = found.items
    assert (event.reason, event.count, event.source.component) == (
        "FailedScheduling",
        2,
        "default-scheduler",
    )
    assert event.involved_object.uid == "u-1" and event.type == "Normal"
    by_source = core.list_namespaced_event("ev-ns", field_selector="source=cluster-autoscaler")
    assert [e.involved_object.name for e in by_source.items] == ["ev-other"]
    with pytest.raises(ApiException) as info:
        core.list_namespaced_event("ev-ns", field_selector="note=x")
    assert info.value.status == 400 and "field label not supported: note" in info.value.body
    # these and those the scheduler and autoscaler wrote in the tests above
    stored_events = [
        e for ns in ("ev-ns", "default") for _, e in fake.store.in_namespace("events", ns)
    ]
    for stored in stored_events:
        manifest = {k: v for k, v in stored.items() if v is not None}
        kubernetes_validate.validate(manifest, "1.31", strict=True)


# --------------------------------------------------------------------------- pure


def _event(reason: str, message: str, component: str, uid: str, rv: int):
    return kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name=f"e{rv}", resource_version=str(rv)),
        involved_object=kubernetes.client.V1ObjectReference(uid=uid),
        reason=reason,
        message=message,
        source=kubernetes.client.V1EventSource(component=component),
    )


def test_judge_reads_the_latest_autoscaler_verdict_of_this_pod():
    """Guards the verdicts: Karpenter's Nominated waits too; the latest verdict wins (a
    scale-up that failed); an earlier pod of the same name does not count."""
    failed = _event("FailedScheduling", "0/1 nodes", "default-scheduler", "me", 1)
    nominated = _event(
        "Nominated", "Pod should schedule on: nodeclaim/default-x", "karpenter", "me", 2
    )
    verdict = judge("Unschedulable: 0/1", [failed, nominated], "me")
    assert verdict.action == "wait"
    assert verdict.message == (
        "waiting for a new node (Nominated: Pod should schedule on: nodeclaim/default-x)"
    )
    up = _event(
        "TriggeredScaleUp",
        "pod triggered scale-up: [{a 0->1 (max: 1)}]",
        "cluster-autoscaler",
        "me",
        3,
    )
    down = _event(
        "NotTriggerScaleUp",
        "pod didn't trigger scale-up: 1 in backoff after failed scale-up",
        "cluster-autoscaler",
        "me",
        4,
    )
    assert judge("U", [down, up], "me").action == "fail"
    assert judge("U", [up, down], "me").message.endswith("1 in backoff after failed scale-up")
    older = _event(
        "TriggeredScaleUp",
        "pod triggered scale-up: [{a 0->1 (max: 1)}]",
        "cluster-autoscaler",
        "old",
        5,
    )
    assert judge("U", [failed, older], "me").action == "fail"


def test_start_timeout_setting():
    """Guards the typed setting: absent means the caller's timeout (and NODE_WAIT for a
    node that is coming); set, it is a number of seconds."""
    from jupyter_dss_containers.config import ConfigError
    from jupyter_dss_containers.config.parse import parse_config

    assert KubernetesSettings.from_dict({}).start_timeout is None
    assert NODE_WAIT == 600

    def document(value):
        k8s = {"namespace": "default", "start_timeout": value}
        config = {"backend": "kubernetes", "image": "default", "kubernetes": k8s}
        return {"execution_configs": {"k": config}}

    parsed = parse_config(document(900), "test.yaml")
    assert parsed.execution_configs["k"].kubernetes.start_timeout == 900
    for bad in (0, -5, "10m"):
        with pytest.raises(ConfigError, match="start_timeout"):
            parse_config(document(bad), "test.yaml")
