"""Training plots (matplotlib Agg): the loss curve and MAE reconstructions in false colour."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ingest.sensors import SENSORS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rgb_indices(sensor: str, bands: Sequence[str] | None, channels: int) -> list[int]:
    """Three channel indices to show as RGB: the registry's ``rgb`` bands, else the first three."""
    names = SENSORS[sensor].rgb if sensor in SENSORS else None
    if names and bands and all(n in bands for n in names):
        return [list(bands).index(n) for n in names]
    return [min(i, channels - 1) for i in range(3)]


def to_rgb(x: torch.Tensor, idx: list[int]) -> np.ndarray:
    """Normalised [C, H, W] -> [H, W, 3] in 0..1 (values clipped at +-2 std)."""
    img = x[idx].float().clamp(-2, 2).add(2).div(4)
    return img.permute(1, 2, 0).cpu().numpy()


def plot_loss_curve(log_jsonl_path: str | Path, png_path: str | Path) -> Path:
    """Loss (and learning rate) per step from a training ``log.jsonl``."""
    records = [json.loads(line) for line in Path(log_jsonl_path).read_text().splitlines() if line.strip()]
    rows = [(r["step"], r["loss"], r.get("lr")) for r in records if r.get("loss") is not None]
    if not rows:
        raise ValueError(f"{log_jsonl_path}: no steps with a loss to plot")
    steps, losses, lrs = zip(*rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=1, color="tab:blue", label="loss")
    if len(losses) >= 10:
        k = max(2, len(losses) // 10)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=2, color="tab:orange", label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("MAE loss (masked patches)")
    ax.legend(loc="upper right")
    if any(lr is not None for lr in lrs):
        ax2 = ax.twinx()
        ax2.plot(steps, [lr or 0 for lr in lrs], lw=1, color="tab:gray", alpha=0.6)
        ax2.set_ylabel("learning rate", color="tab:gray")
    return _save(plt, fig, png_path)


def _save(plt: Any, fig: Any, png_path: str | Path) -> Path:
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@torch.no_grad()
def reconstruct(model: Any, x: torch.Tensor, sensor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked input, reconstruction)`` [N, C, H, W]: visible patches kept, masked ones predicted."""
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
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    mask = out.mask.reshape(-1, 1, *grid).repeat_interleave(p, 2).repeat_interleave(p, 3)
    return x * (1 - mask), x * (1 - mask) + recon * mask


def _plot_rows(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], png_path: str | Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, (label, *imgs) in enumerate(rows):
        for c, (img, title) in enumerate(zip(imgs, ("input", "masked", "reconstructed"))):
            axes[r][c].imshow(img)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(title)
        axes[r][0].set_ylabel(label)
    return _save(plt, fig, png_path)


def plot_batch(model: Any, x: torch.Tensor, sensor: str, png_path: str | Path, bands: Sequence[str] | None = None) -> Path:
    """Reconstructions of the first images of one training batch (used every ``plot_every`` steps)."""
    was_training = model.training
    device = next(model.parameters()).device
    try:  # plotting must not change the run's random stream (CPU or CUDA)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            masked, recon = reconstruct(model, x.to(device), sensor)
    finally:
        model.train(was_training)
    x, masked, recon = x.cpu(), masked.float().cpu(), recon.float().cpu()
    idx = rgb_indices(sensor, bands, x.shape[1])
    rows = [(f"{sensor} #{i}", to_rgb(x[i], idx), to_rgb(masked[i], idx), to_rgb(recon[i], idx)) for i in range(x.shape[0])]
    return _plot_rows(rows, png_path)


def plot_reconstructions(checkpoint_dir: str | Path, data: Sequence[str], png_path: str | Path, img_size: int = 64,
                         seed: int = 0, storage_options: dict[str, Any] | None = None) -> Path:
    """One row per sensor of ``data``: input / masked / reconstructed, from a saved model."""
    from model import from_pretrained
    from pipeline.data import LoaderConfig, ShardBatches, read_streams

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
        masked, recon = reconstruct(model, x, sensor)
        bands = next(s.bands for s in streams if s.sensor == sensor)
        idx = rgb_indices(sensor, bands, x.shape[1])
        rows.append((sensor, to_rgb(x[0], idx), to_rgb(masked[0], idx), to_rgb(recon[0], idx)))
    if not rows:
        raise ValueError(f"{checkpoint_dir}: the model knows none of the sensors in {list(data)}")
    return _plot_rows(rows, png_path)
