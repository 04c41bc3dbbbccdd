"""Test hook: ``OFA_EMBED_KILL_AT=name`` (or ``name:n``, the n-th time) makes the job SIGKILL itself there,
so tests can stop it at exact points (between a region's chunks and its progress mark, mid-finish)."""
from __future__ import annotations

import os
import signal

_COUNTS: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``OFA_EMBED_KILL_AT`` names this point (and its count is reached)."""
    point, _, nth = os.environ.get("OFA_EMBED_KILL_AT", "").partition(":")
    if point == name:
        _COUNTS[name] = _COUNTS.get(name, 0) + 1
        if _COUNTS[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
