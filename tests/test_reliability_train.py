"""Training SIGKILLed while a checkpoint is being written: ``--resume auto`` picks the last complete
checkpoint and the loss curve continues exactly where an uninterrupted run goes."""
from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_fixtures import logged_losses, train_env, write_dataset

from ofa.pipeline.checkpoint import latest_checkpoint

pytestmark = pytest.mark.timeout(300)
STEPS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "data"
    write_dataset(str(root), {"sentinel-2": (2, 6), "naip": (1, 6)}, size=40, seed=3)
    return str(root)


def train_cmd(data: str, out: Path, steps: int = STEPS) -> list[str]:
    return [sys.executable, "-m", "ofa.pipeline.cli", "train", "--data", data, "--out", str(out), "--steps", str(steps),
            "--save-every", "1", "--size", "tiny", "--batch-size", "4", "--img-size", "32", "--seed", "0", "--cpu",
            "--resume", "auto", "--no-tensorboard"]


def kill_during_checkpoint(cmd: list[str], out: Path, step: int, timeout: float = 120) -> str:
    """Start training; SIGKILL it as soon as checkpoint ``step`` is being written. Returns where it died."""
    tmp = out / "checkpoints" / f".tmp-step-{step:08d}"
    final = out / "checkpoints" / f"step-{step:08d}"
    proc = subprocess.Popen(cmd, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    where = "never saw the checkpoint"
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if tmp.exists() or final.exists():
                where = "during the write" if tmp.exists() and not final.exists() else "after the write"
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return where


def test_sigkill_during_checkpoint_write_then_resume_auto(dataset, tmp_path):
    ref = tmp_path / "ref"
    done = subprocess.run(train_cmd(dataset, ref), env=train_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = logged_losses(ref)
    assert sorted(expected) == list(range(1, STEPS + 1))

    rng = random.Random(0)
    for trial, step in enumerate(sorted(rng.sample(range(2, STEPS), 2))):
        out = tmp_path / f"killed-{trial}"
        where = kill_during_checkpoint(train_cmd(dataset, out), out, step)
        assert where != "never saw the checkpoint"
        found = latest_checkpoint(str(out))
        assert found is not None and ".tmp-" not in found[1], found
        assert found[0] in (step - 1, step), (where, found)       # the last complete one, never a partial one
        again = subprocess.run(train_cmd(dataset, out), env=train_env(), capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-3000:]
        got = logged_losses(out)
        assert sorted(got) == list(range(1, STEPS + 1)), (where, sorted(got))
        for s in range(1, STEPS + 1):
            assert math.isclose(got[s], expected[s], rel_tol=1e-4, abs_tol=1e-6), (where, s, got[s], expected[s])
        assert latest_checkpoint(str(out))[0] == STEPS


def test_a_renamed_checkpoint_only_counts(tmp_path):
    """A local checkpoint killed after its marker but before the rename stays ignored."""
    base = tmp_path / "run" / "checkpoints"
    for name in ("step-00000004", ".tmp-step-00000005"):
        (base / name).mkdir(parents=True)
        (base / name / "COMPLETE").write_text("{}")
    (base / "step-00000006").mkdir()                 # no marker: incomplete
    assert latest_checkpoint(str(tmp_path / "run")) == (4, str(base / "step-00000004"))
