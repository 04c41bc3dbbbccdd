"""Run ``ofa`` with ingest SIGKILLing itself at a named point (the resume tests and bench/reliability.py).

    python tests/ingest_kill.py POINT[:N] ingest --catalog ... --out ...

Points: ``item`` (after the N-th item's samples are in the shard writer), ``item-shards`` (in a Dask
worker, after an item task wrote the shards its samples fill, before the client takes its result),
``shards-{sensor}`` (after that sensor's last shard and progress are saved), ``tasks`` (after all items
are written, before the manifest), ``manifest`` (after the manifest is published, before the staging
folder is removed).
The hooks are patched around ``ingest.job``'s own steps: production code holds no test hook.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

KILL_POINTS = ("item", "tasks", "shards-landsat", "shards-naip", "shards-sentinel-1", "shards-sentinel-2", "manifest")


def after(owner: Any, name: str, hook: Callable[..., None], patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Patch ``owner.name`` (with ``patch``, e.g. pytest's ``monkeypatch.setattr``) so ``hook(*args)`` runs
    after each call of it (the call's result is kept)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        hook(*args, **kwargs)
        return out

    patch(owner, name, wrapped)


def install(at: str, action: Callable[[], None] | None = None,
            patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make ``action`` (default: SIGKILL this process) run at point ``at`` (``name`` or ``name:n``, the n-th time)."""
    from ofa.ingest import job

    point, _, nth = at.partition(":")
    seen = [0]
    act = action or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    def reached(name: str) -> None:
        if name == point:
            seen[0] += 1
            if seen[0] >= int(nth or 1):
                act()

    after(job._InOrderWriter, "add_item", lambda *a, **k: reached("item"), patch)
    after(job, "write_item_shards", lambda *a, **k: reached("item-shards"), patch)
    after(job._InOrderWriter, "finish_sensor", lambda self, sensor, pos: reached(f"shards-{sensor}"), patch)
    after(job, "_write_items", lambda *a, **k: reached("tasks"), patch)
    after(job, "_write_manifest", lambda *a, **k: reached("manifest"), patch)


def main(argv: list[str]) -> int:
    from ofa.pipeline.cli import main as ofa

    install(argv[0])
    return ofa(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
