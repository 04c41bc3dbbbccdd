"""Which raw samples a slot reads, in which order: epochs of shard permutations, a shuffle buffer, and the
resume that replays the shuffle over sample positions instead of reading them (``fast_forward``)."""
from __future__ import annotations

import itertools
import logging
import random
import zlib
from typing import Any, Iterator

from ofa.pipeline.data.streams import LoaderConfig, Stream
from ofa.ingest.dataset.shard_reader import Counter, iter_shard

log = logging.getLogger("ofa.pipeline.data")

#: where a raw sample comes from: (epoch, position in the slot's shard order, shard index, sample index in the shard)
Position = tuple[int, int, int, int]


def seed_of(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (no Python hash randomisation)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def raw_samples(stream: Stream, slot: int, slots: int, seed: int, resampled: bool, cfg: LoaderConfig,
                counter: Counter, read: Any = None, after: Position | None = None) -> Iterator[tuple[Position, Any]]:
    """Infinite ``(position, raw sample)`` of one stream for one slot, epoch after epoch.

    ``read(shard index)`` gives a shard's samples (default: read the shard); ``after``: start right
    after that position (shards before it are not opened)."""
    if read is None:
        def read(k: int) -> Iterator[dict]:
            return iter_shard(stream.shards[k], cfg.storage_options, counter)
    by_shard = len(stream.shards) >= slots
    epoch = after[0] if after else 0
    while True:
        rng = random.Random(seed_of(seed, stream.dataset, stream.sensor, "epoch", epoch))
        if resampled:
            order = [rng.randrange(len(stream.shards)) for _ in stream.shards]
        else:
            order = list(range(len(stream.shards)))
            rng.shuffle(order)
        mine = order[slot::slots] if by_shard else order
        resumed = after is not None and after[0] == epoch
        got = int(resumed)  # the sample at `after` was read in this epoch
        for j, k in enumerate(mine):
            if resumed and j < after[1]:
                continue
            first = after[3] + 1 if resumed and j == after[1] else 0
            for i, sample in enumerate(read(k)):
                if i >= first and (by_shard or i % slots == slot):
                    got += 1
                    yield (epoch, j, k, i), sample
        if got == 0 and not by_shard:
            raise RuntimeError(f"{stream.dataset}: no readable samples for sensor {stream.sensor!r}")
        if got == 0:  # this slot's shards are all damaged: share every shard by sample index instead
            log.warning("%s/%s: slot %d read no samples from its shards; splitting by sample from now on",
                        stream.dataset, stream.sensor, slot)
            by_shard = False
        epoch += 1


class Shuffle:
    """A shuffle buffer of ``size`` samples over an infinite ``(position, sample)`` iterator: each output
    is a random buffered sample, replaced by the next input. Its state (buffer, RNG, input) can be
    rebuilt elsewhere, which is how a resumed loader skips without reading (``fast_forward``)."""

    def __init__(self, items: Iterator[tuple[Position, Any]], size: int, rng: random.Random) -> None:
        self.items, self.size, self.rng = items, max(1, size), rng
        self.buf: list[tuple[Position, Any]] = []
        self.last: Position | None = None   # position of the last input taken

    def take(self) -> tuple[Position, Any]:
        """The next input (not through the buffer)."""
        item = next(self.items)
        self.last = item[0]
        return item

    def __iter__(self) -> "Shuffle":
        return self

    def __next__(self) -> Any:
        while len(self.buf) < self.size:
            self.buf.append(self.take())
        i = self.rng.randrange(len(self.buf))
        out = self.buf[i]
        self.buf[i] = self.take()
        return out[1]


def _read_wanted(stream: Stream, wanted: dict[int, set[int]], cfg: LoaderConfig,
                 counter: Counter) -> dict[tuple[int, int], Any]:
    """``{(shard, sample index): raw sample}`` for the wanted sample indices of each shard; a shard is read
    only up to the last sample wanted from it."""
    found: dict[tuple[int, int], Any] = {}
    for k, indices in sorted(wanted.items()):
        left = len(indices)
        for i, sample in enumerate(iter_shard(stream.shards[k], cfg.storage_options, counter)):
            if i in indices:
                found[k, i] = sample
                left -= 1
                if not left:
                    break
    return found


def fast_forward(stream: Stream, slot: int, slots: int, cfg: LoaderConfig, counter: Counter, rng: random.Random,
                 n: int) -> Shuffle:
    """The shuffled samples of one stream for one slot after ``n`` outputs, as if they had been read.

    The shuffle is replayed over sample positions (per-shard counts from the manifest), not bytes;
    then only the samples left in the buffer are read, and the stream goes on after the last input
    taken. Without per-shard counts, the samples are read and dropped (the same result, slower).
    Exact while the shards hold what the manifest counts; where damage cut a shard short (the loader
    counts it), the resumed order can differ from an uninterrupted run's."""
    def shuffle(**kwargs: Any) -> Shuffle:
        return Shuffle(raw_samples(stream, slot, slots, cfg.seed, cfg.resampled, cfg, counter, **kwargs),
                       cfg.shuffle_buffer, rng)

    if n <= 0 or stream.counts is None or len(stream.counts) != len(stream.shards):
        read_through = shuffle()
        for _ in range(max(0, n)):
            next(read_through)
        return read_through
    ghost = shuffle(read=lambda k: itertools.repeat(None, stream.counts[k]))
    for _ in range(n):
        next(ghost)
    wanted: dict[int, set[int]] = {}
    for (_, _, k, i), _ in ghost.buf:
        wanted.setdefault(k, set()).add(i)
    found = _read_wanted(stream, wanted, cfg, counter)
    real = shuffle(after=ghost.last)
    for pos, _ in ghost.buf:
        if (pos[2], pos[3]) in found:
            real.buf.append((pos, found[pos[2], pos[3]]))
        else:  # the shard no longer holds it (damage): counted by iter_shard; the next input takes its place
            real.buf.append(real.take())
    return real
