"""Zarr-backed STAC items on the local S3 server and STAC API: a Sentinel-2 L2A scene in the EOPF
product layout (Zarr v2 with consolidated metadata; v3 without) and generic Zarr datacubes, made
from the pixels of the COG fixtures, ingest to the same samples as the COGs; bad products are
skipped with one line each; reads are chunk-aligned; reruns and SIGKILL resumes are byte-identical."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ingest_fixtures import CLOUDY_LANDSAT, ES_S2, PC_S2, collections_for, dataset_snapshot, load_item, localize_item, localized_items
from zarr_fixtures import write_datacube

from support.eopf_scene import eopf_item, write_eopf_product
from ofa.infra.localstack import s3_server, stac_server
from ofa.ingest.chips import ChipOptions, process_item
from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import plan_item
from ofa.ingest.job import IngestConfig, run_ingest
from ofa.ingest.sensors import SENSORS
from ofa.pipeline.cli import main

KILL = str(Path(__file__).parent / "ingest_kill.py")
CHUNKS = 4   # per side of each product array (EOPF cuts 6): 80 px chips straddle chunk rows

S2_EOPF_V2 = ES_S2            # Earth Search item: offset -0.1
S2_EOPF_V3 = PC_S2            # Planetary Computer item: registry scale
LANDSAT = CLOUDY_LANDSAT
NAIP = "pr_m_1806551_nw_20_030_20221212_20230329"
BUCKET = "ofa-zarr"


def _bad_products(stores: Path, good: dict) -> list[dict]:
    """Copies of the v2 product (under ``stores``), each broken one way, with items naming them."""
    out = []
    src = stores / "eopf-v2" / f"{S2_EOPF_V2}.zarr"
    for name in ("missing_group", "wrong_shape", "truncated_chunk"):
        dst = stores / "bad" / f"{name}.zarr"
        shutil.copytree(src, dst)
        meta = json.loads((dst / ".zmetadata").read_text())
        if name == "missing_group":   # a product without its 60 m group
            shutil.rmtree(dst / "measurements/reflectance/r60m")
            meta["metadata"] = {k: v for k, v in meta["metadata"].items() if "reflectance/r60m" not in k}
        elif name == "wrong_shape":   # b05 claims 100 rows over a 120-row grid
            meta["metadata"]["measurements/reflectance/r20m/b05/.zarray"]["shape"][0] = 100
        else:                         # a chunk under a chip that is read, cut short
            chunk = dst / "measurements/reflectance/r10m/b02/2.3"
            chunk.write_bytes(chunk.read_bytes()[:20])
        (dst / ".zmetadata").write_text(json.dumps(meta))
        item = eopf_item(good, f"s3://{BUCKET}/bad/{name}.zarr", "assets")
        item["id"] = f"BAD_zarr_{name}"
        out.append(item)
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """COG items and their Zarr twins on the local S3 server, served by two STAC APIs (COG, Zarr)."""
    import s3fs

    root = tmp_path_factory.mktemp("zarr")
    cogs = {it["id"]: it for it in localized_items(root / "cogs")}
    # NAIP on a 1 m grid: the cube's grid comes from float pixel-centre coordinates, which for this item's 0.3 m
    # pixels at 2,020 km northing carry ~1e-10 of rounding into the transform (the COG's is exact)
    naip = load_item("naip", NAIP)
    naip["properties"]["proj:transform"] = [1.0, 0.0, 208796.0, 0.0, -1.0, 2020332.0]
    cogs[NAIP] = localize_item(naip, root / "naip-1m")
    # as an Earth Search item whose DNs still hold the baseline-04.00 offset (raster:bands says -0.1):
    # the EOPF product carries it as add_offset, the way the products do
    cogs[S2_EOPF_V2]["properties"].pop("earthsearch:boa_offset_applied")
    stores = root / "stores"
    write_eopf_product(cogs[S2_EOPF_V2], str(stores / "eopf-v2" / f"{S2_EOPF_V2}.zarr"), 2, CHUNKS)
    write_eopf_product(cogs[S2_EOPF_V3], str(stores / "eopf-v3" / f"{S2_EOPF_V3}.zarr"), 3, CHUNKS)
    zarr_items = [eopf_item(cogs[S2_EOPF_V2], f"s3://{BUCKET}/eopf-v2/{S2_EOPF_V2}.zarr", "assets"),
                  eopf_item(cogs[S2_EOPF_V3], f"s3://{BUCKET}/eopf-v3/{S2_EOPF_V3}.zarr", "product")]
    for item_id, band_dim in ((LANDSAT, False), (NAIP, True)):
        rel = f"cubes/{item_id}.zarr"
        zarr_items.append(write_datacube(cogs[item_id], str(stores / rel), f"s3://{BUCKET}/{rel}", band_dim))
    bad = _bad_products(stores, cogs[S2_EOPF_V2])
    with s3_server() as s3, pytest.MonkeyPatch.context() as mp:
        for k, v in s3.env.items():
            mp.setenv(k, v)
        s3.make_bucket(BUCKET)
        s3fs.S3FileSystem(**s3.storage_options).put(f"{stores}/", f"{BUCKET}/", recursive=True)
        cog_items = [cogs[i] for i in (S2_EOPF_V2, S2_EOPF_V3, LANDSAT, NAIP)]
        with stac_server(collections_for(cog_items), cog_items) as cog_url, \
                stac_server(collections_for(zarr_items + bad), zarr_items + bad) as zarr_url:
            yield {"cog": cog_url, "zarr": zarr_url, "s3": s3, "cogs": cogs, "zarr_items": zarr_items, "bad": bad}


COLLECTIONS = ("sentinel-2-l2a", "landsat-c2-l2", "naip")


def _ingest(url: str, out: Path, ids: list[str], **extra) -> dict:
    return run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=list(COLLECTIONS), out=str(out), chip_size=80, workers=2,
                                   progress=False, shard_max_samples=5, ids=ids, **extra))


def _samples(root: Path, manifest: dict) -> dict[str, tuple[bytes, dict]]:
    out = {}
    for shard in manifest["shards"]:
        with tarfile.open(root / shard["path"]) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                pixels, meta = out.get(key, (None, None))
                out[key] = (data, meta) if ext == "pixels.npy" else (pixels, json.loads(data))
    return out


def _shard_bytes(root: Path, manifest: dict) -> dict[str, bytes]:
    return {s["path"]: (root / s["path"]).read_bytes() for s in manifest["shards"]}


def test_eopf_products_give_the_cog_samples(scenes, tmp_path):
    """Every sample of the EOPF scenes equals the COG scene's: the v2 item with assets at the product's
    arrays byte for byte; the v3 whole-product item too, but for the wavelengths, which an item
    without band metadata takes from the registry."""
    ids = [S2_EOPF_V2, S2_EOPF_V3]
    cog, zarr = tmp_path / "cog", tmp_path / "zarr"
    m_cog, m_zarr = _ingest(scenes["cog"], cog, ids), _ingest(scenes["zarr"], zarr, ids)
    assert not m_zarr["skipped"] and m_zarr["counts"] == m_cog["counts"] and m_cog["counts"]["kept"] >= 10
    a, b = _samples(cog, m_cog), _samples(zarr, m_zarr)
    assert sorted(a) == sorted(b)
    registry = [band.wavelength for band in SENSORS["sentinel-2"].bands]
    for key, (pixels, meta) in a.items():
        z_pixels, z_meta = b[key]
        assert z_pixels == pixels, key                      # same bytes: dtype, shape, DNs
        if meta["item_id"] == S2_EOPF_V3:
            assert z_meta["wavelengths"] == registry and meta["wavelengths"] != registry
            z_meta = {**z_meta, "wavelengths": meta["wavelengths"]}
        assert z_meta == meta, key                          # crs, transform, bbox, nodata, scale/offset, clouds...
    v2 = [m for _, m in a.values() if m["item_id"] == S2_EOPF_V2]
    assert v2[0]["offset"] == [-0.1] * 12 and v2[0]["scale"] == [1e-4] * 12   # decoded from add_offset/scale_factor
    assert any(m["cloud_fraction"] for m in v2)                                  # SCL read from the product
    assert main(["manifest", "verify", str(zarr)]) == 0


def test_datacubes_give_the_cog_dataset(scenes, tmp_path):
    """A Landsat cube (a (time, y, x) variable per band, CRS only in the item) and a NAIP cube (one
    (band, y, x) variable with a CF grid mapping) ingest to the COG scenes' shards, byte for byte."""
    ids = [LANDSAT, NAIP]
    cog, zarr = tmp_path / "cog", tmp_path / "zarr"
    m_cog, m_zarr = _ingest(scenes["cog"], cog, ids), _ingest(scenes["zarr"], zarr, ids)
    assert not m_zarr["skipped"] and m_cog["counts"]["kept"] > 0
    assert _shard_bytes(zarr, m_zarr) == _shard_bytes(cog, m_cog)
    assert m_zarr["statistics"] == m_cog["statistics"]


def test_bad_products_are_skipped_with_one_line_each(scenes, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="ofa.ingest")
    bad = [it["id"] for it in scenes["bad"]]
    manifest = _ingest(scenes["zarr"], tmp_path / "ds", [S2_EOPF_V2, *bad])
    reasons = {s["item_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(bad)
    assert "r60m/b01" in reasons["BAD_zarr_missing_group"] and "cannot be opened" in reasons["BAD_zarr_missing_group"]
    assert "B05" in reasons["BAD_zarr_wrong_shape"] and "100" in reasons["BAD_zarr_wrong_shape"]
    assert "'B02_10m'" in reasons["BAD_zarr_truncated_chunk"] and "cannot be read" in reasons["BAD_zarr_truncated_chunk"]
    lines = [r.getMessage() for r in caplog.records if "skipped item" in r.getMessage()]
    assert all(sum(i in line for line in lines) == 1 for i in bad), lines
    assert manifest["counts"]["kept"] > 0 and {i["item_id"] for i in manifest["skipped"]}.isdisjoint({S2_EOPF_V2})


def test_reads_are_chunk_aligned_and_each_chunk_is_read_once(scenes, tmp_path, monkeypatch):
    import zarr

    product = tmp_path / "p.zarr"
    write_eopf_product(scenes["cogs"][S2_EOPF_V2], str(product), 3, CHUNKS)
    gets: list[str] = []
    real = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        gets.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    plan = plan_item(eopf_item(scenes["cogs"][S2_EOPF_V2], str(product), "product"), policy=LOCAL_FILES)
    result = process_item(plan, ChipOptions(80, max_nodata=1.0, max_cloud=1.0))
    assert result.kept == 9
    chunks = [k for k in gets if "/c/" in k]
    assert len(chunks) == len(set(chunks)), sorted(k for k in chunks if chunks.count(k) > 1)[:5]
    b02 = {k for k in chunks if k.startswith("measurements/reflectance/r10m/b02/")}
    assert len(b02) == 16                                    # 240 px in 4 x 4 chunks: all needed, each once
    assert not any(k.startswith("measurements/reflectance/r20m/b02/") for k in chunks)   # the 20 m copy is not read

    gets.clear()   # chips restricted to a corner: only the chunks under them are read
    from rasterio.warp import transform_geom

    item = scenes["cogs"][S2_EOPF_V2]
    x0, y0 = item["assets"]["blue"]["proj:transform"][2], item["assets"]["blue"]["proj:transform"][5]
    box = {"type": "Polygon", "coordinates": [[[x0 + 10, y0 - 10], [x0 + 700, y0 - 10], [x0 + 700, y0 - 700],
                                               [x0 + 10, y0 - 700], [x0 + 10, y0 - 10]]]}   # chip (0, 0)
    corner = dataclasses.replace(plan, aoi=transform_geom(plan.crs, "EPSG:4326", box))
    assert process_item(corner, ChipOptions(80, max_nodata=1.0, max_cloud=1.0)).kept == 1
    b02 = {k for k in gets if k.startswith("measurements/reflectance/r10m/b02/c/")}
    assert b02 == {"measurements/reflectance/r10m/b02/c/0/0", "measurements/reflectance/r10m/b02/c/0/1",
                   "measurements/reflectance/r10m/b02/c/1/0", "measurements/reflectance/r10m/b02/c/1/1"}, b02


def _cmd(url: str, out: str, kill_at: str | None = None) -> list[str]:
    run = [sys.executable, KILL, kill_at] if kill_at else [sys.executable, "-m", "ofa.pipeline.cli"]
    cmd = [*run, "ingest", "--catalog", url, "--allow-local-hrefs", "--out", out, "--chip-size", "80",
           "--workers", "2", "--shard-max-samples", "5", "--no-progress"]
    for c in COLLECTIONS:
        cmd += ["--collection", c]
    return cmd


def test_zarr_ingest_reruns_and_resumes_byte_identical(scenes, tmp_path):
    """``ofa ingest`` on the Zarr catalog: a run SIGKILLed inside an item, rerun on Dask worker
    processes (plans and readers travel to other processes), ends as the uninterrupted threaded run."""
    env = {**os.environ, **scenes["s3"].env, "OMP_NUM_THREADS": "1"}
    url = scenes["zarr"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    done = subprocess.run(_cmd(url, str(ref)), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = dataset_snapshot(ref)
    assert len(expected[1]["skipped"]) == 3 and expected[1]["counts"]["kept"] > 20, expected[1]["skipped"]
    assert "Task was destroyed" not in done.stderr    # a bad product costs its one line, no asyncio noise
    run = subprocess.run(_cmd(url, str(killed), "item:3"), env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert (killed / "_staging").exists() and not (killed / "manifest.json").exists()
    again = subprocess.run(_cmd(url, str(killed)) + ["--processes"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert dataset_snapshot(killed) == expected
