"""``jupyter dss-containers prepull``, run as a command: on a two-node fake cluster
(tests/fake_kube, whose DaemonSet controller runs one pod per node on the local engine and
whose nodes report the images their pods ran) and into a private second dockerd.

Checked against the fake only, never a real cluster (the README's Kubernetes section says
so): the DaemonSet formats are the real controller's, the nodes' ``status.images`` the
kubelet's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from conftest import need
from kubernetes.client.rest import ApiException
from test_code_envs import local_registry  # noqa: F401  (the fixture: a docker-registry)

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends import local_backend_for
from jupyter_dss_containers.backends.kubernetes import prepull
from jupyter_dss_containers.config import load_config

pytestmark = pytest.mark.docker

NAMESPACE = "default"


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-pp", docker_client, 13, nodes=2)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def setup(fake, workspace, base_image):
    """(config file path, the client's API client): ``k8s`` runs the base image anywhere,
    ``k8s-missing`` an image no node can pull, ``k8s-nowhere`` needs a node none is."""
    from fake_kube.server import write_kubeconfig

    kubeconfig = workspace / "kubeconfig-prepull"
    write_kubeconfig(str(kubeconfig), {"fake-pp": fake}, "fake-pp")
    k8s = {"kubeconfig": str(kubeconfig), "context": "fake-pp", "namespace": NAMESPACE}
    document = {
        "execution_configs": {
            "k8s": {"backend": "kubernetes", "image": "default", "kubernetes": k8s},
            "k8s-missing": {
                "backend": "kubernetes",
                "image": "dss-containers/never-built:1",
                "kubernetes": k8s,
            },
            "k8s-nowhere": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": {**k8s, "node_selector": {"pool": "gpu"}},
            },
        }
    }
    path = workspace / "prepull.yaml"
    path.write_text(yaml.safe_dump(document))
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    return str(path), client


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command itself (this tree first on the path: PYTHONPATH is inherited)."""
    return subprocess.run(
        ["jupyter", "dss-containers", "prepull", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def image_of(path: str, name: str) -> str:
    from jupyter_dss_containers.prepull import config_image

    config_file = load_config(path)
    return config_image(config_file, config_file.get(name), None)


def sets(client) -> list:
    apps = kubernetes.client.AppsV1Api(client)
    return apps.list_namespaced_daemon_set(NAMESPACE).items


def wait_no_daemon_pods(client, deadline: float = 60) -> list:
    """The set's pods go in the background (the garbage collector): wait for that."""
    core = kubernetes.client.CoreV1Api(client)
    end = time.monotonic() + deadline
    while True:
        left = core.list_namespaced_pod(NAMESPACE, label_selector=prepull.SET_LABEL).items
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


def test_the_fake_runs_a_daemon_set_as_the_controller_does(fake, setup, base_image):
    """Guards the fake the prepull tests stand on: one pod per node, pinned there and owned
    by the set, the controller's status counts, a tainted node skipped unless tolerated,
    the API server's 422 for a selector that misses the template, and the pods
    garbage-collected with the set."""
    _, client = setup
    apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
    labels = {"app": "fake-ds-check"}
    body = {
        "metadata": {"name": "fake-ds-check"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "image": base_image, "command": ["sleep", "600"]}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_daemon_set(
            NAMESPACE, {**body, "spec": {**body["spec"], "selector": {"matchLabels": {"x": "y"}}}}
        )
    assert refused.value.status == 422 and "`selector` does not match template" in (
        refused.value.body
    )
    fake.add_node("fake-pp-tainted", taints=[{"key": "dedicated", "effect": "NoSchedule"}])
    try:
        created = apps.create_namespaced_daemon_set(NAMESPACE, body)
        assert created.metadata.generation == 1 and created.status.number_misscheduled == 0
        deadline = time.monotonic() + 60
        while (
            ds := apps.read_namespaced_daemon_set("fake-ds-check", NAMESPACE)
        ).status.number_ready < 2:
            assert time.monotonic() < deadline, ds.status
            time.sleep(0.2)
        assert ds.status.desired_number_scheduled == ds.status.current_number_scheduled == 2
        assert ds.status.updated_number_scheduled == ds.status.number_available == 2
        assert ds.status.number_misscheduled == 0 and ds.status.number_unavailable is None
        assert ds.status.observed_generation == 1
        pods = core.list_namespaced_pod(NAMESPACE, label_selector="app=fake-ds-check").items
        assert sorted(p.spec.node_name for p in pods) == ["fake-pp-node", "fake-pp-node-2"]
        for p in pods:
            (owner,) = p.metadata.owner_references
            assert (owner.kind, owner.uid, owner.controller) == ("DaemonSet", ds.metadata.uid, True)
            assert p.metadata.name.startswith("fake-ds-check-")
            assert p.metadata.labels["pod-template-generation"] == "1"
        apps.delete_namespaced_daemon_set("fake-ds-check", NAMESPACE)
        left = core.list_namespaced_pod(NAMESPACE, label_selector="app=fake-ds-check").items
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = core.list_namespaced_pod(NAMESPACE, label_selector="app=fake-ds-check").items
        assert not left
    finally:
        fake.call(_drop_node, fake, "fake-pp-tainted")


async def _drop_node(fake, name: str) -> None:
    fake.nodes.labels[:] = [n for n in fake.nodes.labels if n["kubernetes.io/hostname"] != name]


def test_prepull_on_two_nodes_leaves_the_image_on_both_and_no_daemon_set(setup):
    """Guards part 3: after ``prepull k8s`` both nodes report the image in
    ``status.images`` (a pod of it ran on each), the progress named each node, and the
    DaemonSet is gone (and its pods with it)."""
    path, client = setup
    image = image_of(path, "k8s")
    done = cli("k8s", "--config", path)
    assert done.returncode == 0, done.stderr
    assert "node fake-pp-node: ready" in done.stderr
    assert "node fake-pp-node-2: ready" in done.stderr
    assert "on 2 nodes" in done.stdout and "removed" in done.stdout
    nodes = kubernetes.client.CoreV1Api(client).list_node().items
    assert len(nodes) == 2
    for node in nodes:
        names = [n for i in node.status.images for n in i.names]
        assert image in names, (node.metadata.name, names)
    assert sets(client) == []
    assert wait_no_daemon_pods(client) == []


def test_a_slow_pull_is_waited_for_and_reported_node_by_node(fake, setup):
    """Guards progress: while both nodes pull (the fake kubelet holds the pull) the command
    waits, saying each node is pulling, not failing; it ends once both are ready."""
    from fake_kube import events

    path, client = setup
    image = image_of(path, "k8s")
    release = threading.Event()
    fake.kubelet.pulls.hold(image, release=release)
    try:
        command = subprocess.Popen(
            ["jupyter", "dss-containers", "prepull", "k8s", "--config", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while True:  # both daemon pods are pulling
            pulling = [
                e
                for (_, name), pod in list(fake.objects["pods"].items())
                if name.startswith("dss-prepull-k8s-")
                for e in events.about(fake.store, NAMESPACE, name)
                if e["reason"] == "Pulling"
            ]
            if len(pulling) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(pulling) == 2
        time.sleep(2)  # two polls of the command's
        assert command.poll() is None  # a pull in progress is not a failure
        release.set()
        out, err = command.communicate(timeout=120)
    finally:
        release.set()
        fake.kubelet.pulls.clear()
    assert command.returncode == 0, err
    lines = err.splitlines()
    for node in ("fake-pp-node", "fake-pp-node-2"):
        said = [line for line in lines if line.startswith(f"k8s: node {node}: ")]
        assert f"k8s: node {node}: pulling (ContainerCreating)" in said, lines
        assert said[-1] == f"k8s: node {node}: ready", lines  # after the pulling line
    assert sets(client) == []


def test_keep_keeps_the_set_the_reaper_leaves_it_and_remove_deletes_it(fake, setup):
    """Guards ``--keep`` and reaping: the kept set stays (labelled kept) after the command
    ends and a node that joins then gets the image too; the start-up reaper / ``cleanup``
    leave it though its maker is gone; ``prepull --remove`` deletes it. A set whose maker
    died without ``--keep`` is an orphan the reaper removes (it knows the DaemonSet kind)."""
    path, client = setup
    kept = cli("k8s", "--config", path, "--keep", "--json")
    assert kept.returncode == 0, kept.stderr
    (row,) = json.loads(kept.stdout)  # stdout is the JSON alone
    assert row["kept"] is True and row["holding"] == ["fake-pp-node", "fake-pp-node-2"]
    (ds,) = sets(client)
    assert ds.metadata.name == row["daemon_set"]
    assert ds.metadata.labels[ownership.KEEP] == "true"
    fake.add_node("fake-pp-late")  # a node that joins later pulls through the kept set
    try:
        core = kubernetes.client.CoreV1Api(client)
        deadline = time.monotonic() + 60
        while image_of(path, "k8s") not in [
            n for i in core.read_node("fake-pp-late").status.images for n in i.names
        ]:
            assert time.monotonic() < deadline, core.read_node("fake-pp-late").status.images
            time.sleep(0.2)
    finally:
        fake.call(_drop_node, fake, "fake-pp-late")
    config = load_config(path).get("k8s")
    removed, skipped = asyncio.run(ownership.reap_orphans([config]))
    assert not skipped and removed == []
    backend = local_backend_for(config)  # what cleanup, the launcher and the server list
    set_id = prepull.set_id(NAMESPACE, ds.metadata.name)
    assert set_id in [w.id for w in asyncio.run(backend.list({}))]
    assert set_id not in [w.id for w in asyncio.run(backend.list({ownership.KIND: "kernel"}))]
    assert [s.metadata.name for s in sets(client)] == [ds.metadata.name]
    gone = cli("k8s", "--config", path, "--remove")
    assert gone.returncode == 0, gone.stderr
    assert sets(client) == []
    # an orphan: a set (not kept) whose process is gone
    labels = ownership.workload_labels(prepull.KIND, "k8s", "alice")
    labels[ownership.SERVER_ID] = "gone-host-1-deadbeef"
    manifest = prepull.daemon_set_manifest(config, "no-such/image:1", NAMESPACE, labels)
    kubernetes.client.AppsV1Api(client).create_namespaced_daemon_set(NAMESPACE, manifest)
    removed, skipped = asyncio.run(ownership.reap_orphans([config]))
    assert not skipped
    assert [w.id for w in removed] == [prepull.set_id(NAMESPACE, manifest["metadata"]["name"])]
    assert sets(client) == []
    assert wait_no_daemon_pods(client) == []


def test_a_pull_failure_names_the_node_and_the_reason_and_leaves_nothing(setup):
    """Guards the failure report: an image no node can pull fails the command with each
    node's name and the kubelet's reason (ErrImagePull), not a timeout; the set goes."""
    path, client = setup
    failed = cli("k8s-missing", "--config", path, "--timeout", "120")
    assert failed.returncode == 1
    assert "ErrImagePull" in failed.stderr and "dss-containers/never-built:1" in failed.stderr
    assert "node fake-pp-node" in failed.stderr and "Traceback" not in failed.stderr
    assert sets(client) == []
    assert wait_no_daemon_pods(client) == []


def test_missing_rights_are_said_before_anything_is_made(fake, setup):
    """Guards RBAC: an account that may create DaemonSets but not delete them would leave
    one behind; the command asks first (SelfSubjectAccessReview) and names the verb."""
    path, client = setup
    fake.denied.add(("delete", "daemonsets"))
    try:
        refused = cli("k8s", "--config", path)
    finally:
        fake.denied.discard(("delete", "daemonsets"))
    assert refused.returncode == 1
    assert "not allowed to delete daemonsets" in refused.stderr
    assert sets(client) == []


def test_no_matching_node_is_said_at_once(setup):
    """Guards the empty set: a config whose node selector no node matches fails with that
    selector named, not after the timeout."""
    path, client = setup
    failed = cli("k8s-nowhere", "--config", path, "--timeout", "600")
    assert failed.returncode == 1
    assert "no node can run execution config 'k8s-nowhere'" in failed.stderr
    assert "{'pool': 'gpu'}" in failed.stderr
    assert sets(client) == []


# --------------------------------------------------------------------------- Docker


@pytest.fixture(scope="module")
def empty_daemon(workspace, base_image):
    """A private dockerd without the base image (the shared one is never restarted)."""
    if os.geteuid() != 0:
        need("a private dockerd needs root")
    if not shutil.which("dockerd") or not shutil.which("ip"):
        need("dockerd and ip (iproute2) are needed for a private daemon")
    from test_faults import PrivateDockerd

    daemon = PrivateDockerd(workspace / f"dockerd-prepull-{os.getpid()}")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def test_docker_prepull_copies_the_image_into_the_configs_daemon(empty_daemon, tmp_path):
    """Guards the Docker half: a config over two daemons (``docker.hosts``) without a
    registry gets its image copied from the local daemon (streamed) into the one without it
    and leaves the other alone; a second run finds it on both."""
    import docker

    document = {
        "execution_configs": {
            "private": {
                "backend": "docker",
                "image": "default",
                "docker": {
                    "hosts": [
                        {"name": "here", "host": "unix:///var/run/docker.sock"},
                        {"name": "private", "host": empty_daemon.url},
                    ]
                },
            }
        }
    }
    path = tmp_path / "docker.yaml"
    path.write_text(yaml.safe_dump(document))
    image = image_of(str(path), "private")
    target = docker.DockerClient(base_url=empty_daemon.url, timeout=60)
    assert not target.images.list(name=image.split(":")[0])
    copied = cli("private", "--config", str(path))
    assert copied.returncode == 0, copied.stderr
    assert f"copied {image} to {empty_daemon.url}" in copied.stdout
    assert f"{image} is already on unix:///var/run/docker.sock" in copied.stdout
    assert target.images.get(image).tags == [image]
    again = cli("private", "--config", str(path))
    assert again.returncode == 0, again.stderr
    assert f"{image} is already on {empty_daemon.url}" in again.stdout


def test_docker_prepull_pulls_from_the_configs_registry(
    empty_daemon,
    local_registry,  # noqa: F811
    docker_client,
    base_image,
    tmp_path,
):
    """Guards the registry path: a config with a registry gets its image pulled by the
    daemon from that registry (a real docker-registry on 127.0.0.1), not copied."""
    import docker

    from jupyter_dss_containers.images import push_image

    registry = f"127.0.0.1:{local_registry}"
    push_image(docker_client, base_image, registry)
    document = {
        "execution_configs": {
            "private-reg": {
                "backend": "docker",
                "image": "default",
                "registry": registry,
                "docker": {"host": empty_daemon.url},
            }
        }
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(document))
    image = image_of(str(path), "private-reg")
    assert image.startswith(registry + "/")
    pulled = cli("private-reg", "--config", str(path))
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {image} on {empty_daemon.url}" in pulled.stdout
    target = docker.DockerClient(base_url=empty_daemon.url, timeout=60)
    assert image in target.images.get(image).tags
