"""Object-store faults: connections reset or stalled by a loopback proxy, the S3 server restarted.

Writes are retried with backoff; an object appears under its final name only when complete;
a run that cannot finish fails with a clear message and leaves no partial object behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ingest_fixtures import COLLECTIONS

from support.faultproxy import FaultPlan, FaultProxy
from ofa.infra.localstack import s3_server
from ofa.ingest.dataset.shard_writer import ShardWriter, write_atomic
from ofa.ingest.storage import get_fs

pytestmark = pytest.mark.timeout(240)


def _fs(s3, endpoint: str, **extra):
    options = {**s3.storage_options, "client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True, **extra}
    return get_fs("s3://bucket", options)[0], options


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        server.make_bucket("rel")
        yield server


# ------------------------------------------------------------------ the proxy itself
def test_proxy_resets_and_stalls_are_bounded(s3):
    with FaultProxy(s3.port, FaultPlan(mode="reset", max_faults=1)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")   # the reset may already have arrived
                data = sock.recv(10)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            assert data == b""                          # reset before any answer
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:   # second one passes
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            head = b""
            while len(head) < 7 and (chunk := sock.recv(12 - len(head))):   # TCP may hand it over in pieces
                head += chunk
            assert head.startswith(b"HTTP/1."), head
        assert [a for _, a in proxy.log] == ["reset", "pass"]
    with FaultProxy(s3.port, FaultPlan(mode="stall", stall_s=0.5, max_faults=1)) as proxy:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                data = sock.recv(10)
            except ConnectionResetError:
                data = b""
        assert data == b"" and time.monotonic() - started >= 0.5   # held for the stall, then closed unanswered
        assert [a for _, a in proxy.log] == ["stall"]
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(80, upstream_host="example.com")


# ------------------------------------------------------------------ single writes
@pytest.mark.parametrize("mode,after", [("reset", 0), ("reset", 300), ("stall", 300)])
def test_write_retried_through_faults(s3, mode, after):
    data = os.urandom(200_000)
    with FaultProxy(s3.port, FaultPlan(mode=mode, max_faults=2, after_bytes=after, stall_s=1.0)) as proxy:
        fs, _ = _fs(s3, proxy.url)
        write_atomic(fs, f"rel/single-{mode}-{after}.bin", data)
        assert proxy.faults == 2
    direct, _ = _fs(s3, s3.endpoint_url)
    assert direct.cat_file(f"rel/single-{mode}-{after}.bin") == data


def test_persistent_faults_fail_clearly_without_partial_object(s3):
    with FaultProxy(s3.port, FaultPlan(mode="reset", after_bytes=1000, max_faults=10**6)) as proxy:
        fs, _ = _fs(s3, proxy.url)
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            write_atomic(fs, "rel/never.bin", os.urandom(100_000))
        assert time.monotonic() - started < 60
        assert proxy.faults >= 3                       # it did retry before giving up
    assert "rel/never.bin" in str(info.value) or "endpoint" in str(info.value).lower(), str(info.value)
    direct, _ = _fs(s3, s3.endpoint_url)
    assert not direct.exists("rel/never.bin")


class _DeadEndpoint:
    """A listener on ``port`` that resets every connection (the endpoint is down); ``tried`` is set at the
    first attempt, so a test knows a client has met the outage without guessing how long that takes."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.tried = threading.Event()
        self.thread = threading.Thread(target=self._refuse, daemon=True)
        self.thread.start()

    def _refuse(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return                                  # shut down: the outage is over
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()                                # closed with a reset, like a dead endpoint
            self.tried.set()

    def end(self) -> None:
        """Free the port: shutdown wakes the blocked accept, so the socket is really closed."""
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


def test_server_restart_between_writes(s3):
    """The endpoint is down when a write starts and comes back once the write has met the outage: the write lands."""
    with s3_server() as first:
        port = first.port
        first.make_bucket("rel")
    fs, _ = _fs(s3, f"http://127.0.0.1:{port}")   # the endpoint is down from here on
    data = os.urandom(50_000)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            write_atomic(fs, "rel/after-restart.bin", data)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # moto keeps nothing across restarts (a real store keeps its buckets): the new server is up with its
    # bucket before the write starts, and answers on the old port only after the write has failed there
    with s3_server() as second:
        second.make_bucket("rel")
        dead = _DeadEndpoint(port)
        thread = threading.Thread(target=writer)
        thread.start()
        assert dead.tried.wait(timeout=60), "the write never reached the endpoint"
        dead.end()
        with FaultProxy(second.port, port=port):
            thread.join(timeout=60)
        assert not thread.is_alive() and not errors, errors
        assert _fs(s3, second.endpoint_url)[0].cat_file("rel/after-restart.bin") == data


def test_server_restart_during_multipart_shard_upload():
    """A shard upload whose server restarts between parts fails loudly; no shard appears."""
    with s3_server() as first:
        port = first.port
        first.make_bucket("rel")
        fs, _ = _fs(first, first.endpoint_url, default_block_size=5 * 2**20)
        writer = ShardWriter(fs, "rel/ds", "naip", max_samples=100, max_bytes=2**30)
        block = b"x" * (1024 * 1024)
        for _ in range(7):                           # > one 5 MiB part: the multipart upload has begun
            writer.add_block(block)
    with s3_server(port=port) as second:
        second.make_bucket("rel")
        with pytest.raises(Exception) as info:
            writer.flush()
        assert str(info.value).strip(), "the failure must say something"
        direct, _ = _fs(second, second.endpoint_url)
        assert not direct.exists("rel/ds/shards/naip/naip-000000.tar")
        assert writer.shards == []


# ------------------------------------------------------------------ a whole ingest run
def _ingest(url: str, out: str, options: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ofa.pipeline.cli", "ingest", "--catalog", url, "--allow-local-hrefs", "--out", out, "--chip-size", "80",
           "--workers", "2", "--shard-max-samples", "6", "--no-progress"]
    for c in COLLECTIONS:
        cmd += ["--collection", c]
    if options:
        cmd += ["--storage-options", json.dumps(options)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def test_ingest_through_flaky_proxy_equals_clean_run(s3, catalog, tmp_path):
    ref = _ingest(catalog.url, str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-2000:]
    expected = {s["path"]: s["sha256"] for s in json.loads((tmp_path / "ref" / "manifest.json").read_text())["shards"]}

    plan = FaultPlan(mode="reset", probability=0.25, seed=7, max_faults=6, after_bytes=200)
    with FaultProxy(s3.port, plan) as proxy:
        _, options = _fs(s3, proxy.url)
        options.pop("skip_instance_cache")
        run = _ingest(catalog.url, "s3://rel/flaky", options)
        assert run.returncode == 0, run.stderr[-3000:]
        assert proxy.faults >= 3, proxy.log
    direct, _ = _fs(s3, s3.endpoint_url)
    manifest = json.loads(direct.cat_file("rel/flaky/manifest.json"))
    assert {s["path"]: s["sha256"] for s in manifest["shards"]} == expected
    for path, digest in expected.items():
        assert hashlib.sha256(direct.cat_file(f"rel/flaky/{path}")).hexdigest() == digest


def test_ingest_against_dead_store_fails_with_a_clear_message(s3, catalog):
    with FaultProxy(s3.port, FaultPlan(mode="reset", max_faults=10**6)) as proxy:
        _, options = _fs(s3, proxy.url)
        options.pop("skip_instance_cache")
        run = _ingest(catalog.url, "s3://rel/dead", options)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ofa ingest: error:") and "s3://rel/dead" in last, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    direct, _ = _fs(s3, s3.endpoint_url)
    assert not direct.exists("rel/dead/manifest.json")


def test_unfinished_multipart_uploads_of_a_killed_run_are_aborted_on_rerun(s3):
    """A run killed mid-shard leaves a multipart upload behind (invisible, but stored and billed); the
    next run aborts those under its dataset and leaves other uploads in the bucket alone."""
    from ofa.ingest.dataset.shard_writer import remove_temporaries

    fs, _ = _fs(s3, s3.endpoint_url, default_block_size=5 * 2**20)
    killed = ShardWriter(fs, "rel/killed-run", "naip", max_samples=100, max_bytes=2**30)
    for _ in range(7):                               # > one 5 MiB part: the multipart upload has begun
        killed.add_block(b"x" * 2**20)
    other = fs.open("rel/someone-else/big.bin", "wb", block_size=5 * 2**20)
    other.write(b"y" * 6 * 2**20)
    other.flush()

    def uploads(prefix: str) -> list[str]:
        return [u["Key"] for u in fs.list_multipart_uploads("rel") if u["Key"].startswith(prefix)]

    assert uploads("killed-run/") == ["killed-run/shards/naip/naip-000000.tar"]
    assert remove_temporaries(fs, "rel/killed-run") == 1
    assert uploads("killed-run/") == [] and uploads("someone-else/") == ["someone-else/big.bin"]
    other.discard()
    assert uploads("someone-else/") == []
    killed._file.closed = other.closed = True   # as in a killed process: nothing completes them on exit
