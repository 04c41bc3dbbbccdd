"""End to end on real local services: STAC API -> ingest -> shards in s3:// -> 2-process DDP
pretraining on CPU -> checkpoint reloaded."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import s3fs
import torch

from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
from ofa.infra.localstack import s3_server, stac_server
from ofa.ingest.job import IngestConfig, run_ingest
from ofa.ingest.dataset.manifest import verify_dataset
from ofa.model import from_pretrained

SENSORS = {"sentinel-1", "sentinel-2", "landsat", "naip"}


def _accelerate() -> str:
    found = Path(sys.executable).parent / "accelerate"
    return str(found) if found.exists() else shutil.which("accelerate")


def test_stac_to_s3_shards_to_ddp_pretraining(tmp_path):
    collections, items = write_demo_catalog(tmp_path / "catalog")
    with s3_server() as s3, stac_server(collections, items) as stac_url:
        bucket = s3.make_bucket("ofa-e2e")
        dataset = f"{bucket}/dataset"
        manifest = run_ingest(IngestConfig(
            catalog=stac_url, allow_local_hrefs=True, collections=list(DEMO_COLLECTIONS), out=dataset,
            storage_options=s3.storage_options, chip_size=128, workers=2, progress=False,
        ))
        ok, problems = verify_dataset(dataset, storage_options=s3.storage_options)
        assert ok, problems
        assert {s["sensor"] for s in manifest["shards"]} == SENSORS
        assert {i["id"] for i in manifest["items"]} == {i["id"] for i in items}
        fs = s3fs.S3FileSystem(**s3.storage_options)
        for shard in manifest["shards"]:
            assert fs.info(f"ofa-e2e/dataset/{shard['path']}")["size"] == shard["bytes"]

        out = tmp_path / "train"
        cmd = [
            _accelerate(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "ofa.pipeline.train", "--cpu", "--data", dataset, "--size", "tiny", "--embedding", "ofa",
            "--steps", "6", "--batch-size", "4", "--img-size", "32", "--seed", "0",
            "--save-every", "3", "--out", str(out),
        ]
        env = {**os.environ, **s3.env, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps and steps[-1] == 6 and len(set(steps)) == len(steps)
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    world = {r.get("world_size") for r in records if "world_size" in r} or {r.get("num_processes") for r in records if "num_processes" in r}
    assert world == {2}, "the run did not use 2 processes"

    summary_ckpt = sorted(out.glob("checkpoints/*"))[-1] if (out / "checkpoints").exists() else out
    model = from_pretrained(str(_model_dir(summary_ckpt)))
    fresh_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        tokens, pooled = model.encode(torch.randn(2, 12, 32, 32), modality="sentinel-2")
    assert tokens.shape[:2] == (2, 4) and pooled.shape[0] == 2
    assert torch.isfinite(pooled).all()
    again = from_pretrained(str(_model_dir(summary_ckpt)))
    for key, value in again.state_dict().items():
        assert torch.equal(value, fresh_state[key]), key


def _model_dir(ckpt: Path) -> Path:
    """The folder holding config.json + model.safetensors inside a training checkpoint."""
    for candidate in [ckpt, *sorted(p for p in ckpt.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (candidate / "model.safetensors").exists():
            return candidate
    raise AssertionError(f"no model checkpoint under {ckpt}")
