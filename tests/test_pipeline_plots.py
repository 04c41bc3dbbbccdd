"""Loss-curve and reconstruction PNGs from a real (tiny) training run."""
from __future__ import annotations


import matplotlib.image as mpimg
import pytest

from pipeline.plots import plot_loss_curve, plot_reconstructions
from pipeline.train import TrainConfig, train

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


def test_rgb_bands_come_from_the_sensor_registry():
    from dataclasses import replace

    from ingest.sensors import SENSORS
    from pipeline.plots import rgb_indices

    for spec in SENSORS.values():
        idx = rgb_indices(spec.id, spec.band_names, len(spec.bands))
        assert [spec.band_names[i] for i in idx] == list(spec.rgb or spec.band_names[:3]), spec.id
    # a registry entry is all it takes: a sensor whose rgb names its bands in another order is shown so
    SENSORS["test-rgb"] = replace(SENSORS["naip"], id="test-rgb", rgb=("NIR", "R", "G"))
    try:
        assert rgb_indices("test-rgb", ["R", "G", "B", "NIR"], 4) == [3, 0, 1]
    finally:
        del SENSORS["test-rgb"]
    assert rgb_indices("unknown", ["a", "b"], 2) == [0, 1, 1]
