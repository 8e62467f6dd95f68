"""Run a coroutine from sync code, with or without an event loop already running.

In Jupyter a loop is already running in the kernel's thread, so ``asyncio.run`` refuses.
opero never patches that loop (no nest-asyncio): it runs the coroutine on a private loop in
a helper thread and blocks the caller until it is done.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run(coro: Coroutine[Any, Any, T]) -> T:
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
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()
    holder: dict[str, asyncio.AbstractEventLoop] = {}
    task_ref: dict[str, asyncio.Task[T]] = {}

    async def main() -> T:
        task_ref["task"] = asyncio.current_task()  # type: ignore[assignment]
        return await coro

    def target() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        try:
            outcome.append((True, loop.run_until_complete(main())))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=lambda: context.run(target), name="opero-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        loop, task = holder.get("loop"), task_ref.get("task")
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(5)
        raise
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
