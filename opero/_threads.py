"""Every helper thread opero starts, written once.

- :func:`spawn`: a daemon thread running in a copy of the caller's context.
- :func:`call_with_timeout`: one sync attempt under a (soft) per-attempt timeout.
- :func:`run`: a coroutine from sync code, also inside a running loop. In Jupyter a loop
  is already running in the kernel's thread, so ``asyncio.run`` refuses; opero never
  patches that loop (no nest-asyncio): it runs the coroutine on a private loop in a helper
  thread and blocks the caller until it is done.
- :func:`iterate_async_in_thread`: an async iterator consumed from sync code (a private
  loop in a helper thread), and :func:`iterate_in_thread`: a blocking iterator consumed
  from async code without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Generic, Literal, TypeAlias, TypeVar

__all__ = ["call_with_timeout", "iterate_async_in_thread", "iterate_in_thread", "run", "spawn"]

T = TypeVar("T")

#: what a helper thread hands back: ``(True, value)`` or ``(False, the exception it raised)``
_Outcome: TypeAlias = tuple[Literal[True], T] | tuple[Literal[False], BaseException]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run(coro: Coroutine[object, object, T]) -> T:
    """Run ``coro`` to completion and return its result, also inside a running event loop.

    Without a running loop this is ``asyncio.run``. Inside one (a notebook cell), the
    coroutine runs on a fresh loop in a helper thread while the caller waits; the running
    loop is not patched. Exceptions propagate unchanged; Ctrl-C cancels the coroutine.

    Example:
        >>> import asyncio, opero
        >>> async def answer() -> int:
        ...     await asyncio.sleep(0)
        ...     return 42
        >>> opero.run(answer())
        42

    Args:
        coro: the coroutine to run.

    Returns:
        The coroutine's result.
    """
    if _running_loop() is None:
        return asyncio.run(coro)
    runner = _Runner(coro)
    thread = spawn(runner.target, "opero-run", contextvars.copy_context())
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        runner.cancel()
        thread.join(5)
        raise
    return _unwrap(runner.outcome[0])


class _Runner(Generic[T]):
    """A coroutine on a fresh loop in a helper thread, cancellable from the caller's thread."""

    def __init__(self, coro: Coroutine[object, object, T]) -> None:
        self.coro = coro
        self.outcome: list[_Outcome[T]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[object] | None = None

    async def _main(self) -> T:
        self.task = asyncio.current_task()
        return await self.coro

    def target(self) -> None:
        """The helper thread's body: run the coroutine, keep its result or exception."""
        loop = self.loop = asyncio.new_event_loop()
        try:
            self.outcome.append((True, loop.run_until_complete(self._main())))
        except BaseException as exc:  # handed to the caller
            self.outcome.append((False, exc))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def cancel(self) -> None:
        """Cancel the coroutine (Ctrl-C in the caller), if it has started."""
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)


def _unwrap(outcome: _Outcome[T]) -> T:
    """``(True, value)`` gives the value; ``(False, exc)`` raises the exception."""
    if outcome[0] is True:
        return outcome[1]
    raise outcome[1]


def spawn(
    target: Callable[[], object], name: str, context: contextvars.Context | None = None
) -> threading.Thread:
    """Start a daemon thread running ``target`` in ``context`` (a copy of the caller's)."""
    ctx = context if context is not None else contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread


def call_with_timeout(
    func: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object], timeout: float, name: str
) -> T:
    """Run ``func`` in a helper thread and give up waiting after ``timeout`` seconds.

    Python cannot kill a thread: an attempt that timed out keeps running in the background
    until it returns on its own; its result is discarded (the docs say so). Process maps
    enforce a hard limit by replacing the worker instead.

    Raises:
        TimeoutError: the attempt took longer than ``timeout``.
    """
    outcome: list[_Outcome[T]] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, func(*args, **kwargs)))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))
        finally:
            done.set()

    spawn(target, f"opero-timeout:{name}")
    if not done.wait(timeout):
        raise TimeoutError(f"{name}: attempt exceeded timeout={timeout}s")
    return _unwrap(outcome[0])


def iterate_async_in_thread(
    make: Callable[[], AsyncIterator[T]], name: str, on_close: Callable[[], None] | None = None
) -> Iterator[T]:
    """Consume the async iterator ``make()`` on a private loop in a helper thread, from sync code.

    Closing the returned generator calls ``on_close`` (which must make the iterator end,
    e.g. set a stop flag) and waits briefly for the helper.
    """
    out: queue.SimpleQueue[_Outcome[T] | None] = queue.SimpleQueue()  # None: the end

    async def main() -> None:
        try:
            async for value in make():
                out.put((True, value))
        except BaseException as exc:
            out.put((False, exc))
        finally:
            out.put(None)

    thread = spawn(lambda: asyncio.run(main()), name)
    try:
        while True:
            got = out.get()
            if got is None:
                break
            yield _unwrap(got)
    finally:
        if on_close is not None:
            on_close()
        thread.join(2)


async def iterate_in_thread(make: Callable[[], Iterator[T]], name: str) -> AsyncIterator[T]:
    """Iterate the blocking iterator ``make()`` in a helper thread without blocking the loop.

    The helper takes the next value only after the consumer took the previous one, so a
    slow consumer holds the producer back (bounded memory); closing stops it.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[_Outcome[T] | None] = asyncio.Queue()  # None: the end
    go_on = queue.SimpleQueue[bool]()

    def pump() -> None:
        gen = make()
        try:
            for value in gen:
                loop.call_soon_threadsafe(inbox.put_nowait, (True, value))
                if not go_on.get():
                    break
        except BaseException as exc:
            loop.call_soon_threadsafe(inbox.put_nowait, (False, exc))
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, None)
            except RuntimeError:  # the loop is closed already
                pass

    spawn(pump, name)
    try:
        while True:
            got = await inbox.get()
            if got is None:
                break
            yield _unwrap(got)
            go_on.put(True)
    finally:
        go_on.put(False)
