"""The installed ofa version: recorded in every manifest and printed by ``ofa --version``."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed ofa version ("unknown" when run from a bare checkout)."""
    try:
        return version("ofa")
    except PackageNotFoundError:
        return "unknown"
