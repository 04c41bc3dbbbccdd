"""What one item may cost before it is read: bounds on the sizes a catalog or a file declares.

A small file can declare an absurd raster (10^6 x 10^6 px, sparse), a tile or chunk that decompresses to
gigabytes, and a STAC server can answer with an endless page or an item nested thousands deep. Each is
refused before it is read, per item, with one line naming the limit and the option that raises it
(a STAC page over its limit fails the search, as nothing of it can be trusted). The defaults sit far above
real products: a Sentinel-2 tile is 10,980 x 10,980 px (0.12 Gpx), an IW GRD about 25,000 x 16,700 px
(0.42 Gpx; geocoded ~0.7 Gpx), COG tiles 256-1024 px, EOPF Zarr chunks a few MB, STAC items tens of kB.

Light (standard library): the ``ofa`` command builds its options from these defaults.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ofa.ingest.plans import ItemError

MiB = 1 << 20
#: marks an item the search refused before planning (its JSON over the limits); the value is the reason
REFUSED_KEY = "ofa:refused"


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one item may declare (plain picklable data: it travels with each item's read plan)."""

    max_raster_pixels: int = 4_000_000_000   # width x height of one raster, geocoded grid or Zarr array
    max_chunk_bytes: int = 256 * MiB         # one TIFF tile/strip, Zarr chunk or SAR annotation, decompressed
    max_stac_bytes: int = 64 * MiB           # one STAC API response (a page of items), decompressed
    max_item_bytes: int = 4 * MiB            # one STAC item's JSON
    max_json_depth: int = 64                 # nesting of one STAC item's JSON

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def check_pixels(self, height: int, width: int, what: str) -> None:
        """Refuse a raster of ``height`` x ``width`` px over ``max_raster_pixels``."""
        if int(height) * int(width) > self.max_raster_pixels:
            raise ItemError(f"raster too large: {what} declares {int(width)} x {int(height)} px, "
                            f"{int(height) * int(width):,} px (limit {self.max_raster_pixels:,}; --max-raster-pixels)")

    def check_chunk(self, nbytes: int, what: str) -> None:
        """Refuse one block of data declaring more than ``max_chunk_bytes`` once decompressed."""
        if int(nbytes) > self.max_chunk_bytes:
            raise ItemError(f"chunk too large: {what} is {int(nbytes):,} bytes decompressed "
                            f"(limit {self.max_chunk_bytes:,}; --max-chunk-bytes)")

    def item_refusal(self, item: Any) -> str | None:
        """Why a STAC item's JSON is refused (nesting, size), None when it is within the limits."""
        if json_deeper_than(item, self.max_json_depth):
            return f"item refused: JSON nested deeper than {self.max_json_depth} levels (--max-json-depth)"
        size = len(json.dumps(item, separators=(",", ":")))
        if size > self.max_item_bytes:
            return f"item refused: {size:,} bytes of JSON (limit {self.max_item_bytes:,}; --max-item-bytes)"
        return None


def json_deeper_than(obj: Any, limit: int) -> bool:
    """Whether parsed JSON nests objects/arrays more than ``limit`` deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        if children and depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def check_raster(limits: ReadLimits, ds: Any, href: str) -> None:
    """Refuse an opened rasterio dataset whose size or blocks (tiles/strips, all bands of a pixel-interleaved
    block) exceed ``limits``: read from the header alone, before any pixel."""
    import numpy as np

    limits.check_pixels(ds.height, ds.width, href)
    pixel = str(getattr(ds.interleaving, "name", "")).upper() == "PIXEL"
    for (bh, bw), dtype in zip(ds.block_shapes, ds.dtypes):
        nbytes = int(bh) * int(bw) * np.dtype(dtype).itemsize * (ds.count if pixel else 1)
        limits.check_chunk(nbytes, f"a {int(bw)} x {int(bh)} px block of {href}")


def refused_stub(item: Any, reason: str) -> dict:
    """What stands for an item refused before planning: its id and collection (cut short) and the reason."""
    get = item.get if isinstance(item, dict) else (lambda key: None)
    return {"id": str(get("id"))[:200], "collection": str(get("collection"))[:200], "properties": {}, "assets": {},
            REFUSED_KEY: reason}
