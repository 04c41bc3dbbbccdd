"""What an ingest run is asked to do: ``IngestConfig`` (the ``ofa ingest`` options and ``--config`` keys)
and the chip parameters it hands the item tasks (``ChipOptions``), each default written once here.
Light to import: the ``ofa`` command builds its options from these fields at start-up."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ofa.ingest.search import SearchParams
from ofa.ingest.dataset.shard_writer import SHARD_MAX_BYTES, SHARD_MAX_SAMPLES


@dataclass(frozen=True)
class ChipOptions:
    """Chip grid and filter thresholds (fractions of the chip's pixels)."""

    chip_size: int = 256
    max_nodata: float = 0.1
    max_cloud: float = 0.2
    max_sar_border: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"chip_size": self.chip_size, "max_nodata_fraction": self.max_nodata,
                "max_cloud_fraction": self.max_cloud, "max_sar_border_fraction": self.max_sar_border}


@dataclass
class IngestConfig:
    """Everything an ingest run needs; the CLI and ``--config FILE.yaml`` fill the same fields."""

    catalog: str
    collections: list[str]
    out: str
    bbox: list[float] | None = None
    intersects: dict | None = None
    datetime: str | None = None
    max_cloud: float | None = None          # percent, item-level eo:cloud_cover (client-side)
    max_items: int | None = None
    chip_size: int = ChipOptions.chip_size
    bands: list[str] | None = None
    storage_options: dict | None = None
    workers: int | None = None
    scheduler: str | None = None
    strict: bool = False
    progress: bool = True
    max_nodata_fraction: float = ChipOptions.max_nodata    # chip-level thresholds
    max_cloud_fraction: float = ChipOptions.max_cloud
    max_sar_border_fraction: float = ChipOptions.max_sar_border
    shard_max_samples: int = SHARD_MAX_SAMPLES
    shard_max_bytes: int = SHARD_MAX_BYTES
    processes: bool = False                 # local cluster: worker threads (False) or processes
    ids: list[str] | None = None            # restrict the search to these items (--from-manifest)
    #: href signing hook (e.g. Planetary Computer SAS tokens): a callable or "module:function";
    #: it gets the clean href and its result is only used to open the file, never recorded
    sign_href: Callable[[str], str] | str | None = field(default=None, repr=False)

    def search_params(self) -> SearchParams:
        return SearchParams(
            collections=tuple(self.collections), bbox=tuple(self.bbox) if self.bbox else None,
            intersects=self.intersects, datetime=self.datetime, max_cloud=self.max_cloud, max_items=self.max_items,
        )

    def chip_options(self) -> ChipOptions:
        return ChipOptions(self.chip_size, self.max_nodata_fraction, self.max_cloud_fraction, self.max_sar_border_fraction)

    def chips_record(self) -> dict[str, Any]:
        return {**self.chip_options().to_dict(), "bands": self.bands,
                "shard_max_samples": self.shard_max_samples, "shard_max_bytes": self.shard_max_bytes}
