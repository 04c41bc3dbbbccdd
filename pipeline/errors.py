"""Failures at the CLI edge: one line naming the bad URL or option and a fix, an exit code per kind.

Code raises plain exceptions (``ValueError`` for bad options, ``ManifestError``/``CheckpointError``
for bad inputs, ``ingest.storage.StorageError`` or the storage client's own for storage); the
``ofa`` command maps them here. ``--debug`` (or ``OFA_DEBUG=1``) also prints the traceback.
Exceptions of no known kind are bugs and keep their traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

EXIT_FAILED = 1    # the work ran and failed (non-finite losses, --strict items, damaged shards, no task evaluated)
EXIT_USAGE = 2     # a bad option or config file (argparse uses 2 too)
EXIT_INPUT = 3     # a dataset, manifest, checkpoint, collection or benchmark folder missing or not what it should be
EXIT_STORAGE = 4   # storage or catalog unreachable, no credentials, access denied
EXIT_CONFLICT = 5  # the run folder holds a run with other model/data options
EXIT_INTERRUPTED = 130

#: exception class names (anywhere in the class's MRO) per exit code, most specific kinds first
_KINDS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (EXIT_CONFLICT, ("RunConflictError",)),
    (EXIT_INPUT, ("UnknownCollectionError",)),
    (EXIT_STORAGE, ("StorageError", "SearchError")),
    (EXIT_INPUT, ("ManifestError", "CheckpointError", "GeoBenchError", "UnpicklingError", "FileNotFoundError",
                  "IsADirectoryError", "NotADirectoryError", "UnknownSensorError", "InputError")),
    (EXIT_FAILED, ("NonFiniteLossError", "IngestError")),
    (EXIT_USAGE, ("ValueError", "YAMLError")),
)


class InputError(ValueError):
    """An input (dataset, checkpoint, folder) that is missing or not what it should be."""


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc``, or None when it is of no known kind (a bug: keep the traceback)."""
    from ofa.ingest.storage import is_storage_error  # here: fsspec is not loaded for `ofa --help`

    names = {c.__name__ for c in type(exc).__mro__}
    for code, kinds in _KINDS:
        if names.intersection(kinds):
            return code
    return EXIT_STORAGE if is_storage_error(exc) else None


def _urls(args: argparse.Namespace) -> list[str]:
    """``--option URL`` pairs of the command line that name remote storage."""
    found = []
    for key, value in sorted(vars(args).items()):
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and "://" in v and not v.startswith(("http://", "https://")):
                found.append(f"--{key.replace('_', '-')} {v}" if key != "url" else v)
    return found


def message(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """One line for ``exc``; a raw storage client error names the storage URLs of the command line."""
    from ofa.ingest.storage import StorageError, is_storage_error

    if not isinstance(exc, StorageError) and is_storage_error(exc):
        exc = StorageError(", ".join(_urls(args)) if args is not None else "storage", exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def command_name(args: argparse.Namespace) -> str:
    """``ofa train``, ``ofa manifest show``, ... from the parsed command."""
    return " ".join(["ofa", *([args.command] if getattr(args, "command", None) else [])])


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                prog: str | None = None) -> int:
    """``func(args)`` with failures mapped to one line on stderr and their exit code."""
    debug = bool(getattr(args, "debug", False)) or os.environ.get("OFA_DEBUG", "") not in ("", "0")
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised when of no known kind
        code = exit_code(exc)
        if code is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"{prog or command_name(args)}: error: {message(exc, args)}", file=sys.stderr)
        return code
