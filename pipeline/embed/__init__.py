"""``ofa embed``: a trained backbone turned into one vector per sample, in Zarr or GeoParquet.

Modules: ``plan`` (every sample numbered from the manifests, cut into regions), ``encode`` (decode and
normalise as in training, encode, pool; the checkpoint/dataset fit check), ``footprint`` (chip
polygons in WGS84, WKB), ``zarr_out`` and ``parquet_out`` (the two layouts, written region by region,
resumable), ``preview`` (PCA map), ``stac_out`` (geo-embeddings attributes; the STAC Collection, Item and
MLM Item written beside the output), ``job`` (processes, resume, finish), ``config`` (the options, light:
``ofa --help`` imports it), ``cli``.

``EmbedConfig`` and ``run_embed`` are loaded on first use, so importing this package does not load torch.
"""
from typing import Any

__all__ = ["EmbedConfig", "run_embed"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
