"""The ``ofa`` command: one parser, subcommands contributed by each package.

Each module in ``SUBCOMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` (``args -> exit code``) as a default. Modules import their
heavy dependencies inside ``func`` so ``ofa --help`` stays fast. Failures become one line and an
exit code per kind (``pipeline.errors``); ``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ingest.version import package_version

from pipeline.errors import add_debug_flag, run_command

SUBCOMMAND_MODULES = (
    "pipeline.demo",        # ofa demo
    "ingest.cli",           # ofa ingest, ofa manifest verify|show
    "pipeline.train",       # ofa train
    "pipeline.evaluate.cli",  # ofa eval geobench
    "model.cli",            # ofa model info
    "pipeline.embed.cli",   # ofa embed
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa",
        description="One-for-All Earth observation foundation model: STAC ingest, shards, pretraining, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ofa {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    add_debug_flag(parser, top=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
