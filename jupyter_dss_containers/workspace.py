"""Where a user's files live on a multi-user server: their root folder, from a template.

Under an identity provider that names several users, each user's contents API (and, with
the workspace issue, their containers' mount) is rooted at one folder of their own, given
by the config file's ``defaults.user_root`` template (default ``${root_dir}/${user}``).
This module is the resolver and its helpers only: nothing here creates a file, and only
:func:`is_inside` looks at the file system (to resolve symlinks).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DEFAULT_USER_ROOT = "${root_dir}/${user}"
USER = "${user}"
ROOT_DIR = "${root_dir}"
#: characters a user name keeps in its folder name; every other one is escaped
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
#: a folder name longer than this is shortened (with a hash of the whole name)
_MAX_NAME = 96


def folder_name(username: str) -> str:
    """The user name as one safe folder name, different for different user names.

    Lower-case letters, digits and ``_`` stay; every other character becomes ``-`` and
    the hex of its UTF-8 bytes (``Alice`` -> ``-41lice``, ``a.b`` -> ``a-2eb``), so two
    names never share a folder (unlike :func:`..config.expand_user`, which folds case for
    object names), and no name gives ``..``, ``/``, a NUL or a dotfile.
    """
    if not username:
        raise ValueError("a user root needs a user name")
    out = "".join(
        ch if ch in _KEPT else "".join(f"-{b:02x}" for b in ch.encode("utf-8")) for ch in username
    )
    if len(out) > _MAX_NAME:
        digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:20]
        out = f"{out[: _MAX_NAME - 21]}-{digest}"
    return out


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a user root template, or None when it can."""
    if USER not in template:
        return f"expected a path template containing {USER} (else all users share one folder)"
    rest = template.replace(USER, "").replace(ROOT_DIR, "")
    if "$" in rest:
        return f"expected only the placeholders {ROOT_DIR} and {USER}"
    if not (template.startswith(ROOT_DIR) or template.startswith("/")):
        return f"expected an absolute path or one starting with {ROOT_DIR}"
    if ".." in Path(template).parts or "\0" in template:
        return "expected a path without '..' or NUL"
    return None


def user_root(username: str, server_root: str | os.PathLike[str], template: str) -> Path:
    """The absolute folder that is ``username``'s root: ``template`` with ``${root_dir}``
    (the Jupyter server's root) and ``${user}`` (:func:`folder_name`) filled in."""
    problem = template_problem(template)
    if problem:
        raise ValueError(f"user root template {template!r}: {problem}")
    path = template.replace(ROOT_DIR, os.path.abspath(server_root)).replace(
        USER, folder_name(username)
    )
    return Path(os.path.normpath(path))


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path``, symlinks resolved, is ``root`` or below it (``root`` resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
