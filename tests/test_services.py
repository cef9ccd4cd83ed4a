"""Model services on the real Docker engine behind a real Jupyter server (issue 14).

A notebook run by nbclient (a local python3 kernel) trains a scikit-learn pipeline on
breast_cancer and deploys it with ``%container_deploy`` (2 replicas, config ``local``); its
predictions over ``/predict`` and ``/v2/models/<name>/infer`` equal ``model.predict``.
Then, on that service: bad input gets a 4xx naming the field; another user sees and
deletes nothing (uniform 404); a replica killed under a request loop costs no request and
is replaced; a new version takes the traffic under load with no failed request; a
SIGKILLed server leaves the service answering and the next server lists it and undeploys it.
The tests share the service and run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from servers import TOKEN, ServerProcess, http

from jupyter_dss_containers.services import spec
from jupyter_dss_containers.services.client import serialise

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

TESTS = Path(__file__).parent
IDENTITY = "--ServerApp.identity_provider_class=identity_provider.HeaderIdentityProvider"
CONFIG = """
groups: {alice: [analysts], mallory: [analysts]}
execution_configs:
  local: {backend: docker, image: default, permissions: {groups: ["*"]}}
"""
API = "dss-containers/api/services"
NAME = "cancer"

CELLS = [
    "%load_ext jupyter_dss_containers\n"
    "import json, urllib.request, urllib.error\n"
    "from sklearn.datasets import load_breast_cancer\n"
    "from sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import StandardScaler\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "X, y = load_breast_cancer(return_X_y=True, as_frame=True)\n"
    "model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)",
    f"service = %container_deploy {NAME} model local --replicas 2 --version v1",
    """def post(path, body):
    request = urllib.request.Request(
        service['url'] + path, data=json.dumps(body).encode(), method='POST',
        headers={'Authorization': 'Bearer ' + service['api_key'],
                 'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
rows = X.sample(40, random_state=0)
local = model.predict(rows).tolist()
status, plain = post('/predict', rows.to_dict('records'))
status_cols, by_columns = post('/predict', {c: rows[c].tolist() for c in rows.columns})
v2 = {'inputs': [{'name': c, 'shape': [len(rows)], 'datatype': 'FP64',
                  'data': rows[c].tolist()} for c in rows.columns]}
status_v2, infer = post(f'/v2/models/{service["name"]}/infer', v2)
wrong, refused = post('/predict', rows.rename(columns={'mean radius': 'radius'}).head(2)
                      .to_dict('records'))
print('RESULT', json.dumps({
    'status': [status, status_cols, status_v2],
    'predict': plain['predictions'] == local, 'columns': by_columns['predictions'] == local,
    'infer': infer['outputs'][0]['data'] == local,
    'proba': bool(abs(plain['probabilities'][0][1] - model.predict_proba(rows)[0][1]) < 1e-9),
    'wrong': [wrong, refused['error']]}))
print('SERVICE', json.dumps(service))""",
]


def api(server: ServerProcess, user: str, method: str, path: str, body=None, timeout=300):
    headers = {"Authorization": f"token {TOKEN}", "X-Test-User": user}
    headers["Content-Type"] = "application/json"
    return http(method, server.url + path, body, headers, timeout)


def env_of(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dss_containers.yaml").write_text(CONFIG)
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(folder / "dss_containers.yaml"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[var] = str(folder / var)
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory, base_image, docker_client):
    """The server, its environment, and what the notebook deployed (filled by the first test)."""
    folder = tmp_path_factory.mktemp("services")
    env = env_of(folder)
    server = ServerProcess(folder, env, extra_args=(IDENTITY,)).start()
    state = {"server": server, "env": env, "folder": folder, "service": None}
    yield state
    sid = spec.service_id("alice", NAME)
    state["server"].stop()
    for c in docker_client.containers.list(all=True, filters={"label": f"{spec.SERVICE_ID}={sid}"}):
        c.remove(force=True)
    for v in docker_client.volumes.list(filters={"label": f"{spec.SERVICE_ID}={sid}"}):
        v.remove(force=True)
    for n in docker_client.networks.list(names=[spec.network_name(sid)]):
        n.remove()


def service_of(world) -> dict:
    if world["service"] is None:
        pytest.fail("no service: the notebook's deploy failed (see the first test)")
    return world["service"]


def call(service: dict, path: str, body, key: str | None = "", raw: bytes | None = None):
    """(status, JSON) of a call to the service's router with its API key."""
    key = service["api_key"] if key == "" else key
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        service["url"] + path, data=data, method="POST" if data else "GET", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, check, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what} not seen within {timeout} s")


def test_a_notebook_deploys_a_pipeline_and_gets_its_own_predictions(world, monkeypatch):
    """Guards the whole deploy path (kernel serialises, server stores bytes, replicas load
    and score): any break shows as an error or predictions that differ from model.predict."""
    server = world["server"]
    monkeypatch.setenv("DSS_CONTAINERS_SERVER_URL", server.url)
    monkeypatch.setenv("DSS_CONTAINERS_SERVER_TOKEN", TOKEN)
    monkeypatch.setenv("DSS_CONTAINERS_SERVER_HEADERS", json.dumps({"X-Test-User": "alice"}))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, kernel_name="python3", timeout=300).execute()
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in text.splitlines() if " " in line
    }
    result = json.loads(lines["RESULT"])
    world["service"] = json.loads(lines["SERVICE"])
    assert result["status"] == [200, 200, 200], result
    assert result["predict"] and result["columns"] and result["infer"] and result["proba"], result
    assert result["wrong"][0] == 400 and "'mean radius'" in result["wrong"][1], result
    assert "'radius'" in result["wrong"][1], result
    assert f"serves at {world['service']['url']}" in text
    assert [len(v["replicas"]) for v in world["service"]["versions"]] == [2]


def test_its_containers_are_hardened_and_hold_no_server_secret(world, docker_client):
    """Guards the create arguments: a root user, a capability, a writable root, a replica
    port on the host or the server's token in a container would show in the inspect."""
    service_of(world)
    sid = spec.service_id("alice", NAME)
    found = docker_client.containers.list(filters={"label": f"{spec.SERVICE_ID}={sid}"})
    assert len(found) == 3  # two replicas and the router
    assert docker_client.networks.get(spec.network_name(sid)).attrs["Internal"] is True
    for container in found:
        attrs = container.attrs
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "1000:100"
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert host["ReadonlyRootfs"] and "no-new-privileges" in host["SecurityOpt"]
        assert TOKEN not in json.dumps(attrs) and "JUPYTER" not in json.dumps(
            attrs["Config"]["Env"]
        )
        assert "dss-containers.jupyter.org/managed" not in attrs["Config"]["Labels"]
        bindings = host.get("PortBindings") or {}
        if container.name.endswith("-router"):
            assert [b["HostIp"] for b in bindings["8080/tcp"]] == ["127.0.0.1"]
        else:
            assert not bindings
            # only on the service's internal network: the model's code reaches nothing else
            assert list(attrs["NetworkSettings"]["Networks"]) == [spec.network_name(sid)]
            mount = next(m for m in attrs["Mounts"] if m["Destination"] == spec.MOUNT)
            assert mount["RW"] is False  # the model volume is read-only in a replica


def test_bad_input_gets_a_4xx_naming_the_field(world):
    """Guards the protocol checks: each refusal is a 4xx JSON error naming what is wrong,
    never a 500 or a traceback."""
    service = service_of(world)
    tensor = {"name": "mean radius", "shape": [1], "data": [1.0]}
    status, reply = call(service, f"/v2/models/{NAME}/infer", {"inputs": [tensor]})
    assert status == 400 and "'datatype'" in reply["error"], reply
    status, reply = call(service, f"/v2/models/{NAME}/infer", {"inputs": [], "extra": 1})
    assert status == 400 and "'extra'" in reply["error"], reply
    status, reply = call(service, "/predict", None, raw=b"{not json")
    assert status == 400 and "not JSON" in reply["error"], reply
    status, reply = call(service, "/predict", [{"mean radius": "big"}])
    assert status == 400 and "missing column(s)" in reply["error"], reply
    status, reply = call(service, "/v2/models/other/infer", {"inputs": []})
    assert status == 404 and "'other'" in reply["error"], reply
    assert call(service, "/predict", [{}], key=None)[0] == 401
    assert call(service, "/predict", [{}], key="dss_wrong")[0] == 401
    for reply in [call(service, "/predict", None, raw=b"[1]")[1]]:
        assert "Traceback" not in json.dumps(reply)
    status, meta = call(service, f"/v2/models/{NAME}", None, raw=b"")
    assert status == 200 and meta["inputs"][0]["name"] == "mean radius", meta


def test_an_image_without_the_models_library_is_refused_before_anything_starts(
    world, docker_client
):
    """Guards the library check: without it the replicas would start and never load the
    model (the deploy would end after a long wait, naming nothing)."""
    server = world["server"]
    data, meta = serialise({"not": "a model"})
    meta["libraries"] = {"nosuchlib": "1.0"}
    body = {"name": "nolib", "config": "local", "model": base64.b64encode(data).decode()}
    status, reply = api(server, "alice", "POST", API, {**body, "meta": meta})
    assert status == 400 and "lacks nosuchlib 1.0" in reply["message"], reply
    sid = spec.service_id("alice", "nolib")
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{spec.SERVICE_ID}={sid}"}
    )
    assert api(server, "alice", "GET", f"{API}/nolib")[0] == 404


def test_another_user_cannot_see_or_touch_it(world):
    """Guards the owner check on every route: mallory gets the answers of a name that does
    not exist (same status, same text), and the service still answers afterwards."""
    service, server = service_of(world), world["server"]
    status, listing = api(server, "mallory", "GET", API)
    assert status == 200 and listing["services"] == [], listing
    for method, suffix, body in [
        ("GET", "", None),
        ("DELETE", "", None),
        ("GET", "/logs", None),
        ("POST", "/versions", {"traffic": {"v1": 1}}),
        ("POST", "/keys", None),
        ("GET", "/keys", None),
        ("DELETE", "/keys/0123456789ab", None),
        ("DELETE", "/versions/v1", None),
    ]:
        theirs = api(server, "mallory", method, f"{API}/{NAME}{suffix}", body)
        missing = api(server, "mallory", method, f"{API}/nope{suffix}", body)
        assert theirs[0] == missing[0] == 404, (theirs, missing)
        assert theirs[1]["message"].replace(NAME, "X") == missing[1]["message"].replace("nope", "X")
    assert call(service, "/predict", [])[0] == 400  # alive, and mallory removed nothing
    status, mine = api(server, "alice", "GET", f"{API}/{NAME}")
    assert status == 200 and mine["name"] == NAME


#: run in a replica: SIGKILL its model server process (not the container: Docker counts a
#: ``docker kill`` as a manual stop, which its restart policy leaves alone)
KILL_SERVING = (
    "/opt/dss/venv/bin/python",
    "import os\n"
    "for p in set(filter(str.isdigit, os.listdir('/proc'))) - {str(os.getpid())}:\n"
    "    if b'dss_serving.runtime' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
    "        os.kill(int(p), 9)\n",
)


class Loop:
    """Requests one after another in a thread, every answer kept."""

    def __init__(self, service: dict, rows: list[dict]):
        self.service, self.rows = service, rows
        self.answers: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            status, reply = call(self.service, "/predict", self.rows)
            self.answers.append(
                (status, reply.get("version") if status == 200 else json.dumps(reply))
            )

    def __enter__(self) -> Loop:
        self.thread.start()
        wait_for("the first answers", lambda: len(self.answers) >= 5)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)


ROWS = None


def some_rows() -> list[dict]:
    from sklearn.datasets import load_breast_cancer

    X, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.head(3).to_dict("records")


def replicas(world) -> list[dict]:
    status, row = api(world["server"], "alice", "GET", f"{API}/{NAME}")
    assert status == 200, row
    return [r for v in row["versions"] for r in v["replicas"]]


def test_a_killed_replica_loses_no_request_and_is_replaced(world, docker_client):
    """Guards the router's retry on another replica and the server's replacement: without
    either, a request fails or the replica stays down."""
    service = service_of(world)
    victim = spec.replica_name(spec.service_id("alice", NAME), "v1", 0)
    with Loop(service, some_rows()) as loop:
        docker_client.containers.get(victim).kill()
        seen = len(loop.answers)
        wait_for(
            "the replica back",
            lambda: all(r["state"] == "running" and r["ready"] for r in replicas(world)),
        )
        wait_for("more answers", lambda: len(loop.answers) > seen + 20)
    failed = [a for a in loop.answers if a[0] != 200]
    assert not failed, failed[:3]
    status, row = api(world["server"], "alice", "GET", f"{API}/{NAME}")
    v1 = row["versions"][0]
    assert v1["requests"] >= len(loop.answers) and v1["p50_ms"] > 0 and v1["p99_ms"] >= v1["p50_ms"]


def test_a_new_version_takes_the_traffic_under_load_with_no_failed_request(world, docker_client):
    """Guards ready-before-traffic and the router's atomic config swap: a request routed to
    a replica still loading, or lost in the swap, would fail the loop."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    service = service_of(world)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    data, meta = serialise(forest)
    body = {"version": "v2", "replicas": 1, "model": base64.b64encode(data).decode(), "meta": meta}
    with Loop(service, some_rows()) as loop:
        status, row = api(world["server"], "alice", "POST", f"{API}/{NAME}/versions", body)
        assert status == 201, row
        seen = len(loop.answers)
        wait_for("answers from v2", lambda: len(loop.answers) > seen + 10)
        status, row = api(
            world["server"],
            "alice",
            "POST",
            f"{API}/{NAME}/versions",
            {"traffic": {"v1": 100, "v2": 0}},
        )
        assert status == 200, row
        seen = len(loop.answers)
        wait_for("answers after the rollback", lambda: len(loop.answers) > seen + 10)
    failed = [a for a in loop.answers if a[0] != 200]
    assert not failed, failed[:3]
    versions = [a[1] for a in loop.answers]
    assert "v2" in versions and versions[-1] == "v1", versions[-30:]
    status, reply = api(
        world["server"], "alice", "POST", f"{API}/{NAME}/versions", {"traffic": {"v9": 1}}
    )
    assert status == 400 and "'v9'" in reply["message"], reply
    status, reply = api(world["server"], "alice", "DELETE", f"{API}/{NAME}/versions/v1")
    assert status == 409 and "still has traffic" in reply["message"], reply
    status, row = api(world["server"], "alice", "DELETE", f"{API}/{NAME}/versions/v2")
    assert status == 200 and [v["version"] for v in row["versions"]] == ["v1"], row
    sid = spec.service_id("alice", NAME)
    labels = [f"{spec.SERVICE_ID}={sid}", f"{spec.VERSION}=v2"]
    assert not docker_client.containers.list(all=True, filters={"label": labels})
    assert call(service, "/predict", some_rows())[0] == 200


def test_api_keys_are_added_listed_and_revoked(world):
    """Guards key handling: a new key works at once, the listing shows ids only, and a
    revoked key is refused while the others still work."""
    service, server = service_of(world), world["server"]
    status, added = api(server, "alice", "POST", f"{API}/{NAME}/keys")
    assert status == 201, added
    new = added["api_key"]
    assert call(service, "/predict", some_rows(), key=new)[0] == 200
    status, listing = api(server, "alice", "GET", f"{API}/{NAME}/keys")
    ids = [k["id"] for k in listing["keys"]]
    assert (
        len(ids) == 2
        and new not in json.dumps(listing)
        and service["api_key"] not in json.dumps(listing)
    )
    new_id = hashlib.sha256(new.encode()).hexdigest()[:12]
    assert new_id in ids
    status, reply = api(server, "alice", "DELETE", f"{API}/{NAME}/keys/{new_id}")
    assert status == 200, reply
    assert call(service, "/predict", some_rows(), key=new)[0] == 401
    assert call(service, "/predict", some_rows())[0] == 200
    assert api(server, "alice", "DELETE", f"{API}/{NAME}/keys/{new_id}")[0] == 404


def test_a_sigkilled_server_leaves_the_service_answering_and_the_next_lists_it(
    world, docker_client
):
    """Guards that a service is no kernel: no server hook, reaper or cleanup removes it, and
    a new server finds it from labels alone; DELETE then removes all of it."""
    service = service_of(world)
    world["server"].kill()
    status, reply = call(service, "/predict", some_rows())
    assert status == 200, reply
    # with no server at all, a replica whose process dies is restarted by Docker itself
    victim = docker_client.containers.get(
        spec.replica_name(spec.service_id("alice", NAME), "v1", 1)
    )
    restarts = victim.attrs["RestartCount"]
    victim.exec_run([KILL_SERVING[0], "-c", KILL_SERVING[1]])
    with Loop(service, some_rows()) as loop:
        wait_for(
            "Docker's restart",
            lambda: docker_client.containers.get(victim.id).attrs["RestartCount"] > restarts,
        )
        seen = len(loop.answers)
        wait_for("more answers", lambda: len(loop.answers) > seen + 10)
    assert all(a[0] == 200 for a in loop.answers), [a for a in loop.answers if a[0] != 200][:3]
    second = ServerProcess(world["folder"] / "second", world["env"], extra_args=(IDENTITY,))
    world["server"] = second.start()  # its start-up reaper runs too
    status, listing = api(second, "alice", "GET", API)
    assert status == 200 and [s["name"] for s in listing["services"]] == [NAME], listing
    assert call(service, "/predict", some_rows())[0] == 200
    status, logs = api(second, "alice", "GET", f"{API}/{NAME}/logs")
    assert status == 200 and "loaded" in logs["logs"], logs
    status, reply = api(second, "alice", "DELETE", f"{API}/{NAME}")
    assert status == 200, reply
    sid = spec.service_id("alice", NAME)
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{spec.SERVICE_ID}={sid}"}
    )
    assert not docker_client.volumes.list(filters={"label": f"{spec.SERVICE_ID}={sid}"})
    assert api(second, "alice", "GET", f"{API}/{NAME}")[0] == 404
