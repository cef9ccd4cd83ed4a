"""20 kernels and 20 jobs started at once by 4 users on one real server (issue #8).

Every kernel starts, on sockets of its own, and answers only with its own state; every job
either runs or waits within the per-user and per-config limits (counted on the engine's own
start and die events of the job containers, and on the service's states), and all finish
with their own output. Same server and ``X-Test-User`` identity provider as
tests/test_server_api.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import kernels
import pytest
import test_server_api as server_api
from conftest import leftover_containers

from jupyter_dss_containers import ownership

api = server_api.api
jp_asyncio_loop = server_api.jp_asyncio_loop

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = [pytest.mark.docker, pytest.mark.slow]

USERS = ("ana", "ben", "cai", "dee")
PER_USER = 5
USER_LIMIT, CONFIG_LIMIT = 3, 8
CONFIG = """
groups: {ana: [team], ben: [team], cai: [team], dee: [team]}
execution_configs:
  shared:
    backend: docker
    image: default
    docker: {resources: {memory: 256m, cpus: 0.5}}
    permissions: {groups: [team]}
"""


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    return server_api.use_config(tmp_path, monkeypatch, CONFIG)


@pytest.fixture
def jp_server_config(config_path):
    config = server_api.server_config(config_path)
    config["JobService"].update(max_jobs_per_user=USER_LIMIT, max_jobs_per_config=CONFIG_LIMIT)
    return config


async def start_kernel(api, jp_fetch, user: str) -> str:
    response = await jp_fetch(
        "api",
        "kernels",
        method="POST",
        body=json.dumps({"name": "dss-shared"}),
        headers={"X-Test-User": user},
        request_timeout=120,
    )
    return json.loads(response.body)["id"]


class JobContainerEvents:
    """The engine's own start and die events of this process's job containers, read as they
    happen (a thread on the event stream): the limits counted on what the engine ran, not on
    the service's states."""

    def __init__(self, docker_client):
        labels = {ownership.KIND: "job", ownership.CONFIG: "shared"}
        labels[ownership.SERVER_ID] = ownership.this_process().server_id
        self.stream = docker_client.events(
            since=f"{time.time():.9f}",
            filters={
                "type": "container",
                "event": ["start", "die"],
                "label": [f"{k}={v}" for k, v in labels.items()],
            },
            decode=True,
        )
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.append(event)
        except Exception:  # closed
            pass

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)

    def of(self, action: str) -> set[str]:
        return {e["Actor"]["ID"] for e in list(self.events) if e["Action"] == action}

    def most_running(self) -> tuple[int, int]:
        """(the most job containers running at once, the most of one user at once)."""
        running: dict[str, str] = {}
        most_total = most_one_user = 0
        for event in sorted(list(self.events), key=lambda e: e["timeNano"]):
            container = event["Actor"]["ID"]
            if event["Action"] == "start":
                running[container] = event["Actor"]["Attributes"][ownership.OWNER]
            else:
                running.pop(container, None)
            most_total = max(most_total, len(running))
            most_one_user = max([most_one_user, *Counter(running.values()).values()])
        return most_total, most_one_user


async def submit(api, user: str, n: int) -> str:
    code = f"import time\nprint('job {n} of {user}', flush=True)\ntime.sleep(2)\n"
    status, job = await api(
        user, "jobs", method="POST", body=json.dumps({"config": "shared", "code": code})
    )
    assert status == 201, job
    return job


async def test_twenty_kernels_and_twenty_jobs_from_four_users(
    api, jp_fetch, jp_serverapp, base_image, docker_client
):
    km = jp_serverapp.kernel_manager
    kernel_starts = [start_kernel(api, jp_fetch, u) for u in USERS for _ in range(PER_USER)]
    job_submits = [submit(api, u, n) for u in USERS for n in range(PER_USER)]
    seen_running: list[tuple[Counter, int]] = []
    watching = True

    service = jp_serverapp.web_app.settings["dss_containers"].job_service

    async def watch_limits() -> None:
        """Sample every job's state while the jobs run: one synchronous read of the
        service per sample, so each sample is one instant (reading the four users' lists
        over REST one after another can count a job that ended and the one that took its
        slot in the same sample)."""
        while watching:
            running = [j for j in service.list() if j.state in ("starting", "running")]
            per_user = Counter(j.owner for j in running)
            seen_running.append((per_user, len(running)))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_limits())
    engine = JobContainerEvents(docker_client)
    results = await asyncio.gather(*kernel_starts, *job_submits, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    kernel_ids, jobs = results[: len(kernel_starts)], results[len(kernel_starts) :]
    job_ids = [job["id"] for job in jobs]
    owners = {kid: USERS[i // PER_USER] for i, kid in enumerate(kernel_ids)}
    clients = {}
    try:
        # all 20 kernels answer, each with its own state, on sockets no other kernel has
        # (ipc sockets in each kernel's own folder, the default on a local daemon)
        sockets: list[str] = []
        for kid in kernel_ids:
            manager = km.get_kernel(kid)
            info = manager.get_connection_info()
            assert info["transport"] == "ipc"
            sockets += [
                f"{info['ip']}-{info[p]}"
                for p in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
            ]
            clients[kid] = manager.client()
            clients[kid].start_channels()
        assert len(sockets) == len(set(sockets)) == 5 * len(kernel_ids), "a socket is shared"
        await asyncio.gather(*(c.wait_for_ready(timeout=120) for c in clients.values()))
        await asyncio.gather(
            *(c.execute_interactive(f"mine = {kid!r}", timeout=60) for kid, c in clients.items())
        )

        async def read_back(kid: str) -> str:
            return (await kernels.run(clients[kid], "print(mine)", timeout=60))[1].strip()

        answers = await asyncio.gather(*(read_back(kid) for kid in kernel_ids))
        assert answers == list(kernel_ids), "a kernel answered with another kernel's state"
        for kid, user in owners.items():
            (box,) = leftover_containers(docker_client, kernel_id=kid)
            assert box.labels["dss-containers.jupyter.org/owner"] == user

        # every job finishes with its own output; none ran beyond the limits, some waited
        for user_index, user in enumerate(USERS):
            for n in range(PER_USER):
                job_id = job_ids[user_index * PER_USER + n]
                for _ in range(600):
                    status, job = await api(user, "jobs", job_id)
                    if job["state"] not in ("queued", "starting", "running"):
                        break
                    await asyncio.sleep(0.2)
                assert job["state"] == "succeeded", job
                status, logs = await api(user, "jobs", job_id, "logs")
                text = "".join(c["text"] for c in logs["output"])
                assert text.strip() == f"job {n} of {user}", text
    finally:
        watching = False
        await watcher
        for client in clients.values():
            client.stop_channels()
        for kid, user in owners.items():
            await jp_fetch("api", "kernels", kid, method="DELETE", headers={"X-Test-User": user})
    # on the engine: one container per job, and never more running at once than the limits
    deadline = time.monotonic() + 30
    while len(engine.of("die")) < len(engine.of("start")) or len(engine.of("start")) < len(jobs):
        assert time.monotonic() < deadline, f"{len(engine.of('start'))} job containers started"
        await asyncio.sleep(0.2)
    engine.close()
    assert len(engine.of("start")) == len(jobs), "not one container per job"
    most_total, most_one_user = engine.most_running()
    assert most_total <= CONFIG_LIMIT and most_one_user <= USER_LIMIT, (most_total, most_one_user)
    assert most_total >= USER_LIMIT, "the job containers never ran together"
    # and as the service counted them (starting included)
    assert seen_running, "the limits were never sampled"
    assert max(total for _, total in seen_running) <= CONFIG_LIMIT
    assert max(max(c.values(), default=0) for c, _ in seen_running) <= USER_LIMIT
    assert max(total for _, total in seen_running) >= USER_LIMIT, "the jobs never ran together"
    waited = [job for job in jobs if job["message"].startswith("queued:")]
    assert len(waited) >= len(USERS) * (PER_USER - USER_LIMIT), "over the limit, yet not queued"
    for _ in range(100):
        if not leftover_containers(docker_client, config="shared"):
            break
        await asyncio.sleep(0.1)
    assert not leftover_containers(docker_client, config="shared")
