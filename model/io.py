"""Checkpoints: ``model.safetensors`` + ``config.json`` in a folder, through fsspec (local, file://, s3://)."""
from __future__ import annotations

import json
from typing import Any

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ModelConfig
from .mae import MaskedAutoencoder

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "ofa-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or not made by ``save_pretrained``."""


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def save_pretrained(mae: MaskedAutoencoder, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``url/model.safetensors`` (weights) and ``url/config.json`` (ModelConfig)."""
    fs, root = _fs(url, storage_options)
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in mae.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    with fs.open(f"{root}/{WEIGHTS_NAME}", "wb") as f:
        f.write(st_save(tensors, metadata=metadata))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": mae.config.to_dict()}
    with fs.open(f"{root}/{CONFIG_NAME}", "wb") as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True).encode())


def load_config(url: str, storage_options: dict[str, Any] | None = None) -> ModelConfig:
    """Read ``url/config.json`` into a ModelConfig."""
    fs, root = _fs(url, storage_options)
    path = f"{root}/{CONFIG_NAME}"
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{url}: no {CONFIG_NAME} (is this a folder written by save_pretrained?)") from None
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
    try:
        return ModelConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{url}/{CONFIG_NAME}: bad config ({exc})") from None


def from_pretrained(url: str, storage_options: dict[str, Any] | None = None) -> MaskedAutoencoder:
    """Rebuild a model saved by ``save_pretrained``; safetensors only, nothing is unpickled."""
    config = load_config(url, storage_options)
    fs, root = _fs(url, storage_options)
    path = f"{root}/{WEIGHTS_NAME}"
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{url}: no {WEIGHTS_NAME}") from None
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
