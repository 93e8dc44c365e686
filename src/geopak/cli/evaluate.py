"""`geopak predict` and `geopak evaluate`: predictions for photos, and honest end-to-end evaluation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".jfif")
OUTPUT_FORMATS = (".csv", ".jsonl", ".geojson")


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given, plus every image file under the given folders (sorted, recursive).

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


def _flat_record(path: str, rec: dict[str, Any]) -> dict[str, Any]:
    from geopak.provinces import PROVINCES

    row = {"path": path, "province": rec["province"], "lat": rec["lat"], "lon": rec["lon"],
           "confidence": rec["confidence"], "radius_km": rec["radius_km"]}
    for p in PROVINCES:
        row[f"p_{p.short}"] = rec["province_probs"][p.name]
    row["hypotheses"] = json.dumps(rec["hypotheses"], separators=(",", ":"))
    return row


def write_predictions(out: Path, paths: list[str], records: list[dict[str, Any]]) -> Path:
    """Write predictions as CSV (flat, province probabilities as ``p_<short>`` columns, hypotheses as a JSON
    string), JSONL (one full record per line, with ``path``) or GeoJSON (a Point feature per image)."""
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        import pandas as pd

        pd.DataFrame([_flat_record(p, r) for p, r in zip(paths, records)]).to_csv(out, index=False)
    elif suffix == ".jsonl":
        with out.open("w", encoding="utf-8") as f:
            for p, r in zip(paths, records):
                f.write(json.dumps({"path": p, **r}, allow_nan=False) + "\n")
    elif suffix == ".geojson":
        feats = [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
             "properties": {"path": p, **{k: v for k, v in r.items() if k not in ("lat", "lon")}}}
            for p, r in zip(paths, records)
        ]
        out.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, allow_nan=False))
    else:
        raise ValueError(f"unknown output format {out.suffix!r} for {out}; use one of {', '.join(OUTPUT_FORMATS)}")
    return out


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``evaluate`` to the root app."""

    @app.command("predict")
    def predict_cmd(
        checkpoint: Path = typer.Argument(..., help="Checkpoint folder (model.safetensors + config.json)."),
        paths: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
        out: Path = typer.Option(None, "--out", "-o", help="Write predictions: .csv, .jsonl or .geojson."),
        plot: Path = typer.Option(None, "--plot", help="Folder for one map per image (hypotheses, radius)."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)."),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
        bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: where it is faster)."),
        top_provinces: int = typer.Option(2, "--top-provinces", help="Provinces in the mixture."),
        top_cells: int = typer.Option(5, "--top-cells", help="Cells per province in the mixture."),
        mode: str = typer.Option("mixture", "--mode", help="mixture, median (p-weighted geometric median) or argmax."),
        prior: str = typer.Option(
            "balanced", "--prior",
            help="Province prior: balanced (as trained; no province favoured for its share of the training data) "
                 "or data (the training data's province mix).",
        ),
        no_offsets: bool = typer.Option(False, "--no-offsets", help="Use bare cell centres."),
        boundaries: Path = typer.Option(None, "--boundaries", help="Province boundaries file for --plot maps."),
    ) -> None:
        """Predict where photos were taken. Unreadable images are reported and skipped (exit code 1)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Table

        from geopak.data.images import ImageReadError, open_image, to_tensor
        from geopak.inference import GeopakPredictor

        console = Console(stderr=True)
        if mode not in ("mixture", "median", "argmax"):
            raise typer.BadParameter(f"--mode must be mixture, median or argmax, got {mode!r}")
        if prior not in ("balanced", "data"):
            raise typer.BadParameter(f"--prior must be balanced or data, got {prior!r}")
        if out is not None and out.suffix.lower() not in OUTPUT_FORMATS:
            raise typer.BadParameter(f"--out {out}: use a .csv, .jsonl or .geojson file name")
        try:
            files = collect_images(paths)
        except FileNotFoundError as e:
            raise typer.BadParameter(str(e)) from e
        if not files:
            console.print("[red]no image files found[/red] under " + ", ".join(map(str, paths)))
            raise typer.Exit(1)
        try:
            predictor = GeopakPredictor(checkpoint_path=checkpoint, device=device, batch_size=batch_size, bf16=bf16,
                                        top_provinces=top_provinces, top_cells=top_cells, mode=mode,  # type: ignore[arg-type]
                                        use_offsets=not no_offsets, prior=prior)  # type: ignore[arg-type]
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e

        import torch

        done_paths: list[str] = []
        records: list[dict[str, Any]] = []
        failures: list[str] = []
        with Progress(TextColumn("[bold]predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=False) as bar:
            task = bar.add_task("predict", total=len(files))
            for s in range(0, len(files), predictor.batch_size):
                chunk = files[s:s + predictor.batch_size]
                tensors, good = [], []
                for f in chunk:
                    try:
                        tensors.append(to_tensor(open_image(f), predictor.image_size))
                        good.append(str(f))
                    except ImageReadError as e:
                        failures.append(str(e))
                        console.print(f"[yellow]skipped:[/yellow] {e}")
                if tensors:
                    pred = predictor.predict_features(*predictor.encode(torch.stack(tensors)))
                    records.extend(predictor.records(pred))
                    done_paths.extend(good)
                bar.advance(task, len(chunk))

        if out is not None:
            write_predictions(out, done_paths, records)
            console.print(f"wrote {len(records)} predictions to {out}")
        else:
            table = Table("image", "province", "lat", "lon", "confidence", "radius km")
            for p, r in zip(done_paths, records):
                table.add_row(p, r["province"], f"{r['lat']:.5f}", f"{r['lon']:.5f}", f"{r['confidence']:.2f}",
                              f"{r['radius_km']:.1f}")
            Console().print(table)
        if plot is not None:
            from geopak.evaluate.report import plot_prediction, province_outlines

            plot.mkdir(parents=True, exist_ok=True)
            polygons = province_outlines(boundaries)
            for i, (p, r) in enumerate(zip(done_paths, records)):
                plot_prediction(r, plot / f"{i:05d}_{Path(p).stem}.png", polygons, title=Path(p).name)
            console.print(f"wrote {len(records)} maps to {plot}")
        if failures:
            console.print(f"[red]{len(failures)} of {len(files)} images could not be read[/red]")
            raise typer.Exit(1)

    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: Path = typer.Argument(..., help="Checkpoint folder."),
        manifest: Path = typer.Argument(..., help="Manifest with id, path, lat, lon, province, split."),
        split: str = typer.Option("test", "--split", help="Split to evaluate: test, val, train or all."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (metrics.json, report.md, plots)."),
        compare: bool = typer.Option(False, "--compare", help="Also run the baselines and ablations (one table)."),
        cells: Path = typer.Option(None, "--cells", help="Cell-table folder (must be the checkpoint's; its "
                                   "assignments.parquet gives training rows' cells)."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA if available)."),
        batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per encoder pass."),
        bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast for the encoders."),
        num_workers: int = typer.Option(0, "--num-workers", help="Image-decoding worker processes."),
        retrain: bool = typer.Option(True, "--retrain/--no-retrain",
                                     help="With --compare: retrain the heads-only ablations (no smoothing, no gate)."),
        train_config: str = typer.Option(None, "--train-config", help="Config for the retrained ablations "
                                         "(default: the one recorded in the checkpoint)."),
        retrain_max_steps: int = typer.Option(None, "--retrain-max-steps", help="Cap retrained phases at N steps."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the report's plots."),
        boundaries: Path = typer.Option(None, "--boundaries", help="Province boundaries file for the error map."),
    ) -> None:
        """Evaluate a checkpoint end to end on a manifest split; --compare adds baselines and ablations."""
        from rich.console import Console
        from rich.table import Table

        from geopak.evaluate.runner import EvalOptions, EvaluationError, evaluate_checkpoint

        console = Console(width=max(Console().width, 120))
        err = Console(stderr=True)
        opts = EvalOptions(split=split, compare=compare, cells=cells, device=device, batch_size=batch_size,
                           bf16=bf16, num_workers=num_workers, retrain=retrain, train_config=train_config,
                           retrain_max_steps=retrain_max_steps, plots=plots,
                           boundaries=boundaries)
        try:
            metrics = evaluate_checkpoint(checkpoint, manifest, out, opts, status=lambda m: err.print(f"[dim]{m}"))
        except (EvaluationError, FileNotFoundError, ValueError) as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e
        rows = metrics.get("compare") or [dict(metrics, method="geopak")]
        cols = ("median_km", "macro_median_km", "p90_km", "acc_1km", "acc_25km", "acc_200km", "geoscore_pk",
                "province_accuracy")
        table = Table(title=f"{split}: {metrics['n']} images")
        table.add_column("method", no_wrap=True)
        for c in cols:
            table.add_column(c.replace("_km", "").replace("province_accuracy", "prov_acc"), justify="right")
        for r in rows:
            table.add_row(r["method"], *("-" if r.get(c) is None else f"{r[c]:.3f}" if r[c] < 10 else f"{r[c]:.1f}"
                                         for c in cols))
        console.print(table)
        console.print(f"report: {out / 'report.md'}")
