"""The subcommands about running workloads: ``jobs``, ``logs``, ``cancel``, ``cleanup``."""

from __future__ import annotations

import asyncio

from rich.table import Table
from traitlets import Bool, Integer

from .. import ownership
from ..config import DockerSettings
from ..reapscope import users_seen
from .base import COMMON_ALIASES, JSON_FLAG, CommandError, DSSCommand, console, errors


class CleanupCommand(DSSCommand):
    description = (
        "Remove containers and pods of ours that no running process owns; with --images, "
        "also the older builds of the file's base and code-env images and of the server "
        "image on the local daemon."
    )
    everything = Bool(False, config=True, help="Remove all of ours, owned or not.")
    images = Bool(False, config=True, help="Also remove stale builds of the file's images.")
    flags = {
        **JSON_FLAG,
        "all": ({"CleanupCommand": {"everything": True}}, "Remove all of ours."),
        "images": ({"CleanupCommand": {"images": True}}, "Also remove stale image builds."),
    }

    def run(self) -> None:
        config_file = self.load()
        configs = list(config_file.execution_configs.values())
        # with namespace: dss-${user}, every namespace of the file's users (groups:) too
        users = users_seen(config_file)
        removed, skipped = asyncio.run(ownership.reap_orphans(configs, self.everything, users))
        for name, why in skipped.items():
            errors.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
        for w in removed:
            kernel = w.labels.get(ownership.KERNEL_ID) or w.labels.get(ownership.JOB_ID, "")
            console.print(
                f"removed {w.name} ({w.labels.get(ownership.KIND)} {kernel})", highlight=False
            )
        console.print(f"{len(removed)} removed")
        if self.images:
            self._prune_images(config_file)

    def _prune_images(self, config_file) -> None:
        from ..backends.docker import docker_client
        from ..images import prune_stale_images

        pruned, kept = prune_stale_images(config_file, docker_client(DockerSettings()))
        for state in pruned:
            where = f" for {state.config}" if state.config else ""
            console.print(f"removed image {state.ref} (stale {state.kind} {state.name}{where})")
        for ref, why in kept.items():
            errors.print(f"[yellow]kept[/] {ref}: {why}", highlight=False)
        console.print(f"{len(pruned)} stale images removed")


class JobsCommand(DSSCommand):
    description = "List running job containers (any process's) on the configs' daemons."

    def run(self) -> None:
        from ..jobs.workloads import job_workloads, row

        found, skipped = asyncio.run(job_workloads(self.load()))
        rows = [row(w) for _, w in found]
        for name, why in skipped.items():
            errors.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
        if self.as_json:
            self.emit(rows)
            return
        table = Table(title="Jobs")
        for column in ("id", "config", "owner", "state", "container"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["id"], r["config"], r["owner"], r["state"], r["container"])
        console.print(table)


class LogsCommand(DSSCommand):
    description = "Print the output of a job so far: logs JOB_ID."
    tail = Integer(200, config=True, help="Number of last lines.")
    aliases = {**COMMON_ALIASES, "tail": "LogsCommand.tail"}

    def run(self) -> None:
        from ..jobs.workloads import find_job

        if len(self.extra_args) != 1:
            raise CommandError("name one job: logs JOB_ID")

        async def logs() -> str:
            backend, workload = await find_job(self.load(), self.extra_args[0])
            return await backend.logs(workload.id, tail=self.tail)

        print(asyncio.run(logs()), end="")


class CancelCommand(DSSCommand):
    description = "Cancel jobs: stop and remove their containers (cancel JOB_ID...)."

    def run(self) -> None:
        from ..jobs.workloads import find_job

        if not self.extra_args:
            raise CommandError("name the jobs to cancel: cancel JOB_ID...")

        async def cancel(job_id: str) -> None:
            backend, workload = await find_job(self.load(), job_id)
            await backend.remove(workload.id)

        for job_id in self.extra_args:
            asyncio.run(cancel(job_id))
            console.print(f"cancelled {job_id}")
