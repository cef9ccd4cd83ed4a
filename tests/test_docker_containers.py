"""The Docker backend's pure builders, with no engine: the create request a workload's
container is made from, as the daemon receives it (the SDK's ``ContainerConfig`` body with
its ``HostConfig``), for kernels on both transports and for jobs.

Every test names the breakage it guards. The engine-side proofs (the same promises read
back from ``docker inspect`` of running kernels) are in test_kernel_docker.py,
test_hardening.py and test_transport.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile

import pytest
from docker.types import ContainerConfig

from jupyter_dss_containers import ownership, transport
from jupyter_dss_containers.backends.base import BackendError, WorkloadSpec
from jupyter_dss_containers.backends.docker import (
    DEFAULT_USER,
    ISOLATED_NETWORK,
    READ_ONLY_HOME,
    container_user,
    create_args,
    files_root,
    gpu_request,
    host_config_args,
    image_home,
    image_user,
    private_tar,
    split_files,
)
from jupyter_dss_containers.config import DEFAULT_MEMORY, DEFAULT_PIDS, parse_config, parse_size
from jupyter_dss_containers.launcher import CONNECTION_FILE, KernelLaunch, plan_launch
from jupyter_dss_containers.workspace import WorkspacePlan, WorkspaceSettings, resolve_plan

API = "1.41"  # the engine's API version on these machines
FOLDER = "/run/dss-kernels/0123456789abcdef0123456789abcdef"
KEY = b"the-hmac-key-0123456789abcdef"
IMAGE = "dss-containers/base-default:x"
JOB_FILES = {"/tmp/dss-job/runner.py": b"print(1)", "/tmp/dss-job/payload.pkl": b"\x80\x04."}


def config(name: str = "c", **fields):
    """An execution config parsed as the file would be (so the schema checks it too)."""
    data = {"backend": "docker", "image": "default", **fields}
    return parse_config({"execution_configs": {name: data}}, "inline").get(name)


def kernel_spec(cfg, kind: str = "ipc", workspace: WorkspacePlan | None = None) -> WorkloadSpec:
    """The spec the provisioner would create, from the launcher's own pure planner."""
    launch = KernelLaunch(
        config=cfg,
        image=IMAGE,
        command=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        name="dss-kernel-abc",
        labels=ownership.workload_labels("kernel", cfg.name, "alice", kernel_id="abc"),
        key=KEY,
        workspace=workspace,
    )
    ports = tuple(41000 + i for i in range(5)) if kind == "tcp" else ()
    spec, _ = plan_launch(launch, kind, FOLDER if kind == "ipc" else None, ports)
    return spec


def job_spec(workspace: WorkspacePlan | None = None) -> WorkloadSpec:
    """A job's spec as the job service makes it: no ports, private files under /tmp."""
    return WorkloadSpec(
        name="dss-job-1",
        image=IMAGE,
        command=["python", "-u", "/tmp/dss-job/runner.py"],
        labels=ownership.workload_labels("job", "c", "alice", job_id="1"),
        env={"PYTHONUNBUFFERED": "1"},
        files=dict(JOB_FILES),
        workspace=workspace,
    )


def body(args: dict) -> dict:
    """The JSON body of ``POST /containers/create``, as the SDK sends it."""
    rest = {k: v for k, v in args.items() if k != "name"}
    return ContainerConfig(API, rest.pop("image"), rest.pop("command"), **rest)


def build(cfg, spec, user: str = DEFAULT_USER, **extra) -> dict:
    return body(create_args(cfg, spec, api_version=API, user=user, **extra))


def hardening_problems(request: dict) -> list[str]:
    """What is wrong with a create body against the backend's security promises."""
    host = request["HostConfig"]
    problems = []
    if host.get("CapDrop") != ["ALL"]:
        problems.append(f"CapDrop {host.get('CapDrop')}")
    if host.get("CapAdd"):
        problems.append(f"CapAdd {host['CapAdd']}")
    if host.get("Privileged", False) is not False:
        problems.append("Privileged")
    if host.get("SecurityOpt") != ["no-new-privileges"]:
        problems.append(f"SecurityOpt {host.get('SecurityOpt')}")
    if host.get("Init") is not True:
        problems.append("no init")
    user = request.get("User") or ""
    if not re.fullmatch(r"[0-9]+:[0-9]+", user) or int(user.split(":")[0]) == 0:
        problems.append(f"User {user!r}")
    for key in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "Devices", "Binds"):
        if host.get(key):
            problems.append(f"{key} {host[key]}")
    if host.get("NetworkMode") == "host":
        problems.append("host network")
    for mount in host.get("Mounts") or []:
        if "docker.sock" in (mount.get("Source") or "") or mount.get("Source") == "/":
            problems.append(f"mount {mount}")
    return problems


# --------------------------------------------------------------------------- privileges


@pytest.mark.parametrize("kind", ["ipc", "tcp", "job"])
def test_every_container_drops_all_privileges_and_runs_as_a_numeric_non_root_user(kind):
    """Guards: ``privileged: True``, ``cap_add: [SYS_ADMIN]``, a lost ``cap_drop`` or
    ``no-new-privileges``, no init, user "0:0" or a name, a host pid/ipc/network namespace,
    a device or a bind of the daemon's socket, for kernels on both transports and jobs."""
    cfg = config()
    spec = job_spec() if kind == "job" else kernel_spec(cfg, kind)
    request = build(cfg, spec)
    assert hardening_problems(request) == []
    assert request["User"] == "1000:100"
    assert "CapAdd" not in request["HostConfig"] and "Privileged" not in request["HostConfig"]


def test_the_hardening_check_catches_each_breakage():
    """Guards the guard: a check that passes a privileged, capable or root container would
    let the tests above pass on a broken builder."""
    cfg = config()
    spec = kernel_spec(cfg, "tcp")
    sound = host_config_args(cfg, spec, DEFAULT_USER)
    for tampered, user in [
        ({**sound, "privileged": True}, DEFAULT_USER),
        ({**sound, "cap_add": ["SYS_ADMIN"]}, DEFAULT_USER),
        ({**sound, "cap_drop": []}, DEFAULT_USER),
        ({**sound, "security_opt": []}, DEFAULT_USER),
        ({**sound, "network_mode": "host", "port_bindings": None}, DEFAULT_USER),
        ({**sound, "pid_mode": "host"}, DEFAULT_USER),
        (sound, "0:0"),
        (sound, "root"),
    ]:
        args = create_args(cfg, spec, api_version=API, user=user)
        args["host_config"] = type(args["host_config"])(version=API, **tampered)
        assert hardening_problems(body(args)), (tampered, user)


def test_the_key_is_in_no_argument_of_the_create_request():
    """Guards: the HMAC key (or any private file) passed as an environment variable, a
    label or a command argument, where ``docker inspect`` shows it."""
    cfg = config(transport="tcp")
    for spec in (kernel_spec(cfg, "tcp"), kernel_spec(cfg, "ipc"), job_spec()):
        text = json.dumps(build(cfg, spec))
        assert KEY.decode() not in text
        for content in spec.files.values():
            assert content.decode("latin-1") not in text


# --------------------------------------------------------------------------- user


def test_the_user_is_the_configs_then_the_workspace_owners_then_the_images_non_root_one():
    """Guards: an image's ``USER root`` (or ``0``, or a name) becoming the container's user,
    and the config's or the workspace owner's uid being overridden by the image's."""
    plain, pinned = config().docker, config(docker={"user": "2000:2000"}).docker
    assert container_user(pinned, "1001:1001", "1234:100") == "2000:2000"
    assert container_user(plain, "1001:1001", "1234:100") == "1001:1001"
    assert container_user(plain, None, "1234:100") == "1234:100"
    assert container_user(plain, None, None) == DEFAULT_USER == "1000:100"
    for user in ("", "root", "0", "0:0", "jovyan", "root:root"):
        assert image_user({"Config": {"User": user}}) == DEFAULT_USER, user
    assert image_user({"Config": {"User": "1234:100"}}) == "1234:100"
    assert image_user({"Config": {"User": "1234"}}) == "1234"
    assert image_user({}) == DEFAULT_USER


# --------------------------------------------------------------------------- limits


def test_the_configs_limits_are_set_and_swap_adds_nothing():
    """Guards: memory without ``MemorySwap`` equal to it (swap would double the limit),
    a lost pids, CPU or shm limit, and a config without limits running unlimited."""
    cfg = config(
        docker={"resources": {"memory": "256m", "cpus": 0.5, "pids": 64, "shm_size": "64m"}}
    )
    host = build(cfg, kernel_spec(cfg))["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["ShmSize"] == 64 * 1024**2
    default = build(config(), job_spec())["HostConfig"]
    assert default["Memory"] == default["MemorySwap"] == parse_size(DEFAULT_MEMORY)
    assert default["PidsLimit"] == DEFAULT_PIDS


# --------------------------------------------------------------------------- transport


def test_an_ipc_kernel_publishes_no_port_and_gets_its_folder_at_the_target():
    """Guards: a port published (or exposed) on the ipc transport, where any local user
    could dial it, and the kernel's folder mounted elsewhere, read-only or not at all."""
    cfg = config()
    spec = kernel_spec(cfg, "ipc")
    request = build(cfg, spec)
    host = request["HostConfig"]
    assert not host.get("PortBindings") and not request.get("ExposedPorts")
    assert not host.get("PublishAllPorts")
    (folder,) = [m for m in host["Mounts"] if m["Target"] == transport.KERNEL_FOLDER]
    assert folder == {
        "Target": transport.KERNEL_FOLDER,
        "Source": FOLDER,
        "Type": "bind",
        "ReadOnly": False,
    }


def test_the_isolated_network_is_joined_unless_the_config_names_one():
    """Guards: a kernel left on the default bridge (where other containers reach it) when
    the isolated network exists, and a config's own ``network: none`` overridden."""
    cfg = config()
    spec = kernel_spec(cfg, "ipc")
    assert build(cfg, spec, network=ISOLATED_NETWORK)["HostConfig"]["NetworkMode"] == (
        ISOLATED_NETWORK
    )
    own = config(docker={"network": "none"})
    assert build(own, spec, network=ISOLATED_NETWORK)["HostConfig"]["NetworkMode"] == "none"


def test_tcp_ports_are_published_on_the_bind_address_only_and_keep_their_host_ports():
    """Guards: ports published on 0.0.0.0 (every interface) by default, a restarted
    kernel losing its host ports, and ports published on the host network."""
    cfg = config(transport="tcp")
    spec = kernel_spec(cfg, "tcp")
    spec.host_ports = {41000: 50000}
    request = build(cfg, spec)
    bindings = request["HostConfig"]["PortBindings"]
    assert sorted(bindings) == [f"{41000 + i}/tcp" for i in range(5)]
    assert all(
        b == [{"HostIp": "127.0.0.1", "HostPort": ""}]
        for k, b in bindings.items()
        if k != "41000/tcp"
    )
    assert bindings["41000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "50000"}]
    assert sorted(request["ExposedPorts"]) == sorted(bindings)
    host_net = config(transport="tcp", docker={"network": "host"})
    host = build(host_net, kernel_spec(host_net, "tcp"))["HostConfig"]
    assert not host.get("PortBindings")


# --------------------------------------------------------------------------- read-only root


@pytest.mark.parametrize("kind", ["ipc", "tcp", "job"])
def test_a_read_only_root_is_read_only_with_tmp_and_home_writable(kind):
    """Guards: ``read_only_root`` dropped for kernels or for JOB containers, /tmp missing
    (private files have nowhere to go) or a tmpfs (gone before a job's results are read),
    and a HOME tmpfs that is not the user's and private."""
    cfg = config(read_only_root=True)
    spec = job_spec() if kind == "job" else kernel_spec(cfg, kind)
    host = build(cfg, spec, user="1001:1002", image_home="/home/analyst")["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    (tmp,) = [m for m in host["Mounts"] if m["Target"] == "/tmp"]
    assert tmp["Type"] == "volume" and tmp["Source"] is None and not tmp["ReadOnly"]
    assert host["Tmpfs"] == {"/home/analyst": "rw,nosuid,nodev,uid=1001,gid=1002,mode=0700"}
    assert hardening_problems(build(cfg, spec, image_home="/home/analyst")) == []
    assert "ReadonlyRootfs" not in build(config(), spec)["HostConfig"]


def test_read_only_files_go_to_tmp_and_elsewhere_are_refused():
    """Guards: private files copied to the read-only root (the copy fails after the
    container exists) instead of a clear refusal before anything is made."""
    cfg = config(read_only_root=True)
    copied, in_folder = split_files(cfg, job_spec())
    assert (copied, in_folder, files_root(cfg)) == (JOB_FILES, {}, "/tmp")
    bad = job_spec()
    bad.files["/opt/x.py"] = b""
    with pytest.raises(BackendError, match=r"read_only_root.*under /tmp/"):
        split_files(cfg, bad)
    assert files_root(config()) == "/"


def test_a_kernels_connection_file_goes_into_its_folder_not_the_container():
    """Guards: the connection file copied into the container (readable by root in it and
    left in its layer) when the kernel has a private folder on this host."""
    cfg = config()
    copied, in_folder = split_files(cfg, kernel_spec(cfg, "ipc"))
    assert copied == {} and list(in_folder) == [CONNECTION_FILE.rsplit("/", 1)[1]]
    copied, in_folder = split_files(cfg, kernel_spec(config(transport="tcp"), "tcp"))
    assert list(copied) == [CONNECTION_FILE] and in_folder == {}


# --------------------------------------------------------------------------- workspace


@pytest.mark.parametrize("read_only", [False, True])
def test_the_workspace_is_bound_at_its_own_path_and_read_only_when_planned(tmp_path, read_only):
    """Guards: the workspace mounted at another path (notebook paths break), writable when
    the plan says read-only, a working folder outside it, and the owner's uid not used."""
    (tmp_path / "project").mkdir()
    plan = resolve_plan(
        WorkspaceSettings.from_dict({"read_only": read_only}),
        backend="docker",
        remote=False,
        server_root=str(tmp_path),
        cwd=str(tmp_path / "project"),
        user="alice",
        config_name="c",
    )
    plan = dataclasses.replace(plan, user="1001:1001")
    root = str(tmp_path.resolve())
    cfg = config()
    for spec in (kernel_spec(cfg, "ipc", plan), job_spec(plan)):
        user = container_user(cfg.docker, plan.user, None)
        request = build(cfg, spec, user=user)
        (mount,) = [m for m in request["HostConfig"]["Mounts"] if m["Target"] == root]
        assert mount == {"Target": root, "Source": root, "Type": "bind", "ReadOnly": read_only}
        assert request["WorkingDir"] == f"{root}/project"
        assert request["User"] == "1001:1001"
        assert "HOME=/tmp" in request["Env"]  # the image's HOME is not the owner's
        assert hardening_problems(request) == []


def test_a_home_inside_the_workspace_gets_no_tmpfs_over_it():
    """Guards: a tmpfs hiding the user's own files when HOME lies in the mounted workspace,
    and HOME=/tmp forced on a read-only root (where HOME has a tmpfs of its own)."""
    plan = WorkspacePlan(root="/srv/nb/alice", source="/srv/nb/alice", user="1001:1001")
    cfg = config(read_only_root=True)
    request = build(cfg, job_spec(plan), user="1001:1001", image_home="/srv/nb/alice/home")
    assert "Tmpfs" not in request["HostConfig"]
    assert not any(e.startswith("HOME=") for e in request["Env"])


def test_an_unmounted_plan_mounts_nothing_and_the_image_home_has_a_default():
    """Guards: a bind with no source (a remote daemon's empty folder) and an image without
    HOME getting a tmpfs at a relative or empty path."""
    plan = WorkspacePlan(notice="not visible")
    request = build(config(), job_spec(plan))
    assert not request["HostConfig"].get("Mounts")
    assert image_home({"Config": {"Env": ["PATH=/bin"]}}) == READ_ONLY_HOME == "/home/jovyan"
    assert image_home({"Config": {"Env": ["HOME=relative"]}}) == READ_ONLY_HOME
    assert image_home({"Config": {"Env": ["HOME=/a", "HOME=/root/x"]}}) == "/root/x"


# --------------------------------------------------------------------------- extras


def test_gpus_and_runtime_become_device_requests():
    """Guards: ``gpus`` dropped (the job runs on CPU) or widened from the named devices to
    all of them."""
    assert gpu_request("all") == {
        "Driver": "",
        "Count": -1,
        "DeviceIDs": [],
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    assert gpu_request(2)["Count"] == 2
    assert gpu_request(("0", "1"))["DeviceIDs"] == ["0", "1"] and gpu_request(("0",))["Count"] == 0
    cfg = config(docker={"runtime": "nvidia", "gpus": ["1"]})
    host = build(cfg, job_spec())["HostConfig"]
    assert host["Runtime"] == "nvidia" and host["DeviceRequests"][0]["DeviceIDs"] == ["1"]
    assert "DeviceRequests" not in build(config(), job_spec())["HostConfig"]


def test_the_configs_mounts_are_passed_as_written_and_labels_as_given():
    """Guards: a read-only data mount made writable, and the ownership labels (what the
    reaper and ``cleanup`` find a container by) lost."""
    cfg = config(docker={"mounts": [{"source": "/srv/data", "target": "/data", "read_only": True}]})
    spec = job_spec()
    request = build(cfg, spec)
    (data,) = [m for m in request["HostConfig"]["Mounts"] if m["Target"] == "/data"]
    assert data["Source"] == "/srv/data" and data["ReadOnly"] is True
    # plus the memory limit, which placement over several daemons adds up (docker.hosts)
    memory = {"dss-containers.jupyter.org/memory-limit": str(cfg.docker.memory)}
    assert request["Labels"] == {**spec.labels, **memory} and ownership.MANAGED in request["Labels"]


def test_private_files_are_the_users_own_and_private():
    """Guards: private files readable by other users in the container (0644), owned by
    root (the kernel cannot rewrite its connection file), or unpacked outside their root."""
    data = private_tar(JOB_FILES, "1001:1002", "/tmp")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"dss-job", "dss-job/runner.py", "dss-job/payload.pkl"}
    assert members["dss-job"].isdir() and members["dss-job"].mode == 0o700
    for name in ("dss-job/runner.py", "dss-job/payload.pkl"):
        assert members[name].mode == 0o600
    assert all((m.uid, m.gid) == (1001, 1002) for m in members.values())
