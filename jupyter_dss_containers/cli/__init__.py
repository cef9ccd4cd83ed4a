"""``jupyter dss-containers``: inspect configs, build images, install kernel specs, clean up.

Each subcommand is a small traitlets application, so its options can also be set in
``jupyter_dss_containers_config.py`` like any Jupyter application's.

- :mod:`.base`: :class:`DSSCommand`, what every subcommand shares;
- :mod:`.configs`: ``configs``, ``validate``, ``doctor``;
- :mod:`.images`: ``build-base-image``, ``build-env``, ``images``, ``copy-image`` (the
  console progress of builds is :mod:`jupyter_dss_containers.cli_progress`);
- :mod:`.kernelspecs`: ``kernelspecs install|list``;
- :mod:`.workloads`: ``jobs``, ``logs``, ``cancel``, ``cleanup``;
- :mod:`.rbac`: ``rbac`` (the minimal Role of a server pod, for ``kubectl apply``);
- :mod:`.prepull`: ``prepull`` (images onto every node or daemon ahead of time);
- :mod:`.services`: ``services``, ``deploy``, ``undeploy`` (model services);
- :mod:`.app`: :class:`DSSContainersApp` and :func:`main` (the console entry point).

The names of the former ``cli`` module stay importable from here.
"""

from __future__ import annotations

from .app import DSSContainersApp, main
from .base import COMMON_ALIASES, JSON_FLAG, CommandError, DSSCommand, console, errors
from .configs import ConfigsCommand, DoctorCommand, ValidateCommand
from .images import (
    MIRROR_REASONS,
    BuildBaseImageCommand,
    BuildEnvCommand,
    CopyImageCommand,
    ImagesCommand,
)
from .kernelspecs import KernelspecsCommand, KernelspecsInstallCommand, KernelspecsListCommand
from .prepull import PrepullCommand
from .workloads import CancelCommand, CleanupCommand, JobsCommand, LogsCommand

__all__ = [
    "COMMON_ALIASES",
    "JSON_FLAG",
    "MIRROR_REASONS",
    "BuildBaseImageCommand",
    "BuildEnvCommand",
    "CancelCommand",
    "CleanupCommand",
    "CommandError",
    "ConfigsCommand",
    "CopyImageCommand",
    "DSSCommand",
    "DSSContainersApp",
    "DoctorCommand",
    "ImagesCommand",
    "JobsCommand",
    "KernelspecsCommand",
    "KernelspecsInstallCommand",
    "KernelspecsListCommand",
    "LogsCommand",
    "PrepullCommand",
    "ValidateCommand",
    "console",
    "errors",
    "main",
]
