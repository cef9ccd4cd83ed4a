"""The trusted launcher without a hub (shared-secret mode) and its pure rules.

The launcher runs as a real process on the real engine; kernels and jobs reach it through
``RemoteBackend`` exactly as a single-user server does. The JupyterHub deployment has its
own module (``test_hub.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from pathlib import Path

import pytest
from conftest import leftover_containers
from launchers import (
    LauncherProcess,
    create_each,
    create_workload,
    delete_workload,
    queued_start,
)

from jupyter_dss_containers import images, ownership
from jupyter_dss_containers.backends.base import Workload
from jupyter_dss_containers.budgets import (
    BudgetExceeded,
    Budgets,
    Demand,
    check_budget,
    demand_labels,
    holdings,
)
from jupyter_dss_containers.config import parse_config
from jupyter_dss_containers.launcherd.hub import HubUser
from jupyter_dss_containers.launcherd.lifecycle import orphaned
from jupyter_dss_containers.launcherd.policy import (
    HUB_BOUND,
    Refused,
    parse_request,
    restricted_document,
    trusted_spec,
)

CONFIG = """
groups: {alice: [analysts], bob: [analysts], carol: [analysts]}
budgets:
  users: {alice: {memory: 1g, kernels: 5}, carol: {memory: 1g, on_exceed: queue}}
execution_configs:
  small:
    backend: docker
    image: default
    docker: {resources: {memory: 512m, cpus: 1}}
    permissions: {groups: [analysts]}
  other:
    backend: docker
    image: default
    docker: {resources: {memory: 512m}}
    permissions: {groups: [analysts]}
  gpu:
    backend: docker
    image: default
    docker: {resources: {memory: 512m}, tls: {ca_cert: /etc/secret/ca.pem}}
    permissions: {groups: [gpu-users]}
  open:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
code_envs:
  sk: {packages: [scikit-learn==1.5.2], available_for: [gpu, small]}
"""

MiB = 1024**2


def _request(name: str = "dss-kernel-t1", kind: str = "kernel", **extra) -> dict:
    return {
        "name": name,
        "image": "img",
        "command": ["sleep", "600"],
        "labels": {ownership.KIND: kind},
        **extra,
    }


# --------------------------------------------------------------------------- pure rules


def test_a_request_may_not_name_mounts_users_foreign_labels_or_files_outside_tmp():
    """Guards the launcher taking mounts, users, labels other systems read (traefik) or
    files over system paths from the caller."""
    for extra, words in (
        ({"mounts": [{"source": "/", "target": "/host"}]}, "'mounts' may not be set"),
        ({"user": "0:0"}, "'user' may not be set"),
        ({"files": {"/etc/passwd": base64.b64encode(b"x").decode()}}, "under /tmp/"),
        ({"files": {"/tmp/../etc/shadow": ""}}, "under /tmp/"),
        ({"labels": {ownership.KIND: "kernel", "traefik.enable": "true"}}, "labels a caller"),
        ({"labels": {ownership.KIND: "service"}}, "labels"),
        ({"workspace": {"root": "/", "source": "/", "user": "0:0"}}, "'workspace' may not be"),
        ({"host_folder": "/var/run"}, "'host_folder' may not be set"),
        ({"working_dir": "/home/a\x00/x"}, "working_dir"),
    ):
        with pytest.raises(Refused, match=words) as info:
            parse_request(_request(**extra))
        assert info.value.status == 400
    spec = parse_request(_request())
    config = parse_config(
        {"execution_configs": {"small": {"backend": "docker", "image": "x:1"}}}, "t"
    )
    with pytest.raises(Refused, match="cannot start a workload owned by 'bob'"):
        spec.labels[ownership.OWNER] = "bob"
        trusted_spec(spec, config.get("small"), "alice", "L", {})
    spec.labels.pop(ownership.OWNER)
    trusted = trusted_spec(spec, config.get("small"), "alice", "L", {"x": "1"})
    assert trusted.labels[ownership.OWNER] == "alice"
    assert trusted.labels[ownership.CONFIG] == "small"


def _live(name: str, owner: str, config: str, memory: int, kind: str = "kernel", groups=()):
    labels = {
        ownership.OWNER: owner,
        ownership.CONFIG: config,
        ownership.KIND: kind,
        **demand_labels(Demand(memory, 1.0, 0, kind), groups),
    }
    return Workload(id=name, name=name, labels=labels, state="running")


def test_a_budget_refuses_naming_what_is_used_and_by_what():
    """Guards the sum over configs (and daemons), the reason, and configs without limits
    slipping past a memory budget."""
    budgets = Budgets.from_dict(
        {"users": {"alice": {"memory": "1g"}}, "groups": {"analysts": {"kernels": 2}}}
    )
    live = holdings(
        [
            _live("k1", "alice", "small", 512 * MiB),
            _live("k2", "alice", "other", 512 * MiB),
            _live("kb", "bob", "small", 512 * MiB),
            Workload("gone", "gone", _live("x", "alice", "small", 10**9).labels, state="exited"),
        ]
    )
    with pytest.raises(BudgetExceeded) as info:
        check_budget(budgets, "alice", [], Demand(512 * MiB, 1, 0, "kernel"), live)
    message = str(info.value)
    assert "budget of user alice exceeded: memory 1 GiB of 1 GiB in use" in message
    assert "kernel k1 on small: 512 MiB" in message and "kernel k2 on other: 512 MiB" in message
    assert "kb" not in message and "asks 512 MiB" in message
    assert check_budget(budgets, "bob", ["analysts"], Demand(512 * MiB, 1, 0, "kernel"), live) == [
        "analysts"
    ]
    with pytest.raises(BudgetExceeded, match="sets no memory limit"):
        check_budget(budgets, "alice", [], Demand(None, None, 0, "job"), [])
    # a group budget counts every member's workloads charged to it
    charged = holdings(
        [_live(n, o, "small", MiB, groups=["analysts"]) for n, o in (("a", "alice"), ("b", "bob"))]
    )
    with pytest.raises(BudgetExceeded, match="group analysts exceeded: 2 of 2 kernels"):
        check_budget(budgets, "carol", ["analysts"], Demand(MiB, 1, 0, "kernel"), charged)


def test_a_queueing_budget_waits_only_for_what_could_fit():
    """Guards ``on_exceed``: a start over a queueing budget may wait, one over a refusing
    budget (the default) or one that could never fit (it alone asks more, or its use cannot
    be counted) is refused at once, and a refusing group budget wins over a queueing one."""
    budgets = Budgets.from_dict(
        {
            "default": {"on_exceed": "queue"},
            "users": {"alice": {"memory": "1g"}, "bob": {"memory": "1g", "on_exceed": "refuse"}},
            "groups": {"analysts": {"kernels": 2}},
        }
    )
    kernel = Demand(512 * MiB, 1, 0, "kernel")
    full = holdings([_live(f"k{i}", "alice", "small", 512 * MiB) for i in range(2)])
    with pytest.raises(BudgetExceeded, match="budget of user alice exceeded") as info:
        check_budget(budgets, "alice", [], kernel, full)
    assert info.value.queue  # the default's on_exceed applies under alice's own limits
    bobs = holdings([_live(f"b{i}", "bob", "small", 512 * MiB) for i in range(2)])
    with pytest.raises(BudgetExceeded) as info:
        check_budget(budgets, "bob", [], kernel, bobs)
    assert not info.value.queue
    with pytest.raises(BudgetExceeded, match="asks 2 GiB") as info:
        check_budget(budgets, "alice", [], Demand(2 * 1024 * MiB, 1, 0, "kernel"), [])
    assert not info.value.queue  # waiting would never help
    with pytest.raises(BudgetExceeded, match="sets no memory limit") as info:
        check_budget(budgets, "alice", [], Demand(None, None, 0, "kernel"), [])
    assert not info.value.queue
    group = holdings([_live(n, "carol", "small", MiB, groups=["analysts"]) for n in "ab"])
    with pytest.raises(BudgetExceeded, match="group analysts exceeded") as info:
        check_budget(budgets, "alice", ["analysts"], Demand(MiB, 1, 0, "kernel"), group)
    assert not info.value.queue  # the group's budget refuses (no on_exceed: refuse)
    with pytest.raises(ValueError, match="on_exceed is one of refuse, queue"):
        Budgets.from_dict({"users": {"alice": {"on_exceed": "wait"}}})
    from jupyter_dss_containers.config import ConfigError

    with pytest.raises(ConfigError, match=r"budgets\.users\.alice\.on_exceed: expected one of"):
        parse_config(
            {
                "budgets": {"users": {"alice": {"on_exceed": "wait"}}},
                "execution_configs": {"a": {"backend": "docker", "image": "x:1"}},
            },
            "t",
        )


def test_a_queued_start_goes_in_order_when_room_is_freed_and_times_out_naming_the_budget():
    """Guards the queue: a start waits while over budget, is admitted when a workload ends
    (woken by ``freed``), a user's starts are admitted in order, the wait is bounded (the
    refusal names the budget), and a caller that hung up gives up its place."""
    from jupyter_dss_containers.launcherd.admission import Admission, QueueAbandoned

    budgets = Budgets.from_dict({"users": {"alice": {"memory": "1g", "on_exceed": "queue"}}})
    live = holdings([_live(f"k{i}", "alice", "small", 512 * MiB) for i in range(2)])

    async def census():
        return list(live)

    async def scenario():
        admission = Admission(timeout=60, poll=60)  # only ``freed`` can wake it in time
        kernel = Demand(512 * MiB, 1, 0, "kernel")

        def start(name):
            return asyncio.ensure_future(
                admission.admit(budgets, "alice", frozenset(), kernel, name, "small", census)
            )

        first, second = start("third"), start("fourth")
        while admission.queued("alice") < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        live.pop()  # k1 ends ...
        admission.freed()  # ... and the launcher says so
        held = await first
        assert held.name == "third" and not second.done()
        admission.release(held)
        live.append(holdings([_live("third", "alice", "small", 512 * MiB)])[0])
        live.pop(0)
        admission.freed()
        assert (await second).name == "fourth"
        live.append(holdings([_live("fourth", "alice", "small", 512 * MiB)])[0])

        short = Admission(timeout=0.2, poll=0.05)
        with pytest.raises(BudgetExceeded) as info:
            await short.admit(budgets, "alice", frozenset(), kernel, "x", "small", census)
        assert "waited 0.2 s in the queue" in str(info.value)
        assert "budget of user alice exceeded: memory 1 GiB of 1 GiB" in str(info.value)
        looks: list[int] = []

        def gone() -> bool:  # the caller hangs up after the first look
            looks.append(1)
            return len(looks) > 1

        patient = Admission(timeout=60, poll=0.05)
        with pytest.raises(QueueAbandoned, match="went away while queued: budget of user alice"):
            await patient.admit(
                budgets, "alice", frozenset(), kernel, "y", "small", census, gone=gone
            )
        assert patient.queued() == 0 and admission.queued() == 0

    asyncio.run(scenario())


def test_the_config_document_a_caller_sees_is_theirs_only():
    """Guards GET /config leaking configs, other users' groups, credentials or budgets."""
    import yaml

    doc = yaml.safe_load(CONFIG)
    out = restricted_document(doc, "bob", frozenset({"gpu-users"}), {"gpu", "open"})
    assert set(out["execution_configs"]) == {"gpu", "open"}
    assert "tls" not in out["execution_configs"]["gpu"]["docker"]
    assert out["groups"] == {"bob": ["gpu-users"]} and "budgets" not in out
    assert out["code_envs"]["sk"]["available_for"] == ["gpu"]
    out = restricted_document(doc, "alice", frozenset({"analysts"}), {"small", "other", "open"})
    assert set(out["execution_configs"]) == {"small", "other", "open"}
    assert out["groups"] == {"alice": ["analysts"]} and "budgets" not in out
    assert out["code_envs"]["sk"]["available_for"] == ["small"]
    parse_config(out, "launcher")  # what the server receives is a valid config file


def test_a_workload_lives_while_a_server_that_already_ran_when_it_started_runs():
    """Guards the lifecycle rule: stop (or stop and restart between two polls) reaps."""
    kernel = Workload("w", "w", {ownership.KIND: "kernel", HUB_BOUND: "100.0"})
    assert orphaned(kernel, None) and orphaned(kernel, HubUser("a", frozenset(), ()))
    assert not orphaned(kernel, HubUser("a", frozenset(), (100.0,)))
    assert orphaned(kernel, HubUser("a", frozenset(), (150.0,)))  # a new server since
    assert not orphaned(kernel, HubUser("a", frozenset(), (50.0, 150.0)))
    service = Workload("s", "s", {ownership.KIND: "service"})
    assert not orphaned(service, None)


# --------------------------------------------------------------------------- real launcher


@pytest.fixture(scope="module")
def launcher(workspace, base_image, docker_client):
    folder = workspace / f"launcher-{secrets.token_hex(3)}"
    folder.mkdir()
    config = folder / "launcher.yaml"
    config.write_text(CONFIG)
    process = LauncherProcess(folder, config).start()
    yield process
    process.stop()
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{ownership.PREFIX}launcher={process.launcher_id}"}
    ):
        container.remove(force=True)


@pytest.fixture
def through_launcher(launcher, monkeypatch):
    """This process as the trusted server: backends and config come from the launcher."""
    monkeypatch.setenv("DSS_CONTAINERS_LAUNCHER_URL", launcher.url)
    monkeypatch.setenv("DSS_CONTAINERS_LAUNCHER_SECRET", launcher.secret)
    monkeypatch.delenv("DSS_CONTAINERS_CONFIG", raising=False)
    return launcher


_create = create_workload


def test_a_kernel_starts_through_the_launcher_and_leaves_nothing(through_launcher, docker_client):
    """Guards the provisioner working unchanged over RemoteBackend, and the labels the
    launcher writes itself."""
    from jupyter_client import AsyncKernelManager

    from jupyter_dss_containers.config import load_config
    from jupyter_dss_containers.kernelspecs import install_kernel_specs
    from jupyter_dss_containers.permissions import process_identity

    config_file = load_config()
    assert config_file.source == f"launcher {through_launcher.url}"
    install_kernel_specs(config_file, process_identity(config_file))

    async def scenario() -> tuple[dict, str]:
        km = AsyncKernelManager(kernel_name="dss-open")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            reply = await kc.kernel_info(reply=True, timeout=30)
            return reply["content"], km.provisioner.workload_id
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    content, workload_id = asyncio.run(scenario())
    assert content["status"] == "ok"
    # the launcher mounts no folder a caller names: its callers' kernels talk tcp
    assert config_file.get("open").transport == "tcp"
    assert not leftover_containers(docker_client, launcher=through_launcher.launcher_id)
    assert workload_id  # it ran in a container, now removed


def test_a_job_streams_and_returns_through_the_launcher(through_launcher, capsys, docker_client):
    """Guards follow_logs and read_files over the API (the job service's two extra calls)."""
    from jupyter_dss_containers import jobs

    outputs = jobs.run("open", "print('via launcher')\nx = 6 * 7", outputs=["x"])
    assert outputs["x"] == 42
    assert "via launcher" in capsys.readouterr().out
    assert not leftover_containers(docker_client, launcher=through_launcher.launcher_id, kind="job")


def test_another_users_workload_does_not_exist_for_you(launcher, docker_client):
    """Guards every per-workload call checking the owner, with one answer for "not yours"
    and "missing" (no oracle)."""
    status, bob = _create(launcher, "bob", "small")
    assert status == 201, bob
    wid = bob["id"]
    base = f"configs/small/workloads/{wid}"
    made_up = f"configs/small/workloads/{'f' * 64}"
    for method, path, body in (
        ("GET", "/status", None),
        ("GET", "/logs", None),
        ("GET", "/stats", None),
        ("GET", "/files?path=/tmp", None),
        ("GET", "/endpoints?port=1", None),
        ("POST", "/signal", {"signal": 9}),
        ("POST", "/stop", {"grace_seconds": 0}),
        ("DELETE", "", None),
    ):
        theirs = launcher.call(method, base + path, body, user="alice")
        missing = launcher.call(method, made_up + path, body, user="alice")
        assert theirs[0] == missing[0] == 404, (path, theirs)
        assert theirs[1]["message"].replace(wid, "ID") == missing[1]["message"].replace(
            "f" * 64, "ID"
        )
    assert launcher.call("GET", base + "/status", user="bob")[1]["state"] == "running"
    assert wid not in [
        w["id"]
        for w in launcher.call("GET", "configs/small/workloads", user="alice")[1]["workloads"]
    ]
    assert docker_client.containers.get(wid).status == "running"  # untouched by alice
    assert launcher.call("DELETE", base, user="bob")[0] == 200


def test_configs_outside_the_groups_other_images_and_forged_secrets_are_refused(launcher):
    """Guards the one permission check, the image check and authentication."""
    status, body = _create(launcher, "alice", "gpu")
    assert status == 403 and "may not use execution configuration 'gpu'" in body["message"]
    request = _request(f"dss-kernel-{secrets.token_hex(3)}")
    request["image"] = "alpine:3"
    status, body = launcher.call("POST", "configs/small/workloads", request, user="alice")
    assert status == 403 and "is not the image of execution config 'small'" in body["message"]
    assert launcher.call("GET", "config", secret="x" * 48)[0] == 403
    assert launcher.call("GET", "config", secret="")[0] in (401, 403)
    status, body = launcher.call("GET", "config", user="alice")
    assert status == 200 and set(body["config"]["execution_configs"]) == {"small", "other", "open"}


def test_the_container_runs_as_the_users_own_uid(launcher, docker_client):
    """Guards the launcher running a user's workload as their OS uid:gid, not the image's
    user nor root."""
    from osusers import os_user

    alice = os_user("alice")
    status, body = _create(launcher, "alice", "small")
    assert status == 201, body
    try:
        user = docker_client.containers.get(body["id"]).attrs["Config"]["User"]
        assert user == f"{alice.pw_uid}:{alice.pw_gid}"
    finally:
        launcher.call("DELETE", f"configs/small/workloads/{body['id']}", user="alice")


def test_a_budget_refuses_the_third_512m_kernel_across_two_configs(launcher):
    """Guards budgets summed over configs, refused at once with what is used and by what."""
    made = []
    try:
        create_each(launcher, "alice", ("small", "other"), made)
        status, body = _create(launcher, "alice", "small")
        assert status == 429, body  # refused at once (no queue yet)
        message = body["message"]
        assert "budget of user alice exceeded: memory 1 GiB of 1 GiB in use" in message
        for config, workload in made:
            assert f"{workload['name']} on {config}: 512 MiB" in message
        status, _ = _create(launcher, "bob", "small")  # bob has no budget
        assert status == 201
        made.append(("small", _))
    finally:
        for config, workload in made:
            owner = workload["labels"][ownership.OWNER]
            delete_workload(launcher, config, workload, owner)
    assert os.environ.get("DSS_CONTAINERS_LAUNCHER_URL") is None


def test_a_queueing_budget_holds_the_third_512m_kernel_until_one_is_deleted(
    launcher, docker_client
):
    """Guards ``on_exceed: queue`` on the real engine: carol's third 512 MiB kernel over her
    1 GiB budget waits (no container is created meanwhile) instead of failing, and starts
    as soon as one of her first two kernels is deleted through the launcher."""
    made = []
    try:
        create_each(launcher, "carol", ("small", "other"), made)
        started, name = queued_start(launcher, "carol", "small")
        assert not docker_client.containers.list(all=True, filters={"name": name})
        config, first = made.pop(0)
        assert delete_workload(launcher, config, first, "carol") == 200
        status, body = started.result(timeout=120)
        assert status == 201, body
        made.append(("small", body))
        assert body["name"] == name
        assert docker_client.containers.get(body["id"]).status == "running"
        assert launcher.call("GET", "usage", user="carol")[1]["queued"] == 0
    finally:
        for config, workload in made:
            delete_workload(launcher, config, workload, "carol")


def test_a_queued_start_whose_caller_hangs_up_never_starts(launcher, docker_client):
    """Guards an abandoned request starting a container nobody will use (or remove): the
    caller of carol's queued third kernel hangs up, the queue lets it go, and once room is
    freed no container of that name is created."""
    import urllib.request

    from jupyter_dss_containers.config import read_document

    made = []
    try:
        create_each(launcher, "carol", ("small", "other"), made)
        config_file = parse_config(*read_document(launcher.config))
        name = f"dss-kernel-{secrets.token_hex(4)}"
        body = {
            **_request(name),
            "image": images.resolve_image(config_file, config_file.get("small")),
        }
        request = urllib.request.Request(
            launcher.url + "api/configs/small/workloads",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {launcher.secret}",
                "X-DSS-Containers-User": "carol",
            },
        )
        with pytest.raises(OSError):  # the client gives up (a timeout) and hangs up
            urllib.request.urlopen(request, timeout=1)
        for _ in range(600):
            if launcher.call("GET", "usage", user="carol")[1]["queued"] == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the abandoned start stayed in the queue")
        config, first = made.pop(0)
        assert delete_workload(launcher, config, first, "carol") == 200
        status, body = _create(launcher, "carol", "small")  # the room is there, for a new start
        assert status == 201, body
        made.append(("small", body))
        assert not docker_client.containers.list(all=True, filters={"name": name})
    finally:
        for config, workload in made:
            delete_workload(launcher, config, workload, "carol")


def test_a_broken_edit_of_the_config_file_keeps_the_last_good_one(tmp_path):
    """Guards one bad edit stopping every user's kernels (the launcher rereads the file when
    it changes, and keeps the previous one when the new one does not validate)."""
    from jupyter_dss_containers.launcherd.service import Launcher

    path = tmp_path / "site.yaml"
    path.write_text(CONFIG)
    launcher = Launcher(str(path), "t")
    assert "gpu" in asyncio.run(launcher.load()).config_file.execution_configs
    path.write_text(CONFIG.replace("  open:", "  opened:"))
    os.utime(path, (1, 1))
    assert "opened" in asyncio.run(launcher.load()).config_file.execution_configs
    path.write_text("execution_configs: {broken: {backend: nowhere}}\n")
    assert "opened" in asyncio.run(launcher.load()).config_file.execution_configs


def test_a_local_reaper_leaves_a_launchers_workloads_to_it(launcher, docker_client):
    """Guards root's ``cleanup`` or a root server's start-up reaping removing users' live
    kernels: their owner's process is not in the local registry, the launcher decides."""
    import socket

    from jupyter_dss_containers.config import read_document

    status, body = _create(launcher, "bob", "small")
    assert status == 201, body
    try:
        config_file = parse_config(*read_document(launcher.config))
        labels = docker_client.containers.get(body["id"]).labels
        assert labels[ownership.OWNER] == "bob"
        assert labels.get(ownership.HOST, socket.gethostname()) == socket.gethostname()
        removed, _ = asyncio.run(ownership.reap_orphans([config_file.get("small")]))
        assert body["id"] not in [w.id for w in removed]
        assert docker_client.containers.get(body["id"]).status == "running"
    finally:
        launcher.call("DELETE", f"configs/small/workloads/{body['id']}", user="bob")


# --------------------------------------------------------------------------- workspaces


def _home_of(name: str):
    """An OS user with a folder ``work`` (and a private marker in it) in their home."""
    from osusers import os_user, owned_by

    user = os_user(name)
    work = owned_by(Path(user.pw_dir) / "work", user)
    marker = work / "marker"
    marker.write_text(f"{name}'s own\n")
    marker.chmod(0o600)
    os.chown(marker, user.pw_uid, user.pw_gid)
    return user, work


def _run_through(config_name: str, owner: str, command: str, plan) -> str:
    """Run ``command`` for ``owner`` through RemoteBackend and return its output."""
    from jupyter_dss_containers.backends.base import WorkloadSpec
    from jupyter_dss_containers.backends.remote import RemoteBackend
    from jupyter_dss_containers.config import load_config

    config_file = load_config()
    config = config_file.get(config_name)
    spec = WorkloadSpec(
        name=f"dss-kernel-{secrets.token_hex(4)}",
        image=images.resolve_image(config_file, config),
        command=["/bin/sh", "-c", command],
        labels={ownership.KIND: "kernel", ownership.OWNER: owner},
        workspace=plan,
    )

    async def scenario() -> str:
        backend = RemoteBackend(config)
        workload = await backend.create(spec)
        try:
            for _ in range(600):
                if (await backend.status(workload.id)).state != "running":
                    break
                await asyncio.sleep(0.1)
            return await backend.logs(workload.id, tail=50)
        finally:
            await backend.remove(workload.id)

    return asyncio.run(scenario())


def test_a_workload_through_the_launcher_runs_in_the_users_own_workspace(through_launcher):
    """Guards the launcher mounting the authenticated user's home (found by the launcher,
    not the caller's plan: the caller asks for / as root here), at the same path, with the
    asked folder as working directory, as the user's uid:gid (files written are theirs)."""
    from jupyter_dss_containers.workspace import WorkspacePlan

    alice, work = _home_of("alice")
    _home_of("bob")
    forged = WorkspacePlan(root="/", source="/", working_dir=str(work), user="0:0")
    out = _run_through(
        "small",
        "alice",
        "pwd; id -u; id -g; cat marker; echo x > written; ls /home/bob 2>&1 | head -1",
        forged,
    )
    lines = out.splitlines()
    assert lines[:4] == [str(work), str(alice.pw_uid), str(alice.pw_gid), "alice's own"], out
    assert "No such file" in lines[4], out  # only her home is mounted, not /home
    written = (work / "written").stat()
    assert (written.st_uid, written.st_gid) == (alice.pw_uid, alice.pw_gid)


def test_a_working_dir_outside_the_users_root_gets_one_uniform_refusal(launcher):
    """Guards a caller choosing what is mounted or where it starts: another user's home,
    a system folder, a symlink in the user's home pointing out, ``..`` and a missing folder
    are all refused with the same 403 (no oracle about what exists elsewhere)."""
    from jupyter_dss_containers.config import read_document

    alice, work = _home_of("alice")
    bob, bob_work = _home_of("bob")
    link = Path(alice.pw_dir) / "to-bob"
    if not link.is_symlink():
        link.symlink_to(bob_work)
    config_file = parse_config(*read_document(launcher.config))
    image = images.resolve_image(config_file, config_file.get("small"))
    messages = set()
    for path in (
        str(bob_work),
        "/etc",
        str(link),
        f"{work}/../../bob/work",
        f"{alice.pw_dir}/no-such-folder",
        "/",
    ):
        body = {**_request(f"dss-kernel-{secrets.token_hex(4)}"), "image": image}
        body["working_dir"] = path
        status, answer = launcher.call("POST", "configs/small/workloads", body, user="alice")
        assert status == 403, (path, answer)
        messages.add(answer["message"].replace(repr(path), "P"))
    assert len(messages) == 1, messages
    body = {**_request(f"dss-kernel-{secrets.token_hex(4)}"), "image": image}
    body["working_dir"] = str(work)  # her own folder is fine
    status, answer = launcher.call("POST", "configs/small/workloads", body, user="alice")
    assert status == 201, answer
    launcher.call("DELETE", f"configs/small/workloads/{answer['id']}", user="alice")


def test_a_workspace_root_template_is_checked_and_mounts_only_a_folder_of_the_user(
    workspace, base_image, docker_client
):
    """Guards ``LauncherApp.workspace_root``: a template without ${user} (every user's one
    folder) or with ${root_dir} is refused; a user's folder that another uid owns is not
    mounted; the user's own is, at the same path, as their uid:gid."""
    from osusers import os_user, owned_by

    from jupyter_dss_containers.launcherd.policy import Caller
    from jupyter_dss_containers.launcherd.scope import root_template_problem
    from jupyter_dss_containers.launcherd.service import Launcher

    assert root_template_problem("/srv/work") and root_template_problem("${root_dir}/${user}")
    assert root_template_problem("") is None and root_template_problem("/srv/${user}") is None
    alice, bob = os_user("alice"), os_user("bob")
    base = workspace / f"roots-{secrets.token_hex(3)}"
    (base / "alice" / "sub").mkdir(parents=True)
    owned_by(base / "alice", alice)
    owned_by(base / "bob", alice)  # bob's folder is not bob's: nothing is mounted for him
    base.chmod(0o755)
    config = base / "site.yaml"
    config.write_text(CONFIG)
    template = f"{base}/${{user}}"
    launcher = Launcher(str(config), f"t-{secrets.token_hex(3)}", workspace_root=template)
    loaded = asyncio.run(launcher.load())
    image = images.resolve_image(loaded.config_file, loaded.config_file.get("small"))

    def start(owner: str, working_dir: str | None) -> dict:
        body = {**_request(f"dss-kernel-{secrets.token_hex(4)}"), "image": image}
        body["labels"][ownership.OWNER] = owner
        body["working_dir"] = working_dir
        workload = asyncio.run(launcher.create(Caller(None, trusted_server=True), "small", body))
        try:
            return docker_client.containers.get(workload.id).attrs
        finally:
            docker_client.containers.get(workload.id).remove(force=True)

    attrs = start("alice", str(base / "alice" / "sub"))
    mounts = [(m["Source"], m["Destination"]) for m in attrs["Mounts"] if m["Type"] == "bind"]
    assert mounts == [(str(base / "alice"), str(base / "alice"))]
    assert attrs["Config"]["WorkingDir"] == str(base / "alice" / "sub")
    assert attrs["Config"]["User"] == f"{alice.pw_uid}:{alice.pw_gid}"
    attrs = start("bob", str(base / "bob"))
    assert not [m for m in attrs["Mounts"] if m["Type"] == "bind"]
    assert attrs["Config"]["User"] == f"{bob.pw_uid}:{bob.pw_gid}"
