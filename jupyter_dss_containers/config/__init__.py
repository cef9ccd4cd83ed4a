"""Execution configurations: finding, loading and validating the config file.

The file is YAML, validated against ``schema/config.schema.json``; everything that reads
configurations (provisioner, kernel specs, CLI, server) goes through :func:`load_config`,
so every consumer sees the same validated objects and the same error messages.

- :mod:`.defaults`: where the file is looked for, the embedded default, built-in limits;
- :mod:`.errors`: :class:`ConfigError`, one line per problem;
- :mod:`.units`: sizes (``512m``) and ``${user}`` in names;
- :mod:`.model`: the frozen, typed objects every consumer reads;
- :mod:`.document`: a file's text as a YAML document, strictly;
- :mod:`.messages`: schema violations in words;
- :mod:`.checks`: what the schema cannot say (references between entries);
- :mod:`.parse`: :func:`parse_config`, a document validated and built into the model;
- :mod:`.load`: :func:`load_config`, finding and reading the file (cached per change).

The names of the former ``config`` module stay importable from here.
"""

from __future__ import annotations

from .defaults import (
    CONFIG_ENV_VAR,
    CONFIG_FILE_NAME,
    DATA_SCIENCE_PACKAGES,
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    EMBEDDED,
    EMBEDDED_DEFAULT,
    TRANSPORTS,
)
from .errors import ConfigError
from .load import find_config_path, load_config, read_document
from .model import (
    SHARED_PARTS,
    BaseImageSpec,
    CodeEnvSpec,
    ConfigFile,
    DockerHost,
    DockerSettings,
    ExecutionConfig,
    KubernetesSettings,
    Mount,
    Permission,
    TLSSettings,
    daemon_reach,
    per_host,
)
from .parse import config_schema, parse_config
from .units import expand_user, format_size, parse_size

__all__ = [
    "CONFIG_ENV_VAR",
    "CONFIG_FILE_NAME",
    "DATA_SCIENCE_PACKAGES",
    "DEFAULT_MEMORY",
    "DEFAULT_PIDS",
    "EMBEDDED",
    "EMBEDDED_DEFAULT",
    "SHARED_PARTS",
    "TRANSPORTS",
    "BaseImageSpec",
    "CodeEnvSpec",
    "ConfigError",
    "ConfigFile",
    "DockerHost",
    "DockerSettings",
    "ExecutionConfig",
    "KubernetesSettings",
    "Mount",
    "Permission",
    "TLSSettings",
    "config_schema",
    "daemon_reach",
    "expand_user",
    "find_config_path",
    "format_size",
    "load_config",
    "parse_config",
    "parse_size",
    "per_host",
    "read_document",
]
