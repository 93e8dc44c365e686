"""Scene pretraining of the encoders on a tiny GeoPak-Synth set with the test-size encoders (32 px)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from geopak.model.encoders import create_encoder
from geopak.model.pretrain import (
    LOCATION_COLUMNS,
    SCENE_TARGETS,
    PretrainConfig,
    PretrainError,
    PretrainResult,
    SceneTarget,
    _check_targets,
    augment_batch,
    pretrain_encoders,
)

N_IMAGES = 64


def _config(**kw: Any) -> PretrainConfig:
    """Test encoders, 1 thread (fast on a busy machine), fp32 on CPU; ``kw`` overrides."""
    base = PretrainConfig(clip_encoder="test_vit", scene_encoder="test_resnet", epochs=6, batch_size=16, seed=3,
                          threads=1, bf16=False, device="cpu")
    return replace(base, **kw)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geopak.data.synth import generate

    out = tmp_path_factory.mktemp("pretrain-synth")
    generate(N_IMAGES, out, seed=7, size=32, workers=1, proportions=[1] * 7)
    return out


@pytest.fixture(scope="module")
def trained(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PretrainResult:
    return pretrain_encoders(synth_dir, tmp_path_factory.mktemp("pretrain-out"), _config())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_weights_load_with_create_encoder_and_differ_from_init(trained: PretrainResult) -> None:
    r = trained
    for role, name, path in (("clip", "test_vit", r.clip_weights), ("scene", "test_resnet", r.scene_weights)):
        enc = create_encoder(name, path)  # strict load through geopak.model.weights.load_state_dict_into
        saved = _tensors(path)
        own = enc.backbone.state_dict()
        assert set(saved) == set(own)
        assert all(torch.equal(own[k], saved[k]) for k in own)
        torch.manual_seed(r.summary["config"]["seed"] * 2 + (0 if role == "clip" else 1))
        init = create_encoder(name).backbone.state_dict()  # the same random start pretraining used
        changed = [k for k in own if own[k].is_floating_point() and not torch.equal(own[k], init[k])]
        assert len(changed) > 0.8 * sum(v.is_floating_point() for v in own.values()), role
    summary = json.loads((r.out_dir / "pretrain.json").read_text())
    assert summary["data"]["n"] == N_IMAGES and summary["data"]["n_holdout"] == round(0.1 * N_IMAGES)
    assert len(summary["data"]["manifest_sha256"]) == 64
    assert set(summary["files"]) == {"clip", "scene"}
    for role in ("clip", "scene"):
        held = summary["encoders"][role]["holdout"]
        assert set(held) == {t.name for t in SCENE_TARGETS}
        assert all(("r2" in m) != ("accuracy" in m) for m in held.values())


def test_training_loss_decreases(trained: PretrainResult) -> None:
    for role in ("clip", "scene"):
        losses = [e["train_loss"] for e in trained.summary["encoders"][role]["epochs"]]
        assert len(losses) == 6 and all(np.isfinite(losses))
        assert losses[-1] < 0.95 * losses[0], (role, losses)


def test_deterministic_for_a_seed(synth_dir: Path, trained: PretrainResult, tmp_path: Path) -> None:
    again = pretrain_encoders(synth_dir, tmp_path / "again", _config())
    assert not again.reused
    assert again.clip_weights.read_bytes() == trained.clip_weights.read_bytes()
    assert again.scene_weights.read_bytes() == trained.scene_weights.read_bytes()
    other = pretrain_encoders(synth_dir, tmp_path / "other", _config(seed=4, epochs=1))
    assert other.clip_weights.read_bytes() != trained.clip_weights.read_bytes()


def test_location_columns_are_never_used(synth_dir: Path, trained: PretrainResult, tmp_path: Path) -> None:
    """Scrambling every location column of both files leaves the weights bit for bit the same."""
    scrambled = tmp_path / "scrambled"
    scrambled.mkdir()
    (scrambled / "images").symlink_to(synth_dir / "images", target_is_directory=True)
    rng = np.random.default_rng(0)
    m = pd.read_parquet(synth_dir / "manifest.parquet")
    m["lat"], m["lon"] = rng.uniform(-80, 80, len(m)), rng.uniform(-170, 170, len(m))
    m["province"] = rng.permutation(m["province"].to_numpy())
    m.to_parquet(scrambled / "manifest.parquet", index=False)
    s = pd.read_parquet(synth_dir / "scenes.parquet")
    present = LOCATION_COLUMNS & set(s.columns)
    assert {"nearest_settlement", "anchor_settlement"} <= present
    for c in present:
        s[c] = "Nowhere"
    s.to_parquet(scrambled / "scenes.parquet", index=False)
    result = pretrain_encoders(scrambled, tmp_path / "out", _config())
    assert result.summary["data"]["manifest_sha256"] != trained.summary["data"]["manifest_sha256"]
    assert result.clip_weights.read_bytes() == trained.clip_weights.read_bytes()
    assert result.scene_weights.read_bytes() == trained.scene_weights.read_bytes()


def test_target_table_has_no_location_column() -> None:
    assert not {t.column for t in SCENE_TARGETS} & LOCATION_COLUMNS
    with pytest.raises(PretrainError, match="location column 'lat'"):
        _check_targets([*SCENE_TARGETS, SceneTarget("where", "lat", "continuous", "lat")])


def test_reuse_and_retrain(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = pretrain_encoders(synth_dir, out, _config(epochs=1))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = pretrain_encoders(synth_dir, out, _config(epochs=1, threads=2))  # threads do not change the result
    assert second.reused and not first.reused
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert second.summary == first.summary
    forced = pretrain_encoders(synth_dir, out, _config(epochs=1), force=True)
    assert not forced.reused and (out / "pretrain.json").stat().st_mtime_ns != stamps["pretrain.json"]
    changed = pretrain_encoders(synth_dir, out, _config(epochs=2))  # another config: the old result is replaced
    assert not changed.reused and len(changed.summary["encoders"]["clip"]["epochs"]) == 2
    # edited weights are not reused either
    changed.clip_weights.write_bytes(b"garbage")
    assert not pretrain_encoders(synth_dir, out, _config(epochs=2)).reused


def test_changed_images_are_not_reused(synth_dir: Path, tmp_path: Path) -> None:
    """Same manifest and scenes with images rendered differently (e.g. at another size): pretrain again."""
    from PIL import Image

    d = tmp_path / "copy"
    shutil.copytree(synth_dir, d)
    assert pretrain_encoders(d, tmp_path / "out", _config(epochs=1)).summary["data"]["n"] == N_IMAGES
    first = next(iter(sorted((d / "images").rglob("*.jpg"))))
    Image.open(first).convert("RGB").resize((40, 40)).save(first)
    assert not pretrain_encoders(d, tmp_path / "out", _config(epochs=1)).reused


def test_missing_scenes_is_a_clear_error(synth_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "no-scenes"
    d.mkdir()
    shutil.copy(synth_dir / "manifest.parquet", d / "manifest.parquet")
    with pytest.raises(PretrainError, match=r"scenes\.parquet.*geopak synth --n 3000"):
        pretrain_encoders(d, tmp_path / "out", _config())


def test_bad_data_and_config_are_clear_errors(synth_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "partial"
    d.mkdir()
    (d / "images").symlink_to(synth_dir / "images", target_is_directory=True)
    shutil.copy(synth_dir / "manifest.parquet", d / "manifest.parquet")
    s = pd.read_parquet(synth_dir / "scenes.parquet")
    s.iloc[5:].to_parquet(d / "scenes.parquet", index=False)
    with pytest.raises(PretrainError, match=r"5 of 64 ids .* missing in .*scenes\.parquet"):
        pretrain_encoders(d, tmp_path / "o1", _config())
    s.loc[2, "weather"] = "snow"
    s.to_parquet(d / "scenes.parquet", index=False)
    with pytest.raises(PretrainError, match=r"'weather' = 'snow' is not one of the classes"):
        pretrain_encoders(d, tmp_path / "o2", _config())
    with pytest.raises(PretrainError, match=r"too few images.*2 batches of 64"):
        pretrain_encoders(synth_dir, tmp_path / "o3", _config(batch_size=64))
    with pytest.raises(PretrainError, match="unknown encoder 'nope'"):
        pretrain_encoders(synth_dir, tmp_path / "o4", _config(scene_encoder="nope"))


def test_augmentation_is_a_zoom_and_a_jitter_only() -> None:
    """No flip or rotation: with the crop covering the whole image and no jitter, the batch is unchanged; a
    left-to-right ramp stays increasing left to right after any crop."""
    x = torch.rand(4, 3, 16, 16)
    same = augment_batch(x, torch.Generator().manual_seed(0), crop_scale=(1.0, 1.0), jitter=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    ramp = torch.linspace(0.1, 0.9, 32).view(1, 1, 1, 32).expand(8, 3, 32, 32).contiguous()
    out = augment_batch(ramp, torch.Generator().manual_seed(1))
    assert (out[..., 1:] >= out[..., :-1] - 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1


def test_cli_prints_the_out_dir(synth_dir: Path, tmp_path: Path) -> None:
    from geopak.cli import app

    out = tmp_path / "cli"
    args = ["model", "pretrain", "--data", str(synth_dir), "--out", str(out), "--clip", "test_vit", "--scene",
            "test_resnet", "--epochs", "1", "--batch-size", "16", "--seed", "1", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out.resolve())
    assert (out / "clip.safetensors").exists() and (out / "scene.safetensors").exists()
    assert json.loads((out / "pretrain.json").read_text())["config"]["epochs"] == 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "reused" in again.output
    bad = CliRunner().invoke(app, ["model", "pretrain", "--data", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2 and "geopak synth" in bad.output
