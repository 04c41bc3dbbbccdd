"""``ofa ingest`` end to end on a real STAC API (rustac) serving real items with local COGs:
folder and S3 outputs, verify/show, byte-identical reruns and ``--from-manifest`` rebuilds,
client-side ``--max-cloud``, both Sentinel-2 key conventions."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ingest_fixtures import CLOUDY_LANDSAT, COLLECTIONS, ES_S2, LEGACY_S2, PC_S2

from ofa.infra.localstack import s3_server
from ofa.ingest.dataset.contract import META_KEYS, MANIFEST_KEYS
from ofa.ingest.sensors import SENSORS
from ofa.pipeline.cli import main

CHIP = "80"


def _ingest(url: str, out, *extra: str) -> int:
    args = ["ingest", "--catalog", url, "--allow-local-hrefs", "--out", str(out), "--chip-size", CHIP, "--workers", "2", "--no-progress"]
    for c in COLLECTIONS:
        args += ["--collection", c]
    return main(args + list(extra))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _shards(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if k.startswith("shards/")}


def _without_created(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "created"}


def test_cli_folder_end_to_end(catalog, tmp_path, capsys):
    url, items = catalog
    out = tmp_path / "ds"
    assert _ingest(url, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(MANIFEST_KEYS) <= set(manifest)
    assert {i["id"] for i in manifest["items"]} == {i["id"] for i in items}
    assert all(i["etag"] and len(i["etag"]) == 64 for i in manifest["items"])
    assert {s["sensor"] for s in manifest["shards"]} == {"sentinel-2", "landsat", "naip", "sentinel-1"}
    assert manifest["skipped"] == []
    # the HH-only Sentinel-1 item (no calibration link here) carries VH invalid, its DN statistics kept apart
    s1 = manifest["statistics"]["sentinel-1/amplitude_dn"]
    assert "sentinel-1" not in manifest["statistics"] and s1["quantity"] == "amplitude_dn"
    assert s1["count"][0] > 0 and s1["count"][1] == 0 and s1["mean"][1] is None
    text = (out / "manifest.json").read_text()
    assert "SECRET-TOKEN" not in text and "sig=" not in text
    assert not (out / "_staging").exists()

    seen_items, dtypes = set(), {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 and m.uname == "" for m in members)
            names = [m.name for m in members]
            assert len(names) == 2 * shard["count"]
            for name in names[::2]:
                key = name.split(".", 1)[0]
                pixels = np.load(io.BytesIO(tar.extractfile(f"{key}.pixels.npy").read()))
                meta = json.loads(tar.extractfile(f"{key}.meta.json").read())
                assert set(META_KEYS) <= set(meta)
                assert pixels.shape == (len(meta["bands"]), int(CHIP), int(CHIP))
                assert pixels.dtype.name == meta["dtype"]
                assert meta["nodata_fraction"] <= 0.1
                assert meta["sensor"] == shard["sensor"]
                west, south, east, north = meta["bbox"]
                assert -180 <= west < east <= 180 and -90 <= south < north <= 90
                seen_items.add(meta["item_id"])
                dtypes[meta["sensor"]] = meta["dtype"]
                assert meta["band_valid"] == [True] * (len(meta["bands"]) - 1) + [meta["sensor"] != "sentinel-1"]
                if meta["sensor"] == "sentinel-1":   # the zero-filled channel
                    assert meta["quantity"] == "amplitude_dn" and not pixels[1].any()
    # both Sentinel-2 asset conventions (Planetary Computer B04, Earth Search red) and the legacy one gave chips
    assert {PC_S2, ES_S2, LEGACY_S2} <= seen_items
    assert dtypes == {"sentinel-2": "uint16", "landsat": "uint16", "naip": "uint8", "sentinel-1": "uint16"}
    s2 = manifest["statistics"]["sentinel-2"]
    assert s2["bands"][3] == "B04" and len(s2["mean"]) == 12 and all(c > 0 for c in s2["count"])
    assert s2["quantity"] == "surface_reflectance"
    counts = manifest["counts"]
    assert counts["kept"] == sum(s["count"] for s in manifest["shards"])
    assert counts["dropped"]["nodata"] > 0 and counts["dropped"]["cloud"] > 0

    capsys.readouterr()
    assert main(["manifest", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["manifest", "show", str(out / "manifest.json")]) == 0
    shown = capsys.readouterr().out
    assert "sentinel-2" in shown and "B8A" in shown and "sentinel-1-grd" in shown

    # a rerun on a finished dataset reuses it
    assert _ingest(url, out) == 0
    assert json.loads((out / "manifest.json").read_text())["created"] == manifest["created"]

    # a flipped byte in a shard fails verification
    shard = out / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["manifest", "verify", str(out)]) == 1
    assert "sha256" in capsys.readouterr().out
    shard.unlink()
    assert main(["manifest", "verify", str(out)]) == 1
    assert "missing" in capsys.readouterr().out


def test_reproducible_rebuild_and_s3(catalog, tmp_path):
    url, _ = catalog
    first, second, rebuilt = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _ingest(url, first, "--shard-max-samples", "5") == 0
    assert _ingest(url, second, "--shard-max-samples", "5", "--processes", "--workers", "1") == 0
    assert _shards(first) == _shards(second)
    m1 = json.loads((first / "manifest.json").read_text())
    assert all(s["count"] <= 5 for s in m1["shards"]) and len(m1["shards"]) > 3
    # items that fill whole shards had them written by the worker that read them (a worker process in `second`)
    assert any("/items/" in s["path"] for s in m1["shards"]), [s["path"] for s in m1["shards"]]
    assert _without_created(json.loads((second / "manifest.json").read_text())) == _without_created(m1)

    assert main(["ingest", "--from-manifest", str(first / "manifest.json"), "--allow-local-hrefs", "--out", str(rebuilt), "--no-progress"]) == 0
    assert _shards(rebuilt) == _shards(first)
    assert _without_created(json.loads((rebuilt / "manifest.json").read_text())) == _without_created(m1)

    with s3_server() as s3:
        bucket = s3.make_bucket("ofa-ingest")
        opts = json.dumps(s3.storage_options)
        target = f"{bucket}/rebuilt"
        assert main(["ingest", "--from-manifest", str(first), "--allow-local-hrefs", "--out", target, "--storage-options", opts, "--no-progress"]) == 0
        assert main(["manifest", "verify", target, "--storage-options", opts]) == 0
        import s3fs

        fs = s3fs.S3FileSystem(**s3.storage_options)
        for rel, data in _shards(first).items():
            assert fs.cat_file(f"ofa-ingest/rebuilt/{rel}") == data
        assert not fs.exists("ofa-ingest/rebuilt/_staging")
        m3 = json.loads(fs.cat_file("ofa-ingest/rebuilt/manifest.json"))
        assert _without_created(m3) == _without_created(m1)


def test_max_cloud_client_side_and_config_file(catalog, tmp_path):
    url, items = catalog
    config = tmp_path / "ingest.yaml"
    config.write_text(
        f"catalog: {url}\ncollection: [sentinel-2-l2a, landsat-c2-l2, naip]\nmax-cloud: 30\n"
        f"chip_size: 80\nbands: B04,B08,red,nir\nout: {tmp_path / 'ds'}\nworkers: 1\n"
        "allow_local_hrefs: true\n"   # the catalog serves files of this machine
    )
    assert main(["ingest", "--config", str(config), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    chosen = {i["id"] for i in manifest["items"]}
    expected = {
        it["id"] for it in items
        if it["collection"] in ("sentinel-2-l2a", "landsat-c2-l2", "naip")
        and (it["properties"].get("eo:cloud_cover") is None or it["properties"]["eo:cloud_cover"] <= 30)
    }
    assert chosen == expected
    assert CLOUDY_LANDSAT not in chosen  # 42.93 % cloudy
    assert any(i["collection"] == "naip" for i in manifest["items"])  # no eo:cloud_cover: kept
    assert manifest["search"]["max_cloud"] == 30
    # bands left out keep their channel (zero-filled, band_valid false) and get no statistics
    for sensor, kept in (("sentinel-2", {"B04", "B08"}), ("naip", {"R", "NIR"})):
        stats = manifest["statistics"][sensor]
        assert {b for b, n in zip(stats["bands"], stats["count"]) if n > 0} == kept
        assert len(stats["bands"]) == len(SENSORS[sensor].bands)


def test_cli_errors_name_the_bad_input(catalog, tmp_path, capsys):
    url, _ = catalog
    assert main(["ingest", "--catalog", url, "--allow-local-hrefs", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--collection" in capsys.readouterr().err
    assert main(["ingest", "--catalog", url, "--allow-local-hrefs", "--collection", "no-such-collection", "--out", str(tmp_path / "y"), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert "--collection no-such-collection: not in the catalog" in err and "sentinel-2-l2a" in err  # its /collections
    assert len(err.splitlines()) == 1
    assert main(["ingest", "--bbox", "1,2,3", "--out", "z"]) == 2
    assert "--bbox" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("chip_sise: 3\n")
    assert main(["ingest", "--config", str(bad)]) == 2
    assert "chip_sise" in capsys.readouterr().err
    assert main(["manifest", "verify", str(tmp_path / "nothing")]) == 1
    assert "no manifest" in capsys.readouterr().out


def test_joins_an_existing_dask_cluster(catalog, tmp_path):
    from dask.distributed import LocalCluster

    url, _ = catalog
    reference = tmp_path / "local"
    # on a local cluster the workers write the shards an item fills on its own; joining a scheduler with a
    # local --out, the client writes every shard (remote workers would write to their own disks): same bytes
    assert _ingest(url, reference, "--workers", "1", "--shard-max-samples", "5") == 0
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        args = ["ingest", "--catalog", url, "--allow-local-hrefs", "--out", str(tmp_path / "joined"), "--chip-size", CHIP, "--no-progress",
                "--scheduler", cluster.scheduler_address, "--shard-max-samples", "5"]
        for c in COLLECTIONS:
            args += ["--collection", c]
        assert main(args) == 0
    assert _shards(tmp_path / "joined") == _shards(reference)
    manifest = json.loads((reference / "manifest.json").read_text())
    assert any("/items/" in s["path"] for s in manifest["shards"]) and any("/items/" not in s["path"] for s in manifest["shards"])
    assert _without_created(json.loads((tmp_path / "joined" / "manifest.json").read_text())) == _without_created(manifest)


def test_bbox_datetime_and_intersects(catalog, tmp_path):
    from ofa.ingest.search import SearchParams, search_items

    url, items = catalog
    naip = next(it for it in items if it["id"].startswith("pr_m_1806551"))
    w, s, e, n = naip["bbox"]
    found = search_items(url, SearchParams(tuple(COLLECTIONS), bbox=(w, s, e, n)))
    assert [it["id"] for it in found] == [naip["id"]]
    found = search_items(url, SearchParams(tuple(COLLECTIONS), datetime="2023-01-01T00:00:00Z/2024-12-31T23:59:59Z"))
    assert {it["id"] for it in found} == {it["id"] for it in items if it["properties"]["datetime"][:4] in ("2023", "2024")}

    capped = search_items(url, SearchParams(("sentinel-2-l2a",), max_cloud=50, max_items=1))
    assert len(capped) == 1 and capped[0]["properties"]["eo:cloud_cover"] <= 50  # filter first, then the cap
    assert len(search_items(url, SearchParams(tuple(COLLECTIONS), max_items=3))) == 3

    landsat = next(it for it in items if it["id"] == "LC09_L2SP_089087_20240417_02_T2")
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": landsat["geometry"]}))
    out = tmp_path / "ds"
    assert main(["ingest", "--catalog", url, "--allow-local-hrefs", "--collection", "landsat-c2-l2", "--intersects", str(aoi), "--out", str(out),
                 "--chip-size", CHIP, "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["id"] for i in manifest["items"]] == [landsat["id"]]
    assert manifest["search"]["intersects"] == landsat["geometry"]


def test_unfinished_work_of_other_parameters_is_not_reused(catalog, tmp_path):
    from ofa.ingest.job import IngestConfig, run_ingest

    url, _ = catalog
    out = tmp_path / "ds"
    big = IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(out), chip_size=120, workers=1, progress=False)
    run_ingest(big)
    # pretend the run was killed before its manifest: staging of a chip-size-120 run left behind
    (out / "manifest.json").unlink()
    (out / "_staging").mkdir()
    (out / "_staging" / "_search.json").write_text(json.dumps({"key": {"stale": True}, "items": []}))
    (out / "_staging" / "naip__bogus.tar").write_bytes(b"not a tar")
    (out / "shards" / "naip" / "naip-000007.tar").write_bytes(b"a shard of some older run")
    small = IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(out), chip_size=80, workers=1, progress=False)
    manifest = run_ingest(small)
    assert manifest["chips"]["chip_size"] == 80 and not manifest["skipped"]
    on_disk = {p.relative_to(out).as_posix() for p in (out / "shards").rglob("*") if p.is_file()}
    assert on_disk == {s["path"] for s in manifest["shards"]}   # shards the manifest does not name are gone
    reference = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(tmp_path / "ref"), chip_size=80,
                                        workers=1, progress=False))
    assert manifest["shards"] == reference["shards"]


def test_chips_stay_inside_the_search_bbox(catalog, tmp_path):
    from ofa.ingest.job import IngestConfig, run_ingest

    url, items = catalog
    naip = next(it for it in items if it["id"].startswith("pr_m_1806551"))
    w, s, e, n = naip["bbox"]
    aoi = [w, s, w + (e - w) * 0.4, s + (n - s) * 0.4]   # the lower-left corner of the item
    whole = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(tmp_path / "whole"), chip_size=40,
                                    bbox=[w, s, e, n], workers=1, progress=False, max_nodata_fraction=1.0))
    part = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(tmp_path / "part"), chip_size=40,
                                   bbox=aoi, workers=1, progress=False, max_nodata_fraction=1.0))
    assert [i["id"] for i in part["items"]] == [naip["id"]]
    assert 0 < part["counts"]["kept"] < whole["counts"]["kept"]
    for shard in part["shards"]:
        with tarfile.open(tmp_path / "part" / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".meta.json"):
                    cw, cs, ce, cn = json.loads(tar.extractfile(member).read())["bbox"]
                    assert cw < aoi[2] and ce > aoi[0] and cs < aoi[3] and cn > aoi[1]
