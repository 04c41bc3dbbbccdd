"""The GeoParquet (1.1) layout of an embedding job: one row per sample, one file.

Regions are written as part files under ``OUT.parts/`` (each whole: a local rename or one PUT), so a
killed job keeps what it finished and processes never share a file; the last step streams the parts,
in order, into ``OUT`` (one row group per region: bounded memory) with the ``geo`` metadata and the
job's attributes (key ``ofa_embed``), then removes ``OUT.parts/``.
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ofa.ingest.geoparquet import BBOX_FIELDS, bbox_type, geo_metadata, union_bbox, wkb_polygons

from .encode import Columns
from .plan import Plan, Region
from .storage import Target
from .zarr_out import OutputError

JOB_FILE = "_job.json"


def schema(dim: int, metadata: dict[bytes, bytes] | None = None) -> Any:
    """The table schema; ``embedding`` a fixed-size list of ``dim`` float32."""
    return pa.schema([
        ("sample", pa.string()), ("item_id", pa.string()), ("collection", pa.string()), ("sensor", pa.string()),
        ("dataset", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
        ("crs", pa.string()), ("transform", pa.list_(pa.float64(), 6)),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("bbox", bbox_type()),
        ("geometry", pa.binary()),
    ], metadata=metadata)


def table(cols: Columns, dim: int) -> Any:
    """``Columns`` as a pyarrow Table: WKB footprints; ``bbox`` (the GeoParquet covering column) is the
    chip's WGS84 bounds from its meta.json, which enclose the footprint (its edges densified), else the
    footprint's own bounds."""
    ring = cols.footprint
    rings = np.concatenate([ring.min(axis=1), ring.max(axis=1)], axis=1)  # [n, 4] bounds of each footprint
    box = np.where(np.isfinite(cols.bbox).all(axis=1, keepdims=True), cols.bbox, rings)
    bounds = [dict(zip(BBOX_FIELDS, map(float, b))) if np.isfinite(b).all() and np.isfinite(r).all() else None
              for b, r in zip(box, ring.reshape(len(ring), -1))]
    n = len(cols)
    return pa.Table.from_pydict({
        "sample": cols.sample, "item_id": cols.item_id, "collection": cols.collection, "sensor": cols.sensor,
        "dataset": cols.dataset,
        "datetime": pa.array(cols.datetime.astype("datetime64[us]"), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
        "crs": cols.crs,
        "transform": pa.FixedSizeListArray.from_arrays(pa.array(cols.transform.reshape(-1)), 6),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(cols.embedding.reshape(-1), pa.float32()), dim),
        "bbox": pa.array(bounds, schema(dim).field("bbox").type) if n else pa.array([], schema(dim).field("bbox").type),
        "geometry": pa.array(wkb_polygons(cols.footprint), pa.binary()),
    }, schema=schema(dim))


class ParquetWriter:
    """Writes an embedding job's ``Columns`` into one GeoParquet file at ``url``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, plan: Plan, dim: int,
                 attrs: dict[str, Any]) -> None:
        self.target = Target(url, storage_options)
        self.parts = Target(f"{url.rstrip('/')}.parts", storage_options)
        self.plan, self.dim, self.attrs = plan, dim, attrs

    def _part(self, index: int) -> str:
        return self.parts.path(f"part-{index:08d}.parquet")

    def status(self) -> str:
        """``new``, ``resume`` or ``done``; raises ``OutputError`` for a file this job must not touch."""
        t, fp = self.target, self.attrs["ofa_embed_fingerprint"]
        if t.fs.exists(t.root):
            try:
                with t.fs.open(t.root, "rb") as f:
                    found = json.loads((pq.read_metadata(f).metadata or {}).get(b"ofa_embed", b"{}"))
            except Exception:  # noqa: BLE001 - not a Parquet file at all
                found = {}
            if found.get("ofa_embed_fingerprint") == fp:
                return "done"
            raise OutputError(f"{t.url}: exists and was not written by this ofa embed job (other inputs or options); "
                              "remove it or choose another --out")
        job = self.parts.read(self.parts.path(JOB_FILE))
        if job is None:
            return "new"
        if json.loads(job).get("ofa_embed_fingerprint") != fp:
            raise OutputError(f"{self.parts.url}: parts of an ofa embed job with other inputs or options; "
                              "rerun with those, or remove it")
        return "resume"

    def create(self) -> None:
        self.parts.put(self.parts.path(JOB_FILE), json.dumps(self.attrs, sort_keys=True).encode())

    def done(self) -> set[int]:
        try:
            names = self.parts.fs.ls(self.parts.root, detail=False)
        except FileNotFoundError:
            return set()
        stems = [n.rstrip("/").rsplit("/", 1)[-1] for n in names]
        return {int(s[5:13]) for s in stems if s.startswith("part-") and s.endswith(".parquet") and s[5:13].isdigit()}

    def write(self, region: Region, cols: Columns) -> None:
        """Write one region as a part file (whole or not at all)."""
        self.parts.put(self._part(region.index), self._encode_part(region, cols))

    def _encode_part(self, region: Region, cols: Columns) -> bytes:
        """One region's part file, in memory."""
        if len(cols) != region.size:
            raise RuntimeError(f"region {region.index}: {len(cols)} samples encoded, {region.size} planned")
        tab = table(cols, self.dim)
        boxes = [list(b.values()) for b in tab.column("bbox").to_pylist() if b is not None]
        tab = tab.replace_schema_metadata({b"ofa_part_bbox": json.dumps(union_bbox(boxes)).encode()})
        buf = io.BytesIO()
        pq.write_table(tab, buf, compression="zstd")
        return buf.getvalue()

    def finish(self) -> None:
        """Stream the parts into ``OUT`` with the ``geo`` metadata; remove the parts."""
        self._write_file()
        self.cleanup()

    def _write_file(self) -> None:
        """``OUT`` from the parts, whole or not at all."""
        parts = [self._part(r.index) for r in self.plan.regions]
        boxes = []
        for path in parts:
            with self.parts.fs.open(path, "rb") as f:
                box = json.loads(pq.read_metadata(f).metadata[b"ofa_part_bbox"])
            if box is not None:
                boxes.append(box)
        meta = {b"geo": json.dumps(geo_metadata(union_bbox(boxes))).encode(),
                b"ofa_embed": json.dumps({**self.attrs, "ofa_embed_status": "complete"}, sort_keys=True).encode(),
                # the geo-embeddings convention's facts, one key each, as the Zarr layout's root attributes
                **{k.encode(): json.dumps(v).encode() for k, v in self.attrs.items() if k.startswith("geoemb:")}}
        t = self.target
        final = f"{t.root}.tmp" if t.local else t.root
        with t.fs.open(final, "wb") as out, pq.ParquetWriter(out, schema(self.dim, meta), compression="zstd") as writer:
            for path in parts:
                with self.parts.fs.open(path, "rb") as f:
                    writer.write_table(pq.read_table(f).replace_schema_metadata(meta))
        if t.local:
            t.fs.mv(final, t.root)

    def cleanup(self) -> None:
        """Remove ``OUT.parts/`` (left by a job killed after its file was written)."""
        if self.parts.fs.exists(self.parts.root):
            self.parts.fs.rm(self.parts.root, recursive=True)

    def preview_rows(self, step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every ``step``-th sample's ``(embedding, bbox, sensor)``, row group by row group."""
        with self.target.fs.open(self.target.root, "rb") as f:
            pf, start = pq.ParquetFile(f), 0
            for g in range(pf.num_row_groups):
                tab = pf.read_row_group(g, columns=["embedding", "bbox", "sensor"])
                rows = np.arange(-start % step, tab.num_rows, step)
                start += tab.num_rows
                tab = tab.take(rows)
                emb = tab.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, self.dim)
                box = np.array([[np.nan] * 4 if b is None else list(b.values()) for b in tab.column("bbox").to_pylist()])
                yield emb, box.reshape(-1, 4), np.asarray(tab.column("sensor").to_pylist(), dtype=str)
