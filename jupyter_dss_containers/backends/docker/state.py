"""What the daemon's answers mean (pure): a container's state, its published ports, its
resource use, the containers a listing names and the engine that answered."""

from __future__ import annotations

from typing import Any

from ...config import format_size
from ..base import BackendError, Workload, WorkloadStatus

#: states of a container that has not ended (a created one is about to start)
_ALIVE = ("created", "running", "restarting", "paused")


def workload_status(attrs: dict[str, Any]) -> WorkloadStatus:
    """A container's state from its inspect record, with why it ended in words."""
    state = attrs.get("State", {})
    if state.get("Status") in _ALIVE:
        return WorkloadStatus("running" if state["Status"] == "running" else "pending")
    code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        limit = (attrs.get("HostConfig") or {}).get("Memory") or 0
        limit_text = f"memory limit {format_size(limit)}" if limit else "no memory limit set"
        return WorkloadStatus("exited", code, f"OOM-killed ({limit_text})", oom_killed=True)
    reason = f"exited with code {code}"
    if state.get("Error"):
        reason += f": {state['Error']}"
    elif code in (137, -9):
        reason += " (killed by SIGKILL)"
    elif code == 143:
        reason += " (stopped by SIGTERM: docker stop, or its daemon shutting down)"
    return WorkloadStatus("exited", code, reason)


def host_ports(attrs: dict[str, Any], ports: tuple[int, ...], workload_id: str) -> dict[int, int]:
    """The host port each container port is published on; a port without one is an error
    that names the container's state (it died before the daemon published it)."""
    published = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    mapping = {}
    for port in ports:
        bindings = published.get(f"{port}/tcp") or []
        if not bindings:
            state = attrs.get("State", {})
            raise BackendError(
                f"container {attrs.get('Name', workload_id)} has no published port for {port} "
                f"(state: {state.get('Status')}, error: {state.get('Error') or 'none'})"
            )
        mapping[port] = int(bindings[0]["HostPort"])
    return mapping


def memory_usage(raw: dict[str, Any]) -> int | None:
    """Memory in use as ``docker stats`` counts it: without the inactive page cache."""
    mem = raw.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is not None:
        stats_ = mem.get("stats") or {}
        usage -= stats_.get("total_inactive_file", stats_.get("inactive_file", 0))
    return usage


def cpu_total(raw: dict[str, Any]) -> int | None:
    """CPU time used so far (ns), for a percentage between two samples."""
    return ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")


def cpu_percent(previous: tuple[int, int] | None, now: tuple[int, int]) -> float | None:
    """The CPU share between two ``(cpu ns, wall ns)`` samples, in percent of one CPU."""
    if not previous or now[1] <= previous[1]:
        return None
    return round(100.0 * (now[0] - previous[0]) / (now[1] - previous[1]), 1)


def workloads(rows: list[dict[str, Any]]) -> list[Workload]:
    """The containers of a listing (``GET /containers/json``) as workloads."""
    return [
        Workload(
            id=r["Id"],
            name=(r.get("Names") or ["/"])[0].lstrip("/"),
            labels=r.get("Labels") or {},
            image=r.get("Image", ""),
            state=r.get("State", "unknown"),
            started_at=str(r.get("Created", "")),
        )
        for r in rows
    ]


def engine_info(version: dict[str, Any], url: str) -> dict[str, str]:
    """The daemon's version answer in the words ``doctor`` prints: Docker or Podman."""
    components = {c.get("Name"): c.get("Version") for c in version.get("Components", [])}
    engine = "podman" if "Podman Engine" in components else "docker"
    return {
        "daemon": url,
        "engine": engine,
        "version": components.get("Podman Engine") or version.get("Version", "?"),
        "api_version": version.get("ApiVersion", "?"),
    }
