"""A catalog cannot make ingest read what it should not: the href policy (``ingest/hrefs.py``) and the size
limits (``ingest/limits.py``), end to end on a hostile catalog served from a STAC API on 127.0.0.1
(``support.hostile``: a loopback listener that is also GDAL's proxy, and inotify on the secret files), and
rule by rule."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from ofa.ingest.hrefs import LOCAL_FILES, HrefGate, HrefPolicy, HrefRefused, policy_for
from ofa.ingest.items import ItemError
from ofa.ingest.limits import ReadLimits, json_deeper_than
from ofa.ingest.zarr_reader import ChunkRule


# ------------------------------------------------------------------ the hostile catalog, as a user runs it
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from support.hostile import campaign

    from ofa.infra.localstack import s3_server

    with s3_server() as s3:
        yield campaign(tmp_path_factory.mktemp("hostile"), s3)


@pytest.mark.parametrize("which", ["plan", "ingest"])
def test_hostile_items_are_skipped_with_their_rule_and_good_ones_read(hostile, which):
    run = getattr(hostile, which)
    assert run.rc == 0, run.stderr[-2000:]
    verdicts = hostile.verdicts(which)
    assert len(verdicts) == 21
    wrong = [(h.item["id"], h.expect, got) for h, got, ok in verdicts if not ok]
    assert wrong == []
    for _, got, _ in verdicts:   # every reason is one line
        assert "\n" not in got


def test_refused_hrefs_cause_no_request_and_no_file_open(hostile):
    assert hostile.forbidden == []


def test_the_watchers_see_what_is_allowed(hostile):
    """The control run (--allow-local-hrefs, two plain http items) shows the watchers would have seen the accesses:
    the local files are opened, the listener gets the direct request and the one GDAL sends through its proxy."""
    control = hostile.control
    assert control.rc == 0, control.stderr[-2000:]
    assert any(path.endswith("/secret.tif") for path in control.opens)
    assert any(path.endswith("/calibration-vv.xml") for path in control.opens)
    assert any("/cube.zarr/" in path for path in control.opens)
    assert any(line.startswith(("GET /control.tif", "HEAD /control.tif")) for line in control.requests)
    assert any("http://203.0.113.7/control.tif" in line for line in control.requests)
    assert control.got["HOSTILE_LOCAL"].startswith("ingested (") and not control.got["HOSTILE_LOCAL"].startswith("ingested (0")
    # what --allow-local-hrefs does not open: GDAL virtual paths and metadata addresses
    for item_id in ("HOSTILE_VSICURL", "HOSTILE_VSIZIP", "HOSTILE_IMDS", "HOSTILE_GCEMETA", "HOSTILE_ZARR_VSI"):
        assert control.got[item_id].startswith("href refused:"), control.got[item_id]
    assert not any("169.254" in line or "metadata.google" in line or "secret.tif" in line for line in control.requests)


def test_the_manifest_records_the_policy_and_a_rebuild_follows_it(hostile, tmp_path):
    from ofa.ingest.job import config_from_manifest

    manifest = json.loads((hostile.setup.secret.parent / "out" / "manifest.json").read_text())
    assert manifest["reads"]["hrefs"] == {"allow_local_hrefs": False, "allow_href_hosts": [], "deny_href_hosts": []}
    assert manifest["reads"]["limits"] == ReadLimits().to_dict()
    cfg = config_from_manifest(manifest, str(tmp_path / "again"), given={"allow_local_hrefs": True})
    assert cfg.allow_local_hrefs is False          # the recorded rule, not the wider flag
    control = json.loads((hostile.setup.secret.parent / "control" / "manifest.json").read_text())
    with pytest.raises(ValueError, match="pass --allow-local-hrefs to rebuild"):
        config_from_manifest(control, str(tmp_path / "x"), given={})
    assert config_from_manifest(control, str(tmp_path / "x"), given={"allow_local_hrefs": True}).allow_local_hrefs


# ------------------------------------------------------------------ the policy, rule by rule
REFUSED = [
    ("/vsicurl/http://127.0.0.1:9/x.tif", "GDAL virtual path"),
    ("https://example.com/a/VSICURL/../vsis3/x.tif", "GDAL virtual path"),
    ("s3://bucket//vsizip/x.zip", "GDAL virtual path"),
    ("NETCDF:\"/data/a.nc\":var", "GDAL connection string"),
    ("<VRTDataset><VRTRasterBand/></VRTDataset>", "markup"),
    ("/etc/passwd", "local path from an HTTP catalog"),
    ("file:///etc/passwd", "local path from an HTTP catalog"),
    ("file://otherhost/share/x.tif", "file:// URL naming a host"),
    ("./B04.tif", "local path from an HTTP catalog"),
    ("ftp://example.com/x.tif", "scheme 'ftp' not allowed"),
    ("zip+https://example.com/a.zip!/x.tif", "scheme 'zip+https' not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "metadata address"),
    ("http://169.254.170.2/v2/credentials", "metadata address"),            # ECS task credentials
    ("http://0xa9fea9fe/", "metadata address"),
    ("http://0251.0376.0251.0376/", "metadata address"),
    ("http://169.254.43518/", "metadata address"),
    ("http://[::ffff:169.254.169.254]/", "metadata address"),
    ("http://[fd00:ec2::254]/", "metadata address"),
    ("http://[fe80::1]/", "metadata address"),
    ("http://100.100.100.200/latest/", "metadata address"),
    ("http://METADATA.google.internal./computeMetadata/v1/", "cloud metadata address"),
    ("http://metadata/computeMetadata/v1/", "cloud metadata address"),
    ("https://:443/x.tif", "URL without a host"),
    ("http://example.com:99999/x.tif", "malformed URL"),
]


@pytest.mark.parametrize("href,rule", REFUSED)
def test_refused_hrefs_name_their_rule(href, rule):
    with pytest.raises(HrefRefused) as info:
        policy_for("https://earth-search.aws.element84.com/v1").check(href)
    assert str(info.value).startswith("href refused: ") and rule in str(info.value) and isinstance(info.value, ItemError)


@pytest.mark.parametrize("href", ["https://sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif", "http://127.0.0.1:9000/b/k.tif",
                                  "s3://sentinel-cogs/x/B04.tif", "gs://bucket/x.tif", "az://container/x.tif",
                                  "https://planetarycomputer.microsoft.com/api/x.tif", "http://10.0.0.5/x.tif"])
def test_remote_hrefs_pass(href):
    assert policy_for("https://earth-search.aws.element84.com/v1").check(href) == href


def test_relative_hrefs_resolve_against_the_item():
    policy = policy_for("http://127.0.0.1:8080")
    assert policy.check("./B04.tif", "http://127.0.0.1:8080/collections/c/items/i") == "http://127.0.0.1:8080/collections/c/items/B04.tif"
    assert policy.check("../../x.tif", "https://host/a/b/c/item.json") == "https://host/a/x.tif"


def test_a_catalog_on_disk_names_files_inside_its_folder_only(tmp_path):
    root = tmp_path / "catalog"
    (root / "col" / "item").mkdir(parents=True)
    (root / "catalog.json").write_text("{}")
    (tmp_path / "outside.tif").write_bytes(b"x")
    (root / "col" / "item" / "link.tif").symlink_to(tmp_path / "outside.tif")
    policy = policy_for(str(root / "catalog.json"))
    base = str(root / "col" / "item" / "item.json")
    assert policy.check("./B04.tif", base) == str(root / "col" / "item" / "B04.tif")
    assert policy.check(f"file://{root}/col/x.tif") == f"file://{root}/col/x.tif"
    for href in ("../../../outside.tif", str(tmp_path / "outside.tif"), "./link.tif"):   # .., absolute, a symlink out
        with pytest.raises(HrefRefused, match="local path outside the catalog's folder"):
            policy.check(href, base)
    assert policy_for(f"file://{root}").local_root == str(root.resolve())


def test_host_patterns():
    policy = policy_for("https://x", allow_hosts=["*.amazonaws.com", "sentinel-cogs"], deny_hosts=["evil.*"])
    assert policy.check("https://bucket.s3.us-west-2.amazonaws.com/k.tif")
    assert policy.check("s3://sentinel-cogs/k.tif")
    with pytest.raises(HrefRefused, match="not in --allow-href-hosts"):
        policy.check("s3://my-private-bucket/k.tif")
    with pytest.raises(HrefRefused, match="matches --deny-href-hosts 'evil.\\*'"):
        policy.check("https://evil.amazonaws.com.example/k.tif")
    with pytest.raises(HrefRefused, match="metadata address"):   # an allow pattern never reaches a metadata address
        policy_for("https://x", allow_hosts=["*"]).check("http://169.254.169.254/")


def test_names_resolving_to_a_metadata_address_are_refused():
    """A host name is looked up (once per process): localhost resolves to a loopback address and passes; the
    literal forms above show what a lookup giving 169.254.169.254 is refused as."""
    from ofa.ingest.hrefs import metadata_host, resolved_addresses

    assert "127.0.0.1" in resolved_addresses("localhost")
    assert metadata_host("localhost") is None
    assert metadata_host("169.254.169.254.") == "link-local or cloud metadata address"


def test_the_gate_checks_before_the_signing_hook_sees_an_href():
    seen: list[str] = []

    def sign(href: str) -> str:
        seen.append(href)
        return href + "?sig=token"

    gate = HrefGate(policy_for("https://x"), sign)
    assert gate("https://host/a.tif") == "https://host/a.tif?sig=token"
    for href in ("/vsicurl/https://host/a.tif", "/etc/passwd", "http://169.254.169.254/"):
        with pytest.raises(HrefRefused):
            gate(href)
    assert seen == ["https://host/a.tif"]
    assert HrefGate(None, sign).policy == HrefPolicy()   # a plan without a policy gets the default: remote only
    with pytest.raises(HrefRefused):
        HrefGate(None, sign)("/etc/passwd")
    assert HrefGate(LOCAL_FILES, sign)("/tmp/x.tif") == "/tmp/x.tif?sig=token"


def test_a_plan_without_a_policy_refuses_local_paths_where_the_reader_opens(tmp_path):
    """A plan made before the policy existed (or by hand) is read with the default policy: nothing local opens."""
    import dataclasses

    from ingest_fixtures import load_item, localize_item

    from ofa.ingest.chips import ChipOptions, process_item
    from ofa.ingest.items import plan_item

    item = localize_item(load_item("naip", "pr_m_1806551_nw_20_030_20221212_20230329"), tmp_path)
    plan = dataclasses.replace(plan_item(item, policy=LOCAL_FILES), policy=None)
    with pytest.raises(ItemError, match="href refused: local path"):
        process_item(plan, ChipOptions(80))
    with pytest.raises(ItemError, match="href refused: local path"):
        plan_item(item)   # and the default policy at planning


# ------------------------------------------------------------------ limits
def test_item_json_limits():
    limits = ReadLimits(max_item_bytes=1000, max_json_depth=5)
    assert limits.item_refusal({"id": "a", "properties": {"x": [[1]]}}) is None
    assert "nested deeper than 5" in limits.item_refusal({"a": [[[[[[1]]]]]]})
    assert "bytes of JSON" in limits.item_refusal({"a": "x" * 2000})
    deep: list = []
    node = deep
    for _ in range(50_000):   # iterative: no recursion limit
        node.append([])
        node = node[0]
    assert json_deeper_than(deep, 64) and not json_deeper_than({"a": [1, {"b": 2}]}, 3)


def test_a_stac_response_over_the_limit_fails_the_search_in_one_line(catalog, tmp_path, capsys):
    from ofa.pipeline.cli import main

    rc = main(["ingest", "--catalog", catalog.url, "--collection", "naip", "--out", str(tmp_path / "o"),
               "--max-stac-bytes", "2000", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and "--max-stac-bytes" in err[0] and "2,000 bytes" in err[0], err


def test_limits_are_raised_by_option(tmp_path):
    import rasterio
    from support.hostile import _bomb_tiff

    from ofa.ingest.limits import check_raster

    path = _bomb_tiff(tmp_path / "tile.tif", 20000, 20000)
    with rasterio.open(path) as ds:
        with pytest.raises(ItemError, match="chunk too large: .* --max-chunk-bytes"):
            check_raster(ReadLimits(), ds, str(path))
        check_raster(ReadLimits(max_chunk_bytes=2 * 10**9), ds, str(path))
        with pytest.raises(ItemError, match="raster too large"):
            check_raster(ReadLimits(max_raster_pixels=10**8), ds, str(path))


def _rle_zstd(blocks: int) -> bytes:
    """A zstd frame that does not declare its size: ``blocks`` RLE blocks of 128 KiB zeros."""
    block = lambda last: (((1 << 17) << 3) | 2 | last).to_bytes(3, "little") + b"\0"   # noqa: E731
    return b"\x28\xb5\x2f\xfd\x00\x38" + b"".join(block(int(i == blocks - 1)) for i in range(blocks))


@pytest.mark.parametrize("codec,frame", [
    ("gzip", lambda n: zlib.compress(bytes(n), wbits=31)),
    ("zlib", lambda n: zlib.compress(bytes(n))),
    ("zstd", lambda n: __import__("numcodecs").Zstd().encode(np.zeros(n, np.uint8))),
    ("blosc", lambda n: __import__("numcodecs").Blosc().encode(np.zeros(n, np.uint8))),
])
def test_chunks_that_decompress_past_their_size_are_refused(codec, frame):
    rule = ChunkRule(codec, 1 << 20)
    rule.check("a/c/0/0", frame(1 << 20))                      # exactly the declared size
    with pytest.raises(ItemError, match="decompresses past its declared 1,048,576 bytes"):
        rule.check("a/c/0/0", frame(64 << 20))


def test_zstd_frames_without_a_size_are_decoded_within_the_bound():
    rule = ChunkRule("zstd", 1 << 20)
    rule.check("k", _rle_zstd(8))                              # 1 MiB: fits
    with pytest.raises(ItemError, match="at least"):
        rule.check("k", _rle_zstd(512))                        # 64 MiB from 2 kB


# ------------------------------------------------------------------ a catalog on disk
def _static_catalog(root, link_out: str | None = None):
    """A static catalog on disk: a NAIP item with a relative href next to it, one naming a file outside the
    catalog's folder, and (``link_out``) a child link leaving the folder."""
    import shutil

    from ingest_fixtures import load_item, localize_item

    from ofa.infra.demo_catalog import collection_for

    item = localize_item(load_item("naip", "pr_m_1806551_nw_20_030_20221212_20230329"), root / "elsewhere")
    image = item["assets"]["image"]["href"].split("?")[0]
    good, evil = json.loads(json.dumps(item)), json.loads(json.dumps(item))
    good["links"], evil["links"], evil["id"] = [], [], "EVIL"
    good["assets"]["image"]["href"] = "./image.tif"
    evil["assets"]["image"]["href"] = f"../../../elsewhere/{item['id']}/image.tif"
    cat = root / "cat"
    for doc in (good, evil):
        (cat / "naip" / doc["id"]).mkdir(parents=True)
        (cat / "naip" / doc["id"] / "item.json").write_text(json.dumps(doc))
    shutil.copy(image, cat / "naip" / good["id"] / "image.tif")
    collection = collection_for("naip", [item])
    collection["links"] = [{"rel": "item", "href": f"./{d['id']}/item.json", "type": "application/json"} for d in (good, evil)]
    (cat / "naip" / "collection.json").write_text(json.dumps(collection))
    links = [{"rel": "child", "href": "./naip/collection.json"}] + ([{"rel": "child", "href": link_out}] if link_out else [])
    (cat / "catalog.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "d",
                                                  "links": links}))
    return cat, good["id"]


def test_a_static_catalog_on_disk_reads_relative_hrefs_inside_its_folder(tmp_path):
    from ofa.ingest.job import IngestConfig, run_ingest

    cat, good = _static_catalog(tmp_path)
    manifest = run_ingest(IngestConfig(catalog=str(cat), collections=["naip"], out=str(tmp_path / "ds"), chip_size=80,
                                       workers=1, progress=False))
    assert {i["id"] for i in manifest["items"]} == {good, "EVIL"} and manifest["counts"]["kept"] > 0
    (skipped,) = manifest["skipped"]
    assert skipped["item_id"] == "EVIL" and skipped["reason"].startswith("href refused: local path outside the catalog's folder")
    one = run_ingest(IngestConfig(catalog=f"file://{cat}/naip/{good}/item.json", collections=["naip"],   # an item file
                                  out=str(tmp_path / "one"), chip_size=80, workers=1, progress=False))
    assert one["counts"]["kept"] == manifest["counts"]["kept"] and not one["skipped"]


@pytest.mark.parametrize("link", ["../../outside/catalog.json", "http://169.254.169.254/latest/catalog.json",
                                  "https://example.com/catalog.json"])
def test_a_static_catalog_is_walked_inside_its_folder_only(tmp_path, link):
    from ofa.ingest.search import SearchError, SearchParams, search_items

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "catalog.json").write_text('{"type": "Catalog", "id": "x", "description": "x", "links": []}')
    cat, _ = _static_catalog(tmp_path, link)
    with pytest.raises(SearchError) as info:
        search_items(str(cat / "catalog.json"), SearchParams(collections=("naip",)))
    assert "\n" not in str(info.value) and ("href refused" in str(info.value) or "links to a URL" in str(info.value))
