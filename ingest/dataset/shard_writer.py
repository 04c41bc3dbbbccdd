"""Deterministic tar writing, atomic object writes and the bounded shard writer.

Every tar member has fixed headers (mtime 0, uid/gid 0, mode 0644, empty user/group names) and
members appear in sample order, so the same samples always give the same bytes.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tarfile
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ofa.ingest.dataset.contract import META_EXT, PIXELS_EXT, SHARD_DIR, shard_path

log = logging.getLogger("ofa.ingest")
STAGING_DIR = "_staging"   # a run's unfinished work: the saved search and its progress
TMP_MARK = ".tmp-"

#: default shard bounds
SHARD_MAX_SAMPLES = 1000
SHARD_MAX_BYTES = 256 * 2**20


def is_local_fs(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def write_atomic(fs, path: str, data: bytes) -> None:
    """Make ``path`` appear only with its full content: a local temporary file renamed into
    place, or one whole-object PUT on an object store."""
    if is_local_fs(fs):
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def remove_temporaries(fs, root: str) -> int:
    """Delete what a killed run left under ``root``: temporary files (local) or unfinished multipart
    uploads (S3: invisible, but stored and billed until aborted); return how many."""
    if not is_local_fs(fs):
        return _abort_uploads(fs, root)
    if not fs.exists(root):
        return 0
    stale = [p for p in fs.find(root) if TMP_MARK in p.rsplit("/", 1)[-1]]
    for p in stale:
        fs.rm_file(p)
    return len(stale)


def _abort_uploads(fs, root: str) -> int:
    """Abort the bucket's in-progress multipart uploads whose keys lie under ``root``."""
    if not hasattr(fs, "list_multipart_uploads"):
        return 0
    bucket, _, prefix = root.strip("/").partition("/")
    try:
        uploads = fs.list_multipart_uploads(bucket)
    except Exception as exc:  # noqa: BLE001 - e.g. no s3:ListBucketMultipartUploads permission: nothing to clean
        log.debug("cannot list multipart uploads of %s: %s", bucket, exc)
        return 0
    stale = [u for u in uploads if str(u.get("Key", "")).startswith(f"{prefix.rstrip('/')}/" if prefix else "")]
    for upload in stale:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        log.info("aborted an unfinished upload of %s/%s left by an earlier run", bucket, upload["Key"])
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


def _header(name: str, size: int) -> bytes:
    return _info(name, size).tobuf(format=tarfile.GNU_FORMAT)


def _pad(size: int) -> bytes:
    return bytes((-size) % 512)


def member_block(name: str, data: bytes) -> bytes:
    """One tar member as it appears in an archive: header(s), data, zero padding to 512."""
    return _header(name, len(data)) + data + _pad(len(data))


#: one sample's bytes in a tar, as pieces written back to back (the pixels are never copied into one buffer)
Block = tuple


def sample_block(key: str, pixels: bytes, meta: bytes) -> Block:
    """The two members of a sample exactly as ``tar_bytes`` would write them, as pieces."""
    return (_header(f"{key}.{PIXELS_EXT}", len(pixels)), pixels, _pad(len(pixels)) + member_block(f"{key}.{META_EXT}", meta))


def block_size(block: Block | bytes) -> int:
    return len(block) if isinstance(block, (bytes, bytearray, memoryview)) else sum(len(p) for p in block)


def _end_of_archive(size: int) -> bytes:
    """Two zero blocks, then zeros up to a whole tar record (what tarfile writes on close)."""
    total = size + 1024
    return bytes(1024 + (-total) % tarfile.RECORDSIZE)


def _overflows(count: int, nbytes: int, size: int, max_samples: int, max_bytes: int) -> bool:
    """Whether a sample of ``size`` bytes must open a new shard after ``count`` samples of ``nbytes``."""
    return bool(count) and (count + 1 > max_samples or nbytes + size + len(_end_of_archive(nbytes + size)) > max_bytes)


def shard_groups(sizes: Sequence[int], max_samples: int, max_bytes: int) -> list[range]:
    """The sample ranges a ``ShardWriter`` cuts samples of these tar sizes into, in order."""
    groups, start, count, nbytes = [], 0, 0, 0
    for i, size in enumerate(sizes):
        if _overflows(count, nbytes, size, max_samples, max_bytes):
            groups.append(range(start, i))
            start, count, nbytes = i, 0, 0
        count, nbytes = count + 1, nbytes + size
    if count:
        groups.append(range(start, len(sizes)))
    return groups


@dataclass
class ShardWriter:
    """Cut one sensor's sample stream into bounded shards.

    A shard is streamed to a temporary local file renamed into place when complete, or to an
    object-store upload that becomes visible only when it completes; its sha256 is computed on
    the way. Bounds: at most ``max_samples`` samples and ``max_bytes`` bytes (a single larger
    sample gets a shard of its own). Shards are named ``name(n)`` for the writer's n-th shard
    (default: the sensor's numbered shards, counted among ``shards``, which may hold others too).
    """

    fs: object
    root: str
    sensor: str
    max_samples: int = SHARD_MAX_SAMPLES
    max_bytes: int = SHARD_MAX_BYTES
    shards: list[dict] = field(default_factory=list)
    name: Callable[[int], str] | None = None
    index: int = -1
    _file: object = None
    _tmp: str | None = None
    _hash: object = None
    _count: int = 0
    _bytes: int = 0

    def __post_init__(self) -> None:
        numbered = self.name is None
        if numbered:
            self.name = functools.partial(shard_path, self.sensor)
        if self.index < 0:  # a resumed writer goes on after the numbered shards it finished before
            mine = f"{SHARD_DIR}/{self.sensor}/{self.sensor}-"
            self.index = sum(1 for s in self.shards if s["path"].startswith(mine)) if numbered else 0

    def add(self, key: str, pixels: bytes, meta: bytes) -> bool:
        return self.add_block(sample_block(key, pixels, meta))

    def add_block(self, block: Block | bytes) -> bool:
        """Append one sample's raw tar bytes (``sample_block``'s pieces, or one bytes object); True if
        a shard was finished first (the sample then opens the next shard)."""
        pieces = (block,) if isinstance(block, (bytes, bytearray, memoryview)) else block
        size = block_size(pieces)
        finished = _overflows(self._count, self._bytes, size, self.max_samples, self.max_bytes)
        if finished:
            self.flush()
        if self._file is None:
            self._open()
        try:
            for piece in pieces:
                self._file.write(piece)
                self._hash.update(piece)
        except BaseException:
            self._discard()
            raise
        self._count += 1
        self._bytes += size
        return finished

    def _path(self) -> str:
        return f"{self.root}/{self.name(self.index)}"

    def _open(self) -> None:
        path = self._path()
        if is_local_fs(self.fs):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self._tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._file = open(self._tmp, "wb")
        else:
            self._tmp = None
            self._file = self.fs.open(path, "wb")
        self._hash = hashlib.sha256()

    def _discard(self) -> None:
        """Drop the shard being written after a failure: its temporary file, or its multipart upload."""
        file, tmp = self._file, self._tmp
        self._reset()
        try:
            if tmp:
                file.close()
                os.remove(tmp)
            elif hasattr(file, "discard"):
                file.discard()       # s3fs: aborts the multipart upload
        except Exception as exc:  # noqa: BLE001 - the original failure is what the caller must see
            log.warning("could not clean up a failed shard upload (%s); a rerun aborts it", exc)

    def flush(self) -> None:
        if not self._count:
            return
        end = _end_of_archive(self._bytes)
        try:
            self._file.write(end)
            self._hash.update(end)
            self._file.close()
        except BaseException:
            self._discard()
            raise
        path = self._path()
        if self._tmp:
            os.replace(self._tmp, path)
        self.shards.append({
            "path": self.name(self.index), "sensor": self.sensor, "count": self._count,
            "bytes": self._bytes + len(end), "sha256": self._hash.hexdigest(),
        })
        self.index += 1
        self._reset()

    def _reset(self) -> None:
        """No shard open."""
        self._file, self._tmp, self._hash, self._count, self._bytes = None, None, None, 0, 0


def write_full_shards(fs, root: str, sensor: str, blocks: Sequence[Block | bytes], max_samples: int, max_bytes: int,
                      name: Callable[[int], str]) -> tuple[list[dict], list[Block | bytes]]:
    """Write the shards ``blocks`` fill on their own (every group ``shard_groups`` cuts but the last) as
    ``name(0)``, ``name(1)``…; return their records and the blocks left over, which the caller packs
    together with other items' leftovers."""
    groups = shard_groups([block_size(b) for b in blocks], max_samples, max_bytes)
    if len(groups) < 2:
        return [], list(blocks)
    writer = ShardWriter(fs, root, sensor, max_samples, max_bytes, name=name)
    for group in groups[:-1]:
        for i in group:
            writer.add_block(blocks[i])
        writer.flush()
    return writer.shards, list(blocks[groups[-1].start:])
