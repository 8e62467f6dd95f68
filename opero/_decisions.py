"""The decisions of one call, written once: what to do after an attempt failed.

:meth:`Decisions.recover` is a generator that yields what to do next (``Attempt`` or
``Sleep``) and is sent how each attempt failed; it never sleeps, awaits or calls the
function, so the sync and async drivers share it. The rules it applies, in order:

- an error ``retry_on`` refuses propagates at once, as itself;
- a throttled attempt (429, or 503 with ``Retry-After``) waits as the server asks and tries
  the same candidate again without using up a retry, within ``deadline`` or else the
  throttle allowance (:data:`THROTTLE_ATTEMPTS` attempts and :data:`THROTTLE_SECONDS`);
- an error that moves on (``fallback_on``; by default every retryable error) goes to the
  next candidate at once;
- after the last candidate, or on an error that does not move on, the round ends: sleep
  the backoff, then the next round, up to ``retries`` extra rounds; with the default
  ``retry_on`` a round that ends on a client error (HTTP 4xx but 408/425/429) is the last:
  the round's other candidates were tried, asking again would get the same answer.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from ._errors import AllFailedError, BudgetExhausted, CircuitOpenError
from ._hints import is_client_error, is_throttled, server_wait
from ._options import Options
from ._sticky import Sticky, no_candidates
from ._telemetry import Recorder
from ._testing import state as testing_state

if TYPE_CHECKING:
    from tenacity import wait_exponential

    from ._options import ErrorFilter

__all__ = [
    "PROGRAMMING_ERRORS",
    "Args",
    "Kwargs",
    "THROTTLE_ATTEMPTS",
    "THROTTLE_SECONDS",
    "Attempt",
    "Decisions",
    "Sleep",
]

_perf = time.perf_counter

#: a call's positional and keyword arguments, as every driver passes them on
Args = tuple[object, ...]
Kwargs = dict[str, object]
#: What a ``wait=`` strategy is told of the call so far: ``(args, kwargs, started, slept)``.
Walked = tuple[Args, Kwargs, float, float]

#: A throttled call (no ``deadline``) gives up only after at least this many throttled
#: attempts AND at least :data:`THROTTLE_SECONDS` since it began (waits skipped by
#: ``opero.testing()`` count as if slept).
THROTTLE_ATTEMPTS = 10
THROTTLE_SECONDS = 600.0


class Attempt(NamedTuple):
    """Run the function once with these arguments."""

    args: Args
    kwargs: Kwargs


class Sleep(NamedTuple):
    """Back off before the next round."""

    delay: float


Steps = Generator[Attempt | Sleep, Exception, None]


class _Round:
    """The one field tenacity's ``wait_exponential`` reads from a ``RetryCallState``."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class _Outcome:
    """The failed attempt, as a tenacity ``Future`` shows it to wait strategies."""

    __slots__ = ("_error", "attempt_number")

    def __init__(self, attempt_number: int, error: BaseException) -> None:
        self.attempt_number = attempt_number
        self._error = error

    failed = True

    def exception(self, timeout: float | None = None) -> BaseException:
        return self._error

    def result(self, timeout: float | None = None) -> NoReturn:
        raise self._error


@dataclass(slots=True, eq=False)
class _RetryState:
    """What tenacity's wait strategies read from a ``RetryCallState`` (no tenacity import).

    ``attempt_number`` counts rounds (tenacity's attempts are opero's rounds: a round tries
    every fallback candidate once); ``outcome`` holds the round's last error, so
    ``wait_exception`` works; ``seconds_since_start`` runs from the call's start. The
    attribute names are tenacity's.
    """

    fn: Callable[..., object]
    args: Args
    kwargs: Kwargs
    attempt_number: int
    outcome: _Outcome
    start_time: float
    idle_for: float
    outcome_timestamp: float = field(default_factory=_perf)
    retry_object: None = None
    next_action: None = None
    upcoming_sleep: float = 0.0

    @property
    def seconds_since_start(self) -> float:
        return self.outcome_timestamp - self.start_time


#: Bugs, not bad luck: the default ``retry_on`` lets these propagate at once.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    NameError,
    AttributeError,
    ImportError,
    SyntaxError,
    AssertionError,
    NotImplementedError,
    RecursionError,
)


class Fallback:
    """Where the ``arg_fallback`` parameter sits and how to swap its candidates in."""

    __slots__ = ("default", "index", "name")

    def __init__(self, func: Callable[..., object], name: str) -> None:
        self.name = name
        self.index: int | None = None
        self.default: object = None
        params = inspect.signature(func).parameters
        p = params.get(name)
        if p is not None:
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                self.index = list(params).index(name)
            if p.default is not inspect.Parameter.empty:
                self.default = p.default

    def candidates(self, args: Args, kwargs: Mapping[str, object]) -> Sequence[object] | None:
        """The call's candidates (a non-empty list or tuple), or None: no fallback."""
        if self.name in kwargs:
            value = kwargs[self.name]
        elif self.index is not None and self.index < len(args):
            value = args[self.index]
        else:
            value = self.default
        if isinstance(value, list | tuple) and value:
            return value
        return None

    def substitute(self, args: Args, kwargs: Kwargs, value: object) -> tuple[Args, Kwargs]:
        """The call's arguments with ``value`` in the fallback parameter."""
        if self.name not in kwargs and self.index is not None and self.index < len(args):
            return (*args[: self.index], value, *args[self.index + 1 :]), kwargs
        return args, {**kwargs, self.name: value}


def is_default_retry_on(retry_on: object) -> bool:
    """True for ``Options.retry_on``'s default (an explicit ``retry_on=Exception`` is not)."""
    return type(retry_on) is tuple and retry_on == (Exception,)


def _retry_predicate(retry_on: ErrorFilter) -> Callable[[BaseException], bool | float]:
    """``exc -> False`` (propagate), ``True`` (retry after the backoff) or seconds to wait."""
    if is_default_retry_on(retry_on):
        bugs = PROGRAMMING_ERRORS
        return lambda exc: isinstance(exc, Exception) and not isinstance(exc, bugs)
    if isinstance(retry_on, type | tuple):
        classes = retry_on
        return lambda exc: isinstance(exc, classes)

    def verdict(exc: BaseException) -> bool | float:
        answer = retry_on(exc)
        if isinstance(answer, bool) or answer is None:
            return bool(answer)
        if isinstance(answer, int | float):  # stamina's convention: retry after that many seconds
            return max(0.0, float(answer)) if math.isfinite(answer) else True
        return bool(answer)

    return verdict


def _filter(on: ErrorFilter | None) -> Callable[[BaseException], bool] | None:
    """``fallback_on`` as a predicate; None means every retryable error moves on."""
    if on is None:
        return None
    if isinstance(on, type | tuple):
        classes = on
        return lambda exc: isinstance(exc, classes)
    return lambda exc: bool(on(exc))


def mark_final(error: BaseException, name: str) -> None:
    """Mark an error that ends a call of ``name``: an outer call of it does not retry it."""
    # (recursion: retrying each level would multiply the attempts) see Decisions.verdict
    try:
        error.__dict__["_opero_final"] = name
    except (AttributeError, TypeError):  # an exception type without a __dict__
        pass


def _not_open_breaker(
    retryable: Callable[[BaseException], bool | float],
) -> Callable[[BaseException], bool | float]:
    # An open circuit breaker means "fail fast": never retried, whatever retry_on says; a
    # spent token_budget too: no later attempt could run either.
    return lambda exc: not isinstance(exc, CircuitOpenError | BudgetExhausted) and retryable(exc)


class _Walk:
    """The state of one call's recovery: where it is in rounds x candidates, what failed."""

    __slots__ = (
        "args",
        "attempt",
        "candidates",
        "count",
        "deadline",
        "errors",
        "i",
        "kwargs",
        "pending",
        "rnd",
        "round_start",
        "skipped",
        "slept",
        "started",
        "sticky",
        "stop",
        "throttles",
    )

    def __init__(self, d: Decisions, args: Args, kwargs: Kwargs, began: float | None):
        self.args, self.kwargs = args, kwargs
        self.started = _perf() if began is None else began
        deadline = d.options.deadline
        self.deadline = self.started + deadline if deadline is not None else None
        self.candidates = d.fallback.candidates(args, kwargs) if d.fallback is not None else None
        if d.fallback is not None and self.candidates is None and d.fallback.default is None:
            no_candidates(d.name, d.fallback.name)  # DEBUG, once per function (also with sticky off)
        self.count = len(self.candidates) if self.candidates is not None else 1
        self.sticky = d.sticky if self.candidates is not None and self.count > 1 else None
        #: candidates that failed before a later one (fallback_on=None): demoted on success
        self.pending: list[int] = []
        self.errors: list[BaseException] = []
        self.attempt = self.rnd = 1
        #: where this round's errors begin in ``errors``
        self.round_start = 0
        self.i = 0
        self.slept = 0.0
        #: waits opero.testing() skipped (the throttle allowance counts them as slept)
        self.skipped = 0.0
        self.throttles = 0
        #: why the walk stopped early (a note for the error; "" for none), None while it goes on
        self.stop: str | None = None


class Decisions:
    """The pure decisions of one decorated function: retryable?, next candidate?, how long?

    Args:
        func: the function the plan calls (for tenacity's ``wait=`` strategies).
        options: its resolved options.
        name: its qualified name.
        recorder: where its counters and events go.
    """

    def __init__(self, func: Callable[..., object], options: Options, name: str, recorder: Recorder) -> None:
        self.func = func
        self.options = options
        self.name = name
        self.recorder = recorder
        self.retryable = _not_open_breaker(_retry_predicate(options.retry_on))
        #: with the default retry_on, a client error (4xx but 408/425/429) ends the rounds
        self.client_errors_final = is_default_retry_on(options.retry_on)
        self.fallback = Fallback(func, options.arg_fallback) if options.arg_fallback else None
        self.moves = _filter(options.fallback_on)
        #: demoted fallback candidates shared by every call (None: fallback_sticky=False)
        self.sticky: Sticky | None = (
            Sticky(options.fallback_recheck)
            if self.fallback is not None and options.fallback_sticky
            else None
        )
        self._signature: inspect.Signature | None = None
        self._backoff: wait_exponential | None = None  # made at the first failure

    # -- how long -------------------------------------------------------------------------

    def delay(self, round_number: int) -> float:
        """Built-in backoff before round ``round_number + 1``: tenacity's ``wait_exponential``,
        ``min(max_delay, min_delay * backoff_factor ** (round_number - 1))``, plus jitter."""
        o = self.options
        wait = self._backoff
        if wait is None:
            # tenacity's strategy, imported at the first failure only: `import opero` and
            # calls that succeed never load tenacity (it pulls in tornado where installed).
            from tenacity import wait_exponential

            wait = self._backoff = wait_exponential(
                multiplier=o.min_delay, exp_base=o.backoff_factor, min=o.min_delay, max=o.max_delay
            )
        base = float(wait(_Round(round_number)))  # type: ignore[arg-type]
        jitter = o.jitter
        return base * (1.0 + _jitter() * jitter) if jitter else base

    def wanted(self, round_number: int, error: BaseException, verdict: bool | float, state: Walked) -> float:
        """Seconds to wait after round ``round_number`` failed with ``error`` (testing or not).

        A number returned by a ``retry_on`` predicate wins over the ``wait=`` strategy,
        which wins over the built-in backoff; a server's ``Retry-After`` (429/503) raises
        the result to at least its wait. ``state`` is ``(args, kwargs, started, slept)``.
        """
        if not isinstance(verdict, bool):
            pause = verdict
        elif self.options.wait is not None:
            args, kwargs, started, slept = state
            outcome = _Outcome(round_number, error)
            rs = _RetryState(self.func, args, kwargs, round_number, outcome, started, slept)
            pause = max(0.0, float(self.options.wait(rs)))
        else:
            pause = self.delay(round_number)
        hint = server_wait(error)
        return pause if hint is None or hint <= pause else hint

    def pause(self, round_number: int, error: BaseException, verdict: bool | float, state: Walked) -> float:
        """Seconds to sleep after round ``round_number`` failed (0 under ``opero.testing()``)."""
        return 0.0 if testing_state.active else self.wanted(round_number, error, verdict, state)

    # -- where to start ---------------------------------------------------------------------

    def sticky_start(self, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
        """The first attempt's arguments: the candidates, healthy ones first.

        Only for plans with sticky fallbacks (``self.sticky``); the cache key is built from
        the call's own arguments before this.
        """
        fb, sticky = self.fallback, self.sticky
        if fb is None or sticky is None:
            return args, kwargs
        candidates = fb.candidates(args, kwargs)
        if candidates is None or len(candidates) < 2:
            if candidates is None and fb.default is None:
                no_candidates(self.name, fb.name)  # DEBUG, once per function
            return args, kwargs
        ordered = sticky.order(candidates)  # healthy first, demoted last (never skipped)
        return (args, kwargs) if ordered is candidates else fb.substitute(args, kwargs, ordered)

    def misbound(self, args: Args, kwargs: Kwargs) -> bool:
        """True when the arguments cannot bind to the function's signature (a wrong call)."""
        sig = self._signature
        if sig is None:
            try:
                sig = self._signature = inspect.signature(self.func)
            except (TypeError, ValueError):  # no signature (some builtins): cannot tell
                return False
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            return True
        return False

    # -- the walk -----------------------------------------------------------------------------

    def recover(
        self,
        args: Args,
        kwargs: Kwargs,
        first: Exception,
        began: float | None = None,
    ) -> Steps:
        """Decide what happens after the first attempt failed with ``first``.

        Yields ``Attempt``/``Sleep`` steps; is sent the exception of each failed attempt.
        Raises the error itself when it is not retryable, ``AllFailedError`` (or with
        ``reraise=True`` the last error) when every round and candidate failed, the
        ``deadline`` (counted from ``began``, a ``perf_counter`` time; default: now) is
        reached, or the throttle allowance ran out. See the module's docstring for the rules.
        """
        if isinstance(first, TypeError) and self.misbound(args, kwargs):
            mark_final(first, self.name)
            raise first  # a wrong call: its own TypeError, at once
        walk = _Walk(self, args, kwargs, began)
        error: Exception = first
        try:
            while True:
                pause = self._after(walk, error, self._judge(walk, error))
                if walk.stop is not None:
                    break
                if pause is not None:
                    yield Sleep(pause)
                    walk.slept += pause
                if walk.deadline is not None and _perf() >= walk.deadline:
                    walk.stop = f"stopped: deadline={self.options.deadline}s reached"
                    break
                error = yield self._attempt(walk)
        except GeneratorExit:
            self._demote_pending(walk)
            raise
        raise self._exhausted(walk, error)

    def _after(self, walk: _Walk, error: Exception, verdict: bool | float) -> float | None:
        """After a failed attempt: the pause before the next (throttled, or the round is over),
        or None when the next candidate of this round runs at once."""
        if is_throttled(error):
            return self._pace(walk, error, verdict)
        if (moving := self._moves_on(walk, error)) and walk.i + 1 < walk.count:
            self._next_candidate(walk, error)
            return None
        return self._round_over(walk, error, verdict, moving)

    def _judge(self, walk: _Walk, error: Exception) -> bool | float:
        """Record a failed attempt; raise ``error`` when it is not to be retried."""
        rec = self.recorder
        if isinstance(error, TimeoutError):
            rec.stats.add(timeouts=1)
            rec.emit("timeout", attempt=walk.attempt, round=walk.rnd, candidate=walk.i, error=error)
        verdict = self.verdict(error)
        if verdict is False:
            mark_final(error, self.name)
            raise error
        walk.errors.append(error)
        rec.emit("attempt_failed", attempt=walk.attempt, round=walk.rnd, candidate=walk.i, error=error)
        return verdict

    def _moves_on(self, walk: _Walk, error: Exception) -> bool:
        """True when ``error`` moves to the next candidate (sticky bookkeeping on the way)."""
        moves, candidates, sticky = self.moves, walk.candidates, walk.sticky
        moving = candidates is not None and (moves is None or moves(error))
        if moving and sticky is not None and candidates is not None:
            if moves is not None:
                sticky.demote(candidates[walk.i])
            else:
                walk.pending.append(walk.i)
        return moving

    def _next_candidate(self, walk: _Walk, error: Exception) -> None:
        walk.i += 1
        self.recorder.stats.add(fallbacks=1)
        self.recorder.emit(
            "fallback", attempt=walk.attempt + 1, round=walk.rnd, candidate=walk.i, error=error
        )

    def _round_over(self, walk: _Walk, error: Exception, verdict: bool | float, moving: bool) -> float | None:
        """The round failed: the backoff before the next one (``walk.stop`` set: no next)."""
        opts = self.options
        # A round ends the call when every failure in it was a client error (HTTP 4xx other
        # than 408/425/429): a transient error of another candidate still earns a retry.
        if self.client_errors_final and all(map(is_client_error, walk.errors[walk.round_start :])):
            walk.stop = "stopped: a client error (HTTP 4xx) is not retried"
            return None
        if walk.rnd > opts.retries:
            walk.stop = ""  # rounds exhausted: nothing to add to the error
            return None
        pause = self.pause(walk.rnd, error, verdict, (walk.args, walk.kwargs, walk.started, walk.slept))
        if walk.deadline is not None and _perf() + pause >= walk.deadline:
            walk.stop = f"stopped: deadline={opts.deadline}s would pass during the next backoff"
            return None
        self.recorder.stats.add(retries=1)
        self.recorder.emit("retry", attempt=walk.attempt, round=walk.rnd, delay=pause, error=error)
        walk.rnd += 1
        walk.round_start = len(walk.errors)
        if moving:
            sticky, candidates = walk.sticky, walk.candidates
            walk.i = sticky.start(candidates) if sticky is not None and candidates else 0
        return pause

    def _pace(self, walk: _Walk, error: Exception, verdict: bool | float) -> float | None:
        """A throttled attempt: wait as the server asks and try the same candidate again.

        Uses up no retry; bounded by ``deadline``, else by the throttle allowance.
        """
        walk.throttles += 1
        # at least the server's Retry-After, and our backoff grown over the throttled attempts
        # (a 429 without a usable Retry-After must not hammer the server)
        wait = self.wanted(walk.throttles, error, verdict, (walk.args, walk.kwargs, walk.started, walk.slept))
        pause = 0.0 if testing_state.active else wait
        now = _perf()
        if walk.deadline is not None:
            if now + pause >= walk.deadline:
                walk.stop = f"stopped: deadline={self.options.deadline}s would pass during the server's wait"
                return None
        elif walk.throttles >= THROTTLE_ATTEMPTS and now - walk.started + walk.skipped >= THROTTLE_SECONDS:
            walk.stop = (
                f"stopped: throttled {walk.throttles} times over {THROTTLE_SECONDS:.0f}s or more "
                "(the throttle allowance)"
            )
            return None
        walk.skipped += wait - pause
        self.recorder.stats.add(retries=1)
        self.recorder.emit("retry", attempt=walk.attempt, round=walk.rnd, delay=pause, error=error)
        return pause

    def _attempt(self, walk: _Walk) -> Attempt:
        walk.attempt += 1
        self.recorder.stats.add(attempts=1)
        fb, candidates = self.fallback, walk.candidates
        if candidates is not None and fb is not None:
            return Attempt(*fb.substitute(walk.args, walk.kwargs, candidates[walk.i :]))
        return Attempt(walk.args, walk.kwargs)

    def _demote_pending(self, walk: _Walk) -> None:
        # the driver closes the generator when an attempt succeeded: candidate i worked,
        # so the ones before it that failed in this call are demoted (fallback_on=None);
        # one after it is left alone (later calls start at i or before it anyway)
        if walk.sticky is not None and walk.candidates is not None:
            for j in set(walk.pending):
                if j < walk.i:
                    walk.sticky.demote(walk.candidates[j])

    def _exhausted(self, walk: _Walk, error: Exception) -> BaseException:
        """The error a call that ran out of rounds, candidates, time or allowance raises."""
        stop = walk.stop
        if self.options.reraise:
            n = len(walk.errors)
            for k, earlier in enumerate(walk.errors[:-1], 1):
                error.add_note(f"opero: attempt {k} of {n} failed: {type(earlier).__name__}: {earlier}")
            if stop:
                error.add_note(f"opero: {stop}")
            mark_final(error, self.name)
            return error
        final = AllFailedError(self.name, walk.errors)
        if stop:
            final.add_note(f"opero: {stop}")
        final.__cause__ = error
        return final

    def verdict(self, error: BaseException) -> bool | float:
        """``retry_on``'s answer for ``error``, after the rules no option can change."""
        if isinstance(error, RecursionError):
            return False  # retrying each level of a deep recursion explodes: (retries+1)**depth
        final = error.__dict__.get("_opero_final") if hasattr(error, "__dict__") else None
        if final == self.name or (isinstance(error, AllFailedError) and error.func_name == self.name):
            return False  # an inner call of this same function already gave up
        verdict: bool | float = self.retryable(error)
        return verdict


def _jitter() -> float:
    # random (with bisect and hashlib's sha512) is imported at the first backoff, not at
    # `import opero`: a call that never retries never needs it.
    import random

    return random.random()
