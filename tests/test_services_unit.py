"""Model services without an engine: the protocol checks, the pure builders, and the real
runtime and router HTTP servers run in this process (threads on 127.0.0.1) in front of a
real scikit-learn model, so retries and traffic weights are tested in seconds."""

from __future__ import annotations

import json
import pickle
import random
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.ownership import MANAGED
from jupyter_dss_containers.services import protocol, router, runtime, spec
from jupyter_dss_containers.services.protocol import BadRequest

FEATURES = ["a", "b"]


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    "body, named",
    [
        ([{"a": 1}], "missing column(s) 'b'"),
        ([{"a": 1, "b": 2, "c": 3}], "unknown column(s) 'c'"),
        ({"a": [1, 2], "b": [1]}, "different lengths"),
        ([{"a": 1, "b": [2]}], "record 0, column 'b'"),
        ([], "no rows"),
        ("text", "expected JSON records"),
        ([{"a": float("nan"), "b": 1}], "finite"),
    ],
)
def test_predict_bodies_are_refused_naming_the_fault(body, named):
    """Guards each check of a /predict body: the text must name the column or field."""
    with pytest.raises(BadRequest) as caught:
        protocol.table_of(body, FEATURES)
    assert named in str(caught.value) and caught.value.status == 400


def test_records_and_columns_give_the_same_table():
    assert protocol.table_of([{"b": 2, "a": 1}], FEATURES) == {"a": [1], "b": [2]}
    assert protocol.table_of({"columns": {"a": [1], "b": [2]}}, FEATURES) == {"a": [1], "b": [2]}


def tensor(name, data, shape=None, datatype="FP64"):
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    "body, named",
    [
        ({"inputs": [{"name": "a", "shape": [1], "data": [1]}]}, "'datatype'"),
        ({"inputs": [tensor("a", [1], datatype="FP99")]}, "'FP99'"),
        ({"inputs": [tensor("a", [1, 2], shape=[3])]}, "needs 3 values"),
        ({"inputs": [tensor("a", ["x"])]}, "is not FP64"),
        ({"inputs": [tensor("a", [1]), tensor("a", [1])]}, "given twice"),
        ({"inputs": [tensor("a", [1])]}, "missing column(s) 'b'"),
        ({"inputs": [tensor("m", [1, 2, 3], shape=[1, 3])]}, "3 columns"),
        ({"inputs": []}, "'inputs'"),
        ({"inputs": [tensor("a", [1])], "x": 1}, "'x'"),
    ],
)
def test_v2_requests_are_refused_naming_the_field(body, named):
    """Guards the Open Inference Protocol checks (field, datatype, shape, column)."""
    with pytest.raises(BadRequest) as caught:
        protocol.table_of_v2(body, FEATURES)
    assert named in str(caught.value)


def test_a_v2_matrix_input_is_split_into_the_feature_columns():
    body = {"inputs": [tensor("x", [[1, 2], [3, 4]], shape=[2, 2])]}
    assert protocol.table_of_v2(body, FEATURES) == {"a": [1, 3], "b": [2, 4]}


# --------------------------------------------------------------------------- builders


def test_containers_are_built_hardened_and_unreaped():
    """Guards the create arguments (non-root, no capability, read-only root and model,
    port only on the router, on the bind address) and the labels (no ``managed``: the
    reaper and cleanup list only those)."""
    config = load_config(None).execution_configs["local"]
    replica = spec.replica_args(config, "img", "alice", "iris", "v1", 0)
    routing = spec.router_args(config, "img", "alice", "iris", "tok")
    for args in (replica, routing):
        assert args["user"] == "1000:100" and args["cap_drop"] == ["ALL"]
        assert args["read_only"] and args["security_opt"] == ["no-new-privileges"]
        assert MANAGED not in args["labels"]
    assert "ports" not in replica
    assert (
        replica["volumes"][spec.volume_name(spec.service_id("alice", "iris"), "v1")]["mode"] == "ro"
    )
    assert routing["ports"] == {"8080/tcp": ("127.0.0.1", None)}
    assert spec.service_id("alice", "iris") != spec.service_id("bob", "iris")


@pytest.mark.parametrize("bad", ["", "Iris", "a/b", "x" * 41, None, "-a"])
def test_service_names_are_checked(bad):
    with pytest.raises(spec.SpecError):
        spec.check_name(bad)


def test_traffic_weights_are_checked():
    assert spec.check_traffic({"v2": 10}, {"v1", "v2"}) == {"v1": 0.0, "v2": 10.0}
    for bad in ({"v3": 1}, {"v1": -1}, {"v1": 0}, {"v1": True}, []):
        with pytest.raises(spec.SpecError):
            spec.check_traffic(bad, {"v1", "v2"})


# --------------------------------------------------------------------------- live, in process


def serve(handler, attach) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    attach(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    (folder / "meta.json").write_text("{}")
    return folder, model, X


def replica(model_dir, version="v1") -> ThreadingHTTPServer:
    state = runtime.State("iris", version)
    state.model = runtime.Model(str(model_dir))
    return serve(runtime.Handler, lambda s: setattr(s, "state", state))


def post(url, body, key="k1"):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_router_retries_on_another_replica_and_follows_the_weights(model_dir, tmp_path):
    """Guards the router: a dead replica costs no request (retry), a 0-weight version gets
    none, keys are checked, and the counts per version are kept."""
    folder, model, X = model_dir
    one, two, other = replica(folder), replica(folder), replica(folder, "v2")
    routes = router.Routes(str(tmp_path / "config.json"))
    address = lambda s: f"127.0.0.1:{s.server_port}"  # noqa: E731
    routes.replace(
        {
            "versions": {
                "v1": {"weight": 100, "replicas": [address(one), address(two)]},
                "v2": {"weight": 0, "replicas": [address(other)]},
            },
            "keys": [router.key_hash("k1")],
        }
    )
    routes.ready = {address(s): True for s in (one, two, other)}
    front = serve(router.Handler, lambda s: setattr(s, "routes", routes))
    url = f"http://127.0.0.1:{front.server_port}/predict"
    rows = X.head(5).to_dict("records")
    one.shutdown()
    one.server_close()  # dead, but still marked ready: the router finds out on the way
    random.seed(1)
    answers = [post(url, rows) for _ in range(10)]
    assert all(s == 200 and r["version"] == "v1" for s, r in answers), answers
    assert answers[0][1]["predictions"] == model.predict(X.head(5)).tolist()
    assert post(url, rows, key="nope")[0] == 401
    assert routes.summary()["versions"]["v1"]["requests"] == 10
    assert "v2" not in routes.summary()["versions"]
    assert router.Routes(str(tmp_path / "config.json")).config["keys"] == [router.key_hash("k1")]
    front.shutdown()


def test_a_model_names_the_libraries_it_holds_not_all_the_kernel_imported():
    """Guards the image check against refusing a scikit-learn model because the kernel
    happened to import xgboost (seen in a full run: "lacks xgboost, which the model needs")."""
    import xgboost  # noqa: F401  (imported, as in a kernel that used it earlier)

    from jupyter_dss_containers.services.client import serialise

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(X, y)
    data, meta = serialise(model)
    assert set(meta["libraries"]) == {"sklearn", "numpy"}, meta
    assert (pickle.loads(data).predict(X[:3]) == model.predict(X[:3])).all()
