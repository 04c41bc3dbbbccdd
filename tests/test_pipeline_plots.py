"""Loss-curve and reconstruction PNGs from a real (tiny) training run."""
from __future__ import annotations


import matplotlib.image as mpimg
import pytest

from ofa.pipeline.plots import plot_loss_curve, plot_reconstructions
from ofa.pipeline.trainer import TrainConfig, train

from pipeline_fixtures import write_dataset


def test_plots_from_a_tiny_run(tmp_path):
    data = str(tmp_path / "ds")
    write_dataset(data, {"sentinel-2": (1, 4), "naip": (1, 4), "sentinel-1": (1, 4)}, size=40)
    summary = train(TrainConfig(data=[data], size="tiny", steps=3, batch_size=2, img_size=32, save_every=3,
                                out=str(tmp_path / "run"), cpu=True, tensorboard=True, plot_every=2))
    assert (tmp_path / "run" / "reconstruction-00000002.png").exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    curve = plot_loss_curve(tmp_path / "run" / "log.jsonl", tmp_path / "loss.png")
    assert mpimg.imread(curve).std() > 0
    one = mpimg.imread(plot_reconstructions(summary["checkpoint"], [data], tmp_path / "r.png", img_size=32))
    assert one.shape[0] > one.shape[1] * 0.8  # three sensor rows: taller than a single row
    assert one[..., :3].std() > 0.01
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no steps"):
        plot_loss_curve(empty, tmp_path / "x.png")


def test_bands_are_shown_by_name():
    from ofa.pipeline.plots import display_for

    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert display_for("sentinel-2", s2, 12).channels == (3, 2, 1)  # B04, B03, B02
    assert display_for("sentinel-2", ["B08", "B04", "B03", "B02"], 4).channels == (1, 2, 3)  # a band subset
    assert display_for("landsat", ["SR_B1", "SR_B2", "SR_B3", "SR_B4"], 4).label == "true colour SR_B4/SR_B3/SR_B2"
    assert display_for("naip", ["R", "G", "B", "NIR"], 4).channels == (0, 1, 2)
    sar = display_for("sentinel-1", ["VH", "VV"], 2)
    assert sar.sar and sar.channels == (1, 0) and sar.label == "SAR VV / VH / VV-VH"
    assert display_for("sentinel-1", ["HH", "HV"], 2).label == "SAR HH / HV / HH-HV"
    assert display_for("other", ["a", "b"], 2).label == "false colour a/b/b"


def test_masked_patches_are_grey_and_the_stretch_is_robust():
    import torch

    from ofa.pipeline.plots import Reconstruction, display_for, sample_row

    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    x[0, 0, 0, 0] = 1000.0  # one outlier must not wash the image out
    mask = torch.tensor([[[True, False], [False, True]]])
    pixels = mask[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3).float()
    rec = Reconstruction(x * (1 - pixels), x * (1 - pixels), mask, 4)
    row = sample_row("naip #0", x, rec, 0, display_for("naip", ["R", "G", "B", "NIR"], 4))
    inp, visible, _ = row.panels
    assert (visible[:4, :4] == 0.5).all() and (visible[4:, 4:] == 0.5).all()  # masked: grey
    assert (visible[:4, 4:] == inp[:4, 4:]).all()  # visible patches as in the input
    assert 0.3 < inp[..., 0].mean() < 0.7  # 2-98 % stretch: the outlier clips, the rest keeps its range
    assert row.mask.tolist() == [[True, False], [False, True]] and "true colour R/G/B" in row.label


def test_loss_series_per_sensor(tmp_path):
    import json

    from ofa.pipeline.plots import loss_series

    recs = [{"step": 1, "loss": 1.2, "sensor": "naip"}, {"step": 2, "nonfinite_loss": True, "sensor": "naip"},
            {"step": 3, "loss": 0.9, "sensor": "sentinel-2"}, {"step": 4, "loss": 0.8, "sensor": "naip"}]
    assert loss_series(recs) == {"naip": ([1, 4], [1.2, 0.8]), "sentinel-2": ([3], [0.9])}
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert mpimg.imread(plot_loss_curve(log, tmp_path / "curve.png")).std() > 0
