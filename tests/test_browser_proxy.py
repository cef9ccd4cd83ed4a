"""A web app inside a notebook's container kernel, shown in the notebook, in a real browser.

A real ``jupyter lab`` (the fixtures of :mod:`test_browser`) opens a notebook whose kernel
runs in a container of the config ``local``; its cell starts ``python -m http.server`` on
the container's loopback and displays an IFrame of ``$DSS_CONTAINERS_PROXY_PREFIX`` +
port, the URL the kernel was given. Headless Chromium must show the page inside the
notebook's output, loaded through ``<base_url>/dss-containers/proxy/<kernel_id>/<port>/``
with the browser's own login cookie, while the kernel's container publishes no port.
It leaves a screenshot in ``tests/artifacts/proxy.png``.

Then TensorBoard itself: a code env ``tb`` (``tensorboard`` from the tests' wheelhouse)
on the same config; its kernel writes a scalar's event file and runs ``%load_ext
tensorboard`` and ``%tensorboard --logdir ...`` with no set-up: TensorBoard's magic builds
its iframe from ``TENSORBOARD_PROXY_URL``, and Chromium must show TensorBoard's scalars
dashboard with the tag inside the notebook (``tests/artifacts/tensorboard.png``).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import leftover_containers
from servers import TOKEN, ServerProcess, http
from test_browser import ARTIFACTS, CHROMIUM_ARGS, chromium, lab_server  # noqa: F401

from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.images import codeenv

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

PORT = 8321
CELL = textwrap.dedent(
    f"""
    import os, socket, subprocess, sys, tempfile, time
    from IPython.display import IFrame
    site = tempfile.mkdtemp()
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("<html><body><h1 id='marker'>hello from the container</h1></body></html>")
    subprocess.Popen([sys.executable, "-m", "http.server", "{PORT}", "--bind", "127.0.0.1",
                      "--directory", site])
    for _ in range(200):  # until it listens: the IFrame must not load before it does
        try:
            socket.create_connection(("127.0.0.1", {PORT}), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    IFrame(os.environ["DSS_CONTAINERS_PROXY_PREFIX"] + "{PORT}/", width=600, height=150)
    """
).strip()
NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "dss-local", "display_name": "Python 3 (local)"}},
    "cells": [
        {"cell_type": "code", "id": "serve", "metadata": {}, "source": CELL, "outputs": []},
    ],
}


def test_a_page_served_in_the_kernels_container_shows_in_the_notebook(
    chromium,  # noqa: F811
    lab_server,  # noqa: F811
    docker_client,
):
    from playwright.sync_api import sync_playwright

    url, log = lab_server
    headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
    status, body = http(
        "PUT",
        f"{url}api/contents/proxy.ipynb",
        {"type": "notebook", "format": "json", "content": NOTEBOOK},
        headers,
    )
    assert status in (200, 201), body
    ARTIFACTS.mkdir(exist_ok=True)
    kernel_id = None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{url}lab/tree/proxy.ipynb?token={TOKEN}")
            page.wait_for_function("window.jupyterapp !== undefined")
            page.evaluate("window.jupyterapp.restored.then(() => true)")
            # the notebook's kernel is a container one: wait until it is idle, then run
            page.locator(".jp-Notebook").wait_for()
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return !!(w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'); }"
            )
            page.evaluate(
                "window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => true)"
            )
            frame_element = page.locator(".jp-OutputArea-output iframe")
            frame_element.wait_for()
            src = frame_element.get_attribute("src") or ""
            assert "/dss-containers/proxy/" in src and src.endswith(f"/{PORT}/"), src
            kernel_id = src.split("/dss-containers/proxy/", 1)[1].split("/", 1)[0]
            frame = frame_element.element_handle().content_frame()
            assert frame is not None
            marker = frame.locator("#marker")
            marker.wait_for()
            assert marker.inner_text() == "hello from the container"
            page.screenshot(path=str(ARTIFACTS / "proxy.png"))

            [container] = leftover_containers(docker_client, kernel_id=kernel_id)
            container.reload()
            assert not container.attrs["HostConfig"].get("PortBindings")
            assert not any(container.attrs["NetworkSettings"].get("Ports", {}).values())
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "proxy-failure.png"))
            print(f"server log:\n{log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()
    sessions = http("GET", f"{url}api/sessions", None, headers)[1] or []
    for session in sessions:
        http("DELETE", f"{url}api/sessions/{session['id']}", None, headers)
    deadline = time.monotonic() + 15
    while leftover_containers(docker_client, kernel_id=kernel_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert leftover_containers(docker_client, kernel_id=kernel_id) == []


TB_CONFIG = {
    "code_envs": {"tb": {"packages": ["tensorboard==2.21.0"], "available_for": "all"}},
    "execution_configs": {
        "local": {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}}
    },
}
TB_CELLS = [
    textwrap.dedent(
        """
        import tempfile, time
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        logdir = tempfile.mkdtemp()
        writer = EventFileWriter(logdir + "/demo")
        for step in range(5):
            value = summary_pb2.Summary.Value(tag="proxied_loss", simple_value=1.0 / (step + 1))
            summary = summary_pb2.Summary(value=[value])
            writer.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary))
        writer.close()
        """
    ).strip(),
    "%load_ext tensorboard",
    "%tensorboard --logdir $logdir --port 6006",
]


@pytest.fixture
def tensorboard_lab(tmp_path, base_image, docker_client) -> Iterator[tuple[str, Path]]:
    """A real JupyterLab whose config has the code env ``tb``, its image built first
    (about 15 s the first time, from the wheelhouse; then cached by content)."""
    config_path = tmp_path / "dss-containers.yaml"
    config_path.write_text(yaml.safe_dump(TB_CONFIG))
    codeenv.build_env_image(load_config(config_path), "tb", "local", docker_client)
    config_dir = tmp_path / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = dict(
        os.environ, JUPYTER_CONFIG_DIR=str(config_dir), DSS_CONTAINERS_CONFIG=str(config_path)
    )
    server = ServerProcess(
        tmp_path, env, module="jupyterlab", extra_args=("--LabApp.expose_app_in_browser=True",)
    )
    try:
        server.start()
        yield server.url, server.log
    finally:
        server.stop()


def test_tensorboard_magic_shows_tensorboard_in_the_notebook(
    chromium,  # noqa: F811
    tensorboard_lab,
    docker_client,
):
    from playwright.sync_api import sync_playwright

    url, log = tensorboard_lab
    headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
    notebook = {
        **NOTEBOOK,
        "metadata": {"kernelspec": {"name": "dss-local-tb", "display_name": "Python 3 (tb)"}},
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src, "outputs": []}
            for i, src in enumerate(TB_CELLS)
        ],
    }
    status, body = http(
        "PUT",
        f"{url}api/contents/tb.ipynb",
        {"type": "notebook", "format": "json", "content": notebook},
        headers,
    )
    assert status in (200, 201), body
    ARTIFACTS.mkdir(exist_ok=True)
    kernel_id = None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{url}lab/tree/tb.ipynb?token={TOKEN}")
            page.wait_for_function("window.jupyterapp !== undefined")
            page.evaluate("window.jupyterapp.restored.then(() => true)")
            page.locator(".jp-Notebook").wait_for()
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return !!(w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'); }"
            )
            page.evaluate(
                "window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => true)"
            )
            frame_element = page.locator("iframe[id^='tensorboard-frame-']")
            frame_element.wait_for()
            page.wait_for_function(
                "() => { const f = document.querySelector(\"iframe[id^='tensorboard-frame-']\");"
                " return !!(f && f.src); }"
            )
            src = frame_element.get_attribute("src") or ""
            assert "/dss-containers/proxy/" in src and src.rstrip("/").endswith("/6006"), src
            kernel_id = src.split("/dss-containers/proxy/", 1)[1].split("/", 1)[0]
            frame = frame_element.element_handle().content_frame()
            assert frame is not None
            frame.get_by_text("proxied_loss").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "tensorboard.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "tensorboard-failure.png"))
            print(f"server log:\n{log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()
    for session in http("GET", f"{url}api/sessions", None, headers)[1] or []:
        http("DELETE", f"{url}api/sessions/{session['id']}", None, headers)
    deadline = time.monotonic() + 15
    while leftover_containers(docker_client, kernel_id=kernel_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert leftover_containers(docker_client, kernel_id=kernel_id) == []
