"""``c.DSSContainersExtension.*`` and ``c.JobService.*`` set in a real server's
``jupyter_server_config.py`` (its user config folder, ``JUPYTER_CONFIG_DIR``) are applied.

One ``jupyter server`` subprocess; nothing names the config file but that file's
``config_file``, and the stock kernel spec manager is configured there so that
``live_kernelspecs = False`` has something to leave alone. No container is started: with
``max_jobs_per_user = 0`` every job waits in the queue, and the server's stop cancels them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ServerProcess

SITE = """
execution_configs:
  from-the-traits: {backend: docker, image: default, permissions: {groups: ["*"]}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("traits")
    site = folder / "site.yaml"
    site.write_text(SITE)
    config_dir = folder / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(
        f"c.ServerApp.kernel_spec_manager_class = 'jupyter_client.kernelspec.KernelSpecManager'\n"
        f"c.DSSContainersExtension.config_file = {str(site)!r}\n"
        "c.DSSContainersExtension.live_kernelspecs = False\n"
        "c.DSSContainersExtension.reap_on_start = False\n"
        "c.JobService.max_jobs_per_user = 0\n"
        "c.JobService.max_queued_jobs_per_user = 2\n"
        f"c.JobService.store_dir = {str(folder / 'job-store')!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSS_CONTAINERS_")}
    env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[var] = str(folder / var)
    proc = ServerProcess(folder, env)
    try:
        yield proc.start(), folder
    finally:
        proc.stop()


def test_the_extensions_traits_are_applied(server):
    """Guards ``config_file`` (no other way names the file: the default search would give
    the embedded ``local``) and ``live_kernelspecs`` (left at True, the stock manager would
    be replaced and ``dss-from-the-traits`` offered)."""
    proc, folder = server
    status, reply = proc.request("GET", "dss-containers/api/configs")
    assert status == 200, reply
    assert reply["source"] == str(folder / "site.yaml")
    assert [c["name"] for c in reply["configs"]] == ["from-the-traits"]
    status, specs = proc.request("GET", "api/kernelspecs")
    assert status == 200
    assert not [name for name in specs["kernelspecs"] if name.startswith("dss-")], specs


def test_the_job_services_traits_are_applied(server):
    """Guards the job service being built from the server's config: ``max_jobs_per_user``
    (0: the jobs wait, saying so), ``max_queued_jobs_per_user`` (the third queued job is
    429 naming the limit of 2, not the default 50) and ``store_dir`` (records kept there)."""
    proc, folder = server
    body = {"config": "from-the-traits", "code": "print(1)"}
    queued = []
    for _ in range(2):
        status, job = proc.request("POST", "dss-containers/api/jobs", body)
        assert status == 201, job
        assert job["state"] == "queued" and "(limit 0 per user)" in job["message"], job
        queued.append(job["id"])
    status, refused = proc.request("POST", "dss-containers/api/jobs", body)
    assert status == 429, refused
    assert "already has 2 jobs queued (limit 2 per user" in refused["message"]
    assert "JobService.max_queued_jobs_per_user" in refused["message"]
    stored = {p.name for p in (folder / "job-store").iterdir()}
    assert set(queued) <= stored, stored
    for job_id in queued:
        status, job = proc.request("DELETE", f"dss-containers/api/jobs/{job_id}")
        assert status == 200 and job["state"] == "cancelled", job
