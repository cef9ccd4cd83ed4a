"""The workspace on a remote daemon: the local dockerd reached over mutual TLS (the endpoint
of tests/engines.py), which shares no disk with the server as far as the config says.

With ``workspace.host_path`` the kernel mounts that tree of the daemon's host (``${user}``
expanded) at the notebook's path and starts there, so a file it writes lands in the host
folder; without it the kernel still starts and its first output says the files are not
visible and which key an administrator sets; a job there runs on a copy of the caller's
folder, and its new files come back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from jupyter_client import AsyncKernelManager
from kernels import run, stop
from test_engines import Site, tls_block, tls_certs, tls_endpoint  # noqa: F401 (fixtures)

from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.jobs import JobRequest, JobService
from jupyter_dss_containers.permissions import process_identity
from jupyter_dss_containers.workspace import IMAGE_UID_GID, expand

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def remote_site(workspace, base_image, tls_endpoint, tls_certs):  # noqa: F811
    """Two configs on the TLS daemon: one naming a host_path, one not."""
    path = workspace / "remote-workspace.yaml"
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    site = Site(path)
    host_root = Path(tempfile.mkdtemp(prefix="dss-remote-host-", dir="/srv"))
    docker = tls_block(tls_endpoint, tls_certs)
    site.add("tls-shared", docker)
    site.configs["tls-shared"]["workspace"] = {"host_path": f"{host_root}/${{user}}"}
    site.add("tls-bare", docker)  # rewrites the file with both
    yield site, host_root
    os.environ.pop("DSS_CONTAINERS_CONFIG", None)
    shutil.rmtree(host_root, ignore_errors=True)


@pytest.fixture
def notebook(tmp_path) -> Path:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "data.csv").write_text("x\n1\n2\n")
    return folder.resolve()


async def started(kernel: str, folder: Path) -> tuple[AsyncKernelManager, object]:
    km = AsyncKernelManager(kernel_name=kernel)
    await km.start_kernel(cwd=str(folder))
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc


async def test_host_path_is_mounted_at_the_notebooks_path(remote_site, notebook):
    """Guards ``workspace.host_path`` on a remote daemon: the kernel starts at the
    notebook's path, where the daemon's host folder (the template with the user's folder
    name) is mounted, so a file it writes lands there and not in the server's folder (the
    config says they are not the same disk); no notice is printed."""
    site, host_root = remote_site
    user = process_identity(load_config(site.path)).username
    on_host = host_root / expand("${user}", user)
    on_host.mkdir()
    os.chown(on_host, *IMAGE_UID_GID)  # the image's user: the workspace root is root's
    km, kc = await started("dss-tls-shared", notebook)
    try:
        _, printed = await run(
            kc, "import os; open('out.txt', 'w').write('hi'); print(os.getcwd())"
        )
    finally:
        await stop(km, kc)
    assert printed.strip() == str(notebook), printed
    assert (on_host / "out.txt").read_text() == "hi"
    assert not (notebook / "out.txt").exists()


async def test_without_host_path_the_first_output_says_why(remote_site, notebook):
    """Guards the notice on a remote daemon: the kernel starts, and its first cell's output
    says the notebook's files are not visible, that the server's disk is not shared, and
    names ``workspace.host_path``; the second cell's does not repeat it."""
    km, kc = await started("dss-tls-bare", notebook)
    try:
        _, first = await run(kc, "print('one')")
        _, second = await run(kc, "print('two')")
    finally:
        await stop(km, kc)
    assert "notebook's files are not visible" in first
    assert "the server's disk is not shared" in first and "workspace.host_path" in first
    assert "not visible" not in second and "two" in second


@pytest.fixture
def srv_notebook():
    """A notebook folder outside /tmp (which is anyone's in the image): only the folder the
    backend makes for the job's user gives the copy its own path there."""
    top = Path(tempfile.mkdtemp(prefix="dss-remote-nb-", dir="/srv"))
    (top / "demo").mkdir()
    (top / "demo" / "data.csv").write_text("x\n1\n2\n")
    yield top / "demo"
    shutil.rmtree(top, ignore_errors=True)


async def test_a_job_without_host_path_runs_on_a_copy(remote_site, srv_notebook, monkeypatch):
    """Guards the snapshot on a remote Docker daemon: the job starts at the caller's own
    path (a folder of the job's user made there), reads the caller's file from its copy,
    and the file it writes comes back next to the caller's."""
    notebook = srv_notebook
    monkeypatch.chdir(notebook)
    service = JobService(config_file=str(remote_site[0].path))
    code = (
        "import os\nprint('cwd', os.getcwd())\n"
        "rows = open('data.csv').read().split()\nopen('n.txt', 'w').write(str(len(rows)))"
    )
    job = await service.submit(JobRequest("tls-bare", "python", code))
    job = await asyncio.wait_for(service.wait(job.id), 90)
    printed = "".join(text for _, text in job.output)
    assert job.state == "succeeded", printed
    assert f"runs on a copy of {notebook}" in printed
    assert f"cwd {notebook}\n" in printed
    assert (notebook / "n.txt").read_text() == "3"
