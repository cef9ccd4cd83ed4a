"""The "Containers" sidebar in a real JupyterLab, driven by a real headless Chromium.

A real ``jupyter lab`` serves the built labextension on 127.0.0.1; the test opens the
sidebar, tests the config ``local`` (its daemon answers "ok"), starts a notebook on it,
watches its container kernel run (with live memory), opens the kernel's logs, stops it from
the sidebar and checks that no container is left. Then a job submitted over REST shows up
with its state and output, and its Cancel button stops it.
It leaves a screenshot in ``tests/artifacts/sidebar.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import leftover_containers, need
from servers import TOKEN, ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONFIG = """
execution_configs:
  local:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
  admins-only:
    backend: docker
    image: default
    permissions: {groups: [admins]}
"""
PANEL = "#jp-DSSContainers-panel"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium and Playwright for Python, checked before any server starts."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        need("Playwright for Python is not installed (pip install -e .[test])")
    path = os.environ.get("DSS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        need(f"no Chromium at {path} (apt-get install chromium)")
    return path


@pytest.fixture
def lab_server(tmp_path, base_image) -> Iterator[tuple[str, Path]]:
    """A real JupyterLab on 127.0.0.1 with the test config; its process group is killed after."""
    config_path = tmp_path / "dss-containers.yaml"
    config_path.write_text(CONFIG)
    config_dir = tmp_path / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    # no news pop-up over the page
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


JOB_CODE = "import time\nprint('hello from the job', flush=True)\ntime.sleep(60)\n"


def submit_job(url: str, code: str) -> str:
    """POST a Python job to the server's REST API with the token; its id."""
    request = urllib.request.Request(
        f"{url}dss-containers/api/jobs",
        data=json.dumps({"config": "local", "code": code, "name": "sleeper"}).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


def test_sidebar_starts_and_stops_a_container_kernel(chromium, lab_server, docker_client):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    url, log = lab_server
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "sidebar-failure.png").unlink(missing_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 1)

    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            pytest.fail(f"Chromium {chromium} did not start: {str(exc).splitlines()[0]}")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}lab?token={TOKEN}")
            # The command, not the tab: the layout restorer may already have the panel open.
            # ...once the restorer is done, or it may bring the file browser back over it.
            page.wait_for_function("window.jupyterapp !== undefined")
            page.evaluate("window.jupyterapp.restored.then(() => true)")
            mark("lab loaded")
            if not page.evaluate("window.jupyterapp.commands.hasCommand('dss-containers:open')"):
                pytest.fail(
                    "JupyterLab has no dss-containers:open command: the labextension is not "
                    "installed (see `jupyter labextension list`)"
                )
            page.evaluate("window.jupyterapp.commands.execute('dss-containers:open')")
            panel = page.locator(PANEL)
            local = panel.locator('.jp-DSSContainers-config[data-config="local"]')
            local.wait_for()
            assert panel.locator('.jp-DSSContainers-config[data-config="admins-only"]').count() == 0
            assert panel.locator("#jp-DSSContainers-configs .jp-DSSContainers-error").count() == 0
            panel.locator("#jp-DSSContainers-kernels .jp-DSSContainers-empty").wait_for()
            mark("sidebar shows local")

            local.locator('.jp-DSSContainers-test[data-config="local"]').click()
            tested = local.locator(".jp-DSSContainers-test-result[data-ok]")
            tested.wait_for(timeout=15_000)
            result = tested.inner_text()
            assert tested.get_attribute("data-ok") == "true", result
            assert result.startswith("ok · docker"), result
            mark("Test says ok")

            local.locator('.jp-DSSContainers-new-notebook[data-config="local"]').click()
            running = panel.locator(
                '.jp-DSSContainers-kernel[data-config="local"][data-state="running"]'
            )
            # A refused start shows its reason in the card: fail with it, not after a timeout.
            refused = local.locator(".jp-DSSContainers-action-error .jp-DSSContainers-error")
            running.or_(refused).first.wait_for()
            if refused.count():
                pytest.fail(f"'New notebook' failed in the sidebar: {refused.first.inner_text()}")
            assert running.count() == 1
            kernel_id = running.get_attribute("data-kernel-id")
            mark("kernel running")
            assert leftover_containers(docker_client, kernel_id=kernel_id), "no container"

            stats = running.locator(".jp-DSSContainers-stats", has_text="mem ")
            stats.wait_for(timeout=30_000)
            assert "mem " in stats.inner_text()
            mark("memory shown")

            # Logs: a box under the row that keeps following while open (ipykernel writes
            # to stderr as it starts, so there is text).
            running.locator(f'.jp-DSSContainers-show-logs[data-kernel-id="{kernel_id}"]').click()
            logs = running.locator("pre.jp-DSSContainers-logs")
            logs.wait_for(timeout=15_000)  # shown once it holds text
            assert logs.inner_text().strip()
            assert running.locator(".jp-DSSContainers-logs-status[role=alert]").count() == 0
            mark("logs shown")
            page.screenshot(path=str(ARTIFACTS / "sidebar.png"))

            panel.locator(f'.jp-DSSContainers-stop[data-kernel-id="{kernel_id}"]').click()
            panel.locator(f'.jp-DSSContainers-kernel[data-kernel-id="{kernel_id}"]').wait_for(
                state="detached"
            )
            mark("row gone")

            job_id = submit_job(url, JOB_CODE)
            panel.locator(".jp-DSSContainers-refresh").click()
            job = panel.locator(f'.jp-DSSContainers-job[data-job-id="{job_id}"]')
            job.locator(f'.jp-DSSContainers-show-logs[data-job-id="{job_id}"]').click()
            job.locator("pre.jp-DSSContainers-logs", has_text="hello from the job").wait_for(
                timeout=30_000
            )
            # its output says it runs: the row follows at once, not at the next refresh
            panel.locator(
                f'.jp-DSSContainers-job[data-job-id="{job_id}"][data-state="running"]'
            ).wait_for(timeout=4_000)
            mark("job output shown")
            job.locator(f'.jp-DSSContainers-cancel[data-job-id="{job_id}"]').click()
            panel.locator(
                f'.jp-DSSContainers-job[data-job-id="{job_id}"][data-state="cancelled"]'
            ).wait_for(timeout=20_000)
            assert job.locator(".jp-DSSContainers-cancel").count() == 0
            assert leftover_containers(docker_client, job_id=job_id) == []
            mark("job cancelled")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "sidebar-failure.png"))
            print(f"server log:\n{log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()

    deadline = time.monotonic() + 15
    while leftover_containers(docker_client, kernel_id=kernel_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert leftover_containers(docker_client, kernel_id=kernel_id) == []
    mark("container removed")
    print("timings (s since page load):", timings)
