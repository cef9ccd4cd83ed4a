"""The pre-pull DaemonSet's builder and judge, with no engine and no cluster: the set is
validated strictly (unknown fields refused) with kubernetes-validate, its pod judged by the
fake's Pod Security ``restricted`` checks, its placement and pull secrets asserted field by
field; its progress is judged from client model objects."""

from __future__ import annotations

import kubernetes_validate
import pytest
from fake_kube.daemonsets import daemon_pod, refusal, should_run
from fake_kube.podsecurity import violations
from kubernetes.client import (
    V1Affinity,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1DaemonSet,
    V1DaemonSetSpec,
    V1DaemonSetStatus,
    V1LabelSelector,
    V1NodeAffinity,
    V1NodeSelector,
    V1NodeSelectorRequirement,
    V1NodeSelectorTerm,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
)

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.kubernetes import prepull
from jupyter_dss_containers.config import parse_config

K8S_VERSION = "1.31"
PLACED = {
    "namespace": "dss-${user}",
    "node_selector": {"pool": "gpu"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
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
    "image_pull_policy": "Always",
    "labels": {"team": "data"},
    "annotations": {"example.org/cost-center": "42"},
    "service_account": "kernels",
}
IMAGE = "reg.example.com/team/dss-containers/base-default:abc"


def config(name: str = "k8s-gpu", **kube):
    data = {"backend": "kubernetes", "image": "default", "registry": "reg.example.com/team"}
    return parse_config({"execution_configs": {name: {**data, "kubernetes": kube}}}, "x").get(name)


def manifest(keep: bool = False, **kube) -> dict:
    labels = ownership.workload_labels(prepull.KIND, "k8s-gpu", "alice@example.org")
    built = prepull.daemon_set_manifest(config(**kube), IMAGE, "dss-alice", labels, keep)
    kubernetes_validate.validate(built, K8S_VERSION, strict=True)
    return built


def test_the_daemon_set_is_valid_placed_as_the_config_and_pulls_with_its_secrets():
    """Guards placement: a set that ignored the node selector, tolerations or affinity
    would pull on nodes the config never uses, or skip its tainted GPU nodes; without the
    pull secrets a private registry refuses the pull. Strictly valid for Kubernetes 1.31."""
    ds = manifest(**PLACED)
    spec = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == "dss-alice"
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == PLACED["tolerations"]
    assert spec["affinity"] == PLACED["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = spec["containers"]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "Always"
    assert ds["spec"]["selector"]["matchLabels"] == {prepull.SET_LABEL: ds["metadata"]["name"]}
    assert ds["metadata"]["annotations"] == PLACED["annotations"]
    assert refusal(ds["metadata"]["name"], ds) is None  # the API server's own rules too


def test_the_daemon_pod_is_as_locked_down_as_a_kernel_pod_and_tiny():
    """Guards hardening: non-root, no capabilities, no privilege escalation, read-only
    root, RuntimeDefault seccomp, no service account token even where the config names one
    for its kernels; passes Pod Security ``restricted``; tiny requests and limits."""
    ds = manifest(**PLACED)
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    assert "volumes" not in spec and "ports" not in container and "env" not in container
    assert container["resources"] == {
        "requests": {"cpu": "1m", "memory": "16Mi"},
        "limits": {"cpu": "50m", "memory": "64Mi"},
    }
    assert container["command"][0] == "python" and "signal.pause()" in container["command"][-1]
    pod = daemon_pod({**ds, "metadata": {**ds["metadata"], "uid": "u1"}}, "node-a")
    assert violations("restricted", pod["spec"]) == []


def test_the_set_is_labelled_for_the_reaper_and_its_pods_are_not():
    """Guards reaping: the set carries the workload labels (managed, kind prepull, config,
    server id) so cleanup finds it, ``--keep`` marks it kept; its pods carry no
    ``managed`` label (a reaper deleting a daemon pod alone would see it come back)."""
    ds = manifest()
    labels = ds["metadata"]["labels"]
    assert labels[ownership.MANAGED] == "true" and labels[ownership.KIND] == "prepull"
    assert labels[ownership.CONFIG] == "k8s-gpu" and ownership.SERVER_ID in labels
    assert labels[ownership.OWNER] == "alice-example.org"
    assert ownership.KEEP not in labels
    assert manifest(keep=True)["metadata"]["labels"][ownership.KEEP] == "true"
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ownership.MANAGED not in pod_labels
    assert pod_labels[prepull.SET_LABEL] == ds["metadata"]["name"]


def test_names_are_per_config_and_image_and_fit_a_label():
    """Guards naming: one set per (config, image) (a new image does not reuse the old
    set), a valid name and label value even for a long or odd config name."""
    a = prepull.daemon_set_name("k8s-gpu", IMAGE)
    assert a == prepull.daemon_set_name("k8s-gpu", IMAGE)
    assert a != prepull.daemon_set_name("k8s-gpu", IMAGE + "2")
    assert a != prepull.daemon_set_name("k8s-cpu", IMAGE)
    odd = prepull.daemon_set_name("Very_Long.Config_" * 8, IMAGE)
    assert len(odd) <= 52 and odd == odd.lower() and "_" not in odd and "." not in odd
    assert prepull.split_set_id(prepull.set_id("ns", a)) == ("ns", a)
    assert prepull.split_set_id(f"ns/{a}") is None  # a pod's id


def test_the_fake_controller_places_daemon_pods_as_the_real_one():
    """Guards the fake (what the prepull tests rely on): node selector, required affinity
    and taints decide the nodes; a daemon pod is pinned by a ``metadata.name`` field term."""
    spec = manifest(**PLACED)["spec"]["template"]["spec"]
    gpu = {"kubernetes.io/hostname": "n1", "pool": "gpu", "zone": "a"}
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert should_run(spec, gpu, [taint])
    assert not should_run(spec, {**gpu, "zone": "b"}, [])
    assert not should_run(spec, {**gpu, "pool": "cpu"}, [])
    plain = manifest()["spec"]["template"]["spec"]
    assert not should_run(plain, gpu, [taint])  # untolerated NoSchedule
    assert should_run(plain, gpu, [{**taint, "effect": "PreferNoSchedule"}])


# --------------------------------------------------------------------------- judging


def daemon_set(desired: int, ready: int, observed: int | None = 1) -> V1DaemonSet:
    status = V1DaemonSetStatus(
        desired_number_scheduled=desired,
        current_number_scheduled=desired,
        number_misscheduled=0,
        number_ready=ready,
        observed_generation=observed,
    )
    spec = V1DaemonSetSpec(
        selector=V1LabelSelector(match_labels={prepull.SET_LABEL: "s"}),
        template=V1PodTemplateSpec(),
    )
    return V1DaemonSet(metadata=V1ObjectMeta(name="s", generation=1), spec=spec, status=status)


def pod(node: str, state: str, reason: str = "", message: str = "", bound: bool = True) -> V1Pod:
    pinned = V1Affinity(
        node_affinity=V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=V1NodeSelector(
                node_selector_terms=[
                    V1NodeSelectorTerm(
                        match_fields=[
                            V1NodeSelectorRequirement(
                                key="metadata.name", operator="In", values=[node]
                            )
                        ]
                    )
                ]
            )
        )
    )
    if state == "ready":
        cs_state = V1ContainerState(running=V1ContainerStateRunning())
        conditions = [V1PodCondition(type="Ready", status="True")]
        phase = "Running"
    else:
        cs_state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=reason, message=message))
        conditions, phase = [], "Pending"
    if state == "unschedulable":
        condition = V1PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable", message=message
        )
        conditions, cs_state = [condition], None
    statuses = (
        [
            V1ContainerStatus(
                name="prepull",
                image=IMAGE,
                image_id="",
                ready=state == "ready",
                restart_count=0,
                state=cs_state,
            )
        ]
        if cs_state
        else None
    )
    return V1Pod(
        metadata=V1ObjectMeta(name=f"s-{node}"),
        spec=V1PodSpec(containers=[], node_name=node if bound else None, affinity=pinned),
        status=V1PodStatus(phase=phase, conditions=conditions, container_statuses=statuses),
    )


def test_judge_says_done_only_when_every_wanted_node_is_ready():
    """Guards the end: done once numberReady reaches desiredNumberScheduled for the set's
    generation (not before the controller has seen it, nor with a node still pulling)."""
    k = config(**PLACED)
    pulling = prepull.judge(
        k, daemon_set(2, 1), [pod("a", "ready"), pod("b", "pulling", "ContainerCreating")]
    )
    assert not pulling.done and pulling.failure is None
    assert [(n.node, n.state) for n in pulling.nodes] == [("a", "ready"), ("b", "pulling")]
    done = prepull.judge(k, daemon_set(2, 2), [pod("a", "ready"), pod("b", "ready")])
    assert done.done
    unseen = prepull.judge(k, daemon_set(0, 0, observed=None), [])
    assert not unseen.done and unseen.failure is None  # the controller has not looked yet


@pytest.mark.parametrize(
    ("state", "reason", "message", "said"),
    [
        ("waiting", "ImagePullBackOff", "Back-off pulling image", "ImagePullBackOff: Back-off"),
        ("waiting", "ErrImagePull", "429 Too Many Requests", "ErrImagePull: 429 Too Many"),
        ("unschedulable", "", "0/3 nodes are available: 3 Insufficient cpu.", "Insufficient"),
    ],
)
def test_judge_fails_with_the_clusters_words(state, reason, message, said):
    """Guards the failure report: a node whose pull fails or whose pod cannot be placed
    ends the pre-pull with the node's name and the cluster's own reason."""
    progress = prepull.judge(
        config(), daemon_set(2, 1), [pod("a", "ready"), pod("b", state, reason, message)]
    )
    assert not progress.done
    assert progress.failure.startswith("node b: ") and said in progress.failure


def test_judge_fails_when_no_node_can_run_the_config():
    """Guards the empty set: no node matching the placement is said at once (with the
    node selector), not waited out until the timeout."""
    progress = prepull.judge(config(**PLACED), daemon_set(0, 0), [])
    assert not progress.done
    assert "no node can run execution config 'k8s-gpu'" in progress.failure
    assert "{'pool': 'gpu'}" in progress.failure
