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
    out = tmp_path / "timm"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--out", str(out)]) == 2
    assert "--sensor is needed" in capsys.readouterr().err  # two sensors: say which
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--sensor", "naip",
                 "--out", str(out)]) == 0
    sd = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_features"] == 192
    assert config["model_args"] == {"img_size": 32, "in_chans": 4, "num_classes": 0, "class_token": False,
                                    "global_pool": "avg", "fc_norm": False}
    assert config["ofa"]["input"]["bands"] == ["R", "G", "B", "NIR"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == timm_names_and_shapes(192, 12, 4, 16, 32)
    mae = from_pretrained(str(checkpoint))
    x = torch.randn(3, 4, 32, 32)
    with torch.no_grad():
        ours = mae.encode(x, modality="naip")[1]
        theirs = timm_vit_pooled(sd, x, heads=3, patch=16)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_timm_loads_the_export_strictly(checkpoint: Path, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    out = tmp_path / "timm"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "timm", "--sensor", "naip",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    vit = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    vit.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vit.eval()(x), from_pretrained(str(checkpoint)).encode(x, modality="naip")[1], atol=1e-5)
        hub = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        assert torch.allclose(hub(x), vit(x), atol=1e-6)


def test_cli_hf_export_with_model_card(checkpoint: Path, tmp_path: Path) -> None:
    table = tmp_path / "geobench_results.md"
    table.write_text("| task | metric | protocol | ofa |\n|---|---|---|---|\n| m-eurosat | accuracy | linear | 91.2 ± 0.3 |\n")
    out = tmp_path / "hf"
    assert main(["model", "export", "--checkpoint", str(checkpoint), "--format", "hf", "--out", str(out),
                 "--geobench", str(table)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
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
