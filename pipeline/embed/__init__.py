"""``ofa embed``: a trained backbone turned into one vector per sample, in Zarr or GeoParquet.

Modules: ``plan`` (every sample numbered from the manifests, cut into regions), ``encode`` (decode and
normalise as in training, encode, pool; the checkpoint/dataset fit check), ``footprint`` (chip
polygons in WGS84, WKB), ``zarr_out`` and ``parquet_out`` (the two layouts, written region by region,
resumable), ``preview`` (PCA map), ``job`` (processes, resume, finish), ``cli``.
"""
from .job import EmbedConfig, run_embed

__all__ = ["EmbedConfig", "run_embed"]
