"""A hostile STAC catalog, and the watchers that show what it could not make ``ofa ingest`` touch.

``write_hostile_catalog`` crafts items (from the fixture catalog's NAIP and Sentinel-1 items) whose hrefs
name GDAL virtual file systems, local files, ``file://`` URLs and cloud metadata addresses, whose rasters and
Zarr arrays are size bombs, whose JSON is too large or too deep, plus two good items (``s3://`` and plain
``http://`` on the local S3 server). ``campaign`` serves them from a real STAC API on 127.0.0.1 and runs
``ofa ingest --plan`` and ``ofa ingest`` as a user would (no ``--allow-local-hrefs``), then a control run
that must be seen by the watchers, and reports per item what happened and how many forbidden accesses the
watchers saw:

- ``Listener``: a TCP server on a loopback port. The ``/vsicurl/`` hrefs name it, and the ingest runs with
  ``GDAL_HTTP_PROXY`` pointing at it (``NO_PROXY`` for 127.0.0.1), so every request GDAL would send to
  another host (169.254.169.254, metadata.google.internal, ...) arrives here as a proxy request instead;
- ``OpenWatch``: inotify (Linux, through ctypes) on the folder of the secret files: every open of a file
  there, by any process, is an event, whatever library opens it (GDAL, fsspec, zarr). Nothing else
  touches that folder while it is watched.

The control run proves the watchers see what they must: with ``--allow-local-hrefs`` the local items are
read (inotify counts the opens), and two allowed ``http://`` hrefs (one to the listener, one to a
TEST-NET address that goes through the proxy) are requested (the listener counts them).
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
BUCKET = "hostile"
S1_DV = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993"   # VV+VH GRD (tests/data/stac)


class Listener:
    """A loopback TCP server that records the first line of every request and answers 404."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    self.requests.append(line or "(connection, no request line)")
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


_IN_OPEN, _IN_NONBLOCK = 0x20, os.O_NONBLOCK


class OpenWatch:
    """inotify ``IN_OPEN`` events on every folder under ``root``: the files opened there, by anyone."""

    def __init__(self, root: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(_IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.folders: dict[int, Path] = {}
        for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            wd = self.libc.inotify_add_watch(self.fd, str(folder).encode(), _IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
            self.folders[wd] = folder
        self.opened: list[str] = []

    def poll(self) -> list[str]:
        """Every open seen so far (path names; a folder opened for listing is its own path)."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.opened
            pos = 0
            while pos < len(data):
                wd, mask, _, size = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16:pos + 16 + size].split(b"\0", 1)[0].decode()
                self.opened.append(str(self.folders.get(wd, Path("?")) / name) if name else str(self.folders.get(wd)))
                pos += 16 + size

    def close(self) -> None:
        os.close(self.fd)


# ------------------------------------------------------------------ the catalog
@dataclass
class Hostile:
    """An item of the hostile catalog and what must happen to it."""

    item: dict
    expect: str                    # a substring of its `skipped` reason, or "ingested"
    what: str                      # in words, for the report
    control: bool = False          # only in the control run


@dataclass
class Setup:
    secret: Path                   # the watched folder
    listener: Listener
    items: list[Hostile] = field(default_factory=list)


def _variant(base: dict, item_id: str, href: str, key: str = "image") -> dict:
    item = copy.deepcopy(base)
    item["id"] = item_id
    item["assets"][key]["href"] = href
    return item


def _bomb_tiff(path: Path, size: int, block: int) -> Path:
    """A sparse GeoTIFF declaring ``size`` x ``size`` px in ``block`` px tiles: a few hundred bytes on disk."""
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint8", tiled=True,
                       blockxsize=block, blockysize=block, compress="deflate", sparse_ok=True, interleave="pixel",
                       crs="EPSG:32619", transform=Affine(0.6, 0.0, 700000.0, 0.0, -0.6, 2000000.0), BIGTIFF="YES"):
        pass
    return path


def _zarr_bombs(work: Path, naip: dict) -> tuple[Path, Path]:
    """Two Zarr stores for NAIP items: an array declaring 10^6 x 10^6 px (no chunk written), and a datacube
    whose first chunk is a zstd frame that decompresses to 16 MB, far past the chunk's declared size."""
    import numcodecs
    import zarr

    from zarr_fixtures import write_datacube

    huge = work / "huge.zarr"
    root = zarr.open_group(zarr.storage.LocalStore(str(huge)), mode="w", zarr_format=3)
    root.create_array("image", shape=(4, 10**6, 10**6), chunks=(4, 1024, 1024), dtype="uint8",
                      dimension_names=["band", "y", "x"])
    cube = work / "bomb.zarr"
    write_datacube(naip, str(cube), "s3://x/bomb.zarr", band_dim=True)
    chunk = cube / "image" / "c" / "0" / "0" / "0"
    chunk.write_bytes(numcodecs.Zstd(level=3).encode(np.zeros(16 << 20, np.uint8)))
    return huge, cube


def s3fs_exists(s3, path: str) -> bool:
    import s3fs

    return s3fs.S3FileSystem(**s3.storage_options, skip_instance_cache=True).exists(path)


def _upload(s3, local: Path, key: str, public: bool = False) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options)
    fs.put(str(local), f"{BUCKET}/{key}", recursive=local.is_dir())
    if public:
        fs.chmod(f"{BUCKET}/{key}", acl="public-read")
    return f"s3://{BUCKET}/{key}"


def _href_items(base: dict, secret: Path, listener: int) -> list[Hostile]:
    """Items whose NAIP ``image`` href must never be opened."""
    tif = secret / "secret.tif"
    cases = [
        ("VSICURL", f"/vsicurl/http://127.0.0.1:{listener}/secret.tif", "GDAL virtual path", "/vsicurl/ to a loopback port"),
        ("VSIZIP", f"/vsizip/{secret}/secret.zip/secret.tif", "GDAL virtual path", "/vsizip/ of a local zip"),
        ("VSIS3", "/vsis3/private-bucket/secret.tif", "GDAL virtual path", "/vsis3/ with the user's credentials"),
        ("LOCAL", str(tif), "local path from an HTTP catalog", "a local path to a 4-band GeoTIFF"),
        ("FILEURL", f"file://{tif}", "local path from an HTTP catalog", "a file:// URL to it"),
        ("IMDS", "http://169.254.169.254/latest/meta-data/secret.tif", "link-local or cloud metadata address",
         "the EC2/Azure/GCP metadata address"),
        ("IMDSDEC", "http://2852039166/latest/secret.tif", "link-local or cloud metadata address",
         "the same address as one decimal number"),
        ("IMDS6", "http://[fd00:ec2::254]/latest/secret.tif", "link-local or cloud metadata address",
         "the EC2 IPv6 metadata address"),
        ("GCEMETA", "http://metadata.google.internal/computeMetadata/v1/secret.tif", "cloud metadata address",
         "the GCE metadata host name"),
        ("GDALDIR", f"GTIFF_DIR:1:{tif}", "GDAL connection string", "a GDAL GTiff connection string"),
    ]
    return [Hostile(_variant(base, f"HOSTILE_{name}", href), expect, what) for name, href, expect, what in cases]


def _sar_item(s1: dict, s3, secret: Path) -> Hostile:
    """A GRD item whose measurements are on S3 but whose calibration annotations are local files."""
    item = copy.deepcopy(s1)
    item["id"] = "HOSTILE_SAR_CALIBRATION"
    for pol in ("vv", "vh"):
        src = Path(item["assets"][pol]["href"].split("?")[0])
        item["assets"][pol]["href"] = _upload(s3, src, f"s1/{pol}.tif")
        item["assets"][f"schema-calibration-{pol}"] = {"href": str(secret / f"calibration-{pol}.xml"),
                                                       "type": "application/xml", "roles": ["metadata"]}
    return Hostile(item, "calibration of", "S3 measurements, local calibration annotations (fsspec read)")


def _zarr_items(base: dict, s3, work: Path, secret: Path, listener: int) -> list[Hostile]:
    from zarr_fixtures import write_datacube

    local = write_datacube(base, str(secret / "cube.zarr"), str(secret / "cube.zarr"), band_dim=True)
    local["id"] = "HOSTILE_ZARR_LOCAL"
    vsi = copy.deepcopy(local)
    vsi["id"] = "HOSTILE_ZARR_VSI"
    vsi["assets"]["cube"]["href"] = f"/vsicurl/http://127.0.0.1:{listener}/cube.zarr"
    huge, bomb = _zarr_bombs(work, base)
    big = copy.deepcopy(local)
    big["id"] = "BOMB_ZARR_HUGE"
    big["assets"]["cube"]["href"] = _upload(s3, huge, "huge.zarr")
    chunk = copy.deepcopy(local)
    chunk["id"] = "BOMB_ZARR_CHUNK"
    chunk["assets"]["cube"]["href"] = _upload(s3, bomb, "bomb.zarr")
    return [Hostile(local, "local path from an HTTP catalog", "a Zarr store on local disk"),
            Hostile(vsi, "GDAL virtual path", "a Zarr store behind /vsicurl/"),
            Hostile(big, "raster too large", "a Zarr array declaring 10^6 x 10^6 px"),
            Hostile(chunk, "decompresses past its declared", "a Zarr chunk that decompresses to 16 MB")]


def _bomb_items(base: dict, s3, work: Path) -> list[Hostile]:
    huge = _upload(s3, _bomb_tiff(work / "huge.tif", 10**6, 4096), "huge.tif")
    tile = _upload(s3, _bomb_tiff(work / "tile.tif", 20000, 20000), "tile.tif")
    deep = _variant(base, "BOMB_JSON_DEEP", base["assets"]["image"]["href"])
    nest: list = []
    deep["properties"]["nested"] = nest
    for _ in range(100):   # past --max-json-depth 64, within what the STAC server's JSON parser takes (128)
        nest.append([])
        nest = nest[0]
    big = _variant(base, "BOMB_JSON_HUGE", base["assets"]["image"]["href"])
    big["properties"]["padding"] = "x" * (5 << 20)
    return [Hostile(_variant(base, "BOMB_TIFF_HUGE", huge), "raster too large", "a GeoTIFF declaring 10^6 x 10^6 px"),
            Hostile(_variant(base, "BOMB_TIFF_TILE", tile), "chunk too large", "a GeoTIFF with one 20000 px tile"),
            Hostile(deep, "item refused: JSON nested deeper", "an item nested 100 deep"),
            Hostile(big, "item refused:", "a 5 MB item")]


def write_hostile_catalog(work: Path, s3, listener: Listener) -> Setup:
    """The hostile items (``Hostile``), with their files: the secret ones in ``work/secret`` (watched), the
    good and the bombs on the S3 server (bucket ``hostile``)."""
    from ingest_fixtures import load_item, localize_item

    naip = localize_item(load_item("naip", "pr_m_1806551_nw_20_030_20221212_20230329"), work / "fixtures")
    s1 = localize_item(load_item("sentinel-1-grd", S1_DV), work / "fixtures")
    secret = work / "secret"
    secret.mkdir(parents=True, exist_ok=True)
    if not s3fs_exists(s3, BUCKET):
        s3.make_bucket(BUCKET)
    src = Path(naip["assets"]["image"]["href"].split("?")[0])
    shutil.copy(src, secret / "secret.tif")
    shutil.make_archive(str(secret / "secret"), "zip", secret, "secret.tif")
    for pol in ("vv", "vh"):
        (secret / f"calibration-{pol}.xml").write_text("<calibration/>")
    setup = Setup(secret, listener)
    setup.items += _href_items(naip, secret, listener.port) + [_sar_item(s1, s3, secret)]
    setup.items += _zarr_items(naip, s3, work, secret, listener.port) + _bomb_items(naip, s3, work)
    good = _upload(s3, src, "good/image.tif", public=True)
    setup.items += [Hostile(_variant(naip, "GOOD_S3", good), "ingested", "a plain s3:// href"),
                    Hostile(_variant(naip, "GOOD_HTTP", f"{s3.endpoint_url}/{good[5:]}"), "ingested",
                            "a plain http:// href")]
    setup.items += [Hostile(_variant(naip, "CONTROL_HTTP_LISTENER", f"http://127.0.0.1:{listener.port}/control.tif"),
                            "cannot be opened", "control: plain http to the listener", control=True),
                    Hostile(_variant(naip, "CONTROL_HTTP_PROXIED", "http://203.0.113.7/control.tif"),
                            "cannot be opened", "control: plain http to TEST-NET-3, through the proxy", control=True)]
    return setup


# ------------------------------------------------------------------ the runs
@dataclass
class Run:
    """One ``ofa ingest`` (or ``--plan``) run on the hostile catalog: per item what happened, and what the
    watchers saw while it ran."""

    name: str
    rc: int
    got: dict[str, str]            # item id -> its skipped reason, or "ingested (N samples)" / "planned"
    requests: list[str]            # request lines the listener got (direct or as the GDAL proxy)
    opens: list[str]               # files opened in the watched folder
    stderr: str
    seconds: float


def _env(s3, listener: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(s3.gdal_env, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]),
               GDAL_HTTP_PROXY=f"127.0.0.1:{listener}", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    return env


def _samples(out: Path) -> dict[str, int]:
    """Samples per item id in a dataset's shards."""
    import tarfile

    manifest = json.loads((out / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".meta.json"):
                    item_id = json.loads(tar.extractfile(member).read())["item_id"]
                    counts[item_id] = counts.get(item_id, 0) + 1
    return counts


def _outcomes(out: Path, stdout: str, plan: bool) -> dict[str, str]:
    if plan:
        report = json.loads(stdout)
        return {e["item_id"]: e.get("skipped") or "planned" for e in report["items"]}
    if not (out / "manifest.json").exists():
        return {}
    manifest = json.loads((out / "manifest.json").read_text())
    got = {s["item_id"]: s["reason"] for s in manifest["skipped"]}
    samples = _samples(out)
    return {it["id"]: got.get(it["id"]) or f"ingested ({samples.get(it['id'], 0)} samples)" for it in manifest["items"]}


def run(name: str, url: str, setup: Setup, s3, out: Path, extra: list[str], plan: bool = False) -> Run:
    """``ofa ingest`` (``--plan --json`` with ``plan``) on ``url`` in a child process, under the watchers."""
    watch = OpenWatch(setup.secret)
    seen = len(setup.listener.requests)
    args = ["ingest", "--catalog", url, "--collection", "naip", "--collection", "sentinel-1-grd", "--chip-size", "80",
            "--workers", "1", "--no-progress", *extra]
    args += ["--plan", "--json"] if plan else ["--out", str(out)]
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", *args], env=_env(s3, setup.listener.port),
                              capture_output=True, text=True, timeout=600, cwd=REPO)
        time.sleep(0.5)   # late events and connections
        opens = list(watch.poll())
    finally:
        watch.close()
    return Run(name, proc.returncode, _outcomes(out, proc.stdout, plan) if proc.returncode == 0 else {},
               setup.listener.requests[seen:], opens, proc.stderr, time.monotonic() - started)


@dataclass
class Campaign:
    """The hostile catalog's three runs: ``--plan``, ingest (both without ``--allow-local-hrefs``), control."""

    setup: Setup
    plan: Run
    ingest: Run
    control: Run

    def verdicts(self, which: str = "ingest") -> list[tuple[Hostile, str, bool]]:
        """(item, what happened, as it must) for each hostile item in the ``plan`` or ``ingest`` run."""
        out = []
        for h in (h for h in self.setup.items if not h.control):
            got = getattr(self, which).got.get(h.item["id"], "(not in the run's output)")
            expect = h.expect
            if which == "plan" and expect in ("ingested", "decompresses past its declared"):
                expect = "planned"   # a plan reads headers, never a chunk
            ok = got.startswith("ingested") and not got.startswith("ingested (0") if expect == "ingested" else expect in got
            out.append((h, got, ok))
        return out

    @property
    def forbidden(self) -> list[str]:
        """Requests and file opens the hostile items caused in the plan and ingest runs (must be none)."""
        return [*self.plan.requests, *self.ingest.requests, *self.plan.opens, *self.ingest.opens]


def campaign(work: Path, s3) -> Campaign:
    """Write the hostile catalog, serve it from a STAC API on 127.0.0.1 and run it three ways."""
    from ingest_fixtures import collections_for

    from ofa.infra.localstack import stac_server

    listener = Listener()
    try:
        setup = write_hostile_catalog(work, s3, listener)
        hostile = [h.item for h in setup.items if not h.control]
        everything = [h.item for h in setup.items]
        with stac_server(collections_for(hostile), hostile) as url:
            plan = run("ofa ingest --plan", url, setup, s3, work / "plan", [], plan=True)
            ingest = run("ofa ingest", url, setup, s3, work / "out", [])
        with stac_server(collections_for(everything), everything) as url:
            control = run("control: ofa ingest --allow-local-hrefs", url, setup, s3, work / "control",
                          ["--allow-local-hrefs"])
    finally:
        listener.close()
    return Campaign(setup, plan, ingest, control)
