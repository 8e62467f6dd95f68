"""``%opero`` and ``%%opero``: run a cell as one resilient, cacheable unit; inspect opero.

``%%opero retries=2 timeout=60 cache=True`` runs the cell through the same :class:`Plan`
as ``@opero``: the cell body is the function, so retries, backoff, ``retry_on``, rate limits,
stats and events behave exactly as for a decorated function. The options are §2's, written
as Python literals; two extra ones belong to the magic: ``dashboard=False`` hides the cell's
dashboard and ``name="..."`` names the cell's row in stats.
"""

from __future__ import annotations

import ast
import inspect
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .. import _telemetry
from .._errors import AllFailedError, ConfigurationError
from .._options import Options, configure, current_overrides, resolve_options
from .._policy import Plan
from .._telemetry import Event
from .._testing import state as testing_state
from .._threads import run
from . import cellcache
from .dashboard import Dashboard, hub, show, widgets_available

if TYPE_CHECKING:
    from ._shell import CellCompiler, Shell

__all__ = ["MAGIC_ONLY", "OperoMagics", "after_cell", "parse_options", "run_cell"]

#: Options of the magic itself, not of §2.
MAGIC_ONLY = ("dashboard", "name")
#: The name the cell's last expression is stored under while the cell runs.
_RESULT = "__opero_cell_result__"
_CELL_BACKENDS = ("disk", "memory")

USAGE = """\
%%opero [option=value ...]     run the cell as one resilient unit; options are Python literals
%opero dashboard               live dashboard of every opero function
%opero dashboard --side        the same in a JupyterLab side panel (stays in view)
%opero stats                   opero.stats() as a DataFrame
%opero clear-cache [namespace] empty opero's caches (cells included)
%opero config k=v ...          notebook-wide defaults (opero.configure); no arguments: show them;
                               'reset' drops them
%opero nest                    apply nest-asyncio2 (opt-in, for other libraries' asyncio.run)

%%opero options (e.g. %%opero retries=2 timeout=60 cache=True):
  retries=0              extra runs of the whole cell after a failure (cells: 0 unless given)
  retry_on=Exception     errors that are retried: a class, a tuple of classes
  min_delay=0.1          seconds before the first retry; backoff_factor=1.5, max_delay=30.0
  jitter=0.1             random extra fraction of each delay
  timeout=None           seconds the cell may run; over it the cell stops with TimeoutError
  deadline=None          seconds for all runs together
  cache=False            skip the cell when its source and inputs are unchanged (restores its
                         names and printed output, also after a kernel restart)
  cache_ttl=None         seconds a cached cell stays valid
  cache_namespace="opero"  group entries for %opero clear-cache NAMESPACE
  cache_backend="disk"   "disk" (survives restarts) or "memory"
  rate_limit=None        runs per second; rate_limit_scope="name" shares a budget
  dashboard=True         show the cell's one-line live status
  name="..."             the cell's row name in stats and the dashboard"""

# `name=` at the start of a chunk (not `==`): splits "retries=2 timeout=1.5" into options.
_OPTION_START = re.compile(r"\s+(?=[A-Za-z_]\w*\s*=(?!=))")


def _value(name: str, node: ast.expr, source: str, namespace: Mapping[str, object]) -> object:
    """A literal, or a plain name / dotted name looked up in the user namespace or builtins."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Tuple):
        return tuple(_value(name, elt, source, namespace) for elt in node.elts)
    if isinstance(node, ast.Name):
        if node.id in namespace:
            return namespace[node.id]
        import builtins

        if hasattr(builtins, node.id):
            return getattr(builtins, node.id)
        raise ConfigurationError(f"option {name}: name {node.id!r} is not defined")
    if isinstance(node, ast.Attribute):
        return getattr(_value(name, node.value, source, namespace), node.attr)
    text = ast.get_source_segment(source, node) or ast.dump(node)
    raise ConfigurationError(
        f"option {name}={text} is not a Python literal (write numbers, strings, True/False/None, "
        "tuples, lists, dicts, or a name such as an exception class)"
    )


def parse_options(line: str, namespace: Mapping[str, object] | None = None) -> dict[str, Any]:
    """Parse ``option=value ...`` (space- or comma-separated) into a dict.

    Args:
        line: the magic's argument line, e.g. ``retries=2 timeout=60 cache=True``.
        namespace: where bare names (``retry_on=ValueError``) are looked up.

    Raises:
        ConfigurationError: a chunk that is not ``name=value`` or a value that is not a literal.
    """
    namespace = namespace if namespace is not None else {}
    out: dict[str, Any] = {}
    for name, node, source in _option_nodes(line.strip()):
        if name in out:
            raise ConfigurationError(f"option {name!r} given twice")
        out[name] = _value(name, node, source, namespace)
    return out


def _option_nodes(line: str) -> list[tuple[str, ast.expr, str]]:
    """``(name, value's expression, its source)`` of each option: keyword syntax, else chunks."""
    if not line:
        return []
    try:
        call = ast.parse(f"_({line})", mode="eval").body
    except SyntaxError:
        call = None
    if isinstance(call, ast.Call) and not call.args and all(kw.arg for kw in call.keywords):
        source = f"_({line})"
        return [(str(kw.arg), kw.value, source) for kw in call.keywords]
    pairs: list[tuple[str, ast.expr, str]] = []
    for chunk in _OPTION_START.split(line):
        chunk = chunk.strip().rstrip(",").strip()
        if not chunk:
            continue
        name, eq, text = chunk.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise ConfigurationError(f"expected option=value, got {chunk!r}")
        try:
            node = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            raise ConfigurationError(f"option {name}: {text.strip()!r} is not a Python literal") from None
        pairs.append((name, node, text.strip()))
    return pairs


def _note(text: str) -> None:
    """A one-line note under the cell: a quiet grey line in a kernel, stdout elsewhere.

    Never stderr (Jupyter paints it pink, as if something broke) and never through the
    cell's own stdout capture (a cached cell must not replay opero's notes).
    """
    line = f"[opero] {text}"
    if widgets_available():
        from IPython.display import display

        from ._html import esc

        quiet = (
            '<div class="opero-note" style="color:var(--jp-ui-font-color2,#757575);'
            f'font-size:var(--jp-ui-font-size0,11px)">{esc(line)}</div>'
        )
        display({"text/html": quiet, "text/plain": line}, raw=True)  # type: ignore[no-untyped-call]
        return
    stream = sys.stdout
    if isinstance(stream, cellcache.Tee):
        stream = stream.stream
    print(line, file=stream)


def _summary(cell: str) -> str:
    for line in cell.splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= 40 else text[:39] + "…"
    return "(empty cell)"


@contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Interrupt the main thread with ``TimeoutError`` after ``seconds`` (a real stop)."""
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: types.FrameType | None) -> None:
        raise TimeoutError(f"cell exceeded timeout={seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _compile(shell: Shell, tree: ast.Module, source: str, raw: str) -> types.CodeType:
    """Compile the cell; its last expression is stored so the magic can return it."""
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        assign = ast.Assign(targets=[ast.Name(id=_RESULT, ctx=ast.Store())], value=last.value)
        tree.body[-1] = ast.copy_location(assign, last)
        ast.fix_missing_locations(tree)
    # a bare InteractiveShell stand-in has no compiler: the cell's code is named plainly
    compiler: CellCompiler | None = getattr(shell, "compile", None)
    if compiler is not None:
        filename = compiler.cache(source, getattr(shell, "execution_count", 0), raw_code=raw)
        flags = compiler.flags
    else:
        filename, flags = "<opero cell>", 0
    # a variable flag leaves typeshed's compile() untyped (PyCF_ONLY_AST would give a tree)
    code: types.CodeType = compile(
        tree, filename, "exec", flags=flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    return code


class _CellFunction:
    """The cell as a function of no arguments, for :class:`Plan`: one call = one run."""

    def __init__(self, shell: Shell, code: types.CodeType, timeout: float | None) -> None:
        self.shell = shell
        self.code = code
        self.timeout = timeout
        self.__name__ = self.__qualname__ = "cell"
        self.__module__ = "__main__"
        #: the stdout of the last (successful) run
        self.stdout = ""

    def __call__(self) -> object:
        __tracebackhide__ = True  # the user's error shows without opero's frames
        ns = self.shell.user_ns
        ns.pop(_RESULT, None)
        tee = cellcache.Tee(sys.stdout)
        previous = sys.stdout
        sys.stdout = tee
        try:
            with _alarm(self.timeout):
                value = eval(self.code, self.shell.user_global_ns, ns)
                if inspect.iscoroutine(value):  # top-level await in the cell
                    run(value)
        finally:
            sys.stdout = previous
            self.stdout = tee.getvalue()
        return ns.pop(_RESULT, None)


def _on_retry(event: Event) -> None:
    error = event.error
    what = f"{type(error).__name__}: {error}" if error is not None else "failed"
    delay = f"; retrying in {event.delay:.2f}s" if event.delay is not None else ""
    _note(f"cell attempt {event.attempt} failed ({what}){delay}")


def _cell_options(explicit: dict[str, object]) -> tuple[Options, str]:
    # A cell runs once unless retries= is given: re-running a whole cell (its side effects,
    # its prints) is a choice the user makes, not a default.
    if "retries" not in explicit and "retries" not in current_overrides():
        explicit["retries"] = 0
    if explicit.get("arg_fallback") is not None:
        raise ConfigurationError("arg_fallback does not apply to a cell (it has no parameters)")
    backend = explicit.pop("cache_backend", "disk")
    if backend not in _CELL_BACKENDS:
        raise ConfigurationError(
            f"cache_backend={backend!r} is not available for cells: "
            "cells cache to 'disk' (default) or 'memory'"
        )
    return resolve_options(explicit), backend


class _Request(NamedTuple):
    """What a ``%%opero`` line asks for."""

    opts: Options
    backend: str
    dashboard: object
    name: object
    retries_given: bool


def _request(shell: Shell, line: str) -> _Request:
    try:
        explicit = parse_options(line, shell.user_ns)
        show_dashboard = explicit.pop("dashboard", True)
        cell_name = explicit.pop("name", None)
        retries_given = "retries" in explicit
        opts, backend = _cell_options(explicit)
    except ConfigurationError as exc:
        raise UsageError(f"ConfigurationError: {exc}") from None
    return _Request(opts, backend, show_dashboard, cell_name, retries_given)


def run_cell(shell: Shell, line: str, cell: str) -> object:
    """Run ``%%opero line`` on ``cell`` in ``shell``; return the value to display (or None).

    Raises:
        UsageError: invalid options (the ConfigurationError's message, without traceback).
    """
    request = _request(shell, line)
    opts = request.opts
    source = shell.transform_cell(cell)
    tree = ast.parse(source)
    names = cellcache.analyse(tree) if opts.cache else None
    silent = source.rstrip().endswith(";")
    name = str(request.name) if request.name else f"%%opero {_summary(cell)}"
    use_alarm = opts.timeout is not None and _can_alarm()
    function = _CellFunction(shell, _compile(shell, tree, source, cell), opts.timeout if use_alarm else None)
    plan = _cell_plan(function, opts, name, use_alarm)

    key = store = None
    inputs: dict[str, object] = {}
    if names is not None and testing_state.cache:
        key, store, inputs = _lookup_key(shell, names, source, opts, request.backend)
        if key is not None and store is not None:
            hit = _try_restore(shell, plan, store, key, opts)
            if hit is not None:
                return None if silent else hit[0]
            plan.stats.add(cache_misses=1)
            plan.recorder.emit("cache_miss")

    dashboard = _open_dashboard(name) if request.dashboard else None
    began = time.perf_counter()
    __tracebackhide__ = True
    result = _call_cell(plan, dashboard, request.retries_given)
    if key is not None and store is not None and names is not None:
        _store(shell, names, inputs, store, key, function.stdout, result, time.perf_counter() - began)
    return None if silent else result


def _cell_plan(function: _CellFunction, opts: Options, name: str, use_alarm: bool) -> Plan:
    """The cell's plan; a cell run before under this name adds to the same stats."""
    user_retry = opts.on_retry

    def on_retry(event: Event) -> None:
        _on_retry(event)
        if user_retry is not None:
            user_retry(event)

    previous = _telemetry.lookup(name) if name in {s.name for s in _telemetry.all_stats()} else None
    plan = Plan(
        function,
        opts.replace(cache=False, on_retry=on_retry, timeout=None if use_alarm else opts.timeout),
        name,
    )
    if previous is not None:
        # Every run of the same cell adds to one row: two runs (cached or not) are two calls.
        _keep_stats(plan, previous)
    return plan


def _open_dashboard(name: str) -> Dashboard | None:
    if not widgets_available():
        return None
    dashboard = Dashboard.for_new_work(title=name, always=(name,), compact=True)
    dashboard.display()
    dashboard.attach()
    return dashboard


def _call_cell(plan: Plan, dashboard: Dashboard | None, retries_given: bool) -> object:
    """Run the plan once; one failed run with no retries asked for raises the user's error."""
    __tracebackhide__ = True
    try:
        return plan.call_sync((), {})
    except AllFailedError as exc:
        _hide_opero_frames(exc)
        if len(exc.errors) != 1 or retries_given:
            raise
        # One run, no retries asked for: the user's own error, not a wrapper of one attempt.
        own = exc.errors[0]
        own.__suppress_context__ = True
        raise own  # noqa: B904 - the wrapper is not news to the user
    except Exception as exc:
        _hide_opero_frames(exc)
        raise
    finally:
        if dashboard is not None:
            dashboard.detach()


def _keep_stats(plan: Plan, stats: _telemetry.FunctionStats) -> None:
    plan.recorder.stats = stats
    plan.stats = stats
    _telemetry.registry.put(stats.name, stats)


_OPERO_DIR = str(Path(__file__).resolve().parents[1])


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without opero's own frames (the user's code and libraries stay)."""
    frames = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_OPERO_DIR):
            frames.append(tb)
        tb = tb.tb_next
    out = None
    for t in reversed(frames):
        out = types.TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


def _hide_opero_frames(exc: BaseException) -> None:
    """Strip opero's frames from ``exc``, its causes and the attempts of an AllFailedError."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = _user_frames(e.__traceback__)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, AllFailedError):
            todo.extend(e.errors)


def _show_interrupt(
    shell: Shell,
    etype: type[BaseException],
    value: BaseException,
    tb: types.TracebackType | None,
    tb_offset: int | None = None,
) -> None:
    """IPython's handler of KeyboardInterrupt: the traceback without opero's frames.

    IPython always shows the innermost frame, even one marked ``__tracebackhide__``; an
    interrupted map (its partial results are in ``fn.last_results()``) is re-raised from
    opero's own frame, which this handler strips.
    """
    value.__traceback__ = tb
    _hide_opero_frames(value)
    shell.showtraceback((etype, value, value.__traceback__), tb_offset=tb_offset)


def install_interrupt_handler(shell: Shell | None) -> bool:
    """Show interrupted maps without opero's frames in ``shell``; True when installed.

    A custom exception handler the user (or another extension) installed is left alone.
    """
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if current == (KeyboardInterrupt,):
        return True
    if current:
        return False
    shell.set_custom_exc((KeyboardInterrupt,), _show_interrupt)
    return True


def _lookup_key(
    shell: Shell, names: cellcache.CellNames, source: str, opts: Options, backend: str
) -> tuple[str | None, cellcache.CellStore | None, dict[str, object]]:
    if names.star_import:
        _note("cell not cached: it uses 'from ... import *', so its names cannot be known")
        return None, None, {}
    hidden = getattr(shell, "user_ns_hidden", {})
    try:
        fingerprints = cellcache.input_fingerprints(names, shell.user_ns, hidden)
    except cellcache.Uncacheable as exc:
        _note(f"cell not cached: {exc}")
        return None, None, {}
    key = cellcache.cell_key(source, opts.cache_namespace, fingerprints)
    store = cellcache.make_store(backend, opts.cache_namespace, opts.cache_backend_config)
    return key, store, dict(fingerprints)


def _try_restore(
    shell: Shell, plan: Plan, store: cellcache.CellStore, key: str, opts: Options
) -> tuple[object] | None:
    began = time.perf_counter()
    entry = cellcache.load_entry(store, key, opts.cache_ttl)
    if entry is None:
        return None
    try:
        result = cellcache.restore(entry, shell.user_ns)
    except Exception as exc:  # a class that changed, a module gone: run the cell instead
        _note(f"cache entry could not be restored ({type(exc).__name__}: {exc}); running the cell")
        return None
    plan.stats.begin()
    plan.stats.add(cache_hits=1)
    plan.recorder.emit("cache_hit")
    plan.stats.end(True, time.perf_counter() - began, 0)
    if entry.stdout:
        sys.stdout.write(entry.stdout)
        sys.stdout.flush()
    restored = [n for n, spec in entry.names.items() if spec[0] != "deleted"]
    shown = ", ".join(restored[:6]) + (", …" if len(restored) > 6 else "")
    age = time.time() - entry.created
    _note(
        f"inputs unchanged: cell skipped, restored {shown or 'its output'} "
        f"(cached {_age(age)} ago, the run took {entry.elapsed:.2f}s)"
    )
    return (result,)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _store(
    shell: Shell,
    names: cellcache.CellNames,
    inputs: dict[str, object],
    store: cellcache.CellStore,
    key: str,
    stdout: str,
    result: object,
    elapsed: float,
) -> None:
    hidden = getattr(shell, "user_ns_hidden", {})
    # An input changed in place (lst.append(...)) would not be replayed by a restore.
    read_only = cellcache.CellNames(tuple(n for n in names.inputs if n not in names.outputs), ())
    try:
        after = dict(cellcache.input_fingerprints(read_only, shell.user_ns, hidden))
    except cellcache.Uncacheable as exc:
        _note(f"cell not cached: {exc}")
        return
    changed = [n for n, fp in after.items() if inputs.get(n) != fp]
    if changed:
        _note(f"cell not cached: it changes its input {changed[0]!r} in place")
        return
    try:
        entry = cellcache.capture_outputs(names, shell.user_ns, stdout, result, elapsed)
    except cellcache.Uncacheable as exc:
        _note(f"cell not cached: {exc}")
        return
    store.set(key, entry.dumps())


def after_cell(*_: object) -> None:
    """``post_run_cell`` hook: at the end of every cell, bring every dashboard up to date.

    A dashboard with no work running then holds its static snapshot alone, so a notebook
    saved now shows the last state (the live widget comes back when work starts again).
    """
    if hub.dashboards:
        hub.sample()
        hub.refresh_all(force=True)
        for board in list(hub.dashboards):
            board.settle()


@magics_class
class OperoMagics(Magics):
    """The ``%opero`` line magic and the ``%%opero`` cell magic."""

    @line_cell_magic
    def opero(self, line: str, cell: str | None = None) -> object:
        """``%%opero [option=value ...]`` runs a cell resiliently; ``%opero help`` lists commands."""
        __tracebackhide__ = True
        if cell is not None:
            if self.shell is None:  # a Magics made without a shell: nowhere to run the cell
                raise UsageError("%%opero runs inside an IPython shell")
            return run_cell(self.shell, line, cell)
        return self._line(line)

    def _line(self, line: str) -> object:
        command, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if command in ("", "help", "-h", "--help"):
            print(USAGE)
            return None
        if command == "dashboard":
            if rest not in ("", "--side"):
                raise UsageError(f"%opero dashboard takes no argument but --side, got {rest!r}")
            show(title="opero dashboard", side=rest == "--side")
            return None
        if command == "stats":
            return _stats()
        if command in ("clear-cache", "clear_cache"):
            from ..stores import clear_cache

            clear_cache(rest or None)
            cellcache.clear_cells(rest or None)
            print(f"opero: cleared {'namespace ' + repr(rest) if rest else 'all caches'}")
            return None
        if command == "config":
            _config(rest, self.shell.user_ns if self.shell is not None else {})
            return None
        if command == "nest":
            import nest_asyncio2

            nest_asyncio2.apply()
            print("opero: nest-asyncio2 applied to this kernel's event loop (asyncio.run now nests)")
            return None
        raise UsageError(f"unknown %opero command {command!r}\n{USAGE}")


def _stats() -> object:
    try:
        from .._telemetry import stats

        return stats()
    except ImportError:  # no pandas: the text table says the same
        print(Dashboard().text())
        return None


def _config(rest: str, user_ns: Mapping[str, object]) -> None:
    if rest == "reset":
        configure()
        print("opero: notebook-wide defaults reset")
        return
    if rest:
        try:
            configure(**parse_options(rest, user_ns))
        except ConfigurationError as exc:
            raise UsageError(f"ConfigurationError: {exc}") from None
    overrides = current_overrides()
    if "cache_backend_config" in overrides:  # never print a redis password
        from ..stores._base import redact_config

        overrides = {**overrides, "cache_backend_config": redact_config(overrides["cache_backend_config"])}
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items())) or "(none: built-in defaults)"
    print(f"opero defaults: {text}")
