"""`geopak synth`: write a GeoPak-Synth dataset (images, manifest, scene metadata, card) and a contact sheet."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _parse_proportions(text: str | None) -> dict[str, float] | None:
    """``None`` / ``"seed"``: the seed dataset's; ``"equal"``: one each; else ``"Sindh=2,Punjab=1,..."``."""
    if text is None or text.strip().lower() in ("", "seed", "default"):
        return None
    from geopak.provinces import PROVINCE_NAMES, UnknownProvinceError, normalize_province

    if text.strip().lower() in ("equal", "balanced", "uniform"):
        return {name: 1.0 for name in PROVINCE_NAMES}
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--proportions item {part.strip()!r} is not NAME=WEIGHT (e.g. Sindh=2,GB=1)")
        try:
            prov = normalize_province(name)
        except UnknownProvinceError as e:
            raise ValueError(f"--proportions: {e}") from e
        try:
            out[prov.name] = out.get(prov.name, 0.0) + float(value)
        except ValueError as e:
            raise ValueError(f"--proportions: weight {value.strip()!r} for {prov.name} is not a number") from e
    return out


def synth(
    n: int = typer.Option(..., "--n", "-n", min=1, help="Number of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (manifest.parquet, images/, scenes.parquet, CARD.md)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Dataset seed: the same seed writes the same bytes."),
    size: int = typer.Option(224, "--size", min=16, help="Image side in pixels (the validator rejects < 64)."),
    workers: int | None = typer.Option(None, "--workers", "-j", min=1, help="Render processes (default: all CPUs, at most 8)."),
    proportions: str | None = typer.Option(
        None, help="Province weights: 'seed' (default, the seed dataset's), 'equal', or 'Sindh=2,Punjab=1,...'."),
    boundaries: Path | None = typer.Option(
        None, help="Province boundaries for the labels (GeoJSON/shapefile/zip). Default: the cache, else the offline fallback."),
    preview: bool = typer.Option(False, "--preview", help="Also write DIR/preview.png, a contact sheet with a row per province."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in DIR."),
) -> None:
    """Generate GeoPak-Synth: procedural ground-level photos of Pakistan built from real geographic data."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from geopak.data.synth import SynthDataError, generate
    from geopak.data.synth import preview as make_preview
    from geopak.data.synth.generate import cli_command

    try:
        props = _parse_proportions(proportions)
    except ValueError as e:
        _fail(str(e))
        return
    argv = ["geopak", "synth", "--n", str(n), "--out", str(out), "--seed", str(seed), "--size", str(size)]
    if proportions:
        argv += ["--proportions", proportions]
    t0 = time.perf_counter()
    with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("render", total=n)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            df = generate(
                n, out, seed=seed, size=size, workers=workers, proportions=props, boundaries=boundaries,
                overwrite=overwrite, progress=progress, command=cli_command(argv),
            )
        except (FileExistsError, ValueError, SynthDataError, RuntimeError) as e:
            _fail(str(e))
            return
    elapsed = time.perf_counter() - t0
    counts = df["province"].value_counts()
    typer.echo(
        f"wrote {len(df)} images ({size} px) to {out} in {elapsed:.1f} s ({len(df) / max(elapsed, 1e-9):.0f} images/s): "
        + ", ".join(f"{k} {int(v)}" for k, v in counts.items())
    )
    typer.echo(f"manifest: {out / 'manifest.parquet'}  card: {out / 'CARD.md'}")
    if preview:
        path = make_preview(out, out / "preview.png")
        typer.echo(f"contact sheet: {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("synth")(synth)
