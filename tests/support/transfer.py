"""The least an ingest must fetch from object storage for a set of chips, to compare what it did fetch
(counted by ``support.faultproxy.FaultProxy(meter=True)``) against.

For every item, the chip windows ``ofa ingest`` visits (kept and dropped: ``chip_grid`` of the item's
reference grid) are mapped onto each asset it reads (the bands and the cloud mask; a coarser asset at
the pixels that hold the chip pixels' centres, as the readers sample it). The minimum is then

* bytes: the stored size of every tile (COG: TIFF ``TileByteCounts``; Zarr: chunk object) that one of
  those windows touches, each counted once, plus one header read per asset (COG: the bytes before the
  first tile, i.e. the IFDs and tile index; Zarr: the store's consolidated metadata once per store, or
  without it the root's and each array's ``zarr.json``);
* tile rows: the distinct rows of tiles touched per asset (per band for band-interleaved COGs), i.e.
  the requests a reader that fetches each tile row in one range request would make.

``needed_*``: the same over the windows whose pixels ingest must read: every window of the cloud mask,
but the bands only of the windows the mask does not condemn (ingest plans each chip row from the mask
and reads no band of a chip it drops), which is below the minimum above when chips are dropped.

Computed from the local files before they are uploaded (the same bytes as on the server).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


@dataclass
class Minimum:
    """The least bytes and the tile rows for a set of chips (see the module docstring)."""

    tile_bytes: int = 0
    header_bytes: int = 0
    tile_rows: int = 0
    tiles: int = 0
    needed_tile_bytes: int = 0
    needed_tile_rows: int = 0
    needed_tiles: int = 0
    assets: int = 0
    chips: int = 0
    per_asset: dict[str, dict] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.tile_bytes + self.header_bytes

    @property
    def needed_bytes(self) -> int:
        return self.needed_tile_bytes + self.header_bytes

    def add(self, key: str, header: int, every: tuple[int, int, int], needed: tuple[int, int, int]) -> None:
        """An asset: its header bytes and (tile bytes, tile rows, tiles) under every window and the needed ones."""
        self.header_bytes += header
        self.tile_bytes, self.tile_rows, self.tiles = (a + b for a, b in zip((self.tile_bytes, self.tile_rows, self.tiles), every))
        self.needed_tile_bytes += needed[0]
        self.needed_tile_rows += needed[1]
        self.needed_tiles += needed[2]
        self.assets += 1
        self.per_asset[key] = {"header_bytes": header, "tile_bytes": every[0], "tile_rows": every[1], "tiles": every[2],
                               "needed_tile_bytes": needed[0], "needed_tile_rows": needed[1], "needed_tiles": needed[2]}

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "tile_bytes": self.tile_bytes, "header_bytes": self.header_bytes,
                "tile_rows": self.tile_rows, "tiles": self.tiles, "needed_bytes": self.needed_bytes,
                "needed_tile_rows": self.needed_tile_rows, "needed_tiles": self.needed_tiles, "assets": self.assets,
                "chips": self.chips}


def ratio_line(traffic: dict, minimum: Minimum, objects: bool = False) -> str:
    """``bytes 1.12x minimum, requests 1.60x tile rows`` with the measured values beside (and the same
    against the needed windows' minimum; with ``objects``, the requests per needed tile too: a Zarr
    chunk is an object of its own, one GET at least)."""
    got, n = traffic["get_bytes"], traffic["requests"]
    per_tile = f"; {n / max(1, minimum.needed_tiles):.2f}x the {minimum.needed_tiles} chunks" if objects else ""
    return (f"bytes {got / max(1, minimum.bytes):.2f}x minimum ({got:,} B of {minimum.bytes:,}; "
            f"{got / max(1, minimum.needed_bytes):.2f}x the needed windows' {minimum.needed_bytes:,}), "
            f"requests {n / max(1, minimum.tile_rows):.2f}x tile rows ({n} for {minimum.tile_rows}; "
            f"{n / max(1, minimum.needed_tile_rows):.2f}x the needed windows' {minimum.needed_tile_rows}{per_tile})")


def _span(start: int, n: int, ref_off: float, ref_step: float, off: float, step: float, size: int) -> tuple[int, int] | None:
    """Pixels [lo, hi) of an axis of ``size`` pixels (origin ``off``, spacing ``step``) that hold the
    centres of reference pixels [start, start + n); None when they miss it."""
    first, last = (int(math.floor((ref_off + (p + 0.5) * ref_step - off) / step)) for p in (start, start + n - 1))
    lo, hi = max(min(first, last), 0), min(max(first, last) + 1, size)
    return (lo, hi) if lo < hi else None


def touched(ref, g, windows: list[tuple[int, int]], chip: int, block: tuple[int, int]) -> set[tuple[int, int]]:
    """(tile row, tile col) of an asset grid ``g`` (``transform``, ``height``, ``width``) with tiles of
    ``block`` (rows, cols) under the chip windows (row, col offsets on the reference grid ``ref``)."""
    t = g.transform
    if t.b or t.d or ref.b or ref.d:
        raise ValueError("rotated grids are not handled")
    out: set[tuple[int, int]] = set()
    for row, col in windows:
        ys = _span(row, chip, ref.f, ref.e, t.f, t.e, g.height)
        xs = _span(col, chip, ref.c, ref.a, t.c, t.a, g.width)
        if ys is None or xs is None:
            continue
        for i in range(ys[0] // block[0], (ys[1] - 1) // block[0] + 1):
            for j in range(xs[0] // block[1], (xs[1] - 1) // block[1] + 1):
                out.add((i, j))
    return out


@dataclass
class _Windows:
    """One item's chip windows on local files."""

    grids: dict                          # href -> the reader's Grid
    ref: object                          # the reference grid's transform
    every: list[tuple[int, int]]         # (row, col) of every chip window
    needed: list[tuple[int, int]]        # those the cloud mask does not condemn
    reads: dict[str, list[int]]          # band href -> band indexes
    mask: str | None                     # the cloud mask's href


def _item_windows(item: dict, chip: int) -> _Windows:
    from ofa.ingest.chips import _Chipper, chip_grid, open_grid
    from ofa.ingest.config import ChipOptions
    from ofa.ingest.hrefs import LOCAL_FILES
    from ofa.ingest.items import plan_item
    from ofa.ingest.plans import identity_href
    from ofa.ingest.formats import reader_for

    plan = plan_item(item, policy=LOCAL_FILES)
    with reader_for(plan, identity_href) as reader:
        plan, grid = open_grid(plan, reader)
        rows, cols = chip_grid(plan, grid, chip)
        chipper = _Chipper(plan, ChipOptions(chip_size=chip), reader, grid, cols, None)
        needed = [(r, c) for r in rows for c, keep in zip(cols, chipper.plan_row(r)[0]) if keep]
        grids = dict(reader.grids)
    return _Windows(grids, grid.transform, [(r, c) for r in rows for c in cols], needed,
                    {h: list(idx) for h, idx in grid.reads.items()}, plan.mask_href)


def _assets(w: _Windows):
    """(href, band indexes, the windows read from it) of every asset an item reads."""
    for href, bands in w.reads.items():
        yield href, bands, w.needed
    if w.mask and w.mask not in w.reads:
        yield w.mask, [1], w.every


def cog_minimum(items: list[dict], chip: int) -> Minimum:
    """The minimum for ingesting ``items`` (COG assets at local paths) in ``chip`` px chips."""
    import rasterio
    from rasterio.enums import Interleaving

    from ofa.ingest.plans import read_href

    out = Minimum()
    for item in items:
        w = _item_windows(item, chip)
        out.chips += len(w.every)
        for href, bands, needed in _assets(w):
            with rasterio.open(read_href(href)) as ds:
                planes = [1] if ds.count > 1 and ds.interleaving == Interleaving.pixel else sorted(set(bands))

                def cost(windows: list) -> tuple[int, int, int]:
                    tiles = touched(w.ref, w.grids[href], windows, chip, ds.block_shapes[0])
                    size = sum(int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b) or 0) for b in planes for i, j in tiles)
                    return size, len({i for i, _ in tiles}) * len(planes), len(tiles) * len(planes)

                out.add(href, _cog_header(read_href(href)), cost(w.every), cost(needed))
    return out


def _cog_header(path: str) -> int:
    """Bytes before a COG's first tile: its IFDs and tile index (all levels)."""
    import rasterio

    first = os.path.getsize(path)
    with rasterio.open(path) as ds:
        levels = len(ds.overviews(1))
    for level in [None, *range(levels)]:
        with rasterio.open(path, **({} if level is None else {"overview_level": level})) as ds:
            for b in range(1, ds.count + 1):
                offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=b) or 0)
                if offset:
                    first = min(first, offset)
    return first


def zarr_minimum(items: list[dict], chip: int) -> Minimum:
    """The minimum for ingesting ``items`` (Zarr assets: hrefs ``store#path|path`` in local folders)."""
    import zarr

    out = Minimum()
    stores: set[str] = set()
    for item in items:
        w = _item_windows(item, chip)
        out.chips += len(w.every)
        for href, _, needed in _assets(w):
            root, _, wanted = href.partition("#")
            path = next(p for p in wanted.split("|") if p and _is_array(root, p))
            arr = zarr.open_array(zarr.storage.LocalStore(root, read_only=True), path=path, mode="r")
            if arr.ndim != 2:
                raise ValueError(f"{href}: only (y, x) arrays are handled")

            def cost(windows: list) -> tuple[int, int, int]:
                tiles = touched(w.ref, w.grids[href], windows, chip, tuple(arr.chunks))
                size = sum(_size(os.path.join(root, path, arr.metadata.encode_chunk_key((i, j)))) for i, j in tiles)
                return size, len({i for i, _ in tiles}), len(tiles)

            consolidated = os.path.exists(os.path.join(root, ".zmetadata"))
            header = 0 if consolidated else _size(os.path.join(root, path, "zarr.json"))   # unconsolidated v3
            if root not in stores:
                stores.add(root)
                header += _size(os.path.join(root, ".zmetadata" if consolidated else "zarr.json"))
            out.add(href, header, cost(w.every), cost(needed))
    return out


def _is_array(root: str, path: str) -> bool:
    return any(os.path.exists(os.path.join(root, path, name)) for name in (".zarray", "zarr.json"))


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0   # a missing chunk is fill: nothing to fetch

