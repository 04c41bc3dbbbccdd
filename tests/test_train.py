"""In-process training: exact resume, finished-run rerun, non-finite losses, config file + CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ofa.model import from_pretrained
from ofa.pipeline.checkpoint import latest_checkpoint
from ofa.pipeline.trainer import NonFiniteLossError, TrainConfig, train

from pipeline_fixtures import write_dataset

TINY = dict(size="tiny", embedding="ofa", batch_size=4, img_size=32, seed=0, cpu=True, tensorboard=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "data"
    write_dataset(str(root), {"sentinel-2": (3, 6), "naip": (2, 6), "sentinel-1": (1, 6)}, size=40, seed=2)
    return str(root)


def stop_after(last: int):
    """An ``on_step`` callback that stops the run after step ``last``, as if it were killed there."""
    return lambda step, record: step >= last


def nan_losses(monkeypatch, steps: set[int], first: int = 1):
    """Make the model's loss NaN at ``steps`` (training calls counted from step ``first``; one micro-step each)."""
    from ofa.model import MaskedAutoencoder

    forward, seen = MaskedAutoencoder.forward, iter(range(first, 10**6))

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training and next(seen) in steps:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MaskedAutoencoder, "forward", poisoned)


def _losses(out: Path) -> dict[int, float]:
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def test_exact_resume_matches_uninterrupted_run(dataset, tmp_path):
    cfg = dict(data=[dataset], steps=8, save_every=3, **TINY)
    full = train(TrainConfig(out=str(tmp_path / "full"), **cfg))
    part = train(TrainConfig(out=str(tmp_path / "part"), **cfg), on_step=stop_after(5))  # "dies" at step 5, last ckpt at 3
    assert part["step"] == 5 and latest_checkpoint(str(tmp_path / "part"))[0] == 3
    resumed = train(TrainConfig(out=str(tmp_path / "part"), **cfg))
    assert resumed["resumed"] and resumed["step"] == 8
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert sorted(b) == list(range(1, 9))  # the log of the dead run past step 3 was trimmed
    for step in range(1, 9):
        assert math.isclose(a[step], b[step], rel_tol=1e-5), (step, a[step], b[step])
    assert math.isclose(full["loss"], resumed["loss"], rel_tol=1e-5)
    m1, m2 = from_pretrained(full["checkpoint"]), from_pretrained(resumed["checkpoint"])
    for (k, v), w in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert (v - w).abs().max() <= 1e-5 * (1 + v.abs().max()), k
    # a finished run returns at once with the same summary
    again = train(TrainConfig(out=str(tmp_path / "full"), **cfg))
    assert again["loss"] == full["loss"] and again["checkpoint"] == full["checkpoint"]
    assert len(_losses(tmp_path / "full")) == 8
    rec = json.loads((tmp_path / "full" / "log.jsonl").read_text().splitlines()[-1])
    # the last of 8 steps: warmup 1 (5 %), cosine at 6/7 of the way, base lr 1.5e-4 per 256 images at batch 4
    assert rec["step"] == 8 and rec["lr"] == pytest.approx(1.5e-4 * 4 / 256 * 0.5 * (1 + math.cos(math.pi * 6 / 7)))
    assert rec["world_size"] == 1 and rec["images_per_s"] == pytest.approx(4 / rec["step_s"], rel=0.01)
    assert 0 <= rec["data_wait"] <= 1


def test_non_finite_losses_skip_then_stop_with_checkpoint_intact(dataset, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    cfg = dict(data=[dataset], steps=10, save_every=2, max_bad_steps=3, out=str(out), **TINY)
    nan_losses(monkeypatch, {3})
    summary = train(TrainConfig(**cfg), on_step=stop_after(4))  # one bad step: skipped, run goes on
    assert summary["step"] == 4 and math.isfinite(summary["loss"])
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert recs[2].get("nonfinite_loss") and "loss" not in recs[2] and "loss" in recs[3]
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        nan_losses(monkeypatch, {5, 6, 7}, first=5)  # resumes from step 4
        train(TrainConfig(**cfg))
    step, url = latest_checkpoint(str(out))
    assert step == 6  # saved at 6 (bad steps do not corrupt weights), none after the stop
    model = from_pretrained(f"{url}/model")
    assert all(bool(v.isfinite().all()) for v in model.state_dict().values())


def test_cli_with_yaml_config_and_flag_override(dataset, tmp_path):
    from ofa.pipeline.cli import main

    config = tmp_path / "run.yaml"
    out = tmp_path / "cli"
    config.write_text(f"data: [{dataset}]\nsize: tiny\nsteps: 50\nbatch-size: 2\nimg_size: 32\nsave_every: 2\n"
                      f"out: {out}\ncpu: true\ntensorboard: false\n")
    # --device-augment: workers ship raw pixels, the trainer normalises/crops them on its device
    assert main(["train", "--config", str(config), "--steps", "2", "--device-augment", "--plot-every", "2"]) == 0
    assert sorted(_losses(out)) == [1, 2] and all(math.isfinite(v) for v in _losses(out).values())
    assert (out / "reconstruction-00000002.png").stat().st_size > 1000
    assert from_pretrained(str(out / "checkpoints" / "step-00000002" / "model")).config.modalities == {
        "naip": 4, "sentinel-1": 2, "sentinel-2": 12}
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2  # a bad option: usage
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), "--cpu"]) == 3  # bad input


def test_shipped_configs_parse():
    import yaml

    from ofa.pipeline.cli import parse
    from ofa.pipeline.options import build

    root = Path(__file__).resolve().parents[1] / "infra" / "configs"
    for path in sorted(root.glob("pretrain-*.yaml")):
        cfg = build(TrainConfig, vars(parse(["train", "--config", str(path)])))
        assert cfg.steps > 0 and cfg.size in {"tiny", "small", "base", "large"} and isinstance(cfg.lr, float), path
    kinds = {yaml.safe_load(p.read_text())["distributed_type"] for p in root.glob("accelerate-*.yaml")}
    assert kinds == {"NO", "MULTI_GPU", "FSDP"}
