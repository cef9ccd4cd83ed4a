"""The pure builders of the Kubernetes backend, with no engine and no cluster: every object
is validated strictly (unknown fields refused) with kubernetes-validate, and what it
promises (hardening, the private files only in the Secret, ingress only from the server)
is asserted field by field. Pod states are judged from client model objects.
"""

from __future__ import annotations

import base64
import json

import kubernetes_validate
import pytest
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1ResourceRequirements,
)

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.base import BackendError, ImageMissing, WorkloadSpec
from jupyter_dss_containers.backends.kubernetes import manifests, podstate
from jupyter_dss_containers.config import parse_config

K8S_VERSION = "1.31"
RICH = {
    "context": "prod",
    "namespace": "dss-${user}",
    "resources": {"requests": {"cpu": 1, "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
    "node_selector": {"accelerator": "nvidia-a100"},
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
    "image_pull_policy": "Always",
    "service_account": "kernels",
    "labels": {"team": "data"},
    "annotations": {"example.org/cost-center": "42"},
    "shm_size": "1Gi",
    "termination_grace_seconds": 7,
    "namespace_quota": {"limits.memory": "32Gi", "pods": "10"},
    "namespace_limits": {"default": {"memory": "1Gi"}, "max": {"memory": "16Gi"}},
}


def config(name: str = "k", read_only: bool = False, **kube):
    """An execution config parsed as the file would be (so the schema checks it too)."""
    data = {
        "backend": "kubernetes",
        "image": "default",
        "registry": "reg.example.com/team",
        "env": {"HOME": "/home/analyst"},
        "kubernetes": kube,
        **({"read_only_root": True} if read_only else {}),
    }
    return parse_config({"execution_configs": {name: data}}, "inline").get(name)


def kernel_spec(**extra) -> WorkloadSpec:
    key = b'{"key": "the-hmac-key-0123456789"}'
    return WorkloadSpec(
        name="dss-kernel-abc",
        image="dss-containers/base-default:x",
        command=["python", "-m", "ipykernel_launcher", "-f", "/tmp/.dss-kernel/c.json"],
        labels=ownership.workload_labels("kernel", "k", "alice@example.org", kernel_id="abc"),
        files={"/tmp/.dss-kernel/c.json": key, "/tmp/.dss-kernel/lib/x.py": b"x = 1"},
        ports=(41000, 41001),
        working_dir="/home/analyst/project",
        **extra,
    )


def valid(manifest: dict) -> dict:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return manifest


def test_pod_is_hardened_placed_and_valid():
    """Guards the pod's promises: non-root uid 1000, no privilege, capabilities dropped,
    seccomp; the config's resources, placement, pull secrets and labels; the image on the
    config's registry; the grace period; strictly valid."""
    pod = valid(manifests.pod_manifest(config(**RICH), kernel_spec(), "dss-alice"))
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert pod["metadata"]["namespace"] == "dss-alice"
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["image"] == "reg.example.com/team/dss-containers/base-default:x"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert container["workingDir"] == "/home/analyst/project"
    assert container["ports"] == [
        {"containerPort": 41000, "protocol": "TCP"},
        {"containerPort": 41001, "protocol": "TCP"},
    ]
    assert spec["restartPolicy"] == "Never" and spec["terminationGracePeriodSeconds"] == 7
    assert spec["nodeSelector"] == RICH["node_selector"]
    assert spec["tolerations"] == RICH["tolerations"]
    assert spec["affinity"] == RICH["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "kernels" and spec["automountServiceAccountToken"]
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "data" and labels[manifests.POD_LABEL] == "dss-kernel-abc"
    assert labels[ownership.OWNER] == "alice-example.org"  # made a valid label value
    assert pod["metadata"]["annotations"] == {"example.org/cost-center": "42"}
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}


def test_a_plain_pod_gets_no_token_and_no_placement():
    """Guards the defaults: no service account token unless one is named, nothing placed,
    writable root unless ``read_only_root``."""
    pod = valid(manifests.pod_manifest(config(), kernel_spec(), "default"))
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert not {"nodeSelector", "tolerations", "affinity", "serviceAccountName"} & set(spec)
    assert "imagePullSecrets" not in spec and container["resources"] == {}
    assert "readOnlyRootFilesystem" not in container["securityContext"]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_private_files_are_in_the_secret_and_mounted_read_only_never_in_the_pod():
    """Guards the kernel's HMAC key: the Pod names the Secret's keys only (the key's value is
    nowhere in it, env included); the Secret holds
    the files, mounted once per outermost folder, read-only, 0440."""
    spec = kernel_spec()
    pod = valid(manifests.pod_manifest(config(), spec, "ns"))
    text = json.dumps(pod)
    for content in spec.files.values():
        assert content.decode() not in text and base64.b64encode(content).decode() not in text
    # the key's value itself, in env or anywhere (not only the file's whole text): guards
    # against the key put into the pod's environment (benchmarks/breakages.py)
    key = json.loads(spec.files["/tmp/.dss-kernel/c.json"])["key"]
    assert key not in text, "the HMAC key is in the pod"
    (volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert volume["secret"] == {
        "secretName": spec.name,
        "items": [{"key": "file-0", "path": "c.json"}, {"key": "file-1", "path": "lib/x.py"}],
        "defaultMode": 0o440,
    }
    mount = next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == volume["name"]
    )
    assert mount == {"name": volume["name"], "mountPath": "/tmp/.dss-kernel", "readOnly": True}
    secret = valid(manifests.secret_manifest(spec, "ns"))
    decoded = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert decoded == {"file-0": spec.files["/tmp/.dss-kernel/c.json"], "file-1": b"x = 1"}
    assert "annotations" not in secret["metadata"]  # no token file: nothing to hand back
    assert secret["metadata"]["labels"] == manifests.label_values(spec.labels)


def test_mount_roots_and_the_token_file():
    """Guards the one-mount-per-outermost-folder rule (a Secret mounted inside another
    read-only mount needs a mount point the runtime cannot create) and the token's place."""
    files = {"/a/x": b"", "/a/lib/y": b"", "/b/z": b"", "/a/lib/deeper/w": b""}
    assert manifests.mount_roots(files) == {
        "/a": [("/a/lib/deeper/w", "lib/deeper/w"), ("/a/lib/y", "lib/y"), ("/a/x", "x")],
        "/b": [("/b/z", "z")],
    }
    assert manifests.token_path(files) == "/a/.dss-files-token"
    token_spec = kernel_spec()
    token_spec.files[manifests.token_path(token_spec.files)] = b"nonce-1234"
    secret = valid(manifests.secret_manifest(token_spec, "ns"))
    assert secret["metadata"]["annotations"] == {manifests.TOKEN_ANNOTATION: "nonce-1234"}


def test_read_only_root_gets_writable_tmp_and_home():
    """Guards ``read_only_root``: the root is read-only, /tmp and HOME (the config's) are
    emptyDirs."""
    pod = valid(manifests.pod_manifest(config(read_only=True), kernel_spec(), "ns"))
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    scratch = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert scratch["/tmp"] == "tmp" and scratch["/home/analyst"] == "home"
    empty = {v["name"] for v in pod["spec"]["volumes"] if v.get("emptyDir") == {}}
    assert empty == {"tmp", "home"}


def test_network_policy_admits_only_the_peers_on_the_pod_ports():
    """Guards the kernel ports: ingress only from this server (a /32 or /128) or the admin's
    ``allow_from``, only on the pod's ports; a job takes no ingress; no peer at all is an
    error, not an open policy."""
    spec = kernel_spec()
    v4 = valid(
        manifests.network_policy_manifest(spec, "ns", manifests.policy_peers((), "10.1.2.3"))
    )
    assert v4["spec"]["podSelector"] == {"matchLabels": {manifests.POD_LABEL: spec.name}}
    assert v4["spec"]["policyTypes"] == ["Ingress"]
    assert v4["spec"]["ingress"] == [
        {
            "from": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
            "ports": [{"protocol": "TCP", "port": 41000}, {"protocol": "TCP", "port": 41001}],
        }
    ]
    assert manifests.policy_peers((), "fd00::1") == [{"ipBlock": {"cidr": "fd00::1/128"}}]
    hub = {"podSelector": {"matchLabels": {"component": "hub"}}}
    chosen = manifests.policy_peers(("10.0.0.0/8", hub), "10.1.2.3")
    assert chosen == [{"ipBlock": {"cidr": "10.0.0.0/8"}}, hub]
    valid(manifests.network_policy_manifest(spec, "ns", chosen))
    job = WorkloadSpec(name="dss-job-x", image="i:1", command=["true"], labels=spec.labels)
    closed = valid(manifests.network_policy_manifest(job, "ns", chosen))
    assert closed["spec"]["ingress"] == []
    with pytest.raises(ValueError):
        manifests.policy_peers((), None)


def test_namespace_objects_carry_the_admins_policy():
    """Guards ``create_namespace``: the namespace is marked ours, with the quota and limit
    range the admin set, and only those."""
    namespace, quota, limits = [
        valid(m) for m in manifests.namespace_manifests(config(**RICH).kubernetes, "dss-bob")
    ]
    assert namespace["metadata"] == {"name": "dss-bob", "labels": manifests.MANAGED_BY}
    assert quota["spec"] == {"hard": {"limits.memory": "32Gi", "pods": "10"}}
    assert limits["spec"] == {
        "limits": [{"type": "Container", "default": {"memory": "1Gi"}, "max": {"memory": "16Gi"}}]
    }
    assert [m["kind"] for m in manifests.namespace_manifests(config().kubernetes, "x")] == [
        "Namespace"
    ]


def test_pod_patch_merges_by_container_name_and_bad_fields_are_refused():
    """Guards ``pod_patch``: mappings merge, containers merge by name (the kernel keeps its
    command), and a misspelt field is refused with its path, not sent to the cluster."""
    patch = {
        "spec": {
            "priorityClassName": "low",
            "containers": [{"name": "kernel", "env": [{"name": "X", "value": "1"}]}],
        }
    }
    pod = valid(manifests.pod_manifest(config(pod_patch=patch), kernel_spec(), "ns"))
    assert pod["spec"]["priorityClassName"] == "low"
    (container,) = pod["spec"]["containers"]
    assert container["env"] == [{"name": "X", "value": "1"}]
    assert container["command"][:3] == ["python", "-m", "ipykernel_launcher"]
    bad = config(
        pod_patch={"spec": {"nodeSelektor": {}, "containers": [{"name": "kernel", "portz": []}]}}
    )
    with pytest.raises(BackendError) as refused:
        manifests.pod_manifest(bad, kernel_spec(), "ns")
    assert "pod.spec: unknown field 'nodeSelektor'" in str(refused.value)
    assert "pod.spec.containers[0]: unknown field 'portz'" in str(refused.value)
    assert manifests.check_model(
        {"spec": {"terminationGracePeriodSeconds": "5"}}, "V1Pod", "pod"
    ) == ["pod.spec.terminationGracePeriodSeconds: expected int, got str"]


def test_the_config_is_not_changed_by_building():
    """Guards the frozen settings: a built pod shares no mutable part with the config, so
    a later patch or client cannot change the next pod."""
    cfg = config(**RICH, pod_patch={"spec": {"priorityClassName": "low"}})
    pod = manifests.pod_manifest(cfg, kernel_spec(), "ns")
    pod["spec"]["nodeSelector"]["accelerator"] = "changed"
    pod["spec"]["tolerations"][0]["key"] = "changed"
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "1Ti"
    again = manifests.pod_manifest(cfg, kernel_spec(), "ns")
    assert again["spec"]["nodeSelector"] == RICH["node_selector"]
    assert again["spec"]["tolerations"] == RICH["tolerations"]
    assert again["spec"]["containers"][0]["resources"]["limits"] == {"memory": "8Gi"}


# --------------------------------------------------------------------------- pod states


def pod(
    phase="Pending",
    waiting=None,
    terminated=None,
    unschedulable=None,
    deleting=False,
    memory="256Mi",
) -> V1Pod:
    state = None
    if waiting:
        state = V1ContainerState(
            waiting=V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
        )
    if terminated:
        code, reason, message = terminated
        ended = V1ContainerStateTerminated(exit_code=code, reason=reason, message=message)
        state = V1ContainerState(terminated=ended)
    statuses = None
    if state is not None:
        statuses = [
            V1ContainerStatus(
                name="kernel", image="i:1", image_id="", ready=False, restart_count=0, state=state
            )
        ]
    conditions = None
    if unschedulable:
        conditions = [
            V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message=unschedulable
            )
        ]
    limits = {"memory": memory} if memory else None
    return V1Pod(
        metadata=V1ObjectMeta(
            name="p", deletion_timestamp="2026-01-01T00:00:00Z" if deleting else None
        ),
        spec=V1PodSpec(
            containers=[V1Container(name="kernel", resources=V1ResourceRequirements(limits=limits))]
        ),
        status=V1PodStatus(phase=phase, container_statuses=statuses, conditions=conditions),
    )


def test_pod_states_say_what_the_cluster_knows():
    """Guards the fast, worded failures: Unschedulable stays pending with the scheduler's
    message, image and start failures end it, OOM names the limit, 137 names SIGKILL."""
    assert podstate.pod_state(pod()) == ("pending", None)
    assert podstate.pod_state(pod("Running")) == ("running", None)
    assert podstate.pod_state(pod(unschedulable="0/3 nodes are available")) == (
        "pending",
        "Unschedulable: 0/3 nodes are available",
    )
    assert podstate.pod_state(pod(waiting=("ImagePullBackOff", None))) == (
        "exited",
        "ImagePullBackOff: i:1",
    )
    assert podstate.pod_state(pod(waiting=("ContainerCreating", None))) == ("pending", None)
    assert podstate.pod_state(pod("Failed", terminated=(137, "OOMKilled", None))) == (
        "exited",
        "OOM-killed (memory limit 256 MiB)",
    )
    unlimited = pod("Failed", terminated=(137, "OOMKilled", None), memory=None)
    assert podstate.pod_state(unlimited)[1] == "OOM-killed (no memory limit set)"
    assert podstate.pod_state(pod("Failed", terminated=(137, "Error", None)))[1] == (
        "exited with code 137 (killed by SIGKILL)"
    )
    assert podstate.pod_state(pod("Failed", terminated=(3, "Error", "boom")))[1] == (
        "exited with code 3: boom"
    )
    assert podstate.pod_state(pod("Running", deleting=True)) == (
        "exited",
        "the pod is being deleted",
    )


def test_started_and_status_of_a_pod():
    """Guards what a start and ``status`` report: an image failure is ImageMissing (the
    provisioner names the build command), other failures BackendError with the reason."""
    assert podstate.started(pod("Running"), "ns", "p") is True
    assert podstate.started(pod(), "ns", "p") is False
    with pytest.raises(ImageMissing, match=r"pod ns/p: ErrImageNeverPull: not present"):
        podstate.started(pod(waiting=("ErrImageNeverPull", "not present")), "ns", "p")
    with pytest.raises(BackendError, match=r"pod ns/p: Unschedulable: no node") as caught:
        podstate.started(pod(unschedulable="no node"), "ns", "p")
    assert not isinstance(caught.value, ImageMissing)
    oom = podstate.workload_status(pod("Failed", terminated=(137, "OOMKilled", None)))
    assert (oom.state, oom.exit_code, oom.oom_killed) == ("exited", 137, True)
    assert oom.reason == "OOM-killed (memory limit 256 MiB)" and not oom.running
    assert podstate.workload_status(pod("Running")).running
    assert podstate.memory_limit(pod()) == 256 * 1024**2
    metrics = {"containers": [{"name": "kernel", "usage": {"cpu": "250m", "memory": "64Mi"}}]}
    assert podstate.container_usage(metrics) == (25.0, 64 * 1024**2)
    assert podstate.container_usage({}) == (None, None)


# --------------------------------------------------------------------------- precise rules
# The tests below pin each rule of the builders exactly (boundaries, words, copies): they are
# what the mutation score of manifests.py rests on (benchmarks/mutation.sh).


def test_label_values_keep_valid_ones_and_clean_the_rest():
    """Guards label values at their limits: 63 characters kept, 64 cut, capitals kept,
    other characters become '-', and the ends are trimmed to alphanumerics."""
    assert manifests.label_value("a" * 63) == "a" * 63
    assert manifests.label_value("a" * 64) == "a" * 63
    assert manifests.label_value("@" + "a" * 63) == "a" * 62  # cut to 63, then trimmed
    assert manifests.label_value("Alice Smith") == "Alice-Smith"
    assert manifests.label_value("@Alice@") == "Alice"
    assert manifests.label_value("-a-") == "a"
    assert manifests.label_value("a.b_c-D") == "a.b_c-D"
    assert manifests.label_value("") == ""
    assert manifests.label_values({"k": "x y", "j": "ok"}) == {"k": "x-y", "j": "ok"}


def test_images_go_onto_the_registry_unless_they_name_one():
    """Guards the registry rewrite: a first part with a dot, a port or ``localhost`` names
    a registry host (left alone); anything else, a bare ``name:tag`` too, is prefixed, with
    the registry's trailing slashes dropped."""
    reg = "reg.example.com/team"
    assert manifests.on_registry("dss-containers/base:1", reg) == f"{reg}/dss-containers/base:1"
    assert manifests.on_registry("python:3.12", reg) == f"{reg}/python:3.12"
    assert manifests.on_registry("team/v1.2/img:1", reg) == f"{reg}/team/v1.2/img:1"
    for named in ("quay.io/x/y:1", "localhost:5000/x:1", "localhost/team/img:1", "a.b/c"):
        assert manifests.on_registry(named, reg) == named
    assert manifests.on_registry("img:1", "reg.example.com/BOX//") == "reg.example.com/BOX/img:1"
    assert manifests.on_registry("img:1", " reg.example.com/t/") == " reg.example.com/t/img:1"
    assert manifests.on_registry("img:1", None) == "img:1"
    assert manifests.on_registry("img:1", "") == "img:1"


def test_workload_env_home_and_shared_memory_mounts():
    """Guards the env entries' shape, HOME taken from the workload before the config (the
    writable home of a read-only root), and the /dev/shm mount."""
    spec = kernel_spec(env={"HOME": "/work/me", "A": "1"})
    pod = valid(manifests.pod_manifest(config(read_only=True, shm_size="64Mi"), spec, "ns"))
    (container,) = pod["spec"]["containers"]
    assert container["env"] == [{"name": "HOME", "value": "/work/me"}, {"name": "A", "value": "1"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["home"] == {"name": "home", "mountPath": "/work/me"}
    assert mounts["tmp"] == {"name": "tmp", "mountPath": "/tmp"}
    assert mounts["dshm"] == {"name": "dshm", "mountPath": "/dev/shm"}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    no_home = manifests.pod_manifest(config(read_only=True), kernel_spec(), "ns")
    paths = {m["name"]: m["mountPath"] for m in no_home["spec"]["containers"][0]["volumeMounts"]}
    assert paths["home"] == "/home/analyst"  # the config's HOME


def test_pod_patch_replaces_scalars_and_unnamed_lists():
    """Guards ``merge_patch`` beyond mappings: a scalar or an unnamed list (tolerations)
    is replaced, a mapping may replace a scalar and a scalar a mapping, named lists merge."""
    patch = {
        "spec": {
            "terminationGracePeriodSeconds": 60,
            "tolerations": [{"key": "other", "operator": "Exists"}],
            "containers": [
                {"name": "kernel", "args": ["--debug"]},
                {"name": "side", "image": "s:1"},
            ],
        }
    }
    pod = valid(manifests.pod_manifest(config(**RICH, pod_patch=patch), kernel_spec(), "ns"))
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    assert pod["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    kernel, side = pod["spec"]["containers"]
    assert kernel["args"] == ["--debug"] and kernel["command"][0] == "python"
    assert side == {"name": "side", "image": "s:1"}
    assert manifests.merge_patch({"a": "x"}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert manifests.merge_patch({"a": {"b": 1}}, {"a": "y"}) == {"a": "y"}
    assert manifests.merge_patch({"a": ["x"]}, {"a": "y"}) == {"a": "y"}
    assert manifests.merge_patch({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}
    assert manifests.merge_patch(["--name"], ["--name", "x"]) == ["--name", "x"]
    base = [{"name": "a", "v": 1}, {"name": "b", "v": 2}]
    assert manifests.merge_patch(base, [{"name": "b", "v": 3}, {"name": "c"}]) == [
        {"name": "a", "v": 1},
        {"name": "b", "v": 3},
        {"name": "c"},
    ]


def test_pod_patch_of_the_wrong_shape_is_refused_with_every_problem():
    """Guards ``check_model`` at each kind of field: a list, a mapping of strings, a bool,
    a string; all problems named, joined by '; ', each with its path."""
    patch = {
        "spec": {
            "volumes": "none",
            "nodeSelector": {"zone": {"a": 1}},
            "hostNetwork": "yes",
            "priorityClassName": {"a": 1},
        }
    }
    with pytest.raises(BackendError) as refused:
        manifests.pod_manifest(config(pod_patch=patch), kernel_spec(), "ns")
    assert str(refused.value) == (
        "execution config 'k': kubernetes.pod_patch makes an invalid pod: "
        "pod.spec.volumes: expected a list; "
        "pod.spec.nodeSelector.zone: expected a string; "
        "pod.spec.hostNetwork: expected bool, got str; "
        "pod.spec.priorityClassName: expected a string"
    )
    assert manifests.check_model({"a": 1}, "Dict[str, str]", "x") == []
    assert manifests.check_model([1], "List[str]", "x") == []
    assert manifests.check_model({}, "object", "x") == []
    assert manifests.check_model(True, "int", "x") == []


def test_built_objects_share_nothing_with_the_settings():
    """Guards every deep copy: changing a built pod's placement, patch-provided parts, a
    policy's peers or a limit range does not change what the next build makes."""
    hub = {"podSelector": {"matchLabels": {"component": "hub"}}}
    patch = {"spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}]}}
    cfg = config(**RICH, pod_patch=patch, network_policy={"allow_from": [hub]})
    pod = manifests.pod_manifest(cfg, kernel_spec(), "ns")
    expected = json.loads(json.dumps(pod))
    pod["spec"]["tolerations"][0]["key"] = "changed"
    pod["spec"]["affinity"]["nodeAffinity"].clear()
    pod["spec"]["hostAliases"][0]["ip"] = "changed"
    assert manifests.pod_manifest(cfg, kernel_spec(), "ns") == expected
    peers = manifests.policy_peers(cfg.kubernetes.allow_from, None)
    peers[0]["podSelector"]["matchLabels"]["component"] = "changed"
    fresh = manifests.policy_peers(cfg.kubernetes.allow_from, None)
    assert fresh == [{"podSelector": {"matchLabels": {"component": "hub"}}}]
    limits = manifests.namespace_manifests(cfg.kubernetes, "ns")[2]
    limits["spec"]["limits"][0]["max"]["memory"] = "1Ti"
    again = manifests.namespace_manifests(cfg.kubernetes, "ns")[2]
    assert again["spec"]["limits"][0]["max"] == {"memory": "16Gi"}


def test_secret_quota_and_owner_details():
    """Guards the names and types the cluster sees: an Opaque Secret, the quota and limit
    range named ``dss-containers`` in the namespace, the owner reference the garbage
    collector follows, and the refusal of a policy with no peer."""
    assert manifests.secret_manifest(kernel_spec(), "ns")["type"] == "Opaque"
    _, quota, limits = manifests.namespace_manifests(config(**RICH).kubernetes, "dss-bob")
    assert (
        quota["metadata"]
        == limits["metadata"]
        == {"name": "dss-containers", "namespace": "dss-bob"}
    )
    owner = manifests.owned_by("dss-kernel-abc", "uid-1")
    assert owner == {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": "dss-kernel-abc", "uid": "uid-1"}
            ]
        }
    }
    assert manifests.check_model(owner["metadata"], "V1ObjectMeta", "meta") == []
    with pytest.raises(ValueError) as refused:
        manifests.policy_peers((), None)
    assert str(refused.value) == (
        "no allow_from and no server address: the policy would admit no one"
    )


@pytest.mark.parametrize(
    "kube",
    [{}, RICH, {"shm_size": "1Gi", "service_account": "kernels"}],
    ids=["plain", "rich", "shm"],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_every_pod_we_build_passes_pod_security_restricted(kube, read_only):
    """Guards the pods' hardening against Pod Security Admission's ``restricted`` checks
    (the fake API server's copy of the plugin): no violation for any config variant."""
    from fake_kube import podsecurity

    pod = manifests.pod_manifest(config(read_only=read_only, **kube), kernel_spec(), "ns")
    assert podsecurity.violations("restricted", pod["spec"]) == []
    job = WorkloadSpec(name="dss-job-x", image="i:1", command=["true"], labels={})
    assert (
        podsecurity.violations("restricted", manifests.pod_manifest(config(), job, "ns")["spec"])
        == []
    )


def workspace_plan(**extra):
    from jupyter_dss_containers.workspace import WorkspacePlan

    fields = {
        "root": "/srv/notebooks",
        "volume": {"claim": "home-alice"},
        "sub_path": "alice",
        "working_dir": "/srv/notebooks/demo",
        "user": "4242:4242",
    }
    return WorkspacePlan(**{**fields, **extra})


@pytest.mark.parametrize("read_only", [False, True])
def test_workspace_claim_is_mounted_at_the_root_with_the_sub_path(read_only):
    """Guards the workspace on Kubernetes: the claim mounted at the server's root path with
    the user's sub-path (read-only when the config says so), the notebook's folder as the
    working directory, still the image's user (never the server's uid), valid strictly and
    within Pod Security ``restricted``."""
    from fake_kube import podsecurity

    plan = workspace_plan(read_only=read_only)
    spec = kernel_spec()
    spec.working_dir = None
    spec.workspace = plan
    pod = valid(manifests.pod_manifest(config(), spec, "ns"))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "workspace")
    assert volume == {"name": "workspace", "persistentVolumeClaim": {"claimName": "home-alice"}}
    c = pod["spec"]["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "workspace")
    assert mount["mountPath"] == "/srv/notebooks" and mount["subPath"] == "alice"
    assert mount.get("readOnly", False) is read_only
    assert c["workingDir"] == "/srv/notebooks/demo"
    sc = pod["spec"]["securityContext"]
    assert (sc["runAsUser"], sc["fsGroup"]) == (manifests.DEFAULT_UID, manifests.DEFAULT_GID)
    assert sc["fsGroupChangePolicy"] == "OnRootMismatch"
    assert podsecurity.violations("restricted", pod["spec"]) == []


def test_workspace_volume_source_home_inside_and_bad_input():
    """Guards the other volume shapes: any volume source the admin writes is used as given
    (checked against the API's model, so a typo is refused by name), HOME inside the
    workspace gets no scratch emptyDir over the user's files, and a sub-path that climbs out
    of the volume is refused before the cluster sees it."""
    nfs = {"nfs": {"server": "files.example.org", "path": "/exports/home"}}
    spec = kernel_spec()
    spec.workspace = workspace_plan(volume=nfs, root="/home", sub_path=None)
    pod = valid(manifests.pod_manifest(config(read_only=True), spec, "ns"))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["workspace"] == {"name": "workspace", **nfs}
    assert "home" not in volumes  # HOME /home/analyst lies in the workspace
    mount = next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "workspace"
    )
    assert "subPath" not in mount and mount["mountPath"] == "/home"
    spec.workspace = workspace_plan(volume={"nfz": {"server": "x"}})
    with pytest.raises(BackendError, match="unknown field 'nfz'"):
        manifests.pod_manifest(config(), spec, "ns")
    spec.workspace = workspace_plan(volume={"nfs": nfs["nfs"], "emptyDir": {}})
    with pytest.raises(BackendError, match="exactly one volume source"):
        manifests.pod_manifest(config(), spec, "ns")
    for bad in ("../bob", "/etc"):
        spec.workspace = workspace_plan(sub_path=bad)
        with pytest.raises(BackendError, match="relative path without"):
            manifests.pod_manifest(config(), spec, "ns")


def test_a_plan_with_only_a_notice_mounts_nothing():
    """Guards the no-volume case: a plan that only carries the notice adds no volume."""
    from jupyter_dss_containers.workspace import WorkspacePlan

    spec = kernel_spec()
    spec.workspace = WorkspacePlan(notice="not visible")
    pod = valid(manifests.pod_manifest(config(), spec, "ns"))
    assert not any(v["name"] == "workspace" for v in pod["spec"]["volumes"])
    assert "fsGroupChangePolicy" not in pod["spec"]["securityContext"]
