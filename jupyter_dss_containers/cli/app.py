"""``jupyter dss-containers``: the application that names every subcommand."""

from __future__ import annotations

import sys

from .base import DSSCommand
from .configs import ConfigsCommand, DoctorCommand, ValidateCommand
from .images import BuildBaseImageCommand, BuildEnvCommand, CopyImageCommand, ImagesCommand
from .kernelspecs import KernelspecsCommand
from .prepull import PrepullCommand
from .services import DeployCommand, ServicesCommand, UndeployCommand
from .workloads import CancelCommand, CleanupCommand, JobsCommand, LogsCommand


class DSSContainersApp(DSSCommand):
    name = "jupyter-dss-containers"
    description = "Run Jupyter kernels and jobs in containers from named execution configurations."
    subcommands = {
        "configs": (ConfigsCommand, ConfigsCommand.description),
        "jobs": (JobsCommand, JobsCommand.description),
        "logs": (LogsCommand, LogsCommand.description),
        "cancel": (CancelCommand, CancelCommand.description),
        "validate": (ValidateCommand, ValidateCommand.description),
        "doctor": (DoctorCommand, DoctorCommand.description),
        "build-base-image": (BuildBaseImageCommand, BuildBaseImageCommand.description),
        "build-env": (BuildEnvCommand, BuildEnvCommand.description),
        "build-server-image": (
            "jupyter_dss_containers.cli_server_image.BuildServerImageCommand",
            "Build the Jupyter server image (JupyterLab with this extension), offline.",
        ),
        "images": (ImagesCommand, ImagesCommand.description),
        "kernelspecs": (KernelspecsCommand, KernelspecsCommand.description),
        "cleanup": (CleanupCommand, CleanupCommand.description),
        "services": (ServicesCommand, ServicesCommand.description),
        "deploy": (DeployCommand, DeployCommand.description),
        "undeploy": (UndeployCommand, UndeployCommand.description),
        "copy-image": (CopyImageCommand, CopyImageCommand.description),
        "rbac": (
            "jupyter_dss_containers.cli.rbac.RbacCommand",
            "Print the minimal ServiceAccount, Role and RoleBinding for a server pod.",
        ),
        "prepull": (PrepullCommand, PrepullCommand.description),
        "launcher": (
            "jupyter_dss_containers.launcherd.app.LauncherApp",
            "Run the trusted launcher (a JupyterHub service, or alone with a shared secret).",
        ),
    }

    def run(self) -> None:
        self.print_subcommands()
        self.exit(2)


def main(argv: list[str] | None = None) -> None:
    DSSContainersApp.launch_instance(argv if argv is not None else sys.argv[1:])
