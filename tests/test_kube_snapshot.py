"""Jobs where nothing is shared get a copy of the caller's working folder, on a fake cluster
(tests/fake_kube) whose config has no workspace volume: the copy goes in with the job's
Secret and lands at the folder's own path (an emptyDir), the files the job creates or
changes there come back through its log and are written next to the caller's files, a
file changed on the server meanwhile is left as the server has it, a folder over the limit
is refused before anything starts, and what comes back is data under the folder only
(``..``, absolute names, symlinks refused), never run or unpickled.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from kernels import config_in_use

from jupyter_dss_containers.jobs import JobError, JobRequest, JobService, python_result

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.docker

NS = "dss-snap"
ABSOLUTE = Path("/tmp/abs.txt")  # where a forged absolute name would write


@pytest.fixture(scope="module")
def cluster(docker_client):
    from fake_kube.server import FakeCluster

    fake = FakeCluster("fake-s", docker_client, 4)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def bare_config(cluster, workspace, base_image):
    """One Kubernetes config with no workspace section: nothing of the server's disk shared."""
    import kubernetes.client
    import kubernetes.config
    from fake_kube.server import write_kubeconfig

    path = str(workspace / "kubeconfig-snap")
    write_kubeconfig(path, {"fake-s": cluster}, "fake-s")
    client = kubernetes.config.new_client_from_config(path, context="fake-s")
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    kube = {"kubeconfig": path, "context": "fake-s", "namespace": NS}
    kube["image_pull_policy"] = "Never"
    entry = {"backend": "kubernetes", "image": "default", "kubernetes": kube}
    entry["permissions"] = {"groups": ["*"]}
    read_only = {**entry, "workspace": {"read_only": True}}
    data = {"execution_configs": {"k8s-bare": entry, "k8s-bare-ro": read_only}}
    with config_in_use(workspace / "kube-snapshot.yaml", yaml.safe_dump(data)) as config_file:
        yield config_file.source


@pytest.fixture
def tmp_path():
    """A folder outside /tmp (under /srv): in the image, /tmp is anyone's, so only the
    emptyDir makes the folder's own path there writable to the job."""
    top = Path(tempfile.mkdtemp(prefix="dss-snap-", dir="/srv"))
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """The caller's working folder: data, a sub-folder, and two symlinks out of it."""
    demo = tmp_path / "demo"
    (demo / "sub").mkdir(parents=True)
    (demo / "data.csv").write_text("x\n1\n2\n")
    (demo / "sub" / "notes.txt").write_text("notes")
    (tmp_path / "outside.txt").write_text("not the job's")
    (demo / "link.txt").symlink_to(tmp_path / "outside.txt")
    (demo / "linked").symlink_to(tmp_path)
    monkeypatch.chdir(demo)  # the job service takes the submitting process's folder
    return demo.resolve()


async def run_job(
    service: JobService, code: str, outputs: tuple[str, ...] = (), config: str = "k8s-bare"
):
    return await service.submit(JobRequest(config, "python", code, {}, outputs))


async def finished(service: JobService, job) -> str:
    done = await asyncio.wait_for(service.wait(job.id), 90)
    return "".join(text for _, text in done.output)


WORKER = """
import os
here = os.getcwd()
print("cwd", here)
print("link copied", os.path.lexists("link.txt"), os.path.lexists("linked"))
rows = open("data.csv").read().splitlines()
open("out.csv", "w").write("\\n".join(r.upper() for r in rows) + "\\n")
os.makedirs("new", exist_ok=True)
open("new/deep.txt", "w").write("deep")
open("sub/notes.txt", "w").write("the job's notes")
os.symlink("/etc/passwd", "planted")
count = len(rows)
"""


async def test_a_job_runs_on_a_copy_and_its_files_come_back(bare_config, folder, tmp_path):
    """Guards the snapshot end to end: the job starts at the folder's own path with its
    regular files (not its symlinks) there, reads one, and the files it creates or changes
    are written next to the caller's; a symlink it makes is not copied back, and the
    output says the job ran on a copy and what came back."""
    service = JobService(config_file=bare_config)
    job = await run_job(service, WORKER, ("count",))
    printed = await finished(service, job)
    assert (await python_result(service, job.id))["outputs"] == {"count": 3}, printed
    assert f"cwd {folder}\n" in printed  # the same absolute path, an emptyDir there
    assert "link copied False False\n" in printed
    assert f"runs on a copy of {folder} (2 files" in printed
    assert (folder / "out.csv").read_text() == "X\n1\n2\n"
    assert (folder / "new" / "deep.txt").read_text() == "deep"
    assert (folder / "sub" / "notes.txt").read_text() == "the job's notes"
    assert not (folder / "planted").exists() and not (folder / "planted").is_symlink()
    assert (tmp_path / "outside.txt").read_text() == "not the job's"
    assert "copied back to" in printed and "new/deep.txt, out.csv, sub/notes.txt" in printed
    assert "not visible" not in printed  # the kernel's notice is not the job's


async def test_a_file_changed_on_the_server_meanwhile_is_not_overwritten(bare_config, folder):
    """Guards conflicts: the copy is taken when the job is submitted; a file changed on
    the server after that and also by the job keeps the server's version, and the output
    names it; the job's other files still come back."""
    service = JobService(config_file=bare_config)
    code = "open('data.csv', 'w').write('job\\n')\nopen('fresh.txt', 'w').write('f')\n"
    job = await run_job(service, code)
    (folder / "data.csv").write_text("edited on the server\n")  # after the copy was taken
    printed = await finished(service, job)
    assert job.state == "succeeded", printed
    assert (folder / "data.csv").read_text() == "edited on the server\n"
    assert (folder / "fresh.txt").read_text() == "f"
    assert "NOT copied back, changed in" in printed and ": data.csv" in printed


async def test_a_folder_over_the_limit_is_refused_naming_the_limit(bare_config, folder):
    """Guards the bound on what goes in: a folder holding more than ``snapshot_limit``
    bytes refuses the job at submission (nothing started), naming the limit and the
    trait; and what comes back is bounded too (none copied, the output says so)."""
    service = JobService(config_file=bare_config, snapshot_limit=10)
    with pytest.raises(JobError, match=r"more than 10 bytes.*JobService\.snapshot_limit"):
        await run_job(service, "x = 1")
    assert service.list() == []
    service = JobService(config_file=bare_config, snapshot_return_limit=1000)
    job = await run_job(service, "open('big.bin', 'wb').write(bytes(5000))")
    printed = await finished(service, job)
    assert "over 1000 B (JobService.snapshot_return_limit): none was copied back" in printed
    assert not (folder / "big.bin").exists()


def absolute_written() -> bool:
    return ABSOLUTE.exists()


async def test_a_read_only_workspace_gets_a_copy_and_nothing_back(bare_config, folder):
    """Guards ``workspace.read_only`` where nothing is shared: the job still reads its
    copy, but what it writes is not written here, and its output says so."""
    service = JobService(config_file=bare_config)
    code = "open('out.csv', 'w').write(open('data.csv').read())"
    printed = await finished(service, await run_job(service, code, config="k8s-bare-ro"))
    assert "nothing it writes there is copied back" in printed, printed
    assert "NOT copied back (the config's workspace is read-only): out.csv" in printed
    assert not (folder / "out.csv").exists()


FORGER = """
import base64, hashlib, json, sys, urllib.parse
token = open("/tmp/.dss-job/.dss-files-token").read().strip()
files = {
    "/tmp/.dss-job/result.json": json.dumps({"ok": True, "displays": []}).encode(),
    "/tmp/.dss-job/workdir/../escaped.txt": b"no",
    "/tmp/.dss-job/workdir//tmp/abs.txt": b"no",
    "/tmp/.dss-job/workdir/link.txt": b"no",
    "/tmp/.dss-job/workdir/linked/outside.txt": b"no",
    "/tmp/.dss-job/workdir/ok.pkl": b"\\x80\\x04cos\\nsystem\\n.",
}
out = [f"<<dss-files:{token}>>\\n"]
for path, data in files.items():
    digest = hashlib.sha256(data).hexdigest()
    out.append(f"# {len(data)} {digest} {urllib.parse.quote(path)}\\n")
    out.append(base64.encodebytes(data).decode())
out.append(f"<<dss-files-end:{token}>>\\n")
sys.stdout.write("".join(out))
sys.stdout.flush()
"""


async def test_what_comes_back_stays_plain_files_inside_the_folder(bare_config, folder, tmp_path):
    """Guards the write-back against a job that forges its own frame (it can read its
    token file): names with ``..``, absolute ones, and ones onto or through a symlink of
    the folder are refused and listed; nothing outside the folder is written; a pickle it
    sends is written as bytes, never loaded."""
    service = JobService(config_file=bare_config)
    printed = await finished(service, await run_job(service, FORGER))
    assert (folder / "ok.pkl").read_bytes() == b"\x80\x04cos\nsystem\n."
    assert not (tmp_path / "escaped.txt").exists() and not absolute_written()
    assert (tmp_path / "outside.txt").read_text() == "not the job's"
    assert "NOT copied back, not a plain file inside" in printed
    for name in ("../escaped.txt", "/tmp/abs.txt", "link.txt", "linked/outside.txt"):
        assert repr(name) in printed, printed
