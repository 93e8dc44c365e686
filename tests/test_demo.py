"""A reduced demo through the real CLI: every stage runs and the report holds what it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from geopak.cli import app

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "geopak" / "configs"


def _fast_config(tmp_path: Path) -> Path:
    """The tiny config with test-size encoders at 32 px and one epoch per phase."""
    text = (CONFIG_DIR / "tiny.toml").read_text()
    text = text.replace('clip_encoder = "clip_vit_tiny"', 'clip_encoder = "test_vit"')
    text = text.replace('scene_encoder = "resnet_small"', 'scene_encoder = "test_resnet"')
    text = re.sub(r"image_size = \d+", "image_size = 32", text)
    text = re.sub(r"(?m)^epochs = \d+", "epochs = 1", text)
    path = tmp_path / "fast.toml"
    path.write_text(text)
    return path


def test_reduced_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--n", "300", "--size", "64", "--config", str(_fast_config(tmp_path)),
         "--max-steps", "3", "--n-predict", "2", "--min-cell", "10", "--workers", "1",
         "--pretrain-n", "160", "--pretrain-epochs", "1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == f"report: {out / 'report.html'}"

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n", "median_km", "macro_median_km", "acc_25km", "geoscore", "province_accuracy", "by_province"):
        assert key in metrics
    compare = json.loads((out / "compare.json").read_text())
    methods = {r["method"] for r in compare}
    assert {"geopak", "prior", "knn", "flat_cells", "regression"} <= methods
    assert (out / "checkpoint" / "model.safetensors").exists() and (out / "checkpoint" / "config.json").exists()
    # The encoders started from the scene-pretrained weights: the CLIP patch embedding (frozen in every phase)
    # in the checkpoint is the pretrained one.
    from safetensors.torch import load_file

    assert json.loads((out / "pretrain" / "pretrain.json").read_text())["data"]["n"] == 160
    pre = load_file(str(out / "pretrain" / "clip.safetensors"))["patch_embed.proj.weight"]
    assert (load_file(str(out / "checkpoint" / "model.safetensors"))["clip.backbone.patch_embed.proj.weight"]
            == pre).all()

    report = (out / "report.html").read_text()
    for needle in ("Headline", "Comparison", "Geocells", "Training", "Predictions on test images", "prior",
                   "regression", "macro median", "pretrained on scene attributes"):
        assert needle in report
    # Every image the report shows exists, and the promised figures are among them.
    srcs = re.findall(r"<img src='([^']+)'|<img src=\"([^\"]+)\"", report)
    files = [a or b for a, b in srcs]
    assert files and all((out / f).exists() for f in files)
    for name in ("contact_sheet.png", "cells.png", "error_cdf.png", "error_map.png", "prediction_0.png"):
        assert any(f.endswith(name) for f in files), name
    # The report says plainly how GEOPAK stands against the baselines, wins and losses alike.
    assert "GEOPAK is ahead of" in report or "GEOPAK does NOT beat" in report
