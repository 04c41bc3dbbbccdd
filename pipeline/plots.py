"""Training plots (matplotlib Agg): loss curves per sensor, and MAE reconstructions people can read.

Reconstructions show sensors with red, green and blue bands in true colour (bands found by the names
the data carries, through the registry's common names), SAR as a VV / VH / VV-VH composite, anything
else as its first three bands, with a robust 2-98 % stretch shared by a sample's panels; the band
names are written beside each row and the predicted (masked) patches are outlined."""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure  # figures without pyplot: rendered by Agg, the user's backend left alone
from matplotlib.patches import Rectangle

from ofa.ingest.sensors import SENSORS
from ofa.model import from_pretrained
from ofa.pipeline.data import LoaderConfig, ShardBatches, read_streams


@dataclass(frozen=True)
class Display:
    """How to show a sensor's channels as an RGB image: which channels, and a label naming them."""

    channels: tuple[int, ...]  # R, G, B indices; SAR: (co-pol, cross-pol), blue is their difference
    label: str
    sar: bool = False


def _common_names(sensor: str, bands: Sequence[str]) -> list[str | None]:
    """Each band's common name (red, green, blue, ...) from the sensor registry, by band name."""
    spec = SENSORS.get(sensor)
    known = {b.name: b.common_name for b in spec.bands} if spec else {}
    return [known.get(b) or (b.lower() if b.lower() in ("red", "green", "blue") else None) for b in bands]


def display_for(sensor: str, bands: Sequence[str] | None, channels: int) -> Display:
    """True colour when the data has red, green and blue bands (by name); SAR as VV, VH, VV-VH (or HH/HV);
    otherwise the first three bands, labelled as false colour."""
    bands = list(bands or [f"band {i + 1}" for i in range(channels)])
    common = _common_names(sensor, bands)
    if all(c in common for c in ("red", "green", "blue")):
        idx = tuple(common.index(c) for c in ("red", "green", "blue"))
        return Display(idx, "true colour " + "/".join(bands[i] for i in idx))
    pols = [b.upper() for b in bands]
    for co, cross in (("VV", "VH"), ("HH", "HV")):
        if co in pols and cross in pols:
            i, j = pols.index(co), pols.index(cross)
            return Display((i, j), f"SAR {bands[i]} / {bands[j]} / {bands[i]}-{bands[j]}", sar=True)
    idx = tuple(min(i, channels - 1) for i in range(3))
    return Display(idx, "false colour " + "/".join(bands[i] for i in idx))


def _channels(x: torch.Tensor, display: Display) -> torch.Tensor:
    """[C, H, W] -> the three displayed planes [3, H, W] (SAR: co, cross, co - cross)."""
    x = x.float()
    if display.sar:
        co, cross = x[display.channels[0]], x[display.channels[1]]
        return torch.stack([co, cross, co - cross])
    return x[list(display.channels)]


def stretch_limits(x: torch.Tensor, display: Display, lo: float = 2.0, hi: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per displayed plane, the ``lo``/``hi`` percentiles of ``x`` [C, H, W]: a stretch robust to outliers."""
    planes = _channels(x, display).reshape(3, -1).cpu().numpy()
    low, high = np.percentile(planes, [lo, hi], axis=1)
    return low[:, None, None], np.maximum(high, low + 1e-6)[:, None, None]


def composite(x: torch.Tensor, display: Display, limits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """[C, H, W] -> [H, W, 3] in 0..1 with the given stretch (share it between images to compare them)."""
    low, high = limits
    img = (_channels(x, display).cpu().numpy() - low) / (high - low)
    return np.clip(img, 0.0, 1.0).transpose(1, 2, 0)


def loss_series(records: Sequence[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Steps and losses per sensor of a training log (steps with a non-finite loss left out)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        if r.get("loss") is not None:
            steps, losses = out.setdefault(str(r.get("sensor") or "all"), ([], []))
            steps.append(r["step"])
            losses.append(r["loss"])
    return dict(sorted(out.items()))


def plot_loss_curve(log_jsonl_path: str | Path, png_path: str | Path) -> Path:
    """The loss per step and sensor from a training ``log.jsonl``, with the mean of all sensors, the loss of
    predicting each patch's mean (1.0 on normalised pixels) and the learning rate."""
    records = [json.loads(line) for line in Path(log_jsonl_path).read_text().splitlines() if line.strip()]
    series = loss_series(records)
    if not series:
        raise ValueError(f"{log_jsonl_path}: no steps with a loss to plot")
    rows = sorted((r["step"], r["loss"], r.get("lr")) for r in records if r.get("loss") is not None)
    steps, losses, lrs = zip(*rows)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for sensor, (s, loss) in series.items():
        ax.plot(s, loss, lw=0.8, alpha=0.8, marker="." if len(s) < 60 else None, label=sensor)
    if len(losses) >= 10:
        k = max(2, len(losses) // 10)
        ax.plot(steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), lw=2, color="black",
                label=f"all sensors, mean of {k} steps")
    ax.axhline(1.0, ls="--", lw=1.2, color="tab:red", label="predicting each patch's mean (1.0)")
    ax.set_ylim(0, max(1.1, min(max(losses), 3.0) * 1.05))
    ax.set_xlabel("step")
    ax.set_ylabel("MAE loss on masked patches (normalised pixels)")
    ax.legend(loc="lower left", fontsize=8)
    if any(lr is not None for lr in lrs):
        ax2 = ax.twinx()
        ax2.plot(steps, [lr or 0 for lr in lrs], lw=1, color="tab:gray", alpha=0.5)
        ax2.set_ylabel("learning rate", color="tab:gray")
    return _save(fig, png_path)


def _save(fig: Figure, png_path: str | Path) -> Path:
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


@dataclass
class Reconstruction:
    """An MAE pass over a batch: what the model saw and what it predicted."""

    masked: torch.Tensor  # [N, C, H, W], masked patches zeroed
    recon: torch.Tensor  # [N, C, H, W]: visible patches from the input, masked ones predicted
    mask: torch.Tensor  # [N, H/p, W/p] bool, True where a patch was masked (predicted)
    patch: int


@torch.no_grad()
def reconstruct(model: Any, x: torch.Tensor, sensor: str) -> Reconstruction:
    """Mask ``x`` [N, C, H, W] as in training and predict the masked patches."""
    model.eval()
    out = model(x, modality=sensor)
    c = x.shape[1]
    pred = out.pred.float()
    if model.config.norm_pix_loss:  # predictions are per-patch normalised: undo with the input patches' stats
        target = model.patchify(x.float())
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    recon = model.unpatchify(pred, c)
    p = model.config.patch_size
    grid = out.mask.reshape(-1, x.shape[-2] // p, x.shape[-1] // p)
    mask = grid[:, None].repeat_interleave(p, 2).repeat_interleave(p, 3).to(x.dtype)
    return Reconstruction(x * (1 - mask), x * (1 - mask) + recon * mask, grid.bool(), p)


@dataclass
class Row:
    """One sample in the figure: its label and three panels (input, visible patches, reconstruction)."""

    label: str
    panels: tuple[np.ndarray, np.ndarray, np.ndarray]
    mask: np.ndarray  # [H/p, W/p] bool: the predicted patches
    patch: int


def sample_row(label: str, x: torch.Tensor, rec: Reconstruction, i: int, display: Display) -> Row:
    """Panels of sample ``i``, stretched alike (from its input); masked patches grey in the visible panel."""
    limits = stretch_limits(x[i], display)
    mask = rec.mask[i].cpu().numpy()
    pixels = np.kron(mask, np.ones((rec.patch, rec.patch), dtype=bool)).astype(bool)
    visible = composite(x[i], display, limits)
    visible[pixels] = 0.5
    panels = (composite(x[i], display, limits), visible, composite(rec.recon[i].float(), display, limits))
    return Row(f"{label}\n{display.label}", panels, mask, rec.patch)


def _plot_rows(rows: list[Row], png_path: str | Path) -> Path:
    fig = Figure(figsize=(8.4, 2.8 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    shown = 1.0 - float(np.mean([r.mask.mean() for r in rows]))
    titles = ("input", f"visible patches ({shown:.0%})", "reconstruction\n(predicted patches outlined)")
    for r, row in enumerate(rows):
        for c, (img, title) in enumerate(zip(row.panels, titles)):
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        for gy, gx in zip(*np.nonzero(row.mask)):
            axes[r][2].add_patch(Rectangle((gx * row.patch - 0.5, gy * row.patch - 0.5), row.patch, row.patch,
                                           fill=False, edgecolor="yellow", lw=0.6))
        axes[r][0].set_ylabel(row.label, fontsize=8)
    return _save(fig, png_path)


def plot_batch(model: Any, x: torch.Tensor, sensor: str, png_path: str | Path, bands: Sequence[str] | None = None) -> Path:
    """Reconstructions of the first images of one training batch (used every ``plot_every`` steps)."""
    was_training = model.training
    device = next(model.parameters()).device
    try:  # plotting must not change the run's random stream (CPU or CUDA)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            rec = reconstruct(model, x.to(device), sensor)
    finally:
        model.train(was_training)
    x = x.cpu()
    rec = Reconstruction(rec.masked.float().cpu(), rec.recon.float().cpu(), rec.mask.cpu(), rec.patch)
    display = display_for(sensor, bands, x.shape[1])
    return _plot_rows([sample_row(f"{sensor} #{i}", x, rec, i, display) for i in range(x.shape[0])], png_path)


def plot_reconstructions(checkpoint_dir: str | Path, data: Sequence[str], png_path: str | Path, img_size: int = 64,
                         seed: int = 0, storage_options: dict[str, Any] | None = None) -> Path:
    """One row per sensor of ``data``: input / visible patches / reconstruction, from a saved model."""
    model = from_pretrained(str(checkpoint_dir), storage_options=storage_options)
    streams = read_streams(list(data), storage_options)
    rows = []
    for sensor in sorted({s.sensor for s in streams}):
        if sensor not in model.config.modalities:
            continue
        cfg = LoaderConfig(data=list(data), batch_size=1, img_size=img_size, seed=seed, shuffle_buffer=1,
                           weights={s.sensor: (1.0 if s.sensor == sensor else 0.0) for s in streams},
                           storage_options=storage_options, min_scale=1.0)
        x = next(iter(ShardBatches(cfg, streams)))["pixels"]
        torch.manual_seed(seed)
        bands = next(s.bands for s in streams if s.sensor == sensor)
        rows.append(sample_row(sensor, x, reconstruct(model, x, sensor), 0, display_for(sensor, bands, x.shape[1])))
    if not rows:
        raise ValueError(f"{checkpoint_dir}: the model knows none of the sensors in {list(data)}")
    return _plot_rows(rows, png_path)
