"""Work items shared by the benchmarks (importable by worker processes of every pool)."""

from __future__ import annotations

import asyncio
import time

CPU_S = 0.005
IO_S = 0.020


def inc(x: int) -> int:
    """A tiny item: nearly no work, so only the map's own cost shows."""
    return x + 1


def burn(x: int, seconds: float = CPU_S) -> int:
    """``seconds`` of CPU in the calling process."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return x


def burn_1ms(x: int) -> int:
    """One millisecond of CPU (the process-mode scale shape)."""
    return burn(x, 0.001)


def nap(x: int) -> int:
    """20 ms of blocking I/O."""
    time.sleep(IO_S)
    return x


async def anap(x: int) -> int:
    """20 ms of asyncio I/O."""
    await asyncio.sleep(IO_S)
    return x


def spin(stop_at: float) -> None:
    """A busy loop until ``stop_at`` (``time.time()``): the load beside a loaded run."""
    while time.time() < stop_at:
        pass
