"""``python -m jupyter_dss_containers.launcherd``: the launcher (as ``jupyter dss-containers
launcher``), for a hub's service command that names an interpreter."""

from .app import LauncherApp

LauncherApp.launch_instance()
