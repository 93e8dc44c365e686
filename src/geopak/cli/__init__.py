"""The ``geopak`` command line: one typer app whose groups live one module each in this package.

Each module exposes ``register(app)``; heavy imports happen inside the commands, so ``geopak --help``
stays fast and works without the optional extras installed.
"""

from __future__ import annotations

import logging

import typer

from geopak import __version__
from geopak.cli import cells, crawl, data, demo, evaluate, model, serve, synth, train

app = typer.Typer(
    name="geopak",
    help="GEOPAK: province-aware geolocation of photos taken in Pakistan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geopak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """GEOPAK: province-aware geolocation of photos taken in Pakistan."""
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr: stdout carries results (e.g. `geopak train` ends with the checkpoint path).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
        force=True,
    )


for _module in (data, crawl, synth, cells, model, train, evaluate, serve, demo):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
