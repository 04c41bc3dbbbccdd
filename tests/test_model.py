"""OFA-Net MAE: parameter counts, shapes, masking, gradients, overfitting, determinism, wavelengths."""
from __future__ import annotations

import json

import pytest
import torch

from ofa.model import DEFAULT_MODALITIES, MAEOutput, MaskedAutoencoder, ModelConfig

IMG, PATCH = 16, 4  # 4 x 4 = 16 tokens: small enough for 2 CPU cores


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(embedding: str = "ofa", **kw) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(ModelConfig(size="tiny", embedding=embedding, img_size=IMG, patch_size=PATCH, **kw))


@pytest.fixture(scope="module")
def ofa() -> MaskedAutoencoder:
    return tiny("ofa")


@pytest.fixture(scope="module")
def wave() -> MaskedAutoencoder:
    return tiny("wavelength")


def test_base_backbone_matches_vit_b16_blocks() -> None:
    with torch.device("meta"):
        mae = MaskedAutoencoder(ModelConfig(size="base"))
    counts = mae.parameter_counts()
    assert abs(counts["backbone"] - 85.06e6) / 85.06e6 <= 0.005
    # ViT-B/16: 12 blocks of 7,087,872 parameters plus the final LayerNorm (2 x 768)
    assert counts["backbone"] == 12 * 7_087_872 + 2 * 768
    assert counts["total"] == counts["backbone"] + counts["embeddings"] + counts["decoder"]


def test_config_roundtrips_through_json() -> None:
    cfg = ModelConfig(size="small", embedding="wavelength", img_size=96, patch_size=8,
                      modalities={"sentinel-2": 12, "naip": 4}, gsd_pos_embed=True)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.decoder_depth > 0 and cfg.wavelengths["naip"] == [0.635, 0.555, 0.465, 0.845]
    with pytest.raises(ValueError, match="size"):
        ModelConfig(size="huge")
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({"size": "tiny", "depth_typo": 3})


@pytest.mark.parametrize("modality", ["sentinel-1", "naip", "landsat", "sentinel-2", "enmap"])
def test_shapes_per_channel_count(ofa: MaskedAutoencoder, modality: str) -> None:
    c = DEFAULT_MODALITIES[modality]  # 2, 4, 7, 12, 202
    x = torch.randn(2, c, IMG, IMG * 2)  # non-square, not cfg.img_size
    out = ofa(x, modality=modality)
    l = (IMG // PATCH) * (IMG * 2 // PATCH)
    assert isinstance(out, MAEOutput) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.pred.shape == (2, l, PATCH * PATCH * c) and out.mask.shape == (2, l)
    tokens, pooled = ofa.encode(x, modality=modality)
    assert tokens.shape == (2, l, 192) and pooled.shape == (2, 192)
    assert torch.allclose(pooled, tokens.mean(1), atol=1e-6)
    feats = ofa.encode_features(x, modality=modality)
    assert [f.shape for f in feats] == [(2, 192, IMG // PATCH, IMG * 2 // PATCH)] * 4


def test_patchify_roundtrip(ofa: MaskedAutoencoder) -> None:
    x = torch.randn(2, 7, IMG, IMG * 2)
    patches = ofa.patchify(x)
    assert patches.shape == (2, 32, PATCH * PATCH * 7)
    assert torch.equal(ofa.unpatchify(patches, 7, grid=(4, 8)), x)
    # channel fastest: the first 7 values of patch 0 are pixel (0, 0) of every channel
    assert torch.equal(patches[0, 0, :7], x[0, :, 0, 0])


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.3])
def test_masking_keeps_expected_tokens(ofa: MaskedAutoencoder, ratio: float) -> None:
    out = ofa(torch.randn(5, 4, IMG, IMG), modality="naip", mask_ratio=ratio)
    keep = int(16 * (1 - ratio))
    assert torch.equal(out.mask.sum(1), torch.full((5,), 16.0 - keep))
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
    # vectorised per-sample masks: rows differ
    assert len({tuple(r.tolist()) for r in out.mask}) > 1
    kept, mask, restore = MaskedAutoencoder.random_masking(torch.arange(16.0).view(1, 16, 1).repeat(3, 1, 1), keep)
    assert kept.shape == (3, keep, 1)
    for row in range(3):  # the kept tokens are exactly the unmasked positions
        assert sorted(kept[row, :, 0].long().tolist()) == torch.nonzero(mask[row] == 0).flatten().tolist()


def test_only_active_modality_gets_gradients() -> None:
    mae = tiny("ofa")
    mae(torch.randn(2, 12, IMG, IMG), modality="sentinel-2").loss.backward()
    for name, conv in mae.patch_embed.proj.items():
        active = name == "sentinel-2"
        assert (conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0) == active, name
        head = mae.head.heads[name]
        assert (head.weight.grad is not None and head.weight.grad.abs().sum() > 0) == active, name
    assert all(p.grad is not None for p in mae.backbone.parameters())


@pytest.mark.parametrize("embedding,lr", [("ofa", 1e-3), ("wavelength", 5e-4)])
def test_overfits_fixed_batch(embedding: str, lr: float) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", embedding=embedding, img_size=8, patch_size=4,
                      modalities={"naip": 4}, mask_ratio=0.5, norm_pix_loss=embedding == "ofa")
    mae = MaskedAutoencoder(cfg)
    x = torch.randn(2, 4, 8, 8)
    opt = torch.optim.Adam(mae.parameters(), lr=lr)
    losses = []
    for _ in range(150):
        torch.manual_seed(1)  # the same mask every step: a fixed problem to memorise
        loss = mae(x, modality="naip").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] <= losses[0] / 10:
            break
    assert losses[-1] <= losses[0] / 10, f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps"


def test_same_seed_same_output() -> None:
    x = torch.randn(2, 12, IMG, IMG)
    outs = []
    for _ in range(2):
        mae = tiny("ofa")
        torch.manual_seed(7)
        outs.append(mae(x, modality="sentinel-2"))
    assert torch.equal(outs[0].pred, outs[1].pred) and torch.equal(outs[0].mask, outs[1].mask)
    torch.manual_seed(8)
    assert not torch.equal(mae(x, modality="sentinel-2").mask, outs[0].mask)


def test_wavelength_embedding_takes_unseen_band_set(wave: MaskedAutoencoder) -> None:
    unseen = [0.41, 0.95, 1.38, 3.9, 11.2]  # no configured sensor has these bands
    x = torch.randn(2, 5, IMG, IMG)
    out = wave(x, wavelengths=unseen)
    assert out.pred.shape == (2, 16, PATCH * PATCH * 5) and torch.isfinite(out.loss)
    out.loss.backward()
    assert wave.patch_embed.weight_gen.weight.grad.abs().sum() > 0
    assert wave.head.weight_gen.weight.grad.abs().sum() > 0
    wave.zero_grad()
    with torch.no_grad():
        a = wave.encode(x, wavelengths=unseen)[1]
        b = wave.encode(x, wavelengths=[w + 0.3 for w in unseen])[1]
        s2 = wave.encode(torch.randn(2, 12, IMG, IMG), modality="sentinel-2")[1]  # known table
    assert not torch.allclose(a, b) and s2.shape == (2, 192)
    with pytest.raises(ValueError, match="3 wavelengths for 5 channels"):
        wave(x, wavelengths=[0.5, 0.6, 0.7])


def test_bad_inputs_name_the_problem(ofa: MaskedAutoencoder) -> None:
    with pytest.raises(ValueError, match="sentinel-2.*12 channels"):
        ofa(torch.randn(1, 3, IMG, IMG), modality="sentinel-2")
    with pytest.raises(KeyError, match="modis"):
        ofa(torch.randn(1, 3, IMG, IMG), modality="modis")
    with pytest.raises(ValueError, match="patch_size"):
        ofa(torch.randn(1, 4, IMG + 2, IMG), modality="naip")
    with pytest.raises(ValueError, match="out of range"):
        ofa.encode_features(torch.randn(1, 4, IMG, IMG), modality="naip", layers=[12])


def test_gsd_scaled_position_embedding() -> None:
    mae = tiny("ofa", gsd_pos_embed=True, modalities={"naip": 4})
    x = torch.randn(1, 4, IMG, IMG).repeat(2, 1, 1, 1)
    with torch.no_grad():
        tokens, _ = mae.encode(x, modality="naip", gsd=torch.tensor([1.0, 30.0]))
        ref, _ = mae.encode(x, modality="naip", gsd=10.0)  # the reference GSD = unscaled grid
        plain, _ = mae.encode(x, modality="naip")
    assert not torch.allclose(tokens[0], tokens[1], atol=1e-4)  # same pixels, different GSD
    assert torch.allclose(ref, plain, atol=1e-5)


def test_bf16_input_and_feature_layers(ofa: MaskedAutoencoder) -> None:
    x = torch.randn(2, 4, IMG, IMG)
    out = ofa(x.to(torch.bfloat16), modality="naip")
    assert torch.isfinite(out.loss)
    assert ofa.feature_layers() == [2, 5, 8, 11]
    with torch.no_grad():
        last = ofa.encode_features(x, modality="naip", layers=[-1])[0]
        tokens, _ = ofa.encode(x, modality="naip")
    # the last block's map, normalised, is the encoder output
    normed = ofa.backbone.norm(last.flatten(2).transpose(1, 2))
    assert torch.allclose(normed, tokens, atol=1e-5)


def test_autocast_bf16_forward(ofa: MaskedAutoencoder) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ofa(torch.randn(2, 4, IMG, IMG), modality="naip")
    assert out.pred.dtype == torch.bfloat16 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_model_package_imports_no_ingest_or_pipeline() -> None:
    import subprocess
    import sys

    code = "import sys, model, model.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ingest', 'pipeline')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_random_masking_property() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(n=st.integers(1, 6), l=st.integers(1, 64), ratio=st.floats(0.0, 0.95))
    def check(n: int, l: int, ratio: float) -> None:
        cfg = ModelConfig(size="tiny", mask_ratio=ratio)
        keep = cfg.num_visible(l)
        tokens = torch.arange(float(l)).view(1, l, 1).repeat(n, 1, 2)
        kept, mask, restore = MaskedAutoencoder.random_masking(tokens, keep)
        assert 1 <= keep <= l and kept.shape == (n, keep, 2)
        assert torch.equal(mask.sum(1), torch.full((n,), float(l - keep)))
        assert torch.equal(torch.gather(mask, 1, torch.argsort(restore, 1))[:, :keep], torch.zeros(n, keep))
        # kept tokens are distinct and unmasked
        for row in range(n):
            ids = kept[row, :, 0].long()
            assert len(set(ids.tolist())) == keep and mask[row, ids].sum() == 0

    check()


@pytest.mark.parametrize("norm_pix", [False, True])
def test_invalid_bands_are_left_out_of_the_loss(norm_pix: bool) -> None:
    """band_valid: all valid gives the plain loss; an invalid channel's values (input or prediction) do not
    change the loss; the loss equals the error over the valid channel's values alone."""
    model = tiny(norm_pix_loss=norm_pix)
    x = torch.randn(3, 2, IMG, IMG)
    torch.manual_seed(1)
    out = model(x, modality="sentinel-1")
    pred, mask = out.pred.detach(), out.mask
    everything = torch.ones(3, 2, dtype=torch.bool)
    assert torch.allclose(model.forward_loss(x, pred, mask, everything), model.forward_loss(x, pred, mask), atol=1e-5)
    single = torch.tensor([[True, False]] * 3)
    loss = model.forward_loss(x, pred, mask, single)
    x2, pred2 = x.clone(), pred.clone()
    x2[:, 1] = 0.0                      # what the loader makes of an invalid channel
    pred2.view(3, -1, PATCH * PATCH, 2)[..., 1] += 5.0   # channel fastest in a patch
    assert torch.allclose(model.forward_loss(x2, pred2, mask, single), loss, atol=1e-6)
    assert not torch.allclose(model.forward_loss(x2, pred2, mask, everything), loss, atol=1e-3)
    # the same as an MAE over the valid channel alone
    target = model.patchify(x[:, :1].float())
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    p1 = pred.view(3, -1, PATCH * PATCH, 2)[..., 0]
    expected = (((p1 - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected, atol=1e-5)
    # gradients flow through a batch with a partly invalid sample
    mixed = torch.tensor([[True, True], [True, False], [True, True]])
    model(x, modality="sentinel-1", band_valid=mixed).loss.backward()
