"""The Zarr (format 3) layout of an embedding job, written through xarray region by region.

``OUT`` is a group with ``embedding (sample, feature)`` float32, coordinates ``sample`` (key), ``item_id``,
``collection``, ``sensor``, ``dataset`` and ``datetime`` on ``sample``, and ``bbox (sample, corner)``,
``crs (sample)``, ``transform (sample, affine)``. Every array is chunked by the plan's regions along
``sample``. Progress lives in the store: ``_ofa_progress`` is a uint8 array with one chunk per region,
set to 1 after that region's chunks are written (so processes never share a chunk there either). When
all are set, the root's ``ofa_embed_status`` becomes ``complete``, ``_ofa_progress`` is deleted and the
metadata is consolidated (``xarray.open_zarr`` reads it in one request).
"""
from __future__ import annotations

import json
import warnings
from typing import Any, Iterator

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ofa.pipeline.runs import RunConflictError

from .encode import Columns
from .plan import Plan, Region
from .storage import Target

PROGRESS = "_ofa_progress"
CORNERS = ["west", "south", "east", "north"]
AFFINE = ["a", "b", "c", "d", "e", "f"]
_STRINGS = ("sample", "item_id", "collection", "sensor", "dataset")


class OutputError(RunConflictError):
    """An output that cannot be (re)used: someone else's data, or a job with other inputs."""


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=np.dtypes.StringDType())


def region_dataset(cols: Columns) -> Any:
    """``Columns`` as the xarray Dataset of one region (no index: regions are written by position)."""
    coords = {name: ("sample", _strings(getattr(cols, name))) for name in _STRINGS}
    coords["datetime"] = ("sample", cols.datetime)
    return xr.Dataset(
        {"embedding": (("sample", "feature"), cols.embedding), "bbox": (("sample", "corner"), cols.bbox),
         "crs": ("sample", _strings(cols.crs)), "transform": (("sample", "affine"), cols.transform)},
        coords=xr.Coordinates(coords, indexes={}),
    )


def _template(n: int, dim: int, chunk: int, attrs: dict[str, Any]) -> tuple[Any, dict]:
    """A lazy Dataset of the whole store (no data computed) and its encoding."""
    def lazy(shape: tuple[int, ...], dtype: Any, fill: Any = 0) -> Any:
        return da.full(shape, fill, dtype=dtype, chunks=(chunk, *shape[1:]))

    text = np.dtypes.StringDType()
    coords = {name: ("sample", lazy((n,), text, "")) for name in _STRINGS}
    coords["datetime"] = ("sample", lazy((n,), "datetime64[ns]", np.datetime64("NaT")))
    coords["corner"] = ("corner", _strings(CORNERS))
    coords["affine"] = ("affine", _strings(AFFINE))
    ds = xr.Dataset(
        {"embedding": (("sample", "feature"), lazy((n, dim), np.float32, np.nan)),
         "bbox": (("sample", "corner"), lazy((n, 4), np.float64, np.nan)),
         "crs": ("sample", lazy((n,), text, "")),
         "transform": (("sample", "affine"), lazy((n, 6), np.float64, np.nan))},
        coords=xr.Coordinates(coords, indexes={}), attrs=attrs,
    )
    ds["embedding"].attrs["long_name"] = "pooled encoder output"
    ds["bbox"].attrs.update(long_name="chip bounds in WGS84 (west, south, east, north)", units="degrees")
    ds["transform"].attrs["long_name"] = "affine of the chip in its own crs (rasterio order)"
    encoding: dict[str, dict] = {name: {"chunks": (chunk, *ds[name].shape[1:])}
                                 for name in ds.variables if "sample" in ds[name].dims}
    encoding["datetime"].update(units="nanoseconds since 1970-01-01", calendar="proleptic_gregorian", dtype="int64")
    return ds, encoding


class ZarrWriter:
    """Writes an embedding job's ``Columns`` into a Zarr store at ``url``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, plan: Plan, dim: int, chunk: int,
                 attrs: dict[str, Any]) -> None:
        self.target = Target(url, storage_options)
        self.plan, self.dim, self.chunk, self.attrs = plan, dim, chunk, attrs

    def _root_attrs(self) -> dict | None:
        raw = self.target.read(self.target.path("zarr.json"))
        if raw is None:
            return None
        doc = json.loads(raw)
        doc["attributes"]["_consolidated"] = "consolidated_metadata" in doc
        return doc["attributes"]

    def status(self) -> str:
        """``new``, ``resume`` or ``done``; raises ``OutputError`` for a store this job must not touch."""
        t = self.target
        attrs = self._root_attrs()
        if attrs is None:
            if t.fs.exists(t.root) and t.fs.ls(t.root):
                raise OutputError(f"{t.url}: exists and is not an ofa embedding store; remove it or choose another --out")
            return "new"
        mine = attrs.get("ofa_embed_fingerprint")
        if mine is None:
            raise OutputError(f"{t.url}: a Zarr store not written by ofa embed; remove it or choose another --out")
        if mine != self.attrs["ofa_embed_fingerprint"]:
            raise OutputError(f"{t.url}: written by ofa embed from other inputs or options (checkpoint, data, --pool, "
                              f"--batch-size, --chunk-size); rerun with those or choose another --out")
        if attrs.get("ofa_embed_status") == "complete" and attrs["_consolidated"]:
            return "done"
        if attrs.get("ofa_embed_status") == "complete" or t.fs.exists(t.path(PROGRESS, "zarr.json")):
            return "resume"
        return "new"  # killed while writing the metadata: nothing else was written yet

    def create(self) -> None:
        """Write the metadata of every array (no chunks): the plan's shape, chunking and attributes; the
        progress array last, so its presence says the metadata is whole."""
        ds, encoding = _template(self.plan.total, self.dim, self.chunk, {**self.attrs, "ofa_embed_status": "writing"})
        store = self.target.zarr_store()
        ds.to_zarr(store, mode="w", compute=False, zarr_format=3, encoding=encoding, consolidated=False)
        zarr.open_group(store, mode="r+", zarr_format=3).create_array(
            PROGRESS, shape=(len(self.plan.regions),), chunks=(1,), dtype="uint8", fill_value=0,
            dimension_names=("region",))  # named, so xarray opens an unfinished store too

    def _progress(self) -> Any:
        return zarr.open_array(self.target.zarr_store(), path=PROGRESS, mode="r+", zarr_format=3)

    def done(self) -> set[int]:
        """Indices of the regions already written."""
        attrs = self._root_attrs() or {}
        if attrs.get("ofa_embed_status") == "complete":
            return {r.index for r in self.plan.regions}
        return {int(i) for i in np.flatnonzero(self._progress()[:])}

    def write(self, region: Region, cols: Columns) -> None:
        """Write one region's chunks, then record it as done."""
        self._write_chunks(region, cols)
        self._progress()[region.index] = 1

    def _write_chunks(self, region: Region, cols: Columns) -> None:
        if len(cols) != region.size:
            raise RuntimeError(f"region {region.index}: {len(cols)} samples encoded, {region.size} planned")
        region_dataset(cols).to_zarr(self.target.zarr_store(), region={"sample": slice(region.start, region.stop)},
                                     consolidated=False, zarr_format=3)

    def finish(self) -> None:
        """Mark the store complete, drop the progress array, consolidate the metadata."""
        store = self.target.zarr_store()
        group = self._mark_complete(store)
        if PROGRESS in group:
            del group[PROGRESS]
        with warnings.catch_warnings():  # consolidated metadata is zarr-python's, not yet in the v3 spec
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(store, zarr_format=3)

    def _mark_complete(self, store: Any) -> Any:
        """Set the store's status to complete; return its root group."""
        group = zarr.open_group(store, mode="r+", zarr_format=3)
        if group.attrs.get("ofa_embed_status") != "complete":
            group.attrs["ofa_embed_status"] = "complete"
        return group

    def cleanup(self) -> None:
        """Nothing to tidy: a complete store holds no progress array (``finish`` removed it)."""

    def preview_rows(self, step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every ``step``-th sample's ``(embedding, bbox, sensor)``, region by region."""
        ds = xr.open_zarr(self.target.zarr_store())
        for region in self.plan.regions:
            first = -region.start % step
            rows = slice(region.start + first, region.stop, step)
            part = ds.isel(sample=rows)
            yield part["embedding"].values, part["bbox"].values, np.asarray(part["sensor"].values.tolist(), dtype=str)
