"""Run ``ofa`` with ``ofa embed`` SIGKILLing itself at a named point (the embed resume tests).

    python tests/embed_kill.py POINT[:N] embed --checkpoint ... --data ... --out ...

Points, patched around the writers' own steps (production code holds no test hook), the N-th time:
``chunks`` (a region's data made but not yet recorded as done: Zarr chunks written before the progress
mark, a GeoParquet part encoded before it is written), ``region`` (after a region is written and recorded)
and ``finish`` (mid-finish: a Zarr store marked complete before its progress array is dropped and its
metadata consolidated; the GeoParquet file written before its parts are removed).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

from ingest_kill import after

#: per point, the (writer class, method) after which it is reached
POINTS = {
    "chunks": (("ZarrWriter", "_write_chunks"), ("ParquetWriter", "_encode_part")),
    "region": (("ZarrWriter", "write"), ("ParquetWriter", "write")),
    "finish": (("ZarrWriter", "_mark_complete"), ("ParquetWriter", "_write_file")),
}


def install(at: str, action: Callable[[], None] | None = None,
            patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make ``action`` (default: SIGKILL this process) run at point ``at`` (``name`` or ``name:n``, the n-th time)."""
    from ofa.pipeline.embed import parquet_out, zarr_out

    point, _, nth = at.partition(":")
    if point not in POINTS:
        raise ValueError(f"unknown kill point {point!r}; expected one of {sorted(POINTS)}")
    seen = [0]
    act = action or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    def reached(*_: Any, **__: Any) -> None:
        seen[0] += 1
        if seen[0] >= int(nth or 1):
            act()

    modules = {"ZarrWriter": zarr_out, "ParquetWriter": parquet_out}
    for cls, method in POINTS[point]:
        after(getattr(modules[cls], cls), method, reached, patch)


def main(argv: list[str]) -> int:
    from ofa.pipeline.cli import main as ofa

    install(argv[0])
    return ofa(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
