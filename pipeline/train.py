"""``accelerate launch -m ofa.pipeline.train``: ``ofa train`` as a module to launch, with the same options.

Light to import: the ``ofa`` command sets the CPU threads (``pipeline.threads``) before the training loop
(``pipeline.trainer``) loads torch.
"""
from __future__ import annotations

import sys

from ofa.pipeline.cli import launch_main


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``accelerate launch -m ofa.pipeline.train``: the options of ``ofa train``."""
    return launch_main("train", argv)


if __name__ == "__main__":
    sys.exit(main())
