"""Run folders: ``config.yaml`` beside ``log.jsonl``, a one-line stop when ``--resume auto`` meets another
run's options, self-describing checkpoints (the facts a new scene needs), logs under an ``s3://`` run."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ofa.model import normalise, read_info
from ofa.pipeline.cli import main, parse
from ofa.pipeline.options import build
from ofa.pipeline.trainer import TrainConfig, train

from pipeline_fixtures import write_dataset

ARGS = ["--size", "tiny", "--steps", "2", "--batch-size", "2", "--img-size", "32", "--save-every", "2", "--cpu",
        "--no-tensorboard", "--seed", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("ds") / "data"
    write_dataset(str(root), {"sentinel-2": (1, 4), "naip": (1, 4)}, size=32, seed=1)
    return str(root)


def first_sample(shard: Path) -> dict:
    with tarfile.open(shard) as tar:
        members = tar.getmembers()[:2]
        return {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in members} | {"__key__": members[0].name.split(".")[0]}


def test_config_yaml_and_a_resume_with_other_options(dataset: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["size"] == "tiny" and saved["data"] == [dataset] and "storage_options" not in saved
    assert (out / "log.jsonl").exists()
    rerun = build(TrainConfig, vars(parse(["train", "--config", str(out / "config.yaml")])))
    assert rerun == TrainConfig(**saved)  # reusable as --config
    capsys.readouterr()

    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--size", "small", "--img-size", "64"]) == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ofa train: error: --out ")
    assert "size 'tiny' (this run: 'small')" in err and "img_size 32 (this run: 64)" in err and "Traceback" not in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]  # nothing was touched

    assert main(["train", "--data", dataset, "--out", str(out), *ARGS]) == 0  # the same options: finished already
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed"] is True


def test_a_run_older_than_config_yaml_is_checked_against_its_checkpoint(dataset: str, tmp_path: Path) -> None:
    from ofa.pipeline.runs import RunConflictError

    cfg = dict(data=[dataset], out=str(tmp_path / "old"), steps=2, batch_size=2, img_size=32, save_every=1, cpu=True,
               tensorboard=False)
    train(TrainConfig(size="tiny", **cfg), on_step=lambda step, record: step >= 1)
    (tmp_path / "old" / "config.yaml").unlink()
    with pytest.raises(RunConflictError, match="size 'tiny' \\(this run: 'small'\\)"):
        train(TrainConfig(size="small", **cfg))


def test_checkpoint_describes_its_sensors_and_data(dataset: str, tmp_path: Path) -> None:
    summary = train(TrainConfig(data=[dataset], out=str(tmp_path / "run"), size="tiny", steps=1, batch_size=2,
                                img_size=32, save_every=1, cpu=True, tensorboard=False))
    info = read_info(summary["checkpoint"])
    manifest_bytes = (Path(dataset) / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    s2 = info["sensors"]["sentinel-2"]
    assert s2["bands"] == manifest["statistics"]["sentinel-2"]["bands"]
    assert s2["wavelengths"][3] == 0.665 and s2["gsd"][0] == 60  # B04, B01: the sensor registry
    assert s2["dtype"] == "uint16" and s2["scale"] == [1e-4] * 12 and s2["offset"] == [-0.1] * 12  # as the data has them
    assert np.allclose(s2["mean"], manifest["statistics"]["sentinel-2"]["mean"], rtol=1e-6)
    data = info["training"]["data"]
    assert data[0]["url"] == dataset and data[0]["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert data[0]["samples"] == 8 and info["training"]["options"]["size"] == "tiny"

    # a new scene needs nothing but the checkpoint: normalise() matches what the training loader fed the model
    from ofa.pipeline.data import decode, read_streams

    stream = next(s for s in read_streams([dataset]) if s.sensor == "sentinel-2")
    sample = first_sample(Path(stream.shards[0]))
    raw = np.load(io.BytesIO(sample["pixels.npy"]))
    assert torch.allclose(normalise(torch.from_numpy(raw), s2), decode(sample, stream), atol=1e-4)


def test_logs_go_under_an_s3_run(dataset: str, tmp_path: Path, monkeypatch) -> None:
    import s3fs

    from ofa.infra.localstack import s3_server

    monkeypatch.chdir(tmp_path)
    with s3_server() as s3:
        out = f"{s3.make_bucket('runs')}/exp/1"
        cfg = dict(data=[dataset], out=out, size="tiny", steps=3, batch_size=2, img_size=32, save_every=2, cpu=True,
                   tensorboard=True, storage_options=s3.storage_options)
        train(TrainConfig(**cfg), on_step=lambda step, record: step >= 2)
        fs = s3fs.S3FileSystem(**s3.storage_options)
        assert [json.loads(line)["step"] for line in fs.cat("runs/exp/1/log.jsonl").decode().splitlines()] == [1, 2]
        assert fs.ls("runs/exp/1/tensorboard") and "size: tiny" in fs.cat("runs/exp/1/config.yaml").decode()
        assert "testing" not in fs.cat("runs/exp/1/config.yaml").decode()  # no credentials in the run's config
        local = tmp_path / "ofa-logs" / "s3" / "runs" / "exp" / "1" / "log.jsonl"
        assert local.exists()  # a folder of its own, not one shared by every remote run
        local.unlink()  # resuming on another machine: the log comes back from the run
        train(TrainConfig(**cfg))
        steps = [json.loads(line)["step"] for line in fs.cat("runs/exp/1/log.jsonl").decode().splitlines()]
    assert steps == [1, 2, 3]
