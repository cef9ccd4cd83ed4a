"""``prepull CONFIG...``: configs' images pulled ahead of time, where their workloads run.

On Kubernetes a DaemonSet pulls the image onto every node that could run the config's pods
and is removed once they all hold it (``--keep`` keeps it, so that nodes that join later
pull it too; ``--remove`` deletes the kept ones); on Docker each config's daemon gets it
(pulled from the config's registry, else copied from the local daemon). See
:mod:`jupyter_dss_containers.prepull`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from traitlets import Bool, Float, Unicode

from ..backends import BackendError, local_backend_for
from ..config import ConfigFile, ExecutionConfig, format_size
from .base import COMMON_ALIASES, JSON_FLAG, CommandError, DSSCommand, console, errors


def _say(line: str) -> None:
    errors.print(line, highlight=False, markup=False)


class PrepullCommand(DSSCommand):
    description = (
        "Pull configs' images ahead of time: onto every Kubernetes node that could run "
        "them (a DaemonSet, removed when done), or into each Docker config's daemon."
    )
    keep = Bool(
        False,
        config=True,
        help="Kubernetes: keep the DaemonSet, so that nodes that join later pull the image "
        "too (prepull --remove CONFIG, or cleanup --all, removes it).",
    )
    remove = Bool(
        False,
        config=True,
        help="Kubernetes: delete the configs' pre-pull DaemonSets, kept ones too.",
    )
    timeout = Float(600.0, config=True, help="Seconds every node may take (Kubernetes).")
    code_env = Unicode(
        None, allow_none=True, config=True, help="Pre-pull this code env's image of the configs."
    )
    aliases = {
        **COMMON_ALIASES,
        "timeout": "PrepullCommand.timeout",
        "env": "PrepullCommand.code_env",
    }
    flags = {
        **JSON_FLAG,
        "keep": ({"PrepullCommand": {"keep": True}}, "Keep the DaemonSet for new nodes."),
        "remove": ({"PrepullCommand": {"remove": True}}, "Delete the pre-pull DaemonSets."),
    }

    @property
    def _out(self) -> Any:
        """Where the summary lines go: stdout, or stderr when stdout carries the JSON."""
        return errors if self.as_json else console

    def run(self) -> None:
        if not self.extra_args:
            raise CommandError("name the execution configs to pre-pull: prepull CONFIG...")
        config_file = self.load()
        configs = [config_file.get(name) for name in self.extra_args]
        rows, failed = asyncio.run(self._all(config_file, configs))
        if self.as_json:
            self.emit(rows)
        for name, why in failed.items():
            errors.print(f"[bold red]failed[/] {name}: {why}", highlight=False)
        if failed:
            raise CommandError(f"pre-pull failed for {len(failed)} of {len(configs)} configs")

    async def _all(
        self, config_file: ConfigFile, configs: list[ExecutionConfig]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        from ..prepull import prepull_docker

        rows: list[dict[str, Any]] = []
        failed: dict[str, str] = {}
        docker = [c for c in configs if c.backend == "docker"]
        if docker and not self.remove:
            try:
                for done in await prepull_docker(config_file, docker, self.code_env, _say):
                    rows.append({"backend": "docker", **vars(done)})
                    self._print_daemon(done)
            except BackendError as exc:
                failed[", ".join(c.name for c in docker)] = str(exc)
        for config in configs:
            if config.backend != "kubernetes":
                continue
            try:
                rows.append(await self._cluster(config_file, config))
            except BackendError as exc:
                failed[config.name] = str(exc)
        return rows, failed

    def _print_daemon(self, done: Any) -> None:
        names = ", ".join(done.configs)
        if done.action == "present":
            self._out.print(f"{names}: {done.image} is already on {done.daemon}", highlight=False)
        elif done.action == "copied":
            size = format_size(done.bytes_sent)
            self._out.print(
                f"[green]copied[/] {done.image} to {done.daemon} for {names} ({size} in "
                f"{done.seconds:.1f} s)",
                highlight=False,
            )
        else:
            self._out.print(
                f"[green]pulled[/] {done.image} on {done.daemon} for {names} "
                f"({done.seconds:.1f} s)",
                highlight=False,
            )

    async def _cluster(self, config_file: ConfigFile, config: ExecutionConfig) -> dict[str, Any]:
        from ..backends.kubernetes.prepuller import prepull_on_cluster, remove_config_sets
        from ..prepull import config_image

        backend = local_backend_for(config)
        if self.remove:
            removed = await remove_config_sets(backend)
            self._out.print(f"{config.name}: removed {len(removed)} pre-pull DaemonSets")
            return {"backend": "kubernetes", "config": config.name, "removed": removed}
        image = config_image(config_file, config, self.code_env)

        def report(node: Any) -> None:
            detail = f" ({node.detail})" if node.detail else ""
            _say(f"{config.name}: node {node.node}: {node.state}{detail}")

        result = await prepull_on_cluster(backend, image, self.keep, self.timeout, report)
        nodes = [n.node for n in result.nodes]
        held = "" if result.holding is None else f"; nodes reporting it: {len(result.holding)}"
        what = f"kept DaemonSet {result.namespace}/{result.name}" if result.kept else "removed"
        self._out.print(
            f"[green]pulled[/] {image} for {config.name} on {len(nodes)} nodes "
            f"({', '.join(nodes)}){held}; {what}",
            highlight=False,
        )
        return {
            "backend": "kubernetes",
            "config": config.name,
            "image": image,
            "namespace": result.namespace,
            "daemon_set": result.name,
            "kept": result.kept,
            "nodes": [vars(n) for n in result.nodes],
            "holding": result.holding,
        }
