"""Model services on a Docker daemon: deploy, describe, new versions and traffic, logs,
undeploy and replica replacement. Blocking I/O (call it in a thread); the shapes come
from :mod:`.spec`.

A service is found by its labels only (no server-side state), so any server, the next
one after a crash included, lists and operates it. Its router holds the live config
(versions, weights, replica addresses, key hashes) and answers the server on its
published port with the admin token kept in the router's environment.

Replica replacement: Docker's restart policy ``always`` restarts a replica (and the
router) whose process dies or is killed, with or without a Jupyter server; a replica
container that is removed is created again by :func:`reconcile`, which the server's
watcher runs every few seconds.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import docker

from ..backends.docker import docker_client
from ..config import ConfigFile, ExecutionConfig
from ..ownership import CONFIG, KIND, OWNER
from . import spec
from .errors import ServiceError, not_found
from .imagecheck import check_libraries
from .router import ADMIN_HEADER, key_hash

READY_TIMEOUT = 180.0  # a loaded machine takes its time to import scikit-learn


# --------------------------------------------------------------------------- finding


def router_of(client: docker.DockerClient, owner: str, name: str) -> Any:
    sid = spec.service_id(owner, name)
    found = client.containers.list(
        all=True, filters={"label": [f"{KIND}={spec.ROUTER}", f"{spec.SERVICE_ID}={sid}"]}
    )
    found = [
        c for c in found if c.labels.get(OWNER) == owner and c.labels.get(spec.SERVICE) == name
    ]
    if not found:
        raise not_found(name)
    return found[0]


def routers(client: docker.DockerClient, owner: str | None = None) -> list[Any]:
    filters = [f"{KIND}={spec.ROUTER}"] + ([f"{OWNER}={owner}"] if owner is not None else [])
    found = client.containers.list(all=True, filters={"label": filters})
    return [c for c in found if owner is None or c.labels.get(OWNER) == owner]


def endpoint(router: Any, connect: str | None = None) -> tuple[str, str]:
    """(base URL, admin token) of a router, from its inspect."""
    router.reload()
    env = dict(e.split("=", 1) for e in router.attrs["Config"]["Env"] if "=" in e)
    ports = (router.attrs["NetworkSettings"].get("Ports") or {}).get(f"{spec.PORT}/tcp") or []
    if not ports:
        raise ServiceError(f"the router of {router.labels.get(spec.SERVICE)} is not running", 503)
    host = ports[0]["HostIp"]
    host = connect or ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host)
    return f"http://{host}:{ports[0]['HostPort']}", env.get("DSS_ROUTER_ADMIN_TOKEN", "")


def admin(
    base: str, token: str, method: str, path: str, body: Any = None, timeout: float = 30
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={ADMIN_HEADER: token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _admin_when_up(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            return admin(base, token, method, path, body)
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise ServiceError(f"the router at {base} does not answer", 503) from None
            time.sleep(0.2)


def docker_configs(config_file: ConfigFile) -> list[ExecutionConfig]:
    """One Docker config per daemon: where services may be found."""
    seen, out = set(), []
    for config in config_file.execution_configs.values():
        if config.backend != "docker":
            continue
        key = (config.docker.host, config.docker.connect_address)
        if key not in seen:
            seen.add(key)
            out.append(config)
    return out


def find_config(config_file: ConfigFile, owner: str, name: str) -> ExecutionConfig:
    """The config whose daemon runs the owner's service (any config on that daemon serves
    for reaching it, the service's own for its limits); 404 when none."""
    for config in docker_configs(config_file):
        try:
            router = router_of(docker_client(config.docker), owner, name)
        except ServiceError:
            continue
        except Exception:  # an unreachable daemon: look on the others
            continue
        own = config_file.execution_configs.get(router.labels.get(spec.CONFIG, ""))
        return own if own is not None and own.docker.host == config.docker.host else config
    raise not_found(name)


# --------------------------------------------------------------------------- building


def _fill_volume(
    client: docker.DockerClient, image: str, volume: str, labels: dict[str, str], tar: bytes
) -> None:
    """A labelled volume holding ``tar``: unpacked through a container never started."""
    client.volumes.create(name=volume, labels=labels)
    helper = client.containers.create(
        image,
        command=["true"],
        volumes={volume: {"bind": spec.MOUNT, "mode": "rw"}},
        network_mode="none",
    )
    try:
        helper.put_archive(spec.MOUNT, tar)
    finally:
        helper.remove(force=True)


def _version_volume(
    client: Any,
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    version: str,
    model: bytes,
    meta: dict[str, Any],
) -> None:
    files = dict(spec.runtime_sources())
    files["model/model.pkl"] = model
    files["model/meta.json"] = json.dumps(meta).encode()
    labels = spec.labels(spec.REPLICA, owner, name, config.name, version)
    _fill_volume(
        client,
        image,
        spec.volume_name(spec.service_id(owner, name), version),
        labels,
        spec.volume_tar(files),
    )


def _start_replica(
    client: Any,
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    version: str,
    index: int,
) -> None:
    args = spec.replica_args(config, image, owner, name, version, index)
    client.containers.create(**args).start()


def _wait_ready(base: str, token: str, addresses: list[str], client: Any, sid: str) -> None:
    """Until the router sees every address ready; a replica that exits says why."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            ready = admin(base, token, "GET", "/_dss/stats").get("ready", {})
        except (urllib.error.URLError, OSError, ValueError):
            ready = {}  # a router slow to answer under load: ask again
        if all(ready.get(a) for a in addresses):
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"replicas not ready within {READY_TIMEOUT:g} s: "
                f"{[a for a in addresses if not ready.get(a)]}\n{_replica_logs(client, sid, 20)}",
                504,
            )
        time.sleep(0.2)


def _replica_logs(client: Any, sid: str, tail: int) -> str:
    found = client.containers.list(all=True, filters={"label": [f"{spec.SERVICE_ID}={sid}"]})
    return "\n".join(
        f"--- {c.name} ({c.status})\n" + c.logs(tail=tail).decode(errors="replace")
        for c in sorted(found, key=lambda c: c.name)
    )


def deploy(
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    version: str,
    replicas: int,
    model: bytes,
    meta: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Start a service (network, volumes, replicas, router); (its row, its first API key)."""
    client = docker_client(config.docker)
    sid = spec.service_id(owner, name)
    try:
        router_of(client, owner, name)
        raise ServiceError(
            f"a service named {name!r} exists already "
            f"(POST services/{name}/versions adds a version)",
            409,
        )
    except ServiceError as exc:
        if exc.status != 404:
            raise
    check_libraries(client, config, image, meta)
    if client.networks.list(names=[spec.network_name(sid)]):  # a deploy that died half-way
        remove(config, owner, name, missing_ok=True)  # (it has no router: checked above)
    try:
        client.networks.create(  # internal: the replicas (the user's model code) reach nothing
            spec.network_name(sid),
            driver="bridge",
            internal=True,
            check_duplicate=True,
            labels=spec.labels(spec.ROUTER, owner, name, config.name),
        )
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # the same name deployed at the same time
            raise ServiceError(f"service {name!r} is being deployed already", 409) from None
        raise
    try:
        _version_volume(client, config, image, owner, name, version, model, meta)
        router_files = spec.volume_tar(spec.runtime_sources(), writable=("state",))
        _fill_volume(
            client,
            image,
            spec.volume_name(sid, None),
            spec.labels(spec.ROUTER, owner, name, config.name),
            router_files,
        )
        for i in range(replicas):
            _start_replica(client, config, image, owner, name, version, i)
        token = spec.new_admin_token()
        router = client.containers.create(**spec.router_args(config, image, owner, name, token))
        # the router alone is also on a network that publishes its port
        client.networks.get(spec.router_outside_network(config)).connect(router)
        router.start()
        key = spec.new_api_key()
        versions = [spec.VersionSpec(version, replicas, 100.0)]
        routes = spec.router_config(name, sid, versions, [key_hash(key)])
        routes["versions"][version]["image"] = image
        base, token = endpoint(router_of(client, owner, name), config.docker.connect_address)
        _admin_when_up(base, token, "PUT", "/_dss/config", routes)
        _wait_ready(base, token, routes["versions"][version]["replicas"], client, sid)
    except Exception:
        remove(config, owner, name, missing_ok=True)
        raise
    return describe(config, owner, name), key


# --------------------------------------------------------------------------- operating


def _routes(config: ExecutionConfig, owner: str, name: str) -> tuple[Any, str, str, dict[str, Any]]:
    client = docker_client(config.docker)
    base, token = endpoint(router_of(client, owner, name), config.docker.connect_address)
    return client, base, token, admin(base, token, "GET", "/_dss/config")


def describe(config: ExecutionConfig, owner: str, name: str) -> dict[str, Any]:
    """The service as the API shows it: versions with weights, replicas and statistics."""
    client, base, token, routes = _routes(config, owner, name)
    stats = admin(base, token, "GET", "/_dss/stats")
    sid = spec.service_id(owner, name)
    containers = {
        c.name: c.status
        for c in client.containers.list(all=True, filters={"label": [f"{spec.SERVICE_ID}={sid}"]})
    }
    total = sum(v.get("weight", 0) for v in routes["versions"].values()) or 1
    versions = []
    for version, v in routes["versions"].items():
        replicas = []
        for address in v["replicas"]:
            cname = address.rsplit(":", 1)[0]
            state = containers.get(cname, "missing")
            replicas.append(
                {"name": cname, "state": state, "ready": bool(stats["ready"].get(address))}
            )
        numbers = stats["versions"].get(version, {})
        versions.append(
            {
                "version": version,
                "weight": v.get("weight", 0),
                "traffic_percent": round(100 * v.get("weight", 0) / total, 2),
                "replicas": replicas,
                "requests": numbers.get("requests", 0),
                "errors": numbers.get("errors", 0),
                "p50_ms": numbers.get("p50_ms"),
                "p99_ms": numbers.get("p99_ms"),
            }
        )
    return {
        "name": name,
        "owner": owner,
        "config": config.name,
        "url": base,
        "predict_url": f"{base}/predict",
        "infer_url": f"{base}/v2/models/{name}/infer",
        "router": containers.get(spec.router_name(sid), "missing"),
        "versions": versions,
        "api_keys": len(routes.get("keys", [])),
    }


def add_version(
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    version: str,
    replicas: int,
    model: bytes,
    meta: dict[str, Any],
    traffic: dict[str, Any] | None,
) -> dict[str, Any]:
    """Start a version's replicas, wait until they are ready, then move the traffic (no
    request fails: the router routes to ready replicas only and its config swaps at once)."""
    client, base, token, routes = _routes(config, owner, name)
    if version in routes["versions"]:
        raise ServiceError(f"service {name!r} has a version {version!r} already", 409)
    sid = spec.service_id(owner, name)
    traffic = spec.check_traffic(traffic, set(routes["versions"]) | {version}) if traffic else None
    check_libraries(client, config, image, meta)
    _version_volume(client, config, image, owner, name, version, model, meta)
    for i in range(replicas):
        _start_replica(client, config, image, owner, name, version, i)
    entry = spec.router_config(name, sid, [spec.VersionSpec(version, replicas, 0.0)], [])[
        "versions"
    ][version]
    entry["image"] = image
    routes["versions"][version] = entry
    admin(base, token, "PUT", "/_dss/config", routes)
    _wait_ready(base, token, entry["replicas"], client, sid)
    for v, weight in (traffic or {v: 0.0 for v in routes["versions"]} | {version: 100.0}).items():
        routes["versions"][v]["weight"] = weight
    admin(base, token, "PUT", "/_dss/config", routes)
    return describe(config, owner, name)


def set_traffic(config: ExecutionConfig, owner: str, name: str, traffic: Any) -> dict[str, Any]:
    """New weights (a rollback is weights back on the previous version)."""
    _, base, token, routes = _routes(config, owner, name)
    for v, weight in spec.check_traffic(traffic, set(routes["versions"])).items():
        routes["versions"][v]["weight"] = weight
    admin(base, token, "PUT", "/_dss/config", routes)
    return describe(config, owner, name)


def new_key(config: ExecutionConfig, owner: str, name: str) -> str:
    _, base, token, routes = _routes(config, owner, name)
    key = spec.new_api_key()
    routes["keys"] = [*list(routes.get("keys", [])), key_hash(key)]
    admin(base, token, "PUT", "/_dss/config", routes)
    return key


def keys(config: ExecutionConfig, owner: str, name: str) -> list[dict[str, str]]:
    """The service's keys by id (the first 12 hex digits of the hash): no key is kept."""
    _, _, _, routes = _routes(config, owner, name)
    return [{"id": h[:12]} for h in routes.get("keys", [])]


def revoke_key(config: ExecutionConfig, owner: str, name: str, key_id: str) -> None:
    _, base, token, routes = _routes(config, owner, name)
    kept = [h for h in routes.get("keys", []) if h[:12] != key_id]
    if len(kept) == len(routes.get("keys", [])) or len(key_id) != 12:
        raise ServiceError(f"service {name!r} has no API key {key_id[:40]!r}", 404)
    routes["keys"] = kept
    admin(base, token, "PUT", "/_dss/config", routes)


def remove_version(config: ExecutionConfig, owner: str, name: str, version: str) -> dict[str, Any]:
    """Remove a version that has no traffic (its replicas and volume): 409 while it has."""
    client, base, token, routes = _routes(config, owner, name)
    entry = routes["versions"].get(version)
    if entry is None:
        raise ServiceError(f"service {name!r} has no version {version[:40]!r}", 404)
    if entry.get("weight", 0) > 0:
        raise ServiceError(
            f"version {version!r} of {name!r} still has traffic: set its weight to 0 first", 409
        )
    del routes["versions"][version]
    admin(base, token, "PUT", "/_dss/config", routes)  # no request goes there any more
    sid = spec.service_id(owner, name)
    mine = [f"{spec.SERVICE_ID}={sid}", f"{spec.VERSION}={version}", f"{OWNER}={owner}"]
    for c in client.containers.list(all=True, filters={"label": mine}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": mine}):
        v.remove(force=True)
    return describe(config, owner, name)


def logs(config: ExecutionConfig, owner: str, name: str, tail: int = 100) -> str:
    client = docker_client(config.docker)
    router_of(client, owner, name)
    return _replica_logs(client, spec.service_id(owner, name), tail)


def remove(config: ExecutionConfig, owner: str, name: str, missing_ok: bool = False) -> None:
    """Remove the service's containers, volumes and network (by its labels)."""
    client = docker_client(config.docker)
    if not missing_ok:
        router_of(client, owner, name)
    sid = spec.service_id(owner, name)
    mine = [f"{spec.SERVICE_ID}={sid}", f"{OWNER}={owner}"]
    for c in client.containers.list(all=True, filters={"label": mine}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": mine}):
        v.remove(force=True)
    for n in client.networks.list(names=[spec.network_name(sid)]):
        n.remove()


def reconcile(config: ExecutionConfig, configs: dict[str, ExecutionConfig]) -> list[str]:
    """Create again each replica of the daemon's services whose container is gone, and start
    those that stopped; returns the names replaced. ``configs``: by name, for the limits."""
    client = docker_client(config.docker)
    replaced = []
    for router in routers(client):
        owner, name = router.labels.get(OWNER, ""), router.labels.get(spec.SERVICE, "")
        own = configs.get(router.labels.get(CONFIG, ""))
        if router.status != "running" or own is None:
            continue
        try:
            base, token = endpoint(router, config.docker.connect_address)
            routes = admin(base, token, "GET", "/_dss/config")
        except (ServiceError, urllib.error.URLError, OSError, ValueError):
            continue
        sid = spec.service_id(owner, name)
        present = {
            c.name: c
            for c in client.containers.list(
                all=True, filters={"label": [f"{spec.SERVICE_ID}={sid}"]}
            )
        }
        for version, v in routes["versions"].items():
            for i in range(len(v["replicas"])):
                cname = spec.replica_name(sid, version, i)
                container = present.get(cname)
                if container is None and v.get("image"):
                    _start_replica(client, own, v["image"], owner, name, version, i)
                    replaced.append(cname)
                elif container is not None and container.status in ("exited", "created", "dead"):
                    container.start()
                    replaced.append(cname)
    return replaced


def rows(config: ExecutionConfig, owner: str) -> list[dict[str, Any]]:
    """The owner's services on the config's daemon, described (a broken one says why)."""
    client = docker_client(config.docker)
    out = []
    for router in routers(client, owner):
        name = router.labels.get(spec.SERVICE, "")
        try:
            out.append(describe(config, owner, name))
        except (ServiceError, urllib.error.URLError, OSError, ValueError) as exc:
            out.append(
                {
                    "name": name,
                    "owner": owner,
                    "config": router.labels.get(CONFIG),
                    "error": str(exc),
                }
            )
    return out
