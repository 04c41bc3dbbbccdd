"""``ofa ingest --plan``: what a run would do, from the items and the asset headers, with no pixel read;
its chip windows are the run's (kept + dropped), and every band says where its scale/offset came from."""
from __future__ import annotations

import json

import pytest
import rasterio

from ingest_fixtures import CLOUDY_LANDSAT, COLLECTIONS, ES_S2, PC_S2, S1_HH

from ofa.pipeline.cli import main

CHIP = "80"


def _plan(capsys, url: str, *extra: str) -> str:
    args = ["ingest", "--plan", "--catalog", url, "--allow-local-hrefs", "--chip-size", CHIP, *extra]
    for cid in COLLECTIONS:
        args += ["--collection", cid]
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_plan_reads_no_pixel_and_names_every_origin(catalog, capsys, monkeypatch):
    url, items = catalog

    def no_pixels(*args, **kwargs):
        raise AssertionError("--plan read pixels")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", no_pixels)
    report = json.loads(_plan(capsys, url, "--json"))
    assert sorted(e["item_id"] for e in report["items"]) == sorted(it["id"] for it in items)
    by_id = {e["item_id"]: e for e in report["items"]}
    assert not any(e.get("skipped") for e in report["items"])
    es, pc = by_id[ES_S2]["bands"][3], by_id[PC_S2]["bands"][3]
    assert (es["asset"], es["scale_from"]) == ("red", "item raster:bands")
    assert es["offset"] == 0 and es["offset_from"].startswith("0: earthsearch:boa_offset_applied is true")
    assert (pc["asset"], pc["scale_from"], pc["offset"]) == ("B04", "registry", 0.0)
    assert pc["offset_from"] == "processing baseline rule (s2:processing_baseline 02.12 < 04.00: none)"
    assert by_id[PC_S2]["cloud_mask"]["asset"] == "SCL" and by_id[CLOUDY_LANDSAT]["cloud_mask"]["rule"] == "bits"
    s1 = by_id[S1_HH]
    assert [b["valid"] for b in s1["bands"]] == [True, False] and s1["quantity"] == "amplitude_dn"
    assert "no unit stated" in s1["quantity_from"]
    for e in report["items"]:
        g = e["georeferencing"]
        assert g["route"] == "geotransform" and g["crs"].startswith("EPSG:") and e["chips"] > 0
        assert e["bytes_read"] > 0 and e["bytes_write"] >= e["chips"] * int(CHIP) ** 2
        for band in e["bands"]:
            assert not band["valid"] or (band["href"] and "?" not in band["href"] and band["scale_from"])
    totals = report["collections"]
    assert set(totals) == {it["collection"] for it in items}
    assert sum(t["chips"] for t in totals.values()) == sum(e["chips"] for e in report["items"])
    assert totals["naip"]["items"] == 2 and totals["naip"]["bytes_read"] == sum(
        by_id[i]["bytes_read"] for i in by_id if by_id[i]["collection"] == "naip")


def test_plan_chips_are_the_runs_windows(catalog, capsys, tmp_path):
    url, _ = catalog
    report = json.loads(_plan(capsys, url, "--json", "--collection", "naip"))
    out = tmp_path / "ds"
    assert main(["ingest", "--catalog", url, "--allow-local-hrefs", "--collection", "naip", "--chip-size", CHIP, "--out", str(out),
                 "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert report["collections"]["naip"]["chips"] == counts["kept"] + sum(counts["dropped"].values())
    written = sum(s["bytes"] for s in manifest["shards"])
    assert written <= report["collections"]["naip"]["bytes_write"] * 1.05   # "at most": every chip kept


def test_plan_text_lists_every_item_with_its_bands_and_totals(catalog, capsys):
    url, items = catalog
    text = _plan(capsys, url)
    for item in items:
        assert f"\n{item['id']}  (" in text
    assert text.count("scale ") >= sum(12 if i["collection"].startswith("sentinel-2") else 7
                                       if i["collection"].startswith("landsat") else 4 if i["collection"] == "naip"
                                       else 1 for i in items)
    assert "collection sentinel-2-l2a: 2 items (0 skipped)" in text and "\nall: 8 items (0 skipped)" in text


def test_plan_says_why_an_item_would_be_skipped(catalog, capsys):
    url, _ = catalog
    report = json.loads(_plan(capsys, url, "--json", "--chip-size", "100000"))
    assert all(e["chips"] == 0 and "smaller than one chip" in e["skipped"] for e in report["items"])
    assert all(t["skipped"] == t["items"] for t in report["collections"].values())


@pytest.mark.parametrize("argv", [["--plan", "--json"], ["--plan"]])
def test_plan_needs_no_out(catalog, capsys, argv):
    url, _ = catalog
    capsys.readouterr()
    assert main(["ingest", *argv, "--catalog", url, "--allow-local-hrefs", "--collection", "naip"]) == 0
    assert "pr_m_1806551" in capsys.readouterr().out
