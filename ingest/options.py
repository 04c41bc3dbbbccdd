"""Options from a YAML file, shared by ``ofa ingest --config`` and ``ofa train --config``."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any


def load_yaml_options(path: str, known: Collection[str]) -> dict[str, Any]:
    """Read ``path`` as a mapping of option names (dashes or underscores) to values.

    Raises ``ValueError`` naming the file for bad YAML, a non-mapping document or an unknown
    option; ``OSError`` (e.g. a missing file) passes through.
    """
    import yaml

    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values, got {type(doc).__name__}")
    out = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"{path}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        out[name] = value
    return out
