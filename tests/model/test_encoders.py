"""Encoder registry and factory: real-size specs build offline, small ones run, preprocessing, freezing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from geopak.model.encoders import (
    CLIP_MEAN,
    ENCODERS,
    IMAGENET_STD,
    Encoder,
    EncoderSpec,
    UnknownEncoderError,
    create_encoder,
    encoder_spec,
    list_encoders,
    register_encoder,
)
from geopak.model.weights import WeightsError

SMALL = ["test_vit", "test_resnet", "clip_vit_tiny", "resnet_small"]


def test_registry_names_and_kinds() -> None:
    for name in ["clip_vit_b16", "resnet50_places365", *SMALL]:
        assert name in ENCODERS
        assert encoder_spec(name).name == name
    assert set(list_encoders("clip")) >= {"clip_vit_b16", "clip_vit_tiny", "test_vit"}
    assert set(list_encoders("scene")) >= {"resnet50_places365", "resnet_small", "test_resnet"}
    assert not set(list_encoders("clip")) & set(list_encoders("scene"))


def test_unknown_encoder_lists_known_names() -> None:
    with pytest.raises(UnknownEncoderError, match="clip_vit_b16"):
        create_encoder("vit_huge_nonexistent")


def test_duplicate_registration_rejected() -> None:
    def test_vit() -> EncoderSpec:  # same name as a registered one
        return encoder_spec("test_resnet")

    with pytest.raises(ValueError, match="already registered"):
        register_encoder(test_vit)


def test_real_specs_preprocessing() -> None:
    clip, scene = encoder_spec("clip_vit_b16"), encoder_spec("resnet50_places365")
    assert (clip.kind, clip.feature_dim, clip.input_size, clip.mean) == ("clip", 768, 224, CLIP_MEAN)
    assert (scene.kind, scene.feature_dim, scene.input_size, scene.std) == ("scene", 2048, 224, IMAGENET_STD)
    assert scene.weights is not None and scene.weights.converter == "places365"
    assert scene.weights.url == "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar"


def test_spec_dict_round_trip() -> None:
    for name in ["clip_vit_b16", "resnet50_places365", "test_resnet"]:
        spec = encoder_spec(name)
        assert EncoderSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", SMALL)
def test_small_encoders_forward(name: str) -> None:
    enc = create_encoder(name).eval()
    s = enc.spec.input_size
    with torch.inference_mode():
        out = enc(torch.rand(3, 3, s, s))
        resized = enc(torch.rand(2, 3, s + 13, s + 5))  # any size is resized to the encoder's own
    assert out.shape == (3, enc.spec.feature_dim) and torch.isfinite(out).all()
    assert resized.shape == (2, enc.spec.feature_dim)


def test_preprocess_normalises_with_own_statistics() -> None:
    enc = create_encoder("test_vit")
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    x = enc.preprocess(mean.expand(2, 3, 32, 32).clone())
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)
    big = enc.preprocess(torch.rand(1, 3, 64, 48))
    assert big.shape == (1, 3, 32, 32)


def test_bad_inputs_are_clear_errors() -> None:
    enc = create_encoder("test_resnet")
    with pytest.raises(TypeError, match="divide uint8"):
        enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(3, 32, 32))


def test_channels_last_same_output() -> None:
    torch.manual_seed(0)
    enc = create_encoder("test_resnet").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        a = enc(x)
        b = enc.set_channels_last(True)(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_spec_feature_dim_is_checked() -> None:
    bad = dataclasses.replace(encoder_spec("test_resnet"), feature_dim=99)
    with pytest.raises(ValueError, match="99"):
        Encoder(bad)


def test_vit_partial_unfreeze() -> None:
    enc = create_encoder("clip_vit_tiny")  # 4 blocks
    n = enc.set_trainable(0.3)  # ceil(1.2) = 2 blocks: 2, 3 + final norm
    names = {k for k, p in enc.backbone.named_parameters() if p.requires_grad}
    assert names and all(k.startswith(("blocks.2.", "blocks.3.", "norm.")) for k in names)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in names if k.startswith("blocks")} == {
        "blocks.2",
        "blocks.3",
    }
    assert "norm.weight" in names
    assert n == sum(p.numel() for k, p in enc.backbone.named_parameters() if k in names)
    assert enc.set_trainable(0.0) == 0
    assert enc.set_trainable(1.0) == sum(p.numel() for p in enc.parameters())
    with pytest.raises(ValueError):
        enc.set_trainable(1.5)


def test_resnet_partial_unfreeze_keeps_frozen_batchnorm_in_eval() -> None:
    enc = create_encoder("test_resnet")
    enc.set_trainable(0.2)  # layer4 only
    names = {k for k, p in enc.backbone.named_parameters() if p.requires_grad}
    assert names and all(k.startswith("layer4.") for k in names)
    enc.train()
    assert not enc.backbone.bn1.training and not enc.backbone.layer1[0].bn1.training
    assert enc.backbone.layer4[0].bn1.training
    before = enc.backbone.layer1[0].bn1.running_mean.clone()
    enc(torch.rand(4, 3, 32, 32))
    assert torch.equal(before, enc.backbone.layer1[0].bn1.running_mean)


def test_create_with_explicit_weight_file(tmp_path) -> None:
    torch.manual_seed(1)
    src = create_encoder("test_resnet").eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    dst = create_encoder("test_resnet", weights=path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(src(x), dst(x))
    with pytest.raises(WeightsError, match="do not fit"):
        create_encoder("test_vit", weights=path)
    with pytest.raises(WeightsError, match="not found"):
        create_encoder("test_resnet", weights=tmp_path / "missing.safetensors")


def test_vit_weights_with_classifier_head_load(tmp_path) -> None:
    """A timm checkpoint with its classifier/projection head loads: the head is dropped (pre-logits features)."""
    src = create_encoder("test_vit")
    sd = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    sd["head.weight"] = torch.zeros(10, 32)
    sd["head.bias"] = torch.zeros(10)
    path = tmp_path / "vit.safetensors"
    save_file(sd, str(path))
    dst = create_encoder("test_vit", weights=path)
    for k, v in dst.backbone.state_dict().items():
        assert torch.equal(v, sd[k])


def _to_openai_clip_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm CLIP-ViT keys -> the OpenAI/OpenCLIP checkpoint layout (``visual.*``), plus text-tower noise."""
    out = {"logit_scale": torch.ones(()), "token_embedding.weight": torch.zeros(10, 8)}
    for k, v in sd.items():
        if k == "cls_token":
            out["visual.class_embedding"] = v.reshape(-1)
            continue
        if k == "pos_embed":
            out["visual.positional_embedding"] = v[0]
            continue
        k = (
            k.replace("patch_embed.proj", "conv1")
            .replace("norm_pre", "ln_pre")
            .replace("blocks.", "transformer.resblocks.")
        )
        k = k.replace("norm1", "ln_1").replace("norm2", "ln_2").replace("attn.qkv.", "attn.in_proj_")
        k = (
            k.replace("attn.proj", "attn.out_proj")
            .replace("mlp.fc1", "mlp.c_fc")
            .replace("mlp.fc2", "mlp.c_proj")
        )
        if k.startswith("norm."):
            k = "ln_post." + k[len("norm.") :]
        out["visual." + k] = v
    out["visual.proj"] = torch.zeros(32, 16)  # CLIP's image projection: dropped (pre-logits features)
    return out


def test_openai_clip_layout_converts(tmp_path) -> None:
    """The real CLIP download is in the OpenAI/OpenCLIP layout; timm's filter maps it (tested at test size)."""
    torch.manual_seed(2)
    src = create_encoder("test_vit").eval()
    assert "norm_pre.weight" in src.backbone.state_dict()  # CLIP layout: pre-norm, no patch bias
    path = tmp_path / "open_clip.bin"
    torch.save(_to_openai_clip_layout(src.backbone.state_dict()), path)
    dst = create_encoder("test_vit", weights=path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(src(x), dst(x))


def test_real_clip_architecture_is_quickgelu() -> None:
    spec = encoder_spec("clip_vit_b16")
    assert spec.arch == "vit_base_patch16_clip_quickgelu_224"
    assert spec.weights is not None and "timm/vit_base_patch16_clip_224.openai" in spec.weights.url


def test_random_init_when_no_weights_requested() -> None:
    with pytest.raises(WeightsError, match="trained from scratch"):
        create_encoder("test_vit", weights="pretrained")


def test_recalibrate_batchnorm_uses_the_data_and_keeps_weights():
    import torch

    from geopak.model.encoders import create_encoder

    enc = create_encoder("test_resnet")
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and torch.all(bns[0].running_mean == 0)
    weights = {k: v.clone() for k, v in enc.state_dict().items() if "running" not in k and "num_batches" not in k}
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(8, 3, 32, 32, generator=g) * 0.5 + 0.25 for _ in range(3)]
    enc.eval()
    assert enc.recalibrate_batchnorm(batches) == 24
    assert not enc.training and all(m.momentum == 0.1 for m in bns)
    # The first batch norm's running mean is the data's per-channel mean of the stem's output.
    seen = []
    h = bns[0].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        for b in batches:
            enc(b)
    h.remove()
    expect = torch.cat(seen).mean(dim=(0, 2, 3))
    assert torch.allclose(bns[0].running_mean, expect, atol=1e-4)
    for k, v in weights.items():
        assert torch.equal(enc.state_dict()[k], v), k
    assert create_encoder("test_vit").recalibrate_batchnorm(batches) == 0  # no batch norm: nothing to do
