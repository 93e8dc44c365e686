"""GeopakModel: exact real-size architecture, tiny variant training, outputs, offsets, freezing, checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geopak import geo
from geopak.geocells import CellTable
from geopak.model import PAD_LOGIT, CheckpointError, GeopakConfig, GeopakModel, synthetic_cell_table
from geopak.model.geopak import REFERENCE_CELL_COUNTS
from geopak.provinces import NUM_PROVINCES

COUNTS = [6, 4, 0, 2, 3, 1, 2]  # Khyber Pakhtunkhwa has no cells


@pytest.fixture()
def cells() -> CellTable:
    return synthetic_cell_table(counts=COUNTS, seed=1)


@pytest.fixture()
def model(cells: CellTable) -> GeopakModel:
    torch.manual_seed(0)
    return GeopakModel(GeopakConfig.tiny(), cells)


def _images(b: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ real size
def _lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


@pytest.fixture(scope="module")
def real() -> GeopakModel:
    torch.manual_seed(0)
    return GeopakModel(GeopakConfig(), synthetic_cell_table())


def test_real_size_architecture(real: GeopakModel) -> None:
    """Parameter counts of the design's network, derived independently from its description."""
    c = real.param_counts()
    assert c["clip"] == 85_799_424  # ViT-B/16 CLIP image tower without its 512-d projection
    assert c["scene"] == 23_508_032  # ResNet-50 without fc
    d, ln = 512, 2 * 512
    assert c["fusion"] == _lin(768, d) + ln + _lin(2048, d) + ln + _lin(2 * d, 1)
    assert c["province_head"] == _lin(d, 256) + 2 * 256 + _lin(256, 7)
    n = list(REFERENCE_CELL_COUNTS)
    assert real.cells.counts_per_province.tolist() == n and real.n_cells == 699 and real.max_cells == 450
    assert c["cell_heads"] == sum(_lin(d, 512) + 2 * 512 + _lin(512, k) for k in n)
    h = 256
    block = 2 * h + 2 * _lin(h, h)
    assert c["offset_head"] == _lin(d, h) + _lin(96, h, False) + _lin(
        32, h, False
    ) + 2 * block + 2 * h + _lin(h, 2)
    assert c["aux_head"] == _lin(d, 256) + _lin(256, 2)
    assert c["embeddings"] == 7 * 32 + 699 * 96
    assert c["heads"] == c["province_head"] + c["cell_heads"] + c["offset_head"] + c["aux_head"]
    assert c["total"] == sum(p.numel() for p in real.parameters())
    assert len(real.clip.backbone.blocks) == 12 and real.clip.backbone.embed_dim == 768


def test_real_size_forward(real: GeopakModel) -> None:
    real.eval()
    t = time.perf_counter()
    with torch.inference_mode():
        out = real(torch.rand(1, 3, 224, 224))
    elapsed = time.perf_counter() - t
    assert out.province_logits.shape == (1, 7) and out.cell_logits.shape == (1, 7, 450)
    assert out.fused.shape == (1, 512) and torch.isfinite(out.province_logits).all()
    assert elapsed < 60, f"batch-1 forward of the real-size model took {elapsed:.1f} s"


def test_real_size_phase2_unfreezing(real: GeopakModel) -> None:
    real.unfreeze_top(0.3, 0.2)
    clip = {
        k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks") else "")
        for k, p in real.clip.backbone.named_parameters()
        if p.requires_grad
    }
    assert clip == {"blocks.8", "blocks.9", "blocks.10", "blocks.11", "norm"}
    scene = {k.split(".")[0] for k, p in real.scene.backbone.named_parameters() if p.requires_grad}
    assert scene == {"layer4"}
    groups = {g["name"]: g for g in real.param_groups({"clip": 1e-5, "scene": 5e-6, "default": 5e-4})}
    assert groups["clip"]["lr"] == 1e-5 and groups["scene"]["lr"] == 5e-6 and groups["heads"]["lr"] == 5e-4
    assert sum(p.numel() for p in groups["scene"]["params"]) == sum(
        p.numel() for p in real.scene.backbone.layer4.parameters()
    )
    real.freeze_encoders()
    assert {g["name"] for g in real.param_groups({"default": 1e-3})} == {"fusion", "heads", "embeddings"}


# -------------------------------------------------------------------------------------------- outputs
def test_output_shapes_and_padding(model: GeopakModel, cells: CellTable) -> None:
    out = model(_images())
    k = max(COUNTS)
    assert out.province_logits.shape == (4, NUM_PROVINCES)
    assert out.cell_logits.shape == (4, NUM_PROVINCES, k)
    assert out.aux_latlon.shape == (4, 2) and out.aux_latlon.dtype == torch.float32
    assert out.gate.shape == (4,) and out.fused.shape == (4, 32)
    for p, n in enumerate(COUNTS):
        assert (out.cell_logits[:, p, n:] == PAD_LOGIT).all()
        assert (out.cell_logits[:, p, :n] > PAD_LOGIT / 2).all()
    assert (out.cell_logits[:, 2] == PAD_LOGIT).all()  # a province without cells: all padding
    pi = model.padded_index
    assert pi.shape == (NUM_PROVINCES, k) and ((pi >= 0) == (out.cell_logits[0] != PAD_LOGIT)).all()


def test_cell_heads_match_per_image_evaluation(model: GeopakModel) -> None:
    """The batched scatter gives, for each image and province, exactly that province's head on that image."""
    model.eval()
    out = model(_images(3))
    for b in range(3):
        for p, n in enumerate(COUNTS):
            if n:
                ref = model.cell_heads.head_logits(p, out.fused[b : b + 1])[0]
                assert torch.allclose(out.cell_logits[b, p, :n], ref, atol=1e-5)


def test_cell_heads_load_the_per_province_module_layout() -> None:
    """A state dict with one ``heads.{p}`` Sequential per province (earlier checkpoints) loads into the
    vectorised heads and gives the same logits as those separate modules."""
    from torch import nn

    from geopak.model.heads import CellHeads, mlp_head

    torch.manual_seed(0)
    counts = list(COUNTS)
    old = nn.ModuleDict({str(p): mlp_head(16, 8, n) for p, n in enumerate(counts) if n})
    sd = {f"heads.{k}": v for k, v in old.state_dict().items()}
    heads = CellHeads(16, 8, counts)
    heads.load_state_dict(sd)
    x = torch.randn(5, 16)
    out = heads(x)
    for p, n in enumerate(counts):
        if n:
            assert torch.allclose(out[:, p, :n], old[str(p)](x), atol=1e-5)
        assert (out[:, p, n:] == PAD_LOGIT).all()


def test_gate_in_unit_interval_and_fusion_formula(model: GeopakModel) -> None:
    clip_feat, scene_feat = model.encode(_images(8))
    out = model.forward_features(clip_feat, scene_feat)
    assert ((out.gate >= 0) & (out.gate <= 1)).all()
    ec, es = model.clip_proj(clip_feat), model.scene_proj(scene_feat)
    a = out.gate[:, None]
    assert torch.allclose(out.fused, a * es + (1 - a) * ec, atol=1e-6)
    with torch.no_grad():  # a saturated gate stays within [0, 1]
        model.fusion.gate.bias.fill_(50.0)
    assert torch.allclose(model.forward_features(clip_feat, scene_feat).gate, torch.ones(8))


def test_mean_fusion(cells: CellTable) -> None:
    m = GeopakModel(GeopakConfig.tiny(fusion="mean"), cells)
    clip_feat, scene_feat = m.encode(_images())
    out = m.forward_features(clip_feat, scene_feat)
    assert torch.equal(out.gate, torch.full((4,), 0.5))
    assert torch.allclose(out.fused, 0.5 * (m.clip_proj(clip_feat) + m.scene_proj(scene_feat)))
    assert m.fusion.gate is None


def test_bf16_autocast(model: GeopakModel) -> None:
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_images())
        off = model.offsets(out.fused, torch.zeros(4, 3, dtype=torch.long))
    assert out.fused.dtype == torch.bfloat16
    for t in (out.province_logits, out.cell_logits, out.aux_latlon, off):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert (out.cell_logits[:, 2] == PAD_LOGIT).all()
    assert (off.abs() <= model.clamp_km[0] + 1e-4).all()


def test_forward_is_encode_then_forward_features(model: GeopakModel) -> None:
    model.eval()
    x = _images()
    a, b = model(x), model.forward_features(*model.encode(x))
    assert torch.equal(a.cell_logits, b.cell_logits) and torch.equal(a.gate, b.gate)


def test_feature_shape_errors(model: GeopakModel) -> None:
    with pytest.raises(ValueError, match="clip_feat"):
        model.forward_features(torch.zeros(2, 5), torch.zeros(2, 64))
    with pytest.raises(ValueError, match="batch sizes"):
        model.forward_features(torch.zeros(2, 32), torch.zeros(3, 64))


def test_frozen_encoders_build_no_graph(model: GeopakModel) -> None:
    model.freeze_encoders()
    clip_feat, scene_feat = model.encode(_images())
    assert not clip_feat.requires_grad and not scene_feat.requires_grad
    assert model(_images()).province_logits.requires_grad


# -------------------------------------------------------------------------------------------- offsets
def test_offsets_respect_clamp(model: GeopakModel) -> None:
    with torch.no_grad():  # make the head saturate
        model.offset_head.out.weight.normal_(0, 50.0)
        model.offset_head.out.bias.normal_(0, 50.0)
    fused = model(_images(5)).fused
    ids = torch.randint(0, model.n_cells, (5, 9), generator=torch.Generator().manual_seed(0))
    off = model.offsets(fused, ids)
    assert off.shape == (5, 9, 2) and off.dtype == torch.float32
    clamp = model.clamp_km[ids].unsqueeze(-1)
    assert (off.abs() <= clamp + 1e-4).all()
    assert (off.abs() > 0.5 * clamp).float().mean() > 0.5  # saturated: most are near the bound
    assert model.offsets(fused, ids[:, 0]).shape == (5, 2)
    assert torch.allclose(model.offsets(fused, ids[:, 3]), off[:, 3], atol=1e-5)  # hypotheses independent


def test_offset_bad_ids(model: GeopakModel) -> None:
    fused = torch.zeros(2, 32)
    with pytest.raises(ValueError, match="cell ids"):
        model.offsets(fused, torch.tensor([[0, model.n_cells]]).expand(2, 2))
    with pytest.raises(ValueError, match=r"\(B, H\)"):
        model.offsets(fused, torch.zeros(3, 2, dtype=torch.long))


def test_offset_positions(model: GeopakModel, cells: CellTable) -> None:
    fused = model(_images(2)).fused
    ids = torch.tensor([[0, 5, 17], [1, 2, 3]])
    lat, lon = model.predict_offset_positions(fused, ids)
    assert lat.shape == (2, 3)
    c = torch.tensor(cells.centers)[ids]
    assert torch.allclose(lat, c[..., 0]) and torch.allclose(lon, c[..., 1])  # zero-initialised offsets
    with torch.no_grad():
        model.offset_head.out.bias.copy_(torch.tensor([0.3, -0.2]))
    lat, lon = model.predict_offset_positions(fused, ids)
    off = model.offsets(fused, ids).double()
    n, e = geo.offset_km_between(c[..., 0], c[..., 1], lat, lon)
    assert torch.allclose(n, off[..., 0], atol=1e-6) and torch.allclose(e, off[..., 1], atol=1e-6)


# ------------------------------------------------------------------------------------------- training
def test_tiny_model_trains(cells: CellTable) -> None:
    torch.manual_seed(0)
    m = GeopakModel(GeopakConfig.tiny(), cells)
    m.train()
    x = _images(16, seed=3)
    prov = torch.tensor(cells.province_ids)[torch.arange(16) % cells.n_cells]
    cell = torch.arange(16) % cells.n_cells
    local = torch.tensor(cells.local_index)[cell]
    opt = torch.optim.AdamW(m.param_groups({"default": 3e-3}), weight_decay=0.0)

    def loss_fn() -> torch.Tensor:
        out = m(x)
        off = m.offsets(out.fused, cell[:, None])[:, 0]
        return (
            F.cross_entropy(out.province_logits, prov)
            + F.cross_entropy(out.cell_logits[torch.arange(16), prov], local)
            + (off - 1.0).pow(2).mean()
            + (out.aux_latlon - 30.0).pow(2).mean() * 0.01
        )

    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is not None for p in m.clip.parameters())  # gradients reach the encoders


def test_param_groups_validation(model: GeopakModel) -> None:
    groups = model.param_groups({"clip": 1.0, "scene": 2.0, "fusion": 3.0, "heads": 4.0, "embeddings": 5.0})
    assert [g["name"] for g in groups] == ["clip", "scene", "fusion", "heads", "embeddings"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="no learning rate"):
        model.param_groups({"heads": 1e-3})
    with pytest.raises(ValueError, match="unknown parameter groups"):
        model.param_groups({"default": 1e-3, "head": 1e-3})


def test_freezing_counts(model: GeopakModel) -> None:
    total = model.param_counts()
    model.freeze_encoders()
    t = model.param_counts(trainable_only=True)
    assert t["clip"] == 0 and t["scene"] == 0 and t["heads"] == total["heads"]
    model.unfreeze_top(0.5, 0.25)  # test_vit: top 1 of 2 blocks + norm; test_resnet: layer4
    t = model.param_counts(trainable_only=True)
    vit = model.clip.backbone
    assert t["clip"] == sum(p.numel() for p in [*vit.blocks[1].parameters(), *vit.norm.parameters()])
    assert t["scene"] == sum(p.numel() for p in model.scene.backbone.layer4.parameters())
    model.unfreeze_top(1.0, 1.0)
    assert model.param_counts(trainable_only=True) == total


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fusion"):
        GeopakConfig(fusion="concat")
    with pytest.raises(ValueError, match="unknown GeopakConfig keys"):
        GeopakConfig.from_dict({"fusion_dims": 3})
    cfg = GeopakConfig.tiny()
    assert GeopakConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_bit_exact(model: GeopakModel, cells: CellTable, tmp_path: Path) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # move away from the initialisation
    out = model(_images())
    (
        out.province_logits.sum() + model.offsets(out.fused, torch.zeros(4, 1, dtype=torch.long)).sum()
    ).backward()
    opt.step()
    model.offset_head.out.bias.data += 0.5
    d = model.save_checkpoint(tmp_path / "ckpt", phase=2, extra={"val_median_km": 12.5})
    assert {"model.safetensors", "config.json", "cells.parquet"} <= {p.name for p in d.iterdir()}
    assert not list(d.glob("*.tmp"))
    assert GeopakModel(GeopakConfig.tiny(), cells).checkpoint_meta == {}
    meta = json.loads((d / "config.json").read_text())
    assert meta["phase"] == 2 and meta["cell_table_hash"] == cells.content_hash
    assert meta["encoders"]["clip"]["mean"] and meta["encoders"]["scene"]["input_size"] == 32
    assert len(meta["provinces"]) == 7 and meta["geopak_version"]

    loaded = GeopakModel.from_checkpoint(d)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    for name in ("padded_index", "cell_centers", "clamp_km", "cell_province"):
        assert torch.equal(getattr(model, name), getattr(loaded, name))
    assert loaded.config == model.config and loaded.cells.content_hash == cells.content_hash
    assert loaded.checkpoint_meta["extra"] == {"val_median_km": 12.5}
    model.eval(), loaded.eval()
    x = _images(3, seed=9)
    o1, o2 = model(x), loaded(x)
    for f in ("province_logits", "cell_logits", "aux_latlon", "gate", "fused"):
        assert torch.equal(getattr(o1, f), getattr(o2, f)), f
    ids = torch.tensor([[0, 3], [5, 7], [1, 1]])
    assert torch.equal(model.offsets(o1.fused, ids), loaded.offsets(o2.fused, ids))
    assert CellTable.load(d).content_hash == cells.content_hash
    GeopakModel.from_checkpoint(d, cells=CellTable.load(d))  # the same table is accepted


def test_checkpoint_with_other_cell_table_is_an_error(model: GeopakModel, tmp_path: Path) -> None:
    d = model.save_checkpoint(tmp_path / "ckpt")
    other = synthetic_cell_table(counts=COUNTS, seed=2)  # same sizes, different cells
    with pytest.raises(CheckpointError, match="cell table mismatch"):
        GeopakModel.from_checkpoint(d, cells=other)


def test_checkpoint_tampering_and_missing_files(model: GeopakModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a GEOPAK checkpoint"):
        GeopakModel.from_checkpoint(tmp_path / "nothing")
    d = model.save_checkpoint(tmp_path / "ckpt")
    meta = json.loads((d / "config.json").read_text())
    meta["cells"]["cells"][0]["center_lat"] += 0.5
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hash"):
        GeopakModel.from_checkpoint(d)
    model.save_checkpoint(tmp_path / "c2")
    meta = json.loads((tmp_path / "c2" / "config.json").read_text())
    meta["config"]["cell_hidden"] = 48
    (tmp_path / "c2" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit"):
        GeopakModel.from_checkpoint(tmp_path / "c2")


def test_synthetic_cell_table_proportions() -> None:
    t = synthetic_cell_table()
    assert t.counts_per_province.tolist() == list(REFERENCE_CELL_COUNTS)
    small = synthetic_cell_table(20)
    assert small.n_cells == 20 and (small.counts_per_province >= 1).all()
    assert np.argmax(small.counts_per_province) == 0


def test_describe_cli() -> None:
    from typer.testing import CliRunner

    from geopak.cli import app

    res = CliRunner().invoke(
        app, ["model", "describe", "--clip", "test_vit", "--scene", "test_resnet", "--cells", "30"]
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output.strip().splitlines()[-1])
    assert d["total"] == sum(d[k] for k in ("clip", "scene", "fusion", "heads", "embeddings"))
    m = GeopakModel(
        GeopakConfig(clip_encoder="test_vit", scene_encoder="test_resnet"), synthetic_cell_table(30)
    )
    assert {k: d[k] for k in m.param_counts()} == m.param_counts()
    assert d["model"]["n_cells"] == 30 and d["embeddings"] == 7 * 32 + 30 * 96
    bad = CliRunner().invoke(app, ["model", "describe", "--clip", "nope"])
    assert bad.exit_code != 0 and "nope" in bad.output
