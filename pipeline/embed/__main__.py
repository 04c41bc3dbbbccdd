"""``accelerate launch -m ofa.pipeline.embed ...``: the same options as ``ofa embed``, one process per device."""
import sys

from .cli import main

sys.exit(main())
