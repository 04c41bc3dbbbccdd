"""Deterministic tar writing, atomic object writes, per-item staging files and shard assembly.

Every tar member has fixed headers (mtime 0, uid/gid 0, mode 0644, empty user/group names) and
members appear in sample order, so the same samples always give the same bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ingest.contract import META_EXT, PIXELS_EXT, shard_path

STAGING_DIR = "_staging"
ITEM_RECORD = "_item.json"   # last member of a staging tar: counts, stats, or the skip reason
TMP_MARK = ".tmp-"

#: default shard bounds
SHARD_MAX_SAMPLES = 1000
SHARD_MAX_BYTES = 256 * 2**20


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def write_atomic(fs, path: str, data: bytes) -> None:
    """Make ``path`` appear only with its full content: a local temporary file renamed into
    place, or one whole-object PUT on an object store."""
    if _is_local(fs):
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def remove_temporaries(fs, root: str) -> int:
    """Delete temporary files a killed run left under ``root``; return how many."""
    if not _is_local(fs) or not fs.exists(root):
        return 0
    stale = [p for p in fs.find(root) if TMP_MARK in p.rsplit("/", 1)[-1]]
    for p in stale:
        fs.rm_file(p)
    return len(stale)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A deterministic tar holding ``(name, data)`` members in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
    return buf.getvalue()


def tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` for each regular member of a tar, in order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                yield member.name, f.read() if f else b""


def member_size(n: int) -> int:
    """Bytes a member of ``n`` data bytes takes in a tar (header + padded data)."""
    return 512 + (n + 511) // 512 * 512


def staging_name(collection: str, item_id: str) -> str:
    safe = "".join(c if (c.isalnum() or c in "-_.") else "-" for c in f"{collection}__{item_id}")
    return f"{STAGING_DIR}/{safe}.tar"


def staging_bytes(samples: list[tuple[str, bytes, bytes]], record: dict) -> bytes:
    members: list[tuple[str, bytes]] = []
    for key, pixels, meta in samples:
        members += [(f"{key}.{PIXELS_EXT}", pixels), (f"{key}.{META_EXT}", meta)]
    members.append((ITEM_RECORD, json.dumps(record, sort_keys=True).encode()))
    return tar_bytes(members)


def read_staging(data: bytes) -> tuple[list[tuple[str, bytes, bytes]], dict]:
    """Samples and the item record of a staging tar."""
    members = list(tar_members(data))
    if not members or members[-1][0] != ITEM_RECORD:
        raise ValueError("staging file has no item record")
    record = json.loads(members[-1][1])
    body = members[:-1]
    samples = []
    for i in range(0, len(body), 2):
        (pname, pixels), (mname, meta) = body[i], body[i + 1]
        key = pname[: -len(PIXELS_EXT) - 1]
        if mname != f"{key}.{META_EXT}":
            raise ValueError(f"staging file: unexpected member order {pname}, {mname}")
        samples.append((key, pixels, meta))
    return samples, record


@dataclass
class ShardWriter:
    """Cut one sensor's sample stream into bounded shards, each written atomically."""

    fs: object
    root: str
    sensor: str
    max_samples: int = SHARD_MAX_SAMPLES
    max_bytes: int = SHARD_MAX_BYTES
    shards: list[dict] = field(default_factory=list)
    _members: list[tuple[str, bytes]] = field(default_factory=list)
    _count: int = 0
    _bytes: int = 1024  # the end-of-archive blocks

    def add(self, key: str, pixels: bytes, meta: bytes) -> None:
        size = member_size(len(pixels)) + member_size(len(meta))
        if self._count and (self._count + 1 > self.max_samples or self._bytes + size > self.max_bytes):
            self.flush()
        self._members += [(f"{key}.{PIXELS_EXT}", pixels), (f"{key}.{META_EXT}", meta)]
        self._count += 1
        self._bytes += size

    def flush(self) -> None:
        if not self._count:
            return
        data = tar_bytes(self._members)
        rel = shard_path(self.sensor, len(self.shards))
        write_atomic(self.fs, f"{self.root}/{rel}", data)
        self.shards.append({
            "path": rel, "sensor": self.sensor, "count": self._count,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        })
        self._members, self._count, self._bytes = [], 0, 1024
