"""The built-in facts of a configuration: where the file is looked for, the embedded
default used when there is none, and the limits of a Docker config that sets none."""

from __future__ import annotations

from typing import Any

CONFIG_ENV_VAR = "DSS_CONTAINERS_CONFIG"
CONFIG_FILE_NAME = "dss_containers.yaml"
EMBEDDED = "<embedded default>"
#: limits of a Docker config that sets none (``defaults.resources`` in the file overrides them):
#: without them one kernel's fork bomb or runaway allocation takes the host down
DEFAULT_MEMORY = 4 * 1024**3
DEFAULT_PIDS = 1024
TRANSPORTS = ("auto", "ipc", "tcp")

#: what the first notebook imports: the embedded base image ``default`` has these (pinned,
#: from wheels, no registry), so ``pd.read_csv`` and ``--in``/``--out`` of frames just work
DATA_SCIENCE_PACKAGES = (
    "numpy==2.4.6",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "pyarrow==26.0.1",
    "cloudpickle==3.1.3",
    "ipywidgets==8.1.9",
)

EMBEDDED_DEFAULT: dict[str, Any] = {
    "base_images": {
        "default": {"bootstrap": "debian", "python_packages": list(DATA_SCIENCE_PACKAGES)}
    },
    "execution_configs": {
        "local": {
            "backend": "docker",
            "image": "default",
            "description": "Local Docker daemon, base image 'default'",
            "permissions": {"groups": ["*"]},
        }
    },
}


def default_limits(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The limits a Docker config without its own gets: the file's, else the built-in ones."""
    return {"memory": DEFAULT_MEMORY, "pids": DEFAULT_PIDS, **(defaults or {})}
