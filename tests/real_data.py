"""The shared real data (``OFA_REAL_DATA``: a folder holding ``real/``, ``stac/`` and ``raster/``, see its
README): where it is, and its STAC Items as a STAC API serves them (asset hrefs resolved against the
item file's folder). Tests reading it carry ``pytest.mark.real`` and skip, with the reason, without it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ENV = "OFA_REAL_DATA"


def real_data_root() -> Path:
    """The folder ``OFA_REAL_DATA`` names; skips the calling test (one line, the reason) when unset or absent."""
    value = os.environ.get(ENV)
    if not value:
        pytest.skip(f"{ENV} is not set: real-pixel tests need it to name the shared data folder (holding real/)")
    root = Path(value).expanduser().resolve()
    if not (root / "real").is_dir():
        pytest.skip(f"{ENV}={value} holds no real/ folder")
    return root


def resolve_hrefs(item: dict, folder: Path) -> dict:
    """``item`` with relative asset hrefs made absolute against ``folder`` (the item file's), as a catalog
    serving the files would; absolute paths and URLs stay as they are."""
    for asset in item.get("assets", {}).values():
        href = str(asset.get("href", ""))
        if href and "://" not in href and not href.startswith("/"):
            asset["href"] = str((folder / href).resolve())
    return item


def real_items(root: Path) -> dict[str, dict]:
    """Every STAC Item under ``root/real`` (``<collection>/<item_id>/<item_id>.json``), by id, hrefs resolved."""
    items = {}
    for path in sorted((root / "real").glob("*/*/*.json")):
        doc = json.loads(path.read_text())
        if doc.get("type") == "Feature" and path.stem == doc.get("id"):
            items[doc["id"]] = resolve_hrefs(doc, path.parent)
    return items
