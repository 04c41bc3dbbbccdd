"""2-process DDP (gloo, CPU) under ``accelerate launch`` on a dataset in the real local S3 server."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from ofa.infra.localstack import s3_server
from ofa.model import from_pretrained

from pipeline_fixtures import write_dataset


def _accelerate() -> str:
    found = Path(sys.executable).parent / "accelerate"
    return str(found) if found.exists() else shutil.which("accelerate")


def test_two_process_ddp_from_s3_with_damaged_shard(tmp_path):
    out = tmp_path / "run"
    with s3_server() as s3:
        bucket = s3.make_bucket("ofa-train")
        dataset = f"{bucket}/ds"
        manifest = write_dataset(dataset, {"sentinel-2": (2, 6), "naip": (2, 6)}, size=40,
                                 storage_options=s3.storage_options)
        import s3fs

        fs = s3fs.S3FileSystem(**s3.storage_options)
        damaged = f"ofa-train/ds/{manifest['shards'][-1]['path']}"
        fs.pipe(damaged, fs.cat(damaged)[:900])  # truncated shard
        cmd = [_accelerate(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ofa.pipeline.train", "--cpu",
               "--data", dataset, "--size", "tiny", "--steps", "4", "--batch-size", "3", "--img-size", "32",
               "--seed", "0", "--save-every", "2", "--out", str(out), "--no-tensorboard"]
        env = {**os.environ, **s3.env, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        (tmp_path / "stderr.txt").write_text(proc.stderr)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipping damaged shard" in proc.stderr
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert {r["world_size"] for r in recs} == {2} and all(math.isfinite(r["loss"]) for r in recs)
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == 4 and summary["world_size"] == 2
    model = from_pretrained(summary["checkpoint"])
    with torch.no_grad():
        tokens, pooled = model.encode(torch.randn(2, 4, 32, 32), modality="naip")
    assert tokens.shape[:2] == (2, 4) and torch.isfinite(pooled).all()


def test_checkpoints_to_s3_resume_in_process(tmp_path):
    from ofa.pipeline.checkpoint import latest_checkpoint
    from ofa.pipeline.trainer import TrainConfig, train

    data = str(tmp_path / "ds")
    write_dataset(data, {"naip": (2, 4)}, size=32)
    with s3_server() as s3:
        out = f"{s3.make_bucket('ofa-ckpt')}/run"
        cfg = dict(data=[data], size="tiny", steps=4, batch_size=2, img_size=32, save_every=2, out=out, cpu=True,
                   tensorboard=False, storage_options=s3.storage_options, log_dir=str(tmp_path / "logs"))
        first = train(TrainConfig(**cfg), on_step=lambda step, record: step >= 3)
        assert latest_checkpoint(out, s3.storage_options)[0] == 2
        done = train(TrainConfig(**cfg))
        assert done["resumed"] and done["checkpoint"].startswith("s3://ofa-ckpt/run/checkpoints/step-00000004")
        model = from_pretrained(done["checkpoint"], storage_options=s3.storage_options)
        assert model.config.modalities == {"naip": 4}
    steps = [json.loads(line)["step"] for line in (tmp_path / "logs" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and math.isfinite(first["loss"])
