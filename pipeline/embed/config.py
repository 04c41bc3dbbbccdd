"""What ``ofa embed`` is asked to do (``EmbedConfig``), light to import: the ``ofa`` command builds its flags,
``--config`` keys and ``OFA_EMBED__*`` environment variables from these fields (``ofa.pipeline.options``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DESCRIPTION = """\
Embed every sample of one or more datasets with a trained checkpoint: each sample is normalised as in
training (the manifest's statistics), resized to the model's input size, encoded without masking and
pooled to one vector. Writes a Zarr store (default) or a GeoParquet file, region by region: a killed
run resumes with the same command, a finished one is left as it is. Several processes (one per GPU):
accelerate launch -m ofa.pipeline.embed [same options]."""


@dataclass
class EmbedConfig:
    """What ``ofa embed`` does."""

    checkpoint: str
    """what training wrote: the run folder (its last checkpoint), a step-NNNNNNNN folder, or its model/ folder"""
    data: list[str] = field(metadata={"repeat": True, "metavar": "URL"})
    """dataset URL (folder, file:// or s3://); repeat for several"""
    out: str
    """output: a folder or s3://.../name.zarr (zarr), a .parquet path or URL (geoparquet)"""
    format: Literal["zarr", "geoparquet"] | None = None
    """output layout (null: geoparquet if --out ends in .parquet, else zarr)"""
    pool: Literal["mean", "cls"] = "mean"
    """token pooling (OFA-Net has no class token, so cls is refused)"""
    batch_size: int = 64
    """samples per forward pass"""
    chunk_size: int = 1024
    """samples per region: the unit written, resumed and split across processes, and the output chunk along
    sample"""
    storage_options: dict[str, Any] | None = field(default=None, metadata={"metavar": "JSON"})
    """fsspec options for s3:// URLs, e.g. '{"endpoint_url": "http://127.0.0.1:9000"}'"""
    cpu: bool = False
    """run on CPU even if a GPU is present"""
    preview: str | None = field(default="", metadata={"metavar": "PNG"})
    """where the PCA map goes ('': OUT.preview.png; 'none' or null: no map)"""
    progress: bool = True
    """progress bar"""
    threads: int | None = None
    """torch's CPU threads (OMP_NUM_THREADS, when set, wins; null: the CPUs this process may use)"""

    def __post_init__(self) -> None:
        if self.format is None:
            self.format = "geoparquet" if self.out.rstrip("/").endswith(".parquet") else "zarr"
        if self.preview == "none":
            self.preview = None
