"""Samples traced back to their source pixels through a real STAC API: every chip equals an independent
rasterio read of the same window (coarser bands at the pixel holding each chip pixel's centre), its
transform, CRS and bbox are the window's, reflectance is DN * scale + offset with the offset the
product's processing baseline implies, and ``cloud_fraction`` is the SCL / QA_PIXEL count made here.

Runs on a fresh clone. Real pixels: the Sentinel-2 L1C crop (13 bands, B10 included, no cloud mask).
Real Items with synthetic pixels: Planetary Computer L2A before and after baseline 04.00, Landsat C2 L2
with QA_PIXEL. Also: an item smaller than one chip is a ``skipped`` entry with its reason, and the
progress bar's ``kept=`` is the run's total. The real pixels of those products (and of Sentinel-1, NAIP)
are traced in ``test_ingest_real_pixels.py`` (``OFA_REAL_DATA``)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

sys.path.insert(0, str(Path(__file__).parent))
from ingest_fixtures import (  # noqa: E402
    CLOUDY_LANDSAT, ES_S2, L1C_KEYS, LEGACY_S2, PC_S2, collections_for, load_item, localize_item, real_l1c_item,
)

from ofa.infra.localstack import stac_server  # noqa: E402
from ofa.ingest.job import IngestConfig, run_ingest  # noqa: E402

CHIP = 80
PC_2024 = "S2B_MSIL2A_20240419T095549_R122_T47XML_20240419T123458"   # baseline 05.10
PC_2022 = "S2B_MSIL2A_20220612T182919_R027_T24XWR_20220613T123251"   # baseline 04.00
PC_2019 = PC_S2                                                       # baseline 02.12
LANDSAT = CLOUDY_LANDSAT
L1C = "S2A_33UUU_20170216_0_L1C"
TINY = "TINY_naip_item"
#: the offset each item's reflectance must carry (DN / 10000 + offset for Sentinel-2)
EXPECTED_OFFSET = {PC_2024: -0.1, PC_2022: -0.1, PC_2019: 0.0, L1C: 0.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ingest over the real STAC API; yields (items by id, manifest, samples by item, captured stderr)."""
    root = tmp_path_factory.mktemp("real-pixels")
    tiny = load_item("naip", "pr_m_1806544_nw_20_030_20221212_20230329")
    tiny["id"] = TINY
    items = [real_l1c_item(item_id=L1C), localize_item(tiny, root, size=CHIP // 2)]
    items += [localize_item(load_item("sentinel-2-l2a", stem), root) for stem in (PC_2024, PC_2022, PC_2019)]
    items.append(localize_item(load_item("landsat-c2-l2", LANDSAT), root))
    out = tmp_path_factory.mktemp("ds")
    with stac_server(collections_for(items), items) as url:
        cfg = IngestConfig(catalog=url, allow_local_hrefs=True, collections=sorted({it["collection"] for it in items}), out=str(out),
                           chip_size=CHIP, workers=2, progress=True, max_cloud_fraction=1.0, max_nodata_fraction=0.5)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            manifest = run_ingest(cfg)
    samples: dict[str, list[tuple[np.ndarray, dict]]] = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            names = tar.getnames()
            for name in names[::2]:
                key = name.split(".", 1)[0]
                pixels = np.load(io.BytesIO(tar.extractfile(f"{key}.pixels.npy").read()))
                meta = json.loads(tar.extractfile(f"{key}.meta.json").read())
                samples.setdefault(meta["item_id"], []).append((pixels, meta))
    yield {it["id"]: it for it in items}, manifest, samples, err.getvalue()


def _asset_path(item: dict, key: str) -> str:
    return item["assets"][key]["href"].split("?", 1)[0]


def _read_like_chip(path: str, meta: dict, ref_transform) -> np.ndarray:
    """The chip's window of one asset, read here: the asset pixel that holds each chip pixel's centre."""
    w = meta["window"]
    with rasterio.open(path) as ds:
        full, t = ds.read(1), ds.transform
    xs = ref_transform.c + (np.arange(w["col_off"], w["col_off"] + w["width"]) + 0.5) * ref_transform.a
    ys = ref_transform.f + (np.arange(w["row_off"], w["row_off"] + w["height"]) + 0.5) * ref_transform.e
    cols = np.floor((xs - t.c) / t.a).astype(int)
    rows = np.floor((ys - t.f) / t.e).astype(int)
    return full[np.ix_(rows, cols)]


#: Landsat C2 L2 surface-reflectance band -> Planetary Computer's common-name asset key
LANDSAT_KEYS = {"SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir08",
                "SR_B6": "swir16", "SR_B7": "swir22"}


def _band_keys(item: dict, bands: list[str]) -> list[str]:
    """The asset key of each band, as the item names it."""
    def names(asset: dict) -> list[str]:
        return [b.get("name") for b in asset.get("eo:bands", [])]

    return [next(k for k, a in item["assets"].items() if k in (band, LANDSAT_KEYS.get(band)) or band in names(a))
            for band in bands]


def _check_trace(item: dict, pixels: np.ndarray, meta: dict) -> rasterio.Affine:
    keys = _band_keys(item, meta["bands"])
    tf = item["properties"].get("proj:transform")
    finest = min(keys, key=lambda k: abs((item["assets"][k].get("proj:transform") or tf)[0]))
    with rasterio.open(_asset_path(item, finest)) as ds:
        ref, crs = ds.transform, ds.crs
    for channel, key in enumerate(keys):
        np.testing.assert_array_equal(pixels[channel], _read_like_chip(_asset_path(item, key), meta, ref), err_msg=key)
    w = meta["window"]
    chip_tf = ref @ rasterio.Affine.translation(w["col_off"], w["row_off"])
    assert meta["transform"] == pytest.approx(list(chip_tf)[:6], abs=1e-9)
    assert meta["crs"] == f"EPSG:{crs.to_epsg()}"
    left, top = chip_tf.c, chip_tf.f
    bounds = (left, top + CHIP * chip_tf.e, left + CHIP * chip_tf.a, top)
    assert meta["bbox"] == pytest.approx(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21), abs=1e-7)
    return ref


def test_sentinel2_l1c_real_pixels_trace_back(run):
    items, manifest, samples, _ = run
    item = items[L1C]
    chips = samples[L1C]
    assert len(chips) == (240 // CHIP) ** 2             # the crop has no nodata and no cloud mask to drop chips
    for pixels, meta in chips:
        assert meta["sensor"] == "sentinel-2-l1c" and meta["collection"] == "sentinel-2-l1c"
        assert meta["bands"] == list(L1C_KEYS) and pixels.shape == (13, CHIP, CHIP) and meta["bands"][10] == "B10"
        assert meta["cloud_fraction"] is None            # no cloud mask: not measured
        assert meta["scale"] == [1e-4] * 13 and meta["offset"] == [0.0] * 13   # baseline 02.04: no DN offset
        assert meta["gsd"] == 10.0 and meta["wavelengths"][10] == pytest.approx(1.375)
        _check_trace(item, pixels, meta)
    # statistics of their own, never pooled with L2A: the manifest's equal the chips' pixels counted here
    stats = manifest["statistics"]["sentinel-2-l1c"]
    stacked = np.stack([p for p, _ in chips]).astype(np.float64) * 1e-4
    assert stats["bands"] == list(L1C_KEYS)
    assert stats["mean"] == pytest.approx(stacked.mean(axis=(0, 2, 3)).tolist(), abs=1e-9)
    assert stats["std"] == pytest.approx(stacked.std(axis=(0, 2, 3)).tolist(), abs=1e-7)
    assert stats["count"] == [stacked[:, 0].size] * 13
    l2a = manifest["statistics"]["sentinel-2"]["bands"]
    assert len(l2a) == 12 and "B10" not in l2a


@pytest.mark.parametrize("item_id", [PC_2024, PC_2022, PC_2019])
def test_planetary_computer_reflectance_follows_the_processing_baseline(run, item_id):
    """Planetary Computer Items carry ``s2:processing_baseline`` and no ``raster:bands``: from 04.00 on,
    reflectance = DN / 10000 - 0.1; before, DN / 10000."""
    items, _, samples, _ = run
    item = items[item_id]
    assert "raster:bands" not in json.dumps(item)
    chips = samples[item_id]
    assert chips
    for pixels, meta in chips:
        assert meta["offset"] == [pytest.approx(EXPECTED_OFFSET[item_id])] * 12
        ref = _check_trace(item, pixels, meta)
        red = meta["bands"].index("B04")
        dn = _read_like_chip(_asset_path(item, "B04"), meta, ref).astype(np.float64)
        valid = dn != 0
        reflectance = pixels[red].astype(np.float64) * meta["scale"][red] + meta["offset"][red]
        expected = dn / 10000 + EXPECTED_OFFSET[item_id]
        assert np.abs(reflectance - expected)[valid].max() < 0.001
        _check_cloud_fraction(item, meta, ref, "SCL")


def test_landsat_cloud_fraction_is_the_qa_pixel_count(run):
    items, _, samples, _ = run
    chips = samples[LANDSAT]
    assert chips and any(m["cloud_fraction"] > 0 for _, m in chips) and any(m["cloud_fraction"] == 0 for _, m in chips)
    for pixels, meta in chips:
        assert meta["offset"] == [-0.2] * 7 and meta["scale"] == [2.75e-05] * 7
        ref = _check_trace(items[LANDSAT], pixels, meta)
        _check_cloud_fraction(items[LANDSAT], meta, ref, "qa_pixel")


def _check_cloud_fraction(item: dict, meta: dict, ref, key: str) -> None:
    mask = _read_like_chip(_asset_path(item, key), meta, ref).astype(np.int64)
    if key == "SCL":      # classes: 0 no data; 3 shadow, 8/9 cloud, 10 cirrus
        fill, cloud = mask == 0, np.isin(mask, [3, 8, 9, 10])
    else:                 # QA_PIXEL bits: 0 fill; 1 dilated cloud, 3 cloud, 4 shadow
        fill = (mask & 1) == 1
        cloud = ((mask >> 1) & 1 | (mask >> 3) & 1 | (mask >> 4) & 1) == 1
    clear_or_cloud = mask.size - int(fill.sum())
    expected = int((cloud & ~fill).sum()) / max(clear_or_cloud, 1)
    assert meta["cloud_fraction"] == pytest.approx(expected, abs=1e-6)


def test_an_item_smaller_than_one_chip_is_recorded(run):
    _, manifest, samples, _ = run
    (entry,) = [s for s in manifest["skipped"] if s["item_id"] == TINY]
    assert entry["collection"] == "naip"
    assert "smaller than one chip" in entry["reason"] and f"{CHIP // 2}x{CHIP // 2} px" in entry["reason"]
    assert TINY not in samples


def test_progress_bar_counts_kept_samples_of_the_whole_run(run):
    _, manifest, samples, err = run
    shown = re.findall(r"kept=(\d+)", err)
    assert shown, err[-500:]
    assert int(shown[-1]) == manifest["counts"]["kept"] == sum(map(len, samples.values()))
    assert manifest["counts"]["kept"] > max(map(len, samples.values()))   # more than any one item's count


def _offsets(item: dict) -> list[float]:
    from ofa.ingest.items import plan_item
    from ofa.ingest.hrefs import LOCAL_FILES

    return [round(c.offset, 12) for c in plan_item(item, policy=LOCAL_FILES).channels]


def test_l1c_offset_from_baseline_04_and_earth_search_flags():
    from ofa.ingest.plans import processing_baseline

    assert processing_baseline("04.00") == (4, 0) and processing_baseline("N0510") == (5, 10)
    assert processing_baseline(2.12) == (2, 12)
    assert processing_baseline("bogus") is None and processing_baseline(None) is None
    # L1C: RADIO_ADD_OFFSET -1000 from baseline 04.00, as for L2A
    assert set(_offsets(real_l1c_item(baseline="04.00"))) == {-0.1}
    assert set(_offsets(real_l1c_item(baseline="N0509"))) == {-0.1}
    assert set(_offsets(real_l1c_item(baseline="03.01"))) == {0.0}
    # an item's own raster:bands offset still wins over the baseline
    own = real_l1c_item(baseline="05.10")
    for asset in own["assets"].values():
        asset["raster:bands"] = [{"scale": 0.0001, "offset": -0.05}]
    assert set(_offsets(own)) == {-0.05}
    # Earth Search's DNs with the offset taken out already (boa_offset_applied): offset 0 whatever raster:bands say
    es = load_item("sentinel-2-l2a", ES_S2)     # real Earth Search items: test_ingest_units (OFA_REAL_DATA/stac)
    assert es["properties"]["earthsearch:boa_offset_applied"] is True
    assert es["assets"]["red"]["raster:bands"][0]["offset"] == -0.1
    assert set(_offsets(es)) == {0.0}
    flag_off = copy.deepcopy(es)
    flag_off["properties"]["earthsearch:boa_offset_applied"] = False
    assert set(_offsets(flag_off)) == {-0.1}
    legacy = load_item("sentinel-s2-l2a-cogs", LEGACY_S2)
    assert set(_offsets(legacy)) == {0.0}          # 2020: no baseline stated, no raster:bands: the registry's 0
    legacy["properties"].update({"sentinel:processing_baseline": "05.11", "sentinel:boa_offset_applied": True})
    assert set(_offsets(legacy)) == {0.0}
    legacy["properties"]["sentinel:boa_offset_applied"] = False   # baseline 05.11, no raster:bands
    assert set(_offsets(legacy)) == {-0.1}
