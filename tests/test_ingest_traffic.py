"""What ``ofa ingest`` fetches from object storage, against the least it must fetch.

One Sentinel-2 item (1024 px, the demo catalog's first scene; clouds and a no-data collar make the
cloud mask drop chips) on the local S3 server, as COGs and as an EOPF Zarr product, read through a
metering proxy (``support.faultproxy``). The counts are deterministic (one worker); the minimum comes
from the files' own tile index and chunk objects (``support.transfer``). Goals (issue 22): bytes at most
1.25x the tiles the chip windows touch plus one header per asset, and for COGs requests at most 2x the
tile rows touched; a Zarr chunk is an object of its own, so there every chunk costs a GET, once.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from ofa.infra.demo_catalog import DEMO_SCENES, write_demo_catalog
from ofa.infra.demo_catalog import collection_for
from ofa.infra.localstack import s3_server, stac_server
from ofa.ingest.job import IngestConfig, run_ingest
from support.eopf_scene import eopf_item, write_eopf_product
from support.faultproxy import FaultProxy
from support.transfer import cog_minimum, touched, zarr_minimum

BUCKET = "ofa-traffic"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The item's local COGs and EOPF product (4 x 4 chunks per array), uploaded to a fresh S3 server."""
    import s3fs

    root = tmp_path_factory.mktemp("traffic")
    scene = dataclasses.replace(DEMO_SCENES[0], size=1024)
    _, (item,) = write_demo_catalog(root / "cogs", (scene,))
    product = root / "zarr" / f"{item['id']}.zarr"
    write_eopf_product(item, str(product), 2, 4)
    with s3_server() as s3:
        s3.make_bucket(BUCKET)
        s3fs.S3FileSystem(**s3.storage_options).put(f"{root}/", f"{BUCKET}/", recursive=True)
        remote = {"cog": _rehome(item, root), "zarr": _rehome(eopf_item(item, str(product), "assets"), root)}
        yield {"s3": s3, "local": {"cog": item, "zarr": eopf_item(item, str(product), "assets")}, "remote": remote}


def _rehome(item: dict, root) -> dict:
    """``item`` with its hrefs under ``root`` moved to the bucket."""
    import json

    return json.loads(json.dumps(item).replace(str(root), f"s3://{BUCKET}"))


def _metered_ingest(scene: dict, kind: str, out, monkeypatch) -> tuple[dict, list, dict]:
    """Ingest the item once with its S3 traffic metered: (traffic, exchanges, manifest)."""
    s3, item = scene["s3"], scene["remote"][kind]
    with FaultProxy(s3.port, meter=True) as proxy, stac_server([collection_for(item["collection"], [item])], [item]) as url:
        for key, value in {**s3.gdal_env, "AWS_S3_ENDPOINT": f"127.0.0.1:{proxy.port}", "AWS_ENDPOINT_URL": proxy.url,
                           "AWS_ENDPOINT_URL_S3": proxy.url}.items():
            monkeypatch.setenv(key, value)
        manifest = run_ingest(IngestConfig(catalog=url, collections=[item["collection"]], out=str(out), workers=1,
                                           progress=False))
        return proxy.traffic(), list(proxy.exchanges), manifest


def test_cog_item_fetches_near_the_minimum(scene, tmp_path, monkeypatch):
    traffic, exchanges, manifest = _metered_ingest(scene, "cog", tmp_path / "cog", monkeypatch)
    minimum = cog_minimum([scene["local"]["cog"]], 256)
    counts = manifest["counts"]
    assert not manifest["skipped"] and counts["kept"] >= 4 and counts["dropped"]["cloud"] >= 1
    assert counts["kept"] + sum(counts["dropped"].values()) == minimum.chips == 16
    assert traffic["errors"] == 0 and traffic["requests"] == traffic["GET"]
    # every needed tile came through the proxy (the meter misses nothing) ...
    assert traffic["get_bytes"] >= minimum.needed_tile_bytes
    # ... and little else: no overview tiles, no tile twice, the header in the first GET of each file
    assert traffic["get_bytes"] <= 1.25 * minimum.needed_bytes <= 1.25 * minimum.bytes
    assert traffic["requests"] <= 2 * minimum.needed_tile_rows
    files = {e.path for e in exchanges}
    assert len(files) == minimum.assets == 13


def test_zarr_item_fetches_each_chunk_once(scene, tmp_path, monkeypatch):
    traffic, exchanges, manifest = _metered_ingest(scene, "zarr", tmp_path / "zarr", monkeypatch)
    minimum = zarr_minimum([scene["local"]["zarr"]], 256)
    assert not manifest["skipped"] and manifest["counts"]["dropped"]["cloud"] >= 1
    chunks = [e.path for e in exchanges if re.search(r"/\d+\.\d+$", e.path)]
    assert len(chunks) == len(set(chunks)) == minimum.needed_tiles     # each needed chunk, once
    assert minimum.needed_tile_bytes <= traffic["get_bytes"] <= 1.25 * minimum.needed_bytes
    # the rest: the root metadata once (.zgroup, .zmetadata, .zattrs, and the zarr.json probe that finds
    # none) and each resolution group's x/y coordinates
    others = sorted(e.path.split(".zarr/")[1] for e in exchanges if not re.search(r"/\d+\.\d+$", e.path))
    assert [p for p in others if "/" not in p] == [".zattrs", ".zgroup", ".zmetadata", "zarr.json"]
    assert all(re.fullmatch(r".+/[xy]/0", p) for p in others if "/" in p)


def test_touched_tiles_follow_the_sampled_pixels():
    """A 256 px chip at (256, 0) of a 10 m grid covers 20 m pixels 128-255 (one 128 px tile row) and 10 m
    tiles rows 1 of 256 px tiles; a chip past the grid's end touches nothing."""
    from affine import Affine

    class G:
        def __init__(self, t, size):
            self.transform, self.height, self.width = t, size, size

    ref = Affine(10, 0, 0, 0, -10, 0)
    assert touched(ref, G(ref, 1024), [(256, 0)], 256, (256, 256)) == {(1, 0)}
    assert touched(ref, G(Affine(20, 0, 0, 0, -20, 0), 512), [(256, 0), (256, 256)], 256, (128, 128)) == {(1, 0), (1, 1)}
    assert touched(ref, G(ref, 256), [(512, 0)], 256, (256, 256)) == set()


def test_http_meter_frames_bodies_however_the_bytes_arrive():
    """The proxy's meter counts each exchange's body once, whether framed by Content-Length or chunked,
    with no body after HEAD or 304, across a 100 Continue, and with the streams cut anywhere."""
    from support.faultproxy import _HttpMeter

    requests = (b"GET /b/k HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n" b"HEAD /b/k HTTP/1.1\r\n\r\n"
                b"PUT /b/n HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
                b"GET /b/c HTTP/1.1\r\n\r\n" b"GET /b/m HTTP/1.1\r\n\r\n")
    responses = (b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n0123456789"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"
                 b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n"
                 b"HTTP/1.1 304 Not Modified\r\n\r\n")
    for step in (1, 7, len(responses)):
        seen = []
        meter = _HttpMeter(seen.append)
        meter.request(requests)
        for i in range(0, len(responses), step):
            meter.response(responses[i:i + step])
        meter.close()
        assert [(e.method, e.path, e.range, e.status, e.body_bytes) for e in seen] == [
            ("GET", "/b/k", "bytes=0-9", 206, 10), ("HEAD", "/b/k", None, 200, 0), ("PUT", "/b/n", None, 200, 0),
            ("GET", "/b/c", None, 200, 7), ("GET", "/b/m", None, 304, 0)], step
