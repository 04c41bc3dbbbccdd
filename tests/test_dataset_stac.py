"""The dataset as STAC: ``ofa ingest`` of the demo catalog (served by ``rustac serve``, its collections given a
licence, providers and licence links) writes ``stac/collection.json`` (valid for stac-pydantic, extents and
summaries from the samples, links to the sources) and ``index.parquet`` (one GeoParquet 1.1 row per
sample, read back with pyarrow, GeoPandas and DuckDB); a rebuild gives the same index bytes;
``ofa manifest stac`` writes both for an existing dataset; ``ofa manifest show --map`` plots it.

DuckDB's spatial extension cannot be installed offline (``INSTALL spatial`` downloads it, and the
``duckdb-ext-spatial`` wheel on PyPI is built for DuckDB 1.4 only), so the spatial queries use what core
DuckDB (>= 1.5) has: the ``GEOMETRY`` type GeoParquet's WKB is read as, ``ST_Intersects_Extent`` and
the bbox covering column."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
from ofa.infra.localstack import stac_server
from ofa.ingest.job import IngestConfig, run_ingest
from ofa.pipeline.cli import main
from support.samples import read_metas

LICENCES = {"sentinel-2-l2a": "CC-BY-4.0", "sentinel-1-grd": "CC-BY-4.0", "landsat-c2-l2": "PDDL-1.0",
            "naip": "PDDL-1.0"}


def _collections(collections: list[dict]) -> list[dict]:
    for c in collections:
        c["license"] = LICENCES[c["id"]]
        c["providers"] = [{"name": f"agency of {c['id']}", "roles": ["producer", "licensor"]},
                          {"name": "the host", "roles": ["host"]}]
        c["links"] = [{"rel": "license", "href": f"https://example.org/licences/{c['id']}", "type": "text/html"}]
    return collections


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("dstac")
    collections, items = write_demo_catalog(root / "catalog")
    with stac_server(_collections(collections), items) as url:
        cfg = IngestConfig(catalog=url, allow_local_hrefs=True, collections=list(DEMO_COLLECTIONS), out=str(root / "ds"), chip_size=128,
                           workers=1, progress=False)
        manifest = run_ingest(cfg)
        yield root, url, manifest, read_metas(root / "ds")


def test_collection_validates_and_describes_the_samples(ingested) -> None:
    from stac_pydantic import Collection

    root, url, manifest, metas = ingested
    doc = json.loads((root / "ds" / "stac" / "collection.json").read_text())
    Collection.model_validate(doc)
    assert doc["stac_version"] == "1.1.0" and doc["license"] == "CC-BY-4.0 AND PDDL-1.0"
    assert [p["name"] for p in doc["providers"]] == [f"agency of {c}" for c in DEMO_COLLECTIONS][:1] + [
        "the host"] + [f"agency of {c}" for c in DEMO_COLLECTIONS][1:] + ["ofa"]
    derived = [ln["href"] for ln in doc["links"] if ln["rel"] == "derived_from"]
    assert derived == [f"{url}/collections/{c}" for c in DEMO_COLLECTIONS]
    assert {ln["href"] for ln in doc["links"] if ln["rel"] == "license"} == {
        f"https://example.org/licences/{c}" for c in DEMO_COLLECTIONS}
    assert next(ln for ln in doc["links"] if ln["rel"] == "via")["href"] == url
    boxes = np.array([m["bbox"] for _, m in metas.values()])
    assert doc["extent"]["spatial"]["bbox"] == [[boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]]
    times = sorted(datetime.fromisoformat(m["datetime"].replace("Z", "+00:00")) for _, m in metas.values())
    assert doc["extent"]["temporal"]["interval"] == [[t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                                                      for t in (times[0], times[-1])]]
    sums = doc["summaries"]
    assert sums["ofa:sensor"] == sorted({m["sensor"] for _, m in metas.values()})
    assert sums["ofa:quantity"] == sorted({m["quantity"] for _, m in metas.values()})
    assert sums["gsd"] == sorted({m["gsd"] for _, m in metas.values()}) and sums["ofa:chip_size"] == [128]
    b04 = next(b for b in sums["bands"] if b["name"] == "B04" and b["ofa:sensor"] == "sentinel-2")
    stats = manifest["statistics"]["sentinel-2"]
    i = stats["bands"].index("B04")
    assert b04["eo:center_wavelength"] == 0.665 and b04["statistics"]["mean"] == stats["mean"][i]
    assert doc["ofa:samples"] == {s: sum(1 for _, m in metas.values() if m["sensor"] == s) for s in sums["ofa:sensor"]}
    for name, file in (("manifest", "manifest.json"), ("index", "index.parquet")):
        data = (root / "ds" / file).read_bytes()
        asset = doc["assets"][name]
        assert (root / "ds" / "stac" / asset["href"]).resolve() == (root / "ds" / file).resolve()
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest() and asset["file:size"] == len(data)


def test_index_has_one_row_per_sample_with_its_footprint(ingested) -> None:
    import geopandas as gpd
    import shapely

    root, _, manifest, metas = ingested
    path = root / "ds" / "index.parquet"
    table = pq.read_table(path)
    assert table.num_rows == sum(s["count"] for s in manifest["shards"]) == len(metas)
    assert table.column("key").to_pylist() == list(metas)
    rows = table.to_pylist()
    for row in rows:
        shard, meta = metas[row["key"]]
        assert row["shard"] == shard
        for name in ("sensor", "collection", "item_id", "quantity", "cloud_fraction", "nodata_fraction", "gsd", "crs"):
            assert row[name] == meta[name], name
        assert row["datetime"] == datetime.fromisoformat(meta["datetime"].replace("Z", "+00:00"))
        assert list(row["bbox"].values()) == meta["bbox"] and row["transform"] == meta["transform"]
        footprint = shapely.from_wkb(row["geometry"])  # the bbox rectangle, counterclockwise, exactly
        assert footprint.equals(shapely.box(*meta["bbox"])) and footprint.exterior.is_ccw
        assert list(footprint.bounds) == meta["bbox"] and len(footprint.exterior.coords) == 5
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and "crs" not in geo["columns"]["geometry"]  # absent crs: OGC:CRS84
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    frame = gpd.read_parquet(path)
    assert frame.crs.to_string() == "OGC:CRS84" and len(frame) == len(metas)
    np.testing.assert_array_equal(frame.geometry.bounds.to_numpy(), [m["bbox"] for _, m in metas.values()])


def _intersects(box: list[float], meta_box: list[float]) -> bool:
    return meta_box[0] <= box[2] and meta_box[2] >= box[0] and meta_box[1] <= box[3] and meta_box[3] >= box[1]


def test_duckdb_bbox_queries_return_exactly_the_intersecting_samples(ingested) -> None:
    import duckdb
    import shapely

    root, _, _, metas = ingested
    path = str(root / "ds" / "index.parquet")
    boxes = np.array([m["bbox"] for _, m in metas.values()])
    rng = np.random.default_rng(0)
    queries = [[-180.0, -90.0, 180.0, 90.0], [0.0, 0.0, 1.0, 1.0]]  # everything; nothing
    for i in rng.choice(len(boxes), 6, replace=False):  # boxes around sample corners: some neighbours, not all
        w, s, e, n = boxes[i]
        dx, dy = (e - w) * rng.uniform(0.1, 1.5), (n - s) * rng.uniform(0.1, 1.5)
        queries.append([e - dx / 2, n - dy / 2, e + dx / 2, n + dy / 2])
    con = duckdb.connect()
    assert con.execute(f"SELECT typeof(geometry) FROM read_parquet('{path}') LIMIT 1").fetchone()[0].startswith("GEOMETRY")
    for q in queries:
        expected = sorted(k for k, (_, m) in metas.items() if _intersects(q, m["bbox"]))
        by_geometry = con.execute(f"SELECT key FROM read_parquet('{path}') WHERE ST_Intersects_Extent(geometry, "
                                  "ST_GeomFromWKB(?::BLOB)) ORDER BY key", [shapely.to_wkb(shapely.box(*q))]).fetchall()
        by_covering = con.execute(f"SELECT key FROM read_parquet('{path}') WHERE bbox.xmin <= ? AND bbox.xmax >= ? "
                                  "AND bbox.ymin <= ? AND bbox.ymax >= ? ORDER BY key", [q[2], q[0], q[3], q[1]]).fetchall()
        assert [k for (k,) in by_geometry] == expected == [k for (k,) in by_covering], q
    assert 0 < min(len(e) for e in [[k for k, (_, m) in metas.items() if _intersects(q, m["bbox"])]
                                      for q in queries[2:]])
    # "which samples lie here, in 2024, with cloud < 10 %": the question the index exists for
    q = queries[0]
    got = con.execute(f"SELECT key FROM read_parquet('{path}') WHERE bbox.xmin <= ? AND bbox.xmax >= ? AND "
                      "bbox.ymin <= ? AND bbox.ymax >= ? AND year(datetime) = 2024 AND cloud_fraction < 0.1 "
                      "ORDER BY key", [q[2], q[0], q[3], q[1]]).fetchall()
    expected = sorted(k for k, (_, m) in metas.items() if m["datetime"].startswith("2024")
                      and m["cloud_fraction"] is not None and m["cloud_fraction"] < 0.1)
    assert [k for (k,) in got] == expected and 0 < len(expected) < len(metas)


def test_rebuild_and_manifest_stac_give_the_same_index(ingested, tmp_path, capsys) -> None:
    root, url, manifest, _ = ingested
    index = (root / "ds" / "index.parquet").read_bytes()
    assert main(["ingest", "--from-manifest", str(root / "ds" / "manifest.json"), "--allow-local-hrefs", "--out", str(tmp_path / "again"),
                 "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "again" / "index.parquet").read_bytes() == index  # a rebuild is byte-identical
    old = tmp_path / "old"  # a dataset from before the index: shards + manifest only
    shutil.copytree(root / "ds", old, ignore=shutil.ignore_patterns("index.parquet", "stac"))
    assert main(["manifest", "stac", str(old)]) == 0
    assert (old / "index.parquet").read_bytes() == index
    doc = json.loads((old / "stac" / "collection.json").read_text())
    assert doc["license"] == "CC-BY-4.0 AND PDDL-1.0"  # the catalog still answers
    gone = json.loads((old / "manifest.json").read_text())
    gone["catalog"] = "http://127.0.0.1:9/unreachable"
    (old / "manifest.json").write_text(json.dumps(gone))
    assert main(["manifest", "stac", str(old)]) == 0  # the catalog is gone: the earlier collection.json still says
    again = json.loads((old / "stac" / "collection.json").read_text())
    assert again["license"] == doc["license"] and again["providers"] == doc["providers"]
    assert again["assets"]["manifest"]["file:checksum"] != doc["assets"]["manifest"]["file:checksum"]


def test_manifest_show_map_plots_every_sensor(ingested, tmp_path, capsys) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    root, _, _, metas = ingested
    png = tmp_path / "map.png"
    assert main(["manifest", "show", str(root / "ds"), "--map", str(png)]) == 0
    assert "samples" in capsys.readouterr().out
    image = plt.imread(io.BytesIO(png.read_bytes()))[..., :3]
    sensors = sorted({m["sensor"] for _, m in metas.values()})
    for i, _ in enumerate(sensors):  # every sensor's edge colour is on the map
        colour = np.array(colormaps["tab10"](i)[:3])
        assert (np.abs(image - colour).max(axis=-1) < 0.02).sum() > 20, i
