"""FSDP, run: 2 gloo processes on CPU under ``accelerate launch`` with infra/configs/accelerate-fsdp-multinode.yaml
(FULL_SHARD, one unit per ViT block, full state dict, original parameters), reduced to one machine.

A SIGKILL after a checkpoint and ``--resume auto`` give the uninterrupted run's losses and final weights
exactly: the full weights gathered from the shards, each rank's optimiser shard, the RNG states and the data
position all come back. accelerate 1.16 runs FSDP on GPUs only; tests/support/fsdp_on_cpu.py lifts that one
gate (see there) and runs the production ``ofa train`` otherwise unchanged."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from pipeline_fixtures import logged_losses, train_env, write_dataset

from ofa.model import from_pretrained
from ofa.pipeline.checkpoint import latest_checkpoint, load_optimizer_shard, load_state, optimizer_layout_problem

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "tests" / "support" / "fsdp_on_cpu.py"
STEPS = 5


def _accelerate() -> str:
    found = Path(sys.executable).parent / "accelerate"
    return str(found) if found.exists() else shutil.which("accelerate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_config(folder: Path) -> Path:
    """The multi-node FSDP config on one machine with 2 processes, in full precision; accelerate refuses
    sync_module_states (and the CPU-RAM-efficient loading that needs it) on CPU, and every rank builds the
    same initial weights from the seed anyway."""
    cfg = yaml.safe_load((REPO / "infra" / "configs" / "accelerate-fsdp-multinode.yaml").read_text())
    for key in ("main_process_ip", "main_process_port", "rdzv_backend", "same_network"):
        cfg.pop(key)
    cfg.update(num_machines=1, num_processes=2, machine_rank=0, mixed_precision="no")
    cfg["fsdp_config"].update(fsdp_sync_module_states=False, fsdp_cpu_ram_efficient_loading=False)
    path = folder / "fsdp-cpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cmd(config: Path, data: str, out: Path) -> list[str]:
    return [_accelerate(), "launch", "--config_file", str(config), "--main_process_port", str(_free_port()),
            "--dynamo_backend", "no", str(WRAPPER), "--cpu", "--data", data, "--out", str(out), "--steps", str(STEPS),
            "--save-every", "1", "--size", "tiny", "--batch-size", "4", "--img-size", "32", "--seed", "0",
            "--resume", "auto", "--no-tensorboard"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset, the config, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("fsdp")
    data = str(root / "data")
    write_dataset(data, {"sentinel-2": (2, 6), "naip": (1, 6)}, size=40, seed=3)
    config = fsdp_config(root)
    ref = root / "ref"
    run(train_cmd(config, data, ref))
    return data, config, ref


def kill_after_checkpoint(cmd: list[str], out: Path, step: int, timeout: float = 300) -> None:
    """Start the launcher and its 2 ranks; SIGKILL all of them once checkpoint ``step`` is complete (each rank
    runs in a session of its own, so the launcher's process group alone would leave them training)."""
    done = out / "checkpoints" / f"step-{step:08d}"
    proc = subprocess.Popen(cmd, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not done.exists():
            time.sleep(0.005)
        assert done.exists(), f"checkpoint {step} never appeared (exit {proc.poll()})"
    finally:
        tree = [psutil.Process(proc.pid)] if proc.poll() is None else []
        tree += [child for p in tree for child in p.children(recursive=True)]
        for p in reversed(tree):  # the ranks first, then the launcher
            p.send_signal(signal.SIGKILL)
        gone, alive = psutil.wait_procs(tree, timeout=30)
        proc.wait(timeout=30)
        assert not alive, alive


def test_fsdp_checkpoints_hold_one_optimiser_shard_per_rank(setup):
    _, _, ref = setup
    step, url = latest_checkpoint(str(ref))
    state = load_state(url)
    assert step == STEPS and state["sharded_optimizer"] and state["optimizer"] is None
    model = from_pretrained(f"{url}/model")
    total = sum(p.numel() for p in model.parameters())
    shards = [load_optimizer_shard(url, rank)["state"] for rank in (0, 1)]
    sizes = [sum(s["exp_avg"].numel() for s in shard.values()) for shard in shards]
    assert sum(sizes) == total and max(sizes) < total, (sizes, total)   # each rank holds a part, together all


def test_sigkill_after_checkpoint_then_resume_auto_is_exact(setup, tmp_path):
    data, config, ref = setup
    expected = logged_losses(ref, 2)
    assert sorted(expected) == list(range(1, STEPS + 1))
    out = tmp_path / "killed"
    kill_after_checkpoint(train_cmd(config, data, out), out, 2)
    found = latest_checkpoint(str(out))
    assert found is not None and found[0] in (2, 3), found       # 3 when the kill met the next write finished
    assert len(logged_losses(out, 2)) < STEPS
    run(train_cmd(config, data, out))
    assert logged_losses(out, 2) == expected                                 # bit for bit, every step
    want = from_pretrained(f"{latest_checkpoint(str(ref))[1]}/model").state_dict()
    got = from_pretrained(f"{latest_checkpoint(str(out))[1]}/model").state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_sharded_checkpoint_is_refused_by_a_run_without_fsdp(setup, tmp_path):
    from ofa.pipeline.runs import RunConflictError
    from ofa.pipeline.trainer import TrainConfig, train

    data, _, ref = setup
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    with pytest.raises(RunConflictError, match="sharded over 2 FSDP processes; this run does not use FSDP"):
        train(TrainConfig(data=[data], out=str(out), steps=STEPS + 1, save_every=1, size="tiny", batch_size=4,
                          img_size=32, seed=0, cpu=True, tensorboard=False))


@pytest.mark.parametrize("saved,sharded,world,problem", [
    ({"sharded_optimizer": True, "data": {"world_size": 2}}, True, 2, None),
    ({"sharded_optimizer": False, "data": {"world_size": 2}}, False, 4, None),
    ({"sharded_optimizer": True, "data": {"world_size": 2}}, True, 4, "sharded over 2 FSDP processes; this run has 4"),
    ({"sharded_optimizer": False, "data": {"world_size": 1}}, True, 2, "whole (a run without FSDP); this run shards it"),
])
def test_optimizer_layout_problem(saved, sharded, world, problem):
    found = optimizer_layout_problem(saved, sharded, world)
    assert found == problem if problem is None else problem in found
