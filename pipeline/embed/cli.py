"""``ofa embed``: what it runs; its options are ``EmbedConfig``'s fields (``.config``)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def run_command(args: argparse.Namespace) -> int:
    """``ofa embed``: ``args`` holds ``EmbedConfig``'s options."""
    from ofa.pipeline.options import build

    from .config import EmbedConfig
    from .job import run_embed

    cfg = build(EmbedConfig, vars(args))
    summary = run_embed(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        if summary["status"] == "already done":
            print(f"{cfg.out}: already done ({summary['samples']} samples); nothing to do", file=sys.stderr)
        print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``accelerate launch -m ofa.pipeline.embed``: the options of ``ofa embed``."""
    from ofa.pipeline.cli import launch_main

    return launch_main("embed", argv)
