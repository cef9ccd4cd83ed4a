"""Budgets no engine keeps: per-user and per-group limits summed over every daemon.

Docker limits one container, Kubernetes one namespace; neither can say "alice may use
1 GiB in all, whatever config she starts". The trusted launcher can: every workload it
starts carries labels with what it was granted (memory, CPUs, GPUs) and the groups it is
charged to, so the sum over a user's (or a group's) workloads is a listing away, on every
daemon and cluster of the file. This module is pure: parse the ``budgets:`` section, read
what a config asks for, add up the labels, and say yes or, naming what is used and by
what, no (or "wait": a budget with ``on_exceed: queue`` holds a start until it fits, in
the launcher's ``queue`` module).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from .config import ExecutionConfig, format_size, parse_size
from .errors import ReportedError
from .ownership import CONFIG, KIND, OWNER, PREFIX

MEMORY = PREFIX + "memory"
CPUS = PREFIX + "cpus"
GPUS = PREFIX + "gpus"
#: one label per group a workload is charged to: ``budget.<PREFIX><group>: charged``
GROUP_PREFIX = "budget." + PREFIX
#: kinds of workload counted as kernels (a warm-pool kernel is a kernel not yet handed out)
KERNEL_KINDS = ("kernel", "pool")
#: states in which a workload no longer holds its resources
DONE_STATES = frozenset({"exited", "dead", "removing", "succeeded", "failed"})


#: what a start over a budget does: wait for room (``queue``) or fail at once (``refuse``)
ON_EXCEED = ("refuse", "queue")


class BudgetExceeded(ReportedError):
    """A start would go over a user's or a group's budget. ``queue``: every budget it goes
    over says to wait, and it could fit once the user's other workloads end."""

    status = 429

    def __init__(self, message: str, queue: bool = False):
        super().__init__(message)
        self.queue = queue


@dataclass(frozen=True)
class Limits:
    """What one user (or one group, all members together) may hold at once; None = no limit."""

    memory: int | None = None
    cpus: float | None = None
    gpus: int | None = None
    kernels: int | None = None
    jobs: int | None = None
    #: ``queue`` or ``refuse`` (None: as the default budget says, else refuse)
    on_exceed: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        on_exceed = data.get("on_exceed")
        if on_exceed is not None and on_exceed not in ON_EXCEED:
            raise ValueError(f"on_exceed is one of {', '.join(ON_EXCEED)}, not {on_exceed!r}")
        return cls(
            memory=parse_size(data["memory"]) if "memory" in data else None,
            cpus=float(data["cpus"]) if "cpus" in data else None,
            gpus=data.get("gpus"),
            kernels=data.get("kernels"),
            jobs=data.get("jobs"),
            on_exceed=on_exceed,
        )

    @property
    def queues(self) -> bool:
        return self.on_exceed == "queue"

    def over(self, other: Limits) -> Limits:
        """These limits, with ``other``'s where these set none."""
        return Limits(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(other, f.name)
                for f in fields(self)
            }
        )

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "on_exceed")


@dataclass(frozen=True)
class Budgets:
    """The ``budgets:`` section: ``default`` (each user), ``users`` (per user, over the
    default, key by key) and ``groups`` (all members of a group together)."""

    default: Limits = field(default_factory=Limits)
    users: dict[str, Limits] = field(default_factory=dict)
    groups: dict[str, Limits] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budgets:
        data = data or {}
        return cls(
            default=Limits.from_dict(data.get("default", {})),
            users={u: Limits.from_dict(v) for u, v in data.get("users", {}).items()},
            groups={g: Limits.from_dict(v) for g, v in data.get("groups", {}).items()},
        )

    def for_user(self, username: str) -> Limits:
        return self.users.get(username, Limits()).over(self.default)

    def charged_groups(self, groups: Iterable[str]) -> list[str]:
        """The caller's groups that have a budget: a start is charged to each of them."""
        return sorted(g for g in groups if g in self.groups and not self.groups[g].empty)


@dataclass(frozen=True)
class Demand:
    """What one workload holds: None where the config sets no limit (it may take anything)."""

    memory: int | None
    cpus: float | None
    gpus: int | None
    kind: str


def demand_of(config: ExecutionConfig, kind: str) -> Demand:
    """The memory, CPUs and GPUs a workload of ``config`` is limited to."""
    if config.backend == "docker":
        d = config.docker
        gpus: int | None
        if d.gpus is None:
            gpus = 0
        elif isinstance(d.gpus, int):
            gpus = d.gpus
        elif isinstance(d.gpus, tuple):
            gpus = len(d.gpus)
        else:  # "all": as many as the host has, which the launcher cannot count
            gpus = None
        return Demand(d.memory, d.cpus, gpus, kind)
    resources = config.kubernetes.resources or {}
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    memory = limits.get("memory", requests.get("memory"))
    cpu = limits.get("cpu", requests.get("cpu"))
    gpu = limits.get("nvidia.com/gpu", requests.get("nvidia.com/gpu", 0))
    return Demand(
        parse_size(str(memory)) if memory is not None else None,
        _cpu_quantity(str(cpu)) if cpu is not None else None,
        int(gpu),
        kind,
    )


def _cpu_quantity(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def group_label(group: str) -> str:
    """The label key that charges a workload to ``group`` (valid on Kubernetes too)."""
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", group):
        return GROUP_PREFIX + group
    return GROUP_PREFIX + "g-" + hashlib.sha256(group.encode()).hexdigest()[:20]


def demand_labels(demand: Demand, charged: Iterable[str]) -> dict[str, str]:
    """The labels that record a workload's demand and the groups it is charged to."""
    labels = {group_label(g): "charged" for g in charged}
    if demand.memory is not None:
        labels[MEMORY] = str(demand.memory)
    if demand.cpus is not None:
        labels[CPUS] = f"{demand.cpus:g}"
    if demand.gpus is not None:
        labels[GPUS] = str(demand.gpus)
    return labels


@dataclass
class Holding:
    """One live workload as its labels tell it."""

    name: str
    kind: str
    config: str
    owner: str
    demand: Demand
    labels: dict[str, str]


def holdings(workloads: Iterable[Any]) -> list[Holding]:
    """Live workloads (``backends.base.Workload``) with what they hold, from their labels."""
    out = []
    for w in workloads:
        if str(w.state).lower() in DONE_STATES:
            continue
        labels = w.labels
        out.append(
            Holding(
                name=w.name,
                kind=labels.get(KIND, "?"),
                config=labels.get(CONFIG, "?"),
                owner=labels.get(OWNER, ""),
                demand=Demand(
                    _int(labels.get(MEMORY)),
                    _float(labels.get(CPUS)),
                    _int(labels.get(GPUS)),
                    labels.get(KIND, "?"),
                ),
                labels=labels,
            )
        )
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def check_budget(
    budgets: Budgets,
    username: str,
    groups: Iterable[str],
    demand: Demand,
    live: list[Holding],
) -> list[str]:
    """Refuse (:class:`BudgetExceeded`) a start that goes over the user's budget or one of
    their groups'; else return the groups the start is charged to. The refusal may wait
    (``queue``) only when every budget it goes over queues and none could never fit it."""
    charged = budgets.charged_groups(groups)
    scopes: list[tuple[str, Limits, list[Holding]]] = [
        (f"user {username}", budgets.for_user(username), [h for h in live if h.owner == username])
    ]
    for group in charged:
        key = group_label(group)
        scopes.append(
            (f"group {group}", budgets.groups[group], [h for h in live if key in h.labels])
        )
    problems: list[tuple[str, bool]] = []
    for who, limits, held in scopes:
        problem = _over(limits, demand, held)
        if problem:
            message, may_fit = problem
            problems.append((f"budget of {who} exceeded: {message}", may_fit and limits.queues))
    if problems:
        refused = [m for m, waits in problems if not waits]
        raise BudgetExceeded("; ".join(refused or [m for m, _ in problems]), queue=not refused)
    return charged


def _over(limits: Limits, demand: Demand, held: list[Holding]) -> tuple[str, bool] | None:
    """Why ``demand`` does not fit in ``limits`` next to ``held``, and whether it could
    once the workloads held end; None when it fits."""
    kind = "kernel" if demand.kind in KERNEL_KINDS else "job"
    count_limit = limits.kernels if kind == "kernel" else limits.jobs
    same_kind = [h for h in held if (h.kind in KERNEL_KINDS) == (kind == "kernel")]
    if count_limit is not None and len(same_kind) + 1 > count_limit:
        return (
            f"{len(same_kind)} of {count_limit} {kind}s running "
            f"({_list(same_kind, lambda h: '')}); this one would make {len(same_kind) + 1}",
            count_limit >= 1,
        )
    for resource, unit in (("memory", format_size), ("cpus", _cpus), ("gpus", _gpus)):
        limit = getattr(limits, resource)
        if limit is None:
            continue
        asked = getattr(demand, resource)
        if asked is None:
            return (
                f"{resource} is limited to {unit(limit)} but this config sets no {resource} "
                "limit, so its use cannot be counted: ask for a config with one",
                False,
            )
        used = sum(getattr(h.demand, resource) or 0 for h in held)
        if used + asked > limit:
            owner = _list(held, lambda h, r=resource, u=unit: f": {u(getattr(h.demand, r) or 0)}")
            return (
                f"{resource} {unit(used)} of {unit(limit)} in use "
                f"({owner or 'nothing running'}); this {demand.kind} asks {unit(asked)}",
                asked <= limit,
            )
    return None


def _list(held: list[Holding], detail: Any) -> str:
    return ", ".join(f"{h.kind} {h.name} on {h.config}{detail(h)}" for h in held)


def _cpus(n: float) -> str:
    return f"{n:g} CPU"


def _gpus(n: float) -> str:
    return f"{n:g} GPU"
