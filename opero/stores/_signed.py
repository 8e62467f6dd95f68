"""The byte format of a persistent cache entry (disk and redis), optionally HMAC-signed.

An entry is ``MAGIC | flags | expires | [mac] | pickle``:

- ``flags`` bit 0 says the 32-byte digest after the header is an HMAC-SHA256 (keyed by
  ``OPERO_CACHE_SECRET``); otherwise it is a plain SHA-256, which catches corruption (a
  flipped byte could otherwise still unpickle, into a wrong value) but proves nothing;
- ``expires`` is a wall-clock time (``time.time()``, float64), 0.0 for never; it is part of
  the signed bytes, so a writer without the secret cannot extend an entry's life either;
- the MAC covers everything else (header and pickle).

When ``OPERO_CACHE_SECRET`` is set, :func:`decode` checks the MAC on the raw bytes before
anything is unpickled and treats an unsigned or badly signed entry as a miss: whoever can
write the cache could otherwise run code in every process that reads it (a pickle can call
any function while it loads).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct

from .._telemetry import logger
from ._base import MISS

__all__ = ["SECRET_ENV", "decode", "encode"]

SECRET_ENV = "OPERO_CACHE_SECRET"
MAGIC = b"OPC1"
_HEADER = struct.Struct("<4sBd")
_SIGNED = 1
_DIGEST_SIZE = 32


def _secret() -> bytes | None:
    # Read on every use (a dict lookup): setting the variable later in a notebook takes effect.
    secret = os.environ.get(SECRET_ENV)
    return secret.encode() if secret else None


def encode(value: object, expires: float | None) -> bytes:
    """Pickle ``value`` into an entry that expires at wall time ``expires`` (None: never).

    Raises:
        Exception: whatever pickling raises (the caller skips storing).
    """
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    secret = _secret()
    header = _HEADER.pack(MAGIC, _SIGNED if secret else 0, expires or 0.0)
    return header + _digest(secret, header, payload) + payload


def _digest(secret: bytes | None, header: bytes, payload: bytes) -> bytes:
    if secret is None:
        return hashlib.sha256(header + payload).digest()
    return hmac.new(secret, header + payload, hashlib.sha256).digest()


def decode(raw: bytes, now: float, where: str) -> tuple[object, float]:
    """Return ``(value, expires)`` of an entry, or ``(MISS, expires)`` when it is unusable.

    ``expires`` is 0.0 for a never-expiring entry and -1.0 for a corrupt one; an expired
    entry comes back as ``(MISS, expires)`` so the caller can delete it. Nothing is raised:
    corrupt, tampered or unpicklable entries are logged (``where`` names the entry) and missed.
    """
    if len(raw) < _HEADER.size or raw[:4] != MAGIC:
        logger.warning("opero cache: corrupt entry %s (bad header), treated as a miss", where)
        return MISS, -1.0
    _, flags, expires = _HEADER.unpack_from(raw)
    if expires and now >= expires:
        return MISS, expires
    start = _HEADER.size + _DIGEST_SIZE
    if len(raw) < start:
        logger.warning("opero cache: truncated entry %s, treated as a miss", where)
        return MISS, -1.0
    secret = _secret()
    signed = bool(flags & _SIGNED)
    if secret is not None and not signed:
        logger.warning(
            "opero cache: unsigned entry %s ignored because %s is set (not unpickled)", where, SECRET_ENV
        )
        return MISS, -1.0
    # A signed entry read without the secret cannot be checked; it loads like any pickle.
    if secret is not None or not signed:
        digest = _digest(secret, raw[: _HEADER.size], raw[start:])
        if not hmac.compare_digest(digest, raw[_HEADER.size : start]):
            what = "bad signature on" if signed else "corrupt entry (checksum)"
            logger.warning("opero cache: %s %s, entry ignored (not unpickled)", what, where)
            return MISS, -1.0
    try:
        return pickle.loads(raw[start:]), expires
    except Exception as exc:  # truncated or corrupt pickle, a class that no longer exists...
        logger.warning(
            "opero cache: unreadable entry %s (%s: %s), treated as a miss", where, type(exc).__name__, exc
        )
        return MISS, -1.0
