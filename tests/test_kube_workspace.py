"""The workspace on Kubernetes, against a fake cluster (tests/fake_kube) whose kubelet backs
each PersistentVolumeClaim with a host folder: a kernel pod mounts the config's claim at
the notebook's path with the user's sub-path and starts in the notebook's folder, so a
file the kernel writes lands in the claim; a config with no volume tells the user so in
the first cell's output; a missing claim is reported with the scheduler's words.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from jupyter_client import AsyncKernelManager
from kernels import config_in_use, run, stop

from jupyter_dss_containers.config import expand_user
from jupyter_dss_containers.permissions import process_identity
from jupyter_dss_containers.provisioner import KernelStartError
from jupyter_dss_containers.workspace import expand

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.docker

NS = "dss-ws"


@pytest.fixture(scope="module")
def cluster(docker_client):
    from fake_kube.server import FakeCluster

    fake = FakeCluster("fake-w", docker_client, 4)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def core(cluster, workspace) -> kubernetes.client.CoreV1Api:
    from fake_kube.server import write_kubeconfig

    path = str(workspace / "kubeconfig-ws")
    write_kubeconfig(path, {"fake-w": cluster}, "fake-w")
    client = kubernetes.config.new_client_from_config(path, context="fake-w")
    api = kubernetes.client.CoreV1Api(client)
    api.create_namespace({"metadata": {"name": NS}})
    return api


@pytest.fixture(scope="module")
def ws_config(core, workspace, base_image):
    kube = {
        "kubeconfig": str(workspace / "kubeconfig-ws"),
        "context": "fake-w",
        "namespace": NS,
        "image_pull_policy": "Never",
    }

    def entry(ws: dict | None) -> dict:
        data = {"backend": "kubernetes", "image": "default", "kubernetes": kube}
        data["permissions"] = {"groups": ["*"]}
        return {**data, **({"workspace": ws} if ws is not None else {})}

    data = {
        "execution_configs": {
            "ws-home": entry({"volume": "home-${user}", "sub_path": "${user}/work"}),
            "ws-bare": entry(None),
            "ws-noclaim": entry({"volume": "nobody-${user}"}),
        }
    }
    with config_in_use(workspace / "kube-workspace.yaml", yaml.safe_dump(data)) as config_file:
        yield config_file


def claim(core, name: str) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    core.create_namespaced_persistent_volume_claim(NS, body)


async def start_in(kernel: str, folder: Path) -> tuple[AsyncKernelManager, object]:
    km = AsyncKernelManager(kernel_name=kernel)
    await km.start_kernel(cwd=str(folder))
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc


async def test_kernel_writes_into_the_claim_at_the_notebooks_path(
    ws_config, cluster, core, tmp_path
):
    """Guards the workspace volume end to end: the pod names the claim, mounts it at the
    notebook's path with the user's sub-path and starts there; a file written in the
    working directory appears in the claim's folder on the node (and not on the server's
    disk, which the cluster does not share)."""
    user = process_identity(ws_config).username
    name = expand_user("home-${user}", user)
    claim(core, name)
    assert core.read_namespaced_persistent_volume_claim(name, NS).status.phase == "Bound"
    folder = tmp_path / "demo"
    folder.mkdir()
    real = str(folder.resolve())
    km, kc = await start_in("dss-ws-home", folder)
    try:
        _, printed = await run(
            kc, "import os; open('out.csv', 'w').write('a,b\\n1,2\\n'); print(os.getcwd())"
        )
        assert printed.strip() == real
        pod_name = km.provisioner.workload_id.split("/", 1)[1]
        pod = core.read_namespaced_pod(pod_name, NS)
        (volume,) = [v for v in pod.spec.volumes if v.persistent_volume_claim]
        assert volume.persistent_volume_claim.claim_name == name
        (mount,) = [m for m in pod.spec.containers[0].volume_mounts if m.name == volume.name]
        assert mount.mount_path == real
        assert mount.sub_path == expand("${user}/work", user)
    finally:
        await stop(km, kc)
    written = Path(cluster.kubelet.claims.folder(NS, name), expand("${user}/work", user))
    assert (written / "out.csv").read_text() == "a,b\n1,2\n"
    assert not (folder / "out.csv").exists()


async def test_no_volume_the_first_cell_says_the_files_are_not_visible(ws_config, tmp_path):
    """Guards the notice: on a cluster config without a workspace volume the kernel starts
    and the first cell's output says the notebook's files are not visible (and which key
    an administrator sets); the second cell's does not repeat it."""
    km, kc = await start_in("dss-ws-bare", tmp_path)
    try:
        _, first = await run(kc, "print('one')")
        _, second = await run(kc, "print('two')")
    finally:
        await stop(km, kc)
    assert "notebook's files are not visible" in first and "workspace.volume" in first
    assert "not visible" not in second and "two" in second


async def test_a_missing_claim_is_reported_in_the_schedulers_words(ws_config, tmp_path):
    """Guards the failure path: a config naming a claim that does not exist fails the start
    with the scheduler's ``persistentvolumeclaim "..." not found`` (the pod Pending,
    Unschedulable), not a timeout or a pod without the user's files."""
    user = process_identity(ws_config).username
    km = AsyncKernelManager(kernel_name="dss-ws-noclaim")
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel(cwd=str(tmp_path))
    wanted = f'persistentvolumeclaim "{expand_user("nobody-${user}", user)}" not found'
    assert wanted in str(info.value)
