"""``ofa embed`` on the real local S3 server: the demo catalog ingested to s3://, a tiny MAE trained on it,
then Zarr and GeoParquet written to s3:// and read back with xarray / pyarrow (and GeoPandas / DuckDB
where installed). SIGKILLed runs resume to the same bytes; misfit checkpoints are refused."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import s3fs

from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
from ofa.infra.localstack import S3Server, s3_server, stac_server
from ofa.ingest.job import IngestConfig, run_ingest
from ofa.pipeline.embed import EmbedConfig, run_embed

BUCKET = "ofa-embed"
#: runs ``ofa`` with embed SIGKILLing itself at a named point
KILL = Path(__file__).parent / "embed_kill.py"
OPTIONS = dict(chunk_size=16, batch_size=8, cpu=True, progress=False)


@dataclass
class Demo:
    s3: S3Server
    fs: s3fs.S3FileSystem
    dataset: str
    manifest: dict
    metas: dict[str, dict]   # sample key -> meta.json, in manifest order
    train: Path
    zarr: str                # the reference store (written once, in-process)

    @property
    def so(self) -> dict:
        return self.s3.storage_options


def _metas(fs: s3fs.S3FileSystem, dataset: str, manifest: dict) -> dict[str, dict]:
    out = {}
    for shard in manifest["shards"]:
        with tarfile.open(fileobj=io.BytesIO(fs.cat(f"{dataset[5:]}/{shard['path']}"))) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    out[member.name[: -len(".meta.json")]] = json.loads(tar.extractfile(member).read())
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo catalog ingested into s3://, and the demo's tiny MAE trained on it for a few steps."""
    from ofa.pipeline.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("embed")
    collections, items = write_demo_catalog(root / "catalog")
    with s3_server() as s3:
        dataset = f"{s3.make_bucket(BUCKET)}/dataset"
        with stac_server(collections, items) as url:
            manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=list(DEMO_COLLECTIONS), out=dataset,
                                               storage_options=s3.storage_options, chip_size=128, workers=1,
                                               progress=False))
        train(TrainConfig(data=[dataset], size="tiny", steps=20, batch_size=8, img_size=32, patch_size=8, lr=0.05,
                          out=str(root / "train"), save_every=20, cpu=True, tensorboard=False,
                          storage_options=s3.storage_options))
        fs = s3fs.S3FileSystem(**s3.storage_options)
        ref = f"s3://{BUCKET}/ref.zarr"
        run_embed(EmbedConfig(checkpoint=str(root / "train"), data=[dataset], out=ref,
                              storage_options=s3.storage_options, **OPTIONS))
        yield Demo(s3, fs, dataset, manifest, _metas(fs, dataset, manifest), root / "train", ref)


def _objects(fs: s3fs.S3FileSystem, url: str) -> dict[str, str]:
    """Relative path -> sha256 of every object under ``url``."""
    root = url[5:].rstrip("/")
    fs.invalidate_cache()
    return {p[len(root) + 1:]: hashlib.sha256(fs.cat(p)).hexdigest() for p in fs.find(root)}


def _cli(demo: Demo, out: str, *extra: str, kill_at: str | None = None, launch: list[str] | None = None
         ) -> subprocess.CompletedProcess:
    args = ["--checkpoint", str(demo.train), "--data", demo.dataset, "--out", out, "--chunk-size", "16",
            "--batch-size", "8", "--cpu", "--no-progress", *extra]
    env = {**os.environ, **demo.s3.env, "OMP_NUM_THREADS": "1"}
    ofa = [sys.executable, str(KILL), kill_at] if kill_at else [sys.executable, "-m", "ofa.pipeline.cli"]
    cmd = (launch or [*ofa, "embed"]) + args
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_zarr_on_s3_reads_back_with_xarray(demo):
    import xarray as xr

    ds = xr.open_zarr(demo.zarr, storage_options=demo.so)
    kept = demo.manifest["counts"]["kept"]
    assert ds.sizes["sample"] == kept == len(demo.metas) == sum(s["count"] for s in demo.manifest["shards"])
    assert list(ds["sample"].values) == list(demo.metas)
    assert ds["embedding"].dtype == np.float32 and ds["embedding"].dims == ("sample", "feature")
    assert ds.sizes["feature"] == 192 and np.isfinite(ds["embedding"].values).all()
    assert ds["embedding"].encoding["chunks"] == (16, 192) and ds["bbox"].encoding["chunks"] == (16, 4)
    metas = list(demo.metas.values())
    np.testing.assert_array_equal(ds["bbox"].values, [m["bbox"] for m in metas])
    np.testing.assert_array_equal(ds["transform"].values, [m["transform"] for m in metas])
    assert list(ds["crs"].values) == [m["crs"] for m in metas]
    for name in ("item_id", "collection", "sensor"):
        assert list(ds[name].values) == [m[name] for m in metas], name
    assert ds["datetime"].dtype == np.dtype("datetime64[ns]")
    assert list(ds["datetime"].values) == [np.datetime64(m["datetime"].replace("Z", ""), "ns") for m in metas]
    assert list(ds["corner"].values) == ["west", "south", "east", "north"]
    manifest_sha = hashlib.sha256(demo.fs.cat(f"{demo.dataset[5:]}/manifest.json")).hexdigest()
    assert json.loads(ds.attrs["manifests_sha256"]) == {demo.dataset: manifest_sha}
    assert json.loads(ds.attrs["model_config"])["modalities"]["sentinel-2"] == 12
    assert ds.attrs["checkpoint"] == str(demo.train) and ds.attrs["model_dir"].endswith("step-00000020/model")
    assert json.loads(ds.attrs["software"])["ofa"] and ds.attrs["ofa_embed_status"] == "complete"
    assert "_ofa_progress" not in ds.variables
    png = demo.fs.cat(f"{BUCKET}/ref.zarr.preview.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_embedding_is_the_encoder_on_the_training_normalisation(demo):
    """One sample by hand: the loader's decode (manifest statistics), whole chip resized, encode, mean pool."""
    import torch
    import torch.nn.functional as F
    import xarray as xr

    from ofa.model import from_pretrained
    from ofa.pipeline.data import decode, iter_shard, read_streams, Counter

    stream = next(s for s in read_streams([demo.dataset], demo.so) if s.sensor == "sentinel-2")
    sample = next(iter_shard(stream.shards[0], demo.so, Counter()))
    x = F.interpolate(decode(sample, stream)[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    model = from_pretrained(str(demo.train / "checkpoints" / "step-00000020" / "model")).eval()
    with torch.no_grad():
        _, pooled = model.encode(x, modality="sentinel-2")
    stored = xr.open_zarr(demo.zarr, storage_options=demo.so)["embedding"].sel(sample=sample["__key__"]).values
    np.testing.assert_allclose(stored, pooled[0].numpy(), rtol=1e-4, atol=1e-5)


def test_rerun_of_a_finished_job_does_nothing(demo, capsys):
    from ofa.pipeline.cli import main

    before = _objects(demo.fs, demo.zarr)
    code = main(["embed", "--checkpoint", str(demo.train), "--data", demo.dataset, "--out", demo.zarr, "--chunk-size",
                 "16", "--batch-size", "8", "--cpu", "--no-progress", "--storage-options", json.dumps(demo.so)])
    out, err = capsys.readouterr()
    assert code == 0 and f"{demo.zarr}: already done (63 samples); nothing to do" in err
    assert json.loads(out.splitlines()[-1])["encoded"] == 0
    assert _objects(demo.fs, demo.zarr) == before


def test_sigkill_then_resume_gives_the_same_store(demo):
    """Killed between a region's chunks and its progress mark, then again mid-finish: the same bytes as an
    uninterrupted run (which also shows a rerun gives bitwise identical embeddings)."""
    out = f"s3://{BUCKET}/killed.zarr"
    killed = _cli(demo, out, kill_at="chunks:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = _objects(demo.fs, out)
    assert any(k.startswith("_ofa_progress/c/") for k in partial) and "embedding/c/3/0" not in partial
    killed = _cli(demo, out, kill_at="finish")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done = _cli(demo, out)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["status"] == "resumed" and summary["encoded"] == 0
    ref = {k: v for k, v in _objects(demo.fs, demo.zarr).items() if not k.endswith(".png")}
    assert _objects(demo.fs, out) == ref


def _parse_wkb(data: bytes) -> np.ndarray:
    order, kind, rings, points = struct.unpack("<BIII", data[:13])
    assert (order, kind, rings, points) == (1, 3, 1, 5) and len(data) == 13 + 80
    return np.frombuffer(data[13:], "<f8").reshape(5, 2)


def test_geoparquet_on_s3_reads_back_with_pyarrow(demo):
    import pyarrow.parquet as pq
    import xarray as xr

    out = f"s3://{BUCKET}/emb.parquet"
    summary = run_embed(EmbedConfig(checkpoint=str(demo.train), data=[demo.dataset], out=out, format="geoparquet", storage_options=demo.so, **OPTIONS))
    assert summary["status"] == "written" and summary["samples"] == 63
    assert not demo.fs.exists(f"{BUCKET}/emb.parquet.parts")
    pf = pq.ParquetFile(demo.fs.open(f"{BUCKET}/emb.parquet"))
    geo = json.loads(pf.schema_arrow.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry" and "crs" not in geo["columns"]["geometry"]
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    tab = pf.read()
    assert tab.num_rows == 63 and pf.num_row_groups == 4
    assert str(tab.schema.field("embedding").type) == "fixed_size_list<element: float>[192]"
    assert tab.column("sample").to_pylist() == list(demo.metas)
    metas = list(demo.metas.values())
    for name in ("item_id", "collection", "sensor"):
        assert tab.column(name).to_pylist() == [m[name] for m in metas]
    boxes = np.array([[b[k] for k in ("xmin", "ymin", "xmax", "ymax")] for b in tab.column("bbox").to_pylist()])
    np.testing.assert_array_equal(boxes, [m["bbox"] for m in metas])
    assert col["bbox"] == [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]
    for wkb, box in zip(tab.column("geometry").to_pylist(), boxes):
        ring = _parse_wkb(wkb)
        assert (ring[0] == ring[-1]).all()
        x, y = ring[:-1, 0], ring[:-1, 1]
        assert (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() + x[-1] * y[0] - x[0] * y[-1] > 0  # counterclockwise
        assert (ring[:, 0] >= box[0] - 1e-9).all() and (ring[:, 0] <= box[2] + 1e-9).all()
        assert (ring[:, 1] >= box[1] - 1e-9).all() and (ring[:, 1] <= box[3] + 1e-9).all()
        assert ring[:, 0].max() - ring[:, 0].min() > 0.5 * (box[2] - box[0])  # a real footprint, not a point
    emb = tab.column("embedding").combine_chunks().flatten().to_numpy().reshape(63, 192)
    same = xr.open_zarr(demo.zarr, storage_options=demo.so)["embedding"].values
    np.testing.assert_array_equal(emb, same)  # same regions and batches: the same bits in both layouts
    assert [str(t) for t in tab.column("datetime").to_pylist()][0].endswith("+00:00")

    killed = f"s3://{BUCKET}/killed.parquet"
    proc = _cli(demo, killed, "--format", "geoparquet", kill_at="chunks:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(demo.fs.ls(f"{BUCKET}/killed.parquet.parts")) == 3  # _job.json + two finished parts
    proc = _cli(demo, killed, "--format", "geoparquet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["encoded"] == 63 - 2 * 16
    assert demo.fs.cat(f"{BUCKET}/killed.parquet") == demo.fs.cat(f"{BUCKET}/emb.parquet")
    again = run_embed(EmbedConfig(checkpoint=str(demo.train), data=[demo.dataset], out=killed, format="geoparquet",
                                  storage_options=demo.so, **OPTIONS))
    assert again["status"] == "already done" and again["encoded"] == 0


def test_geoparquet_opens_in_geopandas_and_duckdb(demo, tmp_path):
    local = tmp_path / "emb.parquet"
    step = demo.train / "checkpoints" / "step-00000020"  # the step folder form of --checkpoint
    run_embed(EmbedConfig(checkpoint=str(step), data=[demo.dataset], out=str(local), format="geoparquet",
                          storage_options=demo.so, preview=None, **OPTIONS))
    geopandas = pytest.importorskip("geopandas")
    frame = geopandas.read_parquet(local)
    assert len(frame) == 63 and set(frame.geom_type) == {"Polygon"} and frame.crs == "OGC:CRS84"
    bounds = frame.geometry.bounds
    assert frame.geometry.is_valid.all() and (bounds.maxx > bounds.minx).all() and (bounds.maxy > bounds.miny).all()
    first = list(demo.metas.values())[0]["bbox"]
    np.testing.assert_allclose(frame.geometry.iloc[0].bounds, first, atol=1e-6)
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT sensor, count(*) AS n, len(any_value(embedding)) AS d FROM read_parquet('{local}') "
                      "GROUP BY sensor ORDER BY sensor").fetchall()
    assert sum(r[1] for r in rows) == 63 and {r[2] for r in rows} == {192}
    assert [r[0] for r in rows] == ["landsat", "naip", "sentinel-1", "sentinel-2"]
    types = dict(duckdb.sql(f"DESCRIBE SELECT geometry, embedding FROM read_parquet('{local}')").fetchall()[i][:2]
                 for i in range(2))
    assert types == {"geometry": "GEOMETRY('OGC:CRS84')", "embedding": "FLOAT[]"}  # DuckDB reads the geo metadata
    east = duckdb.sql(f"SELECT count(*) FROM read_parquet('{local}') WHERE bbox.xmin > 0").fetchall()[0][0]
    assert east == 63 - 32  # the covering column filters: all but the 32 NAIP chips (Vermont) lie east of 0


def test_two_processes_under_accelerate_write_the_same_store(demo):
    accelerate = Path(sys.executable).parent / "accelerate"
    launch = [str(accelerate if accelerate.exists() else shutil.which("accelerate")), "launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "ofa.pipeline.embed"]
    out = f"s3://{BUCKET}/two.zarr"
    proc = _cli(demo, out, "--preview", "none", launch=launch)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["processes"] == 2 and summary["status"] == "written"
    ref = {k: v for k, v in _objects(demo.fs, demo.zarr).items() if not k.endswith(".png")}
    assert _objects(demo.fs, out) == ref


def test_same_scene_crops_are_closer_than_other_sensors_scenes(demo):
    """After the demo's training, two overlapping crops of one chip (the scene) embed closer together than
    the chips of two different sensors do in the written store: the vectors carry signal about what they
    show (all-equal or noise vectors fail this)."""
    import torch
    import xarray as xr

    from ofa.model import from_pretrained
    from ofa.pipeline.data import Counter, decode, iter_shard, read_streams
    from ofa.pipeline.embed.encode import Encoder
    from ofa.pipeline.evaluate.bands import resize

    ds = xr.open_zarr(demo.zarr, storage_options=demo.so)
    emb, sensor = ds["embedding"].values.astype(np.float64), np.asarray(ds["sensor"].values.tolist())
    cross = np.linalg.norm(emb[:, None] - emb[None], axis=-1)[sensor[:, None] != sensor[None]]
    encoder = Encoder(from_pretrained(str(demo.train / "checkpoints" / "step-00000020" / "model")), "cpu")
    pairs = []
    for stream in read_streams([demo.dataset], demo.so):
        x = torch.stack([decode(sample, stream) for shard in stream.shards
                         for sample in iter_shard(shard, demo.so, Counter())])  # [N, C, 128, 128]
        a, b = encoder(resize(x[..., :96, :96], 32), stream.sensor), encoder(resize(x[..., 32:, 32:], 32), stream.sensor)
        pairs += list(np.linalg.norm(a - b, axis=1))
    assert len(pairs) == 63
    assert np.median(pairs) < np.median(cross), (np.median(pairs), np.median(cross))


def test_misfit_checkpoint_is_refused_in_one_line(demo, tmp_path, capsys):
    import torch

    from ofa.model import MaskedAutoencoder, ModelConfig, save_pretrained
    from ofa.pipeline.cli import main

    torch.manual_seed(0)
    cfgs = {"bands": {"sentinel-2": 10, "sentinel-1": 2, "landsat": 7, "naip": 4},
            "sensor": {"sentinel-2": 12, "landsat": 7, "naip": 4}}
    expected = {"bands": "the dataset's sentinel-2 has 12 bands, the checkpoint's sentinel-2 embedding takes 10",
                "sensor": "the dataset has sentinel-1 (2 bands), the checkpoint has no sentinel-1 embedding"}
    for name, modalities in cfgs.items():
        ckpt = tmp_path / name
        save_pretrained(MaskedAutoencoder(ModelConfig(size="tiny", img_size=32, patch_size=8, modalities=modalities)), str(ckpt))
        out = f"s3://{BUCKET}/misfit-{name}.zarr"
        code = main(["embed", "--checkpoint", str(ckpt), "--data", demo.dataset, "--out", out, "--cpu",
                     "--storage-options", json.dumps(demo.so)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 3 and len(err) == 1, err
        assert str(ckpt) in err[0] and demo.dataset in err[0] and expected[name] in err[0]
        assert not demo.fs.exists(f"{BUCKET}/misfit-{name}.zarr")
    code = main(["embed", "--checkpoint", str(demo.train), "--data", demo.dataset, "--out", str(tmp_path / "x.zarr"),
                 "--pool", "cls", "--cpu", "--storage-options", json.dumps(demo.so)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--pool cls" in err[0] and "class token" in err[0]
    code = main(["embed", "--checkpoint", str(tmp_path), "--data", demo.dataset, "--out", str(tmp_path / "y.zarr"),
                 "--cpu", "--storage-options", json.dumps(demo.so)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "no checkpoint here" in err[0]


def test_an_output_of_other_inputs_is_not_touched(demo, capsys):
    from ofa.pipeline.cli import main

    before = _objects(demo.fs, demo.zarr)
    code = main(["embed", "--checkpoint", str(demo.train), "--data", demo.dataset, "--out", demo.zarr, "--cpu",
                 "--chunk-size", "32", "--storage-options", json.dumps(demo.so), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "other inputs or options" in err[0]
    assert _objects(demo.fs, demo.zarr) == before


def test_checkpoint_forms_resolve_to_the_model_folder(demo, tmp_path):
    from ofa.model import CheckpointError
    from ofa.pipeline.checkpoint import model_dir

    model = str(demo.train / "checkpoints" / "step-00000020" / "model")
    for form in (demo.train, demo.train / "checkpoints" / "step-00000020", model):
        assert model_dir(str(form)) == model
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        model_dir(str(tmp_path))


def test_a_damaged_shard_stops_the_job_in_one_line(tmp_path, capsys):
    import torch

    from ofa.model import MaskedAutoencoder, ModelConfig, save_pretrained
    from ofa.pipeline.cli import main
    from pipeline_fixtures import write_dataset

    manifest = write_dataset(str(tmp_path / "ds"), {"naip": (2, 4)}, size=16)
    shard = tmp_path / "ds" / manifest["shards"][1]["path"]
    shard.write_bytes(shard.read_bytes()[:3072 + 1500])  # cut inside its second sample (a sample takes 3072 bytes)
    torch.manual_seed(0)
    save_pretrained(MaskedAutoencoder(ModelConfig(size="tiny", img_size=16, patch_size=8, modalities={"naip": 4})),
                    str(tmp_path / "ckpt"))
    out = tmp_path / "emb.zarr"
    code = main(["embed", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "ds"), "--out", str(out),
                 "--chunk-size", "4", "--cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and str(shard) in err[0], err
    assert "damaged or short: read 1 of the 4 samples" in err[0] and "truncated" in err[0]
    import xarray as xr  # the first region (the whole first shard) was written and stays; a rerun resumes there

    partial = xr.open_zarr(out, consolidated=False)
    assert partial.attrs["ofa_embed_status"] == "writing" and list(partial["_ofa_progress"].values) == [1, 0]
    assert np.isfinite(partial["embedding"].values[:4]).all() and np.isnan(partial["embedding"].values[4:]).all()


def test_s3_dataset_has_its_stac_and_index_and_an_s3_run_folder_resolves(demo, capsys):
    """On object storage too: ingest wrote index.parquet and stac/collection.json beside the manifest, and a
    training run folder copied to s3:// works as --checkpoint (the last complete checkpoint's model/)."""
    from stac_pydantic import Collection

    from ofa.pipeline.cli import main

    root = demo.dataset[5:]
    collection = json.loads(demo.fs.cat(f"{root}/stac/collection.json"))
    Collection.model_validate(collection)
    index = demo.fs.cat(f"{root}/index.parquet")
    assert collection["assets"]["index"]["file:checksum"] == "1220" + hashlib.sha256(index).hexdigest()
    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(index)).column("key").to_pylist() == list(demo.metas)
    demo.fs.put(str(demo.train / "checkpoints"), f"{BUCKET}/run/checkpoints", recursive=True)
    capsys.readouterr()
    assert main(["model", "info", "--checkpoint", f"s3://{BUCKET}/run", "--json", "--storage-options",
                 json.dumps(demo.so)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == f"s3://{BUCKET}/run/checkpoints/step-00000020/model"
