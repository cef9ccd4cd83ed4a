"""The fake API server (tests/fake_kube) answers as a real one does, through the official
client: missing namespaces, Pod Security Admission, the three patch formats, owner-reference
garbage collection, set-based label and field selectors, logs of waiting containers, and
faults on every route. Each test names the leniency it guards against: a fake that agrees
with the backend rather than with Kubernetes lets the backend's bugs through.

Pods here mostly stay unscheduled (a node selector no node has) or wait on an image that
is not there, so that nothing runs; the kubelet still asks the Docker engine about them.
"""

from __future__ import annotations

import time

import kubernetes.client
import pytest
from fake_kube.podoutput import log_refusal
from fake_kube.server import FakeCluster
from kubernetes.client import ApiException

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.base import WorkloadSpec
from jupyter_dss_containers.backends.kubernetes import manifests
from jupyter_dss_containers.config import parse_config

pytestmark = pytest.mark.docker

UNSCHEDULABLE = {"nodeSelector": {"no-such": "node"}}  # nothing runs: the pod stays Pending


@pytest.fixture(scope="module")
def cluster(docker_client):
    fake = FakeCluster("fake-t", docker_client, 3)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def client(cluster) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration(host=cluster.url)
    configuration.api_key = {"authorization": "Bearer fake-token"}
    return kubernetes.client.ApiClient(configuration)


@pytest.fixture(scope="module")
def core(client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


_made = iter(range(10**6))


def new_namespace(core, labels: dict[str, str] | None = None) -> str:
    """A fresh namespace with these labels."""
    name = f"t-{next(_made)}"
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


@pytest.fixture
def namespace(core) -> str:
    return new_namespace(core)


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def pod(name: str, *, spec: dict | None = None, **metadata) -> dict:
    """A bare pod (no security context at all) that stays unscheduled."""
    return {
        "metadata": {"name": name, **metadata},
        "spec": {
            "containers": [{"name": "kernel", "image": "dss-containers/none:1"}],
            **UNSCHEDULABLE,
            **(spec or {}),
        },
    }


def hardened(name: str = "p") -> dict:
    """Our own kernel pod, as the backend builds it, placed nowhere."""
    config = parse_config(
        {"execution_configs": {"k": {"backend": "kubernetes", "image": "default"}}}, "inline"
    ).get("k")
    spec = WorkloadSpec(
        name=name,
        image="dss-containers/none:1",
        command=["python", "-m", "ipykernel_launcher"],
        labels=ownership.workload_labels("kernel", "k", "alice"),
        files={"/tmp/.dss-kernel/c.json": b"{}"},
        ports=(41000,),
    )
    built = manifests.pod_manifest(config, spec, "ignored")
    built["metadata"].pop("namespace")
    built["spec"].update(UNSCHEDULABLE)
    return built


def refused(call, *args, **kwargs) -> ApiException:
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    return info.value


def message(exc: ApiException) -> str:
    import json

    return json.loads(exc.body)["message"]


def eventually(check, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- namespaces


def test_a_missing_namespace_lists_empty_and_refuses_creates(core):
    """Guards the 404 on lists a real API server never gives (a list or watch in a missing
    namespace is empty): code that treats 404 as "no namespace" would pass the fake only."""
    assert core.list_namespaced_pod("nowhere").items == []
    assert core.list_namespaced_secret("nowhere", label_selector="a=b").items == []
    watched = kubernetes.watch.Watch().stream(
        core.list_namespaced_pod, "nowhere", timeout_seconds=1
    )
    assert list(watched) == []
    gone = refused(core.read_namespaced_pod, "x", "nowhere")
    assert gone.status == 404 and message(gone) == 'pods "x" not found'
    assert refused(core.delete_namespaced_secret, "x", "nowhere").status == 404
    missing = refused(core.create_namespaced_pod, "nowhere", pod("x"))
    assert missing.status == 404 and message(missing) == 'namespaces "nowhere" not found'


def test_names_and_labels_are_validated(core, namespace):
    """Guards the backend's label sanitizing: the fake refuses what the API server
    refuses (a label value with '@', an upper-case name) with its words."""
    bad = refused(core.create_namespaced_pod, namespace, pod("p", labels={"owner": "a@b.org"}))
    assert bad.status == 422
    assert message(bad).startswith(
        'Pod "p" is invalid: metadata.labels: Invalid value: "a@b.org": a valid label must be'
    )
    upper = refused(core.create_namespaced_secret, namespace, {"metadata": {"name": "Up"}})
    assert upper.status == 422 and "a lowercase RFC 1123 subdomain" in message(upper)
    made = core.create_namespaced_pod(namespace, pod("", generateName="gen-"))
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9


# --------------------------------------------------------------------------- pod security

BARE_RESTRICTED = (
    'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
    "allowPrivilegeEscalation != false "
    '(container "kernel" must set securityContext.allowPrivilegeEscalation=false), '
    'unrestricted capabilities (container "kernel" must set '
    'securityContext.capabilities.drop=["ALL"]), '
    'runAsNonRoot != true (pod or container "kernel" must set '
    "securityContext.runAsNonRoot=true), "
    'seccompProfile (pod or container "kernel" must set securityContext.seccompProfile.type '
    'to "RuntimeDefault" or "Localhost")'
)


def _breaking(change: str) -> dict:
    """Our hardened pod with one thing changed."""
    p = hardened()
    spec, sc = p["spec"], p["spec"]["securityContext"]
    csc = spec["containers"][0]["securityContext"]
    if change == "privileged":
        csc.update(privileged=True, allowPrivilegeEscalation=True)
    elif change == "sys_admin":
        csc["capabilities"]["add"] = ["SYS_ADMIN", "NET_RAW"]
    elif change == "no_drop":
        del csc["capabilities"]
    elif change == "no_run_as_non_root":
        del sc["runAsNonRoot"]
    elif change == "run_as_non_root_false":
        sc["runAsNonRoot"] = False
    elif change == "root":
        sc["runAsUser"] = 0
    elif change == "no_seccomp":
        del sc["seccompProfile"]
    elif change == "unconfined":
        csc["seccompProfile"] = {"type": "Unconfined"}
    elif change == "escalation":
        del csc["allowPrivilegeEscalation"]
    elif change == "host_path":
        spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    elif change == "host_network":
        spec["hostNetwork"] = True
    return p


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "privileged",
            'privileged (container "kernel" must not set securityContext.privileged=true), '
            'allowPrivilegeEscalation != false (container "kernel" must set '
            "securityContext.allowPrivilegeEscalation=false)",
        ),
        (
            "sys_admin",
            'unrestricted capabilities (container "kernel" must not include "NET_RAW", '
            '"SYS_ADMIN" in securityContext.capabilities.add)',
        ),
        (
            "no_drop",
            'unrestricted capabilities (container "kernel" must set '
            'securityContext.capabilities.drop=["ALL"])',
        ),
        (
            "no_run_as_non_root",
            'runAsNonRoot != true (pod or container "kernel" must set '
            "securityContext.runAsNonRoot=true)",
        ),
        (
            "run_as_non_root_false",
            "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        ),
        ("root", "runAsUser=0 (pod must not set runAsUser=0)"),
        (
            "no_seccomp",
            'seccompProfile (pod or container "kernel" must set '
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
        ),
        (
            "unconfined",
            'seccompProfile (container "kernel" must not set '
            'securityContext.seccompProfile.type to "Unconfined")',
        ),
        (
            "escalation",
            'allowPrivilegeEscalation != false (container "kernel" must set '
            "securityContext.allowPrivilegeEscalation=false)",
        ),
        (
            "host_path",
            'restricted volume types (volume "host" uses restricted volume type "hostPath")',
        ),
        ("host_network", "host namespaces (hostNetwork=true)"),
    ],
)
def test_restricted_namespace_refuses_each_breakage(core, cluster, change, expected):
    """Guards Pod Security Admission at ``restricted``: each weakening of our pod (the
    breakages a backend change could make) is refused with the plugin's message, and
    nothing is stored; the pod as the backend builds it is admitted."""
    namespace = new_namespace(core, RESTRICTED)
    exc = refused(core.create_namespaced_pod, namespace, _breaking(change))
    assert exc.status == 403
    assert (
        message(exc)
        == f'pods "p" is forbidden: violates PodSecurity "restricted:latest": {expected}'
    )
    assert cluster.pods(namespace) == []
    assert core.create_namespaced_pod(namespace, hardened("ours")).metadata.name == "ours"


def test_restricted_wording_of_a_bare_pod_and_what_it_allows(core):
    """Guards the message's order and format against the real server's (a bare pod's four
    violations, in the plugin's order) and the two things restricted allows that a too strict
    fake would refuse: adding NET_BIND_SERVICE and a Localhost seccomp profile."""
    namespace = new_namespace(core, RESTRICTED)
    assert message(refused(core.create_namespaced_pod, namespace, pod("p"))) == BARE_RESTRICTED
    allowed = hardened("allowed")
    csc = allowed["spec"]["containers"][0]["securityContext"]
    csc["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    csc["seccompProfile"] = {"type": "Localhost", "localhostProfile": "profiles/kernel.json"}
    core.create_namespaced_pod(namespace, allowed)


def test_baseline_namespace_refuses_only_baseline_breakages(core):
    """Guards the levels: baseline refuses privileged, host namespaces and hostPath (in its
    own words), and admits a bare pod that restricted would refuse."""
    labels = {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.31",
    }
    namespace = new_namespace(core, labels)
    core.create_namespaced_pod(namespace, pod("bare"))
    bad = pod(
        "p",
        spec={
            "hostPID": True,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [
                {"name": "kernel", "image": "i:1", "securityContext": {"privileged": True}}
            ],
        },
    )
    assert message(refused(core.create_namespaced_pod, namespace, bad)) == (
        'pods "p" is forbidden: violates PodSecurity "baseline:v1.31": '
        'host namespaces (hostPID=true), hostPath volumes (volume "root"), '
        'privileged (container "kernel" must not set securityContext.privileged=true)'
    )


def test_unlabelled_namespace_admits_anything_and_labels_apply_later(core, namespace):
    """Guards enforcement by label only: an unlabelled namespace admits a privileged pod;
    once labelled (a patch), the next such pod is refused."""
    core.create_namespaced_pod(namespace, _breaking("privileged"))
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    exc = refused(core.create_namespaced_pod, namespace, pod("later"))
    assert 'violates PodSecurity "restricted:latest"' in message(exc)


# --------------------------------------------------------------------------- patch


def test_strategic_merge_patch_merges_lists_by_their_keys(core, namespace):
    """Guards the shallow ``metadata.update`` patch: ownerReferences merge by uid (two
    owners kept), containers by name (an image change keeps the command), ``null`` deletes,
    ``$patch: delete`` removes one item."""
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s", "labels": {"a": "1"}}})
    owners = []
    for n in range(2):
        owner = core.create_namespaced_secret(namespace, {"metadata": {"name": f"o{n}"}})
        owners.append({"apiVersion": "v1", "kind": "Secret", "name": f"o{n}"})
        owners[-1]["uid"] = owner.metadata.uid
        core.patch_namespaced_secret(
            "s", namespace, {"metadata": {"ownerReferences": [owners[-1]]}}
        )
    patched = core.patch_namespaced_secret(
        "s", namespace, {"metadata": {"labels": {"a": None, "b": "2"}}}
    )
    assert [r.uid for r in patched.metadata.owner_references] == [o["uid"] for o in owners]
    assert patched.metadata.labels == {"b": "2"}
    removal = {"metadata": {"ownerReferences": [{"uid": owners[0]["uid"], "$patch": "delete"}]}}
    patched = core.patch_namespaced_secret("s", namespace, removal)
    assert [r.uid for r in patched.metadata.owner_references] == [owners[1]["uid"]]

    p = hardened("p")
    core.create_namespaced_pod(namespace, p)
    new_image = {"spec": {"containers": [{"name": "kernel", "image": "other:2"}]}}
    (container,) = core.patch_namespaced_pod("p", namespace, new_image).spec.containers
    assert (
        container.image == "other:2" and container.command == p["spec"]["containers"][0]["command"]
    )


def test_merge_patch_and_json_patch_follow_their_rfcs(core, namespace):
    """Guards the content types: a JSON merge patch replaces lists whole (RFC 7386), a JSON
    patch applies operations (RFC 6902) and fails as a whole when a ``test`` fails."""
    owners = [core.create_namespaced_secret(namespace, {"metadata": {"name": n}}) for n in "xy"]
    core.create_namespaced_secret(namespace, owned("s", owners[0]))
    core.patch_namespaced_secret("s", namespace, {"metadata": {"labels": {"a": "1"}}})
    merged = core.patch_namespaced_secret(
        "s",
        namespace,
        {"metadata": owned("s", owners[1])["metadata"]},
        _content_type="application/merge-patch+json",
    )
    assert [r.uid for r in merged.metadata.owner_references] == [owners[1].metadata.uid]
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "add", "path": "/data", "value": {"k": "dmFsdWU="}},
    ]
    patched = core.patch_namespaced_secret("s", namespace, ops)
    assert patched.metadata.labels == {"b": "2"} and patched.data == {"k": "dmFsdWU="}
    failing = [
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "test", "path": "/metadata/labels/b", "value": "nope"},
    ]
    exc = refused(core.patch_namespaced_secret, "s", namespace, failing)
    assert exc.status == 422 and "test failed" in message(exc)
    assert core.read_namespaced_secret("s", namespace).metadata.labels == {"b": "2"}


def test_patches_the_api_server_refuses(core, namespace):
    """Guards what an update may not do: change a pod's spec beyond its image (422), carry
    a stale resourceVersion (409), touch an immutable Secret's data (422), use server-side
    apply, which the fake does not implement (415)."""
    core.create_namespaced_pod(namespace, hardened("p"))
    env = {"spec": {"containers": [{"name": "kernel", "env": [{"name": "X", "value": "1"}]}]}}
    exc = refused(core.patch_namespaced_pod, "p", namespace, env)
    assert exc.status == 422
    assert message(exc).startswith('Pod "p" is invalid: spec: Forbidden: pod updates may not')
    stale = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    exc = refused(core.patch_namespaced_pod, "p", namespace, stale)
    assert exc.status == 409 and "the object has been modified" in message(exc)
    status = {"status": {"phase": "Running"}}  # status is a subresource: ignored here
    assert core.patch_namespaced_pod("p", namespace, status).status.phase == "Pending"
    secret = {"metadata": {"name": "frozen"}, "data": {"k": "YQ=="}, "immutable": True}
    core.create_namespaced_secret(namespace, secret)
    exc = refused(core.patch_namespaced_secret, "frozen", namespace, {"data": {"k": "Yg=="}})
    assert exc.status == 422 and "field is immutable when `immutable` is set" in message(exc)
    exc = refused(
        core.patch_namespaced_secret,
        "frozen",
        namespace,
        {"metadata": {"labels": {"a": "b"}}},
        _content_type="application/apply-patch+yaml",
        field_manager="t",
    )
    assert exc.status == 415


# --------------------------------------------------------------------------- garbage collection


def owned(name: str, owner) -> dict:
    ref = {"apiVersion": "v1", "kind": owner.kind or "Pod", "name": owner.metadata.name}
    ref["uid"] = owner.metadata.uid
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_owned_objects_go_with_their_owner(client, core, cluster, namespace):
    """Guards the backend's reliance on garbage collection: a Secret and a NetworkPolicy
    owned by a Pod, and a Secret owned by that Secret, are deleted once the Pod is; an
    object with another live owner loses only the reference; one whose owner never existed
    is collected too."""
    networking = kubernetes.client.NetworkingV1Api(client)
    owner = core.create_namespaced_pod(namespace, pod("owner"))
    keeper = core.create_namespaced_secret(namespace, {"metadata": {"name": "keeper"}})
    secret = core.create_namespaced_secret(namespace, owned("secret", owner))
    core.create_namespaced_secret(namespace, owned("grandchild", secret))
    two = owned("two-owners", owner)
    two["metadata"]["ownerReferences"] += owned("x", keeper)["metadata"]["ownerReferences"]
    core.create_namespaced_secret(namespace, two)
    policy = owned("policy", owner)
    policy["spec"] = {"podSelector": {}, "policyTypes": ["Ingress"]}
    networking.create_namespaced_network_policy(namespace, policy)
    assert {n for (ns, n) in cluster.objects["secrets"] if ns == namespace} == {
        "keeper", "secret", "grandchild", "two-owners"
    }  # fmt: skip
    core.delete_namespaced_pod("owner", namespace, grace_period_seconds=0)

    def secrets() -> set[str]:
        return {s.metadata.name for s in core.list_namespaced_secret(namespace).items}

    assert eventually(lambda: secrets() == {"keeper", "two-owners"}), secrets()
    assert networking.list_namespaced_network_policy(namespace).items == []
    survivor = core.read_namespaced_secret("two-owners", namespace)
    assert [r.uid for r in survivor.metadata.owner_references] == [keeper.metadata.uid]

    ghost = {"apiVersion": "v1", "kind": "Pod", "name": "ghost", "uid": "no-such-uid"}
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "dangling", "ownerReferences": [ghost]}}
    )
    assert eventually(lambda: "dangling" not in secrets())


def test_orphan_propagation_keeps_the_dependents(core, namespace):
    """Guards ``propagationPolicy``: Orphan strips the owner's reference and keeps the
    dependent; Foreground deletes the dependents with the owner."""
    owner = core.create_namespaced_secret(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(namespace, owned("child", owner))
    core.delete_namespaced_secret("owner", namespace, propagation_policy="Orphan")
    time.sleep(0.3)  # the collector runs in the background: give it a chance to err
    child = core.read_namespaced_secret("child", namespace)
    assert not child.metadata.owner_references
    owner = core.create_namespaced_secret(namespace, {"metadata": {"name": "owner2"}})
    core.create_namespaced_secret(namespace, owned("child2", owner))
    core.delete_namespaced_secret("owner2", namespace, propagation_policy="Foreground")
    assert refused(core.read_namespaced_secret, "child2", namespace).status == 404


# --------------------------------------------------------------------------- selectors


def test_set_based_label_selectors(core, namespace):
    """Guards selectors beyond ``a=1``: in, notin, exists, !key and != (which match objects
    without the label), and a 400 for one the API server cannot parse."""
    for name, labels in {"a": {"tier": "web", "x": "1"}, "b": {"tier": "db"}, "c": {}}.items():
        core.create_namespaced_secret(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        found = core.list_namespaced_secret(namespace, label_selector=selector).items
        return sorted(s.metadata.name for s in found)

    assert names("tier in (web, db)") == ["a", "b"]
    assert names("tier notin (web)") == ["b", "c"]
    assert names("tier!=db") == ["a", "c"]
    assert names("x") == ["a"]
    assert names("!x") == ["b", "c"]
    assert names("tier,!x") == ["b"]
    assert names("tier==web,x in (1,2)") == ["a"]
    for bad in ("tier in web", "tier=a b", "x@y=1", "tier=,"):
        exc = refused(core.list_namespaced_secret, namespace, label_selector=bad)
        assert exc.status == 400, bad


def test_field_selectors_and_the_unsupported_ones(core, namespace):
    """Guards field selectors beyond ``metadata.name``: status.phase and spec.nodeName on
    pods, type on secrets, ``!=``; an unsupported field is a 400 with the server's words."""
    core.create_namespaced_pod(namespace, pod("pending"))
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls"}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "plain"}})

    def pods(selector: str) -> list[str]:
        return [
            p.metadata.name
            for p in core.list_namespaced_pod(namespace, field_selector=selector).items
        ]

    assert pods("status.phase=Pending") == ["pending"]
    assert pods("status.phase!=Pending") == []
    assert pods("spec.nodeName=") == ["pending"]  # never scheduled: no node
    assert pods("metadata.name=pending,spec.restartPolicy=Always") == ["pending"]
    secrets = core.list_namespaced_secret(namespace, field_selector="type=kubernetes.io/tls")
    assert [s.metadata.name for s in secrets.items] == ["tls"]
    exc = refused(core.list_namespaced_pod, namespace, field_selector="spec.image=x")
    assert exc.status == 400 and message(exc) == "field label not supported: spec.image"
    exc = refused(core.list_namespaced_secret, namespace, field_selector="status.phase=x")
    assert exc.status == 400


def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(core, namespace):
    """Guards the watch filter: an object relabelled out of the selector is DELETED for that
    watch, one relabelled into it ADDED, as the API server's watch cache reports them."""
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s", "labels": {"a": "1"}}})
    version = core.list_namespaced_secret(namespace).metadata.resource_version
    core.patch_namespaced_secret("s", namespace, {"metadata": {"labels": {"a": "2"}}})
    core.patch_namespaced_secret("s", namespace, {"metadata": {"labels": {"a": "1"}}})
    events = kubernetes.watch.Watch().stream(
        core.list_namespaced_secret,
        namespace,
        label_selector="a=1",
        resource_version=version,
        timeout_seconds=1,
    )
    assert [(e["type"], e["object"].metadata.labels["a"]) for e in events] == [
        ("DELETED", "2"),
        ("ADDED", "1"),
    ]


# --------------------------------------------------------------------------- logs


def test_logs_of_a_container_that_never_started_are_refused(core, cluster, namespace):
    """Guards the ``200 ""`` a real API server never gives for a waiting container: 400 with
    the kubelet's words; an unscheduled pod's log is empty; a wrong container name is a
    400."""
    core.create_namespaced_pod(namespace, pod("unscheduled"))
    assert core.read_namespaced_pod_log("unscheduled", namespace) == ""
    placed = pod("waiting")
    del placed["spec"]["nodeSelector"]
    placed["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    core.create_namespaced_pod(namespace, placed)

    def waiting() -> bool:
        statuses = core.read_namespaced_pod("waiting", namespace).status.container_statuses
        return bool(statuses) and statuses[0].state.waiting.reason == "ErrImageNeverPull"

    assert eventually(waiting)
    exc = refused(core.read_namespaced_pod_log, "waiting", namespace)
    assert exc.status == 400
    assert message(exc) == (
        'container "kernel" in pod "waiting" is waiting to start: ErrImageNeverPull'
    )
    exc = refused(core.read_namespaced_pod_log, "waiting", namespace, follow=True)
    assert exc.status == 400
    exc = refused(core.read_namespaced_pod_log, "waiting", namespace, container="other")
    assert message(exc) == "container other is not valid for pod waiting"


def test_log_refusals_follow_the_kubelet():
    """Guards the kubelet's wording for each waiting state, and the container choice."""
    p = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"containerStatuses": [{"name": "a", "state": {"waiting": {}}}]},
    }
    assert log_refusal(p, None, False) == (
        "a container name must be specified for pod p, choose one of: [a b]"
    )
    assert log_refusal(p, "a", False) == (
        'container "a" in pod "p" is waiting to start: ContainerCreating'
    )
    assert log_refusal(p, "b", False) == 'container "b" in pod "p" is not available'
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull"}}
    assert log_refusal(p, "a", False) == (
        'container "a" in pod "p" is waiting to start: image can\'t be pulled'
    )
    p["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert log_refusal(p, "a", False) is None
    assert log_refusal(p, "a", True) == 'previous terminated container "a" in pod "p" not found'


# --------------------------------------------------------------------------- faults


def _calls(client, core, namespace):
    """(resource, verb, call) for every route the fake serves."""
    networking = kubernetes.client.NetworkingV1Api(client)
    auth = kubernetes.client.AuthorizationV1Api(client)
    metrics = kubernetes.client.CustomObjectsApi(client)
    review = {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}

    def watch() -> list:
        stream = kubernetes.watch.Watch().stream
        return list(stream(core.list_namespaced_pod, namespace, timeout_seconds=1))

    def pod_metrics() -> dict:
        group = ("metrics.k8s.io", "v1beta1")
        return metrics.get_namespaced_custom_object(*group, namespace, "pods", "f")

    unnamed = {"metadata": {}}
    return [
        ("version", "get", lambda: kubernetes.client.VersionApi(client).get_code()),
        ("namespaces", "list", core.list_namespace),
        ("namespaces", "get", lambda: core.read_namespace(namespace)),
        ("namespaces", "create", lambda: new_namespace(core)),
        ("namespaces", "patch", lambda: core.patch_namespace(namespace, unnamed)),
        (
            "selfsubjectaccessreviews",
            "create",
            lambda: auth.create_self_subject_access_review(review),
        ),
        ("pods", "list", lambda: core.list_namespaced_pod(namespace)),
        ("pods", "watch", watch),
        ("pods", "create", lambda: core.create_namespaced_pod(namespace, pod("f"))),
        ("pods", "get", lambda: core.read_namespaced_pod("f", namespace)),
        ("pods", "patch", lambda: core.patch_namespaced_pod("f", namespace, unnamed)),
        ("pods/log", "get", lambda: core.read_namespaced_pod_log("f", namespace)),
        ("podmetrics", "get", pod_metrics),
        ("pods", "delete", lambda: core.delete_namespaced_pod("f", namespace)),
        (
            "secrets",
            "create",
            lambda: core.create_namespaced_secret(namespace, {"metadata": {"name": "f"}}),
        ),
        ("networkpolicies", "list", lambda: networking.list_namespaced_network_policy(namespace)),
    ]


def test_faults_can_be_injected_on_every_route(client, core, cluster, namespace):
    """Guards fault injection beyond the namespaced kinds: each route fails once as armed
    (and only once), a 403 in RBAC's words, and then answers normally."""
    faults = cluster.faults
    faults.clear()
    try:
        for resource, verb, call in _calls(client, core, namespace):
            faults.fail(resource, verb, times=1, status=503)
            exc = refused(call)
            assert exc.status == 503, (resource, verb)
            assert faults.injected[-1] == ("http-503", resource, verb)
            try:
                call()
            except ApiException as again:  # a real answer (podmetrics: no container, 404)
                assert again.status == 404 and resource == "podmetrics", (resource, again)
        faults.fail("pods", "get", status=403)
        exc = refused(core.read_namespaced_pod, "f", namespace)
        assert message(exc) == (
            'pods "f" is forbidden: User "fake-user" cannot get resource "pods" in API group '
            f'"" in the namespace "{namespace}"'
        )
        faults.fail("namespaces", "create", status=403)
        exc = refused(core.create_namespace, {"metadata": {"name": "nope"}})
        assert message(exc).endswith(
            'cannot create resource "namespaces" in API group "" at the cluster scope'
        )
    finally:
        faults.clear()
