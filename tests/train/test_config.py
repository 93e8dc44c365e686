"""Typed training config: named configs, validation errors, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geopak.train.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    named_configs,
    parse_override,
)


def test_named_configs_load_and_follow_the_design() -> None:
    assert {"tiny", "full"} <= set(named_configs())
    full = load_config("full")
    assert (full.model.clip_encoder, full.model.scene_encoder) == ("clip_vit_b16", "resnet50_places365")
    assert full.data.image_size == 224 and full.trainer.precision == "bf16-mixed"
    p0, p1, p2 = full.phase("phase0"), full.phase("phase1"), full.phase("phase2")
    assert p0.objective == "province" and p0.frozen_encoders and p0.cached and 5 <= p0.epochs <= 8
    assert p1.lr["heads"] == 1e-3 and p1.cached and 15 <= p1.epochs <= 30
    assert (p2.clip_fraction, p2.scene_fraction) == (0.3, 0.2)
    assert (p2.lr["clip"], p2.lr["scene"], p2.lr["heads"]) == (1e-5, 5e-6, 5e-4)
    assert p2.schedule == "cosine" and p2.weight_decay == 1e-5 and not p2.cached
    assert not full.phase("phase3").enabled
    loss = full.loss
    assert (loss.province, loss.cell, loss.offset, loss.aux, loss.beta) == (0.5, 1.0, 1.0, 0.1, 0.9995)
    tiny = load_config("tiny")
    assert tiny.model.clip_encoder == "clip_vit_tiny" and tiny.data.image_size == 96
    assert [p.name for p in tiny.phases if p.enabled] == ["phase0", "phase1", "phase2"]


def _base() -> dict:
    return config_to_dict(load_config("tiny"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["data"].update(batch_szie=3), "did you mean 'batch_size'"),
        (lambda d: d["data"].update(batch_size="64"), "data.batch_size: expected an integer"),
        (lambda d: d["loss"].update(label_smoothing="yes"), "loss.label_smoothing: expected true/false"),
        (lambda d: d["trainer"].update(precision="fp8"), "trainer.precision: 'fp8' is not one of"),
        (lambda d: d["model"].update(fusion="concat"), "fusion must be 'gate' or 'mean'"),
        (lambda d: d["phases"][2]["lr"].pop("clip"), "unfreezes the clip encoder but lr.clip is not set"),
        (lambda d: d["phases"][1]["lr"].update(clip=1e-5), "encoder is frozen"),
        (lambda d: d["phases"][1]["lr"].update(head=1e-3), "unknown lr group 'head'"),
        (lambda d: d["phases"][1].update(name="phase7"), "name must be one of"),
        (lambda d: d["phases"].reverse(), "must be listed in order"),
        (lambda d: d["phases"][2].update(use_cache=True), "use_cache=true needs both encoders frozen"),
        (lambda d: d["phases"][0].update(monitor="val/macro_median_km"), "province-only phase"),
        (lambda d: d["phases"][1].update(epochs=0), "epochs must be >= 1"),
        (lambda d: d["data"].update(quotas={"Sindh": 16, "KPK": 8}), "quotas sum to 24"),
        (lambda d: d["data"].update(quotas={"Sindh": 32, "Narnia": 32}), "unknown province 'Narnia'"),
        (lambda d: d.update(phases=[]), "at least one phase"),
        (lambda d: d["data"].update(val_fraction=1.5), "val_fraction"),
    ],
)
def test_invalid_configs_name_the_key(edit, message: str) -> None:
    d = _base()
    edit(d)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(d, "my.toml")


def test_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[data]\nimage_size = "big"\n[[phases]]\nname = "phase1"\nlr = { heads = 1e-3 }\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*data\.image_size"):
        load_config(p)
    p.write_text("[data\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="no config named 'huge'.*tiny"):
        load_config("huge")


def test_file_round_trip_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text(
        '[model]\nclip_encoder = "test_vit"\nscene_encoder = "test_resnet"\nfusion_dim = 16\n'
        '[[phases]]\nname = "phase1"\nepochs = 2\nlr = { heads = 1e-3, fusion = 1e-3 }\n'
    )
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.model.fusion_dim == 16 and cfg.data.batch_size == 64
    assert cfg.phases[0].cached and cfg.phases[0].schedule == "cosine"
    j = tmp_path / "mine.json"
    j.write_text(json.dumps(config_to_dict(cfg)))
    assert load_config(j) == cfg


def test_overrides() -> None:
    cfg = load_config("tiny")
    o = cfg.with_overrides(
        {"loss.label_smoothing": False, "model.fusion": "mean", "phases.phase1.epochs": 3,
         "phases.*.max_steps": 5, "phases.phase2.lr.heads": 1e-4}
    )
    assert o.loss.label_smoothing is False and o.model.fusion == "mean"
    assert o.phase("phase1").epochs == 3 and all(p.max_steps == 5 for p in o.phases)
    assert o.phase("phase2").lr["heads"] == 1e-4 and o.phase("phase2").lr["clip"] == 1e-4
    assert cfg.loss.label_smoothing is True  # the original is untouched
    only = apply_overrides(cfg, {"phases": ["phase0", "phase1"]})
    assert [p.name for p in only.phases] == ["phase0", "phase1"]
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        cfg.with_overrides({"data.batchsize": 3})
    with pytest.raises(ConfigError, match="no phase 'phase9'"):
        cfg.with_overrides({"phases.phase9.epochs": 3})
    with pytest.raises(ConfigError, match="must be >= 1"):
        cfg.with_overrides({"data.image_size": 0})


def test_parse_override() -> None:
    assert parse_override("phases.phase1.epochs=3") == ("phases.phase1.epochs", 3)
    assert parse_override("loss.label_smoothing=false") == ("loss.label_smoothing", False)
    assert parse_override("model.fusion=mean") == ("model.fusion", "mean")
    assert parse_override("phases.phase2.lr={ heads = 1e-4 }") == ("phases.phase2.lr", {"heads": 1e-4})
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("nothing")


def test_default_dataclass_is_usable() -> None:
    assert isinstance(load_config("tiny"), TrainConfig)
    with pytest.raises(ConfigError, match="no phase"):
        load_config("tiny").phase("phase9")
