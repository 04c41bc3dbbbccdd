"""``ofa ingest --plan``: what a run would do, read from the items and the asset headers alone.

For each item: each band's asset and href, its scale, offset and no data and where each came from
(the item's ``raster:bands``, the processing-baseline rule, a catalog flag, the registry), the quantity
and any conversion, the georeferencing route (geotransform, or GCPs with the ground sampling they
show, the target CRS and pixel size), the cloud mask and the chip windows it would cut; per collection
the totals: items, chips, the bytes the run would read (the COG headers' tile sizes under the chip
windows) and at most write (every chip kept). No pixel is read: files are opened for their headers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from ofa.ingest.config import IngestConfig
from ofa.ingest.items import ChannelPlan, ItemError, ItemPlan, plan_item

#: bytes a sample adds besides its pixels: the .npy header, meta.json and two tar headers with padding
SAMPLE_OVERHEAD = 128 + 1024 + 2 * 512


def _block_bytes(ds: Any, rects: list[tuple[int, int, int, int]] | None) -> int | None:
    """Compressed bytes of ``ds``'s full-resolution blocks (its TIFF tile index) that the pixel rectangles
    ``rects`` (row0, row1, col0, col1) touch, all of them when None; None when the file has no such index."""
    try:
        bh, bw = ds.block_shapes[0]
        if ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1) is None:
            return None
    except Exception:  # noqa: BLE001 - not a TIFF, or a driver without block metadata
        return None
    rows, cols = math.ceil(ds.height / bh), math.ceil(ds.width / bw)
    blocks: set[tuple[int, int]] = set()
    for r0, r1, c0, c1 in rects if rects is not None else [(0, ds.height, 0, ds.width)]:
        r0, r1 = max(0, r0 // bh), min(rows, -(-r1 // bh))
        c0, c1 = max(0, c0 // bw), min(cols, -(-c1 // bw))
        blocks.update((i, j) for i in range(r0, r1) for j in range(c0, c1))
    bands = range(1, ds.count + 1) if str(getattr(ds.interleaving, "name", "")).upper() == "BAND" else [1]
    return sum(int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b) or 0) for b in bands for i, j in blocks)


def _source_rects(ds: Any, grid: Any, rows: list[int], cols: list[int], size: int) -> list | None:
    """The pixel rectangles of asset ``ds`` under the chip rows (None: the whole file, for geocoded rasters)."""
    from ofa.ingest.grid import bounds_window, grid_bounds

    if getattr(ds, "grid", None) is not None or not hasattr(ds, "transform"):
        return None
    rects = []
    for row in rows:
        bounds = grid_bounds(grid.transform, cols[0], row, cols[-1] + size - cols[0], size)
        c, r, w, h = bounds_window(ds.transform, bounds)
        rects.append((int(math.floor(r)), int(math.ceil(r + h)), int(math.floor(c)), int(math.ceil(c + w))))
    return rects


def _georeferencing(reader: Any, plan: ItemPlan, grid: Any) -> dict:
    """How the item's pixels are put on the map: its finest asset's geotransform, or GCP geocoding."""
    finest = next(c for c in plan.channels if c.valid and reader.grids[c.href].transform == grid.transform)
    ds = getattr(reader, "datasets", {}).get(finest.href)
    gcp = getattr(ds, "grid", None)
    out = {"route": "geotransform", "crs": grid.crs_text, "pixel_size": [abs(grid.transform.a), abs(grid.transform.e)],
           "shape": [grid.height, grid.width], "asset": finest.asset}
    if ds is None:
        out["route"] = "zarr coordinates"
    if gcp is not None:
        out.update(route=f"GCPs ({len(ds.ds.gcps[0])}, thin-plate spline, nearest)",
                   source_shape=[gcp.src_height, gcp.src_width],
                   ground_sampling=[round(v, 3) for v in gcp.sampling], nominal_spacing=finest.spacing)
    return out


def _band(ch: ChannelPlan) -> dict:
    origins = dict(ch.origins)
    if not ch.valid:
        return {"band": ch.name, "asset": None, "valid": False, "note": "not in the item (or left out by --bands): "
                                                                          "zero-filled, band_valid false"}
    out = {"band": ch.name, "asset": ch.asset, "href": ch.href, "valid": True,
           "scale": ch.scale, "scale_from": origins.get("scale", "registry"),
           "offset": ch.offset, "offset_from": origins.get("offset", "registry"),
           "nodata": ch.nodata, "nodata_from": origins.get("nodata", "registry")}
    if "#" in ch.href:
        out.update(scale_from=f"{out['scale_from']} unless the array's CF attributes say otherwise (read at open)",
                   offset_from=f"{out['offset_from']} unless the array's CF attributes say otherwise (read at open)")
    if ch.unit:
        out["unit"] = ch.unit
    if ch.convert:
        out.update(convert=ch.convert, source_nodata=ch.source_nodata,
                   scale_from="1: converted values", offset_from="0: converted values",
                   nodata_from=f"{ch.nodata:g} marks converted pixels without a value")
        if ch.calibration:
            out["calibration"] = ch.calibration
    return out


def _notes(item: dict, plan: ItemPlan, georef: dict) -> list[str]:
    """What the item says that the run does not use, and why."""
    notes = []
    shape = (item.get("properties") or {}).get("proj:shape")
    src = georef.get("source_shape") or georef["shape"]
    if plan.sar and shape and list(shape) == src[::-1] and src[0] != src[1]:
        notes.append(f"item proj:shape {list(shape)} is [samples, lines] (Earth Search GRD convention); the file "
                     f"is {src[0]} lines x {src[1]} samples")
    if georef["route"].startswith("GCPs"):
        notes.append("item proj:transform not used: it is fitted to the bbox, not the pixels' georeferencing")
    return notes


def plan_one(item: dict, cfg: IngestConfig, sign: Callable[[str], str]) -> dict:
    """The plan of one item (``skipped`` with the reason where the run would skip it)."""
    from ofa.ingest.chips import chip_grid, open_grid
    from ofa.ingest.job import _aoi
    from ofa.ingest.formats import reader_for

    entry: dict[str, Any] = {"item_id": str(item.get("id")), "collection": str(item.get("collection"))}
    try:
        plan = dataclasses.replace(plan_item(item, cfg.bands, policy=cfg.href_policy(), limits=cfg.read_limits()),
                                   aoi=_aoi(cfg))
    except ItemError as exc:
        return {**entry, "skipped": str(exc), "chips": 0}
    entry.update(sensor=plan.sensor, quantity=plan.quantity, quantity_from=plan.quantity_from,
                 bands=[_band(c) for c in plan.channels],
                 cloud_mask=None if not plan.mask_asset else {
                     "asset": plan.mask_asset, "href": plan.mask_href, "rule": plan.mask_rule,
                     "cloud": list(plan.mask_cloud), "fill": list(plan.mask_fill)})
    # the grid does not depend on the conversion: no calibration annotation is fetched for a plan
    headers = dataclasses.replace(plan, channels=tuple(dataclasses.replace(c, convert=None) for c in plan.channels))
    try:
        with reader_for(headers, sign) as reader:
            headers, grid = open_grid(headers, reader)
            entry["georeferencing"] = _georeferencing(reader, headers, grid)
            entry["notes"] = _notes(item, plan, entry["georeferencing"])
            rows, cols = chip_grid(headers, grid, cfg.chip_size)
            entry["chips"] = len(rows) * len(cols)
            entry["bytes_read"] = _bytes_read(reader, headers, grid, rows, cols, cfg.chip_size)
    except ItemError as exc:
        return {**entry, "skipped": str(exc), "chips": 0}
    itemsize = 4 if any(c.convert for c in plan.channels) else _itemsize(reader, headers)
    entry["bytes_write"] = entry["chips"] * (len(plan.channels) * cfg.chip_size ** 2 * itemsize + SAMPLE_OVERHEAD)
    return entry


def _itemsize(reader: Any, plan: ItemPlan) -> int:
    import numpy as np

    return max(np.dtype(reader.grids[c.href].dtypes[c.index - 1]).itemsize for c in plan.channels if c.valid)


def _bytes_read(reader: Any, plan: ItemPlan, grid: Any, rows: list[int], cols: list[int], size: int) -> int | None:
    """The compressed bytes under the chip windows, over every asset read (None when a file does not say)."""
    total = 0
    hrefs = dict.fromkeys([c.href for c in plan.channels if c.valid] + ([plan.mask_href] if plan.mask_href else []))
    for href in hrefs:
        ds = getattr(reader, "datasets", {}).get(href)
        if ds is None:
            return None
        n = _block_bytes(getattr(ds, "ds", ds), _source_rects(ds, grid, rows, cols, size))
        if n is None:
            return None
        total += n
    return total


def plan_run(cfg: IngestConfig) -> dict:
    """Search like the run would, plan every item from its metadata and asset headers, and total per collection."""
    from ofa.ingest.items import clean_href
    from ofa.ingest.job import resolve_hook
    from ofa.ingest.search import search_items

    sign = resolve_hook(cfg.sign_href)
    items = search_items(cfg.catalog, cfg.search_params(), cfg.ids, cfg.read_limits())
    entries = [plan_one(item, cfg, sign) for item in items]
    totals: dict[str, dict] = {}
    for e in entries:
        t = totals.setdefault(e["collection"], {"items": 0, "skipped": 0, "chips": 0, "bytes_read": 0, "bytes_write": 0})
        t["items"] += 1
        t["skipped"] += 1 if e.get("skipped") else 0
        t["chips"] += e["chips"]
        for key in ("bytes_read", "bytes_write"):
            t[key] = None if t[key] is None or (e.get(key) is None and not e.get("skipped")) else t[key] + (e.get(key) or 0)
    return {"catalog": clean_href(cfg.catalog), "search": cfg.search_params().to_dict(), "chip_size": cfg.chip_size,
            "items": entries, "collections": dict(sorted(totals.items()))}


def _size(n: int | None) -> str:
    if n is None:
        return "unknown (no tile index)"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _band_line(b: dict) -> str:
    if not b["valid"]:
        return f"    {b['band']:<6} -  {b['note']}"
    text = (f"    {b['band']:<6} {b['asset']}  {b['href']}\n"
            f"           scale {b['scale']:g} ({b['scale_from']}), offset {b['offset']:g} ({b['offset_from']}), "
            f"nodata {b['nodata']} ({b['nodata_from']})")
    if b.get("convert"):
        text += f", convert {b['convert']}" + (f" with {b['calibration']}" if b.get("calibration") else "")
    return text


def _item_text(e: dict) -> list[str]:
    head = f"{e['item_id']}  ({e['collection']}"
    if "sensor" in e:
        head += f" -> {e['sensor']}, {e['quantity']}: {e['quantity_from']}"
    lines = [head + ")"]
    if e.get("skipped"):
        lines.append(f"  skipped: {e['skipped']}")
    g = e.get("georeferencing")
    if g:
        px = "x".join(f"{v:g}" for v in g["pixel_size"])
        route = g["route"] + (f", ground sampling {g['ground_sampling'][0]:g} x {g['ground_sampling'][1]:g} m "
                              f"(range x azimuth), nominal {g['nominal_spacing'] or 'not stated'}"
                              if "ground_sampling" in g else "")
        lines.append(f"  grid: {g['crs']}, {px} px, {g['shape'][0]} x {g['shape'][1]} px from {g['asset']!r}; {route}")
        lines.append(f"  chips: {e['chips']}, read {_size(e.get('bytes_read'))}, "
                     f"write at most {_size(e.get('bytes_write'))}")
    mask = e.get("cloud_mask")
    if "bands" in e:
        lines.append("  cloud mask: " + (f"{mask['asset']} ({mask['rule']}: cloud {mask['cloud']}, fill {mask['fill']})"
                                         if mask else "none (cloud_fraction null: not measured)"))
        lines += [_band_line(b) for b in e["bands"]]
    lines += [f"  note: {n}" for n in e.get("notes", [])]
    return lines


def format_plan(report: dict) -> str:
    """The plan as plain text: every item, then per collection and overall totals."""
    lines = [f"ofa ingest --plan: {len(report['items'])} items from {report['catalog']}, chips of "
             f"{report['chip_size']} px (no pixel read; chips before the nodata/cloud filters)", ""]
    for e in report["items"]:
        lines += _item_text(e) + [""]
    for cid, t in report["collections"].items():
        lines.append(f"collection {cid}: {t['items']} items ({t['skipped']} skipped), {t['chips']} chips, "
                     f"read {_size(t['bytes_read'])}, write at most {_size(t['bytes_write'])}")
    totals = list(report["collections"].values())
    if len(totals) > 1:
        read = None if any(t["bytes_read"] is None for t in totals) else sum(t["bytes_read"] for t in totals)
        lines.append(f"all: {sum(t['items'] for t in totals)} items ({sum(t['skipped'] for t in totals)} skipped), "
                     f"{sum(t['chips'] for t in totals)} chips, read {_size(read)}, "
                     f"write at most {_size(sum(t['bytes_write'] or 0 for t in totals))}")
    return "\n".join(lines)
