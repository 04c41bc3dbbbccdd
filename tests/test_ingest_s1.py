"""Sentinel-1 as published: GCP-only GRD geocoded (never an identity transform), calibrated to sigma0 dB
through the linked calibration annotation (checked pixel by pixel against an independent computation
from the source DN and the XML), RTC gamma0 to dB, single-polarisation scenes carried with an invalid
channel, and ``ofa ingest`` on the local STAC API giving samples inside the item's footprint."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from matplotlib.path import Path as Polygon
from rasterio.transform import Affine, GCPTransformer
from rasterio.warp import transform, transform_bounds

sys.path.insert(0, str(Path(__file__).parent))
from ingest_fixtures import collections_for  # noqa: E402
from s1_fixtures import S1_DIR, local_items  # noqa: E402

from ofa.infra.localstack import stac_server  # noqa: E402
from ofa.ingest.chips import ChipOptions, process_item  # noqa: E402
from ofa.ingest.hrefs import LOCAL_FILES  # noqa: E402
from ofa.ingest.items import ItemError, plan_item  # noqa: E402
from ofa.ingest.plans import DB_NODATA  # noqa: E402
from ofa.pipeline.cli import main  # noqa: E402

CHIP = 64


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return local_items(tmp_path_factory.mktemp("s1"))


def _samples(item: dict, **plan_kwargs) -> list[tuple[np.ndarray, dict]]:
    result = process_item(plan_item(item, **plan_kwargs, policy=LOCAL_FILES), ChipOptions(chip_size=CHIP))
    return [(np.load(io.BytesIO(bytes(npy))), json.loads(meta)) for _, npy, meta in result.samples]


def _inside(meta: dict, item: dict, pixels: np.ndarray | None = None) -> bool:
    """Whether the chip's bbox (its four corners through its transform) lies inside the item's footprint;
    with ``pixels``, whether every pixel centre that holds data does (a chip may keep up to
    ``max_nodata`` of no-data pixels across the swath edge, as for every sensor)."""
    t = Affine(*meta["transform"])
    if pixels is None:
        cols, rows = np.array([0, CHIP, CHIP, 0]), np.array([0, 0, CHIP, CHIP])
    else:
        nodata = np.zeros(pixels.shape[1:], dtype=bool)
        for band, value, valid in zip(pixels, meta["nodata"], meta["band_valid"]):
            if valid:
                nodata |= band == value
        rows, cols = np.nonzero(~nodata)
        rows, cols = rows + 0.5, cols + 0.5
    lon, lat = transform(meta["crs"], "EPSG:4326", t.c + cols * t.a, t.f + rows * t.e)
    return bool(Polygon(item["geometry"]["coordinates"][0]).contains_points(np.c_[lon, lat]).all())


def _lut(xml: Path, lines: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """sigmaNought at (line, pixel), written out apart from ingest/sar.py: linear in pixel along the two
    calibration vectors around the line, then linear in line."""
    vectors = ET.parse(xml).getroot().findall(".//calibrationVector")
    at = np.array([float(v.find("line").text) for v in vectors])
    out = []
    for line, pixel in zip(lines, pixels):
        k = min(max(int(np.searchsorted(at, line, side="right")) - 1, 0), len(at) - 2)
        vals = [np.interp(pixel, np.array(vectors[j].find("pixel").text.split(), float),
                          np.array(vectors[j].find("sigmaNought").text.split(), float)) for j in (k, k + 1)]
        w = (line - at[k]) / (at[k + 1] - at[k])
        out.append(vals[0] * (1 - w) + vals[1] * w)
    return np.array(out)


def test_gcp_only_grd_is_geocoded_onto_utm_inside_the_footprint(items):
    with rasterio.open(items["es"]["assets"]["vv"]["href"]) as src:   # as published: GCPs, no geotransform
        assert src.transform.is_identity and len(src.gcps[0]) == 16
    samples = _samples(items["es"])
    assert len(samples) > 20
    for pixels, meta in samples:
        assert meta["crs"] == "EPSG:32633" and meta["gsd"] == 10.0
        assert meta["transform"][:2] == [10.0, 0.0] and meta["transform"][3:5] == [0.0, -10.0]
        assert meta["transform"][2] % 10 == 0 and meta["transform"][5] % 10 == 0   # snapped to the spacing
        assert _inside(meta, items["es"], pixels)
        if meta["nodata_fraction"] == 0:
            assert _inside(meta, items["es"]), meta["bbox"]
        assert meta["quantity"] == "sigma0_db" and meta["band_valid"] == [True, True] and pixels.dtype == np.float32
    # the Planetary Computer form of the same product gives the same pixels
    pc = _samples(items["pc"])
    assert [m["transform"] for _, m in pc] == [m["transform"] for _, m in samples]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(pc, samples))


def test_calibrated_pixels_equal_dn_and_calibration_xml_at_traced_pixels(items):
    """sigma0_dB = 10 log10(DN^2 / A^2): DN read with rasterio at the source pixel the GCPs put under the
    chip pixel's centre, A from the calibration XML."""
    src_path = items["es"]["assets"]["vv"]["href"]
    with rasterio.open(src_path) as src:
        dn = src.read(1).astype(np.float64)
        gcp = GCPTransformer(src.gcps[0], tps=True)
    rng = np.random.default_rng(0)
    traced = nodata = 0
    rows, cols = (a.ravel() for a in np.mgrid[0:CHIP, 0:CHIP])
    for pixels, meta in _samples(items["es"]):
        t = Affine(*meta["transform"])
        lon, lat = transform(meta["crs"], "EPSG:4326", t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e)
        fr, fc = (np.asarray(v, float) for v in gcp.rowcol(lon, lat, op=np.positive))
        r, c = np.floor(fr).astype(int), np.floor(fc).astype(int)
        off = (r < 0) | (r >= dn.shape[0]) | (c < 0) | (c >= dn.shape[1])
        got = pixels[0][rows, cols].astype(np.float64)
        assert np.all(got[off] == DB_NODATA)   # off the source raster: no data
        edge = (np.abs(fr - np.round(fr)) < 0.02) | (np.abs(fc - np.round(fc)) < 0.02)   # on a source pixel edge
        values = np.where(off, 0, dn[np.clip(r, 0, dn.shape[0] - 1), np.clip(c, 0, dn.shape[1] - 1)])
        zero = ~off & ~edge & (values == 0)
        assert np.all(got[zero] == DB_NODATA)   # DN 0 (swath border): no data
        nodata += int(zero.sum())
        pick = rng.permutation(np.flatnonzero(~off & ~edge & (values > 0)))[:40]
        expected = 10 * np.log10(values[pick] ** 2 / _lut(S1_DIR / "calibration-iw-vv.xml", r[pick], c[pick]) ** 2)
        np.testing.assert_allclose(got[pick], expected, atol=1e-4)
        traced += len(pick)
    assert traced > 1000 and nodata > 0   # chips mostly on the zero strip are dropped; some keep a few


def test_uncalibrated_pixels_are_the_source_pixels_the_gcps_put_under_them(items):
    """No calibration link: amplitude DN, values untouched. Every chip pixel not on a source pixel edge is
    the source pixel that GDAL's thin-plate-spline GCP transform (exact at the GCPs) puts under its centre.
    (GDAL's default polynomial GCP fit, which rasterio's ``reproject(gcps=...)`` uses, misses this
    product's own geolocation points by hundreds of metres; so does ``proj:transform``.)"""
    samples = _samples(items["es_dn"])
    assert {m["quantity"] for _, m in samples} == {"amplitude_dn"} and samples[0][0].dtype == np.uint16
    with rasterio.open(items["es_dn"]["assets"]["vv"]["href"]) as src:
        dn, gcps = src.read(1), src.gcps[0]
    gcp = GCPTransformer(gcps, tps=True)
    rows, cols = (a.ravel() for a in np.mgrid[0:CHIP, 0:CHIP])
    checked = 0
    for pixels, meta in samples:
        t = Affine(*meta["transform"])
        lon, lat = transform(meta["crs"], "EPSG:4326", t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e)
        fr, fc = (np.asarray(v, float) for v in gcp.rowcol(lon, lat, op=np.positive))
        r, c = np.floor(fr).astype(int), np.floor(fc).astype(int)
        on = (r >= 0) & (r < dn.shape[0]) & (c >= 0) & (c < dn.shape[1])
        clear = on & (np.abs(fr - np.round(fr)) > 0.02) & (np.abs(fc - np.round(fc)) > 0.02)
        assert np.array_equal(pixels[0][rows[clear], cols[clear]], dn[r[clear], c[clear]])
        assert not pixels[0][rows[~on], cols[~on]].any()
        checked += int(clear.sum())
    assert checked > 0.9 * len(samples) * CHIP * CHIP
    # the GCPs themselves: the TPS transform is exact there, a polynomial fit is not
    xs, ys = gcp.xy([g.row for g in gcps], [g.col for g in gcps], offset="ul")
    assert np.allclose(xs, [g.x for g in gcps], atol=1e-7) and np.allclose(ys, [g.y for g in gcps], atol=1e-7)


def test_single_polarisation_and_bands_keep_the_channel_invalid(items):
    samples = _samples(items["es_vv"])
    assert samples
    for pixels, meta in samples:
        assert meta["bands"] == ["VV", "VH"] and meta["band_valid"] == [True, False]
        assert pixels.shape[0] == 2 and not pixels[1].any() and (pixels[0] != 0).any()
    result = process_item(plan_item(items["es_vv"], policy=LOCAL_FILES), ChipOptions(chip_size=CHIP))
    assert result.stats[0].count > 0 and result.stats[1].count == 0
    # --bands VV on the dual-pol item: the same channels, the same VV pixels
    dropped = _samples(items["es"], bands=["VV"])
    assert [m["band_valid"] for _, m in dropped] == [[True, False]] * len(dropped)
    assert all(np.array_equal(a[0], b[0]) for (a, _), (b, _) in zip(dropped, samples))


def test_rtc_linear_gamma0_becomes_db(tmp_path):
    """Planetary Computer ``sentinel-1-rtc``: float32 linear gamma0 on a UTM grid -> 10 log10, nodata kept."""
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 0.05, size=(2, 128, 128)).astype(np.float32)
    values[:, :8, :] = -32768.0
    tf = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4650000.0)
    assets = {}
    for i, pol in enumerate(("vv", "vh")):
        path = tmp_path / f"{pol}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="float32", crs="EPSG:32633",
                           transform=tf, nodata=-32768.0) as dst:
            dst.write(values[i], 1)
        assets[pol] = {"href": str(path), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data"], "raster:bands": [{"nodata": -32768, "data_type": "float32"}]}
    w, so, e, n = transform_bounds("EPSG:32633", "EPSG:4326", 500000.0, 4650000.0 - 1280.0, 501280.0, 4650000.0)
    ring = [[w, so], [e, so], [e, n], [w, n], [w, so]]
    item = {"type": "Feature", "id": "S1A_IW_GRDH_1SDV_RTC_TEST", "collection": "sentinel-1-rtc", "assets": assets,
            "properties": {"datetime": "2023-01-01T00:00:00Z", "proj:epsg": 32633, "sar:polarizations": ["VV", "VH"]},
            "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [w, so, e, n]}
    result = process_item(plan_item(item, policy=LOCAL_FILES), ChipOptions(chip_size=CHIP, max_nodata=0.2))
    assert result.kept == 4
    for _, npy, meta_bytes in result.samples:
        meta, pixels = json.loads(meta_bytes), np.load(io.BytesIO(bytes(npy)))
        assert meta["quantity"] == "gamma0_db" and meta["nodata"] == [DB_NODATA, DB_NODATA]
        w = meta["window"]
        src = values[:, w["row_off"]:w["row_off"] + CHIP, w["col_off"]:w["col_off"] + CHIP].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.where(src == -32768.0, DB_NODATA, 10 * np.log10(src))
        np.testing.assert_allclose(pixels, expected, atol=1e-4)


def test_raster_without_geotransform_or_gcps_is_skipped_with_the_reason(items, tmp_path):
    path = tmp_path / "bare.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint16") as dst:
        dst.write(np.ones((128, 128), dtype=np.uint16), 1)
    item = json.loads(json.dumps(items["es_dn"]))
    item["assets"]["vv"]["href"] = str(path)
    with pytest.raises(ItemError, match="neither a geotransform nor GCPs"):
        process_item(plan_item(item, policy=LOCAL_FILES), ChipOptions(chip_size=CHIP))


@pytest.fixture(scope="module")
def dataset(items, tmp_path_factory):
    """``ofa ingest`` of the GCP-only items (calibrated dual-pol, calibrated VV-only, uncalibrated) served by
    the local STAC API."""
    served = [items["es"], items["es_vv"], items["es_dn"]]
    out = tmp_path_factory.mktemp("s1ds") / "ds"
    with stac_server(collections_for(served), served) as url:
        assert main(["ingest", "--catalog", url, "--allow-local-hrefs", "--collection", "sentinel-1-grd", "--out", str(out), "--chip-size",
                     str(CHIP), "--workers", "1", "--no-progress"]) == 0
    return out, served


def test_ofa_ingest_on_gcp_only_items_from_the_stac_api(dataset):
    out, served = dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == []
    stats = manifest["statistics"]
    assert set(stats) == {"sentinel-1", "sentinel-1/amplitude_dn"}
    assert stats["sentinel-1"]["quantity"] == "sigma0_db" and -30 < stats["sentinel-1"]["mean"][0] < 5
    assert stats["sentinel-1/amplitude_dn"]["quantity"] == "amplitude_dn" and stats["sentinel-1/amplitude_dn"]["mean"][0] > 50
    by_id = {it["id"]: it for it in served}
    seen = set()
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    meta = json.loads(tar.extractfile(member).read())
                    assert meta["transform"] != [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                    pixels = np.load(io.BytesIO(tar.extractfile(member.name.replace(".meta.json", ".pixels.npy")).read()))
                    assert _inside(meta, by_id[meta["item_id"]], pixels)
                    assert meta["nodata_fraction"] > 0 or _inside(meta, by_id[meta["item_id"]])
                    seen.add((meta["item_id"], meta["quantity"], tuple(meta["band_valid"])))
    assert {(s[1], s[2]) for s in seen} == {("sigma0_db", (True, True)), ("sigma0_db", (True, False)),
                                           ("amplitude_dn", (True, True))}


def test_loader_normalises_each_quantity_with_its_own_statistics_and_zeroes_invalid_bands(dataset):
    """The dataset of the test above: sigma0_db (dual- and single-pol) and amplitude_dn samples in the same
    sentinel-1 shards; each is normalised with its quantity's entry, the VH of single-pol samples is 0
    and invalid in the batch's ``valid``, in both augmentation paths."""
    import torch

    from ofa.pipeline.data import Counter, LoaderConfig, ShardBatches, decode, iter_shard, read_streams, to_device

    out, _ = dataset
    (stream,) = read_streams([str(out)])
    stats = json.loads((out / "manifest.json").read_text())["statistics"]
    seen = set()
    for url in stream.shards:
        for sample in iter_shard(url, None, Counter()):
            meta = json.loads(sample["meta.json"])
            raw = np.load(io.BytesIO(sample["pixels.npy"]))
            entry = stats["sentinel-1" if meta["quantity"] == "sigma0_db" else "sentinel-1/amplitude_dn"]
            x = decode(sample, stream).numpy()
            for band, ok in enumerate(meta["band_valid"]):
                if not ok:
                    assert not x[band].any()
                    continue
                keep = raw[band] != meta["nodata"][band]
                want = (raw[band][keep].astype(np.float64) - entry["mean"][band]) / entry["std"][band]
                np.testing.assert_allclose(x[band][keep], want, rtol=1e-4, atol=1e-4)
                assert not x[band][~keep].any()
            seen.add((meta["quantity"], tuple(meta["band_valid"])))
            bad = dict(sample, **{"meta.json": json.dumps(dict(meta, quantity="gamma0_db")).encode()})
            with pytest.raises(ValueError, match="no statistics for quantity 'gamma0_db'"):
                decode(bad, stream)
    assert len(seen) == 3
    for device_augment in (False, True):
        batch = next(iter(ShardBatches(LoaderConfig(data=[str(out)], batch_size=16, img_size=32, shuffle_buffer=256,
                                                    device_augment=device_augment))))
        valid = batch["valid"]
        assert valid.shape == (16, 2) and valid[:, 0].all() and not valid[:, 1].all()
        x = to_device(batch, "cpu", 32) if device_augment else batch["pixels"]
        assert not x[~valid[:, 1], 1].any() and torch.isfinite(x).all()


def test_statistics_keys_keep_quantities_apart_and_old_manifests_still_read():
    from ofa.ingest.dataset.contract import statistics_for, statistics_key
    from ofa.ingest.sar import utm_crs_for

    assert statistics_key("sentinel-1", "sigma0_db", "sigma0_db") == "sentinel-1"
    assert statistics_key("sentinel-1", "amplitude_dn", "sigma0_db") == "sentinel-1/amplitude_dn"
    assert statistics_key("naip", None, "dn") == "naip"
    stats = {"sentinel-1": {"quantity": "sigma0_db"}, "sentinel-1/amplitude_dn": {"quantity": "amplitude_dn"}}
    assert statistics_for(stats, "sentinel-1", "sigma0_db")["quantity"] == "sigma0_db"
    assert statistics_for(stats, "sentinel-1", "amplitude_dn")["quantity"] == "amplitude_dn"
    assert statistics_for(stats, "sentinel-1", "gamma0_db") is None            # never another quantity's
    old = {"sentinel-1": {"bands": ["VV", "VH"]}}                             # written before quantities
    assert statistics_for(old, "sentinel-1", None) is old["sentinel-1"]
    assert [utm_crs_for(15.0, 42.0), utm_crs_for(-70.6, -33.4), utm_crs_for(179.9, 10.0), utm_crs_for(20.0, 85.0)] == [
        "EPSG:32633", "EPSG:32719", "EPSG:32660", "EPSG:32661"]
