"""The REST API under ``<base_url>/dss-containers/api/`` (described in ``schema/openapi.yaml``).

Every route is authenticated like every Jupyter API (403 without a user, XSRF rules for
cookie-authenticated writes), answers JSON, and says why when it refuses: 400 for a bad
body, 403 naming the config and who may use it, 404 for an unknown config, 503 when the
config file cannot be used. Docker and Kubernetes calls run off the event loop and under
short timeouts, so a dead daemon gives an answer, never a hung request.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.web import HTTPError

from .. import ownership
from ..backends import backend_for
from ..config import ConfigError, ConfigFile, ExecutionConfig, load_config
from ..jobs.model import SUCCEEDED, Job, JobError, JobNotFound, JobQueueFull, JobRequest
from ..jobs.service import JobService
from ..kernelspecs import container_kernel_specs
from ..permissions import (
    Identity,
    PermissionDenied,
    check_permission,
    permitted_configs,
    request_identity,
)
from .identity import request_identity as identity_of_request
from .kernels import does_not_exist
from .limits import BadInput, parse_json, whole_number

API_PREFIX = "dss-containers/api"
#: seconds a Test button waits for a daemon or cluster by default, and at most
TEST_TIMEOUT = 10.0
MAX_TEST_TIMEOUT = 60.0
#: seconds the kernel listing waits for one daemon's answer (listing, then stats)
LIVE_TIMEOUT = 3.0
#: seconds the image listing waits for the local daemon
IMAGES_TIMEOUT = 10.0


#: query arguments that are whole numbers wherever a route takes them
WHOLE_NUMBER_ARGUMENTS = ("tail", "since")


def job_does_not_exist(job_id: str) -> str:
    """One text for a missing job and another user's: it tells nothing about the job."""
    shown = job_id if len(job_id) <= 64 and job_id.isascii() and job_id.isprintable() else None
    return f"Job does not exist: {shown}" if shown else "Job does not exist"


def api_error(status: int, message: str) -> HTTPError:
    """An HTTPError whose JSON body carries ``message`` verbatim (``%`` is safe in it)."""
    return HTTPError(status, "%s", message)


class DSSAPIHandler(APIHandler):
    """What every route shares: the config file, the caller's identity, JSON in and out."""

    @property
    def config_path(self) -> str | None:
        extension = self.settings.get("dss_containers")
        return getattr(extension, "config_file", None)

    async def load_config_file(self) -> ConfigFile:
        """The config file, read afresh (edits apply without a restart); 503 when unusable."""
        try:
            return await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            raise api_error(503, str(exc)) from None

    async def caller(self) -> tuple[ConfigFile, Identity]:
        """The config file and who is asking; the identity also holds for this request's
        kernel and job starts (``permissions.request_identity``)."""
        config_file = await self.load_config_file()
        identity = identity_of_request(self, config_file)
        # Each tornado request runs in its own asyncio task: this never leaks to another.
        request_identity.set(identity)
        return config_file, identity

    def permitted_config(
        self, config_file: ConfigFile, identity: Identity, name: str
    ) -> ExecutionConfig:
        """The named config if the caller may use it: 404 if unknown, 403 if forbidden."""
        config = config_file.execution_configs.get(name)
        if config is None:
            yours = ", ".join(c.name for c in permitted_configs(identity, config_file)) or "none"
            raise api_error(
                404,
                f"no execution configuration named {name!r} in {config_file.source} "
                f"(yours: {yours})",
            )
        try:
            check_permission(identity, config)
        except PermissionDenied as exc:
            raise api_error(403, str(exc)) from None
        return config

    async def prepare(self) -> None:
        """Whole-number query arguments are checked on every route, before it runs."""
        await super().prepare()
        if not self.current_user:
            return  # the route's own @authenticated answers
        for name in WHOLE_NUMBER_ARGUMENTS:
            for value in self.get_query_arguments(name):
                try:
                    whole_number(value, name)
                except BadInput as exc:
                    raise api_error(400, str(exc)) from None

    def json_body(self, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
        """The request body as a JSON object (empty when there is none); 400 when it is not
        (413 over the size limit), decided before parsing where it can be."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            data = parse_json(raw)
        except BadInput as exc:
            raise api_error(exc.status, str(exc)) from None
        if not isinstance(data, dict):
            raise api_error(
                400, f"expected a JSON object in the request body, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            expected = ", ".join(allowed) or "no keys"
            raise api_error(
                400, f"unknown key(s) {', '.join(map(repr, unknown))} (expected: {expected})"
            )
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"message": ..., "reason": ...}`` like every Jupyter API, never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reply: dict[str, Any] = {"message": self._reason, "reason": self._reason}
        if isinstance(exc, HTTPError):
            if exc.log_message:
                try:
                    reply["message"] = exc.log_message % exc.args if exc.args else exc.log_message
                except (TypeError, ValueError):
                    reply["message"] = exc.log_message
        elif exc is not None:
            reply["message"] = "Unhandled error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))


# --------------------------------------------------------------------------- configs


def _target(config: ExecutionConfig, identity: Identity) -> str:
    """Where the config's work runs, in words."""
    from ..summary import where

    return where(config, identity.username)


def resources_summary(config: ExecutionConfig) -> dict[str, Any]:
    """The resources a config gives each kernel or job, with a one-line summary."""
    from ..summary import resources

    return resources(config)


def config_summary(
    config_file: ConfigFile,
    config: ExecutionConfig,
    identity: Identity,
    specs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    base = config_file.base_image_of(config)
    return {
        "name": config.name,
        "description": config.description,
        "backend": config.backend,
        "image": config.image,
        "base_image": base.name if base is not None else None,
        "registry": config.registry,
        "target": _target(config, identity),
        "resources": resources_summary(config),
        "code_envs": [
            {"name": e.name, "description": e.description}
            for e in config_file.envs_for(config.name)
        ],
        "kernel_specs": sorted(
            name
            for name, spec in specs.items()
            if spec["metadata"]["dss_containers"]["execution_config"] == config.name
        ),
        "groups": list(config.groups),
    }


class ConfigsHandler(DSSAPIHandler):
    @web.authenticated
    async def get(self) -> None:
        config_file, identity = await self.caller()
        specs = container_kernel_specs(config_file, identity, self.config_path)
        configs = [
            config_summary(config_file, c, identity, specs)
            for c in permitted_configs(identity, config_file)
        ]
        self.send(
            {
                "user": identity.username,
                "groups": sorted(identity.groups),
                "source": config_file.source,
                "configs": configs,
            }
        )


class ConfigHandler(DSSAPIHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        config_file, identity = await self.caller()
        config = self.permitted_config(config_file, identity, name)
        specs = container_kernel_specs(config_file, identity, self.config_path)
        self.send(config_summary(config_file, config, identity, specs))


def _check_in_own_loop(config: ExecutionConfig) -> dict[str, str]:
    """Run a backend's check in a worker thread with its own event loop: even a client that
    connects synchronously cannot hold up the server, and the server's timeout holds."""
    return asyncio.run(backend_for(config).check())


class ConfigTestHandler(DSSAPIHandler):
    """The Test button: can this config's daemon or cluster be reached, and what answers?"""

    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.json_body(allowed=("timeout",))
        timeout = body.get("timeout", TEST_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TEST_TIMEOUT
        ):
            raise api_error(
                400, f"timeout: expected seconds, > 0 and <= {MAX_TEST_TIMEOUT:g}, got {timeout!r}"
            )
        config_file, identity = await self.caller()
        config = self.permitted_config(config_file, identity, name)
        target = _target(config, identity)
        started = time.monotonic()
        reply: dict[str, Any] = {"config": config.name, "target": target}
        try:
            info = await asyncio.wait_for(asyncio.to_thread(_check_in_own_loop, config), timeout)
        except asyncio.TimeoutError:
            reply.update(ok=False, error=f"no answer from {target} within {timeout:g} s")
        except Exception as exc:  # a dead daemon is an answer, not a server error
            reply.update(ok=False, error=str(exc) or type(exc).__name__)
        else:
            reply.update(ok=True, **info)
        reply["elapsed_seconds"] = round(time.monotonic() - started, 3)
        self.send(reply)


# --------------------------------------------------------------------------- kernels


def _iso(value: str | None) -> str | None:
    """A workload's start time as ISO 8601 (Docker lists it in epoch seconds)."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value), tz=timezone.utc).isoformat()
    return value


async def _bounded(coro: Any, timeout: float) -> tuple[Any, str | None]:
    """(result, None) or (None, why): a slow or dead daemon never hangs a listing."""
    try:
        return await asyncio.wait_for(coro, timeout), None
    except asyncio.TimeoutError:
        return None, f"no answer within {timeout:g} s"
    except Exception as exc:
        return None, str(exc) or type(exc).__name__


class KernelsHandler(DSSAPIHandler):
    """The caller's container kernels on this server, with state and live CPU/memory."""

    @web.authenticated
    async def get(self) -> None:
        from ..provisioner import ContainerProvisioner

        _, identity = await self.caller()
        mine = []
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            try:
                manager = self.kernel_manager.get_kernel(kernel_id)
            except KeyError:  # shut down meanwhile
                continue
            provisioner = getattr(manager, "provisioner", None)
            if not isinstance(provisioner, ContainerProvisioner):
                continue
            if provisioner.owner != identity.username:
                continue
            mine.append((kernel_id, manager, provisioner))

        # One listing per daemon or cluster gives each workload's state and start time.
        backends: dict[Any, Any] = {}
        for _, _, provisioner in mine:
            backend = provisioner.backend
            if provisioner.workload_id and backend is not None:
                backends.setdefault(backend.target_key(), backend)
        labels = {ownership.MANAGED: "true", ownership.KIND: "kernel"}
        answers = await asyncio.gather(
            *(_bounded(b.list(labels), LIVE_TIMEOUT) for b in backends.values())
        )
        listed: dict[Any, tuple[dict[str, Any], str | None]] = {}
        for key, (workloads, error) in zip(backends, answers, strict=True):
            listed[key] = ({w.id: w for w in workloads or ()}, error)

        rows = await asyncio.gather(*(self._describe(kid, m, p, listed) for kid, m, p in mine))
        self.send({"user": identity.username, "kernels": rows})

    async def _describe(
        self, kernel_id: str, manager: Any, provisioner: Any, listed: dict[Any, Any]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": kernel_id,
            "name": manager.kernel_name,
            "execution_config": provisioner.execution_config,
            "code_env": provisioner.code_env,
            "owner": provisioner.owner,
            "image": provisioner.image,
            "workload_id": provisioner.workload_id,
            "state": "starting",
            "exit_reason": provisioner.exit_reason,
            "error": None,
            "started": None,
            "execution_state": getattr(manager, "execution_state", None),
            "last_activity": None,
            "cpu_percent": None,
            "memory_bytes": None,
            "memory_limit": None,
        }
        activity = getattr(manager, "last_activity", None)
        if isinstance(activity, datetime):
            row["last_activity"] = activity.isoformat()
        backend = provisioner.backend
        workload_id = provisioner.workload_id
        if workload_id is None or backend is None:
            if provisioner.exit_reason:
                row["state"] = "dead"
            return row
        workloads, error = listed.get(backend.target_key(), ({}, "not asked"))
        if error:  # the daemon cannot be asked; what the provisioner knows still holds
            row.update(state="dead" if provisioner.exit_reason else "unknown", error=error)
            return row
        workload = workloads.get(workload_id)
        if workload is None:
            row.update(
                state="dead", exit_reason=provisioner.exit_reason or "the container was removed"
            )
            return row
        row["started"] = _iso(workload.started_at)
        row["image"] = row["image"] or workload.image or None
        if workload.state in ("exited", "dead", "failed", "succeeded"):
            row["state"] = "dead"
            if not row["exit_reason"]:
                status, why = await _bounded(backend.status(workload_id), LIVE_TIMEOUT)
                row["exit_reason"] = status.reason if status is not None else why
            return row
        row["state"] = "running" if workload.state in ("running", "paused") else "starting"
        stats, why = await _bounded(backend.stats(workload_id), LIVE_TIMEOUT)
        if stats is None:
            row["error"] = why
        else:
            row.update(
                cpu_percent=stats.cpu_percent,
                memory_bytes=stats.memory_bytes,
                memory_limit=stats.memory_limit,
            )
        return row


#: lines a kernel's log route gives by default, and at most
KERNEL_LOG_TAIL = 200
MAX_KERNEL_LOG_TAIL = 5000


class KernelLogsHandler(DSSAPIHandler):
    """The last lines a container kernel wrote (the sidebar's Logs button); owner only."""

    @web.authenticated
    async def get(self, kernel_id: str) -> None:
        from ..provisioner import ContainerProvisioner

        _, identity = await self.caller()
        try:
            tail = whole_number(
                self.get_query_argument("tail", str(KERNEL_LOG_TAIL)),
                "tail",
                1,
                MAX_KERNEL_LOG_TAIL,
            )
        except BadInput as exc:
            raise api_error(400, str(exc)) from None
        try:
            manager = self.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            manager = None
        provisioner = getattr(manager, "provisioner", None)
        if (
            not isinstance(provisioner, ContainerProvisioner)
            or provisioner.owner != identity.username
        ):
            raise api_error(404, does_not_exist(kernel_id))  # missing and not yours alike
        reply: dict[str, Any] = {
            "id": kernel_id,
            "workload_id": provisioner.workload_id,
            "logs": "",
            "error": None,
        }
        backend = provisioner.backend
        if provisioner.workload_id and backend is not None:
            text, why = await _bounded(backend.logs(provisioner.workload_id, tail), LIVE_TIMEOUT)
            reply.update(logs=text or "", error=why)
        self.send(reply)


# --------------------------------------------------------------------------- images


def _local_images(tags: dict[str, str | None]) -> tuple[str, dict[str, bool], str | None]:
    """(daemon address, {tag: present}, error) on the local daemon; runs in a thread."""
    from .. import images
    from ..backends.docker import daemon_url, docker_client
    from ..config import DockerSettings

    settings = DockerSettings()
    url = daemon_url(settings)
    try:
        client = docker_client(settings)
        present = {tag: images.image_exists(client, tag) for tag in tags.values() if tag}
    except Exception as exc:
        return url, {}, f"Docker daemon at {url} is unreachable: {exc}"
    return url, present, None


def _content_tags(config_file: ConfigFile, names: list[str]) -> dict[str, Any]:
    from .. import images

    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = (images.base_image_tag(config_file.base_images[name]), None)
        except Exception as exc:
            out[name] = (None, str(exc) or type(exc).__name__)
    return out


class ImagesHandler(DSSAPIHandler):
    """The base images of the caller's configs, with their content tag and local presence."""

    @web.authenticated
    async def get(self) -> None:
        config_file, identity = await self.caller()
        used_by: dict[str, list[str]] = {}
        for config in permitted_configs(identity, config_file):
            base = config_file.base_image_of(config)
            if base is not None:
                used_by.setdefault(base.name, []).append(config.name)
        names = sorted(used_by)
        tags = await asyncio.to_thread(_content_tags, config_file, names)
        answer, why = await _bounded(
            asyncio.to_thread(_local_images, {n: t for n, (t, _) in tags.items()}),
            IMAGES_TIMEOUT,
        )
        daemon, present, error = answer if answer is not None else (None, {}, why)
        rows = []
        for name in names:
            spec = config_file.base_images[name]
            tag, tag_error = tags[name]
            rows.append(
                {
                    "name": name,
                    "description": spec.description,
                    "from": spec.from_image,
                    "bootstrap": spec.bootstrap,
                    "with_r": spec.with_r,
                    "with_cuda": spec.with_cuda,
                    "tag": tag,
                    "present": present.get(tag) if tag else None,
                    "error": tag_error,
                    "used_by": used_by[name],
                }
            )
        self.send({"daemon": daemon, "error": error, "images": rows})


# --------------------------------------------------------------------------- jobs


class _JobRoute(DSSAPIHandler):
    """The extension's job service; a caller sees only their own jobs."""

    @property
    def service(self) -> JobService:
        return self.settings["dss_containers"].job_service

    def job_of(self, identity: Identity, job_id: str) -> Job:
        try:
            job = self.service.get(job_id)
        except JobNotFound:
            job = None
        if job is None or job.owner != identity.username:
            raise api_error(404, job_does_not_exist(job_id))  # missing and not yours alike
        return job


def job_row(job: Job) -> dict[str, Any]:
    row = job.summary()
    row["error"] = str(job.error) if job.error is not None else None
    row["traceback"] = getattr(job.error, "traceback", None)
    return row


class JobsHandler(_JobRoute):
    @web.authenticated
    async def get(self) -> None:
        _, identity = await self.caller()
        self.send({"jobs": [job_row(j) for j in self.service.list(owner=identity.username)]})

    @web.authenticated
    async def post(self) -> None:
        """Submit Python or R code (no inputs: those travel from the Python API)."""
        config_file, identity = await self.caller()
        body = self.json_body(("config", "code", "lang", "code_env", "name"))
        for key in ("config", "code"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise api_error(400, f"{key!r} must be a non-empty string")
        lang = body.get("lang", "python")
        if lang not in ("python", "r"):
            raise api_error(400, f"'lang' must be 'python' or 'r', not {lang!r}")
        for key in ("code_env", "name"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise api_error(400, f"{key!r} must be a string")
        self.permitted_config(config_file, identity, body["config"])
        request = JobRequest(
            config=body["config"],
            kind=lang,
            code=body["code"],
            code_env=body.get("code_env"),
            name=body.get("name") or "",
        )
        try:
            job = await self.service.submit(request, identity)
        except PermissionDenied as exc:
            raise api_error(403, str(exc)) from None
        except JobQueueFull as exc:
            raise api_error(429, str(exc)) from None
        except JobError as exc:
            raise api_error(400, str(exc)) from None
        self.send(job_row(job), status=201)


class JobHandler(_JobRoute):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        """The job, with the rich outputs (MIME bundles) it displayed and the plain fields
        of its result document once it succeeded: checked data only, nothing unpickled."""
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        row = job_row(job)
        row["displays"] = row["result"] = None
        if job.state == SUCCEEDED:
            result = await self.service.result(job.id, values=False)
            if result is not None:
                row["displays"], row["result"] = result.displays, result.fields()
        self.send(row)

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        self.send(job_row(await self.service.cancel(job.id)))


class JobLogsHandler(_JobRoute):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        """Output chunks from ``?since=N`` on; poll with the returned ``next`` to follow."""
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        since = self.get_query_argument("since", "0")
        if not (since.isascii() and since.isdigit() and len(since) <= 18):
            raise api_error(400, f"'since' must be a whole number, not {since[:40]!r}")
        chunks, upto = job.output_since(int(since))
        self.send(
            {
                "id": job.id,
                "state": job.state,
                "output": [{"stream": n, "text": t} for n, t in chunks],
                "next": max(upto, int(since)),
            }
        )


_NAME = r"(?P<name>[^/]+)"
_JOB = r"(?P<job_id>[^/]+)"
_KERNEL = r"(?P<kernel_id>[^/]+)"

#: (pattern relative to the base URL, handler); the extension prepends the base URL
HANDLERS: list[tuple[str, type[DSSAPIHandler]]] = [
    (rf"{API_PREFIX}/configs/?", ConfigsHandler),
    (rf"{API_PREFIX}/configs/{_NAME}/test/?", ConfigTestHandler),
    (rf"{API_PREFIX}/configs/{_NAME}/?", ConfigHandler),
    (rf"{API_PREFIX}/kernels/?", KernelsHandler),
    (rf"{API_PREFIX}/kernels/{_KERNEL}/logs/?", KernelLogsHandler),
    (rf"{API_PREFIX}/images/?", ImagesHandler),
    (rf"{API_PREFIX}/jobs/?", JobsHandler),
    (rf"{API_PREFIX}/jobs/{_JOB}/logs/?", JobLogsHandler),
    (rf"{API_PREFIX}/jobs/{_JOB}/?", JobHandler),
]
