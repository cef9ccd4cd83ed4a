"""The subcommands that read the config file: ``configs``, ``validate``, ``doctor``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.table import Table
from traitlets import Bool

from .. import images, summary
from ..backends import BackendError, backend_for
from ..config import ConfigFile, ExecutionConfig
from ..permissions import permitted_configs, process_identity
from .base import JSON_FLAG, DSSCommand, console


class ConfigsCommand(DSSCommand):
    description = "List the execution configurations you may use."

    show_all = Bool(False, config=True, help="List every configuration, not only yours.")
    flags = {**JSON_FLAG, "all": ({"ConfigsCommand": {"show_all": True}}, "List all configs.")}

    def run(self) -> None:
        config_file = self.load()
        identity = process_identity(config_file)
        configs = (
            list(config_file.execution_configs.values())
            if self.show_all
            else permitted_configs(identity, config_file)
        )
        placements = {c.name: summary.placement(c, identity.username) for c in configs}
        rows = [
            {
                "name": c.name,
                "backend": c.backend,
                "image": c.image,
                "where": placements[c.name].where,
                "resources": placements[c.name].summary,
                "code_envs": [e.name for e in config_file.envs_for(c.name)],
                "groups": list(c.groups),
                "description": c.description,
            }
            for c in configs
        ]
        if self.as_json:
            self.emit(rows)
            return
        table = Table(title=f"Execution configurations ({config_file.source})")
        for column in ("name", "backend", "image", "where", "resources", "code envs", "groups"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r["name"],
                r["backend"],
                r["image"],
                r["where"],
                r["resources"],
                ", ".join(r["code_envs"]) or "-",
                ", ".join(r["groups"]) or "-",
            )
        console.print(table)


class ValidateCommand(DSSCommand):
    description = "Validate the config file; print one line per problem and exit 1 if any."

    def run(self) -> None:
        config_file = self.load()
        n = len(config_file.execution_configs)
        console.print(f"{config_file.source}: valid ({n} execution configuration{'s' * (n != 1)})")


class DoctorCommand(DSSCommand):
    description = (
        "Check that every configuration's daemon or cluster answers and its image is there."
    )

    def run(self) -> None:
        config_file = self.load()
        results = asyncio.run(self._check_all(config_file))
        if self.as_json:
            self.emit(results)
        else:
            table = Table(title="dss-containers doctor")
            for column in ("config", "status", "daemon / cluster", "engine", "image", "seconds"):
                table.add_column(column)
            for r in results:
                table.add_row(
                    r["config"],
                    "[green]ok[/]" if r["ok"] else f"[red]{r['error']}[/]",
                    r.get("daemon", ""),
                    r.get("engine", ""),
                    r.get("image", ""),
                    f"{r['seconds']:.2f}",
                )
            console.print(table)
        if not all(r["ok"] for r in results):
            self.exit(1)

    async def _check_all(self, config_file: ConfigFile) -> list[dict[str, Any]]:
        from ..config import per_host  # a config over several daemons: one row per daemon

        configs = [h for c in config_file.execution_configs.values() for h in per_host(c)]
        return list(await asyncio.gather(*(self._check(config_file, c) for c in configs)))

    @staticmethod
    async def _check(config_file: ConfigFile, config: ExecutionConfig) -> dict[str, Any]:
        began = time.perf_counter()
        result: dict[str, Any] = {"config": config.name, "ok": True}
        try:
            backend = backend_for(config)
            info = await asyncio.wait_for(backend.check(), timeout=10)
            result.update(
                daemon=info.get("daemon", ""), engine=f"{info['engine']} {info['version']}"
            )
            if config.backend == "docker":
                ref = images.resolve_image(config_file, config)
                present = await asyncio.to_thread(
                    lambda: images.image_exists(backend.client(), ref)  # type: ignore[attr-defined]
                )
                result["image"] = f"{ref} ({'present' if present else 'missing'})"
                if not present:
                    base = config_file.base_image_of(config)
                    hint = (
                        f"jupyter dss-containers build-base-image {base.name}"
                        if base
                        else f"pull {ref}"
                    )
                    result.update(ok=False, error=f"image {ref} missing; run: {hint}")
        except (BackendError, TimeoutError) as exc:
            result.update(ok=False, error=str(exc) or "no answer within 10 s")
        result["seconds"] = time.perf_counter() - began
        return result
