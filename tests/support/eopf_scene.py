"""ESA EOPF Sentinel-2 L2A products made from a Sentinel-2 COG item's pixels: the same DNs in the
product layout, for tests and benchmarks that read one scene both ways (nothing is downloaded).

The layout follows the EOPF product format: reflectance under ``measurements/reflectance/r{10,20,60}m/
b02..b12`` (the 10 m bands also downsampled into r20m, as products carry them), the scene
classification under ``conditions/mask/l2a_classification/r20m/scl``, pixel-centre ``x``/``y``
coordinates per resolution group, CF ``scale_factor``/``add_offset``/``_FillValue`` on the uint16
reflectance (the values the COG item's plan gives), blosc/zstd chunks as the products use, and the
CRS as the two product generations give it (Zarr v2 with consolidated metadata: ``proj:epsg`` on each
array; Zarr v3: ``other_metadata.horizontal_CRS_code`` and ``stac_discovery`` at the root).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import rasterio

from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import plan_item
from ofa.ingest.sensors import SENSORS

ZARR = "application/vnd+zarr"
CHUNKS_PER_SIDE = 6   # EOPF cuts a 10980 px tile in 6 x 6 chunks of 1830 px


def _store(path: str):
    import zarr

    return zarr.storage.LocalStore(path)


def _cog(href: str) -> tuple[np.ndarray, Any, str]:
    with rasterio.open(href.split("?")[0]) as ds:
        return ds.read(1), ds.transform, ds.crs.to_string()


def pixel_centres(t, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the pixel centres of a grid (integers where they are whole, as in EOPF products)."""
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
    xs, ys = pixel_centres(t, *shape)
    for name, values in (("x", xs), ("y", ys)):
        attrs = {"_ARRAY_DIMENSIONS": [name]} if fmt == 2 else {}
        arr = group.create_array(name, shape=values.shape, dtype=values.dtype, attributes=attrs,
                                 dimension_names=[name] if fmt == 3 else None)
        arr[:] = values
    assert isinstance(group, zarr.Group)
    return group


def _compressor(fmt: int) -> Any:
    """Blosc with zstd, level 3, bit shuffle: what EOPF products use."""
    if fmt == 2:
        from numcodecs import Blosc

        return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def _write(group, name: str, data: np.ndarray, attrs: dict, fmt: int, chunks_per_side: int) -> None:
    chunk = math.ceil(data.shape[0] / chunks_per_side)
    attrs = {**attrs, **({"_ARRAY_DIMENSIONS": ["y", "x"]} if fmt == 2 else {})}
    fill = attrs.get("_FillValue", 0)
    if fmt == 2:
        attrs.pop("_FillValue", None)   # zarr v2 keeps it as the array's fill_value (xarray reads it as _FillValue)
    arr = group.create_array(name, shape=data.shape, chunks=(chunk, chunk), dtype=data.dtype, fill_value=fill,
                             attributes=attrs, dimension_names=["y", "x"] if fmt == 3 else None,
                             compressors=_compressor(fmt))
    arr[:] = data


def _cf(channel) -> dict:
    """CF encoding attributes that describe the DNs as the COG item's plan does."""
    return {"scale_factor": channel.scale, "add_offset": channel.offset, "_FillValue": channel.nodata,
            "units": "digital_counts"}


def write_eopf_product(item: dict, path: str, zarr_format: int = 2, chunks_per_side: int = CHUNKS_PER_SIDE) -> None:
    """Write the Sentinel-2 COG item ``item``'s bands and SCL as an EOPF L2A product in folder ``path``
    (Zarr ``zarr_format`` 2 or 3), each array cut in ``chunks_per_side`` x ``chunks_per_side`` chunks."""
    import zarr

    s2 = SENSORS["sentinel-2"]
    epsg = int(item["properties"].get("proj:epsg") or str(item["properties"]["proj:code"]).split(":")[1])
    meta = {"other_metadata": {"product_type": "S02MSIL2A"}, "stac_discovery": {"id": item["id"], "properties": {}}}
    if zarr_format == 3:
        meta["other_metadata"]["horizontal_CRS_code"] = f"EPSG:{epsg}"
        meta["stac_discovery"]["properties"]["proj:code"] = f"EPSG:{epsg}"
    root = zarr.open_group(_store(path), mode="w", zarr_format=zarr_format, attributes=meta)
    channels = {c.name: c for c in plan_item(item, policy=LOCAL_FILES).channels}
    for band in s2.bands:
        key = next(k for k in band.keys if k in item["assets"])
        data, t, _ = _cog(item["assets"][key]["href"])
        per_array = {"proj:epsg": epsg, "proj:shape": list(data.shape), "proj:transform": list(t)[:6]} if zarr_format == 2 else {}
        group = _group(root, band.zarr[0].rsplit("/", 1)[0], t, data.shape, zarr_format)
        _write(group, band.name.lower(), data, {**_cf(channels[band.name]), **per_array}, zarr_format, chunks_per_side)
        if band.gsd == 10:   # products also carry the 10 m bands at 20 m
            t20 = t @ t.scale(2)
            half = (data.shape[0] // 2, data.shape[1] // 2)
            down = _group(root, "measurements/reflectance/r20m", t20, half, zarr_format)
            _write(down, band.name.lower(), data[::2, ::2], _cf(channels[band.name]), zarr_format, chunks_per_side)
    key = next(k for k in s2.cloud_mask.keys if k in item["assets"])
    scl, t, _ = _cog(item["assets"][key]["href"])
    group = _group(root, s2.cloud_mask.zarr[0].rsplit("/", 1)[0], t, scl.shape, zarr_format)
    _write(group, "scl", scl, {"_FillValue": 0, "long_name": "scene classification"}, zarr_format, chunks_per_side)
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
