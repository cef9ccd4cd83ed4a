"""Reattaching to a running kernel container: after a server restart, or from another
process, only by the user who started it."""

from __future__ import annotations

from typing import Any

from . import ownership
from .backends import Backend
from .permissions import PermissionDenied


async def check_owner(
    backend: Backend, workload_id: str, user: str, recorded: str | None, what: str
) -> None:
    """Only the user who started a kernel reattaches to it: its container's owner label
    says so, or, for a kernel taken from a warm pool (whose label names nobody), the
    persisted owner. ``what`` names the kernel in the refusal."""
    # one label per query: Podman 4 matches nothing for several
    if any(w.id == workload_id for w in await backend.list({ownership.OWNER: user})):
        return
    pooled = await backend.list({ownership.KIND: "pool"}) if recorded == user else []
    kernels = (w for w in pooled if w.labels.get(ownership.POOL_OF) != "job")  # not runners
    if any(w.id == workload_id for w in kernels):
        return
    raise PermissionDenied(f"cannot reattach: {what} was started by another user, not {user}")


def decoded_connection_info(info: dict[str, Any]) -> dict[str, Any]:
    """Connection info as JSON can hold it (the key as text)."""
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}


async def reattach(
    provisioner_info: dict[str, Any], kernel_name: str, **manager_kwargs: Any
) -> Any:
    """A kernel manager connected to a kernel container started by another process.

    ``provisioner_info`` is what :meth:`ContainerProvisioner.get_provisioner_info` returned
    (a server persists it to survive its own restart).
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    manager = AsyncKernelManager(kernel_name=kernel_name, **manager_kwargs)
    manager.kernel_id = provisioner_info["kernel_id"]
    provisioner = KernelProvisionerFactory.instance(
        parent=manager.parent
    ).create_provisioner_instance(manager.kernel_id, manager.kernel_spec, parent=manager)
    await provisioner.load_provisioner_info(provisioner_info)
    manager.provisioner = provisioner
    manager.load_connection_info(provisioner_info["connection_info"])
    return manager
