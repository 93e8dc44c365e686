"""`geopak model` commands: describe the network's size, list encoders, fetch pretrained weights, and pretrain the
small encoders on GeoPak-Synth's scene attributes (the offline stand-in for pretrained weights)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

model_app = typer.Typer(help="The network: sizes, encoders, pretrained weights, scene pretraining.", no_args_is_help=True)


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


@model_app.command("pretrain")
def pretrain(
    data: Path = typer.Option(..., "--data", "-d", help="GeoPak-Synth folder (manifest.parquet, scenes.parquet, images); "
                              "use another seed than the data you train on."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: clip.safetensors, scene.safetensors, pretrain.json."),
    clip: str = typer.Option("clip_vit_tiny", "--clip", help="Registered semantic (CLIP) encoder."),
    scene: str = typer.Option("resnet_small", "--scene", help="Registered scene encoder."),
    epochs: int = typer.Option(8, "--epochs", min=1, help="Epochs per encoder."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="Images per step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, initial weights, batch order and augmentation."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    force: bool = typer.Option(False, "--force", help="Train even when OUT holds a result of the same settings and data."),
) -> None:
    """Pretrain the encoders on GeoPak-Synth's scene attributes (never its locations); the last line is OUT.

    Each encoder learns, with its own linear head, how urban, high, rough, green, near the coast and clear a scene
    is, and its time of day, season, weather and kind of shot. Pass the weight files to training with
    ``--set weights.clip=OUT/clip.safetensors --set weights.scene=OUT/scene.safetensors``. A rerun with the same
    settings and data reuses OUT.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from geopak.model.pretrain import PretrainConfig, PretrainError, pretrain_encoders

    err = Console(stderr=True)
    config = PretrainConfig(clip_encoder=clip, scene_encoder=scene, epochs=epochs, batch_size=batch_size,
                            seed=seed, threads=threads, device=device)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                  TimeElapsedColumn(), TextColumn("{task.fields[loss]}"), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def on_event(ev: dict[str, object]) -> None:
            if ev["event"] == "start":
                tasks[str(ev["role"])] = bar.add_task(f"{ev['role']} {ev['encoder']}", total=ev["epochs"], loss="")
            elif ev["event"] == "epoch":
                bar.update(tasks[str(ev["role"])], completed=ev["epoch"], loss=f"loss {ev['train_loss']:.3f}")

        try:
            result = pretrain_encoders(data, out, config, force=force, callback=on_event)
        except PretrainError as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e
    s = result.summary
    head = "reused (same settings and data; --force retrains)" if result.reused else f"{s['seconds']:.0f} s"
    err.print(f"{s['data']['n']:,} images ({s['data']['n_train']:,} train, {s['data']['n_holdout']:,} held out): {head}")
    roles = [r for r in ("clip", "scene") if s["encoders"][r]["holdout"]]
    if roles:
        table = Table(title="held-out scene targets (R2, or accuracy vs the majority class)")
        table.add_column("target")
        for r in roles:
            table.add_column(f"{r}: {s['encoders'][r]['encoder']}", justify="right")
        for name in s["encoders"][roles[0]]["holdout"]:
            cells = []
            for r in roles:
                m = s["encoders"][r]["holdout"][name]
                cells.append(("-" if m["r2"] is None else f"{m['r2']:.3f}") if "r2" in m
                             else f"{100 * m['accuracy']:.1f}% ({100 * m['majority_accuracy']:.1f}%)")
            table.add_row(name, *cells)
        err.print(table)
    for r in ("clip", "scene"):
        e = s["encoders"][r]
        err.print(f"{r} {e['encoder']}: train loss {e['epochs'][0]['train_loss']:.3f} -> "
                  f"{e['epochs'][-1]['train_loss']:.3f} in {e['seconds']:.0f} s ({e['images_per_second']:.0f} img/s)")
    typer.echo(str(result.out_dir))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(model_app, name="model")
