"""Evaluation protocols on the toy GEO-Bench: linear probe, frozen UPerNet-style decoder, fine-tuning.

A random-init tiny backbone at small image sizes keeps this fast; labels are a learnable function
of the pixels, so a working probe/decoder must clearly beat chance / the majority class.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


from ofa.pipeline.evaluate.data import TaskSplit, loader
from ofa.pipeline.evaluate.bands import plan_inputs
from ofa.pipeline.evaluate.features import Backbone, BackboneSpec
from ofa.pipeline.evaluate.finetune import Finetuner, finetune
from ofa.pipeline.evaluate.geobench import load_task
from ofa.pipeline.evaluate.metrics import f1_micro, majority_miou, miou
from ofa.pipeline.evaluate.runner import EvalOptions, MaeSource, evaluate_task
from ofa.pipeline.evaluate.segmentation import UPerNetLite


def _source(img: int) -> MaeSource:
    return MaeSource(BackboneSpec("random", size="tiny", img_size=img, patch_size=8))


def test_metrics() -> None:
    y = torch.tensor([[0, 0, 1, 1]])
    assert miou(torch.tensor([[0, 0, 1, 1]]), y, 2) == 1.0
    assert miou(torch.tensor([[0, 1, 1, 1]]), y, 2) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert majority_miou(torch.tensor([[0, 0, 0, 1]]), 2) == pytest.approx(0.75 / 2)
    assert f1_micro(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.tensor([[1, 0], [0, 1]])) == pytest.approx(0.8)


def test_decoder_shapes() -> None:
    dec = UPerNetLite(32, 3, channels=16)
    out = dec([torch.randn(2, 32, 4, 4) for _ in range(4)])
    assert out.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="4 feature levels"):
        dec([torch.randn(2, 32, 4, 4)] * 3)


def test_linear_probe_beats_chance(geobench_root: Path) -> None:
    opts = EvalOptions(seeds=2, probe_epochs=40, batch_size=64)
    runs = evaluate_task(load_task(geobench_root / "classification_v1.0" / "m-toy-s2"), "random", _source(32), opts)
    assert [r.seed for r in runs] == [0, 1]
    assert all(r.metric == "accuracy" and r.value > 0.6 for r in runs), runs  # chance: 0.25
    opts.seeds = 1
    task = load_task(geobench_root / "classification_v1.0" / "m-toy-multilabel")
    (ml,) = evaluate_task(task, "random", _source(32), opts)
    # baseline: predicting every label present
    _, y = next(iter(loader(TaskSplit(task, task.partition()["test"], plan_inputs(task)), 1000)))
    all_on = f1_micro(torch.ones_like(y), y)
    assert ml.metric == "f1_micro" and ml.value > all_on + 0.15, (ml, all_on)


def test_segmentation_decoder_beats_majority(geobench_root: Path) -> None:
    task = load_task(geobench_root / "segmentation_v1.0" / "m-toy-seg")
    opts = EvalOptions(seeds=1, seg_epochs=8, batch_size=32, decoder_channels=32)
    (seg,) = evaluate_task(task, "random", _source(32), opts)
    _, y = next(iter(loader(TaskSplit(task, task.partition()["test"], plan_inputs(task)), 1000)))
    base = majority_miou(y, task.n_classes)
    assert seg.metric == "miou" and seg.value > base + 0.1, (seg, base)
    assert seg.missing_bands == "naip:NIR"


def test_finetune(geobench_root: Path) -> None:
    task = load_task(geobench_root / "classification_v1.0" / "m-toy-s2")
    mae = _source(32).get(0)
    before = {k: v.clone() for k, v in mae.state_dict().items()}
    model = Finetuner(Backbone(mae, plan_inputs(task), 32), task.kind, task.n_classes)
    trained = {id(p) for p in model.backbone_parameters()}
    names = {n for n, p in mae.named_parameters() if id(p) in trained}
    assert any(n.startswith("backbone.") for n in names) and any("sentinel-2" in n for n in names)
    assert not any("decoder" in n or "naip" in n for n in names)
    splits = {s: TaskSplit(task, task.partition()[s][:16], plan_inputs(task)) for s in ("train", "valid", "test")}
    loaders = {s: loader(d, 8, shuffle=s == "train") for s, d in splits.items()}
    test, valid = finetune(model.backbone, task.kind, task.n_classes, loaders, torch.device("cpu"), epochs=1, lr=1e-3)
    for score in (test, valid):  # accuracy over the split's 16 samples, not a mean of per-batch scores
        assert score * 16 == pytest.approx(round(score * 16), abs=1e-6), score
    after = mae.state_dict()
    assert not torch.equal(before["backbone.blocks.0.attn.qkv.weight"], after["backbone.blocks.0.attn.qkv.weight"])
    assert torch.equal(before["mask_token"], after["mask_token"])


def test_finetune_protocol_segmentation(geobench_root: Path) -> None:
    task = load_task(geobench_root / "segmentation_v1.0" / "m-toy-seg")
    opts = EvalOptions(protocol="finetune", seeds=1, finetune_epochs=1, batch_size=4, max_samples=8, decoder_channels=16)
    (run,) = evaluate_task(task, "random", _source(32), opts)
    assert run.protocol == "finetune" and run.metric == "miou"
    (again,) = evaluate_task(task, "random", _source(32), opts)
    assert again.value == run.value  # seeded: the same backbone, head, batches and flips
    with pytest.raises(ValueError, match="protocol 'probe'"):
        evaluate_task(task, "random", _source(32), EvalOptions(protocol="probe"))
