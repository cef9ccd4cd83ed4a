"""Start phases and death reasons in a real JupyterLab, in headless Chromium.

- A notebook on the fake Kubernetes cluster (tests/fake_kube) whose image pull the test
  holds: the "Containers" sidebar shows the start's phases live (queued, scheduling,
  starting, **pulling image** with the kubelet's words, the seconds in each) while JupyterLab
  waits for the kernel (JupyterLab's default: no pending kernels, so the kernel manager does
  not list it yet); once released, the card sums the phases up with their timings.
  Screenshots: ``tests/artifacts/sidebar-phases.png`` (during the pull) and
  ``sidebar-phases-ready.png``.
- A notebook on a 64 MiB Docker config allocates 200 MiB: the kernel is OOM-killed and
  restarted by the server; a JupyterLab notification says "OOM-killed (memory limit 64
  MiB)", and the restarted kernel's first cell prints the reason first on stderr.
  Screenshot: ``tests/artifacts/notebook-oom.png``.

The labextension served is this tree's build (``jupyter_dss_containers/labextension``,
made by ``jlpm build`` in ``labextension/``) when there is one, else the installed one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import leftover_containers
from servers import TOKEN, ServerProcess
from test_browser import ARTIFACTS, CHROMIUM_ARGS, PANEL, chromium  # noqa: F401  (a fixture)

import jupyter_dss_containers

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

OOM_CODE = "block = b'x' * (200 * 1024 * 1024)"
KERNEL_IDLE = (
    "(() => { const w = window.jupyterapp.shell.currentWidget;"
    " const k = w && w.sessionContext && w.sessionContext.session"
    " && w.sessionContext.session.kernel;"
    " return !!k && k.status === 'idle'; })()"
)


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-bp", docker_client, 22)
    cluster.start()
    yield cluster
    cluster.stop()


def this_trees_labextensions(folder: Path) -> str | None:
    """A labextensions folder holding this tree's built extension (first on JUPYTER_PATH,
    so it wins over an installed one), or None when the tree has no build."""
    built = Path(jupyter_dss_containers.__file__).parent / "labextension"
    if not (built / "package.json").is_file():
        return None
    (folder / "labextensions").mkdir(parents=True)
    (folder / "labextensions" / "jupyter-dss-containers").symlink_to(built)
    return str(folder)


@pytest.fixture
def phases_lab(tmp_path, fake, base_image) -> Iterator[tuple[ServerProcess, Path]]:
    from fake_kube.server import write_kubeconfig

    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(str(kubeconfig), {"fake-bp": fake}, "fake-bp")
    config = {
        "execution_configs": {
            "k8s": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": {
                    "kubeconfig": str(kubeconfig),
                    "context": "fake-bp",
                    "namespace": "default",
                    "image_pull_policy": "IfNotPresent",
                },
                "permissions": {"groups": ["*"]},
                "workspace": {"mount": "none"},
            },
            "small64": {
                "backend": "docker",
                "image": "default",
                "docker": {"resources": {"memory": "64m"}},
                "permissions": {"groups": ["*"]},
            },
        }
    }
    config_path = tmp_path / "dss-containers.yaml"
    config_path.write_text(yaml.safe_dump(config))
    config_dir = tmp_path / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = dict(
        os.environ, JUPYTER_CONFIG_DIR=str(config_dir), DSS_CONTAINERS_CONFIG=str(config_path)
    )
    if (data := this_trees_labextensions(tmp_path / "jupyter-path")) is not None:
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [data, env.get("JUPYTER_PATH")]))
    server = ServerProcess(
        tmp_path, env, module="jupyterlab", extra_args=("--LabApp.expose_app_in_browser=True",)
    )
    try:
        server.start()
        yield server, config_path
    finally:
        server.stop()


def default_image(config_path: Path) -> str:
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    config_file = load_config(str(config_path))
    return images.resolve_image(config_file, config_file.get("k8s"), None)


def open_lab(page, url: str, path: str = "") -> None:
    page.goto(f"{url}lab{path}?token={TOKEN}")
    page.wait_for_function("window.jupyterapp !== undefined")
    page.evaluate("window.jupyterapp.restored.then(() => true)")
    page.evaluate("window.jupyterapp.commands.execute('dss-containers:open')")


def test_sidebar_shows_the_phases_of_a_slow_pull(chromium, phases_lab, fake):  # noqa: F811
    """Guards: a sidebar that shows a starting kernel as nothing (or only "starting")
    while its image pulls, phases without their timings, no summary once ready."""
    from playwright.sync_api import sync_playwright

    server, config_path = phases_lab
    release = threading.Event()
    fake.kubelet.pulls.hold(default_image(config_path), release=release)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(90_000)
        try:
            open_lab(page, server.url)
            panel = page.locator(PANEL)
            panel.locator('.jp-DSSContainers-new-notebook[data-config="k8s"]').click()
            card = panel.locator('.jp-DSSContainers-kernel[data-config="k8s"]')
            pulling = card.locator(
                '.jp-DSSContainers-phase[data-phase="pulling"][data-current="true"]'
            )
            pulling.wait_for()
            text = card.inner_text()
            assert "pulling image" in pulling.inner_text()
            assert 'Pulling image "dss-containers/base-default:' in pulling.inner_text()
            for label in ("queued", "scheduling", "starting container"):
                assert label in text, text
            seconds = card.locator(".jp-DSSContainers-phase-seconds").all_inner_texts()
            assert seconds and all(s.endswith(" s") for s in seconds if s), seconds
            assert card.get_attribute("data-state") == "starting"
            page.screenshot(path=str(ARTIFACTS / "sidebar-phases.png"))

            release.set()
            ready = panel.locator(
                '.jp-DSSContainers-kernel[data-config="k8s"][data-state="running"]'
            )
            summary = ready.locator(".jp-DSSContainers-phase-summary")
            summary.wait_for()
            said = summary.inner_text()
            assert said.startswith("started in ") and "pulling image " in said, said
            assert "kernel booting " in said, said
            page.screenshot(path=str(ARTIFACTS / "sidebar-phases-ready.png"))
            kernel_id = ready.get_attribute("data-kernel-id")
            panel.locator(f'.jp-DSSContainers-stop[data-kernel-id="{kernel_id}"]').click()
            panel.locator(f'.jp-DSSContainers-kernel[data-kernel-id="{kernel_id}"]').wait_for(
                state="detached"
            )
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "sidebar-phases-failure.png"))
            print(f"server log:\n{server.tail()}")
            raise
        finally:
            release.set()
            fake.kubelet.pulls.clear()
            browser.close()


def test_oom_killed_kernel_says_why_in_the_notebook(chromium, phases_lab, docker_client):  # noqa: F811
    """Guards: an OOM kill the notebook shows only as JupyterLab's "kernel restarted": the
    notification and the restarted kernel's first stderr line must give the reason."""
    from playwright.sync_api import sync_playwright

    server, _ = phases_lab
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(OOM_CODE), nbformat.v4.new_code_cell("print('after')")]
    )
    nb.metadata["kernelspec"] = {"name": "dss-small64", "display_name": "Python 3 (small64)"}
    nbformat.write(nb, server.root_dir / "oom.ipynb")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(90_000)
        try:
            open_lab(page, server.url, "/tree/oom.ipynb")
            page.locator(".jp-Notebook").wait_for()
            page.wait_for_function(KERNEL_IDLE)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
            toast = page.locator(".Toastify__toast", has_text="OOM-killed (memory limit 64 MiB)")
            toast.wait_for()
            assert "died and was restarted" in toast.inner_text()
            dialog = page.locator(".jp-Dialog")  # JupyterLab's own "Kernel Restarting"
            if dialog.count():
                dialog.locator(".jp-mod-accept").first.click()
            # the restarted kernel runs (the sidebar says so). Its execution state is not
            # waited for: JupyterLab's and the server's may read "starting" or the dead
            # kernel's "busy" until the kernel next publishes a status (seen in a full run);
            # the next cell's request is queued until the kernel takes it either way
            page.locator(PANEL).locator(
                '.jp-DSSContainers-kernel[data-config="small64"][data-state="running"]'
            ).wait_for()
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
            stderr = page.locator(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                has_text="OOM-killed (memory limit 64 MiB)",
            )
            stderr.wait_for()
            assert stderr.inner_text().startswith(
                "dss-containers: the kernel was restarted because it died"
            )
            page.locator(".jp-OutputArea-output", has_text="after").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "notebook-oom.png"))
            page.evaluate("window.jupyterapp.commands.execute('kernelmenu:shutdown')")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "notebook-oom-failure.png"))
            print(f"server log:\n{server.tail()}")
            raise
        finally:
            browser.close()
    server.stop()
    assert leftover_containers(docker_client, config="small64") == []
