"""Zarr stores and STAC items made from the COG fixtures (tests/ingest_fixtures.py): the same pixels
re-encoded as an ESA EOPF Sentinel-2 L2A product (Zarr v2 with consolidated metadata, as in the
early samples, or v3, as in newer ones) and as generic Zarr datacubes, so a test can ingest one scene
both ways and compare.

The EOPF layout follows the product format: reflectance under ``measurements/reflectance/r{10,20,60}m/
b02..b12`` (the 10 m bands also downsampled into r20m, as products carry them), the scene
classification under ``conditions/mask/l2a_classification/r20m/scl``, pixel-centre ``x``/``y``
coordinates per resolution group, CF ``scale_factor``/``add_offset``/``_FillValue`` on the uint16
reflectance, and the CRS as the two product generations give it (v2: ``proj:epsg`` on each array;
v3: ``other_metadata.horizontal_CRS_code`` and ``stac_discovery`` at the root).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import rasterio

from ingest.items import plan_item
from ingest.sensors import SENSORS

ZARR = "application/vnd+zarr"
CHUNKS_PER_SIDE = 4   # EOPF cuts a 10980 px tile in 6 x 6 chunks; 4 keep the fixture small


def _store(path: str):
    import zarr

    return zarr.storage.LocalStore(path)


def _cog(href: str) -> tuple[np.ndarray, Any, str]:
    with rasterio.open(href.split("?")[0]) as ds:
        return ds.read(1), ds.transform, ds.crs.to_string()


def _centres(t, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs = t.c + (np.arange(width) + 0.5) * t.a
    ys = t.f + (np.arange(height) + 0.5) * t.e
    as_int = np.all(xs == np.round(xs)) and np.all(ys == np.round(ys))
    return (xs.astype(np.int64), ys.astype(np.int64)) if as_int else (xs, ys)


def _group(root, path: str, t, shape: tuple[int, int], fmt: int):
    import zarr

    try:
        return root[path]
    except KeyError:
        pass
    group = root.require_group(path)
    xs, ys = _centres(t, *shape)
    for name, values in (("x", xs), ("y", ys)):
        attrs = {"_ARRAY_DIMENSIONS": [name]} if fmt == 2 else {}
        arr = group.create_array(name, shape=values.shape, dtype=values.dtype, attributes=attrs,
                                 dimension_names=[name] if fmt == 3 else None)
        arr[:] = values
    assert isinstance(group, zarr.Group)
    return group


def _write(group, name: str, data: np.ndarray, attrs: dict, fmt: int) -> None:
    chunk = math.ceil(data.shape[0] / CHUNKS_PER_SIDE)
    attrs = {**attrs, **({"_ARRAY_DIMENSIONS": ["y", "x"]} if fmt == 2 else {})}
    fill = attrs.get("_FillValue", 0)
    if fmt == 2:
        attrs.pop("_FillValue", None)   # zarr v2 keeps it as the array's fill_value (xarray reads it as _FillValue)
    arr = group.create_array(name, shape=data.shape, chunks=(chunk, chunk), dtype=data.dtype, fill_value=fill,
                             attributes=attrs, dimension_names=["y", "x"] if fmt == 3 else None)
    arr[:] = data


def _cf(channel) -> dict:
    """CF encoding attributes that describe the DNs as the COG item's plan does."""
    return {"scale_factor": channel.scale, "add_offset": channel.offset, "_FillValue": channel.nodata,
            "units": "digital_counts"}


def write_eopf_product(item: dict, path: str, zarr_format: int = 2) -> None:
    """Write the Sentinel-2 COG item ``item``'s bands and SCL as an EOPF L2A product in folder ``path``
    (tests upload it to the local S3 server)."""
    import zarr

    s2 = SENSORS["sentinel-2"]
    epsg = int(item["properties"].get("proj:epsg") or str(item["properties"]["proj:code"]).split(":")[1])
    meta = {"other_metadata": {"product_type": "S02MSIL2A"}, "stac_discovery": {"id": item["id"], "properties": {}}}
    if zarr_format == 3:
        meta["other_metadata"]["horizontal_CRS_code"] = f"EPSG:{epsg}"
        meta["stac_discovery"]["properties"]["proj:code"] = f"EPSG:{epsg}"
    root = zarr.open_group(_store(path), mode="w", zarr_format=zarr_format, attributes=meta)
    channels = {c.name: c for c in plan_item(item).channels}
    for band in s2.bands:
        key = next(k for k in band.keys if k in item["assets"])
        data, t, _ = _cog(item["assets"][key]["href"])
        per_array = {"proj:epsg": epsg, "proj:shape": list(data.shape), "proj:transform": list(t)[:6]} if zarr_format == 2 else {}
        group = _group(root, band.zarr[0].rsplit("/", 1)[0], t, data.shape, zarr_format)
        _write(group, band.name.lower(), data, {**_cf(channels[band.name]), **per_array}, zarr_format)
        if band.gsd == 10:   # products also carry the 10 m bands at 20 m
            t20 = t @ t.scale(2)
            down = _group(root, "measurements/reflectance/r20m", t20, (data.shape[0] // 2, data.shape[1] // 2), zarr_format)
            _write(down, band.name.lower(), data[::2, ::2], _cf(channels[band.name]), zarr_format)
    key = next(k for k in s2.cloud_mask.keys if k in item["assets"])
    scl, t, _ = _cog(item["assets"][key]["href"])
    group = _group(root, s2.cloud_mask.zarr[0].rsplit("/", 1)[0], t, scl.shape, zarr_format)
    _write(group, "scl", scl, {"_FillValue": 0, "long_name": "scene classification"}, zarr_format)
    if zarr_format == 2:
        zarr.consolidate_metadata(root.store)


def eopf_item(item: dict, product: str, layout: str = "product") -> dict:
    """The COG item ``item`` as the EOPF STAC API serves it: the whole product as one asset
    (``layout="product"``), or also assets at its arrays and groups (``layout="assets"``)."""
    out = copy.deepcopy(item)
    props = out["properties"]
    epsg = props.pop("proj:epsg", None)
    if epsg:
        props["proj:code"] = f"EPSG:{epsg}"
    props.pop("proj:shape", None)
    assets: dict[str, dict] = {
        "product": {"href": product, "type": ZARR, "roles": ["data", "metadata"], "title": "EOPF Product"},
        "product_metadata": {"href": f"{product}/.zmetadata", "type": "application/json", "roles": ["metadata"]},
    }
    if layout == "assets":
        for band in SENSORS["sentinel-2"].bands:
            key = next(k for k in band.keys if k in item["assets"])
            entry = dict((item["assets"][key].get("eo:bands") or [{}])[0])
            bands = [{"name": band.name, "eo:common_name": band.common_name,
                      "eo:center_wavelength": entry.get("center_wavelength", band.wavelength)}]
            assets[f"{band.name}_{int(band.gsd)}m"] = {
                "href": f"{product}/{band.zarr[0]}", "type": ZARR, "roles": ["data", "reflectance"],
                "gsd": band.gsd, "bands": bands}
            if band.gsd == 10:   # the 20 m copy is listed too; the native array must win
                assets[f"{band.name}_20m"] = {"href": f"{product}/measurements/reflectance/r20m/{band.name.lower()}",
                                              "type": ZARR, "roles": ["data", "reflectance"], "gsd": 20, "bands": bands}
        assets["SCL_20m"] = {"href": f"{product}/conditions/mask/l2a_classification/r20m", "type": ZARR,
                             "roles": ["data", "dataset"], "gsd": 20}
    out["assets"] = assets
    return out


def write_datacube(item: dict, path: str, href: str, band_dim: bool = False) -> dict:
    """A generic datacube (Zarr v3, no consolidated metadata) in folder ``path`` (served at ``href``)
    of the COG item ``item``: one
    ``(time, y, x)`` variable per band and mask asset (``band_dim=False``), or one ``(band, y, x)``
    variable per asset with a CF grid mapping (``band_dim=True``, multi-band assets such as NAIP's).
    Returns the item with one Zarr asset (``cube:*`` metadata) in place of the COGs."""
    import zarr

    keys = [k for k, a in item["assets"].items() if str(a["href"]).split("?")[0].endswith(".tif")]
    root = zarr.open_group(_store(path), mode="w", zarr_format=3)
    variables: dict[str, dict] = {}
    dims: dict[str, dict] = {}
    for key in keys:
        with rasterio.open(item["assets"][key]["href"].split("?")[0]) as ds:
            data, t, crs, nodata = ds.read(), ds.transform, ds.crs, ds.nodata
        xs, ys = _centres(t, data.shape[1], data.shape[2])
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
