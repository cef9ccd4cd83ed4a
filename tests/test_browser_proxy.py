"""A web app inside a notebook's container kernel, shown in the notebook, in a real browser.

A real ``jupyter lab`` (the fixtures of :mod:`test_browser`) opens a notebook whose kernel
runs in a container of the config ``local``; its cell starts ``python -m http.server`` on
the container's loopback and displays an IFrame of ``$DSS_CONTAINERS_PROXY_PREFIX`` +
port, the URL the kernel was given. Headless Chromium must show the page inside the
notebook's output, loaded through ``<base_url>/dss-containers/proxy/<kernel_id>/<port>/``
with the browser's own login cookie, while the kernel's container publishes no port.
It leaves a screenshot in ``tests/artifacts/proxy.png``.
"""

from __future__ import annotations

import textwrap
import time

import pytest
from conftest import leftover_containers
from servers import TOKEN, http
from test_browser import ARTIFACTS, CHROMIUM_ARGS, chromium, lab_server  # noqa: F401

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
