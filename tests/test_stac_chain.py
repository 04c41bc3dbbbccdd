"""One linked chain of metadata, after ``ofa demo``, ``ofa embed`` and ``ofa model export`` (and ``ofa model info``
and ``ofa eval geobench``), every ``--checkpoint`` given as the demo's run folder: the dataset Collection,
the sample index, the embeddings' ``geoemb:`` attributes and STAC Collection/Item and the MLM Items validate;
the links lead from the embeddings Item to its model, to the dataset it embedded and back to the source
items; timm loads every exported folder and its pooled features equal ``mae.encode``'s."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ofa.pipeline.cli import main
from support.samples import read_metas

FAST_EVAL = ["--img-size", "32", "--max-samples", "16", "--probe-epochs", "5", "--batch-size", "16"]


def _local(href: str, base: Path) -> Path:
    """A link's target on this machine: file:// URLs, absolute paths, or paths relative to ``base``'s folder."""
    if href.startswith("file://"):
        return Path(urlparse(href).path)
    path = Path(href)
    return path if path.is_absolute() else (base.parent / path).resolve()


def _link(doc: dict, rel: str) -> list[str]:
    return [ln["href"] for ln in doc["links"] if ln["rel"] == rel]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, geobench_root):
    root = tmp_path_factory.mktemp("chain")
    demo = root / "demo"
    proc = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "demo", "--out", str(demo), "--steps", "4",
                           "--batch-size", "4", "--no-progress"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run, dataset = demo / "train", demo / "dataset"
    outs = SimpleNamespace(root=root, run=run, dataset=dataset, zarr=root / "emb.zarr", parquet=root / "emb.parquet",
                           timm=root / "timm", hf=root / "hf", eval=root / "eval")
    for out in (outs.zarr, outs.parquet):
        assert main(["embed", "--checkpoint", str(run), "--data", str(dataset), "--out", str(out), "--cpu",
                     "--chunk-size", "16", "--no-progress"]) == 0
    assert main(["model", "export", "--checkpoint", str(run), "--format", "timm", "--out", str(outs.timm)]) == 0
    assert main(["model", "export", "--checkpoint", str(run), "--format", "hf", "--out", str(outs.hf)]) == 0
    assert main(["eval", "geobench", "--root", str(geobench_root), "--checkpoint", str(run), "--tasks", "m-toy-s2",
                 "--seeds", "1", "--out", str(outs.eval), *FAST_EVAL]) == 0
    return outs


def test_checkpoint_run_folder_works_in_all_four_commands(chain, capsys) -> None:
    import xarray as xr

    model = chain.run / "checkpoints" / "step-00000004" / "model"
    assert xr.open_zarr(chain.zarr).attrs["model_dir"] == str(model)  # embed
    assert (chain.eval / "geobench_results.csv").read_text().count("m-toy-s2") == 1  # eval
    assert (chain.timm / "sentinel-2" / "model.safetensors").exists() and (chain.hf / "model.safetensors").exists()
    capsys.readouterr()
    for form in (chain.run, model.parent, model):  # model info: the run, its step folder, the step's model/
        assert main(["model", "info", "--checkpoint", str(form), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["checkpoint"] == str(model)


def test_dataset_collection_and_index_validate(chain) -> None:
    from stac_pydantic import Collection

    manifest = json.loads((chain.dataset / "manifest.json").read_text())
    metas = read_metas(chain.dataset)
    Collection.model_validate(json.loads((chain.dataset / "stac" / "collection.json").read_text()))
    table = pq.read_table(chain.dataset / "index.parquet")
    assert table.num_rows == sum(s["count"] for s in manifest["shards"]) == len(metas) > 0
    assert [list(b.values()) for b in table.column("bbox").to_pylist()] == [m["bbox"] for _, m in metas.values()]
    assert json.loads(pq.read_schema(chain.dataset / "index.parquet").metadata[b"geo"])["version"] == "1.1.0"


def test_embeddings_declare_themselves(chain) -> None:
    import zarr
    from stac_model.schema import MLModelProperties
    from stac_pydantic import Collection, Item

    from support.geo_embeddings import EmbeddingsCollection, EmbeddingsItem, GeoembAttributes

    attrs = dict(zarr.open_group(str(chain.zarr), mode="r").attrs)
    geoemb = GeoembAttributes.model_validate(attrs)
    assert geoemb.type == "chip" and geoemb.dimensions == 192 and geoemb.chip_layout.chip_size == [128, 128]
    meta = pq.read_metadata(chain.parquet).metadata
    in_parquet = {k.decode(): json.loads(v) for k, v in meta.items() if k.startswith(b"geoemb:")}
    assert in_parquet == {k: v for k, v in attrs.items() if k.startswith("geoemb:")}
    for out in (chain.zarr, chain.parquet):
        collection = json.loads(Path(f"{out}.collection.json").read_text())
        Collection.model_validate(collection)
        EmbeddingsCollection.model_validate(collection)
        item = json.loads(Path(f"{out}.item.json").read_text())
        Item.model_validate(item)
        EmbeddingsItem.model_validate(item)
        assert collection["emb:dimensions"] == 192 and collection["emb:chip_layout"]["chip_size"] == [128, 128]
        model = json.loads(Path(f"{out}.model.json").read_text())
        Item.model_validate(model)
        assert MLModelProperties.model_validate(model["properties"]).output[0].result.shape == [-1, 192]
    for folder in [*sorted(p for p in chain.timm.iterdir()), chain.hf]:
        doc = json.loads((folder / "mlm-item.json").read_text())
        Item.model_validate(doc)
        props = MLModelProperties.model_validate(doc["properties"])
        assert props.input and all(i.value_scaling for i in props.input)  # the demo's statistics, per band


def test_links_walk_from_an_embedding_to_its_model_dataset_and_source_items(chain) -> None:
    import xarray as xr

    from ofa.model import from_pretrained

    item_path = Path(f"{chain.zarr}.item.json")
    item = json.loads(item_path.read_text())
    collection_path = _local(_link(item, "collection")[0], item_path)
    collection = json.loads(collection_path.read_text())
    store = _local(item["assets"]["embeddings"]["href"], item_path)
    assert store == chain.zarr.resolve()
    # the model: the collection's emb:model is an MLM Item whose weights are the checkpoint's
    model_path = _local(_link(collection, "emb:model")[0], collection_path)
    mlm = json.loads(model_path.read_text())
    weights = _local(mlm["assets"]["model"]["href"], model_path)
    assert mlm["assets"]["model"]["file:checksum"] == "1220" + hashlib.sha256(weights.read_bytes()).hexdigest()
    ds = xr.open_zarr(store)
    model_folder = _local(ds.attrs["geoemb:model"], store)
    assert model_folder == weights.parent and from_pretrained(str(model_folder)).config.embed_dim == 192
    # the dataset: emb:source-data, the model's training data (derived_from) and geoemb:source_data agree
    source = [_local(h, collection_path) for h in _link(collection, "emb:source-data")]
    assert source == [_local(h, model_path) for h in _link(mlm, "derived_from")] == [
        _local(h, store) for h in ds.attrs["geoemb:source_data"]] == [chain.dataset.resolve() / "stac" / "collection.json"]
    dataset = json.loads(source[0].read_text())
    index = pq.read_table(_local(dataset["assets"]["index"]["href"], source[0])).to_pylist()
    manifest = json.loads(_local(dataset["assets"]["manifest"]["href"], source[0]).read_text())
    # back to the source items: every embedding's sample is an index row naming a selected source item
    rows = {r["key"]: r for r in index}
    for key, item_id, coll in zip(ds["sample"].values, ds["item_id"].values, ds["collection"].values):
        assert rows[key]["item_id"] == item_id and rows[key]["collection"] == coll
    selected = {(it["collection"], it["id"]) for it in manifest["items"]}
    assert {(r["collection"], r["item_id"]) for r in index} <= selected
    sources = _link(dataset, "derived_from")
    assert sources == [f"{manifest['catalog']}/collections/{c}" for c in manifest["search"]["collections"]]


def test_timm_loads_every_exported_folder_with_equal_features(chain) -> None:
    from ofa.model import from_pretrained
    from support.timm_run import run_timm

    mae = from_pretrained(str(chain.run / "checkpoints" / "step-00000004" / "model"))
    folders = sorted(p.name for p in chain.timm.iterdir())
    assert folders == sorted(json.loads((chain.run / "checkpoints" / "step-00000004" / "model" / "config.json")
                                        .read_text())["sensors"])
    torch.manual_seed(0)
    inputs = {s: torch.randn(2, mae.config.modalities[s], 64, 64) for s in folders}
    torch.save(inputs, chain.root / "inputs.pt")
    got = run_timm(f"""
import json, torch, timm
inputs = torch.load("inputs.pt")
out = {{}}
for sensor, x in inputs.items():
    model = timm.create_model("local-dir:timm/" + sensor, pretrained=True).eval()
    with torch.no_grad():
        out[sensor] = model(x)
torch.save(out, "timm_out.pt")
print(json.dumps({{s: json.load(open("timm/" + s + "/config.json"))["architecture"] for s in inputs}}))
""", chain.root)
    theirs = torch.load(chain.root / "timm_out.pt")
    for sensor, x in inputs.items():
        with torch.no_grad():
            ours = mae.encode(x, modality=sensor)[1]
        assert got[sensor] == "vit_tiny_patch16_224"
        assert float((theirs[sensor] - ours).abs().max()) <= 1e-6, sensor
        assert np.isfinite(ours.numpy()).all()
