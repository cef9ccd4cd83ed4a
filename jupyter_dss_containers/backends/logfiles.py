"""Files carried in a workload's log, for backends that cannot copy them out of a stopped one.

A finished pod's filesystem is out of reach (``exec`` needs a running container, and the
pod's ``terminationMessagePath`` holds 4 KiB), so on Kubernetes the job runner writes its
result files to stdout at the end, framed by a line carrying a random token the backend
gave the workload (in a private file next to its other ones, which
``DSS_FILES_TO_LOG_FILE`` names; the Secret carries it as an annotation). Output the job
prints cannot end or start a frame by accident, and each file carries its size and
SHA-256, so a damaged copy (a log cut by the kubelet's rotation, a stray line from a
thread) is reported. The files are a job's result document (JSON) and its opaque values
(``jobs/results.py``): nothing framed is ever unpickled by the process that reads the log.
A frame over ``LogFiles.limit`` bytes is not kept (it is reported as too big), so a job
cannot fill the reader's memory through it.

The frame (the runner, which imports nothing from this package, writes the same, for a
Python job's result and, in its ``--frame`` mode after ``Rscript``, for an R job's files)::

    <<dss-files:TOKEN>>
    # SIZE SHA256 URL-QUOTED-PATH
    base64 lines
    ...
    <<dss-files-end:TOKEN>>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse

#: the environment variable naming the private file that holds the frame's token: the
#: token itself is in no environment, label or pod spec (it travels with the job's files)
TOKEN_FILE_ENV = "DSS_FILES_TO_LOG_FILE"
#: the token file's name, next to the workload's other private files
TOKEN_FILE = ".dss-files-token"
#: the largest frame kept (base64 text), by default
FRAME_LIMIT = 1024 * 1024 * 1024


class DamagedFiles(ValueError):
    """The frame is incomplete or a file in it does not match its size or checksum."""


class LogFiles:
    """Splits a log, fed in chunks, into the text the workload printed and its framed files."""

    def __init__(self, token: str, limit: int = FRAME_LIMIT):
        self.begin = f"<<dss-files:{token}>>"
        self.end = f"<<dss-files-end:{token}>>"
        self.limit = limit
        self.started = False
        self.complete = False
        self.too_big = False
        self._size = 0
        self._pending = ""  # printed text held back: it may be the start of the frame
        self._partial = ""  # an unfinished line inside the frame
        self._lines: list[str] = []

    def feed(self, text: str) -> str:
        """Take the next chunk of the log; return the printed text it completes."""
        shown: list[str] = []
        buf = self._pending + text
        self._pending = ""
        while buf:
            if self.started and not self.complete:
                lines = (self._partial + buf).split("\n")
                self._partial, buf = lines.pop(), ""
                if len(self._partial) > self.limit:  # one endless line: not a frame's
                    self._partial, self.too_big = "", True
                for i, line in enumerate(lines):
                    if line.strip() == self.end:
                        self.complete = True
                        buf = "\n".join([*lines[i + 1 :], self._partial])
                        self._partial = ""
                        break
                    self._size += len(line) + 1
                    if self._size > self.limit:
                        self.too_big, self._lines = True, []
                    if not self.too_big:
                        self._lines.append(line)
                continue
            at = buf.find(self.begin)
            if at >= 0 and not self.complete:
                shown.append(buf[:at])
                buf = buf[at + len(self.begin) :]
                self.started = True
                continue
            keep = next(
                (k for k in range(min(len(buf), len(self.begin) - 1), 0, -1)
                 if self.begin.startswith(buf[-k:])),
                0,
            )  # fmt: skip
            shown.append(buf[: len(buf) - keep])
            self._pending = buf[len(buf) - keep :]
            buf = ""
        return "".join(shown)

    def flush(self) -> str:
        """The printed text still held back, at the end of the log."""
        text, self._pending = self._pending, ""
        return text

    def files(self) -> dict[str, bytes]:
        """The framed files by their path in the workload; {} when the log had no frame."""
        if not self.started:
            return {}
        if self.too_big:
            raise DamagedFiles(f"the files frame in the log is over {self.limit} bytes")
        if not self.complete:
            raise DamagedFiles("the log ends inside the files frame (the log was cut short)")
        found: dict[str, bytes] = {}
        header: list[str] | None = None
        chunks: list[str] = []
        for line in [*self._lines, "# end"]:
            line = line.strip()
            if not line.startswith("#"):
                if line:
                    chunks.append(line)
                continue
            if header is not None:
                size, digest, path = header
                try:
                    data = base64.b64decode("".join(chunks), validate=True)
                except binascii.Error:
                    data = b""
                if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
                    raise DamagedFiles(f"the copy of {path} in the log is damaged")
                found[path] = data
            header, chunks = None, []
            parts = line[1:].split()
            if len(parts) == 3:
                header = [parts[0], parts[1], urllib.parse.unquote(parts[2])]
        return found


def frame(token: str, files: dict[str, bytes]) -> bytes:
    """The frame for ``files`` (the runner has its own copy of this; tests use this one)."""
    out = [f"<<dss-files:{token}>>\n".encode()]
    for path, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        out.append(f"# {len(data)} {digest} {urllib.parse.quote(path)}\n".encode())
        out.append(base64.encodebytes(data))
    out.append(f"<<dss-files-end:{token}>>\n".encode())
    return b"".join(out)


def under(files: dict[str, bytes], path: str) -> dict[str, bytes]:
    """``path`` itself or the files under it, keyed relative to ``path``'s parent folder."""
    path = path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    return {
        name[len(parent) + 1 :]: data
        for name, data in files.items()
        if name == path or name.startswith(path + "/")
    }
