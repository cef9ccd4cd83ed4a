"""Kernels and jobs live as long as their user's server on the hub.

Every few seconds the launcher lists its workloads, asks the hub (its own token,
``read:servers``) about each owner, and removes the kernels and jobs that no live server
owns: the owner has no running server (the admin's "stop server", the culler, a crash),
or every running server of theirs started after the workload was created (stopped and
started again between two polls). Model services are not bound to a server and stay.
"""

from __future__ import annotations

import asyncio

from .. import ownership
from ..backends.base import BackendError, Workload
from .hub import HubClient, HubUser
from .policy import HUB_BOUND
from .service import Launcher, log

#: kinds bound to the user's server
BOUND_KINDS = ("kernel", "job", "pool")


def orphaned(workload: Workload, user: HubUser | None) -> bool:
    """Whether no live server of the owner owns ``workload`` (pure)."""
    if workload.labels.get(ownership.KIND) not in BOUND_KINDS:
        return False
    if user is None or not user.live_servers:
        return True
    try:
        bound = float(workload.labels.get(HUB_BOUND, ""))
    except ValueError:
        return False  # created without a binding (not by this launcher under a hub): kept
    # alive while a server that already ran when it was created still runs
    return not any(started <= bound for started in user.live_servers)


async def reap_once(launcher: Launcher, hub: HubClient) -> list[Workload]:
    """Remove this launcher's kernels and jobs that no live server owns; return them."""
    loaded = await launcher.load()
    removed: list[Workload] = []
    users: dict[str, HubUser | None] = {}
    for _config, backend, rows in await launcher.workloads_by_backend(loaded, who="reaper: "):
        for workload in rows:
            owner = workload.labels.get(ownership.OWNER, "")
            if owner not in users:
                users[owner] = await hub.user(owner, fresh=True)
            if not orphaned(workload, users[owner]):
                continue
            try:
                await backend.remove(workload.id)
            except BackendError as exc:
                log.warning("reaper: cannot remove %s: %s", workload.name, exc)
                continue
            launcher.forget(workload.labels.get(ownership.CONFIG, ""), workload.id)
            removed.append(workload)
            log.info(
                "reaped %s %s of %s: no live server of theirs owns it",
                workload.labels.get(ownership.KIND),
                workload.name,
                owner,
            )
    return removed


async def reap_forever(launcher: Launcher, hub: HubClient, interval: float) -> None:
    """Poll until cancelled; a hub or daemon that does not answer is retried next time."""
    while True:
        try:
            await reap_once(launcher, hub)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the hub away, a broken config file: try again
            log.warning("reaper: skipped a round: %s", exc)
        await asyncio.sleep(interval)
