"""The local dev stack: real S3 and STAC API servers on 127.0.0.1, cleaned up even on failure."""
from __future__ import annotations

import os
import urllib.request

import pytest
import s3fs
from pystac_client import Client

from ofa.infra.demo_catalog import collection_for, write_demo_catalog
from ofa.infra.localstack import ServerError, _process, s3_server, stac_server


def test_s3_server_round_trip_and_shutdown():
    with s3_server() as s3:
        url = s3.make_bucket("roundtrip")
        fs = s3fs.S3FileSystem(**s3.storage_options)
        fs.pipe(f"{url}/a/b.bin", b"\x00\x01payload")
        assert fs.cat(f"{url}/a/b.bin") == b"\x00\x01payload"
        pid = s3.process.pid
    with pytest.raises(OSError):
        urllib.request.urlopen(s3.endpoint_url, timeout=2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_servers_stop_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with s3_server() as s3:
            endpoint = s3.endpoint_url
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint, timeout=2)


def test_failed_start_names_the_server(tmp_path):
    with pytest.raises(ServerError, match="exited"):
        with _process(["false"], "http://127.0.0.1:1", 5, tmp_path):
            pass


def test_stac_server_serves_demo_catalog_with_bbox_datetime_and_paging(tmp_path):
    collections, items = write_demo_catalog(tmp_path / "catalog")
    with stac_server(collections, items) as url:
        client = Client.open(url)
        everything = list(client.search(collections=["sentinel-2-l2a", "naip"], limit=1).items())
        assert sorted(i.id for i in everything) == sorted(
            i["id"] for i in items if i["collection"] in ("sentinel-2-l2a", "naip")
        )
        july = list(client.search(collections=["sentinel-2-l2a"], datetime="2024-07-01/2024-07-31").items())
        assert [i.id for i in july] == ["S2A_32TPT_20240720_0_L2A"]
        vermont = list(client.search(bbox=[-73.1, 44.4, -72.9, 44.6]).items())
        assert {i.collection_id for i in vermont} == {"naip"}


def test_collection_extent_covers_items(tmp_path):
    _, items = write_demo_catalog(tmp_path / "catalog")
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    extent = collection_for("sentinel-2-l2a", s2)["extent"]["spatial"]["bbox"][0]
    for item in s2:
        w, s, e, n = item["bbox"]
        assert extent[0] <= w and extent[1] <= s and extent[2] >= e and extent[3] >= n
