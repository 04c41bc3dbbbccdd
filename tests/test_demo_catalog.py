"""The embedded demo catalog follows the real documents' structure and its COGs match the items."""
from __future__ import annotations

import numpy as np
import rasterio

from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog


def test_items_describe_their_cogs(tmp_path):
    collections, items = write_demo_catalog(tmp_path)
    assert {c["id"] for c in collections} == set(DEMO_COLLECTIONS)
    for item in items:
        for key, asset in item["assets"].items():
            with rasterio.open(asset["href"]) as src:
                assert list(src.shape) == asset["proj:shape"], (item["id"], key)
                assert list(src.transform)[:6] == asset["proj:transform"], (item["id"], key)
                assert src.crs.to_epsg() == item["properties"]["proj:epsg"]
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", (item["id"], key)
                bands = asset.get("raster:bands")
                if bands:
                    assert src.dtypes[0] == bands[0]["data_type"]
                    assert src.nodata == bands[0].get("nodata")


def test_real_catalog_conventions(tmp_path):
    _, items = write_demo_catalog(tmp_path)
    by_collection = {i["collection"]: i for i in items}
    s2 = by_collection["sentinel-2-l2a"]
    assert {"red", "nir08", "swir22", "scl"} <= set(s2["assets"])          # Earth Search keys
    assert s2["assets"]["red"]["raster:bands"][0]["offset"] == -0.1         # baseline >= 04.00
    assert s2["assets"]["rededge1"]["proj:shape"] == [192, 192]            # 20 m band on a 10 m item
    landsat = by_collection["landsat-c2-l2"]["assets"]
    assert landsat["SR_B4"]["raster:bands"][0]["scale"] == 2.75e-05
    assert landsat["SR_B4"]["raster:bands"][0]["offset"] == -0.2
    naip = by_collection["naip"]["assets"]["image"]
    assert [b["name"] for b in naip["eo:bands"]] == ["Red", "Green", "Blue", "NIR"]
    with rasterio.open(naip["href"]) as src:
        assert src.count == 4


def test_cloud_masks_flag_bright_pixels(tmp_path):
    _, items = write_demo_catalog(tmp_path)
    s2 = next(i for i in items if i["collection"] == "sentinel-2-l2a")
    with rasterio.open(s2["assets"]["scl"]["href"]) as src:
        scl = src.read(1)
    with rasterio.open(s2["assets"]["blue"]["href"]) as src:
        blue = src.read(1, out_shape=scl.shape, resampling=rasterio.enums.Resampling.nearest)
    cloudy, clear = blue[scl == 9], blue[(scl == 4)]
    assert cloudy.size and clear.size
    assert np.median(cloudy) > 2 * np.median(clear)


def test_second_call_reuses(tmp_path):
    first = write_demo_catalog(tmp_path)
    stamp = (tmp_path / "items.json").stat().st_mtime_ns
    assert write_demo_catalog(tmp_path) == first
    assert (tmp_path / "items.json").stat().st_mtime_ns == stamp
