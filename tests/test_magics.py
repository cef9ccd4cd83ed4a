"""The magics in a LOCAL kernel (python3) executed by nbclient: cells run in containers."""

from __future__ import annotations

import os
import socket
import time

import nbformat
import pytest
from conftest import leftover_containers
from job_images import job_image
from jupyter_client import KernelManager
from nbclient import NotebookClient

from jupyter_dss_containers import ownership

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def magic_config(workspace, docker_client, base_image):
    path = workspace / "magics.yaml"
    image = job_image(docker_client, base_image)
    path.write_text(
        "execution_configs:\n  big:\n    backend: docker\n"
        f"    image: {image}\n    docker: {{resources: {{memory: 384m}}}}\n"
        "    permissions: {groups: ['*']}\n"
    )
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)  # the local kernel inherits it
    yield path
    os.environ.pop("DSS_CONTAINERS_CONFIG", None)


CELLS = [
    "%load_ext jupyter_dss_containers\nimport numpy as np, pandas as pd\na = np.arange(4)",
    """%%container big --in a --out b,df
import socket
limit = int(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read())
print('hostname', socket.gethostname(), 'limit', limit)
b = a * 2
import pandas as pd
df = pd.DataFrame({'a': a, 'b': b})
import matplotlib.pyplot as plt
plt.plot(b)
df""",
    "print(type(b).__name__, b.tolist(), type(df).__name__, df['b'].sum())",
    """%%container big
def inner():
    raise ValueError('remote boom')
inner()""",
    "%%container big --detach --out c\nc = 41 + 1\nprint('detached output')",
    "jid = _\n%container_result $jid\nprint('c =', c)\n%container_logs $jid",
    "from sklearn.linear_model import LinearRegression\nest = LinearRegression()\n"
    "X = np.arange(8.0).reshape(-1, 1)\ny = 3 * X.ravel() + 1\n"
    "fit = %container_model train big est X y\nprint(round(fit.model.coef_[0], 6), fit.task)",
    "%container_jobs",
]


def test_container_cell_in_a_local_kernel(magic_config, docker_client):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=True).execute()
    cells = nb.cells

    stream = "".join(o.get("text", "") for o in cells[1].outputs if o.output_type == "stream")
    host = stream.split("hostname ")[1].split()[0]
    assert host != socket.gethostname()
    assert f"limit {384 * 1024 * 1024}" in stream
    rich = [o for o in cells[1].outputs if o.output_type == "display_data"]
    assert any("image/png" in o.data for o in rich), "the matplotlib figure is displayed"
    assert any("text/html" in o.data and "<table" in o.data["text/html"] for o in rich)

    assert cells[2].outputs[0].text.strip() == "ndarray [0, 2, 4, 6] DataFrame 12"

    error = cells[3].outputs[-1]
    assert error.output_type == "error" and error.ename == "RemoteError"
    traceback = "\n".join(error.traceback)
    assert "<container-cell>" in traceback and "remote boom" in traceback
    assert "in inner" in traceback

    detached = "".join(o.get("text", "") for o in cells[4].outputs if o.output_type == "stream")
    assert "runs detached" in detached
    fetched = "".join(o.get("text", "") for o in cells[5].outputs if o.output_type == "stream")
    assert "c = 42" in fetched and "detached output" in fetched

    assert cells[6].outputs[0].text.strip() == "3.0 regression"

    table = cells[7].outputs[0].data["text/plain"]
    assert "succeeded" in table and "failed" in table
    assert not leftover_containers(docker_client, kind="job", config="big")


def test_interrupting_the_kernel_cancels_the_job(magic_config, docker_client):
    before = {c.id for c in leftover_containers(docker_client, kind="job", config="big")}

    def ours():
        """Job containers of config `big` that were not there before (one list call with
        their labels: one removed meanwhile is not an error)."""
        label = [f"{ownership.KIND}=job", f"{ownership.CONFIG}=big"]
        rows = docker_client.api.containers(all=True, filters={"label": label})
        return [row["Id"] for row in rows if row["Id"] not in before]

    km = KernelManager(kernel_name="python3", shutdown_wait_time=20)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("%load_ext jupyter_dss_containers", timeout=60)
        msg_id = kc.execute("%%container big\nimport time\nprint('sleeping')\ntime.sleep(120)")
        deadline = time.monotonic() + 120
        while not ours():
            assert time.monotonic() < deadline, "the job container never appeared"
            time.sleep(0.2)
        km.interrupt_kernel()
        started = time.monotonic()
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 30
        assert not ours()

        # a detached job does not outlive its kernel: a shutdown cancels it
        kc.execute_interactive("%%container big --detach\nimport time\ntime.sleep(120)")
        while not ours():
            assert time.monotonic() < deadline, "the detached job never appeared"
            time.sleep(0.2)
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        assert not ours()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
