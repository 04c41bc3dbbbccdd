"""Bit flips and truncation in a shard: ``ofa manifest verify`` names exactly that shard; the loader
keeps going, skips what it cannot read and counts it; nothing goes missing uncounted."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline_fixtures import write_dataset

from ofa.pipeline.cli import main
from ofa.pipeline.data import Counter, decode, iter_shard, read_streams


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "data"
    write_dataset(str(root), {"sentinel-2": (2, 4), "naip": (2, 4)}, size=24, seed=5)
    return root


def _read_all(root: Path) -> tuple[dict[str, set[str]], Counter]:
    """Keys the loader yields and decodes, per shard path."""
    manifest = json.loads((root / "manifest.json").read_text())
    streams = {s.sensor: s for s in read_streams([str(root)])}
    counter, keys = Counter(), {}
    for shard in manifest["shards"]:
        got = keys[shard["path"]] = set()
        for sample in iter_shard(str(root / shard["path"]), None, counter):
            try:
                decode(sample, streams[shard["sensor"]])
            except Exception as exc:  # noqa: BLE001 - as the training loader does
                counter.bad(f"sample {sample['__key__']}", exc)
                continue
            got.add(sample["__key__"])
    return keys, counter


@pytest.mark.parametrize("trial", range(4))
def test_damaged_shard_is_named_and_counted(dataset, tmp_path, capsys, trial):
    import shutil

    rng = random.Random(trial)
    out = tmp_path / "ds"
    shutil.copytree(dataset, out)
    before, clean = _read_all(out)
    assert clean.skipped == 0 and sum(map(len, before.values())) == 16
    manifest = json.loads((out / "manifest.json").read_text())
    shard = rng.choice(manifest["shards"])
    path = out / shard["path"]
    data = bytearray(path.read_bytes())
    if trial % 2:
        data = data[: rng.randrange(600, len(data) - 1100)]                       # truncated
    else:
        for _ in range(3):                                                         # bit flips in headers/npy headers
            data[rng.randrange(0, 150)] ^= 0xFF                                    # first header: name/size/checksum
    path.write_bytes(bytes(data))

    capsys.readouterr()
    assert main(["manifest", "verify", str(out)]) == 1
    stdout = capsys.readouterr().out
    fails = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and shard["path"] in fails[0], stdout

    after, counter = _read_all(out)
    assert after[shard["path"]] < before[shard["path"]], "the damage removed nothing?"
    assert counter.skipped >= 1                                                   # counted, not silent
    for other, keys in before.items():
        if other != shard["path"]:
            assert after[other] == keys                                           # the rest is untouched


def test_bit_flips_in_pixel_data_are_caught_per_sample(dataset, tmp_path):
    """A flipped bit inside a pixel payload (the npy header and tar headers intact) decodes fine as an
    array; the sample's pixels_crc32 in meta.json catches it, so the loader skips and counts it."""
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(dataset, out)
    before, _ = _read_all(out)
    manifest = json.loads((out / "manifest.json").read_text())
    shard = manifest["shards"][0]
    path = out / shard["path"]
    data = bytearray(path.read_bytes())
    # the first member's payload starts after its 512-byte tar header; skip the 128-byte npy header too
    target = 512 + 128 + 40
    data[target] ^= 0x01
    path.write_bytes(bytes(data))

    after, counter = _read_all(out)
    assert counter.skipped == 1
    assert len(before[shard["path"]] - after[shard["path"]]) == 1
    for other, keys in before.items():
        if other != shard["path"]:
            assert after[other] == keys
