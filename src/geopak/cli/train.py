"""`geopak train`: the training phases from a typed config (named or a TOML file)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("train")
    def train_cmd(
        config: str = typer.Option("tiny", "--config", "-c", help="Named config (tiny, full) or a TOML file."),
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Manifest (Parquet/CSV) with id, path, lat, lon, province[, split]."),
        cells: Path = typer.Option(..., "--cells", help="Folder from `geopak cells build` (cells.parquet [+ assignments.parquet])."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder (re-run the same command to resume)."),
        phase: list[str] = typer.Option(None, "--phase", help="Run only this phase (repeatable), e.g. phase2."),
        devices: int = typer.Option(None, "--devices", help="Processes (GPUs) per node."),
        num_nodes: int = typer.Option(None, "--num-nodes", help="Nodes (DDP)."),
        accelerator: str = typer.Option(None, "--accelerator", help="cpu, gpu or auto."),
        precision: str = typer.Option(None, "--precision", help="32-true or bf16-mixed (also on CPU)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Cap every phase at N optimiser steps (quick runs)."),
        overrides: list[str] = typer.Option(None, "--set", help="Config override key=value (TOML value), repeatable: --set phases.phase1.epochs=3"),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    ) -> None:
        """Train the phases of a config in sequence; the last line printed is the final checkpoint folder."""
        import logging

        from lightning.pytorch.utilities import rank_zero_only

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # records reach the root handler too
            logging.getLogger(name).handlers.clear()

        from geopak.train.config import ConfigError, load_config, parse_override
        from geopak.train.run import TrainError, train

        try:
            cfg = load_config(config, dict(parse_override(o) for o in overrides or []))
            final = train(
                cfg, manifest, cells, out, phases=list(phase) if phase else None, devices=devices,
                num_nodes=num_nodes, accelerator=accelerator, precision=precision, max_steps=max_steps,
                progress_bar=False if no_progress else None,
            )
        except (ConfigError, TrainError, FileNotFoundError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        if rank_zero_only.rank == 0:
            typer.echo(str(final))
