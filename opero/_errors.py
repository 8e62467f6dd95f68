"""opero's exception hierarchy."""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from ._hints import header_pairs, headers_on_chain, status_of

__all__ = [
    "AllFailedError",
    "BudgetExhausted",
    "Cancelled",
    "CircuitOpenError",
    "ConfigurationError",
    "OperoError",
    "RemoteError",
    "WorkerLostError",
    "portable",
]


class OperoError(Exception):
    """Base class of every error that opero raises itself."""

    __module__ = "opero"  # tracebacks show opero.AllFailedError, not opero._errors...


class ConfigurationError(OperoError, ValueError):
    """An option has a bad name or value; raised at decoration time where possible."""

    __module__ = "opero"


class AllFailedError(OperoError):
    """Every attempt (retry rounds x fallback candidates) of one call failed.

    ``str(e)`` and ``repr(e)`` lead with the last error's type and HTTP status, then name
    the function, the attempt count and the last error's message, e.g.
    ``HTTPError 500 ×4: fetch: all 4 attempts failed; last error: 500 Server Error ...``
    (``×4``: the last 4 attempts failed alike). They survive pickling with the
    ``__cause__`` (the last error), the notes and the fields below.

    Attributes:
        errors: every attempt's exception, in the order the attempts ran.
        func_name: qualified name of the function that failed.
        status: the last error's HTTP status (``e.status == 404``), None when it has none.
    """

    __module__ = "opero"

    def __init__(self, func_name: str, errors: Sequence[BaseException]) -> None:
        self.func_name = func_name
        self.errors: list[BaseException] = list(errors)
        super().__init__(_summary(func_name, self.errors))

    @property
    def status(self) -> int | None:
        """The HTTP status of the last attempt's error (or of the error it was raised from)."""
        return status_of(self.errors[-1]) if self.errors else None

    def __repr__(self) -> str:
        # a DataFrame error cell shows the repr cut at ~50 characters: type and status first
        return str(self)

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions cross process boundaries (maps) and go into caches: keep the cause
        # (BaseException's own reduce drops it), the message and the notes on unpickle.
        state = dict(self.__dict__)
        return (
            _rebuild_all_failed,
            (type(self), self.func_name, self.errors, self.args, self.__cause__, self.__suppress_context__),
            state,
        )


def _rebuild_all_failed(
    kind: type[AllFailedError],
    func_name: str,
    errors: list[BaseException],
    args: tuple[object, ...],
    cause: BaseException | None,
    suppress: bool,
) -> AllFailedError:
    """Unpickle an ``AllFailedError``: its fields, message and ``__cause__`` as they were."""
    err = kind.__new__(kind)
    err.func_name = func_name
    err.errors = list(errors)
    err.args = args
    err.__cause__ = cause
    err.__suppress_context__ = suppress
    return err


def _type_name(exc: BaseException) -> str:
    """The short class name users know, also for a plain stand-in of another class."""
    if type(exc) is RemoteError:
        return exc.type_name.rsplit(".", 1)[-1]
    return type(exc).__name__


def _message(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):  # its str() repeats the type name
        return exc.message
    try:
        return str(exc)
    except Exception as err:  # a broken __str__ must not break the summary
        return f"<str() failed: {type(err).__name__}>"


def _summary(func_name: str, errors: list[BaseException]) -> str:
    """``HTTPError 500 ×4: fetch: all 4 attempts failed; last error: <message>``."""
    if not errors:
        return f"{func_name}: no attempt ran"
    last = errors[-1]
    kind, status = _type_name(last), status_of(last)
    lead = kind if status is None else f"{kind} {status}"
    alike = 1
    for earlier in reversed(errors[:-1]):
        if _type_name(earlier) != kind or status_of(earlier) != status:
            break
        alike += 1
    if alike > 1:
        lead += f" ×{alike}"
    n = len(errors)
    what = "the only attempt failed" if n == 1 else f"all {n} attempts failed"
    return f"{lead}: {func_name}: {what}; last error: {_message(last)}"


class WorkerLostError(OperoError):
    """A worker process died (signal, segfault, OOM kill) while it held this item.

    It is retryable: the item's next attempt runs on a fresh worker.
    """

    __module__ = "opero"

    def __init__(self, detail: str, exitcode: int | None = None) -> None:
        self.detail = detail
        self.exitcode = exitcode
        super().__init__(detail)

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str, int | None]]:
        return (type(self), (self.detail, self.exitcode))


class RemoteError(OperoError):
    """A faithful, picklable stand-in for an exception that cannot cross a process boundary.

    Some exceptions cannot be pickled (one holding an open socket, file or lock, such as
    ``urllib.error.HTTPError``), and some pickle but cannot be rebuilt (a class whose
    ``__init__`` takes other arguments than it passes to ``Exception``, common in API client
    libraries). When such an exception must travel (out of a worker process, into a cache, a
    DataFrame column), opero keeps it in this form instead of losing the item or the map.

    Attributes:
        type_name: qualified name of the original class, e.g. ``"mylib.errors.ApiError"``.
        message: ``str()`` of the original exception.
        traceback_text: the original traceback, formatted (empty when it had none).
        status: the HTTP status code, for errors that carry one (``.code``, ``.status``,
            ``.status_code`` or ``.response.status_code``), else None.
        headers: the HTTP response headers of such errors, as a plain dict, else None.
    """

    type_name: str
    message: str
    traceback_text: str

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback_text: str = "",
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        _fill(self, (type_name, message, traceback_text, status, headers))

    # Properties, not plain attributes: in a typed stand-in (a subclass of the original class
    # too) they win over the original's own ``status``/``headers`` descriptors.
    @property
    def status(self) -> int | None:
        """The HTTP status code of the original error, or None."""
        return self.__dict__.get("_status")

    @status.setter
    def status(self, value: int | None) -> None:
        self.__dict__["_status"] = value

    @property
    def headers(self) -> dict[str, str] | None:
        """The HTTP response headers of the original error as a plain dict, or None."""
        return self.__dict__.get("_headers")

    @headers.setter
    def headers(self, value: dict[str, str] | None) -> None:
        self.__dict__["_headers"] = value

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    def __reduce__(self) -> tuple[object, ...]:
        original = type(self).__dict__.get("_opero_original")
        where = (original.__module__, original.__qualname__) if original is not None else None
        return (
            _rebuild_remote,
            (where, self.type_name, self.message, self.traceback_text, self.status, self.headers),
        )

    @classmethod
    def from_exception(cls, exc: BaseException, with_traceback: bool = True) -> RemoteError:
        """The stand-in for ``exc`` (never fails, whatever ``exc`` holds).

        ``with_traceback=False`` skips formatting the traceback (the costly part).
        """
        if isinstance(exc, RemoteError):
            return exc
        kind = type(exc)
        type_name = f"{kind.__module__}.{kind.__qualname__}"
        if kind.__module__ == "builtins":
            type_name = kind.__qualname__
        try:
            message = str(exc)
        except Exception as err:  # a broken __str__ must not lose the item
            message = f"<str() failed: {type(err).__name__}>"
        try:
            has = with_traceback and exc.__traceback__ is not None
            text = "".join(traceback.format_exception(exc)) if has else ""
        except Exception:
            text = ""
        status, headers = _http_details(exc)
        return _make_remote(kind if cls is RemoteError else None, (type_name, message, text, status, headers))


#: A stand-in's fields: type name, message, traceback text, HTTP status, headers.
_Fields = tuple[str, str, str, int | None, dict[str, str] | None]
_FIELD_NAMES = ("type_name", "message", "traceback_text", "status", "headers")


class _Response:
    """What code reading ``err.response.status_code`` / ``.headers`` finds on a stand-in."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int | None, headers: dict[str, str] | None) -> None:
        self.status_code = status_code
        self.headers = headers or {}

    @property
    def status(self) -> int | None:
        return self.status_code

    def __reduce__(self) -> tuple[object, ...]:
        return (_Response, (self.status_code, self.headers))


def _fill(err: RemoteError, fields: _Fields) -> None:
    for field, given in zip(_FIELD_NAMES, fields, strict=True):
        setattr(err, field, given)
    err.args = (str(err),)
    if not isinstance(err, RemoteError) or type(err) is RemoteError:
        return
    _, message, _, status, headers = fields
    # A typed stand-in: give the original class's readers what they look for (urllib's
    # HTTPError reads code/msg/hdrs; requests and httpx errors carry a response).
    if hasattr(type(err), "getcode"):  # urllib.error.HTTPError and its subclasses
        import io

        # its file-like base looks every unknown attribute up on .file: an empty body
        body = io.BytesIO(b"")
        for name, value in (
            ("code", status),
            ("msg", message),
            ("hdrs", headers),
            ("fp", body),
            ("file", body),
        ):
            try:
                object.__setattr__(err, name, value)
            except (AttributeError, TypeError):
                pass
    try:
        if status is not None and getattr(err, "response", None) is None:
            object.__setattr__(err, "response", _Response(status, headers))
    except Exception:  # an odd __getattr__ on the original class: keep the stand-in as it is
        pass


#: original class -> its typed stand-in class (a subclass of RemoteError and of the original)
_typed: dict[type[BaseException], type[RemoteError]] = {}


def _typed_class(kind: type[BaseException]) -> type[RemoteError]:
    """A class deriving from both RemoteError and ``kind``, so ``except kind`` still catches.

    Falls back to plain RemoteError where Python cannot combine them (an instance-layout
    conflict, a final class) or where ``kind`` is an opero error already.
    """
    cls = _typed.get(kind)
    if cls is None:
        cls = RemoteError
        if not issubclass(kind, OperoError) and issubclass(kind, Exception):
            try:
                cls = type(
                    kind.__name__,
                    (RemoteError, kind),
                    {
                        "__module__": kind.__module__,
                        "__qualname__": kind.__qualname__,
                        "_opero_original": kind,
                    },
                )
            except TypeError:
                cls = RemoteError
        _typed[kind] = cls
    return cls


def _make_remote(kind: type[BaseException] | None, fields: _Fields) -> RemoteError:
    cls = _typed_class(kind) if kind is not None else RemoteError
    if cls is RemoteError:
        return RemoteError(*fields)
    try:
        # the original's __new__ without arguments (OSError and friends need their own);
        # its __init__ is skipped: it wants the original constructor's arguments
        err = cls.__new__(cls)
        _fill(err, fields)
        return err
    except Exception:
        return RemoteError(*fields)


def _rebuild_remote(
    where: tuple[str, str] | None,
    type_name: str,
    message: str,
    traceback_text: str,
    status: int | None,
    headers: dict[str, str] | None,
) -> RemoteError:
    """Unpickle a stand-in: typed again when the original class can be imported here."""
    kind: object = None
    if where is not None:
        import importlib

        try:
            kind = importlib.import_module(where[0])
            for part in where[1].split("."):
                kind = getattr(kind, part)
        except Exception:
            kind = None
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        kind = None
    return _make_remote(kind, (type_name, message, traceback_text, status, headers))


def _http_details(exc: BaseException) -> tuple[int | None, dict[str, str] | None]:
    """Status code and headers of an HTTP-ish error, read by duck typing (no imports).

    Both follow ``raise ... from`` (:func:`~opero._hints.status_of`,
    :func:`~opero._hints.headers_on_chain`): a stand-in of a 429 raised from a response's
    error keeps its ``Retry-After``. The headers are the first set that can be read, as found.
    """
    for _, raw in headers_on_chain(exc):
        pairs = header_pairs(raw)
        if pairs is not None:
            return status_of(exc), dict(pairs)
    return status_of(exc), None


def _round_trips(exc: BaseException) -> bool:
    """Whether ``exc`` survives pickling by its own means.

    The check ignores reducers registered globally with ``copyreg`` (``distributed`` installs
    tblib's for every exception class): the verdict, and so what a result column holds and
    how it hashes, must not depend on which library happened to be imported first.
    """
    import io
    import pickle

    try:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = {}  # type: ignore[assignment]
        pickler.dump(exc)
        pickle.loads(buf.getvalue())
        return True
    except Exception:
        pass
    kind = type(exc)
    if kind.__module__ != "__main__" and "<locals>" not in kind.__qualname__:
        return False
    try:
        # classes defined in __main__, a notebook cell or a function travel by value
        import cloudpickle

        cloudpickle.loads(cloudpickle.dumps(exc))
        return True
    except Exception:
        return False


def portable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives a pickle round trip, else a faithful stand-in.

    The stand-in is a :class:`RemoteError` keeping the original type name, message,
    traceback text and, for HTTP errors, status and headers. An ``AllFailedError`` stays an
    ``AllFailedError`` whose attempt errors are made portable one by one. Cheap when the
    exception pickles: one ``pickle`` round trip of it.

    Args:
        exc: any exception.

    Returns:
        An exception that can be pickled and unpickled.
    """
    if _round_trips(exc):
        return exc
    if isinstance(exc, AllFailedError):
        errors = [portable(e) for e in exc.errors]
        out = _like(exc, errors)
        out.__traceback__ = exc.__traceback__
        if _round_trips(out):
            return out
    return RemoteError.from_exception(exc)


def _like(exc: AllFailedError, errors: list[BaseException]) -> AllFailedError:
    """An ``AllFailedError`` like ``exc`` (name, notes, cause) over other attempt errors."""
    out = AllFailedError(exc.func_name, errors)
    out.__cause__ = errors[-1] if errors else None
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        out.__notes__ = [str(note) for note in notes]
    return out


def stand_in(exc: BaseException) -> BaseException:
    """The always-picklable form of ``exc``, without trying ``exc`` itself.

    Made of plain values only, so it unpickles anywhere opero is installed: a
    :class:`RemoteError`, or for an ``AllFailedError`` one whose attempt errors are
    ``RemoteError``s (``opero`` errors whose fields are plain values stay as they are).
    """
    if isinstance(exc, AllFailedError):
        # the last attempt's traceback is kept; earlier attempts keep type and message
        # (formatting a traceback is the costly part, and maps may fail every item)
        last = len(exc.errors) - 1
        errors = [stand_in(e) if n == last else _light(e) for n, e in enumerate(exc.errors)]
        return _like(exc, errors)
    if type(exc) in (RemoteError, WorkerLostError):
        return exc
    return RemoteError.from_exception(exc)


def _light(exc: BaseException) -> BaseException:
    if type(exc) in (RemoteError, WorkerLostError):
        return exc
    return RemoteError.from_exception(exc, with_traceback=False)


class CircuitOpenError(OperoError):
    """The circuit breaker of a function (or of its ``rate_limit_scope``) is open.

    The call failed fast without touching the API; the breaker lets one probe through after
    its open period. Attributes: ``name`` (function or scope), ``retry_in`` (seconds until
    the probe may run).
    """

    __module__ = "opero"

    def __init__(self, name: str, retry_in: float) -> None:
        self.name = name
        self.retry_in = retry_in
        super().__init__(f"{name}: circuit breaker is open; next probe in {retry_in:.1f}s")

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        return (type(self), (self.name, self.retry_in))


class Cancelled(OperoError):
    """The marker held by the items of a stopped map that never started.

    A map stopped from the dashboard (or by ``KeyboardInterrupt`` in ``imap``) returns its
    partial results; each item that had not started holds a ``Cancelled`` instance, so
    ``isinstance(result, Exception)`` still tells results from non-results.
    """

    __module__ = "opero"

    def __init__(self, detail: str = "not run: the map was stopped") -> None:
        self.detail = detail
        super().__init__(detail)

    def __reduce__(self) -> tuple[type[Cancelled], tuple[str]]:
        return (type(self), (self.detail,))


class BudgetExhausted(OperoError):
    """A function's ``token_budget`` is spent: the attempt failed without calling.

    Attributes: ``name`` (function or scope), ``spent`` and ``budget`` (units).
    """

    __module__ = "opero"

    def __init__(self, name: str, spent: float, budget: float) -> None:
        self.name = name
        self.spent = spent
        self.budget = budget
        super().__init__(
            f"{name}: token_budget={budget:g} is spent ({spent:g} used); the attempt was not started"
        )

    def __reduce__(self) -> tuple[type[BudgetExhausted], tuple[str, float, float]]:
        return (type(self), (self.name, self.spent, self.budget))
