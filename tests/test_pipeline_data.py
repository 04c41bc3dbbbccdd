"""The streaming loader: splitting, determinism, normalisation, resume position, damaged input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ofa.pipeline.data import LoaderConfig, ShardBatches, batches, decode, make_loader, modalities, read_streams
from pipeline_fixtures import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "data"
    write_dataset(str(root), {"sentinel-2": (4, 6), "naip": (2, 5)}, size=40, seed=1)
    return str(root)


def _take(cfg: LoaderConfig, n: int, workers: int = 0) -> list[dict]:
    it = batches(make_loader(cfg, workers=workers))
    return [next(it) for _ in range(n)]


def test_batches_are_single_sensor_and_shaped(dataset):
    got = _take(LoaderConfig(data=[dataset], batch_size=3, img_size=32, shuffle_buffer=4), 8)
    assert {b["sensor"] for b in got} == {"sentinel-2", "naip"}
    for b in got:
        c = 12 if b["sensor"] == "sentinel-2" else 4
        assert b["pixels"].shape == (3, c, 32, 32) and b["pixels"].dtype == torch.float32
        assert all(k.startswith(b["sensor"]) for k in b["keys"])
    assert [b["index"] for b in got] == list(range(8))
    assert modalities(read_streams([dataset])) == {"naip": 4, "sentinel-2": 12}


def test_deterministic_for_a_seed_and_different_across_seeds(dataset):
    a = _take(LoaderConfig(data=[dataset], batch_size=2, img_size=16, seed=3), 5)
    b = _take(LoaderConfig(data=[dataset], batch_size=2, img_size=16, seed=3), 5)
    c = _take(LoaderConfig(data=[dataset], batch_size=2, img_size=16, seed=4), 5)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"])
    assert [x["keys"] for x in a] != [x["keys"] for x in c]


def test_skip_batches_resumes_the_same_stream_with_workers(dataset):
    cfg = dict(data=[dataset], batch_size=2, img_size=16, seed=5, shuffle_buffer=3)
    full = _take(LoaderConfig(**cfg), 7, workers=2)
    resumed = _take(LoaderConfig(**cfg, skip_batches=4), 3, workers=2)
    assert [b["index"] for b in resumed] == [4, 5, 6]
    for x, y in zip(full[4:], resumed):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"])


@pytest.mark.parametrize("resampled", [False, True])
@pytest.mark.parametrize("world,buffer", [(1, 3), (3, 1), (2, 50)])
def test_resume_skips_without_reading_and_gives_the_same_batches(dataset, monkeypatch, resampled, world, buffer):
    """A loader resumed at batch k replays the shuffle over sample positions (manifest counts), reads only
    what is left in the buffer, and yields exactly the batches an uninterrupted one yields from k on: with
    shards split by slot or (3 slots, 2 NAIP shards) by sample, tiny and larger-than-the-data buffers,
    several epochs in, sampled with and without replacement."""
    import ofa.pipeline.data.sampling as sampling

    base = dict(data=[dataset], batch_size=2, img_size=8, seed=7, shuffle_buffer=buffer, resampled=resampled,
                world_size=world, rank=world - 1)
    it = iter(ShardBatches(LoaderConfig(**base)))
    reference = [next(it) for _ in range(36)]
    opened: list[str] = []
    read = sampling.iter_shard
    monkeypatch.setattr(sampling, "iter_shard", lambda url, so, counter: (opened.append(url), read(url, so, counter))[1])

    def resume(skip: int, streams=None) -> tuple[list[dict], int]:
        opened.clear()
        it = iter(ShardBatches(LoaderConfig(**base, skip_batches=skip), streams))
        got = [next(it) for _ in range(skip + 6)][skip:]
        return got, len(opened)

    for skip in (1, 9, 30):
        got, _ = resume(skip)
        assert [b["index"] for b in got] == list(range(skip, skip + 6))
        for x, y in zip(reference[skip:skip + 6], got):
            assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"]), skip
    # far in (60 samples, several epochs of this data), the fast path opens fewer shards than reading through
    _, fast = resume(30)
    slow_streams = read_streams([dataset])
    for s in slow_streams:
        s.counts = None
    got, slow = resume(30, slow_streams)
    assert [b["keys"] for b in got] == [b["keys"] for b in reference[30:36]]
    assert fast < slow, (fast, slow)


def test_ranks_and_workers_split_the_samples(dataset):
    """One pass: each sample goes to exactly one (rank, worker) slot."""
    streams = read_streams([dataset])
    seen: dict[str, int] = {}
    for rank in range(2):
        for worker in range(2):
            # run the worker's stream for sentinel-2 only, by weights
            cfg = LoaderConfig(data=[dataset], batch_size=1, img_size=8, rank=rank, world_size=2,
                               weights={"naip": 0.0, "sentinel-2": 1.0}, shuffle_buffer=1)
            ds = ShardBatches(cfg, streams)

            class Info:  # what DataLoader workers see
                id, num_workers = worker, 2

            import torch.utils.data as tud
            old = tud.get_worker_info
            tud.get_worker_info = lambda: Info
            try:
                it = iter(ds)
                keys = [next(it)["keys"][0] for _ in range(6)]  # 24 samples / 4 slots per epoch
            finally:
                tud.get_worker_info = old
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
    assert len(seen) == 24 and set(seen.values()) == {1}


def test_normalisation_scale_offset_and_nodata(dataset):
    streams = {s.sensor: s for s in read_streams([dataset])}
    s2 = streams["sentinel-2"]
    raw = np.full((12, 4, 4), 1000, dtype=np.uint16)
    raw[:, 0, 0] = 0  # nodata
    import io as _io
    buf = _io.BytesIO()
    np.save(buf, raw)
    meta = {"scale": [1e-4] * 12, "offset": [-0.1] * 12, "nodata": [0] * 12}
    x = decode({"pixels.npy": buf.getvalue(), "meta.json": json.dumps(meta).encode()}, s2)
    expect = (1000 * 1e-4 - 0.1 - s2.mean) / s2.std
    assert torch.allclose(x[:, 1, 1], torch.tensor(expect, dtype=torch.float32), atol=1e-5)
    assert torch.all(x[:, 0, 0] == 0)
    # one whole epoch (a buffer of 1 yields each of the 24 samples once) normalises to mean 0, std 1 per band,
    # with the manifest's statistics (the fixture's sample levels differ, so a wrong scale or offset shows)
    got = _take(LoaderConfig(data=[dataset], batch_size=4, img_size=32, weights={"naip": 0.0, "sentinel-2": 1.0},
                             min_scale=1.0, shuffle_buffer=1), 6)
    assert len({k for b in got for k in b["keys"]}) == 24
    px = torch.cat([b["pixels"] for b in got]).transpose(0, 1).reshape(12, -1)
    assert torch.allclose(px.mean(1), torch.zeros(12), atol=0.05)
    assert torch.allclose(px.std(1), torch.ones(12), atol=0.1)


def test_damaged_shard_and_sample_are_counted_and_skipped(tmp_path, caplog):
    root = tmp_path / "bad"
    manifest = write_dataset(str(root), {"naip": (3, 4)}, size=16)
    first = root / manifest["shards"][0]["path"]
    first.write_bytes(first.read_bytes()[: 700])  # truncated inside the first sample's pixels
    second = root / manifest["shards"][1]["path"]
    data = bytearray(second.read_bytes())
    data[512 + 10: 512 + 20] = b"garbage!!!"  # corrupt the first npy header of shard 1
    second.write_bytes(bytes(data))
    got = _take(LoaderConfig(data=[str(root)], batch_size=2, img_size=8, shuffle_buffer=1), 6)
    assert all(b["pixels"].shape == (2, 4, 8, 8) for b in got)
    assert got[-1]["skipped"] >= 2
    assert "skipping damaged" in caplog.text


def test_device_augment_ships_native_dtype_and_prepares_like_the_workers(dataset):
    from ofa.pipeline import augment
    from ofa.pipeline.data import decode_raw, to_device

    cfg = dict(data=[dataset], batch_size=3, img_size=32, shuffle_buffer=4, weights={"naip": 0.0, "sentinel-2": 1.0})
    raw = _take(LoaderConfig(device_augment=True, **cfg), 3)
    cpu = _take(LoaderConfig(**cfg), 3)
    for r, c in zip(raw, cpu):
        assert r["pixels"].dtype == torch.uint16 and r["pixels"].shape == (3, 12, 40, 40)
        assert r["keys"] == c["keys"]  # same stream, only the place of the pixel work differs
        x = to_device(r, "cpu", 32)
        assert x.shape == c["pixels"].shape and x.dtype == torch.float32 and torch.isfinite(x).all()
        # both paths agree on the per-band level of the crops (resampling kernels differ slightly)
        assert torch.allclose(x.mean((2, 3)), c["pixels"].mean((2, 3)), atol=0.25)
    # the whole chip at its own size, unflipped, is exactly the normalised chip (nodata corner -> 0)
    streams = {s.sensor: s for s in read_streams([dataset])}
    sample = next(iter(ShardBatches(LoaderConfig(data=[dataset], batch_size=1, img_size=40, min_scale=1.0,
                                                 shuffle_buffer=1, weights={"naip": 0.0, "sentinel-2": 1.0},
                                                 device_augment=True))))
    full = dict(sample, params=torch.tensor([[0.0, 0.0, 40.0, 40.0, 0.0, 0.0]]))
    x = augment.prepare(full, 40)
    px = sample["pixels"][0].numpy()
    import io as _io
    buf = _io.BytesIO()
    np.save(buf, px)
    meta = {"scale": sample["scale"][0].tolist(), "offset": sample["offset"][0].tolist(), "nodata": [0] * 12}
    ref = decode({"pixels.npy": buf.getvalue(), "meta.json": json.dumps(meta).encode()}, streams["sentinel-2"])
    assert torch.allclose(x[0], ref, atol=1e-4) and torch.all(x[0, :, 0, 0] == 0)
    flipped = augment.prepare(dict(full, params=torch.tensor([[0.0, 0.0, 40.0, 40.0, 1.0, 0.0]])), 40)
    assert torch.allclose(flipped[0], ref.flip(-1), atol=1e-4)
    _, consts = decode_raw({"pixels.npy": buf.getvalue(), "meta.json": json.dumps({"nodata": 0}).encode()},
                           streams["sentinel-2"])
    assert consts[3] == [1.0] * 12 and consts[0] == [1.0] * 12  # scalar nodata, default scale


def test_decode_crop_equals_decode_then_crop(dataset):
    """The worker fast path (crop/flip raw pixels first) gives what normalise-then-crop gives."""
    import random

    from ofa.pipeline.data import decode_crop, iter_shard, random_resized_crop
    from ofa.pipeline.data import Counter

    s2 = next(s for s in read_streams([dataset]) if s.sensor == "sentinel-2")
    samples = list(iter_shard(s2.shards[0], None, Counter()))[:4]
    for seed, sample in enumerate(samples):
        for size in (16, 32, 64):
            fast = decode_crop(sample, s2, random.Random(seed), size)
            slow = random_resized_crop(decode(sample, s2), size, random.Random(seed))
            assert fast.shape == slow.shape == (12, size, size)
            assert torch.allclose(fast, slow, atol=1e-4), (seed, size)


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_iter_tar_reads_what_tarfile_reads(tmp_path, fmt):
    import io as _io
    import tarfile

    from ofa.pipeline.data import iter_tar

    formats = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
    names = ["a.pixels.npy", "a.meta.json", ("k" * 60 if fmt == "ustar" else "k" * 150) + ".meta.json", "__meta__.json"]
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=formats[fmt]) as tar:
        for i, name in enumerate(names):
            data = bytes(range(i + 1)) * (300 * i + 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, _io.BytesIO(data))
    got = [(m["fname"], m["data"]) for m in iter_tar(_io.BytesIO(buf.getvalue()), "mem")]
    with tarfile.open(fileobj=_io.BytesIO(buf.getvalue())) as tar:
        want = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if not m.name.startswith("__")]
    assert got == want and len(got) == 3
    with pytest.raises(tarfile.ReadError, match="truncated"):
        list(iter_tar(_io.BytesIO(buf.getvalue()[:1500]), "mem"))


def test_worker_batches_equal_in_process_batches(dataset):
    """One worker sees the same stream as the main process: its shared-memory batches hold the same tensors."""
    cfg = LoaderConfig(data=[dataset], batch_size=3, img_size=24, seed=7, shuffle_buffer=4)
    for x, y in zip(_take(cfg, 4), _take(cfg, 4, workers=1)):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"])
        assert y["pixels"].is_shared()


def test_normalise_matches_a_plain_reference(dataset):
    """Scale/offset, per-band statistics and nodata/non-finite -> 0, against float64 arithmetic; the cached
    per-band constants follow each sample's meta (two metas alternate on one stream)."""
    from ofa.pipeline.data import normalise

    s2 = next(s for s in read_streams([dataset]) if s.sensor == "sentinel-2")
    rng = np.random.default_rng(0)
    metas = [{"scale": [1e-4] * 12, "offset": [-0.1] * 12, "nodata": [0] * 6 + [None] * 5 + [7]},
             {"scale": [1e-4] * 12, "offset": [0.3] * 12, "nodata": [0] * 6 + [None] * 5 + [7]},
             {"scale": [2e-4] * 12, "offset": None, "nodata": 7}, {"nodata": None}]
    for dtype, meta in [(d, m) for d in ("uint16", "uint8", "float32") for m in metas] * 2:
        raw = rng.integers(0, 12, (12, 9, 11)).astype(dtype)
        if dtype == "float32":
            raw[0, 0, :3] = [np.nan, np.inf, -np.inf]
        view = raw[:, 1:8, ::-1]  # the loader hands in flipped crops
        c = 12
        scale = np.asarray(meta.get("scale") or [1.0] * c, np.float64)[:, None, None]
        offset = np.asarray(meta.get("offset") or [0.0] * c, np.float64)[:, None, None]
        want = (view * scale + offset - s2.mean[:, None, None]) / s2.std[:, None, None]
        nd = meta["nodata"] if isinstance(meta["nodata"], list) else [meta["nodata"]] * c
        for b, v in enumerate(nd):
            if v is not None:
                want[b][view[b] == v] = 0
        want[~np.isfinite(want)] = 0
        got = normalise(view, meta, s2)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{dtype} {meta}")


def test_npy_bytes_decode_like_np_load():
    import io as _io

    from ofa.pipeline.data import read_npy

    for arr in [np.arange(24, dtype="<u2").reshape(2, 3, 4), np.asfortranarray(np.ones((3, 5), ">f4") * 2.5),
                np.arange(6, dtype=np.int8)[::2]]:
        for version in [(1, 0), (2, 0)]:
            buf = _io.BytesIO()
            np.lib.format.write_array(buf, arr, version=version)
            want = np.load(_io.BytesIO(buf.getvalue()), allow_pickle=False)
            for got in (read_npy(buf.getvalue()), read_npy(bytearray(buf.getvalue()))):
                assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
                assert not got.flags.writeable
            with pytest.raises(ValueError):
                read_npy(buf.getvalue()[:-1])  # truncated
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        read_npy(buf.getvalue())



@pytest.mark.parametrize("missing", ["none", "fd", "both"])
def test_shared_batch_falls_back_to_public_torch_api(dataset, monkeypatch, missing):
    """Where a torch version lacks the private shared-memory APIs (allocation, file descriptor), the
    worker's batch goes through ``Tensor.share_memory_`` and plain writes: still shared, same values."""
    import ofa.pipeline.data.shared as shared

    def gone(*args, **kwargs):
        raise AttributeError("'TypedStorage' object has no attribute '_new_shared'")

    if missing in ("fd", "both"):
        monkeypatch.setattr(shared, "_private_fd", gone)
    if missing == "both":
        monkeypatch.setattr(shared, "_private_shared", gone)
    tensor, fd = shared.shared_tensor((2, 3, 4, 4))
    assert tensor.is_shared() and tensor.shape == (2, 3, 4, 4) and tensor.dtype == torch.float32
    assert (fd is None) == (missing != "none" or torch.multiprocessing.get_sharing_strategy() != "file_descriptor")
    batch, plain = shared.SharedBatch((2, 3, 4, 4), shared=True), shared.SharedBatch((2, 3, 4, 4), shared=False)
    for i in range(2):
        x = torch.arange(48, dtype=torch.float32).reshape(3, 4, 4) * (i + 1) - 7.5
        batch[i] = x.flip(-1)  # a non-contiguous sample
        plain[i] = x.flip(-1)
    assert torch.equal(batch.tensor, plain.tensor)
    with pytest.raises(ValueError, match="shape"):
        batch[0] = torch.zeros(3, 4, 5)
    # through a real DataLoader worker (forked: the patch holds there), the batches equal in-process ones
    cfg = LoaderConfig(data=[dataset], batch_size=2, img_size=16, seed=3, shuffle_buffer=4)
    for x, y in zip(_take(cfg, 2), _take(cfg, 2, workers=1)):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"]) and y["pixels"].is_shared()
