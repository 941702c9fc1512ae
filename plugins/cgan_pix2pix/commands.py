"""The pix2pix plugin's commands: ``cgan data download``, ``cgan data releases`` and
``cgan convert-reference``."""

from __future__ import annotations

from pathlib import Path

import click



@click.group()
def data() -> None:
    """Get the public pix2pix (aligned) and CycleGAN (unaligned) datasets."""


@data.command("download")
@click.argument("name")
@click.option("--dir", "into", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives data/NAME.")
@click.option("--keep-archive", is_flag=True, help="Keep the .tar.gz or .zip after unpacking.")
def download_command(name: str, into: str, keep_archive: bool) -> None:
    """Download, verify and unpack the release NAME (resumes if interrupted).

    NAME is a pix2pix release (facades, maps, ...: aligned pairs) or a CycleGAN one (horse2zebra,
    monet2photo, ...: trainA/ trainB/ testA/ testB/); `cgan data releases` lists them. Both
    families have a facades and a maps: the bare names are the pix2pix releases, the CycleGAN ones
    are facades_unaligned and maps_unaligned (also cyclegan/facades, cyclegan/maps). The release
    lands in DIR/NAME once its file counts match the published ones.
    """
    from cgan_pix2pix.releases import download, lookup

    release = lookup(name)
    target = download(name, Path(into), keep_archive)
    if release.family == "cyclegan":  # the shipped cyclegan recipes read facades side by side, labels as A
        click.echo(f"{target} is ready: use it in a cyclegan recipe with --set data.root={target} "
                   "--set data.layout=folders --set data.direction=AtoB (trainA as domain A; BtoA swaps them)")
    else:
        click.echo(f"{target} is ready: use it with --set data.root={target}")


@data.command("releases")
def releases_command() -> None:
    """List the releases `cgan data download` knows, with their file counts and the data type each feeds."""
    from cgan_pix2pix.releases import NOT_OFFERED, RELEASES, base_url

    headings = {"pix2pix": 'pix2pix releases: aligned pairs, side by side (data.type = "aligned"; method pix2pix, or '
                           'cyclegan with layout = "side_by_side")',
                "cyclegan": 'CycleGAN releases: unaligned domains in trainA/ trainB/ testA/ testB/ (data.type = '
                            '"unaligned"; method cyclegan)'}
    for family, heading in headings.items():
        click.echo(f"{heading}, from {base_url(family)}")
        for release in (r for r in RELEASES.values() if r.family == family):
            counts = ", ".join(f"{split} {n}" for split, n in release.counts.items())
            note = release.dataset + (f", paper direction {release.direction}" if release.direction else "")
            alias = f"; also {release.alias}" if release.remote != release.name else ""
            click.echo(f"  {release.name:<22} {counts} ({note}{alias})")
    click.echo("Each lands in DIR/NAME (--dir, default data). Not offered: "
               + ", ".join(k for k in NOT_OFFERED if k.startswith("cyclegan/"))
               + " (`cgan data download NAME` says why).")


@click.command("convert-reference")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("generator_pth", type=click.Path(dir_okay=False))
@click.option("--critic", "critic_pth", type=click.Path(dir_okay=False), default=None, metavar="D_PTH",
              help="The reference's discriminator weights (latest_net_D.pth) for a method with one critic; "
                   "without it the critic starts fresh.")
@click.option("--weights", "more", multiple=True, metavar="ROLE=PTH",
              help="Weights for another of the method's networks, by role (repeatable). CycleGAN: "
                   "b_to_a=latest_net_G_B.pth, critic_b=latest_net_D_A.pth, critic_a=latest_net_D_B.pth.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set generator.depth=7 (repeatable).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="The run folder to create; it must not exist yet (or be empty).")
def convert_reference_command(recipe: str, generator_pth: str, critic_pth: str | None, more: tuple[str, ...],
                              overrides: tuple[str, ...], out: str) -> None:
    """Turn weights of the reference pix2pix or CycleGAN into a run folder.

    GENERATOR_PTH is a generator state dict saved by junyanz/pytorch-CycleGAN-and-pix2pix, such as its
    latest_net_G.pth (CycleGAN: latest_net_G_A.pth) or a published model: a U-Net (unet_128,
    unet_256) or a ResNet (resnet_6blocks, resnet_9blocks). It becomes the generator of the
    method's first direction. --critic converts its NLayerDiscriminator (latest_net_D.pth) into a
    patchgan critic; --weights ROLE=PTH any other network (a CycleGAN recipe: b_to_a is G_B,
    critic_b is D_A, critic_a is D_B). RECIPE must describe the same networks (unet_256 is unet
    depth 8, unet_128 depth 7, both with max_channels 8 * ngf); when it does not, the error names
    the --set that fixes it. Files are read with torch.load(weights_only=True): no pickled code
    ever runs.

    RUN_DIR gets the recipe and the weights as step 0. `cgan run --resume RUN_DIR` then evaluates
    them and fine-tunes from the reference weights with fresh optimizers, up to train.steps.
    """
    from cgan_kit.config.recipe import load
    from cgan_kit.errors import CganError
    from cgan_kit.plugin_api import plugins
    from cgan_pix2pix.reference import convert

    method = plugins.registry().get("method", load(recipe, list(overrides)).method.type).factory
    weights = {next(iter(method.directions.values())).role: Path(generator_pth)}
    if critic_pth:
        critics = [role for role, network in method.networks.items() if network.kind == "critic"]
        if len(critics) != 1:
            raise CganError(f"--critic: the recipe's method has {len(critics)} critics ({', '.join(critics)}); "
                            "give each as --weights ROLE=PTH")
        weights[critics[0]] = Path(critic_pth)
    for item in more:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise CganError(f"--weights {item}: expected ROLE=PTH, e.g. --weights b_to_a=latest_net_G_B.pth")
        weights[role.strip()] = Path(path)
    done = convert(recipe, weights, list(overrides), Path(out))
    fresh = f"; fresh: {', '.join(done.fresh)}" if done.fresh else ""
    click.echo(f"wrote {done.checkpoint}: the reference weights of {', '.join(done.converted)} ({done.generator}, "
               f"{done.parameters:,} parameters per generator){fresh} as step 0; evaluate and fine-tune it with "
               f"`cgan run --resume {done.folder}`")

