"""The contents API rooted per user: each user of a multi-user server sees only their folder.

jupyter_server's file contents manager serves one tree, the server's root, to whoever asks,
and follows symlinks out of it. :class:`UserContentsManager` is the stock (async, large
file) manager whose ``root_dir`` is, for a request of a multi-user server, that user's own
root (:func:`..workspace.user_root`, from the config file's ``defaults.user_root``), with
its checkpoints beside the user's files and a path whose symlinks lead out of that root
refused like a missing file. For the server's own calls and under the stock single-user
identity providers it is the stock manager, unchanged. ``/files/`` (a static file handler
bound to the server root) gets the same treatment in :class:`UserFilesHandler`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any

from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.services.contents.filecheckpoints import AsyncFileCheckpoints
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado.web import HTTPError
from traitlets import Bool, Unicode, default

from ..workspace import DEFAULT_USER_ROOT, is_inside, user_root
from .identity import request_username

#: the folder mode a user root gets when it is created
ROOT_MODE = 0o700


class OutsideRoot(HTTPError, OSError):
    """A path that leads out of the user's root: 404 with the text of a missing file.

    An ``OSError`` too (``ELOOP``), so a directory listing skips such an entry silently, as
    it skips a symlink loop, instead of failing the whole listing.
    """

    def __init__(self, path: str):
        HTTPError.__init__(self, 404, f"No such file or directory: {path}")
        self.errno = errno.ELOOP

    def __str__(self) -> str:
        return HTTPError.__str__(self)


class _PerUserRoot(Unicode):
    """``root_dir``: the configured root for the server's own calls and single-user servers,
    the requesting user's root for a request of a multi-user server."""

    def get(self, obj: Any, cls: Any = None) -> str:
        configured = super().get(obj, cls)
        user = request_username()
        return configured if user is None else obj.root_of(user)

    def configured(self, obj: Any) -> str:
        return super().get(obj, type(obj))


class _PerUserFlag(Bool):
    """A flag that is False for a request of a multi-user server (e.g. moving a user's
    deleted files into the server user's shared trash)."""

    def get(self, obj: Any, cls: Any = None) -> bool:
        return False if request_username() is not None else super().get(obj, cls)


class UserCheckpoints(AsyncFileCheckpoints):
    """Checkpoints kept in ``.ipynb_checkpoints`` beside the user's own files."""

    root_dir = _PerUserRoot(config=True, help="The root the checkpoints of the server live in.")

    @default("root_dir")
    def _default_checkpoint_root(self) -> str:
        parent = self.parent
        return parent.server_root if isinstance(parent, UserContentsManager) else os.getcwd()

    def root_of(self, user: str) -> str:
        return self.parent.root_of(user)

    def _get_os_path(self, path: str) -> str:
        return _os_path(self, super()._get_os_path, path)


class UserContentsManager(AsyncLargeFileManager):
    """The stock contents manager, rooted at the requesting user's own folder."""

    root_dir = _PerUserRoot(
        config=True,
        help="The server's root; a multi-user server serves each user their own folder "
        "(user_root_template) instead.",
    )
    delete_to_trash = _PerUserFlag(
        True,
        config=True,
        help="Move deleted files to the OS trash instead of removing them (never on a "
        "multi-user server: the trash is the server user's, shared by all).",
    )
    user_root_template = Unicode(
        DEFAULT_USER_ROOT,
        help="Each user's root: ${root_dir} is the server's root, ${user} the user's folder "
        "name. The extension sets it from the config file's defaults.user_root.",
    )

    @default("root_dir")
    def _server_root(self) -> str:  # the stock default, which a redefined trait does not keep
        return os.getcwd() if not self.parent else self.parent.root_dir

    @default("checkpoints_class")
    def _user_checkpoints_class(self) -> type:
        return UserCheckpoints

    @default("files_handler_class")
    def _user_files_handler_class(self) -> type:
        return UserFilesHandler

    @property
    def server_root(self) -> str:
        """The configured root, whoever is asking."""
        return type(self).root_dir.configured(self)

    def root_of(self, user: str) -> str:
        """``user``'s root folder (created by :meth:`ensure_root`)."""
        return str(user_root(user, self.server_root, self.user_root_template))

    def ensure_root(self, user: str) -> str:
        """Create ``user``'s root (mode 0700) if it is missing; blocking: run it in a thread."""
        root = self.root_of(user)
        if not os.path.isdir(root):
            os.makedirs(os.path.dirname(root), exist_ok=True)
            with contextlib.suppress(FileExistsError):  # made meanwhile by another request
                os.mkdir(root, ROOT_MODE)
            self.log.info("dss-containers: created the root folder of user %r: %s", user, root)
        return root

    def _get_os_path(self, path: str) -> str:
        return _os_path(self, super()._get_os_path, path)


def _os_path(manager: Any, get_os_path: Any, path: str) -> str:
    """``get_os_path(path)`` unless, on a multi-user request, it leads out of the user's
    root (``..``, or symlinks): then 404 with the text of a missing file."""
    if request_username() is None:
        return get_os_path(path)
    try:
        os_path = get_os_path(path)
    except HTTPError as exc:
        if exc.status_code == 404:  # "... is outside root contents directory"
            raise OutsideRoot(path) from None
        raise
    if not is_inside(os_path, manager.root_dir):
        raise OutsideRoot(path)
    return os_path


class UserFilesHandler(AuthenticatedFileHandler):
    """``/files/<path>`` from the requesting user's root on a multi-user server."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if request_username() is not None:
            self.root = self.contents_manager.root_dir

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if request_username() is None:
            return super().get_absolute_path(root, path)
        try:  # tornado refuses a path out of the root with a 403: here it is a missing file
            return super().get_absolute_path(root, path)
        except HTTPError as exc:
            raise HTTPError(404) if exc.status_code == 403 else exc from None

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if request_username() is None:
            return super().validate_absolute_path(root, absolute_path)
        try:  # a path out of the root is refused like a missing file, not with a 403
            path = super().validate_absolute_path(root, absolute_path)
        except HTTPError as exc:
            raise HTTPError(404) if exc.status_code == 403 else exc from None
        if path is not None and not is_inside(path, root):
            raise HTTPError(404)
        return path
