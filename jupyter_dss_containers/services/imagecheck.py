"""Whether a service's image has the libraries its model was made with, asked before
anything of the service starts: one throw-away container (no network, read-only, no
capability) imports them and says their versions."""

from __future__ import annotations

import json
from typing import Any

from ..config import ExecutionConfig
from ..imagecontract import KERNEL_PYTHON
from . import spec
from .errors import ServiceError

#: run in a throw-away container: which of argv's modules import, at which version
_PROBE = (
    "import importlib, json, sys\n"
    "found = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        found[name] = getattr(importlib.import_module(name), '__version__', '')\n"
    "    except Exception:\n"
    "        found[name] = None\n"
    "print(json.dumps(found))\n"
)


def check_libraries(client: Any, config: ExecutionConfig, image: str, meta: dict[str, Any]) -> None:
    """Refuse (400) before anything starts when the image lacks a library the kernel's model
    was made with (``meta["libraries"]``, names checked, passed as arguments, not code)."""
    wanted = meta.get("libraries") or {}
    names = sorted(
        n for n in wanted if isinstance(n, str) and spec.NAME_RE.match(n.replace("_", "-"))
    )
    if not names:
        return
    out = client.containers.run(
        image,
        [KERNEL_PYTHON, "-c", _PROBE, *names],
        user=config.docker.user or spec.IMAGE_USER,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        remove=True,
        stdout=True,
        stderr=False,
    )
    found = json.loads(out.decode().strip().splitlines()[-1])
    missing = [n for n in names if found.get(n) is None]
    if missing:
        needs = ", ".join(f"{n} {wanted[n]}".strip() for n in missing)
        raise ServiceError(
            f"the image {image} of config {config.name!r} lacks {needs}, which the model "
            "needs: use a code env or an image that has it",
            400,
        )
