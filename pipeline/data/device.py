"""``device_augment`` batches: native-dtype pixels and crop parameters, normalised and cropped on the device."""
from __future__ import annotations

import numpy as np
import torch

from ofa.pipeline import augment
from ofa.pipeline.data.streams import Stream


def raw_batch(raws: list[np.ndarray], consts: list[list[list[float]]], params: list[list[float]],
              stream: Stream) -> dict:
    """A batch for ``to_device``: stacked native-dtype pixels plus what ``augment.prepare`` needs."""
    c = np.asarray(consts, dtype=np.float32)  # [N, 7, C], as ``decode_raw`` gives them
    return {
        "pixels": torch.from_numpy(np.stack(raws)),
        "params": torch.tensor(params, dtype=torch.float32),
        "scale": torch.from_numpy(c[:, 0]), "offset": torch.from_numpy(c[:, 1]),
        "nodata": torch.from_numpy(c[:, 2]), "has_nodata": torch.from_numpy(c[:, 3] > 0),
        # per sample: the statistics of each sample's quantity
        "mean": torch.from_numpy(c[:, 4]), "std": torch.from_numpy(c[:, 5]), "valid": torch.from_numpy(c[:, 6] > 0),
    }


def to_device(batch: dict, device: torch.device | str, img_size: int) -> torch.Tensor:
    """Model input of a batch on ``device``: prepared pixels moved, or raw ones (device_augment) prepared there."""
    if "params" not in batch:
        return batch["pixels"].to(device, non_blocking=True)
    fields = {k: batch[k].to(device, non_blocking=True) for k in ("pixels", *augment.BATCH_FIELDS)}
    return augment.prepare(fields, img_size)
