"""GeoParquet 1.1 pieces shared by the dataset's sample index (``ofa ingest``) and ``ofa embed``'s
GeoParquet output: WKB polygons in OGC:CRS84 and the ``geo`` file metadata with a bbox covering column.

One-ring polygons only (chip footprints); a ring crossing the antimeridian is not split."""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

GEO_VERSION = "1.1.0"
#: the fields of the bbox covering column (a struct), as GeoParquet 1.1 names them
BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"

#: little-endian WKB polygon with one ring of five points
_WKB_HEADER = struct.pack("<BIII", 1, 3, 1, 5)


def ccw(rings: np.ndarray) -> np.ndarray:
    """Rings [n, 5, 2] turned counterclockwise (positive shoelace area), as GeoParquet's orientation says."""
    x, y = rings[..., 0], rings[..., 1]
    area = (x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]).sum(axis=1)
    flip = area < 0
    rings[flip] = rings[flip, ::-1]
    return rings


def bbox_rings(bbox: np.ndarray) -> np.ndarray:
    """Closed counterclockwise rings [n, 5, 2] of the rectangles ``bbox`` [n, 4] (west, south, east, north)."""
    bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    w, s, e, n = bbox[:, 0], bbox[:, 1], bbox[:, 2], bbox[:, 3]
    return np.stack([np.stack([w, s], -1), np.stack([e, s], -1), np.stack([e, n], -1),
                     np.stack([w, n], -1), np.stack([w, s], -1)], axis=1)


def wkb_polygons(rings: np.ndarray) -> list[bytes | None]:
    """WKB (little-endian, 2D) of each ring [n, 5, 2] as a one-ring Polygon; None where a ring is not finite."""
    coords = np.ascontiguousarray(rings, dtype="<f8")
    good = np.isfinite(coords).all(axis=(1, 2))
    return [_WKB_HEADER + coords[i].tobytes() if good[i] else None for i in range(len(coords))]


def bbox_type() -> Any:
    """The Arrow type of the bbox covering column."""
    import pyarrow as pa

    return pa.struct([(name, pa.float64()) for name in BBOX_FIELDS])


def bbox_structs(boxes: np.ndarray) -> list[dict[str, float] | None]:
    """Rows of the covering column from boxes [n, 4]; None where a box is not finite."""
    return [dict(zip(BBOX_FIELDS, map(float, b))) if np.isfinite(b).all() else None
            for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)]


def union_bbox(boxes: list[list[float]] | np.ndarray) -> list[float] | None:
    """The bounds [west, south, east, north] of finite ``boxes``, or None when there are none."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = b[np.isfinite(b).all(axis=1)]
    if not len(b):
        return None
    return [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]


def geo_metadata(bbox: list[float] | None, covering: str = "bbox") -> dict:
    """GeoParquet 1.1 ``geo`` metadata: column ``geometry`` of WKB polygons in OGC:CRS84 (no ``crs`` key means
    exactly that), counterclockwise, planar edges, with the struct column ``covering`` as its bbox covering."""
    column: dict[str, Any] = {
        "encoding": "WKB", "geometry_types": ["Polygon"], "orientation": "counterclockwise", "edges": "planar",
        "covering": {"bbox": {name: [covering, name] for name in BBOX_FIELDS}},
    }
    if bbox is not None:
        column["bbox"] = bbox
    return {"version": GEO_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}
