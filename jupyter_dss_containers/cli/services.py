"""The subcommands about model services: ``services``, ``deploy``, ``undeploy``.

They act for this process's user (the OS or hub user), straight on the configs' Docker
daemons like ``cleanup`` does, with the same permission check as the server. ``deploy``
sends the model file's bytes as they are: it is loaded in the serving containers only.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from traitlets import Integer, Unicode

from ..permissions import check_permission, process_identity
from .base import COMMON_ALIASES, CommandError, DSSCommand, console, errors


class ServicesCommand(DSSCommand):
    description = "List your model services: versions, traffic, replicas, latency."

    def run(self) -> None:
        from ..services import engine

        config_file = self.load()
        owner = process_identity(config_file).username
        rows = []
        for config in engine.docker_configs(config_file):
            try:
                rows += engine.rows(config, owner)
            except Exception as exc:
                errors.print(f"[yellow]skipped[/] {config.name}: {exc}", highlight=False)
        if self.as_json:
            self.emit(rows)
            return
        table = Table(title="Model services")
        for column in ("name", "config", "url", "versions", "replicas", "requests", "p99 ms"):
            table.add_column(column)
        for r in rows:
            versions = r.get("versions", [])
            table.add_row(
                r["name"],
                str(r.get("config")),
                r.get("url", r.get("error", "")),
                " ".join(f"{v['version']}:{v['traffic_percent']:g}%" for v in versions),
                " ".join(
                    f"{sum(x['ready'] for x in v['replicas'])}/{len(v['replicas'])}"
                    for v in versions
                ),
                " ".join(str(v["requests"]) for v in versions),
                " ".join(str(v["p99_ms"]) for v in versions),
            )
        console.print(table)


class DeployCommand(DSSCommand):
    description = (
        "Serve a model: deploy NAME MODEL_FILE CONFIG (a pickle/cloudpickle file); a service "
        "that exists gets MODEL_FILE as a new version with all the traffic once ready."
    )
    replicas = Integer(1, config=True, help="Replica containers of the version.")
    version = Unicode("v1", config=True, help="The version's name.")
    aliases = {
        **COMMON_ALIASES,
        "replicas": "DeployCommand.replicas",
        "version": "DeployCommand.version",
    }

    def run(self) -> None:
        from ..images import resolve_image
        from ..services import engine, spec

        if len(self.extra_args) != 3:
            raise CommandError("usage: deploy NAME MODEL_FILE CONFIG [--replicas N] [--version V]")
        name, path, config_name = self.extra_args
        config_file = self.load()
        config = config_file.get(config_name)
        identity = process_identity(config_file)
        check_permission(identity, config)
        if config.backend != "docker":
            raise CommandError(f"config {config_name!r}: services run on Docker configs only")
        try:
            spec.check_name(name)
            spec.check_version(self.version)
            spec.check_replicas(self.replicas)
            model = Path(path).read_bytes()
        except (spec.SpecError, OSError) as exc:
            raise CommandError(str(exc)) from None
        image = resolve_image(config_file, config)
        meta = {"platform": "file", "file": Path(path).name}
        try:
            try:
                row, key = engine.deploy(
                    config, image, identity.username, name, self.version, self.replicas, model, meta
                )
                console.print(f"service {name} serves at {row['url']} (API key: {key})")
            except engine.ServiceError as exc:
                if exc.status != 409:
                    raise
                args = (config, image, identity.username, name, self.version, self.replicas)
                row = engine.add_version(*args, model, meta, None)
                console.print(f"service {name}: version {self.version} serves at {row['url']}")
        except engine.ServiceError as exc:
            raise CommandError(str(exc)) from None


class UndeployCommand(DSSCommand):
    description = "Remove model services: undeploy NAME... (containers, volumes, network)."

    def run(self) -> None:
        from ..services import engine

        if not self.extra_args:
            raise CommandError("name the services to remove: undeploy NAME...")
        config_file = self.load()
        owner = process_identity(config_file).username
        for name in self.extra_args:
            try:
                engine.remove(engine.find_config(config_file, owner, name), owner, name)
            except engine.ServiceError as exc:
                raise CommandError(str(exc)) from None
            console.print(f"removed service {name}")
