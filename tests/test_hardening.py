"""A read-only root filesystem on the real Docker engine: the kernel starts and works, writes
land only in /tmp and HOME, and nothing (the /tmp volume included) outlives the kernel."""

from __future__ import annotations

import asyncio

import docker.errors
import pytest
from conftest import leftover_containers
from kernels import READ_ONLY_PROBE, config_in_use, run, start, stop

from jupyter_dss_containers.config import ConfigError, load_config

pytestmark = pytest.mark.docker

CONFIG = """
execution_configs:
  read-only:
    backend: docker
    image: default
    read_only_root: true
    docker: {resources: {memory: 256m}}
    permissions: {groups: ["*"]}
  read-only-tcp:
    backend: docker
    image: default
    read_only_root: true
    transport: tcp
    docker: {resources: {memory: 256m}}
    permissions: {groups: ["*"]}
"""


@pytest.fixture(scope="module")
def read_only_config(workspace, base_image):
    with config_in_use(workspace / "read-only.yaml", CONFIG) as config_file:
        yield config_file


@pytest.mark.parametrize("kind", ["ipc", "tcp"])
async def test_read_only_root_kernel_writes_only_to_tmp_and_home(
    read_only_config, docker_client, kind
):
    """On both transports: the kernel's socket folder is mounted inside the /tmp volume."""
    km, kc = await start("dss-read-only" + ("-tcp" if kind == "tcp" else ""))
    assert km.transport == kind
    container = docker_client.containers.get(km.provisioner.workload_id)
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    (volume,) = [m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == "/tmp"]
    reply, printed = await run(kc, READ_ONLY_PROBE)
    assert reply["status"] == "ok", printed
    lines = printed.splitlines()
    assert lines[0] == "root: EROFS Read-only file system", printed
    assert lines[1] == "tmp ok home ok"
    uid, home = lines[2].split()
    assert uid != "0" and home in host["Tmpfs"]
    await stop(km, kc)
    assert leftover_containers(docker_client, kernel_id=km.kernel_id) == []
    with pytest.raises(docker.errors.NotFound):  # the /tmp volume went with the container
        docker_client.volumes.get(volume)


@pytest.mark.parametrize(
    ("fragment", "where"),
    [
        ("read_only_root: yes-please", "execution_configs.x.read_only_root"),
        (
            "kubernetes: {network_policy: {allow_from: [not-a-cidr]}}",
            "execution_configs.x.kubernetes.network_policy.allow_from[0]",
        ),
        (
            "kubernetes: {network_policy: {allow_from: [{podSelektor: {}}]}}",
            "execution_configs.x.kubernetes.network_policy.allow_from[0]",
        ),
        (
            "kubernetes: {network_policy: {enabled: true, allow: []}}",
            "execution_configs.x.kubernetes.network_policy",
        ),
        (
            "read_only_root: true\n    docker: {mounts: [{source: /srv, target: /tmp/}]}",
            "execution_configs.x.docker.mounts[0].target",
        ),
    ],
)
def test_bad_hardening_keys_are_refused_with_the_place(tmp_path, fragment, where):
    path = tmp_path / "bad.yaml"
    backend = "kubernetes" if fragment.startswith("kubernetes") else "docker"
    path.write_text(
        f"execution_configs:\n  x:\n    backend: {backend}\n    image: default\n    {fragment}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (line,) = str(caught.value).splitlines()
    assert f"{path}: {where}: " in line, line
    assert "expected" in line or "unknown key" in line, line


def test_hardening_keys_parse():
    from jupyter_dss_containers.backends.kubernetes import KubernetesSettings
    from jupyter_dss_containers.config import parse_config

    config = parse_config(
        {
            "execution_configs": {
                "k": {
                    "backend": "kubernetes",
                    "image": "default",
                    "read_only_root": True,
                    "kubernetes": {"network_policy": {"allow_from": ["10.0.0.0/8"]}},
                },
                "d": {"backend": "docker", "image": "default"},
            }
        },
        "inline",
    )
    assert config.get("k").read_only_root and not config.get("d").read_only_root
    settings = config.get("k").kubernetes
    assert isinstance(settings, KubernetesSettings)
    assert settings.network_policy and settings.allow_from == ("10.0.0.0/8",)
    assert KubernetesSettings.from_dict({}).network_policy  # on by default


async def test_python_job_on_a_read_only_root_returns_its_result(
    tmp_path, docker_client, base_image
):
    """The job's payload goes into the /tmp volume before the start; its result comes back
    out of it after the exit; and the job's root is read-only, as the job itself finds when
    it writes there (guards against job containers' root left writable: only kernels'
    were checked; ``benchmarks/breakages.py``)."""
    import yaml
    from job_images import job_image

    from jupyter_dss_containers.jobs import JobRequest, JobService, python_result

    config = {
        "backend": "docker",
        "image": job_image(docker_client, base_image),
        "read_only_root": True,
        "permissions": {"groups": ["*"]},
    }
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump({"execution_configs": {"ro-jobs": config}}))
    service = JobService(config_file=str(path))
    code = (
        "import errno, os, pathlib\n"
        "pathlib.Path('/tmp/x').write_text('1')\n"
        "home = pathlib.Path(os.environ['HOME'], 'y').write_text('1')\n"
        "root = {}\n"
        "for place in ('/probe', '/usr/probe', '/etc/probe'):\n"
        "    try:\n"
        "        open(place, 'w').close()\n"
        "        root[place] = 'written'\n"
        "    except OSError as exc:\n"
        "        root[place] = errno.errorcode[exc.errno]\n"
        "total = sum(numbers)"
    )
    request = JobRequest("ro-jobs", "python", code, {"numbers": [1, 2, 3]}, ("total", "root"))
    job = await asyncio.wait_for(service.wait((await service.submit(request)).id), 60)
    outputs = (await python_result(service, job.id))["outputs"]
    assert outputs["total"] == 6
    # EROFS, not EACCES: the job's user may not write there anyway, the root must refuse all
    assert outputs["root"] == dict.fromkeys(("/probe", "/usr/probe", "/etc/probe"), "EROFS")
    assert leftover_containers(docker_client, job_id=job.id) == []
