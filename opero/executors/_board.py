"""Which items a pool worker is running right now, readable by the parent after it dies.

A worker that dies (segfault, ``os._exit``, OOM kill) cannot say what it was doing, and the
results it had not flushed yet die with it. So it keeps a small shared memory page up to
date, and the parent reads the page when the worker is gone:

- a sync worker runs its chunk in sub-batches flushed ~5 ms apart and writes, before each,
  the chunk id and the positions the sub-batch covers (one write per sub-batch: tiny items
  keep the fast path). Under a hard timeout a sub-batch is one item;
- an ``async_process`` worker runs several attempts at once: each marks its item's index in
  a slot of its own while it runs.

A write costs a ``struct.pack_into`` on an ``mmap``: no system call, nothing for the parent
to read while the worker lives.
"""

from __future__ import annotations

import functools
import inspect
import mmap
import os
import struct
import tempfile
from collections.abc import Callable

__all__ = ["Board", "SLOTS"]

#: attempts one worker may have in flight at once (async_process concurrency is at most 64)
SLOTS = 64
_SLOT = struct.Struct("<q")
#: after the slots: the sync sub-batch running now, ``(chunk_id, first, end)`` positions
_SPAN = struct.Struct("<qqq")
_SPAN_AT = SLOTS * _SLOT.size
_SIZE = _SPAN_AT + _SPAN.size
_IDLE = -1


def _new_fd() -> int:
    """An anonymous file for the page: a memfd on Linux, an unlinked temporary file elsewhere."""
    create = getattr(os, "memfd_create", None)
    if create is not None:
        try:
            fd: int = create("opero-board", 0)
            return fd
        except OSError:
            pass
    fd, path = tempfile.mkstemp(prefix="opero-board-")
    os.unlink(path)
    return fd


class Board:
    """One worker's page of running items.

    Args:
        fd: the page's file descriptor (the worker's inherited copy); None: make a new page.
    """

    __slots__ = ("_free", "fd", "page")

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = _new_fd()
            os.ftruncate(fd, _SIZE)
            self.page = mmap.mmap(fd, _SIZE)
            for slot in range(SLOTS):
                _SLOT.pack_into(self.page, slot * _SLOT.size, _IDLE)
            _SPAN.pack_into(self.page, _SPAN_AT, _IDLE, 0, 0)
        else:
            self.page = mmap.mmap(fd, _SIZE)
        self.fd = fd
        self._free = list(range(SLOTS - 1, -1, -1))

    def running(self) -> set[int]:
        """Indices of the items whose attempt was running (read after the worker died)."""
        got = {_SLOT.unpack_from(self.page, slot * _SLOT.size)[0] for slot in range(SLOTS)}
        got.discard(_IDLE)
        return got

    def span(self) -> tuple[int, int, int]:
        """``(chunk_id, first, end)``: the positions of the sync sub-batch that was running."""
        chunk_id, first, end = _SPAN.unpack_from(self.page, _SPAN_AT)
        return int(chunk_id), int(first), int(end)

    def close(self) -> None:
        """Unmap the page and close its descriptor."""
        try:
            self.page.close()
        except (BufferError, ValueError):
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass

    # -- worker side -----------------------------------------------------------------------

    def running_span(self, chunk_id: int, first: int, end: int) -> None:
        """Positions ``first`` to ``end`` (excluded) of chunk ``chunk_id`` run now (sync)."""
        _SPAN.pack_into(self.page, _SPAN_AT, chunk_id, first, end)

    def enter(self, idx: int) -> int:
        """Mark item ``idx`` running; returns the slot to give to :meth:`leave`."""
        if not self._free:  # more attempts than slots: this one goes unmarked
            return -1
        slot = self._free.pop()
        _SLOT.pack_into(self.page, slot * _SLOT.size, idx)
        return slot

    def leave(self, slot: int) -> None:
        """The attempt in ``slot`` ended."""
        if slot < 0:
            return
        _SLOT.pack_into(self.page, slot * _SLOT.size, _IDLE)
        self._free.append(slot)

    def watch(self, func: Callable[..., object], running: Callable[[], int]) -> Callable[..., object]:
        """``func`` marking each attempt on the board, under the index ``running()`` gives."""
        enter, leave = self.enter, self.leave
        if inspect.iscoroutinefunction(func):
            coro = func  # narrowed: the closure calls an ``async def``

            @functools.wraps(func)  # the signature stays the function's (arg_fallback reads it)
            async def watched_async(*args: object, **kwargs: object) -> object:
                slot = enter(running())
                try:
                    return await coro(*args, **kwargs)
                finally:
                    leave(slot)

            return watched_async

        @functools.wraps(func)
        def watched(*args: object, **kwargs: object) -> object:
            slot = enter(running())
            try:
                return func(*args, **kwargs)
            finally:
                leave(slot)

        return watched
