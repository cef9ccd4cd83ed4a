"""The first notebook a data scientist writes, in a real JupyterLab run as a non-root user.

A real ``jupyter lab`` runs as an OS user the test creates (a personal server, so that user
is in the ``docker`` group, as JupyterHub's spawners run single-user servers), in headless
Chromium. The notebook ``demo/analysis.ipynb`` sits next to ``demo/data.csv`` and runs on
**Python 3 (local)**: its working directory is ``demo/``, pandas reads the file, a plot is
drawn, and the ``out.csv`` it writes shows up in JupyterLab's file browser, owned on the
host by the server's user. Guards: a kernel started in the image's HOME (no workspace), a
container running as root or as the image's uid 1000 (files not the user's), an image
without pandas or matplotlib.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from conftest import leftover_containers
from osusers import os_user, owned_by
from servers import TOKEN, ServerProcess
from test_browser import ARTIFACTS, CHROMIUM_ARGS, chromium  # noqa: F401  (a fixture)

from jupyter_dss_containers.ownership import OWNER

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

USER = "dss-ws-user"
CELLS = [
    "import os; print('cwd', os.getcwd())",
    "import pandas as pd\ndf = pd.read_csv('data.csv')\nprint('rows', len(df), 'sum', df.x.sum())",
    "ax = df.plot(x='x', y='y')",
    "df.assign(z=df.x * 2).to_csv('out.csv', index=False); print('written')",
]


@pytest.fixture
def user_lab(base_image):
    """JupyterLab as a non-root user whose root folder holds demo/data.csv and the notebook
    (under /tmp, not pytest's tmp_path: that one is root's alone)."""
    user = os_user(USER, groups=("docker",))
    top = Path(tempfile.mkdtemp(prefix="dss-ws-"))
    top.chmod(0o755)
    home = owned_by(top / "server", user)
    demo = home / "notebooks" / "demo"
    demo.mkdir(parents=True)
    (demo / "data.csv").write_text("x,y\n1,2\n2,4\n3,9\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "dss-local", "display_name": "Python 3 (local)"}
    nbformat.write(nb, demo / "analysis.ipynb")
    config_dir = home / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = dict(
        os.environ,
        HOME=user.pw_dir,
        USER=USER,
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    env.pop("DSS_CONTAINERS_CONFIG", None)  # the embedded default: config `local`
    owned_by(home, user)
    server = ServerProcess(
        home,
        env,
        module="jupyterlab",
        extra_args=("--LabApp.expose_app_in_browser=True",),
        user=USER,
    )
    try:
        server.start()
        yield server, demo, user
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_a_notebook_sees_its_folder_reads_with_pandas_plots_and_writes_as_the_user(
    chromium,  # noqa: F811
    user_lab,
    docker_client,
):
    from playwright.sync_api import sync_playwright

    server, demo, user = user_lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{server.url}lab/tree/demo/analysis.ipynb?token={TOKEN}")
            page.wait_for_function("window.jupyterapp !== undefined")
            page.evaluate("window.jupyterapp.restored.then(() => true)")
            page.locator(".jp-Notebook").wait_for()
            # the notebook's kernel answered: its status is idle (JupyterLab's own session)
            page.wait_for_function(
                "(() => { const w = window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel;"
                " return !!k && k.status === 'idle'; })()"
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            outputs = page.locator(".jp-OutputArea-output")
            page.locator(".jp-OutputArea-output", has_text="written").wait_for()
            text = "\n".join(outputs.all_inner_texts())
            assert f"cwd {demo}" in text, text
            assert "rows 3 sum 6" in text, text
            assert page.locator(".jp-OutputArea-output img").count() >= 1, "no plot shown"
            assert "Error" not in text, text

            page.evaluate(
                "window.jupyterapp.commands.execute('filebrowser:go-to-path', {path: 'demo'})"
            )
            listing = page.locator(".jp-DirListing-content")
            listing.locator(".jp-DirListing-item", has_text="out.csv").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "workspace-notebook.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "workspace-failure.png"))
            print(f"server log:\n{server.tail()}")
            raise
        finally:
            browser.close()

    written = demo / "out.csv"
    assert written.read_text().splitlines()[0] == "x,y,z"
    assert (written.stat().st_uid, written.stat().st_gid) == (user.pw_uid, user.pw_gid)
    server.stop()
    mine = [c.name for c in leftover_containers(docker_client) if c.labels.get(OWNER) == USER]
    assert mine == [], mine
