"""The command line the benchmarks start a real Jupyter server with, in one place."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def server_argv(port: int, token: str, root: Path, *extra: str) -> list[str]:
    """``python -m jupyter_server`` on 127.0.0.1:``port``; ``extra`` are further trait flags."""
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *extra,
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    return argv
