"""JupyterHub on one host, with the trusted launcher as a hub-managed service.

Users' servers run as their own OS users (LocalProcessSpawner, so the hub runs as root),
in no ``docker`` group and with no kubeconfig: kernels and ``%%container`` jobs start
through the launcher, the only process that holds the Docker socket and the config file.
``tests/test_hub.py`` runs this very file (adding only its ports, users and test admin).

Environment (all optional): DSS_HUB_PYTHON (the interpreter with jupyterhub and
jupyter-dss-containers), DSS_LAUNCHER_PORT (8790), DSS_CONTAINERS_CONFIG_FILE (the config
file only the launcher reads, mode 0600 root), DSS_LAUNCHER_NAME (dss-launcher).
"""

import os
import sys

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

python = os.environ.get("DSS_HUB_PYTHON", sys.executable)
launcher = os.environ.get("DSS_LAUNCHER_NAME", "dss-launcher")
launcher_port = int(os.environ.get("DSS_LAUNCHER_PORT", "8790"))
config_file = os.environ.get("DSS_CONTAINERS_CONFIG_FILE", "/etc/jupyter/dss_containers.yaml")

# Each user's server runs as that OS user: their uid owns their files and their processes,
# and nothing they run can read the launcher's config file or reach the Docker socket.
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [python, "-m", "jupyterhub.singleuser"]
# Kernel ports are published on 127.0.0.1, where every local user can connect: CurveZMQ
# encrypts the kernel's traffic, so no other user reads a kernel's outputs off its iopub port
c.Spawner.args = ["--KernelManager.transport_encryption=required"]
c.Spawner.environment = {
    # the extension's backend and config come from the launcher (RemoteBackend); the
    # server's own JUPYTERHUB_API_TOKEN is its credential there
    "DSS_CONTAINERS_LAUNCHER_URL": f"http://127.0.0.1:{launcher_port}/services/{launcher}/",
    "JUPYTER_PLATFORM_DIRS": "1",
}

# The launcher: started and stopped with the hub, as root (it holds the socket).
c.JupyterHub.services = [
    {
        "name": launcher,
        "url": f"http://127.0.0.1:{launcher_port}",
        "command": [python, "-m", "jupyter_dss_containers.launcherd", f"--config={config_file}"],
        "environment": {"JUPYTER_PLATFORM_DIRS": "1"},
    }
]

c.JupyterHub.load_roles = [
    # what the launcher's own token may read: users' groups (for the permission check and
    # the group budgets) and their servers (to stop kernels and jobs with the server)
    {
        "name": "dss-launcher",
        "scopes": ["read:users:groups", "read:servers"],
        "services": [launcher],
    },
    # tokens that may call the launcher: users' own and their servers'
    {"name": "user", "scopes": ["self", f"access:services!service={launcher}"]},
    {
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            f"access:services!service={launcher}",
        ],
    },
]
