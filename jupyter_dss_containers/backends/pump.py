"""Blocking streams read in daemon threads and handed to the event loop as they come.

A followed log (Docker's or the Kubernetes API's) is a blocking iterator that may stay quiet
for hours. Each one is read in its own daemon thread, not the loop's default pool, whose
threads the interpreter joins at exit: a job still running would hold up the very process
that should cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

#: a producer runs in its thread and calls ``emit(item)`` for each item it reads
Producer = Callable[[Callable[[T], None]], None]

_DONE = object()


async def pumped(producers: dict[str, Producer[T]]) -> AsyncIterator[T]:
    """Yield what the producers emit until all have returned; re-raise the first error one
    raises (a producer that should end quietly on some errors catches them itself)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def post(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (process exit)
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run(producer: Producer[T]) -> None:
        try:
            producer(post)
        except BaseException as exc:
            post(_Failure(exc))
        finally:
            post(_DONE)

    for name, producer in producers.items():
        threading.Thread(target=run, args=(producer,), name=name, daemon=True).start()
    running = len(producers)
    while running:
        item = await queue.get()
        if item is _DONE:
            running -= 1
        elif isinstance(item, _Failure):
            raise item.error
        else:
            yield item  # type: ignore[misc]


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
