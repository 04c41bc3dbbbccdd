"""A run SIGKILLed at seeded points and started again ends byte-identical to an uninterrupted run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest_fixtures import COLLECTIONS, comparable_collection
from ingest_fixtures import dataset_snapshot as _snapshot


#: where ``ingest_kill.py`` makes a run SIGKILL itself (those the fixture catalog reaches)
KILL_POINTS = ("item", "tasks", "shards-landsat", "shards-naip", "manifest")
KILL = str(Path(__file__).parent / "ingest_kill.py")


def _cmd(url: str, out: Path, kill_at: str | None = None) -> list[str]:
    """``ofa ingest`` of the fixture catalog into ``out``; with ``kill_at``, SIGKILLed at that point."""
    run = [sys.executable, KILL, kill_at] if kill_at else [sys.executable, "-m", "ofa.pipeline.cli"]
    cmd = [*run, "ingest", "--catalog", url, "--allow-local-hrefs", "--out", str(out), "--chip-size", "80",
           "--workers", "2", "--shard-max-samples", "5", "--no-progress"]
    for c in COLLECTIONS:
        cmd += ["--collection", c]
    return cmd


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def test_resume_after_sigkill(catalog, tmp_path):
    reference = tmp_path / "reference"
    done = subprocess.run(_cmd(catalog.url, reference), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _snapshot(reference)

    rng = random.Random(0)
    points = rng.sample(KILL_POINTS, 3)  # item, shards-naip, manifest
    for point in points:
        out = tmp_path / f"killed-{point}"
        killed = subprocess.run(_cmd(catalog.url, out, point), env=_env(), capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
        assert out.exists() and not (out / "manifest.json").exists() or point == "manifest"
        again = subprocess.run(_cmd(catalog.url, out), env=_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _snapshot(out) == expected, point
        verify = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "manifest", "verify", str(out)], env=_env(),
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout

    # killed inside an item that straddles two shards of a sensor that already has shards: the rerun
    # redoes only the items from the open shard on and skips the samples already in finished shards
    out = tmp_path / "killed-mid-item"
    killed = subprocess.run(_cmd(catalog.url, out, "item:4"), env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parts = [json.loads(p.read_text()) for p in sorted((out / "_staging" / "progress").glob("*.json"))]
    cursor = {part["sensor"]: part["cursor"] for part in parts}   # each sensor's latest
    assert any(pos > 0 and sample > 0 for pos, sample in cursor.values()), cursor
    # and a finished shard the progress names has gone meanwhile: that sensor is redone from it
    gone = next(shard for part in parts for shard in part["shards"])
    (out / gone["path"]).unlink()
    again = subprocess.run(_cmd(catalog.url, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr and f"{gone['path']} is missing or changed" in again.stderr
    assert _snapshot(out) == expected

    # and killed inside a Dask worker, right after an item task wrote the shards its samples fill and
    # before the client took its result: the rerun writes them again (the same bytes), listed once
    out = tmp_path / "killed-in-a-worker"
    killed = subprocess.run(_cmd(catalog.url, out, "item-shards"), env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "_staging").exists() and not (out / "manifest.json").exists()
    again = subprocess.run(_cmd(catalog.url, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(out) == expected


def test_ctrl_c_stops_at_once_and_the_rerun_completes(catalog, tmp_path):
    """Ctrl-C while an item task is stuck (a read that never returns) ends the run within seconds, not
    when the task ends; the same command then completes the dataset."""
    out, flag = tmp_path / "interrupted", tmp_path / "stalling"
    tests = str(Path(__file__).parent)
    env = _env(OFA_TEST_STALL=str(flag), PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(_cmd(catalog.url, out) + ["--sign-href", "ingest_fixtures:stall_naip"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert flag.exists(), "the stalling hook was never called"
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)   # the stuck task sleeps 300 s
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop the run within 60 s")
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err[-2000:]
    assert time.monotonic() - t0 < 30 and not (out / "manifest.json").exists()
    again = subprocess.run(_cmd(catalog.url, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    verify = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "manifest", "verify", str(out)], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout


def test_resume_on_s3_after_sigkill(catalog, tmp_path):
    import s3fs

    from ofa.infra.localstack import s3_server

    with s3_server() as s3:
        bucket = s3.make_bucket("ofa-resume")
        fs = s3fs.S3FileSystem(**s3.storage_options)

        def snapshot(prefix: str) -> tuple[dict[str, bytes], dict, dict]:
            files = {p.split(prefix, 1)[1]: fs.cat_file(p) for p in sorted(fs.find(prefix))}
            manifest = json.loads(files.pop("/manifest.json"))
            manifest.pop("created")
            return files, manifest, comparable_collection(files.pop("/stac/collection.json"))

        ref = subprocess.run(_cmd(catalog.url, f"{bucket}/reference"), env=_env(**s3.env), capture_output=True, text=True, timeout=300)
        assert ref.returncode == 0, ref.stderr[-3000:]
        for point in ("item", "shards-naip"):
            out = f"{bucket}/killed-{point}"
            killed = subprocess.run(_cmd(catalog.url, out, point), env=_env(**s3.env), capture_output=True,
                                    text=True, timeout=300)
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
            fs.invalidate_cache()
            assert fs.exists(f"ofa-resume/killed-{point}/_staging") and not fs.exists(f"ofa-resume/killed-{point}/manifest.json")
            saved = fs.cat_file(f"ofa-resume/killed-{point}/_staging/_search.json")
            assert b"SECRET-TOKEN" not in saved and b"sig=" not in saved  # not even in unfinished work
            again = subprocess.run(_cmd(catalog.url, out), env=_env(**s3.env), capture_output=True, text=True, timeout=300)
            assert again.returncode == 0, again.stderr[-3000:]
            fs.invalidate_cache()
            assert snapshot(f"ofa-resume/killed-{point}") == snapshot("ofa-resume/reference"), point


def test_shards_lost_during_the_run_fail_it_and_the_rerun_redoes_them(catalog, tmp_path, monkeypatch):
    """A store that loses a finished shard mid-run (moto restarted, a lifecycle rule, a person) never
    ends in a manifest naming it: the run fails with one line and the same command redoes the shard."""
    from ofa.ingest.job import IngestConfig, IngestError, run_ingest
    from ingest_kill import install

    def cfg(out: Path) -> IngestConfig:
        return IngestConfig(catalog=catalog.url, allow_local_hrefs=True, collections=list(COLLECTIONS), out=str(out), chip_size=80, workers=2,
                            shard_max_samples=5, progress=False)

    reference = run_ingest(cfg(tmp_path / "reference"))
    out = tmp_path / "lossy"

    def lose_a_shard() -> None:
        next((out / "shards").rglob("*.tar")).unlink()

    install("tasks", action=lose_a_shard, patch=monkeypatch.setattr)
    with pytest.raises(IngestError, match="missing or changed.*rerun the same command"):
        run_ingest(cfg(out))
    assert not (out / "manifest.json").exists()
    monkeypatch.undo()
    again = run_ingest(cfg(out))
    assert again["shards"] == reference["shards"] and again["counts"] == reference["counts"]
