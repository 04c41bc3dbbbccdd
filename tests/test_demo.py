"""``ofa demo`` end to end (a short run): dataset that verifies, checkpoint, both PNGs; a rerun reuses."""
from __future__ import annotations

import subprocess
import sys

from ofa.ingest.dataset.manifest import verify_dataset
from ofa.model import from_pretrained


def _demo(out, *extra):
    cmd = [sys.executable, "-m", "ofa.pipeline.cli", "demo", "--out", str(out), "--steps", "4", "--batch-size", "4",
           "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_demo_builds_everything_and_reruns_reuse(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    ok, problems = verify_dataset(str(out / "dataset"))
    assert ok, problems
    for png in ("loss_curve.png", "reconstructions.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    log = (out / "train" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4
    ckpt_line = next(line for line in first.splitlines() if line.strip().startswith("checkpoint"))
    model = from_pretrained(ckpt_line.split()[-1])
    assert set(model.config.modalities) >= {"sentinel-1", "sentinel-2", "landsat", "naip"}

    manifest_before = (out / "dataset" / "manifest.json").read_bytes()
    second = _demo(out)
    assert "reusing the dataset already there" in second
    assert (out / "dataset" / "manifest.json").read_bytes() == manifest_before
    assert (out / "train" / "log.jsonl").read_text().splitlines() == log  # no step trained twice
