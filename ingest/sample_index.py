"""The dataset's sample index, ``index.parquet``: one GeoParquet 1.1 row per sample, from the samples'
own ``meta.json``, so a user can ask "which samples lie here, then, this clear" with DuckDB or GeoPandas
without opening a shard.

Rows follow the manifest's shard order and each shard's member order; the file holds nothing that
differs between rebuilds, so a byte-identical dataset gives a byte-identical index. The footprint
(``geometry``, WKB in OGC:CRS84) is the sample's WGS84 ``bbox`` rectangle, which contains the chip; the
same four numbers are the bbox covering column; ``crs`` and ``transform`` give the chip's exact grid.
"""
from __future__ import annotations

import io
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np

from ofa.ingest.dataset.contract import META_EXT
from ofa.ingest.geoparquet import bbox_rings, bbox_structs, bbox_type, ccw, geo_metadata, union_bbox, wkb_polygons
from ofa.ingest.storage import get_fs, join

INDEX_NAME = "index.parquet"


def schema() -> Any:
    """The index's Arrow schema (without file metadata)."""
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("sensor", pa.string()), ("collection", pa.string()), ("item_id", pa.string()),
        ("shard", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
        ("cloud_fraction", pa.float64()), ("nodata_fraction", pa.float64()), ("quantity", pa.string()),
        ("gsd", pa.float64()), ("crs", pa.string()), ("transform", pa.list_(pa.float64(), 6)),
        ("bbox", bbox_type()), ("geometry", pa.binary()),
    ])


def _shard_metas(data: bytes) -> Iterator[tuple[str, dict]]:
    """``(key, meta.json)`` of each sample of a shard, in member order."""
    suffix = "." + META_EXT
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(suffix):
                yield member.name[: -len(suffix)], json.loads(tar.extractfile(member).read())


def read_metas(url: str, manifest: dict, storage_options: dict | None = None,
               threads: int = 8) -> list[tuple[str, str, dict]]:
    """``(shard path, key, meta)`` of every sample of the dataset at ``url``, in manifest order."""
    fs, root = get_fs(url, storage_options)
    paths = [shard["path"] for shard in manifest.get("shards", [])]

    def one(path: str) -> list[tuple[str, str, dict]]:
        return [(path, key, meta) for key, meta in _shard_metas(fs.cat_file(join(root, path)))]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return [row for rows in pool.map(one, paths) for row in rows]


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 datetime as an aware UTC datetime (naive ones are taken as UTC); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _box(meta: dict) -> list[float]:
    box = meta.get("bbox")
    ok = isinstance(box, list) and len(box) == 4 and all(_number(v) is not None for v in box)
    return [float(v) for v in box] if ok else [float("nan")] * 4


def index_table(rows: list[tuple[str, str, dict]]) -> Any:
    """The index as an Arrow table with its ``geo`` metadata, from ``read_metas``' rows."""
    import pyarrow as pa

    boxes = np.array([_box(meta) for _, _, meta in rows], dtype=np.float64).reshape(-1, 4)
    transforms = [meta.get("transform") if isinstance(meta.get("transform"), list) and len(meta["transform"]) == 6
                  else None for _, _, meta in rows]
    columns = {
        "key": [key for _, key, _ in rows], "shard": [path for path, _, _ in rows],
        "datetime": [_timestamp(meta.get("datetime")) for _, _, meta in rows],
        "transform": transforms, "bbox": bbox_structs(boxes),
        "geometry": wkb_polygons(ccw(bbox_rings(boxes))),
    }
    for name in ("sensor", "collection", "item_id", "quantity", "crs"):
        columns[name] = [None if meta.get(name) is None else str(meta[name]) for _, _, meta in rows]
    for name in ("cloud_fraction", "nodata_fraction", "gsd"):
        columns[name] = [_number(meta.get(name)) for _, _, meta in rows]
    geo = geo_metadata(union_bbox(boxes))
    return pa.Table.from_pydict(columns, schema=schema().with_metadata({b"geo": json.dumps(geo).encode()}))


def index_bytes(table: Any) -> bytes:
    """The Parquet file of ``table`` (zstd, one row group per 64k rows, no statistics that vary)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=65536)
    return buf.getvalue()
