"""``jupyter dss-containers deploy|services|undeploy`` on the real engine, as this OS user."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import urllib.request

import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from jupyter_dss_containers.services import spec

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
NAME = "cli-iris"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_deploys_lists_and_undeploys(tmp_path, base_image, docker_client):
    """Guards the three subcommands: the deployed file answers with the model's own
    predictions, the listing shows it, and undeploy leaves no container or volume."""
    (tmp_path / "dss.yaml").write_text(
        "execution_configs:\n  local: {backend: docker, image: default, "
        "permissions: {groups: ['*']}}\n"
    )
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(tmp_path / "dss.yaml"))
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = DecisionTreeClassifier(random_state=0).fit(X, y)
    (tmp_path / "tree.pkl").write_bytes(pickle.dumps(model))
    cli("undeploy", NAME, env=env)  # a leftover of an interrupted run
    try:
        done = cli("deploy", NAME, str(tmp_path / "tree.pkl"), "local", env=env)
        assert done.returncode == 0, done.stderr + done.stdout
        key = done.stdout.split("API key: ")[1].split(")")[0]
        listed = cli("services", "--json", env=env)
        rows = json.loads(listed.stdout)
        row = next(r for r in rows if r["name"] == NAME)
        request = urllib.request.Request(
            row["predict_url"],
            data=json.dumps(X.head(4).to_dict("records")).encode(),
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["predictions"] == model.predict(X.head(4)).tolist()
    finally:
        gone = cli("undeploy", NAME, env=env)
    assert gone.returncode == 0, gone.stderr
    sid = [r for r in rows if r["name"] == NAME] and spec.service_id(row["owner"], NAME)
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{spec.SERVICE_ID}={sid}"}
    )
    assert not docker_client.volumes.list(filters={"label": f"{spec.SERVICE_ID}={sid}"})
    again = cli("undeploy", NAME, env=env)
    assert again.returncode == 1 and "Service does not exist" in again.stderr
