"""One config over several Docker daemons (``docker.hosts``): the I/O.

Each start asks every host for its room at once (:func:`census`), places the workload by
:func:`.placement.choose_host`, and creates it there through that host's own
:class:`.backend.DockerBackend`. The workload's id is ``<host name>/<container id>`` and
its labels name the host and why it was chosen, so reattach, reaping, jobs and ``GET
kernels`` find it again from the id or a listing alone. A host that does not answer is
skipped with its reason; a start that fits nowhere waits for GPUs in the config's line or
is refused, as ``gpu_queue.on_busy`` says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import docker

from ... import phases
from ...config import ExecutionConfig
from ...ownership import JOB_ID, KERNEL_ID, KIND, MANAGED
from ..base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)
from . import client as dc
from . import gpualloc
from . import gpus as g
from .backend import DockerBackend
from .placement import (
    DOCKER_HOST,
    PLACEMENT,
    REASON_MAX,
    HostRoom,
    choose_host,
    join_id,
    memory_held,
    split_id,
)

log = logging.getLogger(__name__)

#: seconds a host may take to tell its room before it is skipped
CENSUS_TIMEOUT = 10.0


def _room_sync(member: DockerBackend, capacity: int | None, image: str) -> HostRoom:
    """One host's room (blocking): its memory, this product's containers, its GPUs."""
    client = member.client()
    info = client.api.info()
    rows = client.api.containers(all=True, filters={"label": f"{MANAGED}=true"})
    used, count = memory_held(rows)
    total = capacity if capacity is not None else info.get("MemTotal")
    gpus_total = gpus_free = None
    if member.settings.allocates_gpus:
        found = gpualloc.daemon_gpus(client, member.settings, member.url, image)
        taken = g.held(g.holders(rows))
        gpus_total, gpus_free = len(found), g.free_count(found, taken)
    return HostRoom(
        "",  # the caller names it
        member.url,
        memory_total=total,
        memory_used=used,
        workloads=count,
        gpus_total=gpus_total,
        gpus_free=gpus_free,
    )


class MultiHostBackend(Backend):
    """Workloads of one config on the daemon of ``docker.hosts`` with room for each."""

    def __init__(self, config: ExecutionConfig):
        super().__init__(config)
        self.hosts = {h.name: h for h in config.docker.hosts}
        self.members = {
            h.name: DockerBackend(dataclasses.replace(config, docker=h.settings))
            for h in config.docker.hosts
        }
        self._phases: dict[str, tuple[str, str]] = {}
        self._waited: dict[str, float] = {}
        #: where each start went and why, by kernel or job id (the start's log line)
        self.placed: dict[str, tuple[str, str]] = {}

    def target_key(self) -> tuple[str, ...]:
        return ("docker-hosts", *(k for m in self.members.values() for k in m.target_key()))

    def _member(self, workload_id: str) -> tuple[DockerBackend | None, str]:
        host, container = split_id(workload_id)
        return self.members.get(host), container

    def member_of(self, workload_id: str) -> tuple[DockerBackend | None, str]:
        """(the backend of the host a workload runs on, its container id there): a
        listing per host tells a dead host's workloads apart from the live ones'."""
        return self._member(workload_id)

    # ------------------------------------------------------------------ placement

    async def census(self, image: str) -> list[HostRoom]:
        """Every host's room, asked at once; a host that fails or is slow has ``error``."""

        async def one(name: str, member: DockerBackend) -> HostRoom:
            try:
                room = await asyncio.wait_for(
                    dc.call(member.settings, _room_sync, member, self.hosts[name].memory, image),
                    CENSUS_TIMEOUT,
                )
            except asyncio.TimeoutError:
                return HostRoom(name, member.url, error=f"no answer in {CENSUS_TIMEOUT:g} s")
            except (BackendError, docker.errors.DockerException, OSError) as exc:
                return HostRoom(name, member.url, error=str(exc))
            return dataclasses.replace(room, name=name)

        return list(await asyncio.gather(*(one(n, m) for n, m in self.members.items())))

    async def create(self, spec: WorkloadSpec) -> Workload:
        key = spec.labels.get(KERNEL_ID) or spec.labels.get(JOB_ID) or spec.name
        settings = self.config.docker
        queue = settings.gpu_on_busy == "queue"
        line_key = "hosts:" + ",".join(m.url for m in self.members.values())
        self.report_phase(key, phases.SCHEDULING, "asking the hosts for room")
        try:
            workload, waited = await gpualloc.line_for(line_key).run(
                lambda: self._place_and_create(spec, key),
                settings.gpu_wait if queue else 0.0,
                lambda message: self.report_phase(key, phases.QUEUED, message),
                "GPUs" if settings.allocates_gpus else "room on a host",
            )
        finally:
            self._phases.pop(key, None)
        if waited > 0.5 and KERNEL_ID in spec.labels:  # asked once, by the kernel start
            self._waited[key] = waited
        return workload

    async def _place_and_create(self, spec: WorkloadSpec, key: str) -> Workload:
        settings = self.config.docker
        rooms = await self.census(spec.image)
        if all(r.error is not None for r in rooms):
            raise BackendUnavailable(
                "no host of the config answered: "
                + "; ".join(f"{r.name}: {r.error}" for r in rooms)
            )
        gpus = int(settings.gpus) if settings.allocates_gpus else 0  # type: ignore[arg-type]
        name, reason = choose_host(rooms, settings.memory, gpus, settings.gpu_on_busy == "queue")
        log.info("%s %s: placed on %s", spec.labels.get(KIND, "workload"), key, reason)
        self.report_phase(key, phases.STARTING, f"placed on {reason}")
        if KERNEL_ID in spec.labels:  # the provisioner logs it, and forgets it
            self.placed[key] = (name, reason)
        placed = dataclasses.replace(
            spec, labels={**spec.labels, DOCKER_HOST: name, PLACEMENT: reason[:REASON_MAX]}
        )
        try:
            created = await self.members[name].create_now(placed)
        except BackendUnavailable as exc:  # gone since the census: next time it is skipped
            raise g.GPUsBusy(f"host {name} went away: {exc}", queue=True) from None
        return dataclasses.replace(created, id=join_id(name, created.id), labels=placed.labels)

    def start_progress(self, key: str) -> tuple[str, str] | None:
        return self._phases.get(key)

    def report_phase(self, key: str, phase: str, message: str) -> None:
        """Where the start of ``key`` is, for :meth:`start_progress` and the phase board."""
        self._phases[key] = (phase, message)
        phases.BOARD.enter(key, phase, message)

    def infrastructure_wait(self, key: str) -> float:
        return self._waited.pop(key, 0.0)

    # ------------------------------------------------------------------ one workload

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        member, container = self._member(workload_id)
        if member is None:
            raise BackendError(f"workload {workload_id}: no such host in the config")
        return await member.endpoints(container, ports)

    async def status(self, workload_id: str) -> WorkloadStatus:
        member, container = self._member(workload_id)
        if member is None:
            return WorkloadStatus("missing", exit_code=-1, reason="its host left the config")
        return await member.status(container)

    async def signal(self, workload_id: str, signum: int) -> None:
        member, container = self._member(workload_id)
        if member is not None:
            await member.signal(container, signum)

    async def stop(self, workload_id: str, grace_seconds: float) -> None:
        member, container = self._member(workload_id)
        if member is not None:
            await member.stop(container, grace_seconds)

    async def remove(self, workload_id: str) -> None:
        member, container = self._member(workload_id)
        if member is not None:
            await member.remove(container)

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        member, container = self._member(workload_id)
        return await member.logs(container, tail) if member is not None else ""

    async def stats(self, workload_id: str) -> WorkloadStats:
        member, container = self._member(workload_id)
        if member is None:
            return WorkloadStats(None, None, None)
        return await member.stats(container)

    def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        member, container = self._member(workload_id)
        if member is None:
            raise BackendError(f"workload {workload_id}: no such host in the config")
        return member.follow_logs(container)

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        member, container = self._member(workload_id)
        return await member.read_files(container, path, limit) if member is not None else {}

    # ------------------------------------------------------------------ all hosts

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        """Every host's workloads, ids prefixed with the host; a host that does not answer
        makes the listing fail (its workloads are not gone: nobody may take them so)."""
        names = list(self.members)
        answers = await asyncio.gather(
            *(self.members[n].list(labels) for n in names), return_exceptions=True
        )
        out: list[Workload] = []
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                raise BackendUnavailable(f"host {name}: {answer}") from None
            out += [dataclasses.replace(w, id=join_id(name, w.id)) for w in answer]
        return out

    async def check(self) -> dict[str, str]:
        """Each host's answer; fails only when none answers."""
        names = list(self.members)
        answers = await asyncio.gather(
            *(self.members[n].check() for n in names), return_exceptions=True
        )
        good = [a for a in answers if not isinstance(a, BaseException)]
        lines = [
            f"{n}: {a}"
            if isinstance(a, BaseException)
            else f"{n}: {a.get('engine')} {a.get('version')}"
            for n, a in zip(names, answers, strict=True)
        ]
        if not good:
            raise BackendUnavailable("no host answered: " + "; ".join(lines))
        return {
            **good[0],
            "daemon": ", ".join(m.url for m in self.members.values()),
            "hosts": "; ".join(lines),
        }


def host_rooms_summary(rooms: list[HostRoom]) -> dict[str, Any]:
    """Free and total GPUs of a config's hosts, as ``GET configs`` shows them."""
    answered = [r for r in rooms if r.error is None and r.gpus_total is not None]
    return {
        "free": sum(r.gpus_free or 0 for r in answered),
        "total": sum(r.gpus_total or 0 for r in answered),
        "hosts": [
            {"name": r.name, "free": r.gpus_free, "total": r.gpus_total, "error": r.error}
            for r in rooms
        ],
    }


async def gpu_summary(config: ExecutionConfig, image: str) -> dict[str, Any] | None:
    """Free and total GPUs of a ``gpus: N`` Docker config, per host (None: it allocates
    none); a host that does not answer says why instead."""
    if config.backend != "docker" or not config.docker.allocates_gpus:
        return None
    if config.docker.hosts:
        return host_rooms_summary(await MultiHostBackend(config).census(image))
    member = DockerBackend(config)
    name = member.url
    try:
        room = await asyncio.wait_for(
            dc.call(member.settings, _room_sync, member, None, image), CENSUS_TIMEOUT
        )
        room = dataclasses.replace(room, name=name)
    except asyncio.TimeoutError:
        room = HostRoom(name, member.url, error=f"no answer in {CENSUS_TIMEOUT:g} s")
    except (BackendError, docker.errors.DockerException, OSError) as exc:
        room = HostRoom(name, member.url, error=str(exc))
    return host_rooms_summary([room])
