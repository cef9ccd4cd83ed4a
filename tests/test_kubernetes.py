"""The Kubernetes backend through plain jupyter_client, against fake clusters (or a real one).

By default two fake API servers (tests/fake_kube) run pods on the local Docker engine; with
``DSS_TEST_KUBECONFIG`` set, the same tests run against that kubeconfig's current context
(and ``DSS_TEST_KUBE_CONTEXT_B``, if set, as the second cluster). The backend does not
know which it talks to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from conftest import need
from job_images import job_image
from jupyter_client import AsyncKernelManager
from kernels import (
    CGROUP_PROBE,
    READ_ONLY_PROBE,
    config_in_use,
    kernel_owner_script,
    run,
    start,
    stop,
)

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends import BackendError, backend_for
from jupyter_dss_containers.backends.base import WorkloadSpec
from jupyter_dss_containers.backends.kubernetes import POD_LABEL, label_value, on_registry
from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.jobs import JobError, JobRequest, JobService, python_result
from jupyter_dss_containers.permissions import process_identity
from jupyter_dss_containers.provisioner import KernelStartError, reattach

pytestmark = pytest.mark.docker

REAL = os.environ.get("DSS_TEST_KUBECONFIG")


class Clusters:
    """Where the tests run: kubeconfig, the two contexts, and the fakes (None if real)."""

    def __init__(self, kubeconfig: str, a: str, b: str | None, fakes: dict | None):
        self.kubeconfig, self.a, self.b, self.fakes = kubeconfig, a, b, fakes

    def core(self, context: str) -> kubernetes.client.CoreV1Api:
        client = kubernetes.config.new_client_from_config(self.kubeconfig, context=context)
        return kubernetes.client.CoreV1Api(client)

    def ours(self, context: str, namespace: str, **labels: str) -> tuple[list, list]:
        """Our pods and secrets still in a namespace, with the given label values."""
        selector = ",".join(
            [f"{ownership.MANAGED}=true"]
            + [f"{ownership.PREFIX}{k.replace('_', '-')}={v}" for k, v in labels.items()]
        )
        core = self.core(context)  # a namespace not there lists empty, as on a real cluster
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        secrets = core.list_namespaced_secret(namespace, label_selector=selector).items
        return pods, secrets

    def policies(self, context: str, namespace: str, **labels: str) -> list:
        """Our NetworkPolicies in a namespace, with the given label values."""
        selector = ",".join(
            [f"{ownership.MANAGED}=true"]
            + [f"{ownership.PREFIX}{k.replace('_', '-')}={v}" for k, v in labels.items()]
        )
        client = kubernetes.config.new_client_from_config(self.kubeconfig, context=context)
        networking = kubernetes.client.NetworkingV1Api(client)
        return networking.list_namespaced_network_policy(namespace, label_selector=selector).items


@pytest.fixture(scope="module")
def clusters(docker_client, workspace):
    if REAL:
        _, current = kubernetes.config.list_kube_config_contexts(REAL)
        yield Clusters(REAL, current["name"], os.environ.get("DSS_TEST_KUBE_CONTEXT_B"), None)
        return
    from fake_kube.server import FakeCluster, write_kubeconfig

    fakes = {"fake-a": FakeCluster("fake-a", docker_client, 1)}
    fakes["fake-b"] = FakeCluster("fake-b", docker_client, 2)
    for fake in fakes.values():
        fake.start()
    path = str(workspace / "kubeconfig")
    write_kubeconfig(path, fakes, "fake-a")
    yield Clusters(path, "fake-a", "fake-b", fakes)
    for fake in fakes.values():
        fake.stop()


@pytest.fixture(scope="module")
def kube_config(clusters, workspace, base_image):
    """The test config file with its kernel specs installed."""
    policy = "IfNotPresent" if REAL else "Never"
    common = {
        "kubeconfig": clusters.kubeconfig,
        "context": clusters.a,
        "image_pull_policy": policy,
    }
    small = {
        **common,
        "namespace": "dss-${user}",
        "create_namespace": True,
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "shm_size": "64Mi",
        "labels": {"team": "data"},
    }
    configs = {
        "k8s-small": small,
        "k8s-b": {**common, "context": clusters.b or clusters.a, "namespace": "default"},
        "k8s-quota": {
            **small,
            "namespace": "dss-quota-${user}",
            "namespace_quota": {"limits.memory": "4Gi"},
            "namespace_limits": {"max": {"memory": "16Gi"}},
            "resources": {"limits": {"memory": "8Gi"}},
        },
        "k8s-gpu-node": {**small, "node_selector": {"accelerator": "nvidia-a100"}},
        "k8s-missing": small,
        "k8s-read-only": small,
        # Pod Security Admission: a namespace the admin labelled restricted
        "k8s-restricted": {**common, "namespace": RESTRICTED_NS},
        "k8s-restricted-caps": {
            **common,
            "namespace": RESTRICTED_NS,
            "pod_patch": {
                "spec": {
                    "containers": [
                        {
                            "name": "kernel",
                            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                        }
                    ]
                }
            },
        },
    }
    restricted_namespace(clusters)
    data = {
        "execution_configs": {
            name: {
                "backend": "kubernetes",
                "image": "dss-containers/no-such-image:1" if name == "k8s-missing" else "default",
                "kubernetes": k,
                "permissions": {"groups": ["*"]},
                # no workspace volume here (tests/test_kube_workspace.py has them): without
                # this, the notice that the files are not visible is the first cell's output
                "workspace": {"mount": "none"},
                **({"read_only_root": True} if name == "k8s-read-only" else {}),
            }
            for name, k in configs.items()
        }
    }
    with config_in_use(workspace / "kube-kernels.yaml", yaml.safe_dump(data)) as config_file:
        yield config_file


RESTRICTED_NS = "dss-restricted"
PSA_RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def restricted_namespace(clusters) -> None:
    """The namespace the k8s-restricted configs use, labelled to enforce Pod Security
    ``restricted`` (made once; on a real cluster too)."""
    core = clusters.core(clusters.a)
    try:
        core.create_namespace({"metadata": {"name": RESTRICTED_NS, "labels": PSA_RESTRICTED}})
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespace(RESTRICTED_NS, {"metadata": {"labels": PSA_RESTRICTED}})


def namespace_of(config_file, name: str) -> str:
    return backend_for(config_file.get(name)).namespace


async def gone(clusters, context, namespace, timeout=10, **labels) -> bool:
    """Pods, Secrets and NetworkPolicies with these labels all gone within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if clusters.ours(context, namespace, **labels) == ([], []) and not clusters.policies(
            context, namespace, **labels
        ):
            return True
        await asyncio.sleep(0.2)
    return False


def assert_key_only_in_the_secret(clusters, ns: str, name: str, km) -> None:
    """The kernel's HMAC key (and CurveZMQ secret key) is in its Secret and nowhere in the Pod
    as the cluster stores it: not in env values, args or annotations. Read raw from the API
    (and from the fake's own store), so the client's models hide nothing. Guards against the
    key put into the pod's environment (``benchmarks/breakages.py``)."""
    core = clusters.core(clusters.a)
    secrets = [km.session.key.decode()] + (
        [km.curve_secretkey.decode()] if km.curve_secretkey else []
    )
    raw = json.loads(core.read_namespaced_pod(name, ns, _preload_content=False).data)
    stored = [raw]
    if clusters.fakes:
        stored.append(clusters.fakes["fake-a"].objects["pods"][(ns, name)])
    for pod in stored:
        env = [e.get("value") or "" for c in pod["spec"]["containers"] for e in c.get("env", [])]
        for secret in secrets:
            assert not any(secret in value for value in env), "a private key in the pod's env"
            assert secret not in json.dumps(pod), "a private key in the pod"
    secret = json.loads(core.read_namespaced_secret(name, ns, _preload_content=False).data)
    files = b"".join(base64.b64decode(v) for v in secret["data"].values()).decode()
    assert all(s in files for s in secrets), "the Secret does not hold the keys"


async def test_kernel_runs_in_a_pod_with_the_config_limits(kube_config, clusters):
    ns = namespace_of(kube_config, "k8s-small")
    km, kc = await start("dss-k8s-small")
    assert km.kernel_spec.interrupt_mode == "message"
    workload_id = km.provisioner.workload_id
    assert workload_id.startswith(f"{ns}/")
    pods, secrets = clusters.ours(clusters.a, ns, kernel_id=km.kernel_id)
    assert len(pods) == 1 and len(secrets) == 1
    pod = pods[0]
    assert pod.metadata.labels["team"] == "data"
    assert pod.spec.containers[0].resources.limits == {"cpu": "500m", "memory": "256Mi"}
    assert secrets[0].metadata.owner_references[0].uid == pod.metadata.uid
    assert_key_only_in_the_secret(clusters, ns, pod.metadata.name, km)
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.run_as_user not in (None, 0)
    hardened = pod.spec.containers[0].security_context
    assert hardened.allow_privilege_escalation is False
    assert hardened.capabilities.drop == ["ALL"]
    assert pod.spec.automount_service_account_token is False
    assert not pod.spec.host_network and not any(v.host_path for v in pod.spec.volumes or [])
    assert km.provisioner.connection_info["ip"] == pod.status.pod_ip
    # TCP, so CurveZMQ on by default (the kernel reads a private copy of its Secret's file)
    assert km.transport == "tcp" and km.curve_publickey and km.curve_secretkey
    _, printed = await run(kc, CGROUP_PROBE)
    uid, memory, quota = printed.split()
    assert uid != "0"
    assert int(memory) == 256 * 1024**2
    assert int(quota) == 50000  # 500m of a 100 ms period
    # live use, from the metrics API (metrics-server; the fake serves the engine's stats)
    stats = await km.provisioner.backend.stats(workload_id)
    assert stats.memory_limit == 256 * 1024**2
    assert stats.memory_bytes is not None and 10 * 1024**2 < stats.memory_bytes < 256 * 1024**2
    assert stats.cpu_percent is not None and 0 <= stats.cpu_percent <= 100
    # interrupt by message (Kubernetes has no signal API)
    running = asyncio.ensure_future(run(kc, "import time; time.sleep(60)", timeout=60))
    await asyncio.sleep(1.0)
    await km.interrupt_kernel()
    reply, _ = await asyncio.wait_for(running, timeout=5)
    assert reply["ename"] == "KeyboardInterrupt"
    await stop(km, kc)
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)


async def test_two_contexts_reach_two_clusters(kube_config, clusters):
    if clusters.b is None:
        need("set DSS_TEST_KUBE_CONTEXT_B to name a second cluster")
    (km_a, kc_a), (km_b, kc_b) = await asyncio.gather(start("dss-k8s-small"), start("dss-k8s-b"))
    ns_a = namespace_of(kube_config, "k8s-small")
    assert len(clusters.ours(clusters.a, ns_a, kernel_id=km_a.kernel_id)[0]) == 1
    assert len(clusters.ours(clusters.b, "default", kernel_id=km_b.kernel_id)[0]) == 1
    assert clusters.ours(clusters.b, ns_a, kernel_id=km_a.kernel_id)[0] == []
    assert clusters.ours(clusters.a, "default", kernel_id=km_b.kernel_id)[0] == []
    assert (await run(kc_b, "print(6 * 7)"))[1].strip() == "42"
    await asyncio.gather(stop(km_a, kc_a), stop(km_b, kc_b))
    assert await gone(clusters, clusters.b, "default", kernel_id=km_b.kernel_id)


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        (
            "dss-k8s-quota",
            "is forbidden: exceeded quota: dss-containers, requested: limits.memory=8Gi, "
            "used: limits.memory=0, limited: limits.memory=4Gi",
        ),
        ("dss-k8s-gpu-node", "Unschedulable: 0/1 nodes are available"),
        ("dss-k8s-missing", "dss-containers/no-such-image:1"),
        (
            "dss-k8s-restricted-caps",
            'is forbidden: violates PodSecurity "restricted:latest": unrestricted capabilities '
            '(container "kernel" must not include "SYS_ADMIN" in '
            "securityContext.capabilities.add)",
        ),
    ],
)
async def test_cluster_refusals_reach_the_user_fast(kube_config, clusters, kernel, expected):
    km = AsyncKernelManager(kernel_name=kernel)
    began = time.monotonic()
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel()
    failed = time.monotonic()
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message
    if clusters.fakes:  # from the cluster's report (refusal, pod status) to the user
        prefix = f"dss-kernel-{km.kernel_id[:13]}"
        reported = clusters.fakes["fake-a"].reported
        (when,) = [t for name, t in reported.items() if name.startswith(prefix)]
        assert failed - when < 5, f"{failed - when:.1f}s after the cluster said: {message}"
        print(f"\n{failed - when:.2f}s after the cluster's report: {message}")
    assert failed - began < 30, f"took {failed - began:.1f}s: {message}"
    if kernel == "dss-k8s-missing" and not REAL:
        assert "ErrImageNeverPull" in message
    config = kernel.removeprefix("dss-")
    ns = namespace_of(kube_config, config)
    assert await gone(clusters, clusters.a, ns, timeout=5, kernel_id=km.kernel_id)
    if kernel == "dss-k8s-quota":  # the product made the namespace, with the admin's policy
        core = clusters.core(clusters.a)
        assert [q.metadata.name for q in core.list_namespaced_resource_quota(ns).items] == [
            "dss-containers"
        ]
        (limits,) = core.list_namespaced_limit_range(ns).items
        assert limits.spec.limits[0].max == {"memory": "16Gi"}


async def test_kernel_pod_passes_pod_security_restricted(kube_config, clusters):
    """Guards our pods' hardening against the cluster's own judge: in a namespace that
    enforces Pod Security ``restricted``, the kernel pod (non-root, no privilege escalation,
    all capabilities dropped, RuntimeDefault seccomp, Secret and emptyDir volumes only) is
    admitted and runs; a pod_patch adding a capability is refused (see the refusals test)."""
    labels = clusters.core(clusters.a).read_namespace(RESTRICTED_NS).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    km, kc = await start("dss-k8s-restricted")
    assert km.provisioner.workload_id.startswith(f"{RESTRICTED_NS}/")
    (pod,), _ = clusters.ours(clusters.a, RESTRICTED_NS, kernel_id=km.kernel_id)
    assert pod.status.phase == "Running"
    assert (await run(kc, "import os; print(os.getuid())"))[1].strip() == "1000"
    await stop(km, kc)
    assert await gone(clusters, clusters.a, RESTRICTED_NS, kernel_id=km.kernel_id)


async def test_a_pod_deleted_behind_our_back_takes_its_secret_and_policy(kube_config, clusters):
    """Guards the ownership hand-over (``_hand_to_pod``): the cluster's garbage collector
    removes a kernel's Secret and NetworkPolicy once its pod is deleted by someone else (an
    admin, an eviction), with no call from us; a wrong owner uid would have them collected
    at once, a missing one would leave them behind."""
    ns = namespace_of(kube_config, "k8s-small")
    km, kc = await start("dss-k8s-small")
    (pod,), (secret,) = clusters.ours(clusters.a, ns, kernel_id=km.kernel_id)
    (policy,) = clusters.policies(clusters.a, ns, kernel_id=km.kernel_id)
    for owned in (secret, policy):
        assert [(r.kind, r.name, r.uid) for r in owned.metadata.owner_references] == [
            ("Pod", pod.metadata.name, pod.metadata.uid)
        ]
    clusters.core(clusters.a).delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)
    kc.stop_channels()
    await km.shutdown_kernel(now=True)


async def test_restart_gives_a_new_pod(kube_config, clusters):
    ns = namespace_of(kube_config, "k8s-small")
    km, kc = await start("dss-k8s-small")
    await run(kc, "x = 42")
    first = km.provisioner.workload_id
    await km.restart_kernel(now=False)
    kc.stop_channels()
    kc = km.client()  # the new pod has a new IP: clients connect again
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    assert (await run(kc, "print('x' in globals())"))[1].strip() == "False"
    assert km.provisioner.workload_id != first
    pods, secrets = clusters.ours(clusters.a, ns, kernel_id=km.kernel_id)
    assert [p.metadata.name for p in pods] == [km.provisioner.workload_id.split("/")[1]]
    assert len(secrets) == 1
    await stop(km, kc)
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)


async def test_oom_kill_is_reported_with_the_limit(kube_config, clusters):
    km, kc = await start("dss-k8s-small")
    pod_name = km.provisioner.workload_id.split("/", 1)[1]
    kc.execute("b = bytearray(600 * 1024 * 1024)")
    deadline = time.monotonic() + 20
    while await km.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    noticed = time.monotonic()
    reason = km.provisioner.exit_reason
    assert reason is not None and "OOM-killed" in reason and "256 MiB" in reason, reason
    if clusters.fakes:
        reported = clusters.fakes["fake-a"].reported[pod_name]
        assert noticed - reported < 5, f"{noticed - reported:.1f}s after the kubelet reported"
        print(f"\n{noticed - reported:.2f}s after the kubelet's report: {reason.splitlines()[0]}")
    kc.stop_channels()
    await km.shutdown_kernel(now=True)
    ns = namespace_of(kube_config, "k8s-small")
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)


async def test_reattach_after_server_restart(kube_config, clusters):
    km, kc = await start("dss-k8s-small")
    await run(kc, "survivor = 'still here'")
    info = await km.provisioner.get_provisioner_info()
    json.dumps(info)
    kc.stop_channels()
    km2 = await reattach(info, "dss-k8s-small")
    kc2 = km2.client()
    kc2.start_channels()
    await kc2.wait_for_ready(timeout=20)
    assert (await run(kc2, "print(survivor)"))[1].strip() == "still here"
    await stop(km2, kc2)
    ns = namespace_of(kube_config, "k8s-small")
    assert await gone(clusters, clusters.a, ns, kernel_id=info["kernel_id"])


async def test_pod_of_a_dead_process_is_reaped(kube_config, clusters, workspace):
    script = kernel_owner_script(workspace, "dss-k8s-small")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    try:
        kernel_id = (await proc.stdout.readline()).decode().strip()
        ns = namespace_of(kube_config, "k8s-small")
        pods, secrets = clusters.ours(clusters.a, ns, kernel_id=kernel_id)
        assert len(pods) == 1 and len(secrets) == 1
        configs = [kube_config.get("k8s-small")]
        removed, _ = await ownership.reap_orphans(configs)
        assert kernel_id not in {w.labels.get(ownership.KERNEL_ID) for w in removed}
    finally:
        proc.kill()
        await proc.wait()
    # a NetworkPolicy left alone (its pod gone, say the server died between the two) too
    owner = process_identity(load_config()).username
    lone = {
        "metadata": {
            "name": "dss-kernel-lonely",
            "labels": {
                k: label_value(v)
                for k, v in ownership.workload_labels(
                    "kernel", "k8s-small", owner, kernel_id="lonely"
                ).items()
                if k not in (ownership.SERVER_ID,)
            },
        },
        "spec": {"podSelector": {"matchLabels": {"x": "y"}}, "policyTypes": ["Ingress"]},
    }
    client = kubernetes.config.new_client_from_config(clusters.kubeconfig, context=clusters.a)
    kubernetes.client.NetworkingV1Api(client).create_namespaced_network_policy(ns, lone)
    removed, skipped = await ownership.reap_orphans(configs)
    assert not skipped
    assert kernel_id in {w.labels.get(ownership.KERNEL_ID) for w in removed}
    assert "lonely" in {w.labels.get(ownership.KERNEL_ID) for w in removed}
    assert await gone(clusters, clusters.a, ns, kernel_id=kernel_id)
    assert await gone(clusters, clusters.a, ns, kernel_id="lonely")


async def test_ten_kernels_at_once(kube_config, clusters):
    began = time.perf_counter()
    started = await asyncio.gather(*(start("dss-k8s-b") for _ in range(10)))
    up = time.perf_counter() - began
    replies = await asyncio.gather(*(run(kc, "print(1 + 1)") for _, kc in started))
    assert [printed.strip() for _, printed in replies] == ["2"] * 10
    ips = {km.provisioner.connection_info["ip"] for km, _ in started}
    assert len(ips) == 10
    await asyncio.gather(*(stop(km, kc) for km, kc in started))
    context = clusters.b or clusters.a
    for km, _ in started:
        assert await gone(clusters, context, "default", kernel_id=km.kernel_id)
    print(f"ten kernels up in {up:.1f}s")


async def test_check_reports_the_cluster(kube_config, clusters):
    info = await backend_for(kube_config.get("k8s-b")).check()
    assert info["engine"] == "kubernetes" and info["version"]


async def test_check_reports_a_missing_permission(kube_config, clusters):
    """Guards the RBAC check: an account the cluster denies ``create secrets`` is named."""
    if not clusters.fakes:
        need("denying a permission needs the fake clusters (DSS_TEST_KUBECONFIG is set)")
    backend = backend_for(kube_config.get("k8s-b"))
    fake = clusters.fakes["fake-b"]
    fake.denied.add(("create", "secrets"))
    try:
        with pytest.raises(BackendError, match="not allowed to create secrets"):
            await backend.check()
    finally:
        fake.denied.clear()


async def test_read_only_pod_behind_its_network_policy(kube_config, clusters):
    """A read-only root, and the kernel pod's NetworkPolicy: only this server on its five
    ports, owned by the pod, and made before it."""
    ns = namespace_of(kube_config, "k8s-read-only")
    km, kc = await start("dss-k8s-read-only")
    (pod,), _ = clusters.ours(clusters.a, ns, kernel_id=km.kernel_id)
    assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
    reply, printed = await run(kc, READ_ONLY_PROBE)
    lines = printed.splitlines()
    assert lines[0] == "root: EROFS Read-only file system" and lines[1] == "tmp ok home ok", printed
    (policy,) = clusters.policies(clusters.a, ns, kernel_id=km.kernel_id)
    assert policy.metadata.name == pod.metadata.name
    assert policy.metadata.owner_references[0].uid == pod.metadata.uid
    selector = policy.spec.pod_selector.match_labels
    assert selector == {POD_LABEL: pod.metadata.name}
    assert pod.metadata.labels[POD_LABEL] == pod.metadata.name
    assert policy.spec.policy_types == ["Ingress"]
    (rule,) = policy.spec.ingress
    info = km.provisioner.connection_info
    kernel_ports = {info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port")}
    kernel_ports.add(info["hb_port"])
    assert {p.port for p in rule.ports} == kernel_ports
    assert {p.protocol for p in rule.ports} == {"TCP"}
    if clusters.fakes:  # the API server is on 127.0.0.1: so is this server, as pods see it
        assert [peer.ip_block.cidr for peer in rule._from] == ["127.0.0.1/32"]
    # the policy existed before the pod did (no moment with the pod's ports open): guards
    # against the policy made after the pod
    if clusters.fakes:  # the order of the cluster's own ADDED events (resourceVersions)
        added = {
            kind: rv
            for rv, kind, event, obj, _ in list(clusters.fakes["fake-a"].store.events)
            if event == "ADDED"
            and (obj["metadata"]["namespace"], obj["metadata"]["name"]) == (ns, pod.metadata.name)
        }
        assert added["networkpolicies"] < added["pods"], added
    else:  # a real cluster's objects: creation times (to the second)
        assert policy.metadata.creation_timestamp <= pod.metadata.creation_timestamp
    await stop(km, kc)
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)


# --------------------------------------------------------------------------- API faults


@pytest.fixture
def faults(clusters):
    """The first fake cluster's fault switches, cleared after the test."""
    if not clusters.fakes:
        need("faults are injected into the fake clusters only (DSS_TEST_KUBECONFIG is set)")
    faults = clusters.fakes["fake-a"].faults
    faults.clear()
    yield faults
    faults.clear()


def arm(faults, fault: str) -> None:
    if fault == "watch-drops":
        faults.drop_watch("pods", after_events=1)
    elif fault == "watch-500":
        faults.fail("pods", "watch", times=3)
    elif fault == "watch-410-event":
        faults.expire_watch("pods", "event")
    elif fault == "watch-410-http":
        faults.expire_watch("pods", "http")
    elif fault == "watch-410-then-list-500":
        faults.expire_watch("pods", "event")
        faults.fail("pods", "list", times=2)


WATCH_FAULTS = [
    "watch-drops",
    "watch-500",
    "watch-410-event",
    "watch-410-http",
    "watch-410-then-list-500",
]


@pytest.mark.parametrize("fault", WATCH_FAULTS)
async def test_kernel_starts_through_watch_faults(kube_config, clusters, faults, fault):
    arm(faults, fault)
    began = time.monotonic()
    km, kc = await start("dss-k8s-small")
    took = time.monotonic() - began
    expected = {
        "watch-drops": {("drop", "pods", "watch")},
        "watch-500": {("http-500", "pods", "watch")},
        "watch-410-event": {("gone", "pods", "watch")},
        "watch-410-http": {("gone", "pods", "watch")},
        "watch-410-then-list-500": {("gone", "pods", "watch"), ("http-500", "pods", "list")},
    }[fault]
    assert set(faults.injected) == expected  # each fault was met, and survived
    assert (await run(kc, "print(6 * 7)"))[1].strip() == "42"
    await stop(km, kc)
    ns = namespace_of(kube_config, "k8s-small")
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)
    print(f"\n{fault}: kernel up in {took:.1f}s")


@pytest.mark.parametrize("fault", ["watch-500", "watch-410-then-list-500"])
async def test_start_failure_seen_through_a_broken_watch_keeps_its_reason(
    kube_config, clusters, faults, fault
):
    """The kubelet reports ErrImageNeverPull while the watch is down: the start still fails
    with that reason, once the watch is back (from the replayed events or the re-list)."""
    arm(faults, fault)
    km = AsyncKernelManager(kernel_name="dss-k8s-missing")
    began = time.monotonic()
    with pytest.raises(KernelStartError, match="ErrImageNeverPull"):
        await km.start_kernel()
    assert time.monotonic() - began < 10
    assert faults.injected


async def test_a_network_policy_rbac_refuses_is_explained_and_leaves_nothing(
    kube_config, clusters, faults
):
    faults.fail("networkpolicies", "create", status=403)
    km = AsyncKernelManager(kernel_name="dss-k8s-small")
    began = time.monotonic()
    with pytest.raises(KernelStartError) as refused:
        await km.start_kernel()
    assert time.monotonic() - began < 5
    message = str(refused.value)
    assert 'cannot create resource "networkpolicies"' in message, message
    assert "network_policy.enabled: false" in message and "'k8s-small'" in message, message
    ns = namespace_of(kube_config, "k8s-small")
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)  # the Secret too


async def test_pod_killed_while_the_api_fails_is_reported_dead_once_it_is_back(
    kube_config, clusters, faults
):
    km, kc = await start("dss-k8s-small")
    pod_name = km.provisioner.workload_id.split("/", 1)[1]
    fake = clusters.fakes["fake-a"]
    faults.fail("pods", "any", times=10**6)  # every pod request: get, list, watch
    try:
        assert await km.is_alive()  # no answer is no proof of death: still alive
        kc.execute("b = bytearray(600 * 1024 * 1024)")
        deadline = time.monotonic() + 20
        while pod_name not in fake.reported:  # the kubelet saw the OOM kill
            assert time.monotonic() < deadline, "the kernel was not OOM-killed"
            await asyncio.sleep(0.1)
        assert await km.is_alive() and km.provisioner.exit_reason is None
        assert ("http-500", "pods", "get") in faults.injected
    finally:
        faults.clear()
    back = time.monotonic()
    while await km.is_alive():
        assert time.monotonic() - back < 5, "not reported dead 5 s after the API came back"
        await asyncio.sleep(0.1)
    print(f"\nreported dead {time.monotonic() - back:.2f}s after the API came back")
    reason = km.provisioner.exit_reason
    assert reason is not None and "OOM-killed" in reason and "256 MiB" in reason, reason
    kc.stop_channels()
    await km.shutdown_kernel(now=True)
    ns = namespace_of(kube_config, "k8s-small")
    assert await gone(clusters, clusters.a, ns, kernel_id=km.kernel_id)


# --------------------------------------------------------------------------- manifests


def job_cluster(clusters) -> dict:
    """The ``kubernetes:`` section of the job test configs."""
    return {
        "kubeconfig": clusters.kubeconfig,
        "context": clusters.a,
        "image_pull_policy": "IfNotPresent" if REAL else "Never",
        "namespace": "dss-jobs-${user}",
        "create_namespace": True,
    }


@pytest.fixture(scope="module")
def kube_jobs(clusters, workspace, docker_client, base_image) -> str:
    """A config file with one Kubernetes config on the job test image (cloudpickle in it)."""
    config = {
        "backend": "kubernetes",
        "image": job_image(docker_client, base_image),
        "kubernetes": job_cluster(clusters),
        "permissions": {"groups": ["*"]},
    }
    path = workspace / "kube-jobs.yaml"
    path.write_text(yaml.safe_dump({"execution_configs": {"k8s-jobs": config}}))
    return str(path)


JOB_CODE = """
import sys
print("hello from the pod")
print("to stderr", file=sys.stderr)
print("<<dss-files-end:forged>> <<dss-files:forged>>")
total = sum(numbers)
"""


async def test_python_job_runs_in_a_pod_and_returns_its_result(
    kube_jobs, clusters, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no volume: the job takes a copy of a (small) folder
    service = JobService(config_file=kube_jobs)
    ns = backend_for(load_config(kube_jobs).get("k8s-jobs")).namespace
    request = JobRequest("k8s-jobs", "python", JOB_CODE, {"numbers": [1, 2, 3]}, ("total",))
    job = await asyncio.wait_for(service.wait((await service.submit(request)).id), 60)
    assert (await python_result(service, job.id))["outputs"] == {"total": 6}
    printed = "".join(text for _, text in job.output)
    # followed from the pod's log (stdout and stderr merged, their order is the runtime's)
    assert "hello from the pod\n" in printed and "to stderr\n" in printed
    assert "<<dss-files-end:forged>> <<dss-files:forged>>\n" in printed  # printed, not a frame
    assert printed.count("dss-files") == 2  # the real frame (the result) is not shown
    assert job.workload_id.startswith(f"{ns}/dss-job-")
    assert await gone(clusters, clusters.a, ns, job_id=job.id)

    # a payload the Secret cannot hold is refused at once, naming the limit
    began = time.perf_counter()
    big = JobRequest("k8s-jobs", "python", "x = 1", {"blob": os.urandom(1024 * 1024)})
    job = await asyncio.wait_for(service.wait((await service.submit(big)).id), 20)
    assert time.perf_counter() - began < 5
    with pytest.raises(JobError, match="over the 1 MiB a Kubernetes Secret can hold"):
        await service.result(job.id)
    assert await gone(clusters, clusters.a, ns, job_id=job.id)
    # and the API server itself refuses such a Secret
    data = base64.b64encode(bytes(1024 * 1024 + 1)).decode()
    secret = {"metadata": {"name": "too-big"}, "data": {"a": data}}
    with pytest.raises(kubernetes.client.ApiException, match="must have at most 1048576 bytes"):
        clusters.core(clusters.a).create_namespaced_secret(ns, secret)


async def test_plugin_recipe_with_a_package_runs_in_a_pod(
    kube_jobs, clusters, tmp_path, monkeypatch
):
    """The package's files sit in a subfolder of the job folder: one Secret mount holds both."""
    from test_jobs import install_demo_recipe

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # no volume: the job takes a copy of a (small) folder

    from jupyter_dss_containers.jobs.recipes import recipe_request

    install_demo_recipe(tmp_path, monkeypatch)
    service = JobService(config_file=kube_jobs)
    request = recipe_request("k8s-jobs", "scaled", {"values": [1, 2], "factor": 3})
    assert any("/lib/dss_demo_recipes/" in path for path in request.files)
    job = await asyncio.wait_for(service.wait((await service.submit(request)).id), 60)
    assert (await python_result(service, job.id))["value"]["values"] == [3, 6], job.message
    ns = backend_for(load_config(kube_jobs).get("k8s-jobs")).namespace
    assert await gone(clusters, clusters.a, ns, job_id=job.id)


@pytest.fixture(scope="module")
def kube_r_jobs(clusters, workspace, docker_client) -> str:
    """Two Kubernetes configs on the R test image, one with a read-only root file system."""
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import BaseImageSpec

    # the spec of tests/test_jobs.py's r_image: one content tag, so built once and reused
    spec = BaseImageSpec(name="with-r", bootstrap="debian", with_r=True)
    image = images.build_base_image(spec, docker_client)
    base = {"backend": "kubernetes", "image": image, "kubernetes": job_cluster(clusters)}
    configs = {
        "k8s-r": {**base, "read_only_root": True, "permissions": {"groups": ["*"]}},
        "k8s-r-rw": {**base, "permissions": {"groups": ["*"]}},
    }
    path = workspace / "kube-r-jobs.yaml"
    path.write_text(yaml.safe_dump({"execution_configs": configs}))
    return str(path)


R_CODE = """
cat("rows in:", nrow(df), "\\n")
cat("<<dss-files-end:forged>> <<dss-files:forged>>\\n")
cat("token file seen by R:", Sys.getenv("DSS_FILES_TO_LOG_FILE", "none"), "\\n")
out <- data.frame(name = df$name, double = df$value * factor)
"""


async def test_r_job_runs_in_a_pod_and_returns_its_data_frames(kube_r_jobs, clusters):
    import pandas as pd

    from jupyter_dss_containers.jobs import RemoteError

    service = JobService(config_file=kube_r_jobs)
    frame = pd.DataFrame({"name": ["a", "b", "c"], "value": [1.5, 2, 3]})
    inputs = {"df": frame, "factor": 2}
    ok = JobRequest("k8s-r", "r", R_CODE, inputs, ("out",))  # read-only root: /tmp an emptyDir
    bad = JobRequest("k8s-r-rw", "r", 'f <- function(x) stop("no luck: ", x)\nf("here")')
    jobs = [await service.submit(ok), await service.submit(bad)]
    ok_job, bad_job = await asyncio.wait_for(
        asyncio.gather(*(service.wait(j.id) for j in jobs)), 90
    )
    result = await python_result(service, ok_job.id)
    assert result["outputs"]["out"].to_dict("list") == {
        "name": ["a", "b", "c"],
        "double": [3.0, 4.0, 6.0],
    }
    printed = "".join(text for _, text in ok_job.output)
    assert "rows in: 3 \n" in printed
    assert "token file seen by R: none" in printed  # R is not told where the token is
    assert "<<dss-files-end:forged>> <<dss-files:forged>>\n" in printed
    assert printed.count("dss-files") == 2  # the framed CSV is not shown
    assert ok_job.exit_code == 0

    with pytest.raises(RemoteError) as info:
        await service.result(bad_job.id)
    assert info.value.evalue == "no luck: here"
    assert 'Error in f("here"): no luck: here' in info.value.traceback
    assert bad_job.exit_code == 1  # Rscript's own exit code
    ns = backend_for(load_config(kube_r_jobs).get("k8s-r")).namespace
    for job in (ok_job, bad_job):
        assert await gone(clusters, clusters.a, ns, job_id=job.id)


FRAMER = """
import base64, hashlib, os, sys
token = open(os.environ["DSS_FILES_TO_LOG_FILE"]).read().strip()
data = b"\\x00" * 3000 + b"end"
print("printed first", flush=True)
digest = hashlib.sha256(data).hexdigest()
sys.stdout.write(f"<<dss-files:{token}>>\\n# {len(data)} {digest} /w/r.bin\\n")
sys.stdout.write(base64.encodebytes(data).decode() + f"<<dss-files-end:{token}>>\\n")
"""


async def test_files_come_back_from_a_finished_pods_log_without_following(kube_jobs, clusters):
    """read_files on a backend that did not follow (another process): the whole log is read."""
    config = load_config(kube_jobs).get("k8s-jobs")
    owner = process_identity(load_config(kube_jobs)).username
    spec = WorkloadSpec(
        name=f"dss-job-framer-{os.getpid()}",
        image=config.image,
        command=["python3", "-c", FRAMER],
        labels=ownership.workload_labels("job", config.name, owner, job_id="framer"),
        files={"/w/input.txt": b"private"},  # the token travels with the private files
    )
    workload = await backend_for(config).create(spec)
    other = backend_for(config)  # knows neither the token nor the followed log
    namespace, name = workload.id.split("/", 1)
    secret = clusters.core(clusters.a).read_namespaced_secret(name, namespace)
    token = secret.metadata.annotations["dss-containers.jupyter.org/files-token"]
    pod = clusters.core(clusters.a).read_namespaced_pod(name, namespace)
    assert token not in json.dumps(pod.to_dict(), default=str), "the token is in the pod spec"
    try:
        deadline = time.monotonic() + 20
        while (await other.status(workload.id)).running:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        files = await other.read_files(workload.id, "/w")
        assert files == {"w/r.bin": b"\x00" * 3000 + b"end"}
        assert await other.read_files(workload.id, "/elsewhere") == {}
    finally:
        await other.remove(workload.id)
    assert await gone(clusters, clusters.a, other.namespace, job_id="framer")


def test_manifests_validate_strictly(kube_config):
    import kubernetes_validate

    extra = {
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "image_pull_secrets": ["regcred"],
        "service_account": "kernels",
        "annotations": {"example.org/cost-center": "42"},
        "namespace_limits": {"default": {"memory": "1Gi"}, "max": {"memory": "8Gi"}},
        "pod_patch": {"spec": {"priorityClassName": "low", "containers": [{"name": "kernel"}]}},
    }
    for config in kube_config.execution_configs.values():
        rich = config.__class__.from_dict(
            config.name,
            {**config.raw, "kubernetes": {**config.raw["kubernetes"], **extra}},
        )
        backend = backend_for(rich)
        spec = WorkloadSpec(
            name="dss-kernel-abc",
            image="dss-containers/base-default:x",
            command=["python", "-m", "ipykernel_launcher", "-f", "/tmp/.dss-kernel/c.json"],
            labels=ownership.workload_labels("kernel", config.name, "alice@example.org"),
            files={"/tmp/.dss-kernel/c.json": b"{}"},
            ports=(41000, 41001),
        )
        pod = backend.pod_manifest(spec)
        assert pod["spec"]["priorityClassName"] == "low"
        assert pod["spec"]["containers"][0]["image"] == spec.image
        read_only = config.read_only_root
        assert pod["spec"]["containers"][0]["securityContext"].get("readOnlyRootFilesystem") == (
            True if read_only else None
        )
        policies = [backend.network_policy_manifest(spec, "10.1.2.3")]
        assert policies[0]["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
        peers = ["10.0.0.0/8", {"podSelector": {"matchLabels": {"component": "hub"}}}]
        chosen = config.__class__.from_dict(
            config.name,
            {
                **rich.raw,
                "kubernetes": {**rich.raw["kubernetes"], "network_policy": {"allow_from": peers}},
            },
        )
        policies.append(backend_for(chosen).network_policy_manifest(spec))
        job = WorkloadSpec(name="dss-job-x", image="i:1", command=["true"], labels=spec.labels)
        policies.append(backend.network_policy_manifest(job, "fd00::1"))
        assert policies[2]["spec"]["ingress"] == []  # a job takes no ingress at all
        manifests = [pod, backend.secret_manifest(spec), *backend.namespace_manifests("ns")]
        for manifest in manifests + policies:
            kubernetes_validate.validate(manifest, "1.31", strict=True)


def test_bad_pod_patch_is_refused_with_the_field(kube_config):
    config = kube_config.get("k8s-small")
    bad = config.__class__.from_dict(
        config.name,
        {
            **config.raw,
            "kubernetes": {
                **config.raw["kubernetes"],
                "pod_patch": {"spec": {"nodeSelektor": {}}},
            },
        },
    )
    spec = WorkloadSpec(name="x", image="i:1", command=["true"], labels={})
    with pytest.raises(BackendError, match=r"pod.spec: unknown field 'nodeSelektor'"):
        backend_for(bad).pod_manifest(spec)


def test_label_values_and_registry_rewrite():
    assert label_value("alice@example.org") == "alice-example.org"
    assert label_value("x" * 80) == "x" * 63
    assert label_value("-a-") == "a"
    assert on_registry("dss-containers/base-default:1", "reg.example.com/team") == (
        "reg.example.com/team/dss-containers/base-default:1"
    )
    assert on_registry("quay.io/x/y:1", "reg.example.com") == "quay.io/x/y:1"
    assert on_registry("python:3.12", None) == "python:3.12"
