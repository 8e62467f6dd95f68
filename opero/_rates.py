"""Rates written as people read them: ``"500/min"``, ``"10/s"``, ``"3600/h"``.

``rate_limit`` and ``token_limit`` take a number (per second) or such a string; the string is
turned into a number per second once, when the options are validated, so everything after
that sees a plain float.
"""

from __future__ import annotations

import math
import re

__all__ = ["RATE_FORMS", "parse_rate"]

#: Seconds in each period a rate string may name.
_PERIODS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
#: How the allowed forms are described in error messages.
RATE_FORMS = (
    "'N/s', 'N/min' or 'N/h' (e.g. '500/min', '10/s', '3600/h'; also '/day', '/second', '/minute', '/hour')"
)

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]*)\s*([a-zA-Z]+)\s*$")


def parse_rate(text: str) -> float | None:
    """Units per second from ``"N/period"`` (``"500/min"``, ``"10/s"``, ``"90000/2min"``).

    Args:
        text: the rate string.

    Returns:
        The rate per second (> 0 and finite), or None when ``text`` is not such a string.
    """
    match = _RATE.match(text)
    if match is None:
        return None
    count, multiple, unit = match.groups()
    unit = unit.lower()
    if unit not in _PERIODS and unit.endswith("s") and unit[:-1] in _PERIODS:
        unit = unit[:-1]  # "/mins", "/hours", "/seconds"
    seconds = _PERIODS.get(unit)
    if seconds is None:
        return None
    try:
        amount = float(count)
        period = float(multiple) * seconds if multiple else seconds
    except ValueError:
        return None
    if period <= 0:
        return None
    rate = amount / period
    return rate if math.isfinite(rate) and rate > 0 else None
