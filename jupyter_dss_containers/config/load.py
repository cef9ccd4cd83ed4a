"""Finding and reading the config file: ``--config``, the environment, the Jupyter config
path, else the embedded default; each file parsed again only once it changed."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_path

from ..filecache import ParsedFiles
from .defaults import CONFIG_ENV_VAR, CONFIG_FILE_NAME, EMBEDDED, EMBEDDED_DEFAULT
from .document import yaml_document
from .errors import ConfigError
from .model import ConfigFile
from .parse import parse_config


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config``, else ``$DSS_CONTAINERS_CONFIG``, else the Jupyter config path."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    for folder in jupyter_config_path():
        candidate = Path(folder) / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> ConfigFile:
    """Load, validate and build the config; the embedded default when no file is found.

    With a trusted launcher configured and no explicit path, the config is the launcher's
    (``GET /config``: only what the caller may use): such a server holds no config file.
    A file is parsed again only once it changed (see :mod:`jupyter_dss_containers.filecache`):
    while it does not, every caller gets the same object, which is therefore never to be
    modified.
    Blocking (a ``stat``, and a read after a change): callers on an event loop use a thread.
    """
    if path is None:
        from ..backends.remote import launcher_config

        remote = launcher_config()
        if remote is not None:
            return remote
    found = find_config_path(path)
    if found is None:
        return _embedded_default()
    return _parsed_files.get(found)


@cache
def _embedded_default() -> ConfigFile:
    return parse_config(EMBEDDED_DEFAULT, EMBEDDED)


def read_document(path: str | os.PathLike[str] | None = None) -> tuple[Any, str]:
    """The parsed YAML document and its source name; the embedded default when no file."""
    found = find_config_path(path)
    if found is None:
        return EMBEDDED_DEFAULT, EMBEDDED
    source = str(found)
    return yaml_document(_read_text(found, source), source)


def _read_text(found: Path, source: str) -> str:
    try:
        return found.read_text()
    except FileNotFoundError:
        raise ConfigError(source, [("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror}")]) from None


def _parse_text(text: str, source: str) -> ConfigFile:
    return parse_config(*yaml_document(text, source))


#: the config files read so far, each parsed again only once it changed
_parsed_files: ParsedFiles[ConfigFile] = ParsedFiles(_read_text, _parse_text, ConfigError)
