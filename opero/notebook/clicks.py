"""A stop click that reaches a map running in the cell itself (ipykernel 7).

Jupyter runs widget callbacks (a button's ``on_click``) in the kernel's main thread, between
cells: a map that runs in the cell holds that thread, so its stop button's click would only
be handled once the map is over. ipykernel 7 receives every shell message in a thread of its
own (the shell channel thread) and asks the message's comm where to route it
(``comm._reply_subshell_for(data, default)``) before handing it to the main thread. The stop
buttons wrap that method: a click calls the button's action right there (setting the map's
stop event, which is thread-safe) and the message then goes on as usual, so the widget's own
``on_click`` runs later as well (stopping twice is harmless).

Older kernels have no shell channel thread: there the button of a map that holds the main
thread stays disabled and says to interrupt the kernel instead (the interrupt keeps the
partial results, see ``fn.last_results()``). ``docs/decisions.md`` says why this was chosen
over the ``jupyter-ui-poll`` package.
"""

from __future__ import annotations

from collections.abc import Callable

from .._telemetry import logger

__all__ = ["hook", "supported"]


def supported() -> bool:
    """True when this kernel routes comm messages through their comm in its shell channel thread."""
    try:
        from ipykernel.comm.comm import BaseComm
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()  # type: ignore[no-untyped-call]
    kernel = getattr(shell, "kernel", None)
    return (
        kernel is not None
        and getattr(kernel, "shell_channel_thread", None) is not None
        and callable(getattr(BaseComm, "_reply_subshell_for", None))
    )


def _is_click(data: object) -> bool:
    if not isinstance(data, dict) or data.get("method") != "custom":
        return False
    content = data.get("content")
    return isinstance(content, dict) and content.get("event") == "click"


def hook(button: object, action: Callable[[], object]) -> bool:
    """Run ``action`` as soon as ``button`` is clicked, even while the main thread is busy.

    ``action`` runs in the kernel's shell channel thread: it must be quick and thread-safe
    (setting a map's stop event). Returns False when the kernel cannot do it.
    """
    comm = getattr(button, "comm", None)
    route = getattr(comm, "_reply_subshell_for", None)
    if comm is None or not callable(route) or not supported():
        return False

    def routed(data: object, default: object) -> object:
        if _is_click(data):
            try:
                action()
            except Exception:  # never break the kernel's message routing
                logger.debug("opero: stop click failed", exc_info=True)
        return route(data, default)

    comm._reply_subshell_for = routed
    return True
