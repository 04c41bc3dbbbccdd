"""Benchmark: how long a resumed loader takes to reach its data position, against reading through to it.

A dataset of ``--shards`` shards of ``--per-shard`` small samples is written to a temporary folder;
``ShardBatches`` is then resumed at each of ``--skips`` batches, twice: with the manifest's per-shard
counts (the loader replays the shuffle over sample positions and reads only what is left in the
buffer) and without them (the baseline: every skipped sample is read and dropped). Both must give
the same first batch; the script prints the time to that batch, the shards opened, and the ratio.

    python bench/bench_resume.py
    python bench/bench_resume.py --skips 0 1000 10000 --shuffle-buffer 1000
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resume(root: str, skip: int, args: argparse.Namespace, counts: bool, opened: list[str]) -> tuple[float, dict]:
    """Seconds to the first real batch of a loader resumed at ``skip``, and that batch."""
    from ofa.pipeline.data import LoaderConfig, ShardBatches, read_streams

    streams = read_streams([root])
    if not counts:
        for s in streams:
            s.counts = None
    opened.clear()
    t = time.perf_counter()
    it = iter(ShardBatches(LoaderConfig(data=[root], batch_size=args.batch_size, img_size=32,
                                        shuffle_buffer=args.shuffle_buffer, skip_batches=skip), streams))
    batch = next(b for b in it if not b.get("skip"))
    return time.perf_counter() - t, batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--per-shard", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="sample side in pixels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument("--skips", type=int, nargs="+", default=[100, 1000, 5000], help="batches to skip")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests"))
    import ofa.pipeline.data.sampling as sampling
    from pipeline_fixtures import write_dataset

    work = Path(tempfile.mkdtemp(prefix="ofa-bench-resume-"))
    opened: list[str] = []
    read = sampling.iter_shard
    sampling.iter_shard = lambda url, so, counter: (opened.append(url), read(url, so, counter))[1]
    rows = []
    try:
        root = str(work / "dataset")
        write_dataset(root, {"sentinel-2": (args.shards, args.per_shard)}, size=args.size, seed=0)
        for skip in args.skips:
            fast_s, fast_batch = resume(root, skip, args, True, opened)
            fast_opened = len(opened)
            slow_s, slow_batch = resume(root, skip, args, False, opened)
            assert fast_batch["keys"] == slow_batch["keys"], "the two resumes disagree"
            rows.append({"batches_skipped": skip, "samples_skipped": skip * args.batch_size,
                         "fast_s": round(fast_s, 3), "fast_shards_opened": fast_opened,
                         "read_through_s": round(slow_s, 3), "read_through_shards_opened": len(opened),
                         "ratio": round(slow_s / fast_s, 1)})
            print(f"skip {skip} batches: positions replayed {fast_s:.2f} s ({fast_opened} shard opens), "
                  f"reading through {slow_s:.2f} s ({len(opened)}): {slow_s / fast_s:.1f}x", flush=True)
    finally:
        sampling.iter_shard = read
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"shards": args.shards, "per_shard": args.per_shard, "batch_size": args.batch_size,
                      "shuffle_buffer": args.shuffle_buffer, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
