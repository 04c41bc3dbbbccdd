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


def member_block(name: str, data: bytes) -> bytes:
    """One tar member as it appears in an archive: header(s), data, zero padding to 512."""
    info = _info(name, len(data))
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes((-len(data)) % 512)


def sample_block(key: str, pixels: bytes, meta: bytes) -> bytes:
    """The two members of a sample, back to back, exactly as ``tar_bytes`` would write them."""
    return member_block(f"{key}.{PIXELS_EXT}", pixels) + member_block(f"{key}.{META_EXT}", meta)


def read_staging_blocks(data: bytes) -> tuple[list[bytes], dict]:
    """The raw sample blocks and the item record of a staging tar (no decoding of the samples)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        if not members or members[-1].name != ITEM_RECORD:
            raise ValueError("staging file has no item record")
        last = members[-1]
        record = json.loads(data[last.offset_data: last.offset_data + last.size])
    body = members[:-1]
    blocks = []
    for i in range(0, len(body), 2):
        pixels, meta = body[i], body[i + 1]
        if not (pixels.name.endswith("." + PIXELS_EXT) and meta.name.endswith("." + META_EXT)):
            raise ValueError(f"staging file: unexpected members {pixels.name}, {meta.name}")
        blocks.append(data[pixels.offset: meta.offset_data + (meta.size + 511) // 512 * 512])
    return blocks, record


def _end_of_archive(size: int) -> bytes:
    """Two zero blocks, then zeros up to a whole tar record (what tarfile writes on close)."""
    total = size + 1024
    return bytes(1024 + (-total) % tarfile.RECORDSIZE)


@dataclass
class ShardWriter:
    """Cut one sensor's sample stream into bounded shards.

    A shard is streamed to a temporary local file renamed into place when complete, or to an
    object-store upload that becomes visible only when it completes; its sha256 is computed on
    the way. Bounds: at most ``max_samples`` samples and ``max_bytes`` bytes (a single larger
    sample gets a shard of its own).
    """

    fs: object
    root: str
    sensor: str
    max_samples: int = SHARD_MAX_SAMPLES
    max_bytes: int = SHARD_MAX_BYTES
    shards: list[dict] = field(default_factory=list)
    _file: object = None
    _tmp: str | None = None
    _hash: object = None
    _count: int = 0
    _bytes: int = 0

    def add(self, key: str, pixels: bytes, meta: bytes) -> None:
        self.add_block(sample_block(key, pixels, meta))

    def add_block(self, block: bytes) -> None:
        """Append one sample's raw tar block (see ``sample_block``)."""
        if self._count and (self._count + 1 > self.max_samples
                            or self._bytes + len(block) + len(_end_of_archive(self._bytes + len(block))) > self.max_bytes):
            self.flush()
        if self._file is None:
            self._open()
        self._file.write(block)
        self._hash.update(block)
        self._count += 1
        self._bytes += len(block)

    def _path(self) -> str:
        return f"{self.root}/{shard_path(self.sensor, len(self.shards))}"

    def _open(self) -> None:
        path = self._path()
        if _is_local(self.fs):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self._tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._file = open(self._tmp, "wb")
        else:
            self._tmp = None
            self._file = self.fs.open(path, "wb")
        self._hash = hashlib.sha256()

    def flush(self) -> None:
        if not self._count:
            return
        end = _end_of_archive(self._bytes)
        self._file.write(end)
        self._hash.update(end)
        self._file.close()
        path = self._path()
        if self._tmp:
            os.replace(self._tmp, path)
        self.shards.append({
            "path": shard_path(self.sensor, len(self.shards)), "sensor": self.sensor, "count": self._count,
            "bytes": self._bytes + len(end), "sha256": self._hash.hexdigest(),
        })
        self._file, self._tmp, self._hash, self._count, self._bytes = None, None, None, 0, 0
