"""Shard reading: a front-to-back POSIX tar parser and the samples of one shard, stopping cleanly at damage."""
from __future__ import annotations

import logging
import tarfile
from typing import Any, Iterator

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


def iter_tar(stream: Any, url: str) -> Iterator[dict]:
    """Members ``{"fname", "data", "__url__"}`` of a POSIX tar read front to back: one read per header and
    one per member (tarfile's stream mode reads 10 KiB records). Raises on a bad header or a short read."""
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
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            long_name = None
            continue
        name, long_name = long_name or info.name, None
        if name.rsplit("/", 1)[-1].startswith("__"):
            continue  # WebDataset meta members
        yield {"fname": name, "data": data, "__url__": url}


def iter_shard(url: str, storage_options: dict[str, Any] | None, counter: Counter) -> Iterator[dict]:
    """Samples ``{"__key__", "pixels.npy", "meta.json", "__url__"}`` of one shard; stops at damage."""
    import webdataset.tariterators as wt

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
