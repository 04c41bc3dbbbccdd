"""Every sample's ``meta.json`` of a local dataset, read straight from its shards (no ofa code)."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path


def read_metas(dataset: Path) -> dict[str, tuple[str, dict]]:
    """key -> (shard path, meta.json) of every sample, in manifest order."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    out = {}
    for shard in manifest["shards"]:
        with tarfile.open(dataset / shard["path"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".meta.json"):
                    out[m.name[: -len(".meta.json")]] = (shard["path"], json.loads(tar.extractfile(m).read()))
    return out
