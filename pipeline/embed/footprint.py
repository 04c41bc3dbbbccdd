"""Chip footprints in WGS84 longitude/latitude, and their WKB encoding (OGC simple features)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from rasterio import warp

from ofa.ingest.geoparquet import bbox_rings, ccw, wkb_polygons

__all__ = ["footprints", "wkb_polygons"]


def footprints(crs: Sequence[str], transform: np.ndarray, shapes: Sequence[tuple[int, int]],
               bbox: np.ndarray) -> np.ndarray:
    """Closed counterclockwise rings [n, 5, 2] (lon, lat) of each chip's four corners.

    Corners come from the chip's affine ``transform`` and pixel size ``shapes`` (height, width),
    projected from its ``crs``; without those, the WGS84 ``bbox`` rectangle; without either, NaN.
    Chips crossing the antimeridian are not split."""
    n = len(crs)
    rings = bbox_rings(bbox) if n else np.zeros((0, 5, 2))
    hw = np.asarray(shapes, dtype=np.float64).reshape(n, 2)
    cols = np.array([0.0, 1.0, 1.0, 0.0, 0.0])[None] * hw[:, 1:2]   # bottom-left, bottom-right, top-right, top-left
    rows = np.array([1.0, 1.0, 0.0, 0.0, 1.0])[None] * hw[:, 0:1]
    t = transform
    xs = t[:, 0:1] * cols + t[:, 1:2] * rows + t[:, 2:3]
    ys = t[:, 3:4] * cols + t[:, 4:5] * rows + t[:, 5:6]
    ok = np.isfinite(xs).all(axis=1) & np.isfinite(ys).all(axis=1) & np.array([bool(c) for c in crs], dtype=bool)
    for name in sorted({c for c, good in zip(crs, ok) if good}):
        pick = ok & (np.array(crs, dtype=object) == name)
        if name.upper() in ("EPSG:4326", "OGC:CRS84"):
            lon, lat = xs[pick], ys[pick]
        else:
            lon, lat = warp.transform(name, "EPSG:4326", xs[pick].ravel(), ys[pick].ravel())
            lon, lat = np.asarray(lon).reshape(-1, 5), np.asarray(lat).reshape(-1, 5)
        rings[pick] = np.stack([lon, lat], axis=-1)
    return ccw(rings)

