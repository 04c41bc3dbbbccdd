"""Hostile shard members: names escaping the folder ('../', absolute), symlinks/hardlinks, a member
whose header claims more bytes than the shard holds. ``ofa manifest verify`` names the shard; the
loader skips and counts what it cannot trust and keeps the good samples; nothing touches disk."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ofa.ingest.dataset.manifest import verify_dataset
from ofa.pipeline.data import Counter, iter_shard


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 8, 8), np.uint8))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "",
         size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _shard(path: Path, hostile: list[tuple]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "good0.pixels.npy", _npy())
        _add(tar, "good0.meta.json", b"{}")
        for spec in hostile:
            _add(tar, *spec)
        _add(tar, "good1.pixels.npy", _npy())
        _add(tar, "good1.meta.json", b"{}")
    path.write_bytes(buf.getvalue())
    return path


HOSTILE = {
    "dotdot": [("../../escaped.pixels.npy", _npy()), ("../../escaped.meta.json", b"{}")],
    "absolute": [("/tmp/ofa-escaped.pixels.npy", _npy()), ("/tmp/ofa-escaped.meta.json", b"{}")],
    "symlink": [("link.pixels.npy", b"", tarfile.SYMTYPE, "/etc/passwd"), ("link.meta.json", b"{}")],
    "hardlink": [("hard.pixels.npy", b"", tarfile.LNKTYPE, "/etc/passwd"), ("hard.meta.json", b"{}")],
}


def _dataset(root: Path, shard: Path) -> Path:
    """A dataset whose manifest matches the hostile shard byte for byte (a forged but consistent one)."""
    (root / "shards" / "naip").mkdir(parents=True)
    target = root / "shards" / "naip" / "naip-000000.tar"
    target.write_bytes(shard.read_bytes())
    data = target.read_bytes()
    manifest = {"format": "ofa-webdataset", "format_version": 1, "statistics": {},
                "shards": [{"path": "shards/naip/naip-000000.tar", "sensor": "naip", "count": 3,
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused(case, tmp_path):
    shard = _shard(tmp_path / f"{case}.tar", HOSTILE[case])
    before = {p for p in Path("/tmp").glob("ofa-escaped*")} | set(tmp_path.parent.glob("escaped*"))

    counter = Counter()
    samples = list(iter_shard(str(shard), None, counter))
    keys = [s["__key__"] for s in samples]
    assert "good0" in keys
    assert all(not k.startswith("/") and ".." not in k for k in keys), keys
    assert all("pixels.npy" in s for s in samples if s["__key__"] in ("good0", "good1"))
    linked = [s for s in samples if s["__key__"] in ("link", "hard")]
    assert all(b"root:" not in s.get("pixels.npy", b"") for s in linked)       # never read outside the tar
    assert counter.skipped >= 1 or (case in ("symlink", "hardlink") and all("pixels.npy" not in s for s in linked))

    ok, problems = verify_dataset(str(_dataset(tmp_path / "ds", shard)))
    assert not ok and len(problems) == 1
    assert "shards/naip/naip-000000.tar" in problems[0] and "unsafe member" in problems[0], problems
    after = {p for p in Path("/tmp").glob("ofa-escaped*")} | set(tmp_path.parent.glob("escaped*"))
    assert after == before                                                     # nothing was written anywhere


def test_member_larger_than_the_shard_is_counted_not_allocated(tmp_path):
    """A header claiming 8 GiB on a small shard: one read error counted, nothing allocated for it, no crash."""
    shard = _shard(tmp_path / "big.tar", [])
    data = bytearray(shard.read_bytes())
    # forge the size field (octal, offset 124, 12 bytes) of the third member header (good1.pixels.npy)
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        third = tar.getmembers()[2]
    header = third.offset
    data[header + 124: header + 136] = b"%011o\0" % (8**11 - 1)
    data[header + 148: header + 156] = b" " * 8
    chk = sum(data[header: header + 512])
    data[header + 148: header + 156] = b"%06o\0 " % chk
    shard.write_bytes(bytes(data))

    counter = Counter()
    keys = [s["__key__"] for s in iter_shard(str(shard), None, counter)]
    assert "good1" not in keys and set(keys) <= {"good0"}    # the shard stops at the damage (good0 may go with it)
    assert counter.skipped == 1                               # ... and says so


def test_unknown_manifest_version_is_refused(tmp_path):
    """A manifest of a future format version: one clear line from verify and from the loader."""
    from ofa.pipeline.data import read_streams

    shard = _shard(tmp_path / "ok.tar", [])
    root = _dataset(tmp_path / "ds", shard)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 99
    (root / "manifest.json").write_text(json.dumps(manifest))
    ok, problems = verify_dataset(str(root))
    assert not ok and "format_version 99 is not supported" in problems[0] and "\n" not in problems[0]
    with pytest.raises(Exception, match="format_version 99"):
        read_streams([str(root)])


@pytest.mark.parametrize("path", ["../../outside.tar", "/etc/passwd", "s3://other-bucket/x.tar", "shards/../../x.tar", None])
def test_manifest_shard_paths_stay_inside_the_dataset(tmp_path, path):
    """A forged manifest cannot point verify or the loader at files outside the dataset."""
    from ofa.pipeline.data import read_streams

    root = _dataset(tmp_path / "ds", _shard(tmp_path / "ok.tar", []))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][0]["path"] = path
    (root / "manifest.json").write_text(json.dumps(manifest))
    ok, problems = verify_dataset(str(root))
    assert not ok and "must be relative and stay inside the dataset" in problems[0], problems
    with pytest.raises(Exception, match="stay inside the dataset"):
        read_streams([str(root)])
