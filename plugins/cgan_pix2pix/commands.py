"""The pix2pix plugin's commands: ``cgan data download`` and ``cgan data releases``."""

from __future__ import annotations

from pathlib import Path

import click

from cgan_kit import hookimpl


@click.group()
def data() -> None:
    """Get the public pix2pix datasets."""


@data.command("download")
@click.argument("name")
@click.option("--dir", "into", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives data/NAME.")
@click.option("--keep-archive", is_flag=True, help="Keep the .tar.gz after unpacking.")
def download_command(name: str, into: str, keep_archive: bool) -> None:
    """Download, verify and unpack the pix2pix release NAME (resumes if interrupted)."""
    from cgan_pix2pix.releases import download

    target = download(name, Path(into), keep_archive)
    click.echo(f"{target} is ready: use it with --set data.root={target}")


@data.command("releases")
def releases_command() -> None:
    """List the releases `cgan data download` knows, with their file counts."""
    from cgan_pix2pix.releases import RELEASES, base_url

    click.echo(f"from {base_url()}")
    for release in RELEASES.values():
        counts = ", ".join(f"{split} {n}" for split, n in release.counts.items())
        click.echo(f"  {release.name:<16} {counts} (paper direction {release.direction})")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(data)
