"""Fuzzing the REST API from its OpenAPI schema (schemathesis) on a real Jupyter server.

Every operation of ``schema/openapi.yaml`` gets generated requests, valid and invalid
(bodies, path names, query values), sent over HTTP to 127.0.0.1. Each answer must be a
clear one: below 500, JSON, with a ``message`` when it refuses, never a traceback. The
server's configs all name a Docker daemon that does not exist, so a generated job
submission fails fast and starts no container.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import pytest
import requests
import schemathesis
import test_server_api as server_api
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

pytest_plugins = ["jupyter_server.pytest_plugin"]

DEAD = "unix:///tmp/dss-fuzz-no-daemon.sock"
CONFIG = f"""
groups:
  alice: [analysts]
execution_configs:
  small:
    backend: docker
    image: default
    docker: {{host: "{DEAD}", resources: {{memory: 512m, cpus: 1}}}}
    permissions: {{groups: [analysts]}}
  other:
    backend: docker
    image: default
    docker: {{host: "{DEAD}"}}
    permissions: {{groups: [admins]}}
"""
EXAMPLES = 25  # per operation and generation mode: the file runs in well under a minute


@pytest.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def jp_server_config(tmp_path):
    path = tmp_path / "dss_containers.yaml"
    path.write_text(CONFIG)
    return server_api.server_config(path)


def api_schema() -> schemathesis.schemas.BaseSchema:
    text = resources.files("jupyter_dss_containers.schema").joinpath("openapi.yaml").read_text()
    return schemathesis.openapi.from_dict(yaml.safe_load(text))


def cases() -> list:
    """(operation, mode): every operation with valid input; with invalid input, those that
    take a body or a query (a path name has no invalid form: any text is a name)."""
    out = []
    for result in api_schema().get_all_operations():
        operation = result.ok()
        out.append(pytest.param(operation, GenerationMode.POSITIVE, id=f"{operation.label}"))
        if len(operation.body) or len(operation.query):
            label = f"{operation.label} invalid"
            out.append(pytest.param(operation, GenerationMode.NEGATIVE, id=label))
    return out


def assert_clear_answer(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    assert "Traceback" not in response.text, f"{what}: {response.text[:500]}"
    body = response.json()  # always JSON, errors included
    if response.status_code >= 400:
        assert isinstance(body.get("message"), str) and body["message"], f"{what}: {body}"


@pytest.mark.parametrize(("operation", "mode"), cases())
async def test_generated_requests_get_clear_answers(
    operation, mode, jp_serverapp, http_server, http_server_port, jp_base_url
):
    port = http_server_port[1]  # the test server (``http_server``) listens on 127.0.0.1
    base_url = f"http://127.0.0.1:{port}{jp_base_url}dss-containers/api"
    headers = {
        "Authorization": f"token {jp_serverapp.identity_provider.token}",
        "X-Test-User": "alice",
    }
    session = requests.Session()

    known = {"name": ["small", "other"], "config": ["small"]}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        user=st.sampled_from(["alice", "x"]),
        use_known=st.booleans(),
        data=st.data(),
    )
    def fuzz(case, user, use_known, data):
        if use_known:  # reach past "no such config / job" into the route's own checks
            for key in set(known) & set(case.path_parameters or {}):
                case.path_parameters[key] = data.draw(st.sampled_from(known[key]))
            if isinstance(case.body, dict) and "config" in case.body:
                case.body["config"] = "small"
        response = case.call(
            base_url=base_url, session=session, headers={**headers, "X-Test-User": user}
        )
        assert_clear_answer(response, f"{case.method} {case.formatted_path} {case.body!r}")
        if mode is GenerationMode.POSITIVE and response.status_code < 400:
            case.validate_response(response)  # the answer matches its documented schema

    def run():
        # A job of alice's (it fails at once on the dead daemon) for the job routes to find.
        body = {"config": "small", "code": "1"}
        job = session.post(f"{base_url}/jobs", json=body, headers=headers)
        assert job.status_code == 201, job.text
        known["job_id"] = [job.json()["id"]]
        fuzz()

    # The server answers on this event loop: the blocking client runs in a thread.
    await asyncio.to_thread(run)
    session.close()


async def test_generated_job_submissions_start_nothing(jp_serverapp, jp_fetch, docker_client):
    """After fuzzing, alice's jobs all failed on the dead daemon and no container exists."""
    from conftest import leftover_containers

    response = await jp_fetch(
        "dss-containers",
        "api",
        "jobs",
        method="POST",
        body=json.dumps({"config": "small", "code": "print(1)"}),
        headers={"X-Test-User": "alice"},
    )
    job = json.loads(response.body)
    assert response.code == 201
    service = jp_serverapp.web_app.settings["dss_containers"].job_service
    await asyncio.wait_for(service.wait(job["id"]), timeout=10)
    assert service.get(job["id"]).state == "failed"
    assert DEAD in str(service.get(job["id"]).error)
    assert not leftover_containers(docker_client, job_id=job["id"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: fields jupyter_server's kernel and session handlers read, to reach past "not an object"
CORE_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON | st.sampled_from(["python3", "dss-small", "dss-other"]),
        "path": JSON,
        "type": JSON,
        "kernel": JSON | st.fixed_dictionaries({}, optional={"id": JSON, "name": JSON}),
        "notebook": JSON,
        "kernel_id": JSON,
    },
)


def assert_no_server_error(response: requests.Response, what: str) -> None:
    """Below 500, except the dead daemon's own 503 (a container start that says why)."""
    if response.status_code == 503 and DEAD in response.text:
        return
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    assert "Traceback" not in response.text, f"{what}: {response.text[:500]}"


async def test_generated_bodies_on_the_core_kernel_and_session_routes_get_4xx(
    jp_serverapp, http_server, http_server_port, jp_base_url
):
    """Guards the wrapped core routes: any JSON (or bytes) as the body of POST /api/kernels,
    POST /api/sessions or PATCH /api/sessions/<id> is answered without a 5xx."""
    base = f"http://127.0.0.1:{http_server_port[1]}{jp_base_url}api"
    headers = {
        "Authorization": f"token {jp_serverapp.identity_provider.token}",
        "X-Test-User": "alice",
    }
    session = requests.Session()
    routes = [("POST", f"{base}/kernels"), ("POST", f"{base}/sessions")]
    routes.append(("PATCH", f"{base}/sessions/00000000-0000-0000-0000-000000000000"))

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        route=st.sampled_from(routes),
        body=CORE_FIELDS.map(json.dumps) | JSON.map(json.dumps) | st.binary(max_size=64),
    )
    def fuzz(route, body):
        method, url = route
        data = body.encode() if isinstance(body, str) else body
        response = session.request(method, url, data=data, headers=headers)
        assert_no_server_error(response, f"{method} {url} {data[:200]!r}")

    await asyncio.to_thread(fuzz)
    session.close()
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []  # every start was refused
