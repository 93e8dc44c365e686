"""`geopak demo`: the main job, the whole pipeline end to end on GeoPak-Synth."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder."),
    n: int = typer.Option(4000, "--n", help="Synthetic images to generate (scales the whole run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, split, cells and training."),
    size: int = typer.Option(128, "--size", help="Side of the generated images (px)."),
    config: str = typer.Option("tiny", "--config", help="Training config: a name (tiny, full) or a TOML file."),
    min_cell: int = typer.Option(20, "--min-cell", help="Minimum images per geocell."),
    max_steps: int = typer.Option(None, "--max-steps", help="Cap each training phase at N steps (quick runs)."),
    n_predict: int = typer.Option(6, "--n-predict", help="Test images drawn one by one in the report."),
    workers: int = typer.Option(None, "--workers", help="Render processes (default: all cores)."),
    boundaries: Path = typer.Option(None, "--boundaries", help="Province boundaries GeoJSON/shapefile."),
    pretrain: bool = typer.Option(True, "--pretrain/--no-pretrain",
                                  help="Pretrain the encoders on the scene attributes (not locations) of a separate "
                                       "GeoPak-Synth set first; --no-pretrain starts them from random weights."),
    pretrain_n: int = typer.Option(3000, "--pretrain-n", min=1, help="Images of the separate pretraining set."),
    pretrain_epochs: int = typer.Option(8, "--pretrain-epochs", min=1, help="Pretraining epochs per encoder."),
) -> None:
    """Run the whole pipeline on GeoPak-Synth and write one report (offline; a CPU is enough).

    Generates the data, pretrains the small encoders on the scene attributes of a separate synthetic set (reused
    on a rerun), validates and splits the data, builds geocells, trains phases 0-1-2, evaluates against the
    baselines and ablations, predicts a few test images and writes OUT/report.html.
    """
    from rich.console import Console

    from geopak.demo import DemoOptions, headline, run_demo

    console = Console(stderr=True)
    opts = DemoOptions(out=out, n=n, seed=seed, image_size=size, config=config, min_cluster_size=min_cell,
                       max_steps=max_steps, n_predict=n_predict, workers=workers, boundaries=boundaries,
                       pretrain=pretrain, pretrain_n=pretrain_n, pretrain_epochs=pretrain_epochs)
    result = run_demo(opts, say=lambda m: console.print(m, highlight=False))
    console.rule("summary")
    for line in headline(result.metrics, result.compare):
        console.print(f"- {line}", highlight=False)
    console.print(f"metrics: {out / 'metrics.json'}  comparison: {out / 'compare.json'}  "
                  f"checkpoint: {result.checkpoint}", highlight=False)
    typer.echo(f"report: {result.report}")


def register(app: typer.Typer) -> None:
    """Add `geopak demo` to the root app."""
    app.command("demo")(demo)
