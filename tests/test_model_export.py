"""``ofa model export``: timm weights that load strictly into timm's ViT with identical features, and a
Hugging Face Hub folder with a model card; ``ofa model info --checkpoint``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from ofa.model import MaskedAutoencoder, ModelConfig, export_timm_state_dict, from_pretrained, read_info, save_pretrained
from ofa.pipeline.cli import main

#: timm's vit_{size}_patch16_224 definitions (timm/models/vision_transformer.py: embed_dim, depth, num_heads;
#: mlp_ratio 4, qkv_bias True, LayerNorm eps 1e-6)
TIMM_VITS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}

FACTS = {"naip": {"bands": ["R", "G", "B", "NIR"], "wavelengths": [0.635, 0.555, 0.465, 0.845], "gsd": [0.6] * 4,
                  "dtype": "uint8", "scale": [1.0] * 4, "offset": [0.0] * 4, "nodata": [None] * 4,
                  "mean": [120.0, 110.0, 100.0, 130.0], "std": [40.0, 35.0, 30.0, 45.0]}}
TRAINING = {"data": [{"url": "s3://bucket/naip-ds", "manifest_sha256": "ab" * 32, "samples": 12, "catalog": None,
                      "collections": ["naip"], "sensors": ["naip"]}]}


def timm_names_and_shapes(dim: int, depth: int, in_chans: int, patch: int, img: int) -> dict[str, tuple[int, ...]]:
    """The state dict of timm's ``VisionTransformer(class_token=False, global_pool="avg", fc_norm=False,
    num_classes=0)``, as its source builds it: no cls_token, pos_embed over the patches only, Identity fc_norm/head."""
    tokens = (img // patch) ** 2
    out = {"pos_embed": (1, tokens, dim), "patch_embed.proj.weight": (dim, in_chans, patch, patch),
           "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        out.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                    b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                    b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                    b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                    b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                    b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)})
    out.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return out


def timm_vit_pooled(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, patch: int) -> torch.Tensor:
    """timm's ViT forward (no class token, average pool) written out from its source, on a state dict."""
    dim = sd["norm.weight"].shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    t = t + sd["pos_embed"]
    n, length, _ = t.shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = {k.removeprefix(f"blocks.{i}."): v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(t, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"]).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (dim // heads) ** -0.5).softmax(-1)
        t = t + F.linear((attn @ v).transpose(1, 2).reshape(n, length, dim), p["attn.proj.weight"], p["attn.proj.bias"])
        h = F.layer_norm(t, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    return F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6).mean(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    mae = MaskedAutoencoder(ModelConfig(size="tiny", img_size=32, patch_size=16, modalities={"naip": 4, "sentinel-1": 2}))
    url = tmp_path_factory.mktemp("ckpt") / "model"
    save_pretrained(mae, str(url), metadata={"sensors": FACTS, "training": TRAINING})
    return url


@pytest.mark.parametrize("size", sorted(TIMM_VITS))
def test_timm_names_and_shapes_for_every_size(size: str) -> None:
    dim, depth, heads = TIMM_VITS[size]
    with torch.device("meta"):
        mae = MaskedAutoencoder(ModelConfig(size=size, modalities={"sentinel-2": 12}))
    sd = export_timm_state_dict(mae, modality="sentinel-2")
    expected = timm_names_and_shapes(dim, depth, 12, 16, 224)
    assert set(sd) == set(expected), sorted(set(sd) ^ set(expected))[:5]
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert mae.config.num_heads == heads


def test_cli_timm_export_has_identical_features(checkpoint: Path, tmp_path: Path, capsys) -> None:
    every = tmp_path / "every"  # no --sensor: one folder per sensor the checkpoint describes (its training data's)
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--out", str(every)]) == 0
    assert sorted(p.name for p in every.iterdir()) == ["naip"]
    assert sorted(p.name for p in (every / "naip").iterdir()) == ["config.json", "mlm-item.json", "model.safetensors"]
    out = tmp_path / "timm"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--sensor", "naip",
                 "--out", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == (every / "naip" / "model.safetensors").read_bytes()
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--sensor", "landsat",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--sensor 'landsat': the checkpoint has naip, sentinel-1" in capsys.readouterr().err
    sd = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_features"] == 192
    assert config["model_args"] == {"img_size": 32, "patch_size": 16, "in_chans": 4, "num_classes": 0,
                                    "class_token": False, "global_pool": "avg", "fc_norm": False}
    assert config["ofa"]["input"]["bands"] == ["R", "G", "B", "NIR"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == timm_names_and_shapes(192, 12, 4, 16, 32)
    mae = from_pretrained(str(checkpoint))
    x = torch.randn(3, 4, 32, 32)
    with torch.no_grad():
        ours = mae.encode(x, modality="naip")[1]
        theirs = timm_vit_pooled(sd, x, heads=3, patch=16)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_timm_loads_every_exported_folder(tmp_path: Path) -> None:
    """The real timm: ``local-dir:`` and a strict load into the registered architecture, on every folder of a
    per-sensor export of a patch-8 model (an architecture timm does not register under its own name)."""
    from support.timm_run import run_timm

    torch.manual_seed(1)
    ckpt = tmp_path / "ckpt"
    mae = MaskedAutoencoder(ModelConfig(size="tiny", img_size=32, patch_size=8, modalities={"naip": 4, "sentinel-1": 2}))
    save_pretrained(mae, str(ckpt))
    assert main(["model", "export", "--checkpoint", str(ckpt), "--format", "timm", "--out", str(tmp_path / "t")]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["naip", "sentinel-1"]  # no sensor facts: every modality
    x = {"naip": torch.randn(3, 4, 32, 32), "sentinel-1": torch.randn(3, 2, 32, 32)}
    for sensor, batch in x.items():
        torch.save(batch, tmp_path / f"{sensor}.pt")
    got = run_timm("""
import json, torch, timm
from safetensors.torch import load_file
out = {}
for sensor in ("naip", "sentinel-1"):
    folder = f"t/{sensor}"
    config = json.load(open(f"{folder}/config.json"))
    hub = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    vit = timm.create_model(config["architecture"], pretrained=False, **config["model_args"]).eval()
    vit.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
    x = torch.load(f"{sensor}.pt")
    with torch.no_grad():
        torch.save(hub(x), f"{sensor}.hub.pt")
        out[sensor] = {"strict_vs_hub": (vit(x) - hub(x)).abs().max().item(), "arch": config["architecture"],
                       "patch": hub.patch_embed.patch_size[0]}
print(json.dumps({"timm": timm.__version__, **out}))
""", tmp_path)
    for sensor, batch in x.items():
        with torch.no_grad():
            ours = mae.encode(batch, modality=sensor)[1]
        theirs = torch.load(tmp_path / f"{sensor}.hub.pt")
        assert torch.equal(theirs, ours), (theirs - ours).abs().max()
        assert got[sensor] == {"strict_vs_hub": 0.0, "arch": "vit_tiny_patch16_224", "patch": 8}


def test_export_writes_a_valid_mlm_item(checkpoint: Path, tmp_path: Path) -> None:
    """stac-model (MLM v1.4.0) and stac-pydantic accept the item; its input z-scores raw pixels exactly as
    ``normalise`` does, its weights asset is the folder's file."""
    import hashlib

    from stac_model.schema import SCHEMA_URI, MLModelProperties
    from stac_pydantic import Item

    from ofa.model import normalise

    out = tmp_path / "timm"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--sensor", "naip",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "mlm-item.json").read_text())
    Item.model_validate(doc)
    props = MLModelProperties.model_validate(doc["properties"])
    assert SCHEMA_URI == "https://stac-extensions.github.io/mlm/v1.4.0/schema.json" and SCHEMA_URI in doc["stac_extensions"]
    assert props.framework == "PyTorch" and props.framework_version == torch.__version__.split("+")[0]
    assert [i.name for i in props.input] == ["naip"] and list(props.input[0].bands) == FACTS["naip"]["bands"]
    assert props.input[0].input.shape == [-1, 4, 32, 32] and props.output[0].result.shape == [-1, 192]
    asset = doc["assets"]["model"]
    assert "mlm:model" in asset["roles"] and asset["href"] == "./model.safetensors"
    assert asset["file:checksum"] == "1220" + hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert {b["name"] for b in doc["properties"]["bands"]} == set(FACTS["naip"]["bands"])
    assert doc["links"] == [{"rel": "derived_from", "href": "s3://bucket/naip-ds/stac/collection.json",
                             "type": "application/json", "title": doc["links"][0]["title"]}]
    raw = torch.randint(0, 255, (4, 8, 8)).to(torch.uint8)
    scaling = props.input[0].value_scaling
    mine = torch.stack([(raw[c].double() - z.mean) / z.stddev for c, z in enumerate(scaling)]).float()
    assert torch.allclose(mine, normalise(raw, FACTS["naip"]), atol=1e-6)
    hf = tmp_path / "hf"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "hf", "--out", str(hf)]) == 0
    item = json.loads((hf / "mlm-item.json").read_text())
    assert [i.name for i in MLModelProperties.model_validate(item["properties"]).input] == ["naip"]
    assert item["properties"]["mlm:total_parameters"] == from_pretrained(str(checkpoint)).parameter_counts()["total"]


def test_cli_hf_export_with_model_card(checkpoint: Path, tmp_path: Path) -> None:
    table = tmp_path / "geobench_results.md"
    table.write_text("| task | metric | protocol | ofa |\n|---|---|---|---|\n| m-eurosat | accuracy | linear | 91.2 ± 0.3 |\n")
    out = tmp_path / "hf"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "hf", "--out", str(out),
                 "--geobench", str(table)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "mlm-item.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    head, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    assert meta["license"] == "apache-2.0" and {"earth-observation", "naip", "sentinel-1"} <= set(meta["tags"])
    assert meta["sensors"]["naip"]["bands"] == ["R", "G", "B", "NIR"]
    assert meta["sensors"]["naip"]["wavelengths_um"] == FACTS["naip"]["wavelengths"]
    assert meta["training_data"] == [{"url": "s3://bucket/naip-ds", "manifest_sha256": "ab" * 32, "samples": 12}]
    assert meta["geobench"] == [{"task": "m-eurosat", "metric": "accuracy", "protocol": "linear", "ofa": "91.2 ± 0.3"}]
    assert "| m-eurosat | accuracy | linear | 91.2 ± 0.3 |" in body and "| naip | NIR | 0.845 |" in body
    again = from_pretrained(str(out))  # the folder is itself a loadable checkpoint
    assert torch.equal(again.state_dict()["backbone.norm.weight"], from_pretrained(str(checkpoint)).state_dict()["backbone.norm.weight"])
    assert read_info(str(out))["sensors"] == FACTS


def test_cli_model_info_of_a_checkpoint(checkpoint: Path, capsys) -> None:
    assert main(["model", "info", "--checkpoint", str(checkpoint.parent)]) == 0  # the folder above works too
    text = capsys.readouterr().out
    assert "OFA-Net tiny (ofa embedding)" in text and "32 px, patch 16" in text
    assert "NIR" in text and "0.845" in text and "s3://bucket/naip-ds" in text
    assert main(["model", "info", "--checkpoint", str(checkpoint), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sensors"] == FACTS and doc["config"]["img_size"] == 32 and doc["parameters"]["total"] > 0
    assert main(["model", "info", "--checkpoint", str(checkpoint / "nowhere")]) == 3
    assert "no config.json" in capsys.readouterr().err
