"""Generic Zarr datacubes made from the COG fixtures (tests/ingest_fixtures.py), with the same pixels,
so a test can ingest one scene both ways and compare (EOPF products: ``support.eopf_scene``)."""
from __future__ import annotations

import copy

import numpy as np
import rasterio
import zarr

from support.eopf_scene import ZARR, pixel_centres


def write_datacube(item: dict, path: str, href: str, band_dim: bool = False) -> dict:
    """A generic datacube (Zarr v3, no consolidated metadata) in folder ``path`` (served at ``href``)
    of the COG item ``item``: one ``(time, y, x)`` variable per band and mask asset (``band_dim=False``;
    two time steps, the item's second), or one ``(band, y, x)`` variable per asset with a CF grid
    mapping (``band_dim=True``, multi-band assets such as NAIP's).
    Returns the item with one Zarr asset (``cube:*`` metadata) in place of the COGs."""
    keys = [k for k, a in item["assets"].items() if str(a["href"]).split("?")[0].endswith(".tif")]
    root = zarr.open_group(zarr.storage.LocalStore(path), mode="w", zarr_format=3)
    variables: dict[str, dict] = {}
    dims: dict[str, dict] = {}
    for key in keys:
        with rasterio.open(item["assets"][key]["href"].split("?")[0]) as ds:
            data, t, crs, nodata = ds.read(), ds.transform, ds.crs, ds.nodata
        xs, ys = pixel_centres(t, data.shape[1], data.shape[2])
        for name, values in (("x", xs), ("y", ys)):
            if name not in root:
                root.create_array(name, shape=values.shape, dtype=values.dtype, dimension_names=[name])[:] = values
        attrs = {} if nodata is None else {"_FillValue": nodata}
        if band_dim:   # one multi-band asset (NAIP's image)
            names = [b["name"] for b in item["assets"][key].get("eo:bands") or []]
            root.create_array("band", shape=(len(names),), dtype=str, dimension_names=["band"])[:] = np.array(names)
            root.create_array("spatial_ref", shape=(), dtype="int64", attributes={"crs_wkt": crs.to_wkt()})
            arr = root.create_array(key, shape=data.shape, chunks=(data.shape[0], 120, 120), dtype=data.dtype,
                                    dimension_names=["band", "y", "x"], attributes={**attrs, "grid_mapping": "spatial_ref"})
            dims["band"] = {"type": "bands", "values": names}
            variables[key] = {"dimensions": ["band", "y", "x"], "type": "data"}
        else:   # two time steps: another date (other pixels), then the item's
            arr = root.create_array(key, shape=(2, *data.shape[1:]), chunks=(1, 120, 120), dtype=data.dtype,
                                    dimension_names=["time", "y", "x"], attributes=attrs)
            variables[key] = {"dimensions": ["time", "y", "x"], "type": "data"}
            data = np.concatenate([data[:1][:, ::-1], data[:1]])
        arr[:] = data
    if not band_dim:
        stamp = np.datetime64(item["properties"]["datetime"].rstrip("Z"), "s").astype("int64")
        root.create_array("time", shape=(2,), dtype="int64", dimension_names=["time"],
                          attributes={"units": "seconds since 1970-01-01", "calendar": "standard"})[:] = \
            np.array([stamp - 16 * 86400, stamp])
    out = copy.deepcopy(item)
    entries = [e for key in keys for e in out["assets"].pop(key).get("eo:bands") or []]
    out["assets"]["cube"] = {"href": href, "type": ZARR, "roles": ["data"], "eo:bands": entries, "cube:variables": variables,
                             "cube:dimensions": {"x": {"type": "spatial", "axis": "x"}, "y": {"type": "spatial", "axis": "y"},
                                                 **dims}}
    return out
