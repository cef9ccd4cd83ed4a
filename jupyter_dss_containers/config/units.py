"""Sizes and names as a config writes them: ``512m``, ``2g``, ``${user}``."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)([iI]?)([bB]?)\s*$")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
#: the smallest memory or shm size a config may ask for: Docker's minimum
MIN_BYTES = 6 * 1024**2
#: the largest memory or shm size a config may ask for (1 PiB): more is a typo
MAX_BYTES = 1024**5
#: the two bounds in a config's own units, for messages
SIZE_RANGE = "at least 6m (Docker's minimum) and at most 1024Ti"


def parse_size(value: int | str) -> int:
    """Bytes from ``512m``, ``2g``, ``256Mi``, ``1GiB`` or an integer (binary units, as Docker)."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit, _, _ = match.groups()
    return int(float(number) * 1024 ** _POWERS[unit.lower()])


def format_size(n_bytes: int) -> str:
    """``268435456`` -> ``256 MiB``: how limits appear in messages."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n_bytes >= 1024**power and n_bytes % 1024 ** (power - 1) == 0:
            value = n_bytes / 1024**power
            return f"{value:g} {unit}"
    return f"{n_bytes} B"


def expand_user(value: str, user: str) -> str:
    """Replace ``${user}`` with a name safe in Docker and Kubernetes object names."""
    safe = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-") or "user"
    return value.replace("${user}", safe)


def size_in_range(value: int | str) -> bool:
    """Between :data:`MIN_BYTES` and :data:`MAX_BYTES` (:data:`SIZE_RANGE`)."""
    try:
        n_bytes = parse_size(value)
    except OverflowError:  # more digits than a float holds
        return False
    return MIN_BYTES <= n_bytes <= MAX_BYTES
