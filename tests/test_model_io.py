"""Model checkpoints (local and S3), timm export, FLOP count and the ``ofa model info`` CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ofa.model import (
    CheckpointError,
    MaskedAutoencoder,
    ModelConfig,
    export_timm_state_dict,
    flops_per_image,
    from_pretrained,
    save_pretrained,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def small_model(embedding: str = "ofa") -> MaskedAutoencoder:
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", embedding=embedding, img_size=16, patch_size=4,
                      modalities={"sentinel-2": 12, "naip": 4}, gsd_pos_embed=True)
    return MaskedAutoencoder(cfg)


def same_weights(a: MaskedAutoencoder, b: MaskedAutoencoder) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("embedding", ["ofa", "wavelength"])
def test_save_and_load_local(tmp_path: Path, embedding: str) -> None:
    mae = small_model(embedding)
    save_pretrained(mae, str(tmp_path / "ckpt"))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = from_pretrained(f"file://{tmp_path / 'ckpt'}")
    assert loaded.config == mae.config and same_weights(mae, loaded)
    x = torch.randn(2, 12, 16, 16)
    with torch.no_grad():
        assert torch.allclose(mae.encode(x, modality="sentinel-2")[1], loaded.encode(x, modality="sentinel-2")[1])


def test_save_and_load_s3() -> None:
    from ofa.infra.localstack import s3_server

    mae = small_model("ofa")
    with s3_server() as s3:
        url = s3.make_bucket("ckpts") + "/run-1/step-10"
        save_pretrained(mae, url, storage_options=s3.storage_options)
        loaded = from_pretrained(url, storage_options=s3.storage_options)
        with pytest.raises(CheckpointError, match="no config.json"):
            from_pretrained(s3.make_bucket("empty") + "/none", storage_options=s3.storage_options)
    assert same_weights(mae, loaded)


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(str(tmp_path / "missing"))
    save_pretrained(small_model(), str(tmp_path / "ok"))
    weights = tmp_path / "ok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        from_pretrained(str(tmp_path / "ok"))
    weights.unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        from_pretrained(str(tmp_path / "ok"))
    # a pickle under the weights' name is refused, not executed
    torch.save({"x": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match="corrupt"):
        from_pretrained(str(tmp_path / "ok"))
    (tmp_path / "ok" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_pretrained(str(tmp_path / "ok"))
    # weights from a different configuration
    save_pretrained(small_model(), str(tmp_path / "other"))
    doc = json.loads((tmp_path / "other" / "config.json").read_text())
    doc["config"]["modalities"] = {"naip": 4}
    (tmp_path / "other" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not match"):
        from_pretrained(str(tmp_path / "other"))


def test_timm_export_key_names() -> None:
    with torch.device("meta"):
        base = MaskedAutoencoder(ModelConfig(size="base"))
    sd = export_timm_state_dict(base)
    assert len(sd) == 12 * 12 + 2
    expected = {  # timm VisionTransformer names and shapes for ViT-B/16
        "blocks.0.norm1.weight": (768,), "blocks.0.attn.qkv.weight": (2304, 768),
        "blocks.0.attn.qkv.bias": (2304,), "blocks.0.attn.proj.weight": (768, 768),
        "blocks.0.norm2.bias": (768,), "blocks.11.mlp.fc1.weight": (3072, 768),
        "blocks.11.mlp.fc2.weight": (768, 3072), "norm.weight": (768,), "norm.bias": (768,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key

    mae = small_model("ofa")
    sd = export_timm_state_dict(mae, modality="naip")
    assert torch.equal(sd["blocks.3.attn.qkv.weight"], mae.backbone.blocks[3].attn.qkv.weight)
    assert tuple(sd["patch_embed.proj.weight"].shape) == (192, 4, 4, 4)
    assert tuple(sd["pos_embed"].shape) == (1, 16, 192)
    wave = small_model("wavelength")
    sd = export_timm_state_dict(wave, wavelengths=[0.49, 0.56, 0.665])
    # the exported conv reproduces the model's own patch tokens
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        tokens = torch.nn.functional.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4)
        ref = wave.patch_embed(x, torch.tensor([0.49, 0.56, 0.665]))
    assert torch.allclose(tokens.flatten(2).transpose(1, 2), ref, atol=1e-5)


def test_flops_match_a_flop_counter() -> None:
    cfg = ModelConfig(size="tiny", img_size=32, patch_size=4, modalities={"naip": 4})
    mae = MaskedAutoencoder(cfg)
    x = torch.randn(2, 4, 32, 32)
    for ratio in (0.75, 0.0):
        counter = FlopCounterMode(display=False)
        # the math attention kernel, so the counter sees attention (it skips the fused CPU kernel)
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            mae(x, modality="naip", mask_ratio=ratio)
        measured = counter.get_total_flops() / 2  # per image, forward
        predicted = flops_per_image(cfg, mask_ratio=ratio) / 3
        assert abs(predicted - measured) / measured < 0.02, (ratio, predicted, measured)
    assert flops_per_image(cfg, mask_ratio=0.75) < flops_per_image(cfg, mask_ratio=0.0)


def test_cli_model_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    from ofa.pipeline.cli import main

    assert main(["model", "info", "--size", "base", "--embedding", "ofa", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("backbone", "embeddings", "decoder", "total"):
        assert isinstance(info[key], int) and info[key] > 0
    assert info["backbone"] == 12 * 7_087_872 + 1536
    assert info["total"] == info["backbone"] + info["embeddings"] + info["decoder"]
    assert info["modalities"] == ["sentinel-1", "sentinel-2", "sentinel-2-l1c", "landsat", "naip", "gaofen-2", "enmap"]
    assert main(["model", "info", "--size", "tiny", "--embedding", "wavelength"]) == 0
    text = capsys.readouterr().out
    assert "backbone" in text and "5,338,752" in text  # ViT-Ti blocks: 12 x 444,864 + 384
