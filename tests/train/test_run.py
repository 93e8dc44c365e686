"""The training engine end to end on a tiny dataset: phases in sequence, resume after a kill, 2-process DDP,
and the CLI's last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from geopak.model.geopak import GeopakModel
from geopak.provinces import PROVINCE_NAMES
from geopak.train.config import TrainConfig, config_to_dict, load_config
from geopak.train.run import TrainError, load_training_data, province_prior_shift, train

from . import make_tiny_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    manifest, cells = make_tiny_data(root)
    return manifest, cells, root / "feature-cache"


def tiny_config(cache_dir: Path, **phase_epochs: int) -> TrainConfig:
    """The shipped tiny config shrunk to test encoders at 32 px, with a shared feature cache."""
    base = load_config("tiny")
    model = {**config_to_dict(base)["model"], "clip_encoder": "test_vit", "scene_encoder": "test_resnet"}
    over = {
        "model": model,
        "data.image_size": 32,
        "data.batch_size": 28,
        "data.eval_batch_size": 64,
        "data.cache_dir": str(cache_dir),
        "data.augment": {"weather_p": 0.0, "jitter_p": 0.0},
        "trainer.progress_bar": False,
        "trainer.tensorboard": False,
        "trainer.log_every_n_steps": 2,
        "trainer.num_threads": 1,
        "phases.phase0.epochs": phase_epochs.get("phase0", 3),
        "phases.phase1.epochs": phase_epochs.get("phase1", 3),
        "phases.phase2.epochs": phase_epochs.get("phase2", 1),
    }
    return base.with_overrides(over)


def test_three_phases_in_sequence(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cells, cache = data
    # keep_better_phase off: this test checks what each phase's own training changes
    cfg = tiny_config(cache).with_overrides({"trainer.tensorboard": True, "trainer.keep_better_phase": False})
    out = tmp_path / "run"
    final = train(cfg, manifest, cells, out)
    assert final == out / "phase2"
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["phases"]) == ["phase0", "phase1", "phase2"]
    base = summary["baselines"]
    p0, p1, p2 = (summary["phases"][p] for p in ("phase0", "phase1", "phase2"))
    # phase 0 learns provinces well beyond the majority class; phase 1 beats the prior by far
    assert p0["val"]["province_accuracy"] > base["majority_province_accuracy"] + 0.3
    assert p1["val"]["macro_median_km"] < 0.6 * base["prior_macro_median_km"]
    assert p0["cached"] and p1["cached"] and not p2["cached"]
    assert p0["monitor"] == "val/province_accuracy" and p1["monitor"] == "val/macro_median_km"
    assert all(p["wall_seconds"] > 0 for p in (p0, p1, p2))
    # every phase exports a GEOPAK checkpoint the next one starts from; Lightning's files and logs apart
    for name in ("phase0", "phase1", "phase2"):
        d = out / name
        assert (d / "model.safetensors").exists() and (d / "config.json").exists()
        assert not (d / "lightning").exists()  # the export holds only the checkpoint
        assert (out / "lightning" / name / "checkpoints" / "last.ckpt").exists()
        assert (out / "lightning" / name / "logs" / "metrics.csv").exists()
    assert list((out / "lightning" / "phase1" / "tensorboard").glob("events.out.tfevents*"))
    log = pd.read_csv(out / "lightning" / "phase1" / "logs" / "metrics.csv")
    assert log["val/macro_median_km"].notna().sum() >= 3 and log["train/loss_step"].notna().any()
    model = GeopakModel.from_checkpoint(final)
    assert model.checkpoint_meta["phase"] == "phase2"
    assert model.checkpoint_meta["extra"]["val_metrics"]["n"] == summary["n_val"]
    counts = np.array([summary["train_counts"][n] for n in PROVINCE_NAMES])
    shift = province_prior_shift(cfg, counts)
    for name in ("phase0", "phase1", "phase2"):  # every export: temperatures fitted on the validation rows
        cal = GeopakModel.from_checkpoint(out / name).checkpoint_meta["extra"]["calibration"]
        assert cal["n"] == summary["n_val"] and cal["province_temperature"] > 0 and cal["cell_temperature"] > 0
        np.testing.assert_allclose(cal["province_prior_shift"], shift, atol=1e-5)  # for prior="data"
    # validation also scores the province head under the training data's own mix (the shift above)
    assert 0.0 <= p0["val"]["province_accuracy_data_prior"] <= 1.0
    assert 0.0 <= p0["val"]["balanced_province_accuracy"] <= 1.0
    # phase 0 trained only fusion + heads; phase 1 also the embeddings; phase 2 the encoders' top layers
    w = {n: load_file(out / n / "model.safetensors") for n in ("phase0", "phase1", "phase2")}
    init_enc = "scene.backbone.layer4.0.conv1.weight"
    assert torch.equal(w["phase0"][init_enc], w["phase1"][init_enc])
    assert not torch.equal(w["phase1"][init_enc], w["phase2"][init_enc])
    assert torch.equal(w["phase1"]["scene.backbone.conv1.weight"], w["phase2"]["scene.backbone.conv1.weight"])
    assert not torch.equal(w["phase0"]["cell_embedding.weight"], w["phase1"]["cell_embedding.weight"])
    # the features were cached once and reused by phase 1
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    # running again resumes: every phase is complete, nothing retrains
    assert train(cfg, manifest, cells, out) == final
    # a different config cannot continue this run
    with pytest.raises(TrainError, match="different config.*loss.label_smoothing"):
        train(cfg.with_overrides({"loss.label_smoothing": False}), manifest, cells, out)


class Kill(pl.Callback):
    """Simulates a crash after a given epoch of a given phase (its checkpoint is already written)."""

    def __init__(self, phase: str, epoch: int) -> None:
        self.phase, self.epoch = phase, epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.phase.name == self.phase and trainer.current_epoch == self.epoch:
            raise RuntimeError(f"killed after {self.phase} epoch {self.epoch}")


def test_resume_after_kill_reproduces_the_run(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cells, cache = data
    cfg = tiny_config(cache, phase1=3, phase2=2).with_overrides({"phases": ["phase1", "phase2"]})
    ref = train(cfg, manifest, cells, tmp_path / "ref")
    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed after phase1 epoch 1"):
        train(cfg, manifest, cells, out, callbacks=[Kill("phase1", 1)])
    with pytest.raises(RuntimeError, match="killed after phase2 epoch 0"):
        train(cfg, manifest, cells, out, callbacks=[Kill("phase2", 0)])
    assert not (out / "phase2" / "model.safetensors").exists()
    final = train(cfg, manifest, cells, out)
    for name in ("phase1", "phase2"):
        a = load_file(ref.parent / name / "model.safetensors")
        b = load_file(out / name / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=f"{name} {k}")
    sa = json.loads((ref.parent / "summary.json").read_text())["phases"]
    sb = json.loads((final.parent / "summary.json").read_text())["phases"]
    for name in ("phase1", "phase2"):
        assert sa[name]["global_step"] == sb[name]["global_step"]
        assert sb[name]["val"]["macro_median_km"] == pytest.approx(sa[name]["val"]["macro_median_km"], rel=1e-5)


def test_phase_needs_its_predecessor(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cells, cache = data
    with pytest.raises(TrainError, match="run phase1 first"):
        train(tiny_config(cache), manifest, cells, tmp_path / "run", phases=["phase2"])


def test_training_data_checks(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cells, _ = data
    df = pd.read_parquet(manifest)
    # no split column: a seeded, per-province validation share is carved
    nosplit, table = load_training_data(df.drop(columns="split"), cells, val_fraction=0.25, seed=3)
    again, _ = load_training_data(df.drop(columns="split"), cells, val_fraction=0.25, seed=3)
    assert (nosplit["split"] == again["split"]).all()
    counts = nosplit[nosplit["split"] == "val"].groupby("province").size()
    assert len(counts) == 7 and (counts == 6).all()
    assert (nosplit["cell_id"] >= 0).all() and table.n_cells == 14
    bad = df.astype({"lat": object})
    bad.loc[5, "lat"] = "north"
    with pytest.raises(TrainError, match=r"row 5 \(id 'SD-005'\) has lat='north'"):
        load_training_data(bad, cells)
    bad = df.copy()
    bad.loc[2, "province"] = "Atlantis"
    with pytest.raises(TrainError, match="unknown province 'Atlantis'"):
        load_training_data(bad, cells)
    with pytest.raises(TrainError, match="missing columns \\['path'\\]"):
        load_training_data(df.drop(columns="path"), cells)
    with pytest.raises(TrainError, match="split 'holdout'"):
        load_training_data(df.assign(split="holdout"), cells)


def _cli(args: list[str], env_extra: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("LOCAL_RANK", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "geopak"), *args],
        check=False, capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_cli_ddp_two_processes(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """`geopak train --devices 2` on CPU: two gloo processes, the sampler shards batches, one export; the
    last line printed is the final checkpoint folder."""
    manifest, cells, cache = data
    cfg = tiny_config(cache, phase0=1, phase1=2).with_overrides({"phases": ["phase0", "phase1"]})
    cfile = tmp_path / "cfg.json"
    cfile.write_text(json.dumps(config_to_dict(cfg)))
    out = tmp_path / "ddp"
    r = _cli(
        ["train", "--config", str(cfile), "--manifest", str(manifest), "--cells", str(cells), "--out", str(out),
         "--devices", "2", "--accelerator", "cpu", "--max-steps", "3", "--no-progress"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines[-1] == str(out.resolve() / "phase1")
    s = json.loads((out / "summary.json").read_text())
    p1 = s["phases"]["phase1"]
    assert p1["world_size"] == 2 and p1["global_step"] == 3
    # every validation row was scored once, whatever the sharding
    assert p1["val"]["n"] == s["n_val"]
    assert np.isfinite(p1["val"]["macro_median_km"])


def test_province_weights_undo_the_samplers_oversampling() -> None:
    from geopak.losses import province_class_weights
    from geopak.train.run import province_weights

    counts = np.array([1153, 149, 94, 77, 43, 64, 20])
    quotas = np.array([16, 8, 8, 8, 8, 8, 8])
    cfg = load_config("tiny")
    w = province_weights(cfg, counts)
    # expected class mass per batch (quota x weight) is the effective-number mass over the dataset (n x w_eff)
    eff = province_class_weights(counts, cfg.loss.beta).numpy()
    np.testing.assert_allclose((quotas * w) / (quotas * w).sum(), (counts * eff) / (counts * eff).sum(), rtol=1e-5)
    assert w.mean() == pytest.approx(1.0)
    seed = province_weights(cfg.with_overrides({"loss.province_weighting": "effective"}), counts)
    np.testing.assert_allclose(seed, eff, rtol=1e-6)
    flat = province_weights(cfg.with_overrides({"loss.province_weighting": "none"}), np.array([5, 0, 1, 1, 1, 1, 1]))
    assert flat.tolist() == [1, 0, 1, 1, 1, 1, 1]


def test_launch_layout_from_torchrun_and_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    from geopak.train.run import _external_layout

    for k in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES", "SLURM_JOB_NAME"):
        monkeypatch.delenv(k, raising=False)
    assert _external_layout() == (None, None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert _external_layout() == (4, 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8(x2)")
    monkeypatch.setenv("SLURM_NNODES", "2")
    assert _external_layout() == (8, 2)


def test_a_phase_that_makes_validation_worse_keeps_the_previous_weights(
    data: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    manifest, cells, cache = data
    # phase 1 with an absurd learning rate wrecks the heads; its export must keep phase 0's weights.
    cfg = tiny_config(cache, phase0=2, phase1=1).with_overrides(
        {"phases.phase1.lr": {"heads": 50.0, "fusion": 50.0, "embeddings": 50.0},
         "phases.phase1.monitor": "val/province_accuracy", "phases.phase1.monitor_mode": "max"}
    )
    out = tmp_path / "run"
    train(cfg, manifest, cells, out, phases=["phase0", "phase1"])
    s1 = json.loads((out / "phase1" / "phase_summary.json").read_text())
    s0 = json.loads((out / "phase0" / "phase_summary.json").read_text())
    if not s1["kept_previous_weights"]:
        pytest.skip("the wrecked phase happened not to score worse on this tiny set")
    assert any("did not improve" in w for w in s1["warnings"])
    assert s1["val"]["province_accuracy"] == s0["val"]["province_accuracy"]
    w0, w1 = load_file(out / "phase0" / "model.safetensors"), load_file(out / "phase1" / "model.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_monitors_warn_once_when_a_condition_starts(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The seed's monitors: a rare province under the accuracy floor, and an offset loss that collapses. With
    thresholds no model can meet, both fire, and each condition warns once per phase, not once per epoch."""
    manifest, cells, cache = data
    cfg = tiny_config(cache, phase0=1, phase1=3).with_overrides(
        {"monitor.rare_share": 0.5, "monitor.rare_accuracy": 1.0, "monitor.offset_collapse_km": 1e6}
    )
    out = tmp_path / "run"
    train(cfg, manifest, cells, out, phases=["phase0", "phase1"])
    summary = json.loads((out / "summary.json").read_text())
    p1 = json.loads((out / "phase1" / "phase_summary.json").read_text())
    rare = [w for w in p1["warnings"] if isinstance(w, dict) and w["kind"] == "rare_province_accuracy"]
    below = {n for n in summary["rare_provinces"]
             if (p1["val"]["by_province"].get(n) or {}).get("province_accuracy", 1.0) < 1.0}
    assert rare and {w["province"] for w in rare} >= below
    assert len({w["province"] for w in rare}) == len(rare)  # one warning per province, though 3 epochs fired
    collapse = [w for w in p1["warnings"] if isinstance(w, dict) and w["kind"] == "offset_collapse"]
    assert len(collapse) == 1 and collapse[0]["epoch"] == 1  # from the second epoch on, once
    assert summary["monitor_warnings"]  # the run summary (and the demo report) carries them
