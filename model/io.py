"""Checkpoints: ``model.safetensors`` + ``config.json`` in a folder, through fsspec (local, file://, s3://).

``config.json`` holds the ``ModelConfig`` and, for checkpoints written by training, what a user needs
to feed the model a new scene: per sensor the band names in channel order, wavelengths, GSD, the
scale/offset and per-band mean/std the training data was normalised with (``sensors``), and where
that data came from (``training``: dataset URLs and manifest sha256s)."""
from __future__ import annotations

import json
from typing import Any

import fsspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .checkpoints import resolve_checkpoint
from .config import ModelConfig
from .errors import CheckpointError
from .mae import MaskedAutoencoder

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "ofa-model"
FORMAT_VERSION = 1


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CheckpointError", "from_pretrained", "load_config", "model_url",
           "normalise", "read_info", "save_pretrained"]


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def _read(url: str, storage_options: dict[str, Any] | None, name: str, hint: str = "") -> bytes:
    """The bytes of ``url/name``; a missing file is a ``CheckpointError`` (``hint`` appended)."""
    fs, root = _fs(url, storage_options)
    try:
        with fs.open(f"{root}/{name}", "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{url}: no {name}{hint}") from None


#: keys of config.json that ``save_pretrained`` owns; ``metadata`` may add others (``sensors``, ``training``)
RESERVED_KEYS = ("format", "format_version", "config")


def save_pretrained(mae: MaskedAutoencoder, url: str, storage_options: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write ``url/model.safetensors`` (weights) and ``url/config.json`` (ModelConfig plus ``metadata``,
    e.g. ``{"sensors": {...}, "training": {...}}``: JSON-safe values under keys other than ``RESERVED_KEYS``)."""
    clash = sorted(set(metadata or {}) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"save_pretrained: metadata may not set {clash}")
    fs, root = _fs(url, storage_options)
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in mae.state_dict().items()}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    with fs.open(f"{root}/{WEIGHTS_NAME}", "wb") as f:
        f.write(st_save(tensors, metadata=header))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": mae.config.to_dict(), **(metadata or {})}
    with fs.open(f"{root}/{CONFIG_NAME}", "wb") as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True).encode())


def load_config(url: str, storage_options: dict[str, Any] | None = None) -> ModelConfig:
    """Read ``url/config.json`` into a ModelConfig."""
    doc = read_info(url, storage_options)
    try:
        return ModelConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{url}/{CONFIG_NAME}: bad config ({exc})") from None


def read_info(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``url/config.json`` (``config``, and ``sensors``/``training`` when training wrote them)."""
    raw = _read(url, storage_options, CONFIG_NAME, " (is this a folder written by save_pretrained?)")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{url}/{CONFIG_NAME}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "config" not in doc:
        raise CheckpointError(f"{url}/{CONFIG_NAME}: not an ofa model config")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{url}/{CONFIG_NAME}: format_version {doc.get('format_version')!r} unknown (supported: {FORMAT_VERSION})"
        )
    return doc


def model_url(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The ``save_pretrained`` folder behind ``url``: itself, its ``model/`` (a training step folder), or a
    training run folder's last complete checkpoint (``checkpoints.resolve_checkpoint``)."""
    return resolve_checkpoint(url, storage_options)


def normalise(pixels: torch.Tensor, sensor: dict[str, Any]) -> torch.Tensor:
    """Raw pixels [..., C, H, W] (native dtype) -> model input, with one sensor entry of a checkpoint's
    ``sensors``: ``(raw * scale + offset - mean) / std`` per band; no-data and non-finite pixels become 0."""
    c = pixels.shape[-3]
    if len(sensor["bands"]) != c:
        raise ValueError(f"pixels have {c} channels, the sensor has {len(sensor['bands'])} bands {sensor['bands']}")

    def per_band(key: str, default: float) -> torch.Tensor:
        values = [default if v is None else float(v) for v in (sensor.get(key) or [default] * c)]
        return torch.tensor(values, dtype=torch.float64).reshape(c, 1, 1)

    raw = pixels.to(torch.float64)
    x = (raw * per_band("scale", 1.0) + per_band("offset", 0.0) - per_band("mean", 0.0)) / per_band("std", 1.0)
    nodata = per_band("nodata", float("nan"))
    invalid = ~torch.isfinite(x) | (raw == nodata)
    return x.masked_fill(invalid, 0.0).to(torch.float32)


def from_pretrained(url: str, storage_options: dict[str, Any] | None = None) -> MaskedAutoencoder:
    """Rebuild a model saved by ``save_pretrained``; safetensors only, nothing is unpickled."""
    config = load_config(url, storage_options)
    raw = _read(url, storage_options, WEIGHTS_NAME)
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{url}/{WEIGHTS_NAME}: corrupt safetensors file ({exc})") from None
    mae = MaskedAutoencoder(config)
    missing, unexpected = mae.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{url}/{WEIGHTS_NAME}: weights do not match config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return mae
