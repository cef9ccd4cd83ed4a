"""``cleanup`` and the start-up reaper on a cluster with a namespace per user
(``namespace: dss-${user}``), on a fake cluster (tests/fake_kube).

Orphans (pods whose server is gone) sit in several users' namespaces; the reaper must find
those of the users the server knows (the file's ``groups:``) and those in namespaces the
backend created (when it may list namespaces), and no others: it never needs cluster-wide
pod listing.
"""

from __future__ import annotations

import secrets

import kubernetes.client
import kubernetes.config
import pytest

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.kubernetes.manifests import MANAGED_BY, label_values
from jupyter_dss_containers.config.parse import parse_config
from jupyter_dss_containers.reapscope import users_seen

pytestmark = pytest.mark.docker

CONFIG = "k8s-per-user"


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-r", docker_client, 10)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def setup(fake, workspace):
    """(config file, core API): alice and bob in ``groups:``; carol and dave unknown."""
    from fake_kube.server import write_kubeconfig

    kubeconfig = workspace / "kubeconfig-reap"
    write_kubeconfig(str(kubeconfig), {"fake-r": fake}, "fake-r")
    k8s = {"kubeconfig": str(kubeconfig), "context": "fake-r", "namespace": "dss-${user}"}
    document = {
        "groups": {"alice": ["analysts"], "bob": ["analysts"]},
        "execution_configs": {
            CONFIG: {"backend": "kubernetes", "image": "default", "kubernetes": k8s}
        },
    }
    config_file = parse_config(document, "reap.yaml")
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kubeconfig)))
    yield config_file, core
    fake.faults.clear()


def orphan(fake, core, user: str, managed_namespace: bool) -> str:
    """A pod of ``user``'s whose server is dead, in ``dss-<user>`` (made if needed, labelled
    as the backend labels the namespaces it creates, or as an admin's); its workload id."""
    namespace = f"dss-{user}"
    if namespace not in fake.namespaces:
        labels = dict(MANAGED_BY) if managed_namespace else {}
        core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    labels = ownership.workload_labels("kernel", CONFIG, user, kernel_id=f"k-{user}")
    labels[ownership.SERVER_ID] = "gone-host-1-deadbeef"  # no registry file: dead
    name = f"dss-kernel-orphan-{user}-{secrets.token_hex(3)}"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": label_values(labels)},
            "spec": {
                "nodeSelector": {"no-such": "node"},  # never runs: nothing to wait for
                "containers": [{"name": "kernel", "image": "default"}],
            },
        },
    )
    return f"{namespace}/{name}"


async def test_reaper_covers_the_namespaces_of_users_seen_and_created_ones(setup, fake):
    """Guards part 4: before, the reaper listed only this process's user's namespace, so
    other users' orphans stayed forever; it must not reach namespaces it has no reason to
    (carol's: not known, not created by us)."""
    config_file, core = setup
    alice = orphan(fake, core, "alice", managed_namespace=False)
    bob = orphan(fake, core, "bob", managed_namespace=False)
    dave = orphan(fake, core, "dave", managed_namespace=True)
    carol = orphan(fake, core, "carol", managed_namespace=False)
    configs = list(config_file.execution_configs.values())
    removed, skipped = await ownership.reap_orphans(configs, users=users_seen(config_file))
    assert not skipped, skipped
    assert sorted(w.id for w in removed) == sorted([alice, bob, dave])
    assert [p["metadata"]["name"] for p in fake.pods("dss-carol")] == [carol.split("/")[1]]
    core.delete_namespaced_pod(carol.split("/")[1], "dss-carol", grace_period_seconds=0)


async def test_without_namespace_listing_the_known_users_are_still_covered(setup, fake):
    """Guards the Role limited to named namespaces: a 403 on listing namespaces must not
    stop the reaper (it then looks in the known users' namespaces only)."""
    config_file, core = setup
    alice = orphan(fake, core, "alice", managed_namespace=False)
    dave = orphan(fake, core, "dave", managed_namespace=True)
    fake.faults.fail("namespaces", "list", times=10, status=403)
    configs = list(config_file.execution_configs.values())
    removed, skipped = await ownership.reap_orphans(configs, users=users_seen(config_file))
    assert not skipped, skipped
    assert [w.id for w in removed] == [alice]
    assert ("http-403", "namespaces", "list") in fake.faults.injected
    fake.faults.clear()
    removed, _ = await ownership.reap_orphans(configs, users=users_seen(config_file))
    assert [w.id for w in removed] == [dave]


def test_users_seen():
    """Guards where the users come from: the file's groups and the caller's extra names."""
    document = {"groups": {"alice": ["a"]}, "execution_configs": {}}
    config_file = parse_config(document, "x.yaml")
    assert users_seen(config_file, {"bob", ""}) == {"alice", "bob"}
    assert users_seen(None) == set()
