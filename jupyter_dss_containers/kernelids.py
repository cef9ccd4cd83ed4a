"""Kernel ids: only jupyter_server's shape (a UUID) ever names a container or a file."""

from __future__ import annotations

import re
from typing import Any

from .errors import ReportedError


class KernelIdRefused(ReportedError, ValueError):
    """A kernel id that is not of jupyter_server's shape (a UUID): nothing was started."""

    status = 400


#: jupyter_server's kernel ids: what its routes accept (``\w+-\w+-\w+-\w+-\w+``) and
#: ``uuid4()`` makes, in the hex digits a UUID has
_KERNEL_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_kernel_id(kernel_id: Any) -> None:
    """Refuse (400) a kernel id that is not a UUID, before it names a file or container."""
    if isinstance(kernel_id, str) and _KERNEL_ID.fullmatch(kernel_id):
        return
    shown = (
        repr(kernel_id[:40]) + ("..." if len(kernel_id) > 40 else "")
        if isinstance(kernel_id, str)
        else type(kernel_id).__name__
    )
    raise KernelIdRefused(
        f"kernel id {shown} is not a UUID (the kernel id shape of jupyter_server): "
        "nothing was started"
    )
