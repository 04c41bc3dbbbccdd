"""Bad items (missing asset, HTTP 404, corrupt COG, unknown CRS, no assets) are skipped with one
clear line each and recorded in the manifest; ``--strict`` fails instead."""
from __future__ import annotations

import json
import logging

import pytest

from ingest_fixtures import ES_S2, bad_items, collections_for, localized_items

from ofa.infra.localstack import free_port, stac_server
from ofa.ingest.job import IngestConfig, IngestError, run_ingest
from ofa.pipeline.cli import main

EXPECTED = {
    "BAD_missing_asset": "missing asset for band B04",
    "BAD_http_404": "'nir'",
    "BAD_corrupt_cog": "cannot be read",
    "BAD_truncated_cog": "'swir16'",
    "BAD_unknown_crs": "unknown CRS",
    "BAD_no_assets": "missing asset for band R",
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    good = [it for it in localized_items(root) if it["collection"] in ("sentinel-2-l2a", "naip")]
    port = free_port()
    items = [it for it in good if it["id"] == ES_S2] + bad_items(good, root, port)
    with stac_server(collections_for(items), items, port=port) as url:
        yield url, items


def test_bad_items_are_skipped_with_reasons(catalog, tmp_path, caplog):
    url, items = catalog
    caplog.set_level(logging.WARNING, logger="ofa.ingest")
    manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["sentinel-2-l2a", "naip"], out=str(tmp_path / "ds"),
                                       chip_size=80, workers=2, progress=False))
    reasons = {s["item_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(EXPECTED)
    for item_id, needle in EXPECTED.items():
        assert needle in reasons[item_id], (item_id, reasons[item_id])
    assert "404" in reasons["BAD_http_404"] or "not exist" in reasons["BAD_http_404"].lower()
    assert "corrupt.tif" in reasons["BAD_corrupt_cog"]
    assert "swir16.tif" in reasons["BAD_truncated_cog"]
    # one log line per skipped item, naming it
    lines = [r.getMessage() for r in caplog.records if "skipped item" in r.getMessage()]
    for item_id in EXPECTED:
        assert sum(item_id in line for line in lines) == 1, (item_id, lines)
    # the good item still made it
    assert manifest["shards"] and manifest["counts"]["kept"] > 0
    assert {s["sensor"] for s in manifest["shards"]} == {"sentinel-2"}


def test_strict_fails(catalog, tmp_path, capsys):
    url, _ = catalog
    with pytest.raises(IngestError, match="BAD_corrupt_cog"):
        run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["sentinel-2-l2a", "naip"], out=str(tmp_path / "a"),
                                chip_size=80, workers=1, progress=False, strict=True))
    assert not (tmp_path / "a" / "manifest.json").exists()
    rc = main(["ingest", "--catalog", url, "--allow-local-hrefs", "--collection", "sentinel-2-l2a", "--out", str(tmp_path / "b"),
               "--chip-size", "80", "--workers", "1", "--strict", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "--strict" in err and "BAD_missing_asset" in err


def test_unreachable_catalog_is_a_clear_error(tmp_path, capsys):
    rc = main(["ingest", "--catalog", f"http://127.0.0.1:{free_port()}", "--collection", "naip",
               "--out", str(tmp_path / "c"), "--no-progress"])
    assert rc == 4  # the catalog cannot be reached
    assert "127.0.0.1" in capsys.readouterr().err
    assert json.dumps({}) == "{}"
