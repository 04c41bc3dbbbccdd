"""The local dev stack: a real S3-compatible server and a real STAC API server on 127.0.0.1.

Shared by the tests and ``ofa demo``. Each server runs as a child process on a random free
port and is stopped (process group killed) when its context manager exits, even on error::

    with s3_server() as s3, stac_server(collections, items) as stac_url:
        fs = s3fs.S3FileSystem(**s3.storage_options)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import s3fs

from ofa.infra.demo_catalog import write_demo_catalog

# moto accepts any credentials; these are the conventional fake ones, never real secrets.
FAKE_KEY_ID = "testing"
FAKE_SECRET = "testing"
FAKE_REGION = "us-east-1"


class ServerError(RuntimeError):
    """A local server failed to start or to answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _which(name: str) -> str:
    """Find an executable next to this Python first (a venv that is not activated), then on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"cannot find the '{name}' executable; install ofa with its dependencies")
    return found


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"server for {url} exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, even if not 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    raise ServerError(f"server for {url} did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(cmd: Sequence[str], url: str, timeout: float, log_dir: Path) -> Iterator[subprocess.Popen]:
    log = log_dir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(url, proc, timeout, log)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class S3Server:
    """A running S3-compatible endpoint."""

    endpoint_url: str
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options that reach this server."""
        return {
            "key": FAKE_KEY_ID,
            "secret": FAKE_SECRET,
            # no region_name: s3fs would send it as a LocationConstraint, which us-east-1 rejects
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables for child processes (AWS SDK conventions)."""
        return {
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": FAKE_REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    @property
    def gdal_env(self) -> dict[str, str]:
        """``env`` plus what GDAL's ``/vsis3/`` needs to read from this server (plain HTTP, path-style)."""
        return {**self.env, "AWS_S3_ENDPOINT": self.endpoint_url.split("://", 1)[1], "AWS_HTTPS": "NO",
                "AWS_VIRTUAL_HOSTING": "FALSE", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

    def make_bucket(self, name: str) -> str:
        """Create a bucket and return its ``s3://`` URL."""
        fs = s3fs.S3FileSystem(**self.storage_options)
        fs.mkdir(name)
        return f"s3://{name}"


@contextlib.contextmanager
def s3_server(port: int | None = None, timeout: float = 30.0) -> Iterator[S3Server]:
    """Run moto's S3-compatible server on 127.0.0.1 for the duration of the block."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ofa-s3-") as tmp:
        cmd = [_which("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        with _process(cmd, url, timeout, Path(tmp)) as proc:
            yield S3Server(endpoint_url=url, port=port, process=proc)


@contextlib.contextmanager
def stac_server(
    collections: Sequence[dict], items: Sequence[dict], port: int | None = None, timeout: float = 30.0
) -> Iterator[str]:
    """Serve STAC ``collections`` and ``items`` from ``rustac serve`` (memory backend); yield its URL.

    The memory backend supports bbox, datetime, ids, collections and paging, not the
    filter/query extensions: clients must apply property filters themselves.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ofa-stac-") as tmp:
        hrefs = []
        for i, collection in enumerate(collections):
            path = Path(tmp) / f"collection-{i}.json"
            path.write_text(json.dumps(collection))
            hrefs.append(str(path))
        items_path = Path(tmp) / "items.json"
        items_path.write_text(json.dumps({"type": "FeatureCollection", "features": list(items)}))
        hrefs.append(str(items_path))
        cmd = [_which("rustac"), "serve", *hrefs, "--addr", f"127.0.0.1:{port}"]
        with _process(cmd, url, timeout, Path(tmp)):
            yield url


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ofa.infra.localstack``: run the dev stack (S3 + the demo catalog's STAC API) until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m ofa.infra.localstack",
        description="Run a local S3-compatible server and a STAC API serving the embedded demo catalog on 127.0.0.1.",
    )
    parser.add_argument("--catalog-dir", default="ofa-demo/catalog", help="where the demo catalog is written (default: %(default)s)")
    parser.add_argument("--s3-port", type=int, default=None, help="S3 port (default: a free one)")
    parser.add_argument("--stac-port", type=int, default=None, help="STAC API port (default: a free one)")
    args = parser.parse_args(argv)
    collections, items = write_demo_catalog(args.catalog_dir)
    # SIGTERM (kill, timeout, docker stop) must also stop the servers: turn it into a clean exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with s3_server(args.s3_port) as s3, stac_server(collections, items, args.stac_port) as stac_url:
        print(f"S3 endpoint : {s3.endpoint_url}  (key/secret: {FAKE_KEY_ID}/{FAKE_SECRET})")
        print(f"STAC API    : {stac_url}  ({len(items)} demo items)")
        print("export " + " ".join(f"{k}={v}" for k, v in s3.env.items()))
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
