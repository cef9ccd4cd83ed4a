"""What a file parses to, kept while the file is unchanged.

Why: the config file is asked for on every kernel spec listing, kernel start and REST
call, and parsing plus schema validation cost milliseconds where a ``stat`` costs
microseconds. An entry is keyed by the path as named (so the parsed value keeps that
name) and stamped with the resolved path, device, inode, size and modification and change
times: an edit, an atomic replace or a symlink swap (a Kubernetes ConfigMap) is seen at
once. File times tick coarsely (a kernel tick, or seconds on some file systems), so two
edits of the same size can share a stamp: an entry whose file changed less than
:data:`SETTLE_NS` before it was read is confirmed by comparing the text on each use until
it has settled. A parse error is kept like a value and raised afresh (a copy) each time.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

#: a file changed this recently may change again within the same time stamp
SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Stamp:
    """What changes when a file's content may have changed."""

    real_path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def stamp_of(path: Path) -> Stamp:
    """The file's stamp (raises OSError when it cannot be stat'ed)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return Stamp(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Entry(Generic[T]):
    stamp: Stamp
    text: str
    value: T | None
    error: Exception | None
    settled: bool

    def result(self) -> T:
        if self.error is not None:
            raise copy.copy(self.error)  # a fresh exception: no traceback shared by threads
        return self.value  # type: ignore[return-value]


class ParsedFiles(Generic[T]):
    """``get(path)``: ``parse(read(path, name), name)``, parsed again only after a change.

    ``read`` and ``parse`` raise ``error`` for a file that cannot be used; an error from
    ``parse`` is kept (the same file gives the same error), one from ``read`` is not. The
    error type must survive :func:`copy.copy`. Thread-safe; at most ``size`` files kept.
    """

    def __init__(
        self,
        read: Callable[[Path, str], str],
        parse: Callable[[str, str], T],
        error: type[Exception],
        size: int = 32,
    ):
        self._read, self._parse, self._error, self._size = read, parse, error, size
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> T:
        name = str(path)
        try:
            stamp: Stamp | None = stamp_of(path)
        except OSError:
            stamp = None  # read() says why
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.stamp == stamp:
                self._entries.move_to_end(name)
                if entry.settled:
                    return entry.result()
        if stamp is None:
            self._forget(name)
            return self._parse(self._read(path, name), name)
        try:
            text = self._read(path, name)
        except self._error:
            self._forget(name)
            raise
        settled = time.time_ns() - stamp.mtime_ns > SETTLE_NS
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.stamp == stamp and entry.text == text:
                entry.settled = settled
                return entry.result()
        try:
            fresh = _Entry(stamp, text, self._parse(text, name), None, settled)
        except self._error as exc:
            fresh = _Entry(stamp, text, None, exc, settled)
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.stamp == stamp and entry.text == text:
                return entry.result()  # another thread parsed it meanwhile: one object
            self._entries[name] = fresh
            self._entries.move_to_end(name)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return fresh.result()

    def _forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
