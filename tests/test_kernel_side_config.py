"""``c.JobService.*`` in a kernel's own config (``ipython_kernel_config.py``) reaches the
job service that kernel's ``%%container`` cells and ``jobs.api`` calls use (issue 13: it
was built with no parent, so only its defaults ever applied).

A real host IPython kernel (``python3``) with its own IPYTHONDIR; no engine is needed: the
cell only reads the service it would submit to.
"""

from __future__ import annotations

import os

from jupyter_client import KernelManager
from kernels import printed_into

CELL = """
from jupyter_dss_containers.jobs import api
service = api.service()
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
print(service.max_queued_jobs_per_user, service.stop_grace_seconds, service.parent is app)
"""


def test_the_kernels_job_service_takes_the_kernels_config(tmp_path):
    """Guards ``jobs.api.service()`` being built under the kernel's application: a
    parentless one would print the defaults (50 2.0) and no parent."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.JobService.max_queued_jobs_per_user = 3\nc.JobService.stop_grace_seconds = 0.5\n"
    )
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")})
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(CELL, output_hook=printed_into(out), timeout=60)
        assert reply["content"]["status"] == "ok", out
        assert "".join(out).split() == ["3", "0.5", "True"], out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
