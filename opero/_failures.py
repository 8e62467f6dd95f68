"""The failure log of each function: every failed item (and failed plain call), its own final
error, attempts and time; ``fn.failures()`` turns it into a DataFrame, the dashboard's error
panel reads it. Fed from the parent process only (workers report home with their results).
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _telemetry
from ._errors import AllFailedError
from ._hints import status_of
from ._telemetry import Registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_FAILURES",
    "Failure",
    "FailureLog",
    "describe_error",
    "failure_log",
    "failure_logs",
    "failures_frame",
    "http_status",
    "new_failure_log",
    "short_repr",
    "traceback_text",
]

#: Failed items kept per function (older ones are dropped; ``FailureLog.total`` counts all).
MAX_FAILURES = 10_000

# Failed attempts are counted per HTTP status (the dashboard's "recovered" errors) with the
# one status reader, which the telemetry layer below cannot import itself.
_telemetry.set_status_reader(status_of)


def _record_call_failure(name: str, error: BaseException) -> None:
    # A failed plain @opero call: in its function's log too (fn.failures()), as "call"
    if isinstance(error, Exception):  # an interrupt is not a failure of the function
        failure_log(name).add("call", error, name.rsplit(".", 1)[-1])


_telemetry.set_failure_sink(_record_call_failure)


# -- failures ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed map item.

    Attributes:
        func: the function's qualified name.
        item: the item's label: the row index for DataFrame rows, a short repr otherwise.
        error_type: the type name of the item's own final error (the last attempt's error
            for an ``AllFailedError``).
        message: that error's message.
        attempts: attempts the item made (1 for an error that was not retried).
        time: when the item failed (``time.time()``).
        call: the map run it belongs to (``MapProgress.label``, e.g. ``"fetch #2"``).
        status: the HTTP status of an HTTP error (404, 500, ...), else None.
    """

    func: str
    item: str
    error_type: str
    message: str
    attempts: int
    time: float
    call: str
    status: int | None = None
    #: the item's position in the map's input (None: not from a map)
    position: int | None = None
    #: True when ``item`` is a DataFrame row's index label ("row 275"), else an item
    row: bool = False
    #: the item itself (the row's values for a DataFrame), as the function received it
    value: object = None
    #: the final error's traceback, as text
    traceback: str = ""

    @property
    def kind(self) -> str:
        """What the panel groups by: the type, and the HTTP status when there is one."""
        return f"{self.error_type} {self.status}" if self.status is not None else self.error_type

    @property
    def where(self) -> str:
        """``row 275`` for a DataFrame row, ``item 5,275`` (its position) for a list item."""
        if self.row:
            return f"row {self.item}"
        if self.position is not None:
            return f"item {self.position:,}"
        return "call" if self.item == "call" else f"item {self.item}"


def http_status(error: BaseException) -> int | None:
    """The HTTP status an item's final error carries (its last attempt's), else None."""
    if isinstance(error, AllFailedError) and error.errors:
        error = error.errors[-1]
    return status_of(error)


def _final(error: BaseException) -> BaseException:
    return error.errors[-1] if isinstance(error, AllFailedError) and error.errors else error


def traceback_text(error: BaseException) -> str:
    """The final error's traceback as text (a worker's error: the text it carried home)."""
    final = _final(error)
    carried = getattr(final, "traceback_text", None)  # a RemoteError from a worker
    if isinstance(carried, str) and carried:
        return carried
    try:
        return "".join(traceback.format_exception(final))
    except Exception:  # a broken __str__ must not break the map
        return f"{type(final).__name__}"


def describe_error(error: BaseException) -> tuple[str, str, int]:
    """``(type name, message, attempts)`` of an item's final error.

    An ``AllFailedError`` is described by its last attempt's error (what really went wrong)
    and the number of attempts; an error carried home from a worker keeps its original type
    name (``type_name``/``exc_type`` attribute) rather than its wrapper's.
    """
    attempts = 1
    final: BaseException = error
    if isinstance(error, AllFailedError) and error.errors:
        final, attempts = error.errors[-1], len(error.errors)
    name = getattr(final, "type_name", None) or getattr(final, "exc_type", None)
    if not isinstance(name, str) or not name:
        name = type(final).__name__
    name = name.rsplit(".", 1)[-1]  # "urllib.error.HTTPError" reads as HTTPError
    message = getattr(final, "message", None) if getattr(final, "type_name", None) else None
    if isinstance(message, str):  # a RemoteError: its original message, not "Type: message"
        return name, message, attempts
    return name, str(final), attempts


def short_repr(value: object, limit: int = 80) -> str:
    """A one-line repr cut at ``limit`` characters."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a broken __repr__ must not break the map
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FailureLog:
    """Every failed item of one function, newest last (the last ``MAX_FAILURES`` are kept).

    Attributes:
        name: the function's qualified name.
        total: failed items ever recorded (also those no longer kept).
        by_type: failed items per error kind, ``"ValueError"`` or with the HTTP status
            ``"HTTPError 404"`` (all of them, not only those kept).
        version: bumped on every change (dashboards compare it to skip re-rendering).
    """

    def __init__(self, name: str, limit: int = MAX_FAILURES) -> None:
        self.name = name
        self.records: deque[Failure] = deque(maxlen=limit)
        self.total = 0
        self.by_type: Counter[str] = Counter()
        #: failed attempts of the permanently failed items, per HTTP status (see ``recovered``)
        self.attempts_by_status: Counter[int | None] = Counter()
        #: permanently failed items per HTTP status of their final error
        self.permanent: Counter[int | None] = Counter()
        self.version = 0
        self._lock = threading.Lock()

    def add(
        self,
        item: str,
        error: BaseException,
        call: str,
        position: int | None = None,
        row: bool = False,
        value: object = None,
    ) -> Failure:
        """Record one failed item with its own final error (and its traceback text)."""
        error_type, message, attempts = describe_error(error)
        status = http_status(error)
        record = Failure(
            self.name, item, error_type, message, attempts, time.time(), call, status,
            position, row, value, traceback_text(error),
        )  # fmt: skip
        errors = error.errors if isinstance(error, AllFailedError) and error.errors else [error]
        with self._lock:
            self.records.append(record)
            self.total += 1
            self.by_type[record.kind] += 1
            self.permanent[status] += 1
            for e in errors:
                self.attempts_by_status[status_of(e)] += 1
            self.version += 1
        return record

    def recovered(self, attempt_errors: Mapping[int | None, int]) -> list[tuple[int, int, int]]:
        """``(status, recovered, permanent)`` per HTTP status, most frequent first.

        ``attempt_errors`` are the function's failed attempts per status (``fn.stats``):
        those not spent by a permanently failed item were recovered by a later attempt.
        """
        with self._lock:
            spent, permanent = dict(self.attempts_by_status), dict(self.permanent)
        statuses = {s for s in (*attempt_errors, *permanent) if s is not None}
        rows = [
            (s, max(0, attempt_errors.get(s, 0) - spent.get(s, 0)), permanent.get(s, 0)) for s in statuses
        ]
        return sorted(rows, key=lambda r: (-(r[1] + r[2]), r[0]))

    def latest(self, n: int) -> list[Failure]:
        """The ``n`` newest failures, newest last."""
        with self._lock:
            return list(itertools.islice(reversed(self.records), n))[::-1]

    def counts(self) -> list[tuple[str, int]]:
        """Failed items per kind, most frequent first."""
        with self._lock:
            return self.by_type.most_common()

    def clear(self) -> None:
        """Forget every failure."""
        with self._lock:
            self.records.clear()
            self.total = 0
            self.by_type.clear()
            self.attempts_by_status.clear()
            self.permanent.clear()
            self.version += 1

    def frame(self) -> pd.DataFrame:
        """The kept failures as a DataFrame.

        Columns: item (the label), error_type, status, message, attempts, time, call,
        position (in the map's input), row (True for a DataFrame row), value (the item
        itself) and traceback (the final error's, as text).
        """
        import pandas as pd

        with self._lock:
            rows = list(self.records)
        columns = [
            "item", "error_type", "status", "message", "attempts", "time", "call",
            "position", "row", "value", "traceback",
        ]  # fmt: skip
        frame = pd.DataFrame(
            [
                (
                    r.item,
                    r.error_type,
                    r.status,
                    r.message,
                    r.attempts,
                    r.time,
                    r.call,
                    r.position,
                    r.row,
                    r.value,
                    r.traceback,
                )
                for r in rows
            ],
            columns=columns,
        )
        frame["position"] = frame["position"].astype("Int64")
        frame["status"] = frame["status"].astype("Int64")
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame


_logs: Registry[FailureLog] = Registry(FailureLog)


def new_failure_log(name: str) -> FailureLog:
    """A fresh log for a newly decorated function (the latest definition wins, like stats)."""
    return _logs.fresh(name)


def failure_log(name: str) -> FailureLog:
    """The log registered under ``name``, created when missing."""
    return _logs.get(name)


def failures_frame(name: str) -> pd.DataFrame:
    """``fn.failures()`` of a plain ``@opero`` function: its failure log as a DataFrame."""
    return failure_log(name).frame()


def failure_logs() -> list[FailureLog]:
    """Every function's failure log."""
    return _logs.values()
