"""opmap faults: dead workers, Ctrl-C, resumable maps, rate limits across process workers."""

from __future__ import annotations
