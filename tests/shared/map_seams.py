"""Helpers shared by tests/unit/test_map_seams.py and tests/integration/test_map_seams.py."""

from __future__ import annotations

import pickle
import socket
import threading

from opero import AllFailedError
from opero._errors import RemoteError


class ApiError(Exception):
    """Shaped like API client errors: two arguments, so unpickling cannot rebuild it."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class HoldsSocket(Exception):
    """An exception holding an open socket and a lock: it cannot be pickled at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.sock = socket.socket()
        self.lock = threading.Lock()


def _api_failure(x: int) -> int:
    if x == 3:
        raise ApiError(503, "busy backend")
    if x == 5:
        raise HoldsSocket("socket went away")
    return x * 2


def _check_failures(out: list[object]) -> None:
    assert [out[i] for i in (0, 1, 2, 4, 6, 7)] == [0, 2, 4, 8, 12, 14]
    api, held = out[3], out[5]
    assert isinstance(api, AllFailedError) and isinstance(held, AllFailedError)
    first = api.errors[0]
    assert isinstance(first, RemoteError)
    assert first.type_name == f"{__name__}.ApiError"
    assert first.message == "503: busy backend"
    assert first.status == 503
    assert 'raise ApiError(503, "busy backend")' in first.traceback_text
    assert "_api_failure" in first.traceback_text
    sock = held.errors[0]
    assert isinstance(sock, RemoteError)
    assert sock.type_name == f"{__name__}.HoldsSocket"
    assert sock.message == "socket went away"
    assert "HoldsSocket" in sock.traceback_text
    # what the map returns pickles and hashes (results can be cached, shown, stored)
    again = pickle.loads(pickle.dumps(api))
    assert isinstance(again.errors[0], RemoteError) and again.errors[0].message == "503: busy backend"
