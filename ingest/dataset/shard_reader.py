"""Shard reading: one front-to-back POSIX tar parser, and what is read with it: the samples of one shard
(stopping cleanly at damage), a shard's sample count for ``ofa manifest verify`` (refusing members that are
not plain files inside the shard) and the first sample's ``meta.json``."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from typing import Any, Iterator

from ofa.ingest.dataset.contract import META_EXT, PIXELS_EXT
from ofa.ingest.storage import get_fs

log = logging.getLogger("ofa.pipeline.data")


class Counter:
    """Damaged shards/samples seen by this worker."""

    def __init__(self) -> None:
        self.skipped = 0

    def bad(self, what: str, exc: BaseException) -> None:
        self.skipped += 1
        log.warning("skipping damaged %s: %s: %s", what, type(exc).__name__, exc)


def _read_at_most(stream: Any, size: int, chunk: int = 1 << 24) -> bytes:
    """Up to ``size`` bytes, in chunks: a forged header claiming gigabytes allocates no more than the file holds."""
    if size <= chunk:
        return stream.read(size) if size else b""
    parts = []
    while size > 0:
        part = stream.read(min(size, chunk))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _until_damage(files: Iterator[dict], url: str, counter: Counter) -> Iterator[dict]:
    """Pass members through; on a read error count it and end cleanly, so complete samples before it are kept."""
    try:
        yield from files
    except Exception as exc:  # noqa: BLE001 - a damaged shard must not stop training
        counter.bad(f"shard {url}", exc)


#: member types that are plain files (tarfile's ``isfile()`` less the sparse and contiguous kinds no writer here makes)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


def tar_members(stream: Any, url: str) -> Iterator[tuple[str, bytes, bytes]]:
    """``(name, type, data)`` of every member of a POSIX tar read front to back (GNU long names and pax paths
    applied): one read per header and one per member (tarfile's stream mode reads 10 KiB records). Raises on a
    bad header or a short read."""
    long_name = None
    while True:
        header = stream.read(512)
        if not header or header == b"\0" * len(header):
            return  # end of archive
        if len(header) < 512:
            raise tarfile.ReadError(f"{url}: truncated tar header")
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        data = _read_at_most(stream, info.size)
        if len(data) < info.size:
            raise tarfile.ReadError(f"{url}: member {info.name} truncated ({len(data)} of {info.size} bytes)")
        pad = (-info.size) % 512
        if pad:
            stream.read(pad)
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            for record in data.decode("utf-8", "surrogateescape").splitlines():
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
            continue
        name, long_name = long_name or info.name, None
        yield name, info.type, data


def iter_tar(stream: Any, url: str) -> Iterator[dict]:
    """Members ``{"fname", "data", "__url__"}`` of a POSIX tar: its plain files but WebDataset's ``__`` ones.
    Raises on a bad header or a short read."""
    for name, kind, data in tar_members(stream, url):
        if kind in _FILE_TYPES and not name.rsplit("/", 1)[-1].startswith("__"):
            yield {"fname": name, "data": data, "__url__": url}


def count_samples(data: bytes, url: str) -> tuple[int, int]:
    """(pixels members, meta members) of a whole shard's bytes; ``tarfile.TarError`` for a member that is not
    a plain file inside the shard (a link, a folder, an absolute name or one with ``..``) or a damaged tar."""
    pixels = meta = 0
    for name, kind, _ in tar_members(io.BytesIO(data), url):
        if kind not in _FILE_TYPES or name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
            raise tarfile.TarError(f"unsafe member {name!r} (only regular files inside the shard are allowed)")
        if name.endswith("." + PIXELS_EXT):
            pixels += 1
        elif name.endswith("." + META_EXT):
            meta += 1
    return pixels, meta


def first_meta(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``meta.json`` of a shard's first sample (streamed: only the bytes up to it are read)."""
    fs, path = get_fs(url, storage_options)
    with fs.open(path, "rb") as stream:
        for member in iter_tar(stream, url):
            if member["fname"].endswith("." + META_EXT):
                return json.loads(member["data"])
    return None


def iter_shard(url: str, storage_options: dict[str, Any] | None, counter: Counter) -> Iterator[dict]:
    """Samples ``{"__key__", "pixels.npy", "meta.json", "__url__"}`` of one shard; stops at damage."""
    import webdataset.tariterators as wt  # here, not at the top: webdataset imports torch, verify needs neither

    def handler(exc: Exception) -> bool:
        counter.bad(f"shard {url}", exc)
        return False  # stop this shard

    try:
        fs, path = get_fs(url, storage_options)
        with fs.open(path, "rb") as stream:
            files = _until_damage(iter_tar(stream, url), url, counter)
            for sample in wt.group_by_keys(files, handler=handler):
                key = str(sample.get("__key__"))
                if key.startswith("/") or ".." in key.replace("\\", "/").split("/"):
                    counter.bad(f"sample {key!r} of {url}", ValueError("member name escapes the shard ('..' or absolute)"))
                    continue
                yield sample
    except Exception as exc:  # noqa: BLE001 - a damaged shard must not stop training
        counter.bad(f"shard {url}", exc)
