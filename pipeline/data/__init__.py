"""Streaming loader: WebDataset shards (local, file://, s3://) -> single-sensor normalised batches.

Deterministic for a seed: the shard order, shuffle buffer, sensor choice and augmentation of batch
``i`` depend only on ``(seed, rank, worker, i)``, so a run resumed at batch ``k`` (``skip_batches``)
sees exactly the batches an uninterrupted run sees. Raw bytes are shuffled and only the chosen
samples are decoded; on resume the shuffle is replayed over sample positions (the manifest's
per-shard counts) and only the samples left in the shuffle buffer are read, so skipping costs no
more than one buffer's worth of reads however far into training the run was.

Splitting: each sensor's shards go to ``rank * workers + worker`` slots; a sensor with fewer
shards than slots is split by sample index instead. Streams are infinite: each pass over the
shards is a new epoch (a new shard permutation, or shards drawn with replacement if
``resampled``). Damaged shards/samples are logged, counted (``batch["skipped"]``) and skipped.

Two ways to augment: in the workers (default: float32 batches at ``img_size``), or, with
``device_augment``, only decode in the workers and ship native-dtype pixels (uint16 for
Sentinel-2: half the bytes of float32, before the crop) with per-sample crop parameters;
``to_device`` then normalises, crops, resizes and flips the whole batch on the GPU.

Every batch carries ``valid`` [N, C] (bool): the bands each sample has (meta.json ``band_valid``; all
true for datasets written before it); invalid bands are 0 after normalisation. Each sample is
normalised with the manifest statistics of its own ``quantity`` (see ``ingest.dataset.contract``).

One module per stage, in the order data flows through them: ``streams`` (manifests -> streams),
``ingest.dataset.shard_reader`` (shard bytes -> raw samples), ``sampling`` (which samples, in which order; resume), ``npy``,
``normalise``, ``decode`` (raw sample -> pixels), ``crops``, ``shared`` (the worker's shared-memory
batch), ``device`` (device_augment batches), ``loader`` (batches and the DataLoader).
"""
from ofa.pipeline.data.crops import decode_crop, decode_crop_valid, random_resized_crop
from ofa.pipeline.data.decode import decode, decode_raw, read_sample
from ofa.pipeline.data.device import raw_batch, to_device
from ofa.pipeline.data.loader import ShardBatches, batches, make_loader
from ofa.pipeline.data.normalise import normalise
from ofa.pipeline.data.npy import read_npy
from ofa.pipeline.data.sampling import Position, Shuffle, fast_forward, raw_samples, seed_of
from ofa.pipeline.data.shared import SharedBatch, shared_tensor
from ofa.pipeline.data.streams import LoaderConfig, Stream, band_valid, modalities, read_streams, sample_stats, streams_from
from ofa.ingest.dataset.shard_reader import Counter, iter_shard, iter_tar

__all__ = [
    "Counter", "LoaderConfig", "Position", "ShardBatches", "SharedBatch", "Shuffle", "Stream", "band_valid", "batches",
    "decode", "decode_crop", "decode_crop_valid", "decode_raw", "fast_forward", "iter_shard", "iter_tar", "make_loader", "modalities",
    "normalise", "random_resized_crop", "raw_batch", "raw_samples", "read_npy", "read_sample", "read_streams",
    "sample_stats", "seed_of", "shared_tensor", "streams_from", "to_device",
]
