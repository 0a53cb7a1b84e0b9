"""asyncio.gather that starts its awaitables lazily: at most `width` of them running at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Window(Generic[T]):
    def __init__(
        self,
        awaitables: Iterable[Awaitable[T]],
        width: int,
        started: Callable[[asyncio.Future[T]], None],
    ) -> None:
        self._pending = iter(awaitables)
        self._started = started
        self._results: list[Any] = []
        self._running = 0
        self.future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        while self._running < width and self._start():
            pass
        if self._running == 0:
            self.future.set_result(self._results)

    def _start(self) -> bool:
        awaitable = next(self._pending, None)
        if awaitable is None:
            return False
        index = len(self._results)
        self._results.append(None)
        task = asyncio.ensure_future(awaitable)
        self._running += 1
        if task is not awaitable:  # a future passed in is its owner's to keep track of
            self._started(task)
        task.add_done_callback(lambda done: self._ended(index, done))
        return True

    def _ended(self, index: int, task: asyncio.Future[T]) -> None:
        self._running -= 1
        error = None if task.cancelled() else task.exception()  # retrieved: never "exception was never retrieved"
        if self.future.done():
            return
        if task.cancelled():
            self.future.cancel()
        elif error is not None:
            self.future.set_exception(error)
        else:
            self._results[index] = task.result()
            if not self._start() and self._running == 0:
                self.future.set_result(self._results)


def gather(
    awaitables: Iterable[Awaitable[T]],
    width: int,
    started: Callable[[asyncio.Future[T]], None] = lambda task: None,
) -> asyncio.Future[list[T]]:
    """The results of `awaitables` in order, as asyncio.gather, but each is taken from the iterable and started (a
    coroutine as a task; a future as it is) only when fewer than `width` run; `started` sees each task made of a
    coroutine. The first failure (or cancellation) ends the gathering: nothing more starts, and tasks still running
    are left to the caller (see `started`)."""
    return _Window(awaitables, width, started).future
