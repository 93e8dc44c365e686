"""`geopak model` commands: describe the network's size, list encoders, fetch pretrained weights."""

from __future__ import annotations

import json
from pathlib import Path

import typer

model_app = typer.Typer(help="The network: sizes, encoders, pretrained weights.", no_args_is_help=True)


@model_app.command("describe")
def describe(
    clip: str = typer.Option("clip_vit_b16", "--clip", help="Registered semantic (CLIP) encoder."),
    scene: str = typer.Option("resnet50_places365", "--scene", help="Registered scene encoder."),
    cells: int = typer.Option(699, "--cells", min=1, help="Cells of the synthetic table sizing the heads."),
    fusion: str = typer.Option("gate", "--fusion", help="'gate' or 'mean'."),
) -> None:
    """Build the model offline with random weights and print one JSON object of parameter counts per module.

    Top-level keys are counts (clip, scene, fusion, heads, embeddings, total, and each head); ``model`` holds
    the encoders, feature widths and the per-province cell counts of the synthetic table (the reference
    run's proportions).
    """
    from geopak.model.encoders import UnknownEncoderError
    from geopak.model.geopak import GeopakConfig, GeopakModel, synthetic_cell_table
    from geopak.provinces import PROVINCE_NAMES

    try:
        config = GeopakConfig(clip_encoder=clip, scene_encoder=scene, fusion=fusion)
        table = synthetic_cell_table(cells)
        model = GeopakModel(config, table)
    except (UnknownEncoderError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    out: dict[str, object] = dict(model.param_counts())
    out["model"] = {
        "clip_encoder": clip,
        "scene_encoder": scene,
        "clip_dim": model.clip.feature_dim,
        "scene_dim": model.scene.feature_dim,
        "input_size": {"clip": model.clip.spec.input_size, "scene": model.scene.spec.input_size},
        "fusion": fusion,
        "n_cells": table.n_cells,
        "max_cells": table.max_cells,
        "cells_per_province": dict(zip(PROVINCE_NAMES, table.counts_per_province.tolist())),
        "config": config.to_dict(),
    }
    typer.echo(json.dumps(out))


@model_app.command("encoders")
def encoders() -> None:
    """List the registered encoders with their kind, width, input size and weight source (JSON lines)."""
    from geopak.model.encoders import ENCODERS, encoder_spec

    for name in sorted(ENCODERS):
        s = encoder_spec(name)
        typer.echo(
            json.dumps(
                {
                    "name": s.name,
                    "kind": s.kind,
                    "arch": s.arch,
                    "feature_dim": s.feature_dim,
                    "input_size": s.input_size,
                    "weights": s.weights.url if s.weights else None,
                }
            )
        )


@model_app.command("weights")
def weights(
    name: str = typer.Argument(..., help="Registered encoder name, e.g. resnet50_places365."),
    file: Path | None = typer.Option(None, "--file", help="Use (and check) this local file."),
    url: str | None = typer.Option(None, "--url", help="Download from here instead of the default source."),
    download: bool = typer.Option(
        True, "--download/--no-download", help="Allow downloading when not cached."
    ),
) -> None:
    """Resolve an encoder's pretrained weights (file > cache > download), check they load, print the path."""
    from geopak.model.encoders import UnknownEncoderError, create_encoder
    from geopak.model.weights import WeightsError, resolve_weights, sha256_file

    try:
        path = resolve_weights(name, file=file, url=url, allow_download=download)
        create_encoder(name, weights=path)
    except (UnknownEncoderError, WeightsError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(json.dumps({"encoder": name, "path": str(path), "sha256": sha256_file(path)}))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(model_app, name="model")
