"""Each run reads a dataset's manifest.json once: training (the loader and the checkpoint's provenance),
``ofa embed`` (the plan and the store's fingerprint) and ``ofa manifest verify|show``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from ofa.model import read_info
from ofa.pipeline.cli import main
from ofa.pipeline.trainer import TrainConfig, train

from pipeline_fixtures import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("reads") / "data"
    write_dataset(str(root), {"sentinel-2": (2, 4), "naip": (1, 4)}, size=32, seed=3)
    return str(root)


def spy_manifest_reads(monkeypatch) -> list[str]:
    """The manifest.json files opened from now on (every local fsspec read goes through ``_open``)."""
    opened: list[str] = []
    original = LocalFileSystem._open

    def spy(self, path, *args, **kwargs):
        if str(path).endswith("manifest.json"):
            opened.append(str(path))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", spy)
    return opened


@pytest.fixture
def manifest_reads(monkeypatch) -> list[str]:
    return spy_manifest_reads(monkeypatch)


def _run(dataset: str, out: Path) -> dict:
    return train(TrainConfig(data=[dataset], out=str(out), size="tiny", steps=2, save_every=2, batch_size=2,
                             img_size=32, patch_size=8, cpu=True, tensorboard=False))


def test_training_reads_the_manifest_once(dataset, tmp_path, manifest_reads):
    summary = _run(dataset, tmp_path / "run")
    assert manifest_reads == [f"{dataset}/manifest.json"]
    sha = hashlib.sha256(Path(dataset, "manifest.json").read_bytes()).hexdigest()
    (record,) = read_info(summary["checkpoint"])["training"]["data"]
    assert record["url"] == dataset and record["manifest_sha256"] == sha and record["samples"] == 12


def test_embed_reads_the_manifest_once(dataset, tmp_path, monkeypatch):
    from ofa.pipeline.embed import EmbedConfig, run_embed

    checkpoint = _run(dataset, tmp_path / "run")["checkpoint"]
    reads = spy_manifest_reads(monkeypatch)
    out = tmp_path / "emb.zarr"
    summary = run_embed(EmbedConfig(checkpoint=checkpoint, data=[dataset], out=str(out), chunk_size=4, batch_size=4,
                                    cpu=True, preview=None, progress=False))
    assert summary["status"] == "written" and summary["samples"] == 12
    assert reads == [f"{dataset}/manifest.json"]
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    sha = hashlib.sha256(Path(dataset, "manifest.json").read_bytes()).hexdigest()
    assert json.loads(attrs["manifests_sha256"]) == {dataset: sha}


@pytest.mark.parametrize("action", [["verify"], ["show", "--json"]])
def test_manifest_commands_read_it_once(dataset, manifest_reads, action, capsys):
    assert main(["manifest", *action, dataset]) == 0
    assert manifest_reads == [f"{dataset}/manifest.json"]
    out = capsys.readouterr().out
    if action == ["verify"]:
        assert "OK 3 shards, 12 samples" in out
    else:
        assert json.loads(out) == json.loads(Path(dataset, "manifest.json").read_text())
