"""The launcher's core: the one place that holds the config file and the engines' backends.

Every call names a config and, past creation, a workload; the workload must carry this
launcher's label, the config's and the caller's name as owner, or the answer is one
uniform "no such workload" (no oracle telling "not yours" from "missing").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import images, ownership
from ..backends import Backend, BackendError, local_backend_for
from ..backends.base import Workload
from ..budgets import Budgets, Holding, demand_of, holdings
from ..config import ConfigError, ConfigFile, ExecutionConfig, parse_config, read_document
from ..permissions import Identity, PermissionDenied, check_permission, permitted_configs
from .admission import Admission
from .namespaces import managed_namespaces, namespace_of_id, per_user, users_namespaces
from .policy import (
    HUB_BOUND,
    LAUNCHER,
    Caller,
    Refused,
    as_user,
    check_image,
    os_user,
    parse_request,
    restricted_document,
    trusted_spec,
)
from .scope import HOME, scope_workspace

log = logging.getLogger("dss_containers.launcher")


class NoSuchWorkload(Refused):
    def __init__(self, workload_id: str):
        super().__init__(f"no such workload: {workload_id}", 404)


@dataclass
class Loaded:
    """The config file as last read (reread when it changes on disk)."""

    config_file: ConfigFile
    document: dict[str, Any]
    budgets: Budgets
    stamp: tuple[float, int] | None


@dataclass
class Launcher:
    config_path: str | None
    launcher_id: str
    #: under a hub: workloads are bound to the caller's live servers
    hub_bound: bool = False
    map_os_users: bool = True
    min_uid: int = 1000
    #: a user's workspace root: their home directory (""), or a template with ${user}
    workspace_root: str = HOME
    _loaded: Loaded | None = None
    _backends: dict[tuple[str, str | None], Backend] = field(default_factory=dict)
    _owners: dict[tuple[str, str], str] = field(default_factory=dict)
    _port_owners: dict[int, str] = field(default_factory=dict)
    #: budgets' queue: seconds a start over a queueing budget waits, and between two looks
    queue_timeout: float = 300.0
    queue_poll: float = 2.0
    _admission: Admission | None = None

    @property
    def admission(self) -> Admission:
        if self._admission is None:
            self._admission = Admission(self.queue_timeout, self.queue_poll)
        return self._admission

    # ------------------------------------------------------------------ config

    async def load(self) -> Loaded:
        """The config file, reread when its modification time or size changed."""
        if self._loaded is not None and not self.config_path:
            return self._loaded  # the embedded default does not change
        stamp = await asyncio.to_thread(self._stamp)
        if self._loaded is None or stamp is None or stamp != self._loaded.stamp:
            try:
                data, source = await asyncio.to_thread(read_document, self.config_path)
                config_file = parse_config(data, source)
            except ConfigError as exc:
                if self._loaded is None:
                    raise
                # an edit that breaks the file must not stop every user: keep the last good
                log.error("config file not reloaded, the previous one stays in use: %s", exc)
                self._loaded.stamp = stamp
                return self._loaded
            budgets = Budgets.from_dict(data.get("budgets"))
            self._loaded = Loaded(config_file, data, budgets, stamp)
            self._backends.clear()
        return self._loaded

    def _stamp(self) -> tuple[float, int] | None:
        if not self.config_path:
            return None
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def config(self, loaded: Loaded, name: str) -> ExecutionConfig:
        config = loaded.config_file.execution_configs.get(name)
        if config is None:
            raise Refused(f"no execution configuration named {name!r}", 404)
        return config

    def backend(self, config: ExecutionConfig, user: str | None = None) -> Backend:
        key = (config.name, user)
        if key not in self._backends:
            self._backends[key] = local_backend_for(as_user(config, user))
        return self._backends[key]

    async def document_for(self, caller: Caller) -> dict[str, Any]:
        loaded = await self.load()
        permitted = {c.name for c in permitted_configs(caller.identity(), loaded.config_file)}
        user = None if caller.trusted_server else caller.username
        return restricted_document(loaded.document, user, caller.groups, permitted)

    # ------------------------------------------------------------------ create

    async def create(
        self,
        caller: Caller,
        config_name: str,
        body: Any,
        gone: Callable[[], bool] | None = None,
    ) -> Workload:
        """Start a workload for the caller; ``gone`` says the caller hung up (while queued)."""
        loaded = await self.load()
        config = self.config(loaded, config_name)
        spec = parse_request(body)
        owner = caller.username or spec.labels.get(ownership.OWNER)
        if not owner:
            raise Refused("name the user: the owner label of the workload", 400)
        groups = caller.groups
        if caller.trusted_server:  # acting for a user it names: that user's groups
            groups = frozenset(loaded.config_file.groups.get(owner, ()))
        identity = Identity(owner, groups)
        try:
            check_permission(identity, config)
        except PermissionDenied as exc:
            raise Refused(str(exc), 403) from None
        code_env = spec.labels.get(ownership.CODE_ENV)
        try:
            expected = await asyncio.to_thread(
                images.resolve_image, loaded.config_file, config, code_env
            )
        except (ValueError, KeyError) as exc:  # an unknown code env, or not for this config
            raise Refused(str(exc.args[0] if exc.args else exc), 400) from None
        check_image(spec, config, expected)
        extra: dict[str, str] = {}
        if self.hub_bound:
            if caller.hub_started is None:
                raise Refused(
                    f"user {owner!r} has no running server on the hub: kernels and jobs "
                    "live only as long as their user's server",
                    409,
                )
            extra[HUB_BOUND] = f"{caller.hub_started:.6f}"
        kind = spec.labels[ownership.KIND]
        demand = demand_of(config, kind)
        spec.host_ports = {
            p: h for p, h in spec.host_ports.items() if self._port_owners.get(h) == owner
        }
        user = os_user(owner, self.min_uid) if self.map_os_users else None
        # the user's own workspace, found here; the caller names only where to start in it
        plan = await asyncio.to_thread(
            scope_workspace, config, owner, user, self.workspace_root, spec.working_dir
        )
        spec = dataclasses.replace(spec, workspace=plan, working_dir=plan.working_dir)
        trusted_spec(spec, config, owner, self.launcher_id, extra)  # a bad request never queues
        reservation = await self.admission.admit(
            loaded.budgets,
            owner,
            groups,
            demand,
            spec.name,
            config.name,
            lambda: self._census(loaded, owner),
            gone,
        )
        try:
            extra.update(reservation.labels)
            spec = trusted_spec(spec, config, owner, self.launcher_id, extra)
            workload = await self.backend(config, user).create(spec)
        finally:
            self.admission.release(reservation)
        self._owners[(config.name, workload.id)] = owner
        log.info("started %s %s for %s (config %s)", kind, workload.name, owner, config.name)
        return workload

    async def _census(self, loaded: Loaded, owner: str) -> list[Holding]:
        return holdings(await self.all_workloads(loaded, also=[owner]))

    def backend_in(self, config: ExecutionConfig, namespace: str) -> Backend:
        """The config's Kubernetes backend looking in ``namespace`` (a user's)."""
        key = (config.name, f"namespace:{namespace}")
        if key not in self._backends:
            backend = local_backend_for(config)
            backend.namespace = namespace  # type: ignore[attr-defined]
            self._backends[key] = backend
        return self._backends[key]

    def known_users(self, loaded: Loaded) -> set[str]:
        """Every user this launcher knows by name: its callers and the file's."""
        users = set(self._owners.values()) | set(loaded.config_file.groups)
        return users | set(loaded.budgets.users)

    async def backends_of(
        self,
        loaded: Loaded,
        config: ExecutionConfig,
        users: Iterable[str] | None = None,
        also: Iterable[str] = (),
    ) -> list[Backend]:
        """Where the config's workloads are: its backend, or with a namespace per user, one
        per namespace (``users``' own, else every namespace this launcher can find, and
        those of the users ``also`` names)."""
        if not per_user(config):
            return [self.backend(config)]
        if users is None:
            found = await managed_namespaces(config)
            known = self.known_users(loaded) | set(also)
            namespaces = found | users_namespaces(config, known)
        else:
            namespaces = users_namespaces(config, users)
        return [self.backend_in(config, ns) for ns in sorted(namespaces)]

    async def listing_backends(
        self, loaded: Loaded, also: Iterable[str] = ()
    ) -> list[tuple[ExecutionConfig, Backend]]:
        """Every daemon, cluster and namespace of the file, each once (even when two
        addresses name one engine)."""
        seen: set[Any] = set()
        out = []
        for config in loaded.config_file.execution_configs.values():
            for backend in await self.backends_of(loaded, config, also=also):
                if backend.target_key() not in seen:
                    seen.add(backend.target_key())
                    out.append((config, backend))
        return out

    async def workloads_by_backend(
        self, loaded: Loaded, also: Iterable[str] = (), who: str = ""
    ) -> list[tuple[ExecutionConfig, Backend, list[Workload]]]:
        """This launcher's workloads on each daemon, cluster and namespace of the file, with
        the backend that lists them; one that does not answer is logged (``who`` names the
        caller in the line) and skipped. The one walk the listing and the reaper share."""
        out = []
        for config, backend in await self.listing_backends(loaded, also):
            try:
                rows = await backend.list({LAUNCHER: self.launcher_id})
            except BackendError as exc:
                log.warning("%scannot list the workloads of config %s: %s", who, config.name, exc)
                continue
            mine = [w for w in rows if w.labels.get(LAUNCHER) == self.launcher_id]
            out.append((config, backend, mine))
        return out

    async def all_workloads(
        self, loaded: Loaded | None = None, also: Iterable[str] = ()
    ) -> list[Workload]:
        """This launcher's workloads on every daemon and cluster of the file; an unreachable
        one is logged and skipped."""
        loaded = loaded or await self.load()
        found: dict[str, Workload] = {}
        for _config, _backend, rows in await self.workloads_by_backend(loaded, also):
            for w in rows:
                found.setdefault(w.id, w)
        return list(found.values())

    # ------------------------------------------------------------------ per workload

    async def owned(self, caller: Caller, config_name: str, workload_id: str) -> Backend:
        """The config's backend, if the workload is this launcher's, of this config and the
        caller's; else :class:`NoSuchWorkload`, whatever the reason."""
        loaded = await self.load()
        config = loaded.config_file.execution_configs.get(config_name)
        if config is None:
            raise NoSuchWorkload(workload_id)
        if per_user(config):  # a pod's id names its namespace: look there
            namespace = namespace_of_id(workload_id)
            if namespace is None:
                raise NoSuchWorkload(workload_id)
            backend = self.backend_in(config, namespace)
        else:
            backend = self.backend(config)
        owner = self._owners.get((config_name, workload_id))
        if owner is None:
            labels = {LAUNCHER: self.launcher_id}
            if not caller.trusted_server:
                labels = {ownership.OWNER: caller.username or ""}
            for w in await backend.list(labels):
                if (
                    w.id == workload_id
                    and w.labels.get(LAUNCHER) == self.launcher_id
                    and w.labels.get(ownership.CONFIG) == config_name
                ):
                    owner = w.labels.get(ownership.OWNER, "")
                    self._owners[(config_name, workload_id)] = owner
                    break
        if owner is None or (not caller.trusted_server and owner != caller.username):
            raise NoSuchWorkload(workload_id)
        return backend

    def forget(self, config_name: str, workload_id: str) -> None:
        """The workload was removed: forget its owner and let queued starts look again."""
        self._owners.pop((config_name, workload_id), None)
        self.admission.freed()

    def note_ports(self, config_name: str, workload_id: str, ports: dict[int, int]) -> None:
        """Remember whose these host ports are: only that user may ask for them again."""
        owner = self._owners.get((config_name, workload_id))
        for host_port in ports.values():
            if owner:
                self._port_owners[int(host_port)] = owner
        if len(self._port_owners) > 100000:
            self._port_owners.clear()

    async def list(self, caller: Caller, config_name: str, labels: dict[str, str]) -> list:
        loaded = await self.load()
        config = self.config(loaded, config_name)
        users = None if caller.trusted_server else [caller.username or ""]
        rows = []
        for backend in await self.backends_of(loaded, config, users):
            rows += await backend.list(labels)
        return [
            w
            for w in rows
            if w.labels.get(LAUNCHER) == self.launcher_id
            and w.labels.get(ownership.CONFIG) == config_name
            and (caller.trusted_server or w.labels.get(ownership.OWNER) == caller.username)
        ]

    async def usage(self, caller: Caller) -> dict[str, Any]:
        """What the caller holds and may hold (the budget that applies to them)."""
        loaded = await self.load()
        live = await self.all_workloads(loaded, also=[caller.username or ""])
        mine = [h for h in holdings(live) if h.owner == caller.username]
        limits = loaded.budgets.for_user(caller.username or "")
        return {
            "user": caller.username,
            "limits": {k: v for k, v in vars(limits).items() if v is not None},
            "queued": self.admission.queued(caller.username or ""),
            "workloads": [
                {"name": h.name, "kind": h.kind, "config": h.config, **vars(h.demand)} for h in mine
            ],
        }
