"""The server image's recipe: JupyterLab with this extension on a base image, as data.

Pure: the Dockerfile, the entry point, the content tag and the ``docker run`` line of the
Jupyter server in a container (issue 16, item 2). The tag is a hash of everything that goes
into the image (the base image's content tag, the wheel names of the dependencies, a digest
of this package's wheel contents, the Dockerfile and the entry point), so an unchanged
rebuild is a no-op. The builds themselves are in :mod:`.server_image`.

The server container holds no daemon socket: it reaches containers through the trusted
launcher on the host (``--DSSContainersExtension.launcher_url``), shares the host's
loopback with it and with the kernels' published ports (``--network host``), and sees the
notebooks folder at the same absolute path as the launcher and the kernel containers.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..imagecontract import (
    IMAGE_HOME,
    IMAGE_REPO_PREFIX,
    IMAGE_USER,
    LABEL_CONTENT_HASH,
    LABEL_PREFIX,
)
from .wheels import sha256_of

#: bump when a change of the build changes the image in a way the hashed recipe does not show
SERVER_BUILDER_VERSION = "1"
SERVER_REPO = IMAGE_REPO_PREFIX + "server"
#: the server's own virtual environment, apart from the kernel's (/opt/dss/venv), so that
#: JupyterLab's dependencies never move the kernel's pinned ipykernel
SERVER_VENV = "/opt/dss/server"
#: installed next to this package: the JupyterLab the image serves (pinned, as the kernel is)
SERVER_PINS = {"jupyterlab": "4.6.6"}
LABEL_SERVER = LABEL_PREFIX + "server-image"
LABEL_BASE_REF = LABEL_PREFIX + "base-ref"
#: the entry point reads the launcher's shared secret from this file (kept out of
#: ``docker inspect``, unlike an environment variable) when the variable names one
SECRET_FILE_ENV = "DSS_CONTAINERS_LAUNCHER_SECRET_FILE"
SECRET_MOUNT = "/run/secrets/dss-launcher"
ENTRYPOINT_PATH = "/usr/local/bin/dss-server-entrypoint"

ENTRYPOINT = f"""#!/bin/sh
# The Jupyter server in a container: the launcher's secret from a file, a home any uid can
# write (the container may run as the host user's uid), the user name the launcher maps.
set -eu
if [ -n "${{{SECRET_FILE_ENV}:-}}" ]; then
  DSS_CONTAINERS_LAUNCHER_SECRET="$(cat "${SECRET_FILE_ENV}")"
  export DSS_CONTAINERS_LAUNCHER_SECRET
fi
if [ ! -w "${{HOME:-/nonexistent}}" ]; then
  HOME="/tmp/home-$(id -u)"
  mkdir -p "$HOME"
  export HOME
fi
if [ -z "${{USER:-}}" ]; then
  USER="$(id -un 2>/dev/null || echo jovyan)"
  export USER
fi
exec "$@"
"""

DEFAULT_CMD = ("jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1")


@dataclass(frozen=True)
class ServerRecipe:
    """What the server image is made of.

    ``base_ref``: the base image's content tag; ``requirements``: what pip installs before
    this package (its dependencies and the pins); ``dependency_wheels``: the file names of
    the wheelhouse they come from; ``package_wheel``: this package's wheel file name and
    ``package_digest`` a digest of its contents (not of the zip, whose times vary).
    """

    base_ref: str
    requirements: tuple[str, ...]
    dependency_wheels: tuple[str, ...]
    package_wheel: str
    package_digest: str

    def content(self) -> dict[str, object]:
        return {
            "builder": SERVER_BUILDER_VERSION,
            "base": self.base_ref,
            "wheels": sorted(self.dependency_wheels),
            "package": [self.package_wheel, self.package_digest],
            "recipe": self.dockerfile(labels=False),
            "entrypoint": ENTRYPOINT,
        }

    def content_hash(self) -> str:
        return sha256_of(self.content())

    @property
    def tag(self) -> str:
        return f"{SERVER_REPO}:{self.content_hash()[:12]}"

    def labels(self) -> dict[str, str]:
        return {
            LABEL_SERVER: "true",
            LABEL_CONTENT_HASH: self.content_hash(),
            LABEL_BASE_REF: self.base_ref,
        }

    def dockerfile(self, labels: bool = True) -> str:
        """Two install layers: the dependencies (cached while they stay the same), then this
        package alone, so a change of the package reinstalls only itself. Offline: every
        wheel is in the build context."""
        pip = f"{SERVER_VENV}/bin/pip install -q --no-cache-dir --disable-pip-version-check"
        packages = " ".join(shlex.quote(r) for r in self.requirements)
        lines = [
            f"FROM {self.base_ref}",
            "USER root",
            "COPY deps/ /tmp/dss-server-deps/",
            f"RUN set -eu; python3 -m venv {SERVER_VENV}; "
            f"{pip} --no-index --find-links /tmp/dss-server-deps {packages}; "
            "rm -rf /tmp/dss-server-deps",
            "COPY package/ /tmp/dss-server-package/",
            f"RUN set -eu; {pip} --no-index --no-deps /tmp/dss-server-package/*.whl; "
            f"{SERVER_VENV}/bin/pip check; rm -rf /tmp/dss-server-package",
            f"COPY entrypoint.sh {ENTRYPOINT_PATH}",
            f"RUN chmod 0755 {ENTRYPOINT_PATH}",
            f"ENV PATH={SERVER_VENV}/bin:/usr/local/bin:/usr/bin:/bin JUPYTER_PLATFORM_DIRS=1",
        ]
        if labels:
            lines.append("LABEL " + " ".join(f'{k}="{v}"' for k, v in self.labels().items()))
        lines += [
            f"WORKDIR {IMAGE_HOME}",
            f"USER {IMAGE_USER}",
            f'ENTRYPOINT ["tini", "--", "{ENTRYPOINT_PATH}"]',
            "CMD [" + ", ".join(f'"{a}"' for a in DEFAULT_CMD) + "]",
        ]
        return "\n".join(lines) + "\n"


def friendly_server_tag() -> str:
    """The moving tag of the last server image built."""
    return f"{SERVER_REPO}:latest"


def wheel_requirements(metadata: str) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA that no extra asks for."""
    found = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.partition(":")[2].strip()
        if "extra ==" not in requirement.replace("extra==", "extra =="):
            found.append(requirement)
    return found


def server_requirements(metadata: str) -> tuple[str, ...]:
    """What pip installs before this package: its own dependencies, then the pins."""
    pins = [f"{name}=={version}" for name, version in SERVER_PINS.items()]
    return (*wheel_requirements(metadata), *pins)


def docker_run_command(
    image: str,
    *,
    notebooks: str,
    launcher_url: str,
    secret_file: str,
    user: str,
    uid_gid: str,
    port: int = 8888,
    name: str = "jupyter",
) -> list[str]:
    """The one ``docker run`` line of the server container.

    - ``--network host``: the server, the launcher (``launcher_url`` on 127.0.0.1) and the
      kernels' ports (published on the host's 127.0.0.1) share one loopback; the server
      itself listens on 127.0.0.1 only. Any local user can connect to a kernel's ports, so
      CurveZMQ is required (``transport_encryption``): none reads a kernel's iopub.
    - ``-v notebooks:notebooks``: the same absolute path as on the host, where the launcher
      scopes the user's workspace and mounts it into the kernel containers, so a notebook's
      folder means the same in all three (no translation).
    - ``--hostname``: its own (the host network would lend it the host's), which its
      kernels' labels carry: the start-up reaper of a server removes the orphans of an
      earlier server of that name only, never the kernels of a server of the same user on
      the host or in another container (whose processes it cannot see).
    - no daemon socket, all capabilities dropped, no new privileges; the host user's
      ``uid:gid`` and name (the launcher maps the name to that OS user); the launcher's
      secret as a read-only file; the server's token from ``$JUPYTER_TOKEN`` of the caller.
    """
    return [
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        "host",
        "--user",
        uid_gid,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        f"USER={user}",
        "-e",
        "JUPYTER_TOKEN",
        "-e",
        f"{SECRET_FILE_ENV}={SECRET_MOUNT}",
        "-v",
        f"{secret_file}:{SECRET_MOUNT}:ro",
        "-v",
        f"{notebooks}:{notebooks}",
        image,
        *DEFAULT_CMD,
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={notebooks}",
        f"--DSSContainersExtension.launcher_url={launcher_url}",
        "--KernelManager.transport_encryption=required",
    ]
