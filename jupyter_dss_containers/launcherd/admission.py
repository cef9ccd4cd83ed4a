"""Admission: one start at a time is checked against the budgets, and may wait its turn.

A budget with ``on_exceed: queue`` holds a start over it until the user's (or the
group's) other workloads leave room: the launcher wakes the queue when it removes or
stops a workload, and looks again every ``poll`` seconds for those that ended by
themselves (a job that finished, a kernel that died). A user's queued starts are admitted
in the order they came; a start that waited ``timeout`` seconds, or whose caller went
away, is refused naming the budget. A start that could never fit (it alone asks more
than the budget) is refused at once, queue or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..budgets import BudgetExceeded, Budgets, Demand, Holding, check_budget, demand_labels

#: every live workload on every daemon of the file, with what it holds
Census = Callable[[], Awaitable[list[Holding]]]


class QueueAbandoned(BudgetExceeded):
    """The caller of a queued start went away: nothing is started."""


@dataclass
class Admission:
    """The starts in flight (counted as held) and the starts waiting for room."""

    #: seconds a start over a queueing budget waits before it is refused (0: never waits)
    timeout: float = 300.0
    #: seconds between two looks at what ended by itself
    poll: float = 2.0
    _lock: asyncio.Lock | None = None
    _freed: asyncio.Event | None = None
    _reserved: list[Holding] = field(default_factory=list)
    _waiting: dict[str, list[int]] = field(default_factory=dict)
    #: the tickets that found no room at least once (a start being checked is not queued)
    _held_back: set[int] = field(default_factory=set)
    _tickets: itertools.count = field(default_factory=itertools.count)

    def freed(self) -> None:
        """Something of some user ended: every waiting start looks again now."""
        if self._freed is not None:
            self._freed.set()
            self._freed = asyncio.Event()

    def release(self, reservation: Holding) -> None:
        """The start is done (its workload now carries the labels) or failed."""
        if reservation in self._reserved:
            self._reserved.remove(reservation)
            self.freed()  # a failed start gives its room back

    def queued(self, owner: str | None = None) -> int:
        """How many starts wait (of ``owner``, or of everyone)."""
        lines = [self._waiting.get(owner, [])] if owner is not None else self._waiting.values()
        return sum(1 for line in lines for t in line if t in self._held_back)

    async def admit(
        self,
        budgets: Budgets,
        owner: str,
        groups: frozenset[str],
        demand: Demand,
        name: str,
        config_name: str,
        census: Census,
        gone: Callable[[], bool] | None = None,
    ) -> Holding:
        """Hold a place for this start once it fits the budgets (its labels are the demand
        labels the workload will carry); :class:`BudgetExceeded` when it does not, at once
        or after the queue's timeout. Call :meth:`release` when the start is over."""
        if self._lock is None:
            self._lock, self._freed = asyncio.Lock(), asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ticket = next(self._tickets)
        line = self._waiting.setdefault(owner, [])
        line.append(ticket)
        why = f"an earlier start of {owner} waits in the queue"
        try:
            while True:
                assert self._freed is not None
                wake = self._freed
                if gone is not None and gone():  # before trying: nobody would get it
                    raise QueueAbandoned(f"the caller went away while queued: {why}")
                if line[0] == ticket:
                    async with self._lock:
                        try:
                            return await self._try(
                                budgets, owner, groups, demand, name, config_name, census
                            )
                        except BudgetExceeded as exc:
                            if not exc.queue or self.timeout <= 0:
                                raise
                            why = str(exc)
                left = deadline - loop.time()
                if left <= 0:
                    raise BudgetExceeded(
                        f"waited {self.timeout:g} s in the queue and the start still does "
                        f"not fit: {why}"
                    )
                self._held_back.add(ticket)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(left, self.poll))
        finally:
            line.remove(ticket)
            self._held_back.discard(ticket)
            if not line:
                self._waiting.pop(owner, None)
            self.freed()  # the next start of this user in line may go now

    async def _try(
        self,
        budgets: Budgets,
        owner: str,
        groups: frozenset[str],
        demand: Demand,
        name: str,
        config_name: str,
        census: Census,
    ) -> Holding:
        charged: list[str] = []
        if budgets.users or budgets.groups or not budgets.default.empty:
            live = await census() + self._reserved
            charged = check_budget(budgets, owner, groups, demand, live)
        labels = demand_labels(demand, charged)
        reservation = Holding(name, demand.kind, config_name, owner, demand, labels)
        self._reserved.append(reservation)
        return reservation
