"""The fixed plan of an embedding job: every sample of the datasets in one order, cut into regions.

Samples are numbered in the order the manifests give them (datasets in ``--data`` order, sensors by
name, shards in manifest order, samples in shard order), from the manifests' per-shard counts, so
the plan is known before any shard is opened. A region is ``chunk`` consecutive samples (the last one
may be shorter): the unit that is encoded, written once and recorded as done. Regions match the
output's chunks along ``sample``, so two processes never write the same chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ofa.pipeline.data import Counter, Stream, iter_shard
from ofa.pipeline.errors import InputError


class DamagedDataError(InputError):
    """A shard that does not hold what its manifest says (missing, damaged or short)."""


class _FirstDamage(Counter):
    """Counts damage like the loader's counter, but keeps the first cause for the error instead of logging."""

    def __init__(self) -> None:
        super().__init__()
        self.first = ""

    def bad(self, what: str, exc: BaseException) -> None:
        self.skipped += 1
        self.first = self.first or f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class ShardSpan:
    """One shard's place in the plan: samples ``[start, start + count)``."""

    stream: int  # index into Plan.streams
    shard: int   # index into that stream's shards
    start: int
    count: int


@dataclass(frozen=True)
class Region:
    """Samples ``[start, stop)``, written as one chunk of every output array."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Plan:
    streams: list[Stream]
    spans: list[ShardSpan]
    regions: list[Region]

    @property
    def total(self) -> int:
        return self.regions[-1].stop if self.regions else 0


def make_plan(streams: list[Stream], chunk: int) -> Plan:
    """Number every sample of ``streams`` and cut them into regions of ``chunk`` samples."""
    if chunk <= 0:
        raise ValueError(f"--chunk-size {chunk}: must be positive")
    spans, start = [], 0
    for s, stream in enumerate(streams):
        counts = stream.counts if stream.counts is not None else [None] * len(stream.shards)
        for k, count in enumerate(counts):
            if count is None:
                raise ValueError(f"{stream.dataset}: its manifest gives no sample count for {stream.shards[k]}")
            spans.append(ShardSpan(s, k, start, int(count)))
            start += int(count)
    regions = [Region(i, a, min(a + chunk, start)) for i, a in enumerate(range(0, start, chunk))]
    return Plan(streams, spans, regions)


def region_samples(plan: Plan, region: Region, storage_options: dict[str, Any] | None
                   ) -> Iterator[tuple[Stream, dict]]:
    """``(stream, raw sample)`` for each sample of ``region``, in plan order.

    A shard that overlaps the region is read from its start (tar shards stream front to back);
    a shard that is damaged or holds fewer samples than its manifest count stops the job: an
    embedding store has a row for every sample the manifest promises."""
    for span in plan.spans:
        if span.start + span.count <= region.start or span.start >= region.stop:
            continue
        stream = plan.streams[span.stream]
        url = stream.shards[span.shard]
        first, last = max(region.start - span.start, 0), min(region.stop - span.start, span.count)
        counter, seen = _FirstDamage(), 0
        for i, sample in enumerate(iter_shard(url, storage_options, counter)):
            seen = i + 1
            if i >= last:
                break
            if i >= first:
                yield stream, sample
        if counter.skipped or seen < last:
            cause = f" ({counter.first})" if counter.first else ""
            raise DamagedDataError(f"{url}: damaged or short: read {seen} of the {span.count} samples its manifest "
                                   f"counts{cause}; check it with `ofa manifest verify {stream.dataset}`")
