"""Ingest parts: the sensor registry against real item documents, href cleaning, cloud-mask rules,
deterministic tars, shard bounds, statistics, and chips from a real raster with a nodata collar."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest

from ingest_fixtures import CLOUDY_LANDSAT, ES_S2, STAC_DIR, load_item

from ofa.ingest.chips import BandStats, ChipOptions, _masks, encode_npy, process_item
from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import ItemError, clean_href, item_etag, plan_item
from ofa.ingest.sensors import SENSORS, BandSpec, SensorSpec, sensor_for_collection
from ofa.ingest.dataset.shard_writer import ShardWriter, tar_bytes
from ofa.model.config import DEFAULT_MODALITIES, DEFAULT_WAVELENGTHS

REAL = sorted(STAC_DIR.glob("*/*.json"))
#: the real STAC Items of the shared data folder (OFA_REAL_DATA/stac): the names of those tests' ids
SHARED_STAC = ("landsat-8-c2-l2", "naip", "sentinel-1-grd", "sentinel-2-l2a", "sentinel-s2-l2a-cogs")


#: modalities the model knows by default that no ingest sensor reads yet
MODEL_ONLY = {"gaofen-2", "enmap"}


def test_registry_matches_the_model_modalities():
    """model/ keeps its own defaults (it imports nothing from ingest): they equal the registry exactly."""
    assert set(DEFAULT_MODALITIES) == set(SENSORS) | MODEL_ONLY == set(DEFAULT_WAVELENGTHS)
    for sensor_id, spec in SENSORS.items():
        assert DEFAULT_MODALITIES[sensor_id] == len(spec.bands), sensor_id
        assert DEFAULT_WAVELENGTHS[sensor_id] == spec.wavelengths, sensor_id
    assert sensor_for_collection("landsat-8-c2-l2").id == "landsat"
    with pytest.raises(KeyError, match="modis"):
        sensor_for_collection("modis")


@pytest.mark.parametrize("path", REAL, ids=[p.stem[:40] for p in REAL])
def test_every_real_item_resolves_or_says_why(path):
    _check_plan(json.loads(path.read_text()))


@pytest.mark.real
@pytest.mark.parametrize("collection", SHARED_STAC)
def test_every_shared_real_item_resolves(real_data, collection):
    """The 62 real catalog documents of OFA_REAL_DATA/stac (Planetary Computer and Earth Search, both
    conventions), planned the same way."""
    paths = sorted((real_data / "stac" / collection).glob("*.json"))
    assert paths
    for path in paths:
        _check_plan(json.loads(path.read_text()))


def _check_plan(item: dict) -> None:
    plan = plan_item(item, policy=LOCAL_FILES)
    spec = sensor_for_collection(item["collection"])
    assert [c.name for c in plan.channels] == spec.band_names
    assert all("?" not in c.href for c in plan.channels)
    if plan.sensor == "sentinel-1":
        pols = [p.lower() for p in item["properties"]["sar:polarizations"]]
        assert [c.asset for c in plan.channels if c.valid] == pols   # single-pol: VH carried invalid
        if item["collection"] == "sentinel-1-rtc":                    # linear gamma0, no unit stated
            assert plan.quantity == "gamma0_db" and {c.convert for c in plan.channels} == {"db"}
        else:                                                         # every polarisation links its calibration
            assert plan.quantity == "sigma0_db"
            assert all(c.calibration.endswith(f"calibration-iw-{c.asset}.xml") for c in plan.channels if c.valid)
    if plan.sensor == "sentinel-2":
        b04 = plan.channels[3]
        assert b04.asset in ("red", "B04") and b04.wavelength == pytest.approx(0.665, abs=0.001)
        assert plan.mask_asset in ("scl", "SCL") and plan.mask_cloud == (3, 8, 9, 10)
        assert {c.gsd for c in plan.channels} == {10.0, 20.0, 60.0}
        assert b04.offset == _expected_s2_offset(item, b04.asset)
    if plan.sensor == "landsat":  # raster:bands (landsat-c2-l2) or the registry (landsat-8-c2-l2): the same values
        assert plan.channels[0].scale == 2.75e-05 and plan.channels[0].offset == -0.2 and plan.mask_rule == "bits"
    if plan.sensor == "naip":
        assert [c.index for c in plan.channels] == [1, 2, 3, 4] and {c.asset for c in plan.channels} == {"image"}


def _expected_s2_offset(item: dict, asset: str) -> float:
    """Offset 0 where Earth Search says the DNs hold no offset any more, else the item's raster:bands,
    else -0.1 (DN offset -1000) from processing baseline 04.00 on."""
    props = item["properties"]
    if props.get("earthsearch:boa_offset_applied") is True or props.get("sentinel:boa_offset_applied") is True:
        return 0.0
    raster = item["assets"][asset].get("raster:bands")
    if raster:
        return raster[0]["offset"]
    baseline = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    return -0.1 if baseline is not None and float(baseline) >= 4.0 else 0.0   # none stated (2020): the registry's 0


def test_bands_option_and_hrefs_without_secrets():
    item = load_item("sentinel-2-l2a", ES_S2)
    plan = plan_item(item, bands=["B04", "nir08"], policy=LOCAL_FILES)   # the sensor's 12 channels stay; the others are invalid
    assert [c.name for c in plan.channels] == SENSORS["sentinel-2"].band_names
    assert [c.name for c in plan.channels if c.valid] == ["B04", "B8A"]
    assert all(c.href == "" for c in plan.channels if not c.valid)
    with pytest.raises(ItemError, match="none of the requested bands"):
        plan_item(item, bands=["VV"], policy=LOCAL_FILES)
    assert clean_href("https://user:pw@host.net/a/b.tif?se=2024&sig=abc#x") == "https://host.net/a/b.tif"
    assert clean_href("/data/x.tif?sig=1") == "/data/x.tif"
    signed = json.loads(json.dumps(item))
    signed["assets"]["red"]["href"] += "?sig=SECRET"
    assert item_etag(signed) == item_etag(item)


def test_cloud_mask_rules():
    s2 = plan_item(load_item("sentinel-2-l2a", ES_S2))
    pixels = np.ones((12, 2, 3), dtype=np.uint16)
    pixels[:, 0, 0] = 0
    scl = np.array([[4, 9, 3], [0, 10, 8]], dtype=np.uint8)
    nodata, border, cloud = _masks(pixels, s2.channels, scl, s2)
    assert nodata.tolist() == [[True, False, False], [True, False, False]]
    assert cloud.tolist() == [[False, True, True], [False, True, True]] and not border.any()
    ls = plan_item(load_item("landsat-c2-l2", CLOUDY_LANDSAT))
    qa = np.array([[21824, 22280, 1 | 2, 1 << 4, 1 << 2, 21952]], dtype=np.uint16)
    nodata, _, cloud = _masks(np.ones((7, 1, 6), dtype=np.uint16), ls.channels, qa, ls)
    assert cloud.tolist() == [[False, True, True, True, False, False]]
    assert nodata.tolist() == [[False, False, True, False, False, False]]


def test_tar_is_deterministic():
    members = [("k_r000000_c000000.pixels.npy", b"\x93NUMPY" + bytes(100)), ("k_r000000_c000000.meta.json", b"{}")]
    a, b = tar_bytes(members), tar_bytes(members)
    assert a == b and len(a) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        assert [(m.name, m.mtime, m.uid, m.mode, m.uname) for m in tar] == [(n, 0, 0, 0o644, "") for n, _ in members]


def test_shards_are_bounded_by_samples_and_bytes():
    fs = fsspec.filesystem("memory")
    writer = ShardWriter(fs, "/ds", "naip", max_samples=3, max_bytes=10**9)
    finished = [writer.add(f"s{i}", bytes(1000), b"{}") for i in range(7)]
    writer.flush()
    assert [s["count"] for s in writer.shards] == [3, 3, 1]
    assert finished == [False, False, False, True, False, False, True]  # the sample that opens a new shard
    for shard in writer.shards:
        data = fs.cat_file(f"/ds/{shard['path']}")
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
    small = ShardWriter(fs, "/ds2", "naip", max_samples=100, max_bytes=16000)
    for i in range(5):
        small.add(f"s{i}", bytes(1500), b"{}")  # 3 KiB a sample; a tar ends on a 10 KiB record
    small.flush()
    assert [s["count"] for s in small.shards] == [3, 2]
    assert all(s["bytes"] <= 16000 for s in small.shards)


def test_band_stats_merge_matches_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, n) for n in (10, 1000, 1)]
    total = BandStats()
    for p in parts:
        s = BandStats()
        s.add(p)
        total.merge(BandStats.from_list(json.loads(json.dumps(s.to_list()))))
    every = np.concatenate(parts)
    mean = total.total / total.count
    assert total.count == every.size and mean == pytest.approx(every.mean())
    assert np.sqrt(total.total_sq / total.count - mean**2) == pytest.approx(every.std())
    assert (total.min, total.max) == (every.min(), every.max())


@pytest.mark.real
def test_a_new_sensor_is_a_registry_entry_real_pixels_with_a_collar(real_data):
    """Landsat-7 ETM+ (rasterio's RGB.byte.tif in OFA_REAL_DATA/raster: real pixels, nodata 0 around the swath)
    through a spec, no new code."""
    import rasterio
    from rasterio.warp import transform_bounds

    etm = SensorSpec(
        id="landsat-7-rgb", collections=("landsat-7-test",),
        bands=tuple(BandSpec(n, w, 30.0, keys=("data",), index=i + 1, nodata=0)
                    for i, (n, w) in enumerate((("R", 0.66), ("G", 0.56), ("B", 0.48)))),
    )
    href = str(real_data / "raster" / "RGB.byte.tif")
    with rasterio.open(href) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        full = ds.read()
    item = {"id": "LE07_RGB", "collection": "landsat-7-test", "properties": {"datetime": "2000-01-01T00:00:00Z"},
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "assets": {"data": {"href": href + "?token=x"}}}
    plan = plan_item(item, sensor=etm, policy=LOCAL_FILES)
    result = process_item(plan, ChipOptions(chip_size=128, max_nodata=0.05))
    n_chips = (718 // 128) * (791 // 128)
    assert result.kept + sum(result.dropped.values()) == n_chips
    assert 0 < result.kept < n_chips and result.dropped["nodata"] > 0
    for key, pixels, meta in result.samples:
        arr = np.load(io.BytesIO(pixels))
        m = json.loads(meta)
        r, c = m["window"]["row_off"], m["window"]["col_off"]
        np.testing.assert_array_equal(arr, full[:, r:r + 128, c:c + 128])  # values untouched
        assert m["crs"] == "EPSG:32618" and m["cloud_fraction"] is None and m["nodata_fraction"] <= 0.05


@pytest.mark.parametrize("dtype,scale,offset", [("uint16", 1e-4, -0.1), ("int16", -0.5, 3.0), ("float32", 2.0, 0.0)])
def test_raw_sums_give_physical_statistics(dtype, scale, offset):
    from ofa.ingest.chips import RawStats

    rng = np.random.default_rng(1)
    band = (rng.integers(0, 30000, (64, 64)) if dtype != "float32" else rng.normal(0, 5, (64, 64))).astype(dtype)
    valid = rng.random((64, 64)) > 0.3
    raw = RawStats()
    raw.add(band, valid)
    raw.add(band, None)
    stats = raw.physical(scale, offset)
    values = np.concatenate([band[valid], band.ravel()]).astype(np.float64) * scale + offset
    mean = stats.total / stats.count
    assert stats.count == values.size and mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-9)
    assert np.sqrt(stats.total_sq / stats.count - mean**2) == pytest.approx(values.std(), rel=1e-6)
    assert (stats.min, stats.max) == pytest.approx((values.min(), values.max()))


def test_streamed_shards_equal_tarfile_output():
    from ofa.ingest.dataset.shard_writer import sample_block

    long_key = "S1A_IW_GRDH_1SDV_20240614T053402_20240614T053427_054310_069B1A_with_a_very_long_name_r000000_c000128"
    samples = [(long_key, bytes(range(256)) * 3, b'{"a":1}'), ("k", b"x" * 513, b"{}")]
    fs = fsspec.filesystem("memory")
    writer = ShardWriter(fs, "/mem", "sentinel-1")
    for key, pixels, meta in samples[:1]:
        assert writer.add(key, pixels, meta) is False
    writer.add_block(sample_block(*samples[1]))
    writer.flush()
    expected = tar_bytes([m for k, p, mt in samples for m in ((f"{k}.pixels.npy", p), (f"{k}.meta.json", mt))])
    assert fs.cat_file("/mem/shards/sentinel-1/sentinel-1-000000.tar") == expected


def test_item_keys_are_file_names_and_keep_items_apart():
    from ofa.ingest.job import item_key

    assert item_key("naip", "vt_m_4407307_ne_18_060_20230715") == "naip__vt_m_4407307_ne_18_060_20230715"
    odd = [item_key("c", i) for i in ("a:b", "a-b", "a/b", "a b", "aéb", "../x")]
    assert len(set(odd)) == len(odd) and odd[1] == "c__a-b"
    assert all(k.isascii() and "/" not in k and ":" not in k and " " not in k for k in odd)


def test_item_shards_cut_where_the_stream_writer_would(tmp_path):
    """``write_full_shards`` writes every shard a sample list fills on its own, cut exactly where one
    ShardWriter fed the same samples cuts (by count and by bytes), and hands back the rest."""
    from ofa.ingest.dataset.shard_writer import block_size, sample_block, shard_groups, write_full_shards

    rng = np.random.default_rng(5)
    blocks = [sample_block(f"k{i:03d}", bytes(int(n)), b"{}") for i, n in enumerate(rng.integers(1, 9000, 40))]
    sizes = [block_size(b) for b in blocks]
    for max_samples, max_bytes in ((7, 10**9), (1000, 40_000), (5, 30_000), (1, 10**9), (100, 10**9)):
        fs = fsspec.filesystem("file")
        root = str(tmp_path / f"{max_samples}-{max_bytes}")
        stream = ShardWriter(fs, root, "naip", max_samples, max_bytes)
        starts = [i for i, b in enumerate(blocks) if stream.add_block(b)]
        stream.flush()
        groups = shard_groups(sizes, max_samples, max_bytes)
        assert [g.start for g in groups[1:]] == starts and sum(map(len, groups)) == len(blocks)
        assert all(s["count"] <= max_samples and s["bytes"] <= max_bytes or s["count"] == 1 for s in stream.shards)
        written, rest = write_full_shards(fs, root, "naip", blocks, max_samples, max_bytes, lambda k: f"shards/naip/items/x-{k:04d}.tar")
        assert len(written) == len(groups) - 1 and rest == blocks[groups[-1].start:]
        for mine, theirs in zip(written, stream.shards):   # same samples, same bytes, under the item's names
            assert {**mine, "path": ""} == {**theirs, "path": ""}
            assert (Path(root) / mine["path"]).read_bytes() == (Path(root) / theirs["path"]).read_bytes()


def test_sar_border_zeros_are_named(tmp_path):
    import rasterio
    from rasterio.transform import Affine

    r, c = np.mgrid[0:128, 0:128]
    border = c < 40                                      # a swath edge: zero in both polarisations
    assets = {}
    for pol, level in (("vv", 900), ("vh", 300)):
        data = np.full((128, 128), level, dtype=np.uint16)
        data[border] = 0
        path = tmp_path / f"{pol}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint16",
                           crs="EPSG:4326", transform=Affine(1e-4, 0.0, 10.0, 0.0, -1e-4, 47.0), nodata=0) as dst:
            dst.write(data, 1)
        assets[pol] = {"href": str(path), "raster:bands": [{"nodata": 0, "data_type": "uint16"}]}
    item = {"id": "S1_test", "collection": "sentinel-1-grd", "assets": assets, "geometry": None,
            "properties": {"datetime": "2024-01-01T00:00:00Z", "proj:epsg": 4326}}
    result = process_item(plan_item(item, policy=LOCAL_FILES), ChipOptions(chip_size=64))
    assert result.dropped["sar_border"] == 2 and result.kept == 2 and result.dropped["nodata"] == 0
    meta = json.loads(result.samples[0][2])
    assert meta["gsd"] == 10.0 and meta["crs"] == "EPSG:4326" and meta["wavelengths"] == [5.405, 5.405]


def test_pixel_checksums_catch_a_flipped_bit():
    from ofa.ingest.dataset.contract import check_pixels, pixels_checksum

    npy = encode_npy(np.arange(300, dtype=np.uint16).reshape(3, 10, 10))
    flipped = bytearray(npy)
    flipped[-7] ^= 0x10
    meta = {"pixels_crc32": pixels_checksum(npy)}
    check_pixels(npy, meta)
    with pytest.raises(ValueError, match="damaged"):
        check_pixels(bytes(flipped), meta, "k")
    with pytest.raises(ValueError, match="no pixels_crc32"):
        check_pixels(npy, {})


def test_pixels_checksum_is_zlibs_crc32_whichever_implementation_computes_it():
    """The contract names zlib's CRC-32; the fast ISA-L one must give the same digits (also on odd lengths,
    unaligned views and bytearrays, as the writer and the loader pass them)."""
    import zlib

    from ofa.ingest.dataset.contract import pixels_checksum

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 4096, 1_572_992):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert pixels_checksum(data) == f"{zlib.crc32(data):08x}"
        assert pixels_checksum(bytearray(data)) == pixels_checksum(memoryview(data)[0:]) == f"{zlib.crc32(data):08x}"
        if n > 3:
            assert pixels_checksum(memoryview(data)[3:]) == f"{zlib.crc32(data[3:]):08x}"
