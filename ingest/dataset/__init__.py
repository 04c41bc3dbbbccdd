"""The dataset format in one place, imported by ``ingest`` (which writes it) and ``pipeline`` (which reads it):
``contract`` (layout, keys, versions, checksums), ``shard_writer`` (deterministic tar shards, atomic writes),
``shard_reader`` (tar shards back into samples) and ``manifest`` (read, verify, summarise manifest.json)."""
