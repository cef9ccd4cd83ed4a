"""How containers are networked: the isolated bridge they join when their config names
none, and the address the server dials their published ports at.

A bridge made once per daemon with inter-container traffic off: its containers reach out
(pip, data sources) but cannot reach each other, and Docker keeps bridges apart, so no other
container reaches them. Measured here against the default bridge, a network per kernel and
none (README, "How a container kernel works"), it is the cheapest that does both.
Podman's Docker API drops the option: there containers stay on the daemon's default network.
"""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import urlparse

import docker
import docker.errors

from ...config import DockerSettings
from ...ownership import MANAGED
from ..base import BackendError

ISOLATED_NETWORK = "dss-containers-isolated"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
#: daemon URL -> the network to use there (None: the daemon ignores ICC_OPTION)
_NETWORKS: dict[str, str | None] = {}
_LOCK = threading.Lock()


def isolated_network(client: docker.DockerClient, url: str) -> str | None:
    """The isolated network on the daemon at ``url`` (made on first use; blocking), or None
    where the daemon cannot turn inter-container traffic off."""
    with _LOCK:
        if url in _NETWORKS:
            return _NETWORKS[url]
        made = False
        try:
            attrs = client.api.inspect_network(ISOLATED_NETWORK)
        except docker.errors.NotFound:
            try:
                client.api.create_network(
                    ISOLATED_NETWORK,
                    driver="bridge",
                    options={ICC_OPTION: "false"},
                    labels={MANAGED: "true"},
                    check_duplicate=True,
                )
                made = True
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # another process made it meanwhile
                    raise
            attrs = client.api.inspect_network(ISOLATED_NETWORK)
        isolated = (attrs.get("Options") or {}).get(ICC_OPTION) == "false"
        if not isolated and made:
            client.api.remove_network(attrs["Id"])
        _NETWORKS[url] = ISOLATED_NETWORK if isolated else None
        return _NETWORKS[url]


def forget_network(url: str) -> None:
    """Ask the daemon again next time (the network was removed by hand)."""
    with _LOCK:
        _NETWORKS.pop(url, None)


def connect_address(settings: DockerSettings, url: str) -> str:
    """Where the Jupyter server dials published ports of the daemon at ``url`` (pure)."""
    if settings.connect_address:
        return settings.connect_address
    if settings.is_remote:
        return urlparse(url).hostname or "127.0.0.1"
    bind = settings.bind_address
    return "127.0.0.1" if bind in ("0.0.0.0", "") else bind


def check_binding(settings: DockerSettings, url: str) -> None:
    """A remote daemon's 127.0.0.1 is not ours: refuse before a kernel start times out
    (unless connect_address says how to get there, say through a tunnel). Pure."""
    host = urlparse(url).hostname or ""
    if (
        settings.is_remote
        and not settings.connect_address
        and not is_loopback(host)
        and is_loopback(settings.bind_address)
    ):
        raise BackendError(
            f"the daemon at {url} would publish kernel ports on its own "
            f"{settings.bind_address}, which this server cannot reach: set "
            f"docker.bind_address to an address of {host} that this server can reach"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
